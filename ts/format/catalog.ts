/**
 * `catalog.pcat1` (legacy mode file list), spec datastore.md §6:
 *
 *   magic 91fd60f9c46758d5 ‖ dir_table* (children before parents) ‖ root_table ‖ root_table_offset u64 LE
 *   dir_table := varint(table_len) ‖ varint(entry_count) ‖ entry*
 *   entry     := type ‖ varint(name_len) ‖ name ‖ ('d': varint(table_start − child_table_start)
 *                                                 | 'f': varint(size) ‖ varint_i64(mtime) | other: nothing)
 *
 * A directory entry stores a backward distance from the start of the table containing it to the
 * child's table. The writer streams: a directory's table is written when it is closed, so only
 * the entries of open directories are held. The reader works on `readAt` (the catalog comes out
 * of a `.didx`) and loads one table at a time; every distance and length is checked.
 */
import { FormatError } from './errors.js';
import type { ReadAtSource } from './pxar/accessor.js';

export const CATALOG_MAGIC = Buffer.from([0x91, 0xfd, 0x60, 0xf9, 0xc4, 0x67, 0x58, 0xd5]);
/** Upstream's reader refuses names of this length or more. */
export const CATALOG_MAX_NAME_LEN = 4095;

export type CatalogEntryType = 'd' | 'f' | 'l' | 'h' | 'b' | 'c' | 'p' | 's';

export interface CatalogEntry {
  type: CatalogEntryType;
  name: Buffer;
  /** 'd': absolute offset of the directory's table. */
  start?: number;
  /** 'f': size in bytes. */
  size?: number;
  /** 'f': mtime in seconds (may be negative). */
  mtime?: number;
}

const TYPES = new Set<number>([...'dflhbcps'].map((c) => c.charCodeAt(0)));

// ---- varints --------------------------------------------------------------------------------

