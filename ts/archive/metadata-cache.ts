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
 * File format (client-side, next to the snapshot it describes; see client/backup.ts):
 *   "PXBMCAC2" | 32-byte csum of the metadata archive's index (.mpxar.didx) it belongs to |
 *   u64 LE record count | SHA-256 of the records | records, sorted (u64 path hash, inode,
 *   ctime ns, payload offset, in host byte order)
 */
import { createHash } from 'node:crypto';
import { sortUnchangedTable, UNCHANGED_RECORD, type DirEntries } from '../native/fs.js';

const MAGIC = Buffer.from('PXBMCAC2');
/** A directory's record: it was archived plain (module doc). No payload offset is 0 (the start marker is there). */
export const PLAIN_DIRECTORY = 0;
/** u32 words per record. */
const WORDS = UNCHANGED_RECORD / 4;
const HEADER = MAGIC.length + 32 + 8 + 32;
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();

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
   * Record entry `i` of a listing (a regular file or directory archived with its metadata),
   * without a payload offset; returns the record's number for `setPayload`, or -1 when the
   * entry is not recorded (racy).
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

  /** The sorted table (8-aligned, as `ReadDirOptions.unchanged` needs it). */
  finish(): Buffer {
    const table = Buffer.from(this.words.buffer, 0, this.n * UNCHANGED_RECORD);
    sortUnchangedTable(table);
    return table;
  }
}

/** The cache file for a table that describes the metadata archive whose index has `indexCsum`. */
export function encodeMetadataCache(indexCsum: Buffer, table: Buffer): Buffer {
  if (indexCsum.length !== 32) throw new Error('metadata cache: index csum must be 32 bytes');
  const head = Buffer.alloc(HEADER);
  MAGIC.copy(head, 0);
  indexCsum.copy(head, MAGIC.length);
  head.writeBigUInt64LE(BigInt(table.length / UNCHANGED_RECORD), MAGIC.length + 32);
  sha256(table).copy(head, MAGIC.length + 40);
  return Buffer.concat([head, table]);
}

/**
 * The table of a cache file if it belongs to the metadata archive whose index has `indexCsum`
 * and is intact, else null (a cache that does not fit is not used; nothing depends on it).
 */
export function decodeMetadataCache(file: Buffer, indexCsum: Buffer): Buffer | null {
  if (file.length < HEADER || !file.subarray(0, MAGIC.length).equals(MAGIC)) return null;
  if (!file.subarray(MAGIC.length, MAGIC.length + 32).equals(indexCsum)) return null;
  const count = file.readBigUInt64LE(MAGIC.length + 32);
  if (BigInt(file.length - HEADER) !== count * BigInt(UNCHANGED_RECORD)) return null;
  if (!sha256(file.subarray(HEADER)).equals(file.subarray(MAGIC.length + 40, HEADER))) return null;
  // An aligned copy (a file read may land at any offset of a pooled buffer), sorted again:
  // lookups rely on the order, and a damaged file must not make them miss or loop.
  const words = new BigUint64Array(Number(count) * (UNCHANGED_RECORD / 8));
  const table = Buffer.from(words.buffer);
  file.copy(table, 0, HEADER);
  sortUnchangedTable(table);
  return table;
}
