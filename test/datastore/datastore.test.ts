import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeBlob } from '../../ts/format/blob.js';
import { DynamicIndex, DynamicIndexWriter } from '../../ts/format/dynamic-index.js';
import { FixedIndex, FixedIndexWriter } from '../../ts/format/fixed-index.js';
import { BackupManifest, blobCsum } from '../../ts/format/manifest.js';
import { BackupDir } from '../../ts/datastore/backup-dir.js';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import type { BackupWriter } from '../../ts/datastore/backup-writer.js';
import { DataStore } from '../../ts/datastore/datastore.js';
import { BackupNamespace } from '../../ts/datastore/namespace.js';
import { prune } from '../../ts/datastore/prune.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'pbs');
const T0 = 1715091951; // 2024-05-07T14:25:51Z
const ROOT = BackupNamespace.root;
const OWNER = 'root@pam';

let dir: string;
let ds: DataStore;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'pxb-datastore-'));
  ds = await DataStore.open(path.join(dir, 'store'), { create: true });
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** All regular files under `root`, relative, sorted. */
async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else out.push(r);
    }
  };
  await walk('');
  return out.sort();
}

function sha(data: Buffer): Buffer {
  return createHash('sha256').update(data).digest();
}

/** Chunk `parts` into the store and return a dynamic index over them. */
async function storeStream(parts: Buffer[]): Promise<{ data: Buffer; csum: Buffer; size: number; digests: string[] }> {
  const w = new DynamicIndexWriter();
  let end = 0;
  const digests: string[] = [];
  for (const p of parts) {
    const digest = sha(p);
    await ds.chunks.insert(digest, encodeBlob(p));
    end += p.length;
    w.add(end, digest);
    digests.push(digest.toString('hex'));
  }
  return { ...w.finish(), digests };
}

/** A finished snapshot with one small dynamic index. */
async function snapshot(group: BackupGroup, time: number, ns = ROOT, owner = OWNER): Promise<BackupDir> {
  const idx = await storeStream([Buffer.from(`data at ${time}`)]);
  const w = await ds.beginBackup(ns, group, time, { owner });
  await w.addIndex('root.pxar.didx', idx.data, idx);
  const m = new BackupManifest(group.type, group.id, time);
  m.addFile('root.pxar.didx', idx.size, idx.csum);
  await w.finish(m);
  return w.dir;
}

describe('DataStore.open', () => {
  it('creates .lock and .chunks on first use and reopens', async () => {
    expect(await readdir(ds.path)).toEqual(['.chunks', '.lock']);
    expect((await stat(path.join(ds.path, '.lock'))).size).toBe(0);
    expect((await stat(path.join(ds.path, '.chunks'))).mode & 0o777 & ~0o750).toBe(0);
    const again = await DataStore.open(ds.path);
    expect(again.path).toBe(ds.path);
  });

  it('refuses to open a missing store without create, or to create in a foreign directory', async () => {
    await expect(DataStore.open(path.join(dir, 'nope'))).rejects.toThrow(/is not a datastore \(no \.chunks directory\)/);
    const foreign = path.join(dir, 'home');
    await mkdir(foreign);
    await writeFile(path.join(foreign, 'important.txt'), 'x');
    await expect(DataStore.open(foreign, { create: true })).rejects.toThrow(/not empty and has no \.chunks/);
    expect(await readdir(foreign)).toEqual(['important.txt']);
  });
});

