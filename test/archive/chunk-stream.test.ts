import { describe, it, expect, vi } from 'vitest';
import { createHash } from 'node:crypto';
import { ChunkStream, type ChunkRecord, type InjectChunks } from '../../ts/archive/chunk-stream.js';
import { decodeBlob } from '../../ts/format/blob.js';
import { lcgBytes } from '../helpers/data.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A seeded pseudo-random integer below n (LCG). */
function seeded(seed: number): (n: number) => number {
  return (n) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
}

/** A `store` that finishes after a random delay (below `ms`) and hashes the chunk only then. */
function delayedStore(rnd: (n: number) => number, ms: number) {
  return async (chunk: Uint8Array) => {
    await new Promise((r) => setTimeout(r, rnd(ms)));
    return { digest: createHash('sha256').update(chunk).digest(), blob: null, stored: chunk.length };
  };
}

/** The records cover `data` in order, each with its own bytes' digest. */
function expectChunksOf(recs: ChunkRecord[], data: Buffer): void {
  let offset = 0;
  for (const r of recs) {
    expect(r.offset).toBe(offset);
    expect(r.digest.toString('hex')).toBe(sha(data.subarray(r.offset, r.offset + r.size)));
    offset += r.size;
  }
  expect(offset).toBe(data.length);
}

/** Input A of the upstream tests: u32 LE counter 0..262143 (1 MiB). */
function inputA(): Buffer {
  const b = Buffer.allocUnsafe(1 << 20);
  for (let i = 0; i < 262144; i++) b.writeUInt32LE(i, i * 4);
  return b;
}

/** Input B: SHA256(u64 LE i) for i in 0..786431 (24 MiB). */
function inputB(): Buffer {
  const out = Buffer.allocUnsafe(786432 * 32);
  const le = Buffer.alloc(8);
  for (let i = 0; i < 786432; i++) {
    le.writeBigUInt64LE(BigInt(i));
    createHash('sha256').update(le).digest().copy(out, i * 32);
  }
  return out;
}

async function run(
  data: Buffer,
  piece: number,
  opts: { avg: number; payload?: boolean; suggestions?: number[]; injections?: InjectChunks[] },
): Promise<ChunkRecord[]> {
  const recs: ChunkRecord[] = [];
  const cs = new ChunkStream({ avg: opts.avg, payload: opts.payload, sink: (r) => void recs.push(r) });
  for (const s of opts.suggestions ?? []) cs.suggest(s);
  for (const i of opts.injections ?? []) cs.inject(i);
  for (let off = 0; off < data.length; off += piece) {
    // copy: the stream owns what it is given
    if (!cs.write(Buffer.from(data.subarray(off, Math.min(off + piece, data.length))))) await cs.drain();
  }
  const stats = await cs.end();
  expect(stats.size).toBe(recs.reduce((a, r) => a + r.size, 0));
  return recs;
}

