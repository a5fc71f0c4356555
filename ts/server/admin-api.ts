/**
 * The REST listing calls a client needs (spec protocol.md §5; PBS `api2/admin/datastore`,
 * `api2/admin/namespace`, `api2/version`): datastores, groups, snapshots, snapshot files,
 * namespaces. Field names and selection rules follow PBS:
 *
 *  - A token sees a datastore when it has any role on it; listing groups and snapshots needs
 *    Audit (role read/admin) to see everything, or Backup (role backup) to see owned groups.
 *  - Groups and snapshots include unfinished snapshots (as `list_backups` does); their files
 *    have no size. A group's `last-backup`/`files` come from its newest finished snapshot.
 *  - Snapshot files are the manifest entries, then `index.json.blob` (`sign-only` when the
 *    manifest is signed), then files present but not listed (without size).
 */
import { stat } from 'node:fs/promises';
import { prune, KEEP_OPTIONS, type KeepOptions } from '../datastore/prune.js';
import { garbageCollect, readGcStatus, gcStatusToJSON } from '../datastore/gc.js';
import { verify } from '../datastore/verify.js';
import path from 'node:path';
import { BackupDir } from '../datastore/backup-dir.js';
import { BackupGroup } from '../datastore/backup-group.js';
import type { DataStore, SnapshotInfo } from '../datastore/datastore.js';
import { ownerMatches } from '../datastore/names.js';
import { BackupNamespace, MAX_NAMESPACE_DEPTH } from '../datastore/namespace.js';
import { MANIFEST_BLOB_NAME, type BackupManifest } from '../format/manifest.js';
import { API_PREFIX } from '../protocol/constants.js';
import { ADMIN_ENDPOINTS, schema, snapshotParams } from '../protocol/endpoints.js';
import { badRequest, forbidden, notFound } from '../protocol/errors.js';
import { param, parseParams, type ObjectSchema, type Params } from '../protocol/params.js';
import type {
  BackupContent,
  DataStoreListItem,
  GroupListItem,
  NamespaceListItem,
  SnapshotListItem,
  SnapshotVerifyState,
  VersionInfo,
} from '../protocol/types.js';
import { privilegesOf, type Privileges, type TokenInfo } from './tokens.js';

/** PBS API level the server implements (reported by `GET /version`). */
export const API_VERSION: VersionInfo = { version: '3.2', release: '4', repoid: 'pxb' };

export interface AdminContext {
  datastores: ReadonlyMap<string, DataStore>;
  principal: TokenInfo;
}

const DATASTORE_SUB_RE = new RegExp(`^${API_PREFIX}/admin/datastore/([^/]+)/(groups|snapshots|files|namespace|prune|gc|status|verify|protected|notes|change-owner)$`);

/** Handle a REST call; returns the `data` value. */
export async function handleAdminRequest(method: string, pathname: string, query: URLSearchParams, ctx: AdminContext): Promise<unknown> {
  const notFoundError = () => notFound(`Path '${pathname}' not found.`);
  if (method !== 'GET' && !DATASTORE_SUB_RE.test(pathname)) throw notFoundError();
  if (pathname === `${API_PREFIX}/version`) {
    parseParams(ADMIN_ENDPOINTS.version.params, query, 'form');
    return API_VERSION;
  }
  if (pathname === `${API_PREFIX}/admin/datastore`) {
    parseParams(ADMIN_ENDPOINTS.datastores.params, query, 'form');
    return listDatastores(ctx);
  }
  const m = DATASTORE_SUB_RE.exec(pathname);
  if (!m) throw notFoundError();
  let store: string;
  try {
    store = decodeURIComponent(m[1]);
  } catch {
    throw badRequest('invalid datastore name in path');
  }
  const privs = privilegesOf(Object.hasOwn(ctx.principal.datastores, store) ? ctx.principal.datastores[store] : undefined);
  if (!privs.backup && !privs.read && !privs.audit) throw forbidden('permission check failed');
  const ds = ctx.datastores.get(store);
  if (!ds) throw badRequest(`datastore '${store}' does not exist`);
  const call = { ds, privs, tokenId: ctx.principal.tokenId };
  if (method !== 'GET' || ['prune', 'gc', 'status', 'verify', 'protected', 'notes'].includes(m[2])) {
    const handled = await handleMaintenance(method, m[2], query, call, store);
    if (handled === NOT_HANDLED) throw notFoundError();
    return handled;
  }
  switch (m[2]) {
    case 'groups':
      return listGroups(call, parseParams(ADMIN_ENDPOINTS.groups.params, query, 'form'));
    case 'snapshots':
      return listSnapshots(call, parseParams(ADMIN_ENDPOINTS.snapshots.params, query, 'form'));
    case 'files':
      return listSnapshotFiles(call, parseParams(ADMIN_ENDPOINTS.files.params, query, 'form'));
    default:
      return listNamespaces(call, parseParams(ADMIN_ENDPOINTS.namespaces.params, query, 'form'));
  }
}

