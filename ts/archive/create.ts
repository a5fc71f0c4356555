/**
 * Archive creation: walk a directory tree and encode it as pxar, cut into chunks.
 *
 * - `legacy`: one unified pxar v1 stream (`<name>.pxar.didx`) plus a catalog entry set.
 * - `data`: a split pxar v2 archive, metadata stream (`<name>.mpxar.didx`) and payload stream
 *   (`<name>.ppxar.didx`); every regular file suggests a chunk boundary at its PAYLOAD header.
 * - `metadata`: like `data`, but each entry is looked up in the previous snapshot's metadata
 *   archive; an unchanged regular file is not read: it becomes a PAYLOAD_REF into the previous
 *   payload chunks, which are injected into the new payload index (change-detection.md §3–6:
 *   lookahead cache, contiguous ranges, 10 % padding threshold with re-encode fallback,
 *   kept-back chunk, hardlinks). Without a previous archive it encodes exactly as `data`.
 *
 * Walk (policy here, mechanism native): each directory is listed with one native call
 * (lstat + xattrs + flags, sorted by raw name, as PBS); listings of upcoming directories are
 * prefetched in DFS order with bounded look-ahead; small files are read in batches by one
 * native call each (exactly their stat size: shrunk → zero-padded, grown → truncated, as PBS),
 * large files in 4 MiB reads. Payload bytes go disk → chunk stream → chunk store without
 * per-byte JS work. Memory is bounded by the look-ahead windows (and, in metadata mode, by the
 * lookahead cache capacity), not by the tree size.
 *
 * Entries that vanish or cannot be read mid-backup produce a warning and are left out; the
 * archive stays consistent.
 */
import { createHash } from 'node:crypto';
import { realpath } from 'node:fs/promises';
import { constants as fsc, readFileSync } from 'node:fs';
import path from 'node:path';
import {
  DirWalker,
  readFilesExact,
  statEntries,
  treeUnchanged,
  UNCHANGED_RECORD,
  READ_GREW,
  READ_OK,
  READ_SHRUNK,
  errnoCode,
  openFile,
  takeHeldFile,
  type DirEntries,
  type FdFile,
  type ReadDirOptions,
} from '../native/fs.js';
import { PLAIN_RUN_FIELDS, PxarEncoder, type ByteSink } from '../format/pxar/encoder.js';
import { MAX_PATH_LEN } from '../format/pxar/constants.js';
import { emptyAcl, metadataEqualForReuse, NO_ACL, type Metadata } from '../format/pxar/metadata.js';
import type { AccessorEntry, PxarAccessor, PxarDirectory } from '../format/pxar/accessor.js';
import { CatalogWriter } from '../format/catalog.js';
import { DynamicIndex, DynamicIndexWriter, type ChunkEntry } from '../format/dynamic-index.js';
import { ChunkStream, DEFAULT_CHUNK_SIZE, MAX_INJECT_CHUNKS, type ChunkRecord, type StoreResult } from './chunk-stream.js';
import { cachedEntryMetadata, entryMetadata, plainMetadata, statMetadata, type MetadataOptions } from './fs-metadata.js';
import { loadMetadataCache, MetadataCacheBuilder, PLAIN_DIRECTORY, type LoadedMetadataCache, type MetadataCache } from './metadata-cache.js';
import { ExcludeMatcher, parsePattern, parsePatternFile, type ExcludePattern } from './exclude.js';
import { DOUBLE_FIELD } from '../format/double.js';

export type ArchiveMode = 'legacy' | 'data' | 'metadata';

/** Where chunks go: the local chunk store or a remote writer session. */
export interface ChunkUploader {
  /** Store a new chunk (`rec.blob` set) or register a reused or known one (`blob` null). */
  upload(archive: string, rec: ChunkRecord): Promise<{ isDuplicate: boolean; storedBytes: number }>;
  /**
   * Whether the target already has this chunk (then it is not encoded, and `upload` gets it with
   * `blob: null`). Without it every chunk is encoded and sent.
   */
  known?(digest: Buffer): boolean | Promise<boolean>;
  /**
   * Hash, dedup and store a chunk in one step (ChunkStreamOptions.store); `upload` then gets
   * its record with `blob: null` (and `stored` when it was written).
   */
  store?(data: Uint8Array, compress: boolean): Promise<StoreResult>;
  /**
   * How many `upload` calls may be in flight at once (default 1: each is awaited before the
   * next). Calls are always made in stream order.
   */
  readonly concurrency?: number;
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
  /** Metadata mode: the previous snapshot's archive (without it, metadata mode encodes as data). */
  previous?: PreviousArchive;
  /** Metadata mode: lookahead cache capacity in entries. */
  lookaheadCapacity?: number;
  /**
   * Metadata cache file (archive/metadata-cache.ts) recorded with `previous`: used only when it
   * names `previous.metadataIndexCsum` and is intact, in metadata mode, with xattrs on.
   * Entries it lists as unchanged are not opened; their xattrs, ACLs, fcaps, flags and project
   * id are taken from `previous`, and files it records as plain files of `previous` are
   * reused from their recorded payload offsets. A cache marked as a fixed point whose settings
   * are this backup's lets a tree it finds unchanged reuse `previous` as it is (module doc of
   * metadata-cache.ts). Loaded already, it may carry that check, started early (startTreeCheck).
   */
  metadataCache?: Buffer | LoadedMetadataCache;
  /**
   * Record the metadata cache of this archive (result `metadataCache`): entries whose ctime
   * (ns since the epoch) is before this value. Not recorded with xattrs off or in legacy mode.
   */
  recordMetadataCacheBefore?: bigint;
  /** PRELUDE content of a split archive (default: the exclude patterns, if any). */
  prelude?: Buffer;
  signal?: AbortSignal;
  onWarning?: (message: string) => void;
  onProgress?: (p: ArchiveProgress) => void;
  /** Minimum milliseconds between progress events (default 200; 0 = before every entry). */
  progressIntervalMs?: number;
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
  /** Metadata mode: unchanged files referenced in reused chunks (not read). */
  reusedFiles: number;
  /** Files and directories not opened: their xattrs, ACLs, flags came from the metadata cache. */
  metadataCached: number;
  reusedBytes: number;
  /** Metadata mode: reusable files encoded anew (padding threshold exceeded). */
  reencodedFiles: number;
  /** Metadata mode: unreferenced bytes in reused chunks. */
  paddingBytes: number;
  injectedChunks: number;
  injectedBytes: number;
  /**
   * Metadata mode: the tree was found unchanged against a fixed-point metadata cache, so the
   * previous archive's indexes were reused as they are (nothing was encoded).
   */
  unchangedTree: boolean;
  warnings: number;
  seconds: number;
}

export interface CreateArchiveResult {
  /** Index files in manifest order (payload before metadata for split archives). */
  files: ArchiveFile[];
  stats: ArchiveStats;
  /** The metadata cache of this archive, when recorded (recordMetadataCacheBefore). */
  metadataCache?: MetadataCache;
}

/**
 * The directory a backup of `source` walks: a symlink given as the source is followed, as
 * upstream's client does (it checks the source with stat, not lstat, and opens it as a
 * directory); nothing below it is. Paths in the archive's walk (and its metadata cache) are
 * below this one.
 */
export async function sourceRoot(source: string): Promise<string> {
  const given = path.resolve(source);
  return realpath(given).catch(() => given);
}

/** `root.pxar` → base name `root`; PBS accepts `<name>.pxar` only. */
export function archiveBaseName(archiveName: string): string {
  const m = /^([A-Za-z0-9_-]+)\.pxar$/.exec(archiveName);
  if (!m) throw new Error(`invalid archive name ${JSON.stringify(archiveName)} (expected <name>.pxar with [A-Za-z0-9_-] in the name)`);
  return m[1];
}

const SMALL_FILE = 1024 * 1024;
/** Files read in batches (FileBatches, SubdirPrereads, readOne); larger ones are streamed. */
const batched = (size: number): boolean => size > 0 && size <= SMALL_FILE;
/**
 * Bytes of a batch read (at most; a file of SMALL_FILE alone). 1 MiB against 2: a full backup
 * of the linux tree peaked ~4 MiB lower (read buffers of 1 MiB) at the same speed. Exported for
 * its tests only.
 */
export const BATCH_BYTES = 1024 * 1024;
const BATCH_FILES = 256;
/** Size of a recycled read buffer: a batch holds at most BATCH_BYTES (or one file). */
const READ_BUFFER = Math.max(BATCH_BYTES, SMALL_FILE);
/** Released read buffers kept for reuse (4 against 6, with PREREAD_BUFFERS 8 against 12: a full
 * backup of the linux tree peaked 1.3 MiB lower at the same speed, 5 alternating pairs). */
const SPARE_READ_BUFFERS = 4;
/**
 * Piece size of large-file reads and of writes into the payload stream. The payload window
 * keeps room for one piece behind a maximal chunk: 1 MiB (was 4) took 5.5 MiB off a full
 * backup's peak RSS at the same speed.
 */
const READ_SIZE = 1024 * 1024;
/**
 * Listings the directory walk makes ahead of the encoder (TreePrefetcher), and the bytes they
 * may hold: 256 listings of a tree of 500-entry directories held ~25 MB (a full backup of 500k
 * small files peaked at 193 MiB against 153 with 32 listings).
 */
const DIR_LOOKAHEAD = 256;
const DIR_LOOKAHEAD_BYTES = 4 * 1024 * 1024;
/** Threads of the directory walk. */
const WALK_THREADS = 2;
const FILE_BATCHES_AHEAD = 2;
/** Read buffers out at most before a read ahead waits (FileBatches.start). */
const READ_AHEAD_BUFFERS = 2;
/**
 * Subdirectory pre-reads (SubdirPrereads): the first small files of the next PREREAD_SIBLINGS
 * subdirectories are read before the encoder enters them, at most PREREAD_BYTES each and
 * PREREAD_BUFFERS in all. Without them the encoder waited for every directory's first batch
 * (linux tree, 5k directories: a full backup into a datastore on tmpfs took 3.6-3.8 s, with
 * them 3.4-3.5 s).
 */
const PREREAD_SIBLINGS = 4;
const PREREAD_BYTES = 256 * 1024;
const PREREAD_BUFFERS = 8;

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

/** What encodeDir decided of a directory's entries, by entry index of its listing. */
class DirPlan {
  /** The entries to archive, in order. */
  readonly keep: number[] = [];
  // Made at the listing's length: stores past the end of an array (entries of the fast path
  // leave gaps) deoptimized encodeDir ("out of bounds") in most backups.
  readonly metas: Metadata[];
  readonly ranges: Array<[number, number] | null>;
  readonly prevOf: Array<AccessorEntry | undefined>;
  /** 1 for plain reusable files (no entry in `metas`). */
  readonly plain: Uint8Array;
  /** Metadata-cache record of a file that will be archived as a plain file or of a directory, else -1. */
  readonly recOf: Int32Array;
  /** Subdirectories to descend into. */
  readonly subdirs: number[] = [];
  /** Position of the merge join with `prev` (classify). */
  j = 0;

  constructor(
    n: number,
    readonly hasPatterns: boolean,
    /** The previous archive's listing of the directory, if read. */
    readonly prev: AccessorEntry[] | null,
  ) {
    this.metas = new Array<Metadata>(n);
    this.ranges = new Array<[number, number] | null>(n);
    this.prevOf = new Array<AccessorEntry | undefined>(n);
    this.plain = new Uint8Array(n);
    this.recOf = new Int32Array(n).fill(-1);
  }
}

/** Sink that forwards encoder output to a chunk stream. */
class StreamSink implements ByteSink {
  constructor(readonly stream: ChunkStream) {}
  write(buf: Buffer): void {
    this.stream.write(buf);
  }
}

/**
 * Directory listings ahead of the encoder: a `DirWalker` lists the tree in DFS preorder (the
 * order the encoder takes directories in) on native threads, at most `DIR_LOOKAHEAD` listings
 * ahead; taking a listing it has made is a synchronous call. The encoder takes the node of every
 * subdirectory it descends into and drops the nodes it skips (excluded: their speculative
 * subtrees are abandoned). Exported for its tests only.
 */
export class TreePrefetcher {
  private walker: DirWalker | null = null;
  /** Nodes the encoder waits for, by id. */
  private readonly waiting = new Map<number, () => void>();

  constructor(
    private readonly opts: ReadDirOptions,
    /** Devices to descend into; null: all. */
    private readonly devs: bigint[] | null,
    private readonly lookahead = DIR_LOOKAHEAD,
    private readonly threads = WALK_THREADS,
    private readonly lookaheadBytes = DIR_LOOKAHEAD_BYTES,
  ) {}

  root(path: Buffer): PrefetchNode {
    this.walker?.close();
    this.waiting.clear();
    this.walker = new DirWalker(path, this.opts, this.devs, this.lookahead, this.lookaheadBytes, this.threads, (id) => this.ready(id));
    return newNode(0, path);
  }

