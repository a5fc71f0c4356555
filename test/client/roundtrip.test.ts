/**
 * End-to-end backup → restore round trips through a real datastore, in every change-detection
 * mode, on a tree holding every kind of entry with exact metadata. The restored tree is
 * compared with the source field by field (type, sha256 of the content, mode, mtime in ns,
 * owners, xattrs incl. POSIX ACLs, symlink targets, device numbers, hardlink groups).
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBackup, type BackupResult, type ChangeDetectionMode } from '../../ts/client/backup.js';
import { listArchive, openArchiveDecoder, resolveSnapshot, restore } from '../../ts/client/restore.js';
import { DataStore } from '../../ts/datastore/datastore.js';
import { setFlags, setxattr, statPath } from '../../ts/native/fs.js';
import { isRoot, tempDir } from '../helpers/tmp.js';
import {
  TreeBuilder,
  diffTrees,
  displayPath,
  catalogPaths,
  hardlinkGroups,
  haveSetfacl,
  rawJoin,
  snapshotTree,
  subtree,
  withoutPaths,
  type TreeSnapshot,
} from '../helpers/tree.js';

const MiB = 1024 * 1024;
const BIG = 17 * MiB + 12_345;
const LONG_NAME = 'L'.repeat(255);
/** "non\xff\xfe\x80-utf8": not valid UTF-8. */
const NON_UTF8 = Buffer.from([0x6e, 0x6f, 0x6e, 0xff, 0xfe, 0x80, 0x2d, 0x75, 0x74, 0x66, 0x38]);
const DEEP = 'd1/d2/d3/d4/d5/d6/d7';

const FS_NODUMP_FL = 0x40;
const FS_NOATIME_FL = 0x80;
const FLAGS = FS_NODUMP_FL | FS_NOATIME_FL;

const EXCLUDES = ['*.bak', '!important.bak', '/top-only'];
const PXAREXCLUDE = ['# comment', '', '*.tmp', '!keep.tmp', 'cache/', '/anch.txt', ''].join('\n');
/** What EXCLUDES and excl/.pxarexclude must leave out (pxar.md §8.2, gitignore-like). */
const EXCLUDED = ['x.bak', 'd1/y.bak', 'top-only', 'excl/a.tmp', 'excl/cache', 'excl/sub/b.tmp', 'excl/anch.txt'];

const acls = haveSetfacl();
if (!acls) console.warn('roundtrip.test: setfacl (package "acl") is not installed: POSIX ACL entries are not part of the test tree');
if (!isRoot) console.warn('roundtrip.test: not root: devices, foreign owners and a mode-0 file are not part of the test tree');

const base = tempDir('pxb-roundtrip-');
const src = path.join(base, 'src');
let ds: DataStore;
let expected: TreeSnapshot;
let flagsSupported = false;

