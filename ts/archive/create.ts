/**
 * Archive creation: walk a directory tree and encode it as pxar, cut into chunks.
 *
 * - `legacy`: one unified pxar v1 stream (`<name>.pxar.didx`) plus a catalog entry set.
 * - `data`: a split pxar v2 archive, metadata stream (`<name>.mpxar.didx`) and payload stream
 *   (`<name>.ppxar.didx`); every regular file suggests a chunk boundary at its PAYLOAD header.
 *
 * Walk (policy here, mechanism native): each directory is listed with one native call
 * (lstat + xattrs + flags, sorted by raw name, as PBS); listings of upcoming directories are
 * prefetched in DFS order with bounded look-ahead; small files are read in batches by one
 * native call each (exactly their stat size: shrunk → zero-padded, grown → truncated, as PBS),
 * large files in 4 MiB reads. Payload bytes go disk → chunk stream → chunk store without
 * per-byte JS work. Memory is bounded by the look-ahead windows, not by the tree size.
 *
 * Entries that vanish or cannot be read mid-backup produce a warning and are left out; the
 * archive stays consistent.
 */
import { open } from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import path from 'node:path';
import {
  readDir,
  readFilesExact,
  statPath,
  READ_GREW,
  READ_OK,
  READ_SHRUNK,
  errnoCode,
  type DirEntries,
  type ReadDirOptions,
} from '../native/fs.js';
import { PxarEncoder, type ByteSink } from '../format/pxar/encoder.js';
import type { Metadata } from '../format/pxar/metadata.js';
import { CatalogWriter } from '../format/catalog.js';
import { DynamicIndexWriter } from '../format/dynamic-index.js';
import { ChunkStream, DEFAULT_CHUNK_SIZE, type ChunkRecord } from './chunk-stream.js';
import { entryMetadata } from './fs-metadata.js';
import { ExcludeMatcher, parsePattern, parsePatternFile, type ExcludePattern } from './exclude.js';

export type ArchiveMode = 'legacy' | 'data';

/** Where chunks go: the local chunk store or a remote writer session. */
export interface ChunkUploader {
  /** Store a new chunk (`rec.blob` set) or register a reused one (`blob` null). */
  upload(archive: string, rec: ChunkRecord): Promise<{ isDuplicate: boolean; storedBytes: number }>;
}

export interface CreateArchiveOptions {
  /** Directory to back up. */
  source: string;
  /** Archive name as given by the user, e.g. `root.pxar`. */
  archiveName: string;
  mode: ArchiveMode;
  uploader: ChunkUploader;
  /** `--exclude` patterns (PBS syntax). */
  excludes?: string[];
  /** Descend into other file systems (default: stay on the source's device). */
  allFileSystems?: boolean;
  /** Device ids (st_dev of mount points) to include although on another file system. */
  includeDevices?: bigint[];
  skipLostAndFound?: boolean;
  /** Average chunk size in bytes (default 4 MiB). */
  chunkSize?: number;
  /** Archive xattrs, ACLs and fcaps (default true). */
  xattrs?: boolean;
  /** Catalog writer to add this archive to (legacy mode). */
  catalog?: CatalogWriter;
  signal?: AbortSignal;
  onWarning?: (message: string) => void;
  onProgress?: (p: ArchiveProgress) => void;
}

export interface ArchiveProgress {
  archive: string;
  entries: number;
  bytesRead: number;
  /** Relative path currently being encoded. */
  path: string;
}

export interface ArchiveFile {
  /** File name in the snapshot, e.g. `root.mpxar.didx`. */
  filename: string;
  data: Buffer;
  csum: Buffer;
  size: number;
  chunks: number;
}

export interface ArchiveStats {
  archive: string;
  mode: ArchiveMode;
  entries: number;
  files: number;
  directories: number;
  /** Payload bytes read from source files. */
  bytesRead: number;
  /** Total archive stream bytes (metadata + payload). */
  streamBytes: number;
  chunks: number;
  chunksNew: number;
  chunksKnown: number;
  /** Encoded bytes newly written to the store. */
  bytesStored: number;
  warnings: number;
  seconds: number;
}

