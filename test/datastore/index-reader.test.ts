/**
 * IndexReadAt: random access over an archive through its index, with a chunk cache bounded
 * in bytes (the previous snapshot's metadata archive is read this way in metadata mode).
 */
import { describe, it, expect } from 'vitest';
import { createHash } from 'node:crypto';
import { DynamicIndex, DynamicIndexWriter } from '../../ts/format/dynamic-index.js';
import { ChunkBufferPool, IndexReadAt, ArchiveReadError, indexStream } from '../../ts/datastore/index-reader.js';
import { lcgBytes } from '../helpers/data.js';

/** An archive of `sizes.length` chunks, its index, and a source counting reads per chunk. */
function archive(sizes: number[]) {
  const data = lcgBytes(sizes.reduce((a, b) => a + b, 0), 31);
  const w = new DynamicIndexWriter();
  const byDigest = new Map<string, Buffer>();
  let end = 0;
  for (const s of sizes) {
    const chunk = data.subarray(end, end + s);
    const digest = createHash('sha256').update(chunk).digest();
    byDigest.set(digest.toString('hex'), chunk);
    end += s;
    w.add(end, digest);
  }
  const index = DynamicIndex.parse(w.finish().data);
  const reads: string[] = [];
  const source = {
    readChunk: async (digest: Uint8Array) => {
      const hex = Buffer.from(digest).toString('hex');
      reads.push(hex);
      const c = byDigest.get(hex);
      if (!c) throw new Error('chunk missing');
      return Buffer.from(c);
    },
  };
  return { data, index, source, reads };
}

describe('IndexReadAt', () => {
  it('reads across chunk boundaries and caches at most cacheBytes of chunks (at least two)', async () => {
    const { data, index, source, reads } = archive([1000, 3000, 500, 2000, 4000, 100]);
    const r = new IndexReadAt(index, source, 'root.mpxar', 4000);
    expect((await r.readAt(900, 3200)).equals(data.subarray(900, 4100))).toBe(true); // chunks 0..2
    expect(reads.length).toBe(3);
    // 4500 bytes were cached > 4000: the least recently used (chunk 0) went, 1 and 2 stayed
    await r.readAt(1000, 10);
    await r.readAt(4000, 10);
    expect(reads.length).toBe(3);
    await r.readAt(0, 10);
    expect(reads.length).toBe(4);
    // a chunk larger than the whole cache is still kept with the one before it
    const big = new IndexReadAt(index, source, 'root.mpxar', 1);
    reads.length = 0;
    expect((await big.readAt(6400, 200)).equals(data.subarray(6400, 6600))).toBe(true); // chunks 3, 4
    await big.readAt(6000, 1);
    await big.readAt(6500, 1);
    expect(reads.length).toBe(2);
    await big.readAt(0, 1);
    expect(reads.length).toBe(3);
  });

  it('walking a whole archive re-reads nothing while it fits and never holds more than the bound', async () => {
    const sizes = Array.from({ length: 40 }, (_, i) => 1000 + ((i * 7919) % 3000));
    const { data, index, source, reads } = archive(sizes);
    const r = new IndexReadAt(index, source, 'root.mpxar', 10_000);
    for (let off = 0; off < data.length; off += 777) {
      const n = Math.min(777, data.length - off);
      expect((await r.readAt(off, n)).equals(data.subarray(off, off + n))).toBe(true);
    }
    expect(reads.length).toBe(40);
    // back to the start: evicted long ago
    await r.readAt(0, 1);
    expect(reads.length).toBe(41);
  });

  it('does not cache a failed read, and names the archive and offset', async () => {
    const { index, source, reads } = archive([1000, 1000]);
    let fail = true;
    const flaky = { readChunk: (d: Uint8Array, s: number) => (fail ? Promise.reject(new Error('bad crc')) : source.readChunk(d)) };
    const r = new IndexReadAt(index, flaky, 'root.mpxar');
    const e = await r.readAt(1500, 10).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ArchiveReadError);
    expect((e as Error).message).toMatch(/root\.mpxar/);
    expect((e as ArchiveReadError).offset).toBe(1000);
    fail = false;
    await r.readAt(1500, 10);
    expect(reads.length).toBe(1);
  });
});

describe('indexStream with a ChunkBufferPool', () => {
  it('decodes into recycled buffers: few buffers for many chunks, the data unchanged', async () => {
    const sizes = Array.from({ length: 40 }, (_, i) => 3000 + ((i * 7919) % 5000));
    const { data, index, source } = archive(sizes);
    const into = async (digest: Uint8Array, size: number, buf: Buffer) => {
      const c = await source.readChunk(digest);
      c.copy(buf);
      return buf.subarray(0, size);
    };
    const pool = new ChunkBufferPool(2);
    const seen = new Set<ArrayBufferLike>();
    const got: Buffer[] = [];
    for await (const chunk of indexStream(index, { ...source, readChunkInto: into }, 'a.didx', 4, pool)) {
      seen.add(chunk.buffer);
      got.push(Buffer.from(chunk));
      pool.release(chunk);
    }
    expect(Buffer.concat(got).equals(data)).toBe(true);
    // 4 read ahead + the one being consumed, whatever the number of chunks
    expect(seen.size).toBeLessThanOrEqual(6);
  });

  it('lends a buffer to one reader at a time and ignores foreign or repeated releases', () => {
    const pool = new ChunkBufferPool(4);
    const a = pool.take(1000);
    const b = pool.take(1000);
    expect(a.buffer).not.toBe(b.buffer);
    expect(a.length).toBeGreaterThanOrEqual(1000);
    pool.release(a.subarray(10, 20));
    pool.release(a);
    pool.release(Buffer.alloc(10));
    const c = pool.take(500);
    expect(c.buffer).toBe(a.buffer);
    // released twice, lent once: the second release must not hand it out again
    expect(pool.take(500).buffer).not.toBe(a.buffer);
    // too small to reuse for a larger chunk
    pool.release(c);
    expect(pool.take(4 * 1024 * 1024).buffer).not.toBe(a.buffer);
  });
});
