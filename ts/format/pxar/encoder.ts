/**
 * Streaming pxar encoder (spec pxar.md §4–6), both variants:
 *
 * - `unified` (v1, `.pxar`): no FORMAT_VERSION, file data inline as PAYLOAD items.
 * - `split` (v2, `.mpxar` + `.ppxar`): FORMAT_VERSION(2) [+ PRELUDE] in the metadata stream,
 *   PAYLOAD_REF per file; the payload stream gets a start marker, one PAYLOAD header + data per
 *   new file, and a tail marker at `finish()`.
 *
 * Byte-compatible with upstream, including its quirks: the root goodbye tail offset points at
 * byte 0 (the root's "entry position" is 0), goodbye item sizes of freshly encoded split files
 * include the file size although the data is in the payload stream, reused files (payload refs)
 * count metadata bytes only, attributes are written in the fixed order of §4, goodbye items are
 * sorted by name hash and laid out as a binary tree array, HARDLINK offsets are FILENAME-to-FILENAME
 * distances in the metadata stream.
 *
 * Runs of plain reused files (`addPlainPayloadRefs`, nearly every entry of a no-change backup)
 * are written into the stage by the native addon (native/src/pxar.rs), as `addPayloadRef`
 * would write each of them.
 *
 * Output: metadata bytes are staged in a 64 KiB buffer and handed to the sink in pieces the
 * encoder never touches again (call `flush()` to push the stage early; `finish()` flushes).
 * Payload headers are handed over directly; file data buffers given to `writeFileData` are passed
 * to the sink as they are (no copy), so the payload position the caller sees always equals what
 * the payload sink has received (needed for chunk injection). Memory is bounded by the open
 * directories (one goodbye item, 24 bytes, per child of each open directory).
 */
import {
  ACL_NO_MASK,
  FORMAT_VERSION_2,
  GOODBYE_ITEM_SIZE,
  HEADER_SIZE,
  IFBLK,
  IFCHR,
  IFDIR,
  IFIFO,
  IFLNK,
  IFMT,
  IFREG,
  IFSOCK,
  MAX_PATH_LEN,
  MAX_PRELUDE_LEN,
  MAX_XATTR_LEN,
  PXAR_ACL_DEFAULT,
  PXAR_ACL_DEFAULT_GROUP,
  PXAR_ACL_DEFAULT_USER,
  PXAR_ACL_GROUP,
  PXAR_ACL_GROUP_OBJ,
  PXAR_ACL_USER,
  PXAR_DEVICE,
  PXAR_ENTRY,
  PXAR_FCAPS,
  PXAR_FILENAME,
  PXAR_FORMAT_VERSION,
  PXAR_HARDLINK,
  PXAR_PAYLOAD,
  PXAR_PAYLOAD_REF,
  PXAR_PAYLOAD_START_MARKER,
  PXAR_PAYLOAD_TAIL_MARKER,
  PXAR_PRELUDE,
  PXAR_QUOTA_PROJID,
  PXAR_SYMLINK,
  PXAR_XATTR,
  STAT_SIZE,
} from './constants.js';
import type { AclGroup, AclUser, Metadata } from './metadata.js';
import { sipHash24 } from './siphash.js';
import { fileNameProblem, typeWords, writeU64, type TypeWords } from './wire.js';
import { DOUBLE_FIELD } from '../double.js';
import { native } from '../../native/index.js';

/** Receives encoder output synchronously, in order. */
export interface ByteSink {
  write(buf: Buffer): void;
}

export type PxarEncoderOptions =
  | { variant: 'unified'; output: ByteSink }
  | { variant: 'split'; output: ByteSink; payloadOutput: ByteSink; prelude?: Buffer };

const STAGE_SIZE = 64 * 1024;
/** Numbers per file of `addPlainPayloadRefs`. */
export const PLAIN_RUN_FIELDS = 7;
const TWO32 = 2 ** 32;

