/**
 * Garbage collection of a local datastore (spec gc-prune-verify.md §1, datastore.md §8).
 *
 * Mark and sweep by access time, as PBS:
 *  - Phase 1 touches (utimensat: atime = now, mtime kept, no symlink following) every chunk
 *    referenced by any `.didx`/`.fidx` of any snapshot, finished or not, in every namespace,
 *    plus any index file found anywhere else in the datastore (with a warning). The atime is
 *    set explicitly, so marking works on noatime/relatime mounts; the atime safety check
 *    proves the file system keeps explicitly set access times before anything is removed.
 *    A missing chunk is reported and its `<digest>.<n>.bad` copies are touched (kept while
 *    referenced). An index file that cannot be parsed aborts the run before the sweep.
 *  - Phase 2 walks `.chunks/<hhhh>/` and removes chunk files (and `.bad` copies) whose atime
 *    (whole seconds) is older than `minAtime`; younger unreferenced ones are "pending".
 *
 * Cutoff: `minAtime = phase1Start − cutoff` (default 1445 min = 24 h 5 min: covers relatime
 * and clock skew), lowered to `oldestWriter − 300 s` when a group lock (a running backup)
 * is older than that. Why this protects a running local backup: `BackupWriter` holds its
 * group lock (with `since` = its start) before it inserts any chunk, and writes its index
 * files only at the end, so its chunks are referenced by no index GC could read. Every chunk
 * it stores is either new (atime = write time ≥ start) or a duplicate that
 * `ChunkStore.insert` touches (atime = now ≥ start); chunks it reuses without inserting
 * (injected from the previous snapshot) are referenced by that snapshot's index, which
 * cannot be removed while the group lock is held. All of these have atime ≥ start >
 * minAtime and survive. A backup starting after `phase1Start` writes atimes ≥ phase1Start.
 * Cutoffs below 1 s are refused: marks use the kernel's coarse clock, which may lag
 * `Date.now()` by milliseconds.
 *
 * Removal protocol (no in-process mutex can cover other processes): a chunk due for removal
 * is first renamed to `<digest>.pxb-gc`, its atime re-read, and it is renamed back if it was
 * touched in between; only then unlinked. An insert that touches the old name after the
 * rename finds it missing. Tombstones left by a crashed run are put back (or dropped if the
 * chunk was re-inserted) by the next run.
 *
 * Only one GC runs per datastore (lock file `.locks/gc.lock`). Memory is bounded: the walk
 * streams one prefix directory at a time, marking keeps only a fixed-size cache of recently
 * touched digests (8 MiB by default) and one index file at a time; the only set that grows
 * is the list of index file paths.
 * Syscalls on chunk files are synchronous (several times faster than libuv round trips) in
 * slices of at most ~20 ms between event-loop yields, so concurrent work in the same process
 * keeps running.
 */
import { linkSync, lstatSync, readdirSync, renameSync, unlinkSync, type Dirent, type Stats } from 'node:fs';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { userInfo } from 'node:os';
import path from 'node:path';
import { writeFileAtomic } from '../backend/fs.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { FixedIndex } from '../format/fixed-index.js';
import { UTIME_NOW, UTIME_OMIT, utimens } from '../native/fs.js';
import { CHUNK_DIR } from './chunk-store.js';
import type { DataStore } from './datastore.js';
import { LockFile } from './lock.js';
import { newUpid } from './upid.js';

export const GC_STATUS_FILE = '.gc-status';
/** PBS default `gc-atime-cutoff`: 1445 minutes. */
export const DEFAULT_GC_CUTOFF_SECONDS = 1445 * 60;
/** Safety gap below the oldest writer's start. */
export const WRITER_GAP_SECONDS = 300;
/** Slots of the touched-digest cache (8 MiB). */
export const DEFAULT_GC_CACHE_CAPACITY = 262144;

