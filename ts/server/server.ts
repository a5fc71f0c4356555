/**
 * `pxb serve`: PBS's HTTPS API on top of local datastores (spec protocol.md): the REST listing
 * calls over HTTP/1.1, and the backup/reader protocols — an HTTP/1.1 `Upgrade:
 * proxmox-backup(-reader)-protocol-v1` request answered with 101, after which the same TLS
 * connection speaks HTTP/2 (server role).
 *
 * Invariants:
 *  - TLS 1.2+ only, with the certificate of the config directory (created on first start).
 *  - Every request is authenticated with an API token (`Authorization: PBSAPIToken …`);
 *    failures answer 401 after `authFailureDelayMs`, as PBS does.
 *  - An upgrade is answered 101 only after every check passed (auth, parameters, privileges,
 *    datastore, namespace, group lock and owner); otherwise a plain HTTP error, and the
 *    connection closes. The socket is handed to HTTP/2 only once the 101 has been written.
 *  - One session per upgraded connection. When the connection ends the session ends: an
 *    unfinished backup is removed. No client behaviour can throw out of an event handler.
 *  - `close()` stops listening, ends every session (removing unfinished backups) and waits.
 */
import https from 'node:https';
import http2 from 'node:http2';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { BackupDir } from '../datastore/backup-dir.js';
import { BackupGroup } from '../datastore/backup-group.js';
import { DataStore, type SyncLevel } from '../datastore/datastore.js';
import { ownerMatches } from '../datastore/names.js';
import { BackupNamespace } from '../datastore/namespace.js';
import { parseAuthorization } from '../protocol/auth.js';
import {
  API_PREFIX,
  BACKUP_PROTOCOL_ID,
  DEFAULT_PORT,
  MAX_REST_URI_LENGTH,
  READER_PROTOCOL_ID,
  SERVER_H2,
} from '../protocol/constants.js';
import { BACKUP_UPGRADE_PARAMS, READER_UPGRADE_PARAMS, validateStoreName } from '../protocol/endpoints.js';
import { badRequest, forbidden, messageOf, notFound, unauthorized } from '../protocol/errors.js';
import { param, parseParams, type Params } from '../protocol/params.js';
import { handleAdminRequest } from './admin-api.js';
import { BackupSession } from './backup-session.js';
import { loadOrCreateCertificate, type CertificateSubject } from './certificate.js';
import { sendError, sendJson, writeRawError } from './http.js';
import { ReaderSession } from './reader-session.js';
import type { ProtocolSession, SessionOptions } from './session.js';
import { TokenStore, privilegesOf, type TokenInfo } from './tokens.js';

export interface ServeOptions {
  /** Datastore name → directory. Names are SAFE_IDs of 3..32 characters. */
  datastores: ReadonlyMap<string, string> | Readonly<Record<string, string>>;
  /** Holds `proxy.key`, `proxy.pem`, `tokens.json`. */
  configDir: string;
  /** Listen address (default 127.0.0.1). */
  host?: string;
  /** Port (default 8007; 0 picks a free one). */
  port?: number;
  /** Create missing (empty) datastore directories (default true). */
  createDatastores?: boolean;
  /** fsync chunks, indexes and manifests (default true); shorthand for syncLevel file/none. */
  fsync?: boolean;
  /** The datastores' sync level (overrides `fsync`; see `SyncLevel`). */
  syncLevel?: SyncLevel;
  /** Delay of 401 answers in ms (default 3000, as PBS). */
  authFailureDelayMs?: number;
  /** Names the certificate is made for (default: localhost, 127.0.0.1, ::1). */
  certificate?: CertificateSubject;
  /** Log lines (sessions, refused requests); default: discarded. */
  log?: (line: string) => void;
}

interface LiveSession {
  session: ProtocolSession;
  socket: Duplex;
}