const T_VERSION = typeWords(PXAR_FORMAT_VERSION);
const T_PRELUDE = typeWords(PXAR_PRELUDE);
const T_ENTRY = typeWords(PXAR_ENTRY);
const T_FILENAME = typeWords(PXAR_FILENAME);
const T_SYMLINK = typeWords(PXAR_SYMLINK);
const T_DEVICE = typeWords(PXAR_DEVICE);
const T_XATTR = typeWords(PXAR_XATTR);
const T_ACL_USER = typeWords(PXAR_ACL_USER);
const T_ACL_GROUP = typeWords(PXAR_ACL_GROUP);
const T_ACL_GROUP_OBJ = typeWords(PXAR_ACL_GROUP_OBJ);
const T_ACL_DEFAULT = typeWords(PXAR_ACL_DEFAULT);
const T_ACL_DEFAULT_USER = typeWords(PXAR_ACL_DEFAULT_USER);
const T_ACL_DEFAULT_GROUP = typeWords(PXAR_ACL_DEFAULT_GROUP);
const T_FCAPS = typeWords(PXAR_FCAPS);
const T_QUOTA = typeWords(PXAR_QUOTA_PROJID);
const T_HARDLINK = typeWords(PXAR_HARDLINK);
const T_PAYLOAD = typeWords(PXAR_PAYLOAD);
const T_PAYLOAD_REF = typeWords(PXAR_PAYLOAD_REF);
const T_START_MARKER = typeWords(PXAR_PAYLOAD_START_MARKER);
const T_TAIL_MARKER = typeWords(PXAR_PAYLOAD_TAIL_MARKER);

/** Goodbye items of one open directory, in columns. */
class GoodbyeItems {
  count = 0;
  hashLo = new Uint32Array(16);
  hashHi = new Uint32Array(16);
  /** Absolute FILENAME positions (made relative when the table is written). */
  offset = new Float64Array(16);
  size = new Float64Array(16);

  push(hash: Uint32Array, offset: number, size: number): void {
    if (this.count === this.hashLo.length) this.reserve(1);
    const i = this.count++;
    this.hashLo[i] = hash[0];
    this.hashHi[i] = hash[1];
    this.offset[i] = offset;
    this.size[i] = size;
  }

  /** Room for `n` more items. */
  reserve(n: number): void {
    if (this.count + n <= this.hashLo.length) return;
    let len = this.hashLo.length * 2;
    while (len < this.count + n) len *= 2;
    this.hashLo = grow(this.hashLo, new Uint32Array(len));
    this.hashHi = grow(this.hashHi, new Uint32Array(len));
    this.offset = grow(this.offset, new Float64Array(len));
    this.size = grow(this.size, new Float64Array(len));
  }
}

/** Goodbye item columns kept for reuse (open directories hold theirs), of at most this many items. */
const SPARE_GOODBYE_ITEMS = 64;
const SPARE_GOODBYE_CAPACITY = 1024;

/** Bytes of a plain run's file record besides its name: FILENAME header and NUL, ENTRY, PAYLOAD_REF. */
const PLAIN_RECORD_FIXED = HEADER_SIZE + 1 + HEADER_SIZE + STAT_SIZE + HEADER_SIZE + 16;

function grow<T extends Uint32Array | Float64Array>(old: T, next: T): T {
  next.set(old);
  return next;
}

/** An open directory. One shape for the root and subdirectories (a second shape would
 * deoptimize the code compiled for the first when the walk returns to the root). */
interface DirState {
  items: GoodbyeItems;
  /** ENTRY position (0 for the root: upstream quirk, §5). */
  entryPos: number;
  /** FILENAME position; -1 for the root. */
  filenamePos: number;
  hashLo: number;
  hashHi: number;
}

interface OpenFile {
  filenamePos: number;
  hashLo: number;
  hashHi: number;
  /** Goodbye item size (metadata bytes + file size, quirk §5). */
  itemSize: number;
  remaining: number;
  size: number;
}

export class PxarEncoder {
  readonly variant: 'unified' | 'split';
  private readonly out: ByteSink;
  private readonly payloadOut: ByteSink | undefined;
  private readonly prelude: Buffer | undefined;
  private stage = Buffer.allocUnsafe(STAGE_SIZE);
  /** Little-endian writes into `stage` (replaced with it). */
  private view = viewOf(this.stage);
  private staged = 0;
  // stream positions: double from the start (see DOUBLE_FIELD), set to 0 in the constructor
  private pos = DOUBLE_FIELD;
  private payloadPos = DOUBLE_FIELD;
  private readonly dirs: DirState[] = [];
  /** Goodbye item columns of closed directories, for the next ones (one set per open level). */
  private readonly spareItems: GoodbyeItems[] = [];
  private file: OpenFile | undefined;
  private state: 'new' | 'open' | 'finished' = 'new';
  private failure: Error | undefined;

  constructor(options: PxarEncoderOptions) {
    this.pos = 0;
    this.payloadPos = 0;
    this.variant = options.variant;
    this.out = options.output;
    if (options.variant === 'split') {
      this.payloadOut = options.payloadOutput;
      this.prelude = options.prelude;
      if (this.prelude && this.prelude.length > MAX_PRELUDE_LEN) {
        throw new Error(`pxar encoder: prelude of ${this.prelude.length} bytes exceeds ${MAX_PRELUDE_LEN}`);
      }
    }
  }