async function buildTree(): Promise<void> {
  const t = new TreeBuilder(src);
  const ns = (sec: number, nsec: number) => ({ mtime: { sec, nsec } });

  // regular files
  t.file('empty', '', ns(1_600_000_000, 1));
  t.file('small.txt', 'hello world\n', { mode: 0o640, mtime: { sec: 1_700_000_000, nsec: 123_456_789 }, xattrs: { 'user.comment': 'a small file', 'user.bin': Buffer.from([0, 1, 2, 0, 255]) } });
  const text = Buffer.from('The quick brown fox jumps over the lazy dog. '.repeat(1000));
  const three = Buffer.alloc(3 * MiB);
  for (let o = 0; o < three.length; o += text.length) text.copy(three, o);
  randomBytes(4096).copy(three, MiB); // some entropy in the middle
  t.file('three-mib.bin', three, ns(1_234_567_890, 999_999_999));
  t.file('big.bin', randomBytes(BIG), { mtime: { sec: 1_500_000_000, nsec: 500 }, xattrs: { 'user.big': 'yes' } });
  t.sparseFile('sparse.img', 6 * MiB, Buffer.alloc(4096, 0x48), Buffer.alloc(4096, 0x54), ns(1_000_000_000, 42));

  // directories: empty ones, nesting 7 deep
  t.dir('emptydir', { mode: 0o700, mtime: { sec: 1_111_111_111, nsec: 111 } });
  t.dir(DEEP);
  t.file(`${DEEP}/deep.txt`, 'deep down\n', ns(1_650_000_000, 7));
  t.dir('d1/d2/d3/d4/d5/d6/emptyleaf', ns(1_650_000_001, 8));
  for (const d of ['d1', 'd1/d2', 'd1/d2/d3', 'd1/d2/d3/d4', 'd1/d2/d3/d4/d5', 'd1/d2/d3/d4/d5/d6', DEEP]) t.dir(d, ns(1_650_000_100 + d.length, d.length * 1000));

  // symlinks
  t.dir('links');
  t.symlink('links/rel', '../small.txt', ns(1_400_000_000, 1));
  t.symlink('links/abs', '/etc/hostname', ns(1_400_000_001, 2));
  t.symlink('links/dangling', 'nowhere/at/all', ns(1_400_000_002, 3));

  // hardlinks: one inode, three names in three directories
  t.dir('hl/sub');
  t.file('hl/one', 'linked content\n', { mode: 0o604, mtime: { sec: 1_300_000_000, nsec: 300 } });
  t.hardlink('hl/sub/two', 'hl/one');
  t.hardlink('three', 'hl/one');
  t.hardlink('hl/big-link', 'three-mib.bin'); // a large (streamed) file with two names

  // special files
  t.dir('special');
  t.fifo('special/fifo', { mode: 0o620, mtime: { sec: 1_200_000_000, nsec: 12 } });
  await t.socket('special/sock', ns(1_200_000_001, 13));
  if (isRoot) {
    t.device('special/chr', 'chr', 1, 3, { mode: 0o666, mtime: { sec: 1_200_000_002, nsec: 14 } });
    t.device('special/blk', 'blk', 7, 200, { mode: 0o660, mtime: { sec: 1_200_000_003, nsec: 15 } });
  }

  // names
  t.dir('names');
  t.file(`names/${LONG_NAME}`, 'long name\n');
  t.file(rawJoin('names', NON_UTF8), 'not utf-8\n', ns(1_100_000_000, 5));
  t.dir(rawJoin('names', Buffer.concat([NON_UTF8, Buffer.from('-dir')])));
  t.file(rawJoin('names', Buffer.concat([NON_UTF8, Buffer.from('-dir')]), 'inner'), 'x');
  t.file('names/with space & "quotes"', 'q');
  t.file('names/new\nline', 'n');
  t.file('names/back\\slash [a]*?', 'b');
  t.symlink('names/long-target', 'x/'.repeat(1000), ns(1_100_000_001, 6));

  // modes
  t.dir('modes');
  t.file('modes/suid', '#!/bin/sh\n', { mode: 0o4755 });
  t.file('modes/sgid', '#!/bin/sh\n', { mode: 0o2755 });
  if (isRoot) t.file('modes/none', 'unreadable to others\n', { mode: 0o000 });
  if (isRoot) t.dir('modes/locked', { mode: 0o000 });
  if (isRoot) t.file('modes/locked/inside', 'inside a mode-0 directory\n', { mode: 0o000 });
  t.file('modes/empty-with-xattr', '', { mode: 0o444, xattrs: { 'user.e': 'empty file, one xattr' } });
  t.dir('modes/sticky', { mode: 0o1777 });
  t.file('modes/sticky/f', 'f');
  t.dir('modes/readonly', { mode: 0o555, mtime: { sec: 1_000_000_001, nsec: 1 } });
  t.file('modes/readonly/inside', 'inside a read-only directory\n');

  // times
  t.dir('times');
  t.file('times/ns', 'n', ns(1_700_000_000, 999_999_999));
  t.file('times/negative', 'before 1970', ns(-1_234_567_890, 987_654_321));
  t.file('times/epoch', 'e', ns(0, 0));
  t.dir('times/negdir', ns(-86_400, 1));

  // owners
  if (isRoot) {
    t.dir('owned', { uid: 4321, gid: 8765, mode: 0o750 });
    t.file('owned/file', 'owned\n', { uid: 1234, gid: 5678, mode: 0o6755 });
    t.symlink('owned/link', 'file', { uid: 2222, gid: 3333 });
    t.fifo('owned/fifo', { uid: 65534, gid: 65534 });
    t.file('owned/trusted', 't', { xattrs: { 'trusted.pxb': 'root only' } });
  }

  // xattrs on directories
  t.dir('xattr-dir', { xattrs: { 'user.dir': 'directory attribute', 'user.empty': '' } });
  t.file('xattr-dir/f', 'f', { xattrs: { 'user.f': 'file attribute' } });

  // POSIX ACLs: access (file, dir) and default (dir; a file created after it inherits)
  if (acls) {
    t.dir('acl/dir');
    t.file('acl/file', 'acl\n');
    t.file('acl/dir/before', 'created before the default ACL\n');
    t.acl('acl/file', 'u:1234:rw-,g:5678:r--');
    t.acl('acl/dir', 'u:1234:rwx,g:5678:r-x');
    t.acl('acl/dir', 'u:1234:rwx,g:5678:r-x,m:rwx', true);
    t.file('acl/dir/inherited', 'inherits the default ACL\n');
    t.dir('acl/dir/subdir-inherits');
  }

  // many small files (several restore/read batches of 256), sizes around the 1 MiB small-file limit
  t.dir('many');
  for (let i = 0; i < 600; i++) t.file(`many/f${String(i).padStart(4, '0')}`, Buffer.alloc(i * 37, i & 0xff), ns(1_600_000_000 + i, i));
  for (const [name, size] of [['limit-1', MiB - 1], ['limit', MiB], ['limit+1', MiB + 1]] as const) t.file(`many/${name}`, randomBytes(size));
  t.hardlink('many/zz-link-to-f0300', 'many/f0300');

  // chattr flags (nodump, noatime) on a file and a directory
  t.dir('flags');
  t.file('flags/file', 'flagged\n');
  flagsSupported = setFlags(t.abs('flags/file'), FLAGS, FLAGS) && setFlags(t.abs('flags'), FS_NODUMP_FL, FS_NODUMP_FL);
  if (!flagsSupported) console.warn(`roundtrip.test: chattr flags are not supported on ${base}: not checked`);

  // exclusion: --exclude patterns and a .pxarexclude file
  t.file('x.bak', 'excluded by *.bak');
  t.file('d1/y.bak', 'excluded by *.bak');
  t.file('top-only', 'excluded by /top-only');
  t.file('d1/top-only', 'kept: /top-only is anchored at the root');
  t.file('top.tmp', 'kept: .pxarexclude of excl/ does not apply here');
  t.dir('excl/cache');
  t.dir('excl/sub');
  t.file('excl/.pxarexclude', PXAREXCLUDE);
  t.file('excl/important.bak', 'kept: !important.bak');
  t.file('excl/a.tmp', 'excluded by *.tmp');
  t.file('excl/keep.tmp', 'kept: !keep.tmp');
  t.file('excl/cache/inner.txt', 'excluded with its directory (cache/)');
  t.file('excl/sub/b.tmp', 'excluded by *.tmp (applies below)');
  t.file('excl/sub/keep.tmp', 'kept: !keep.tmp');
  t.file('excl/sub/cache', 'kept: cache/ matches directories only');
  t.file('excl/anch.txt', 'excluded by /anch.txt (anchored at excl/)');
  t.file('excl/sub/anch.txt', 'kept: /anch.txt is anchored at excl/');

  setxattr(src, 'user.root', Buffer.from('on the archive root'));
  t.finish({ mode: 0o751, mtime: { sec: 1_690_000_000, nsec: 424_242_424 } });
}

