/**
 * Unchanged trees (archive/metadata-cache.ts, native/src/fs/unchanged.rs): a metadata-mode
 * backup whose previous backup wrote an archive it would write again (a fixed point: its
 * previous archive again, or every file reused from its previous data chunks) and that finds
 * the tree exactly as that backup recorded it reuses the previous indexes without encoding.
 * Its archive must be the one the full metadata-mode path writes, and any change of an
 * archived entry, of the set of entries, or of the settings must send it down that path.
 */
import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataStore } from '../../ts/datastore/datastore.js';
import { createBackup, type CreateBackupOptions } from '../../ts/client/backup.js';
import { restore } from '../../ts/client/restore.js';
import { decodeMetadataCache, encodeMetadataCache } from '../../ts/archive/metadata-cache.js';
import { mknod, setxattr, statPath, treeUnchanged } from '../../ts/native/fs.js';
import { tempDir } from '../helpers/tmp.js';
import { diffTrees, snapshotTree, withoutPaths } from '../helpers/tree.js';

/** File systems on which the walk trusts ctime (native/src/fs/dir.rs). */
const tracked = [0xef53, 0x58465342, 0x9123683e, 0x01021994].includes((await statPath(os.tmpdir())).fsMagic);
const settle = () => new Promise((r) => setTimeout(r, 1100)); // only second-old ctimes are recorded

function tree(root: string): void {
  for (const d of ['a', 'b']) {
    fs.mkdirSync(path.join(root, d, 'deep'), { recursive: true });
    for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(root, d, `f${i}`), `${d}${i}\n`.repeat(i * 300));
    fs.writeFileSync(path.join(root, d, 'deep', 'x'), d);
  }
  fs.symlinkSync('a/f1', path.join(root, 'link'));
  mknod(path.join(root, 'fifo'), 0o010644);
  fs.linkSync(path.join(root, 'a', 'f2'), path.join(root, 'b', 'hard'));
  fs.writeFileSync(path.join(root, 'skip.log'), 'excluded');
  fs.mkdirSync(path.join(root, 'empty'));
}

async function setup() {
  const base = tempDir();
  const src = path.join(base, 'src');
  fs.mkdirSync(src);
  tree(src);
  const ds = await DataStore.open(path.join(base, 'ds'), { create: true, fsync: false });
  let t = 1_700_000_000;
  const cacheDir = path.join(base, 'cache');
  const backup = (backupId: string, extra: Partial<CreateBackupOptions> = {}) =>
    createBackup({
      datastore: ds,
      specs: [{ archiveName: 'root.pxar', path: src }],
      backupId,
      backupTime: ++t,
      changeDetectionMode: 'metadata',
      chunkSize: 64 * 1024,
      excludes: ['*.log'],
      ...extra,
    });
  /**
   * One backup of group `c` (with the metadata cache) and one of group `n` (without: always
   * the full path); both must write the same archive. Returns whether `c` reused its tree.
   */
  const step = async (extra: Partial<CreateBackupOptions> = {}) => {
    const c = await backup('c', { cacheDir, ...extra });
    const n = await backup('n', extra);
    expect(n.archives[0].unchangedTree).toBe(false);
    expect(c.files).toEqual(n.files);
    expect(c.archives[0].warnings).toBe(0);
    return c;
  };
  return { base, src, ds, step, cacheDir };
}