  /** Bytes of metadata stream produced so far (staged bytes included). */
  get metadataPosition(): number {
    return this.pos;
  }

  /** Payload stream position: start marker + new files' PAYLOAD items + advanced (injected) bytes. */
  get payloadPosition(): number {
    return this.payloadPos;
  }

  /** Write FORMAT_VERSION [+ PRELUDE] (split) and the root ENTRY; `rootMeta` must be a directory. */
  begin(rootMeta: Metadata): void {
    if (this.state !== 'new') throw new Error('pxar encoder: begin() called twice');
    checkType(rootMeta, IFDIR, 'root directory');
    checkMetadata(rootMeta);
    this.state = 'open';
    if (this.payloadOut) {
      const marker = Buffer.allocUnsafe(HEADER_SIZE);
      putHeader(marker, 0, T_START_MARKER, HEADER_SIZE);
      this.payloadOut.write(marker);
      this.payloadPos = HEADER_SIZE;
      const p = this.reserve(24);
      headerAt(this.view, p, T_VERSION, 24);
      u64At(this.view, FORMAT_VERSION_2, p + 16);
      this.pos += 24;
      if (this.prelude !== undefined) this.putItem(T_PRELUDE, this.prelude);
    }
    this.putMetadata(rootMeta);
    this.dirs.push({ items: this.spareItems.pop() ?? new GoodbyeItems(), entryPos: 0, filenamePos: -1, hashLo: 0, hashHi: 0 });
  }

  /** FILENAME + ENTRY of a subdirectory; its children follow until `leaveDirectory()`. */
  enterDirectory(name: Buffer, meta: Metadata): void {
    this.checkIdle();
    checkName(name);
    checkType(meta, IFDIR, 'directory');
    checkMetadata(meta);
    const hash = sipHash24(name);
    const hashLo = hash[0];
    const hashHi = hash[1];
    const filenamePos = this.pos;
    this.putFilename(name);
    const entryPos = this.pos;
    this.putMetadata(meta);
    this.dirs.push({ items: this.spareItems.pop() ?? new GoodbyeItems(), entryPos, filenamePos, hashLo, hashHi });
  }

  /** Close the current subdirectory with its GOODBYE table. */
  leaveDirectory(): void {
    this.checkIdle();
    if (this.dirs.length < 2) throw new Error('pxar encoder: leaveDirectory() without an open subdirectory (use finish() for the root)');
    const dir = this.dirs.pop() as DirState;
    this.putGoodbye(dir);
    const size = this.pos - dir.filenamePos;
    tmpHash[0] = dir.hashLo;
    tmpHash[1] = dir.hashHi;
    this.current().items.push(tmpHash, dir.filenamePos, size);
  }

  /**
   * Start a regular file with `size` data bytes: FILENAME, ENTRY, attributes, then PAYLOAD header
   * (unified) or PAYLOAD_REF + payload-stream PAYLOAD header (split). Feed exactly `size` bytes
   * with `writeFileData`, then `endFile()`. Returns the FILENAME position (for `addHardlink`) and,
   * in split mode, the payload offset of the new PAYLOAD header.
   */
  beginFile(name: Buffer, meta: Metadata, size: number): { linkOffset: number; payloadOffset?: number } {
    this.checkIdle();
    checkName(name);
    checkType(meta, IFREG, 'regular file');
    checkMetadata(meta);
    checkCount(size, 'file size');
    const hash = sipHash24(name);
    const hashLo = hash[0];
    const hashHi = hash[1];
    const filenamePos = this.putHead(name, meta);
    let payloadOffset: number | undefined;
    if (this.payloadOut) {
      payloadOffset = this.payloadPos;
      this.putPayloadRef(payloadOffset, size);
      const header = Buffer.allocUnsafe(HEADER_SIZE);
      putHeader(header, 0, T_PAYLOAD, HEADER_SIZE + size);
      this.payloadOut.write(header);
      this.payloadPos += HEADER_SIZE;
    } else {
      const p = this.reserve(HEADER_SIZE);
      headerAt(this.view, p, T_PAYLOAD, HEADER_SIZE + size);
      this.pos += HEADER_SIZE;
    }
    const metaSize = this.pos - filenamePos;
    this.file = { filenamePos, hashLo, hashHi, itemSize: metaSize + size, remaining: size, size };
    return payloadOffset === undefined ? { linkOffset: filenamePos } : { linkOffset: filenamePos, payloadOffset };
  }