// ---- maintenance (spec protocol.md §5): forget, prune, GC, verify, status, notes, protected,
// namespaces. Parameters come in the query string (or a form body folded into it by the
// caller). Permissions as PBS: pruning/forgetting/notes/protection need Modify (role admin)
// or Backup on an owned group; GC, verify and namespace changes need Modify.

const NOT_HANDLED = Symbol('not handled');

const maintenanceSchemas = {
  snapshot: { ns: schema.ns, ...snapshotParams },
  group: { ns: schema.ns, 'backup-type': schema.backupType, 'backup-id': schema.backupId },
  prune: {
    ns: schema.ns,
    'backup-type': schema.backupType,
    'backup-id': schema.backupId,
    'dry-run': { type: 'boolean', optional: true },
    'keep-last': { type: 'integer', optional: true, min: 0 },
    'keep-hourly': { type: 'integer', optional: true, min: 0 },
    'keep-daily': { type: 'integer', optional: true, min: 0 },
    'keep-weekly': { type: 'integer', optional: true, min: 0 },
    'keep-monthly': { type: 'integer', optional: true, min: 0 },
    'keep-yearly': { type: 'integer', optional: true, min: 0 },
  },
  verify: {
    ns: schema.ns,
    'backup-type': { ...schema.backupType, optional: true },
    'backup-id': { ...schema.backupId, optional: true },
    'backup-time': { type: 'integer', optional: true, min: 1 },
  },
  protectedPut: { ns: schema.ns, ...snapshotParams, protected: { type: 'boolean' } },
  notesPut: { ns: schema.ns, ...snapshotParams, notes: { type: 'string' } },
  changeOwner: { ns: schema.ns, 'backup-type': schema.backupType, 'backup-id': schema.backupId, 'new-owner': { type: 'string' } },
  nsCreate: { name: { type: 'string' }, parent: schema.ns },
  nsDelete: { ns: { type: 'string' }, 'delete-groups': { type: 'boolean', optional: true } },
} satisfies Record<string, ObjectSchema>;

async function requireModifyOrOwner(call: Call, group: BackupGroup): Promise<void> {
  if (call.privs.read && call.privs.backup && call.privs.audit) return; // admin (Modify)
  if (!call.privs.backup) throw forbidden('permission check failed');
  const owner = await call.ds.getOwner(group);
  if (owner === null || !ownerMatches(owner, call.tokenId)) throw forbidden(`backup owner check failed (${call.tokenId} != ${owner})`);
}

function requireModify(call: Call): void {
  if (!(call.privs.read && call.privs.backup && call.privs.audit)) throw forbidden('permission check failed (needs Datastore.Modify)');
}

/**
 * The snapshot a maintenance call names, after its permission check (owner, or Modify; with
 * `audit`, an audit token may read too): checked first, so a 404 tells nobody else which of
 * another owner's snapshots exist.
 */
