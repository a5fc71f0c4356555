/**
 * Client side of a reader (restore) session (spec protocol.md §4): downloads of snapshot
 * files and of chunks, with the client-side checks of the PBS restore flow.
 *
 * Invariants:
 *  - `downloadIndex`/`downloadBlob` check the file against its manifest entry (index csum and
 *    size, or SHA-256 and length of the blob) before returning it.
 *  - `readChunk` returns only verified data: CRC, decoding, SHA-256 == digest, and the size the
 *    index expects. Encrypted chunks are refused (decryption needs the key, not handled here).
 *  - Chunk responses are capped at the largest valid DataBlob.
 */
import { digestHex } from '../../datastore/chunk-store.js';
import type { ChunkSource } from '../../datastore/index-reader.js';
import { archiveKind } from '../../datastore/names.js';
import { BLOB_MAGIC, MAX_CHUNK_SIZE, decodeBlobAsync } from '../../format/blob.js';
import { DynamicIndex } from '../../format/dynamic-index.js';
import { FormatError } from '../../format/errors.js';
import { FixedIndex } from '../../format/fixed-index.js';
import { BackupManifest, MANIFEST_BLOB_NAME, blobCsum } from '../../format/manifest.js';
import { native } from '../../native/index.js';
import { MAX_ENCODED_SIZE } from '../../protocol/constants.js';
import { sessionPath } from '../../protocol/paths.js';
import type { SnapshotRef } from './backup-session.js';
import type { H2Connection } from './h2.js';

/** Largest file `download` accepts. */
const MAX_DOWNLOAD = 2 * 1024 * 1024 * 1024;

export class ReaderSession implements ChunkSource {
  constructor(
    private readonly conn: H2Connection,
    readonly store: string,
    readonly snapshot: SnapshotRef,
  ) {}

  get closed(): boolean {
    return this.conn.closed;
  }

  /** Raw bytes of a file of the snapshot. Downloading an index allows its chunks. */
  async download(name: string): Promise<Buffer> {
    archiveKind(name);
    return this.conn.bytes('GET', sessionPath('/download', { 'file-name': name }), MAX_DOWNLOAD);
  }

  async downloadManifest(): Promise<BackupManifest> {
    return BackupManifest.fromBlob(await this.download(MANIFEST_BLOB_NAME), `${MANIFEST_BLOB_NAME} of the remote snapshot`);
  }

  /** An index file, checked against its manifest entry (the manifest is fetched if not given). */
  async downloadIndex(name: string, manifest?: BackupManifest): Promise<DynamicIndex | FixedIndex> {
    const kind = archiveKind(name);
    if (kind === 'blob') throw new Error(`${name} is a blob, not an index`);
    const m = manifest ?? (await this.downloadManifest());
    const entry = m.lookup(name);
    if (!entry) throw new Error(`archive ${name} is not listed in the manifest`);
    const data = await this.download(name);
    const index = kind === 'didx' ? DynamicIndex.parse(data, name) : FixedIndex.parse(data, name);
    const csum = index.computeCsum();
    if (!csum.equals(entry.csum)) throw new FormatError(`${name}: index checksum ${csum.toString('hex')} does not match the manifest (${entry.csum.toString('hex')})`);
    if (index.size !== entry.size) throw new FormatError(`${name}: index describes ${index.size} bytes, the manifest says ${entry.size}`);
    return index;
  }

  /** The encoded bytes of a blob, checked against its manifest entry. */
  async downloadBlob(name: string, manifest?: BackupManifest): Promise<Buffer> {
    if (archiveKind(name) !== 'blob') throw new Error(`${name} is not a blob`);
    const m = manifest ?? (await this.downloadManifest());
    const entry = m.lookup(name);
    if (!entry) throw new Error(`blob ${name} is not listed in the manifest`);
    const data = await this.download(name);
    if (data.length !== entry.size || !blobCsum(data).equals(entry.csum)) throw new FormatError(`blob ${name}: size or checksum does not match the manifest`);
    return data;
  }

  /** The stored DataBlob of a chunk referenced by an index downloaded in this session. */
  async chunk(digest: Uint8Array | string): Promise<Buffer> {
    return this.conn.bytes('GET', sessionPath('/chunk', { digest: digestHex(digest) }), MAX_ENCODED_SIZE);
  }

  /** Decoded, verified chunk data (`ChunkSource` for `indexStream`/`IndexReadAt`). */
  async readChunk(digest: Uint8Array | string, expectedSize?: number): Promise<Buffer> {
    const hex = digestHex(digest);
    const blob = await this.chunk(hex);
    const magic = blob.subarray(0, 8);
    if (magic.equals(BLOB_MAGIC.encrypted) || magic.equals(BLOB_MAGIC.encryptedZstd)) {
      throw new Error(`chunk ${hex} is encrypted; reading it needs the encryption key`);
    }
    const data = await decodeBlobAsync(blob, MAX_CHUNK_SIZE, `chunk ${hex} from the server`);
    const actual = (await native.sha256Async(data)).toString('hex');
    if (actual !== hex) throw new FormatError(`chunk ${hex} from the server is corrupt: its content hashes to ${actual}`);
    if (expectedSize !== undefined && data.length !== expectedSize) {
      throw new FormatError(`chunk ${hex} from the server is corrupt: ${data.length} bytes, the index expects ${expectedSize}`);
    }
    return data;
  }

  /** `GET /speedtest`: bytes received. */
  async speedtest(): Promise<number> {
    return (await this.conn.bytes('GET', '/speedtest', 2 * 1024 * 1024)).length;
  }

  close(): Promise<void> {
    return this.conn.close();
  }

  abort(): void {
    this.conn.destroy();
  }
}