  /** Append data of the file opened by `beginFile`; refuses more than its declared size. */
  writeFileData(buf: Buffer): void {
    this.checkUsable();
    const f = this.file;
    if (!f) throw new Error('pxar encoder: writeFileData() without beginFile()');
    if (buf.length > f.remaining) {
      throw new Error(`pxar encoder: ${buf.length} bytes written to a file with ${f.remaining} of ${f.size} left`);
    }
    if (buf.length === 0) return;
    f.remaining -= buf.length;
    if (this.payloadOut) {
      this.payloadOut.write(buf);
      this.payloadPos += buf.length;
    } else if (buf.length <= 4096) {
      const p = this.reserve(buf.length);
      buf.copy(this.stage, p);
      this.pos += buf.length;
    } else {
      this.flush();
      this.out.write(buf);
      this.pos += buf.length;
    }
  }

  /** Finish the current file; an error (and an unusable encoder) if fewer bytes were written than declared. */
  endFile(): void {
    this.checkUsable();
    const f = this.file;
    if (!f) throw new Error('pxar encoder: endFile() without beginFile()');
    if (f.remaining !== 0) {
      this.failure = new Error(`pxar encoder: file ended with ${f.remaining} of ${f.size} bytes missing`);
      throw this.failure;
    }
    this.file = undefined;
    tmpHash[0] = f.hashLo;
    tmpHash[1] = f.hashHi;
    this.current().items.push(tmpHash, f.filenamePos, f.itemSize);
  }

  /**
   * A reused file (split only): FILENAME, ENTRY, attributes, PAYLOAD_REF(payloadOffset, size),
   * without writing any payload. `payloadOffset` must not be below the current payload position.
   * The goodbye item size is the metadata bytes only (upstream quirk). Returns the FILENAME position.
   */
  addPayloadRef(name: Buffer, meta: Metadata, size: number, payloadOffset: number): number {
    this.checkIdle();
    if (!this.payloadOut) throw new Error('pxar encoder: payload references need a split archive');
    checkName(name);
    checkType(meta, IFREG, 'regular file');
    checkMetadata(meta);
    checkCount(size, 'file size');
    checkCount(payloadOffset, 'payload offset');
    if (payloadOffset < this.payloadPos) {
      throw new Error(`pxar encoder: payload offset ${payloadOffset} is below the current payload position ${this.payloadPos}`);
    }
    const filenamePos = this.putHead(name, meta);
    this.putPayloadRef(payloadOffset, size);
    this.endItem(name, filenamePos);
    return filenamePos;
  }

  /**
   * `addPayloadRef` for files `from` to `to - 1` of a run of plain regular files (no chattr
   * flags, xattrs, ACLs, fcaps or project id): file q is named `names[ends[q - 1] .. ends[q]]`
   * (from 0 for the first) and described by `nums[q * PLAIN_RUN_FIELDS ..]`: mode, uid, gid,
   * mtime seconds, mtime nanoseconds, size, and a payload offset to which `delta` is added.
   * Writes what `addPayloadRef` writes for each, without a Metadata object per file.
   */
  addPlainPayloadRefs(names: Buffer, ends: Uint32Array, nums: Float64Array, from: number, to: number, delta: number): void {
    this.checkIdle();
    if (!this.payloadOut) throw new Error('pxar encoder: payload references need a split archive');
    this.plainRecords(names, ends, nums, from, to, delta);
  }

  /**
   * New plain files `from` to `to - 1` of a run (split only; names and numbers as for
   * `addPlainPayloadRefs`), written as `beginFile`, their data and `endFile` would write each:
   * `data[k]` (exactly its size) is file `from + k`'s content. The files' payload offsets follow
   * each other from the current payload position; they are stored in the offset field of `nums`
   * (`delta` 0). The records go first, then per file `beforeFile(payload position)` (the chunker's
   * suggested boundary, which the caller makes before each file's PAYLOAD header), its PAYLOAD
   * header and its data.
   */
  addPlainFiles(names: Buffer, ends: Uint32Array, nums: Float64Array, from: number, to: number, data: readonly Buffer[], beforeFile: (payloadPos: number) => void): void {
    this.checkIdle();
    const payloadOut = this.payloadOut;
    if (!payloadOut) throw new Error('pxar encoder: new plain files need a split archive');
    if (!(Number.isInteger(from) && Number.isInteger(to) && from >= 0 && from <= to && data.length >= to - from)) {
      throw new Error(`pxar encoder: plain files ${from}..${to} out of range`);
    }
    let at = this.payloadPos;
    for (let q = from; q < to; q++) {
      const size = nums[q * PLAIN_RUN_FIELDS + 5];
      if (data[q - from].length !== size) throw new Error(`pxar encoder: ${data[q - from].length} bytes given for a file of ${size}`);
      nums[q * PLAIN_RUN_FIELDS + 6] = at;
      at += HEADER_SIZE + size;
    }
    const items = this.current().items;
    const first = items.count;
    this.plainRecords(names, ends, nums, from, to, 0);
    // a new file's goodbye item counts its data too (upstream quirk, as in beginFile)
    for (let q = from; q < to; q++) items.size[first + q - from] += nums[q * PLAIN_RUN_FIELDS + 5];
    for (let k = 0; k < to - from; k++) {
      beforeFile(this.payloadPos);
      const d = data[k];
      const header = Buffer.allocUnsafe(HEADER_SIZE);
      putHeader(header, 0, T_PAYLOAD, HEADER_SIZE + d.length);
      payloadOut.write(header);
      this.payloadPos += HEADER_SIZE;
      if (d.length > 0) {
        payloadOut.write(d);
        this.payloadPos += d.length;
      }
    }
  }