async function snapshotOf(call: Call, p: Params, access: 'owner' | 'audit'): Promise<BackupDir> {
  const ns = await namespaceOf(call, param.optStr(p, 'ns'));
  const dir = new BackupDir(new BackupGroup(param.str(p, 'backup-type'), param.str(p, 'backup-id'), ns), param.int(p, 'backup-time'));
  if (!(access === 'audit' && call.privs.audit)) await requireModifyOrOwner(call, dir.group);
  const info = (await call.ds.listSnapshots(dir.group, { includeUnfinished: true })).find((x) => x.dir.equals(dir));
  if (!info) throw notFound(`snapshot ${dir} does not exist`);
  return dir;
}

async function handleMaintenance(method: string, what: string, query: URLSearchParams, call: Call, store: string): Promise<unknown> {
  const parse = (sch: ObjectSchema) => parseParams(sch, query, 'form');
  const key = `${method} ${what}`;
  switch (key) {
    case 'DELETE snapshots': {
      const dir = await snapshotOf(call, parse(maintenanceSchemas.snapshot), 'owner');
      await call.ds.removeSnapshot(dir);
      return null;
    }
    case 'POST prune': {
      const p = parse(maintenanceSchemas.prune);
      const ns = await namespaceOf(call, param.optStr(p, 'ns'));
      const group = new BackupGroup(param.str(p, 'backup-type'), param.str(p, 'backup-id'), ns);
      await requireModifyOrOwner(call, group);
      const keep: KeepOptions = {};
      for (const o of KEEP_OPTIONS) {
        const v = param.optInt(p, `keep-${o}`);
        if (v !== undefined) keep[o] = v;
      }
      const r = await prune(call.ds, group, keep, { dryRun: param.bool(p, 'dry-run', false) });
      // A removal that failed (a backup of the group running, the snapshot being read) fails
      // the call, as upstream's group lock does, instead of reporting it as removed.
      const failed = r.entries.filter((e) => e.error);
      if (failed.length) throw badRequest(`prune of ${group}: ${failed.length} snapshot(s) could not be removed: ${failed[0].error}`);
      return r.entries.map((e) => ({ 'backup-type': group.type, 'backup-id': group.id, 'backup-time': e.dir.time, keep: e.keep, protected: e.protected }));
    }
    case 'POST change-owner': {
      requireModify(call);
      const p = parse(maintenanceSchemas.changeOwner);
      const ns = await namespaceOf(call, param.optStr(p, 'ns'));
      const group = new BackupGroup(param.str(p, 'backup-type'), param.str(p, 'backup-id'), ns);
      if (!(await call.ds.groupExists(group))) throw notFound(`backup group ${group} does not exist`);
      try {
        await call.ds.setOwner(group, param.str(p, 'new-owner'));
      } catch (e) {
        throw badRequest(`change owner of ${group}: ${(e as Error).message}`);
      }
      return null;
    }
    case 'POST gc': {
      requireModify(call);
      parse({});
      return (await garbageCollect(call.ds, { authId: call.tokenId, storeName: store })).status.upid;
    }
    case 'GET status': {
      parse({});
      const gc = await readGcStatus(call.ds).catch(() => null);
      return {
        ...(await call.ds.usage()),
        'gc-status': gc ? gcStatusToJSON(gc) : undefined,
        'backend-type': 'filesystem',
      };
    }
    case 'POST verify': {
      requireModify(call);
      const p = parse(maintenanceSchemas.verify);
      const ns = await namespaceOf(call, param.optStr(p, 'ns'));
      const type = param.optStr(p, 'backup-type');
      const id = param.optStr(p, 'backup-id');
      const time = param.optInt(p, 'backup-time');
      const target =
        type && id && time !== undefined
          ? { snapshot: new BackupDir(new BackupGroup(type, id, ns), time) }
          : type && id
            ? { group: new BackupGroup(type, id, ns) }
            : { all: true as const, ns };
      const r = await verify(call.ds, target, { authId: call.tokenId, storeName: store });
      return r.upid;
    }
    case 'GET protected':
    case 'GET notes': {
      const dir = await snapshotOf(call, parse(maintenanceSchemas.snapshot), 'audit');
      return what === 'protected' ? call.ds.isProtected(dir) : ((await call.ds.getSnapshotNotes(dir)) ?? '');
    }
    case 'PUT protected': {
      const p = parse(maintenanceSchemas.protectedPut);
      const dir = await snapshotOf(call, p, 'owner');
      await call.ds.setProtected(dir, param.bool(p, 'protected'));
      return null;
    }
    case 'PUT notes': {
      const p = parse(maintenanceSchemas.notesPut);
      const dir = await snapshotOf(call, p, 'owner');
      await call.ds.setSnapshotNotes(dir, param.str(p, 'notes'));
      return null;
    }
    case 'POST namespace': {
      requireModify(call);
      const p = parse(maintenanceSchemas.nsCreate);
      const parent = await namespaceOf(call, param.optStr(p, 'parent'));
      const ns = parent.child(param.str(p, 'name'));
      if (!(await call.ds.createNamespace(ns))) throw badRequest(`namespace '${ns.name}' already exists`);
      return null;
    }
    case 'DELETE namespace': {
      requireModify(call);
      const p = parse(maintenanceSchemas.nsDelete);
      const ns = BackupNamespace.parse(param.str(p, 'ns'));
      if (ns.isRoot) throw badRequest('the root namespace cannot be deleted');
      await namespaceOf(call, ns.name);
      await call.ds.removeNamespace(ns, { deleteGroups: param.bool(p, 'delete-groups', false) });
      return null;
    }
    default:
      void store;
      return NOT_HANDLED;
  }
}

