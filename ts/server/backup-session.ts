/**
 * Server side of one backup (writer) session (spec protocol.md §3; PBS `api2/backup`): the
 * endpoints of §3.2 on top of a `BackupWriter`, with PBS's server-side checks.
 *
 * Invariants:
 *  - Uploaded chunks are re-verified before they are stored: body length == `encoded-size`,
 *    a DataBlob magic, CRC recomputed by the server; unencrypted chunks are decoded and must
 *    hash to `digest` with exactly `size` bytes (encrypted ones cannot be checked).
 *  - A digest may only be appended to an index if it is known in this session: uploaded here,
 *    or registered by `GET /previous` of an index. Dynamic appends must be sequential.
 *  - Closing an index compares chunk count, size and csum with what the server built; only a
 *    matching index is written (`BackupWriter.addIndex`). `finish` needs every writer closed,
 *    at least one file, the manifest, and a base snapshot that still exists.
 *  - When the connection ends without a successful finish the snapshot is removed
 *    (`BackupWriter.abort`); benchmark sessions are always removed.
 *  - Index entries are kept in memory until close (40 bytes each for dynamic, 32 for fixed
 *    indexes); a session may hold at most `MAX_SESSION_INDEX_ENTRIES` of them.
 */
import type { ServerHttp2Stream } from 'node:http2';
import { lstat, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { BackupWriter } from '../datastore/backup-writer.js';
import type { DataStore } from '../datastore/datastore.js';
import { archiveKind } from '../datastore/names.js';
import { BLOB_MAGIC, decodeBlobAsync, verifyBlob } from '../format/blob.js';
import { DynamicIndex, DynamicIndexWriter } from '../format/dynamic-index.js';
import { FixedIndex, FixedIndexWriter } from '../format/fixed-index.js';
import { BackupManifest, MANIFEST_BLOB_NAME } from '../format/manifest.js';
import { native } from '../native/index.js';
import {
  BLOB_HEADER_SIZE,
  ENCRYPTED_BLOB_HEADER_SIZE,
  FIXED_CHUNK_SIZE,
  MAX_CHUNK_SIZE,
  MAX_WRITER_ID,
} from '../protocol/constants.js';
import { BACKUP_ENDPOINTS, type Endpoint } from '../protocol/endpoints.js';
import { HttpError, badRequest, notFound } from '../protocol/errors.js';
import { param, type Params } from '../protocol/params.js';
import { drainBody, readBody } from './http.js';
import { ProtocolSession, type SessionOptions } from './session.js';

/** Chunks of a previous index checked (and touched) per native job. */
const PREVIOUS_TOUCH_BATCH = 1024;

/** Index entries (all writers, dynamic and fixed) one session may build in memory. */
export const MAX_SESSION_INDEX_ENTRIES = 16 * 1024 * 1024;

interface UploadStat {
  count: number;
  size: number;
  compressed_size: number;
  duplicates: number;
}

const newStat = (): UploadStat => ({ count: 0, size: 0, compressed_size: 0, duplicates: 0 });

interface DynamicWriterState {
  kind: 'dynamic';
  name: string;
  index: DynamicIndexWriter;
  offset: number;
  count: number;
  stat: UploadStat;
}

interface FixedWriterState {
  kind: 'fixed';
  name: string;
  index: FixedIndexWriter;
  size: number;
  count: number;
  smallChunks: number;
  incremental: boolean;
  stat: UploadStat;
}

type WriterState = DynamicWriterState | FixedWriterState;

export interface BackupSessionOptions extends SessionOptions {
  /** `host/benchmark` session: data is discarded at the end. */
  benchmark: boolean;
}

export class BackupSession extends ProtocolSession {
  readonly label: string;
  private readonly known = new Map<string, number>();
  private readonly writers = new Map<number, WriterState>();
  private wids = 0;
  private entries = 0;
  private fileCount = 0;
  private readonly backupStat = newStat();
  private manifest: BackupManifest | null = null;
  private state: 'open' | 'finishing' | 'finished' = 'open';

  constructor(
    readonly datastore: DataStore,
    readonly writer: BackupWriter,
    private readonly sessionOptions: BackupSessionOptions,
  ) {
    super(BACKUP_ENDPOINTS, sessionOptions);
    this.label = `backup ${writer.dir}`;
  }

  protected async handle(ep: Endpoint, p: Params, stream: ServerHttp2Stream): Promise<unknown> {
    switch (`${ep.method} ${ep.path}`) {
      case 'GET /previous_backup_time':
        return this.writer.previous?.time ?? null;
      case 'GET /previous':
        return this.downloadPrevious(param.str(p, 'archive-name'));
      case 'POST /blob':
        return this.uploadBlob(param.str(p, 'file-name'), param.int(p, 'encoded-size'), stream);
      case 'POST /dynamic_index':
        return this.createDynamicIndex(param.str(p, 'archive-name'));
      case 'POST /fixed_index':
        return this.createFixedIndex(param.str(p, 'archive-name'), param.int(p, 'size'), param.optStr(p, 'reuse-csum'));
      case 'POST /dynamic_chunk':
      case 'POST /fixed_chunk':
        return this.uploadChunk(ep.path === '/dynamic_chunk' ? 'dynamic' : 'fixed', p, stream);
      case 'PUT /dynamic_index':
      case 'PUT /fixed_index':
        return this.append(ep.path === '/dynamic_index' ? 'dynamic' : 'fixed', param.int(p, 'wid'), param.strs(p, 'digest-list'), param.ints(p, 'offset-list'));
      case 'POST /dynamic_close':
      case 'POST /fixed_close':
        return this.close(ep.path === '/dynamic_close' ? 'dynamic' : 'fixed', param.int(p, 'wid'), param.int(p, 'chunk-count'), param.int(p, 'size'), param.str(p, 'csum'));
      case 'POST /finish':
        return this.finish();
      case 'POST /speedtest':
        await drainBody(stream);
        return null;
      default:
        throw notFound(`Path '${ep.path}' not found.`);
    }
  }

  private ensureOpen(): void {
    if (this.state === 'finished') throw badRequest('backup already marked as finished.');
    if (this.state === 'finishing') throw badRequest('backup is being finished.');
    if (this.isClosing) throw badRequest('backup session is shutting down.');
  }

  private writerOf<K extends WriterState['kind']>(kind: K, wid: number): Extract<WriterState, { kind: K }> {
    const w = this.writers.get(wid);
    if (!w || w.kind !== kind) throw badRequest(`${kind} writer '${wid}' not registered`);
    return w as Extract<WriterState, { kind: K }>;
  }

  // ---- previous snapshot ---------------------------------------------------------------------

  private async downloadPrevious(name: string): Promise<Buffer> {
    this.ensureOpen();
    const prev = this.writer.previous;
    if (!prev) throw badRequest('no valid previous backup');
    const kind = archiveKind(name);
    const file = path.join(this.datastore.snapshotPath(prev), name);
    let data: Buffer;
    try {
      data = await readFile(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw notFound(`open file '${prev}/${name}' failed - not found`);
      throw e;
    }
    if (kind !== 'blob') {
      const index = kind === 'didx' ? DynamicIndex.parse(data, `${prev}/${name}`) : FixedIndex.parse(data, `${prev}/${name}`);
      // Its chunks become known (appendable without upload) only if they are all still in the
      // store: a client would otherwise commit a snapshot referencing a lost chunk. Touching
      // them also protects them from a concurrent garbage collection, as a local backup does.
      // Refused, the client backs up without this index and uploads what the store lacks.
      const digests: Buffer[] = [];
      for (let k = 0; k < index.count; k++) digests.push(index.chunk(k).digest);
      for (let k = 0; k < digests.length; k += PREVIOUS_TOUCH_BATCH) {
        const present = await this.datastore.chunks.touchMany(digests.slice(k, k + PREVIOUS_TOUCH_BATCH));
        const lost = present.indexOf(false);
        if (lost >= 0) {
          throw badRequest(`chunk ${digests[k + lost].toString('hex')} of '${prev}/${name}' is missing from the datastore - it cannot be reused (run verify)`);
        }
      }
      for (let k = 0; k < index.count; k++) {
        const c = index.chunk(k);
        this.known.set(c.digest.toString('hex'), c.size);
      }
      this.log(`registered ${index.count} chunks of ${name} from the previous backup`);
    }
    return data;
  }

  // ---- blobs ---------------------------------------------------------------------------------

  private async uploadBlob(name: string, encodedSize: number, stream: ServerHttp2Stream): Promise<null> {
    this.ensureOpen();
    if (!name.endsWith('.blob')) throw badRequest(`wrong blob file extension: '${name}'`);
    const data = await readBody(stream, encodedSize, () => badRequest(`got blob with unexpected length (more than ${encodedSize} bytes)`));
    if (data.length !== encodedSize) throw badRequest(`got blob with unexpected length (${encodedSize} != ${data.length})`);
    this.ensureOpen();
    if (name === MANIFEST_BLOB_NAME) {
      verifyBlob(data, name);
      this.manifest = BackupManifest.fromBlob(data, name);
    } else {
      await this.writer.addBlob(name, data);
    }
    this.fileCount++;
    this.backupStat.size += data.length;
    this.log(`added blob ${name} (${data.length} bytes)`);
    return null;
  }

  // ---- index writers -------------------------------------------------------------------------

  private nextWid(name: string): number {
    this.ensureOpen();
    if ([...this.writers.values()].some((w) => w.name === name) || this.writer.addedFiles.has(name)) {
      throw badRequest(`index '${name}' was already created in this backup`);
    }
    if (this.wids >= MAX_WRITER_ID) throw badRequest(`too many index writers (at most ${MAX_WRITER_ID} per backup)`);
    return ++this.wids;
  }

  private createDynamicIndex(name: string): number {
    if (!name.endsWith('.didx')) throw badRequest(`wrong archive extension: '${name}'`);
    archiveKind(name);
    const wid = this.nextWid(name);
    this.writers.set(wid, { kind: 'dynamic', name, index: new DynamicIndexWriter(), offset: 0, count: 0, stat: newStat() });
    this.log(`created new dynamic index ${wid} (${name})`);
    return wid;
  }

  private async createFixedIndex(name: string, size: number, reuseCsum: string | undefined): Promise<number> {
    if (!name.endsWith('.fidx')) throw badRequest(`wrong archive extension: '${name}'`);
    archiveKind(name);
    const count = Math.ceil(size / FIXED_CHUNK_SIZE);
    if (this.entries + count > MAX_SESSION_INDEX_ENTRIES) {
      throw badRequest(`image size ${size} is too large for one backup session (at most ${MAX_SESSION_INDEX_ENTRIES} chunks in all indexes)`);
    }
    let base: FixedIndex | null = null;
    if (reuseCsum !== undefined) {
      const prev = this.writer.previous;
      if (!prev) throw badRequest('cannot reuse index - no valid previous backup exists');
      let data: Buffer;
      try {
        data = await readFile(path.join(this.datastore.snapshotPath(prev), name));
      } catch {
        throw badRequest('cannot reuse index - no previous backup exists for archive');
      }
      base = FixedIndex.parse(data, `${prev}/${name}`);
      const old = base.computeCsum().toString('hex');
      if (old !== reuseCsum.toLowerCase()) {
        throw badRequest(`expected csum (${reuseCsum}) doesn't match last backup's (${old}), cannot do incremental backup`);
      }
      if (base.size !== size || base.chunkSize !== FIXED_CHUNK_SIZE) throw badRequest('clone_data_from failed - index sizes not equal');
    }
    const wid = this.nextWid(name);
    const index = new FixedIndexWriter(size);
    if (base) for (let k = 0; k < base.count; k++) index.set(k, base.chunk(k).size, base.digest(k));
    this.entries += count;
    this.writers.set(wid, { kind: 'fixed', name, index, size, count: 0, smallChunks: 0, incremental: !!base, stat: newStat() });
    this.log(`created new fixed index ${wid} (${name}, ${size} bytes${base ? ', incremental' : ''})`);
    return wid;
  }

  // ---- chunks --------------------------------------------------------------------------------

  private async uploadChunk(kind: 'dynamic' | 'fixed', p: Params, stream: ServerHttp2Stream): Promise<string> {
    this.ensureOpen();
    const wid = param.int(p, 'wid');
    const digest = param.str(p, 'digest');
    const size = param.int(p, 'size');
    const encodedSize = param.int(p, 'encoded-size');
    this.writerOf(kind, wid);
    const blob = await readBody(stream, encodedSize, () => badRequest('uploaded chunk is larger than announced.'));
    if (blob.length !== encodedSize) throw badRequest('uploaded chunk has unexpected size.');
    await verifyUploadedChunk(blob, digest, size);
    const stored = await this.datastore.chunks.insert(digest, blob);
    this.ensureOpen();
    const w = this.writerOf(kind, wid);
    if (w.kind === 'fixed') {
      if (size > FIXED_CHUNK_SIZE) throw badRequest(`fixed writer '${w.name}' - got large chunk (${size} > ${FIXED_CHUNK_SIZE})`);
      if (size < FIXED_CHUNK_SIZE && ++w.smallChunks > 1) {
        throw badRequest(`fixed writer '${w.name}' - detected multiple end chunks (chunk size too small)`);
      }
    }
    w.stat.count++;
    w.stat.size += size;
    w.stat.compressed_size += blob.length;
    if (stored.isDuplicate) w.stat.duplicates++;
    this.known.set(digest, size);
    return digest;
  }

  private append(kind: 'dynamic' | 'fixed', wid: number, digests: string[], offsets: number[]): null {
    this.ensureOpen();
    if (digests.length !== offsets.length) throw badRequest(`offset list has wrong length (${offsets.length} != ${digests.length})`);
    const w = this.writerOf(kind, wid);
    for (let i = 0; i < digests.length; i++) {
      const size = this.known.get(digests[i]);
      if (size === undefined) throw badRequest(`no such chunk ${digests[i]}`);
      const digest = Buffer.from(digests[i], 'hex');
      if (w.kind === 'dynamic') {
        if (w.offset !== offsets[i]) {
          throw badRequest(`dynamic writer '${w.name}' append chunk failed - got strange chunk offset (${w.offset} != ${offsets[i]})`);
        }
        if (this.entries >= MAX_SESSION_INDEX_ENTRIES) throw badRequest(`too many index entries in one backup session (at most ${MAX_SESSION_INDEX_ENTRIES})`);
        w.offset += size;
        w.index.add(w.offset, digest);
        this.entries++;
      } else {
        w.index.set(fixedChunkPosition(w, offsets[i], size), size, digest);
      }
      w.count++;
    }
    return null;
  }

  private async close(kind: 'dynamic' | 'fixed', wid: number, chunkCount: number, size: number, csumHex: string): Promise<null> {
    this.ensureOpen();
    const w = this.writerOf(kind, wid);
    this.writers.delete(wid); // as PBS: a failed close does not leave the writer open
    const what = `${kind} writer '${w.name}' close failed`;
    if (w.kind === 'dynamic') {
      if (w.count !== chunkCount) throw badRequest(`${what} - unexpected chunk count (${w.count} != ${chunkCount})`);
      if (w.offset !== size) throw badRequest(`${what} - unexpected file size (${w.offset} != ${size})`);
    } else {
      if (w.count !== chunkCount) throw badRequest(`${what} - received wrong number of chunk (${w.count} != ${chunkCount})`);
      if (!w.incremental) {
        if (chunkCount !== w.index.count) throw badRequest(`${what} - unexpected chunk count (${w.index.count} != ${chunkCount})`);
        if (size !== w.size) throw badRequest(`${what} - unexpected file size (${w.size} != ${size})`);
      }
    }
    let built: { data: Buffer; csum: Buffer; size: number };
    try {
      built = w.index.finish();
    } catch (e) {
      throw badRequest(`${what} - ${(e as Error).message}`);
    }
    if (built.csum.toString('hex') !== csumHex.toLowerCase()) throw badRequest(`${what} - got unexpected checksum`);
    await this.writer.addIndex(w.name, built.data, { csum: built.csum, size: built.size });
    this.fileCount++;
    this.backupStat.count += w.stat.count;
    this.backupStat.size += w.stat.size;
    this.backupStat.compressed_size += w.stat.compressed_size;
    this.backupStat.duplicates += w.stat.duplicates;
    this.log(`closed ${kind} index ${w.name}: ${w.count} chunks, ${built.size} bytes, ${w.stat.count} uploaded (${w.stat.duplicates} already stored)`);
    return null;
  }

  // ---- finish --------------------------------------------------------------------------------

  private async finish(): Promise<null> {
    this.ensureOpen();
    if (this.writers.size) throw badRequest('found open index writer - unable to finish backup');
    if (this.fileCount === 0) throw badRequest('backup does not contain valid files (file count == 0)');
    const manifest = this.manifest;
    if (!manifest) throw badRequest(`unable to update manifest blob - ${MANIFEST_BLOB_NAME} was not uploaded`);
    const prev = this.writer.previous;
    this.state = 'finishing';
    try {
      if (prev && !(await isDirectory(this.datastore.snapshotPath(prev)))) {
        throw badRequest(`base snapshot ${prev} was removed during backup, cannot finish as chunks might be missing`);
      }
      manifest.unprotected['chunk_upload_stats'] = { ...this.backupStat };
      if (!this.sessionOptions.benchmark) await this.writer.finish(manifest);
      this.state = 'finished';
    } catch (e) {
      this.state = 'open';
      if (e instanceof HttpError) throw e;
      throw badRequest(`unable to finish backup - ${(e as Error).message}`);
    }
    this.log('finished successfully');
    return null;
  }

  protected async onEnd(): Promise<void> {
    if (this.state === 'finished' && !this.sessionOptions.benchmark) {
      this.log('session ended');
      return;
    }
    this.log(this.sessionOptions.benchmark ? 'benchmark ended, removing its data' : 'connection ended before finish, removing the unfinished snapshot');
    await this.writer.abort();
  }
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isDirectory();
  } catch {
    return false;
  }
}

/** PBS `check_chunk_alignment`: the index position of a fixed-size chunk at `offset`. */
function fixedChunkPosition(w: FixedWriterState, offset: number, size: number): number {
  const end = offset + size;
  if (end > w.size) throw badRequest(`fixed writer '${w.name}' - chunk data exceeds size (${end} >= ${w.size})`);
  if ((end !== w.size && size !== FIXED_CHUNK_SIZE) || size > FIXED_CHUNK_SIZE) {
    throw badRequest(`fixed writer '${w.name}' - chunk with unexpected length (${size} != ${FIXED_CHUNK_SIZE})`);
  }
  if (offset % FIXED_CHUNK_SIZE !== 0) throw badRequest(`fixed writer '${w.name}' - got unaligned chunk (pos = ${offset})`);
  return offset / FIXED_CHUNK_SIZE;
}

/**
 * PBS upload check: a DataBlob magic and header; the CRC is recomputed (and written into the
 * header, as the server always does); unencrypted chunks must decode to `size` bytes hashing
 * to `digest`.
 */
async function verifyUploadedChunk(blob: Buffer, digest: string, size: number): Promise<void> {
  const magic = blob.subarray(0, 8);
  const encrypted = magic.equals(BLOB_MAGIC.encrypted) || magic.equals(BLOB_MAGIC.encryptedZstd);
  const plain = magic.equals(BLOB_MAGIC.uncompressed) || magic.equals(BLOB_MAGIC.zstd);
  if (!encrypted && !plain) throw badRequest(`uploaded chunk ${digest} is not a data blob (magic ${magic.toString('hex')})`);
  const header = encrypted ? ENCRYPTED_BLOB_HEADER_SIZE : BLOB_HEADER_SIZE;
  if (blob.length < header + (plain ? 0 : 1)) throw badRequest(`uploaded chunk ${digest} is truncated (${blob.length} bytes)`);
  blob.writeUInt32LE(native.crc32(blob.subarray(header)), 8);
  if (encrypted) return;
  let data: Buffer;
  try {
    data = await decodeBlobAsync(blob, MAX_CHUNK_SIZE, `uploaded chunk ${digest}`);
  } catch (e) {
    throw badRequest((e as Error).message);
  }
  if (data.length !== size) throw badRequest(`uploaded chunk ${digest} has wrong size (${data.length} != ${size})`);
  const actual = (await native.sha256Async(data)).toString('hex');
  if (actual !== digest) throw badRequest(`uploaded chunk has wrong digest (announced ${digest}, data hashes to ${actual})`);
}
