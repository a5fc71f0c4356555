/**
 * Native file-system mechanisms for backup and restore (typed wrapper over the addon's `fs*`
 * exports; Rust side: native/src/fs/, glue: native/src/napi/fs.rs).
 *
 * Mechanism only: TS does the recursion and all policy (excludes, xattr name filters, ACL
 * interpretation, what to archive). Invariants:
 * - Paths and names are raw bytes: pass Buffers for non-UTF-8 paths (strings are UTF-8);
 *   names come back as Buffers.
 * - `readDir` never lists `.`/`..`, sorts by raw byte-wise name (memcmp order, as PBS), lstat()s
 *   every entry and reads fd-based metadata (xattrs, chattr flags, FAT attributes, project id)
 *   only for regular files and directories, as PBS does (it opens other kinds with O_PATH).
 *   An entry that vanished or whose metadata could not be read is reported in that entry,
 *   never as a failure of the whole directory.
 * - Errors are node-style (`code`, negative `errno`, `syscall`, `path`); bad argument types
 *   throw/reject a TypeError with code ERR_INVALID_ARG_TYPE. Nothing here crashes the process.
 * - Async calls run on the libuv pool, except storeChunk (hashing and zstd), which runs on the
 *   native CPU workers; `DirWalker` lists a tree on threads of its own; the restore calls are
 *   synchronous (one syscall or a short fixed sequence each).
 */
import { close as fsClose, fstat as fsFstat, read as fsRead, type Stats } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { native } from './index.js';

/** A path: Buffer/Uint8Array for raw bytes, or a string (encoded as UTF-8). */
export type RawPath = Uint8Array | string;

/**
 * Which fd-based metadata `readDir`/`statPath` read for regular files and directories.
 * Each xattr flag governs its own class of names: `acls` the `system.posix_acl_access` /
 * `system.posix_acl_default` values, `fcaps` `security.capability`, `xattrs` every other name
 * (all namespaces, unfiltered: the archiver applies PBS's user./trusted./security.NTACL filter).
 */
export interface ReadDirOptions {
  xattrs?: boolean;
  acls?: boolean;
  fcaps?: boolean;
  /** chattr flags (FS_IOC_GETFLAGS); on MSDOS/FUSE file systems also the FAT attributes. */
  flags?: boolean;
  /** Quota project id (FS_IOC_FSGETXATTR), whatever the file system type. */
  projid?: boolean;
  /**
   * Metadata cache (`UnchangedTable`, readDir only): a regular file or directory whose
   * (path hash, inode, ctime) is in it is not opened, on file systems where ctime changes with
   * every xattr/ACL/chattr/project-id change (ext2/3/4, XFS, btrfs, tmpfs); `metaSkipped(i)`
   * is then true, its xattrs, flags and project id are absent from the listing, and
   * `prevPayload(i)` is the record's fourth word.
   */
  unchanged?: Buffer;
  /**
   * `DirWalker` only: a non-empty regular file opened for its metadata keeps that descriptor
   * for the read of its contents (`fdToken(i)`, then `readFilesExact`'s `held` or
   * `takeHeldFile`), so that it is opened once, not twice. Held descriptors are bounded
   * (`heldSlots()`, oldest closed first) and closed when the walker closes; one no longer held
   * only means that file is opened again by name.
   */
  holdFds?: boolean;
}

/**
 * Bytes per metadata-cache record: u64 path hash, u64 inode, u64 ctime in nanoseconds, u64 of
 * the caller's (`prevPayload` of a matching entry; all ones: none).
 */
export const UNCHANGED_RECORD = 32;

export interface XAttr {
  name: Buffer;
  value: Buffer;
}

/** A metadata read that failed with an unexpected errno (PBS would report/abort here). */
export interface MetaError {
  /** "open", "readlinkat", "flistxattr", "fgetxattr", "ioctl(FS_IOC_GETFLAGS)", ... */
  op: string;
  /** Positive errno. ENOENT from "open"/"readlinkat" means the entry vanished. */
  errno: number;
  code: string;
}

/** One entry, materialized (see `DirEntries` for the allocation-free accessors). */
export interface DirEntry {
  name: Buffer;
  /** 0, or the positive errno of its lstat (ENOENT: vanished after readdir); then all other fields are 0/empty. */
  status: number;
  /** Full st_mode (type and permission bits). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  ctimeSec: number;
  ctimeNsec: number;
  nlink: number;
  dev: bigint;
  ino: bigint;
  /** Device numbers from st_rdev (glibc major()/minor()); 0 for non-devices. */
  rdevMajor: number;
  rdevMinor: number;
  /** Raw chattr flags (FS_*_FL), 0 when not read or unsupported. */
  flags: number;
  /** Raw FAT attributes (ATTR_*), read only on MSDOS/FUSE file systems, else 0. */
  fatAttrs: number;
  /** Quota project id, 0 when not read or unsupported. */
  projid: number;
  /** Symlink target bytes, null for other kinds. */
  symlinkTarget: Buffer | null;
  /** In flistxattr order, with values. Empty unless requested and a regular file/directory. */
  xattrs: XAttr[];
  metaError: MetaError | null;
  /** The fd-based metadata was not read: the metadata cache has it (ReadDirOptions.unchanged). */
  metaSkipped: boolean;
  /** See `DirEntries.prevPayload`. */
  prevPayload: number;
  /** FNV-1a 64 of the entry's full path (the metadata cache's key). */
  pathHash: bigint;
}

