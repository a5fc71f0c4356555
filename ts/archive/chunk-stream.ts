/**
 * ChunkStream: archive bytes in, ordered chunk records `{offset, size, digest, blob}` out.
 * Spec: chunking-and-crypto.md §1.3 (stream driver), §1.4 (payload chunker with suggested
 * boundaries), §1.4.1 (input pieces and timing), §1.5 (forced boundaries / chunk injection).
 *
 * Invariants
 * - Cut positions are found by the native buzhash scanner; JS never touches payload bytes one
 *   by one. Hashing and blob encoding run on the native CPU workers (`native.processChunk`, or the
 *   target's `store` step, e.g. a local chunk store's one-job insert), several chunks at once,
 *   and records reach the sink strictly in stream order.
 * - `write()` copies its bytes once, into a window used as a ring: the current chunk and what
 *   follows it are contiguous, so every chunk is a zero-copy view of the window. The caller may
 *   reuse its buffer as soon as `write()` returns. Chunks still being hashed/encoded keep their
 *   bytes (the window's in-flight spans); when the end of the ring is reached, the current
 *   chunk's bytes move to its start if the spans there are done. A stream's first window is
 *   small; its second has room for a maximal chunk, but its ring keeps to a soft size set by
 *   the recent chunks (`softSize`), so untouched pages stay free. Only when there is no room
 *   is another window allocated, so a backup allocates two or three windows, not a buffer per
 *   chunk (external-memory garbage drives V8 into full GCs and, waiting for them, the
 *   resident set up), and a retired window's pages are given back at once.
 * - Memory is bounded: at most `maxInFlight` chunks are being hashed/encoded or waiting for the
 *   sink, and `write()` returns false (the caller must `await drain()`) also when the window has
 *   no room left for another large write until in-flight chunks are done.
 * - Payload streams reproduce upstream's deterministic reference behaviour (§1.4.1): writes are
 *   grouped into pieces like Rust's `BufWriter` (capacity 262 144) and a piece is scanned only
 *   when the archiver makes its next payload write (or ends), so every suggestion and injection
 *   queued before that write is visible to the scan.
 */
import { native, type NativeChunker } from '../native/index.js';
import { DOUBLE_FIELD } from '../format/double.js';

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
  /**
   * Encoded DataBlob; null for a chunk already stored: injected (reused), found by `known`,
   * or stored by `store` (then `stored` is set).
   */
  blob: Buffer | null;
  /** Set when `store` wrote this chunk itself: the bytes it stored. */
  stored?: number;
}

/** What a `store` callback did with a chunk (see ChunkStreamOptions.store). */
export interface StoreResult {
  digest: Buffer;
  /** Null when the target has the chunk now (already had it, or wrote it: `stored`). */
  blob: Buffer | null;
  /** Bytes written by the target for a new chunk. */
  stored?: number;
}

export type ChunkSink = (rec: ChunkRecord) => void | Promise<void>;

/** Bytes of a window cut as one chunk, in flight until the chunk is hashed/encoded. */
interface Span {
  from: number;
  size: number;
  done: boolean;
}

/**
 * A stream buffer used as a ring; `spans[head..]` are its chunks in flight, oldest first. The
 * ring wraps at `end`: a full-size window's buffer is sized for a maximal chunk, but the ring
 * stays within its soft size (see `softSize`) and goes past it only when it needs more room,
 * so the pages beyond are touched (resident) only then, and are given back afterwards.
 */
interface Window {
  buf: Buffer;
  spans: Span[];
  head: number;
  end: number;
  /** Bytes of `buf` below this offset may be resident (written since they were last released). */
  high: number;
}

/** First window of a stream (small archives stay small); later ones grow to `windowSize`. */
const FIRST_WINDOW = 256 * 1024;
/** `current` when no suggested boundary is being considered (offsets are never negative). */
const NO_SUGGESTION = -1;
/** Retired full-size windows kept for reuse. */
const SPARE_WINDOWS = 1;
/** A payload window's smallest ring size, in average chunks (see `softSize`). */
const SOFT_AVG_CHUNKS = 2.5;
/**
 * Chunks of the recent average size that a payload window's ring holds in flight (see
 * `softSize`); also the span of that average (the last ~8 chunks). Linux tree, full backup,
 * alternating: with 8, ~12 MiB rings at the speed of the whole 17.3 MiB window; with 4 or 6
 * (10 MiB rings) 2-4 % slower, writes waiting for chunks in flight.
 */
