/**
 * The only module that loads the native addon. Looks in
 *   1. $PXB_NATIVE_PATH (explicit override),
 *   2. prebuilds/<platform>-<arch>/pxb_native.node,
 *   3. native/build/pxb_native.node (the local cargo build),
 * and otherwise throws one error saying what is missing and how to build it.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/** Stateful PBS buzhash chunker (push scanner). */
export interface NativeChunker {
  /** Bytes of buf[start..end] up to and including a boundary, or 0 when none was found. */
  scan(buf: Uint8Array, start?: number, end?: number): number;
  /** Forget the current chunk (after a forced/suggested cut). */
  reset(): void;
  /** Bytes of the current chunk scanned so far. */
  chunkSize(): number;
}

export interface ProcessedChunk {
  digest: Buffer;
  blob: Buffer;
}

export type BlobKind = 'uncompressed' | 'zstd' | 'encrypted' | 'encrypted+zstd';

export interface NativeAddon {
  versions(): { zstd: string; native: string };
  /**
   * Process-wide: the C allocator serves blocks of at least `bytes` with their own mapping,
   * returned to the system when freed (glibc's M_MMAP_THRESHOLD; stops its dynamic raising).
   * False when the allocator refused.
   */
  mallocMmapThreshold(bytes: number): boolean;
  /**
   * Give the whole memory pages inside `buf` back to the system now (madvise MADV_DONTNEED),
   * instead of when the garbage collector frees it: for buffers whose bytes nobody reads again.
   * The buffer stays valid; those bytes read as zeros afterwards. Returns the bytes released.
   */
  releasePages(buf: Uint8Array): number;
  sha256(data: Uint8Array): Buffer;
  /**
   * Hash on a CPU worker (the `*Async` calls and processChunk run on native worker threads, one
   * per core, not on libuv's pool); `data` must not be mutated until the promise settles.
   */
  sha256Async(data: Uint8Array): Promise<Buffer>;
  crc32(data: Uint8Array): number;
  Chunker: new (avg: number) => NativeChunker;
  /** Cut with a fresh plain chunker and hash every chunk; `cuts` are end offsets. */
  chunkAndHash(data: Uint8Array, avg: number): { cuts: Float64Array; digests: Buffer };
  chunkAndHashAsync(data: Uint8Array, avg: number): Promise<{ cuts: Float64Array; digests: Buffer }>;
  encodeBlob(data: Uint8Array, compress: boolean): Buffer;
  encodeBlobAsync(data: Uint8Array, compress: boolean): Promise<Buffer>;
  decodeBlob(blob: Uint8Array, limit?: number): Buffer;
  decodeBlobAsync(blob: Uint8Array, limit?: number): Promise<Buffer>;
  verifyBlob(blob: Uint8Array): BlobKind;
  /** SHA-256 + blob encoding of one chunk on a CPU worker. */
  processChunk(chunk: Uint8Array, compress: boolean): Promise<ProcessedChunk>;
  /**
   * pxar records (FILENAME, ENTRY, PAYLOAD_REF) of plain files `from..to` of a run (names
   * concatenated, `ends` their ends; 7 numbers per file in `nums`: mode, uid, gid, mtime s, ns,
   * size, payload offset + `delta`) into `out[at..]` while they fit (`pos`: the stream position
   * of `out[at]`), and their goodbye items (hash halves, FILENAME position, size) from index
   * `itemAt` while the item arrays have room. Every file is checked first (names, stat fields,
   * offsets not below `payloadPos`): a refused one throws and nothing is written. Returns the
   * number of files written; each took 121 + its name's length bytes.
   */
  pxarPlainRun(
    out: Uint8Array,
    at: number,
    pos: number,
    names: Uint8Array,
    ends: Uint32Array,
    nums: Float64Array,
    from: number,
    to: number,
    delta: number,
    payloadPos: number,
    hashLo: Uint32Array,
    hashHi: Uint32Array,
    itemOffset: Float64Array,
    itemSize: Float64Array,
    itemAt: number,
  ): number;
  /**
   * The GOODBYE item of a directory from its first `n` goodbye items (hash halves, absolute
   * FILENAME positions, sizes): sorted by hash (ties keep their order), in binary tree array
   * order, offsets relative to `goodbyePos`, tail item pointing at `entryPos`. Writes
   * 16 + 24 (n + 1) bytes at `out[at]` (they must fit) and returns that count.
   */
  /** SipHash-2-4 of `data` with the pxar keys into `out[0]` (low half) and `out[1]` (high half). */
  pxarSipHash(data: Uint8Array, out: Uint32Array): void;
  pxarGoodbye(out: Uint8Array, at: number, hashLo: Uint32Array, hashHi: Uint32Array, itemOffset: Float64Array, itemSize: Float64Array, n: number, goodbyePos: number, entryPos: number): number;
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** Package root: ts/native and dist/native are both two levels below it. */
export const packageRoot = path.resolve(here, '..', '..');

function load(): NativeAddon {
  const require = createRequire(import.meta.url);
  const candidates = [
    process.env.PXB_NATIVE_PATH,
    path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, 'pxb_native.node'),
    path.join(packageRoot, 'native', 'build', 'pxb_native.node'),
  ].filter((p): p is string => !!p);
  for (const file of candidates) {
    if (!existsSync(file)) continue;
    // A present but broken binary (bad ELF, missing symbol) must surface, not be skipped.
    return require(file) as NativeAddon;
  }
  throw new Error(
    `pxb: native addon not found (looked in ${candidates.join(', ')}). ` +
      `Build it with "npm run build:native" (needs Rust's cargo, e.g. from rustup).`,
  );
}

export const native: NativeAddon = load();
