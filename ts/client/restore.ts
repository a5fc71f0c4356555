/**
 * Restore and inspect snapshots of a local datastore: resolve `host/<id>[/<time>]`, map an
 * archive name as PBS accepts it (`root.pxar` → `root.mpxar.didx` + `root.ppxar.didx`, or
 * `root.pxar.didx`), and stream the archive through the pxar decoder.
 */
import { DataStore } from '../datastore/datastore.js';
import { BackupDir } from '../datastore/backup-dir.js';
import { BackupGroup } from '../datastore/backup-group.js';
import { BackupNamespace } from '../datastore/namespace.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import type { BackupManifest } from '../format/manifest.js';
import { PxarDecoder, type DecoderEvent } from '../format/pxar/decoder.js';
import { ChunkBufferPool, indexStream, type ChunkSource } from '../datastore/index-reader.js';
import { extractArchive, type ExtractOptions, type ExtractStats } from '../archive/extract.js';
import type { PbsClient } from './remote/client.js';

/** `host/<id>` (latest finished snapshot) or `host/<id>/<RFC3339>`. */
export async function resolveSnapshot(ds: DataStore, spec: string, ns: BackupNamespace = BackupNamespace.root): Promise<BackupDir> {
  const parts = spec.split('/');
  if (parts.length === 2) {
    const group = BackupGroup.parse(spec, ns);
    const snaps = (await ds.listSnapshots(group)).filter((s) => s.finished);
    if (!snaps.length) throw new Error(`backup group ${group} has no finished snapshot`);
    return snaps[snaps.length - 1].dir;
  }
  if (parts.length === 3) {
    const dir = BackupDir.parse(spec, ns);
    const snaps = await ds.listSnapshots(dir.group);
    if (!snaps.some((s) => s.finished && s.dir.equals(dir))) throw new Error(`snapshot ${dir} does not exist`);
    return dir;
  }
  throw new Error(`invalid snapshot ${JSON.stringify(spec)} (expected <type>/<id> or <type>/<id>/<time>)`);
}

export interface ArchiveFiles {
  /** Display name (`root.pxar`). */
  name: string;
  split: boolean;
  metadata: string;
  payload?: string;
}

/** Map an archive name as PBS accepts it to the index files of the snapshot. */
export function findArchive(manifest: BackupManifest, name: string): ArchiveFiles {
  const has = (f: string) => !!manifest.lookup(f);
  let base = name;
  for (const ext of ['.mpxar.didx', '.ppxar.didx', '.pxar.didx', '.mpxar', '.ppxar', '.pxar']) {
    if (base.endsWith(ext)) {
      base = base.slice(0, -ext.length);
      break;
    }
  }
  if (has(`${base}.mpxar.didx`)) {
    if (!has(`${base}.ppxar.didx`)) throw new Error(`archive ${base}.pxar: ${base}.ppxar.didx is missing from the snapshot`);
    return { name: `${base}.pxar`, split: true, metadata: `${base}.mpxar.didx`, payload: `${base}.ppxar.didx` };
  }
  if (has(`${base}.pxar.didx`)) return { name: `${base}.pxar`, split: false, metadata: `${base}.pxar.didx` };
  const available = manifest.files.map((f) => f.filename).filter((f) => /\.(m?pxar)\.didx$/.test(f)).map((f) => f.replace(/\.m?pxar\.didx$/, '.pxar'));
  throw new Error(`archive ${name} not found in the snapshot (archives: ${available.join(', ') || 'none'})`);
}

function chunkSource(ds: DataStore): ChunkSource {
  return {
    readChunk: (digest, size) => ds.chunks.readChunk(digest, size),
    readChunkInto: (digest, size, into) => ds.chunks.readChunkInto(digest, size, into),
  };
}

/** One snapshot to read from: a local datastore's, or a remote reader session's. */
export interface SnapshotSource {
  /** `host/<id>/<time>` */
  readonly label: string;
  manifest(): Promise<BackupManifest>;
  /** An index file of the snapshot, checked against the manifest. */
  readIndex(name: string, manifest: BackupManifest): Promise<DynamicIndex>;
  readonly chunks: ChunkSource;
  close(): Promise<void>;
}

export async function localSnapshot(ds: DataStore, spec: string, ns: BackupNamespace = BackupNamespace.root): Promise<SnapshotSource> {
  const dir = await resolveSnapshot(ds, spec, ns);
  // held until close(): no prune or forget (in any process) removes it while it is read
  const lock = ds.lockSnapshotShared(dir);
  return { ...localSnapshotAt(ds, dir), close: async () => lock.release() };
}

/** `host/<id>` (latest) or `host/<id>/<time>` on a server, opened as a reader session. */
export async function remoteSnapshot(client: PbsClient, spec: string, ns: BackupNamespace = BackupNamespace.root): Promise<SnapshotSource> {
  const parts = spec.split('/');
  let dir: BackupDir;
  if (parts.length === 2) {
    const group = BackupGroup.parse(spec, ns);
    const snaps = (await client.listSnapshots({ ns: ns.isRoot ? undefined : ns.name, backupType: group.type, backupId: group.id })).sort((a, b) => a['backup-time'] - b['backup-time']);
    if (!snaps.length) throw new Error(`backup group ${group} has no snapshot on the server`);
    dir = new BackupDir(group, snaps[snaps.length - 1]['backup-time']);
  } else if (parts.length === 3) {
    dir = BackupDir.parse(spec, ns);
  } else {
    throw new Error(`invalid snapshot ${JSON.stringify(spec)} (expected <type>/<id> or <type>/<id>/<time>)`);
  }
  const reader = await client.startReader({ ns: ns.isRoot ? undefined : ns.name, backupType: dir.group.type, backupId: dir.group.id, backupTime: dir.time });
  return {
    label: dir.toString(),
    manifest: () => reader.downloadManifest(),
    async readIndex(name, manifest) {
      const idx = await reader.downloadIndex(name, manifest);
      if (!(idx instanceof DynamicIndex)) throw new Error(`${name} is not a dynamic index`);
      return idx;
    },
    chunks: reader,
    close: () => reader.close(),
  };
}