const SOFT_RECENT_CHUNKS = 8;

export interface ChunkStreamOptions {
  /** Average chunk size, a power of two (PBS: 64 KiB .. 4 MiB). */
  avg?: number;
  /** zstd-1 compress blobs when smaller (default true). */
  compress?: boolean;
  /** Chunks hashed/encoded/written concurrently (default 6: keeps both cores busy). */
  maxInFlight?: number;
  /** Payload stream: BufWriter piece timing, suggested boundaries, injections. */
  payload?: boolean;
  /**
   * The largest single `write()` the caller makes between drains (default `avg`): the window
   * keeps room for one behind a maximal chunk, so such writes never need a window of their own.
   */
  maxWrite?: number;
  /**
   * Dedup before encoding: asked once a chunk is hashed; a chunk it accepts (the store already
   * has it) is emitted with `blob: null` and never compressed. Default: every chunk is encoded.
   */
  known?: (digest: Buffer) => boolean | Promise<boolean>;
  /**
   * Hash, dedup and store a chunk in one step (a local chunk store does it in one native job),
   * instead of hashing here, asking `known` and encoding; the record carries what it returns.
   */
  store?: (data: Uint8Array, compress: boolean) => Promise<StoreResult>;
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
  private readonly known: ChunkStreamOptions['known'];
  private readonly store: ChunkStreamOptions['store'];
  private readonly windowSize: number;
  private readonly reserve: number;
  /** A payload window's smallest ring size (see `softSize`). */
  private readonly softFloor: number;
  /** Moving average of the sizes of the chunks cut (a double field, see DOUBLE_FIELD). */
  private recentChunk = DOUBLE_FIELD;
  /** Bytes of chunks being hashed/encoded (their windows' spans). */
  private inFlightBytes = 0;

  // §1.3 buffer: the current (not yet emitted) chunk is win.buf[start, start + bufLen), of which
  // `scanPos` bytes are scanned. Written bytes not yet appended to it (deferred pieces, then the
  // BufWriter's bytes) follow it up to `wEnd`.
  private win: Window | null = null;
  private spare: Window[] = [];
  private start = 0;
  private bufLen = 0;
  private scanPos = 0;
  private wEnd = 0;
  /** Bytes emitted as chunks so far, injected ones included (`base` / `consumed`). */
  private consumed = DOUBLE_FIELD; // 0 (set in the constructor), see DOUBLE_FIELD

  // §1.4 / §1.5 queues.
  private suggestions: number[] = [];
  private suggestionHead = 0;
  /** The last offset `suggest` queued (-1: none). */
  private lastSuggested = -1;
  /** Suggestion being considered (§1.4), NO_SUGGESTION when none; a double field (DOUBLE_FIELD). */
  private current = DOUBLE_FIELD;
  private injections: InjectChunks[] = [];
  private pendingInject: InjectChunks | null = null;

  // §1.4.1 BufWriter emulation: lengths of the deferred pieces (flushed BufWriter contents and
  // large writes), and the BufWriter's fill; all of them are bytes of the window after bufLen.
  private bwLen = 0;
  private sent: number[] = [];

  // Ordered output.
  private queue: Promise<ChunkRecord>[] = [];
  private draining: Promise<void> | null = null;
  private failure: Error | null = null;
  private waiters: Array<() => void> = [];
  private ended = false;

  private stats: ChunkStreamStats = { size: DOUBLE_FIELD, chunks: 0, injectedChunks: 0, injectedBytes: DOUBLE_FIELD };

