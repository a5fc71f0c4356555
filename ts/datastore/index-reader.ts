/**
 * Reading an archive stream back through its index: sequentially (restore) with read-ahead,
 * or at random offsets (pxar accessor, change detection) with a small chunk cache.
 *
 * Every chunk is verified (CRC, SHA-256 == digest, size == index entry) by its source; any
 * failure is rethrown naming the archive, the chunk and the stream offset, so a user knows
 * exactly which archive is damaged where.
 */
import type { DynamicIndex } from '../format/dynamic-index.js';
import type { FixedIndex } from '../format/fixed-index.js';

/** Where chunk data comes from: the local chunk store, or a remote reader session. */
export interface ChunkSource {
  /** Decoded, verified chunk data. */
  readChunk(digest: Uint8Array, expectedSize: number): Promise<Buffer>;
  /**
   * `readChunk` into `into` (at least `expectedSize` bytes), returning the view holding the
   * chunk; sources that have it let `indexStream` recycle chunk buffers.
   */
  readChunkInto?(digest: Uint8Array, expectedSize: number, into: Buffer): Promise<Buffer>;
}

/**
 * Chunk buffers for one sequential reader, handed back by its consumer once it is done with a
 * chunk (`release`), so reading an archive does not allocate a fresh buffer per chunk: 1.2 GB
 * of them for a linux tree, each one page faults and zeroing in the kernel, and every 64 MB of
 * them a full V8 garbage collection (external-memory pressure).
 */
export class ChunkBufferPool {
  private readonly free: Buffer[] = [];
  private readonly lent = new Set<ArrayBufferLike>();

  /** At most `keep` released buffers are kept for reuse. */
  constructor(private readonly keep = 4) {}

  /** A buffer of at least `size` bytes that nobody else uses until it is released. */
  take(size: number): Buffer {
    let best = -1;
    for (let i = 0; i < this.free.length; i++) {
      const len = this.free[i].length;
      if (len >= size && (best < 0 || len < this.free[best].length)) best = i;
    }
    // Its own ArrayBuffer (never node's shared pool), so a view identifies it.
    const b = best >= 0 ? this.free.splice(best, 1)[0] : Buffer.allocUnsafeSlow(Math.ceil(Math.max(size, 1) / POOL_GRANULE) * POOL_GRANULE);
    this.lent.add(b.buffer);
    return b;
  }

  /** The consumer is done with (any view of) a buffer from `take`; other buffers are ignored. */
  release = (view: Uint8Array): void => {
    const ab = view.buffer;
    if (!this.lent.delete(ab)) return;
    if (this.free.length < this.keep) this.free.push(Buffer.from(ab));
  };
}

const POOL_GRANULE = 256 * 1024;

export type AnyIndex = DynamicIndex | FixedIndex;

/** Error while reading an archive through its index. */
export class ArchiveReadError extends Error {
  override name = 'ArchiveReadError';
  constructor(
    readonly archive: string,
    readonly offset: number,
    message: string,
  ) {
    super(message);
  }
}

function wrap(archive: string, index: AnyIndex, k: number, e: unknown): ArchiveReadError {
  const c = index.chunk(k);
  const msg = e instanceof Error ? e.message : String(e);
  return new ArchiveReadError(archive, c.offset, `${archive}: chunk ${k} at offset ${c.offset} (${c.size} bytes): ${msg}`);
}

/**
 * The archive stream as an async iterable of chunk buffers, in order, with `readAhead` chunks
 * loaded (and decoded on the pool) in parallel. With a `pool` (and a source that can read into
 * a buffer) the chunks are decoded into the pool's buffers: the consumer must `release` each
 * chunk once no view of it is used any more, and must not keep views after that.
 */
export async function* indexStream(index: AnyIndex, source: ChunkSource, archive: string, readAhead = 4, pool?: ChunkBufferPool): AsyncGenerator<Buffer> {
  const n = index.count;
  const pending: Array<Promise<Buffer>> = [];
  let next = 0;
  const into = pool && source.readChunkInto ? source.readChunkInto.bind(source) : null;
  const start = () => {
    const k = next++;
    const c = index.chunk(k);
    const read = into ? into(c.digest, c.size, pool!.take(c.size)) : source.readChunk(c.digest, c.size);
    const p = read.catch((e: unknown) => {
      throw wrap(archive, index, k, e);
    });
    p.catch(() => undefined);
    pending.push(p);
  };
  while (next < n && pending.length < readAhead) start();
  while (pending.length) {
    const data = await pending.shift()!;
    if (next < n) start();
    yield data;
  }
}

/** Bytes of decoded chunks `IndexReadAt` keeps by default (four average 4 MiB chunks). */
export const READ_AT_CACHE_BYTES = 16 * 1024 * 1024;

/**
 * Random access over an archive stream (`readAt`), caching the most recently used chunks: at
 * most `cacheBytes` of them, but always the last two (a read may span a chunk boundary), so
 * memory is bounded by the cache, not by the size of the archive.
 */
export class IndexReadAt {
  private readonly cache = new Map<number, Promise<Buffer>>();
  private cached = 0;

  constructor(
    private readonly index: AnyIndex,
    private readonly source: ChunkSource,
    readonly archive: string,
    private readonly cacheBytes = READ_AT_CACHE_BYTES,
  ) {}

  get size(): number {
    return this.index.size;
  }

  private chunk(k: number): Promise<Buffer> {
    const hit = this.cache.get(k);
    if (hit) {
      this.cache.delete(k);
      this.cache.set(k, hit); // LRU: most recent last
      return hit;
    }
    const c = this.index.chunk(k);
    const read: Promise<Buffer> = this.source.readChunk(c.digest, c.size).catch((e: unknown) => {
      if (this.cache.get(k) === read) this.forget(k); // a failed read is not cached
      throw wrap(this.archive, this.index, k, e);
    });
    this.cache.set(k, read);
    this.cached += c.size;
    while (this.cache.size > 2 && this.cached > this.cacheBytes) this.forget(this.cache.keys().next().value!);
    return read;
  }

  private forget(k: number): void {
    if (this.cache.delete(k)) this.cached -= this.index.chunk(k).size;
  }

  async readAt(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.index.size) {
      throw new ArchiveReadError(this.archive, offset, `${this.archive}: read of ${length} bytes at ${offset} beyond the end of the archive (${this.index.size} bytes)`);
    }
    if (length === 0) return Buffer.alloc(0);
    let k = this.index.findChunk(offset);
    const parts: Buffer[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const c = this.index.chunk(k);
      const data = await this.chunk(k);
      const from = pos - c.offset;
      const to = Math.min(c.size, end - c.offset);
      parts.push(data.subarray(from, to));
      pos = c.offset + to;
      k++;
    }
    return parts.length === 1 ? parts[0] : Buffer.concat(parts);
  }
}