  /** The records of `addPlainPayloadRefs` (checked natively first: a refused run writes nothing). */
  private plainRecords(names: Buffer, ends: Uint32Array, nums: Float64Array, from: number, to: number, delta: number): void {
    if (!(Number.isInteger(from) && Number.isInteger(to) && from >= 0 && from <= to)) {
      throw new Error(`pxar encoder: plain run ${from}..${to} out of range`);
    }
    // Native (native/src/pxar.rs): every file is checked before anything is written (a refused
    // run leaves the encoder as it was), then records go into the stage while they fit.
    const items = this.current().items;
    items.reserve(to - from);
    for (let q = from; q < to; ) {
      const n = native.pxarPlainRun(this.stage, this.staged, this.pos, names, ends, nums, q, to, delta, this.payloadPos, items.hashLo, items.hashHi, items.offset, items.size, items.count);
      if (n === 0 && this.staged === 0) throw new Error('pxar encoder: a plain run record larger than the stage');
      // files q..q+n-1: their names' bytes plus the fixed part of each record
      const bytes = n * PLAIN_RECORD_FIXED + (n === 0 ? 0 : ends[q + n - 1] - (q === 0 ? 0 : ends[q - 1]));
      this.staged += bytes;
      this.pos += bytes;
      items.count += n;
      q += n;
      if (q < to) this.flush();
    }
  }

  /** Move the payload position by `n` bytes without writing (chunks injected by the caller). */
  advancePayload(n: number): void {
    this.checkIdle();
    if (!this.payloadOut) throw new Error('pxar encoder: advancePayload() needs a split archive');
    checkCount(n, 'payload advance');
    this.payloadPos += n;
  }

  addSymlink(name: Buffer, meta: Metadata, target: Buffer): number {
    this.checkIdle();
    checkName(name);
    checkType(meta, IFLNK, 'symlink');
    checkMetadata(meta);
    if (target.length > MAX_PATH_LEN || target.includes(0)) {
      throw new Error(`pxar encoder: symlink target longer than ${MAX_PATH_LEN} bytes or containing NUL`);
    }
    const content = Buffer.allocUnsafe(target.length + 1);
    target.copy(content, 0);
    content[target.length] = 0;
    return this.addSimple(name, meta, T_SYMLINK, content);
  }

  addDevice(name: Buffer, meta: Metadata, major: number, minor: number): number {
    this.checkIdle();
    checkName(name);
    const t = meta.mode & IFMT;
    if (t !== IFBLK && t !== IFCHR) throw new Error('pxar encoder: device metadata must have IFBLK or IFCHR mode');
    checkMetadata(meta);
    checkCount(major, 'device major');
    checkCount(minor, 'device minor');
    const content = Buffer.allocUnsafe(16);
    writeU64(content, major, 0);
    writeU64(content, minor, 8);
    return this.addSimple(name, meta, T_DEVICE, content);
  }

  addFifo(name: Buffer, meta: Metadata): number {
    this.checkIdle();
    checkName(name);
    checkType(meta, IFIFO, 'fifo');
    checkMetadata(meta);
    return this.addSimple(name, meta, undefined, undefined);
  }

  addSocket(name: Buffer, meta: Metadata): number {
    this.checkIdle();
    checkName(name);
    checkType(meta, IFSOCK, 'socket');
    checkMetadata(meta);
    return this.addSimple(name, meta, undefined, undefined);
  }

