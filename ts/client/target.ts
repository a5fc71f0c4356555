/**
 * Where a backup goes: a local datastore or a remote server session. `createBackup` drives a
 * `BackupTarget` the same way for both:
 *   begin → per archive: previous(name) [metadata mode], chunks through `uploader`,
 *   addIndex(file) → finish(manifest) | abort().
 * Local: the datastore's BackupWriter transaction (manifest last, abort removes the snapshot).
 * Remote: a PBS backup protocol session (the server does the same on finish / disconnect).
 */
import type { BackupManifest } from '../format/manifest.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { PxarAccessor } from '../format/pxar/accessor.js';
import type { ChunkRecord } from '../archive/chunk-stream.js';
import { archiveBaseName, type ChunkUploader, type PreviousArchive } from '../archive/create.js';
import type { DataStore } from '../datastore/datastore.js';
import type { BackupDir } from '../datastore/backup-dir.js';
import type { BackupGroup } from '../datastore/backup-group.js';
import type { BackupNamespace } from '../datastore/namespace.js';
import { IndexReadAt, type ChunkSource } from '../datastore/index-reader.js';
import type { PbsClient } from './remote/client.js';
import type { BackupSession } from './remote/backup-session.js';
import { RemoteChunkUploader } from './remote/chunk-uploader.js';

export interface BackupTarget {
  /** `host/<id>/<time>` of the snapshot being written. */
  readonly snapshot: string;
  /** Which datastore this is (keys client-side caches): `local:<path>` or `pbs:<auth>@<host>:<port>:<store>`. */
  readonly identity: string;
  readonly uploader: ChunkUploader;
  /** The previous snapshot's archive for metadata-mode reuse, or why there is none. */
  previous(archiveName: string): Promise<PreviousArchive | { why: string }>;
  /** Seed known chunks from the previous snapshot's indexes of this archive (dedup only). */
  prepare(archiveName: string): Promise<void>;
  addIndex(filename: string, data: Buffer, info: { csum: Buffer; size: number }): Promise<void>;
  finish(manifest: BackupManifest): Promise<void>;
  abort(): Promise<void>;
}

/** Which datastore a backup goes to (BackupTarget.identity), known before the target is opened. */
export function targetIdentity(to: { datastore?: DataStore; remote?: PbsClient }): string {
  if (to.remote) {
    const r = to.remote.repository;
    return `pbs:${r.authId}@${r.host}:${r.port}:${r.store}`;
  }
  return `local:${to.datastore!.path}`;
}

/** Previous split archive from a manifest + index reader + chunk source (local or remote). */
async function previousFrom(
  label: string,
  manifest: BackupManifest | null,
  archiveName: string,
  /** Raw index bytes (checked here), or an index its reader already checked against the manifest. */
  readIndex: (name: string) => Promise<Buffer | DynamicIndex>,
  chunks: ChunkSource,
): Promise<PreviousArchive | { why: string }> {
  if (!manifest) return { why: 'no previous snapshot in this group' };
  const base = archiveBaseName(archiveName);
  try {
    if (manifest.verifyState?.state === 'failed') return { why: `previous snapshot ${label} failed verification` };
    const meta = manifest.lookup(`${base}.mpxar.didx`);
    const payload = manifest.lookup(`${base}.ppxar.didx`);
    if (!meta || !payload) {
      return { why: manifest.lookup(`${base}.pxar.didx`) ? `previous snapshot ${label} was made in legacy mode` : `previous snapshot ${label} has no archive ${archiveName}` };
    }
    if (meta.cryptMode !== 'none' || payload.cryptMode !== 'none') return { why: `previous snapshot ${label} has a different crypt mode` };
    // An index object was verified against the manifest by its reader (local datastore);
    // downloaded bytes are checked here.
    const asIndex = async (name: string, csum: Buffer, size: number) => {
      const v = await readIndex(name);
      if (v instanceof DynamicIndex) return v;
      const idx = DynamicIndex.parse(v, name);
      if (!idx.computeCsum().equals(csum) || idx.size !== size) throw new Error(`${name} does not match the manifest`);
      return idx;
    };
    const payloadP = asIndex(payload.filename, payload.csum, payload.size);
    payloadP.catch(() => undefined); // (awaited below)
    const metaIdx = await asIndex(meta.filename, meta.csum, meta.size);
    const source = new IndexReadAt(metaIdx, chunks, meta.filename);
    // The root directory (its goodbye table ends the archive) is needed first; unreadable,
    // the archive is not usable at all (damage below the root only re-reads that part). Its
    // last chunk, when it is not the first, is read (decoded and verified on a CPU worker)
    // while the first one is.
    if (metaIdx.count > 1) source.readAt(metaIdx.size - 1, 1).catch(() => undefined); // (openRoot's read then finds it)
    const accessor = await PxarAccessor.open(source, { name: `${label} ${meta.filename}` });
    await accessor.openRoot();
    const payloadIdx = await payloadP;
    return { accessor, payloadIndex: payloadIdx, metadataIndexCsum: meta.csum, metadataIndex: metaIdx, payloadIndexCsum: payload.csum };
  } catch (e) {
    return { why: `previous snapshot ${label} is not usable (${(e as Error).message})` };
  }
}

