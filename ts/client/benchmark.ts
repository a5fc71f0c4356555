/**
 * Throughput of the hot-path primitives on this machine (like `proxmox-backup-client
 * benchmark`): SHA-256, chunking, chunk+hash on one core, the chunk pipeline on all cores
 * with and without zstd, zstd alone. Pure measurement; the CLI and bench/ render the result.
 */
import { createHash } from 'node:crypto';
import os from 'node:os';
import { native } from '../native/index.js';
import { ChunkStream, DEFAULT_CHUNK_SIZE } from '../archive/chunk-stream.js';

export interface BenchmarkResult {
  name: string;
  /** Bytes per second. */
  speed: number;
  bytes: number;
  seconds: number;
}

export interface BenchmarkOptions {
  /** The data, as one or more segments (e.g. 64 MiB each). */
  data: Buffer[];
  avg?: number;
  /** Repeat each step until this many seconds passed (at least one full pass). */
  minSeconds?: number;
  /** Called after each step. */
  onResult?: (r: BenchmarkResult) => void;
  signal?: AbortSignal;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

/** Generate `size` bytes of text-like, moderately compressible data (deterministic). */
export function syntheticData(size: number, seed = 1): Buffer {
  const words = 'const let function return if else for while struct impl pub fn match self into from data buffer chunk index archive backup restore the of and to in is'.split(' ');
  const out = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  let p = 0;
  while (p < size) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const w = words[x % words.length];
    const sep = x & 0x100 ? '\n' : (x & 0x200 ? ' ' : `_${(x >>> 10) & 0xfff} `);
    p += out.write(w + sep, p, 'latin1');
  }
  return out;
}

export async function runBenchmark(opts: BenchmarkOptions): Promise<BenchmarkResult[]> {
  const avg = opts.avg ?? DEFAULT_CHUNK_SIZE;
  const minSeconds = opts.minSeconds ?? 1;
  const total = opts.data.reduce((a, b) => a + b.length, 0);
  const results: BenchmarkResult[] = [];

  const measure = async (name: string, pass: () => void | Promise<void>) => {
    opts.signal?.throwIfAborted();
    let bytes = 0;
    const t0 = now();
    let t = t0;
    do {
      await pass();
      bytes += total;
      t = now();
    } while (t - t0 < minSeconds);
    const r = { name, bytes, seconds: t - t0, speed: bytes / (t - t0) };
    results.push(r);
    opts.onResult?.(r);
  };

  // Pieces of 4 MiB for per-call primitives (hashing a 1 GiB buffer in one call is unrealistic).
  const pieces: Buffer[] = [];
  for (const seg of opts.data) for (let o = 0; o < seg.length; o += 4 << 20) pieces.push(seg.subarray(o, Math.min(o + (4 << 20), seg.length)));

  await measure('sha256 (native EVP, 1 core)', () => {
    for (const p of pieces) native.sha256(p);
  });
  await measure('sha256 (node:crypto, 1 core)', () => {
    for (const p of pieces) createHash('sha256').update(p).digest();
  });
  await measure('chunking (buzhash, 1 core)', () => {
    const c = new native.Chunker(avg);
    for (const seg of opts.data) {
      let off = 0;
      while (off < seg.length) {
        const n = c.scan(seg, off);
        if (!n) break;
        off += n;
      }
    }
  });
  await measure('chunk + sha256 (1 core)', () => {
    for (const seg of opts.data) native.chunkAndHash(seg, avg);
  });
  const pipeline = (compress: boolean) => async () => {
    const cs = new ChunkStream({ avg, compress, sink: () => undefined });
    for (const seg of opts.data) {
      for (let o = 0; o < seg.length; o += 4 << 20) {
        if (!cs.write(seg.subarray(o, Math.min(o + (4 << 20), seg.length)))) await cs.drain();
      }
    }
    await cs.end();
  };
  await measure(`chunk + sha256 pipeline (${os.availableParallelism()} cores)`, pipeline(false));
  await measure(`chunk + sha256 + zstd-1 blobs pipeline (${os.availableParallelism()} cores)`, pipeline(true));
  const blobs: Buffer[] = [];
  await measure('zstd-1 compress (1 core)', () => {
    blobs.length = 0;
    for (const p of pieces) blobs.push(native.encodeBlob(p, true));
  });
  await measure('zstd decompress (1 core)', () => {
    for (const b of blobs) native.decodeBlob(b);
  });
  return results;
}
