/**
 * `PbsClient`: the protocol client for a PBS-compatible server (`pxb serve` or Proxmox Backup
 * Server) — REST listing calls and the backup/reader sessions.
 *
 * Authentication is by API token (`user@realm!name` in the repository, its secret given
 * separately). Every call opens its own TLS connection with the same certificate rule (see
 * transport.ts); sessions keep theirs until finished or closed.
 */
import { BackupNamespace } from '../../datastore/namespace.js';
import { parseBackupType, validateBackupId, validateBackupTime } from '../../datastore/names.js';
import { formatTokenAuthorization, isTokenId } from '../../protocol/auth.js';
import { BACKUP_PROTOCOL_ID, READER_PROTOCOL_ID } from '../../protocol/constants.js';
import { apiPath, datastorePath, upgradePath } from '../../protocol/paths.js';
import type { QueryValue } from '../../protocol/params.js';
import type {
  BackupContent,
  DataStoreListItem,
  GroupListItem,
  NamespaceListItem,
  SnapshotListItem,
  VersionInfo,
} from '../../protocol/types.js';
import { BackupSession, type BackupSessionOptions, type SnapshotRef } from './backup-session.js';
import { ProtocolError, RemoteError } from './errors.js';
import { H2Connection } from './h2.js';
import { ReaderSession } from './reader-session.js';
import { parseRepository, type RemoteRepository } from './repository.js';
import { connectTls, http1Request, upgradeToHttp2 } from './transport.js';

export interface ClientOptions {
  /** `user@realm!token@host[:port]:store`, parsed or as text. */
  repository: RemoteRepository | string;
  /** The API token's secret. */
  secret: string;
  /** Pinned server certificate fingerprint; without it the certificate must be CA-trusted. */
  fingerprint?: string;
  /** Extra trusted CA certificates (PEM). */
  ca?: string | Buffer | Array<string | Buffer>;
  signal?: AbortSignal;
}

export interface StartBackupOptions extends SnapshotRef, BackupSessionOptions {
  /** Benchmark session (`host/benchmark` only; the server discards the data). */
  benchmark?: boolean;
  debug?: boolean;
}

function snapshotQuery(store: string, s: SnapshotRef): Record<string, QueryValue> {
  BackupNamespace.parse(s.ns ?? '');
  parseBackupType(s.backupType);
  validateBackupId(s.backupId);
  validateBackupTime(s.backupTime);
  return {
    'backup-type': s.backupType,
    'backup-id': s.backupId,
    'backup-time': s.backupTime,
    store,
    ns: s.ns ? s.ns : undefined,
  };
}

export class PbsClient {
  readonly repository: RemoteRepository;
  private readonly authorization: string;

  constructor(private readonly options: ClientOptions) {
    this.repository = typeof options.repository === 'string' ? parseRepository(options.repository) : options.repository;
    if (!isTokenId(this.repository.authId)) {
      throw new Error(`${this.repository.authId} is not an API token id: pxb connects with API tokens (user@realm!tokenname)`);
    }
    this.authorization = formatTokenAuthorization(this.repository.authId, options.secret);
  }

  private connect() {
    const r = this.repository;
    return connectTls({ host: r.host, port: r.port, fingerprint: this.options.fingerprint, ca: this.options.ca, signal: this.options.signal });
  }

  private hostHeader(): string {
    const r = this.repository;
    return `${r.host.includes(':') ? `[${r.host}]` : r.host}:${r.port}`;
  }

  /** One REST GET; the `data` value. */
  get(path: string): Promise<unknown> {
    return this.request('GET', path);
  }

  /** One REST call (parameters in the query string); the `data` value. */
  async request(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string): Promise<unknown> {
    const socket = await this.connect();
    const res = await http1Request(socket, { method, path, headers: { host: this.hostHeader(), authorization: this.authorization } });
    if (res.status !== 200) throw new RemoteError(res.status, path, res.body.toString('utf8').trim().slice(0, 2000));
    let v: unknown;
    try {
      v = JSON.parse(res.body.toString('utf8'));
    } catch {
      throw new ProtocolError(`${method} ${path.split('?')[0]}: response is not JSON`);
    }
    if (!v || typeof v !== 'object' || !('data' in v)) throw new ProtocolError(`${method} ${path.split('?')[0]}: response has no data`);
    return (v as { data: unknown }).data;
  }

  // ---- maintenance (spec protocol.md §5) ------------------------------------------------

  private snapQ(s: SnapshotRef): Record<string, QueryValue> {
    const q = snapshotQuery(this.repository.store, s);
    delete q.store;
    return q;
  }

  async forgetSnapshot(s: SnapshotRef): Promise<void> {
    await this.request('DELETE', datastorePath(this.repository.store, 'snapshots', this.snapQ(s)));
  }

  async prune(g: { ns?: string; backupType: string; backupId: string }, keep: Partial<Record<'last' | 'hourly' | 'daily' | 'weekly' | 'monthly' | 'yearly', number>>, dryRun: boolean): Promise<Array<{ 'backup-type': string; 'backup-id': string; 'backup-time': number; keep: boolean; protected: boolean }>> {
    const q: Record<string, QueryValue> = { ns: g.ns || undefined, 'backup-type': g.backupType, 'backup-id': g.backupId, 'dry-run': dryRun };
    for (const [k, v] of Object.entries(keep)) if (v !== undefined) q[`keep-${k}`] = v;
    return (await this.request('POST', datastorePath(this.repository.store, 'prune', q))) as Array<{ 'backup-type': string; 'backup-id': string; 'backup-time': number; keep: boolean; protected: boolean }>;
  }