// Layout of the ArrayBuffer the addon returns (native/src/fs/dir.rs module doc).
const LAYOUT_VERSION = 4;
const F_STATUS = 0;
const F_MODE = 1;
const F_UID = 2;
const F_GID = 3;
const F_SIZE = 4;
const F_MTIME_SEC = 5;
const F_MTIME_NSEC = 6;
const F_CTIME_SEC = 7;
const F_CTIME_NSEC = 8;
const F_NLINK = 9;
const F_RDEV_MAJOR = 10;
const F_RDEV_MINOR = 11;
const F_FLAGS = 12;
const F_FAT_ATTRS = 13;
const F_PROJID = 14;
const F_META_OP = 15;
const F_META_ERRNO = 16;
const F_META_SKIPPED = 18;
const F_PREV_PAYLOAD = 19;
const F_FD = 20;
const FIELDS = 21;
/** Same list as META_OPS in native/src/fs/dir.rs. */
const META_OPS = [
  '',
  'open',
  'readlinkat',
  'flistxattr',
  'fgetxattr',
  'ioctl(FS_IOC_GETFLAGS)',
  'ioctl(FAT_IOCTL_GET_ATTRIBUTES)',
  'ioctl(FS_IOC_FSGETXATTR)',
];

let errnoNames: Map<number, string> | undefined;
/** "ENOENT" for 2 (from node's os.constants.errno). */
export function errnoCode(errno: number): string {
  if (!errnoNames) {
    errnoNames = new Map();
    for (const [name, n] of Object.entries(osConstants.errno)) if (!errnoNames.has(n)) errnoNames.set(n, name);
  }
  return errnoNames.get(errno) ?? `ERRNO_${errno}`;
}

/**
 * The listing of one directory, column-wise: index accessors read straight from typed arrays
 * over one ArrayBuffer (one crossing per directory); `entry(i)` materializes an object.
 */
export class DirEntries implements Iterable<DirEntry> {
  /** Number of entries. */
  readonly length: number;
  /** statfs f_type of the directory (for statPath: of the path). */
  readonly fsMagic: number;
  readonly #nums: Float64Array;
  readonly #ids: BigUint64Array;
  readonly #idWords: Uint32Array;
  readonly #offs: Uint32Array;
  readonly #bytes: Buffer;

  constructor(ab: ArrayBuffer) {
    const h = new Float64Array(ab, 0, 4);
    if (h[2] !== LAYOUT_VERSION || h[3] !== FIELDS) {
      throw new Error(`native readDir layout ${h[2]}/${h[3]} does not match ${LAYOUT_VERSION}/${FIELDS}: rebuild the addon`);
    }
    const n = h[0];
    this.length = n;
    this.fsMagic = h[1];
    let off = 32;
    this.#nums = new Float64Array(ab, off, n * FIELDS);
    off += n * FIELDS * 8;
    this.#ids = new BigUint64Array(ab, off, n * 4);
    this.#idWords = new Uint32Array(ab, off, n * 8);
    off += n * 32;
    this.#offs = new Uint32Array(ab, off, n * 4);
    off = (off + n * 16 + 7) & ~7;
    this.#bytes = Buffer.from(ab, off);
  }

