/**
 * Repository resolution for the CLI: `--repository PATH` (or `$PBS_REPOSITORY` when it is a
 * path) names a local datastore; without one the default location is used and created on
 * first use.
 */
import { DataStore } from '../datastore/datastore.js';
import { defaultDatastorePath } from '../datastore/location.js';
import { UsageError } from './output.js';

export function repositoryPath(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  const r = flag ?? env.PBS_REPOSITORY;
  if (!r) return defaultDatastorePath(env);
  if (r.startsWith('/') || r.startsWith('.') || r.startsWith('~')) {
    return r.startsWith('~') ? r.replace(/^~/, env.HOME ?? '~') : r;
  }
  throw new UsageError(`remote repositories (${r}) are not supported yet; give a local datastore path (absolute or ./relative)`);
}

export async function openRepository(flag: string | undefined, env: NodeJS.ProcessEnv, create: boolean): Promise<DataStore> {
  const p = repositoryPath(flag, env);
  // Chunks are not fsynced one by one (PBS's default sync level syncs the file system at the
  // end of a backup instead); indexes and the manifest are written atomically.
  return DataStore.open(p, { create, fsync: false });
}