const CHUNK_NAME_RE = /^[0-9a-f]{64}$/;
const BAD_NAME_RE = /^[0-9a-f]{64}\.[0-9]\.bad$/;
const TOMB_SUFFIX = '.pxb-gc';
const TOMB_NAME_RE = /^[0-9a-f]{64}\.pxb-gc$/;
/** A chunk's temporary file (`<digest>.pxb-tmp-<pid>-<seq>`, backend TEMP_MARKER) left by a writer that died. */
const TEMP_NAME_RE = /^[0-9a-f]{64}\.pxb-tmp-[0-9a-f-]+$/;
const PREFIX_RE = /^[0-9a-f]{4}$/;
const INDEX_RE = /\.(fidx|didx)$/;
const SLICE_MS = 20;

/** `.gc-status` contents (PBS `GarbageCollectionStatus`, kebab-case on disk). */
export interface GcStatus {
  upid: string | null;
  indexFileCount: number;
  /** Σ logical sizes of the index files. */
  indexDataBytes: number;
  /** Bytes of the chunk files kept (and young `.bad` files). */
  diskBytes: number;
  diskChunks: number;
  removedBytes: number;
  removedChunks: number;
  /** Unreferenced but younger than the cutoff (kept for safety). */
  pendingBytes: number;
  pendingChunks: number;
  removedBad: number;
  stillBad: number;
  cacheStats?: { hits: number; misses: number };
}

export interface GcProgress {
  phase: 'mark' | 'sweep';
  /** Index files marked, or chunk prefix directories swept. */
  done: number;
  total: number;
}

export interface GarbageCollectOptions {
  /** Seconds before phase 1 start below which unreferenced chunks go (default 86 700, min 1). */
  cutoffSeconds?: number;
  /** Slots of the touched-digest cache (default 262 144 = 8 MiB, rounded up to a power of two; 0 disables it). */
  cacheCapacity?: number;
  /** Prove that explicit atime updates stick before removing anything (default true). */
  atimeSafetyCheck?: boolean;
  /** Recorded in the UPID (default `<user>@pam`). */
  authId?: string;
  /** The datastore's name in the UPID (default: its directory's name; a server passes its store name). */
  storeName?: string;
  signal?: AbortSignal;
  onProgress?: (p: GcProgress) => void;
  onWarning?: (message: string) => void;
}

export interface GcResult {
  status: GcStatus;
  /** Epoch seconds. */
  phase1Start: number;
  oldestWriter: number;
  minAtime: number;
  /** Live group locks seen at the start (running backups, removals). */
  runningWriters: number;
  /** Chunk files (incl. `.bad`) and their bytes before and after the sweep. */
  chunksBefore: number;
  bytesBefore: number;
  chunksAfter: number;
  bytesAfter: number;
  /** Referenced chunks that do not exist. */
  missingChunks: number;
  /** Index files outside the backup hierarchy (marked anyway). */
  strayIndexFiles: number;
  seconds: number;
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

/** Yields to the event loop about every SLICE_MS and checks for abort. */
class Slicer {
  private last = performance.now();
  constructor(private readonly signal?: AbortSignal) {}
  async maybeYield(): Promise<boolean> {
    if (performance.now() - this.last < SLICE_MS) return false;
    await new Promise<void>((r) => setImmediate(r));
    this.signal?.throwIfAborted();
    this.last = performance.now();
    return true;
  }
}

/** Convert to the on-disk JSON (kebab-case keys, PBS field names). */
export function gcStatusToJSON(s: GcStatus): Record<string, unknown> {
  const out: Record<string, unknown> = {
    upid: s.upid ?? undefined,
    'index-file-count': s.indexFileCount,
    'index-data-bytes': s.indexDataBytes,
    'disk-bytes': s.diskBytes,
    'disk-chunks': s.diskChunks,
    'removed-bytes': s.removedBytes,
    'removed-chunks': s.removedChunks,
    'pending-bytes': s.pendingBytes,
    'pending-chunks': s.pendingChunks,
    'removed-bad': s.removedBad,
    'still-bad': s.stillBad,
  };
  if (s.cacheStats) out['cache-stats'] = { hits: s.cacheStats.hits, misses: s.cacheStats.misses };
  return out;
}

/** Parse `.gc-status` JSON (missing counters read as 0, as PBS's serde defaults). */
export function gcStatusFromJSON(text: string, what = GC_STATUS_FILE): GcStatus {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${what}: not valid JSON (${(e as Error).message})`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${what}: not a JSON object`);
  const o = v as Record<string, unknown>;
  const n = (k: string): number => {
    const x = o[k];
    if (x === undefined) return 0;
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw new Error(`${what}: ${k} is not a counter`);
    return x;
  };
  const status: GcStatus = {
    upid: typeof o.upid === 'string' ? o.upid : null,
    indexFileCount: n('index-file-count'),
    indexDataBytes: n('index-data-bytes'),
    diskBytes: n('disk-bytes'),
    diskChunks: n('disk-chunks'),
    removedBytes: n('removed-bytes'),
    removedChunks: n('removed-chunks'),
    pendingBytes: n('pending-bytes'),
    pendingChunks: n('pending-chunks'),
    removedBad: n('removed-bad'),
    stillBad: n('still-bad'),
  };
  const cs = o['cache-stats'];
  if (cs && typeof cs === 'object') {
    const c = cs as Record<string, unknown>;
    if (typeof c.hits === 'number' && typeof c.misses === 'number') status.cacheStats = { hits: c.hits, misses: c.misses };
  }
  return status;
}

