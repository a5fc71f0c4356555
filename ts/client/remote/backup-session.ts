/**
 * Client side of a backup (writer) session (spec protocol.md §3): one typed call per endpoint,
 * plus `IndexUploader`, which streams one archive the way the PBS client does (§3.3): new
 * chunks are uploaded pipelined (bounded by count and bytes in flight), known chunks are only
 * appended, appends go out in stream order in batches once their uploads were acknowledged,
 * and close sends the count, size and csum computed while streaming.
 *
 * Invariants:
 *  - The known set mirrors the server's: a digest becomes known when its upload was
 *    acknowledged or when `downloadPrevious` fetched an index referencing it.
 *  - A digest is uploaded at most once per session, even when several archives or several
 *    places of one archive contain it concurrently.
 *  - The first failure of a pipelined upload or append is rethrown by the next `add`/`close`.
 *  - `abort()` drops the connection; the server then removes the unfinished snapshot.
 */
import { createHash, type Hash } from 'node:crypto';
import type { BackupType } from '../../format/manifest.js';
import { digestHex } from '../../datastore/chunk-store.js';
import { DynamicIndex } from '../../format/dynamic-index.js';
import { FixedIndex } from '../../format/fixed-index.js';
import { BackupManifest, MANIFEST_BLOB_NAME, blobCsum } from '../../format/manifest.js';
import { archiveKind } from '../../datastore/names.js';
import { APPEND_BATCH_SIZE, MAX_ENCODED_SIZE } from '../../protocol/constants.js';
import { sessionPath } from '../../protocol/paths.js';
import { Semaphore } from '../../protocol/semaphore.js';
import { ProtocolError, RemoteError } from './errors.js';
import type { H2Connection } from './h2.js';

export type IndexKind = 'dynamic' | 'fixed';

export interface SnapshotRef {
  /** Namespace `a/b` ('' or undefined = root). */
  ns?: string;
  backupType: BackupType;
  backupId: string;
  backupTime: number;
}

export interface ChunkData {
  digest: Uint8Array | string;
  /** Plain (decoded) size. */
  size: number;
  /** The encoded DataBlob. */
  blob: Uint8Array;
}

export interface IndexCloseInfo {
  chunkCount: number;
  size: number;
  /** Index csum (32 bytes or 64 hex digits). */
  csum: Uint8Array | string;
}

export interface BackupSessionOptions {
  /** Chunk uploads in flight at once (default 32). */
  maxUploads?: number;
  /** Encoded bytes of chunk uploads in flight at once (default 64 MiB). */
  maxUploadBytes?: number;
}

/** Largest append body: 1024 entries of ~90 JSON bytes stay far below the 512 KiB limit. */
const MAX_APPEND_ENTRIES = 1024;
/** Largest file `downloadPrevious` accepts. */
const MAX_DOWNLOAD = 2 * 1024 * 1024 * 1024;

const hexOf = (d: Uint8Array | string): string => digestHex(d);

export class BackupSession {
  private readonly known = new Map<string, number>();
  private readonly uploading = new Map<string, Promise<void>>();
  private readonly uploadCount: Semaphore;
  private readonly uploadBytes: Semaphore;

  constructor(
    private readonly conn: H2Connection,
    readonly store: string,
    readonly snapshot: SnapshotRef,
    options: BackupSessionOptions = {},
  ) {
    this.uploadCount = new Semaphore(options.maxUploads ?? 32);
    this.uploadBytes = new Semaphore(options.maxUploadBytes ?? 64 * 1024 * 1024);
  }

  get closed(): boolean {
    return this.conn.closed;
  }

  /** True if the server knows `digest` in this session (uploaded or from a previous index). */
  isKnown(digest: Uint8Array | string): boolean {
    return this.known.has(hexOf(digest));
  }

  // ---- previous snapshot ---------------------------------------------------------------------

  /** Time of the previous (base) snapshot, or null if the group has none usable. */
  async previousBackupTime(): Promise<number | null> {
    const v = await this.conn.json('GET', '/previous_backup_time');
    if (v !== null && !(typeof v === 'number' && Number.isSafeInteger(v))) throw new ProtocolError(`previous_backup_time: unexpected value ${JSON.stringify(v)}`);
    return v as number | null;
  }

