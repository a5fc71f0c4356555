/**
 * Random access to a pxar archive (spec pxar.md §5) over `readAt`, e.g. a `.didx`-backed reader:
 * the archive is never read as a whole. Directories are opened from the end of their range
 * (last 24 bytes = goodbye tail item), children are found through the goodbye table (SipHash of
 * the name, binary-tree-array search, name compare, equal hashes handled).
 *
 * Quirks handled: the root tail offset points at byte 0 (FORMAT_VERSION/PRELUDE are skipped to
 * the real root ENTRY); goodbye sizes of freshly encoded split files reach past the end of the
 * metadata stream, so a regular file's range is never bound-checked against the archive size;
 * only directory ranges are trusted to end with their goodbye tail.
 *
 * Cost: opened directories (their goodbye tables) are kept in a small LRU cache, and reads go
 * through a one-block read-ahead cache, so a `lookup` is usually one `readAt`.
 */
import { FormatError } from '../errors.js';
import {
  GOODBYE_ITEM_SIZE,
  HEADER_SIZE,
  IFMT,
  IFREG,
  MAX_FILENAME_LEN,
  PXAR_DEVICE,
  PXAR_ENTRY,
  PXAR_ENTRY_V1,
  PXAR_FILENAME,
  PXAR_FORMAT_VERSION,
  PXAR_GOODBYE,
  PXAR_GOODBYE_TAIL_MARKER,
  PXAR_HARDLINK,
  PXAR_PAYLOAD,
  PXAR_PAYLOAD_REF,
  PXAR_PRELUDE,
  PXAR_SYMLINK,
} from './constants.js';
import { binaryTreeArraySearch } from './binary-tree-array.js';
import type { PxarEntry } from './entry.js';
import {
  NO_ACL,
  NO_XATTRS,
  basicMetadata,
  isDevice,
  isDirectory,
  isFifo,
  isRegularFile,
  isSocket,
  isSymlink,
  type Metadata,
} from './metadata.js';
import { sipHash24 } from './siphash.js';
import {
  applyAttribute,
  fileNameProblem,
  formatError,
  isAttribute,
  isHeader,
  itemName,
  joinPath,
  parseDevice,
  parseFileName,
  parseHardlink,
  parseHeader,
  parsePayloadRef,
  parseStat,
  parseSymlink,
  readU64,
  splitPath,
  typeWords,
  type ItemHeader,
} from './wire.js';

/** Positional reads; `readAt` must return exactly `length` bytes for ranges within `size`. */
export interface ReadAtSource {
  readonly size: number;
  readAt(offset: number, length: number): Promise<Buffer>;
}

export interface PxarAccessorOptions {
  /** Payload stream of a split archive, for `openFile`. */
  payload?: ReadAtSource;
  /** Name used in error messages (default "pxar archive"). */
  name?: string;
  /** Opened directories kept (default 64). */
  directoryCacheSize?: number;
}

/** An entry found by the accessor; `endOffset` = FILENAME position + goodbye item size. */
export interface AccessorEntry extends PxarEntry {
  endOffset: number;
}

/** File data reader returned by `openFile`. */
export interface PxarFileReader {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
}

const READ_AHEAD = 4096;
/** Low and high words of the item types the plain-file fast path reads. */
const T_FILENAME = typeWords(PXAR_FILENAME);
const T_ENTRY = typeWords(PXAR_ENTRY);
const T_PAYLOAD_REF = typeWords(PXAR_PAYLOAD_REF);
/** FILENAME → ENTRY (16 + 40 bytes) → PAYLOAD_REF (16 + 16 bytes). */
const ENTRY_ITEM = HEADER_SIZE + 40;
const PAYLOAD_REF_ITEM = HEADER_SIZE + 16;
/** Bytes read at a time by `PxarDirectory.list`. */
const LIST_WINDOW = 256 * 1024;
const EMPTY = Buffer.alloc(0);

