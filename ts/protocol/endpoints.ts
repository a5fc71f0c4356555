/**
 * The endpoint tables of the PBS protocols (spec protocol.md §3.2, §4, §5), as data: method,
 * path, how parameters and body travel, and the parameter schema. The server dispatches and
 * validates with these tables; tests compare them with the spec.
 *
 *  - `json`: parameters from the query string, or from the body (`application/json` body only,
 *    form bodies merged with the query); the response is `{"data": …}`.
 *  - `upload`: parameters from the query string only; the body is raw bytes.
 *  - `download`: parameters from the query string only; the response is raw bytes.
 */
import { MAX_BACKUP_TIME, parseBackupType, validateBackupId, validateSafeId } from '../datastore/names.js';
import { BackupNamespace, MAX_NAMESPACE_DEPTH } from '../datastore/namespace.js';
import {
  MAX_CHUNK_SIZE,
  MAX_ENCODED_SIZE,
  MAX_WRITER_ID,
  MIN_BLOB_ENCODED_SIZE,
  MIN_CHUNK_ENCODED_SIZE,
} from './constants.js';
import type { ObjectSchema, ParamSchema } from './params.js';

export const DIGEST_RE = /^[0-9a-f]{64}$/;
const CSUM_RE = /^[0-9a-fA-F]{64}$/;

/** Datastore names: SAFE_ID of 3..32 characters. */
export function validateStoreName(s: string): void {
  validateSafeId(s, 'datastore name');
  if (s.length < 3 || s.length > 32) throw new Error(`invalid datastore name ${JSON.stringify(s)} (3 to 32 characters)`);
}

export function validateDigestHex(s: string): void {
  if (!DIGEST_RE.test(s)) throw new Error(`invalid digest ${JSON.stringify(s.slice(0, 80))} (expected 64 lowercase hex digits)`);
}

const checkNamespace = (s: string): void => {
  BackupNamespace.parse(s);
};

export const schema = {
  store: { type: 'string', check: validateStoreName },
  ns: { type: 'string', optional: true, check: checkNamespace },
  backupType: { type: 'string', check: (s: string) => void parseBackupType(s) },
  backupId: { type: 'string', check: validateBackupId },
  backupTime: { type: 'integer', min: 1, max: MAX_BACKUP_TIME },
  archiveName: { type: 'string', check: (s: string) => validateSafeId(s, 'archive name') },
  digest: { type: 'string', check: validateDigestHex },
  csum: {
    type: 'string',
    check: (s: string) => {
      if (!CSUM_RE.test(s)) throw new Error('expected 64 hex digits');
    },
  },
  wid: { type: 'integer', min: 1, max: MAX_WRITER_ID },
  flag: { type: 'boolean', optional: true },
} satisfies Record<string, ParamSchema>;

export const snapshotParams = {
  'backup-type': schema.backupType,
  'backup-id': schema.backupId,
  'backup-time': schema.backupTime,
} satisfies ObjectSchema;

export type EndpointKind = 'json' | 'upload' | 'download';
export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface Endpoint {
  method: HttpMethod;
  path: string;
  kind: EndpointKind;
  params: ObjectSchema;
}

/** `GET /api2/json/backup` upgrade parameters. */
export const BACKUP_UPGRADE_PARAMS: ObjectSchema = {
  store: schema.store,
  ns: schema.ns,
  ...snapshotParams,
  debug: schema.flag,
  benchmark: schema.flag,
  'no-cache': schema.flag,
};

/** `GET /api2/json/reader` upgrade parameters. */
export const READER_UPGRADE_PARAMS: ObjectSchema = {
  store: schema.store,
  ns: schema.ns,
  ...snapshotParams,
  debug: schema.flag,
};

const chunkUpload: ObjectSchema = {
  wid: schema.wid,
  digest: schema.digest,
  size: { type: 'integer', min: 1, max: MAX_CHUNK_SIZE },
  'encoded-size': { type: 'integer', min: MIN_CHUNK_ENCODED_SIZE, max: MAX_ENCODED_SIZE },
};