  /**
   * A further name of an already encoded regular file: FILENAME + HARDLINK(offset, targetPath).
   * `targetLinkOffset` is the target's FILENAME position (returned by `beginFile`/`addPayloadRef`);
   * the stored offset is this entry's FILENAME position minus it.
   */
  addHardlink(name: Buffer, targetPath: Buffer, targetLinkOffset: number): number {
    this.checkIdle();
    checkName(name);
    checkCount(targetLinkOffset, 'hardlink target offset');
    if (targetLinkOffset >= this.pos) {
      throw new Error(`pxar encoder: hardlink target offset ${targetLinkOffset} does not precede position ${this.pos}`);
    }
    if (targetPath.length === 0 || targetPath.length > MAX_PATH_LEN || targetPath.includes(0)) {
      throw new Error('pxar encoder: hardlink target path empty, too long or containing NUL');
    }
    const content = Buffer.allocUnsafe(8 + targetPath.length + 1);
    writeU64(content, this.pos - targetLinkOffset, 0);
    targetPath.copy(content, 8);
    content[content.length - 1] = 0;
    return this.addSimple(name, undefined, T_HARDLINK, content);
  }

  /** Close the root (root GOODBYE), write the payload tail marker (split) and flush. */
  finish(): void {
    this.checkIdle();
    if (this.dirs.length !== 1) throw new Error(`pxar encoder: finish() with ${this.dirs.length - 1} subdirectories still open`);
    this.putGoodbye(this.dirs.pop() as DirState);
    this.flush();
    if (this.payloadOut) {
      // not counted in payloadPosition (upstream writes it through a dummy position)
      const marker = Buffer.allocUnsafe(HEADER_SIZE);
      putHeader(marker, 0, T_TAIL_MARKER, HEADER_SIZE);
      this.payloadOut.write(marker);
    }
    this.state = 'finished';
  }

  /** Hand staged metadata bytes to the sink now. */
  flush(): void {
    if (this.staged === 0) return;
    const piece = this.stage.subarray(0, this.staged);
    this.stage = Buffer.allocUnsafe(STAGE_SIZE);
    this.view = viewOf(this.stage);
    this.staged = 0;
    this.out.write(piece);
  }

  // ---- internals ------------------------------------------------------------------------------

  private current(): DirState {
    return this.dirs[this.dirs.length - 1];
  }

  private checkUsable(): void {
    if (this.failure) throw this.failure;
    if (this.state !== 'open') throw new Error(`pxar encoder: not open (${this.state === 'new' ? 'call begin() first' : 'already finished'})`);
  }

  /** Usable and not in the middle of a file. */
  private checkIdle(): void {
    this.checkUsable();
    if (this.file) throw new Error('pxar encoder: the current file was not ended (endFile())');
  }

  /** FILENAME, optional ENTRY + attributes, optional one more item; records the goodbye item. */
  private addSimple(name: Buffer, meta: Metadata | undefined, type: TypeWords | undefined, content: Buffer | undefined): number {
    const filenamePos = this.putHead(name, meta);
    if (type && content) this.putItem(type, content);
    this.endItem(name, filenamePos);
    return filenamePos;
  }

  /** FILENAME, then ENTRY + attributes when `meta` is given; returns the FILENAME position. */
  private putHead(name: Buffer, meta: Metadata | undefined): number {
    const filenamePos = this.pos;
    this.putFilename(name);
    if (meta) this.putMetadata(meta);
    return filenamePos;
  }

  /** The goodbye item of the entry `name` written from `filenamePos` up to here. */
  private endItem(name: Buffer, filenamePos: number): void {
    // sipHash24's result array is read by push() before anything else hashes
    this.current().items.push(sipHash24(name), filenamePos, this.pos - filenamePos);
  }

  private putPayloadRef(payloadOffset: number, size: number): void {
    const p = this.reserve(HEADER_SIZE + 16);
    headerAt(this.view, p, T_PAYLOAD_REF, HEADER_SIZE + 16);
    u64At(this.view, payloadOffset, p + 16);
    u64At(this.view, size, p + 24);
    this.pos += HEADER_SIZE + 16;
  }

  /** Make room for `n` contiguous bytes in the stage; returns their offset there. */
  private reserve(n: number): number {
    if (this.staged + n > this.stage.length) {
      this.flush();
      if (n > this.stage.length) {
        this.stage = Buffer.allocUnsafe(n);
        this.view = viewOf(this.stage);
      }
    }
    const p = this.staged;
    this.staged += n;
    return p;
  }

  private putItem(type: TypeWords, content: Buffer): void {
    const p = this.reserve(HEADER_SIZE + content.length);
    headerAt(this.view, p, type, HEADER_SIZE + content.length);
    content.copy(this.stage, p + HEADER_SIZE);
    this.pos += HEADER_SIZE + content.length;
  }