  #check(i: number): void {
    if (!(Number.isInteger(i) && i >= 0 && i < this.length)) {
      throw new RangeError(`entry index ${i} outside 0..${this.length - 1}`);
    }
  }

  #num(i: number, f: number): number {
    this.#check(i);
    return this.#nums[i * FIELDS + f];
  }

  name(i: number): Buffer {
    this.#check(i);
    const o = this.#offs[i * 4];
    return this.#bytes.subarray(o, o + this.#offs[i * 4 + 1]);
  }

  /** `Buffer.compare(this.name(i), other)` without making the name's view. */
  compareName(i: number, other: Uint8Array): number {
    this.#check(i);
    const o = this.#offs[i * 4];
    return this.#bytes.compare(other, 0, other.length, o, o + this.#offs[i * 4 + 1]);
  }

  /**
   * Stat fields of entries `idx` into `out`, `stride` numbers per entry from entry slot `at`
   * (`out[at * stride]`): mode, uid, gid, mtime seconds, mtime nanoseconds, size (the rest of
   * each stride is left as it is).
   */
  statFields(idx: ArrayLike<number>, out: Float64Array, stride: number, at = 0): void {
    if (stride < 6 || !(at >= 0) || (at + idx.length) * stride > out.length) throw new RangeError(`stat fields of ${idx.length} entries do not fit in ${out.length} numbers from entry ${at}`);
    const src = this.#nums;
    for (let q = 0; q < idx.length; q++) {
      const i = idx[q];
      this.#check(i);
      const s = i * FIELDS;
      const d = (at + q) * stride;
      out[d] = src[s + F_MODE];
      out[d + 1] = src[s + F_UID];
      out[d + 2] = src[s + F_GID];
      out[d + 3] = src[s + F_MTIME_SEC];
      out[d + 4] = src[s + F_MTIME_NSEC];
      out[d + 5] = src[s + F_SIZE];
    }
  }

  /** Bytes of the names of entries `idx` together. */
  nameBytes(idx: ArrayLike<number>): number {
    const offs = this.#offs;
    let total = 0;
    for (let k = 0; k < idx.length; k++) {
      this.#check(idx[k]);
      total += offs[idx[k] * 4 + 1];
    }
    return total;
  }

  /**
   * The names of entries `idx`, copied into `out` from byte `at` on (what outlives the listing
   * without keeping all of it); the end of name k (an offset in `out`) into `ends[endsAt + k]`.
   * Returns the end of the last. Size `out` with `nameBytes(idx)`.
   */
  namesInto(idx: ArrayLike<number>, out: Uint8Array, at: number, ends: Uint32Array, endsAt: number): number {
    if (!(at >= 0 && endsAt >= 0) || endsAt + idx.length > ends.length) {
      throw new RangeError(`ends of ${idx.length} names do not fit from ${endsAt} in ${ends.length}`);
    }
    const offs = this.#offs;
    const src = this.#bytes;
    // Names of entries without symlink target or xattrs follow each other in the listing: a
    // run of such names is one copy.
    let contiguous = true;
    let end = at;
    for (let k = 0; k < idx.length; k++) {
      this.#check(idx[k]);
      const e = idx[k] * 4;
      if (k > 0 && offs[e] !== offs[idx[k - 1] * 4] + offs[idx[k - 1] * 4 + 1]) contiguous = false;
      end += offs[e + 1];
      ends[endsAt + k] = end;
    }
    if (end > out.length) throw new RangeError(`names of ${idx.length} entries (${end - at} bytes) do not fit from byte ${at} in ${out.length}`);
    if (contiguous && idx.length > 0) {
      const o = offs[idx[0] * 4];
      out.set(src.subarray(o, o + (end - at)), at);
      return end;
    }
    let p = at;
    for (let k = 0; k < idx.length; k++) {
      const o = offs[idx[k] * 4];
      const n = offs[idx[k] * 4 + 1];
      // (short names bytewise: a copy() call costs more than the loop)
      if (n <= 32) for (let b = 0; b < n; b++) out[p + b] = src[o + b];
      else out.set(src.subarray(o, o + n), p);
      p += n;
    }
    return end;
  }
  status(i: number): number {
    return this.#num(i, F_STATUS);
  }
  mode(i: number): number {
    return this.#num(i, F_MODE);
  }
  uid(i: number): number {
    return this.#num(i, F_UID);
  }
  gid(i: number): number {
    return this.#num(i, F_GID);
  }
  size(i: number): number {
    return this.#num(i, F_SIZE);
  }
  mtimeSec(i: number): number {
    return this.#num(i, F_MTIME_SEC);
  }
  mtimeNsec(i: number): number {
    return this.#num(i, F_MTIME_NSEC);
  }
  ctimeSec(i: number): number {
    return this.#num(i, F_CTIME_SEC);
  }
  ctimeNsec(i: number): number {
    return this.#num(i, F_CTIME_NSEC);
  }
  nlink(i: number): number {
    return this.#num(i, F_NLINK);
  }
  rdevMajor(i: number): number {
    return this.#num(i, F_RDEV_MAJOR);
  }
  rdevMinor(i: number): number {
    return this.#num(i, F_RDEV_MINOR);
  }
  flags(i: number): number {
    return this.#num(i, F_FLAGS);
  }
  fatAttrs(i: number): number {
    return this.#num(i, F_FAT_ATTRS);
  }
  projid(i: number): number {
    return this.#num(i, F_PROJID);
  }
  dev(i: number): bigint {
    this.#check(i);
    return this.#ids[i * 4];
  }
  ino(i: number): bigint {
    this.#check(i);
    return this.#ids[i * 4 + 2];
  }
  pathHash(i: number): bigint {
    this.#check(i);
    return this.#ids[i * 4 + 1];
  }
  /** Copy entry i's metadata-cache record (path hash, inode, ctime ns: 6 u32 words) to `to[at..]`. */
  copyRecord(i: number, to: Uint32Array, at: number): void {
    this.#check(i);
    // (six words copied one by one: a subarray per record was most of what it allocated)
    const w = this.#idWords;
    const from = i * 8 + 2;
    for (let k = 0; k < 6; k++) to[at + k] = w[from + k];
  }
  metaSkipped(i: number): boolean {
    return this.#num(i, F_META_SKIPPED) === 1;
  }
  /** The fourth word of the metadata-cache record that matched (`metaSkipped`), or -1. */
  prevPayload(i: number): number {
    return this.#num(i, F_PREV_PAYLOAD);
  }
  /** Token of the descriptor held for entry i (`ReadDirOptions.holdFds`), or -1. */
  fdToken(i: number): number {
    return this.#num(i, F_FD);
  }

  symlinkTarget(i: number): Buffer | null {
    if ((this.#num(i, F_MODE) & 0o170000) !== 0o120000) return null;
    const len = this.#offs[i * 4 + 2];
    const o = this.#offs[i * 4] + this.#offs[i * 4 + 1];
    return this.#bytes.subarray(o, o + len);
  }

  /** xattr records (u32 nameLen, u32 valueLen, name, value)*, in flistxattr order. */
  /** Whether entry `i` has any xattrs (without building them). */
  hasXattrs(i: number): boolean {
    this.#check(i);
    return this.#offs[i * 4 + 3] > 0;
  }

  xattrs(i: number): XAttr[] {
    this.#check(i);
    let o = this.#offs[i * 4] + this.#offs[i * 4 + 1] + this.#offs[i * 4 + 2];
    const end = o + this.#offs[i * 4 + 3];
    const b = this.#bytes;
    const out: XAttr[] = [];
    while (o < end) {
      const nl = b.readUInt32LE(o);
      const vl = b.readUInt32LE(o + 4);
      o += 8;
      out.push({ name: b.subarray(o, o + nl), value: b.subarray(o + nl, o + nl + vl) });
      o += nl + vl;
    }
    return out;
  }

  metaError(i: number): MetaError | null {
    const op = this.#num(i, F_META_OP);
    if (op === 0) return null;
    const errno = this.#num(i, F_META_ERRNO);
    return { op: META_OPS[op] ?? `op ${op}`, errno, code: errnoCode(errno) };
  }

  entry(i: number): DirEntry {
    return {
      name: this.name(i),
      status: this.status(i),
      mode: this.mode(i),
      uid: this.uid(i),
      gid: this.gid(i),
      size: this.size(i),
      mtimeSec: this.mtimeSec(i),
      mtimeNsec: this.mtimeNsec(i),
      ctimeSec: this.ctimeSec(i),
      ctimeNsec: this.ctimeNsec(i),
      nlink: this.nlink(i),
      dev: this.dev(i),
      ino: this.ino(i),
      rdevMajor: this.rdevMajor(i),
      rdevMinor: this.rdevMinor(i),
      flags: this.flags(i),
      fatAttrs: this.fatAttrs(i),
      projid: this.projid(i),
      symlinkTarget: this.symlinkTarget(i),
      xattrs: this.xattrs(i),
      metaError: this.metaError(i),
      metaSkipped: this.metaSkipped(i),
      prevPayload: this.prevPayload(i),
      pathHash: this.pathHash(i),
    };
  }

  *[Symbol.iterator](): Iterator<DirEntry> {
    for (let i = 0; i < this.length; i++) yield this.entry(i);
  }
}

/** Per-file outcome of `readFilesExact` (negative values are `-errno`). */
export const READ_OK = 0;
/** The file was shorter than expected: the rest of its slot is zeros. */
export const READ_SHRUNK = 1;
/** The file was longer than expected: only the expected size was read. */
export const READ_GREW = 2;

export interface ReadFileError {
  index: number;
  code: string;
  /** Negative errno, as in node's fs errors. */
  errno: number;
  syscall: string;
  message: string;
}

export interface ReadFilesResult {
  /** All slots back to back: file i occupies sizes[i] bytes at the sum of the sizes before it. */
  data: Buffer;
  /** READ_OK, READ_SHRUNK, READ_GREW or -errno (the slot is then all zeros). ENOENT = vanished. */
  status: Int32Array;
  /** One record per file with a negative status. */
  errors: ReadFileError[];
}

/** `utimens` nanosecond values that leave a time unchanged / set it to now. */
export const UTIME_OMIT = 2 ** 30 - 2;
export const UTIME_NOW = 2 ** 30 - 1;
/** `setxattr` flags: fail if the attribute exists / does not exist. */
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;

interface NativeFs {
  fsReadDirs(paths: RawPath[], opts: ReadDirOptions): Promise<Array<ArrayBuffer | Error>>;
  fsStatPath(path: RawPath, opts: ReadDirOptions): Promise<ArrayBuffer>;
  fsReadFilesExact(paths: RawPath[], sizes: number[], into?: Uint8Array, base?: RawPath, held?: Float64Array): Promise<ReadFilesResult>;
  fsBytesRead(): number;
  fsTakeHeld(token: number): number;
  fsHeldSlots(): number;
  fsMknod(path: RawPath, mode: number, major: number, minor: number): void;
  fsLchown(path: RawPath, uid: number, gid: number): void;
  fsUtimens(path: RawPath, aSec: number, aNsec: number, mSec: number, mNsec: number, noFollow: boolean): void;
  fsSetxattr(path: RawPath, name: RawPath, value: Uint8Array, noFollow: boolean, flags: number): void;
  fsGetxattr(path: RawPath, name: RawPath, noFollow: boolean): Buffer | null;
  fsListXattrs(path: RawPath, noFollow: boolean): Buffer[];
  fsSetFlags(path: RawPath, flags: number, mask: number): boolean;
  fsFlock(fd: number, op: 'sh' | 'ex'): boolean;
  fsSortUnchangedTable(table: Uint8Array): void;
  fsTreeUnchanged(root: RawPath, table: Uint8Array, devices: Uint8Array | null): Promise<TreeCheck>;
  fsSetProjid(path: RawPath, projid: number): boolean;
  FsWalker: new (root: RawPath, opts: ReadDirOptions, devs: BigUint64Array | null, lookahead: number, lookaheadBytes: number, threads: number, onReady: (id: number) => void) => NativeWalker;
}

interface NativeWalker {
  poll(id: number): [ArrayBuffer | Error, Int32Array] | undefined;
  want(id: number): boolean;
  drop(ids: number[]): void;
  ref(on: boolean): void;
  close(): void;
}

const fsNative = native as unknown as NativeFs;

/**
 * List one directory on the libuv pool. The directory itself is opened with O_NOFOLLOW
 * (a symlink is refused: ELOOP/ENOTDIR), so resolve a user-given root with realpath first.
 * Rejects only for the directory itself (ENOENT, ENOTDIR, EACCES, ...).
 */
export async function readDir(path: RawPath, opts: ReadDirOptions = {}): Promise<DirEntries> {
  const [r] = await readDirs([path], opts);
  if (r instanceof Error) throw r;
  return r;
}

/**
 * `readDir` of several directories in one pool job (a job costs the JS thread far more than a
 * listing under load); a directory that cannot be listed gets its error in its slot.
 */
export async function readDirs(paths: RawPath[], opts: ReadDirOptions = {}): Promise<Array<DirEntries | Error>> {
  const out = await fsNative.fsReadDirs(paths, opts);
  return out.map((r) => (r instanceof Error ? r : new DirEntries(r)));
}

/** A directory's listing as `DirWalker.poll` delivers it. */
export interface WalkListing {
  /** The listing, or why the directory could not be listed (node-style error). */
  list: DirEntries | Error;
  /** Per entry, the walk's node id of the subdirectory it descends into; -1: none. */
  children: Int32Array;
}

/**
 * A tree's listings, made in DFS preorder ahead of the caller on native threads of their own
 * (native/src/fs/walk.rs): at most `lookahead` listings are made but not yet taken, and none is
 * started while those hold `lookaheadBytes` (~200 bytes per entry). Taking a
 * ready listing (`poll`) is a plain synchronous call, with no job and no thread wake-up;
 * only a listing the caller has to wait for is announced, through `onReady(id)` (`want`).
 * It descends into the directories on `devs` (all: null) that were stat'ed without error; the
 * caller drops the subtrees it does not enter. The root is node 0. `close()` when done; a
 * metadata-cache table in `opts.unchanged` is read in place until then: do not change it.
 */
export class DirWalker {
  readonly #w: NativeWalker;

  constructor(root: RawPath, opts: ReadDirOptions, devs: bigint[] | null, lookahead: number, lookaheadBytes: number, threads: number, onReady: (id: number) => void) {
    this.#w = new fsNative.FsWalker(root, opts, devs ? BigUint64Array.from(devs) : null, lookahead, lookaheadBytes, threads, onReady);
  }

  /** Node `id`'s listing if it is made (delivered once), else undefined. */
  poll(id: number): WalkListing | undefined {
    const r = this.#w.poll(id);
    if (!r) return undefined;
    return { list: r[0] instanceof Error ? r[0] : new DirEntries(r[0]), children: r[1] };
  }

  /** Announce node `id` through `onReady` once made, listed next if still queued; false: poll it now. */
  want(id: number): boolean {
    return this.#w.want(id);
  }

  /** Abandon nodes and their subtrees. */
  drop(ids: number[]): void {
    if (ids.length) this.#w.drop(ids);
  }

  /** Whether a pending announcement keeps the event loop alive (off at first). */
  ref(on: boolean): void {
    this.#w.ref(on);
  }

  close(): void {
    this.#w.close();
  }
}

/**
 * lstat one path (the root of a backup) with the same fields and metadata as a `readDir`
 * entry; `name` is the path itself. Rejects when the path cannot be lstat'ed.
 */
export async function statPath(path: RawPath, opts: ReadDirOptions = {}): Promise<DirEntry & { fsMagic: number }> {
  const d = await statEntries(path, opts);
  return { ...d.entry(0), fsMagic: d.fsMagic };
}

/** `statPath` as a one-entry listing (for code that reads entries column-wise). */
export async function statEntries(path: RawPath, opts: ReadDirOptions = {}): Promise<DirEntries> {
  return new DirEntries(await fsNative.fsStatPath(path, opts));
}

/**
 * Read many small files into one Buffer on the libuv pool, each exactly `sizes[i]` bytes
 * (PBS semantics: shrunk → zero-padded, grew → truncated, vanished/failed → zeros + error).
 * Files are opened O_NOFOLLOW|O_NOATIME (NOATIME dropped on EPERM) and must be regular files.
 * With `into` (at least the summed sizes) the files are read into it and `data` is `into`, so a
 * caller can recycle read buffers; it must not touch `into` until the promise settles.
 * With `base` the paths are names relative to that directory, opened once with O_NOFOLLOW
 * (one path walk per batch; a parent swapped for a symlink cannot redirect the reads).
 * `held[i]` ≥ 0: the token of a descriptor the walk held for file i (`DirEntries.fdToken`):
 * the file is read through it while it is held, else opened by its path.
 */
export async function readFilesExact(paths: RawPath[], sizes: number[], into?: Buffer, base?: RawPath, held?: Float64Array): Promise<ReadFilesResult> {
  return fsNative.fsReadFilesExact(paths, sizes, into, base, held);
}

/** The file a walk held under `token` (`DirEntries.fdToken`; the caller closes it), or null. */
export function takeHeldFile(token: number): FdFile | null {
  if (!(token >= 0)) return null;
  const fd = fsNative.fsTakeHeld(token);
  return fd >= 0 ? new FdFile(fd) : null;
}

/** How many descriptors the walks of this process hold at most (0: the limit is too low). */
export function heldSlots(): number {
  return fsNative.fsHeldSlots();
}

/** Bytes stored from files by `readFilesExact` in this process (all threads) so far. */
export function bytesReadFromFiles(): number {
  return fsNative.fsBytesRead();
}

/** Create a character/block device, fifo or socket inode; `mode` includes the S_IF* type bits. */
export function mknod(path: RawPath, mode: number, major = 0, minor = 0): void {
  fsNative.fsMknod(path, mode, major, minor);
}

/** chown without following a final symlink; -1 leaves an id unchanged. */
export function lchown(path: RawPath, uid: number, gid: number): void {
  fsNative.fsLchown(path, uid, gid);
}

/**
 * Set atime and mtime with nanosecond precision (utimensat). With `noFollow` a symlink's own
 * times are set. Pass UTIME_OMIT as a nanosecond value to keep that time.
 */
export function utimens(
  path: RawPath,
  atimeSec: number,
  atimeNsec: number,
  mtimeSec: number,
  mtimeNsec: number,
  noFollow = true,
): void {
  fsNative.fsUtimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec, noFollow);
}

