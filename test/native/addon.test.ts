import { describe, it, expect } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import { native } from '../../ts/native/index.js';
import { BLOB_MAGIC, decodeBlob, encodeBlob, verifyBlob } from '../../ts/format/blob.js';
import { FormatError } from '../../ts/format/errors.js';
import { tempDir } from '../helpers/tmp.js';

const ref = (b: Uint8Array) => createHash('sha256').update(b).digest();

describe('native digests', () => {
  it('SHA-256 equals node:crypto for many sizes, sync and async', async () => {
    for (const n of [0, 1, 55, 56, 63, 64, 65, 1000, 1 << 20]) {
      const b = randomBytes(n);
      expect(native.sha256(b).equals(ref(b))).toBe(true);
      expect((await native.sha256Async(b)).equals(ref(b))).toBe(true);
    }
  });
  it('CRC-32 equals zlib.crc32', () => {
    for (const n of [0, 5, 4096, 100_001]) {
      const b = randomBytes(n);
      expect(native.crc32(b)).toBe(zlib.crc32(b));
    }
  });
});

describe('native memory', () => {
  it('releasePages gives back the whole pages inside a buffer: they read as zeros, the rest is kept', () => {
    const buf = Buffer.alloc(1 << 20, 7);
    const part = buf.subarray(100, 100 + 5 * 4096);
    const n = native.releasePages(part);
    expect(n).toBeGreaterThanOrEqual(4 * 4096);
    expect(n % 4096).toBe(0);
    // the released pages are whole pages inside `part`, the bytes around them unchanged
    const zero = [...part].findIndex((b) => b === 0);
    expect(zero).toBeGreaterThanOrEqual(0);
    expect(part.subarray(zero, zero + n).every((b) => b === 0)).toBe(true);
    expect(part.subarray(0, zero).every((b) => b === 7)).toBe(true);
    expect(part.subarray(zero + n).every((b) => b === 7)).toBe(true);
    expect(buf.subarray(0, 100).every((b) => b === 7) && buf.subarray(100 + 5 * 4096).every((b) => b === 7)).toBe(true);
    expect(native.releasePages(Buffer.alloc(100, 1))).toBe(0); // no whole page inside
  });
});

describe('native chunker', () => {
  it('chunkAndHash: cuts equal a streaming Chunker fed one byte at a time', () => {
    const b = randomBytes(200_000);
    const { cuts, digests } = native.chunkAndHash(b, 4096);
    expect(cuts[cuts.length - 1]).toBe(b.length);
    let start = 0;
    cuts.forEach((end, i) => {
      expect(digests.subarray(i * 32, i * 32 + 32).equals(ref(b.subarray(start, end)))).toBe(true);
      start = end;
    });
    const c = new native.Chunker(4096);
    const mine: number[] = [];
    for (let i = 0; i < b.length; i++) if (c.scan(b, i, i + 1)) mine.push(i + 1);
    mine.push(b.length);
    expect(mine).toEqual(Array.from(cuts));
  });
  it('refuses a bad chunk size and bad ranges without crashing', () => {
    expect(() => new native.Chunker(1000)).toThrow(/power of two/);
    const c = new native.Chunker(65536);
    expect(() => c.scan(Buffer.alloc(4), 3, 9)).toThrow(/outside buffer/);
    expect(() => c.scan('nope' as unknown as Buffer)).toThrow(/Buffer/);
    // @ts-expect-error: calling the class without new
    expect(() => native.Chunker(65536)).toThrow();
  });
});

