/**
 * DynamicIndex (`.didx`), spec datastore.md §3.1.
 *
 *   0    magic[8] = 1c914ea519bab3cd  (sha256("Proxmox Backup dynamic sized chunk index v1.0")[0..8])
 *   8    uuid[16]
 *   24   ctime i64 LE (epoch seconds)
 *   32   index_csum[32] = SHA256(end_0 u64 LE ‖ digest_0 ‖ end_1 ‖ digest_1 ‖ …)
 *   64   reserved, zero, up to 4096
 *   4096 + 40·k: end u64 LE (exclusive end offset of chunk k), digest[32]
 */
import { createHash, randomUUID } from 'node:crypto';
import { FormatError } from './errors.js';

export const DYNAMIC_INDEX_MAGIC = Buffer.from([28, 145, 78, 165, 25, 186, 179, 205]);
export const INDEX_HEADER_SIZE = 4096;
const ENTRY = 40;

export interface ChunkEntry {
  /** Start offset of the chunk in the archive stream. */
  offset: number;
  size: number;
  digest: Buffer;
}

/** A parsed dynamic index with random access by stream offset. */
export class DynamicIndex {
  readonly uuid: Buffer;
  readonly ctime: number;
  /** Checksum as stored in the header (never trusted: compare `computeCsum()` with the manifest). */
  readonly headerCsum: Buffer;
  private readonly ends: Float64Array;
  private readonly digests: Buffer;

  private constructor(uuid: Buffer, ctime: number, csum: Buffer, ends: Float64Array, digests: Buffer) {
    this.uuid = uuid;
    this.ctime = ctime;
    this.headerCsum = csum;
    this.ends = ends;
    this.digests = digests;
  }

  /** Parse and validate a whole `.didx` file. `name` is used in error messages. */
  static parse(buf: Buffer, name = 'dynamic index'): DynamicIndex {
    if (buf.length < INDEX_HEADER_SIZE) {
      throw new FormatError(`${name}: truncated (${buf.length} bytes, the header alone is ${INDEX_HEADER_SIZE})`);
    }
    if (!buf.subarray(0, 8).equals(DYNAMIC_INDEX_MAGIC)) {
      throw new FormatError(`${name}: wrong magic ${buf.subarray(0, 8).toString('hex')}, not a dynamic index`);
    }
    const body = buf.length - INDEX_HEADER_SIZE;
    if (body % ENTRY !== 0) {
      throw new FormatError(`${name}: size ${buf.length} is not 4096 + 40·n (truncated or corrupt)`);
    }
    const n = body / ENTRY;
    const ends = new Float64Array(n);
    const digests = Buffer.allocUnsafe(n * 32);
    let prev = 0;
    for (let k = 0; k < n; k++) {
      const p = INDEX_HEADER_SIZE + k * ENTRY;
      const end = readU64(buf, p, name);
      if (end <= prev) {
        throw new FormatError(`${name}: entry ${k} ends at ${end}, not after the previous end ${prev}`);
      }
      ends[k] = end;
      buf.copy(digests, k * 32, p + 8, p + 40);
      prev = end;
    }
    return new DynamicIndex(
      Buffer.from(buf.subarray(8, 24)),
      Number(buf.readBigInt64LE(24)),
      Buffer.from(buf.subarray(32, 64)),
      ends,
      digests,
    );
  }

  get count(): number {
    return this.ends.length;
  }

  /** Archive stream size (= last end offset). */
  get size(): number {
    return this.ends.length ? this.ends[this.ends.length - 1] : 0;
  }

  chunk(k: number): ChunkEntry {
    if (k < 0 || k >= this.ends.length) throw new RangeError(`chunk ${k} out of range 0..${this.ends.length}`);
    const offset = k === 0 ? 0 : this.ends[k - 1];
    return { offset, size: this.ends[k] - offset, digest: this.digests.subarray(k * 32, k * 32 + 32) };
  }

  end(k: number): number {
    return this.ends[k];
  }

  digest(k: number): Buffer {
    return this.digests.subarray(k * 32, k * 32 + 32);
  }

  /** Index of the chunk containing stream offset `offset` (binary search), or -1 past the end. */
  findChunk(offset: number): number {
    let lo = 0;
    let hi = this.ends.length - 1;
    if (offset < 0 || hi < 0 || offset >= this.ends[hi]) return -1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ends[mid] <= offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  *chunks(): IterableIterator<ChunkEntry> {
    for (let k = 0; k < this.ends.length; k++) yield this.chunk(k);
  }

  computeCsum(): Buffer {
    const h = createHash('sha256');
    const e = Buffer.allocUnsafe(8);
    for (let k = 0; k < this.ends.length; k++) {
      e.writeBigUInt64LE(BigInt(this.ends[k]));
      h.update(e);
      h.update(this.digest(k));
    }
    return h.digest();
  }
}

function readU64(buf: Buffer, p: number, name: string): number {
  const v = buf.readBigUInt64LE(p);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new FormatError(`${name}: offset ${v} at byte ${p} is out of range`);
  return Number(v);
}

/**
 * Builds a `.didx` incrementally: `add(end, digest)` per chunk, then `finish()` returns the
 * file bytes and the csum/size that go into the manifest.
 */
export class DynamicIndexWriter {
  private parts: Buffer[] = [];
  private cur = Buffer.allocUnsafe(40 * 1024);
  private curLen = 0;
  private readonly hash = createHash('sha256');
  private lastEnd = 0;
  private n = 0;

  constructor(
    readonly uuid: Buffer = uuidBytes(),
    readonly ctime: number = Math.floor(Date.now() / 1000),
  ) {}

  /** Append a chunk ending at stream offset `end`. */
  add(end: number, digest: Uint8Array): void {
    if (!(end > this.lastEnd) || !Number.isSafeInteger(end)) {
      throw new Error(`dynamic index: chunk end ${end} must be after ${this.lastEnd}`);
    }
    if (digest.length !== 32) throw new Error('dynamic index: digest must be 32 bytes');
    if (this.curLen + ENTRY > this.cur.length) {
      this.parts.push(this.cur.subarray(0, this.curLen));
      this.cur = Buffer.allocUnsafe(this.cur.length);
      this.curLen = 0;
    }
    const e = this.cur.subarray(this.curLen, this.curLen + ENTRY);
    e.writeBigUInt64LE(BigInt(end), 0);
    e.set(digest, 8);
    this.hash.update(e);
    this.curLen += ENTRY;
    this.lastEnd = end;
    this.n++;
  }

  get count(): number {
    return this.n;
  }

  get size(): number {
    return this.lastEnd;
  }

  finish(): { data: Buffer; csum: Buffer; size: number; count: number } {
    const csum = this.hash.digest();
    const header = Buffer.alloc(INDEX_HEADER_SIZE);
    DYNAMIC_INDEX_MAGIC.copy(header, 0);
    this.uuid.copy(header, 8);
    header.writeBigInt64LE(BigInt(this.ctime), 24);
    csum.copy(header, 32);
    const data = Buffer.concat([header, ...this.parts, this.cur.subarray(0, this.curLen)]);
    return { data, csum, size: this.lastEnd, count: this.n };
  }
}

export function uuidBytes(): Buffer {
  return Buffer.from(randomUUID().replace(/-/g, ''), 'hex');
}