/** Set one xattr (any namespace the kernel allows; ACLs as their binary xattr value). */
export function setxattr(path: RawPath, name: RawPath, value: Uint8Array, noFollow = true, flags = 0): void {
  fsNative.fsSetxattr(path, name, value, noFollow, flags);
}

/** One xattr value, or null if the file has no such attribute. */
export function getxattr(path: RawPath, name: RawPath, noFollow = true): Buffer | null {
  return fsNative.fsGetxattr(path, name, noFollow);
}

/** xattr names in kernel (listxattr) order. */
export function listXattrs(path: RawPath, noFollow = true): Buffer[] {
  return fsNative.fsListXattrs(path, noFollow);
}

/**
 * chattr (FS_IOC_SETFLAGS) of a regular file or directory: new = (flags & mask) | (old & ~mask).
 * Returns false, without throwing, when the file kind or file system does not support it
 * (ENOTTY, ENOSYS, EBADF, EOPNOTSUPP, EINVAL, as PBS ignores them).
 */
/**
 * flock(2) on an open file descriptor, never waiting: shared (`sh`) or exclusive (`ex`). False
 * when another holder conflicts. A lock ends with its descriptor (also when the process dies),
 * so it cannot go stale.
 */
export function flock(fd: number, op: 'sh' | 'ex'): boolean {
  return fsNative.fsFlock(fd, op);
}

