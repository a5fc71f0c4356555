/**
 * Files that change while a backup reads them (pxar.md §4.3, §8.3): a large file (> 1 MiB,
 * streamed when the archiver reaches it) is deleted, truncated or grown as soon as an earlier
 * sibling is reported by `onProgress` (progressIntervalMs 0: called before every entry; the
 * entries of one directory come in sorted byte order). The backup succeeds with a warning
 * naming the file, and the archive stays consistent: a shrunk file comes back zero-padded to
 * its listed size, a grown one truncated to it, a vanished one is absent.
 *
 * Without a previous snapshot the walk keeps the descriptor it listed a file with and the read
 * goes through it (one open per file, as PBS's): a file deleted or replaced after it was listed
 * is then archived as it was listed, without a warning. Against a previous snapshot files are
 * opened by name when read, and the deletion or replacement is seen.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createBackup, type BackupResult, type ChangeDetectionMode } from '../../ts/client/backup.js';
import { listArchive, resolveSnapshot, restore } from '../../ts/client/restore.js';
import { DataStore } from '../../ts/datastore/datastore.js';
import { setxattr } from '../../ts/native/fs.js';
import { tempDir } from '../helpers/tmp.js';
import { lcgBytes } from '../helpers/data.js';
import { TreeBuilder, catalogPaths, diffTrees, snapshotTree } from '../helpers/tree.js';

const MiB = 1024 * 1024;
const SIZE = 3 * MiB + 777;
const base = tempDir('pxb-changes-');
let caseNo = 0;

type Change = 'vanish' | 'shrink' | 'grow' | 'fifo' | 'dir';

interface Run {
  ds: DataStore;
  src: string;
  original: Buffer;
  result: BackupResult;
  warnings: string[];
  reported: string[];
}

/**
 * dir/a-trigger (small), dir/b-victim (large), dir/c-after (small), other/x: when
 * `dir/a-trigger` is reported, `change` is applied to dir/b-victim.
 */
async function backupWithChange(mode: ChangeDetectionMode, change: Change, opts: { previous?: boolean } = {}): Promise<Run> {
  const root = path.join(base, `case-${caseNo++}`);
  const src = path.join(root, 'src');
  const original = randomBytes(SIZE);
  const t = new TreeBuilder(src);
  t.dir('dir');
  t.file('dir/a-trigger', 'reported before b-victim is read\n');
  t.file('dir/b-victim', original);
  t.file('dir/c-after', 'after\n');
  t.dir('other');
  t.file('other/x', 'x\n');
  t.finish();
  const ds = await DataStore.open(path.join(root, 'datastore'), { create: true, fsync: false });
  const victim = path.join(src, 'dir/b-victim');
  if (opts.previous) {
    // a previous snapshot in which b-victim differs (so it must be read again), the rest equal
    const prevContent = randomBytes(SIZE);
    fs.writeFileSync(victim, prevContent);
    fs.utimesSync(victim, 1_000_000, 1_000_000);
    await createBackup({ datastore: ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: 'changes', backupTime: 1_600_000_000, changeDetectionMode: mode });
    fs.writeFileSync(victim, original);
  }
  const warnings: string[] = [];
  const reported: string[] = [];
  let done = false;
  const result = await createBackup({
    datastore: ds,
    specs: [{ archiveName: 'root.pxar', path: src }],
    backupId: 'changes',
    backupTime: 1_700_000_000,
    changeDetectionMode: mode,
    progressIntervalMs: 0,
    onProgress: (p) => {
      reported.push(p.path);
      if (p.path !== 'dir/a-trigger' || done) return;
      done = true;
      if (change === 'vanish') fs.rmSync(victim);
      else if (change === 'fifo') {
        // opening a FIFO for reading without O_NONBLOCK would wait for a writer forever
        fs.rmSync(victim);
        execFileSync('mkfifo', [victim]);
      } else if (change === 'dir') {
        fs.rmSync(victim);
        fs.mkdirSync(victim);
      } else if (change === 'shrink') fs.truncateSync(victim, MiB + 5);
      else fs.appendFileSync(victim, randomBytes(MiB));
    },
    onWarning: (w) => warnings.push(w),
  });
  expect(done).toBe(true);
  return { ds, src, original, result, warnings, reported };
}

