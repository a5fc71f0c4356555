/**
 * `pxb serve` + the protocol client over real TLS and HTTP/2 on 127.0.0.1, on a real datastore
 * in a temp directory: backups and restores, listings, and every kind of refusal.
 */
import { existsSync } from 'node:fs';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import http2 from 'node:http2';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CertificateError, RemoteError } from '../../ts/client/remote/errors.js';
import type { BackupSession } from '../../ts/client/remote/backup-session.js';
import { connectTls, http1Request } from '../../ts/client/remote/transport.js';
import { BackupDir } from '../../ts/datastore/backup-dir.js';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import { indexStream } from '../../ts/datastore/index-reader.js';
import { BackupNamespace } from '../../ts/datastore/namespace.js';
import { BLOB_MAGIC, encodeBlob } from '../../ts/format/blob.js';
import { DynamicIndex, DynamicIndexWriter } from '../../ts/format/dynamic-index.js';
import { FixedIndex, FixedIndexWriter } from '../../ts/format/fixed-index.js';
import { BackupManifest } from '../../ts/format/manifest.js';
import { formatTokenAuthorization } from '../../ts/protocol/auth.js';
import { BACKUP_PROTOCOL_ID } from '../../ts/protocol/constants.js';
import { encodeQuery } from '../../ts/protocol/params.js';
import { STORE, data, makeChunk, randomChunk, rawRequest, rawSession, startHarness, type Harness, type TestChunk } from './harness.js';

const T0 = 1715091951; // 2024-05-07T14:25:51Z
const MiB = 1024 * 1024;
const ALICE = 'alice@pbs!backup';
const BOB = 'bob@pbs!backup';
const READER = 'auditor@pbs!read';

let h: Harness;
let alice: string;
let bob: string;
let reader: string;

beforeAll(async () => {
  h = await startHarness();
  alice = await h.token(ALICE, 'backup');
  bob = await h.token(BOB, 'backup');
  reader = await h.token(READER, 'read');
});

afterAll(async () => {
  await h.close();
});

const snapDir = (id: string, time: number, ns = BackupNamespace.root) => new BackupDir(new BackupGroup('host', id, ns), time);

async function collect(it: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of it) parts.push(b);
  return Buffer.concat(parts);
}

/** Back up `chunks` as root.pxar.didx plus a conf blob; returns the manifest written. */
async function simpleBackup(s: BackupSession, id: string, time: number, chunks: TestChunk[], type: 'host' | 'vm' | 'ct' = 'host'): Promise<BackupManifest> {
  const up = await s.dynamicUploader('root.pxar.didx');
  for (const c of chunks) await up.add(c);
  const r = await up.close();
  const m = new BackupManifest(type, id, time);
  m.addFile(r.name, r.size, r.csum);
  const blob = await s.uploadBlob('test.conf.blob', encodeBlob(Buffer.from(`id ${id}\n`)));
  m.addFile('test.conf.blob', blob.size, blob.csum);
  await s.uploadManifest(m);
  await s.finish();
  return m;
}

