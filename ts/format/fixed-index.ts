/**
 * FixedIndex (`.fidx`), spec datastore.md §3.2.
 *
 *   0    magic[8] = 2f7f41ed91fd0fcd  (sha256("Proxmox Backup fixed sized chunk index v1.0")[0..8])
 *   8    uuid[16]
 *   24   ctime i64 LE
 *   32   index_csum[32] = SHA256(digest_0 ‖ digest_1 ‖ …)
 *   64   size u64 LE (image size), 72 chunk_size u64 LE, reserved zero up to 4096
 *   4096 + 32·k: digest of chunk k
 */
import { createHash } from 'node:crypto';
import { FormatError } from './errors.js';
import { INDEX_HEADER_SIZE, uuidBytes, type ChunkEntry } from './dynamic-index.js';

export const FIXED_INDEX_MAGIC = Buffer.from([47, 127, 65, 237, 145, 253, 15, 205]);
export const FIXED_CHUNK_SIZE = 4 * 1024 * 1024;

export class FixedIndex {
  private constructor(
    readonly uuid: Buffer,
    readonly ctime: number,
    readonly headerCsum: Buffer,
    /** Image size in bytes. */
    readonly size: number,
    readonly chunkSize: number,
    private readonly digests: Buffer,
  ) {}

  static parse(buf: Buffer, name = 'fixed index'): FixedIndex {
    if (buf.length < INDEX_HEADER_SIZE) {
      throw new FormatError(`${name}: truncated (${buf.length} bytes, the header alone is ${INDEX_HEADER_SIZE})`);
    }
    if (!buf.subarray(0, 8).equals(FIXED_INDEX_MAGIC)) {
      throw new FormatError(`${name}: wrong magic ${buf.subarray(0, 8).toString('hex')}, not a fixed index`);
    }
    const size = Number(buf.readBigUInt64LE(64));
    const chunkSize = Number(buf.readBigUInt64LE(72));
    if (!Number.isSafeInteger(size) || chunkSize <= 0 || !Number.isSafeInteger(chunkSize)) {
      throw new FormatError(`${name}: bad size ${size} / chunk size ${chunkSize}`);
    }
    const n = Math.ceil(size / chunkSize);
    if (buf.length !== INDEX_HEADER_SIZE + 32 * n) {
      throw new FormatError(`${name}: ${buf.length} bytes, expected ${INDEX_HEADER_SIZE + 32 * n} for ${n} chunks`);
    }
    return new FixedIndex(
      Buffer.from(buf.subarray(8, 24)),
      Number(buf.readBigInt64LE(24)),
      Buffer.from(buf.subarray(32, 64)),
      size,
      chunkSize,
      Buffer.from(buf.subarray(INDEX_HEADER_SIZE)),
    );
  }

  get count(): number {
    return this.digests.length / 32;
  }

  digest(k: number): Buffer {
    return this.digests.subarray(k * 32, k * 32 + 32);
  }

  chunk(k: number): ChunkEntry {
    if (k < 0 || k >= this.count) throw new RangeError(`chunk ${k} out of range 0..${this.count}`);
    const offset = k * this.chunkSize;
    return { offset, size: Math.min(this.chunkSize, this.size - offset), digest: this.digest(k) };
  }

  findChunk(offset: number): number {
    return offset >= 0 && offset < this.size ? Math.floor(offset / this.chunkSize) : -1;
  }

  computeCsum(): Buffer {
    return createHash('sha256').update(this.digests).digest();
  }
}

/** Builds a `.fidx` for an image of known size; chunks may be set in any order. */
export class FixedIndexWriter {
  private readonly digests: Buffer;
  private readonly filled: Uint8Array;

  constructor(
    readonly size: number,
    readonly chunkSize: number = FIXED_CHUNK_SIZE,
    readonly uuid: Buffer = uuidBytes(),
    readonly ctime: number = Math.floor(Date.now() / 1000),
  ) {
    const n = Math.ceil(size / chunkSize);
    this.digests = Buffer.alloc(32 * n);
    this.filled = new Uint8Array(n);
  }

  get count(): number {
    return this.filled.length;
  }

  /** Set chunk `k`; `size` must be the full chunk size except for the last chunk. */
  set(k: number, size: number, digest: Uint8Array): void {
    if (k < 0 || k >= this.count) throw new RangeError(`fixed index: chunk ${k} out of range 0..${this.count}`);
    const expected = Math.min(this.chunkSize, this.size - k * this.chunkSize);
    if (size !== expected) throw new Error(`fixed index: chunk ${k} has size ${size}, expected ${expected}`);
    this.digests.set(digest, 32 * k);
    this.filled[k] = 1;
  }

  finish(): { data: Buffer; csum: Buffer; size: number; count: number } {
    const missing = this.filled.indexOf(0);
    if (missing >= 0) throw new Error(`fixed index: chunk ${missing} was never written`);
    const csum = createHash('sha256').update(this.digests).digest();
    const header = Buffer.alloc(INDEX_HEADER_SIZE);
    FIXED_INDEX_MAGIC.copy(header, 0);
    this.uuid.copy(header, 8);
    header.writeBigInt64LE(BigInt(this.ctime), 24);
    csum.copy(header, 32);
    header.writeBigUInt64LE(BigInt(this.size), 64);
    header.writeBigUInt64LE(BigInt(this.chunkSize), 72);
    return { data: Buffer.concat([header, this.digests]), csum, size: this.size, count: this.count };
  }
}