async function restoreRun(r: Run): Promise<string> {
  const target = path.join(base, `restore-${caseNo++}`);
  const rw: string[] = [];
  await restore({ datastore: r.ds, snapshot: 'host/changes', archiveName: 'root.pxar', target, onWarning: (w) => rw.push(w) });
  expect(rw).toEqual([]);
  return target;
}

const MODES: Array<{ mode: ChangeDetectionMode; previous?: boolean; label: string }> = [
  { mode: 'legacy', label: 'legacy' },
  { mode: 'data', label: 'data' },
  { mode: 'metadata', previous: true, label: 'metadata, re-read against a previous snapshot' },
];

for (const { mode, previous, label } of MODES) {
  /** The walk's descriptors are read through (no previous snapshot). */
  const held = !previous;
  describe(`a large file changing during the backup (${label})`, () => {
    it('reports entries of a directory in sorted order, before each is encoded', async () => {
      const r = await backupWithChange(mode, 'grow', { previous });
      const inDir = r.reported.filter((p) => p.startsWith('dir/'));
      expect(inDir).toEqual(['dir/a-trigger', 'dir/b-victim', 'dir/c-after']);
      expect(r.reported).toContain('other/x');
    });

    if (held) it('a file deleted after it was listed: archived as listed, through the descriptor the walk opened', async () => {
      for (const change of ['vanish', 'fifo', 'dir'] as const) {
        const r = await backupWithChange(mode, change, { previous });
        expect(r.warnings).toEqual([]);
        const target = await restoreRun(r);
        expect(fs.readFileSync(path.join(target, 'dir/b-victim')).equals(r.original)).toBe(true);
        expect(fs.readFileSync(path.join(target, 'dir/c-after'), 'utf8')).toBe('after\n');
      }
    });

    if (!held) it('a vanished file: warned about, left out, archive consistent', async () => {
      const r = await backupWithChange(mode, 'vanish', { previous });
      expect(r.warnings).toHaveLength(1);
      expect(r.warnings[0]).toMatch(/^dir\/b-victim: .*(ENOENT|no such file)/i);
      expect(r.result.archives[0].warnings).toBe(1);
      const target = await restoreRun(r);
      expect(fs.existsSync(path.join(target, 'dir/b-victim'))).toBe(false);
      // everything else is there, unchanged (the source no longer has b-victim either); dir's
      // mtime changed when b-victim was removed, after the archiver had taken it
      expect(diffTrees(snapshotTree(target), snapshotTree(r.src), { presenceOnly: ['dir'] })).toEqual([]);
    });

    for (const change of ['fifo', 'dir'] as const) {
      if (!held) it(`a file replaced by a ${change === 'fifo' ? 'FIFO' : 'directory'}: warned about, left out, the backup goes on`, async () => {
        const r = await backupWithChange(mode, change, { previous });
        expect(r.warnings).toEqual(['dir/b-victim: no longer a regular file (replaced during backup), skipped']);
        const target = await restoreRun(r);
        expect(fs.existsSync(path.join(target, 'dir/b-victim'))).toBe(false);
        expect(fs.readFileSync(path.join(target, 'dir/c-after'), 'utf8')).toBe('after\n');
        expect(fs.readFileSync(path.join(target, 'other/x'), 'utf8')).toBe('x\n');
      });
    }

    it('a shrunk file: warned about, zero-padded to its listed size', async () => {
      const r = await backupWithChange(mode, 'shrink', { previous });
      expect(r.warnings).toEqual(['dir/b-victim: file size changed while reading (shrunk)']);
      const target = await restoreRun(r);
      const got = fs.readFileSync(path.join(target, 'dir/b-victim'));
      expect(got.length).toBe(SIZE);
      expect(got.subarray(0, MiB + 5).equals(r.original.subarray(0, MiB + 5))).toBe(true);
      expect(got.subarray(MiB + 5).equals(Buffer.alloc(SIZE - MiB - 5))).toBe(true);
      expect(fs.readFileSync(path.join(target, 'dir/c-after'), 'utf8')).toBe('after\n');
    });

    it('a grown file: warned about, truncated to its listed size', async () => {
      const r = await backupWithChange(mode, 'grow', { previous });
      expect(r.warnings).toEqual(['dir/b-victim: file size changed while reading (grew)']);
      const target = await restoreRun(r);
      const got = fs.readFileSync(path.join(target, 'dir/b-victim'));
      expect(got.length).toBe(SIZE);
      expect(got.equals(r.original)).toBe(true);
    });
  });
}