// ---- local --------------------------------------------------------------------------------

/** Reused chunks touched per native job. */
const TOUCH_BATCH = 128;

function localUploader(ds: DataStore, dryRun: boolean): ChunkUploader & { settle(): Promise<void> } {
  // Reused chunks of the previous snapshot must exist; touching them also protects them from a
  // concurrent garbage collection (atime is GC's mark). Touches run concurrently (bounded) and
  // are all settled before the snapshot is committed.
  const pending = new Set<Promise<void>>();
  let missing: string | null = null;
  // Reused chunks are touched in batches (one native job per TOUCH_BATCH chunks).
  let queued: Buffer[] = [];
  const flushTouches = () => {
    if (!queued.length) return;
    const batch = queued;
    queued = [];
    const p: Promise<void> = ds.chunks.touchMany(batch).then(
      (oks) => {
        const k = oks.indexOf(false);
        if (k >= 0 && !missing) missing = batch[k].toString('hex');
      },
      (e: Error) => {
        if (!missing) missing = `${batch[0].toString('hex')}… (${e.message})`;
      },
    );
    const tracked = p.finally(() => pending.delete(tracked));
    pending.add(tracked);
  };
  // Chunks found in the store by `store` (touched there already, so not again on upload).
  const touched = new Set<string>();
  return {
    // Uploads in flight: most are bookkeeping (`store` wrote the chunk already); the rest
    // are reused-chunk touches and the rare full insert.
    concurrency: 8,
    // One native job per chunk: hash, then touch it if the store has it (GC mark; it is not
    // encoded), else encode and write it.
    store: dryRun
      ? undefined
      : async (data: Uint8Array, compress: boolean) => {
          const r = await ds.chunks.storeData(data, compress);
          if (r.outcome === 'known') {
            touched.add(r.digest.toString('latin1'));
            return { digest: r.digest, blob: null };
          }
          return { digest: r.digest, blob: null, stored: r.size };
        },
    async upload(_archive: string, rec: ChunkRecord) {
      if (rec.stored !== undefined) return { isDuplicate: false, storedBytes: rec.stored };
      if (!rec.blob) {
        if (touched.has(rec.digest.toString('latin1'))) return { isDuplicate: true, storedBytes: 0 };
        queued.push(rec.digest);
        if (queued.length >= TOUCH_BATCH) {
          if (pending.size >= 8) await Promise.race(pending);
          flushTouches();
        }
        return { isDuplicate: true, storedBytes: 0 };
      }
      if (dryRun) return { isDuplicate: false, storedBytes: 0 };
      const r = await ds.chunks.insert(rec.digest, rec.blob);
      return { isDuplicate: r.isDuplicate, storedBytes: r.isDuplicate ? 0 : r.encodedSize };
    },
    async settle() {
      flushTouches();
      await Promise.all([...pending]);
      if (missing) {
        throw new Error(`chunk ${missing} of the previous snapshot is missing from the datastore (run "pxb verify"; a backup with --change-detection-mode data re-uploads it)`);
      }
    },
  };
}