  constructor(opts: ChunkStreamOptions) {
    this.consumed = 0;
    this.current = NO_SUGGESTION;
    this.stats.size = 0;
    this.stats.injectedBytes = 0;
    const avg = opts.avg ?? DEFAULT_CHUNK_SIZE;
    this.chunker = new native.Chunker(avg);
    this.min = avg >> 2;
    this.max = avg * 4;
    this.compress = opts.compress ?? true;
    this.maxInFlight = Math.max(1, opts.maxInFlight ?? 6);
    this.payload = opts.payload ?? false;
    this.sink = opts.sink;
    this.known = opts.known;
    this.store = opts.store;
    // Room the window keeps for the next write (with headers around it).
    this.reserve = (opts.maxWrite ?? avg) + 64 * 1024;
    // A maximal chunk plus that write (and a payload stream's not yet scanned BufWriter bytes):
    // pending pieces are scanned before each write, so the current chunk never exceeds the
    // maximum there. Chunks in flight share the rest (`cramped` waits for them when it runs
    // out); room of their own (another average chunk) only raised the resident set, by 4-9 MiB
    // at the peak of a full backup, without making it faster.
    this.windowSize = this.max + this.reserve + (this.payload ? PAYLOAD_BUFWRITER_CAPACITY : 0);
    this.softFloor = Math.min(this.windowSize, SOFT_AVG_CHUNKS * avg);
    this.recentChunk = avg; // until chunks are cut
  }

  /**
   * Append bytes. Returns false when the caller should `await drain()` before writing more.
   * Throws if an earlier chunk failed (hashing, encoding or the sink).
   */
  write(buf: Uint8Array): boolean {
    this.check();
    const n = buf.length;
    if (n === 0) return !this.full;
    if (!this.payload) {
      this.append(buf);
      this.scanPiece(n);
    } else {
      // The archiver reached its next payload write: everything queued so far is visible.
      this.scanSent();
      const cap = PAYLOAD_BUFWRITER_CAPACITY;
      if (this.bwLen + n > cap) this.flushBufWriter();
      this.append(buf);
      if (n >= cap) this.sent.push(n);
      else this.bwLen += n;
    }
    return !this.full;
  }

  /**
   * Payload chunker: queue a suggested boundary (absolute stream offset). The same offset again
   * (files referenced in reused chunks do not move the payload position) is not queued twice:
   * `scan` would drop the repeat anyway (a cut there leaves it below the minimum chunk size;
   * a boundary it passed is behind it).
   */
  suggest(offset: number): void {
    if (!this.payload) throw new Error('suggested boundaries need a payload chunk stream');
    if (offset === this.lastSuggested) return;
    this.lastSuggested = offset;
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
    return this.queue.length >= this.maxInFlight || this.cramped();
  }

