/**
 * Sequential reader over a byte source that delivers pieces of any size (a Node stream, an
 * async generator, an array of Buffers…). Used by the pxar decoder for the metadata and the
 * payload stream.
 *
 * Invariants: `position` counts consumed bytes; bytes handed out by `take`/`readSome` are never
 * overwritten later (pieces are adopted zero-copy, and only the few bytes straddling a piece
 * boundary are copied into a fresh buffer), so callers may keep them, unless the reader was
 * given `release`: then each piece from the source is passed to it exactly once, when the
 * reader has consumed it (moved on to the next piece), and the source may reuse its memory, so
 * callers must be done with every view of a piece before they read past it.
 */

export type ByteSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

const EMPTY = Buffer.alloc(0);

export class ByteReader {
  /** Absolute position of the next unconsumed byte. */
  position = 0;
  private cur: Buffer = EMPTY;
  private start = 0;
  /** Pieces pulled from the source but not yet reached. */
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private readonly iterator: AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
  private done = false;
  /** Buffers `combine` made (never passed to `release`). */
  private readonly own = new WeakSet<Buffer>();

  constructor(
    source: ByteSource,
    private readonly release?: (piece: Buffer) => void,
  ) {
    this.iterator =
      Symbol.asyncIterator in source
        ? (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]()
        : (source as Iterable<Uint8Array>)[Symbol.iterator]();
  }

  /** Bytes available without pulling from the source. */
  get buffered(): number {
    return this.cur.length - this.start + this.queued;
  }

  /** Bytes available contiguously for `take` without copying. */
  private get contiguous(): number {
    return this.cur.length - this.start;
  }

  /** Pull one more piece; false at end of input. */
  private async pull(): Promise<boolean> {
    while (!this.done) {
      const r = await this.iterator.next();
      if (r.done) {
        this.done = true;
        break;
      }
      const v = r.value;
      if (v.length === 0) continue;
      const b = Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.length);
      this.queue.push(b);
      this.queued += b.length;
      return true;
    }
    return false;
  }

  /** Ensure `n` bytes can be taken; false if the input ends before. */
  async fill(n: number): Promise<boolean> {
    while (this.buffered < n) {
      if (!(await this.pull())) return false;
    }
    return true;
  }

  /** Take exactly `n` bytes (after a successful `fill(n)`). */
  take(n: number): Buffer {
    if (this.contiguous === 0 && this.queue.length) this.advancePiece();
    if (this.contiguous < n) this.combine(n);
    const out = this.cur.subarray(this.start, this.start + n);
    this.start += n;
    this.position += n;
    return out;
  }

  /**
   * The bytes available contiguously without pulling (a view, possibly empty): a parser that
   * finds what it needs there consumes it with `advance`, without a copy or an await.
   */
  view(): Buffer {
    if (this.contiguous === 0 && this.queue.length) this.advancePiece();
    return this.cur.subarray(this.start);
  }

  /** Consume `n` bytes of `view()`. */
  advance(n: number): void {
    if (!(n >= 0 && n <= this.contiguous)) throw new RangeError(`ByteReader.advance(${n}) beyond the ${this.contiguous} bytes in view`);
    this.start += n;
    this.position += n;
  }

  /** Next 1..max bytes (zero-copy), or null at end of input. */
  async readSome(max: number): Promise<Buffer | null> {
    if (this.contiguous === 0) {
      if (this.queue.length === 0 && !(await this.pull())) return null;
      this.advancePiece();
    }
    return this.take(Math.min(max, this.contiguous));
  }

  /** Skip `n` bytes; false if the input ends before. */
  async skip(n: number): Promise<boolean> {
    let left = n;
    while (left > 0) {
      if (this.contiguous === 0) {
        if (this.queue.length === 0 && !(await this.pull())) return false;
        this.advancePiece();
      }
      const k = Math.min(left, this.contiguous);
      this.start += k;
      this.position += k;
      left -= k;
    }
    return true;
  }

  /** True when no byte is left. */
  async atEnd(): Promise<boolean> {
    return this.buffered === 0 && !(await this.pull());
  }

  private advancePiece(): void {
    const next = this.queue.shift() as Buffer;
    this.queued -= next.length;
    this.drop(this.cur);
    this.cur = next;
    this.start = 0;
  }

  /** A piece is consumed: hand it back (combined copies and EMPTY are the reader's own). */
  private drop(piece: Buffer): void {
    if (this.release && piece !== EMPTY && !this.own.has(piece)) this.release(piece);
    this.own.delete(piece);
  }

  /** Make `n` bytes contiguous in a fresh buffer (copying only those `n`). */
  private combine(n: number): void {
    const out = Buffer.allocUnsafe(n);
    let have = this.contiguous;
    this.cur.copy(out, 0, this.start);
    this.drop(this.cur);
    while (have < n) {
      const piece = this.queue[0];
      const k = Math.min(n - have, piece.length);
      piece.copy(out, have, 0, k);
      have += k;
      if (k === piece.length) {
        this.queue.shift();
        this.drop(piece);
      } else {
        this.queue[0] = piece.subarray(k);
      }
      this.queued -= k;
    }
    if (this.release) this.own.add(out);
    this.cur = out;
    this.start = 0;
  }
}