  /** The listing of `node`; listed next if the walk has not reached it yet. */
  async take(node: PrefetchNode): Promise<DirEntries> {
    node.taken = true;
    while (!this.peek(node)) {
      const w = this.open();
      if (!w.want(node.id)) continue;
      await new Promise<void>((resolve) => {
        if (this.waiting.size === 0) w.ref(true);
        this.waiting.set(node.id, resolve);
      });
    }
    if (node.error) throw node.error;
    return node.list!;
  }

  /**
   * Whether `node`'s listing is here (then in `node.list`, or `node.error`, with its child
   * nodes), fetching it from the walk if it is made; does not take the node.
   */
  peek(node: PrefetchNode): boolean {
    if (node.children) return true;
    if (node.dropped) return false;
    const r = this.open().poll(node.id);
    if (!r) return false;
    const kids = new Map<number, PrefetchNode>();
    if (r.list instanceof Error) node.error = r.list;
    else {
      const list = r.list;
      node.list = list;
      for (let i = 0; i < r.children.length; i++) {
        const id = r.children[i];
        if (id >= 0) kids.set(i, newNode(id, joinAbs(node.path, list.name(i))));
      }
    }
    node.children = kids;
    return true;
  }

  /**
   * The encoder is done with a taken node: forget its listing and child nodes, so memory is
   * bounded by the lookahead and the current path, not by the size of the tree.
   */
  release(node: PrefetchNode): void {
    node.list = null;
    node.children = null;
  }

  /** Child nodes of a taken node, by entry index in its listing (after the listing resolved). */
  children(node: PrefetchNode): Map<number, PrefetchNode> {
    return node.children ?? new Map();
  }

  /** The encoder will not descend into these: abandon them and their speculative subtrees. */
  drop(nodes: Iterable<PrefetchNode>): void {
    const ids: number[] = [];
    const visit = (n: PrefetchNode): void => {
      if (n.dropped || n.taken) return;
      n.dropped = true;
      if (n.children) {
        // fetched already (peeked): the walk has forgotten it, not its subdirectories
        for (const c of n.children.values()) visit(c);
        n.list = null;
        n.children = null;
      } else ids.push(n.id);
    };
    for (const n of nodes) visit(n);
    if (this.walker && ids.length) this.walker.drop(ids);
  }

  /** Stop the walk (its threads finish the listings they are making). */
  close(): void {
    this.walker?.close();
    this.walker = null;
    for (const resolve of this.waiting.values()) resolve();
    this.waiting.clear();
  }

  private open(): DirWalker {
    if (!this.walker) throw new Error('the directory walk is closed');
    return this.walker;
  }

  private ready(id: number): void {
    const resolve = this.waiting.get(id);
    if (!resolve) return;
    this.waiting.delete(id);
    if (this.waiting.size === 0) this.walker?.ref(false);
    resolve();
  }
}

export interface PrefetchNode {
  /** The walk's node id. */
  id: number;
  path: Buffer;
  /** The listing once fetched (until released). */
  list: DirEntries | null;
  /** Why the directory could not be listed. */
  error: Error | null;
  /** Child nodes by entry index in `list`, once fetched. */
  children: Map<number, PrefetchNode> | null;
  dropped: boolean;
  taken: boolean;
}

function newNode(id: number, path: Buffer): PrefetchNode {
  return { id, path, list: null, error: null, children: null, dropped: false, taken: false };
}

interface FileJob {
  index: number;
  path: Buffer;
  size: number;
  /** Token of the descriptor the walk held for it (`DirEntries.fdToken`); -1 or absent: none. */
  fd?: number;
}

interface FileData {
  /** Data of exactly `size` bytes, or null when the file could not be read. */
  data: Buffer | null;
  error?: string;
  changed?: 'shrunk' | 'grew';
}

/** The data of an empty file (nothing to read). */
const EMPTY_FILE: FileData = { data: Buffer.alloc(0) };

/** Previous snapshot's split archive, for metadata-mode change detection. */
export interface PreviousArchive {
  /** Random-access reader over the previous `.mpxar`. */
  accessor: PxarAccessor;
  /** The previous `.ppxar.didx`: its chunks are reused for unchanged files. */
  payloadIndex: DynamicIndex;
  /** Csum of the previous `.mpxar.didx` (as in its manifest): names the metadata cache that fits. */
  metadataIndexCsum?: Buffer;
  /** The previous `.mpxar.didx` and the `.ppxar.didx`'s csum: an unchanged tree reuses both indexes. */
  metadataIndex?: DynamicIndex;
  payloadIndexCsum?: Buffer;
}

/** Devices the walk descends into: the root's and the included ones (unless all file systems). */
function allowedDevices(rootDev: bigint, opts: { includeDevices?: bigint[] }): Set<bigint> {
  return new Set([rootDev, ...(opts.includeDevices ?? [])]);
}

/** What a tree check depends on besides the table: the walk's root and devices (null: any). */
function treeCheckKey(rootPath: string, devices: bigint[] | null): string {
  return JSON.stringify([rootPath, devices?.map(String) ?? null]);
}

/**
 * Start the unchanged-tree check of a metadata-mode backup of `source` early (while the
 * caller opens the previous snapshot), if `cache` can lead to one: a fixed point recorded with
 * xattrs on. `createArchive` uses it when it has the same root and devices, and decides.
 */
export async function startTreeCheck(cache: LoadedMetadataCache, source: string, opts: { allFileSystems?: boolean; includeDevices?: bigint[]; xattrs?: boolean }): Promise<void> {
  if (!cache.fixedPoint || opts.xattrs === false) return;
  const rootPath = await sourceRoot(source);
  const root = await statEntries(rootPath).catch(() => null);
  if (!root) return;
  const devices = opts.allFileSystems ? null : [...allowedDevices(root.dev(0), opts)];
  const result = treeUnchanged(rootPath, cache.table, devices).catch((e: Error) => ({ unchanged: false, entries: 0, directories: 0, reason: e.message }));
  cache.check = { key: treeCheckKey(rootPath, devices), result };
}

/** Upstream re-encodes a cache flush whose unreferenced bytes exceed this share. */
export const CHUNK_PADDING_THRESHOLD = 0.1;
/** Lookahead cache capacity when RLIMIT_NOFILE cannot be read (upstream's value when unset). */
export const FALLBACK_LOOKAHEAD_CAPACITY = 512;

/**
 * PBS's lookahead cache capacity (change-detection.md §2 step 3): `hard − soft/2` of
 * RLIMIT_NOFILE, read from `/proc/self/limits`. It bounds the cache's memory and how long a
 * run of reused files can grow: with tiny files, a small capacity keeps ranges far shorter
 * than a chunk, the 10 % padding rule then re-encodes them (as upstream does).
 */
export function defaultLookaheadCapacity(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m) {
      const soft = m[1] === 'unlimited' ? 2 ** 20 : Number(m[1]);
      const hard = m[2] === 'unlimited' ? 2 ** 20 : Number(m[2]);
      const cap = hard - Math.floor(soft / 2);
      if (cap > 0) return Math.min(cap, 2 ** 22);
    }
  } catch {
    // not Linux / no procfs
  }
  return FALLBACK_LOOKAHEAD_CAPACITY;
}
const U64 = 2n ** 64n;

interface ReuseChunk {
  digest: Buffer;
  size: number;
  /** Bytes of the chunk not covered by reused ranges (u64 semantics: may wrap). */
  padding: bigint;
}

type Cached =
  /** `dup`: another name of an inode the cache saw before (change-detection.md §6), never reused itself. */
  | { kind: 'file'; name: Buffer; meta: Metadata; size: number; rel: number; dirAbs: Buffer; dirRel: Buffer; key: string | null; dup: boolean; rec: number }
  | { kind: 'symlink'; name: Buffer; meta: Metadata; target: Buffer }
  | { kind: 'device'; name: Buffer; meta: Metadata; major: number; minor: number; block: boolean }
  | { kind: 'fifo' | 'socket'; name: Buffer; meta: Metadata }
  | { kind: 'dir'; name: Buffer; meta: Metadata }
  | { kind: 'dirEnd' }
  /**
   * Consecutive plain reusable files of one directory (see `plainReuse`) whose previous
   * payloads lie back to back; the cache's range started at `rs` when they were pushed. Their
   * names and numbers are files `from..to` of the cache's RunStore: one small object per run
   * instead of an object, a Metadata object and the directory's whole listing per file. In a
   * mostly unchanged tree nearly every file is in one of these, and all of them stay cached
   * until the next flush.
   */
  | { kind: 'run'; from: number; to: number; rs: number; dirAbs: Buffer; dirRel: Buffer };

type CachedFile = Extract<Cached, { kind: 'file' }>;
type CachedRun = Extract<Cached, { kind: 'run' }>;
/** A file a flush reads again: a cached file, or a run's file by its number in the run store. */
type Reread = CachedFile | number;

/**
 * An empty array for cached entries that already holds objects as far as V8 is concerned: a
 * fresh `[]` holds small integers until its first push, which deoptimized the code that pushes
 * (encodeEntries, with the cache's push inlined) once per backup.
 */
function newEntries(): Cached[] {
  const a: Cached[] = [{ kind: 'dirEnd' }];
  a.pop();
  return a;
}

/** ArchiveStats fields that count bytes (past 2^30: double from the start, see DOUBLE_FIELD). */
const BYTE_COUNTERS = ['bytesRead', 'streamBytes', 'bytesStored', 'reusedBytes', 'paddingBytes', 'injectedBytes'] as const;

/** Numbers per file of a run: mode, uid, gid, mtime seconds, mtime nanoseconds, size, previous payload offset (as the encoder's addPlainPayloadRefs takes them). */
const RUN_FIELDS = PLAIN_RUN_FIELDS;

/**
 * The files of a lookahead cache's runs, column by column and shared by all of them (file k's
 * name ends at `ends[k]` in `names`, where file k + 1's begins; RUN_FIELDS numbers each, as
 * `addPlainPayloadRefs` takes them; `recs`: metadata-cache records, -1 for none). A run of
 * its own arrays cost four typed arrays (most with their own backing store, ~0.6 µs each to
 * make) and the garbage collector copied them all while they stayed cached.
 */
class RunStore {
  names = Buffer.allocUnsafe(16 * 1024);
  ends = new Uint32Array(RUN_STORE_FIRST);
  nums = new Float64Array(RUN_STORE_FIRST * RUN_FIELDS);
  recs = new Int32Array(RUN_STORE_FIRST);
  /** Files stored, and bytes of their names. */
  count = 0;
  bytes = 0;

  /** Room for `files` more files with `nameBytes` more bytes of names. */
  reserve(files: number, nameBytes: number): void {
    const n = this.count + files;
    if (n > this.recs.length) {
      const cap = Math.max(n, this.recs.length * 2);
      const ends = new Uint32Array(cap);
      ends.set(this.ends.subarray(0, this.count));
      this.ends = ends;
      const nums = new Float64Array(cap * RUN_FIELDS);
      nums.set(this.nums.subarray(0, this.count * RUN_FIELDS));
      this.nums = nums;
      const recs = new Int32Array(cap);
      recs.set(this.recs.subarray(0, this.count));
      this.recs = recs;
    }
    const b = this.bytes + nameBytes;
    if (b > this.names.length) {
      const names = Buffer.allocUnsafe(Math.max(b, this.names.length * 2));
      this.names.copy(names, 0, 0, this.bytes);
      this.names = names;
    }
  }

  /**
   * Entries `idx` of `list` as files `from..` (returned): names, stat fields and metadata-cache
   * records `recOf[i]`; their payload offsets are the caller's.
   */
  add(list: DirEntries, idx: number[], recOf: Int32Array): number {
    const from = this.count;
    this.reserve(idx.length, list.nameBytes(idx));
    list.statFields(idx, this.nums, RUN_FIELDS, from);
    for (let q = 0; q < idx.length; q++) this.recs[from + q] = recOf[idx[q]];
    this.bytes = list.namesInto(idx, this.names, this.bytes, this.ends, from);
    this.count = from + idx.length;
    return from;
  }

  name(k: number): Buffer {
    return this.names.subarray(k === 0 ? 0 : this.ends[k - 1], this.ends[k]);
  }

  metadata(k: number): Metadata {
    const f = k * RUN_FIELDS;
    const n = this.nums;
    return plainMetadata(n[f], n[f + 1], n[f + 2], n[f + 3], n[f + 4]);
  }

  /**
   * Forget every file (their runs were replayed). The arrays are kept for the next ones unless
   * they grew large (a long flush): two stores alternate, and each would keep its largest.
   */
  clear(): void {
    this.count = 0;
    this.bytes = 0;
    if (this.recs.length > RUN_STORE_KEEP) Object.assign(this, new RunStore());
  }
}

/** A regular file encodeNewFiles may group: one link, plain metadata (see plainMetadataOf). */
function newPlainFile(list: DirEntries, i: number, meta: Metadata | undefined): boolean {
  return list.nlink(i) === 1 && meta !== undefined && plainMetadataOf(meta);
}

