/**
 * Command-line level configuration of `pxb serve`: the default config directory, listen
 * addresses and `NAME=PATH` datastore specs. Library code never reads `process.env`; the CLI
 * passes the environment in.
 */
import { userInfo } from 'node:os';
import path from 'node:path';
import { isIPv4, isIPv6 } from 'node:net';
import { DEFAULT_PORT } from '../protocol/constants.js';
import { validateStoreName } from '../protocol/endpoints.js';

export type Env = Readonly<Record<string, string | undefined>>;

/** `$PXB_CONFIG_DIR`, else `$XDG_CONFIG_HOME/pxb/server` (absolute only), else `~/.config/pxb/server`. */
export function defaultConfigDir(env: Env): string {
  if (env.PXB_CONFIG_DIR) return path.resolve(env.PXB_CONFIG_DIR);
  const xdg = env.XDG_CONFIG_HOME;
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'pxb', 'server');
  return path.join(env.HOME || userInfo().homedir, '.config', 'pxb', 'server');
}

/** `host:port`, `[v6]:port`, `host` or `port`. */
export function parseListen(s: string): { host: string; port: number } {
  let host = '127.0.0.1';
  let portText: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(.*))?$/.exec(s);
  if (bracket) {
    host = bracket[1];
    portText = bracket[2];
  } else if (/^[0-9]+$/.test(s)) {
    portText = s;
  } else if (isIPv6(s)) {
    host = s;
  } else {
    const c = s.lastIndexOf(':');
    host = c < 0 ? s : s.slice(0, c);
    portText = c < 0 ? undefined : s.slice(c + 1);
  }
  if (!host || (!isIPv4(host) && !isIPv6(host) && !/^[A-Za-z0-9.-]+$/.test(host))) throw new Error(`invalid listen address ${JSON.stringify(s)}`);
  const port = portText === undefined ? DEFAULT_PORT : Number(portText);
  if (portText !== undefined && (!/^[0-9]{1,5}$/.test(portText) || port > 65535)) throw new Error(`invalid port in listen address ${JSON.stringify(s)}`);
  return { host, port };
}

/** `NAME=PATH` → [name, absolute path]. */
export function parseDatastoreSpec(s: string): [string, string] {
  const eq = s.indexOf('=');
  if (eq < 0) throw new Error(`invalid datastore ${JSON.stringify(s)} (expected NAME=PATH)`);
  const name = s.slice(0, eq);
  const dir = s.slice(eq + 1);
  validateStoreName(name);
  if (!dir) throw new Error(`datastore ${name}: empty path`);
  return [name, path.resolve(dir)];
}