export function setFlags(path: RawPath, flags: number, mask = 0xffffffff): boolean {
  return fsNative.fsSetFlags(path, flags, mask);
}

/** Set the quota project id of a regular file or directory; false when unsupported. */
export function setProjid(path: RawPath, projid: number): boolean {
  return fsNative.fsSetProjid(path, projid);
}

// --- batch restore of small files, syncfs ------------------------------------------------

/** `writeFilesBatch` status bit: fchown was not permitted (EPERM); the file keeps our ids. */
export const WRITE_CHOWN_EPERM = 1;

/** One file of a `writeFilesBatch` call. */
export interface WriteFileSpec {
  /** Absolute path; its parent directory must exist. */
  path: RawPath;
  /** The file's bytes are data[offset, offset + size). */
  offset: number;
  size: number;
  /** Permission bits including suid/sgid/sticky (07777); file-type bits are ignored. */
  mode: number;
  /** Applied only with `chown`. */
  uid: number;
  gid: number;
  /** mtime (nanoseconds 0..999 999 999); atime is set to the same value, as PBS does. */
  mtimeSec: number;
  mtimeNsec: number;
}

export interface WriteFilesOptions {
  /** fchown each file to its uid/gid (EPERM → WRITE_CHOWN_EPERM, not a failure). */
  chown: boolean;
  /**
   * Replace an existing entry at the path. A regular file with one link is truncated and
   * rewritten; a symlink, fifo, socket, device or multiply-linked file is unlinked and
   * created afresh (nothing is written through a symlink or into another file's inode).
   * Without it an existing entry fails that file with EEXIST.
   */
  overwrite: boolean;
  /** Leave all-zero 4096-byte aligned blocks as holes. */
  sparse: boolean;
}

