/**
 * ChunkStream: archive bytes in, ordered chunk records `{offset, size, digest, blob}` out.
 * Spec: chunking-and-crypto.md §1.3 (stream driver), §1.4 (payload chunker with suggested
 * boundaries), §1.4.1 (input pieces and timing), §1.5 (forced boundaries / chunk injection).
 *
 * Invariants
 * - Cut positions are found by the native buzhash scanner; JS never touches payload bytes one
 *   by one. Hashing and blob encoding run on the libuv pool (`native.processChunk`), several
 *   chunks at once, and records reach the sink strictly in stream order.
 * - Buffers handed to `write()` are owned by the stream from then on (no defensive copy): the
 *   caller must not reuse them. Bytes are copied only where PBS copies them too (the 256 KiB
 *   BufWriter of the payload stream) and when a chunk spans several input buffers.
 * - Memory is bounded: at most `maxInFlight` chunks are being hashed/encoded or waiting for the
 *   sink; `write()` returns false when the caller must `await drain()` before writing more.
 * - Payload streams reproduce upstream's deterministic reference behaviour (§1.4.1): writes are
 *   grouped into pieces like Rust's `BufWriter` (capacity 262 144) and a piece is scanned only
 *   when the archiver makes its next payload write (or ends), so every suggestion and injection
 *   queued before that write is visible to the scan.
 */
import { native, type NativeChunker } from '../native/index.js';

export const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
/** Capacity of the payload writer's BufWriter upstream (pbs-client). */
export const PAYLOAD_BUFWRITER_CAPACITY = 262_144;
/** Upstream sends at most this many chunks per InjectChunks message. */
export const MAX_INJECT_CHUNKS = 128;

export interface KnownChunk {
  digest: Buffer;
  size: number;
}

/** Reused chunks of a previous payload stream, placed at stream offset `boundary`. */
export interface InjectChunks {
  boundary: number;
  chunks: KnownChunk[];
  size: number;
}

export interface ChunkRecord {
  /** Start offset in the archive stream. */
  offset: number;
  size: number;
  digest: Buffer;
  /** Encoded DataBlob; null for an injected (reused, already stored) chunk. */
  blob: Buffer | null;
}

export type ChunkSink = (rec: ChunkRecord) => void | Promise<void>;

export interface ChunkStreamOptions {
  /** Average chunk size, a power of two (PBS: 64 KiB .. 4 MiB). */
  avg?: number;
  /** zstd-1 compress blobs when smaller (default true). */
  compress?: boolean;
  /** Chunks hashed/encoded/written concurrently (default 10: keeps both cores busy). */
  maxInFlight?: number;
  /** Payload stream: BufWriter piece timing, suggested boundaries, injections. */
  payload?: boolean;
  sink: ChunkSink;
}

export interface ChunkStreamStats {
  size: number;
  chunks: number;
  injectedChunks: number;
  injectedBytes: number;
}

export class ChunkStream {
  private readonly chunker: NativeChunker;
  private readonly min: number;
  private readonly max: number;
  private readonly compress: boolean;
  private readonly maxInFlight: number;
  private readonly payload: boolean;
  private readonly sink: ChunkSink;

  // §1.3 buffer: bytes of the current (not yet emitted) chunk, as a list of pieces
  // parts[head..]. `scanPos` bytes of it are scanned; (cursorPart, cursorOff) is that position.
  private parts: Buffer[] = [];
  private head = 0;
  private bufLen = 0;
  private scanPos = 0;
  private cursorPart = 0;
  private cursorOff = 0;
  /** Bytes emitted as chunks so far, injected ones included (`base` / `consumed`). */
  private consumed = 0;

  // §1.4 / §1.5 queues.
  private suggestions: number[] = [];
  private suggestionHead = 0;
  private current: number | null = null;
  private injections: InjectChunks[] = [];
  private pendingInject: InjectChunks | null = null;

  // §1.4.1 BufWriter emulation and deferred pieces.
  private bw: Buffer | null = null;
  private bwLen = 0;
  private sent: Buffer[] = [];

  // Ordered output.
  private queue: Promise<ChunkRecord>[] = [];
  private draining: Promise<void> | null = null;
  private failure: Error | null = null;
  private waiters: Array<() => void> = [];
  private ended = false;

  private stats: ChunkStreamStats = { size: 0, chunks: 0, injectedChunks: 0, injectedBytes: 0 };