describe('ChunkStream (plain chunker)', () => {
  it('reproduces the upstream 64 KiB vector for any piece size', async () => {
    const a = inputA();
    for (const piece of [1, 10, 4096, 100_000, a.length]) {
      const recs = await run(a, piece, { avg: 64 * 1024 });
      expect(recs.map((r) => r.size)).toEqual([143377, 262144, 262144, 262144, 118767]);
    }
  }, 60_000);

  it('reproduces the 4 MiB vector (offsets, sizes, digests) and encodes valid blobs', async () => {
    const b = inputB();
    const expected: Array<[number, number, string]> = [
      [0, 1073993, '110f5e12f8ac8881309793e210395a19e45ffdada4b983066016968f2b219e57'],
      [1073993, 2680757, '48b50eec7b5150460bc725022e0cb652b5c85fc4aa7c4e994dcba9d266f88f72'],
      [3754750, 1087418, '61edc1811a3456249db5b526d1d69fc8805237a34fb048a266db645df45136df'],
      [4842168, 1184477, '8e7ea5bb9b5f3e16768900fe55a67eb3e532e88d6072bf0295249e6b21147c9c'],
      [6026645, 7129457, '38356afa2e1d814898d7f78c5fe8ff912497862f7d7e058ad444aa7b4f30051f'],
      [13156102, 2835505, '3c4aacbc1c71a3665170849673d8d36ebaf9cb139e5709b1d744fe506c425c2f'],
      [15991607, 2151313, 'a4350a2b2e6ee52482f5fd4a0d5bed505d5e32b44a381bce44a7bd2cf0e182d4'],
      [18142920, 4280454, '82f87086188a458f96169f5f9416e9da7e932275178a352a385e76458f2d7c12'],
      [22423374, 2742450, '5bbf122afbd96960956918f66bc16f01ac0db6917b49a787c6fa0fa58e174f0d'],
    ];
    for (const piece of [65536, 1_000_003]) {
      const recs = await run(b, piece, { avg: 4 * 1024 * 1024 });
      expect(recs.map((r) => [r.offset, r.size, r.digest.toString('hex')])).toEqual(expected);
      for (const r of recs) {
        const data = decodeBlob(r.blob!);
        expect(sha(data)).toBe(r.digest.toString('hex'));
        expect(data.equals(b.subarray(r.offset, r.offset + r.size))).toBe(true);
      }
    }
  }, 60_000);

  it('gives the same cuts fed one byte at a time as whole (random data, small avg)', async () => {
    const data = lcgBytes(300_000, 12345);
    const whole = (await run(data, data.length, { avg: 4096 })).map((r) => r.size);
    expect(whole.length).toBeGreaterThan(20);
    expect((await run(data, 1, { avg: 4096 })).map((r) => r.size)).toEqual(whole);
    // random splits
    for (let seed = 1; seed <= 5; seed++) {
      const recs: number[] = [];
      const cs = new ChunkStream({ avg: 4096, sink: (r) => void recs.push(r.size) });
      let off = 0;
      let s = seed;
      while (off < data.length) {
        s = (s * 48271) % 2147483647;
        const n = Math.min(1 + (s % 9000), data.length - off);
        cs.write(Buffer.from(data.subarray(off, off + n)));
        off += n;
        await cs.drain();
      }
      await cs.end();
      expect(recs).toEqual(whole);
    }
  }, 60_000);

  it('does not encode chunks that `known` accepts (dedup before compression)', async () => {
    const data = lcgBytes(1 << 20, 99);
    const all = await run(data, data.length, { avg: 65536 });
    const have = new Set(all.filter((_, k) => k % 2 === 0).map((r) => r.digest.toString('hex')));
    const asked: string[] = [];
    const recs: ChunkRecord[] = [];
    const cs = new ChunkStream({
      avg: 65536,
      known: async (d) => {
        asked.push(d.toString('hex'));
        return have.has(d.toString('hex'));
      },
      sink: (r) => void recs.push(r),
    });
    cs.write(data);
    await cs.end();
    expect(asked.sort()).toEqual(all.map((r) => r.digest.toString('hex')).sort()); // hashed on the pool: any order
    expect(recs.map((r) => [r.offset, r.size, r.digest.toString('hex')])).toEqual(all.map((r) => [r.offset, r.size, r.digest.toString('hex')]));
    recs.forEach((r, k) => {
      if (k % 2 === 0) expect(r.blob).toBeNull();
      else expect(decodeBlob(r.blob!).equals(data.subarray(r.offset, r.offset + r.size))).toBe(true);
    });
  });

  it('copies what it is given: one reused input buffer, recycled windows, correct chunks', async () => {
    // 3 MiB of pseudo-random data with avg 64 KiB: windows of 320 KiB are retired and reused
    // many times while chunks cut from them are still being hashed.
    const data = lcgBytes(3 << 20, 777);
    const expected = await run(data, data.length, { avg: 65536 });
    expect(expected.length).toBeGreaterThan(20);
    for (const payload of [false, true]) {
      const recs: ChunkRecord[] = [];
      const cs = new ChunkStream({ avg: 65536, payload, maxInFlight: 4, sink: (r) => void recs.push(r) });
      const scratch = Buffer.allocUnsafe(70_001);
      for (let off = 0; off < data.length; ) {
        const n = Math.min(off % 3 === 0 ? 70_001 : 1234, data.length - off);
        data.copy(scratch, 0, off, off + n);
        const more = cs.write(scratch.subarray(0, n));
        scratch.fill(0xee); // the stream must not see this
        off += n;
        if (!more) await cs.drain();
      }
      await cs.end();
      if (!payload) expect(recs.map((r) => r.size)).toEqual(expected.map((r) => r.size));
      expect(Buffer.concat(recs.map((r) => decodeBlob(r.blob!))).equals(data)).toBe(true);
      for (const r of recs) expect(r.digest.toString('hex')).toBe(sha(data.subarray(r.offset, r.offset + r.size)));
    }
  }, 60_000);
});