/** The status of the last garbage collection, or null if none ran. */
export async function readGcStatus(ds: DataStore): Promise<GcStatus | null> {
  const p = path.join(ds.path, GC_STATUS_FILE);
  let text: string;
  try {
    text = await readFile(p, 'utf8');
  } catch (e) {
    if (errno(e) === 'ENOENT') return null;
    throw e;
  }
  return gcStatusFromJSON(text, p);
}

/**
 * Every `*.fidx` / `*.didx` regular file below the datastore root (relative paths), skipping
 * entries whose name starts with `.` (chunks, locks, temporary files). An unreadable
 * `lost+found` at the root is tolerated; any other unreadable directory aborts.
 */
export async function listAllIndexFiles(ds: DataStore): Promise<Set<string>> {
  const out = new Set<string>();
  const walk = async (rel: string): Promise<void> => {
    const abs = rel ? path.join(ds.path, rel) : ds.path;
    let entries: Dirent[];
    try {
      entries = await readdir(abs, { withFileTypes: true });
    } catch (e) {
      if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') return; // removed meanwhile
      if (rel === 'lost+found' && errno(e) === 'EACCES') return;
      throw new Error(`garbage collection: cannot list ${abs}: ${(e as Error).message}`);
    }
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else if (e.isFile() && INDEX_RE.test(e.name)) out.add(r);
    }
  };
  await walk('');
  return out;
}

/**
 * Fixed-size cache of recently touched digests (PBS uses an LRU; this is a direct-mapped
 * table: one 32-byte slot per hash bucket, a new digest evicts the slot's old one). Lookups
 * compare whole digests, so a hit is never wrong; memory is `32 × slots` bytes, allocation-free.
 */
class DigestCache {
  private readonly table: Buffer;
  private readonly used: Uint8Array;
  private readonly mask: number;
  hits = 0;
  misses = 0;
  constructor(capacity: number) {
    const slots = capacity > 0 ? 2 ** Math.ceil(Math.log2(capacity)) : 0;
    this.table = Buffer.alloc(slots * 32);
    this.used = new Uint8Array(slots);
    this.mask = slots - 1;
  }
  /** True if `digest` is cached. */
  has(digest: Buffer): boolean {
    if (this.used.length === 0) return false;
    const slot = digest.readUInt32LE(0) & this.mask;
    if (this.used[slot] && digest.compare(this.table, slot * 32, slot * 32 + 32) === 0) {
      this.hits++;
      return true;
    }
    this.misses++;
    return false;
  }
  add(digest: Buffer): void {
    if (this.used.length === 0) return;
    const slot = digest.readUInt32LE(0) & this.mask;
    digest.copy(this.table, slot * 32, 0, 32);
    this.used[slot] = 1;
  }
}