  /** Give a backup group a new owner (an auth id such as `user@pbs!token`; needs Datastore.Modify). */
  async changeOwner(g: { ns?: string; backupType: string; backupId: string }, newOwner: string): Promise<void> {
    await this.request('POST', datastorePath(this.repository.store, 'change-owner', { ns: g.ns || undefined, 'backup-type': g.backupType, 'backup-id': g.backupId, 'new-owner': newOwner }));
  }

  /** Runs garbage collection on the server; returns its task id (UPID). */
  async garbageCollect(): Promise<string> {
    return (await this.request('POST', datastorePath(this.repository.store, 'gc', {}))) as string;
  }

  async status(): Promise<Record<string, unknown>> {
    return (await this.get(datastorePath(this.repository.store, 'status', {}))) as Record<string, unknown>;
  }

  /** Verifies a snapshot, a group or everything (no type/id); returns the task id. */
  async verify(t: { ns?: string; backupType?: string; backupId?: string; backupTime?: number }): Promise<string> {
    const q = { ns: t.ns || undefined, 'backup-type': t.backupType, 'backup-id': t.backupId, 'backup-time': t.backupTime };
    return (await this.request('POST', datastorePath(this.repository.store, 'verify', q))) as string;
  }

  async getProtected(s: SnapshotRef): Promise<boolean> {
    return (await this.get(datastorePath(this.repository.store, 'protected', this.snapQ(s)))) as boolean;
  }

  async setProtected(s: SnapshotRef, on: boolean): Promise<void> {
    await this.request('PUT', datastorePath(this.repository.store, 'protected', { ...this.snapQ(s), protected: on }));
  }

  async getNotes(s: SnapshotRef): Promise<string> {
    return (await this.get(datastorePath(this.repository.store, 'notes', this.snapQ(s)))) as string;
  }

  async setNotes(s: SnapshotRef, notes: string): Promise<void> {
    await this.request('PUT', datastorePath(this.repository.store, 'notes', { ...this.snapQ(s), notes }));
  }

  async createNamespace(name: string, parent?: string): Promise<void> {
    await this.request('POST', datastorePath(this.repository.store, 'namespace', { name, parent: parent || undefined }));
  }

  async deleteNamespace(ns: string, deleteGroups: boolean): Promise<void> {
    await this.request('DELETE', datastorePath(this.repository.store, 'namespace', { ns, 'delete-groups': deleteGroups }));
  }

  async version(): Promise<VersionInfo> {
    return (await this.get(apiPath('/version'))) as VersionInfo;
  }

  async listDatastores(): Promise<DataStoreListItem[]> {
    return (await this.get(datastorePath())) as DataStoreListItem[];
  }

  async listGroups(o: { ns?: string } = {}): Promise<GroupListItem[]> {
    return (await this.get(datastorePath(this.repository.store, 'groups', { ns: o.ns || undefined }))) as GroupListItem[];
  }

  async listSnapshots(o: { ns?: string; backupType?: string; backupId?: string } = {}): Promise<SnapshotListItem[]> {
    const q = { ns: o.ns || undefined, 'backup-type': o.backupType, 'backup-id': o.backupId };
    return (await this.get(datastorePath(this.repository.store, 'snapshots', q))) as SnapshotListItem[];
  }

  async listSnapshotFiles(s: SnapshotRef): Promise<BackupContent[]> {
    const q = snapshotQuery(this.repository.store, s);
    delete q.store;
    return (await this.get(datastorePath(this.repository.store, 'files', q))) as BackupContent[];
  }

  async listNamespaces(o: { parent?: string; maxDepth?: number } = {}): Promise<NamespaceListItem[]> {
    const q = { parent: o.parent || undefined, 'max-depth': o.maxDepth };
    return (await this.get(datastorePath(this.repository.store, 'namespace', q))) as NamespaceListItem[];
  }

  private async upgrade(kind: 'backup' | 'reader', query: Record<string, QueryValue>): Promise<H2Connection> {
    const socket = await this.connect();
    const session = await upgradeToHttp2(socket, upgradePath(kind, query), kind === 'backup' ? BACKUP_PROTOCOL_ID : READER_PROTOCOL_ID, {
      host: this.hostHeader(),
      authorization: this.authorization,
    });
    return new H2Connection(session, `${kind} session ${query['backup-type']}/${query['backup-id']}/${query['backup-time']}`);
  }

  /** Start a backup session (creates the snapshot; refused if the group is being backed up). */
  async startBackup(o: StartBackupOptions): Promise<BackupSession> {
    const query = { ...snapshotQuery(this.repository.store, o), debug: o.debug ?? false, benchmark: o.benchmark ?? false };
    const conn = await this.upgrade('backup', query);
    const snapshot: SnapshotRef = { ns: o.ns, backupType: o.backupType, backupId: o.backupId, backupTime: o.backupTime };
    return new BackupSession(conn, this.repository.store, snapshot, o);
  }

  /** Start a reader session on an existing snapshot. */
  async startReader(s: SnapshotRef): Promise<ReaderSession> {
    const conn = await this.upgrade('reader', { ...snapshotQuery(this.repository.store, s), debug: false });
    return new ReaderSession(conn, this.repository.store, { ns: s.ns, backupType: s.backupType, backupId: s.backupId, backupTime: s.backupTime });
  }
}
