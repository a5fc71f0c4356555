/**
 * A real `pxb serve` in-process on 127.0.0.1 (random port), with a datastore and config dir in
 * a temp directory, plus helpers to make tokens, clients, chunks and raw HTTP/2 sessions.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import type { ClientHttp2Session } from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { PbsClient } from '../../ts/client/remote/client.js';
import { connectTls, upgradeToHttp2 } from '../../ts/client/remote/transport.js';
import { DataStore } from '../../ts/datastore/datastore.js';
import { encodeBlob } from '../../ts/format/blob.js';
import { formatTokenAuthorization } from '../../ts/protocol/auth.js';
import { BACKUP_PROTOCOL_ID, READER_PROTOCOL_ID } from '../../ts/protocol/constants.js';
import { upgradePath } from '../../ts/protocol/paths.js';
import type { QueryValue } from '../../ts/protocol/params.js';
import { PxbServer, type ServeOptions } from '../../ts/server/server.js';
import { TokenStore, type Role } from '../../ts/server/tokens.js';

export const STORE = 'store1';

export interface Harness {
  dir: string;
  dsPath: string;
  configDir: string;
  server: PxbServer;
  /** The served datastore, opened separately to inspect what the server wrote. */
  ds: DataStore;
  tokens: TokenStore;
  logs: string[];
  token(id: string, role: Role, stores?: string[]): Promise<string>;
  client(tokenId: string, secret: string, extra?: { fingerprint?: string | null; ca?: string }): PbsClient;
  close(): Promise<void>;
}

export async function startHarness(extra: Partial<ServeOptions> = {}): Promise<Harness> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pxb-serve-'));
  const dsPath = path.join(dir, 'ds');
  const configDir = path.join(dir, 'config');
  const logs: string[] = [];
  const server = await PxbServer.start({
    datastores: { [STORE]: dsPath },
    configDir,
    port: 0,
    fsync: false,
    authFailureDelayMs: 0,
    log: (l) => logs.push(l),
    ...extra,
  });
  const tokens = new TokenStore(configDir);
  const ds = await DataStore.open(dsPath);
  return {
    dir,
    dsPath,
    configDir,
    server,
    ds,
    tokens,
    logs,
    async token(id, role, stores = [STORE]) {
      return (await tokens.create(id, Object.fromEntries(stores.map((s) => [s, role])))).secret;
    },
    client(tokenId, secret, o = {}) {
      return new PbsClient({
        repository: `${tokenId}@127.0.0.1:${server.port}:${STORE}`,
        secret,
        fingerprint: o.fingerprint === null ? undefined : (o.fingerprint ?? server.fingerprint),
        ca: o.ca,
      });
    },
    async close() {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface TestChunk {
  data: Buffer;
  digest: Buffer;
  hex: string;
  size: number;
  blob: Buffer;
}

export function makeChunk(data: Buffer, compress = true): TestChunk {
  const digest = createHash('sha256').update(data).digest();
  return { data, digest, hex: digest.toString('hex'), size: data.length, blob: encodeBlob(data, compress) };
}

export function randomChunk(size: number): TestChunk {
  return makeChunk(randomBytes(size));
}

/** A raw HTTP/2 session after a protocol upgrade, for requests shaped by hand. */
export async function rawSession(
  h: Harness,
  kind: 'backup' | 'reader',
  tokenId: string,
  secret: string,
  query: Record<string, QueryValue>,
): Promise<ClientHttp2Session> {
  const socket = await connectTls({ host: '127.0.0.1', port: h.server.port, fingerprint: h.server.fingerprint });
  return upgradeToHttp2(socket, upgradePath(kind, { store: STORE, ...query }), kind === 'backup' ? BACKUP_PROTOCOL_ID : READER_PROTOCOL_ID, {
    authorization: formatTokenAuthorization(tokenId, secret),
  });
}

export interface RawResponse {
  status: number;
  contentType: string | undefined;
  body: Buffer;
}

/** One raw request on an upgraded session. */
export function rawRequest(
  session: ClientHttp2Session,
  method: string,
  pathAndQuery: string,
  body?: Buffer,
  contentType = 'application/x-www-form-urlencoded',
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':method': method, ':path': pathAndQuery, 'content-type': contentType }, { endStream: !body });
    let status = 0;
    let type: string | undefined;
    const parts: Buffer[] = [];
    s.on('response', (hd) => {
      status = Number(hd[':status']);
      type = hd['content-type'] as string | undefined;
    });
    s.on('data', (c: Buffer) => parts.push(c));
    s.on('end', () => resolve({ status, contentType: type, body: Buffer.concat(parts) }));
    s.on('error', (e) => {
      if (!status) reject(e);
    });
    if (body) s.end(body);
  });
}

/** The JSON body of a successful raw response. */
export function data(r: RawResponse): unknown {
  if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body.toString()}`);
  return (JSON.parse(r.body.toString()) as { data: unknown }).data;
}