/** Backup ids per mode; the second metadata run uses the first one's group (so it has a previous snapshot). */
const RUNS: Array<{ label: string; mode: ChangeDetectionMode; id: string; time: number; reuse?: 'none' | 'all' }> = [
  { label: 'legacy', mode: 'legacy', id: 'rt-legacy', time: 1_700_000_000 },
  { label: 'data', mode: 'data', id: 'rt-data', time: 1_700_000_000 },
  { label: 'metadata (first: nothing to reuse)', mode: 'metadata', id: 'rt-meta', time: 1_700_000_000, reuse: 'none' },
  { label: 'metadata (second: unchanged tree, files reused)', mode: 'metadata', id: 'rt-meta', time: 1_700_000_100, reuse: 'all' },
];

/** Restored trees of legacy archives hold `.pxarexclude-cli` (checked by its own test). */
const CLI_FILE = '.pxarexclude-cli';
const compareOpts = { ignore: isRoot ? [] : (['uid', 'gid'] as const).slice() };

function restored(dir: string, mode: ChangeDetectionMode): TreeSnapshot {
  const t = snapshotTree(dir);
  if (mode === 'legacy') t.delete(CLI_FILE);
  return t;
}

// Read-only directories of the tree would stop a non-root user's temp-dir cleanup (runs after this).
afterAll(() => {
  if (!isRoot) spawnSync('chmod', ['-R', 'u+rwX', base]);
});

beforeAll(async () => {
  await buildTree();
  expected = withoutPaths(snapshotTree(src), EXCLUDED);
  ds = await DataStore.open(path.join(base, 'datastore'), { create: true, fsync: false });
});