/** Keeps the last block read; served slices are never modified afterwards. */
class BlockReader {
  private block: Buffer = EMPTY;
  private blockStart = 0;

  constructor(
    readonly source: ReadAtSource,
    readonly what: string,
  ) {}

  get size(): number {
    return this.source.size;
  }

  /** `length` bytes at `offset`; `forward` decides the read-ahead direction. */
  async get(offset: number, length: number, forward = true): Promise<Buffer> {
    const size = this.source.size;
    if (offset < 0 || length < 0 || offset + length > size) {
      throw formatError(this.what, offset, `read of ${length} bytes beyond the end of the archive (${size} bytes; truncated?)`);
    }
    if (offset >= this.blockStart && offset + length <= this.blockStart + this.block.length) {
      return this.block.subarray(offset - this.blockStart, offset - this.blockStart + length);
    }
    let start = offset;
    let end = offset + length;
    if (length < READ_AHEAD) {
      if (forward) end = Math.min(size, offset + READ_AHEAD);
      else start = Math.max(0, end - READ_AHEAD);
    }
    const block = await readExact(this.source, start, end - start, this.what);
    this.block = block;
    this.blockStart = start;
    return block.subarray(offset - start, offset - start + length);
  }

  async header(pos: number): Promise<ItemHeader> {
    return parseHeader(await this.get(pos, HEADER_SIZE), 0, pos, this.what);
  }

  async content(h: ItemHeader): Promise<Buffer> {
    return this.get(h.pos + HEADER_SIZE, h.contentSize);
  }
}

async function readExact(src: ReadAtSource, offset: number, length: number, what: string): Promise<Buffer> {
  const buf = await src.readAt(offset, length);
  if (buf.length !== length) throw formatError(what, offset, `short read (${buf.length} of ${length} bytes)`);
  return buf;
}

export class PxarAccessor {
  private readonly reader: BlockReader;
  private readonly payload: ReadAtSource | undefined;
  private readonly cache = new Map<number, PxarDirectory>();
  private readonly cacheSize: number;

  private constructor(
    reader: BlockReader,
    options: PxarAccessorOptions,
    /** 1 (unified) or 2 (split). */
    readonly version: 1 | 2,
    /** PRELUDE content, if any. */
    readonly prelude: Buffer | undefined,
    /** Position of the root ENTRY (after FORMAT_VERSION/PRELUDE). */
    readonly rootEntryOffset: number,
  ) {
    this.reader = reader;
    this.payload = options.payload;
    this.cacheSize = options.directoryCacheSize ?? 64;
  }

  /** Check the archive start (FORMAT_VERSION, PRELUDE, root ENTRY). */
  static async open(source: ReadAtSource, options: PxarAccessorOptions = {}): Promise<PxarAccessor> {
    const what = options.name ?? 'pxar archive';
    const reader = new BlockReader(source, what);
    if (!Number.isSafeInteger(source.size) || source.size < HEADER_SIZE + GOODBYE_ITEM_SIZE) {
      throw new FormatError(`${what}: ${source.size} bytes are too small for a pxar archive`);
    }
    let version: 1 | 2 = 1;
    let prelude: Buffer | undefined;
    let h = await reader.header(0);
    if (h.htype === PXAR_FORMAT_VERSION) {
      const c = await reader.content(h);
      const v = c.length === 8 ? readU64(c, 0, what, 0, 'format version') : 0;
      if (v !== 1 && v !== 2) throw formatError(what, 0, 'bad FORMAT_VERSION');
      version = v;
      h = await reader.header(h.pos + HEADER_SIZE + h.contentSize);
      if (h.htype === PXAR_PRELUDE) {
        if (v !== 2) throw formatError(what, h.pos, 'PRELUDE in a version 1 archive');
        prelude = Buffer.from(await reader.content(h));
        h = await reader.header(h.pos + HEADER_SIZE + h.contentSize);
      }
    }
    if (h.htype !== PXAR_ENTRY && h.htype !== PXAR_ENTRY_V1) {
      throw formatError(what, h.pos, `archive must start with ENTRY or FORMAT_VERSION, found ${itemName(h.htype)}`);
    }
    return new PxarAccessor(reader, options, version, prelude, h.pos);
  }

