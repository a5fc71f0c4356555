/**
 * pxb library entry point: everything the CLI does is a typed call here first.
 */
// Backup, restore, inspection
export { createBackup, parseBackupSpec } from './client/backup.js';
export { localTarget, remoteTarget } from './client/target.js';
export type { BackupTarget } from './client/target.js';
export { PbsClient } from './client/remote/client.js';
export { parseRepository } from './client/remote/repository.js';
export { PxbServer } from './server/server.js';
export type { BackupResult, BackupSpec, ChangeDetectionMode, CreateBackupOptions } from './client/backup.js';
export { restore, resolveSnapshot, findArchive, openArchiveDecoder, listArchive } from './client/restore.js';
export type { RestoreOptions, RestoreResult } from './client/restore.js';
export { runBenchmark, syntheticData } from './client/benchmark.js';

// Datastore and maintenance
export { DataStore } from './datastore/datastore.js';
export { defaultDatastorePath } from './datastore/location.js';
export { BackupNamespace } from './datastore/namespace.js';
export { BackupGroup } from './datastore/backup-group.js';
export { BackupDir } from './datastore/backup-dir.js';
export { ChunkStore, ChunkError } from './datastore/chunk-store.js';
export { prune, computePruneInfo } from './datastore/prune.js';
export { garbageCollect } from './datastore/gc.js';
export { verify } from './datastore/verify.js';

// Archive layer
export { createArchive } from './archive/create.js';
export type { ArchiveStats, CreateArchiveOptions, ChunkUploader, PreviousArchive } from './archive/create.js';
export { extractArchive } from './archive/extract.js';
export { ChunkStream } from './archive/chunk-stream.js';
export type { ChunkRecord, ChunkStreamOptions, InjectChunks, KnownChunk } from './archive/chunk-stream.js';

// Formats
export * from './format/dynamic-index.js';
export * from './format/fixed-index.js';
export * from './format/manifest.js';
export * from './format/blob.js';
export * from './format/errors.js';
export { PxarEncoder } from './format/pxar/encoder.js';
export { PxarDecoder } from './format/pxar/decoder.js';
export { PxarAccessor } from './format/pxar/accessor.js';
export { CatalogWriter, CatalogReader } from './format/catalog.js';