describe('unchanged trees', () => {
  it.skipIf(!tracked)('reuse the previous archive once it is a fixed point, and write what the full path writes', async () => {
    const { src, ds, step, base } = await setup();
    await settle();
    const first = await step(); // (no previous snapshot: data mode)
    expect(first.archives[0].mode).toBe('data');
    // Metadata mode: every file reused, the payload stream the data-mode archive's chunks
    // between its own markers, so the next backup writes it again: a fixed point already.
    const second = await step();
    expect(second.archives[0].unchangedTree).toBe(false);
    expect([second.archives[0].reencodedFiles, second.archives[0].bytesRead]).toEqual([0, 0]);
    expect(second.files.map((f) => f.csum)).not.toEqual(first.files.map((f) => f.csum));
    const third = await step(); // (group n writes it again through the full path)
    const s = third.archives[0];
    expect(s.unchangedTree).toBe(true);
    expect(third.files.map((f) => f.csum)).toEqual(second.files.map((f) => f.csum));
    expect(s.bytesRead).toBe(0);
    expect(s.chunksNew).toBe(0);
    expect([s.entries, s.files, s.directories]).toEqual([second.archives[0].entries, second.archives[0].files, second.archives[0].directories]);
    expect(s.entries).toBeGreaterThan(15);
    // still a fixed point
    expect((await step()).archives[0].unchangedTree).toBe(true);
    // the reused snapshot restores to the tree
    const out = path.join(base, 'out');
    await restore({ datastore: ds, snapshot: third.snapshot, archiveName: 'root.pxar', target: out });
    expect(diffTrees(snapshotTree(out), withoutPaths(snapshotTree(src), ['skip.log']))).toEqual([]);
  }, 60_000);

  it.skipIf(!tracked)('after a change, the first backup that reuses every file is a fixed point', async () => {
    const { src, step } = await setup();
    await settle();
    await step(); // data mode
    expect((await step()).archives[0].unchangedTree).toBe(false);
    expect((await step()).archives[0].unchangedTree).toBe(true);
    // A changed file: read and written anew, so its backup is no fixed point ...
    fs.appendFileSync(path.join(src, 'b', 'f5'), 'changed');
    await settle();
    const changed = await step();
    expect(changed.archives[0].unchangedTree).toBe(false);
    expect(changed.archives[0].bytesRead).toBeGreaterThan(0);
    // ... the next one reuses every file (the changed one's range was re-encoded with the
    // files around it, here all of them: fresh chunks), and its payload stream is the
    // previous one's data chunks: a fixed point, which the backup after it reuses.
    expect(changed.archives[0].reencodedFiles).toBeGreaterThan(0);
    const next = await step();
    expect(next.archives[0].unchangedTree).toBe(false);
    expect([next.archives[0].reencodedFiles, next.archives[0].bytesRead]).toEqual([0, 0]);
    const again = await step();
    expect(again.archives[0].unchangedTree).toBe(true);
    expect(again.files.map((f) => f.csum)).toEqual(next.files.map((f) => f.csum));
  }, 60_000);

  it.skipIf(!tracked)('a backup that left out chunks of the previous payload stream is not taken for a fixed point', async () => {
    const { src, step } = await setup();
    const big = path.join(src, 'a', 'deep');
    const rnd = (n: number, seed: string) => {
      const out = Buffer.alloc(n);
      for (let k = 0; k < n; k += 32) createHash('sha256').update(`${seed}${k}`).digest().copy(out, k);
      return out;
    };
    fs.writeFileSync(path.join(big, 'p1'), rnd(3_000_000, 'p1'));
    fs.writeFileSync(path.join(big, 'p2'), rnd(1_000_000, 'p2'));
    fs.writeFileSync(path.join(big, 'p3'), rnd(3_000_000, 'p3'));
    await settle();
    await step(); // data mode
    expect((await step()).archives[0].unchangedTree).toBe(false);
    expect((await step()).archives[0].unchangedTree).toBe(true);
    // Every file left is reused and nothing is read, but p2's chunks are left out: the rule
    // proves that a backup is written again only for a payload stream that holds every data
    // chunk of the previous one, so this one is not taken for a fixed point; the backup after
    // it is (it writes its previous archive again).
    fs.rmSync(path.join(big, 'p2'));
    await settle();
    const removed = await step();
    expect([removed.archives[0].reencodedFiles, removed.archives[0].bytesRead]).toEqual([0, 0]);
    expect((await step()).archives[0].unchangedTree).toBe(false);
    expect((await step()).archives[0].unchangedTree).toBe(true);
  }, 60_000);

  it.skipIf(!tracked)('any change of an archived entry, of the entries, or of the settings takes the full path', async () => {
    const { src, step } = await setup();
    const fixed = async () => {
      // (the first backup is in data mode, whose archive the next one does not write again)
      for (let k = 0; k < 4; k++) if ((await step()).archives[0].unchangedTree) return;
      throw new Error('no fixed point after four backups of an unchanged tree');
    };
    const changes: Array<[string, () => void]> = [
      ['append', () => fs.appendFileSync(path.join(src, 'a', 'f3'), 'more')],
      ['same-size rewrite with the old mtime', () => {
        const p = path.join(src, 'b', 'f4');
        const st = fs.statSync(p);
        fs.writeFileSync(p, fs.readFileSync(p).reverse());
        fs.utimesSync(p, st.atime, st.mtime);
      }],
      ['chmod', () => fs.chmodSync(path.join(src, 'a', 'deep', 'x'), 0o600)],
      ['touch a directory', () => fs.utimesSync(path.join(src, 'b', 'deep'), new Date(1e12), new Date(1e12))],
      ['new file deep down', () => fs.writeFileSync(path.join(src, 'a', 'deep', 'y'), 'y')],
      ['new empty directory', () => fs.mkdirSync(path.join(src, 'empty', 'sub'))],
      ['remove', () => fs.rmSync(path.join(src, 'a', 'f0'))],
      ['rename in place', () => fs.renameSync(path.join(src, 'b', 'f5'), path.join(src, 'b', 'f6'))],
      ['symlink retargeted', () => {
        fs.rmSync(path.join(src, 'link'));
        fs.symlinkSync('b/f1', path.join(src, 'link'));
      }],
      ['hardlink removed', () => fs.rmSync(path.join(src, 'b', 'hard'))],
      ['xattr', () => {
        try {
          setxattr(path.join(src, 'a', 'f4'), 'user.k', Buffer.from('v'));
        } catch {
          fs.chmodSync(path.join(src, 'a', 'f4'), 0o640); // (no user xattrs here)
        }
      }],
      ['file replaced by a directory', () => {
        fs.rmSync(path.join(src, 'b', 'f2'));
        fs.mkdirSync(path.join(src, 'b', 'f2'));
      }],
      ['new .pxarexclude', () => fs.writeFileSync(path.join(src, 'a', '.pxarexclude'), 'f1\n')],
      ['.pxarexclude rewritten', () => fs.writeFileSync(path.join(src, 'a', '.pxarexclude'), 'f4\n')],
    ];
    await settle();
    await fixed();
    for (const [what, change] of changes) {
      change();
      await settle();
      const r = await step();
      expect(r.archives[0].unchangedTree, what).toBe(false);
      await fixed();
    }
    // A .pxarexclude that excludes itself is not archived, so not recorded, yet its patterns
    // decide what is: a tree with one is never taken as unchanged.
    fs.writeFileSync(path.join(src, 'b', '.pxarexclude'), '.pxarexclude\nf1\n');
    await settle();
    for (let k = 0; k < 4; k++) expect((await step()).archives[0].unchangedTree).toBe(false);
    fs.writeFileSync(path.join(src, 'b', '.pxarexclude'), '.pxarexclude\nf3\n');
    await settle();
    expect((await step()).archives[0].unchangedTree).toBe(false);
    fs.rmSync(path.join(src, 'b', '.pxarexclude'));
    await settle();
    await fixed();
    // A change to an excluded file does not matter...
    fs.appendFileSync(path.join(src, 'skip.log'), 'more');
    await settle();
    expect((await step()).archives[0].unchangedTree).toBe(true);
    // ...but other settings do: another exclude list, chunk size, lookahead capacity.
    // (each from a fixed point of the default settings)
    expect((await step({ excludes: ['*.log', 'nothing'] })).archives[0].unchangedTree).toBe(false);
    await fixed();
    expect((await step({ chunkSize: 128 * 1024 })).archives[0].unchangedTree).toBe(false);
    await fixed();
    expect((await step({ lookaheadCapacity: 3 })).archives[0].unchangedTree).toBe(false);
  }, 180_000);

  it.skipIf(!tracked)('entries changed within the recording second are not trusted: no fixed point until they settle', async () => {
    const { src, step } = await setup();
    await settle();
    for (let k = 0; k < 3; k++) await step();
    expect((await step()).archives[0].unchangedTree).toBe(true);
    // a/f1's ctime moves (chmod to the mode it has: the archive does not change) right
    // before a backup: that one takes the full path and writes the same archive again, a
    // fixed point, but a/f1's ctime was not a second old, so it was not recorded: the next
    // backup must not reuse the tree either (a second change within the clock tick of that
    // ctime would keep it).
    const f1 = path.join(src, 'a', 'f1');
    fs.chmodSync(f1, fs.statSync(f1).mode & 0o7777);
    expect((await step()).archives[0].unchangedTree).toBe(false);
    expect((await step()).archives[0].unchangedTree).toBe(false);
    await settle();
    await step(); // records a/f1: the archive is the same again, a fixed point
    expect((await step()).archives[0].unchangedTree).toBe(true);
  }, 60_000);

  it.skipIf(!tracked)('the native check: counts, early exit, records it cannot match', async () => {
    const { src, step, cacheDir } = await setup();
    await settle();
    let last;
    for (let k = 0; k < 4; k++) last = await step();
    const dir = path.join(cacheDir, 'metadata');
    const file = fs.readFileSync(path.join(dir, fs.readdirSync(dir)[0]));
    const csum = Buffer.from(last!.files.find((f) => f.filename === 'root.mpxar.didx')!.csum, 'hex');
    const cache = decodeMetadataCache(file, csum)!;
    expect(cache.fixedPoint).toBe(true);
    const ok = await treeUnchanged(src, cache.table, null);
    expect(ok).toEqual({ unchanged: true, entries: cache.table.length / 32, directories: 6, reason: '' });
    // a device list without the tree's device: only the root is listed, its subdirectories
    // are counted but not descended into, so their entries are not found
    const other = await treeUnchanged(src, cache.table, [12345n]);
    expect(other.unchanged).toBe(true);
    expect(other.entries).toBeLessThan(ok.entries);
    // a record dropped from the table: its entry is "not archived", its directory's count is short
    const fewer = Buffer.from(cache.table.subarray(32));
    const r = await treeUnchanged(src, fewer, null);
    expect(r.unchanged).toBe(false);
    expect(r.reason).toMatch(/archived entries found unchanged|: changed$/);
    // flags and counts are covered by the file's SHA-256
    const enc = encodeMetadataCache(csum, cache);
    for (const at of [8 + 32 + 32, 8 + 32 + 32 + 8]) {
      const bad = Buffer.from(enc);
      bad[at] ^= 1;
      expect(decodeMetadataCache(bad, csum)).toBeNull();
    }
    expect(decodeMetadataCache(enc, csum)).toEqual(cache);
    // a cache file of the previous format (no settings, flags or counts) is still read, never
    // as a fixed point
    const count = Buffer.alloc(8);
    count.writeBigUInt64LE(BigInt(cache.table.length / 32));
    const v2 = Buffer.concat([Buffer.from('PXBMCAC2'), csum, count, createHash('sha256').update(cache.table).digest(), cache.table]);
    expect(decodeMetadataCache(v2, csum)).toEqual({ table: cache.table, settings: Buffer.alloc(32), fixedPoint: false, counts: { entries: 0, files: 0, directories: 0 } });
    await expect(treeUnchanged(path.join(src, 'nope'), cache.table, null)).resolves.toMatchObject({ unchanged: false });
  }, 60_000);
});