  get size(): number {
    return this.reader.size;
  }

  /** Name used in error messages. */
  get name(): string {
    return this.reader.what;
  }

  /** The root directory (its range is the whole archive). */
  openRoot(): Promise<PxarDirectory> {
    return this.openRange(this.reader.size, EMPTY, undefined);
  }

  /** A directory entry found by `lookup`/`entries`. */
  async openDirectory(entry: AccessorEntry): Promise<PxarDirectory> {
    if (entry.kind !== 'directory') throw new Error(`pxar accessor: ${entry.path.toString()} is not a directory`);
    if (entry.linkOffset === undefined) return this.openRoot();
    return this.openRange(entry.endOffset, entry.path, entry);
  }

  /** Entry at a '/'-separated path relative to the root ('' = the root), or null. */
  async lookupPath(path: Buffer | string): Promise<AccessorEntry | null> {
    const p = typeof path === 'string' ? Buffer.from(path) : path;
    let entry = await (await this.openRoot()).entry();
    for (const part of splitPath(p)) {
      if (part.length === 0) continue;
      if (entry.kind !== 'directory') return null;
      const next = await (await this.openDirectory(entry)).lookup(part);
      if (!next) return null;
      entry = next;
    }
    return entry;
  }

  /** The regular-file entry a hardlink points to (its path is the stored target path). */
  async followHardlink(link: AccessorEntry): Promise<AccessorEntry> {
    if (link.kind !== 'hardlink' || link.hardlinkTargetOffset === undefined || link.hardlinkTarget === undefined) {
      throw new Error('pxar accessor: followHardlink() on a non-hardlink');
    }
    const target = await this.decodeAt(link.hardlinkTargetOffset, Number.MAX_SAFE_INTEGER, undefined, link.hardlinkTarget);
    if (target.kind !== 'file') {
      throw formatError(this.reader.what, link.entryOffset, `HARDLINK points to a ${target.kind}, not a regular file`);
    }
    return target;
  }

  /** Reader for a regular file's data (inline, or in the payload stream with its header checked). */
  async openFile(entry: AccessorEntry): Promise<PxarFileReader> {
    if (entry.kind !== 'file' || entry.size === undefined) throw new Error('pxar accessor: openFile() on a non-file');
    const size = entry.size;
    let src: ReadAtSource;
    let what: string;
    let start: number;
    if (entry.payloadOffset !== undefined) {
      if (!this.payload) throw new Error('pxar accessor: split archive opened without its payload stream');
      src = this.payload;
      what = 'payload stream';
      const h = parseHeader(await readExact(src, entry.payloadOffset, HEADER_SIZE, what), 0, entry.payloadOffset, what);
      if (h.htype !== PXAR_PAYLOAD || h.contentSize !== size) {
        throw formatError(what, entry.payloadOffset, `expected PAYLOAD of ${size} bytes, found ${itemName(h.htype)} of ${h.contentSize}`);
      }
      start = entry.payloadOffset + HEADER_SIZE;
    } else {
      src = this.reader.source;
      what = this.reader.what;
      start = entry.contentOffset as number;
    }
    if (start + size > src.size) throw formatError(what, start, `file data of ${size} bytes runs past the end (truncated)`);
    return {
      size,
      read: (offset: number, length: number) => {
        if (offset < 0 || length < 0 || offset + length > size) {
          return Promise.reject(new RangeError(`pxar accessor: read ${offset}+${length} outside a file of ${size} bytes`));
        }
        return length === 0 ? Promise.resolve(EMPTY) : readExact(src, start + offset, length, what);
      },
    };
  }

  // ---- internals (used by PxarDirectory) --------------------------------------------------------