describe('the test tree', () => {
  it('holds every entry kind', () => {
    const types = new Set([...expected.values()].map((e) => e.type));
    expect([...types].sort()).toEqual(isRoot ? ['blk', 'chr', 'dir', 'fifo', 'file', 'socket', 'symlink'] : ['dir', 'fifo', 'file', 'socket', 'symlink']);
    expect(expected.get('big.bin')!.size).toBe(BIG);
    expect(Object.keys(expected.get('')!.xattrs!)).toEqual(['user.root']);
    expect(expected.get(`names/${LONG_NAME}`)).toBeDefined();
    expect(expected.get(`names/${displayPath(NON_UTF8)}`)).toBeDefined();
    expect(expected.get('times/negative')!.mtimeNs).toBe(-1_234_567_890n * 1_000_000_000n + 987_654_321n);
    expect(fs.statSync(path.join(src, 'sparse.img')).blocks * 512).toBeLessThan(6 * MiB);
    if (acls) expect(Object.keys(expected.get('acl/dir')!.xattrs!)).toEqual(['system.posix_acl_access', 'system.posix_acl_default']);
    if (acls) expect(Object.keys(expected.get('acl/dir/inherited')!.xattrs!)).toEqual(['system.posix_acl_access']);
  });
});

for (const [k, run] of RUNS.entries()) {
  describe(`round trip, ${run.label}`, () => {
    let result: BackupResult;
    const warnings: string[] = [];
    const notices: string[] = [];

    beforeAll(async () => {
      result = await createBackup({
        datastore: ds,
        specs: [{ archiveName: 'root.pxar', path: src }],
        backupId: run.id,
        backupTime: run.time,
        changeDetectionMode: run.mode,
        excludes: EXCLUDES,
        onWarning: (w) => warnings.push(w),
        onNotice: (n) => notices.push(n),
      });
    });

    it('backs up without warnings', () => {
      expect(warnings).toEqual([]);
      expect(result.dryRun).toBe(false);
      const files = result.files.map((f) => f.filename).sort();
      expect(files).toEqual(run.mode === 'legacy' ? ['catalog.pcat1.didx', 'root.pxar.didx'] : ['root.mpxar.didx', 'root.ppxar.didx']);
      const a = result.archives[0];
      if (run.reuse === 'none') {
        // no previous snapshot in the group: encoded as data, and the user is told so
        expect(a.mode).toBe('data');
        expect(notices.join('\n')).toMatch(/no previous snapshot/);
        expect(a.reusedFiles).toBe(0);
      }
      if (run.reuse === 'all') {
        expect(a.mode).toBe('metadata');
        expect(a.reusedFiles).toBeGreaterThan(0);
        expect(a.reusedBytes).toBeGreaterThanOrEqual(BIG);
        // unchanged files are not read: the 17 MiB file at least was not
        expect(a.bytesRead).toBeLessThan(BIG);
        expect(a.chunksNew).toBeLessThan(a.chunks);
      }
    });

    it('restores an identical tree', async () => {
      const target = path.join(base, `restore-${k}`);
      const rwarn: string[] = [];
      const r = await restore({ datastore: ds, snapshot: `host/${run.id}`, archiveName: 'root.pxar', target, onWarning: (w) => rwarn.push(w) });
      expect(rwarn).toEqual([]);
      expect(r.archive).toBe('root.pxar');
      expect(diffTrees(restored(target, run.mode), expected, compareOpts)).toEqual([]);
      if (flagsSupported) {
        expect((await statPath(path.join(target, 'flags/file'), { flags: true })).flags & FLAGS).toBe(FLAGS);
        expect((await statPath(path.join(target, 'flags'), { flags: true })).flags & FLAGS).toBe(FS_NODUMP_FL);
      }
      // runs of zeros come back as holes (sparse restore is the default)
      expect(fs.statSync(path.join(target, 'sparse.img')).blocks * 512).toBeLessThan(4 * MiB);
    });

    it('lists every path with its kind', async () => {
      const dir = await resolveSnapshot(ds, result.snapshot);
      expect(dir.time).toBe(run.time);
      const listed: string[] = [];
      const kinds = new Map<string, string>();
      for await (const e of listArchive(ds, dir, 'root.pxar')) {
        const p = displayPath(e.path);
        listed.push(p);
        kinds.set(p, e.kind);
      }
      const want = [...expected.keys()];
      expect(listed.filter((p) => p !== CLI_FILE).sort()).toEqual(want.sort());
      const kindOf: Record<string, string> = { file: 'file', dir: 'directory', symlink: 'symlink', fifo: 'fifo', socket: 'socket', chr: 'device', blk: 'device' };
      for (const [p, e] of expected) {
        const got = kinds.get(p);
        // later names of a hardlinked inode are HARDLINK entries
        expect(got === 'hardlink' && e.type === 'file' ? 'file' : got, p).toBe(kindOf[e.type]);
      }
      const laterNames = hardlinkGroups(expected).reduce((n, g) => n + g.length - 1, 0);
      expect(laterNames).toBe(4);
      expect([...kinds.values()].filter((v) => v === 'hardlink')).toHaveLength(laterNames);
    });

    if (run.mode === 'legacy') {
      /** type (+ size and mtime for files) of every path, from the catalog and from the archive. */
      const both = async () => {
        const dir = await resolveSnapshot(ds, result.snapshot);
        const typeChar: Record<string, string> = { file: 'f', directory: 'd', symlink: 'l', hardlink: 'h', fifo: 'p', socket: 's' };
        const archive = new Map<string, string>();
        for await (const e of listArchive(ds, dir, 'root.pxar')) {
          if (!e.path.length) continue;
          const t = e.kind === 'device' ? ((e.metadata.mode & 0o170000) === 0o060000 ? 'b' : 'c') : typeChar[e.kind];
          archive.set(displayPath(e.path), e.kind === 'file' ? `f ${e.size} ${e.metadata.mtime.secs}` : t);
        }
        const catalog = new Map([...(await catalogPaths(ds, dir))].map(([p, e]) => [p, e.type === 'f' ? `f ${e.size} ${e.mtime}` : e.type]));
        return { archive, catalog };
      };
      const hardlinked = () => new Set(hardlinkGroups(expected).flat());

      it('has a catalog that agrees with the archive (type, size, mtime; hardlinked files aside)', async () => {
        const { archive, catalog } = await both();
        const h = hardlinked();
        const drop = (m: Map<string, string>) => Object.fromEntries([...m].filter(([p]) => !h.has(p)));
        expect(drop(catalog)).toEqual(drop(archive));
        expect([...catalog.keys()].sort()).toEqual([...archive.keys()].sort());
      });

      // PBS catalogs the later names of a hardlinked inode with add_hardlink ('h'), as the archive has them
      it('catalogs later names of a hardlinked inode as hardlinks', async () => {
        const { archive, catalog } = await both();
        const h = hardlinked();
        const keep = (m: Map<string, string>) => Object.fromEntries([...m].filter(([p]) => h.has(p)));
        expect(keep(catalog)).toEqual(keep(archive));
      });
    }
  });
}