describe('the listing and the legacy catalog agree after a change', () => {
  it('a vanished file is absent from the catalog too', async () => {
    const r = await backupWithChange('legacy', 'vanish');
    const dir = await resolveSnapshot(r.ds, 'host/changes');
    const listed: string[] = [];
    for await (const e of listArchive(r.ds, dir, 'root.pxar')) if (e.path.length) listed.push(e.path.toString());
    const cat = await catalogPaths(r.ds, await resolveSnapshot(r.ds, 'host/changes'));
    expect([...cat.keys()].sort()).toEqual(listed.sort());
  });

  it('a shrunk file is listed with its archived size in the catalog', async () => {
    const r = await backupWithChange('legacy', 'shrink');
    const cat = await catalogPaths(r.ds, await resolveSnapshot(r.ds, 'host/changes'));
    expect(cat.get('dir/b-victim')).toMatchObject({ type: 'f', size: SIZE });
    expect([...cat.keys()].sort()).toEqual(['dir', 'dir/a-trigger', 'dir/b-victim', 'dir/c-after', 'other', 'other/x']);
  });
});

describe('a hardlink whose first name vanishes during a metadata-mode backup', () => {
  it('archives the next name with its own data, not a reference into another file', async () => {
    const root = path.join(base, 'hardlink-vanish');
    const src = path.join(root, 'src');
    const linked = Buffer.from('hardlinked\n'.repeat(400));
    const reusable = lcgBytes(100_000, 7);
    const t = new TreeBuilder(src);
    t.dir('dir');
    t.file('dir/a-trigger', 'trigger\n');
    t.file('dir/c-h2', linked);
    t.file('dir/d-r', reusable);
    t.finish();
    const ds = await DataStore.open(path.join(root, 'datastore'), { create: true, fsync: false });
    const spec = { datastore: ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: 'hl', changeDetectionMode: 'metadata' as const };
    await createBackup({ ...spec, backupTime: 1_600_000_000 });
    // a-trigger changes (read again, so the lookahead cache starts empty), and the inode of
    // the reusable c-h2 gets a new first name b-h1, which vanishes before it is read: c-h2
    // and d-r then share one reused range
    fs.writeFileSync(path.join(src, 'dir/a-trigger'), 'changed\n');
    fs.utimesSync(path.join(src, 'dir/a-trigger'), 1_650_000_000, 1_650_000_000);
    const first = path.join(src, 'dir/b-h1');
    fs.linkSync(path.join(src, 'dir/c-h2'), first);
    const warnings: string[] = [];
    const result = await createBackup({
      ...spec,
      backupTime: 1_700_000_000,
      progressIntervalMs: 0,
      onProgress: (p) => {
        if (p.path === 'dir/a-trigger' && fs.existsSync(first)) fs.rmSync(first);
      },
      onWarning: (w) => warnings.push(w),
    });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^dir\/b-h1: cannot read file .*ENOENT/);
    const target = path.join(base, 'hardlink-vanish-restore');
    await restore({ datastore: ds, snapshot: 'host/hl', archiveName: 'root.pxar', target });
    expect(fs.existsSync(path.join(target, 'dir/b-h1'))).toBe(false);
    expect(fs.readFileSync(path.join(target, 'dir/c-h2')).equals(linked)).toBe(true);
    expect(fs.readFileSync(path.join(target, 'dir/d-r')).equals(reusable)).toBe(true);
    // c-h2 and d-r were reused, not read
    expect(result.archives[0].reusedFiles).toBe(2);
    expect(result.archives[0].bytesRead).toBe('changed\n'.length);
  });
});

