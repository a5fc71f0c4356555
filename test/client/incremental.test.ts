/**
 * Metadata-mode (incremental) backups: seeded random mutations between backups, each backup
 * restored and compared with the source; a no-change backup reads nothing and stores nothing.
 */
import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import { DataStore } from '../../ts/datastore/datastore.js';
import { createBackup } from '../../ts/client/backup.js';
import { restore } from '../../ts/client/restore.js';
import { bytesReadFromFiles, getxattr, listXattrs, setxattr, statPath } from '../../ts/native/fs.js';
import { tempDir, isRoot } from '../helpers/tmp.js';

/** Deterministic PRNG (mulberry32). */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    pick: <T>(xs: T[]): T => xs[Math.floor(next() * xs.length)],
    bytes(n: number): Buffer {
      const b = Buffer.allocUnsafe(n);
      for (let i = 0; i < n; i++) b[i] = int(256);
      return b;
    },
  };
}
type Rng = ReturnType<typeof rng>;

/** Text-like content so zstd and the chunker see realistic data; sometimes random bytes. */
function content(r: Rng, size: number): Buffer {
  if (r.next() < 0.2 && size < 200_000) return r.bytes(size);
  const words = ['alpha', 'beta', 'gamma', 'delta', 'chunk', 'index', 'pxar', 'backup', '\n', ' '];
  const parts: string[] = [];
  let n = 0;
  while (n < size) {
    const w = r.pick(words) + (r.next() < 0.3 ? String(r.int(100000)) : '');
    parts.push(w);
    n += w.length;
  }
  return Buffer.from(parts.join('')).subarray(0, size);
}

let mtimeCounter = 1_600_000_000;
/** A fresh, distinct mtime so content changes are always detectable (the mode's blind spot is
 * a content change that keeps both size and mtime). */
function bumpMtime(p: string): void {
  mtimeCounter += 7;
  const t = mtimeCounter + 0.123456789;
  fs.lutimesSync(p, t, t);
}

function allPaths(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      out.push(p);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(root);
  return out;
}

function makeTree(root: string, r: Rng): void {
  for (let d = 0; d < 12; d++) {
    const dir = path.join(root, `d${d}`, d % 3 === 0 ? `sub${d}` : '');
    fs.mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 15; f++) {
      const size = r.next() < 0.05 ? 1_500_000 + r.int(2_000_000) : r.int(40_000);
      const p = path.join(dir, `f${f}.txt`);
      fs.writeFileSync(p, content(r, size));
      bumpMtime(p);
    }
  }
  fs.symlinkSync('d1/f1.txt', path.join(root, 'link'));
  fs.linkSync(path.join(root, 'd2', 'f2.txt'), path.join(root, 'hard'));
}