const append: ObjectSchema = {
  wid: schema.wid,
  'digest-list': { type: 'string-array', check: validateDigestHex },
  'offset-list': { type: 'integer-array', min: 0 },
};

/** Endpoints of an upgraded backup (writer) session, spec §3.2. */
export const BACKUP_ENDPOINTS: readonly Endpoint[] = [
  { method: 'GET', path: '/previous_backup_time', kind: 'json', params: {} },
  { method: 'GET', path: '/previous', kind: 'download', params: { 'archive-name': schema.archiveName } },
  {
    method: 'POST',
    path: '/blob',
    kind: 'upload',
    params: { 'file-name': schema.archiveName, 'encoded-size': { type: 'integer', min: MIN_BLOB_ENCODED_SIZE, max: MAX_ENCODED_SIZE } },
  },
  { method: 'POST', path: '/dynamic_index', kind: 'json', params: { 'archive-name': schema.archiveName } },
  { method: 'POST', path: '/dynamic_chunk', kind: 'upload', params: chunkUpload },
  { method: 'PUT', path: '/dynamic_index', kind: 'json', params: append },
  {
    method: 'POST',
    path: '/dynamic_close',
    kind: 'json',
    params: { wid: schema.wid, 'chunk-count': { type: 'integer', min: 1 }, size: { type: 'integer', min: 1 }, csum: schema.csum },
  },
  {
    method: 'POST',
    path: '/fixed_index',
    kind: 'json',
    params: { 'archive-name': schema.archiveName, size: { type: 'integer', min: 1 }, 'reuse-csum': { ...schema.csum, optional: true } },
  },
  { method: 'POST', path: '/fixed_chunk', kind: 'upload', params: chunkUpload },
  { method: 'PUT', path: '/fixed_index', kind: 'json', params: append },
  {
    method: 'POST',
    path: '/fixed_close',
    kind: 'json',
    params: { wid: schema.wid, 'chunk-count': { type: 'integer', min: 0 }, size: { type: 'integer', min: 0 }, csum: schema.csum },
  },
  { method: 'POST', path: '/finish', kind: 'json', params: {} },
  { method: 'POST', path: '/speedtest', kind: 'upload', params: {} },
];

/** Endpoints of an upgraded reader session, spec §4. */
export const READER_ENDPOINTS: readonly Endpoint[] = [
  { method: 'GET', path: '/download', kind: 'download', params: { 'file-name': schema.archiveName } },
  { method: 'GET', path: '/chunk', kind: 'download', params: { digest: schema.digest } },
  { method: 'GET', path: '/speedtest', kind: 'download', params: {} },
];

/** Listing calls of the REST API (spec §5), paths relative to `/api2/json`. */
export const ADMIN_ENDPOINTS = {
  version: { method: 'GET', path: '/version', kind: 'json', params: {} },
  datastores: { method: 'GET', path: '/admin/datastore', kind: 'json', params: {} },
  groups: { method: 'GET', path: '/admin/datastore/{store}/groups', kind: 'json', params: { ns: schema.ns } },
  snapshots: {
    method: 'GET',
    path: '/admin/datastore/{store}/snapshots',
    kind: 'json',
    params: { ns: schema.ns, 'backup-type': { ...schema.backupType, optional: true }, 'backup-id': { ...schema.backupId, optional: true } },
  },
  files: { method: 'GET', path: '/admin/datastore/{store}/files', kind: 'json', params: { ns: schema.ns, ...snapshotParams } },
  namespaces: {
    method: 'GET',
    path: '/admin/datastore/{store}/namespace',
    kind: 'json',
    params: { parent: schema.ns, 'max-depth': { type: 'integer', optional: true, min: 0, max: MAX_NAMESPACE_DEPTH } },
  },
} as const satisfies Record<string, Endpoint>;

export function findEndpoint(table: readonly Endpoint[], method: string, path: string): Endpoint | undefined {
  return table.find((e) => e.method === method && e.path === path);
}
