/**
 * Default datastore location. Library code never reads `process.env`: the CLI passes the
 * environment in. Order: `$PXB_DATASTORE`, `$XDG_DATA_HOME/pxb/datastore` (only if absolute,
 * as the XDG spec requires), `$HOME/.local/share/pxb/datastore` (home from `HOME`, else the
 * account database via `os.userInfo()`, which does not consult the environment).
 */
import { userInfo } from 'node:os';
import path from 'node:path';

export type Env = Readonly<Record<string, string | undefined>>;

export function defaultDatastorePath(env: Env): string {
  if (env.PXB_DATASTORE) return path.resolve(env.PXB_DATASTORE);
  const xdg = env.XDG_DATA_HOME;
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'pxb', 'datastore');
  const home = env.HOME || userInfo().homedir;
  return path.join(home, '.local', 'share', 'pxb', 'datastore');
}

/**
 * Client-side cache directory (metadata caches of backups): `$PXB_CACHE_DIR`,
 * `$XDG_CACHE_HOME/pxb` (only if absolute), `$HOME/.cache/pxb`.
 */
export function defaultCacheDir(env: Env): string {
  if (env.PXB_CACHE_DIR) return path.resolve(env.PXB_CACHE_DIR);
  const xdg = env.XDG_CACHE_HOME;
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'pxb');
  const home = env.HOME || userInfo().homedir;
  return path.join(home, '.cache', 'pxb');
}