/** A snapshot of a local datastore as a SnapshotSource. */
export function localSnapshotAt(ds: DataStore, dir: BackupDir): SnapshotSource {
  return {
    label: dir.toString(),
    manifest: () => ds.loadManifest(dir),
    async readIndex(name, manifest) {
      const idx = await ds.readIndex(dir, name, manifest);
      if (!(idx instanceof DynamicIndex)) throw new Error(`${name} is not a dynamic index`);
      return idx;
    },
    chunks: chunkSource(ds),
    close: async () => undefined,
  };
}

/** A sequential decoder over an archive of a snapshot. */
export interface OpenArchiveDecoderOptions {
  /** Read the payload stream of a split archive (default true; a listing needs none). */
  payload?: boolean;
  /**
   * Decode payload chunks into recycled buffers (PxarDecoderOptions.releasePayload): a piece
   * from `contents()` is then valid only until the next call into the decoder.
   */
  recyclePayload?: boolean;
}

export async function openArchiveDecoder(src: SnapshotSource, archiveName: string, opts?: OpenArchiveDecoderOptions): Promise<{ decoder: PxarDecoder; files: ArchiveFiles }>;
export async function openArchiveDecoder(ds: DataStore, dir: BackupDir, archiveName: string): Promise<{ decoder: PxarDecoder; files: ArchiveFiles }>;
export async function openArchiveDecoder(
  a: SnapshotSource | DataStore,
  b: string | BackupDir,
  c?: string | OpenArchiveDecoderOptions,
): Promise<{ decoder: PxarDecoder; files: ArchiveFiles }> {
  const src = a instanceof DataStore ? localSnapshotAt(a, b as BackupDir) : a;
  const archiveName = typeof b === 'string' ? b : (c as string);
  const opts = typeof c === 'object' ? c : {};
  const manifest = await src.manifest();
  const files = findArchive(manifest, archiveName);
  const meta = await src.readIndex(files.metadata, manifest);
  const payload = files.payload && opts.payload !== false ? await src.readIndex(files.payload, manifest) : null;
  const pool = payload && opts.recyclePayload ? new ChunkBufferPool() : undefined;
  const decoder = new PxarDecoder(indexStream(meta, src.chunks, files.metadata), {
    name: files.metadata,
    payload: payload ? indexStream(payload, src.chunks, files.payload!, undefined, pool) : undefined,
    releasePayload: pool?.release,
  });
  return { decoder, files };
}

export interface RestoreOptions extends Omit<ExtractOptions, 'target'> {
  /** Local datastore (one of `datastore` / `remote`). */
  datastore?: DataStore;
  /** Remote server. */
  remote?: PbsClient;
  snapshot: string;
  archiveName: string;
  target: string;
  namespace?: BackupNamespace;
}

export interface RestoreResult extends ExtractStats {
  snapshot: string;
  archive: string;
}

export async function openSnapshot(o: { datastore?: DataStore; remote?: PbsClient }, spec: string, ns?: BackupNamespace): Promise<SnapshotSource> {
  if (o.remote) return remoteSnapshot(o.remote, spec, ns);
  if (o.datastore) return localSnapshot(o.datastore, spec, ns);
  throw new Error('a datastore or a remote client is needed');
}

export async function restore(opts: RestoreOptions): Promise<RestoreResult> {
  const src = await openSnapshot(opts, opts.snapshot, opts.namespace);
  try {
    // extractArchive copies or writes every piece of file data before it reads on.
    const { decoder, files } = await openArchiveDecoder(src, opts.archiveName, { recyclePayload: true });
    const stats = await extractArchive(decoder, { ...opts, target: opts.target });
    return { ...stats, snapshot: src.label, archive: files.name };
  } finally {
    await src.close().catch(() => undefined);
  }
}

/** Every path of an archive (the catalog of a snapshot), in archive order. */
export function listArchive(src: SnapshotSource, archiveName: string): AsyncGenerator<DecoderEvent['entry']>;
export function listArchive(ds: DataStore, dir: BackupDir, archiveName: string): AsyncGenerator<DecoderEvent['entry']>;
export async function* listArchive(a: SnapshotSource | DataStore, b: string | BackupDir, c?: string): AsyncGenerator<DecoderEvent['entry']> {
  const src = a instanceof DataStore ? localSnapshotAt(a, b as BackupDir) : a;
  const archiveName = typeof b === 'string' ? b : c!;
  // Metadata only: split archives need no payload stream for a listing.
  const { decoder } = await openArchiveDecoder(src, archiveName, { payload: false });
  for (;;) {
    const ev = await decoder.next();
    if (!ev) return;
    if (ev.type === 'entry') yield ev.entry;
  }
}
