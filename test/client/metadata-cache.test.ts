/**
 * The metadata cache (archive/metadata-cache.ts): a metadata-mode backup does not open files
 * and directories whose path, inode and ctime are as the previous backup recorded them, and
 * the archive is byte for byte the one it writes without the cache.
 */
import { describe, it, expect, onTestFinished } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataStore } from '../../ts/datastore/datastore.js';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import { BackupNamespace } from '../../ts/datastore/namespace.js';
import { createBackup, type CreateBackupOptions } from '../../ts/client/backup.js';
import { localTarget } from '../../ts/client/target.js';
import { createArchive, type PreviousArchive } from '../../ts/archive/create.js';
import { decodeMetadataCache, encodeMetadataCache } from '../../ts/archive/metadata-cache.js';
import { setxattr, statPath } from '../../ts/native/fs.js';
import { tempDir } from '../helpers/tmp.js';
import { IndexReadAt } from '../../ts/datastore/index-reader.js';

/** File systems on which the walk trusts ctime (native/src/fs/dir.rs). */
const tracked = [0xef53, 0x58465342, 0x9123683e, 0x01021994].includes((await statPath(os.tmpdir())).fsMagic);
const settle = () => new Promise((r) => setTimeout(r, 1100)); // only second-old ctimes are recorded

function tree(root: string, xattrs = true): void {
  for (const d of ['a', 'b']) {
    fs.mkdirSync(path.join(root, d, 'deep'), { recursive: true });
    for (let i = 0; i < 5; i++) fs.writeFileSync(path.join(root, d, `f${i}`), `${d}${i}\n`.repeat(i * 100));
    fs.writeFileSync(path.join(root, d, 'deep', 'x'), d);
  }
  if (!xattrs) return;
  try {
    setxattr(path.join(root, 'a', 'f1'), 'user.who', Buffer.from('a'));
    setxattr(path.join(root, 'b', 'f1'), 'user.who', Buffer.from('b'));
    setxattr(path.join(root, 'a', 'deep'), 'user.dir', Buffer.from('deep'));
  } catch {
    // no user xattrs here: the tree is still a test of the cache
  }
}

async function setup(xattrs = true) {
  const base = tempDir();
  const src = path.join(base, 'src');
  fs.mkdirSync(src);
  tree(src, xattrs);
  const ds = await DataStore.open(path.join(base, 'ds'), { create: true, fsync: false });
  let t = 1_700_000_000;
  const cacheDir = path.join(base, 'cache');
  const run = (backupId: string, extra: Partial<CreateBackupOptions> = {}) =>
    createBackup({ datastore: ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId, backupTime: ++t, changeDetectionMode: 'metadata', ...extra });
  const cacheFiles = () => (fs.existsSync(path.join(cacheDir, 'metadata')) ? fs.readdirSync(path.join(cacheDir, 'metadata')) : []);
  return { base, src, ds, run, cacheDir, cacheFiles };
}

