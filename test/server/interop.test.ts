/**
 * Wire-level interop: requests shaped by hand exactly as the spec tables describe them
 * (protocol.md §1, §3, §4, §5), checking paths, parameters, bodies, content types and
 * status codes of `pxb serve` — not just what our own client happens to send.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteError } from '../../ts/client/remote/errors.js';
import { connectTls, http1Request } from '../../ts/client/remote/transport.js';
import { BackupDir } from '../../ts/datastore/backup-dir.js';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import { chunkKey } from '../../ts/datastore/chunk-store.js';
import { DynamicIndexWriter } from '../../ts/format/dynamic-index.js';
import { BackupManifest } from '../../ts/format/manifest.js';
import { formatTokenAuthorization } from '../../ts/protocol/auth.js';
import { encodeQuery } from '../../ts/protocol/params.js';
import { STORE, data, makeChunk, randomChunk, rawRequest, rawSession, startHarness, type Harness } from './harness.js';

const T0 = 1715091951;
const TOKEN = 'interop@pbs!t';
const JSON_TYPE = 'application/json;charset=UTF-8';

let h: Harness;
let secret: string;

beforeAll(async () => {
  h = await startHarness();
  secret = await h.token(TOKEN, 'admin');
});

afterAll(async () => {
  await h.close();
});

const q = encodeQuery;
const snapshot = (time: number) => ({ 'backup-type': 'host', 'backup-id': 'myhost', 'backup-time': time });

async function rest(pathAndQuery: string, auth = true) {
  const socket = await connectTls({ host: '127.0.0.1', port: h.server.port, fingerprint: h.server.fingerprint });
  return http1Request(socket, { method: 'GET', path: pathAndQuery, headers: auth ? { authorization: formatTokenAuthorization(TOKEN, secret) } : {} });
}

describe('backup session, spec §3.2/§3.4', () => {
  const d0 = randomChunk(4096);
  const d1 = makeChunk(Buffer.alloc(8192, 9));

  it('first snapshot: index, chunk, append, close, blob, finish with the spec shapes', async () => {
    const s = await rawSession(h, 'backup', TOKEN, secret, { ...snapshot(T0), debug: false, benchmark: false });
    const prev = await rawRequest(s, 'GET', '/previous_backup_time');
    expect([prev.status, prev.contentType, prev.body.toString()]).toEqual([200, JSON_TYPE, '{"data":null}']);
    const noPrev = await rawRequest(s, 'GET', `/previous?${q({ 'archive-name': 'index.json.blob' })}`);
    expect([noPrev.status, noPrev.body.toString()]).toEqual([400, 'no valid previous backup']);

    const idx = await rawRequest(s, 'POST', `/dynamic_index?${q({ 'archive-name': 'root.pxar.didx' })}`);
    expect(idx.body.toString()).toBe('{"data":1}');
    const up = await rawRequest(s, 'POST', `/dynamic_chunk?${q({ wid: 1, digest: d1.hex, size: d1.size, 'encoded-size': d1.blob.length })}`, d1.blob, 'application/octet-stream');
    expect([up.status, up.contentType, up.body.toString()]).toEqual([200, JSON_TYPE, `{"data":"${d1.hex}"}`]);
    // Appends as the PBS client sends them: JSON body, start offsets.
    const put = await rawRequest(s, 'PUT', '/dynamic_index', Buffer.from(JSON.stringify({ wid: 1, 'digest-list': [d1.hex], 'offset-list': [0] })), 'application/json');
    expect(put.body.toString()).toBe('{"data":null}');
    const w = new DynamicIndexWriter();
    w.add(d1.size, d1.digest);
    const built = w.finish();
    const close = await rawRequest(s, 'POST', `/dynamic_close?${q({ wid: 1, 'chunk-count': 1, size: d1.size, csum: built.csum.toString('hex') })}`);
    expect(close.body.toString()).toBe('{"data":null}');

    const m = new BackupManifest('host', 'myhost', T0);
    m.addFile('root.pxar.didx', built.size, built.csum);
    const mb = m.toBlob();
    const blob = await rawRequest(s, 'POST', `/blob?${q({ 'file-name': 'index.json.blob', 'encoded-size': mb.length })}`, mb, 'application/octet-stream');
    expect(blob.body.toString()).toBe('{"data":null}');
    const fin = await rawRequest(s, 'POST', '/finish');
    expect(fin.body.toString()).toBe('{"data":null}');
    const after = await rawRequest(s, 'POST', `/dynamic_index?${q({ 'archive-name': 'late.pxar.didx' })}`);
    expect([after.status, after.body.toString()]).toEqual([400, 'backup already marked as finished.']);
    s.close();
    await h.server.whenIdle();

    // The stored index is byte-identical except for uuid/ctime; entries and csum are the client's.
    const file = await readFile(path.join(h.ds.snapshotPath(new BackupDir(new BackupGroup('host', 'myhost'), T0)), 'root.pxar.didx'));
    expect(file.subarray(32).equals(built.data.subarray(32))).toBe(true);
  });

  it('the §3.4 example: one new chunk, one known from GET /previous', async () => {
    const s = await rawSession(h, 'backup', TOKEN, secret, snapshot(T0 + 1));
    expect(data(await rawRequest(s, 'GET', '/previous_backup_time'))).toBe(T0);
    // d1 is not known before the previous index is downloaded.
    const early = await rawRequest(s, 'POST', `/dynamic_index?${q({ 'archive-name': 'early.pxar.didx' })}`);
    const earlyWid = data(early) as number;
    const refused = await rawRequest(s, 'PUT', '/dynamic_index', Buffer.from(JSON.stringify({ wid: earlyWid, 'digest-list': [d1.hex], 'offset-list': [0] })), 'application/json');
    expect(refused.body.toString()).toBe(`no such chunk ${d1.hex}`);
    const prev = await rawRequest(s, 'GET', `/previous?${q({ 'archive-name': 'root.pxar.didx' })}`);
    expect([prev.status, prev.contentType]).toEqual([200, 'application/octet-stream']);
    expect(prev.body.length).toBe(4096 + 40);

    const wid = data(await rawRequest(s, 'POST', `/dynamic_index?${q({ 'archive-name': 'root.pxar.didx' })}`)) as number;
    expect(data(await rawRequest(s, 'POST', `/dynamic_chunk?${q({ wid, digest: d0.hex, size: d0.size, 'encoded-size': d0.blob.length })}`, d0.blob, 'application/octet-stream'))).toBe(d0.hex);
    // Form-encoded appends (repeated keys) are accepted too.
    const form = Buffer.from(q({ wid, 'digest-list': [d0.hex, d1.hex], 'offset-list': [0, d0.size] }));
    expect(data(await rawRequest(s, 'PUT', '/dynamic_index', form))).toBeNull();
    const w = new DynamicIndexWriter();
    w.add(d0.size, d0.digest);
    w.add(d0.size + d1.size, d1.digest);
    const csum = w.finish().csum.toString('hex');
    expect(data(await rawRequest(s, 'POST', `/dynamic_close?${q({ wid, 'chunk-count': 2, size: d0.size + d1.size, csum })}`))).toBeNull();
    // POST parameters may also come as a JSON body (PBS's REST convention).
    const json = await rawRequest(s, 'POST', '/dynamic_index', Buffer.from(JSON.stringify({ 'archive-name': 'j.pxar.didx' })), 'application/json');
    expect(data(json)).toBe(earlyWid + 2);
    s.destroy();
    await h.server.whenIdle();
  });

  it('answers unknown paths with 404 and bad parameters with 400', async () => {
    const s = await rawSession(h, 'backup', TOKEN, secret, snapshot(T0 + 2));
    const unknown = await rawRequest(s, 'GET', '/nonexistent');
    expect([unknown.status, unknown.contentType, unknown.body.toString()]).toEqual([404, JSON_TYPE, "Path '/nonexistent' not found."]);
    expect((await rawRequest(s, 'GET', '/dynamic_chunk')).status).toBe(404); // wrong method
    const missing = await rawRequest(s, 'POST', '/dynamic_index');
    expect([missing.status, missing.body.toString()]).toEqual([400, "parameter verification failed - 'archive-name': parameter is missing and it is not optional"]);
    const type = await rawRequest(s, 'POST', '/dynamic_index', Buffer.from('x'), 'text/plain');
    expect(type.body.toString()).toMatch(/unsupported content type/);
    const blobExt = await rawRequest(s, 'POST', `/blob?${q({ 'file-name': 'x.didx', 'encoded-size': 12 })}`, Buffer.alloc(12), 'application/octet-stream');
    expect(blobExt.body.toString()).toBe("wrong blob file extension: 'x.didx'");
    const badBlob = await rawRequest(s, 'POST', `/blob?${q({ 'file-name': 'x.blob', 'encoded-size': 12 })}`, Buffer.alloc(12), 'application/octet-stream');
    expect(badBlob.status).toBe(400);
    expect(badBlob.body.toString()).toMatch(/x\.blob/);
    const speed = await rawRequest(s, 'POST', '/speedtest', Buffer.alloc(3 * 1024 * 1024), 'application/octet-stream');
    expect(speed.body.toString()).toBe('{"data":null}');
    const tooBig = await rawRequest(s, 'PUT', '/dynamic_index', Buffer.alloc(600 * 1024, 0x20), 'application/json');
    expect([tooBig.status, tooBig.body.toString()]).toEqual([400, 'Request body too large']);
    s.destroy();
    await h.server.whenIdle();
  });
});

describe('reader session, spec §4', () => {
  it('serves files and only the chunks of downloaded indexes', async () => {
    const s = await rawSession(h, 'reader', TOKEN, secret, snapshot(T0));
    const dir = new BackupDir(new BackupGroup('host', 'myhost'), T0);
    const idxFile = await readFile(path.join(h.ds.snapshotPath(dir), 'root.pxar.didx'));
    const digest = idxFile.subarray(4096 + 8, 4096 + 40).toString('hex');
    const early = await rawRequest(s, 'GET', `/chunk?${q({ digest })}`);
    expect([early.status, early.body.toString()]).toEqual([401, `download chunk ${digest} not allowed`]);
    const dl = await rawRequest(s, 'GET', `/download?${q({ 'file-name': 'root.pxar.didx' })}`);
    expect([dl.status, dl.contentType]).toEqual([200, 'application/octet-stream']);
    expect(dl.body.equals(idxFile)).toBe(true);
    const chunk = await rawRequest(s, 'GET', `/chunk?${q({ digest })}`);
    expect(chunk.status).toBe(200);
    expect(chunk.body.equals(await readFile(path.join(h.dsPath, chunkKey(digest))))).toBe(true);
    const missing = await rawRequest(s, 'GET', `/download?${q({ 'file-name': 'nope.blob' })}`);
    expect([missing.status, missing.body.toString()]).toEqual([404, "open file 'host/myhost/2024-05-07T14:25:51Z/nope.blob' failed - not found"]);
    const speed = await rawRequest(s, 'GET', '/speedtest');
    expect(speed.body.equals(Buffer.alloc(1024 * 1024, 'A'))).toBe(true);
    s.destroy();
    await h.server.whenIdle();
  });
});

describe('upgrade handshake, spec §3.1', () => {
  it('answers 101 only for the right protocol name', async () => {
    const socket = await connectTls({ host: '127.0.0.1', port: h.server.port, fingerprint: h.server.fingerprint });
    const r = await http1Request(socket, {
      method: 'GET',
      path: `/api2/json/backup?${q({ store: STORE, ...snapshot(T0 + 10) })}`,
      headers: { authorization: formatTokenAuthorization(TOKEN, secret), connection: 'upgrade', upgrade: 'h2c' },
    });
    expect([r.status, r.body.toString()]).toEqual([400, 'invalid protocol name']);
    const plain = await rest(`/api2/json/backup?${q({ store: STORE, ...snapshot(T0 + 10) })}`);
    expect([plain.status, plain.body.toString()]).toEqual([400, 'missing Upgrade header']);
  });

  it('refuses unknown datastores, namespaces and snapshots', async () => {
    const other = await h.token('interop@pbs!other', 'admin', ['store2']);
    const e1 = await rawSession(h, 'backup', 'interop@pbs!other', other, { ...snapshot(T0), store: 'store2' }).catch((e: unknown) => e);
    expect([(e1 as RemoteError).status, (e1 as RemoteError).serverMessage]).toEqual([400, "datastore 'store2' does not exist"]);
    const e2 = await rawSession(h, 'backup', TOKEN, secret, { ...snapshot(T0 + 10), ns: 'missing' }).catch((e: unknown) => e);
    expect([(e2 as RemoteError).status, (e2 as RemoteError).serverMessage]).toEqual([404, 'namespace not found']);
    const e3 = await rawSession(h, 'reader', TOKEN, secret, snapshot(T0 + 99)).catch((e: unknown) => e);
    expect([(e3 as RemoteError).status, (e3 as RemoteError).serverMessage]).toEqual([404, 'snapshot host/myhost/2024-05-07T14:27:30Z does not exist.']);
    const e4 = await rawSession(h, 'backup', TOKEN, secret, { 'backup-type': 'host', 'backup-id': 'benchmark', 'backup-time': T0 }).catch((e: unknown) => e);
    expect((e4 as RemoteError).serverMessage).toBe('unable to run benchmark without --benchmark flags');
    await h.server.whenIdle();
  });
});

describe('REST conventions, spec §1/§5', () => {
  it('wraps results in {"data": …} and errors as plain messages with a status', async () => {
    const ok = await rest('/api2/json/admin/datastore');
    expect([ok.status, ok.headers['content-type'], ok.body.toString()]).toEqual([200, JSON_TYPE, `{"data":[{"store":"${STORE}","comment":null}]}`]);
    const nf = await rest('/api2/json/nope');
    expect([nf.status, nf.body.toString()]).toEqual([404, "Path '/api2/json/nope' not found."]);
    const unauth = await rest('/api2/json/version', false);
    expect(unauth.status).toBe(401);
    const long = await rest(`/api2/json/version?x=${'a'.repeat(4000)}`);
    expect(long.status).toBe(414);
    const badParam = await rest(`/api2/json/admin/datastore/${STORE}/snapshots?backup-type=floppy`);
    expect([badParam.status, badParam.body.toString()]).toEqual([400, "parameter verification failed - 'backup-type': invalid backup type \"floppy\" (expected host, vm or ct)"]);
    const files = await rest(`/api2/json/admin/datastore/${STORE}/files?${q(snapshot(T0))}`);
    expect(JSON.parse(files.body.toString())).toEqual({
      data: [
        { filename: 'root.pxar.didx', 'crypt-mode': 'none', size: 8192 },
        { filename: 'index.json.blob', 'crypt-mode': 'none', size: JSON.parse(files.body.toString()).data[1].size },
      ],
    });
  });
});
