/**
 * Remote repository specs as `proxmox-backup-client` writes them:
 *
 *   [[auth-id@]host[:port]:]datastore
 *
 * `auth-id` is `user@realm` or `user@realm!token` (default `root@pam`), `host` a DNS name,
 * IPv4 address or bracketed IPv6 address (default `localhost`), `port` 1..65535 (default
 * 8007), `datastore` a SAFE_ID of 3..32 characters.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { validateAuthid } from '../../datastore/names.js';
import { DEFAULT_AUTH_ID, DEFAULT_HOST, DEFAULT_PORT } from '../../protocol/constants.js';
import { validateStoreName } from '../../protocol/endpoints.js';

export interface RemoteRepository {
  authId: string;
  /** Host name or IP address (IPv6 without brackets). */
  host: string;
  port: number;
  store: string;
}

const DNS_NAME_RE = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

function invalid(spec: string, why: string): Error {
  return new Error(`invalid repository ${JSON.stringify(spec)}: ${why} (expected [[user@realm!token@]host[:port]:]datastore)`);
}

export function parseRepository(spec: string): RemoteRepository {
  const colon = spec.lastIndexOf(':');
  const store = spec.slice(colon + 1);
  try {
    validateStoreName(store);
  } catch (e) {
    throw invalid(spec, (e as Error).message);
  }
  if (colon < 0) return { authId: DEFAULT_AUTH_ID, host: DEFAULT_HOST, port: DEFAULT_PORT, store };
  let rest = spec.slice(0, colon);
  let authId = DEFAULT_AUTH_ID;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    authId = rest.slice(0, at);
    rest = rest.slice(at + 1);
    try {
      validateAuthid(authId);
    } catch {
      throw invalid(spec, `bad auth id ${JSON.stringify(authId)}`);
    }
  }
  let host: string;
  let portText: string | undefined;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) throw invalid(spec, 'unterminated [IPv6 address]');
    host = rest.slice(1, close);
    if (!isIPv6(host)) throw invalid(spec, `bad IPv6 address ${JSON.stringify(host)}`);
    const after = rest.slice(close + 1);
    if (after !== '' && !after.startsWith(':')) throw invalid(spec, 'junk after the IPv6 address');
    portText = after === '' ? undefined : after.slice(1);
  } else {
    const c = rest.indexOf(':');
    host = c < 0 ? rest : rest.slice(0, c);
    portText = c < 0 ? undefined : rest.slice(c + 1);
    if (!isIPv4(host) && !DNS_NAME_RE.test(host)) throw invalid(spec, `bad host ${JSON.stringify(host)}`);
  }
  let port = DEFAULT_PORT;
  if (portText !== undefined) {
    port = Number(portText);
    if (!/^[0-9]{1,5}$/.test(portText) || port < 1 || port > 65535) throw invalid(spec, `bad port ${JSON.stringify(portText)}`);
  }
  return { authId, host, port, store };
}

export function formatRepository(r: RemoteRepository): string {
  const host = isIPv6(r.host) ? `[${r.host}]` : r.host;
  return `${r.authId}@${host}${r.port === DEFAULT_PORT ? '' : `:${r.port}`}:${r.store}`;
}