/** Apply one random mutation of the kinds the issue lists; returns its description. */
function mutate(root: string, r: Rng): string {
  const paths = allPaths(root);
  const files = paths.filter((p) => fs.lstatSync(p).isFile());
  const dirs = paths.filter((p) => fs.lstatSync(p).isDirectory());
  const f = files.length ? r.pick(files) : null;
  const d = dirs.length ? r.pick(dirs) : root;
  switch (r.int(13)) {
    case 0: // content change with a new mtime, same size
      if (!f) return 'noop';
      fs.writeFileSync(f, content(r, fs.statSync(f).size));
      bumpMtime(f);
      return `rewrite ${f}`;
    case 1:
      if (!f) return 'noop';
      fs.appendFileSync(f, content(r, 1 + r.int(5000)));
      bumpMtime(f);
      return `append ${f}`;
    case 2:
      if (!f) return 'noop';
      fs.truncateSync(f, r.int(fs.statSync(f).size + 1));
      bumpMtime(f);
      return `truncate ${f}`;
    case 3:
      if (!f) return 'noop';
      fs.rmSync(f);
      return `delete ${f}`;
    case 4: {
      const p = path.join(d, `new${r.int(1e6)}`);
      if (fs.existsSync(p)) return 'noop';
      fs.writeFileSync(p, content(r, r.int(60_000)));
      bumpMtime(p);
      return `add ${p}`;
    }
    case 5: {
      if (!f) return 'noop';
      const to = path.join(d, `renamed${r.int(1e6)}`);
      if (fs.existsSync(to) || to.startsWith(`${f}/`)) return 'noop';
      fs.renameSync(f, to);
      return `rename ${f} -> ${to}`;
    }
    case 6:
      if (!f) return 'noop';
      fs.chmodSync(f, r.pick([0o600, 0o644, 0o755, 0o4755, 0o640]));
      return `chmod ${f}`;
    case 7:
      if (!f || !isRoot) return 'noop';
      fs.lchownSync(f, 1000 + r.int(3), 1000 + r.int(3));
      return `chown ${f}`;
    case 8:
      if (!f) return 'noop';
      try {
        setxattr(f, `user.k${r.int(3)}`, Buffer.from(`v${r.int(1000)}`));
      } catch {
        return 'noop (no user xattrs on this file system)';
      }
      return `xattr ${f}`;
    case 9: {
      if (!f) return 'noop';
      const to = path.join(d, `hl${r.int(1e6)}`);
      if (fs.existsSync(to)) return 'noop';
      fs.linkSync(f, to);
      return `hardlink ${f} -> ${to}`;
    }
    case 10: {
      // file -> directory / symlink swaps
      if (!f) return 'noop';
      const which = r.int(3);
      fs.rmSync(f);
      if (which === 0) {
        fs.mkdirSync(f);
        fs.writeFileSync(path.join(f, 'inner'), content(r, 100));
      } else if (which === 1) fs.symlinkSync('../somewhere', f);
      else fs.mkdirSync(f);
      return `swap ${f} (${which})`;
    }
    case 11: {
      // directory -> file
      const cands = dirs.filter((x) => x !== root);
      if (!cands.length) return 'noop';
      const x = r.pick(cands);
      fs.rmSync(x, { recursive: true });
      fs.writeFileSync(x, content(r, r.int(3000)));
      return `dir->file ${x}`;
    }
    default: {
      const p = path.join(d, `empty${r.int(1e6)}`);
      if (fs.existsSync(p)) return 'noop';
      fs.mkdirSync(p);
      return `mkdir ${p}`;
    }
  }
}

interface Node {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  hash?: string;
  target?: string;
  xattrs?: string;
  ino: bigint;
}

function describeTree(root: string): Map<string, Node> {
  const m = new Map<string, Node>();
  for (const p of allPaths(root)) {
    const st = fs.lstatSync(p, { bigint: true });
    const n: Node = {
      type: st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other',
      mode: Number(st.mode),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeNs: st.mtimeNs,
      ino: st.ino,
    };
    if (st.isFile()) n.hash = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    if (st.isSymbolicLink()) n.target = fs.readlinkSync(p);
    if (st.isFile() || st.isDirectory()) {
      n.xattrs = listXattrs(p)
        .map((x) => x.toString())
        .filter((x) => x.startsWith('user.'))
        .sort()
        .map((x) => `${x}=${getxattr(p, x)?.toString('hex')}`)
        .join(',');
    }
    m.set(path.relative(root, p), n);
  }
  return m;
}

/** Hardlink structure: groups of relative paths sharing an inode. */
function linkGroups(tree: Map<string, Node>): string[] {
  const by = new Map<bigint, string[]>();
  for (const [p, n] of tree) if (n.type === 'file') by.set(n.ino, [...(by.get(n.ino) ?? []), p]);
  return [...by.values()].filter((g) => g.length > 1).map((g) => g.sort().join('|')).sort();
}

function expectSameTree(src: string, dst: string): void {
  const a = describeTree(src);
  const b = describeTree(dst);
  expect([...b.keys()].sort()).toEqual([...a.keys()].sort());
  for (const [p, n] of a) {
    const { ino: _i, ...want } = n;
    const { ino: _j, ...got } = b.get(p)!;
    expect({ p, ...got }).toEqual({ p, ...want });
  }
  expect(linkGroups(b)).toEqual(linkGroups(a));
}