describe('incremental backups of a tree that changes between snapshots', () => {
  const root = path.join(base, 'incremental');
  const src = path.join(root, 'src');
  let ds: DataStore;
  let time = 1_650_000_000;

  /** Back up `src` in `mode`, restore it, and compare with the source as it is now. */
  async function roundTrip(mode: ChangeDetectionMode): Promise<{ result: BackupResult; notices: string[] }> {
    const notices: string[] = [];
    const warnings: string[] = [];
    time += 60;
    const result = await createBackup({
      datastore: ds,
      specs: [{ archiveName: 'root.pxar', path: src }],
      backupId: 'incr',
      backupTime: time,
      changeDetectionMode: mode,
      chunkSize: 64 * 1024,
      onNotice: (n) => notices.push(n),
      onWarning: (w) => warnings.push(w),
    });
    expect(warnings).toEqual([]);
    const target = path.join(root, `restore-${time}`);
    const restored = await restore({ datastore: ds, snapshot: result.snapshot, archiveName: 'root.pxar', target });
    expect(diffTrees(snapshotTree(target), snapshotTree(src))).toEqual([]);
    // both count every name of a hardlinked file
    expect(restored.files).toBe(result.archives[0].files);
    return { result, notices };
  }

  it('every snapshot restores the tree as it was', async () => {
    const t = new TreeBuilder(src);
    t.dir('keep');
    // Seeded data: whether a range is reused depends on where the chunker cuts (PBS's 10 %
    // padding rule), so random data made the reuse counts below a matter of luck.
    for (let i = 0; i < 60; i++) t.file(`keep/f${String(i).padStart(2, '0')}`, lcgBytes(1000 + i * 50, 100 + i));
    t.file('big1', lcgBytes(3 * MiB, 1));
    t.file('big2', lcgBytes(2 * MiB + 3, 2));
    t.dir('mod');
    t.file('mod/same-size', 'version 1\n');
    t.file('mod/grow', 'short\n');
    t.file('mod/chmod', 'mode changes\n', { mode: 0o644 });
    t.file('mod/xattr', 'xattr changes\n', { xattrs: { 'user.v': '1' } });
    t.file('mod/becomes-dir', 'a file first\n');
    t.dir('del');
    t.file('del/x', 'deleted in round 2\n');
    t.hardlink('keep/link-to-f05', 'keep/f05');
    t.finish();
    ds = await DataStore.open(path.join(root, 'datastore'), { create: true, fsync: false });

    const r1 = await roundTrip('metadata');
    expect(r1.result.archives[0].reusedFiles).toBe(0);

    // round 2: content, size, mode, xattr and type changes, deletions, additions, a rename
    fs.writeFileSync(path.join(src, 'mod/same-size'), 'version 2\n');
    fs.utimesSync(path.join(src, 'mod/same-size'), 1_000_000, 1_000_000);
    fs.appendFileSync(path.join(src, 'mod/grow'), 'and longer now\n');
    fs.chmodSync(path.join(src, 'mod/chmod'), 0o600);
    setxattr(path.join(src, 'mod/xattr'), 'user.v', Buffer.from('2'));
    fs.rmSync(path.join(src, 'mod/becomes-dir'));
    fs.mkdirSync(path.join(src, 'mod/becomes-dir'));
    fs.writeFileSync(path.join(src, 'mod/becomes-dir/inside'), 'now a directory\n');
    fs.rmSync(path.join(src, 'del'), { recursive: true });
    fs.mkdirSync(path.join(src, 'new'));
    fs.writeFileSync(path.join(src, 'new/y'), lcgBytes(5000, 3));
    fs.renameSync(path.join(src, 'keep/f10'), path.join(src, 'keep/renamed'));
    const r2 = await roundTrip('metadata');
    expect(r2.result.archives[0].mode).toBe('metadata');
    expect(r2.result.archives[0].reusedFiles).toBeGreaterThan(50);
    expect(r2.result.archives[0].bytesRead).toBeLessThan(MiB);

    // round 3: big1 rewritten with the same size, a byte flipped in the middle of big2
    fs.writeFileSync(path.join(src, 'big1'), lcgBytes(3 * MiB, 4));
    const fd = fs.openSync(path.join(src, 'big2'), 'r+');
    fs.writeSync(fd, Buffer.from([0xee]), 0, 1, MiB);
    fs.closeSync(fd);
    const r3 = await roundTrip('metadata');
    expect(r3.result.archives[0].bytesRead).toBeGreaterThanOrEqual(5 * MiB);

    // round 4: a legacy snapshot in between; the next metadata run cannot reuse from it
    fs.writeFileSync(path.join(src, 'keep/f00'), 'changed before the legacy run\n');
    await roundTrip('legacy');
    fs.writeFileSync(path.join(src, 'keep/f01'), 'changed before the metadata run\n');
    const r5 = await roundTrip('metadata');
    expect(r5.notices.join('\n')).toMatch(/legacy/);
    expect(r5.result.archives[0].mode).toBe('data');

    // round 6: back to reuse, from the data-encoded snapshot
    fs.rmSync(path.join(src, 'keep/f02'));
    const r6 = await roundTrip('metadata');
    expect(r6.result.archives[0].mode).toBe('metadata');
    expect(r6.result.archives[0].reusedFiles).toBeGreaterThan(50);
  });
});

