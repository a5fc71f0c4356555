/**
 * Sequential pxar decoder (spec pxar.md §4, §7) for unified (v1) and split (v2) archives.
 *
 * `next()` yields, in archive order, one `entry` event per entry (the root first, path empty)
 * and one `end` event after the last child of every directory (the root's is last), so an
 * extractor can apply directory metadata after the children. A file's data is streamed with
 * `contents()` before the next `next()`; unread data is skipped. In split mode the payload stream
 * is a second source and is consumed strictly forward (refs below the consumed position are
 * refused); a split `.mpxar` can also be decoded alone (no contents then).
 *
 * Every structural problem is a FormatError naming the byte offset: item sizes are bounded per
 * type before anything is allocated, unknown item types, bad names ('', '.', '..', '/', NUL,
 * missing terminator), truncation, trailing bytes, goodbye tables whose size does not match the
 * number of children, HARDLINKs not pointing back at a regular-file entry (tracked as 8 bytes
 * per file unless `checkHardlinks` is false), payload headers that do not match their ref.
 */
import {
  GOODBYE_ITEM_SIZE,
  HEADER_SIZE,
  IFMT,
  MAX_DECODE_DEPTH,
  PXAR_DEVICE,
  PXAR_ENTRY,
  PXAR_ENTRY_V1,
  PXAR_FILENAME,
  PXAR_FORMAT_VERSION,
  PXAR_GOODBYE,
  PXAR_HARDLINK,
  PXAR_PAYLOAD,
  PXAR_PAYLOAD_REF,
  PXAR_PAYLOAD_START_MARKER,
  PXAR_PAYLOAD_TAIL_MARKER,
  PXAR_PRELUDE,
  PXAR_SYMLINK,
} from './constants.js';
import { ByteReader, type ByteSource } from './byte-reader.js';
import type { EntryKind, PxarEntry } from './entry.js';
import { basicMetadata, isDevice, isDirectory, isFifo, isRegularFile, isSocket, isSymlink, type Metadata } from './metadata.js';
import {
  applyAttribute,
  formatError,
  isAttribute,
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
  type ItemHeader,
} from './wire.js';

export type { ByteSource } from './byte-reader.js';

export interface PxarDecoderOptions {
  /** Payload stream (`.ppxar`) of a split archive; without it file contents cannot be read. */
  payload?: ByteSource;
  /**
   * Called with each piece of the payload stream once the decoder has read past it, so its
   * source can reuse the memory (see ByteReader). With it, a piece from `contents()` is valid
   * only until the next call into the decoder.
   */
  releasePayload?: (piece: Buffer) => void;
  /** Verify HARDLINK targets (default true; costs 8 bytes per regular file). */
  checkHardlinks?: boolean;
  /** Name used in error messages (default "pxar archive"). */
  name?: string;
}

export type DecoderEvent =
  | { type: 'entry'; entry: PxarEntry }
  /** All children of this directory were delivered. */
  | { type: 'end'; entry: PxarEntry };

interface Frame {
  entry: PxarEntry;
  children: number;
}

interface OpenFile {
  remaining: number;
  /** PAYLOAD_REF target in the payload stream; undefined for inline data. */
  refOffset?: number;
  size: number;
  headerChecked: boolean;
}

const EMPTY = Buffer.alloc(0);

/**
 * Items after an ENTRY whose content `entryItem` takes (all of them bounded by parseHeader).
 * Not FILENAME or GOODBYE (the next entry's), not PAYLOAD (file data), and not an item that is
 * out of place there: that is refused before its content is read.
 */
const takesContent = (t: bigint) => t === PXAR_PAYLOAD_REF || t === PXAR_SYMLINK || t === PXAR_DEVICE || isAttribute(t);
const CONTENT_PIECE = 1024 * 1024;

export class PxarDecoder implements AsyncIterable<DecoderEvent> {
  /** 1 (unified) or 2 (split), known after the first `next()`. */
  version: 1 | 2 | undefined;
  /** PRELUDE content, if the archive has one (known after the first `next()`). */
  prelude: Buffer | undefined;
  private readonly what: string;
  private readonly meta: ByteReader;
  private readonly payload: ByteReader | undefined;
  private readonly checkHardlinks: boolean;
  private phase: 'begin' | 'body' | 'eof' = 'begin';
  private readonly stack: Frame[] = [];
  /** FILENAME/GOODBYE header already read (it ended the previous entry's attributes). */
  private pending: ItemHeader | undefined;
  private file: OpenFile | undefined;
  private filePositions = new Float64Array(1024);
  private fileCount = 0;
  private failure: Error | undefined;