describe('ChunkStream windows (ring)', () => {
  it('never overwrites chunks in flight: slow, out-of-order stores see their own bytes', async () => {
    // avg 64 KiB: windows of 384 KiB; stores finish in random order after random delays and
    // hash the data only then, so bytes written over an in-flight chunk would show up.
    const data = lcgBytes(6 << 20, 4242);
    const rnd = seeded(99);
    for (const payload of [false, true]) {
      const recs: ChunkRecord[] = [];
      const sizes: number[] = [];
      const alloc = vi.spyOn(Buffer, 'allocUnsafe');
      const cs = new ChunkStream({
        avg: 65536,
        payload,
        maxInFlight: 8,
        store: delayedStore(rnd, 4),
        sink: (r) => void recs.push(r),
      });
      const scratch = Buffer.allocUnsafe(200_000);
      for (let off = 0; off < data.length; ) {
        // mostly small writes, some larger than the room the stream keeps free (fallback windows)
        const n = Math.min(rnd(10) === 0 ? 200_000 : 1 + rnd(40_000), data.length - off);
        data.copy(scratch, 0, off, off + n);
        const more = cs.write(scratch.subarray(0, n));
        off += n;
        if (!more || rnd(3) === 0) await cs.drain();
      }
      await cs.end();
      for (const c of alloc.mock.calls) if (c[0] >= 256 * 1024) sizes.push(c[0]);
      alloc.mockRestore();
      expect(recs.length, `payload ${payload}`).toBeGreaterThan(20);
      expectChunksOf(recs, data);
      // The window is reused as a ring: a few windows for 6 MiB, not one per 384 KiB.
      expect(sizes.length).toBeGreaterThan(0);
      expect(sizes.reduce((a, b) => a + b, 0)).toBeLessThan(data.length / 3);
    }
  }, 60_000);

  it('keeps a payload ring of small chunks small and gives back the pages a run of large chunks used', async () => {
    // avg 64 KiB: a payload window of 640 KiB (a maximal 256 KiB chunk, a write, BufWriter
    // bytes). Chunks cut at suggested file starts (just over the 16 KiB minimum) keep the ring
    // near 300 KiB; chunks of ~80 KiB (no suggestions) use the whole window. Stores finish out
    // of order after delays and hash only then: a page given back too early would show.
    const rnd = seeded(7);
    const data = lcgBytes(5 << 20, 31337);
    const recs: ChunkRecord[] = [];
    const alloc = vi.spyOn(Buffer, 'allocUnsafe');
    const cs = new ChunkStream({
      avg: 65536,
      payload: true,
      maxInFlight: 8,
      store: delayedStore(rnd, 3),
      sink: (r) => void recs.push(r),
    });
    let off = 0;
    const write = async (upto: number, files: boolean) => {
      while (off < upto) {
        const n = Math.min(files ? 6000 : 40_000, upto - off);
        if (files) cs.suggest(off);
        const more = cs.write(data.subarray(off, off + n));
        off += n;
        if (!more) await cs.drain();
      }
    };
    const window = () => alloc.mock.results.map((r) => r.value as Buffer).find((b) => b.length === 655_360);
    try {
      await write(1 << 20, true);
      await write(3 << 20, false);
      const w = window()!;
      expect(w).toBeDefined();
      const upper = () => w.subarray(340 * 1024, 620 * 1024);
      expect(upper().some((b) => b !== 0)).toBe(true); // the large chunks' ring reached there
      await write(5 << 20, true);
      expect(upper().every((b) => b === 0)).toBe(true); // given back once the ring was small again
      await cs.end();
    } finally {
      alloc.mockRestore();
    }
    expectChunksOf(recs, data);
  });

  it('moves a metadata stream from its first small window to one full-size window (no doubling copies)', async () => {
    // avg 1 MiB: a window of 5.06 MiB (a maximal 4 MiB chunk and a write). Stores finish out of
    // order after delays; small writes as the encoder makes them. Windows of 256 KiB doubling
    // up to the full size (copying the unfinished chunk each time) were six allocations here.
    const rnd = seeded(3);
    const data = lcgBytes(12 << 20, 777);
    const recs: ChunkRecord[] = [];
    const alloc = vi.spyOn(Buffer, 'allocUnsafe');
    try {
      const cs = new ChunkStream({
        avg: 1 << 20,
        maxInFlight: 4,
        store: delayedStore(rnd, 3),
        sink: (r) => void recs.push(r),
      });
      for (let off = 0; off < data.length; ) {
        const n = Math.min(1 + rnd(3000), data.length - off);
        const more = cs.write(data.subarray(off, off + n));
        off += n;
        if (!more) await cs.drain();
      }
      await cs.end();
      const windows = alloc.mock.calls.map((c) => c[0] as number).filter((n) => n >= 256 * 1024);
      expect(windows).toEqual([256 * 1024, (4 << 20) + (1 << 20) + 64 * 1024]);
    } finally {
      alloc.mockRestore();
    }
    expectChunksOf(recs, data);
  });

  it('holds writes back while the window has no room for chunks still in flight', async () => {
    // Stores wait until released: once the window is full of in-flight chunks, write() asks
    // the caller to drain, and drain() resolves only after chunks are done.
    const gates: Array<() => void> = [];
    const cs = new ChunkStream({
      avg: 65536,
      maxInFlight: 100,
      store: async (chunk) => {
        await new Promise<void>((r) => gates.push(r));
        return { digest: createHash('sha256').update(chunk).digest(), blob: null, stored: chunk.length };
      },
      sink: () => undefined,
    });
    const data = lcgBytes(4 << 20, 5);
    let off = 0;
    while (off < data.length && cs.write(data.subarray(off, off + 16384))) off += 16384;
    off += 16384;
    expect(off).toBeLessThan(data.length); // stopped by the window, not by maxInFlight
    expect(gates.length).toBeGreaterThan(0);
    let drained = false;
    const d = cs.drain().then(() => (drained = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(drained).toBe(false);
    while (!drained) {
      gates.splice(0).forEach((g) => g());
      await new Promise((r) => setTimeout(r, 1));
    }
    await d;
    for (; off < data.length; off += 16384) {
      if (!cs.write(data.subarray(off, off + 16384))) {
        const p = cs.drain();
        while (gates.length) gates.splice(0).forEach((g) => g());
        await p;
      }
    }
    const end = cs.end();
    const release = setInterval(() => gates.splice(0).forEach((g) => g()), 1);
    const stats = await end.finally(() => clearInterval(release));
    expect(stats.size).toBe(data.length);
  });
});

describe('ChunkStream (payload chunker)', () => {
  it('cuts at suggested boundaries (spec §1.6 vector, ChunkStream semantics)', async () => {
    const a = inputA();
    for (const piece of [10, 4096, a.length]) {
      const recs = await run(a, piece, { avg: 64 * 1024, payload: true, suggestions: [32768, 32768, 0, 405521] });
      expect(recs.map((r) => r.size)).toEqual([32768, 110609, 262144, 262144, 262144, 118767]);
    }
  });

  it('forces boundaries and injects known chunks (upstream test_chunk_stream_forced_boundaries)', async () => {
    const a = inputA();
    const known = (n: number, size: number) =>
      Array.from({ length: n }, (_, i) => ({ size, digest: createHash('sha256').update(`k${size}-${i}`).digest() }));
    const injections: InjectChunks[] = [
      { boundary: 32768, chunks: known(1, 1024), size: 1024 },
      { boundary: 131072, chunks: known(1, 2048), size: 2048 },
      { boundary: 657408, chunks: known(1, 512), size: 512 },
      { boundary: 658432, chunks: [], size: 0 },
    ];
    for (const piece of [10, a.length]) {
      const recs = await run(a, piece, { avg: 64 * 1024, payload: true, suggestions: [32768, 65536], injections });
      expect(recs.filter((r) => r.blob).map((r) => r.size)).toEqual([32768, 31744, 65536, 262144, 262144, 512, 262144, 131584]);
      expect(recs.reduce((s, r) => s + r.size, 0)).toBe(1_052_160);
      // offsets are contiguous, injected chunks sit exactly at their boundaries
      let off = 0;
      for (const r of recs) {
        expect(r.offset).toBe(off);
        off += r.size;
      }
      expect(recs.filter((r) => !r.blob).map((r) => r.offset)).toEqual([32768, 131072, 657408]);
    }
  });

  it('reports a sink failure to the writer', async () => {
    const cs = new ChunkStream({ avg: 64 * 1024, sink: () => { throw new Error('disk full'); } });
    cs.write(inputA());
    await expect(cs.end()).rejects.toThrow(/disk full/);
  });
});