describe('an interrupted backup', () => {
  it('rejects, and leaves neither a snapshot nor an unfinished one behind', async () => {
    const root = path.join(base, 'abort');
    const src = path.join(root, 'src');
    const t = new TreeBuilder(src);
    for (let i = 0; i < 20; i++) t.file(`f${String(i).padStart(2, '0')}`, randomBytes(200_000));
    t.finish();
    const ds = await DataStore.open(path.join(root, 'datastore'), { create: true, fsync: false });
    for (const mode of ['legacy', 'data'] as const) {
      const ac = new AbortController();
      const run = createBackup({
        datastore: ds,
        specs: [{ archiveName: 'root.pxar', path: src }],
        backupId: `abort-${mode}`,
        backupTime: 1_700_000_000,
        changeDetectionMode: mode,
        signal: ac.signal,
        progressIntervalMs: 0,
        onProgress: (p) => {
          if (p.path === 'f10') ac.abort();
        },
      });
      await expect(run).rejects.toThrow(/abort/i);
      const group = (await ds.listGroups()).find((g) => g.id === `abort-${mode}`);
      if (group) expect(await ds.listSnapshots(group, { includeUnfinished: true })).toEqual([]);
      await expect(resolveSnapshot(ds, `host/abort-${mode}`)).rejects.toThrow();
      // the next backup of the group works and restores
      const r = await createBackup({ datastore: ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: `abort-${mode}`, backupTime: 1_700_000_000, changeDetectionMode: mode });
      const target = path.join(root, `restore-${mode}`);
      await restore({ datastore: ds, snapshot: r.snapshot, archiveName: 'root.pxar', target });
      expect(diffTrees(snapshotTree(target), snapshotTree(src))).toEqual([]);
    }
  });

  it('a restore aborted midway rejects', async () => {
    const root = path.join(base, 'abort-restore');
    const src = path.join(root, 'src');
    const t = new TreeBuilder(src);
    for (let i = 0; i < 10; i++) t.file(`f${i}`, randomBytes(2 * MiB));
    t.finish();
    const ds = await DataStore.open(path.join(root, 'datastore'), { create: true, fsync: false });
    const r = await createBackup({ datastore: ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: 'ar', backupTime: 1_700_000_000, changeDetectionMode: 'data' });
    const ac = new AbortController();
    ac.abort();
    await expect(restore({ datastore: ds, snapshot: r.snapshot, archiveName: 'root.pxar', target: path.join(root, 'target'), signal: ac.signal })).rejects.toThrow(/abort/i);
  });
});