/**
 * Prove that an explicitly set atime is stored and that an atime update to "now" sticks,
 * on a scratch file in the chunk directory. Throws if not.
 */
async function atimeSafetyCheck(chunkDir: string): Promise<void> {
  const p = path.join(chunkDir, `.pxb-atime-check-${process.pid}`);
  await writeFile(p, '');
  try {
    const past = Math.floor(Date.now() / 1000) - 2 * 86400;
    utimens(p, past, 0, past, 0);
    const before = lstatSync(p);
    if (Math.floor(before.atimeMs / 1000) !== past) {
      throw new Error(`atime safety check failed: ${chunkDir} does not keep explicitly set access times`);
    }
    utimens(p, 0, UTIME_NOW, 0, UTIME_OMIT);
    const after = lstatSync(p);
    if (!(after.atimeMs / 1000 > past + 86400) || after.ino !== before.ino || Math.floor(after.mtimeMs / 1000) !== past) {
      throw new Error(`atime safety check failed: access time updates on ${chunkDir} do not take effect`);
    }
  } finally {
    await rm(p, { force: true });
  }
}

interface MarkState {
  status: GcStatus;
  chunkDir: string;
  cache: DigestCache;
  slicer: Slicer;
  missing: number;
  warn: (m: string) => void;
}

/** Touch a chunk (atime = now); false if it does not exist. */
function touchChunk(p: string): boolean {
  try {
    utimens(p, 0, UTIME_NOW, 0, UTIME_OMIT, true);
    return true;
  } catch (e) {
    if (errno(e) === 'ENOENT') return false;
    throw e;
  }
}

async function markIndexFile(ds: DataStore, rel: string, st: MarkState): Promise<void> {
  const abs = path.join(ds.path, rel);
  let data: Buffer;
  try {
    data = await readFile(abs);
  } catch (e) {
    if (errno(e) === 'ENOENT') return; // removed by a concurrent prune
    throw new Error(`garbage collection: cannot read index ${abs}: ${(e as Error).message}`);
  }
  // A damaged index must stop GC: sweeping without its marks could delete live chunks.
  const index = rel.endsWith('.didx') ? DynamicIndex.parse(data, abs) : FixedIndex.parse(data, abs);
  st.status.indexFileCount++;
  st.status.indexDataBytes += index.size;
  for (let k = 0; k < index.count; k++) {
    const digest = index.digest(k);
    if (st.cache.has(digest)) continue;
    const hex = digest.toString('hex');
    const p = `${st.chunkDir}/${hex.slice(0, 4)}/${hex}`;
    if (touchChunk(p)) {
      st.cache.add(digest);
    } else {
      st.missing++;
      st.warn(`unable to access non-existent chunk ${hex}, required by ${rel}`);
      for (let n = 0; n <= 9; n++) touchChunk(`${p}.${n}.bad`);
    }
    await st.slicer.maybeYield();
  }
}

function lstatOrNull(p: string): Stats | null {
  try {
    return lstatSync(p);
  } catch (e) {
    if (errno(e) === 'ENOENT') return null;
    throw e;
  }
}

/**
 * Remove an unreferenced chunk unless it is touched meanwhile (see the removal protocol
 * above). Returns false if it was kept.
 */