/** A failed file of `writeFilesBatch` (same shape as a `readFilesExact` error). */
export type WriteFileError = ReadFileError;

export interface WriteFilesResult {
  /** Per file: 0 ok, positive warning bits (WRITE_CHOWN_EPERM), or -errno on failure. */
  status: Int32Array;
  /** One record per failed file, with the failing syscall ("open", "write", "fchmod", ...). */
  errors: WriteFileError[];
}

interface NativeWrite {
  fsWriteFilesBatch(paths: RawPath[], nums: Uint8Array, data: Uint8Array, opts: WriteFilesOptions): Promise<WriteFilesResult>;
  fsWriteFileAtomic(target: RawPath, tmp: RawPath, data: Uint8Array, opts: AtomicWriteOptions): Promise<boolean>;
  fsStoreChunk(chunk: Uint8Array, opts: StoreChunkOptions): Promise<StoredChunk>;
  fsReadChunkInto(path: RawPath, into: Uint8Array, digest: Uint8Array): Promise<number>;
  fsOpenPath(path: RawPath, flags: number): Promise<number>;
  fsSyncfs(path: RawPath): Promise<void>;
  fsTouchFiles(paths: RawPath[], nonEmptyOnly: boolean): Promise<Int32Array>;
  fsTouchChunks(chunkDir: RawPath, digests: Uint8Array): Promise<Int32Array>;
}

