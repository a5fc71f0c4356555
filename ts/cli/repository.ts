/**
 * Repository resolution for the CLI (PBS's conventions): `--repository` or `$PBS_REPOSITORY`.
 * A path (absolute, `./…`, `~/…`) names a local datastore; `[[user@realm!token@]host[:port]:]store`
 * names a server, authenticated with the token secret in `$PBS_PASSWORD` and pinned to
 * `--fingerprint` / `$PBS_FINGERPRINT`. Without either the default local datastore is used
 * and created on first use.
 */
import { DataStore } from '../datastore/datastore.js';
import { defaultDatastorePath } from '../datastore/location.js';
import type { PbsClient } from '../client/remote/client.js';
import { UsageError } from './output.js';

export type Repository = { kind: 'local'; ds: DataStore; path: string } | { kind: 'remote'; client: PbsClient; spec: string };

export function isLocalPath(r: string): boolean {
  return r.startsWith('/') || r.startsWith('./') || r.startsWith('../') || r.startsWith('~') || r === '.';
}

export function repositoryPath(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  const r = flag ?? env.PBS_REPOSITORY;
  if (!r) return defaultDatastorePath(env);
  if (isLocalPath(r)) return r.startsWith('~') ? r.replace(/^~/, env.HOME ?? '~') : r;
  throw new UsageError(`${r} is a remote repository; this command needs a local datastore path`);
}

export async function openRepository(flag: string | undefined, env: NodeJS.ProcessEnv, create: boolean): Promise<DataStore> {
  // PBS's default sync level: chunks are not fsynced one by one, the file system is synced
  // once when a backup finishes, before its manifest is published; writes are atomic.
  return DataStore.open(repositoryPath(flag, env), { create, syncLevel: 'filesystem' });
}

/** Local datastore or remote server, as the repository string says. */
export async function openAnyRepository(
  o: { repository?: string; fingerprint?: string },
  env: NodeJS.ProcessEnv,
  create: boolean,
): Promise<Repository> {
  const r = o.repository ?? env.PBS_REPOSITORY;
  if (!r || isLocalPath(r)) {
    const p = repositoryPath(r, env);
    return { kind: 'local', ds: await openRepository(p, env, create), path: p };
  }
  // The remote client (HTTP/2, TLS) is loaded only for remote repositories.
  const [{ PbsClient }, { parseRepository }] = await Promise.all([import('../client/remote/client.js'), import('../client/remote/repository.js')]);
  let repo;
  try {
    repo = parseRepository(r);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const secret = env.PBS_PASSWORD;
  if (!secret) throw new UsageError('remote repository: set PBS_PASSWORD to the API token secret');
  const fingerprint = o.fingerprint ?? env.PBS_FINGERPRINT;
  return { kind: 'remote', client: new PbsClient({ repository: repo, secret, fingerprint, ca: await extraCaCertificates(env) }), spec: r };
}

/**
 * The CA certificates a TLS connection trusts when the launcher (bin/pxb.js) took
 * `$NODE_EXTRA_CA_CERTS` over as `$PXB_EXTRA_CA_CERTS`, so that node does not parse the bundle
 * at every start: node's roots plus that file, as node itself would have it. Undefined: node's
 * default (it read `$NODE_EXTRA_CA_CERTS` itself, or there is none). A file that cannot be read
 * is skipped with node's warning.
 */
export async function extraCaCertificates(env: NodeJS.ProcessEnv): Promise<string[] | undefined> {
  const file = env.PXB_EXTRA_CA_CERTS;
  if (!file) return undefined;
  const [{ readFile }, tls] = await Promise.all([import('node:fs/promises'), import('node:tls')]);
  try {
    return [...tls.rootCertificates, await readFile(file, 'latin1')];
  } catch (e) {
    process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${(e as Error).message}`);
    return undefined;
  }
}