  /** Open the directory whose range ends at `end`; `self` undefined = the root. */
  private async openRange(end: number, path: Buffer, self: AccessorEntry | undefined): Promise<PxarDirectory> {
    const what = this.reader.what;
    const cached = this.cache.get(end);
    if (cached) {
      // a range end belongs to one directory only; anything else is a corrupt goodbye table
      const entryOffset = self ? self.entryOffset : this.rootEntryOffset;
      if (cached.entryOffset !== entryOffset) {
        throw formatError(what, end - GOODBYE_ITEM_SIZE, `directory ranges of ENTRYs ${cached.entryOffset} and ${entryOffset} end at the same byte`);
      }
      this.cache.delete(end);
      this.cache.set(end, cached);
      return cached;
    }
    if (end < GOODBYE_ITEM_SIZE || end > this.reader.size) {
      throw formatError(what, end, 'directory range ends outside the archive');
    }
    const tailPos = end - GOODBYE_ITEM_SIZE;
    const tail = await this.reader.get(tailPos, GOODBYE_ITEM_SIZE, false);
    if (tail.readBigUInt64LE(0) !== PXAR_GOODBYE_TAIL_MARKER) throw formatError(what, tailPos, 'no goodbye tail marker');
    const tailOffset = readU64(tail, 8, what, tailPos, 'goodbye tail offset');
    const tailSize = readU64(tail, 16, what, tailPos, 'goodbye size');
    const goodbyeOffset = end - tailSize;
    if (tailSize < HEADER_SIZE + GOODBYE_ITEM_SIZE || (tailSize - HEADER_SIZE) % GOODBYE_ITEM_SIZE !== 0 || goodbyeOffset < 0) {
      throw formatError(what, tailPos, `bad goodbye size ${tailSize}`);
    }
    const entryPos = goodbyeOffset - tailOffset;
    let realEntry: number;
    if (self === undefined) {
      // root quirk: the tail points at byte 0 (upstream), or at the real root ENTRY
      if (entryPos !== 0 && entryPos !== this.rootEntryOffset) throw formatError(what, tailPos, 'root goodbye tail does not point to the root');
      realEntry = this.rootEntryOffset;
    } else {
      if (entryPos !== self.entryOffset) {
        throw formatError(what, tailPos, `goodbye tail points to ${entryPos}, not to the ENTRY at ${self.entryOffset}`);
      }
      realEntry = self.entryOffset;
    }
    const h = await this.reader.header(goodbyeOffset);
    if (h.htype !== PXAR_GOODBYE || h.contentSize + HEADER_SIZE !== tailSize) {
      throw formatError(what, goodbyeOffset, `expected GOODBYE of ${tailSize} bytes, found ${itemName(h.htype)}`);
    }
    const n = (tailSize - HEADER_SIZE) / GOODBYE_ITEM_SIZE - 1;
    const raw = await this.reader.get(goodbyeOffset + HEADER_SIZE, n * GOODBYE_ITEM_SIZE, false);
    const table = new GoodbyeTable(n);
    for (let i = 0; i < n; i++) {
      const q = i * GOODBYE_ITEM_SIZE;
      const itemPos = goodbyeOffset + HEADER_SIZE + q;
      table.hashLo[i] = raw.readUInt32LE(q);
      table.hashHi[i] = raw.readUInt32LE(q + 4);
      const back = readU64(raw, q + 8, what, itemPos, 'goodbye item offset');
      const filenamePos = goodbyeOffset - back;
      if (filenamePos <= realEntry || back < HEADER_SIZE) {
        throw formatError(what, itemPos, `goodbye item points outside its directory (${filenamePos})`);
      }
      table.position[i] = filenamePos;
      table.end[i] = filenamePos + readU64(raw, q + 16, what, itemPos, 'goodbye item size');
    }
    const dir = new PxarDirectory(this, path, realEntry, goodbyeOffset, end, table, self);
    this.cache.set(end, dir);
    if (this.cache.size > this.cacheSize) this.cache.delete(this.cache.keys().next().value as number);
    return dir;
  }