describe('backup writer and on-disk layout', () => {
  it('writes exactly the PBS layout for chunks and a finished snapshot', async () => {
    const parts = [Buffer.from('first chunk of the archive'), Buffer.alloc(70_000, 3), Buffer.from('tail')];
    const idx = await storeStream(parts);
    const group = new BackupGroup('host', 'myhost');
    const w = await ds.beginBackup(ROOT, group, T0, { owner: OWNER });
    expect(w.path).toBe(path.join(ds.path, 'host', 'myhost', '2024-05-07T14:25:51Z'));
    expect(w.previous).toBeNull();
    await w.addIndex('root.pxar.didx', idx.data, idx);
    const conf = encodeBlob(Buffer.from('name: test\n'));
    const confInfo = await w.addBlob('qemu-server.conf.blob', conf);
    expect(confInfo).toEqual({ size: conf.length, csum: blobCsum(conf) });
    const m = new BackupManifest('host', 'myhost', T0);
    m.addFile('root.pxar.didx', idx.size, idx.csum);
    m.addFile('qemu-server.conf.blob', confInfo.size, confInfo.csum);
    await w.finish(m);

    const snap = 'host/myhost/2024-05-07T14:25:51Z';
    expect(await filesUnder(ds.path)).toEqual(
      [
        '.lock',
        ...idx.digests.map((d) => `.chunks/${d.slice(0, 4)}/${d}`),
        'host/myhost/owner',
        `${snap}/index.json.blob`,
        `${snap}/qemu-server.conf.blob`,
        `${snap}/root.pxar.didx`,
      ].sort(),
    );
    expect(await readFile(path.join(ds.path, 'host/myhost/owner'), 'utf8')).toBe('root@pam\n');
    expect(await readFile(path.join(ds.path, snap, 'root.pxar.didx'))).toEqual(idx.data);
    expect(await readFile(path.join(ds.path, snap, 'index.json.blob'))).toEqual(m.toBlob());

    // and everything reads back through the API
    const dirs = await ds.listSnapshots(group);
    expect(dirs.map((s) => [s.dir.path, s.finished, s.protected])).toEqual([[snap, true, false]]);
    expect(dirs[0].files).toEqual(['index.json.blob', 'qemu-server.conf.blob', 'root.pxar.didx']);
    expect(await ds.listFiles(dirs[0].dir)).toEqual(dirs[0].files);
    expect((await ds.listGroups(ROOT)).map(String)).toEqual(['host/myhost']);
    expect(await ds.getOwner(group)).toBe(OWNER);
    const manifest = await ds.loadManifest(dirs[0].dir);
    expect(manifest.toJSON()).toBe(m.toJSON());
    const index = await ds.readIndex(dirs[0].dir, 'root.pxar.didx');
    expect(index).toBeInstanceOf(DynamicIndex);
    const restored = [];
    for (const c of (index as DynamicIndex).chunks()) restored.push(await ds.chunks.readChunk(c.digest, c.size));
    expect(Buffer.concat(restored)).toEqual(Buffer.concat(parts));
    expect(await ds.readBlob(dirs[0].dir, 'qemu-server.conf.blob')).toEqual(conf);
  });

  it('accepts the real PBS fixture index and detects csum/size mismatches against the manifest', async () => {
    const didx = await readFile(path.join(FIXTURES, 'backup-client-pxar-data.ppxar.didx'));
    const csum = Buffer.from('e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20', 'hex');
    const group = new BackupGroup('host', 'myhost');
    const w = await ds.beginBackup(ROOT, group, T0, { owner: OWNER });
    await expect(w.addIndex('root.ppxar.didx', didx, { csum, size: 104859232 + 1 })).rejects.toThrow(
      /root\.ppxar\.didx: index describes 104859232 bytes, expected 104859233/,
    );
    await expect(w.addIndex('root.ppxar.didx', didx, { csum: Buffer.alloc(32), size: 104859232 })).rejects.toThrow(
      /root\.ppxar\.didx: index checksum e13b71c1.* differs from the expected 0000/,
    );
    await w.addIndex('root.ppxar.didx', didx, { csum, size: 104859232 });
    const m = new BackupManifest('host', 'myhost', T0);
    m.addFile('root.ppxar.didx', 104859232, csum);
    await w.finish(m);
    const snap = w.dir;
    expect((await ds.readIndex(snap, 'root.ppxar.didx')).count).toBe(100);

    // size mismatch: the manifest disagrees with the index
    await ds.updateManifest(snap, (mm) => {
      mm.files[0].size = 1234;
    });
    await expect(ds.readIndex(snap, 'root.ppxar.didx')).rejects.toThrow(
      'archive root.ppxar.didx of host/myhost/2024-05-07T14:25:51Z: index describes 104859232 bytes, the manifest says 1234',
    );
    await ds.updateManifest(snap, (mm) => {
      mm.files[0].size = 104859232;
    });
    // csum mismatch: a digest byte flipped on disk
    const file = path.join(ds.snapshotPath(snap), 'root.ppxar.didx');
    const bad = Buffer.from(didx);
    bad[4096 + 40 * 7 + 8] ^= 0x10;
    await writeFile(file, bad);
    await expect(ds.readIndex(snap, 'root.ppxar.didx')).rejects.toThrow(
      /^archive root\.ppxar\.didx of host\/myhost\/2024-05-07T14:25:51Z: index checksum [0-9a-f]{64} does not match the manifest \(e13b71c1/,
    );
    await expect(ds.readIndex(snap, 'other.pxar.didx')).rejects.toThrow(/other\.pxar\.didx is not listed in the manifest/);
  });

  it('writes fixed indexes as .fidx and reads them back as FixedIndex', async () => {
    const image = Buffer.alloc(5000, 9);
    const w = new FixedIndexWriter(image.length, 4096);
    for (let k = 0; k < 2; k++) {
      const part = image.subarray(k * 4096, Math.min(image.length, (k + 1) * 4096));
      await ds.chunks.insert(sha(part), encodeBlob(part));
      w.set(k, part.length, sha(part));
    }
    const fidx = w.finish();
    const bw = await ds.beginBackup(ROOT, new BackupGroup('vm', '100'), T0, { owner: OWNER });
    await bw.addIndex('drive-scsi0.img.fidx', fidx.data, fidx);
    const m = new BackupManifest('vm', '100', T0);
    m.addFile('drive-scsi0.img.fidx', fidx.size, fidx.csum);
    await bw.finish(m);
    expect(existsSync(path.join(ds.path, 'vm/100/2024-05-07T14:25:51Z/drive-scsi0.img.fidx'))).toBe(true);
    const idx = await ds.readIndex(bw.dir, 'drive-scsi0.img.fidx');
    expect(idx).toBeInstanceOf(FixedIndex);
    expect(idx.size).toBe(5000);
  });

  it('checks the manifest at finish', async () => {
    const idx = await storeStream([Buffer.from('x')]);
    const group = new BackupGroup('host', 'h');
    const w = await ds.beginBackup(ROOT, group, T0, { owner: OWNER });
    await expect(w.finish(new BackupManifest('host', 'h', T0))).rejects.toThrow(/file count == 0/);
    await w.addIndex('root.pxar.didx', idx.data, idx);
    await expect(w.addIndex('root.pxar.didx', idx.data, idx)).rejects.toThrow(/already added/);
    await expect(w.finish(new BackupManifest('host', 'other', T0))).rejects.toThrow(/manifest is for host\/other/);
    const m = new BackupManifest('host', 'h', T0);
    m.addFile('root.pxar.didx', idx.size + 1, idx.csum);
    await expect(w.finish(m)).rejects.toThrow(/manifest entry root\.pxar\.didx .* does not match the added file/);
    const m2 = new BackupManifest('host', 'h', T0);
    m2.addFile('missing.pxar.didx', 1, idx.csum);
    await expect(w.finish(m2)).rejects.toThrow(/lists missing\.pxar\.didx, which was not added/);
    expect(await ds.listSnapshots(group)).toEqual([]);
    await w.abort();
  });

  it('refuses hostile archive names and the manifest name as a blob', async () => {
    const w = await ds.beginBackup(ROOT, new BackupGroup('host', 'h'), T0, { owner: OWNER });
    const blob = encodeBlob(Buffer.from('x'));
    for (const name of ['../escape.blob', '/abs.blob', 'a/b.blob', 'x\0.blob', '.hidden.blob', 'x.txt']) {
      await expect(w.addBlob(name, blob), JSON.stringify(name)).rejects.toThrow(/invalid archive name/);
    }
    await expect(w.addBlob('index.json.blob', blob)).rejects.toThrow(/written by finish/);
    await expect(w.addBlob('bad.blob', Buffer.from('not a blob at all'))).rejects.toThrow(/unknown magic/);
    await expect(w.addIndex('x.blob', Buffer.alloc(4096), { csum: Buffer.alloc(32), size: 0 })).rejects.toThrow(/not an index/);
    expect(await readdir(w.path)).toEqual([]);
    expect(existsSync(path.join(ds.path, 'escape.blob'))).toBe(false);
    await expect(ds.readIndex(w.dir, '../../../etc/passwd.didx')).rejects.toThrow(/invalid archive name/);
    await w.abort();
  });
});

describe('snapshot lifecycle', () => {
  const group = new BackupGroup('host', 'x');

  it('abort removes the snapshot dir (and a group it created)', async () => {
    const w = await ds.beginBackup(ROOT, group, T0, { owner: OWNER });
    const idx = await storeStream([Buffer.from('y')]);
    await w.addIndex('root.pxar.didx', idx.data, idx);
    await w.abort();
    expect(existsSync(w.path)).toBe(false);
    expect(existsSync(ds.groupPath(group))).toBe(false);
    await w.abort(); // idempotent
    await expect(w.addBlob('a.blob', encodeBlob(Buffer.from('a')))).rejects.toThrow(/writer is aborted/);

    const first = await snapshot(group, T0);
    const w2 = await ds.beginBackup(ROOT, group, T0 + 10, { owner: OWNER });
    await w2.abort();
    expect(existsSync(w2.path)).toBe(false);
    expect((await ds.listSnapshots(group)).map((s) => s.dir.time)).toEqual([first.time]);
    expect(await ds.getOwner(group)).toBe(OWNER);
  });

  it('does not list an unfinished snapshot, and the next backup removes it', async () => {
    const done = await snapshot(group, T0);
    const w = await ds.beginBackup(ROOT, group, T0 + 60, { owner: OWNER });
    const idx = await storeStream([Buffer.from('z')]);
    await w.addIndex('root.pxar.didx', idx.data, idx);
    expect((await ds.listSnapshots(group)).map((s) => s.dir.path)).toEqual([done.path]);
    const all = await ds.listSnapshots(group, { includeUnfinished: true });
    expect(all.map((s) => [s.dir.time, s.finished])).toEqual([
      [T0, true],
      [T0 + 60, false],
    ]);
    expect((await ds.lastSuccessfulSnapshot(group))?.equals(done)).toBe(true);
    await expect(ds.loadManifest(w.dir)).rejects.toThrow(/has no manifest/);

    // simulate a crash: the writer vanishes, its lock belongs to a dead process
    const lockFile = path.join(ds.path, '.locks', 'host', 'x.lock');
    const lock = JSON.parse(await readFile(lockFile, 'utf8'));
    await writeFile(lockFile, JSON.stringify({ ...lock, pid: deadPid() }));
    const next = await ds.beginBackup(ROOT, group, T0 + 120, { owner: OWNER });
    expect(existsSync(w.path)).toBe(false);
    expect(next.previous?.equals(done)).toBe(true);
    await next.abort();
  });

  it('enforces strictly increasing times and refuses an existing snapshot dir', async () => {
    await snapshot(group, T0);
    await expect(ds.beginBackup(ROOT, group, T0, { owner: OWNER })).rejects.toThrow(
      'backup time 2024-05-07T14:25:51Z is not newer than the last snapshot host/x/2024-05-07T14:25:51Z (snapshots are named by the second: the last one was made in this second)',
    );
    await expect(ds.beginBackup(ROOT, group, T0 - 1, { owner: OWNER })).rejects.toThrow(/^backup time 2024-05-07T14:25:50Z is not newer than the last snapshot host\/x\/2024-05-07T14:25:51Z$/);
    const second = await snapshot(group, T0 + 1);
    // with the newest snapshot failed there is no previous snapshot, but it still exists
    await ds.updateManifest(second, (m) => {
      m.unprotected['verify_state'] = { state: 'failed', upid: 'UPID:test' };
    });
    await expect(ds.beginBackup(ROOT, group, T0 + 1, { owner: OWNER })).rejects.toThrow(
      'snapshot host/x/2024-05-07T14:25:52Z already exists',
    );
    // lock released after each refusal
    const w = await ds.beginBackup(ROOT, group, T0 + 2, { owner: OWNER });
    expect(w.previous).toBeNull();
    await w.abort();
  });

  it('lastSuccessfulSnapshot returns none when the newest manifest says verify failed', async () => {
    expect(await ds.lastSuccessfulSnapshot(group)).toBeNull();
    const a = await snapshot(group, T0);
    const b = await snapshot(group, T0 + 100);
    expect((await ds.lastSuccessfulSnapshot(group))?.equals(b)).toBe(true);
    await ds.updateManifest(b, (m) => {
      m.unprotected['verify_state'] = { state: 'failed', upid: 'UPID:x' };
    });
    expect(await ds.lastSuccessfulSnapshot(group)).toBeNull(); // no fallback to a
    await ds.updateManifest(b, (m) => {
      m.unprotected['verify_state'] = { state: 'ok', upid: 'UPID:y' };
    });
    expect((await ds.lastSuccessfulSnapshot(group))?.equals(b)).toBe(true);
    expect(a.time).toBeLessThan(b.time);
  });

  it('checks the group owner', async () => {
    await snapshot(group, T0);
    await expect(ds.beginBackup(ROOT, group, T0 + 1, { owner: 'user@pbs' })).rejects.toThrow(
      'backup owner check failed (user@pbs != root@pam)',
    );
    await expect(ds.beginBackup(ROOT, group, T0 + 1, { owner: 'not an authid' })).rejects.toThrow(/invalid owner/);
    const tokenGroup = new BackupGroup('host', 'tok');
    await snapshot(tokenGroup, T0, ROOT, 'user@pbs!t1');
    await snapshot(tokenGroup, T0 + 1, ROOT, 'user@pbs'); // the token's user may continue it
    await ds.setOwner(tokenGroup, 'other@pbs');
    expect(await ds.getOwner(tokenGroup)).toBe('other@pbs');
  });

  it('protection, removal and notes', async () => {
    const snap = await snapshot(group, T0);
    await ds.setProtected(snap, true);
    expect(await ds.isProtected(snap)).toBe(true);
    expect(existsSync(path.join(ds.snapshotPath(snap), '.protected'))).toBe(true);
    expect((await ds.listSnapshots(group))[0].protected).toBe(true);
    await expect(ds.removeSnapshot(snap)).rejects.toThrow('snapshot host/x/2024-05-07T14:25:51Z is protected');
    await ds.setProtected(snap, false);
    await ds.setProtected(snap, true);

    await ds.setGroupNotes(group, 'group notes\nline 2');
    expect(await ds.getGroupNotes(group)).toBe('group notes\nline 2');
    expect(await readFile(path.join(ds.groupPath(group), 'notes'), 'utf8')).toBe('group notes\nline 2');
    expect(await ds.getSnapshotNotes(snap)).toBeNull();
    await ds.setSnapshotNotes(snap, 'snapshot notes');
    expect(await ds.getSnapshotNotes(snap)).toBe('snapshot notes');
    expect((await ds.loadManifest(snap)).unprotected['notes']).toBe('snapshot notes');

    // removal is refused while a backup of the group runs
    const w = await ds.beginBackup(ROOT, group, T0 + 5, { owner: OWNER });
    await expect(ds.removeSnapshot(snap, { force: true })).rejects.toThrow(/backup group host\/x is locked by another backup/);
    await w.abort();
    await ds.removeSnapshot(snap, { force: true });
    expect(existsSync(ds.snapshotPath(snap))).toBe(false);
    expect(await ds.listSnapshots(group)).toEqual([]);
    await expect(ds.removeSnapshot(snap)).rejects.toThrow('snapshot host/x/2024-05-07T14:25:51Z does not exist');
  });

  it('a snapshot being read (shared snapshot lock) is not removed, also not by prune', async () => {
    const snap = await snapshot(group, T0);
    const newer = await snapshot(group, T0 + 60);
    const reading = ds.lockSnapshotShared(snap);
    const second = ds.lockSnapshotShared(snap); // shared: several readers at once
    await expect(ds.removeSnapshot(snap)).rejects.toThrow(/snapshot host\/x\/2024-05-07T14:25:51Z is being read/);
    const r = await prune(ds, group, { last: 1 });
    expect(r.entries.map((e) => [e.dir.time, e.removed, e.error !== undefined]).sort()).toEqual([
      [snap.time, false, true],
      [newer.time, false, false],
    ]);
    expect(existsSync(path.join(ds.snapshotPath(snap), 'index.json.blob'))).toBe(true);
    reading.release();
    await expect(ds.removeSnapshot(snap)).rejects.toThrow(/is being read/);
    second.release();
    await ds.removeSnapshot(snap);
    expect(existsSync(ds.snapshotPath(snap))).toBe(false);
    expect(() => ds.lockSnapshotShared(snap)).toThrow(/does not exist/);
  });

  it('a group without an owner file is adopted only while it has no snapshot', async () => {
    const snap = await snapshot(group, T0);
    await rm(path.join(ds.groupPath(group), 'owner'));
    await expect(ds.beginBackup(ROOT, group, T0 + 60, { owner: 'mallory@pbs' })).rejects.toThrow(/has snapshots but no owner file; refusing to adopt it/);
    expect(await ds.getOwner(group)).toBeNull();
    await ds.removeSnapshot(snap, { force: true });
    const empty = new BackupGroup('host', 'x'); // the directory is left without snapshots: a crash leftover
    await mkdir(ds.groupPath(empty), { recursive: true });
    const w = await ds.beginBackup(ROOT, empty, T0 + 60, { owner: OWNER });
    await w.abort();
  });

  it('a removal is refused while a manifest update (verify, notes) runs', async () => {
    const snap = await snapshot(group, T0);
    const files = await readdir(ds.snapshotPath(snap));
    // hold a manifest update between taking its lock and rewriting the manifest
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const load = ds.loadManifest.bind(ds);
    ds.loadManifest = async (d: BackupDir) => {
      await gate;
      return load(d);
    };
    const update = ds.updateManifest(snap, (m) => {
      m.unprotected['notes'] = 'written while a removal was attempted';
    });
    await new Promise((r) => setTimeout(r, 50));
    ds.loadManifest = load;
    await expect(ds.removeSnapshot(snap)).rejects.toThrow(/manifest of host\/x\/2024-05-07T14:25:51Z is locked by another manifest update/);
    open();
    await update;
    // the snapshot is whole: every file still there, the update applied
    expect((await readdir(ds.snapshotPath(snap))).sort()).toEqual(files.sort());
    expect(await ds.getSnapshotNotes(snap)).toBe('written while a removal was attempted');
    await ds.removeSnapshot(snap);
    expect(existsSync(ds.snapshotPath(snap))).toBe(false);
  });
});

describe('writer lock', () => {
  const group = new BackupGroup('host', 'x');
  const lockFile = () => path.join(ds.path, '.locks', 'host', 'x.lock');

  it('allows one writer per group', async () => {
    const w1 = await ds.beginBackup(ROOT, group, T0, { owner: OWNER });
    await expect(ds.beginBackup(ROOT, group, T0 + 1, { owner: OWNER })).rejects.toThrow(
      `backup group host/x is locked by another backup (pid ${process.pid})`,
    );
    // also from a second instance of the same datastore
    const other = await DataStore.open(ds.path);
    await expect(other.beginBackup(ROOT, group, T0 + 1, { owner: OWNER })).rejects.toThrow(/is locked by another backup/);
    // other groups are independent
    const w3 = await ds.beginBackup(ROOT, new BackupGroup('host', 'y'), T0, { owner: OWNER });
    await w3.abort();
    await w1.abort();
    expect(existsSync(lockFile())).toBe(false);
    const w2 = await other.beginBackup(ROOT, group, T0 + 1, { owner: OWNER });
    await w2.abort();
  });

  it('serialises racing beginBackup calls', async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, (_, i) => ds.beginBackup(ROOT, group, T0 + i, { owner: OWNER })),
    );
    const ok = results.filter((r): r is PromiseFulfilledResult<BackupWriter> => r.status === 'fulfilled');
    expect(ok).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(String(r.reason)).toMatch(/is locked by another backup/);
    await ok[0].value.abort();
  });

  it('takes over a stale lock of a dead process', async () => {
    await mkdir(path.dirname(lockFile()), { recursive: true });
    const stale = { pid: deadPid(), host: hostname(), start: null, since: 1, nonce: 'n', purpose: 'backup' };
    await writeFile(lockFile(), JSON.stringify(stale));
    const w = await ds.beginBackup(ROOT, group, T0, { owner: OWNER });
    expect(JSON.parse(await readFile(lockFile(), 'utf8')).pid).toBe(process.pid);
    await w.abort();
    expect(await readdir(path.dirname(lockFile()))).toEqual([]);
  });

  it.runIf(existsSync('/proc/self/stat'))('treats a reused pid (other start time) as stale', async () => {
    await mkdir(path.dirname(lockFile()), { recursive: true });
    const reused = { pid: process.pid, host: hostname(), start: '1', since: 1, nonce: 'n', purpose: 'backup' };
    await writeFile(lockFile(), JSON.stringify(reused));
    const w = await ds.beginBackup(ROOT, group, T0, { owner: OWNER });
    await w.abort();
  });

  it('never breaks locks of other hosts or unreadable lock files', async () => {
    await mkdir(path.dirname(lockFile()), { recursive: true });
    const foreign = { pid: deadPid(), host: `not-${hostname()}`, start: null, since: 1, nonce: 'n', purpose: 'backup' };
    await writeFile(lockFile(), JSON.stringify(foreign));
    await expect(ds.beginBackup(ROOT, group, T0, { owner: OWNER })).rejects.toThrow(
      `backup group host/x is locked by another backup (pid ${foreign.pid} on host not-${hostname()})`,
    );
    await writeFile(lockFile(), 'garbage');
    await expect(ds.beginBackup(ROOT, group, T0, { owner: OWNER })).rejects.toThrow(/unreadable lock file/);
    await writeFile(lockFile(), JSON.stringify({ ...foreign, host: hostname(), pid: 0 }));
    await expect(ds.beginBackup(ROOT, group, T0, { owner: OWNER })).rejects.toThrow(/unreadable lock file/);
  });

  it('refuses to finish after losing the lock', async () => {
    const idx = await storeStream([Buffer.from('q')]);
    const w = await ds.beginBackup(ROOT, group, T0, { owner: OWNER });
    await w.addIndex('root.pxar.didx', idx.data, idx);
    const lock = JSON.parse(await readFile(lockFile(), 'utf8'));
    await writeFile(lockFile(), JSON.stringify({ ...lock, nonce: 'someone else' }));
    const m = new BackupManifest('host', 'x', T0);
    m.addFile('root.pxar.didx', idx.size, idx.csum);
    await expect(w.finish(m)).rejects.toThrow(/lost the lock/);
    expect(existsSync(path.join(w.path, 'index.json.blob'))).toBe(false);
  });
});