describe('several archives in one snapshot', () => {
  for (const mode of ['legacy', 'metadata'] as const) {
    it(`backs up and restores each archive on its own (${mode}, twice)`, async () => {
      const other = path.join(base, `other-${mode}`);
      const t = new TreeBuilder(other);
      t.file('etc.conf', 'setting = 1\n');
      t.file('blob', randomBytes(2 * MiB));
      t.finish();
      for (const [i, time] of [1_700_000_000, 1_700_000_060].entries()) {
        const r = await createBackup({
          datastore: ds,
          specs: [
            { archiveName: 'root.pxar', path: path.join(src, 'hl') },
            { archiveName: 'etc.pxar', path: other },
          ],
          backupId: `two-${mode}`,
          backupTime: time,
          changeDetectionMode: mode,
        });
        expect(r.archives.map((a) => a.archive)).toEqual(['root.pxar', 'etc.pxar']);
        if (mode === 'metadata' && i === 1) expect(r.archives.map((a) => a.reusedFiles > 0)).toEqual([true, true]);
        for (const [archive, from] of [
          ['root.pxar', path.join(src, 'hl')],
          ['etc.pxar', other],
        ]) {
          const target = path.join(base, `two-${mode}-${i}-${archive}`);
          await restore({ datastore: ds, snapshot: r.snapshot, archiveName: archive, target });
          expect(diffTrees(snapshotTree(target), snapshotTree(from), compareOpts)).toEqual([]);
        }
        if (mode === 'legacy') {
          const dir = await resolveSnapshot(ds, r.snapshot);
          expect([...(await catalogPaths(ds, dir, 'etc.pxar.didx')).keys()].sort()).toEqual(['blob', 'etc.conf']);
        }
      }
    });
  }

  it('refuses the same archive name twice and invalid archive names', async () => {
    const spec = { archiveName: 'root.pxar', path: src };
    await expect(createBackup({ datastore: ds, specs: [spec, spec], backupId: 'dup', changeDetectionMode: 'data' })).rejects.toThrow(/given twice/);
    for (const bad of ['../x.pxar', 'x.img', 'a/b.pxar', '.pxar', 'x.pxar.didx']) {
      await expect(createBackup({ datastore: ds, specs: [{ archiveName: bad, path: src }], backupId: 'bad', changeDetectionMode: 'data' })).rejects.toThrow(/invalid archive name/);
    }
    expect((await ds.listGroups()).map((g) => g.id)).not.toContain('dup');
    expect((await ds.listGroups()).map((g) => g.id)).not.toContain('bad');
  });
});