describe('incremental (metadata mode) backups', () => {
  it('restore equals the source after many rounds of seeded random mutations', async () => {
    const base = tempDir();
    const src = path.join(base, 'src');
    fs.mkdirSync(src);
    const r = rng(20261126);
    makeTree(src, r);
    const ds = await DataStore.open(path.join(base, 'ds'), { create: true, fsync: false });
    let time = 1_700_000_000;
    let reusedTotal = 0;
    let cachedTotal = 0;
    let unchangedRounds = 0;
    // Ten rounds of mutations; after the third and after the last, four rounds without: a
    // tree left alone soon makes an archive its next backup writes again (here two or three
    // backups), and from then on the cache group reuses it as it is (metadata-cache.ts:
    // unchanged trees).
    const quiet = new Set([4, 5, 6, 7, 15, 16, 17, 18]);
    for (let round = 0; round < 19; round++) {
      const log: string[] = [];
      if (round > 0 && !quiet.has(round)) for (let k = 0; k < 6; k++) log.push(mutate(src, r));
      // The metadata cache records only entries whose ctime is a second old.
      await new Promise((res) => setTimeout(res, 1100));
      const notices: string[] = [];
      const run = (backupId: string, cacheDir?: string) =>
        createBackup({
          datastore: ds,
          specs: [{ archiveName: 'root.pxar', path: src }],
          backupId,
          backupTime: time + 1,
          changeDetectionMode: 'metadata',
          chunkSize: 64 * 1024,
          lookaheadCapacity: 16,
          cacheDir,
          onNotice: (m) => notices.push(m),
        });
      // Two groups of the same source, one with the metadata cache: the cache must not change
      // a byte of either archive.
      const res = await run('rand', path.join(base, 'cache'));
      const plain = await run('rand-nocache');
      time++;
      expect(res.files).toEqual(plain.files);
      const a = res.archives[0];
      expect(plain.archives[0].metadataCached).toBe(0);
      if (round === 0) expect(notices.join()).toMatch(/no previous snapshot/);
      else {
        expect(a.mode).toBe('metadata');
        reusedTotal += a.reusedFiles;
        cachedTotal += a.metadataCached;
        if (a.unchangedTree) unchangedRounds++;
        if (!quiet.has(round)) expect(a.unchangedTree).toBe(false);
      }
      const out = path.join(base, `restore${round}`);
      await restore({ datastore: ds, snapshot: res.snapshot, archiveName: 'root.pxar', target: out });
      // The restored root directory carries the source root's metadata too.
      try {
        expectSameTree(src, out);
      } catch (e) {
        throw new Error(`round ${round} after mutations:\n${log.join('\n')}\n${(e as Error).message}`);
      }
      fs.rmSync(out, { recursive: true });
    }
    expect(reusedTotal).toBeGreaterThan(500);
    // (the walk trusts ctime on ext2/3/4, XFS, btrfs and tmpfs only)
    if ([0xef53, 0x58465342, 0x9123683e, 0x01021994].includes((await statPath(base)).fsMagic)) {
      expect(cachedTotal).toBeGreaterThan(1000);
      expect(unchangedRounds).toBeGreaterThanOrEqual(2);
    }
  }, 300_000);

  it('a no-change backup reads no file contents and adds no chunks', async () => {
    const base = tempDir();
    const src = path.join(base, 'src');
    fs.mkdirSync(src);
    makeTree(src, rng(7));
    const ds = await DataStore.open(path.join(base, 'ds'), { create: true, fsync: false });
    const run = (t: number) =>
      createBackup({ datastore: ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: 'same', backupTime: t, changeDetectionMode: 'metadata' });
    const first = await run(1_700_000_001);
    expect(first.archives[0].bytesRead).toBeGreaterThan(0);
    await run(1_700_000_002); // first metadata-mode run (its reference is the data-mode run)
    const before = bytesReadFromFiles();
    const third = await run(1_700_000_003);
    const a = third.archives[0];
    expect(bytesReadFromFiles() - before).toBe(0);
    expect(a.bytesRead).toBe(0);
    expect(a.reusedFiles).toBe(a.files - 1); // every file but the hardlink's second name
    expect(a.chunksNew).toBe(0);
    expect(a.bytesStored).toBe(0);
  }, 120_000);

  it('without a usable previous archive: one line why, then data mode', async () => {
    const base = tempDir();
    const src = path.join(base, 'src');
    fs.mkdirSync(src);
    // enough entries for a metadata archive of several 64 KiB-average chunks
    for (let d = 0; d < 40; d++) {
      fs.mkdirSync(path.join(src, `directory-with-a-long-name-${d}`));
      for (let f = 0; f < 60; f++) {
        const file = path.join(src, `directory-with-a-long-name-${d}`, `file-with-a-long-name-${f}.txt`);
        fs.writeFileSync(file, `${d}/${f}\n`);
        fs.utimesSync(file, 1_600_000_000, 1_600_000_000); // the same archive (and chunks) every run
      }
      fs.utimesSync(path.join(src, `directory-with-a-long-name-${d}`), 1_600_000_000, 1_600_000_000);
    }
    const ds = await DataStore.open(path.join(base, 'ds'), { create: true, fsync: false });
    let t = 1_700_000_000;
    const run = async (id: string, mode: 'legacy' | 'data' | 'metadata', archiveName = 'root.pxar') => {
      const notices: string[] = [];
      const r = await createBackup({
        datastore: ds,
        specs: [{ archiveName, path: src }],
        backupId: id,
        backupTime: ++t,
        changeDetectionMode: mode,
        chunkSize: 64 * 1024,
        onNotice: (n) => notices.push(n),
      });
      return { mode: r.archives[0].mode, notices };
    };

    expect(await run('none', 'metadata')).toMatchObject({ mode: 'data', notices: ['root.pxar: no previous snapshot in this group; encoding as data (every file is read)'] });
    await run('legacy', 'legacy');
    expect((await run('legacy', 'metadata')).notices).toEqual([expect.stringMatching(/^root\.pxar: previous snapshot .* was made in legacy mode; encoding as data/)]);
    await run('other', 'data', 'etc.pxar');
    expect((await run('other', 'metadata')).notices).toEqual([expect.stringMatching(/^root\.pxar: previous snapshot .* has no archive root\.pxar; encoding as data/)]);

    await run('failed', 'data');
    const failed = (await ds.listSnapshots(new BackupGroup('host', 'failed')))[0].dir;
    await ds.updateManifest(failed, (m) => {
      m.unprotected['verify_state'] = { state: 'failed', upid: 'UPID:test:00000000:00000000:00000000:00000000:verify:store:root@pam:' };
    });
    expect((await run('failed', 'metadata')).notices).toEqual([`root.pxar: previous snapshot ${failed} failed verification; encoding as data (every file is read)`]);
    await run('unreadable', 'data');
    const unreadable = (await ds.listSnapshots(new BackupGroup('host', 'unreadable')))[0].dir;
    fs.writeFileSync(path.join(ds.snapshotPath(unreadable), 'index.json.blob'), 'not a blob');
    expect((await run('unreadable', 'metadata')).notices).toEqual([expect.stringMatching(new RegExp(`^root\\.pxar: previous snapshot ${unreadable} has an unreadable manifest \\(.*\\); encoding as data`))]);

    // the root directory's goodbye table (the end of the metadata archive) is unreadable,
    // while the start of the archive is fine: the archive is not usable at all
    await run('damaged', 'data');
    const prev = (await ds.listSnapshots(new BackupGroup('host', 'damaged')))[0].dir;
    const idx = await ds.readIndex(prev, 'root.mpxar.didx');
    expect(idx.count).toBeGreaterThanOrEqual(2);
    const last = ds.chunks.chunkPath(idx.digest(idx.count - 1).toString('hex'));
    const bytes = fs.readFileSync(last);
    bytes[bytes.length - 5] ^= 0xff;
    fs.writeFileSync(last, bytes);
    const r = await run('damaged', 'metadata');
    expect(r.mode).toBe('data');
    expect(r.notices).toEqual([expect.stringMatching(/^root\.pxar: previous snapshot .* is not usable \(.*chunk .*\); encoding as data/)]);
  }, 120_000);
});