  /** Resolves when fewer than `maxInFlight` chunks are pending and the window has room. */
  async drain(): Promise<void> {
    while (this.full && !this.failure) {
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
    // Every chunk is processed: no window is read again.
    for (const w of this.spare) native.releasePages(w.buf);
    if (this.win) native.releasePages(this.win.buf);
    this.spare = [];
    this.win = null;
    return { ...this.stats };
  }

  // --- scanning -----------------------------------------------------------------------

  // --- windows ------------------------------------------------------------------------

  /** Copy `buf` behind the written bytes (see `place`), moving to another window when it does not fit. */
  private append(buf: Uint8Array): void {
    const n = buf.length;
    let w = this.win;
    if (!w || !this.place(n, true)) w = this.nextWindow(n);
    w.buf.set(buf, this.wEnd);
    this.wEnd += n;
    if (this.wEnd > w.high) w.high = this.wEnd;
  }

  /**
   * Whether `n` more bytes fit behind the written ones in the current window without touching
   * in-flight chunks: at the end, or (`move`: moving the current chunk and the deferred bytes
   * there) at the start of the window. In-flight spans lie, oldest first, from `tail` up to
   * `start`, wrapping around the end of the window once the live bytes have moved to its start.
   */
  private place(n: number, move: boolean): boolean {
    const w = this.win!;
    const len = w.end;
    const live = this.wEnd - this.start;
    const tail = w.head < w.spans.length ? w.spans[w.head].from : -1;
    if (tail > this.start) return this.wEnd + n <= tail; // wrapped: free between wEnd and tail
    if (this.wEnd + n <= len) return true;
    const limit = tail < 0 ? len : tail;
    if (live + n > limit) {
      // Past the ring's end, into the rest of the buffer (`append` only: `cramped` asks
      // whether the ring has room, and makes the writer wait for chunks in flight instead).
      if (!move || this.wEnd + n > w.buf.length) return false;
      w.end = this.wEnd + n;
      return true;
    }
    if (move) {
      const from = this.start;
      w.buf.copyWithin(0, from, this.wEnd);
      this.start = 0;
      this.wEnd = live;
      // Every chunk in flight lies before `from` (those of earlier laps are done): the bytes
      // from there, or from the new end, on are free; give back what lies beyond the end.
      w.end = Math.min(w.buf.length, Math.max(this.softSize(w), live + n));
      const keep = Math.max(w.end, from);
      if (w.high - keep >= this.min) {
        // Worth a system call (a minimal chunk's bytes). Up to the buffer's end: nothing lies
        // beyond `keep`, and a page that an earlier release left partly in use goes too.
        native.releasePages(w.buf.subarray(keep));
        w.high = keep;
      }
    }
    return true;
  }

  /**
   * The size a window's ring keeps to: the whole buffer, except for a full-size window. A
   * metadata stream's ring holds a chunk of the recent average size and a write; a payload
   * stream's holds SOFT_RECENT_CHUNKS chunks of the recent average size,
   * the current one and a write (at least SOFT_AVG_CHUNKS average chunks). In a tree of small
   * files (chunks cut at file starts just over the minimum) that is ~12 MiB of the 17.3 a
   * maximal chunk needs: the linux tree's full backup peaks ~6 MiB lower at the same speed. In
   * large files, with chunks of 4 MiB on average, it is the whole buffer.
   */
  private softSize(w: Window): number {
    if (w.buf.length !== this.windowSize) return w.buf.length;
    if (!this.payload) {
      // A metadata stream's chunks are cut by content alone (~avg each): room for the current
      // one; the ring grows past that while chunks in flight hold its start.
      return Math.min(w.buf.length, Math.ceil(this.recentChunk + this.reserve));
    }
    const want = (SOFT_RECENT_CHUNKS + 1) * this.recentChunk + this.reserve;
    return Math.min(w.buf.length, Math.max(this.softFloor, Math.ceil(want)));
  }

  /**
   * No room for another large write until chunks in flight are done: the window has none, or
   * in-flight chunks (in any window), the live bytes and the write would exceed one window.
   */
  private cramped(): boolean {
    if (this.inFlightBytes === 0) return false;
    const live = this.wEnd - this.start;
    // A payload stream's full-size window keeps to its ring's soft size. A metadata stream's
    // writer (the encoder itself) never waits for room there: its ring grows past the soft
    // size instead, or it moves to another window when the ring has wrapped.
    const w = this.win!;
    const budget = this.payload && w.buf.length === this.windowSize ? this.softSize(w) : this.windowSize;
    return this.inFlightBytes + live + this.reserve > budget || !this.place(this.reserve, false);
  }

  /** Move to another window (larger when needed); carry the live bytes (current chunk + deferred) over. */
  private nextWindow(need: number): Window {
    const old = this.win;
    const live = old ? this.wEnd - this.start : 0;
    // A small archive keeps its first small window; then both kinds of stream move to a
    // full-size window, whose ring keeps to its soft size (untouched pages cost nothing). A
    // metadata stream doubled its windows instead: a first no-change backup of the linux tree
    // went through seven (to 16 MiB), copying 16 MiB of unfinished chunks (~7 ms).
    const next = !old ? FIRST_WINDOW : this.windowSize;
    const size = Math.max(next, live + need);
    let w: Window | undefined;
    if (size === this.windowSize) w = this.spare.pop();
    if (!w) w = { buf: Buffer.allocUnsafe(size), spans: [], head: 0, end: size, high: 0 };
    w.end = Math.max(this.softSize(w), live + need);
    if (old) old.buf.copy(w.buf, 0, this.start, this.wEnd);
    this.win = w;
    this.start = 0;
    this.wEnd = live;
    if (old) this.recycle(old);
    return w;
  }

  /** A chunk cut from `w` is done: drop the done spans at its tail, reuse it when idle. */
  private release(w: Window, span: Span): void {
    span.done = true;
    this.inFlightBytes -= span.size;
    while (w.head < w.spans.length && w.spans[w.head].done) w.head++;
    if (w.head === w.spans.length || w.head >= 1024) {
      w.spans.splice(0, w.head);
      w.head = 0;
    }
    this.recycle(w);
    this.wake();
  }

  private recycle(w: Window): void {
    // Only a retired window (not the current one) whose chunks are all processed.
    if (w === this.win || w.head !== w.spans.length) return;
    if (w.buf.length === this.windowSize && this.spare.length < SPARE_WINDOWS) this.spare.push(w);
    // Garbage now, but its pages stay resident until V8 collects the Buffer, which for one
    // that has lived through scavenges waits for a full collection (when a metadata stream's
    // windows still doubled to 8 MiB, 7.75 MiB of them stayed in a full backup's peak).
    else native.releasePages(w.buf);
  }

  private flushBufWriter(): void {
    if (this.bwLen > 0) {
      this.sent.push(this.bwLen);
      this.bwLen = 0;
    }
  }

  private scanSent(): void {
    if (!this.sent.length) return;
    const pieces = this.sent;
    this.sent = [];
    for (const n of pieces) this.scanPiece(n);
  }

  /** §1.3/§1.5: append the next `len` written bytes as one input piece and cut as long as the unscanned tail allows. */
  private scanPiece(len: number): void {
    this.bufLen += len;
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
        if (b !== NO_SUGGESTION) {
          if (b < base + pos) {
            this.current = NO_SUGGESTION;
            continue;
          }
          if (b > base + total) break;
          const size = b - base;
          if (size < this.min) {
            this.current = NO_SUGGESTION;
            continue;
          }
          if (size <= this.max) {
            this.current = NO_SUGGESTION;
            const len = size - pos;
            if (len === 0) break; // learned too late: dropped (never happens in the reference model)
            this.chunker.reset();
            return len;
          }
          break;
        }
        if (this.suggestionHead < this.suggestions.length) {
          this.current = this.suggestions[this.suggestionHead++];
          // Compact once the consumed head is most of the queue (a flush of many reused
          // files queues thousands at once): amortized O(1) per suggestion.
          if (this.suggestionHead > 1024 && this.suggestionHead * 2 > this.suggestions.length) {
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
  }

  /**
   * Native buzhash over the unscanned tail. Returns bytes after scanPos up to the cut or 0; the
   * caller either cuts (take resets scanPos) or marks all scanned.
   */
  private regularScan(): number {
    return this.chunker.scan(this.win!.buf, this.start + this.scanPos, this.start + this.bufLen);
  }

  // --- emitting -----------------------------------------------------------------------

  /** Split off buffer[0..len) as a new chunk (len may be 0: nothing is emitted). */
  private emitRaw(len: number): void {
    this.scanPos = 0;
    if (len === 0) return;
    // Zero-copy view of the window; it is not reused before processChunk settles.
    const w = this.win!;
    const data = w.buf.subarray(this.start, this.start + len);
    const span: Span = { from: this.start, size: len, done: false };
    this.inFlightBytes += len;
    this.recentChunk += (len - this.recentChunk) / SOFT_RECENT_CHUNKS;
    w.spans.push(span);
    this.start += len;
    this.bufLen -= len;
    const release = () => this.release(w, span);
    const offset = this.consumed;
    this.consumed += len;
    this.stats.chunks++;
    this.stats.size += len;
    const known = this.known;
    const compress = this.compress;
    const work: Promise<StoreResult> = this.store
      ? this.store(data, compress)
      : known
        ? native.sha256Async(data).then(async (digest) => ({ digest, blob: (await known(digest)) ? null : await native.encodeBlobAsync(data, compress) }))
        : native.processChunk(data, compress);
    const promise = work.then(
      (r): ChunkRecord => {
        release();
        return { offset, size: len, digest: r.digest, blob: r.blob, stored: r.stored };
      },
      (e: unknown) => {
        release();
        throw e;
      },
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