describe('partial restores with patterns', () => {
  for (const id of ['rt-legacy', 'rt-meta']) {
    it(`restores a single file and nothing else (${id})`, async () => {
      const target = path.join(base, `single-${id}`);
      await restore({ datastore: ds, snapshot: `host/${id}`, archiveName: 'root.pxar', target, patterns: [`${DEEP}/deep.txt`] });
      const got = snapshotTree(target);
      const chain = DEEP.split('/').map((_, i, a) => a.slice(0, i + 1).join('/'));
      expect([...got.keys()].sort()).toEqual(['', ...chain, `${DEEP}/deep.txt`].sort());
      expect(diffTrees(new Map([['f', got.get(`${DEEP}/deep.txt`)!]]), new Map([['f', expected.get(`${DEEP}/deep.txt`)!]]), compareOpts)).toEqual([]);
    });

    it(`restores a subtree, hardlinks inside it included (${id})`, async () => {
      const target = path.join(base, `subtree-${id}`);
      await restore({ datastore: ds, snapshot: `host/${id}`, archiveName: 'root.pxar', target, patterns: ['hl', 'd1/d2/d3'] });
      const got = snapshotTree(target);
      expect([...got.keys()].filter((p) => !p.includes('/')).sort()).toEqual(['', 'd1', 'hl']);
      expect(got.has('d1/y.bak')).toBe(false);
      expect(got.has('d1/top-only')).toBe(false);
      expect(diffTrees(subtree(got, 'hl'), subtree(expected, 'hl'), compareOpts)).toEqual([]);
      expect(diffTrees(subtree(got, 'd1/d2/d3'), subtree(expected, 'd1/d2/d3'), compareOpts)).toEqual([]);
      expect(fs.statSync(path.join(target, 'hl/one')).ino).toBe(fs.statSync(path.join(target, 'hl/sub/two')).ino);
    });
  }

  it('restores by glob (every *.txt, at any depth)', async () => {
    const target = path.join(base, 'glob');
    await restore({ datastore: ds, snapshot: 'host/rt-data', archiveName: 'root.pxar', target, patterns: ['**/*.txt'] });
    const got = snapshotTree(target);
    const files = [...got.values()].filter((e) => e.type === 'file').map((e) => e.path).sort();
    const want = [...expected.values()].filter((e) => e.type === 'file' && e.path.endsWith('.txt')).map((e) => e.path).sort();
    expect(files).toEqual(want);
    for (const f of files) expect(got.get(f)!.sha256).toBe(expected.get(f)!.sha256);
  });
});

describe('exclusion', () => {
  it('leaves out excluded entries and keeps re-included ones', () => {
    const all = snapshotTree(src);
    for (const p of EXCLUDED) expect(all.has(p), p).toBe(true);
    for (const p of ['excl/important.bak', 'excl/keep.tmp', 'excl/sub/keep.tmp', 'excl/sub/cache', 'excl/sub/anch.txt', 'd1/top-only', 'top.tmp', 'excl/.pxarexclude']) {
      expect(expected.has(p), p).toBe(true);
    }
    // (the restored trees were compared against `expected` above: excluded entries are absent there)
  });

  it('skipLostAndFound leaves out lost+found directories (not files of that name)', async () => {
    const other = path.join(base, 'lost');
    const t = new TreeBuilder(other);
    t.dir('lost+found');
    t.file('lost+found/orphan', 'o');
    t.dir('sub/lost+found');
    t.file('keep/lost+found', 'a file of that name stays');
    t.finish();
    const r = await createBackup({ datastore: ds, specs: [{ archiveName: 'root.pxar', path: other }], backupId: 'lost', changeDetectionMode: 'data', skipLostAndFound: true });
    const target = path.join(base, 'lost-restored');
    await restore({ datastore: ds, snapshot: r.snapshot, archiveName: 'root.pxar', target });
    expect(diffTrees(snapshotTree(target), withoutPaths(snapshotTree(other), ['lost+found', 'sub/lost+found']), { presenceOnly: [''] })).toEqual([]);
  });

  it('split archives carry the CLI patterns in the PRELUDE (pxar.md §3.3)', async () => {
    for (const id of ['rt-data', 'rt-meta']) {
      const { decoder } = await openArchiveDecoder(ds, await resolveSnapshot(ds, `host/${id}`), 'root.pxar');
      await decoder.next();
      expect(decoder.version).toBe(2);
      expect(decoder.prelude?.toString()).toBe(JSON.stringify({ 'exclude-patterns': '*.bak\n!important.bak\n/top-only\n' }));
    }
  });

  it('legacy archives carry the CLI patterns as a last root entry .pxarexclude-cli (pxar.md §8.2)', async () => {
    const dir = await resolveSnapshot(ds, 'host/rt-legacy');
    const root: string[] = [];
    for await (const e of listArchive(ds, dir, 'root.pxar')) if (e.path.length && !e.path.includes(0x2f)) root.push(e.path.toString());
    expect(root[root.length - 1]).toBe(CLI_FILE);
    const target = path.join(base, 'cli-file');
    await restore({ datastore: ds, snapshot: 'host/rt-legacy', archiveName: 'root.pxar', target, patterns: [CLI_FILE] });
    expect(fs.readFileSync(path.join(target, CLI_FILE), 'utf8')).toBe('*.bak\n!important.bak\n/top-only\n');
    const st = fs.statSync(path.join(target, CLI_FILE));
    expect(st.mode).toBe(0o100600);
    expect(st.mtimeMs).toBe(0);
  });
});

