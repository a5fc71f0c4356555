/**
 * `createBackup`: one snapshot of one or more directory archives into a datastore.
 * Library-first: the CLI renders the events and the result.
 *
 * Transaction: the snapshot directory is created by `DataStore.beginBackup` under the group's
 * writer lock; chunks are inserted as they are produced (idempotent, atomic); index files are
 * written at the end of each archive; the manifest is written last. Any failure or abort
 * removes the snapshot directory, so an interrupted backup leaves no half snapshot behind
 * (chunks already inserted stay; garbage collection reclaims them if unreferenced).
 */
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { BackupManifest } from '../format/manifest.js';
import { CatalogWriter } from '../format/catalog.js';
import { DynamicIndexWriter } from '../format/dynamic-index.js';
import type { PbsClient } from './remote/client.js';
import { localTarget, remoteTarget, targetIdentity } from './target.js';
import { ChunkStream } from '../archive/chunk-stream.js';
import { createArchive, archiveBaseName, sourceRoot, startTreeCheck, type ArchiveMode, type ArchiveStats, type ChunkUploader, type PreviousArchive } from '../archive/create.js';
import { encodeMetadataCache, loadMetadataCache, type LoadedMetadataCache, type MetadataCache } from '../archive/metadata-cache.js';
import type { DataStore } from '../datastore/datastore.js';
import { BackupGroup } from '../datastore/backup-group.js';
import { BackupNamespace } from '../datastore/namespace.js';

export interface BackupSpec {
  /** Archive name, `<name>.pxar`. */
  archiveName: string;
  /** Directory to back up. */
  path: string;
}

/** Parse `<name>.pxar:<dir>` (PBS's backup spec grammar; only directory archives here). */
export function parseBackupSpec(s: string): BackupSpec {
  const m = /^([a-zA-Z0-9_-]+\.(pxar|img|conf|log)):(.+)$/.exec(s);
  if (!m) throw new Error(`invalid backup spec ${JSON.stringify(s)} (expected <name>.pxar:<directory>)`);
  if (m[2] !== 'pxar') throw new Error(`backup spec ${JSON.stringify(s)}: only .pxar directory archives are supported so far`);
  return { archiveName: m[1], path: m[3] };
}

export type ChangeDetectionMode = 'legacy' | 'data' | 'metadata';

export interface CreateBackupOptions {
  /** Local datastore (one of `datastore` / `remote`). */
  datastore?: DataStore;
  /** Remote server (`pxb serve` or PBS). */
  remote?: PbsClient;
  specs: BackupSpec[];
  backupType?: 'host' | 'vm' | 'ct';
  /** Default: the host name. */
  backupId?: string;
  /** Epoch seconds; default now. */
  backupTime?: number;
  namespace?: BackupNamespace;
  changeDetectionMode?: ChangeDetectionMode;
  excludes?: string[];
  allFileSystems?: boolean;
  includeDevices?: bigint[];
  skipLostAndFound?: boolean;
  /** Average chunk size in bytes. */
  chunkSize?: number;
  /** Owner recorded for a new group (default `<user>@pam`, as PBS for a local root). */
  owner?: string;
  /** Encode and chunk everything but store nothing. */
  dryRun?: boolean;
  signal?: AbortSignal;
  onWarning?: (message: string) => void;
  onProgress?: (p: { archive: string; entries: number; bytesRead: number; path: string }) => void;
  /** Minimum milliseconds between progress events (default 200; 0 = before every entry). */
  progressIntervalMs?: number;
  /** Metadata mode: lookahead cache capacity in entries (default: PBS's RLIMIT_NOFILE rule). */
  lookaheadCapacity?: number;
  /**
   * Directory of client-side caches. With it, each archive's metadata cache is kept under
   * `<cacheDir>/metadata/` (archive/metadata-cache.ts): the next metadata-mode backup of the
   * group does not open unchanged files and directories. Without it, nothing is cached.
   */
  cacheDir?: string;
  onNotice?: (message: string) => void;
}

export interface BackupResult {
  snapshot: string;
  backupTime: number;
  archives: ArchiveStats[];
  /** Manifest file list (name, size, csum). */
  files: Array<{ filename: string; size: number; csum: string }>;
  dryRun: boolean;
  seconds: number;
}