interface Call {
  ds: DataStore;
  privs: Privileges;
  tokenId: string;
}

function listDatastores(ctx: AdminContext): DataStoreListItem[] {
  return [...ctx.datastores.keys()]
    .filter((store) => Object.hasOwn(ctx.principal.datastores, store))
    .sort()
    .map((store) => ({ store, comment: null }));
}

async function namespaceOf(call: Call, name: string | undefined): Promise<BackupNamespace> {
  const ns = BackupNamespace.parse(name ?? '');
  if (!(await call.ds.namespaceExists(ns))) throw notFound(`namespace '${ns.name}' not found`);
  return ns;
}

/** Owner of a group if this call may see it, else null. */
async function visibleOwner(call: Call, group: BackupGroup): Promise<string | null> {
  let owner: string | null;
  try {
    owner = await call.ds.getOwner(group);
  } catch {
    return null; // unreadable owner file: PBS skips the group
  }
  if (owner === null) return null;
  if (!call.privs.audit && !ownerMatches(owner, call.tokenId)) return null;
  return owner;
}

function requireListing(call: Call): void {
  if (!call.privs.audit && !call.privs.backup) throw forbidden('permission check failed');
}

const firstLine = (s: string | null | undefined): string | undefined => (s ? s.split('\n')[0] : undefined);

async function listGroups(call: Call, p: Params): Promise<GroupListItem[]> {
  requireListing(call);
  const ns = await namespaceOf(call, param.optStr(p, 'ns'));
  const out: GroupListItem[] = [];
  for (const group of await call.ds.listGroups(ns)) {
    const owner = await visibleOwner(call, group);
    if (owner === null) continue;
    const snapshots = await call.ds.listSnapshots(group, { includeUnfinished: true });
    if (!snapshots.length) continue;
    const finished = snapshots.filter((s) => s.finished);
    const last = (finished.length ? finished : snapshots)[(finished.length ? finished : snapshots).length - 1];
    const item: GroupListItem = {
      'backup-type': group.type,
      'backup-id': group.id,
      'last-backup': last.dir.time,
      'backup-count': snapshots.length,
      files: last.files,
      owner,
    };
    const comment = firstLine(await call.ds.getGroupNotes(group).catch(() => null));
    if (comment !== undefined) item.comment = comment;
    out.push(item);
  }
  return out;
}