  /** @internal Raw bytes (through the block reader's source, no read-ahead bookkeeping). */
  async readRaw(offset: number, length: number): Promise<Buffer> {
    const end = Math.min(this.reader.size, offset + length);
    return readExact(this.reader.source, offset, end - offset, this.reader.what);
  }

  /**
   * @internal Decode the entry whose FILENAME is at absolute `filenamePos` (undefined: the root
   * ENTRY at `rootEntryOffset`) from `buf`, which holds the archive bytes from `bufStart`; null
   * when `buf` ends before the entry does. `path` overrides the entry's path; without it the
   * path is `parent/name` (just the name when `parent` is null).
   */
  parseEntrySync(buf: Buffer, bufStart: number, filenamePos: number | undefined, end: number, parent: Buffer | null, path?: Buffer): AccessorEntry | null {
    if (filenamePos !== undefined) {
      const plain = this.parsePlainFile(buf, bufStart, filenamePos, end, parent, path);
      if (plain) return plain;
    }
    const what = this.reader.what;
    const avail = bufStart + buf.length;
    const header = (p: number): ItemHeader | null => (p + HEADER_SIZE > avail ? null : parseHeader(buf, p - bufStart, p, what));
    const content = (h: ItemHeader): Buffer | null =>
      h.pos + HEADER_SIZE + h.contentSize > avail ? null : buf.subarray(h.pos + HEADER_SIZE - bufStart, h.pos + HEADER_SIZE + h.contentSize - bufStart);
    let name = EMPTY;
    let pos = this.rootEntryOffset;
    if (filenamePos !== undefined) {
      const fh = header(filenamePos);
      if (!fh) return null;
      if (fh.htype !== PXAR_FILENAME) throw formatError(what, filenamePos, `expected FILENAME, found ${itemName(fh.htype)}`);
      const fc = content(fh);
      if (!fc) return null;
      name = Buffer.from(parseFileName(fc, what, filenamePos));
      pos = filenamePos + HEADER_SIZE + fh.contentSize;
    }
    const fullPath = path ?? (parent ? joinPath(parent, name) : name);
    const h = header(pos);
    if (!h) return null;
    if (h.htype === PXAR_HARDLINK && filenamePos !== undefined) {
      const c = content(h);
      if (!c) return null;
      const link = parseHardlink(c, what, h.pos);
      if (link.offset <= 0 || link.offset > filenamePos) {
        throw formatError(what, h.pos, `HARDLINK offset ${link.offset} does not point back into the archive`);
      }
      return {
        path: fullPath,
        name,
        kind: 'hardlink',
        metadata: basicMetadata(0),
        linkOffset: filenamePos,
        entryOffset: h.pos,
        endOffset: end,
        hardlinkTarget: Buffer.from(link.target),
        hardlinkTargetOffset: filenamePos - link.offset,
      };
    }
    if (h.htype !== PXAR_ENTRY && h.htype !== PXAR_ENTRY_V1) {
      throw formatError(what, h.pos, `expected ENTRY${filenamePos !== undefined ? ' or HARDLINK' : ''}, found ${itemName(h.htype)}`);
    }
    const sc = content(h);
    if (!sc) return null;
    const metadata = parseStat(sc, h.htype === PXAR_ENTRY_V1, what, h.pos);
    const entry: AccessorEntry = { path: fullPath, name, kind: 'directory', metadata, entryOffset: h.pos, endOffset: end };
    if (filenamePos !== undefined) entry.linkOffset = filenamePos;
    pos = h.pos + HEADER_SIZE + h.contentSize;
    for (;;) {
      if (pos >= end) {
        entry.kind = this.kindWithoutData(metadata, h.pos);
        if (entry.kind === 'directory') throw formatError(what, h.pos, 'directory range ends before its GOODBYE');
        return entry;
      }
      const item = header(pos);
      if (!item) return null;
      const t = item.htype;
      if (t === PXAR_FILENAME || t === PXAR_GOODBYE) {
        entry.kind = this.kindWithoutData(metadata, h.pos);
        return entry;
      }
      if (t === PXAR_PAYLOAD) {
        this.expectMode(metadata, isRegularFile, 'regular file', item.pos);
        entry.kind = 'file';
        entry.size = item.contentSize;
        entry.contentOffset = item.pos + HEADER_SIZE;
        return entry;
      }
      const c = content(item);
      if (!c) return null;
      if (t === PXAR_PAYLOAD_REF) {
        this.expectMode(metadata, isRegularFile, 'regular file', item.pos);
        const ref = parsePayloadRef(c, what, item.pos);
        entry.kind = 'file';
        entry.size = ref.size;
        entry.payloadOffset = ref.offset;
        return entry;
      }
      if (t === PXAR_SYMLINK) {
        this.expectMode(metadata, isSymlink, 'symlink', item.pos);
        entry.kind = 'symlink';
        entry.symlinkTarget = Buffer.from(parseSymlink(c, what, item.pos));
        return entry;
      }
      if (t === PXAR_DEVICE) {
        this.expectMode(metadata, isDevice, 'device', item.pos);
        entry.kind = 'device';
        entry.device = parseDevice(c, what, item.pos);
        return entry;
      }
      if (!isAttribute(t)) throw formatError(what, item.pos, `unexpected ${itemName(t)} inside an entry`);
      applyAttribute(metadata, t, c, what, item.pos);
      pos = item.pos + HEADER_SIZE + item.contentSize;
    }
  }

