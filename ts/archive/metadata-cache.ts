/**
 * Metadata cache: which entries of a snapshot's metadata archive still describe the file
 * system, so that a metadata-mode backup does not open them again to read xattrs, ACLs, fcaps,
 * chattr flags and the project id (PBS opens every regular file and directory for these).
 *
 * A record is (FNV-1a 64 of the entry's absolute path, inode, ctime in ns) of a regular file
 * or directory as it was archived. Linux changes an inode's ctime with every xattr, ACL,
 * chattr and project-id change, so an entry whose path, inode and ctime match a record has the
 * metadata the previous archive holds at that path; the native walk skips the reads only on
 * file systems where this holds (ext2/3/4, XFS, btrfs, tmpfs). Like restic's and borg's files
 * caches this trusts ctime: a clock set back can hide a change.
 *
 * A record also holds the file's PAYLOAD_REF offset when the archive holds it as a plain file
 * (FILENAME, ENTRY without chattr flags, PAYLOAD_REF; no xattrs, ACLs, fcaps or project id),
 * PLAIN_DIRECTORY (0) for a directory archived plain (no chattr flags, xattrs, ACLs or project
 * id), else all ones. A metadata-mode backup takes such a file's reuse range from the record
 * and such a directory's metadata from lstat alone: a directory of only such entries is not
 * read from the previous archive at all. The records are trusted as borg trusts its files
 * cache: a file is used only for the archive whose index csum it names and only if its
 * SHA-256 holds; a false match would need a 64-bit path-hash collision of two paths that also
 * agree in inode and ctime.
 *
 * Racy entries: an entry changed within the same clock tick as the read that recorded it would
 * keep its ctime, so only entries whose ctime lies before `recordBefore` (the backup's start
 * minus a second) are recorded; newer ones are read again next time.
 *
 * Unchanged trees: every archived entry has a record (symlinks, devices, FIFOs and sockets
 * too, with no value), the root included, and a directory's value holds in its high 32 bits
 * how many entries of it were archived. `treeUnchanged` (native) walks the tree against them:
 * it tells whether the tree still holds exactly the archived entries, each with its inode and
 * ctime (native/src/fs/unchanged.rs says why that suffices). A backup that made an archive
 * equal to its previous one (same index csums, no warnings), or one that reused every file
 * and whose payload stream is its previous one's data chunks between its own markers (the
 * next backup then decides everything the same way: create.ts, writesItselfAgain), marks its
 * cache `fixedPoint`, with a digest of the settings it ran with. Backing up is deterministic in the tree, the
 * previous archive and the settings, so a later backup with the same settings of a tree that
 * is unchanged against such a cache would make that archive again: it reuses the previous
 * indexes as they are (create.ts) instead of encoding anything.
 *
 * File format (client-side, next to the snapshot it describes; see client/backup.ts):
 *   "PXBMCAC3" | 32-byte csum of the metadata archive's index (.mpxar.didx) it belongs to |
 *   32-byte settings digest | u64 LE flags (bit 0: fixedPoint) | u64 LE entries, files,
 *   directories (the archive's counts) | u64 LE record count | SHA-256 of everything before it
 *   and of the records | records, sorted (u64 path hash, inode, ctime ns, value, in host
 *   byte order). A "PXBMCAC2" file (no settings, flags or counts) is still read: never a
 *   fixed point.
 */
import { createHash } from 'node:crypto';
import { sortUnchangedTable, UNCHANGED_RECORD, type DirEntries, type TreeCheck } from '../native/fs.js';