export class PxbServer {
  private readonly sessions = new Set<LiveSession>();
  private readonly upgrading = new Map<Duplex, Promise<void>>();
  private idleWaiters: Array<() => void> = [];
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly https: https.Server,
    readonly datastores: ReadonlyMap<string, DataStore>,
    readonly tokens: TokenStore,
    /** `aa:bb:…`, SHA-256 of the certificate. */
    readonly fingerprint: string,
    readonly certificatePem: string,
    /** The certificate was created by this start. */
    readonly certificateCreated: boolean,
    private readonly authFailureDelayMs: number,
    private readonly log: (line: string) => void,
  ) {}

  static async start(options: ServeOptions): Promise<PxbServer> {
    const entries = options.datastores instanceof Map ? [...options.datastores] : Object.entries(options.datastores);
    if (!entries.length) throw new Error('no datastore to serve (give at least one NAME=PATH)');
    const stores = new Map<string, DataStore>();
    for (const [name, dir] of entries) {
      validateStoreName(name);
      if (stores.has(name)) throw new Error(`datastore ${name} given twice`);
      stores.set(name, await DataStore.open(dir, { create: options.createDatastores ?? true, fsync: options.fsync ?? true, syncLevel: options.syncLevel }));
    }
    const cert = await loadOrCreateCertificate(
      options.configDir,
      options.certificate ?? { commonName: 'pxb', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1', '::1'] },
    );
    const server = https.createServer({ key: cert.keyPem, cert: cert.certPem, minVersion: 'TLSv1.2' });
    const pxb = new PxbServer(
      server,
      stores,
      new TokenStore(options.configDir),
      cert.fingerprint,
      cert.certPem,
      cert.created,
      options.authFailureDelayMs ?? 3000,
      options.log ?? (() => undefined),
    );
    server.on('request', (req: IncomingMessage, res: ServerResponse) => pxb.onRequest(req, res));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => pxb.onUpgrade(req, socket, head));
    server.on('clientError', (_e: Error, socket: Duplex) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      socket.destroy();
    });
    server.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? DEFAULT_PORT, options.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (e) => pxb.log(`server error: ${e.message}`));
    return pxb;
  }

  get address(): { host: string; port: number } {
    const a = this.https.address();
    if (!a || typeof a === 'string') throw new Error('server is not listening');
    return { host: a.address, port: a.port };
  }

  get port(): number {
    return this.address.port;
  }

  /** Backup and reader sessions currently open. */
  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Resolves once no session is open (their cleanup, e.g. removing an aborted backup, done). */
  whenIdle(): Promise<void> {
    if (this.sessions.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  // ---- authentication ------------------------------------------------------------------------

  private async authenticate(header: string | undefined): Promise<TokenInfo> {
    let reason: string;
    try {
      const creds = parseAuthorization(header);
      if (!creds) reason = 'no authentication credentials provided.';
      else {
        const info = await this.tokens.verify(creds.tokenId, creds.secret);
        if (info) return info;
        reason = `invalid API token ${creds.tokenId} or secret`;
      }
    } catch (e) {
      reason = messageOf(e);
    }
    if (this.authFailureDelayMs > 0) await sleep(this.authFailureDelayMs);
    throw unauthorized(`authentication failed - ${reason}`);
  }

  // ---- REST ----------------------------------------------------------------------------------

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    req.resume(); // listing calls take no body
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    this.rest(req, res)
      .catch((e: unknown) => {
        this.log(`${req.method} ${(req.url ?? '').slice(0, 200)}: ${messageOf(e)}`);
        sendError(res, e);
      })
      .catch(() => {
        res.destroy();
      });
  }

  private async rest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    if (url.length > MAX_REST_URI_LENGTH) {
      res.writeHead(414, { 'content-length': 0 });
      res.end();
      return;
    }
    const { pathname, query } = splitUrl(url);
    const principal = await this.authenticate(req.headers.authorization);
    if (pathname === `${API_PREFIX}/backup` || pathname === `${API_PREFIX}/reader`) {
      throw badRequest(req.headers.upgrade ? 'invalid upgrade request (needs Connection: upgrade)' : 'missing Upgrade header');
    }
    sendJson(res, await handleAdminRequest(req.method ?? 'GET', pathname, query, { datastores: this.datastores, principal }));
  }

  // ---- protocol upgrade ----------------------------------------------------------------------

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => undefined);
    if (this.closing) {
      socket.destroy();
      return;
    }
    const done = this.upgrade(req, socket, head)
      .catch((e: unknown) => {
        this.log(`refused ${(req.url ?? '').split('?')[0]}: ${messageOf(e)}`);
        writeRawError(socket, e);
      })
      .catch(() => {
        socket.destroy();
      })
      .finally(() => this.upgrading.delete(socket));
    this.upgrading.set(socket, done);
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const { pathname, query } = splitUrl(req.url ?? '/');
    const kind = pathname === `${API_PREFIX}/backup` ? 'backup' : pathname === `${API_PREFIX}/reader` ? 'reader' : null;
    if (!kind) throw notFound(`Path '${pathname}' not found.`);
    const principal = await this.authenticate(req.headers.authorization);
    const p = parseParams(kind === 'backup' ? BACKUP_UPGRADE_PARAMS : READER_UPGRADE_PARAMS, query, 'form');
    const protocolId = kind === 'backup' ? BACKUP_PROTOCOL_ID : READER_PROTOCOL_ID;
    if (req.headers.upgrade !== protocolId) throw badRequest('invalid protocol name');
    if (req.httpVersionMajor !== 1) throw badRequest(`unexpected http version '${req.httpVersion}' (expected version < 2)`);
    const sessionOptions: SessionOptions = { authFailureDelayMs: this.authFailureDelayMs, log: this.log };
    const session = kind === 'backup' ? await this.beginBackup(principal, p, sessionOptions) : await this.beginReader(principal, p, sessionOptions);
    if (socket.destroyed || this.closing) {
      await session.end();
      return;
    }
    const live: LiveSession = { session, socket };
    this.sessions.add(live);
    const end = () => {
      void session.end().finally(() => {
        this.sessions.delete(live);
        if (this.sessions.size === 0) for (const w of this.idleWaiters.splice(0)) w();
      });
    };
    socket.once('close', end);
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${protocolId}\r\n\r\n`, (err) => {
      if (err) {
        socket.destroy();
        return;
      }
      // The 101 is on the wire: from here on the connection is HTTP/2 (server role).
      try {
        this.attachHttp2(session, socket, head, end);
      } catch (e) {
        this.log(`${session.label}: HTTP/2 setup failed: ${messageOf(e)}`);
        socket.destroy();
      }
    });
    this.log(`${session.label}: started by ${principal.tokenId}`);
  }

  private async beginBackup(principal: TokenInfo, p: Params, options: SessionOptions): Promise<BackupSession> {
    const { ds, ns, group, privs } = await this.resolve(principal, p);
    if (!privs.backup) throw forbidden('permission check failed');
    const benchmark = param.bool(p, 'benchmark');
    const isBenchmarkGroup = group.type === 'host' && group.id === 'benchmark';
    if (isBenchmarkGroup && !benchmark) throw badRequest('unable to run benchmark without --benchmark flags');
    if (!isBenchmarkGroup && benchmark) throw badRequest("benchmark flags is only allowed on 'host/benchmark'");
    const writer = await ds.beginBackup(ns, group, param.int(p, 'backup-time'), { owner: principal.tokenId });
    return new BackupSession(ds, writer, { ...options, benchmark });
  }

  private async beginReader(principal: TokenInfo, p: Params, options: SessionOptions): Promise<ReaderSession> {
    const { ds, group, privs, store } = await this.resolve(principal, p);
    if (!privs.read && !privs.backup) throw forbidden(`no permissions on /datastore/${store}`);
    const dir = new BackupDir(group, param.int(p, 'backup-time'));
    if (!privs.read) {
      const owner = await ds.getOwner(group);
      if (owner === null || !ownerMatches(owner, principal.tokenId)) throw forbidden('backup owner check failed!');
    }
    const snapshots = await ds.listSnapshots(group, { includeUnfinished: true });
    if (!snapshots.some((s) => s.dir.equals(dir))) throw notFound(`snapshot ${dir} does not exist.`);
    let lock;
    try {
      lock = ds.lockSnapshotShared(dir);
    } catch (e) {
      throw badRequest(`unable to lock snapshot ${dir} - ${(e as Error).message}`);
    }
    return new ReaderSession(ds, dir, options, lock);
  }

  private async resolve(principal: TokenInfo, p: Params) {
    const store = param.str(p, 'store');
    const privs = privilegesOf(Object.hasOwn(principal.datastores, store) ? principal.datastores[store] : undefined);
    if (!privs.backup && !privs.read) throw forbidden('permission check failed');
    const ds = this.datastores.get(store);
    if (!ds) throw badRequest(`datastore '${store}' does not exist`);
    const ns = BackupNamespace.parse(param.optStr(p, 'ns') ?? '');
    if (!(await ds.namespaceExists(ns))) throw notFound('namespace not found');
    const group = new BackupGroup(param.str(p, 'backup-type'), param.str(p, 'backup-id'), ns);
    return { store, ds, ns, group, privs };
  }

  private attachHttp2(session: ProtocolSession, socket: Duplex, head: Buffer, end: () => void): void {
    if (head.length) socket.unshift(head);
    // node's HTTP/2 server looks at the TLS ALPN result to tell HTTP/1 from HTTP/2; this
    // connection negotiated none but switched protocols by Upgrade.
    (socket as TLSSocket & { alpnProtocol: string | false | null }).alpnProtocol = 'h2';
    const h2 = http2.createServer({
      settings: {
        initialWindowSize: SERVER_H2.streamWindow,
        maxFrameSize: SERVER_H2.maxFrameSize,
        maxConcurrentStreams: SERVER_H2.maxConcurrentStreams,
      },
      maxSessionMemory: 256,
    });
    h2.on('session', (s) => {
      s.on('error', () => undefined);
      s.once('close', end);
      try {
        s.setLocalWindowSize(SERVER_H2.connectionWindow);
      } catch {
        // the session died before it started; 'close' follows
      }
    });
    h2.on('sessionError', () => undefined);
    h2.on('stream', (stream, headers) => session.dispatch(stream, headers));
    (socket as TLSSocket).setKeepAlive?.(true, 60_000);
    (socket as TLSSocket).setNoDelay?.(true);
    h2.emit('connection', socket);
  }

  /** Stop listening, end every session (unfinished backups are removed) and wait for them. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.https.close(() => resolve()));
      this.https.closeAllConnections();
      for (const s of this.upgrading.keys()) s.destroy();
      await Promise.allSettled([...this.upgrading.values()]);
      const ends = [...this.sessions].map(({ session, socket }) => {
        socket.destroy();
        return session.end();
      });
      await Promise.allSettled(ends);
      await closed;
    })();
    return this.closing;
  }
}

function splitUrl(url: string): { pathname: string; query: URLSearchParams } {
  const q = url.indexOf('?');
  return { pathname: q < 0 ? url : url.slice(0, q), query: new URLSearchParams(q < 0 ? '' : url.slice(q + 1)) };
}