/** Files a RunStore has room for at first, and keeps room for across flushes (~5 MB). */
const RUN_STORE_FIRST = 1024;
const RUN_STORE_KEEP = 64 * 1024;

/** The lookahead cache of change-detection.md §4. */
class LookaheadCache {
  entries: Cached[] = newEntries();
  /** Files of the cached runs; `replayed` is the store of the runs being replayed (two alternate). */
  runs = new RunStore();
  replayed = new RunStore();
  enabled = false;
  fdEntries = 0;
  // payload-stream offsets: double from the start (see DOUBLE_FIELD), 0 after construction
  rangeStart = DOUBLE_FIELD;
  rangeEnd = DOUBLE_FIELD;
  lastChunk: ReuseChunk | null = null;
  readonly hardlinks = new Set<string>();

  constructor() {
    this.rangeStart = 0;
    this.rangeEnd = 0;
  }

  push(e: Cached): void {
    this.entries.push(e);
    if (e.kind !== 'dirEnd') {
      this.enabled = true;
      this.fdEntries++;
    }
  }

  /** Push an entry whose files `fdEntries` counts already (a run). */
  pushCounted(e: Cached): void {
    this.entries.push(e);
    this.enabled = true;
  }

  tryExtendRange(start: number, end: number): boolean {
    if (this.rangeEnd === 0) {
      this.rangeStart = start;
      this.rangeEnd = start;
    }
    if (this.rangeEnd === start) {
      this.rangeEnd = end;
      return true;
    }
    return false;
  }
}

/** change-detection.md §5 `lookup`, including its quirk at exact chunk ends. */
export function lookupReuseChunks(index: DynamicIndex, start: number, end: number): { chunks: ReuseChunk[]; startPad: number; endPad: number } {
  const i0 = index.findChunk(start);
  if (i0 < 0) throw new Error(`previous payload index: range ${start}..${end} starts beyond its end (${index.size})`);
  let prevEnd = i0 === 0 ? 0 : index.end(i0 - 1);
  const startPad = start - prevEnd;
  let endPad = 0;
  const chunks: ReuseChunk[] = [];
  for (let i = i0; i < index.count; i++) {
    const e = index.end(i);
    chunks.push({ digest: index.digest(i), size: e - prevEnd, padding: 0n });
    if (end < e) {
      endPad = e - end;
      break;
    }
    prevEnd = e;
  }
  chunks[0].padding += BigInt(startPad);
  chunks[chunks.length - 1].padding += BigInt(endPad);
  return { chunks, startPad, endPad };
}

const u64 = (v: bigint) => ((v % U64) + U64) % U64;

export async function createArchive(opts: CreateArchiveOptions): Promise<CreateArchiveResult> {
  return new Archiver(opts).run();
}

class Archiver {
  private readonly t0 = performance.now();
  private readonly mode: ArchiveMode;
  private readonly xattrs: boolean;
  private readonly stats: ArchiveStats;
  private readonly outputs: Array<{ filename: string; index: DynamicIndexWriter; stream: ChunkStream; sink: (rec: ChunkRecord) => Promise<void>; settle: () => Promise<void> }>;
  private readonly metaOut: { filename: string; index: DynamicIndexWriter; stream: ChunkStream };
  private readonly payloadOut: { filename: string; index: DynamicIndexWriter; stream: ChunkStream } | null;
  private encoder!: PxarEncoder;
  private readonly dirOpts: ReadDirOptions;
  private prefetch!: TreePrefetcher;
  private readonly hardlinks = new Map<string, { linkOffset: number; path: Buffer }>();
  private allowedDevs = new Set<bigint>();
  private readonly previous: PreviousArchive | null;
  private readonly cache: LookaheadCache | null;
  private readonly capacity: number;
  private readonly record: MetadataCacheBuilder | null;
  /** The previous archive's metadata cache, if it fits (it names the previous metadata archive). */
  private readonly prevCache: LoadedMetadataCache | null;
  /**
   * performance.now() of the last progress event, a double from the start (DOUBLE_FIELD): when
   * it started as the small integer 0, its first timestamp changed the archiver's layout in the
   * middle of the backup and deoptimized encodeDir.
   */
  private lastProgress = DOUBLE_FIELD;
  /** Buffers of subdirectory pre-reads (SubdirPrereads); null with a previous archive. */
  private readonly prereads: BufferPool | null;

  constructor(private readonly opts: CreateArchiveOptions) {
    this.lastProgress = 0;
    const base = archiveBaseName(opts.archiveName);
    this.previous = opts.mode === 'metadata' ? opts.previous ?? null : null;
    this.mode = opts.mode === 'metadata' && !this.previous ? 'data' : opts.mode;
    this.cache = this.previous ? new LookaheadCache() : null;
    this.prereads = this.previous ? null : new BufferPool(PREREAD_BYTES, PREREAD_BUFFERS);
    this.capacity = opts.lookaheadCapacity ?? defaultLookaheadCapacity();
    this.xattrs = opts.xattrs ?? true;
    // Without a previous archive every file with data is read: the walk keeps the descriptor
    // it opened each one with for that read (with one, most files are not read at all).
    this.dirOpts = { xattrs: this.xattrs, acls: this.xattrs, fcaps: this.xattrs, flags: true, projid: true, holdFds: !this.previous };
    // The metadata cache stands in for reads of xattrs, ACLs and fcaps: only with them on.
    const csum = this.previous?.metadataIndexCsum;
    const loaded = Buffer.isBuffer(opts.metadataCache) ? loadMetadataCache(opts.metadataCache) : opts.metadataCache;
    this.prevCache = csum && loaded?.indexCsum.equals(csum) && this.xattrs ? loaded : null;
    if (this.prevCache) this.dirOpts.unchanged = this.prevCache.table;
    this.record = opts.recordMetadataCacheBefore !== undefined && this.xattrs && this.mode !== 'legacy' ? new MetadataCacheBuilder(opts.recordMetadataCacheBefore) : null;
    this.stats = {
      archive: opts.archiveName,
      mode: this.mode,
      entries: 0,
      files: 0,
      directories: 0,
      bytesRead: DOUBLE_FIELD,
      streamBytes: DOUBLE_FIELD,
      chunks: 0,
      chunksNew: 0,
      chunksKnown: 0,
      bytesStored: DOUBLE_FIELD,
      reusedFiles: 0,
      metadataCached: 0,
      reusedBytes: DOUBLE_FIELD,
      reencodedFiles: 0,
      paddingBytes: DOUBLE_FIELD,
      injectedChunks: 0,
      injectedBytes: DOUBLE_FIELD,
      unchangedTree: false,
      warnings: 0,
      seconds: 0,
    };
    for (const k of BYTE_COUNTERS) this.stats[k] = 0;
    const avg = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
    const makeStream = (filename: string, payload: boolean) => {
      const index = new DynamicIndexWriter();
      const uploader = opts.uploader;
      const limit = Math.max(1, uploader.concurrency ?? 1);
      // Uploads in flight, started in stream order (the index is built in that order too).
      const pending = new Set<Promise<void>>();
      // The first failed upload fails the stream at its next chunk, or the archive at settle().
      let failure: unknown = null;
      const sink = async (rec: ChunkRecord) => {
        if (failure) throw failure;
        index.add(rec.offset + rec.size, rec.digest);
        this.stats.chunks++;
        const p: Promise<void> = uploader.upload(filename, rec).then(
          (r) => {
            if (r.isDuplicate) this.stats.chunksKnown++;
            else this.stats.chunksNew++;
            this.stats.bytesStored += r.storedBytes;
          },
          (e: unknown) => {
            failure ??= e;
          },
        );
        const tracked = p.finally(() => pending.delete(tracked));
        pending.add(tracked);
        while (pending.size >= limit) await Promise.race(pending);
        if (failure) throw failure;
      };
      const stream = new ChunkStream({
        avg,
        payload,
        // file data is written in READ_SIZE pieces, a drain check after each
        maxWrite: READ_SIZE,
        known: uploader.known ? (d) => uploader.known!(d) : undefined,
        store: uploader.store ? (d, c) => uploader.store!(d, c) : undefined,
        sink,
      });
      const settle = async () => {
        while (pending.size) await Promise.all(pending);
        if (failure) throw failure;
      };
      return { filename, index, stream, sink, settle };
    };
    this.outputs = this.mode === 'legacy' ? [makeStream(`${base}.pxar.didx`, false)] : [makeStream(`${base}.ppxar.didx`, true), makeStream(`${base}.mpxar.didx`, false)];
    this.metaOut = this.outputs[this.outputs.length - 1];
    this.payloadOut = this.mode === 'legacy' ? null : this.outputs[0];
  }

  private warn(msg: string): void {
    this.stats.warnings++;
    this.opts.onWarning?.(msg);
  }

  private checkAbort(): void {
    if (this.opts.signal?.aborted) throw new AbortedError('backup aborted');
  }

  /** Progress event for entry `i` of `list`, directory `rel` (at most one per interval). */
  private progress(rel: Buffer, list: DirEntries, i: number): void {
    const interval = this.opts.progressIntervalMs ?? 200;
    if (!this.opts.onProgress || (interval > 0 && (this.stats.entries & 63) !== 0)) return;
    const t = performance.now();
    if (t - this.lastProgress < interval) return;
    this.lastProgress = t;
    this.opts.onProgress({ archive: this.opts.archiveName, entries: this.stats.entries, bytesRead: this.stats.bytesRead, path: joinRel(rel, list.name(i)).toString() });
  }

  /**
   * Whether an output's chunk stream has reached its in-flight limit; then `drain()` before
   * encoding more. A plain check, so that the common case costs no await (one per entry).
   */
  private get full(): boolean {
    return !!this.payloadOut?.stream.full || this.metaOut.stream.full;
  }

  private async drain(): Promise<void> {
    for (const o of this.outputs) await o.stream.drain();
  }