export interface CreateArchiveResult {
  /** Index files in manifest order (payload before metadata for split archives). */
  files: ArchiveFile[];
  stats: ArchiveStats;
}

/** `root.pxar` → base name `root`; PBS accepts `<name>.pxar` only. */
export function archiveBaseName(archiveName: string): string {
  const m = /^([A-Za-z0-9_-]+)\.pxar$/.exec(archiveName);
  if (!m) throw new Error(`invalid archive name ${JSON.stringify(archiveName)} (expected <name>.pxar with [A-Za-z0-9_-] in the name)`);
  return m[1];
}

const SMALL_FILE = 1024 * 1024;
const BATCH_BYTES = 8 * 1024 * 1024;
const BATCH_FILES = 256;
const READ_SIZE = 4 * 1024 * 1024;
const DIR_LOOKAHEAD = 16;
const FILE_BATCHES_AHEAD = 2;

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFBLK = 0o060000;
const S_IFCHR = 0o020000;
const S_IFIFO = 0o010000;
const S_IFSOCK = 0o140000;

class AbortedError extends Error {
  override name = 'AbortError';
}

/** Sink that forwards encoder output to a chunk stream. */
class StreamSink implements ByteSink {
  constructor(readonly stream: ChunkStream) {}
  write(buf: Buffer): void {
    this.stream.write(buf);
  }
}

/** DFS-ordered directory listing prefetch with bounded look-ahead. */
class DirPrefetcher {
  private stack: PrefetchItem[] = [];
  private running = 0;
  private ready = 0;

  constructor(private readonly opts: ReadDirOptions, private readonly concurrency = 2) {}

  /** Register upcoming listings of `paths` (in order); deeper levels are served first. */
  request(paths: Buffer[]): PrefetchItem[] {
    const items: PrefetchItem[] = paths.map((p) => ({ path: p, promise: null }));
    for (let i = items.length - 1; i >= 0; i--) this.stack.push(items[i]);
    this.pump();
    return items;
  }

  /** The consumer needs this listing now: start it if it has not started yet. */
  take(item: PrefetchItem): Promise<DirEntries> {
    if (!item.promise) {
      const i = this.stack.lastIndexOf(item);
      if (i >= 0) this.stack.splice(i, 1);
      this.start(item);
    }
    const p = item.promise!;
    return p.finally(() => {
      this.ready--;
      this.pump();
    });
  }

  /** Forget items that will never be taken (e.g. a directory that was skipped). */
  drop(items: PrefetchItem[]): void {
    const set = new Set(items.filter((x) => !x.promise));
    if (set.size) this.stack = this.stack.filter((x) => !set.has(x));
    for (const x of items) if (x.promise) void this.take(x).catch(() => undefined);
  }

  private start(item: PrefetchItem): void {
    this.running++;
    item.promise = readDir(item.path, this.opts).finally(() => {
      this.running--;
      this.ready++;
      this.pump();
    });
    item.promise.catch(() => undefined);
  }

  private pump(): void {
    while (this.running < this.concurrency && this.ready + this.running < DIR_LOOKAHEAD && this.stack.length) {
      this.start(this.stack.pop()!);
    }
  }
}

interface PrefetchItem {
  path: Buffer;
  promise: Promise<DirEntries> | null;
}

interface FileJob {
  index: number;
  path: Buffer;
  size: number;
}

interface FileData {
  /** Data of exactly `size` bytes, or null when the file could not be read. */
  data: Buffer | null;
  error?: string;
  changed?: 'shrunk' | 'grew';
}

