/**
 * Request paths of the PBS API (spec protocol.md §3.1, §4, §5). Every dynamic component is
 * percent-encoded, every query string form-urlencoded.
 */
import { API_PREFIX } from './constants.js';
import { encodeQuery, type QueryValue } from './params.js';

export type SessionKind = 'backup' | 'reader';

function withQuery(path: string, query?: Readonly<Record<string, QueryValue>>): string {
  const q = query ? encodeQuery(query) : '';
  return q ? `${path}?${q}` : path;
}

/** `/api2/json/<rel>[?query]`; `rel` starts with `/`. */
export function apiPath(rel: string, query?: Readonly<Record<string, QueryValue>>): string {
  return withQuery(`${API_PREFIX}${rel}`, query);
}

/** `GET /api2/json/backup?…` or `/api2/json/reader?…`, the protocol upgrade request. */
export function upgradePath(kind: SessionKind, query: Readonly<Record<string, QueryValue>>): string {
  return apiPath(`/${kind}`, query);
}

/** `/api2/json/admin/datastore[/<store>/<sub>]`. */
export function datastorePath(store?: string, sub?: string, query?: Readonly<Record<string, QueryValue>>): string {
  const rel = store === undefined ? '/admin/datastore' : `/admin/datastore/${encodeURIComponent(store)}${sub ? `/${sub}` : ''}`;
  return apiPath(rel, query);
}

/** Path of an endpoint inside an upgraded session, e.g. `/dynamic_chunk?wid=1&…`. */
export function sessionPath(endpoint: string, query?: Readonly<Record<string, QueryValue>>): string {
  return withQuery(endpoint, query);
}