describe('namespaces', () => {
  it('creates, lists and backs up into nested namespaces', async () => {
    const a = BackupNamespace.parse('a');
    const ab = BackupNamespace.parse('a/b');
    await expect(ds.createNamespace(ab)).rejects.toThrow('parent namespace a does not exist');
    expect(await ds.createNamespace(a)).toBe(true);
    expect(await ds.createNamespace(ab)).toBe(true);
    expect(await ds.createNamespace(ab)).toBe(false);
    expect(await ds.createNamespace(BackupNamespace.parse('c'))).toBe(true);
    expect((await ds.listNamespaces()).map((n) => n.name)).toEqual(['', 'a', 'a/b', 'c']);
    expect((await ds.listNamespaces(a)).map((n) => n.name)).toEqual(['a', 'a/b']);
    expect((await ds.listNamespaces(ROOT, 1)).map((n) => n.name)).toEqual(['', 'a', 'c']);
    await expect(ds.listNamespaces(BackupNamespace.parse('zz'))).rejects.toThrow('namespace zz does not exist');

    const group = new BackupGroup('ct', '101');
    await expect(ds.beginBackup(BackupNamespace.parse('nope'), group, T0, { owner: OWNER })).rejects.toThrow(
      'namespace nope does not exist',
    );
    const snap = await snapshot(group, T0, ab);
    expect(snap.path).toBe('ns/a/ns/b/ct/101/2024-05-07T14:25:51Z');
    expect(existsSync(path.join(ds.path, 'ns/a/ns/b/ct/101/2024-05-07T14:25:51Z/index.json.blob'))).toBe(true);
    expect(existsSync(path.join(ds.path, 'ns/a/ns/b/ct/101/owner'))).toBe(true);
    expect((await ds.listGroups(ab)).map((g) => g.path)).toEqual(['ns/a/ns/b/ct/101']);
    expect(await ds.listGroups(ROOT)).toEqual([]);
    expect(await ds.listGroups(a)).toEqual([]);
    // the same type/id in the root namespace is another group with its own lock and history
    const rootSnap = await snapshot(group, T0 - 100);
    expect(rootSnap.path).toBe('ct/101/2024-05-07T14:24:11Z');
    // a group bound to another namespace is refused
    await expect(ds.beginBackup(a, new BackupGroup('ct', '101', ab), T0 + 1, { owner: OWNER })).rejects.toThrow(
      'backup group [a/b] ct/101 is not in namespace a',
    );
  });

  it('ignores stray entries that are no valid names', async () => {
    await snapshot(new BackupGroup('host', 'good'), T0);
    await mkdir(path.join(ds.path, 'host', '.hidden'));
    await mkdir(path.join(ds.path, 'host', 'good', 'not-a-time'));
    await mkdir(path.join(ds.path, 'host', 'good', '2023-02-30T00:00:00Z'));
    await writeFile(path.join(ds.path, 'host', 'file'), '');
    await mkdir(path.join(ds.path, 'lxc', 'x'), { recursive: true });
    await mkdir(path.join(ds.path, 'ns', '-bad'), { recursive: true });
    expect((await ds.listGroups()).map(String)).toEqual(['host/good']);
    expect((await ds.listSnapshots(new BackupGroup('host', 'good'))).map((s) => s.dir.timeString)).toEqual([
      '2024-05-07T14:25:51Z',
    ]);
    expect((await ds.listNamespaces()).map((n) => n.name)).toEqual(['']);
  });
});

/** A pid that belonged to a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  if (typeof r.pid !== 'number') throw new Error('could not spawn a child process');
  return r.pid;
}