export async function createArchive(opts: CreateArchiveOptions): Promise<CreateArchiveResult> {
  const t0 = performance.now();
  const base = archiveBaseName(opts.archiveName);
  const mode = opts.mode;
  const avg = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const xattrs = opts.xattrs ?? true;
  const warn = (msg: string) => {
    stats.warnings++;
    opts.onWarning?.(msg);
  };
  const stats: ArchiveStats = {
    archive: opts.archiveName,
    mode,
    entries: 0,
    files: 0,
    directories: 0,
    bytesRead: 0,
    streamBytes: 0,
    chunks: 0,
    chunksNew: 0,
    chunksKnown: 0,
    bytesStored: 0,
    warnings: 0,
    seconds: 0,
  };

  const rootPath = path.resolve(opts.source);
  const root = await statPath(rootPath, { xattrs, acls: xattrs, fcaps: xattrs, flags: true, projid: true }).catch((e: Error) => {
    throw new Error(`cannot back up ${rootPath}: ${e.message}`);
  });
  if ((root.mode & S_IFMT) !== S_IFDIR) throw new Error(`cannot back up ${rootPath}: not a directory`);

  // --- output: chunk streams → uploader, index writers ------------------------------
  const makeStream = (filename: string, payload: boolean) => {
    const index = new DynamicIndexWriter();
    const stream = new ChunkStream({
      avg,
      payload,
      sink: async (rec) => {
        const r = await opts.uploader.upload(filename, rec);
        index.add(rec.offset + rec.size, rec.digest);
        stats.chunks++;
        if (r.isDuplicate) stats.chunksKnown++;
        else stats.chunksNew++;
        stats.bytesStored += r.storedBytes;
      },
    });
    return { filename, index, stream };
  };
  const outputs =
    mode === 'data'
      ? [makeStream(`${base}.ppxar.didx`, true), makeStream(`${base}.mpxar.didx`, false)]
      : [makeStream(`${base}.pxar.didx`, false)];
  const metaOut = outputs[outputs.length - 1];
  const payloadOut = mode === 'data' ? outputs[0] : null;

  const cliPatterns = (opts.excludes ?? []).map((p) => parsePattern(p)).filter((p): p is ExcludePattern => !!p);
  if (opts.skipLostAndFound) cliPatterns.push(parsePattern('lost+found/')!);
  const cliLines = [...(opts.excludes ?? []), ...(opts.skipLostAndFound ? ['lost+found/'] : [])];
  let prelude: Buffer | undefined;
  if (mode === 'data' && cliLines.length) {
    prelude = Buffer.from(JSON.stringify({ 'exclude-patterns': ExcludeMatcher.serialize(cliLines) }));
  }
  const encoder =
    mode === 'data'
      ? new PxarEncoder({ variant: 'split', output: new StreamSink(metaOut.stream), payloadOutput: new StreamSink(payloadOut!.stream), prelude })
      : new PxarEncoder({ variant: 'unified', output: new StreamSink(metaOut.stream) });

  const catalog = opts.catalog;
  const dirOpts: ReadDirOptions = { xattrs, acls: xattrs, fcaps: xattrs, flags: true, projid: true };
  const prefetch = new DirPrefetcher(dirOpts);
  const hardlinks = new Map<string, { linkOffset: number; path: Buffer }>();
  const rootDev = root.dev;
  const allowedDevs = new Set<bigint>([rootDev, ...(opts.includeDevices ?? [])]);

  const drain = async () => {
    for (const o of outputs) await o.stream.drain();
  };
  const checkAbort = () => {
    if (opts.signal?.aborted) throw new AbortedError('backup aborted');
  };
  let lastProgress = 0;
  const progress = (rel: Buffer) => {
    if (!opts.onProgress) return;
    const t = performance.now();
    if (t - lastProgress < 200) return;
    lastProgress = t;
    opts.onProgress({ archive: opts.archiveName, entries: stats.entries, bytesRead: stats.bytesRead, path: rel.toString() });
  };

  const rootMeta: Metadata = {
    mode: root.mode,
    flags: 0n,
    uid: root.uid,
    gid: root.gid,
    mtime: { secs: root.mtimeSec, nanos: root.mtimeNsec },
    xattrs: [],
    acl: { users: [], groups: [], defaultUsers: [], defaultGroups: [] },
  };
  // Root metadata through the same policy as every other directory.
  const rootList = await readDir(path.dirname(rootPath), dirOpts).catch(() => null);
  if (rootList) {
    const name = Buffer.from(path.basename(rootPath));
    for (let i = 0; i < rootList.length; i++) {
      if (rootList.name(i).equals(name)) {
        Object.assign(rootMeta, entryMetadata(rootList, i, { xattrs, describe: () => rootPath }));
        break;
      }
    }
  }

  encoder.begin(rootMeta);
  const joinRel = (rel: Buffer, name: Buffer) => (rel.length ? Buffer.concat([rel, Buffer.from('/'), name]) : Buffer.from(name));
  const joinAbs = (dir: Buffer, name: Buffer) => Buffer.concat([dir, Buffer.from('/'), name]);

  /** Read regular files of a directory: small ones batched natively, big ones streamed. */
  const readBatch = async (jobs: FileJob[]): Promise<Map<number, FileData>> => {
    const out = new Map<number, FileData>();
    const r = await readFilesExact(jobs.map((j) => j.path), jobs.map((j) => j.size));
    let off = 0;
    jobs.forEach((j, k) => {
      const st = r.status[k];
      const data = r.data.subarray(off, off + j.size);
      off += j.size;
      if (st === READ_OK) out.set(j.index, { data });
      else if (st === READ_SHRUNK) out.set(j.index, { data, changed: 'shrunk' });
      else if (st === READ_GREW) out.set(j.index, { data, changed: 'grew' });
      else {
        const e = r.errors.find((x) => x.index === k);
        out.set(j.index, { data: null, error: e ? e.message : errnoCode(-st) });
      }
    });
    return out;
  };

  const streamLargeFile = async (abs: Buffer, size: number, rel: Buffer): Promise<'ok' | 'shrunk' | 'grew'> => {
    const fh = await open(abs, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NOATIME).catch(() => open(abs, fsc.O_RDONLY | fsc.O_NOFOLLOW));
    let done = 0;
    let result: 'ok' | 'shrunk' | 'grew' = 'ok';
    try {
      while (done < size) {
        const want = Math.min(READ_SIZE, size - done);
        const buf = Buffer.allocUnsafe(want);
        let got = 0;
        while (got < want) {
          const { bytesRead } = await fh.read(buf, got, want - got, done + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        stats.bytesRead += got;
        if (got < want) {
          buf.fill(0, got);
          result = 'shrunk';
        }
        encoder.writeFileData(buf);
        done += want;
        if (payloadOut?.stream.full || metaOut.stream.full) await drain();
        checkAbort();
      }
      if (result === 'ok') {
        const probe = Buffer.allocUnsafe(1);
        const { bytesRead } = await fh.read(probe, 0, 1, size);
        if (bytesRead > 0) result = 'grew';
      }
    } finally {
      await fh.close();
    }
    if (result !== 'ok') warn(`${rel.toString()}: file size changed while reading (${result})`);
    return result;
  };

  const encodeDir = async (absDir: Buffer, rel: Buffer, list: DirEntries, excl: ExcludeMatcher): Promise<void> => {
    // .pxarexclude of this directory applies to it and below.
    const exIdx = findName(list, PXAREXCLUDE);
    if (exIdx >= 0 && (list.mode(exIdx) & S_IFMT) === S_IFREG) {
      const r = await readFilesExact([joinAbs(absDir, PXAREXCLUDE)], [list.size(exIdx)]);
      if (r.status[0] >= 0) excl = excl.with(parsePatternFile(r.data.toString('utf8'), rel.toString()));
    }

    // Decide what to archive, and start listings of subdirectories and reads of small files.
    const keep: number[] = [];
    const subdirs: number[] = [];
    for (let i = 0; i < list.length; i++) {
      const name = list.name(i);
      if (list.status(i) !== 0) {
        warn(`${joinRel(rel, name).toString()}: vanished during backup (${errnoCode(list.status(i))}), skipped`);
        continue;
      }
      const type = list.mode(i) & S_IFMT;
      const relName = joinRel(rel, name).toString();
      if (excl.patterns.length && excl.excluded(relName, name.toString(), type === S_IFDIR)) continue;
      keep.push(i);
      if (type === S_IFDIR && allowedDevs.has(list.dev(i)) || (type === S_IFDIR && opts.allFileSystems)) subdirs.push(i);
    }
    const listings = new Map<number, PrefetchItem>();
    const ps = prefetch.request(subdirs.map((i) => joinAbs(absDir, list.name(i))));
    subdirs.forEach((i, k) => listings.set(i, ps[k]));

    const batches: FileJob[][] = [];
    let cur: FileJob[] = [];
    let curBytes = 0;
    for (const i of keep) {
      if ((list.mode(i) & S_IFMT) !== S_IFREG) continue;
      const size = list.size(i);
      if (size > SMALL_FILE || size === 0) continue;
      if (list.nlink(i) > 1 && hardlinks.has(`${list.dev(i)}:${list.ino(i)}`)) continue;
      cur.push({ index: i, path: joinAbs(absDir, list.name(i)), size });
      curBytes += size;
      if (cur.length >= BATCH_FILES || curBytes >= BATCH_BYTES) {
        batches.push(cur);
        cur = [];
        curBytes = 0;
      }
    }
    if (cur.length) batches.push(cur);
    const batchOf = new Map<number, number>();
    batches.forEach((b, k) => b.forEach((j) => batchOf.set(j.index, k)));
    const batchResults: Array<Promise<Map<number, FileData>> | undefined> = [];
    const startBatch = (k: number) => {
      if (k < batches.length && !batchResults[k]) {
        batchResults[k] = readBatch(batches[k]);
        batchResults[k]!.catch(() => undefined);
      }
    };
    for (let k = 0; k < FILE_BATCHES_AHEAD; k++) startBatch(k);

    for (const i of keep) {
      checkAbort();
      const name = list.name(i);
      const relName = joinRel(rel, name);
      const mode = list.mode(i);
      const type = mode & S_IFMT;
      const describe = () => relName.toString();
      stats.entries++;
      progress(relName);
      let meta: Metadata;
      try {
        meta = entryMetadata(list, i, { xattrs, describe });
      } catch (e) {
        warn(`${describe()}: ${(e as Error).message}, skipped`);
        continue;
      }
      switch (type) {
        case S_IFDIR: {
          stats.directories++;
          const listing = listings.get(i);
          if (!listing) {
            // Mount point of another file system: archived as an empty directory.
            encoder.enterDirectory(name, meta);
            catalog?.startDirectory(name);
            encoder.leaveDirectory();
            catalog?.endDirectory();
            break;
          }
          listings.delete(i);
          let sub: DirEntries;
          try {
            sub = await prefetch.take(listing);
          } catch (e) {
            warn(`${describe()}: cannot read directory (${(e as Error).message}), skipped`);
            break;
          }
          encoder.enterDirectory(name, meta);
          catalog?.startDirectory(name);
          await encodeDir(joinAbs(absDir, name), relName, sub, excl);
          encoder.leaveDirectory();
          catalog?.endDirectory();
          break;
        }
        case S_IFREG: {
          const size = list.size(i);
          const key = list.nlink(i) > 1 ? `${list.dev(i)}:${list.ino(i)}` : null;
          const link = key ? hardlinks.get(key) : undefined;
          if (link) {
            encoder.addHardlink(name, link.path, link.linkOffset);
            catalog?.addHardlink(name);
            break;
          }
          let data: FileData | undefined;
          const b = batchOf.get(i);
          if (b !== undefined) {
            startBatch(b);
            for (let k = 1; k <= FILE_BATCHES_AHEAD; k++) startBatch(b + k);
            data = (await batchResults[b]!).get(i);
            if (!data?.data) {
              warn(`${describe()}: cannot read file (${data?.error ?? 'unknown error'}), skipped`);
              break;
            }
            if (data.changed) warn(`${describe()}: file size changed while reading (${data.changed})`);
            stats.bytesRead += size;
          }
          stats.files++;
          if (payloadOut) payloadOut.stream.suggest(encoder.payloadPosition);
          if (data?.data || size === 0) {
            const r = encoder.beginFile(name, meta, size);
            if (size) {
              for (let o = 0; o < size; o += READ_SIZE) encoder.writeFileData(data!.data!.subarray(o, Math.min(size, o + READ_SIZE)));
            }
            encoder.endFile();
            if (key) hardlinks.set(key, { linkOffset: r.linkOffset, path: relName });
          } else {
            // Large file: open first so a vanished file is skipped before anything is encoded.
            const abs = joinAbs(absDir, name);
            let fh;
            try {
              fh = await open(abs, fsc.O_RDONLY | fsc.O_NOFOLLOW);
              await fh.close();
            } catch (e) {
              warn(`${describe()}: cannot read file (${(e as Error).message}), skipped`);
              stats.files--;
              break;
            }
            const r = encoder.beginFile(name, meta, size);
            await streamLargeFile(abs, size, relName);
            encoder.endFile();
            if (key) hardlinks.set(key, { linkOffset: r.linkOffset, path: relName });
          }
          catalog?.addFile(name, size, meta.mtime.secs);
          break;
        }
        case S_IFLNK:
          encoder.addSymlink(name, meta, Buffer.from(list.symlinkTarget(i) ?? Buffer.alloc(0)));
          catalog?.addSymlink(name);
          break;
        case S_IFBLK:
        case S_IFCHR:
          encoder.addDevice(name, meta, list.rdevMajor(i), list.rdevMinor(i));
          if (type === S_IFBLK) catalog?.addBlockDevice(name);
          else catalog?.addCharDevice(name);
          break;
        case S_IFIFO:
          encoder.addFifo(name, meta);
          catalog?.addFifo(name);
          break;
        case S_IFSOCK:
          encoder.addSocket(name, meta);
          catalog?.addSocket(name);
          break;
        default:
          warn(`${describe()}: unknown file type ${mode.toString(8)}, skipped`);
      }
      if (payloadOut?.stream.full || metaOut.stream.full) await drain();
    }
    prefetch.drop([...listings.values()]);
  };

  try {
    const rootListing = await readDir(rootPath, dirOpts);
    catalog?.startDirectory(Buffer.from(mode === 'data' ? `${base}.mpxar.didx` : `${base}.pxar.didx`));
    await encodeDir(Buffer.from(rootPath), Buffer.alloc(0), rootListing, new ExcludeMatcher(cliPatterns));
    catalog?.endDirectory();
    encoder.finish();
    const files: ArchiveFile[] = [];
    for (const o of outputs) {
      const s = await o.stream.end();
      stats.streamBytes += s.size;
      const fin = o.index.finish();
      files.push({ filename: o.filename, data: fin.data, csum: fin.csum, size: fin.size, chunks: fin.count });
    }
    stats.seconds = (performance.now() - t0) / 1000;
    return { files, stats };
  } catch (e) {
    // Let in-flight chunk work settle so nothing writes after we return.
    await Promise.allSettled(outputs.map((o) => o.stream.end()));
    throw e;
  }
}

const PXAREXCLUDE = Buffer.from('.pxarexclude');

function findName(list: DirEntries, name: Buffer): number {
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const c = Buffer.compare(list.name(mid), name);
    if (c === 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}