describe('metadata cache', () => {
  it.skipIf(!tracked)('unchanged entries are not opened; changed ones are; the archive is the same as without the cache', async () => {
    const { src, run, cacheDir, cacheFiles } = await setup();
    await settle();
    const first = await run('c', { cacheDir });
    await run('n');
    expect(first.archives[0].metadataCached).toBe(0);
    expect(cacheFiles()).toHaveLength(1);

    const second = await run('c', { cacheDir });
    const plain = await run('n');
    const entries = second.archives[0].files + second.archives[0].directories;
    expect(second.archives[0].metadataCached).toBe(entries);
    expect(second.files).toEqual(plain.files);

    // Change a's xattr (ctime moves: read again), swap the two directories (their files keep
    // their ctimes but not their paths: read again), add a file.
    try {
      setxattr(path.join(src, 'a', 'f1'), 'user.who', Buffer.from('changed'));
    } catch {
      // without user xattrs the swap still moves every path below a and b
    }
    fs.renameSync(path.join(src, 'a'), path.join(src, 'tmp'));
    fs.renameSync(path.join(src, 'b'), path.join(src, 'a'));
    fs.renameSync(path.join(src, 'tmp'), path.join(src, 'b'));
    fs.writeFileSync(path.join(src, 'new'), 'new');
    const third = await run('c', { cacheDir });
    const plain3 = await run('n');
    expect(third.files).toEqual(plain3.files);
    // Nothing below the swapped directories came from the cache, nor the new file.
    expect(third.archives[0].metadataCached).toBe(0);
  }, 60_000);

  it.skipIf(!tracked)('a tree the cache vouches for entirely is not read from the previous archive; below it, what a change needs is looked up', async () => {
    const { src, ds, run, cacheDir } = await setup(false);
    fs.symlinkSync('f0', path.join(src, 'a', 'link')); // (its metadata is lstat's alone)
    await settle();
    await run('c', { cacheDir });
    await run('n');
    // A new directory: b was changed, the new one was opened by the walk; neither needs its
    // previous directory.
    fs.mkdirSync(path.join(src, 'b', 'new'));
    // Reads of a previous archive (through its index); opening it reads its start.
    let chunkReads = 0;
    const readAt = IndexReadAt.prototype.readAt;
    IndexReadAt.prototype.readAt = function (this: IndexReadAt, offset: number, length: number) {
      chunkReads++;
      return readAt.call(this, offset, length);
    };
    onTestFinished(() => {
      IndexReadAt.prototype.readAt = readAt;
    });
    const second = await run('c', { cacheDir });
    const all = second.archives[0].files + second.archives[0].directories;
    expect(chunkReads).toBe(1);
    expect(second.archives[0].metadataCached).toBe(all - 2); // (b and b/new)
    expect(second.archives[0].reusedFiles).toBe(second.archives[0].files);
    chunkReads = 0;
    const plain = await run('n');
    expect(chunkReads).toBeGreaterThan(0);
    expect(second.files).toEqual(plain.files);

    // a/deep/x with its ctime moved (by a chmod to the same mode): its directory needs the
    // previous archive's a/deep, found through a and the root, which were not read; x is reused.
    const x = path.join(src, 'a', 'deep', 'x');
    fs.chmodSync(x, fs.statSync(x).mode & 0o7777);
    chunkReads = 0;
    const third = await run('c', { cacheDir });
    expect(chunkReads).toBeGreaterThan(0);
    // (x, and b and b/new: changed within a second before the second backup, so not recorded)
    expect(third.archives[0].metadataCached).toBe(all - 3);
    expect(third.archives[0].reusedFiles).toBe(third.archives[0].files);
    expect(third.archives[0].bytesRead).toBe(0);
    expect(third.files).toEqual((await run('n')).files);
  }, 60_000);

  it('records no entry changed within the last second, nothing on a dry run or without a cache dir', async () => {
    const { src, run, cacheDir, cacheFiles } = await setup();
    await run('c', { cacheDir, dryRun: true });
    expect(cacheFiles()).toHaveLength(0);
    await run('c');
    expect(cacheFiles()).toHaveLength(0);
    // Every entry changed just now (chmod moves ctime): recorded, they would be racy.
    const touch = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) {
        fs.chmodSync(path.join(d, e.name), e.isDirectory() ? 0o755 : 0o644);
        if (e.isDirectory()) touch(path.join(d, e.name));
      }
    };
    touch(src);
    await run('c', { cacheDir });
    const again = await run('c', { cacheDir });
    expect(again.archives[0].metadataCached).toBe(0);
  }, 60_000);

  it.skipIf(!tracked)('a cache of another snapshot, or a damaged one, is not used', async () => {
    const { src, run, cacheDir, cacheFiles } = await setup();
    await settle();
    await run('c', { cacheDir });
    const file = path.join(cacheDir, 'metadata', cacheFiles()[0]);
    const good = fs.readFileSync(file);
    // A changed tree backed up without the cache: the file now describes an older snapshot.
    fs.writeFileSync(path.join(src, 'another'), 'file');
    await run('c', { changeDetectionMode: 'data' });
    const stale = await run('c', { cacheDir });
    expect(stale.archives[0].metadataCached).toBe(0);
    // (that backup wrote a cache for itself) damaged copies of it:
    const fresh = fs.readFileSync(file);
    for (const bad of [fresh.subarray(0, fresh.length - 5), Buffer.concat([fresh, Buffer.alloc(24)]), Buffer.from('garbage')]) {
      fs.writeFileSync(file, bad);
      const r = await run('c', { cacheDir });
      expect(r.archives[0].metadataCached).toBe(0);
      expect(r.archives[0].mode).toBe('metadata');
    }
    expect(decodeMetadataCache(good, Buffer.alloc(32))).toBeNull();
  }, 60_000);

  it.skipIf(!tracked)('createArchive uses a cache file only with the archive it describes, and only intact', async () => {
    const { src, ds, run, cacheDir, cacheFiles } = await setup();
    await settle();
    const withX = await run('c', { cacheDir });
    const mpxar = (r: typeof withX) => Buffer.from(r.files.find((f) => f.filename === 'root.mpxar.didx')!.csum, 'hex');
    const cacheFile = () => fs.readFileSync(path.join(cacheDir, 'metadata', cacheFiles()[0]));
    const fileOfWithX = cacheFile();
    const cache = decodeMetadataCache(fileOfWithX, mpxar(withX))!;
    expect(cache.table.length / 32).toBeGreaterThan(10);
    // The previous archive without a/deep: its payload offsets differ from those the cache of
    // the archive with it records.
    const withoutX = await run('c', { cacheDir, excludes: ['/a/deep'] });
    const fileOfWithoutX = cacheFile();
    const encode = async (metadataCache?: Buffer) => {
      const target = await localTarget(ds, BackupNamespace.root, new BackupGroup('host', 'c'), 1_800_000_000, 'root@pam', true);
      const previous = (await target.previous('root.pxar')) as PreviousArchive;
      expect(previous.metadataIndexCsum).toEqual(mpxar(withoutX));
      const warnings: string[] = [];
      const r = await createArchive({ source: src, archiveName: 'root.pxar', mode: 'metadata', uploader: target.uploader, previous, metadataCache, onWarning: (w) => warnings.push(w) });
      expect(warnings).toEqual([]);
      return r;
    };
    const plain = await encode();
    const csums = (r: typeof plain) => r.files.map((f) => f.csum.toString('hex'));
    // the other archive's cache: not used at all
    const other = await encode(fileOfWithX);
    expect(other.stats.metadataCached).toBe(0);
    expect(csums(other)).toEqual(csums(plain));
    // its own: used (a/deep is not in it, so read), and the archive is the same
    const own = await encode(fileOfWithoutX);
    expect(own.stats.metadataCached).toBeGreaterThan(0);
    expect(own.stats.metadataCached).toBeLessThan(own.stats.files + own.stats.directories);
    expect(csums(own)).toEqual(csums(plain));
    // one flipped bit in a record (a payload offset, say): not used
    const flipped = Buffer.from(fileOfWithoutX);
    flipped[flipped.length - 3] ^= 1;
    expect((await encode(flipped)).stats.metadataCached).toBe(0);
    // and the format round-trips
    expect(decodeMetadataCache(encodeMetadataCache(mpxar(withX), cache), mpxar(withX))).toEqual(cache);
  }, 60_000);
});
