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
import { DynamicIndexWriter } from '../format/dynamic-index.js';
import { ChunkStream, type ChunkRecord } from '../archive/chunk-stream.js';
import { createArchive, archiveBaseName, type ArchiveMode, type ArchiveStats, type ChunkUploader } from '../archive/create.js';
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

function localUploader(ds: DataStore, dryRun: boolean): ChunkUploader {
  return {
    async upload(_archive: string, rec: ChunkRecord) {
      if (!rec.blob) return { isDuplicate: true, storedBytes: 0 };
      if (dryRun) return { isDuplicate: false, storedBytes: 0 };
      const r = await ds.chunks.insert(rec.digest, rec.blob);
      return { isDuplicate: r.isDuplicate, storedBytes: r.isDuplicate ? 0 : r.encodedSize };
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
  let mode: ArchiveMode = 'data';
  const requested = opts.changeDetectionMode ?? 'metadata';
  if (requested === 'legacy') mode = 'legacy';
  else if (requested === 'metadata') {
    opts.onNotice?.('change detection mode metadata: no usable previous snapshot support yet, encoding as data');
  }
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
      const r = await createArchive({
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
      });
      for (const f of r.files) {
        if (writer) await writer.addIndex(f.filename, f.data, { csum: f.csum, size: f.size });
        manifest.addFile(f.filename, f.size, f.csum);
      }
      archives.push(r.stats);
    }
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