/** Append the varint (7 bits per byte, LSB group first, high bit = more) of a u64 safe integer. */
export function encodeVarint(v: number, out: number[]): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`catalog: varint value ${v} out of range`);
  while (v >= 128) {
    out.push((v % 128) | 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

/** Append varint_i64: like varint for v ≥ 0; for v < 0 every group has the high bit, then 0x00. */
export function encodeVarintI64(v: number, out: number[]): void {
  if (!Number.isSafeInteger(v)) throw new RangeError(`catalog: varint_i64 value ${v} out of range`);
  if (v >= 0) return encodeVarint(v, out);
  let d = -v;
  while (d >= 128) {
    out.push((d % 128) | 128);
    d = Math.floor(d / 128);
  }
  out.push(d | 128, 0);
}

/** Decode a varint at `buf[off]` (at most 10 bytes); `base` + off is the byte named in errors. */
export function decodeVarint(buf: Uint8Array, off: number, what = 'catalog', base = 0): { value: number; next: number } {
  let v = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (off + i >= buf.length) throw new FormatError(`${what}: truncated varint at byte ${base + off}`);
    const t = buf[off + i];
    v += (t & 127) * scale;
    if (t < 128) {
      if (!Number.isSafeInteger(v)) throw new FormatError(`${what}: varint at byte ${base + off} exceeds 2^53`);
      return { value: v, next: off + i + 1 };
    }
    scale *= 128;
  }
  throw new FormatError(`${what}: varint at byte ${base + off} has no end marker`);
}

/** Decode a varint_i64 at `buf[off]` (at most 11 bytes); `base` + off is the byte named in errors. */
export function decodeVarintI64(buf: Uint8Array, off: number, what = 'catalog', base = 0): { value: number; next: number } {
  let v = 0;
  let scale = 1;
  for (let i = 0; i < 11; i++) {
    if (off + i >= buf.length) throw new FormatError(`${what}: truncated varint_i64 at byte ${base + off}`);
    const t = buf[off + i];
    if (t === 0) return { value: v === 0 ? 0 : -v, next: off + i + 1 };
    v += (t & 127) * scale;
    if (!Number.isSafeInteger(v)) throw new FormatError(`${what}: varint_i64 at byte ${base + off} exceeds 2^53`);
    if (t < 128) return { value: v, next: off + i + 1 };
    scale *= 128;
  }
  throw new FormatError(`${what}: varint_i64 at byte ${base + off} has no end marker`);
}

// ---- writer ---------------------------------------------------------------------------------

export interface CatalogSink {
  write(buf: Buffer): void;
}

interface OpenDir {
  name: Buffer;
  entries: CatalogEntry[];
}

/**
 * Streaming catalog writer. The outermost level is the root table (one 'd' per archive, named
 * like `root.pxar.didx`): `startDirectory(archiveName)` … `endDirectory()` per archive, then `finish()`.
 */
export class CatalogWriter {
  private pos = 0;
  private readonly stack: OpenDir[] = [{ name: Buffer.from('/'), entries: [] }];
  private finished = false;

  constructor(private readonly sink: CatalogSink) {
    this.emit(CATALOG_MAGIC);
  }

  get position(): number {
    return this.pos;
  }

  startDirectory(name: Buffer): void {
    this.check(name);
    this.stack.push({ name, entries: [] });
  }

  endDirectory(): void {
    this.check();
    if (this.stack.length < 2) throw new Error('catalog: endDirectory() at the root level');
    const dir = this.stack.pop() as OpenDir;
    const start = this.writeTable(dir);
    this.top().entries.push({ type: 'd', name: dir.name, start });
  }

  addFile(name: Buffer, size: number, mtime: number): void {
    this.check(name);
    this.top().entries.push({ type: 'f', name, size, mtime });
  }

  addSymlink(name: Buffer): void {
    this.add('l', name);
  }

  addHardlink(name: Buffer): void {
    this.add('h', name);
  }

  addBlockDevice(name: Buffer): void {
    this.add('b', name);
  }

  addCharDevice(name: Buffer): void {
    this.add('c', name);
  }

  addFifo(name: Buffer): void {
    this.add('p', name);
  }

  addSocket(name: Buffer): void {
    this.add('s', name);
  }

  /** Write the root table and its offset. */
  finish(): void {
    this.check();
    if (this.stack.length !== 1) throw new Error(`catalog: finish() with ${this.stack.length - 1} directories open`);
    const start = this.writeTable(this.stack.pop() as OpenDir);
    const tail = Buffer.alloc(8);
    tail.writeBigUInt64LE(BigInt(start));
    this.emit(tail);
    this.finished = true;
  }

  private add(type: CatalogEntryType, name: Buffer): void {
    this.check(name);
    this.top().entries.push({ type, name });
  }

  private top(): OpenDir {
    return this.stack[this.stack.length - 1];
  }

  private check(name?: Buffer): void {
    if (this.finished) throw new Error('catalog: writer already finished');
    if (name && (name.length === 0 || name.length > CATALOG_MAX_NAME_LEN || name.includes(0))) {
      throw new Error(`catalog: bad entry name (empty, NUL or longer than ${CATALOG_MAX_NAME_LEN} bytes)`);
    }
  }

  /** Encode and write a table; returns its start offset. */
  private writeTable(dir: OpenDir): number {
    const start = this.pos;
    const table: number[] = [];
    encodeVarint(dir.entries.length, table);
    const parts: Buffer[] = [];
    const flush = (): void => {
      if (table.length) parts.push(Buffer.from(table));
      table.length = 0;
    };
    for (const e of dir.entries) {
      table.push(e.type.charCodeAt(0));
      encodeVarint(e.name.length, table);
      flush();
      parts.push(e.name);
      if (e.type === 'd') encodeVarint(start - (e.start as number), table);
      else if (e.type === 'f') {
        encodeVarint(e.size as number, table);
        encodeVarintI64(e.mtime as number, table);
      }
    }
    flush();
    const body = Buffer.concat(parts);
    const len: number[] = [];
    encodeVarint(body.length, len);
    this.emit(Buffer.from(len));
    this.emit(body);
    return start;
  }

  private emit(buf: Buffer): void {
    this.sink.write(buf);
    this.pos += buf.length;
  }
}

// ---- reader ---------------------------------------------------------------------------------

export class CatalogReader {
  private constructor(
    private readonly source: ReadAtSource,
    private readonly what: string,
    /** Offset of the root table. */
    readonly rootStart: number,
  ) {}

  static async open(source: ReadAtSource, what = 'catalog'): Promise<CatalogReader> {
    if (source.size < 16) throw new FormatError(`${what}: ${source.size} bytes are too small for a catalog`);
    const magic = await readExact(source, 0, 8, what);
    if (!magic.equals(CATALOG_MAGIC)) throw new FormatError(`${what}: wrong magic ${magic.toString('hex')}`);
    const tail = await readExact(source, source.size - 8, 8, what);
    const root = tail.readBigUInt64LE(0);
    if (root < 8n || root >= BigInt(source.size - 8)) {
      throw new FormatError(`${what}: root table offset ${root} outside the catalog (byte ${source.size - 8})`);
    }
    return new CatalogReader(source, what, Number(root));
  }

  /** The root directory (its entries are one directory per archive). */
  root(): CatalogEntry {
    return { type: 'd', name: Buffer.alloc(0), start: this.rootStart };
  }

  /** Entries of a directory, in stored order. */
  async readDir(dir: CatalogEntry): Promise<CatalogEntry[]> {
    if (dir.type !== 'd' || dir.start === undefined) throw new Error('catalog: readDir() on a non-directory');
    const start = dir.start;
    const end = this.source.size - 8;
    if (start < 8 || start >= end) throw new FormatError(`${this.what}: table offset ${start} out of range`);
    const head = await readExact(this.source, start, Math.min(10, end - start), this.what);
    const { value: len, next } = decodeVarint(head, 0, this.what, start);
    const bodyStart = start + next;
    if (len < 1 || bodyStart + len > end) throw new FormatError(`${this.what}: table at byte ${start} of ${len} bytes runs past the end`);
    const body = await readExact(this.source, bodyStart, len, this.what);
    return this.parseTable(body, start, bodyStart);
  }

  /** Entry `name` in `dir`, or null. */
  async lookup(dir: CatalogEntry, name: Buffer | string): Promise<CatalogEntry | null> {
    const want = typeof name === 'string' ? Buffer.from(name) : name;
    for (const e of await this.readDir(dir)) if (e.name.equals(want)) return e;
    return null;
  }

  /** Entry at a '/'-separated path from the root (first component = archive name), or null. */
  async lookupPath(path: Buffer | string): Promise<CatalogEntry | null> {
    const p = typeof path === 'string' ? Buffer.from(path) : path;
    let cur = this.root();
    let startAt = 0;
    while (startAt <= p.length) {
      let slash = p.indexOf(0x2f, startAt);
      if (slash < 0) slash = p.length;
      const part = p.subarray(startAt, slash);
      startAt = slash + 1;
      if (part.length === 0) continue;
      if (cur.type !== 'd') return null;
      const next = await this.lookup(cur, part);
      if (!next) return null;
      cur = next;
    }
    return cur;
  }

  private parseTable(body: Buffer, tableStart: number, bodyStart: number): CatalogEntry[] {
    const what = this.what;
    let { value: count, next: off } = decodeVarint(body, 0, what, bodyStart);
    // each entry needs at least 2 bytes: refuse absurd counts before allocating anything
    if (count > body.length / 2) throw new FormatError(`${what}: table at byte ${tableStart} claims ${count} entries`);
    const out: CatalogEntry[] = [];
    while (count-- > 0) {
      if (off >= body.length) throw new FormatError(`${what}: table at byte ${tableStart} is truncated`);
      const t = body[off];
      if (!TYPES.has(t)) throw new FormatError(`${what}: unknown entry type 0x${t.toString(16)} at byte ${bodyStart + off}`);
      const type = String.fromCharCode(t) as CatalogEntryType;
      const nl = decodeVarint(body, off + 1, what, bodyStart);
      if (nl.value > CATALOG_MAX_NAME_LEN || nl.next + nl.value > body.length) {
        throw new FormatError(`${what}: bad name length ${nl.value} at byte ${bodyStart + off + 1}`);
      }
      const name = Buffer.from(body.subarray(nl.next, nl.next + nl.value));
      off = nl.next + nl.value;
      if (type === 'd') {
        const d = decodeVarint(body, off, what, bodyStart);
        const child = tableStart - d.value;
        if (d.value <= 0 || child < 8) {
          throw new FormatError(`${what}: directory offset ${d.value} at byte ${bodyStart + off} points outside the catalog`);
        }
        out.push({ type, name, start: child });
        off = d.next;
      } else if (type === 'f') {
        const size = decodeVarint(body, off, what, bodyStart);
        const mtime = decodeVarintI64(body, size.next, what, bodyStart);
        out.push({ type, name, size: size.value, mtime: mtime.value });
        off = mtime.next;
      } else {
        out.push({ type, name });
      }
    }
    if (off !== body.length) throw new FormatError(`${what}: ${body.length - off} stray bytes at the end of the table at byte ${tableStart}`);
    return out;
  }
}

async function readExact(src: ReadAtSource, offset: number, length: number, what: string): Promise<Buffer> {
  const buf = await src.readAt(offset, length);
  if (buf.length !== length) throw new FormatError(`${what}: short read at byte ${offset} (${buf.length} of ${length} bytes)`);
  return buf;
}