const MAGIC = Buffer.from('PXBMCAC3');
const MAGIC_V2 = Buffer.from('PXBMCAC2');
/** A directory's record: it was archived plain (module doc). No payload offset is 0 (the start marker is there). */
export const PLAIN_DIRECTORY = 0;
/** u32 words per record. */
const WORDS = UNCHANGED_RECORD / 4;
const HEADER_V2 = MAGIC.length + 32 + 8 + 32;
/** Offsets in a v3 header. */
const H_CSUM = MAGIC.length;
const H_SETTINGS = H_CSUM + 32;
const H_FLAGS = H_SETTINGS + 32;
const H_COUNTS = H_FLAGS + 8;
const H_RECORDS = H_COUNTS + 24;
const H_SHA = H_RECORDS + 8;
const HEADER = H_SHA + 32;
const FIXED_POINT = 1n;
const sha256 = (...parts: Buffer[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

/** The archive's entry counts, as its backup reported them (ArchiveStats). */
export interface ArchiveCounts {
  entries: number;
  files: number;
  directories: number;
}

/** A metadata cache: its records and what the backup that wrote them knew (module doc). */
export interface MetadataCache {
  /** Sorted records, 8-aligned (`ReadDirOptions.unchanged`, `treeUnchanged`). */
  table: Buffer;
  /** Digest of the settings the backup ran with (all zeros: unknown). */
  settings: Buffer;
  /** The backup made an archive equal to its previous one (module doc). */
  fixedPoint: boolean;
  counts: ArchiveCounts;
}

/** Collects the records of one backup (see the module doc); `finish` sorts them. */
export class MetadataCacheBuilder {
  /** Records as u32 words (WORDS per record), copied from listings without BigInt conversions. */
  private words = new Uint32Array(WORDS * 1024);
  private n = 0;
  /** Only entries with a ctime before this time (seconds, nanoseconds) are recorded. */
  private readonly beforeSec: number;
  private readonly beforeNsec: number;

  /** `recordBefore`: ns since the epoch (the module doc's racy-entry rule). */
  constructor(recordBefore: bigint) {
    this.beforeSec = Number(recordBefore / 1_000_000_000n);
    this.beforeNsec = Number(recordBefore % 1_000_000_000n);
  }

  /**
   * Record entry `i` of a listing (an archived entry of any kind, the root's one-entry listing
   * too), without a value; returns the record's number for `setPayload` / `setEntryCount`, or
   * -1 when the entry is not recorded (racy).
   */
  add(list: DirEntries, i: number): number {
    const sec = list.ctimeSec(i);
    if (!(sec >= 0 && (sec < this.beforeSec || (sec === this.beforeSec && list.ctimeNsec(i) < this.beforeNsec)))) return -1;
    if ((this.n + 1) * WORDS > this.words.length) {
      const w = new Uint32Array(this.words.length * 2);
      w.set(this.words);
      this.words = w;
    }
    const at = this.n * WORDS;
    list.copyRecord(i, this.words, at);
    this.words[at + 6] = 0xffffffff;
    this.words[at + 7] = 0xffffffff;
    return this.n++;
  }

  /** Record `rec` (from `add`) is a plain file whose PAYLOAD_REF offset is `offset` (or a plain directory: PLAIN_DIRECTORY). */
  setPayload(rec: number, offset: number): void {
    if (rec < 0 || rec >= this.n) return;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new Error(`metadata cache: payload offset ${offset}`);
    this.words[rec * WORDS + 6] = offset >>> 0;
    this.words[rec * WORDS + 7] = Math.floor(offset / 2 ** 32);
  }

  /**
   * `setPayload` for files `from..to` of a run: record `recs[q]` (-1: none) gets the offset
   * `nums[q * stride + 6] + delta` (replayRun's loop over a run, one call per group of files).
   */
  setPayloads(recs: Int32Array, nums: Float64Array, stride: number, from: number, to: number, delta: number): void {
    for (let q = from; q < to; q++) if (recs[q] >= 0) this.setPayload(recs[q], nums[q * stride + 6] + delta);
  }

  /** Directory record `rec` (from `add`, after any `setPayload`) had `count` entries archived. */
  setEntryCount(rec: number, count: number): void {
    if (rec < 0 || rec >= this.n) return;
    if (!(count >= 0 && count < 2 ** 32)) throw new Error(`metadata cache: entry count ${count}`);
    this.words[rec * WORDS + 7] = count;
  }

  /** The sorted table (8-aligned, as `ReadDirOptions.unchanged` needs it). */
  finish(): Buffer {
    const table = Buffer.from(this.words.buffer, 0, this.n * UNCHANGED_RECORD);
    sortUnchangedTable(table);
    return table;
  }
}

/** The cache file of `cache`, which describes the metadata archive whose index has `indexCsum`. */
export function encodeMetadataCache(indexCsum: Buffer, cache: MetadataCache): Buffer {
  if (indexCsum.length !== 32) throw new Error('metadata cache: index csum must be 32 bytes');
  if (cache.settings.length !== 32) throw new Error('metadata cache: settings digest must be 32 bytes');
  const head = Buffer.alloc(HEADER);
  MAGIC.copy(head, 0);
  indexCsum.copy(head, H_CSUM);
  cache.settings.copy(head, H_SETTINGS);
  head.writeBigUInt64LE(cache.fixedPoint ? FIXED_POINT : 0n, H_FLAGS);
  const c = cache.counts;
  [c.entries, c.files, c.directories].forEach((v, k) => head.writeBigUInt64LE(BigInt(v), H_COUNTS + 8 * k));
  head.writeBigUInt64LE(BigInt(cache.table.length / UNCHANGED_RECORD), H_RECORDS);
  sha256(head.subarray(0, H_SHA), cache.table).copy(head, H_SHA);
  return Buffer.concat([head, cache.table]);
}

/** A cache file's content: the cache and the metadata archive it belongs to. */
export interface LoadedMetadataCache extends MetadataCache {
  /** Csum of the `.mpxar.didx` the cache describes: it is used only with that archive. */
  indexCsum: Buffer;
  /** A tree check already started against `table` (create.ts: startTreeCheck). */
  check?: { key: string; result: Promise<TreeCheck> };
}

/**
 * The cache in a cache file if it belongs to the metadata archive whose index has `indexCsum`
 * and is intact, else null (a cache that does not fit is not used; nothing depends on it).
 */
export function decodeMetadataCache(file: Buffer, indexCsum: Buffer): MetadataCache | null {
  const c = loadMetadataCache(file);
  if (!c?.indexCsum.equals(indexCsum)) return null;
  const { indexCsum: _, ...cache } = c;
  return cache;
}

/** The content of a cache file if it is intact, else null (`decodeMetadataCache` binds it to its archive). */
export function loadMetadataCache(file: Buffer): LoadedMetadataCache | null {
  const v2 = file.length >= HEADER_V2 && file.subarray(0, MAGIC.length).equals(MAGIC_V2);
  const header = v2 ? HEADER_V2 : HEADER;
  if (file.length < header || !(v2 || file.subarray(0, MAGIC.length).equals(MAGIC))) return null;
  const indexCsum = Buffer.from(file.subarray(H_CSUM, H_CSUM + 32));
  const count = file.readBigUInt64LE(v2 ? H_CSUM + 32 : H_RECORDS);
  if (BigInt(file.length - header) !== count * BigInt(UNCHANGED_RECORD)) return null;
  const sum = v2 ? sha256(file.subarray(HEADER_V2)) : sha256(file.subarray(0, H_SHA), file.subarray(HEADER));
  if (!sum.equals(file.subarray(header - 32, header))) return null;
  // An aligned copy (a file read may land at any offset of a pooled buffer), sorted again:
  // lookups rely on the order, and a damaged file must not make them miss or loop.
  const words = new BigUint64Array(Number(count) * (UNCHANGED_RECORD / 8));
  const table = Buffer.from(words.buffer);
  file.copy(table, 0, header);
  sortUnchangedTable(table);
  if (v2) return { indexCsum, table, settings: Buffer.alloc(32), fixedPoint: false, counts: { entries: 0, files: 0, directories: 0 } };
  const [entries, files, directories] = [0, 1, 2].map((k) => Number(file.readBigUInt64LE(H_COUNTS + 8 * k)));
  return {
    indexCsum,
    table,
    settings: Buffer.from(file.subarray(H_SETTINGS, H_SETTINGS + 32)),
    fixedPoint: (file.readBigUInt64LE(H_FLAGS) & FIXED_POINT) !== 0n,
    counts: { entries, files, directories },
  };
}