  /** ENTRY (the stat part of an entry's metadata). */
  private putStat(mode: number, flags: bigint, uid: number, gid: number, secs: number, nanos: number): void {
    let p = this.reserve(HEADER_SIZE + STAT_SIZE);
    headerAt(this.view, p, T_ENTRY, HEADER_SIZE + STAT_SIZE);
    p += HEADER_SIZE;
    u64At(this.view, mode, p);
    if (flags === 0n) {
      this.view.setUint32(p + 8, 0, true);
      this.view.setUint32(p + 12, 0, true);
    } else {
      this.view.setBigUint64(p + 8, flags, true);
    }
    this.view.setUint32(p + 16, uid, true);
    this.view.setUint32(p + 20, gid, true);
    this.view.setUint32(p + 24, secs >>> 0, true);
    this.view.setInt32(p + 28, Math.floor(secs / TWO32), true);
    this.view.setUint32(p + 32, nanos, true);
    this.view.setUint32(p + 36, 0, true);
    this.pos += HEADER_SIZE + STAT_SIZE;
  }

  private putFilename(name: Buffer): void {
    const full = HEADER_SIZE + name.length + 1;
    const p = this.reserve(full);
    headerAt(this.view, p, T_FILENAME, full);
    this.stage.set(name, p + HEADER_SIZE);
    this.stage[p + full - 1] = 0;
    this.pos += full;
  }

  /** ENTRY then attributes in the fixed order of spec §4. */
  private putMetadata(meta: Metadata): void {
    this.putStat(meta.mode, meta.flags, meta.uid, meta.gid, meta.mtime.secs, meta.mtime.nanos);

    // Indexed loops: `for…of` allocates an iterator per loop here, and this runs per entry.
    const xattrs = meta.xattrs;
    for (let i = 0; i < xattrs.length; i++) {
      const x = xattrs[i];
      const full = HEADER_SIZE + x.name.length + 1 + x.value.length;
      const q = this.reserve(full);
      headerAt(this.view, q, T_XATTR, full);
      x.name.copy(this.stage, q + HEADER_SIZE);
      this.stage[q + HEADER_SIZE + x.name.length] = 0;
      x.value.copy(this.stage, q + HEADER_SIZE + x.name.length + 1);
      this.pos += full;
    }
    const acl = meta.acl;
    this.putUsers(T_ACL_USER, acl.users);
    this.putGroups(T_ACL_GROUP, acl.groups);
    if (acl.groupObj !== undefined) {
      const q = this.reserve(24);
      headerAt(this.view, q, T_ACL_GROUP_OBJ, 24);
      u64At(this.view, acl.groupObj, q + 16);
      this.pos += 24;
    }
    if (acl.default !== undefined) {
      const d = acl.default;
      const q = this.reserve(48);
      headerAt(this.view, q, T_ACL_DEFAULT, 48);
      putPermission(this.stage, d.userObj, q + 16);
      putPermission(this.stage, d.groupObj, q + 24);
      putPermission(this.stage, d.other, q + 32);
      putPermission(this.stage, d.mask, q + 40);
      this.pos += 48;
    }
    this.putUsers(T_ACL_DEFAULT_USER, acl.defaultUsers);
    this.putGroups(T_ACL_DEFAULT_GROUP, acl.defaultGroups);
    if (meta.fcaps !== undefined) this.putItem(T_FCAPS, meta.fcaps);
    if (meta.quotaProjectId !== undefined) {
      const q = this.reserve(24);
      headerAt(this.view, q, T_QUOTA, 24);
      u64At(this.view, meta.quotaProjectId, q + 16);
      this.pos += 24;
    }
  }

  private putUsers(type: TypeWords, users: AclUser[]): void {
    for (let i = 0; i < users.length; i++) this.putPair(type, users[i].uid, users[i].permissions);
  }

  private putGroups(type: TypeWords, groups: AclGroup[]): void {
    for (let i = 0; i < groups.length; i++) this.putPair(type, groups[i].gid, groups[i].permissions);
  }

  private putPair(type: TypeWords, a: number, b: number): void {
    const q = this.reserve(32);
    headerAt(this.view, q, type, 32);
    u64At(this.view, a, q + 16);
    u64At(this.view, b, q + 24);
    this.pos += 32;
  }

  /** GOODBYE: items sorted by hash in binary-tree-array order, then the tail item (native/src/pxar.rs). */
  private putGoodbye(dir: DirState): void {
    const items = dir.items;
    const n = items.count;
    const full = HEADER_SIZE + GOODBYE_ITEM_SIZE * (n + 1);
    const p = this.reserve(full);
    native.pxarGoodbye(this.stage, p, items.hashLo, items.hashHi, items.offset, items.size, n, this.pos, dir.entryPos);
    this.pos += full;
    // the items are used again for another directory (not a large one's: memory stays bounded
    // by the open directories)
    items.count = 0;
    if (this.spareItems.length < SPARE_GOODBYE_ITEMS && items.hashLo.length <= SPARE_GOODBYE_CAPACITY) this.spareItems.push(items);
  }
}