export async function localTarget(ds: DataStore, ns: BackupNamespace, group: BackupGroup, time: number, owner: string, dryRun: boolean): Promise<BackupTarget> {
  const writer = dryRun ? null : await ds.beginBackup(ns, group, time, { owner });
  const uploader = localUploader(ds, dryRun);
  const prevDir: BackupDir | null = writer ? writer.previous : await ds.lastSuccessfulSnapshot(group);
  const source: ChunkSource = { readChunk: (d, size) => ds.chunks.readChunk(d, size) };
  let prevManifest: BackupManifest | null | undefined;
  return {
    snapshot: writer ? writer.dir.toString() : `${group.type}/${group.id}/(dry-run)`,
    identity: targetIdentity({ datastore: ds }),
    uploader,
    async previous(archiveName) {
      if (!prevDir) {
        const base = await ds.baseSnapshot(group).catch(() => null);
        return { why: base && !base.dir ? base.why : 'no previous snapshot in this group' };
      }
      if (prevManifest === undefined) prevManifest = await ds.loadManifest(prevDir).catch(() => null);
      const m = prevManifest;
      return previousFrom(prevDir?.toString() ?? '', m, archiveName, async (name) => {
        const idx = await ds.readIndex(prevDir!, name, m ?? undefined);
        if (!(idx instanceof DynamicIndex)) throw new Error(`${name} is not a dynamic index`);
        return idx;
      }, source);
    },
    async prepare() {
      // Local dedup needs no seeding: inserting an existing chunk is a cheap no-op.
    },
    async addIndex(filename, data, info) {
      if (writer) await writer.addIndex(filename, data, info);
    },
    async finish(manifest) {
      await uploader.settle();
      if (writer) await writer.finish(manifest);
    },
    async abort() {
      if (writer) await writer.abort();
    },
  };
}

// ---- remote -------------------------------------------------------------------------------

export async function remoteTarget(client: PbsClient, ns: BackupNamespace, group: BackupGroup, time: number): Promise<BackupTarget> {
  const session: BackupSession = await client.startBackup({ ns: ns.isRoot ? undefined : ns.name, backupType: group.type, backupId: group.id, backupTime: time });
  const uploader = new RemoteChunkUploader(session);
  let prevManifest: BackupManifest | null | undefined;
  const manifest = async () => {
    if (prevManifest === undefined) prevManifest = await session.previousManifest().catch(() => null);
    return prevManifest;
  };
  const seeded = new Set<string>();
  const seed = async (name: string) => {
    const m = await manifest();
    if (!m || seeded.has(name) || !m.lookup(name)) return null;
    seeded.add(name);
    return session.downloadPrevious(name);
  };
  const label = `${group.type}/${group.id} (previous)`;
  const readers: Array<{ close(): Promise<void>; abort(): void }> = [];
  const closeReaders = async () => {
    for (const r of readers.splice(0)) await r.close().catch(() => r.abort());
  };
  return {
    snapshot: `${group.type}/${group.id}/${new Date(time * 1000).toISOString().replace('.000Z', 'Z')}`,
    identity: targetIdentity({ remote: client }),
    uploader,
    async previous(archiveName) {
      const m = await manifest();
      if (!m) return { why: 'no previous snapshot in this group' };
      const prevTime = m.backupTime;
      const reader = await client.startReader({ ns: ns.isRoot ? undefined : ns.name, backupType: group.type, backupId: group.id, backupTime: prevTime });
      readers.push(reader);
      // The metadata archive is read through the reader session; the payload index comes from
      // the writer's `previous` download, which registers its chunks as known on the server.
      return previousFrom(label, m, archiveName, async (name) => (name.endsWith('.ppxar.didx') ? ((await seed(name)) ?? (await session.downloadPrevious(name))) : reader.download(name)), reader);
    },
    async prepare(archiveName) {
      const base = archiveBaseName(archiveName);
      for (const n of [`${base}.mpxar.didx`, `${base}.ppxar.didx`, `${base}.pxar.didx`]) await seed(n).catch(() => null);
    },
    async addIndex(filename, _data, info) {
      await uploader.close(filename, info);
    },
    async finish(m) {
      try {
        await session.uploadManifest(m);
        await session.finish();
      } finally {
        await closeReaders();
      }
    },
    async abort() {
      session.abort();
      for (const r of readers.splice(0)) r.abort();
    },
  };
}