  /**
   * A file of the previous snapshot. For an index, its chunks become known (here and on the
   * server), so they can be appended without upload.
   */
  async downloadPrevious(name: string): Promise<Buffer> {
    const kind = archiveKind(name);
    const data = await this.conn.bytes('GET', sessionPath('/previous', { 'archive-name': name }), MAX_DOWNLOAD);
    if (kind !== 'blob') {
      const index = kind === 'didx' ? DynamicIndex.parse(data, `previous ${name}`) : FixedIndex.parse(data, `previous ${name}`);
      for (let k = 0; k < index.count; k++) {
        const c = index.chunk(k);
        this.known.set(c.digest.toString('hex'), c.size);
      }
    }
    return data;
  }

  /** The previous snapshot's manifest, or null when there is no previous snapshot. */
  async previousManifest(): Promise<BackupManifest | null> {
    if ((await this.previousBackupTime()) === null) return null;
    try {
      return BackupManifest.fromBlob(await this.downloadPrevious(MANIFEST_BLOB_NAME), `previous ${MANIFEST_BLOB_NAME}`);
    } catch (e) {
      if (e instanceof RemoteError && e.status === 404) return null;
      throw e;
    }
  }

  // ---- blobs ---------------------------------------------------------------------------------

  /** Upload an encoded blob; returns what its manifest entry needs. */
  async uploadBlob(name: string, encoded: Uint8Array): Promise<{ size: number; csum: Buffer }> {
    if (archiveKind(name) !== 'blob') throw new Error(`${name} is not a .blob name`);
    if (encoded.length > MAX_ENCODED_SIZE) throw new Error(`blob ${name} is too large (${encoded.length} > ${MAX_ENCODED_SIZE} bytes)`);
    await this.conn.json('POST', sessionPath('/blob', { 'file-name': name, 'encoded-size': encoded.length }), {
      body: encoded,
      contentType: 'application/octet-stream',
    });
    return { size: encoded.length, csum: blobCsum(encoded) };
  }

  /** Upload the manifest (`index.json.blob`), the last upload before `finish`. */
  async uploadManifest(manifest: BackupManifest): Promise<void> {
    await this.uploadBlob(MANIFEST_BLOB_NAME, manifest.toBlob());
  }

  // ---- index writers -------------------------------------------------------------------------

  async createDynamicIndex(name: string): Promise<number> {
    return this.wid(await this.conn.json('POST', sessionPath('/dynamic_index', { 'archive-name': name })));
  }

  async createFixedIndex(name: string, size: number, reuseCsum?: Uint8Array | string): Promise<number> {
    const reuse = reuseCsum === undefined ? undefined : hexOf(reuseCsum);
    return this.wid(await this.conn.json('POST', sessionPath('/fixed_index', { 'archive-name': name, size, 'reuse-csum': reuse })));
  }

