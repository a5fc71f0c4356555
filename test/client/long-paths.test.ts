/**
 * Paths of PATH_MAX (4096) bytes or more, which the kernel refuses whole: the walk, the reads
 * and the restore go through them in pieces (native open_path, /proc/self/fd anchors in the
 * extractor), so such trees are archived and restored completely, as PBS's openat walk does.
 */
import { describe, it, expect } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createBackup } from '../../ts/client/backup.js';
import { listArchive, resolveSnapshot, restore } from '../../ts/client/restore.js';
import { DataStore } from '../../ts/datastore/datastore.js';
import { tempDir } from '../helpers/tmp.js';

const D = 'd'.repeat(200);
const LEVELS = 25; // 25 × 201 bytes: the leaf is ~5 KiB below the tree's root
const big = crypto.randomBytes(3 * 1024 * 1024 + 5);

/** Build root/D/…/D/leaf bottom up, so that every syscall gets a short path. */
function buildDeep(work: string, root: string): void {
  let cur = path.join(work, 'n0');
  fs.mkdirSync(cur);
  fs.writeFileSync(path.join(cur, 'file.txt'), 'deep content\n');
  fs.writeFileSync(path.join(cur, 'big.bin'), big);
  fs.mkdirSync(path.join(cur, 'sub'));
  fs.writeFileSync(path.join(cur, 'sub', 'x'), 'x');
  fs.symlinkSync('file.txt', path.join(cur, 'link'));
  fs.linkSync(path.join(cur, 'file.txt'), path.join(cur, 'hard'));
  fs.chmodSync(path.join(cur, 'file.txt'), 0o640);
  fs.utimesSync(path.join(cur, 'big.bin'), 1_500_000_000, 1_500_000_000.25);
  for (let k = 1; k < LEVELS; k++) {
    const parent = path.join(work, `n${k}`);
    fs.mkdirSync(parent);
    fs.renameSync(cur, path.join(parent, D));
    cur = parent;
  }
  fs.mkdirSync(root);
  fs.renameSync(cur, path.join(root, D));
}

/** Move the levels of root/D/…/D up into `flat` (short paths again); returns the leaf. */
function unwind(root: string, flat: string): string {
  fs.mkdirSync(flat);
  let cur = path.join(root, D);
  for (let k = 0; k < LEVELS; k++) {
    const to = path.join(flat, `l${k}`);
    fs.renameSync(cur, to);
    cur = path.join(to, D);
  }
  return path.join(flat, `l${LEVELS - 1}`);
}

function leafState(leaf: string) {
  const f = (n: string) => {
    const st = fs.lstatSync(path.join(leaf, n));
    return { mode: st.mode, size: st.size, mtime: st.mtimeMs, data: st.isFile() ? fs.readFileSync(path.join(leaf, n)).toString('hex') : fs.readlinkSync(path.join(leaf, n)) };
  };
  return { names: fs.readdirSync(leaf).sort(), file: f('file.txt'), big: f('big.bin'), hard: f('hard'), link: f('link'), x: f('sub/x') };
}

describe('paths longer than PATH_MAX', () => {
  it('are archived and restored, in data and in metadata mode', async () => {
    const base = tempDir('pxb-long-');
    const src = path.join(base, 'src');
    buildDeep(base, src);
    try {
      await roundTrips(base, src);
    } finally {
      // node's rmSync cannot remove what it cannot name: bring deep trees up first
      for (const root of [src, path.join(base, 'r0'), path.join(base, 'r1')]) {
        if (fs.existsSync(path.join(root, D))) unwind(root, fs.mkdtempSync(path.join(base, 'left-')) + '/x');
      }
    }
  });
});

async function roundTrips(base: string, src: string): Promise<void> {
  const ds = await DataStore.open(path.join(base, 'ds'), { create: true });
  const warnings: string[] = [];
  const spec = { datastore: ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: 'long', onWarning: (w: string) => warnings.push(w) };
  const first = await createBackup({ ...spec, backupTime: 1_700_000_000, changeDetectionMode: 'data' });
  // the second one reuses everything of the first (and records/uses the metadata cache)
  const second = await createBackup({ ...spec, backupTime: 1_700_000_100, changeDetectionMode: 'metadata', cacheDir: path.join(base, 'cache') });
  expect(warnings).toEqual([]);
  expect(first.archives[0].files).toBe(4);
  expect(second.archives[0].bytesRead).toBe(0);
  expect(second.archives[0].reusedFiles).toBe(4);

  const paths: string[] = [];
  for await (const e of listArchive(ds, await resolveSnapshot(ds, 'host/long'), 'root.pxar')) paths.push(e.path.toString());
  const leafRel = Array(LEVELS).fill(D).join('/');
  expect(paths).toContain(`${leafRel}/big.bin`);
  expect(leafRel.length).toBeGreaterThan(4096);

  const want = leafState(unwind(src, path.join(base, 'flat-src')));
  for (const [k, snapshot] of ['host/long/2023-11-14T22:13:20Z', 'host/long'].entries()) {
    const target = path.join(base, `r${k}`);
    const r = await restore({ datastore: ds, snapshot, archiveName: 'root.pxar', target, onWarning: (w) => warnings.push(w) });
    expect(warnings).toEqual([]);
    expect(r.files).toBe(4);
    expect(r.directories).toBe(LEVELS + 2);
    const got = leafState(unwind(target, path.join(base, `flat-r${k}`)));
    // A HARDLINK names its target by an archive path of at most 4096 bytes: the second name
    // of a deep inode is restored as a file of its own, with the same data.
    expect(got).toEqual(want);
  }
}