export async function createBackup(opts: CreateBackupOptions): Promise<BackupResult> {
  const t0 = performance.now();
  if (!opts.specs.length) throw new Error('nothing to back up: give at least one <name>.pxar:<directory>');
  const names = new Set<string>();
  for (const s of opts.specs) {
    archiveBaseName(s.archiveName);
    if (names.has(s.archiveName)) throw new Error(`archive name ${s.archiveName} given twice`);
    names.add(s.archiveName);
  }
  const requested = opts.changeDetectionMode ?? 'metadata';
  const mode: ArchiveMode = requested;
  const ns = opts.namespace ?? BackupNamespace.root;
  const group = new BackupGroup(opts.backupType ?? 'host', opts.backupId ?? os.hostname().split('.')[0], ns);
  const time = opts.backupTime ?? Math.floor(Date.now() / 1000);
  const owner = opts.owner ?? `${os.userInfo().username}@pam`;
  const dryRun = !!opts.dryRun;
  if (!opts.datastore && !opts.remote) throw new Error('createBackup needs a datastore or a remote client');
  if (dryRun && opts.remote) throw new Error('--dry-run is only supported for local datastores');
  // Each archive's metadata cache is read now and, if it can lead to an unchanged tree, its
  // tree check started (a native walk that decides nothing by itself), while the target opens
  // and the previous snapshot is read.
  const cacheFiles = new Map<BackupSpec, string>();
  const earlyCaches = new Map<BackupSpec, Promise<LoadedMetadataCache | undefined>>();
  if (opts.cacheDir && mode !== 'legacy') {
    const identity = targetIdentity(opts);
    for (const spec of opts.specs) {
      const file = await metadataCachePath(opts.cacheDir, identity, ns, group, spec);
      cacheFiles.set(spec, file);
      if (mode === 'metadata') earlyCaches.set(spec, loadCache(file, spec, opts));
    }
  }
  const target = opts.remote ? await remoteTarget(opts.remote, ns, group, time) : await localTarget(opts.datastore!, ns, group, time, owner, dryRun);
  const manifest = new BackupManifest(group.type, group.id, time);
  const archives: ArchiveStats[] = [];
  const uploader = target.uploader;
  // Entries changed in the last second (or later) are read again next time (metadata-cache.ts).
  const recordBefore = BigInt(Date.now() - 1000) * 1_000_000n;
  const caches: Array<{ file: string; cache: MetadataCache; csum: Buffer }> = [];
  try {
    const catalogStream = mode === 'legacy' ? makeCatalogStream(uploader) : null;
    for (const spec of opts.specs) {
      let previous: PreviousArchive | undefined;
      if (mode === 'metadata') {
        const prev = await target.previous(spec.archiveName);
        if ('why' in prev) opts.onNotice?.(`${spec.archiveName}: ${prev.why}; encoding as data (every file is read)`);
        else previous = prev;
      }
      await target.prepare(spec.archiveName);
      const cacheFile = cacheFiles.get(spec) ?? null;
      // (createArchive uses it only if it belongs to `previous`)
      const metadataCache = previous?.metadataIndexCsum ? await earlyCaches.get(spec) : undefined;
      const r = await createArchive({
        previous,
        metadataCache,
        recordMetadataCacheBefore: cacheFile && !dryRun ? recordBefore : undefined,
        source: spec.path,
        archiveName: spec.archiveName,
        mode,
        uploader,
        excludes: opts.excludes,
        allFileSystems: opts.allFileSystems,
        includeDevices: opts.includeDevices,
        skipLostAndFound: opts.skipLostAndFound,
        chunkSize: opts.chunkSize,
        catalog: catalogStream?.catalog,
        signal: opts.signal,
        onWarning: opts.onWarning,
        onProgress: opts.onProgress,
        progressIntervalMs: opts.progressIntervalMs,
        lookaheadCapacity: opts.lookaheadCapacity,
      });
      for (const f of r.files) {
        await target.addIndex(f.filename, f.data, { csum: f.csum, size: f.size });
        manifest.addFile(f.filename, f.size, f.csum);
      }
      const mpxar = r.files.find((f) => f.filename.endsWith('.mpxar.didx'));
      if (cacheFile && r.metadataCache && mpxar) caches.push({ file: cacheFile, cache: r.metadataCache, csum: mpxar.csum });
      archives.push(r.stats);
    }
    if (catalogStream) {
      const f = await catalogStream.finish();
      await target.addIndex('catalog.pcat1.didx', f.data, { csum: f.csum, size: f.size });
      manifest.addFile('catalog.pcat1.didx', f.size, f.csum);
    }
    opts.signal?.throwIfAborted();
    await target.finish(manifest);
  } catch (e) {
    await target.abort().catch(() => undefined);
    throw e;
  }
  // Only now that the snapshot exists: a cache names the snapshot it describes by its index.
  for (const c of caches) {
    await saveMetadataCache(c.file, encodeMetadataCache(c.csum, c.cache)).catch((e: Error) => opts.onNotice?.(`metadata cache not saved (${e.message}); the next backup reads every entry's metadata`));
  }
  return {
    snapshot: target.snapshot,
    backupTime: time,
    archives,
    files: manifest.files.map((f) => ({ filename: f.filename, size: f.size, csum: f.csum.toString('hex') })),
    dryRun,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** Where the metadata cache of one archive of one group of one datastore lives. */
async function metadataCachePath(cacheDir: string, identity: string, ns: BackupNamespace, group: BackupGroup, spec: BackupSpec): Promise<string> {
  const source = await sourceRoot(spec.path);
  const key = createHash('sha256').update(JSON.stringify([identity, ns.name, group.type, group.id, spec.archiveName, source])).digest('hex');
  return path.join(cacheDir, 'metadata', key);
}

/** A cache file's content if it is intact; starts its tree check when it may be used (startTreeCheck). */
async function loadCache(file: string, spec: BackupSpec, opts: CreateBackupOptions): Promise<LoadedMetadataCache | undefined> {
  const data = await readFile(file).catch(() => undefined);
  const cache = data ? loadMetadataCache(data) : null;
  if (!cache) return undefined;
  await startTreeCheck(cache, spec.path, opts).catch(() => undefined);
  return cache;
}

async function saveMetadataCache(file: string, data: Buffer): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, data, { mode: 0o600 });
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** The legacy-mode catalog: its own chunk stream (512 KiB average, as PBS) and index. */
function makeCatalogStream(uploader: ChunkUploader) {
  const index = new DynamicIndexWriter();
  const stream = new ChunkStream({
    avg: 512 * 1024,
    sink: async (rec) => {
      await uploader.upload('catalog.pcat1.didx', rec);
      index.add(rec.offset + rec.size, rec.digest);
    },
  });
  const catalog = new CatalogWriter({ write: (b: Buffer) => void stream.write(b) });
  return {
    catalog,
    async finish() {
      catalog.finish();
      await stream.end();
      return index.finish();
    },
  };
}