  private wid(v: unknown): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new ProtocolError(`server returned an invalid writer id ${JSON.stringify(v)}`);
    return v;
  }

  /**
   * Upload one chunk; resolves when the server acknowledged it. Several may be in flight: the
   * call waits while `maxUploads` chunks or `maxUploadBytes` bytes are on the way.
   */
  async uploadChunk(wid: number, chunk: ChunkData, kind: IndexKind = 'dynamic'): Promise<void> {
    const release = await this.uploadSlot(chunk.blob.length);
    try {
      await this.sendChunk(kind, wid, hexOf(chunk.digest), chunk.size, chunk.blob);
    } finally {
      release();
    }
  }

  private async uploadSlot(bytes: number): Promise<() => void> {
    const releaseCount = await this.uploadCount.acquire();
    const releaseBytes = await this.uploadBytes.acquire(bytes);
    return () => {
      releaseBytes();
      releaseCount();
    };
  }

  private async sendChunk(kind: IndexKind, wid: number, digest: string, size: number, blob: Uint8Array): Promise<void> {
    const path = sessionPath(`/${kind}_chunk`, { wid, digest, size, 'encoded-size': blob.length });
    const echoed = await this.conn.json('POST', path, { body: blob, contentType: 'application/octet-stream' });
    if (echoed !== digest) throw new ProtocolError(`chunk upload ${digest}: server answered ${JSON.stringify(echoed)}`);
    this.known.set(digest, size);
  }

  /** Append entries (start offsets) to an index; sent in order, in batches. */
  async appendChunks(wid: number, entries: ReadonlyArray<{ digest: Uint8Array | string; offset: number }>, kind: IndexKind = 'dynamic'): Promise<void> {
    for (let i = 0; i < entries.length; i += MAX_APPEND_ENTRIES) {
      const batch = entries.slice(i, i + MAX_APPEND_ENTRIES);
      const body = JSON.stringify({ wid, 'digest-list': batch.map((e) => hexOf(e.digest)), 'offset-list': batch.map((e) => e.offset) });
      await this.conn.json('PUT', `/${kind}_index`, { body: Buffer.from(body), contentType: 'application/json' });
    }
  }

  async closeIndex(wid: number, info: IndexCloseInfo, kind: IndexKind): Promise<void> {
    const csum = typeof info.csum === 'string' ? info.csum.toLowerCase() : Buffer.from(info.csum).toString('hex');
    await this.conn.json('POST', sessionPath(`/${kind}_close`, { wid, 'chunk-count': info.chunkCount, size: info.size, csum }));
  }

  closeDynamicIndex(wid: number, info: IndexCloseInfo): Promise<void> {
    return this.closeIndex(wid, info, 'dynamic');
  }

  closeFixedIndex(wid: number, info: IndexCloseInfo): Promise<void> {
    return this.closeIndex(wid, info, 'fixed');
  }

  /** Stream a dynamic archive (`.didx`). */
  async dynamicUploader(name: string): Promise<IndexUploader> {
    if (!name.endsWith('.didx')) throw new Error(`${name}: a dynamic index name must end in .didx`);
    return new IndexUploader(this, 'dynamic', await this.createDynamicIndex(name), name);
  }

  /** Stream a fixed-size image (`.fidx`) of `size` bytes in 4 MiB chunks, in order. */
  async fixedUploader(name: string, size: number): Promise<IndexUploader> {
    if (!name.endsWith('.fidx')) throw new Error(`${name}: a fixed index name must end in .fidx`);
    return new IndexUploader(this, 'fixed', await this.createFixedIndex(name, size), name);
  }

  /**
   * Start uploading `chunk` unless the server knows it or it is being uploaded; resolves once
   * the upload is under way (bounded), with a promise for its acknowledgement.
   */
  async ensureChunk(kind: IndexKind, wid: number, digest: string, size: number, blob: Uint8Array | undefined): Promise<{ ack: Promise<void>; uploaded: boolean }> {
    if (this.known.has(digest)) return { ack: Promise.resolve(), uploaded: false };
    const running = this.uploading.get(digest);
    if (running) return { ack: running, uploaded: false };
    if (!blob) throw new Error(`chunk ${digest} is not known to the server and no data was given for it`);
    const release = await this.uploadSlot(blob.length);
    // Another add may have started or finished the same digest while we waited.
    const again = this.known.has(digest) ? Promise.resolve() : this.uploading.get(digest);
    if (again) {
      release();
      return { ack: again, uploaded: false };
    }
    const ack = this.sendChunk(kind, wid, digest, size, blob).finally(() => {
      release();
      this.uploading.delete(digest);
    });
    ack.catch(() => undefined);
    this.uploading.set(digest, ack);
    return { ack, uploaded: true };
  }

  /** Finish the snapshot (everything closed, manifest uploaded) and close the connection. */
  async finish(): Promise<void> {
    await this.conn.json('POST', '/finish');
    await this.conn.close();
  }

  /** Drop the connection; the server removes the unfinished snapshot. */
  abort(): void {
    this.conn.destroy();
  }
}