describe('DataBlob', () => {
  it('matches the spec vector for an uncompressed blob', () => {
    expect(encodeBlob(Buffer.from('hello world'), false).toString('hex')).toBe('42ab3807be8370a185114a0d68656c6c6f20776f726c64');
  });
  it('round-trips uncompressed and zstd blobs; keeps zstd only when not larger', async () => {
    const text = Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(5000));
    const random = randomBytes(70_000);
    const z = encodeBlob(text, true);
    expect(z.subarray(0, 8).equals(BLOB_MAGIC.zstd)).toBe(true);
    expect(z.length).toBeLessThan(text.length / 10);
    expect(decodeBlob(z).equals(text)).toBe(true);
    expect((await native.decodeBlobAsync(z)).equals(text)).toBe(true);
    const r = encodeBlob(random, true);
    expect(r.subarray(0, 8).equals(BLOB_MAGIC.uncompressed)).toBe(true);
    expect(decodeBlob(r).equals(random)).toBe(true);
    const e = encodeBlob(Buffer.alloc(0), true);
    expect(decodeBlob(e).length).toBe(0);
    expect(verifyBlob(z)).toBe('zstd');
    const p = await native.processChunk(text, true);
    expect(p.digest.equals(ref(text))).toBe(true);
    expect(p.blob.equals(z)).toBe(true);
  });
  it('reports CRC and magic corruption and never crashes on truncation', () => {
    const z = encodeBlob(Buffer.from('abc'.repeat(10000)), true);
    const flipped = Buffer.from(z);
    flipped[flipped.length - 2] ^= 0x40;
    expect(() => decodeBlob(flipped, undefined, 'chunk x')).toThrow(/chunk x: blob CRC mismatch/);
    const magic = Buffer.from(z);
    magic[3] ^= 1;
    expect(() => decodeBlob(magic)).toThrow(/unknown magic/);
    for (let n = 0; n < z.length; n++) {
      expect(() => decodeBlob(z.subarray(0, n))).toThrow(FormatError);
    }
  });
  it('refuses decompression bombs beyond the limit', () => {
    const big = encodeBlob(Buffer.alloc(17 * 1024 * 1024), true);
    expect(big.length).toBeLessThan(10_000);
    expect(() => decodeBlob(big)).toThrow(/limit/);
    expect(decodeBlob(big, 18 * 1024 * 1024).length).toBe(17 * 1024 * 1024);
  });
  it('decodes a zstd frame without a declared content size (PBS 3.x streaming encoder)', () => {
    // Build such a frame by hand: zstd "raw block" frame without content size.
    const data = Buffer.from('streamed');
    const frame = Buffer.concat([
      Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), // magic
      Buffer.from([0x00, 0x58]), // FHD: no FCS, single segment off; window descriptor
      Buffer.from([(data.length << 3) | 0x01, 0, 0]), // last block, raw, size
      data,
    ]);
    const blob = Buffer.alloc(12 + frame.length);
    BLOB_MAGIC.zstd.copy(blob);
    frame.copy(blob, 12);
    blob.writeUInt32LE(zlib.crc32(frame), 8);
    expect(decodeBlob(blob).toString()).toBe('streamed');
  });
});

/**
 * Run `setup` (an ES module body) in a child under `nice -n 10`, then report each of its
 * threads' name and nice value (`done`, if given, runs after the report is taken).
 */
async function threadsUnderNice(setup: string, done = ''): Promise<Array<{ comm: string; nice: number }>> {
  const { execFileSync } = await import('node:child_process');
  const script = `
    ${setup}
    const fs = await import('node:fs');
    const out = fs.readdirSync('/proc/self/task').map((t) => ({
      comm: fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim(),
      nice: Number(fs.readFileSync('/proc/self/task/' + t + '/stat', 'utf8').split(') ')[1].split(' ')[16]),
    }));
    ${done}
    process.stdout.write(JSON.stringify(out));`;
  return JSON.parse(execFileSync('nice', ['-n', '10', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8' }));
}

describe('CPU workers', () => {
  it('run nicer than the process that started them, also under nice(1)', async () => {
    const { fileURLToPath } = await import('node:url');
    const loader = fileURLToPath(new URL('../../dist/native/index.js', import.meta.url));
    // Run a CPU job first: the workers start with it.
    const threads = await threadsUnderNice(`
      const { native } = await import(${JSON.stringify(loader)});
      await native.sha256Async(Buffer.alloc(1000));`);
    const workers = threads.filter((t) => t.comm.startsWith('pxb-cpu-'));
    expect(workers.length).toBeGreaterThan(0);
    expect(threads.find((t) => !t.comm.startsWith('pxb-cpu-'))!.nice).toBe(10);
    for (const w of workers) expect(w.nice).toBe(15);
  });

  it('the directory walk runs as nice as they do', async () => {
    const { fileURLToPath } = await import('node:url');
    const fsmod = fileURLToPath(new URL('../../dist/native/fs.js', import.meta.url));
    const root = tempDir();
    // Walk a directory: its threads run until the walk is closed.
    const threads = await threadsUnderNice(
      `
      const { DirWalker } = await import(${JSON.stringify(fsmod)});
      const w = new DirWalker(Buffer.from(${JSON.stringify(root)}), {}, null, 4, 1 << 20, 2, () => {});
      while (!w.poll(0)) await new Promise((r) => setTimeout(r, 5));`,
      'w.close();',
    );
    const walkers = threads.filter((t) => t.comm.startsWith('pxb-walk-'));
    expect(walkers).toHaveLength(2);
    expect(threads.find((t) => t.comm === 'node')!.nice).toBe(10);
    for (const w of walkers) expect(w.nice).toBe(15);
  });

  it('hash and encode chunks while every libuv pool thread is blocked', async () => {
    // Opening a FIFO for reading blocks until a writer opens it: these opens hold libuv's
    // threads (4 by default; more are queued). Chunk jobs run on pxb's own workers, so reads
    // of source files on the libuv pool never wait behind them, nor they behind reads.
    const { execFileSync } = await import('node:child_process');
    const { openSync, closeSync, constants } = await import('node:fs');
    const { open } = await import('node:fs/promises');
    const fifo = `${tempDir()}/f`;
    execFileSync('mkfifo', [fifo]);
    const blocked = Array.from({ length: 16 }, () => open(fifo, 'r'));
    try {
      const data = randomBytes(1 << 20);
      const within = <T>(p: Promise<T>) =>
        Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('a chunk job waited for the libuv pool')), 5000))]);
      const [digest, processed] = await within(Promise.all([native.sha256Async(data), native.processChunk(data, true)]));
      expect(digest.equals(ref(data))).toBe(true);
      expect(processed.digest.equals(ref(data))).toBe(true);
    } finally {
      const w = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
      for (const fh of await Promise.all(blocked)) await fh.close();
      closeSync(w);
    }
  });
});