function removeChunk(p: string, minAtime: number): boolean {
  const tomb = p + TOMB_SUFFIX;
  try {
    renameSync(p, tomb);
  } catch (e) {
    if (errno(e) === 'ENOENT') return false; // gone already
    throw e;
  }
  const st = lstatOrNull(tomb);
  if (st && Math.floor(st.atimeMs / 1000) >= minAtime) {
    restoreTomb(tomb, p);
    return false;
  }
  unlinkSync(tomb);
  return true;
}

/** Put a tombstone back under its chunk name, or drop it if the chunk was re-inserted. */
function restoreTomb(tomb: string, p: string): void {
  try {
    linkSync(tomb, p); // never replaces a copy inserted meanwhile
  } catch (e) {
    if (errno(e) !== 'EEXIST') throw e;
  }
  unlinkSync(tomb);
}

/**
 * A chunk writer's temporary file untouched since before the cutoff: its writer died (a
 * writer links or renames it away within one insert). Removed, as upstream's sweep removes
 * stale temporary chunk files.
 */
function removeStaleTemp(p: string, minAtime: number): void {
  const st = lstatOrNull(p);
  if (!st || !st.isFile() || Math.floor(Math.max(st.atimeMs, st.mtimeMs) / 1000) >= minAtime) return;
  try {
    unlinkSync(p);
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw new Error(`garbage collection: unlinking ${p} failed: ${(e as Error).message}`);
  }
}