describe('restore into an existing target', () => {
  it('refuses to replace an existing file unless overwrite is set', async () => {
    const target = path.join(base, 'existing');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'small.txt'), 'precious');
    await expect(restore({ datastore: ds, snapshot: 'host/rt-data', archiveName: 'root.pxar', target })).rejects.toThrow(/small\.txt.*exists/);
    expect(fs.readFileSync(path.join(target, 'small.txt'), 'utf8')).toBe('precious');

    // a large file (streamed, not batched) too
    fs.mkdirSync(path.join(base, 'existing2'));
    fs.writeFileSync(path.join(base, 'existing2', 'big.bin'), 'precious');
    await expect(
      restore({ datastore: ds, snapshot: 'host/rt-data', archiveName: 'root.pxar', target: path.join(base, 'existing2'), patterns: ['big.bin'] }),
    ).rejects.toThrow(/big\.bin.*exists/);
    expect(fs.readFileSync(path.join(base, 'existing2', 'big.bin'), 'utf8')).toBe('precious');
  });

  it('with overwrite replaces files, and never writes through a symlink, FIFO, device or hardlink planted in the target', async () => {
    const target = path.join(base, 'overwrite');
    const victim = path.join(base, 'victim');
    fs.writeFileSync(victim, 'victim');
    fs.mkdirSync(path.join(target, 'hl'), { recursive: true });
    fs.writeFileSync(path.join(target, 'small.txt'), 'old content, other metadata');
    fs.symlinkSync(victim, path.join(target, 'empty')); // small file: batch writer
    fs.symlinkSync(victim, path.join(target, 'three-mib.bin')); // large file: streamed
    fs.symlinkSync(victim, path.join(target, 'hl/one'));
    // a FIFO (opening it for writing would wait for a reader) and, as root, a device node
    // (/dev/null's numbers: written through, the data would be lost) where large files go
    spawnSync('mkfifo', [path.join(target, 'big.bin')]);
    fs.mkdirSync(path.join(target, 'many'));
    if (isRoot) spawnSync('mknod', [path.join(target, 'many/limit+1'), 'c', '1', '3']);
    // a file hard-linked to one outside the target (xattr-dir/f has xattrs: not batched):
    // truncated in place, the outside file would change
    const linked = path.join(base, 'linked-victim');
    fs.writeFileSync(linked, 'linked victim');
    fs.mkdirSync(path.join(target, 'xattr-dir'));
    fs.linkSync(linked, path.join(target, 'xattr-dir/f'));
    await restore({ datastore: ds, snapshot: 'host/rt-meta', archiveName: 'root.pxar', target, overwrite: true });
    expect(fs.readFileSync(victim, 'utf8')).toBe('victim');
    expect(fs.readFileSync(linked, 'utf8')).toBe('linked victim');
    expect(diffTrees(restored(target, 'metadata'), expected, compareOpts)).toEqual([]);
  });

  it('never follows a symlink planted where the archive has a directory', async () => {
    const target = path.join(base, 'planted-dir');
    const outside = path.join(base, 'outside-dir');
    fs.mkdirSync(outside);
    fs.mkdirSync(target);
    fs.symlinkSync(outside, path.join(target, 'hl'));
    for (const overwrite of [false, true]) {
      await expect(restore({ datastore: ds, snapshot: 'host/rt-data', archiveName: 'root.pxar', target, overwrite })).rejects.toThrow(/hl/);
      expect(fs.readdirSync(outside)).toEqual([]);
    }
  });

  it('sparse: false writes the zeros; chown: false leaves the restoring user as owner', async () => {
    const target = path.join(base, 'dense');
    await restore({ datastore: ds, snapshot: 'host/rt-data', archiveName: 'root.pxar', target, patterns: ['sparse.img', 'owned'], sparse: false, chown: false });
    const st = fs.statSync(path.join(target, 'sparse.img'));
    expect(st.blocks * 512).toBeGreaterThanOrEqual(6 * MiB);
    expect(snapshotTree(target).get('sparse.img')!.sha256).toBe(expected.get('sparse.img')!.sha256);
    if (isRoot) {
      expect(fs.lstatSync(path.join(target, 'owned/file')).uid).toBe(0);
      expect(fs.lstatSync(path.join(target, 'owned/link')).gid).toBe(0);
    }
  });

  it('refuses a target that is not a directory', async () => {
    const f = path.join(base, 'a-file');
    fs.writeFileSync(f, 'x');
    await expect(restore({ datastore: ds, snapshot: 'host/rt-data', archiveName: 'root.pxar', target: f })).rejects.toThrow(/not a directory|exists/);
  });
});