  /**
   * Fast path of `parseEntrySync` for the most common entry of a split archive: a regular file
   * with FILENAME, ENTRY (v2, no flags), PAYLOAD_REF and no attributes, read straight from the
   * words without header objects. Null for anything else, including anything invalid or cut
   * off, which the general path then parses (and reports) item by item.
   */
  private parsePlainFile(buf: Buffer, bufStart: number, filenamePos: number, end: number, parent: Buffer | null, path?: Buffer): AccessorEntry | null {
    const o = filenamePos - bufStart;
    if (o < 0 || o + HEADER_SIZE > buf.length) return null;
    const nameItem = buf.readUInt32LE(o + 8);
    if (!isHeader(buf, o, T_FILENAME, nameItem)) return null;
    if (nameItem < HEADER_SIZE + 2 || nameItem > HEADER_SIZE + MAX_FILENAME_LEN + 1) return null;
    const e = o + nameItem;
    const r = e + ENTRY_ITEM;
    if (r + PAYLOAD_REF_ITEM > buf.length || filenamePos + nameItem + ENTRY_ITEM + PAYLOAD_REF_ITEM > end) return null;
    if (buf[e - 1] !== 0) return null;
    if (!isHeader(buf, e, T_ENTRY, ENTRY_ITEM) || !isHeader(buf, r, T_PAYLOAD_REF, PAYLOAD_REF_ITEM)) return null;
    const st = e + HEADER_SIZE;
    const mode = buf.readUInt32LE(st);
    if (buf.readUInt32LE(st + 4) !== 0 || (mode & IFMT) !== IFREG) return null;
    if (buf.readUInt32LE(st + 8) !== 0 || buf.readUInt32LE(st + 12) !== 0) return null; // flags
    const secsHi = buf.readInt32LE(st + 28);
    const nanos = buf.readUInt32LE(st + 32);
    if (secsHi >= 0x200000 || secsHi <= -0x200000 || nanos > 999_999_999) return null;
    const offHi = buf.readUInt32LE(r + 20);
    const sizeHi = buf.readUInt32LE(r + 28);
    if (offHi >= 0x200000 || sizeHi >= 0x200000) return null;
    const raw = buf.subarray(o + HEADER_SIZE, e - 1);
    if (fileNameProblem(raw) !== undefined) return null;
    const name = Buffer.from(raw);
    const metadata: Metadata = {
      mode,
      flags: 0n,
      uid: buf.readUInt32LE(st + 16),
      gid: buf.readUInt32LE(st + 20),
      mtime: { secs: secsHi * 2 ** 32 + buf.readUInt32LE(st + 24), nanos },
      xattrs: NO_XATTRS,
      acl: NO_ACL,
    };
    return {
      path: path ?? (parent ? joinPath(parent, name) : name),
      name,
      kind: 'file',
      metadata,
      linkOffset: filenamePos,
      entryOffset: filenamePos + nameItem,
      endOffset: end,
      size: sizeHi * 2 ** 32 + buf.readUInt32LE(r + 24),
      payloadOffset: offHi * 2 ** 32 + buf.readUInt32LE(r + 16),
    };
  }

