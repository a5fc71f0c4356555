/**
 * Restore and inspect snapshots of a local datastore: resolve `host/<id>[/<time>]`, map an
 * archive name as PBS accepts it (`root.pxar` → `root.mpxar.didx` + `root.ppxar.didx`, or
 * `root.pxar.didx`), and stream the archive through the pxar decoder.
 */
import type { DataStore } from '../datastore/datastore.js';
import { BackupDir } from '../datastore/backup-dir.js';
import { BackupGroup } from '../datastore/backup-group.js';
import { BackupNamespace } from '../datastore/namespace.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import type { BackupManifest } from '../format/manifest.js';
import { PxarDecoder, type DecoderEvent } from '../format/pxar/decoder.js';
import { indexStream, type ChunkSource } from '../datastore/index-reader.js';
import { extractArchive, type ExtractOptions, type ExtractStats } from '../archive/extract.js';

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
  return { readChunk: (digest, size) => ds.chunks.readChunk(digest, size) };
}

/** A sequential decoder over an archive of a snapshot. */
export async function openArchiveDecoder(ds: DataStore, dir: BackupDir, archiveName: string): Promise<{ decoder: PxarDecoder; files: ArchiveFiles }> {
  const manifest = await ds.loadManifest(dir);
  const files = findArchive(manifest, archiveName);
  const readIdx = async (f: string) => {
    const idx = await ds.readIndex(dir, f, manifest);
    if (!(idx instanceof DynamicIndex)) throw new Error(`${f} is not a dynamic index`);
    return idx;
  };
  const src = chunkSource(ds);
  const meta = await readIdx(files.metadata);
  const payload = files.payload ? await readIdx(files.payload) : null;
  const decoder = new PxarDecoder(indexStream(meta, src, files.metadata), {
    name: files.metadata,
    payload: payload ? indexStream(payload, src, files.payload!) : undefined,
  });
  return { decoder, files };
}

export interface RestoreOptions extends Omit<ExtractOptions, 'target'> {
  datastore: DataStore;
  snapshot: string;
  archiveName: string;
  target: string;
  namespace?: BackupNamespace;
}

export interface RestoreResult extends ExtractStats {
  snapshot: string;
  archive: string;
}

export async function restore(opts: RestoreOptions): Promise<RestoreResult> {
  const dir = await resolveSnapshot(opts.datastore, opts.snapshot, opts.namespace);
  const { decoder, files } = await openArchiveDecoder(opts.datastore, dir, opts.archiveName);
  const stats = await extractArchive(decoder, { ...opts, target: opts.target });
  return { ...stats, snapshot: dir.toString(), archive: files.name };
}

/** Every path of an archive (the catalog of a snapshot), in archive order. */
export async function* listArchive(ds: DataStore, dir: BackupDir, archiveName: string): AsyncGenerator<DecoderEvent['entry']> {
  const manifest = await ds.loadManifest(dir);
  const files = findArchive(manifest, archiveName);
  const idx = await ds.readIndex(dir, files.metadata, manifest);
  if (!(idx instanceof DynamicIndex)) throw new Error(`${files.metadata} is not a dynamic index`);
  // Metadata only: split archives need no payload stream for a listing.
  const decoder = new PxarDecoder(indexStream(idx, chunkSource(ds), files.metadata), { name: files.metadata });
  for (;;) {
    const ev = await decoder.next();
    if (!ev) return;
    if (ev.type === 'entry') yield ev.entry;
  }
}