describe('sanity of the comparison itself', () => {
  it('notices a changed mtime, mode, xattr and a broken hardlink', () => {
    const target = path.join(base, 'restore-1');
    const probe = path.join(target, 'times/ns');
    const before = snapshotTree(target);
    fs.chmodSync(probe, 0o600);
    fs.utimesSync(probe, 5, 5);
    fs.rmSync(path.join(target, 'hl/sub/two'));
    fs.writeFileSync(path.join(target, 'hl/sub/two'), 'linked content\n');
    const after = snapshotTree(target);
    const d = diffTrees(after, before);
    expect(d.some((l) => l.startsWith('times/ns: mode'))).toBe(true);
    expect(d.some((l) => l.startsWith('times/ns: mtimeNs'))).toBe(true);
    expect(d.some((l) => l.startsWith('hardlink groups'))).toBe(true);
  });
});

describe('append-only and immutable files', () => {
  const FS_IMMUTABLE_FL = 0x10;
  const FS_APPEND_FL = 0x20;
  const root = path.join(base, 'locked');
  const clear = () => spawnSync('chattr', ['-R', '-a', '-i', root]);
  afterAll(clear);

  it.runIf(isRoot)('restore with their flags, content, mode and mtime (flags are set last)', async () => {
    const lsrc = path.join(root, 'src');
    const t = new TreeBuilder(lsrc);
    t.dir('d');
    t.file('d/append-only', 'appended\n', { mtime: { sec: 1_500_000_000, nsec: 123 } });
    t.file('d/immutable', 'frozen\n', { mtime: { sec: 1_500_000_001, nsec: 456 } });
    t.file('d/plain', 'after them\n');
    t.finish();
    if (!setFlags(t.abs('d/append-only'), FS_APPEND_FL, FS_APPEND_FL) || !setFlags(t.abs('d/immutable'), FS_IMMUTABLE_FL, FS_IMMUTABLE_FL)) {
      console.warn(`roundtrip.test: chattr +a/+i not supported on ${base}: not checked`);
      return;
    }
    const want = snapshotTree(lsrc);
    const lds = await DataStore.open(path.join(root, 'datastore'), { create: true, fsync: false });
    await createBackup({ datastore: lds, specs: [{ archiveName: 'root.pxar', path: lsrc }], backupId: 'locked', changeDetectionMode: 'data' });
    const target = path.join(root, 'restore');
    const warnings: string[] = [];
    await restore({ datastore: lds, snapshot: 'host/locked', archiveName: 'root.pxar', target, onWarning: (w) => warnings.push(w) });
    expect(warnings).toEqual([]);
    expect(diffTrees(snapshotTree(target), want)).toEqual([]);
    expect((await statPath(path.join(target, 'd/append-only'), { flags: true })).flags & FS_APPEND_FL).toBe(FS_APPEND_FL);
    expect((await statPath(path.join(target, 'd/immutable'), { flags: true })).flags & FS_IMMUTABLE_FL).toBe(FS_IMMUTABLE_FL);
  });
});