const writeNative = native as unknown as NativeWrite;
/** Numbers per file passed to the addon, in native/src/napi/fs.rs WRITE_NUMS order. */
const WRITE_NUMS = 7;
/** A non-number becomes NaN, which the addon refuses with the field's name (no coercion). */
const num = (x: unknown): number => (typeof x === 'number' ? x : NaN);

/**
 * Restore many small regular files in one libuv pool job. Per file, in order: create
 * (O_NOFOLLOW, O_EXCL unless `overwrite`, mode 0600), write its bytes, fchown (with `chown`),
 * fchmod(mode) after the chown (which clears set-id bits), futimens(mtime, mtime), close.
 * A file that fails after it was created is unlinked (no half-written file remains); a failed
 * create (EEXIST, ENOENT parent, ...) removes nothing. One failure never stops the batch.
 * `data` is read in place (not copied): do not modify it until the promise settles.
 * Bad arguments reject with a TypeError.
 */
export async function writeFilesBatch(files: WriteFileSpec[], data: Uint8Array, opts: WriteFilesOptions): Promise<WriteFilesResult> {
  if (!Array.isArray(files)) throw new TypeError('files must be an array');
  const paths: RawPath[] = new Array(files.length);
  const nums = new Float64Array(files.length * WRITE_NUMS);
  for (let i = 0; i < files.length; i++) {
    const f = files[i];
    if (typeof f !== 'object' || f === null) throw new TypeError(`files[${i}] must be an object`);
    paths[i] = f.path;
    const o = i * WRITE_NUMS;
    nums[o] = num(f.offset);
    nums[o + 1] = num(f.size);
    nums[o + 2] = num(f.mode);
    nums[o + 3] = num(f.uid);
    nums[o + 4] = num(f.gid);
    nums[o + 5] = num(f.mtimeSec);
    nums[o + 6] = num(f.mtimeNsec);
  }
  return writeNative.fsWriteFilesBatch(paths, new Uint8Array(nums.buffer), data, opts);
}

/**
 * Flush the whole file system that `path` lives on (open it read-only, syncfs(2)) on the
 * libuv pool: one call after many writes instead of an fsync per file.
 */
export async function syncfs(path: RawPath): Promise<void> {
  return writeNative.fsSyncfs(path);
}

/** `touchFiles` status: the file exists but is empty (not touched; only with `nonEmptyOnly`). */
export const TOUCH_EMPTY = 1;

/**
 * Set the access time of many files to now in one job on the libuv pool (modification time
 * kept, symlinks not followed): the chunk store's GC mark. Per path: 0 (touched), TOUCH_EMPTY,
 * or -errno (-ENOENT / -ENOTDIR: missing). With `nonEmptyOnly` only non-empty regular files are
 * touched (anything else that exists: -EINVAL).
 */
export async function touchFiles(paths: RawPath[], nonEmptyOnly = false): Promise<Int32Array> {
  return writeNative.fsTouchFiles(paths, nonEmptyOnly);
}

/**
 * `touchFiles` of chunk files: `digests` are 32-byte digests back to back, each file
 * `<chunkDir>/<first 4 hex digits>/<64 hex digits>` (the paths are made by the addon).
 */
export async function touchChunks(chunkDir: RawPath, digests: Uint8Array): Promise<Int32Array> {
  return writeNative.fsTouchChunks(chunkDir, digests);
}

/** Options of `atomicWrite` (all required except `dirMode`). */
export interface AtomicWriteOptions {
  /** Publish with link(2): an existing target is kept (result false), never replaced. */
  ifAbsent: boolean;
  /** fsync the file before publishing and its directory after. */
  fsync: boolean;
  /** Mode of the new file (before umask). */
  mode: number;
  /** Create missing parent directories with this mode; when absent they must exist. */
  dirMode?: number;
  /** `tmp` is a fixed name: one left over by a crashed writer is removed first. */
  replaceStale: boolean;
}

/**
 * Publish `data` as `target` in one job on the libuv pool: create `tmp` (same directory) with
 * O_EXCL, write, [fsync], close, then rename over `target` or, with `ifAbsent`, link (an
 * existing target wins: false) and drop the temporary name; [fsync the directory]. On failure
 * the temporary file is removed and `target` is untouched; rejects node-style (code, errno,
 * syscall, path). `data` is read in place: do not change it until the promise settles.
 */