/** Scratch for passing a hash pair to GoodbyeItems.push without allocating. */
const tmpHash = new Uint32Array(2);

function viewOf(b: Buffer): DataView {
  return new DataView(b.buffer, b.byteOffset, b.length);
}

/** u64 `v` (a non-negative safe integer) at `p`. */
function u64At(v: DataView, value: number, p: number): void {
  v.setUint32(p, value >>> 0, true);
  v.setUint32(p + 4, (value / TWO32) >>> 0, true);
}

function headerAt(v: DataView, p: number, type: TypeWords, fullSize: number): void {
  v.setUint32(p, type.lo, true);
  v.setUint32(p + 4, type.hi, true);
  u64At(v, fullSize, p + 8);
}

function putHeader(buf: Buffer, p: number, type: TypeWords, fullSize: number): void {
  buf.writeUInt32LE(type.lo, p);
  buf.writeUInt32LE(type.hi, p + 4);
  writeU64(buf, fullSize, p + 8);
}

function putPermission(buf: Buffer, v: number | null, p: number): void {
  if (v === null) buf.writeBigUInt64LE(ACL_NO_MASK, p);
  else writeU64(buf, v, p);
}

function checkName(name: Buffer): void {
  const problem = fileNameProblem(name);
  if (problem) throw new Error(`pxar encoder: illegal file name ${JSON.stringify(name.toString('latin1'))}: ${problem}`);
}

function checkType(meta: Metadata, type: number, what: string): void {
  checkModeType(meta.mode, type, what);
}

/** The stat fields of an entry's metadata. */
function checkStat(mode: number, uid: number, gid: number, secs: number, nanos: number): void {
  checkCount(mode, 'mode');
  if (!isU32(uid) || !isU32(gid)) throw new Error(`pxar encoder: uid/gid ${uid}/${gid} out of u32 range`);
  if (!Number.isSafeInteger(secs)) throw new Error(`pxar encoder: mtime seconds ${secs} not an integer`);
  if (!Number.isInteger(nanos) || nanos < 0 || nanos > 999_999_999) throw new Error(`pxar encoder: mtime nanoseconds ${nanos} out of range`);
}

function checkModeType(mode: number, type: number, what: string): void {
  if ((mode & IFMT) !== type) {
    throw new Error(`pxar encoder: ${what} metadata has mode 0o${mode.toString(8)} (wrong file type)`);
  }
}

function checkCount(v: number, what: string): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`pxar encoder: ${what} ${v} is not a non-negative integer`);
}

/** Refuse metadata that cannot be encoded faithfully. */
function checkMetadata(m: Metadata): void {
  checkStat(m.mode, m.uid, m.gid, m.mtime.secs, m.mtime.nanos);
  if (m.flags !== 0n && (m.flags < 0n || m.flags > 0xffffffffffffffffn)) throw new Error(`pxar encoder: flags ${m.flags} out of u64 range`);
  const xattrs = m.xattrs;
  for (let i = 0; i < xattrs.length; i++) {
    const x = xattrs[i];
    if (x.name.length === 0 || x.name.includes(0) || x.name.length + 1 + x.value.length > MAX_XATTR_LEN) {
      throw new Error(`pxar encoder: xattr ${JSON.stringify(x.name.toString('latin1'))} has an empty/NUL name or is too large`);
    }
  }
  const acl = m.acl;
  checkAclEntries(acl.users);
  checkAclEntries(acl.groups);
  checkAclEntries(acl.defaultUsers);
  checkAclEntries(acl.defaultGroups);
  if (acl.groupObj !== undefined) checkCount(acl.groupObj, 'ACL permissions');
  const d = acl.default;
  if (d) {
    if (d.userObj !== null) checkCount(d.userObj, 'ACL permissions');
    if (d.groupObj !== null) checkCount(d.groupObj, 'ACL permissions');
    if (d.other !== null) checkCount(d.other, 'ACL permissions');
    if (d.mask !== null) checkCount(d.mask, 'ACL permissions');
  }
  if (m.fcaps !== undefined && m.fcaps.length > MAX_XATTR_LEN) throw new Error('pxar encoder: fcaps too large');
  if (m.quotaProjectId !== undefined) checkCount(m.quotaProjectId, 'quota project id');
}

function checkAclEntries(entries: (AclUser | AclGroup)[]): void {
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    checkCount('uid' in e ? e.uid : e.gid, 'ACL id');
    checkCount(e.permissions, 'ACL permissions');
  }
}

function isU32(v: number): boolean {
  return Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
}
