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
import { BackupManifest } from '../format/manifest.js';
import { CatalogWriter } from '../format/catalog.js';
import { DynamicIndex, DynamicIndexWriter } from '../format/dynamic-index.js';
import { PxarAccessor } from '../format/pxar/accessor.js';
import { IndexReadAt, type ChunkSource } from '../datastore/index-reader.js';
import { ChunkStream, type ChunkRecord } from '../archive/chunk-stream.js';
import { createArchive, archiveBaseName, type ArchiveMode, type ArchiveStats, type ChunkUploader, type PreviousArchive } from '../archive/create.js';
import type { DataStore } from '../datastore/datastore.js';
import { BackupGroup } from '../datastore/backup-group.js';
import { BackupNamespace } from '../datastore/namespace.js';
import type { BackupDir } from '../datastore/backup-dir.js';

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
  datastore: DataStore;
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
  /** Metadata mode: lookahead cache capacity in entries (default 8192). */
  lookaheadCapacity?: number;
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

function localUploader(ds: DataStore, dryRun: boolean): ChunkUploader & { settle(): Promise<void> } {
  // Reused chunks of the previous snapshot must exist; touching them also protects them from a
  // concurrent garbage collection (atime is GC's mark). Touches run concurrently (bounded) and
  // are all settled before the snapshot is committed.
  const pending = new Set<Promise<void>>();
  let missing: string | null = null;
  const touch = (digest: Buffer) => {
    const p: Promise<void> = ds.chunks.touch(digest).then(
      (ok) => {
        if (!ok && !missing) missing = digest.toString('hex');
      },
      (e: Error) => {
        if (!missing) missing = `${digest.toString('hex')} (${e.message})`;
      },
    );
    const tracked = p.finally(() => pending.delete(tracked));
    pending.add(tracked);
  };
  return {
    async upload(_archive: string, rec: ChunkRecord) {
      if (!rec.blob) {
        if (pending.size >= 64) await Promise.race(pending);
        touch(rec.digest);
        return { isDuplicate: true, storedBytes: 0 };
      }
      if (dryRun) return { isDuplicate: false, storedBytes: 0 };
      const r = await ds.chunks.insert(rec.digest, rec.blob);
      return { isDuplicate: r.isDuplicate, storedBytes: r.isDuplicate ? 0 : r.encodedSize };
    },
    async settle() {
      await Promise.all([...pending]);
      if (missing) {
        throw new Error(`chunk ${missing} of the previous snapshot is missing from the datastore (run "pxb verify"; a backup with --change-detection-mode data re-uploads it)`);
      }
    },
  };
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
  const ds = opts.datastore;
  const dryRun = !!opts.dryRun;

  const writer = dryRun ? null : await ds.beginBackup(ns, group, time, { owner });
  const manifest = new BackupManifest(group.type, group.id, time);
  const archives: ArchiveStats[] = [];
  const uploader = localUploader(ds, dryRun);
  try {
    const catalogStream = mode === 'legacy' ? makeCatalogStream(uploader) : null;
    for (const spec of opts.specs) {
      let previous: PreviousArchive | undefined;
      if (mode === 'metadata') {
        const prev = await openPreviousArchive(ds, writer?.previous ?? (await ds.lastSuccessfulSnapshot(group)), spec.archiveName);
        if ('why' in prev) opts.onNotice?.(`${spec.archiveName}: ${prev.why}; encoding as data (every file is read)`);
        else previous = prev;
      }
      const r = await createArchive({
        previous,
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
        if (writer) await writer.addIndex(f.filename, f.data, { csum: f.csum, size: f.size });
        manifest.addFile(f.filename, f.size, f.csum);
      }
      archives.push(r.stats);
    }
    await uploader.settle();
    if (catalogStream) {
      const f = await catalogStream.finish();
      if (writer) await writer.addIndex('catalog.pcat1.didx', f.data, { csum: f.csum, size: f.size });
      manifest.addFile('catalog.pcat1.didx', f.size, f.csum);
    }
    opts.signal?.throwIfAborted();
    if (writer) await writer.finish(manifest);
  } catch (e) {
    if (writer) await writer.abort().catch(() => undefined);
    throw e;
  }
  const dir: BackupDir | null = writer ? writer.dir : null;
  return {
    snapshot: dir ? dir.toString() : `${group.type}/${group.id}/(dry-run)`,
    backupTime: time,
    archives,
    files: manifest.files.map((f) => ({ filename: f.filename, size: f.size, csum: f.csum.toString('hex') })),
    dryRun,
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * The previous snapshot's split archive for metadata-mode reuse (change-detection.md §2), or
 * the reason there is none.
 */
export async function openPreviousArchive(ds: DataStore, dir: BackupDir | null, archiveName: string): Promise<PreviousArchive | { why: string }> {
  if (!dir) return { why: 'no previous snapshot in this group' };
  const base = archiveBaseName(archiveName);
  try {
    const manifest = await ds.loadManifest(dir);
    if (manifest.verifyState?.state === 'failed') return { why: `previous snapshot ${dir} failed verification` };
    const meta = manifest.lookup(`${base}.mpxar.didx`);
    const payload = manifest.lookup(`${base}.ppxar.didx`);
    if (!meta || !payload) {
      return { why: manifest.lookup(`${base}.pxar.didx`) ? `previous snapshot ${dir} was made in legacy mode` : `previous snapshot ${dir} has no archive ${archiveName}` };
    }
    if (meta.cryptMode !== 'none' || payload.cryptMode !== 'none') return { why: `previous snapshot ${dir} has a different crypt mode` };
    const metaIdx = await ds.readIndex(dir, meta.filename, manifest);
    const payloadIdx = await ds.readIndex(dir, payload.filename, manifest);
    if (!(metaIdx instanceof DynamicIndex) || !(payloadIdx instanceof DynamicIndex)) return { why: 'previous indexes are not dynamic indexes' };
    const source: ChunkSource = { readChunk: (d, size) => ds.chunks.readChunk(d, size) };
    const accessor = await PxarAccessor.open(new IndexReadAt(metaIdx, source, meta.filename, 16), { name: `${dir} ${meta.filename}` });
    return { accessor, payloadIndex: payloadIdx };
  } catch (e) {
    return { why: `previous snapshot ${dir} is not usable (${(e as Error).message})` };
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