async function expectRemote(p: Promise<unknown>, status: number, message: RegExp): Promise<RemoteError> {
  const e = await p.then(
    () => {
      throw new Error('expected the server to refuse');
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(RemoteError);
  expect((e as RemoteError).status).toBe(status);
  expect((e as RemoteError).serverMessage).toMatch(message);
  return e as RemoteError;
}

describe('backup and restore through the protocol', () => {
  const chunks = [randomChunk(100_000), makeChunk(Buffer.alloc(50_000, 1))];

  it('stores chunks, a dynamic index, a blob and the manifest, and reads them back', async () => {
    const c = h.client(ALICE, alice);
    const s = await c.startBackup({ backupType: 'host', backupId: 'full', backupTime: T0 });
    expect(await s.previousBackupTime()).toBeNull();
    expect(await s.previousManifest()).toBeNull();
    const up = await s.dynamicUploader('root.pxar.didx');
    for (const ch of chunks) await up.add(ch);
    await up.add({ digest: chunks[0].digest, size: chunks[0].size }); // repeated: known, not uploaded again
    const res = await up.close();
    const w = new DynamicIndexWriter();
    let end = 0;
    for (const ch of [...chunks, chunks[0]]) w.add((end += ch.size), ch.digest);
    const expected = w.finish();
    expect(res.csum.equals(expected.csum)).toBe(true);
    expect(res).toMatchObject({ size: 250_000, chunkCount: 3, uploadedChunks: 2, knownChunks: 1 });
    const conf = encodeBlob(Buffer.from('name: test\n'));
    const info = await s.uploadBlob('test.conf.blob', conf);
    const m = new BackupManifest('host', 'full', T0);
    m.addFile('root.pxar.didx', res.size, res.csum);
    m.addFile('test.conf.blob', info.size, info.csum);
    await s.uploadManifest(m);
    await s.finish();
    await h.server.whenIdle();

    // What the server wrote, read with the local datastore code.
    const dir = snapDir('full', T0);
    const stored = await h.ds.loadManifest(dir);
    expect(stored.files.map((f) => f.filename)).toEqual(['root.pxar.didx', 'test.conf.blob']);
    expect(stored.unprotected['chunk_upload_stats']).toEqual({
      count: 2,
      size: 150_000 + conf.length + m.toBlob().length, // chunk data + blobs as uploaded, as PBS counts
      compressed_size: chunks[0].blob.length + chunks[1].blob.length,
      duplicates: 0,
    });
    const idx = (await h.ds.readIndex(dir, 'root.pxar.didx')) as DynamicIndex;
    expect(idx.count).toBe(3);
    expect((await h.ds.chunks.readChunk(idx.digest(1), idx.chunk(1).size)).equals(chunks[1].data)).toBe(true);
    expect((await h.ds.readBlob(dir, 'test.conf.blob')).equals(conf)).toBe(true);
    expect(await h.ds.getOwner(dir.group)).toBe(ALICE);

    // And back through the reader protocol.
    const r = await c.startReader({ backupType: 'host', backupId: 'full', backupTime: T0 });
    const man = await r.downloadManifest();
    const ridx = await r.downloadIndex('root.pxar.didx', man);
    const stream = await collect(indexStream(ridx, r, 'root.pxar.didx'));
    expect(stream.equals(Buffer.concat([chunks[0].data, chunks[1].data, chunks[0].data]))).toBe(true);
    expect((await r.downloadBlob('test.conf.blob', man)).equals(conf)).toBe(true);
    expect(await r.speedtest()).toBe(1024 * 1024);
    await r.close();
    await h.server.whenIdle();
  });

  it('reuses chunks of the previous snapshot without uploading them', async () => {
    const c = h.client(ALICE, alice);
    const s = await c.startBackup({ backupType: 'host', backupId: 'full', backupTime: T0 + 60 });
    expect(await s.previousBackupTime()).toBe(T0);
    const prev = await s.previousManifest();
    expect(prev?.files.map((f) => f.filename)).toEqual(['root.pxar.didx', 'test.conf.blob']);
    expect(s.isKnown(chunks[0].digest)).toBe(false);
    const prevIndex = DynamicIndex.parse(await s.downloadPrevious('root.pxar.didx'));
    expect(prevIndex.computeCsum().equals(prev!.lookup('root.pxar.didx')!.csum)).toBe(true);
    expect(s.isKnown(chunks[0].digest) && s.isKnown(chunks[1].digest)).toBe(true);
    const fresh = randomChunk(20_000);
    const up = await s.dynamicUploader('root.pxar.didx');
    await up.add({ digest: chunks[1].digest, size: chunks[1].size }); // no data: known from previous
    await up.add(fresh);
    const res = await up.close();
    expect(res).toMatchObject({ uploadedChunks: 1, knownChunks: 1, chunkCount: 2, size: 70_000 });
    const m = new BackupManifest('host', 'full', T0 + 60);
    m.addFile(res.name, res.size, res.csum);
    await s.uploadManifest(m);
    await s.finish();
    await h.server.whenIdle();
    const idx = await h.ds.readIndex(snapDir('full', T0 + 60), 'root.pxar.didx');
    expect(idx.count).toBe(2);
    expect(idx.chunk(0).digest.equals(chunks[1].digest)).toBe(true);
  });

  it('refuses a snapshot that is not newer than the last one', async () => {
    await expectRemote(h.client(ALICE, alice).startBackup({ backupType: 'host', backupId: 'full', backupTime: T0 + 60 }), 400, /not newer/);
  });

  it('writes fixed indexes, also incrementally with reuse-csum', async () => {
    const c = h.client(ALICE, alice);
    const a = randomChunk(4 * MiB);
    const b = randomChunk(1000);
    const s = await c.startBackup({ backupType: 'vm', backupId: '100', backupTime: T0 });
    const up = await s.fixedUploader('drive-scsi0.img.fidx', 4 * MiB + 1000);
    await up.add(a);
    await up.add(b);
    const res = await up.close();
    const m = new BackupManifest('vm', '100', T0);
    m.addFile(res.name, res.size, res.csum);
    await s.uploadManifest(m);
    await s.finish();
    await h.server.whenIdle();
    const dir = new BackupDir(new BackupGroup('vm', '100'), T0);
    const idx = (await h.ds.readIndex(dir, 'drive-scsi0.img.fidx')) as FixedIndex;
    expect(idx).toBeInstanceOf(FixedIndex);
    expect(idx.size).toBe(4 * MiB + 1000);
    expect(idx.digest(1).equals(b.digest)).toBe(true);

    // Incremental: only the changed last chunk is sent, the rest is cloned from the previous index.
    const b2 = randomChunk(1000);
    const s2 = await c.startBackup({ backupType: 'vm', backupId: '100', backupTime: T0 + 1 });
    await s2.downloadPrevious('drive-scsi0.img.fidx');
    const wid = await s2.createFixedIndex('drive-scsi0.img.fidx', 4 * MiB + 1000, res.csum);
    await s2.uploadChunk(wid, b2, 'fixed');
    await s2.appendChunks(wid, [{ digest: b2.digest, offset: 4 * MiB }], 'fixed');
    const w = new FixedIndexWriter(4 * MiB + 1000);
    w.set(0, 4 * MiB, a.digest);
    w.set(1, 1000, b2.digest);
    const want = w.finish();
    await s2.closeFixedIndex(wid, { chunkCount: 1, size: 4 * MiB + 1000, csum: want.csum });
    const m2 = new BackupManifest('vm', '100', T0 + 1);
    m2.addFile('drive-scsi0.img.fidx', want.size, want.csum);
    await s2.uploadManifest(m2);
    await s2.finish();
    await h.server.whenIdle();
    const idx2 = (await h.ds.readIndex(new BackupDir(new BackupGroup('vm', '100'), T0 + 1), 'drive-scsi0.img.fidx')) as FixedIndex;
    expect(idx2.digest(0).equals(a.digest) && idx2.digest(1).equals(b2.digest)).toBe(true);

    const s3 = await c.startBackup({ backupType: 'vm', backupId: '100', backupTime: T0 + 2 });
    await expectRemote(s3.createFixedIndex('drive-scsi0.img.fidx', 4 * MiB + 1000, res.csum), 400, /doesn't match last backup's/);
    s3.abort();
    await h.server.whenIdle();
  });
});

describe('listing API', () => {
  it('lists datastores, groups, snapshots, files and namespaces with PBS field names', async () => {
    const c = h.client(ALICE, alice);
    expect(await c.listDatastores()).toEqual([{ store: STORE, comment: null }]);
    const groups = await c.listGroups();
    const full = groups.find((g) => g['backup-id'] === 'full')!;
    expect(full).toEqual({
      'backup-type': 'host',
      'backup-id': 'full',
      'last-backup': T0 + 60,
      'backup-count': 2,
      files: ['index.json.blob', 'root.pxar.didx'],
      owner: ALICE,
    });
    const snaps = await c.listSnapshots({ backupType: 'host', backupId: 'full' });
    expect(snaps.map((s) => s['backup-time'])).toEqual([T0, T0 + 60]);
    const first = snaps[0];
    const manifestSize = (await h.ds.backend.stat(`${snapDir('full', T0).path}/index.json.blob`))!.size;
    expect(first.files).toEqual([
      { filename: 'root.pxar.didx', 'crypt-mode': 'none', size: 250_000 },
      { filename: 'test.conf.blob', 'crypt-mode': 'none', size: first.files[1].size },
      { filename: 'index.json.blob', 'crypt-mode': 'none', size: manifestSize },
    ]);
    expect(first).toMatchObject({ 'backup-type': 'host', 'backup-id': 'full', owner: ALICE, protected: false });
    expect(first.size).toBe(250_000 + first.files[1].size! + manifestSize);
    expect(await c.listSnapshotFiles({ backupType: 'host', backupId: 'full', backupTime: T0 })).toEqual(first.files);

    expect(await c.listNamespaces()).toEqual([{ ns: '' }]);
    await h.ds.createNamespace(BackupNamespace.parse('team'));
    await h.ds.createNamespace(BackupNamespace.parse('team/a'));
    expect(await c.listNamespaces()).toEqual([{ ns: '' }, { ns: 'team' }, { ns: 'team/a' }]);
    expect(await c.listNamespaces({ parent: 'team', maxDepth: 0 })).toEqual([{ ns: 'team' }]);
    const s = await c.startBackup({ ns: 'team/a', backupType: 'ct', backupId: '200', backupTime: T0 });
    await simpleBackup(s, '200', T0, [randomChunk(1000)], 'ct');
    await h.server.whenIdle();
    expect(existsSync(path.join(h.dsPath, 'ns', 'team', 'ns', 'a', 'ct', '200'))).toBe(true);
    expect((await c.listGroups({ ns: 'team/a' })).map((g) => `${g['backup-type']}/${g['backup-id']}`)).toEqual(['ct/200']);
    expect((await c.listGroups()).some((g) => g['backup-id'] === '200')).toBe(false);
    await expectRemote(c.listGroups({ ns: 'nope' }), 404, /namespace 'nope' not found/);
  });

  it('shows a backup token only its own groups, a read token everything', async () => {
    expect(await h.client(BOB, bob).listGroups()).toEqual([]);
    expect(await h.client(BOB, bob).listSnapshots()).toEqual([]);
    await expectRemote(h.client(BOB, bob).listSnapshotFiles({ backupType: 'host', backupId: 'full', backupTime: T0 }), 403, /owner check failed/);
    const all = await h.client(READER, reader).listGroups();
    expect(all.map((g) => `${g['backup-type']}/${g['backup-id']}`)).toEqual(['host/full', 'vm/100']);
  });

  it('hides datastores the token has no role on', async () => {
    const other = await h.token('carol@pbs!x', 'admin', ['other1']);
    const c = h.client('carol@pbs!x', other);
    expect(await c.listDatastores()).toEqual([]);
    await expectRemote(c.listGroups(), 403, /permission check failed/);
  });
});

describe('authentication and permissions', () => {
  it('refuses a wrong secret on REST calls and on the upgrade', async () => {
    const c = h.client(ALICE, 'not-the-secret');
    await expectRemote(c.version(), 401, /^authentication failed - invalid API token/);
    await expectRemote(c.startBackup({ backupType: 'host', backupId: 'x', backupTime: T0 }), 401, /authentication failed/);
    await expectRemote(h.client('mallory@pbs!t', alice).listGroups(), 401, /authentication failed/);
  });

  it('refuses requests without a token', async () => {
    const socket = await connectTls({ host: '127.0.0.1', port: h.server.port, fingerprint: h.server.fingerprint });
    const r = await http1Request(socket, { method: 'GET', path: '/api2/json/admin/datastore', headers: {} });
    expect(r.status).toBe(401);
    expect(r.body.toString()).toBe('authentication failed - no authentication credentials provided.');
    const s2 = await connectTls({ host: '127.0.0.1', port: h.server.port, fingerprint: h.server.fingerprint });
    const r2 = await http1Request(s2, { method: 'GET', path: '/api2/json/version', headers: { authorization: 'PBSAPIToken=garbage' } });
    expect(r2.status).toBe(401);
    expect(r2.body.toString()).toMatch(/authentication failed - malformed API token/);
  });

  it('needs the backup role to write and ownership of the group', async () => {
    await expectRemote(h.client(READER, reader).startBackup({ backupType: 'host', backupId: 'x', backupTime: T0 }), 403, /permission check failed/);
    await expectRemote(h.client(BOB, bob).startBackup({ backupType: 'host', backupId: 'full', backupTime: T0 + 3600 }), 400, /backup owner check failed \(bob@pbs!backup != alice@pbs!backup\)/);
    expect((await h.ds.listSnapshots(new BackupGroup('host', 'full'), { includeUnfinished: true })).length).toBe(2);
    // maintenance calls on someone else's group: refused before looking, so the answer does
    // not tell which snapshots exist
    const bobs = h.client(BOB, bob);
    for (const time of [T0, T0 + 12345]) {
      const ref = { backupType: 'host' as const, backupId: 'full', backupTime: time };
      await expectRemote(bobs.getNotes(ref), 403, /owner check failed/);
      await expectRemote(bobs.setNotes(ref, 'x'), 403, /owner check failed/);
      await expectRemote(bobs.setProtected(ref, true), 403, /owner check failed/);
      await expectRemote(bobs.forgetSnapshot(ref), 403, /owner check failed/);
    }
    await expectRemote(h.client(ALICE, alice).getNotes({ backupType: 'host', backupId: 'full', backupTime: T0 + 12345 }), 404, /does not exist/);
  });

  it('lets a read token or the owner read a snapshot, nobody else', async () => {
    const ref = { backupType: 'host' as const, backupId: 'full', backupTime: T0 };
    await expectRemote(h.client(BOB, bob).startReader(ref), 403, /owner check failed/);
    const r = await h.client(READER, reader).startReader(ref);
    expect((await r.downloadManifest()).backupId).toBe('full');
    await r.close();
    await expectRemote(h.client(READER, reader).startReader({ ...ref, backupTime: T0 + 5 }), 404, /does not exist/);
    await h.server.whenIdle();
  });

  it('pins the certificate: a wrong fingerprint or an untrusted certificate is refused', async () => {
    const wrong = 'aa:'.repeat(31) + 'aa';
    const e = await h.client(ALICE, alice, { fingerprint: wrong }).version().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(CertificateError);
    expect((e as Error).message).toContain(`its certificate fingerprint is ${h.server.fingerprint}, but ${wrong} was expected`);
    const e2 = await h.client(ALICE, alice, { fingerprint: null }).version().catch((x: unknown) => x);
    expect(e2).toBeInstanceOf(CertificateError);
    expect((e2 as Error).message).toMatch(/not trusted/);
    expect((e2 as CertificateError).fingerprint).toBe(h.server.fingerprint);
    // Trusting the certificate as a CA works without a pin.
    expect((await h.client(ALICE, alice, { fingerprint: null, ca: h.server.certificatePem }).version()).repoid).toBe('pxb');
  });
});

describe('hostile names', () => {
  it('refuses traversal in backup-id, ns and store at the upgrade', async () => {
    for (const [key, bad] of [
      ['backup-id', '../evil'],
      ['backup-id', '/abs'],
      ['backup-id', 'a\0b'],
      ['ns', '../up'],
      ['ns', '/abs'],
      ['ns', 'a/../../b'],
      ['store', '../ds'],
    ]) {
      const query = { 'backup-type': 'host', 'backup-id': 'ok', 'backup-time': T0, [key]: bad };
      await expectRemote(rawSession(h, 'backup', ALICE, alice, query), 400, new RegExp(`'${key}'`));
      await expectRemote(rawSession(h, 'reader', ALICE, alice, query), 400, new RegExp(`'${key}'`));
    }
  });

  it('refuses traversal in archive and file names inside sessions', async () => {
    const sess = await rawSession(h, 'backup', ALICE, alice, { 'backup-type': 'host', 'backup-id': 'names', 'backup-time': T0 });
    for (const bad of ['../x.didx', '/etc/x.didx', 'a\0.didx', '..', 'sub/x.didx']) {
      const r = await rawRequest(sess, 'POST', `/dynamic_index?${encodeQuery({ 'archive-name': bad })}`);
      expect(r.status, bad).toBe(400);
      expect(r.body.toString()).toMatch(/'archive-name'/);
      const b = await rawRequest(sess, 'POST', `/blob?${encodeQuery({ 'file-name': bad.replace('.didx', '.blob'), 'encoded-size': 12 })}`, Buffer.alloc(12));
      expect(b.status, bad).toBe(400);
    }
    expect((await rawRequest(sess, 'POST', `/dynamic_index?archive-name=x.blob`)).body.toString()).toBe("wrong archive extension: 'x.blob'");
    sess.destroy();
    await h.server.whenIdle();
    const rd = await rawSession(h, 'reader', ALICE, alice, { 'backup-type': 'host', 'backup-id': 'full', 'backup-time': T0 });
    for (const bad of ['../owner', '../../../.lock', '/etc/passwd', '..%2Findex.json.blob', 'owner']) {
      const r = await rawRequest(rd, 'GET', `/download?${encodeQuery({ 'file-name': bad })}`);
      expect(r.status, bad).toBe(400);
    }
    rd.destroy();
    await h.server.whenIdle();
    expect((await readdir(h.dir)).sort()).toEqual(['config', 'ds']);
    expect(existsSync(path.join(h.dsPath, 'host', 'names'))).toBe(false);
  });
});

describe('server-side checks of the backup protocol', () => {
  let sess: Awaited<ReturnType<typeof rawSession>>;
  let wid: number;
  const chunk = randomChunk(10_000);
  const chunkPath = (c: TestChunk, w = wid) => `/dynamic_chunk?${encodeQuery({ wid: w, digest: c.hex, size: c.size, 'encoded-size': c.blob.length })}`;

  beforeAll(async () => {
    sess = await rawSession(h, 'backup', ALICE, alice, { 'backup-type': 'host', 'backup-id': 'checks', 'backup-time': T0 });
    wid = data(await rawRequest(sess, 'POST', '/dynamic_index?archive-name=root.pxar.didx')) as number;
  });

  afterAll(async () => {
    sess.destroy();
    await h.server.whenIdle();
  });

  it('refuses a chunk whose data does not hash to its digest', async () => {
    const other = randomChunk(10_000);
    const r = await rawRequest(sess, 'POST', chunkPath({ ...chunk, blob: other.blob }), other.blob, 'application/octet-stream');
    expect(r.status).toBe(400);
    expect(r.body.toString()).toBe(`uploaded chunk has wrong digest (announced ${chunk.hex}, data hashes to ${other.hex})`);
    expect(await h.ds.chunks.has(chunk.digest)).toBe(false);
    expect(await h.ds.chunks.has(other.digest)).toBe(false);
  });

  it('refuses a chunk whose size, length or magic is not what was announced', async () => {
    const wrongSize = await rawRequest(sess, 'POST', chunkPath({ ...chunk, size: 9_999 }), chunk.blob, 'application/octet-stream');
    expect(wrongSize.body.toString()).toMatch(/has wrong size \(10000 != 9999\)/);
    const longer = await rawRequest(sess, 'POST', chunkPath({ ...chunk, blob: chunk.blob.subarray(1) }), chunk.blob, 'application/octet-stream');
    expect([longer.status, longer.body.toString()]).toEqual([400, 'uploaded chunk is larger than announced.']);
    const shorter = await rawRequest(sess, 'POST', chunkPath(chunk), chunk.blob.subarray(1), 'application/octet-stream');
    expect([shorter.status, shorter.body.toString()]).toEqual([400, 'uploaded chunk has unexpected size.']);
    const garbage = Buffer.from(chunk.blob);
    garbage[0] ^= 0xff;
    const bad = await rawRequest(sess, 'POST', chunkPath(chunk), garbage, 'application/octet-stream');
    expect(bad.body.toString()).toMatch(/is not a data blob/);
    // zstd magic, but no zstd frame behind it
    const corrupt = Buffer.concat([chunk.blob.subarray(0, 12), Buffer.from('not a zstd frame at all')]);
    corrupt.set(BLOB_MAGIC.zstd, 0);
    const z = await rawRequest(sess, 'POST', chunkPath({ ...chunk, blob: corrupt }), corrupt, 'application/octet-stream');
    expect(z.status).toBe(400);
    expect(z.body.toString()).toMatch(new RegExp(`^uploaded chunk ${chunk.hex}: `));
    expect(await h.ds.chunks.has(chunk.digest)).toBe(false);
    // A wrong CRC alone is fine: the server recomputes it, as PBS does.
    const crc = Buffer.from(chunk.blob);
    crc.writeUInt32LE(0, 8);
    expect(data(await rawRequest(sess, 'POST', chunkPath(chunk), crc, 'application/octet-stream'))).toBe(chunk.hex);
    expect((await h.ds.chunks.readChunk(chunk.digest)).equals(chunk.data)).toBe(true);
  });

  it('refuses an oversize chunk before reading it', async () => {
    const big = { hex: 'ab'.repeat(32), size: 16 * MiB + 1, blob: Buffer.alloc(16 * MiB + 13) } as TestChunk;
    const r = await rawRequest(sess, 'POST', chunkPath(big), big.blob, 'application/octet-stream');
    expect(r.status).toBe(400);
    expect(r.body.toString()).toMatch(/'size': value must have a maximum value of 16777216/);
    const r2 = await rawRequest(sess, 'POST', `/dynamic_chunk?${encodeQuery({ wid, digest: big.hex, size: 16, 'encoded-size': 16 * MiB + 45 })}`, Buffer.alloc(16), 'application/octet-stream');
    expect(r2.body.toString()).toMatch(/'encoded-size': value must have a maximum value of 16777260/);
    // The session is still usable.
    expect(data(await rawRequest(sess, 'GET', '/previous_backup_time'))).toBeNull();
  });

  it('appends only known chunks, at sequential offsets', async () => {
    const unknown = randomChunk(100);
    const put = (digests: string[], offsets: number[]) =>
      rawRequest(sess, 'PUT', '/dynamic_index', Buffer.from(JSON.stringify({ wid, 'digest-list': digests, 'offset-list': offsets })), 'application/json');
    const r = await put([unknown.hex], [0]);
    expect([r.status, r.body.toString()]).toEqual([400, `no such chunk ${unknown.hex}`]);
    const gap = await put([chunk.hex], [5]);
    expect(gap.body.toString()).toBe("dynamic writer 'root.pxar.didx' append chunk failed - got strange chunk offset (0 != 5)");
    const len = await put([chunk.hex], []);
    expect(len.body.toString()).toBe('offset list has wrong length (0 != 1)');
    expect(data(await put([chunk.hex, chunk.hex], [0, 10_000]))).toBeNull();
  });

  it('refuses a close with a wrong count, size or csum, and forgets that writer', async () => {
    const w = new DynamicIndexWriter();
    w.add(10_000, chunk.digest);
    w.add(20_000, chunk.digest);
    const good = w.finish().csum.toString('hex');
    const close = (q: Record<string, string | number>) => rawRequest(sess, 'POST', `/dynamic_close?${encodeQuery(q)}`);
    const wrongCount = await close({ wid, 'chunk-count': 3, size: 20_000, csum: good });
    expect(wrongCount.body.toString()).toBe("dynamic writer 'root.pxar.didx' close failed - unexpected chunk count (2 != 3)");
    const w2 = data(await rawRequest(sess, 'POST', '/dynamic_index?archive-name=b.pxar.didx')) as number;
    expect(w2).toBe(2);
    await rawRequest(sess, 'PUT', '/dynamic_index', Buffer.from(JSON.stringify({ wid: w2, 'digest-list': [chunk.hex], 'offset-list': [0] })), 'application/json');
    const wrongSize = await close({ wid: w2, 'chunk-count': 1, size: 10_001, csum: good });
    expect(wrongSize.body.toString()).toBe("dynamic writer 'b.pxar.didx' close failed - unexpected file size (10000 != 10001)");
    const w3 = data(await rawRequest(sess, 'POST', '/dynamic_index?archive-name=c.pxar.didx')) as number;
    await rawRequest(sess, 'PUT', '/dynamic_index', Buffer.from(JSON.stringify({ wid: w3, 'digest-list': [chunk.hex], 'offset-list': [0] })), 'application/json');
    const wrongCsum = await close({ wid: w3, 'chunk-count': 1, size: 10_000, csum: good });
    expect(wrongCsum.body.toString()).toBe("dynamic writer 'c.pxar.didx' close failed - got unexpected checksum");
    const again = await close({ wid: w3, 'chunk-count': 1, size: 10_000, csum: good });
    expect(again.body.toString()).toBe("dynamic writer '3' not registered");
    expect(existsSync(path.join(h.ds.snapshotPath(snapDir('checks', T0)), 'c.pxar.didx'))).toBe(false);
  });

  it('refuses to finish with open writers or without a manifest', async () => {
    const w4 = data(await rawRequest(sess, 'POST', '/dynamic_index?archive-name=d.pxar.didx')) as number;
    expect((await rawRequest(sess, 'POST', '/finish')).body.toString()).toBe('found open index writer - unable to finish backup');
    await rawRequest(sess, 'PUT', '/dynamic_index', Buffer.from(JSON.stringify({ wid: w4, 'digest-list': [chunk.hex], 'offset-list': [0] })), 'application/json');
    const w = new DynamicIndexWriter();
    w.add(10_000, chunk.digest);
    expect(data(await rawRequest(sess, 'POST', `/dynamic_close?${encodeQuery({ wid: w4, 'chunk-count': 1, size: 10_000, csum: w.finish().csum.toString('hex') })}`))).toBeNull();
    expect((await rawRequest(sess, 'POST', '/finish')).body.toString()).toBe('unable to update manifest blob - index.json.blob was not uploaded');
  });
});

describe('sessions', () => {
  it('removes the snapshot of a client killed mid-upload, and the group can be backed up again', async () => {
    const sess = await rawSession(h, 'backup', ALICE, alice, { 'backup-type': 'host', 'backup-id': 'killed', 'backup-time': T0 });
    const wid = data(await rawRequest(sess, 'POST', '/dynamic_index?archive-name=root.pxar.didx')) as number;
    const big = makeChunk(randomBytes(4 * MiB), false);
    const dir = snapDir('killed', T0);
    expect(existsSync(h.ds.snapshotPath(dir))).toBe(true);
    const st = sess.request({
      ':method': 'POST',
      ':path': `/dynamic_chunk?${encodeQuery({ wid, digest: big.hex, size: big.size, 'encoded-size': big.blob.length })}`,
      'content-type': 'application/octet-stream',
    });
    st.on('error', () => undefined);
    await new Promise<void>((resolve) => st.write(big.blob.subarray(0, MiB), () => resolve()));
    sess.destroy(); // the client dies with the upload half sent
    await h.server.whenIdle();
    expect(existsSync(h.ds.snapshotPath(dir))).toBe(false);
    expect(existsSync(h.ds.groupPath(dir.group))).toBe(false);
    expect(await h.ds.chunks.has(big.digest)).toBe(false);

    const s = await h.client(ALICE, alice).startBackup({ backupType: 'host', backupId: 'killed', backupTime: T0 });
    await simpleBackup(s, 'killed', T0, [randomChunk(5000)]);
    await h.server.whenIdle();
    expect((await h.ds.listSnapshots(dir.group)).map((x) => x.dir.time)).toEqual([T0]);
  });

  it('ends a session whose upload was cancelled while it waited for a slot (no stuck group lock)', async () => {
    const sess = await rawSession(h, 'backup', ALICE, alice, { 'backup-type': 'host', 'backup-id': 'cancelled', 'backup-time': T0 });
    const wid = data(await rawRequest(sess, 'POST', '/dynamic_index?archive-name=root.pxar.didx')) as number;
    const c = randomChunk(100_000);
    const path = `/dynamic_chunk?${encodeQuery({ wid, digest: c.hex, size: c.size, 'encoded-size': c.blob.length })}`;
    const partial = () => {
      const st = sess.request({ ':method': 'POST', ':path': path, 'content-type': 'application/octet-stream' });
      st.on('error', () => undefined);
      st.write(c.blob.subarray(0, 10)); // a partial body holds one of the session's upload slots
      return st;
    };
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    const holders = Array.from({ length: 16 }, partial);
    await sleep(200);
    const waiting = partial(); // the 17th waits for a slot...
    await sleep(200);
    waiting.close(http2.constants.NGHTTP2_CANCEL); // ...and is cancelled there
    await sleep(200);
    for (const st of holders) st.close(http2.constants.NGHTTP2_CANCEL);
    await sleep(200);
    sess.destroy();
    await h.server.whenIdle();
    const group = new BackupGroup('host', 'cancelled');
    expect(existsSync(h.ds.groupPath(group))).toBe(false);
    const s = await h.client(ALICE, alice).startBackup({ backupType: 'host', backupId: 'cancelled', backupTime: T0 });
    await simpleBackup(s, 'cancelled', T0, [randomChunk(5000)]);
    await h.server.whenIdle();
    expect((await h.ds.listSnapshots(group)).map((x) => x.dir.time)).toEqual([T0]);
  });

  it('a reader session holds its snapshot: prune is refused (not reported as done) until it ends', async () => {
    const c = h.client(ALICE, alice);
    for (const t of [T0, T0 + 60]) await simpleBackup(await c.startBackup({ backupType: 'host', backupId: 'held', backupTime: t }), 'held', t, [randomChunk(3000)]);
    await h.server.whenIdle();
    const r = await c.startReader({ backupType: 'host', backupId: 'held', backupTime: T0 });
    await expectRemote(c.prune({ backupType: 'host', backupId: 'held' }, { last: 1 }, false), 400, /1 snapshot\(s\) could not be removed: snapshot host\/held\/2024-05-07T14:25:51Z is being read/);
    const group = new BackupGroup('host', 'held');
    expect((await h.ds.listSnapshots(group)).map((x) => x.dir.time)).toEqual([T0, T0 + 60]);
    expect((await r.downloadManifest()).files.length).toBeGreaterThan(0);
    // a chunk lost from the store: the error says so, without the server's paths
    const idx = await r.downloadIndex('root.pxar.didx');
    const lost = idx.digest(0).toString('hex');
    const chunkFile = h.ds.chunks.chunkPath(lost);
    const bytes = await readFile(chunkFile);
    await rm(chunkFile);
    const e = await expectRemote(r.chunk(lost), 400, new RegExp(`reading chunk ${lost} failed: the chunk is missing in the datastore`));
    expect(e.serverMessage).not.toContain(h.dsPath);
    await writeFile(chunkFile, bytes);
    await r.close();
    await h.server.whenIdle();
    const after = await c.prune({ backupType: 'host', backupId: 'held' }, { last: 1 }, false);
    expect(after.map((e) => [e['backup-time'], e.keep]).sort()).toEqual([
      [T0, false],
      [T0 + 60, true],
    ]);
    expect((await h.ds.listSnapshots(group)).map((x) => x.dir.time)).toEqual([T0 + 60]);
  });

  it('removes an unfinished snapshot when the client just disconnects', async () => {
    const c = h.client(ALICE, alice);
    const s = await c.startBackup({ backupType: 'host', backupId: 'dropped', backupTime: T0 });
    const up = await s.dynamicUploader('root.pxar.didx');
    await up.add(randomChunk(1000));
    await up.close();
    s.abort();
    await h.server.whenIdle();
    expect(existsSync(h.ds.groupPath(new BackupGroup('host', 'dropped')))).toBe(false);
  });

  it('runs backups of different groups at the same time', async () => {
    const c = h.client(ALICE, alice);
    const [s1, s2] = await Promise.all([
      c.startBackup({ backupType: 'host', backupId: 'par1', backupTime: T0 }),
      c.startBackup({ backupType: 'host', backupId: 'par2', backupTime: T0 }),
    ]);
    expect(h.server.sessionCount).toBe(2);
    const shared = randomChunk(30_000);
    await Promise.all([
      simpleBackup(s1, 'par1', T0, [shared, randomChunk(40_000)]),
      simpleBackup(s2, 'par2', T0, [randomChunk(20_000), shared]),
    ]);
    await h.server.whenIdle();
    for (const id of ['par1', 'par2']) {
      const idx = await h.ds.readIndex(snapDir(id, T0), 'root.pxar.didx');
      expect(idx.count).toBe(2);
    }
  });

  it('refuses a second writer on the same group while the first one runs', async () => {
    const c = h.client(ALICE, alice);
    const s1 = await c.startBackup({ backupType: 'host', backupId: 'locked', backupTime: T0 });
    await expectRemote(c.startBackup({ backupType: 'host', backupId: 'locked', backupTime: T0 + 1 }), 400, /backup group host\/locked is locked by another backup/);
    await simpleBackup(s1, 'locked', T0, [randomChunk(100)]);
    await h.server.whenIdle();
    const s2 = await c.startBackup({ backupType: 'host', backupId: 'locked', backupTime: T0 + 1 });
    await simpleBackup(s2, 'locked', T0 + 1, [randomChunk(100)]);
    await h.server.whenIdle();
    expect((await h.ds.listSnapshots(new BackupGroup('host', 'locked'))).length).toBe(2);
  });

  it('keeps serving after clients send garbage', async () => {
    // Garbage instead of HTTP.
    const s1 = await connectTls({ host: '127.0.0.1', port: h.server.port, fingerprint: h.server.fingerprint });
    const answer: Buffer[] = [];
    s1.on('data', (d: Buffer) => answer.push(d));
    s1.end(Buffer.from('\x00\x01GARBAGE\r\n\r\n'));
    await new Promise((r) => s1.once('close', r));
    expect(Buffer.concat(answer).toString()).toMatch(/^HTTP\/1.1 400 Bad Request/);
    // Garbage instead of HTTP/2 after a successful upgrade: the session dies, the snapshot goes.
    const s2 = await connectTls({ host: '127.0.0.1', port: h.server.port, fingerprint: h.server.fingerprint });
    const query = encodeQuery({ store: STORE, 'backup-type': 'host', 'backup-id': 'garbage', 'backup-time': T0 });
    await new Promise<void>((resolve, reject) => {
      const req = http.request({
        method: 'GET',
        path: `/api2/json/backup?${query}`,
        headers: { connection: 'upgrade', upgrade: BACKUP_PROTOCOL_ID, authorization: formatTokenAuthorization(ALICE, alice) },
        createConnection: () => s2,
      });
      req.on('upgrade', (_res, sock) => {
        sock.on('error', () => undefined);
        sock.on('close', () => resolve());
        sock.resume();
        sock.write(randomBytes(5000));
      });
      req.on('response', (res) => reject(new Error(`status ${res.statusCode}`)));
      req.on('error', () => undefined);
      req.end();
    });
    await h.server.whenIdle();
    expect(existsSync(h.ds.groupPath(new BackupGroup('host', 'garbage')))).toBe(false);
    // Still serving.
    const s = await h.client(ALICE, alice).startBackup({ backupType: 'host', backupId: 'garbage', backupTime: T0 });
    await simpleBackup(s, 'garbage', T0, [randomChunk(100)]);
    await h.server.whenIdle();
    expect(await h.client(ALICE, alice).listDatastores()).toHaveLength(1);
  });
});

describe('benchmark sessions and shutdown', () => {
  it('discards the data of a host/benchmark session', async () => {
    const c = h.client(ALICE, alice);
    await expectRemote(c.startBackup({ backupType: 'host', backupId: 'other', backupTime: T0, benchmark: true }), 400, /only allowed on 'host\/benchmark'/);
    const s = await c.startBackup({ backupType: 'host', backupId: 'benchmark', backupTime: T0, benchmark: true });
    await simpleBackup(s, 'benchmark', T0, [randomChunk(1000)]);
    await h.server.whenIdle();
    expect(existsSync(h.ds.groupPath(new BackupGroup('host', 'benchmark')))).toBe(false);
  });

  it('removes unfinished backups when the server shuts down', async () => {
    const h2 = await startHarness();
    try {
      const token = await h2.token(ALICE, 'backup');
      const s = await h2.client(ALICE, token).startBackup({ backupType: 'host', backupId: 'shutdown', backupTime: T0 });
      const up = await s.dynamicUploader('root.pxar.didx');
      await up.add(randomChunk(1000));
      expect(existsSync(h2.ds.snapshotPath(snapDir('shutdown', T0)))).toBe(true);
      await h2.server.close();
      expect(h2.server.sessionCount).toBe(0);
      expect(existsSync(h2.ds.groupPath(new BackupGroup('host', 'shutdown')))).toBe(false);
      await expect(up.close()).rejects.toThrow();
    } finally {
      await h2.close();
    }
  });
});