export async function atomicWrite(target: RawPath, tmp: RawPath, data: Uint8Array, opts: AtomicWriteOptions): Promise<boolean> {
  return writeNative.fsWriteFileAtomic(target, tmp, data, opts);
}

/** Options of `storeChunk`: where and how a local PBS chunk store keeps its chunks. */
export interface StoreChunkOptions {
  /** The store's `.chunks` directory (holding the XXXX prefix directories). */
  chunkDir: RawPath;
  compress: boolean;
  /** fsync the chunk file and its directory. */
  fsync: boolean;
  fileMode: number;
  /** Mode of a prefix directory created on demand. */
  dirMode: number;
  /** Put between a chunk's path and a unique suffix to name its temporary file. */
  tmpMarker: string;
}

/** `storeChunk` outcomes. */
export const STORE_KNOWN = 0;
export const STORE_NEW = 1;
export const STORE_INSERT = 2;

export interface StoredChunk {
  digest: Buffer;
  /** STORE_KNOWN (the store had it: touched), STORE_NEW (written now), STORE_INSERT. */
  status: number;
  /** Bytes written (STORE_NEW) or the blob's size (STORE_INSERT). */
  size: number;
  /** STORE_INSERT: the encoded blob, for the caller's own insert rules. */
  blob: Buffer | null;
}

/**
 * Insert raw chunk data into a local chunk store in one job on the native CPU workers (one
 * per core, not libuv's pool): SHA-256; if a non-empty `chunkDir/XXXX/<hex>` exists it is
 * touched (STORE_KNOWN); otherwise the DataBlob is encoded and published with link-if-absent
 * (STORE_NEW). Anything else (an empty or non-regular file in the way, a lost race) returns
 * the blob (STORE_INSERT). `chunk` is read in place: do not change it until the promise
 * settles.
 */
export async function storeChunk(chunk: Uint8Array, opts: StoreChunkOptions): Promise<StoredChunk> {
  return writeNative.fsStoreChunk(chunk, opts);
}

/**
 * Read a local chunk file and decode it into `into` in one job on the libuv pool (a restore
 * from a cold disk keeps several reads in flight; on the CPU workers it was no faster warm):
 * magic, CRC, zstd (at most `into.length` bytes) and SHA-256 == `digest`; resolves with the
 * decoded length. Nothing is allocated per chunk, so a reader can recycle `into`; do not touch
 * it until the promise settles. A file that cannot be read rejects node-style (`code`: ENOENT,
 * ...), a damaged one with a plain Error naming the damage.
 */
export async function readChunkInto(path: RawPath, into: Uint8Array, digest: Uint8Array): Promise<number> {
  return writeNative.fsReadChunkInto(path, into, digest);
}

/** `O_PATH` (Linux): a descriptor that only names a file (node's fs.constants lacks it). */
export const O_PATH = 0o10000000;

/** The part of node's FileHandle a reader needs, over a descriptor from `openFile`. */
export class FdFile {
  private closed = false;
  constructor(readonly fd: number) {}

  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }> {
    return new Promise((resolve, reject) => fsRead(this.fd, buffer, offset, length, position, (e, bytesRead) => (e ? reject(e) : resolve({ bytesRead }))));
  }

  stat(): Promise<Stats> {
    return new Promise((resolve, reject) => fsFstat(this.fd, (e, st) => (e ? reject(e) : resolve(st))));
  }

  /** Closes once; later calls do nothing (the number may belong to another file by then). */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve, reject) => fsClose(this.fd, (e) => (e ? reject(e) : resolve())));
  }
}

/**
 * open(2) on the libuv pool for paths of any length: one of PATH_MAX bytes or more, which the
 * kernel refuses whole, is opened in pieces cut at slashes (resolved as the kernel would).
 * O_CLOEXEC is added. The caller closes the file.
 */
export async function openFile(path: RawPath, flags: number): Promise<FdFile> {
  return new FdFile(await writeNative.fsOpenPath(path, flags));
}

/** Sort metadata-cache records in place (see ReadDirOptions.unchanged). */
export function sortUnchangedTable(table: Buffer): void {
  fsNative.fsSortUnchangedTable(table);
}

/** What `treeUnchanged` found. */
export interface TreeCheck {
  /** The tree holds exactly the recorded entries, each with its recorded inode and ctime. */
  unchanged: boolean;
  /** Recorded entries found unchanged, the root included (all of them when `unchanged`). */
  entries: number;
  directories: number;
  /** Why the tree is not unchanged (the first difference found); empty when it is. */
  reason: string;
}

/**
 * Walk the tree at `root` (two threads, on the libuv pool) and check it against a sorted
 * metadata-cache table whose directory records carry their archived entry counts
 * (native/src/fs/unchanged.rs): unchanged when every recorded entry is still there with its
 * inode and ctime and nothing was added to a recorded directory. It descends only into
 * directories on `devices` (null: any). Stops at the first difference.
 */
export async function treeUnchanged(root: RawPath, table: Buffer, devices: bigint[] | null): Promise<TreeCheck> {
  const devs = devices ? Buffer.from(BigUint64Array.from(devices).buffer) : null;
  return fsNative.fsTreeUnchanged(root, table, devs);
}