  async run(): Promise<CreateArchiveResult> {
    const opts = this.opts;
    const rootPath = await sourceRoot(opts.source);
    const rootList = await statEntries(rootPath, this.dirOpts).catch((e: Error) => {
      throw new Error(`cannot back up ${rootPath}: ${e.message}`);
    });
    if ((rootList.mode(0) & S_IFMT) !== S_IFDIR) throw new Error(`cannot back up ${rootPath}: not a directory`);
    this.allowedDevs = allowedDevices(rootList.dev(0), opts);

    const cliPatterns = (opts.excludes ?? []).map((p) => parsePattern(p)).filter((p): p is ExcludePattern => !!p);
    if (opts.skipLostAndFound) cliPatterns.push(parsePattern('lost+found/')!);
    const cliLines = [...(opts.excludes ?? []), ...(opts.skipLostAndFound ? ['lost+found/'] : [])];
    let prelude: Buffer | undefined = this.mode !== 'legacy' ? opts.prelude : undefined;
    if (this.mode !== 'legacy' && !prelude && cliLines.length) {
      prelude = Buffer.from(JSON.stringify({ 'exclude-patterns': ExcludeMatcher.serialize(cliLines) }));
    }
    this.encoder =
      this.mode === 'legacy'
        ? new PxarEncoder({ variant: 'unified', output: new StreamSink(this.metaOut.stream) })
        : new PxarEncoder({ variant: 'split', output: new StreamSink(this.metaOut.stream), payloadOutput: new StreamSink(this.payloadOut!.stream), prelude });

    // Root metadata through the same policy as every other entry.
    const rootMeta = entryMetadata(rootList, 0, { xattrs: this.xattrs, describe: () => rootPath });
    const settings = this.settingsDigest(rootPath, prelude);
    const rootRec = this.record && rootList.metaError(0) === null ? this.record.add(rootList, 0) : -1;

    try {
      if (await this.treeUnchanged(rootPath, settings)) return await this.reusePrevious(settings);
      this.encoder.begin(rootMeta);
      this.prefetch = new TreePrefetcher(this.dirOpts, this.opts.allFileSystems ? null : [...this.allowedDevs]);
      const rootNode = this.prefetch.root(Buffer.from(rootPath));
      const rootListing = await this.prefetch.take(rootNode);
      const previous = this.previous;
      const prevRoot = previous
        ? new PreviousDir(() =>
            previous.accessor.openRoot().catch((e: Error) => {
              this.warn(`cannot open the previous snapshot's archive (${e.message}); files that need it are read again`);
              return null;
            }),
          )
        : NO_PREVIOUS_DIR;
      this.opts.catalog?.startDirectory(Buffer.from(this.outputs[0].filename));
      await this.encodeDir(Buffer.from(rootPath), Buffer.alloc(0), rootListing, new ExcludeMatcher(cliPatterns), prevRoot, rootNode, rootRec);
      this.prefetch.close();
      if (this.cache) await this.flush(false);
      if (this.mode === 'legacy' && cliLines.length) {
        // Unified archives carry the CLI patterns as a synthetic last root entry (pxar.md §8.2).
        const data = Buffer.from(ExcludeMatcher.serialize(cliLines));
        const name = Buffer.from(PXAREXCLUDE_CLI);
        const meta: Metadata = { ...emptyMetadata(0o100600), uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
        this.encoder.beginFile(name, meta, data.length);
        this.encoder.writeFileData(data);
        this.encoder.endFile();
        this.opts.catalog?.addFile(name, data.length, 0);
      }
      this.opts.catalog?.endDirectory();
      this.encoder.finish();
      const files: ArchiveFile[] = [];
      // The streams end together, their last chunks hashed, compressed and stored at once
      // (a first no-change backup of the linux tree, instrumented: ~10 ms for the payload
      // stream's last records, then ~25 for the metadata stream's last chunk; ~28 at once).
      // Both have ended before a failure of either is thrown: nothing writes after that.
      const ended = await Promise.allSettled(
        this.outputs.map(async (o) => {
          const s = await o.stream.end();
          await o.settle();
          return s;
        }),
      );
      const sizes = ended.map((r) => {
        if (r.status === 'rejected') throw r.reason;
        return r.value.size;
      });
      this.outputs.forEach((o, k) => {
        this.stats.streamBytes += sizes[k];
        const fin = o.index.finish();
        files.push({ filename: o.filename, data: fin.data, csum: fin.csum, size: fin.size, chunks: fin.count });
      });
      this.stats.seconds = (performance.now() - this.t0) / 1000;
      return { files, stats: this.stats, metadataCache: this.recorded(files, settings) };
    } catch (e) {
      // Let in-flight chunk work settle so nothing writes after we return.
      await Promise.allSettled(this.outputs.map((o) => o.stream.end().catch(() => undefined).then(o.settle)));
      throw e;
    } finally {
      // (no walk when the previous archive was reused as it is)
      if (this.prefetch) this.prefetch.close();
    }
  }

  /**
   * Digest of everything besides the tree and the previous archive that decides what this
   * backup writes (metadata-cache.ts: fixed points). FORMAT names the encoder's behaviour:
   * bump it with any change to what an archive of a given tree holds.
   */
  private settingsDigest(rootPath: string, prelude: Buffer | undefined): Buffer {
    const FORMAT = 'pxb-archive-1';
    const o = this.opts;
    const s = {
      format: FORMAT,
      source: rootPath,
      archive: o.archiveName,
      mode: this.mode,
      excludes: o.excludes ?? [],
      skipLostAndFound: !!o.skipLostAndFound,
      allFileSystems: !!o.allFileSystems,
      devices: [...this.allowedDevs].map(String).sort(),
      chunkSize: o.chunkSize ?? DEFAULT_CHUNK_SIZE,
      xattrs: this.xattrs,
      capacity: this.capacity,
      prelude: prelude?.toString('hex') ?? null,
    };
    return createHash('sha256').update(JSON.stringify(s)).digest();
  }

  /**
   * Whether the tree is unchanged against the previous archive's metadata cache, which must be
   * a fixed point recorded with these settings (metadata-cache.ts); then backing it up would
   * write the previous archive again.
   */
  private async treeUnchanged(rootPath: string, settings: Buffer): Promise<boolean> {
    const c = this.prevCache;
    const prev = this.previous;
    if (!c?.fixedPoint || !c.settings.equals(settings) || !prev?.metadataIndex || this.mode !== 'metadata' || this.opts.catalog) return false;
    const devices = this.opts.allFileSystems ? null : [...this.allowedDevs];
    const key = treeCheckKey(rootPath, devices);
    const check = await (c.check?.key === key ? c.check.result : treeUnchanged(rootPath, c.table, devices));
    // Every record is an archived entry: all of them found, and the counts the backup that
    // recorded them reported (the root is not an entry of the archive's counts).
    return check.unchanged && check.entries === c.table.length / UNCHANGED_RECORD && check.entries === c.counts.entries + 1;
  }

  /** An unchanged tree (treeUnchanged): the previous archive's indexes, chunk for chunk. */
  private async reusePrevious(settings: Buffer): Promise<CreateArchiveResult> {
    const prev = this.previous!;
    const cache = this.prevCache!;
    const st = this.stats;
    st.unchangedTree = true;
    st.entries = cache.counts.entries;
    st.files = cache.counts.files;
    st.directories = cache.counts.directories;
    st.metadataCached = cache.counts.entries;
    st.reusedFiles = cache.counts.files;
    const files: ArchiveFile[] = [];
    for (const o of this.outputs) {
      const idx = o === this.payloadOut ? prev.payloadIndex : prev.metadataIndex!;
      for (let k = 0; k < idx.count; k++) {
        this.checkAbort();
        const offset = k === 0 ? 0 : idx.end(k - 1);
        await o.sink({ offset, size: idx.end(k) - offset, digest: idx.digest(k), blob: null });
      }
      await o.settle();
      st.streamBytes += idx.size;
      if (o === this.payloadOut) {
        st.reusedBytes = idx.size;
        st.injectedChunks = idx.count;
        st.injectedBytes = idx.size;
      }
      const fin = o.index.finish();
      files.push({ filename: o.filename, data: fin.data, csum: fin.csum, size: fin.size, chunks: fin.count });
    }
    st.seconds = (performance.now() - this.t0) / 1000;
    return { files, stats: st, metadataCache: this.recorded(files, settings, cache.table) };
  }

  /**
   * The metadata cache of this backup: its records (or `table`, an unchanged tree's), and
   * whether it is a fixed point: the archive equals the previous one and nothing was left out.
   */
  private recorded(files: ArchiveFile[], settings: Buffer, table?: Buffer): MetadataCache | undefined {
    if (!this.record) return undefined;
    const prev = this.previous;
    const csum = (suffix: string) => files.find((f) => f.filename.endsWith(suffix))?.csum;
    const same = (a: Buffer | undefined, b: Buffer | undefined) => !!a && !!b && a.equals(b);
    const fixedPoint =
      this.mode === 'metadata' &&
      this.stats.warnings === 0 &&
      ((same(csum('.mpxar.didx'), prev?.metadataIndexCsum) && same(csum('.ppxar.didx'), prev?.payloadIndexCsum)) || this.writesItselfAgain(files));
    const { entries, files: nfiles, directories } = this.stats;
    return { table: table ?? this.record.finish(), settings, fixedPoint, counts: { entries, files: nfiles, directories } };
  }

  /**
   * Whether the next backup of the same tree with the same settings would write this archive
   * again although it differs from the previous one: every file reused (nothing read, nothing
   * re-encoded), and the payload stream is the previous one's data chunks, each once and in
   * order, between this archive's own 16-byte start and tail marker chunks. Backing up from it
   * then finds every file at the same place relative to the same chunks, 16 bytes further on
   * (behind the start marker's chunk instead of inside the first data chunk, both as a start
   * padding of 16 bytes), so every decision (ranges, padding, kept-back and injected chunks)
   * and every PAYLOAD_REF comes out the same, and so does the archive. This is the first
   * metadata-mode backup of an unchanged tree after a data-mode one, and the first backup
   * after a tree stopped changing: one backup earlier than an archive equal to its previous.
   * A previous chunk stream that differs in any way (a re-encoded range, a file written
   * anew, a tail marker chunked alone) fails the comparison, and the rule above still holds.
   */
  private writesItselfAgain(files: ArchiveFile[]): boolean {
    const prev = this.previous;
    const file = files.find((f) => f.filename.endsWith('.ppxar.didx'));
    if (!prev || !file || this.stats.reencodedFiles !== 0 || this.stats.bytesRead !== 0) return false;
    const idx = DynamicIndex.parse(file.data, file.filename);
    const n = idx.count;
    if (n < 3) return false;
    const marker = idx.chunk(0);
    const tail = idx.chunk(n - 1);
    if (marker.size !== 16 || tail.size !== 16) return false;
    const same = (a: ChunkEntry, b: ChunkEntry) => a.size === b.size && a.digest.equals(b.digest);
    // The previous data chunks: without its own marker chunks when it has them (a
    // metadata-mode archive), all of them after a data-mode one.
    const p = prev.payloadIndex;
    let from = 0;
    let to = p.count;
    if (to > 0 && same(p.chunk(0), marker)) from = 1;
    if (to > from && same(p.chunk(to - 1), tail)) to--;
    if (to - from !== n - 2) return false;
    for (let k = 0; k < n - 2; k++) if (!same(idx.chunk(k + 1), p.chunk(from + k))) return false;
    return true;
  }

  /** Previous directory's children sorted by raw name (archive order, for a merge join). */
  private async prevListing(dir: PxarDirectory | null): Promise<AccessorEntry[] | null> {
    if (!dir) return null;
    const list = await dir.list({ paths: false });
    for (let k = 1; k < list.length; k++) {
      if (Buffer.compare(list[k - 1].name, list[k].name) >= 0) {
        // not written in PBS order: sort (the lookup is by name, order is not part of the format)
        return list.sort((a, b) => Buffer.compare(a.name, b.name));
      }
    }
    return list;
  }

  /**
   * Metadata of an entry the walk did not open because the metadata cache has it, when the
   * previous archive holds this path as the same kind of entry with the same mode (same inode,
   * same ctime: its fd-based metadata still holds); else null, and `readMetadata` reads it.
   */
  private cachedMetadata(list: DirEntries, i: number, prev: AccessorEntry | undefined): Metadata | null {
    const type = list.mode(i) & S_IFMT;
    if (!prev || prev.kind !== (type === S_IFDIR ? 'directory' : 'file') || prev.metadata.mode !== list.mode(i)) return null;
    this.stats.metadataCached++;
    return cachedEntryMetadata(list, i, prev.metadata);
  }

  /** Read the metadata the walk skipped after all; null (with a warning) if the entry was replaced meanwhile. */
  private async readMetadata(absDir: Buffer, rel: Buffer, list: DirEntries, i: number): Promise<Metadata | null> {
    // (statPath never takes an entry from the metadata cache)
    const fresh = await statEntries(joinAbs(absDir, list.name(i)), this.dirOpts);
    if ((fresh.mode(0) & S_IFMT) !== (list.mode(i) & S_IFMT) || fresh.ino(0) !== list.ino(i)) {
      this.warn(`${joinRel(rel, list.name(i)).toString()}: replaced during backup, skipped`);
      return null;
    }
    return entryMetadata(fresh, 0, { xattrs: this.xattrs, describe: () => joinRel(rel, list.name(i)).toString() });
  }

  /**
   * The previous archive's directory `name` of `parent`, opened when first needed: from its
   * entry where the parent's previous listing was read (`listed`; no entry: there was none),
   * else looked up in the parent's goodbye table then.
   */
  private previousSubdir(parent: PreviousDir, listed: boolean, pe: AccessorEntry | undefined, name: Buffer, relName: Buffer): PreviousDir {
    const accessor = this.previous?.accessor;
    if (!accessor || parent === NO_PREVIOUS_DIR || (listed && pe?.kind !== 'directory')) return NO_PREVIOUS_DIR;
    return new PreviousDir(async () => {
      try {
        let e = pe;
        if (!listed) {
          const p = await parent.dir();
          e = (p && (await p.lookup(name))) ?? undefined;
        }
        return e?.kind === 'directory' ? await accessor.openDirectory(e) : null;
      } catch (err) {
        this.warn(`${relName.toString()}: cannot open the previous snapshot's directory (${(err as Error).message})`);
        return null;
      }
    });
  }

  /** change-detection.md §3: the reusable range of a file in the previous payload stream, or null. */
  private reuseRange(prev: AccessorEntry | undefined, meta: Metadata, size: number): [number, number] | null {
    if (!prev || prev.kind !== 'file' || prev.payloadOffset === undefined || prev.size !== size) return null;
    if (!metadataEqualForReuse(meta, prev.metadata)) return null;
    return [prev.payloadOffset, prev.payloadOffset + 16 + size];
  }

  /** Encode directory `list` (its entries; the caller wrote its ENTRY); `dirRec`: its metadata-cache record or -1. */
  private async encodeDir(absDir: Buffer, rel: Buffer, list: DirEntries, excl: ExcludeMatcher, prevDir: PreviousDir, node: PrefetchNode, dirRec: number, first?: Preread): Promise<void> {
    // A directory of entries the metadata cache vouches for (plain files with their payload
    // offsets, plain directories) needs nothing from the previous archive's directory.
    const prevP = needsPrevious(list) ? prevDir.dir().then((d) => this.prevListing(d)) : Promise.resolve(null);
    prevP.catch(() => undefined);
    // .pxarexclude of this directory applies to it and below.
    const exIdx = findName(list, PXAREXCLUDE);
    if (exIdx >= 0 && (list.mode(exIdx) & S_IFMT) === S_IFREG) {
      const r = await readFilesExact([joinAbs(absDir, PXAREXCLUDE)], [list.size(exIdx)]);
      if (r.status[0] >= 0) excl = excl.with(parsePatternFile(r.data.toString('utf8'), rel.toString()));
    }
    let prev: AccessorEntry[] | null = null;
    try {
      prev = await prevP;
    } catch (e) {
      this.warn(`${rel.toString() || '/'}: cannot read the previous snapshot's directory (${(e as Error).message}); its files are read again`);
    }

    // Decide what to archive; metadata and reuse decisions up front so that only files that
    // must be read are read (in native batches), and subdirectory listings are prefetched.
    // (synchronously, in `classify`: it stops only at an entry whose metadata must be read)
    const plan = new DirPlan(list.length, excl.patterns.length > 0, prev);
    const metaOpts = { xattrs: this.xattrs, describe: (i: number) => joinRel(rel, list.name(i)).toString() };
    for (let i = this.classify(plan, list, rel, excl, metaOpts, 0); i < list.length; i = this.classify(plan, list, rel, excl, metaOpts, i + 1)) {
      let meta: Metadata | null;
      try {
        meta = await this.readMetadata(absDir, rel, list, i);
      } catch (e) {
        this.warn(`${joinRel(rel, list.name(i)).toString()}: ${(e as Error).message}, skipped`);
        continue;
      }
      if (meta) this.admit(plan, list, i, meta);
    }
    const { keep, metas, ranges, prevOf, plain, recOf, subdirs, hasPatterns } = plan;
    this.record?.setEntryCount(dirRec, keep.length);
    // Subdirectory nodes of the prefetch walk; the ones not descended into are dropped.
    // (`list` is the node's listing: its children are keyed by the same entry indexes)
    const kids = this.prefetch.children(node);
    const listings = new Map<number, PrefetchNode>();
    for (const i of subdirs) {
      const n = kids.get(i);
      if (n) listings.set(i, n);
    }
    if (listings.size < kids.size) {
      const dropped: PrefetchNode[] = [];
      kids.forEach((n, i) => {
        if (!listings.has(i)) dropped.push(n);
      });
      this.prefetch.drop(dropped);
    }

    // Read ahead only files that will certainly be encoded with data: not reusable, and not
    // hardlinked (another name may be encoded first; those are read when they are reached).
    // A batch ends at a subdirectory, so that no batch is kept while the encoder is below it.
    const toRead: Array<{ key: number; path: () => Buffer; size: number; cut: boolean; fd: number }> = [];
    let subdirBefore = false;
    for (let k = 0; k < keep.length; k++) {
      const i = keep[k];
      const type = list.mode(i) & S_IFMT;
      if (type === S_IFDIR) subdirBefore = true;
      else if (type === S_IFREG && !ranges[i] && list.nlink(i) === 1) {
        toRead.push({ key: i, path: () => list.name(i), size: list.size(i), cut: subdirBefore, fd: list.fdToken(i) });
        subdirBefore = false;
      }
    }
    // (a directory with nothing to read, as most of a no-change backup's, shares an empty reader)
    const reader = toRead.length || first ? new FileBatches<number>(this.smallFiles, toRead, absDir, first) : this.noFiles;
    const subdirReads = this.prereads && !hasPatterns ? new SubdirPrereads(this.smallFiles, this.prereads, subdirs.flatMap((i) => listings.get(i) ?? []), (n) => this.prefetch.peek(n)) : null;
    try {
      await this.encodeEntries(absDir, rel, list, keep, metas, plain, recOf, ranges, prevOf, prev !== null, prevDir, listings, excl, reader, subdirReads);
    } finally {
      reader.close();
      subdirReads?.close();
    }
    this.prefetch.drop([...listings.values()]);
  }

  /**
   * Decide entries `from`… of `list` into `plan` (encodeDir), until one whose metadata the
   * walk skipped and neither the metadata cache nor the previous archive can give: its index
   * (the caller reads it and `admit`s it), else `list.length`.
   */
  private classify(plan: DirPlan, list: DirEntries, rel: Buffer, excl: ExcludeMatcher, metaOpts: MetadataOptions, from: number): number {
    const { keep, ranges, prevOf, plain, recOf, hasPatterns, prev } = plan;
    let j = plan.j; // merge join: both listings are sorted by raw name
    for (let i = from; i < list.length; i++) {
      // (the name as a Buffer view only where it is needed: most entries of a no-change backup need none)
      if (list.status(i) !== 0) {
        const code = errnoCode(list.status(i));
        this.warn(`${joinRel(rel, list.name(i)).toString()}: ${code === 'ENOENT' ? 'vanished during backup' : 'cannot stat'} (${code}), skipped`);
        continue;
      }
      const type = list.mode(i) & S_IFMT;
      if (hasPatterns) {
        const name = list.name(i);
        if (excl.excluded(joinRel(rel, name).toString(), name.toString(), type === S_IFDIR)) continue;
      }
      if (prev) {
        let c = 1;
        while (j < prev.length && (c = list.compareName(i, prev[j].name)) > 0) j++;
        if (j < prev.length && c === 0) prevOf[i] = prev[j];
      }
      if (type === S_IFREG && list.metaSkipped(i) && list.nlink(i) === 1) {
        // The cache's record of this path, inode and ctime names its payload when the previous
        // archive holds it as a plain file; else the previous entry can tell (plainReuse).
        const pe = prevOf[i];
        let recorded = list.prevPayload(i);
        // A record must agree with the previous directory where that was read.
        if (recorded >= 0 && prev && !(pe?.kind === 'file' && pe.payloadOffset === recorded)) recorded = -1;
        const p = recorded >= 0 ? recorded : pe && plainReuse(list, i, pe) ? pe.payloadOffset! : -1;
        if (p >= 0) {
          // (what cachedMetadata, record and reuseRange would do, without a Metadata object)
          this.stats.metadataCached++;
          if (this.record && list.metaError(i) === null) recOf[i] = this.record.add(list, i);
          keep.push(i);
          plain[i] = 1;
          ranges[i] = [p, p + 16 + list.size(i)];
          continue;
        }
      }
      let meta: Metadata | null;
      try {
        if (!list.metaSkipped(i)) meta = entryMetadata(list, i, metaOpts);
        else if (type === S_IFDIR && list.prevPayload(i) === PLAIN_DIRECTORY) {
          // (the cache's record: this inode had no flags, xattrs, ACLs or project id then, and
          // its ctime says nothing changed since)
          this.stats.metadataCached++;
          meta = statMetadata(list, i);
        } else meta = this.cachedMetadata(list, i, prevOf[i]);
      } catch (e) {
        this.warn(`${joinRel(rel, list.name(i)).toString()}: ${(e as Error).message}, skipped`);
        continue;
      }
      if (!meta) {
        plan.j = j;
        return i;
      }
      this.admit(plan, list, i, meta);
    }
    plan.j = j;
    return list.length;
  }

  /** Entry `i` of `list` with metadata `meta` is archived (classify). */
  private admit(plan: DirPlan, list: DirEntries, i: number, meta: Metadata): void {
    const type = list.mode(i) & S_IFMT;
    if (this.record && list.metaError(i) === null) {
      const rec = this.record.add(list, i);
      if (type === S_IFREG && list.nlink(i) === 1 && plainMetadataOf(meta)) plan.recOf[i] = rec;
      else if (type === S_IFDIR) {
        if (plainMetadataOf(meta)) this.record.setPayload(rec, PLAIN_DIRECTORY);
        plan.recOf[i] = rec;
      }
    }
    plan.keep.push(i);
    plan.metas[i] = meta;
    plan.ranges[i] = type === S_IFREG ? this.reuseRange(plan.prevOf[i], meta, list.size(i)) : null;
    if (type === S_IFDIR && (this.opts.allFileSystems || this.allowedDevs.has(list.dev(i)))) plan.subdirs.push(i);
  }

  private async encodeEntries(
    absDir: Buffer,
    rel: Buffer,
    list: DirEntries,
    keep: number[],
    metas: Metadata[],
    plain: Uint8Array,
    recOf: Int32Array,
    ranges: Array<[number, number] | null>,
    prevOf: Array<AccessorEntry | undefined>,
    prevListed: boolean,
    prevDir: PreviousDir,
    listings: Map<number, PrefetchNode>,
    excl: ExcludeMatcher,
    reader: FileBatches<number>,
    subdirReads: SubdirPrereads | null,
  ): Promise<void> {
    // Indexed loops in these async per-entry loops: `for…of` allocates an iterator result per
    // step across the awaits. The loop itself handles plain reusable files, nearly all of a
    // no-change backup's entries; every other entry is its own method's (TurboFan compiles
    // this loop once per backup: the cold paths inside it made that slow, and deoptimized it).
    for (let k = 0; k < keep.length; k++) {
      const i = keep[k];
      this.checkAbort();
      const type = list.mode(i) & S_IFMT;
      this.stats.entries++;
      this.progress(rel, list, i);
      const cache = this.cache;
      if (cache && cache.fdEntries >= this.capacity) await this.flush(true);
      if (cache && plain[i]) {
        // (a plain file's link count is 1: no hardlink bookkeeping)
        const r = ranges[i]!;
        if (!cache.tryExtendRange(r[0], r[1])) await this.restartRange(r);
        k = this.pushPlainRun(cache, absDir, rel, list, keep, k, plain, recOf, ranges);
      } else if (type === S_IFREG) {
        // new plain files (no cache to put them in): in groups while their data is at hand
        const last = cache || !this.payloadOut || !newPlainFile(list, i, metas[i]) ? -1 : await this.encodeNewFiles(rel, list, keep, k, metas, recOf, reader);
        if (last >= 0) k = last;
        else await this.encodeRegular(absDir, rel, list, i, metas[i], ranges[i], recOf[i], reader);
      } else if (type === S_IFDIR) {
        reader.descend();
        await this.encodeSubdir(absDir, rel, list, i, metas[i], recOf[i], listings, prevListed, prevOf[i], prevDir, excl, subdirReads);
      } else await this.encodeSpecial(rel, list, i, metas[i]);
    }
  }

  /** A reusable file's range `r` does not continue the cache's: flush it, and start a new range at `r`. */
  private async restartRange(r: [number, number]): Promise<void> {
    await this.flush(true);
    this.cache!.rangeStart = r[0];
    this.cache!.rangeEnd = r[1];
  }

  /**
   * The plain file `keep[k]` (its range extends the cache's) and the plain files right after
   * it, as long as the per-file steps would only push them: the cache has room and their
   * ranges extend the cache's. Pushed as one run; returns the position of the run's last file.
   */
  private pushPlainRun(cache: LookaheadCache, absDir: Buffer, rel: Buffer, list: DirEntries, keep: number[], k: number, plain: Uint8Array, recOf: Int32Array, ranges: Array<[number, number] | null>): number {
    const rs = cache.rangeStart;
    const idx = [keep[k]];
    this.stats.files++;
    cache.fdEntries++; // (each file counts, as if pushed on its own)
    for (; k + 1 < keep.length; k++) {
      const n = keep[k + 1];
      const rn = ranges[n];
      if (!plain[n] || cache.fdEntries >= this.capacity || rn![0] !== cache.rangeEnd) break;
      cache.rangeEnd = rn![1];
      cache.fdEntries++;
      idx.push(n);
      this.stats.entries++;
      this.stats.files++;
      if ((this.stats.entries & 63) === 0) this.progress(rel, list, n);
    }
    cache.pushCounted(runOf(cache.runs, list, idx, ranges, recOf, rs, absDir, rel));
    return k;
  }

  /** A regular file that is not a plain reusable one: cached for reuse, or encoded with its data. */
  private async encodeRegular(absDir: Buffer, rel: Buffer, list: DirEntries, i: number, meta: Metadata, r: [number, number] | null, rec: number, reader: FileBatches<number>): Promise<void> {
    const size = list.size(i);
    // A HARDLINK names its target by path, at most MAX_PATH_LEN bytes: a name with a longer
    // path is archived as a file of its own (and is never a hardlink target).
    const key = list.nlink(i) > 1 && (rel.length ? rel.length + 1 : 0) + list.name(i).length <= MAX_PATH_LEN ? `${list.dev(i)}:${list.ino(i)}` : null;
    this.stats.files++;
    const cache = this.cache;
    if (cache) {
      if (key && cache.hardlinks.has(key)) {
        cache.push({ kind: 'file', name: Buffer.from(list.name(i)), meta, size, rel: 0, dirAbs: absDir, dirRel: rel, key, dup: true, rec: -1 });
        return;
      }
      if (key) cache.hardlinks.add(key);
      if (r) {
        if (!cache.tryExtendRange(r[0], r[1])) await this.restartRange(r);
        cache.push({ kind: 'file', name: Buffer.from(list.name(i)), meta, size, rel: r[0] - cache.rangeStart, dirAbs: absDir, dirRel: rel, key, dup: false, rec });
        return;
      }
      await this.flush(false);
    }
    const name = list.name(i);
    const abs = joinAbs(absDir, name);
    const fd = list.fdToken(i);
    const done = await this.encodeFile(name, meta, size, abs, joinRel(rel, name), key, () => reader.get(i).then((d) => d ?? this.readOne(abs, size, fd)), rec, fd);
    if (done === 'skipped' && key) this.forgetInode(key);
    if (this.full) await this.drain();
  }

  /**
   * New plain files from `keep[k]` on (data mode, split archive), as encodeRegular encodes each:
   * the file and those right after it whose data the read batch already holds go to the encoder
   * as one group (`addPlainFiles`). Returns the position in `keep` of the group's last file, or
   * -1 when `keep[k]` must go alone (large, unreadable or resized: encodeRegular).
   */
  private async encodeNewFiles(rel: Buffer, list: DirEntries, keep: number[], k: number, metas: Metadata[], recOf: Int32Array, reader: FileBatches<number>): Promise<number> {
    const i = keep[k];
    let d = list.size(i) === 0 ? EMPTY_FILE : reader.peek(i);
    if (d === undefined) d = await reader.get(i);
    if (!d?.data || d.changed) return -1;
    const idx = [i];
    const data = this.groupData;
    data.push(d.data);
    let m = k + 1;
    for (; m < keep.length && idx.length < RUN_WRITE_FILES; m++) {
      const x = keep[m];
      if ((list.mode(x) & S_IFMT) !== S_IFREG || !newPlainFile(list, x, metas[x])) break;
      const dx = list.size(x) === 0 ? EMPTY_FILE : reader.peek(x);
      if (!dx?.data || dx.changed) break;
      // (the loop's per-entry steps for the files after the first)
      this.stats.entries++;
      this.progress(rel, list, x);
      idx.push(x);
      data.push(dx.data);
    }
    const g = this.newFiles;
    g.clear();
    g.add(list, idx, recOf);
    this.writePlainFiles(g, 0, idx.length, data);
    this.stats.files += idx.length;
    if (this.full) await this.drain();
    return m - 1;
  }

  /** Subdirectory `i` of `list`: its entry, its entries (encodeDir, with its listing), its end. */
  private async encodeSubdir(
    absDir: Buffer,
    rel: Buffer,
    list: DirEntries,
    i: number,
    meta: Metadata,
    rec: number,
    listings: Map<number, PrefetchNode>,
    prevListed: boolean,
    prevEntry: AccessorEntry | undefined,
    prevDir: PreviousDir,
    excl: ExcludeMatcher,
    subdirReads: SubdirPrereads | null,
  ): Promise<void> {
    const name = list.name(i);
    const relName = joinRel(rel, name);
    const cache = this.cache;
    this.stats.directories++;
    const item = listings.get(i);
    listings.delete(i);
    let sub: DirEntries | null = null;
    if (item) {
      try {
        sub = await this.prefetch.take(item);
      } catch (e) {
        this.warn(`${relName.toString()}: cannot read directory (${(e as Error).message}), skipped`);
        this.stats.directories--;
        return;
      }
    }
    if (cache?.enabled) {
      cache.push({ kind: 'dir', name: Buffer.from(name), meta });
    } else {
      if (cache) await this.encodeCached(null);
      this.encoder.enterDirectory(name, meta);
    }
    this.opts.catalog?.startDirectory(name);
    if (sub && item) {
      const first = subdirReads?.enter(item);
      try {
        await this.encodeDir(joinAbs(absDir, name), relName, sub, excl, this.previousSubdir(prevDir, prevListed, prevEntry, name, relName), item, rec, first);
      } finally {
        first?.release();
      }
      subdirReads?.topUp();
    }
    if (item) this.prefetch.release(item);
    // (no listing: mount point of another file system, archived as an empty directory)
    if (cache?.enabled) cache.push({ kind: 'dirEnd' });
    else this.encoder.leaveDirectory();
    this.opts.catalog?.endDirectory();
    if (this.full) await this.drain();
  }

  /** A symlink, device, FIFO or socket (or an entry of a type pxar has not: skipped with a warning). */
  private async encodeSpecial(rel: Buffer, list: DirEntries, i: number, meta: Metadata): Promise<void> {
    const name = list.name(i);
    const type = list.mode(i) & S_IFMT;
    let entry: Cached;
    switch (type) {
      case S_IFLNK:
        entry = { kind: 'symlink', name, meta, target: Buffer.from(list.symlinkTarget(i) ?? Buffer.alloc(0)) };
        break;
      case S_IFBLK:
      case S_IFCHR:
        entry = { kind: 'device', name, meta, major: list.rdevMajor(i), minor: list.rdevMinor(i), block: type === S_IFBLK };
        break;
      case S_IFIFO:
        entry = { kind: 'fifo', name, meta };
        break;
      case S_IFSOCK:
        entry = { kind: 'socket', name, meta };
        break;
      default:
        this.warn(`${joinRel(rel, name).toString()}: unknown file type ${list.mode(i).toString(8)}, skipped`);
        return;
    }
    const cache = this.cache;
    if (cache?.enabled) {
      entry.name = Buffer.from(name); // (a cached entry must not pin the whole listing)
      cache.push(entry);
    } else {
      if (cache) await this.encodeCached(null);
      this.encodeOther(entry);
    }
  }

  /**
   * The first name of a hardlinked inode could not be archived (unreadable, vanished): the
   * inode counts as unseen again, so its next name is archived with its own data, as upstream
   * does for a file it cannot open (it never enters upstream's hardlink set).
   */
  private forgetInode(key: string): void {
    this.cache?.hardlinks.delete(key);
  }

  private encodeOther(e: Cached): void {
    const cat = this.opts.catalog;
    switch (e.kind) {
      case 'symlink':
        this.encoder.addSymlink(e.name, e.meta, e.target);
        cat?.addSymlink(e.name);
        break;
      case 'device':
        this.encoder.addDevice(e.name, e.meta, e.major, e.minor);
        if (e.block) cat?.addBlockDevice(e.name);
        else cat?.addCharDevice(e.name);
        break;
      case 'fifo':
        this.encoder.addFifo(e.name, e.meta);
        cat?.addFifo(e.name);
        break;
      case 'socket':
        this.encoder.addSocket(e.name, e.meta);
        cat?.addSocket(e.name);
        break;
      default:
        throw new Error(`internal: encodeOther(${e.kind})`);
    }
  }

  /**
   * Encode a regular file with new data (PAYLOAD), or as a HARDLINK when its inode was encoded
   * before. `data` yields the content of small files (read in batches); large files are streamed.
   */
  private async encodeFile(
    name: Buffer,
    meta: Metadata,
    size: number,
    abs: Buffer,
    relPath: Buffer,
    key: string | null,
    data: () => Promise<FileData | null>,
    /** Its metadata-cache record (-1: none): gets the payload offset once the file is written. */
    rec = -1,
    /** Token of the descriptor the walk held for it (-1: none): a large file is read through it. */
    fd = -1,
  ): Promise<'file' | 'hardlink' | 'skipped'> {
    const link = key ? this.hardlinks.get(key) : undefined;
    if (link) {
      this.encoder.addHardlink(name, link.path, link.linkOffset);
      this.opts.catalog?.addHardlink(name);
      return 'hardlink';
    }
    const d = size > 0 ? await data() : null;
    if (d && !d.data) {
      this.warn(`${relPath.toString()}: cannot read file (${d.error ?? 'unknown error'}), skipped`);
      this.stats.files--;
      return 'skipped';
    }
    if (!d && size > 0) {
      // Large file: open first so a vanished file is skipped before anything is encoded.
      // O_NONBLOCK: if the file was replaced by a FIFO since it was listed, opening it must
      // not wait for a writer; the type check below then skips it (as a directory or device).
      let fh;
      try {
        // (openFile: a path longer than PATH_MAX is opened piecewise)
        fh = takeHeldFile(fd) ?? (await openFile(abs, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK | fsc.O_NOCTTY));
      } catch (e) {
        this.warn(`${relPath.toString()}: cannot read file (${(e as Error).message}), skipped`);
        this.stats.files--;
        return 'skipped';
      }
      let type = 0;
      try {
        type = (await fh.stat()).mode & S_IFMT;
      } catch {
        // reported as not a regular file below
      }
      if (type !== S_IFREG) {
        await fh.close();
        this.warn(`${relPath.toString()}: no longer a regular file (replaced during backup), skipped`);
        this.stats.files--;
        return 'skipped';
      }
      this.payloadOut?.stream.suggest(this.encoder.payloadPosition);
      const r = this.encoder.beginFile(name, meta, size);
      try {
        await this.streamFile(fh, size, relPath);
      } finally {
        await fh.close();
      }
      this.encoder.endFile();
      if (key) this.hardlinks.set(key, { linkOffset: r.linkOffset, path: relPath });
      if (rec >= 0 && r.payloadOffset !== undefined) this.record!.setPayload(rec, r.payloadOffset);
      this.opts.catalog?.addFile(name, size, meta.mtime.secs);
      return 'file';
    }
    if (d?.changed) this.warn(`${relPath.toString()}: file size changed while reading (${d.changed})`);
    this.stats.bytesRead += size;
    this.payloadOut?.stream.suggest(this.encoder.payloadPosition);
    const r = this.encoder.beginFile(name, meta, size);
    for (let o = 0; o < size; o += READ_SIZE) this.encoder.writeFileData(d!.data!.subarray(o, Math.min(size, o + READ_SIZE)));
    this.encoder.endFile();
    if (key) this.hardlinks.set(key, { linkOffset: r.linkOffset, path: relPath });
    if (rec >= 0 && r.payloadOffset !== undefined) this.record!.setPayload(rec, r.payloadOffset);
    this.opts.catalog?.addFile(name, size, meta.mtime.secs);
    return 'file';
  }

  /** Stream a large file in 4 MiB reads (PBS's read size), exactly `size` bytes. */
  private async streamFile(fh: FdFile, size: number, relPath: Buffer): Promise<void> {
    let done = 0;
    let result: 'ok' | 'shrunk' | 'grew' = 'ok';
    // One recycled buffer for the whole file: the chunk stream copies what it is given.
    const pooled = this.smallFiles.buffers.acquire(READ_SIZE);
    try {
      while (done < size) {
        const want = Math.min(READ_SIZE, size - done);
        const buf = pooled.subarray(0, want);
        let got = 0;
        while (got < want) {
          let bytesRead: number;
          try {
            ({ bytesRead } = await fh.read(buf, got, want - got, done + got));
          } catch (e) {
            // Its header is written: the archive cannot skip the file any more.
            throw new Error(`${relPath.toString()}: read failed at byte ${done + got} of ${size} (${(e as Error).message})`);
          }
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        this.stats.bytesRead += got;
        if (got < want) {
          buf.fill(0, got);
          result = 'shrunk';
        }
        this.encoder.writeFileData(buf);
        done += want;
        if (this.full) await this.drain();
        this.checkAbort();
      }
    } finally {
      this.smallFiles.buffers.release(pooled);
    }
    if (result === 'ok') {
      const { bytesRead } = await fh.read(Buffer.allocUnsafe(1), 0, 1, size);
      if (bytesRead > 0) result = 'grew';
    }
    if (result !== 'ok') this.warn(`${relPath.toString()}: file size changed while reading (${result})`);
  }

  // --- metadata mode: flush / replay / inject (change-detection.md §5) ----------------

  private async flush(keepLastChunk: boolean): Promise<void> {
    const cache = this.cache!;
    if (cache.rangeStart === cache.rangeEnd) {
      await this.encodeCached(null);
      return;
    }
    const prevLast = cache.lastChunk;
    cache.lastChunk = null;
    const { chunks, startPad, endPad } = lookupReuseChunks(this.previous!.payloadIndex, cache.rangeStart, cache.rangeEnd);
    let padding = BigInt(startPad + endPad);
    const total = cache.rangeEnd - cache.rangeStart + startPad + endPad;
    const same = !!prevLast && prevLast.digest.equals(chunks[0].digest);
    if (same) padding = u64(padding - (BigInt(prevLast!.size) - prevLast!.padding));
    if (Number(padding) / total > CHUNK_PADDING_THRESHOLD) {
      cache.lastChunk = prevLast;
      await this.encodeCached(null);
      return;
    }
    if (prevLast && !same) this.inject([prevLast]);
    if (same) chunks[0].padding = u64(chunks[0].padding - (BigInt(prevLast!.size) - prevLast!.padding));
    this.stats.paddingBytes += Number(padding);
    const base = this.encoder.payloadPosition + startPad;
    await this.encodeCached(base);
    if (keepLastChunk) cache.lastChunk = chunks.pop() ?? null;
    this.inject(chunks);
  }

  /** Replay the cached entries; with `base`, cached files become PAYLOAD_REFs into reused chunks. */
  private async encodeCached(base: number | null): Promise<void> {
    const cache = this.cache!;
    if (cache.lastChunk) {
      const c = cache.lastChunk;
      cache.lastChunk = null;
      this.inject([c]);
    }
    // The runs' files move to the other store while they are replayed.
    const runs = cache.runs;
    cache.runs = cache.replayed;
    cache.replayed = runs;
    const entries = cache.entries;
    cache.entries = newEntries();
    cache.fdEntries = 0;
    cache.enabled = false;
    cache.rangeStart = cache.rangeEnd;
    // Files to re-read (no reuse), small ones read in batches, in order: a cached file is its
    // own key, a run's file its number in the run store.
    const reread: Array<{ key: Reread; path: () => Buffer; size: number }> = [];
    if (base === null) {
      const seen = new Set<string>();
      for (const e of entries) {
        if (e.kind === 'run') {
          for (let q = e.from; q < e.to; q++) reread.push({ key: q, path: () => joinAbs(e.dirAbs, runs.name(q)), size: runs.nums[q * RUN_FIELDS + 5] });
        } else if (e.kind === 'file') {
          if (e.key) {
            // a later name of an inode becomes a HARDLINK: read each inode once
            if (this.hardlinks.has(e.key) || seen.has(e.key)) continue;
            seen.add(e.key);
          }
          reread.push({ key: e, path: () => joinAbs(e.dirAbs, e.name), size: e.size });
        }
      }
    }
    const batch = new FileBatches<Reread>(this.smallFiles, reread);
    try {
      await this.replay(entries, base, batch, runs);
    } finally {
      batch.close();
      runs.clear();
    }
  }

  private async replay(entries: Cached[], base: number | null, batch: FileBatches<Reread>, runs: RunStore): Promise<void> {
    for (let k = 0; k < entries.length; k++) {
      const e = entries[k];
      switch (e.kind) {
        case 'run':
          if (base === null) await this.replayRunData(e, batch, runs);
          else await this.replayRun(e, base, runs);
          break;
        case 'dir':
          this.encoder.enterDirectory(e.name, e.meta);
          break;
        case 'dirEnd':
          this.encoder.leaveDirectory();
          break;
        case 'file':
          await this.replayFile(e, base, batch);
          break;
        default:
          this.encodeOther(e);
      }
      if (this.full) await this.drain();
    }
  }

  /** A cached file (replay): a HARDLINK, a PAYLOAD_REF into the chunks reused at `base`, or (no `base`) encoded with its data. */
  private async replayFile(e: CachedFile, base: number | null, batch: FileBatches<Reread>): Promise<void> {
    const link = e.key ? this.hardlinks.get(e.key) : undefined;
    if (link) {
      this.encoder.addHardlink(e.name, link.path, link.linkOffset);
      this.opts.catalog?.addHardlink(e.name);
      return;
    }
    if (base === null) {
      this.stats.reencodedFiles++;
      const abs = joinAbs(e.dirAbs, e.name);
      const done = await this.encodeFile(e.name, e.meta, e.size, abs, joinRel(e.dirRel, e.name), e.key, () => batch.get(e).then((d) => d ?? this.readOne(abs, e.size)), e.rec);
      if (done === 'skipped' && e.key) this.forgetInode(e.key);
      return;
    }
    // (a dup's first name was reused in this flush, or encoded before: it has a link)
    if (e.dup) throw new Error(`internal error: ${joinRel(e.dirRel, e.name).toString()}: hardlink without its first name in a reused range`);
    this.payloadOut!.stream.suggest(this.encoder.payloadPosition);
    const linkOffset = this.encoder.addPayloadRef(e.name, e.meta, e.size, base + e.rel);
    if (e.key) this.hardlinks.set(e.key, { linkOffset, path: joinRel(e.dirRel, e.name) });
    if (e.rec >= 0) this.record!.setPayload(e.rec, base + e.rel);
    this.stats.reusedFiles++;
    this.stats.reusedBytes += e.size;
    this.opts.catalog?.addFile(e.name, e.size, e.meta.mtime.secs);
  }

  /** A run's files as PAYLOAD_REFs into the chunks reused at `base` (as `replay` does for each 'file'). */
  private async replayRun(e: CachedRun, base: number, runs: RunStore): Promise<void> {
    const stream = this.payloadOut!.stream;
    const { names, ends, nums, recs } = runs;
    const count = e.to;
    const delta = base - e.rs;
    for (let from = e.from; from < count; ) {
      const to = Math.min(count, from + RUN_WRITE_FILES);
      // (one suggestion per file, as replay makes it: a reference does not move the payload
      // position, so they are all the same one)
      stream.suggest(this.encoder.payloadPosition);
      this.encoder.addPlainPayloadRefs(names, ends, nums, from, to, delta);
      this.record?.setPayloads(recs, nums, RUN_FIELDS, from, to, delta);
      let bytes = 0;
      for (let q = from; q < to; q++) bytes += nums[q * RUN_FIELDS + 5];
      this.stats.reusedBytes += bytes;
      const catalog = this.opts.catalog;
      if (catalog) for (let q = from; q < to; q++) catalog.addFile(Buffer.from(runs.name(q)), nums[q * RUN_FIELDS + 5], nums[q * RUN_FIELDS + 3]);
      this.stats.reusedFiles += to - from;
      from = to;
      if (from < count && this.full) await this.drain();
    }
  }

  /**
   * A run's files encoded with their data (a flush that re-encodes what it cached): the files
   * whose data a read batch holds go to the encoder in groups (`addPlainFiles`: records written
   * natively, as `encodeFile` writes each); a large, unreadable or resized file goes through
   * `encodeFile` alone.
   */
  private async replayRunData(e: CachedRun, batch: FileBatches<Reread>, runs: RunStore): Promise<void> {
    const nums = runs.nums;
    const data = this.groupData;
    for (let q = e.from; q < e.to; ) {
      let d = nums[q * RUN_FIELDS + 5] === 0 ? EMPTY_FILE : batch.peek(q);
      if (d === undefined) d = await batch.get(q);
      if (!d?.data || d.changed) {
        await this.replayRunFile(e, q, d, runs);
        q++;
      } else {
        data.push(d.data);
        let r = q + 1;
        for (; r < e.to && r - q < RUN_WRITE_FILES; r++) {
          const x = nums[r * RUN_FIELDS + 5] === 0 ? EMPTY_FILE : batch.peek(r);
          if (!x?.data || x.changed) break;
          data.push(x.data);
        }
        this.writePlainFiles(runs, q, r, data);
        this.stats.reencodedFiles += r - q;
        q = r;
      }
      if (q < e.to && this.full) await this.drain();
    }
  }

  /**
   * Files `from..to` of `runs` encoded with their data (`data[k]` for file `from + k`; emptied
   * here): re-encoded run files (replayRunData) and new plain files (encodeNewFiles).
   */
  private writePlainFiles(runs: RunStore, from: number, to: number, data: Buffer[]): void {
    const stream = this.payloadOut!.stream;
    const { names, ends, nums, recs } = runs;
    try {
      this.encoder.addPlainFiles(names, ends, nums, from, to, data, (pos) => stream.suggest(pos));
    } finally {
      data.length = 0;
    }
    // (addPlainFiles put each file's payload offset into nums)
    this.record?.setPayloads(recs, nums, RUN_FIELDS, from, to, 0);
    for (let q = from; q < to; q++) this.stats.bytesRead += nums[q * RUN_FIELDS + 5];
    const catalog = this.opts.catalog;
    if (catalog) for (let q = from; q < to; q++) catalog.addFile(Buffer.from(runs.name(q)), nums[q * RUN_FIELDS + 5], nums[q * RUN_FIELDS + 3]);
  }

  /** File `q` of a run alone, as replayFile re-encodes a cached file; `d`: what its batch read (null: large or not read). */
  private async replayRunFile(e: CachedRun, q: number, d: FileData | null, runs: RunStore): Promise<void> {
    this.stats.reencodedFiles++;
    const name = runs.name(q);
    const size = runs.nums[q * RUN_FIELDS + 5];
    const abs = joinAbs(e.dirAbs, name);
    await this.encodeFile(name, runs.metadata(q), size, abs, joinRel(e.dirRel, name), null, () => (d ? Promise.resolve(d) : this.readOne(abs, size)), runs.recs[q]);
  }

  /** Send reused chunks to the payload stream at the current position (≤ 128 per message). */
  private inject(chunks: ReuseChunk[]): void {
    for (let k = 0; k < chunks.length; k += MAX_INJECT_CHUNKS) {
      const group = chunks.slice(k, k + MAX_INJECT_CHUNKS);
      const size = group.reduce((a, c) => a + c.size, 0);
      this.payloadOut!.stream.inject({ boundary: this.encoder.payloadPosition, chunks: group.map((c) => ({ digest: c.digest, size: c.size })), size });
      this.encoder.advancePayload(size);
      this.stats.injectedChunks += group.length;
      this.stats.injectedBytes += size;
    }
  }

  /** A small file not read ahead (hardlinked): read now; null for a large one (streamed). */
  async readOne(abs: Buffer, size: number, fd = -1): Promise<FileData | null> {
    if (!batched(size)) return null;
    return (await this.smallFiles.read([{ index: 0, path: abs, size, fd }])).files.get(0) ?? null;
  }

  /** Small files read in batches into recycled buffers (FileBatches, readOne, large-file pieces). */
  readonly smallFiles = new BatchReader();
  /** The reader of directories with no file to read (FileBatches of nothing holds no state). */
  private readonly noFiles = new FileBatches<number>(this.smallFiles, []);
  /** The data of a group of plain files (writePlainFiles), reused. */
  private readonly groupData: Buffer[] = [];
  /** A group of new plain files (encodeNewFiles), reused. */
  private readonly newFiles = new RunStore();
}

/** Batched native reads of small files into recycled buffers. Exported for its tests only. */
export class BatchReader {
  /** Recycled buffers for batched reads (their bytes are copied into the chunk stream). */
  readonly buffers = new BufferPool(READ_BUFFER, SPARE_READ_BUFFERS);

  /**
   * Batched native read of small files (used by FileBatches). With `into` the files land in
   * that buffer (recycled by the caller once every file of the batch has been encoded); with
   * `base` the job paths are names in that directory.
   */
  async read(jobs: FileJob[], into?: Buffer, base?: Buffer): Promise<{ files: Map<number, FileData>; buf: Buffer }> {
    const files = new Map<number, FileData>();
    const held = jobs.some((j) => (j.fd ?? -1) >= 0) ? Float64Array.from(jobs, (j) => j.fd ?? -1) : undefined;
    const r = await readFilesExact(jobs.map((j) => j.path), jobs.map((j) => j.size), into, base, held);
    let off = 0;
    jobs.forEach((j, k) => {
      const st = r.status[k];
      const data = r.data.subarray(off, off + j.size);
      off += j.size;
      if (st === READ_OK) files.set(j.index, { data });
      else if (st === READ_SHRUNK) files.set(j.index, { data, changed: 'shrunk' });
      else if (st === READ_GREW) files.set(j.index, { data, changed: 'grew' });
      else {
        const e = r.errors.find((x) => x.index === k);
        files.set(j.index, { data: null, error: e ? e.message : errnoCode(-st) });
      }
    });
    return { files, buf: r.data };
  }
}

/** Fixed-size buffers handed out again once released (larger requests are plain allocations). */
export class BufferPool {
  private readonly free: Buffer[] = [];
  /** Pool-sized buffers handed out and not released yet. */
  inUse = 0;

  constructor(
    private readonly size: number,
    private readonly spare: number,
  ) {}

  acquire(need: number): Buffer {
    if (need > this.size) return Buffer.allocUnsafe(need);
    this.inUse++;
    return this.free.pop() ?? Buffer.allocUnsafe(this.size);
  }

  release(buf: Buffer): void {
    if (buf.length !== this.size) return;
    this.inUse--;
    if (this.free.length < this.spare) this.free.push(buf);
  }
}

/**
 * Small files read in native batches a few batches ahead of the encoder, into recycled
 * buffers. Files must be asked for in the order given; a batch's buffer is recycled when a file
 * of a later batch is asked for (the encoder has copied the earlier files into the chunk stream
 * by then) or at `close()`. A file asked for out of order yields null (the caller reads it alone).
 */
export class FileBatches<K> {
  private readonly jobOf = new Map<K, { batch: number; index: number }>();
  private readonly batches: FileJob[][] = [];
  private readonly results: Array<Promise<{ files: Map<number, FileData>; buf: Buffer }> | undefined> = [];
  /** Batches below this one are released. */
  private done = 0;
  /** The batch of the last file asked for (-1: none yet). */
  private asked = -1;
  /** The batch the last `get` returned from, and its files. */
  private current = -1;
  private currentFiles: Map<number, FileData> | null = null;
  /** A pre-read first batch (see Preread): released through it, not through the reader's pool. */
  private first: Preread | null = null;

  /**
   * `files` in encoding order; with `base`, their paths are names in that directory (read
   * relative to it), otherwise absolute paths. `first`: the directory's first files, read
   * before it was entered; used as the first batch when they are the files it would hold,
   * else dropped.
   */
  constructor(
    private readonly reader: BatchReader,
    files: Iterable<{ key: K; path: () => Buffer; size: number; cut?: boolean; fd?: number }>,
    private readonly base?: Buffer,
    first?: Preread,
  ) {
    let cur: FileJob[] = [];
    let bytes = 0;
    // Files that are read in batches; a cut before a file read alone moves to the next one.
    const batchable: Array<{ key: K; path: () => Buffer; size: number; cut?: boolean; fd?: number }> = [];
    let cut = false;
    for (const f of files) {
      cut ||= !!f.cut;
      if (!batched(f.size)) continue;
      batchable.push(cut === !!f.cut ? f : { ...f, cut });
      cut = false;
    }
    let from = 0;
    if (first) {
      const n = first.names.length;
      const fits = batchable.length >= n && batchable.every((f, k) => k >= n || ((k === 0 || !f.cut) && f.size === first.sizes[k] && f.path().equals(first.names[k])));
      if (fits) {
        this.first = first;
        this.batches.push(batchable.slice(0, n).map((f, k) => (this.jobOf.set(f.key, { batch: 0, index: k }), { index: k, path: first.names[k], size: f.size })));
        this.results.push(first.result);
        from = n;
      } else first.release();
    }
    for (let k = from; k < batchable.length; k++) {
      const f = batchable[k];
      if (f.cut && cur.length) {
        this.batches.push(cur);
        cur = [];
        bytes = 0;
      }
      if (cur.length && bytes + f.size > BATCH_BYTES) {
        this.batches.push(cur);
        cur = [];
        bytes = 0;
      }
      this.jobOf.set(f.key, { batch: this.batches.length, index: cur.length });
      cur.push({ index: cur.length, path: f.path(), size: f.size, fd: f.fd });
      bytes += f.size;
      if (cur.length >= BATCH_FILES) {
        this.batches.push(cur);
        cur = [];
        bytes = 0;
      }
    }
    if (cur.length) this.batches.push(cur);
    for (let k = 0; k < FILE_BATCHES_AHEAD; k++) this.start(k, true);
  }

  /**
   * Start reading batch `k`; one read `ahead` (not asked for yet) only while fewer than
   * READ_AHEAD_BUFFERS read buffers are out: a directory keeps its batches while the encoder
   * descends into its subdirectories, so reading ahead at every level held a buffer per level.
   */
  private start(k: number, ahead: boolean): void {
    if (ahead && this.reader.buffers.inUse >= READ_AHEAD_BUFFERS) return;
    if (k >= this.done && k < this.batches.length && !this.results[k]) {
      const jobs = this.batches[k];
      const need = jobs.reduce((a, j) => a + j.size, 0);
      const p = this.reader.read(jobs, this.reader.buffers.acquire(need), this.base);
      p.catch(() => undefined);
      this.results[k] = p;
    }
  }

  private release(k: number): void {
    const p = this.results[k];
    this.results[k] = undefined;
    if (k === 0 && this.first) {
      this.first.release();
      this.first = null;
      return;
    }
    p?.then(
      (r) => this.reader.buffers.release(r.buf),
      () => undefined,
    );
  }

  /**
   * The encoder is at a subdirectory: the batches of the files before it (batches end at
   * subdirectories, see `cut`) are recycled now, not when it is back.
   */
  descend(): void {
    for (; this.done <= this.asked; this.done++) this.release(this.done);
  }

  /** Data of file `key`, or null for one that is not in a batch (large, empty, out of order). */
  async get(key: K): Promise<FileData | null> {
    const j = this.jobOf.get(key);
    if (!j || j.batch < this.done) return null;
    this.asked = j.batch;
    for (; this.done < j.batch; this.done++) this.release(this.done);
    for (let k = j.batch; k <= j.batch + FILE_BATCHES_AHEAD; k++) this.start(k, k > j.batch);
    const r = await this.results[j.batch]!;
    this.current = j.batch;
    this.currentFiles = r.files;
    return r.files.get(j.index) ?? null;
  }

  /**
   * Data of file `key` without waiting when it is in the batch the last `get` returned from (as
   * `get` would return it); undefined otherwise (ask `get`).
   */
  peek(key: K): FileData | null | undefined {
    const j = this.jobOf.get(key);
    if (!j || j.batch !== this.current || j.batch < this.done) return undefined;
    return this.currentFiles!.get(j.index) ?? null;
  }

  /** Recycle every buffer (after the last file was encoded, or on failure). */
  close(): void {
    for (; this.done < this.batches.length; this.done++) this.release(this.done);
  }
}

/** The first small files of a directory, read before the encoder entered it (SubdirPrereads). */
export interface Preread {
  /** Names in the directory and listed sizes, in listing order. */
  names: Buffer[];
  sizes: number[];
  result: Promise<{ files: Map<number, FileData>; buf: Buffer }>;
  /** Recycle its buffer once the read settled (again: no effect). */
  release(): void;
}

/**
 * Pre-reads of a directory's subdirectories, for an archive without a previous one and a
 * directory without exclude patterns: then a subdirectory's listing alone tells which files its
 * first batch will hold (regular files with one link, 1 B ..= SMALL_FILE, up to its first
 * subdirectory), unless it holds a `.pxarexclude`. The first files of the next
 * PREREAD_SIBLINGS subdirectories (in encoding order, those whose listings are fetched) are
 * read while the encoder is before them; FileBatches takes one over as its first batch only
 * if it holds exactly those files, so a wrong guess costs a read, never a different archive.
 * Exported for its tests only.
 */
export class SubdirPrereads {
  private next = 0;
  private entered = 0;
  private readonly position = new Map<PrefetchNode, number>();
  private readonly started = new Map<PrefetchNode, Preread>();

  constructor(
    private readonly reader: BatchReader,
    private readonly pool: BufferPool,
    private readonly subdirs: PrefetchNode[],
    /** Fetch a node's listing into it if the walk has made it (TreePrefetcher.peek). */
    private readonly peek: (node: PrefetchNode) => boolean,
  ) {
    subdirs.forEach((n, k) => this.position.set(n, k));
    this.topUp();
  }

  /** The encoder enters `node`: its pre-read, if one was started, is the caller's now. */
  enter(node: PrefetchNode): Preread | undefined {
    const p = this.started.get(node);
    this.started.delete(node);
    const k = this.position.get(node);
    if (k !== undefined) this.entered = Math.max(this.entered, k + 1);
    this.topUp();
    return p;
  }

  /** Start the pre-reads that are due, as far as buffers and fetched listings allow. */
  topUp(): void {
    while (this.next < this.subdirs.length && this.next < this.entered + PREREAD_SIBLINGS && this.pool.inUse < PREREAD_BUFFERS) {
      const node = this.subdirs[this.next];
      if (this.next < this.entered || node.dropped) {
        this.next++;
        continue;
      }
      if (!this.peek(node)) return; // not listed yet: later
      const list = node.list;
      if (!list) {
        this.next++; // failed
        continue;
      }
      this.next++;
      const names: Buffer[] = [];
      const sizes: number[] = [];
      const fds: number[] = [];
      let bytes = 0;
      if (findName(list, PXAREXCLUDE) < 0) {
        for (let i = 0; i < list.length; i++) {
          if (list.status(i) !== 0) continue;
          const type = list.mode(i) & S_IFMT;
          if (type === S_IFDIR) break;
          if (type !== S_IFREG || list.nlink(i) !== 1) continue;
          const size = list.size(i);
          if (!batched(size)) continue;
          if (bytes + size > PREREAD_BYTES || names.length >= BATCH_FILES) break;
          names.push(list.name(i));
          sizes.push(size);
          fds.push(list.fdToken(i));
          bytes += size;
        }
      }
      if (!names.length) continue;
      const buf = this.pool.acquire(bytes);
      const result = this.reader.read(
        names.map((path, index) => ({ index, path, size: sizes[index], fd: fds[index] })),
        buf,
        node.path,
      );
      result.catch(() => undefined);
      let released = false;
      const pool = this.pool;
      this.started.set(node, {
        names,
        sizes,
        result,
        release() {
          if (released) return;
          released = true;
          const back = (): void => pool.release(buf);
          result.then(back, back);
        },
      });
    }
  }

  /** Recycle the pre-reads nobody took (at the end of the directory, or on failure). */
  close(): void {
    for (const p of this.started.values()) p.release();
    this.started.clear();
    this.next = this.subdirs.length;
  }
}

/**
 * Whether the previous archive holds entry `i` (a file the walk took from the metadata cache,
 * so its fd-based metadata is the previous entry's) as a plain entry (FILENAME, ENTRY without
 * chattr flags, PAYLOAD_REF: no xattrs, ACL, fcaps or project id) that is reusable as it
 * stands: lstat's part equals the previous entry (change-detection.md §3). `cachedMetadata` +
 * `reuseRange` decide the same for it; this only skips building a Metadata object per file.
 */
function plainReuse(list: DirEntries, i: number, pe: AccessorEntry): boolean {
  const m = pe.metadata;
  return (
    pe.kind === 'file' &&
    pe.payloadOffset !== undefined &&
    pe.size === list.size(i) &&
    m.mode === list.mode(i) &&
    m.uid === list.uid(i) &&
    m.gid === list.gid(i) &&
    m.mtime.secs === list.mtimeSec(i) &&
    m.mtime.nanos === list.mtimeNsec(i) &&
    plainMetadataOf(m)
  );
}

/** Metadata a file is archived with as a plain entry: no chattr flags, xattrs, ACLs, fcaps or project id. */
function plainMetadataOf(m: Metadata): boolean {
  return m.flags === 0n && m.xattrs.length === 0 && (m.acl === NO_ACL || aclEmpty(m)) && m.fcaps === undefined && m.quotaProjectId === undefined;
}

/**
 * Whether planning a listing needs the previous archive's directory, for a previous entry:
 * - of a regular file, unless the metadata cache vouches for it as a plain file with its
 *   payload offset (the entry decides whether its payload is reused);
 * - of a directory the walk did not open (its xattrs, ACLs and flags are the previous entry's),
 *   unless the cache vouches for it as a plain directory.
 * A directory the walk opened has its metadata, and any other kind has none beyond lstat's
 * (entryMetadata); a subdirectory's previous directory is found without the listing
 * (PreviousDir). Entries that could not be stat'ed are skipped anyway.
 */
function needsPrevious(list: DirEntries): boolean {
  for (let i = 0; i < list.length; i++) {
    if (list.status(i) !== 0) continue;
    const type = list.mode(i) & S_IFMT;
    if (type === S_IFREG) {
      if (!list.metaSkipped(i) || list.nlink(i) !== 1 || list.prevPayload(i) < 0) return true;
    } else if (type === S_IFDIR) {
      if (list.metaSkipped(i) && list.prevPayload(i) !== PLAIN_DIRECTORY) return true;
    }
  }
  return false;
}

/**
 * A directory of the previous archive, opened on first use (a directory the metadata cache
 * vouches for entirely never opens it; see needsPrevious). Resolves to null where the previous
 * archive has no such directory.
 */
class PreviousDir {
  private opened: Promise<PxarDirectory | null> | null = null;

  constructor(private readonly open: () => Promise<PxarDirectory | null>) {}

  dir(): Promise<PxarDirectory | null> {
    return (this.opened ??= this.open());
  }
}

const NO_PREVIOUS_DIR = new PreviousDir(() => Promise.resolve(null));

function aclEmpty(m: Metadata): boolean {
  const a = m.acl;
  return !a.users.length && !a.groups.length && a.groupObj === undefined && a.default === undefined && !a.defaultUsers.length && !a.defaultGroups.length;
}

/** Files of a run written between checks of the metadata stream's backpressure. */
const RUN_WRITE_FILES = 64;

/** The run of plain reusable files `idx` of `list` (consecutive; `ranges` their previous payload ranges), into `runs`. */
function runOf(runs: RunStore, list: DirEntries, idx: number[], ranges: Array<[number, number] | null>, recOf: Int32Array, rs: number, dirAbs: Buffer, dirRel: Buffer): Cached {
  const from = runs.add(list, idx, recOf);
  for (let q = 0; q < idx.length; q++) runs.nums[(from + q) * RUN_FIELDS + 6] = ranges[idx[q]]![0];
  return { kind: 'run', from, to: runs.count, rs, dirAbs, dirRel };
}

/** Cached entries with every run replaced by its files (for a flush that encodes them with data). */
const joinRel = (rel: Buffer, name: Buffer) => (rel.length ? Buffer.concat([rel, SLASH, name]) : Buffer.from(name));
const joinAbs = (dir: Buffer, name: Buffer) => Buffer.concat([dir, SLASH, name]);
const SLASH = Buffer.from('/');

const PXAREXCLUDE = Buffer.from('.pxarexclude');
/** Root entry of unified archives holding the command-line exclude patterns. */
export const PXAREXCLUDE_CLI = '.pxarexclude-cli';
const emptyMetadata = (mode: number): Metadata => ({ mode, flags: 0n, uid: 0, gid: 0, mtime: { secs: 0, nanos: 0 }, xattrs: [], acl: emptyAcl() });

function findName(list: DirEntries, name: Buffer): number {
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const c = list.compareName(mid, name);
    if (c === 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}