async function snapshotFiles(call: Call, info: SnapshotInfo): Promise<{ files: BackupContent[]; manifest: BackupManifest | null }> {
  if (!info.finished) return { files: info.files.map((filename) => ({ filename })), manifest: null };
  const manifest = await call.ds.loadManifest(info.dir);
  const files: BackupContent[] = manifest.files.map((f) => ({ filename: f.filename, 'crypt-mode': f.cryptMode, size: f.size }));
  const manifestSize = (await stat(path.join(call.ds.snapshotPath(info.dir), MANIFEST_BLOB_NAME))).size;
  files.push({ filename: MANIFEST_BLOB_NAME, 'crypt-mode': manifest.signature ? 'sign-only' : 'none', size: manifestSize });
  const listed = new Set(files.map((f) => f.filename));
  for (const f of info.files) if (!listed.has(f)) files.push({ filename: f });
  return { files, manifest };
}

async function snapshotItem(call: Call, group: BackupGroup, owner: string, info: SnapshotInfo): Promise<SnapshotListItem> {
  const item: SnapshotListItem = {
    'backup-type': group.type,
    'backup-id': group.id,
    'backup-time': info.dir.time,
    files: [],
    owner,
    protected: info.protected,
  };
  try {
    const { files, manifest } = await snapshotFiles(call, info);
    item.files = files;
    if (manifest) {
      item.size = files.reduce((a, f) => a + (f.size ?? 0), 0);
      const notes = manifest.unprotected['notes'];
      const comment = firstLine(typeof notes === 'string' ? notes : null);
      if (comment !== undefined) item.comment = comment;
      const v = manifest.unprotected['verify_state'] as Partial<SnapshotVerifyState> | undefined;
      if (v && (v.state === 'ok' || v.state === 'failed') && typeof v.upid === 'string') item.verification = { state: v.state, upid: v.upid };
      const fp = manifest.unprotected['key-fingerprint'];
      if (typeof fp === 'string') item.fingerprint = fp;
    }
  } catch {
    item.files = info.files.map((filename) => ({ filename })); // unreadable manifest: names only, as PBS
  }
  return item;
}

async function listSnapshots(call: Call, p: Params): Promise<SnapshotListItem[]> {
  requireListing(call);
  const ns = await namespaceOf(call, param.optStr(p, 'ns'));
  const type = param.optStr(p, 'backup-type');
  const id = param.optStr(p, 'backup-id');
  const groups = (await call.ds.listGroups(ns)).filter((g) => (type === undefined || g.type === type) && (id === undefined || g.id === id));
  const out: SnapshotListItem[] = [];
  for (const group of groups) {
    const owner = await visibleOwner(call, group);
    if (owner === null) continue;
    for (const info of await call.ds.listSnapshots(group, { includeUnfinished: true })) {
      out.push(await snapshotItem(call, group, owner, info));
    }
  }
  return out;
}

async function listSnapshotFiles(call: Call, p: Params): Promise<BackupContent[]> {
  if (!call.privs.audit && !call.privs.read && !call.privs.backup) throw forbidden('permission check failed');
  const ns = await namespaceOf(call, param.optStr(p, 'ns'));
  const dir = new BackupDir(new BackupGroup(param.str(p, 'backup-type'), param.str(p, 'backup-id'), ns), param.int(p, 'backup-time'));
  if (!call.privs.audit && !call.privs.read) {
    const owner = await call.ds.getOwner(dir.group);
    if (owner === null || !ownerMatches(owner, call.tokenId)) throw forbidden(`backup owner check failed (${call.tokenId} != ${owner})`);
  }
  const info = (await call.ds.listSnapshots(dir.group, { includeUnfinished: true })).find((s) => s.dir.equals(dir));
  if (!info) throw notFound(`snapshot ${dir} does not exist`);
  if (!info.finished) throw badRequest(`snapshot ${dir} is not finished (no ${MANIFEST_BLOB_NAME})`);
  return (await snapshotFiles(call, info)).files;
}

async function listNamespaces(call: Call, p: Params): Promise<NamespaceListItem[]> {
  const parent = await namespaceOf(call, param.optStr(p, 'parent'));
  const depth = param.optInt(p, 'max-depth') ?? MAX_NAMESPACE_DEPTH;
  return (await call.ds.listNamespaces(parent, depth)).map((ns) => ({ ns: ns.name }));
}
