import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createBackup } from '../../ts/client/backup.js';
import { restore } from '../../ts/client/restore.js';
import { BackupDir } from '../../ts/datastore/backup-dir.js';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import { digestHex, type Digest } from '../../ts/datastore/chunk-store.js';
import type { DataStore } from '../../ts/datastore/datastore.js';
import { garbageCollect } from '../../ts/datastore/gc.js';
import { renameCorruptChunk, verify } from '../../ts/datastore/verify.js';
import { encodeBlob } from '../../ts/format/blob.js';
import { BackupManifest } from '../../ts/format/manifest.js';
import { OWNER, ageChunks, chunkFiles, makeSnapshot, readAllChunks, referencedDigests, sha256hex, storeParts, fileContents, tempDir, tempStore } from './maintenance-helpers.js';

const T = 1_700_000_000;
const UPID_RE = /^UPID:[A-Za-z0-9-]+:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:([a-z_]+):([^:]*):[^:]+@pam:$/;

async function makeTree(root: string): Promise<void> {
  await mkdir(path.join(root, 'd'), { recursive: true });
  for (let i = 0; i < 16; i++) await writeFile(path.join(root, i % 2 ? 'd' : '', `f${i}`), randomBytes(30_000 + i * 1111));
}

const backup = (ds: DataStore, src: string, id: string, time: number) =>
  createBackup({ datastore: ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: id, backupTime: time, chunkSize: 64 * 1024, changeDetectionMode: 'data' });

/** Payload chunk digests of a snapshot's `root.ppxar.didx`, in index order. */
async function payloadDigests(ds: DataStore, dir: BackupDir): Promise<string[]> {
  const idx = await ds.readIndex(dir, 'root.ppxar.didx');
  return Array.from({ length: idx.count }, (_, k) => idx.digest(k).toString('hex'));
}