describe('cached unchanged files that a re-encoding flush reads again (metadata mode)', () => {
  /**
   * dir/f00..f23 (small, unchanged: cached as a run), dir/m-big (2 MiB, unchanged, in the run:
   * streamed), dir/z-changed (1 MiB, changed: its chunk makes the cached range's padding exceed
   * 10 %, so the flush re-encodes the run). When z-changed is reported, before the flush reads
   * the run's files: f05 is deleted, f07 truncated, f09 grown. With the metadata cache the
   * unchanged files are cached as a run (replayRunData), without it one by one (replayFile).
   */
  for (const cached of [false, true]) it(`warns about each changed one, archives the rest, and the archive restores (${cached ? 'a cached run' : 'cached files'})`, async () => {
    const root = path.join(base, `run-reread-${cached}`);
    const cacheDir = cached ? path.join(root, 'cache') : undefined;
    const src = path.join(root, 'src');
    const t = new TreeBuilder(src);
    t.dir('dir');
    const small = Array.from({ length: 24 }, (_, k) => lcgBytes(3000 + 700 * k, 100 + k));
    small.forEach((b, k) => t.file(`dir/f${String(k).padStart(2, '0')}`, b));
    const big = lcgBytes(2 * MiB + 333, 7);
    t.file('dir/m-big', big);
    t.file('dir/z-changed', lcgBytes(MiB, 8));
    t.finish();
    // (the metadata cache records only entries whose ctime is a second old)
    if (cached) await new Promise((r) => setTimeout(r, 1100));
    const ds = await DataStore.open(path.join(root, 'datastore'), { create: true, fsync: false });
    const spec = [{ archiveName: 'root.pxar', path: src }];
    await createBackup({ datastore: ds, specs: spec, backupId: 'run', backupTime: 1_600_000_000, changeDetectionMode: 'data', cacheDir });
    const changed = path.join(src, 'dir/z-changed');
    fs.writeFileSync(changed, lcgBytes(MiB, 9));
    fs.utimesSync(changed, 1_000_000, 1_000_000);

    const warnings: string[] = [];
    let done = false;
    const f = (k: number) => path.join(src, `dir/f${String(k).padStart(2, '0')}`);
    const result = await createBackup({
      datastore: ds,
      specs: spec,
      backupId: 'run',
      backupTime: 1_700_000_000,
      changeDetectionMode: 'metadata',
      cacheDir,
      progressIntervalMs: 0,
      onProgress: (p) => {
        if (p.path !== 'dir/z-changed' || done) return;
        done = true;
        fs.rmSync(f(5));
        fs.truncateSync(f(7), 1000);
        fs.appendFileSync(f(9), 'more');
      },
      onWarning: (w) => warnings.push(w),
    });
    expect(done).toBe(true);
    const a = result.archives[0];
    expect(a.reencodedFiles).toBe(25); // z-changed's flush re-encodes f00..f23 (f05 counted, then skipped) and m-big
    expect(a.reusedFiles).toBe(0);
    expect(a.metadataCached).toBe(cached ? 26 : 0); // (dir, its 24 small files and m-big)
    expect(warnings).toHaveLength(3);
    expect(warnings[0]).toMatch(/^dir\/f05: cannot read file \(.*(ENOENT|no such file).*\), skipped$/i);
    expect(warnings.slice(1)).toEqual(['dir/f07: file size changed while reading (shrunk)', 'dir/f09: file size changed while reading (grew)']);

    const target = path.join(root, 'restore');
    const rw: string[] = [];
    await restore({ datastore: ds, snapshot: 'host/run', archiveName: 'root.pxar', target, onWarning: (w) => rw.push(w) });
    expect(rw).toEqual([]);
    const names = fs.readdirSync(path.join(target, 'dir')).sort();
    expect(names).toEqual([...small.map((_, k) => `f${String(k).padStart(2, '0')}`).filter((n) => n !== 'f05'), 'm-big', 'z-changed']);
    small.forEach((b, k) => {
      if (k === 5) return;
      const got = fs.readFileSync(path.join(target, `dir/f${String(k).padStart(2, '0')}`));
      const want = k === 7 ? Buffer.concat([b.subarray(0, 1000), Buffer.alloc(b.length - 1000)]) : b;
      expect(got.equals(want)).toBe(true);
    });
    expect(fs.readFileSync(path.join(target, 'dir/m-big')).equals(big)).toBe(true);
    expect(fs.readFileSync(path.join(target, 'dir/z-changed')).equals(fs.readFileSync(changed))).toBe(true);
  });
});