  /** @internal The root directory's own entry. */
  async decodeRoot(): Promise<AccessorEntry> {
    const root = await this.decodeAt(undefined, this.reader.size, undefined);
    if (root.kind !== 'directory') {
      throw formatError(this.reader.what, this.rootEntryOffset, `root entry is a ${root.kind}, not a directory`);
    }
    return root;
  }

  /** @internal Name stored in the FILENAME at `pos` (validated). */
  async readName(pos: number): Promise<{ name: Buffer; next: number }> {
    const h = await this.reader.header(pos);
    if (h.htype !== PXAR_FILENAME) throw formatError(this.reader.what, pos, `expected FILENAME, found ${itemName(h.htype)}`);
    const name = parseFileName(await this.reader.content(h), this.reader.what, pos);
    return { name, next: pos + HEADER_SIZE + h.contentSize };
  }

  /**
   * @internal Decode the entry whose FILENAME is at `filenamePos` (undefined: the root at
   * `rootEntryOffset`) and whose range ends at `end`: reads a window from the entry's start
   * (doubling it while the entry runs on) and parses it with `parseEntrySync`.
   */
  async decodeAt(filenamePos: number | undefined, end: number, parent: Buffer | undefined, path?: Buffer): Promise<AccessorEntry> {
    const start = filenamePos ?? this.rootEntryOffset;
    const limit = this.reader.size;
    for (let len = READ_AHEAD; ; len *= 2) {
      const n = Math.min(len, limit - start);
      const win = await this.readRaw(start, n);
      const entry = this.parseEntrySync(win, start, filenamePos, end, parent ?? null, path);
      if (entry) return entry;
      if (start + n >= limit) throw formatError(this.reader.what, start, 'entry runs past the end of the archive (truncated?)');
    }
  }

  private kindWithoutData(m: Metadata, pos: number): 'directory' | 'fifo' | 'socket' {
    if (isDirectory(m.mode)) return 'directory';
    if (isFifo(m.mode)) return 'fifo';
    if (isSocket(m.mode)) return 'socket';
    throw formatError(this.reader.what, pos, `entry with mode 0o${(m.mode & IFMT).toString(8)} has no data item`);
  }

  private expectMode(m: Metadata, test: (mode: number) => boolean, what: string, pos: number): void {
    if (!test(m.mode)) throw formatError(this.reader.what, pos, `${what} item for an entry with mode 0o${m.mode.toString(8)}`);
  }
}

/** A directory's goodbye items (without the tail), in table (binary-tree-array) order. */
class GoodbyeTable {
  readonly hashLo: Uint32Array;
  readonly hashHi: Uint32Array;
  /** Absolute FILENAME positions. */
  readonly position: Float64Array;
  /** FILENAME position + item size. */
  readonly end: Float64Array;

  constructor(readonly count: number) {
    this.hashLo = new Uint32Array(count);
    this.hashHi = new Uint32Array(count);
    this.position = new Float64Array(count);
    this.end = new Float64Array(count);
  }
}