describe('verify', () => {
  it('finds a flipped byte and a missing chunk, reads each chunk once, and the next backup heals the store', async () => {
    const src = path.join(await tempDir('pxb-verify-src-'), 'src');
    await makeTree(src);
    const ds = await tempStore();
    const gx = new BackupGroup('host', 'x');
    const gy = new BackupGroup('host', 'y');
    await backup(ds, src, 'x', T);
    await backup(ds, src, 'y', T); // same data: every chunk shared
    const s1 = new BackupDir(gx, T);
    const digests = await payloadDigests(ds, s1);
    expect(digests.length).toBeGreaterThanOrEqual(4);
    const flipped = digests[1];
    const missing = digests[2];
    const fp = ds.chunks.chunkPath(flipped);
    const bytes = readFileSync(fp);
    bytes[bytes.length >> 1] ^= 0x40;
    writeFileSync(fp, bytes);
    rmSync(ds.chunks.chunkPath(missing));

    const loads = new Map<string, number>();
    const load = ds.chunks.load.bind(ds.chunks);
    ds.chunks.load = async (d: Digest) => {
      loads.set(digestHex(d), (loads.get(digestHex(d)) ?? 0) + 1);
      return load(d);
    };
    const r = await verify(ds, { all: true });
    ds.chunks.load = load;

    const distinct = await referencedDigests(ds);
    expect([...loads.keys()].sort()).toEqual([...distinct].sort());
    expect([...loads.values()].every((n) => n === 1)).toBe(true);
    expect(r.verifiedChunks).toBe(distinct.size - 2);
    expect(r.corruptChunks).toBe(2);
    expect(r.failed).toBe(2);
    expect(r.snapshots.map((s) => [s.dir.toString(), s.state])).toEqual([
      ['host/x/2023-11-14T22:13:20Z', 'failed'],
      ['host/y/2023-11-14T22:13:20Z', 'failed'],
    ]);
    const [ex, ey] = r.snapshots.map((s) => s.errors.join('\n'));
    expect(ex).toMatch(new RegExp(`chunk ${flipped} is corrupt`));
    expect(ex).toMatch(new RegExp(`chunk ${missing} is missing`));
    expect(ex).toMatch(/root\.ppxar\.didx: 2 chunk\(s\) could not be verified/);
    expect(ey).toMatch(new RegExp(`chunk ${flipped} was marked as corrupt`));
    expect(ey).toMatch(new RegExp(`chunk ${missing} was marked as corrupt`));
    expect(r.renamedChunks).toEqual([`${fp}.0.bad`]);
    expect(existsSync(fp)).toBe(false);
    expect(readFileSync(`${fp}.0.bad`)).toEqual(bytes);

    const m = await ds.loadManifest(s1);
    expect(m.verifyState).toEqual({ state: 'failed', upid: r.upid });
    expect(UPID_RE.exec(r.upid)?.slice(1)).toEqual(['verify', 'store']);
    expect(await ds.lastSuccessfulSnapshot(gx)).toBeNull();

    // The next backup of the same data stores both chunks again instead of referencing them.
    const s2 = await backup(ds, src, 'x', T + 60);
    expect(existsSync(fp)).toBe(true);
    expect(existsSync(ds.chunks.chunkPath(missing))).toBe(true);
    const r2 = await verify(ds, { snapshot: new BackupDir(gx, T + 60) });
    expect(r2.snapshots.map((s) => s.state)).toEqual(['ok']);
    expect(r2.corruptChunks).toBe(0);
    expect(UPID_RE.exec(r2.upid)?.slice(1)).toEqual(['verify_snapshot', 'store\\x3a-host-x-6553F13C']);
    const out = path.join(await tempDir('pxb-verify-out-'), 'out');
    await restore({ datastore: ds, snapshot: s2.snapshot, archiveName: 'root.pxar', target: out });
    const want = fileContents(src);
    const got = fileContents(out);
    expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [k, v] of want) expect(got.get(k)!.equals(v), k).toBe(true);

    // The store is healed: the old snapshots verify again.
    const r3 = await verify(ds, { group: gy });
    expect(r3.snapshots.map((s) => s.state)).toEqual(['ok']);
    expect((await ds.loadManifest(new BackupDir(gy, T))).verifyState?.state).toBe('ok');

    // The .bad copy is no longer needed (the chunk exists again): GC removes it once old.
    ageChunks(ds, 3 * 86400);
    const gc = await garbageCollect(ds);
    expect(gc.status.removedBad).toBe(1);
    expect(existsSync(`${fp}.0.bad`)).toBe(false);
    expect(await readAllChunks(ds, s1)).toBe(digests.length + (await ds.readIndex(s1, 'root.mpxar.didx')).count);
  }, 30_000);

  it('fails a snapshot whose chunk cannot be read, without renaming that chunk aside', async () => {
    const src = path.join(await tempDir('pxb-verify-src-'), 'src');
    await makeTree(src);
    const ds = await tempStore();
    await backup(ds, src, 'x', T);
    const dir = new BackupDir(new BackupGroup('host', 'x'), T);
    const [unreadable] = await payloadDigests(ds, dir);
    const fp = ds.chunks.chunkPath(unreadable);
    // an I/O error that says nothing about the bytes (as EACCES, EIO or EMFILE would)
    const load = ds.chunks.load.bind(ds.chunks);
    ds.chunks.load = async (d: Digest) => {
      if (digestHex(d) === unreadable) throw Object.assign(new Error(`EIO: i/o error, open '${fp}'`), { code: 'EIO' });
      return load(d);
    };
    const r = await verify(ds, { all: true });
    ds.chunks.load = load;
    expect(r.snapshots.map((s) => s.state)).toEqual(['failed']);
    expect(r.snapshots[0].errors.join('\n')).toMatch(new RegExp(`can't verify chunk ${unreadable}, load failed - EIO`));
    expect(r.renamedChunks).toEqual([]);
    expect(existsSync(fp)).toBe(true);
    // readable again: the snapshot verifies
    const r2 = await verify(ds, { all: true });
    expect(r2.snapshots.map((s) => s.state)).toEqual(['ok']);
  });

  it('lets ChunkStore.insert store a chunk again after verify renamed it aside', async () => {
    const ds = await tempStore();
    const data = randomBytes(5000);
    const dir = await makeSnapshot(ds, new BackupGroup('host', 'i'), T, [data]);
    const hex = sha256hex(data);
    const p = ds.chunks.chunkPath(hex);
    const b = readFileSync(p);
    b[b.length - 1] ^= 1;
    writeFileSync(p, b);
    expect((await verify(ds, { snapshot: dir })).snapshots[0].state).toBe('failed');
    expect(existsSync(p)).toBe(false);
    const r = await ds.chunks.insert(hex, encodeBlob(data));
    expect(r.isDuplicate).toBe(false);
    expect(await ds.chunks.readChunk(hex, data.length)).toEqual(data);
    expect((await verify(ds, { snapshot: dir })).snapshots[0].state).toBe('ok');
  });

  it('checks blobs and index checksums against the manifest, and crypt modes of chunks', async () => {
    const ds = await tempStore();
    const g = new BackupGroup('host', 'b');
    const idx = await storeParts(ds, [randomBytes(3000), randomBytes(3000)]);
    const enc = await storeParts(ds, [randomBytes(3000), randomBytes(3000)]);
    const conf = encodeBlob(Buffer.from('name: test\n'));
    const w = await ds.beginBackup(g.ns, g, T, { owner: OWNER });
    await w.addIndex('root.pxar.didx', idx.data, idx);
    const info = await w.addBlob('qemu-server.conf.blob', conf);
    await w.addIndex('enc.img.didx', enc.data, enc);
    const m = new BackupManifest('host', 'b', T);
    m.addFile('root.pxar.didx', idx.size, idx.csum);
    m.addFile('qemu-server.conf.blob', info.size, info.csum);
    m.addFile('enc.img.didx', enc.size, enc.csum, 'encrypt'); // claims encrypted chunks
    await w.finish(m);

    const r = await verify(ds, { snapshot: w.dir });
    expect(r.snapshots[0].state).toBe('failed');
    expect(r.snapshots[0].errors).toEqual([
      `enc.img.didx: chunk ${enc.digests[0]}: crypt mode none does not match the index crypt mode encrypt`,
      `enc.img.didx: chunk ${enc.digests[1]}: crypt mode none does not match the index crypt mode encrypt`,
      'enc.img.didx: 2 chunk(s) could not be verified',
    ]);
    expect(r.corruptChunks).toBe(0);
    expect(chunkFiles(ds)).toEqual([...idx.digests, ...enc.digests].sort()); // mismatches are not renamed

    const blobPath = path.join(ds.snapshotPath(w.dir), 'qemu-server.conf.blob');
    const blob = readFileSync(blobPath);
    blob[blob.length - 1] ^= 1;
    writeFileSync(blobPath, blob);
    writeFileSync(path.join(ds.snapshotPath(w.dir), 'root.pxar.didx'), enc.data); // a valid index, but not the listed one
    const errors = (await verify(ds, { snapshot: w.dir })).snapshots[0].errors;
    expect(errors[0]).toMatch(/^root\.pxar\.didx: .*index checksum .* does not match the manifest/);
    expect(errors[1]).toMatch(/^qemu-server\.conf\.blob: .*size or checksum does not match the manifest/);
  });

  it('skips verified snapshots with ignoreVerified unless outdated, and vanished snapshots', async () => {
    const ds = await tempStore();
    const g = new BackupGroup('host', 's');
    await makeSnapshot(ds, g, T);
    await makeSnapshot(ds, g, T + 1);
    const first = await verify(ds, { group: g });
    expect(first.snapshots.map((s) => [s.dir.time, s.state])).toEqual([
      [T + 1, 'ok'],
      [T, 'ok'],
    ]);
    expect(UPID_RE.exec(first.upid)?.slice(1)).toEqual(['verify_group', 'store\\x3a-host-s']);
    expect((await verify(ds, { group: g }, { ignoreVerified: true })).snapshots.map((s) => s.state)).toEqual(['skipped', 'skipped']);
    expect((await verify(ds, { group: g }, { ignoreVerified: true, outdatedAfterDays: 0 })).snapshots.map((s) => s.state)).toEqual(['skipped', 'skipped']);
    // a verify_state written by a task that started 3 days ago is outdated after 2 days
    const old = first.upid.replace(/:([0-9A-F]{8}):verify_group:/, `:${(Math.floor(Date.now() / 1000) - 3 * 86400).toString(16).toUpperCase()}:verify_group:`);
    await ds.updateManifest(new BackupDir(g, T), (mm) => {
      mm.unprotected['verify_state'] = { state: 'ok', upid: old };
    });
    expect((await verify(ds, { group: g }, { ignoreVerified: true, outdatedAfterDays: 2 })).snapshots.map((s) => s.state)).toEqual(['skipped', 'ok']);
    expect((await verify(ds, { snapshot: new BackupDir(g, T + 99) })).snapshots.map((s) => s.state)).toEqual(['skipped']);
  });

  it('renames corrupt chunks to the first free .<n>.bad, reusing .9.bad at the end', async () => {
    const ds = await tempStore();
    const { digests } = await storeParts(ds, [randomBytes(100)]);
    const p = ds.chunks.chunkPath(digests[0]);
    const content = readFileSync(p);
    expect(renameCorruptChunk(ds, digests[0])).toBe(`${p}.0.bad`);
    for (let n = 1; n <= 9; n++) {
      writeFileSync(p, content);
      expect(renameCorruptChunk(ds, digests[0])).toBe(`${p}.${n}.bad`);
    }
    writeFileSync(p, Buffer.from('newest'));
    expect(renameCorruptChunk(ds, digests[0])).toBe(`${p}.9.bad`);
    expect(readFileSync(`${p}.9.bad`, 'utf8')).toBe('newest');
    expect(renameCorruptChunk(ds, digests[0])).toBeNull();
  });
});