export interface IndexUploadResult {
  name: string;
  /** Archive stream size (dynamic) or image size (fixed). */
  size: number;
  csum: Buffer;
  chunkCount: number;
  /** Chunks sent to the server. */
  uploadedChunks: number;
  /** Encoded bytes sent. */
  uploadedBytes: number;
  /** Chunks the server already knew (previous snapshot, or earlier in this session). */
  knownChunks: number;
}

interface PendingEntry {
  digest: string;
  offset: number;
  ack: Promise<void>;
}

/** One archive being uploaded; see the file comment. */
export class IndexUploader {
  private readonly hash: Hash = createHash('sha256');
  private offset = 0;
  private count = 0;
  private batch: PendingEntry[] = [];
  private chain: Promise<void> = Promise.resolve();
  private pendingBatches = 0;
  private failure: Error | null = null;
  private closed = false;
  private readonly stats = { uploadedChunks: 0, uploadedBytes: 0, knownChunks: 0 };

  constructor(
    private readonly session: BackupSession,
    readonly kind: IndexKind,
    readonly wid: number,
    readonly name: string,
  ) {}

  /** Stream bytes added so far (the start offset of the next chunk). */
  get size(): number {
    return this.offset;
  }

  /**
   * Add the next chunk of the stream. `blob` may be left out for a chunk the server knows.
   * Resolves when the chunk is accepted into the pipeline (waits while too much is in flight).
   */
  async add(chunk: { digest: Uint8Array | string; size: number; blob?: Uint8Array }): Promise<void> {
    this.check();
    if (!Number.isSafeInteger(chunk.size) || chunk.size < 1) throw new Error(`${this.name}: invalid chunk size ${chunk.size}`);
    const digest = hexOf(chunk.digest);
    const offset = this.offset;
    this.offset += chunk.size;
    this.count++;
    if (this.kind === 'dynamic') {
      const end = Buffer.allocUnsafe(8);
      end.writeBigUInt64LE(BigInt(this.offset));
      this.hash.update(end);
    }
    this.hash.update(Buffer.from(digest, 'hex'));
    let started: { ack: Promise<void>; uploaded: boolean };
    try {
      started = await this.session.ensureChunk(this.kind, this.wid, digest, chunk.size, chunk.blob);
    } catch (e) {
      this.fail(e as Error); // the stream has a hole now: the uploader cannot go on
      throw e;
    }
    const { ack, uploaded } = started;
    if (uploaded) {
      this.stats.uploadedChunks++;
      this.stats.uploadedBytes += chunk.blob?.length ?? 0;
    } else this.stats.knownChunks++;
    ack.catch((e: Error) => this.fail(e));
    this.batch.push({ digest, offset, ack });
    if (this.batch.length >= APPEND_BATCH_SIZE) await this.flush();
  }

  private async flush(): Promise<void> {
    if (!this.batch.length) return;
    const entries = this.batch;
    this.batch = [];
    const acked = Promise.all(entries.map((e) => e.ack));
    this.pendingBatches++;
    this.chain = this.chain
      .then(() => acked)
      .then(() => this.session.appendChunks(this.wid, entries, this.kind))
      .finally(() => this.pendingBatches--);
    this.chain.catch((e: Error) => this.fail(e));
    // Bound the appends waiting for acknowledgements (each holds its entries).
    if (this.pendingBatches > 16) await this.chain.catch(() => undefined);
  }

  private fail(e: Error): void {
    this.failure ??= e;
  }

  private check(): void {
    if (this.closed) throw new Error(`${this.name}: uploader is closed`);
    if (this.failure) throw this.failure;
  }

  /** Wait for every upload and append, close the index on the server, return its csum/size. */
  async close(): Promise<IndexUploadResult> {
    this.check();
    await this.flush();
    await this.chain.catch(() => undefined);
    this.check();
    this.closed = true;
    const csum = this.hash.digest();
    await this.session.closeIndex(this.wid, { chunkCount: this.count, size: this.offset, csum }, this.kind);
    return { name: this.name, size: this.offset, csum, chunkCount: this.count, ...this.stats };
  }
}