/** An opened directory: its goodbye table is loaded, lookups read only the matching child. */
export class PxarDirectory {
  constructor(
    private readonly accessor: PxarAccessor,
    readonly path: Buffer,
    /** Position of the directory's ENTRY. */
    readonly entryOffset: number,
    /** Position of its GOODBYE header. */
    readonly goodbyeOffset: number,
    /** End of its range (end of the GOODBYE item). */
    readonly endOffset: number,
    private readonly table: GoodbyeTable,
    /** Known for subdirectories (opened from their entry); decoded on demand for the root. */
    private self: AccessorEntry | undefined,
  ) {}

  /** Number of children. */
  get count(): number {
    return this.table.count;
  }

  /** The directory's own entry (metadata). */
  async entry(): Promise<AccessorEntry> {
    this.self ??= await this.accessor.decodeRoot();
    return this.self;
  }

  /** Children in archive order, decoded (each name is checked against its goodbye hash). */
  async *entries(): AsyncGenerator<AccessorEntry> {
    const t = this.table;
    const order = Array.from({ length: t.count }, (_, i) => i).sort((a, b) => t.position[a] - t.position[b]);
    for (const i of order) {
      const entry = await this.accessor.decodeAt(t.position[i], t.end[i], this.path);
      const h = sipHash24(entry.name);
      if (h[0] !== t.hashLo[i] || h[1] !== t.hashHi[i]) {
        throw formatError(this.accessor.name, t.position[i], 'goodbye hash does not match the entry name');
      }
      yield entry;
    }
  }

  /**
   * All children in archive order, decoded in bulk: one positional read per run of up to
   * 256 KiB of entry headers (subdirectory contents are skipped, never read) and a synchronous
   * parse. Much cheaper than `entries()` for whole-directory comparisons (change detection).
   * With `paths: false` an entry's `path` is just its name (saves an allocation per entry).
   */
  async list(opts: { paths?: boolean } = {}): Promise<AccessorEntry[]> {
    const withPaths = opts.paths ?? true;
    const t = this.table;
    const order = Array.from({ length: t.count }, (_, i) => i).sort((a, b) => t.position[a] - t.position[b]);
    const out: AccessorEntry[] = [];
    const stop = this.goodbyeOffset + HEADER_SIZE;
    let win: Buffer = EMPTY;
    let winStart = 0;
    for (let k = 0; k < order.length; k++) {
      const i = order[k];
      const pos = t.position[i];
      let len = LIST_WINDOW;
      for (;;) {
        const entry = pos >= winStart ? this.accessor.parseEntrySync(win, winStart, pos, t.end[i], withPaths ? this.path : null) : null;
        if (entry) {
          const h = sipHash24(entry.name);
          if (h[0] !== t.hashLo[i] || h[1] !== t.hashHi[i]) {
            throw formatError(this.accessor.name, pos, 'goodbye hash does not match the entry name');
          }
          out.push(entry);
          break;
        }
        if (winStart === pos && winStart + win.length >= stop) throw formatError(this.accessor.name, pos, 'entry runs past its directory');
        if (winStart === pos) len = win.length * 2;
        win = await this.accessor.readRaw(pos, Math.min(len, stop - pos));
        winStart = pos;
      }
    }
    return out;
  }

  /** The child called `name`, or null. */
  async lookup(name: Buffer | string): Promise<AccessorEntry | null> {
    const want = typeof name === 'string' ? Buffer.from(name) : name;
    const h = sipHash24(want);
    const lo = h[0];
    const hi = h[1];
    const t = this.table;
    const candidates = binaryTreeArraySearch(t.count, (i) => hi - t.hashHi[i] || lo - t.hashLo[i]);
    for (const i of candidates) {
      const { name: stored } = await this.accessor.readName(t.position[i]);
      if (stored.equals(want)) return this.accessor.decodeAt(t.position[i], t.end[i], this.path);
    }
    return null;
  }
}