/** Run garbage collection on `ds`; writes and returns the status. */
export async function garbageCollect(ds: DataStore, options: GarbageCollectOptions = {}): Promise<GcResult> {
  const t0 = performance.now();
  const cutoff = options.cutoffSeconds ?? DEFAULT_GC_CUTOFF_SECONDS;
  if (!Number.isSafeInteger(cutoff) || cutoff < 1) throw new Error(`invalid GC cutoff ${cutoff} (whole seconds ≥ 1)`);
  const capacity = options.cacheCapacity ?? DEFAULT_GC_CACHE_CAPACITY;
  if (!Number.isSafeInteger(capacity) || capacity < 0) throw new Error(`invalid GC cache capacity ${capacity}`);
  const signal = options.signal;
  signal?.throwIfAborted();

  const lock = await LockFile.acquire(ds.gcLockPath, `garbage collection of ${ds.path}`, 'garbage collection', ds.fsync);
  try {
    const chunkDir = path.join(ds.path, CHUNK_DIR);
    if (options.atimeSafetyCheck ?? true) await atimeSafetyCheck(chunkDir);

    const phase1Start = Math.floor(Date.now() / 1000);
    const writers = await ds.activeGroupLocks();
    const oldestWriter = writers.length ? Math.min(phase1Start, writers[0].since) : phase1Start;
    let minAtime = phase1Start - cutoff;
    if (oldestWriter < minAtime) minAtime = oldestWriter - WRITER_GAP_SECONDS;

    const upid = newUpid('garbage_collection', options.storeName ?? path.basename(ds.path), options.authId ?? `${userInfo().username}@pam`, phase1Start);
    const status: GcStatus = {
      upid,
      indexFileCount: 0,
      indexDataBytes: 0,
      diskBytes: 0,
      diskChunks: 0,
      removedBytes: 0,
      removedChunks: 0,
      pendingBytes: 0,
      pendingChunks: 0,
      removedBad: 0,
      stillBad: 0,
    };
    const slicer = new Slicer(signal);
    const warn = (m: string) => options.onWarning?.(m);
    const cache = new DigestCache(capacity);
    const mark: MarkState = { status, chunkDir, cache, slicer, missing: 0, warn };

    // ---- phase 1: mark ----
    const found = await listAllIndexFiles(ds);
    const total = found.size;
    let done = 0;
    const progress = (phase: GcProgress['phase'], d: number, t: number) => options.onProgress?.({ phase, done: d, total: t });
    progress('mark', 0, total);
    for (const ns of await ds.listNamespaces()) {
      for (const group of await ds.listGroups(ns)) {
        const snaps = await ds.listSnapshots(group, { includeUnfinished: true });
        for (const snap of snaps.reverse()) {
          for (const f of snap.files) {
            if (!INDEX_RE.test(f)) continue;
            const rel = `${snap.dir.path}/${f}`;
            found.delete(rel);
            await markIndexFile(ds, rel, mark);
            progress('mark', Math.min(++done, total), total);
            signal?.throwIfAborted();
          }
        }
      }
    }
    const strayIndexFiles = found.size;
    for (const rel of found) {
      warn(`marking chunks of index file outside the backup hierarchy: ${rel}`);
      await markIndexFile(ds, rel, mark);
      progress('mark', Math.min(++done, total), total);
      signal?.throwIfAborted();
    }
    if (capacity > 0) status.cacheStats = { hits: cache.hits, misses: cache.misses };

    // ---- phase 2: sweep ----
    let prefixes: string[];
    try {
      prefixes = (await readdir(chunkDir, { withFileTypes: true }))
        .filter((e) => e.isDirectory() && PREFIX_RE.test(e.name))
        .map((e) => e.name)
        .sort();
    } catch (e) {
      throw new Error(`garbage collection: cannot list ${chunkDir}: ${(e as Error).message}`);
    }
    let chunksBefore = 0;
    let bytesBefore = 0;
    progress('sweep', 0, prefixes.length);
    for (let i = 0; i < prefixes.length; i++) {
      const dir = path.join(chunkDir, prefixes[i]);
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch (e) {
        if (errno(e) === 'ENOENT') continue;
        throw new Error(`garbage collection: cannot list ${dir}: ${(e as Error).message}`);
      }
      for (const name of names) {
        const bad = BAD_NAME_RE.test(name);
        if (!bad && !CHUNK_NAME_RE.test(name)) {
          if (TOMB_NAME_RE.test(name)) restoreTomb(path.join(dir, name), path.join(dir, name.slice(0, 64)));
          else if (TEMP_NAME_RE.test(name)) removeStaleTemp(path.join(dir, name), minAtime);
          continue;
        }
        const p = path.join(dir, name);
        const st = lstatOrNull(p);
        if (!st || !st.isFile()) continue;
        chunksBefore++;
        bytesBefore += st.size;
        const atime = Math.floor(st.atimeMs / 1000);
        if (atime < minAtime) {
          let removed: boolean;
          if (bad) {
            try {
              unlinkSync(p);
              removed = true;
            } catch (e) {
              if (errno(e) !== 'ENOENT') throw new Error(`garbage collection: unlinking ${p} failed: ${(e as Error).message}`);
              removed = false;
            }
          } else {
            removed = removeChunk(p, minAtime);
          }
          if (removed) {
            if (bad) status.removedBad++;
            else status.removedChunks++;
            status.removedBytes += st.size;
          } else if (!bad) {
            status.diskChunks++;
            status.diskBytes += st.size;
          }
        } else if (atime < oldestWriter) {
          if (bad) status.stillBad++;
          else status.pendingChunks++;
          status.pendingBytes += st.size;
        } else {
          if (!bad) status.diskChunks++;
          status.diskBytes += st.size;
        }
        await slicer.maybeYield();
      }
      if (await slicer.maybeYield()) progress('sweep', i + 1, prefixes.length);
    }
    signal?.throwIfAborted();
    progress('sweep', prefixes.length, prefixes.length);

    await writeFileAtomic(path.join(ds.path, GC_STATUS_FILE), Buffer.from(JSON.stringify(gcStatusToJSON(status))), {
      fsync: ds.fsync,
    });
    return {
      status,
      phase1Start,
      oldestWriter,
      minAtime,
      runningWriters: writers.length,
      chunksBefore,
      bytesBefore,
      chunksAfter: chunksBefore - status.removedChunks - status.removedBad,
      bytesAfter: bytesBefore - status.removedBytes,
      missingChunks: mark.missing,
      strayIndexFiles,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await lock.release();
  }
}