describe('pxar record exports', () => {
  it('refuse wrong argument types and outputs too small instead of writing out of bounds', () => {
    const stage = Buffer.alloc(64);
    const items = [new Uint32Array(1), new Uint32Array(1), new Float64Array(1), new Float64Array(1)] as const;
    const nums = Float64Array.from([0o100644, 0, 0, 0, 0, 1, 16]);
    const names = Buffer.from('a');
    // ends as a Float64Array (a different element size): refused, not reinterpreted
    expect(() => native.pxarPlainRun(stage, 0, 0, names, new Float64Array([1]) as unknown as Uint32Array, nums, 0, 1, 0, 16, ...items, 0)).toThrow(/wrong typed array type/);
    expect(() => native.pxarPlainRun(stage, 65, 0, names, Uint32Array.of(1), nums, 0, 1, 0, 16, ...items, 0)).toThrow(/beyond the output/);
    // a record (122 bytes) that does not fit is not written: 0 files
    expect(native.pxarPlainRun(stage, 0, 0, names, Uint32Array.of(1), nums, 0, 1, 0, 16, ...items, 0)).toBe(0);
    expect(native.pxarPlainRun(Buffer.alloc(122), 0, 0, names, Uint32Array.of(1), nums, 0, 1, 0, 16, ...items, 0)).toBe(1);
    // no room for the goodbye item either: 0 files
    expect(native.pxarPlainRun(Buffer.alloc(122), 0, 0, names, Uint32Array.of(1), nums, 0, 1, 0, 16, ...items, 1)).toBe(0);
    expect(() => native.pxarGoodbye(Buffer.alloc(64), 0, ...items, 2, 100, 0)).toThrow(/arrays hold 1/);
    expect(() => native.pxarGoodbye(Buffer.alloc(63), 0, ...items, 1, 100, 0)).toThrow(/do not fit/);
    expect(native.pxarGoodbye(Buffer.alloc(64), 0, ...items, 1, 100, 0)).toBe(64);
    // SipHash: the spec's check value of "file_0" (0xa72d4eec8843fa66) as halves
    const h = new Uint32Array(2);
    native.pxarSipHash(Buffer.from('file_0'), h);
    expect([h[0], h[1]]).toEqual([0x8843fa66, 0xa72d4eec]);
    expect(() => native.pxarSipHash(Buffer.from('x'), new Uint32Array(1))).toThrow(/must hold 2/);
    expect(() => native.pxarSipHash(Buffer.from('x'), new Float64Array(2) as unknown as Uint32Array)).toThrow(/wrong typed array type/);
  });
});