  constructor(opts: ChunkStreamOptions) {
    const avg = opts.avg ?? DEFAULT_CHUNK_SIZE;
    this.chunker = new native.Chunker(avg);
    this.min = avg >> 2;
    this.max = avg * 4;
    this.compress = opts.compress ?? true;
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 10);
    this.payload = opts.payload ?? false;
    this.sink = opts.sink;
  }

  /**
   * Append bytes. Returns false when the caller should `await drain()` before writing more.
   * Throws if an earlier chunk failed (hashing, encoding or the sink).
   */
  write(buf: Buffer): boolean {
    this.check();
    if (buf.length === 0) return this.queue.length < this.maxInFlight;
    if (!this.payload) {
      this.scanPiece(buf);
    } else {
      // The archiver reached its next payload write: everything queued so far is visible.
      this.scanSent();
      const cap = PAYLOAD_BUFWRITER_CAPACITY;
      if (this.bwLen + buf.length > cap) this.flushBufWriter();
      if (buf.length >= cap) {
        this.sent.push(buf);
      } else {
        if (!this.bw) this.bw = Buffer.allocUnsafe(cap);
        buf.copy(this.bw, this.bwLen);
        this.bwLen += buf.length;
      }
    }
    return this.queue.length < this.maxInFlight;
  }

  /** Payload chunker: queue a suggested boundary (absolute stream offset). */
  suggest(offset: number): void {
    if (!this.payload) throw new Error('suggested boundaries need a payload chunk stream');
    this.suggestions.push(offset);
  }

  /** Payload chunker: queue reused chunks to be placed at `inj.boundary`. */
  inject(inj: InjectChunks): void {
    if (!this.payload) throw new Error('chunk injection needs a payload chunk stream');
    if (inj.chunks.length > MAX_INJECT_CHUNKS) throw new Error(`at most ${MAX_INJECT_CHUNKS} chunks per injection`);
    this.injections.push(inj);
  }

  /** True when the caller should `await drain()` before writing more. */
  get full(): boolean {
    return this.queue.length >= this.maxInFlight;
  }

  /** Resolves when fewer than `maxInFlight` chunks are pending. */
  async drain(): Promise<void> {
    while (this.queue.length >= this.maxInFlight && !this.failure) {
      await new Promise<void>((r) => this.waiters.push(r));
    }
    this.check();
  }

  /** Flush everything, wait for the sink, return totals. */
  async end(): Promise<ChunkStreamStats> {
    this.check();
    if (this.ended) throw new Error('chunk stream already ended');
    this.ended = true;
    if (this.payload) {
      this.flushBufWriter();
      this.scanSent();
    }
    // Pending injections whose boundary is at the end of the data still have to be placed.
    while (this.pendingInject || this.injections.length) {
      const inj = this.pendingInject ?? this.injections.shift()!;
      this.pendingInject = null;
      if (inj.boundary > this.consumed + this.bufLen) {
        throw new Error(`injection boundary ${inj.boundary} lies beyond the end of the stream (${this.consumed + this.bufLen})`);
      }
      this.emitInjection(inj);
    }
    if (this.bufLen > 0) this.emitRaw(this.bufLen);
    while (this.draining) await this.draining;
    this.check();
    return { ...this.stats };
  }

  // --- scanning -----------------------------------------------------------------------

  private flushBufWriter(): void {
    if (this.bwLen > 0 && this.bw) {
      this.sent.push(Buffer.from(this.bw.subarray(0, this.bwLen)));
      this.bwLen = 0;
    }
  }

  private scanSent(): void {
    if (!this.sent.length) return;
    const pieces = this.sent;
    this.sent = [];
    for (const p of pieces) this.scanPiece(p);
  }

  /** §1.3/§1.5: append one input piece and cut as long as the unscanned tail allows. */
  private scanPiece(piece: Buffer): void {
    this.parts.push(piece);
    this.bufLen += piece.length;
    for (;;) {
      if (!this.pendingInject && this.injections.length) this.pendingInject = this.injections.shift()!;
      const inj = this.pendingInject;
      if (inj) {
        const pos = this.scanPos < this.bufLen ? this.scan() : 0;
        const nextCut = this.consumed + (pos ? this.scanPos + pos : this.bufLen);
        if (inj.boundary <= nextCut) {
          this.pendingInject = null;
          this.emitInjection(inj);
          continue;
        }
        if (pos !== 0) {
          this.emitRaw(this.scanPos + pos);
          continue;
        }
        this.scannedAll();
        return;
      }
      if (this.scanPos >= this.bufLen) return;
      const pos = this.scan();
      if (pos === 0) {
        this.scannedAll();
        return;
      }
      this.emitRaw(this.scanPos + pos);
    }
  }

  /**
   * Scan buffer[scanPos..]: the payload variant first consults suggested boundaries (§1.4).
   * Returns the number of bytes after scanPos up to the cut, or 0.
   */
  private scan(): number {
    if (this.payload) {
      const base = this.consumed;
      const total = this.bufLen;
      const pos = this.scanPos;
      for (;;) {
        const b = this.current;
        if (b !== null) {
          if (b < base + pos) {
            this.current = null;
            continue;
          }
          if (b > base + total) break;
          const size = b - base;
          if (size < this.min) {
            this.current = null;
            continue;
          }
          if (size <= this.max) {
            this.current = null;
            const len = size - pos;
            if (len === 0) break; // learned too late: dropped (never happens in the reference model)
            this.chunker.reset();
            return len;
          }
          break;
        }
        if (this.suggestionHead < this.suggestions.length) {
          this.current = this.suggestions[this.suggestionHead++];
          if (this.suggestionHead > 1024) {
            this.suggestions = this.suggestions.slice(this.suggestionHead);
            this.suggestionHead = 0;
          }
          continue;
        }
        break;
      }
    }
    return this.regularScan();
  }

  private scannedAll(): void {
    this.scanPos = this.bufLen;
    this.cursorPart = this.parts.length;
    this.cursorOff = 0;
  }

  /**
   * Native buzhash over the unscanned tail, which may span several parts. Returns bytes after
   * scanPos up to the cut or 0; the caller either cuts (cursor reset by take) or marks all
   * scanned, so the cursor need not be advanced here.
   */
  private regularScan(): number {
    let scanned = 0;
    let off = this.cursorOff;
    for (let i = this.cursorPart; i < this.parts.length; i++) {
      const part = this.parts[i];
      const n = this.chunker.scan(part, off);
      if (n) return scanned + n;
      scanned += part.length - off;
      off = 0;
    }
    return 0;
  }

  // --- emitting -----------------------------------------------------------------------

  /** Split off buffer[0..len) as a new chunk (len may be 0: nothing is emitted). */
  private emitRaw(len: number): void {
    const data = this.take(len);
    this.scanPos = 0;
    if (len === 0) return;
    const offset = this.consumed;
    this.consumed += len;
    this.stats.chunks++;
    this.stats.size += len;
    const promise = native.processChunk(data, this.compress).then(
      (r) => ({ offset, size: len, digest: r.digest, blob: r.blob }),
    );
    this.enqueue(promise);
  }

  private emitInjection(inj: InjectChunks): void {
    const rawLen = inj.boundary - this.consumed;
    if (rawLen < 0 || rawLen > this.bufLen) {
      throw new Error(`injection at ${inj.boundary} does not match the stream position ${this.consumed}`);
    }
    this.emitRaw(rawLen);
    this.chunker.reset();
    let offset = this.consumed;
    let sum = 0;
    for (const c of inj.chunks) {
      const rec: ChunkRecord = { offset, size: c.size, digest: c.digest, blob: null };
      this.enqueue(Promise.resolve(rec));
      offset += c.size;
      sum += c.size;
    }
    if (sum !== inj.size) throw new Error(`injection size ${inj.size} does not match its chunks (${sum})`);
    this.consumed += inj.size;
    this.stats.chunks += inj.chunks.length;
    this.stats.injectedChunks += inj.chunks.length;
    this.stats.injectedBytes += inj.size;
    this.stats.size += inj.size;
  }

  /** Remove and return buffer[0..len) as one contiguous Buffer (zero-copy when possible). */
  private take(len: number): Buffer {
    let out: Buffer;
    if (len === 0) {
      out = Buffer.alloc(0);
    } else if (this.parts[this.head].length >= len) {
      const first = this.parts[this.head];
      out = first.subarray(0, len);
      if (first.length === len) this.head++;
      else this.parts[this.head] = first.subarray(len);
    } else {
      out = Buffer.allocUnsafe(len);
      let filled = 0;
      while (filled < len) {
        const p = this.parts[this.head];
        const n = Math.min(p.length, len - filled);
        p.copy(out, filled, 0, n);
        filled += n;
        if (n === p.length) this.head++;
        else this.parts[this.head] = p.subarray(n);
      }
    }
    this.bufLen -= len;
    // Compact so the array does not grow without bound; the scan cursor restarts at the head.
    this.parts = this.parts.slice(this.head);
    this.head = 0;
    this.cursorPart = 0;
    this.cursorOff = 0;
    return out;
  }

  private enqueue(promise: Promise<ChunkRecord>): void {
    promise.catch(() => undefined); // observed by the drainer; avoid unhandled-rejection noise
    this.queue.push(promise);
    if (!this.draining) this.draining = this.drainLoop();
  }

  /** The only consumer of `queue`: hands records to the sink strictly in order. */
  private async drainLoop(): Promise<void> {
    try {
      while (this.queue.length && !this.failure) {
        const rec = await this.queue[0];
        await this.sink(rec);
        this.queue.shift();
        this.wake();
      }
    } catch (e) {
      this.fail(e);
    } finally {
      this.draining = null;
      this.wake();
    }
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private fail(e: unknown): void {
    if (!this.failure) this.failure = e instanceof Error ? e : new Error(String(e));
    this.wake();
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}