  constructor(metadata: ByteSource, options: PxarDecoderOptions = {}) {
    this.what = options.name ?? 'pxar archive';
    this.meta = new ByteReader(metadata);
    this.payload = options.payload ? new ByteReader(options.payload, options.releasePayload) : undefined;
    this.checkHardlinks = options.checkHardlinks ?? true;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<DecoderEvent> {
    for (;;) {
      const ev = await this.next();
      if (!ev) return;
      yield ev;
    }
  }

  /** The next event, or null after the root's `end`. After an error every call rethrows it. */
  async next(): Promise<DecoderEvent | null> {
    if (this.failure) throw this.failure;
    try {
      return await this.step();
    } catch (e) {
      this.failure = e as Error;
      throw e;
    }
  }

  private async step(): Promise<DecoderEvent | null> {
    if (this.phase === 'eof') return null;
    if (this.phase === 'begin') {
      const root = await this.readStart();
      this.phase = 'body';
      return { type: 'entry', entry: root };
    }
    const f = this.file;
    if (f && f.remaining === 0 && (f.refOffset === undefined || f.headerChecked)) this.file = undefined;
    else await this.finishFile();
    // Most entries lie whole in the bytes at hand: parsed without an await.
    const fast = this.childInView();
    if (fast) return { type: 'entry', entry: fast };
    const h = this.pending ?? (await this.readHeader());
    this.pending = undefined;
    if (h.htype === PXAR_FILENAME) return { type: 'entry', entry: await this.readChild(h) };
    if (h.htype !== PXAR_GOODBYE) {
      throw formatError(this.what, h.pos, `expected FILENAME or GOODBYE, found ${itemName(h.htype)}`);
    }
    const frame = this.stack.pop() as Frame;
    const expected = GOODBYE_ITEM_SIZE * (frame.children + 1);
    if (h.contentSize !== expected) {
      throw formatError(this.what, h.pos, `GOODBYE of ${h.contentSize} bytes for ${frame.children} entries (expected ${expected})`);
    }
    if (!(await this.meta.skip(h.contentSize))) throw this.truncated();
    if (this.stack.length === 0) {
      this.phase = 'eof';
      if (!(await this.meta.atEnd())) throw formatError(this.what, this.meta.position, 'trailing data after the root GOODBYE');
      if (this.payload) await this.checkPayloadTail(this.payload);
    }
    return { type: 'end', entry: frame.entry };
  }

  /**
   * Data of the file entry returned by the last `next()`, in pieces (zero-copy views; at most
   * 1 MiB each). Must be consumed before calling `next()` again.
   */
  async *contents(): AsyncGenerator<Buffer> {
    const f = this.file;
    if (!f) throw new Error(`${this.what}: contents() without a current regular-file entry`);
    let reader = this.meta;
    if (f.refOffset !== undefined) {
      if (!this.payload) throw new Error(`${this.what}: split archive decoded without its payload stream`);
      reader = this.payload;
      await this.openPayload(f);
    }
    while (this.file === f && f.remaining > 0) {
      const piece = await reader.readSome(Math.min(f.remaining, CONTENT_PIECE));
      if (!piece) throw this.truncated(reader === this.payload ? 'payload stream' : this.what, reader.position);
      f.remaining -= piece.length;
      yield piece;
    }
  }

  /**
   * The current file's remaining data as one zero-copy view when it lies whole in the bytes at
   * hand (consumed then; valid as a `contents()` piece is), else null with nothing consumed:
   * read it with `contents()`.
   */
  contentInView(): Buffer | null {
    const f = this.file;
    if (!f) throw new Error(`${this.what}: contentInView() without a current regular-file entry`);
    let reader = this.meta;
    let at = 0;
    const v = f.refOffset === undefined ? this.meta.view() : this.payload?.view();
    if (!v) throw new Error(`${this.what}: split archive decoded without its payload stream`);
    if (!f.headerChecked) {
      reader = this.payload as ByteReader;
      const offset = f.refOffset as number;
      const gap = offset - reader.position;
      if (gap < 0 || gap + HEADER_SIZE > v.length) return null;
      this.checkPayloadHeader(parseHeader(v, gap, offset, 'payload stream'), f);
      at = gap + HEADER_SIZE;
    } else if (f.refOffset !== undefined) {
      reader = this.payload as ByteReader;
    }
    if (at + f.remaining > v.length) return null;
    reader.advance(at + f.remaining);
    f.headerChecked = true;
    const out = v.subarray(at, at + f.remaining);
    f.remaining = 0;
    return out;
  }

  // ---- structure ------------------------------------------------------------------------------

  private async readStart(): Promise<PxarEntry> {
    if (this.payload) {
      if (!(await this.payload.fill(HEADER_SIZE))) throw this.truncated('payload stream', this.payload.position);
      const h = parseHeader(this.payload.take(HEADER_SIZE), 0, 0, 'payload stream');
      if (h.htype !== PXAR_PAYLOAD_START_MARKER || h.contentSize !== 0) {
        throw formatError('payload stream', 0, `expected PAYLOAD_START_MARKER, found ${itemName(h.htype)}`);
      }
    }
    let h = await this.readHeader();
    this.version = 1;
    if (h.htype === PXAR_FORMAT_VERSION) {
      const content = await this.readContent(h);
      if (content.length !== 8) throw formatError(this.what, h.pos, `FORMAT_VERSION of ${content.length} bytes`);
      const v = readU64(content, 0, this.what, h.pos, 'format version');
      if (v !== 1 && v !== 2) throw formatError(this.what, h.pos, `unknown format version ${v}`);
      this.version = v;
      h = await this.readHeader();
      if (h.htype === PXAR_PRELUDE) {
        if (v !== 2) throw formatError(this.what, h.pos, 'PRELUDE in a version 1 archive');
        this.prelude = Buffer.from(await this.readContent(h));
        h = await this.readHeader();
      }
    }
    if (h.htype !== PXAR_ENTRY && h.htype !== PXAR_ENTRY_V1) {
      throw formatError(this.what, h.pos, `archive must start with ENTRY or FORMAT_VERSION, found ${itemName(h.htype)}`);
    }
    const root = await this.readEntryBody(h, EMPTY, EMPTY, undefined);
    if (root.kind !== 'directory') throw formatError(this.what, h.pos, `root entry is a ${root.kind}, not a directory`);
    return root;
  }

  private async readChild(filename: ItemHeader): Promise<PxarEntry> {
    const name = Buffer.from(parseFileName(await this.readContent(filename), this.what, filename.pos));
    const frame = this.stack[this.stack.length - 1];
    frame.children++;
    const path = joinPath(frame.entry.path, name);
    const h = await this.readHeader();
    if (h.htype === PXAR_HARDLINK) {
      const link = parseHardlink(await this.readContent(h), this.what, h.pos);
      const target = filename.pos - link.offset;
      if (link.offset <= 0 || target < 0 || (this.checkHardlinks && !this.isFileAt(target))) {
        throw formatError(this.what, h.pos, `HARDLINK offset ${link.offset} does not point back to a regular-file entry`);
      }
      return {
        path,
        name,
        kind: 'hardlink',
        metadata: basicMetadata(0),
        linkOffset: filename.pos,
        entryOffset: h.pos,
        hardlinkTarget: link.target,
        hardlinkTargetOffset: target,
      };
    }
    if (h.htype !== PXAR_ENTRY && h.htype !== PXAR_ENTRY_V1) {
      throw formatError(this.what, h.pos, `expected ENTRY or HARDLINK after FILENAME, found ${itemName(h.htype)}`);
    }
    return this.readEntryBody(h, path, name, filename.pos);
  }

  /** ENTRY, attributes and the item that completes the entry (§7 step 2). */
  private async readEntryBody(h: ItemHeader, path: Buffer, name: Buffer, linkOffset: number | undefined): Promise<PxarEntry> {
    const entry = this.newEntry(h, await this.readContent(h), path, name, linkOffset);
    for (;;) {
      const item = await this.readHeader();
      if (this.entryItem(entry, h, item, takesContent(item.htype) ? await this.readContent(item) : EMPTY, linkOffset)) return entry;
    }
  }

  private newEntry(h: ItemHeader, stat: Buffer, path: Buffer, name: Buffer, linkOffset: number | undefined): PxarEntry {
    const metadata = parseStat(stat, h.htype === PXAR_ENTRY_V1, this.what, h.pos);
    const entry: PxarEntry = { path, name, kind: 'directory', metadata, entryOffset: h.pos };
    if (linkOffset !== undefined) entry.linkOffset = linkOffset;
    return entry;
  }

  /**
   * One item after an entry's ENTRY (`h`), with its content where `takesContent`: an attribute
   * (false), or the item that completes the entry (true; the decoder's state moves on to what
   * follows it).
   */
  private entryItem(entry: PxarEntry, h: ItemHeader, item: ItemHeader, content: Buffer, linkOffset: number | undefined): boolean {
    const metadata = entry.metadata;
    const t = item.htype;
    if (t === PXAR_FILENAME || t === PXAR_GOODBYE) {
      this.pending = item;
      entry.kind = this.kindWithoutData(metadata, h.pos);
      if (entry.kind === 'directory') {
        if (this.stack.length >= MAX_DECODE_DEPTH) throw formatError(this.what, h.pos, `directories nested deeper than ${MAX_DECODE_DEPTH} levels`);
        this.stack.push({ entry, children: 0 });
      }
      return true;
    }
    if (t === PXAR_PAYLOAD || t === PXAR_PAYLOAD_REF) {
      this.expectMode(metadata, isRegularFile, 'regular file', item.pos);
      entry.kind = 'file';
      if (t === PXAR_PAYLOAD) {
        entry.size = item.contentSize;
        entry.contentOffset = item.pos + HEADER_SIZE;
        this.file = { remaining: item.contentSize, size: item.contentSize, headerChecked: true };
      } else {
        const ref = parsePayloadRef(content, this.what, item.pos);
        if (this.payload && ref.offset < this.payload.position) {
          throw formatError(this.what, item.pos, `PAYLOAD_REF offset ${ref.offset} is below the consumed payload position ${this.payload.position}`);
        }
        entry.size = ref.size;
        entry.payloadOffset = ref.offset;
        this.file = { remaining: ref.size, size: ref.size, refOffset: ref.offset, headerChecked: false };
      }
      if (linkOffset !== undefined && this.checkHardlinks) this.recordFile(linkOffset);
      return true;
    }
    if (t === PXAR_SYMLINK) {
      this.expectMode(metadata, isSymlink, 'symlink', item.pos);
      entry.kind = 'symlink';
      entry.symlinkTarget = parseSymlink(content, this.what, item.pos);
      return true;
    }
    if (t === PXAR_DEVICE) {
      this.expectMode(metadata, isDevice, 'device', item.pos);
      entry.kind = 'device';
      entry.device = parseDevice(content, this.what, item.pos);
      return true;
    }
    if (!isAttribute(t)) throw formatError(this.what, item.pos, `unexpected ${itemName(t)} inside an entry`);
    applyAttribute(metadata, t, content, this.what, item.pos);
    return false;
  }

  /**
   * `readChild` without an await when the next child (FILENAME, ENTRY, its attributes and the
   * item completing it; not a HARDLINK) lies whole in the metadata reader's view; else null,
   * with nothing consumed (`step` takes the general path, which reports any error there).
   */
  private childInView(): PxarEntry | null {
    const buf = this.meta.view();
    const base = this.meta.position;
    let p = 0;
    const header = (): ItemHeader | null => {
      if (p + HEADER_SIZE > buf.length) return null;
      const h = parseHeader(buf, p, base + p, this.what);
      p += HEADER_SIZE;
      return h;
    };
    const content = (h: ItemHeader): Buffer | null => {
      if (p + h.contentSize > buf.length) return null;
      p += h.contentSize;
      return buf.subarray(p - h.contentSize, p);
    };
    const filename = this.pending ?? header();
    if (!filename || filename.htype !== PXAR_FILENAME) return null;
    const rawName = content(filename);
    if (!rawName) return null;
    const name = Buffer.from(parseFileName(rawName, this.what, filename.pos));
    const h = header();
    if (!h || (h.htype !== PXAR_ENTRY && h.htype !== PXAR_ENTRY_V1)) return null;
    const stat = content(h);
    if (!stat) return null;
    const frame = this.stack[this.stack.length - 1];
    const entry = this.newEntry(h, stat, joinPath(frame.entry.path, name), name, filename.pos);
    for (;;) {
      const item = header();
      if (!item) return null;
      const c = takesContent(item.htype) ? content(item) : EMPTY;
      if (!c) return null;
      if (isAttribute(item.htype)) {
        this.entryItem(entry, h, item, c, filename.pos);
        continue;
      }
      // The completing item: from here on the decoder's state changes, as readChild's would.
      this.pending = undefined;
      frame.children++;
      this.entryItem(entry, h, item, c, filename.pos);
      this.meta.advance(p);
      return entry;
    }
  }

  private kindWithoutData(m: Metadata, pos: number): EntryKind {
    if (isDirectory(m.mode)) return 'directory';
    if (isFifo(m.mode)) return 'fifo';
    if (isSocket(m.mode)) return 'socket';
    throw formatError(this.what, pos, `entry with mode 0o${(m.mode & IFMT).toString(8)} has no data item`);
  }

  private expectMode(m: Metadata, test: (mode: number) => boolean, what: string, pos: number): void {
    if (!test(m.mode)) throw formatError(this.what, pos, `${what} item for an entry with mode 0o${m.mode.toString(8)}`);
  }

  // ---- file data ------------------------------------------------------------------------------

  /** Skip what is left of the current file's data. */
  private async finishFile(): Promise<void> {
    const f = this.file;
    if (!f) return;
    this.file = undefined;
    if (f.refOffset === undefined) {
      if (!(await this.meta.skip(f.remaining))) throw this.truncated();
    } else if (this.payload) {
      await this.openPayload(f);
      if (!(await this.payload.skip(f.remaining))) throw this.truncated('payload stream', this.payload.position);
    }
    f.remaining = 0;
  }

  /** Seek the payload stream forward to the ref and check its PAYLOAD header. */
  private async openPayload(f: OpenFile): Promise<void> {
    if (f.headerChecked) return;
    const p = this.payload as ByteReader;
    const offset = f.refOffset as number;
    if (!(await p.skip(offset - p.position))) throw this.truncated('payload stream', p.position);
    if (!(await p.fill(HEADER_SIZE))) throw this.truncated('payload stream', p.position);
    this.checkPayloadHeader(parseHeader(p.take(HEADER_SIZE), 0, offset, 'payload stream'), f);
    f.headerChecked = true;
  }

  private checkPayloadHeader(h: ItemHeader, f: OpenFile): void {
    if (h.htype !== PXAR_PAYLOAD || h.contentSize !== f.size) {
      throw formatError('payload stream', h.pos, `expected PAYLOAD of ${f.size} bytes, found ${itemName(h.htype)} of ${h.contentSize}`);
    }
  }

  /**
   * The payload stream ends with PAYLOAD_TAIL_MARKER; anything between the last file and it is
   * unreferenced (injected) padding, read through.
   */
  private async checkPayloadTail(p: ByteReader): Promise<void> {
    const tail = Buffer.alloc(HEADER_SIZE);
    let have = 0;
    for (;;) {
      const piece = await p.readSome(CONTENT_PIECE);
      if (!piece) break;
      if (piece.length >= HEADER_SIZE) {
        piece.copy(tail, 0, piece.length - HEADER_SIZE);
      } else {
        tail.copy(tail, 0, piece.length);
        piece.copy(tail, HEADER_SIZE - piece.length);
      }
      have += piece.length;
    }
    const pos = p.position - HEADER_SIZE;
    if (have < HEADER_SIZE || tail.readBigUInt64LE(0) !== PXAR_PAYLOAD_TAIL_MARKER || tail.readBigUInt64LE(8) !== BigInt(HEADER_SIZE)) {
      throw formatError('payload stream', Math.max(pos, 0), 'missing PAYLOAD_TAIL_MARKER at the end (truncated?)');
    }
  }

  private recordFile(pos: number): void {
    if (this.fileCount === this.filePositions.length) {
      const next = new Float64Array(this.fileCount * 2);
      next.set(this.filePositions);
      this.filePositions = next;
    }
    this.filePositions[this.fileCount++] = pos;
  }

  /** Positions are recorded in increasing order: binary search. */
  private isFileAt(pos: number): boolean {
    let lo = 0;
    let hi = this.fileCount;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.filePositions[mid] < pos) lo = mid + 1;
      else hi = mid;
    }
    return lo < this.fileCount && this.filePositions[lo] === pos;
  }

  // ---- items ----------------------------------------------------------------------------------

  private async readHeader(): Promise<ItemHeader> {
    if (this.meta.buffered < HEADER_SIZE && !(await this.meta.fill(HEADER_SIZE))) throw this.truncated();
    const pos = this.meta.position;
    return parseHeader(this.meta.take(HEADER_SIZE), 0, pos, this.what);
  }

  /** Content of a bounded item (callers only use it for types parseHeader bounds). */
  private async readContent(h: ItemHeader): Promise<Buffer> {
    const n = h.contentSize;
    if (this.meta.buffered < n && !(await this.meta.fill(n))) throw this.truncated();
    return this.meta.take(n);
  }

  private truncated(what = this.what, pos = this.meta.position): Error {
    return formatError(what, pos, 'unexpected end of data (truncated)');
  }
}
