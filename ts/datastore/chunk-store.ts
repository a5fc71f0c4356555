/**
 * ChunkStore: content-addressed DataBlobs under `.chunks/<hhhh>/<64 hex digest>` (spec
 * datastore.md §1, §4; insert rules gc-prune-verify.md §1.5).
 *
 * Invariants:
 *  - The file name is the lowercase hex digest; `<hhhh>` = its first 2 bytes (4 hex chars).
 *  - Prefix directories are created lazily (mode 0750) on first insert, not all 65 536 up front
 *    as PBS does; readers and GC must treat a missing prefix directory as empty.
 *  - `insert` is idempotent and atomic: a new chunk is published with link(2) (`ifAbsent`), so
 *    concurrent inserters of the same digest — async tasks or processes — never expose a partial
 *    file and exactly one of them reports `isDuplicate: false`. An existing chunk follows PBS:
 *    same size → duplicate (atime touched); empty file → replaced; different size → the
 *    encryption/compression rules of PBS `insert_chunk` (keep the smaller unencrypted copy,
 *    refuse encrypted over unencrypted, …).
 *  - `readChunk` never returns unverified data: it decodes (magic, CRC, zstd) and checks SHA-256
 *    and the expected size; every failure is a `ChunkError` naming the digest.
 */
import { mkdir } from 'node:fs/promises';
import { TEMP_MARKER, isNotFound } from '../backend/backend.js';
import { touchStatus, type FsBackend } from '../backend/fs.js';
import { BLOB_MAGIC, MAX_CHUNK_SIZE, decodeBlobAsync } from '../format/blob.js';
import { native } from '../native/index.js';
import { STORE_KNOWN, STORE_NEW, readChunkInto, storeChunk, touchChunks } from '../native/fs.js';

export const CHUNK_DIR = '.chunks';
/** Mode of the `.chunks/XXXX` prefix directories. */
const CHUNK_PREFIX_DIR_MODE = 0o750;
const DIGEST_HEX_RE = /^[0-9a-f]{64}$/;

export type Digest = Uint8Array | string;

/** A chunk that is missing or fails verification. */
export class ChunkError extends Error {
  override name = 'ChunkError';
  constructor(
    readonly digest: string,
    readonly reason: 'missing' | 'corrupt',
    message: string,
  ) {
    super(message);
  }
}

export interface InsertResult {
  /** True if a usable copy already existed (nothing new was written). */
  isDuplicate: boolean;
  /** Size of the stored chunk file. */
  encodedSize: number;
}

/** Lowercase hex of a 32-byte digest (given as bytes or hex); throws on anything else. */
export function digestHex(digest: Digest): string {
  if (typeof digest === 'string') {
    const d = digest.toLowerCase();
    if (!DIGEST_HEX_RE.test(d)) throw new Error(`invalid chunk digest ${JSON.stringify(digest)} (expected 64 hex digits)`);
    return d;
  }
  if (!(digest instanceof Uint8Array) || digest.length !== 32) throw new Error('invalid chunk digest: expected 32 bytes');
  return Buffer.from(digest.buffer, digest.byteOffset, 32).toString('hex');
}

/** Relative key `.chunks/<hhhh>/<hex>` of a digest. */
export function chunkKey(digest: Digest): string {
  const hex = digestHex(digest);
  return `${CHUNK_DIR}/${hex.slice(0, 4)}/${hex}`;
}

type StoredKind = 'plain' | 'encrypted' | 'encrypted-uncompressed';

/** Kind of a blob by its magic, or null if it is not a DataBlob. */
function blobKind(head: Uint8Array): StoredKind | null {
  const m = Buffer.from(head.buffer, head.byteOffset, Math.min(8, head.length));
  if (m.equals(BLOB_MAGIC.uncompressed) || m.equals(BLOB_MAGIC.zstd)) return 'plain';
  if (m.equals(BLOB_MAGIC.encrypted)) return 'encrypted-uncompressed';
  if (m.equals(BLOB_MAGIC.encryptedZstd)) return 'encrypted';
  return null;
}

export class ChunkStore {
  private readonly prefixDirs = new Set<string>();

  constructor(readonly backend: FsBackend) {}

  /** Absolute path of a chunk file. */
  chunkPath(digest: Digest): string {
    return this.backend.pathOf(chunkKey(digest));
  }

  /** Store an encoded chunk (DataBlob bytes) under its digest. */
  async insert(digest: Digest, blob: Uint8Array): Promise<InsertResult> {
    const hex = digestHex(digest);
    const key = chunkKey(hex);
    const kind = blobKind(blob);
    if (!kind || blob.length < (kind === 'plain' ? 12 : 44)) {
      throw new Error(`chunk ${hex}: refusing to insert, not a data blob (${blob.length} bytes, magic ${Buffer.from(blob.subarray(0, 8)).toString('hex')})`);
    }
    await this.ensurePrefixDir(hex);
    // Callers insert chunks a dedup check found missing, so try to publish right away (one
    // job); only when a file is there already are the PBS rules below consulted.
    if ((await this.backend.put(key, blob, { ifAbsent: true })).created) return { isDuplicate: false, encodedSize: blob.length };
    // A lost ifAbsent race means another writer published first: re-evaluate against its copy.
    for (let attempt = 0; attempt < 3; attempt++) {
      const st = await this.backend.stat(key);
      if (!st) {
        if ((await this.backend.put(key, blob, { ifAbsent: true })).created) return { isDuplicate: false, encodedSize: blob.length };
        continue;
      }
      // The touch also proves the chunk is still there: GC or verify may have moved it away
      // since the stat, and then it must be written again.
      if (st.size === blob.length) {
        if (await this.backend.touch(key)) return { isDuplicate: true, encodedSize: st.size };
        continue;
      }
      if (st.size !== 0 && !(await this.shouldReplace(hex, key, kind, st.size, blob.length))) {
        if (await this.backend.touch(key)) return { isDuplicate: true, encodedSize: st.size };
        continue;
      }
      await this.backend.put(key, blob);
      return { isDuplicate: false, encodedSize: blob.length };
    }
    throw new Error(`chunk ${hex}: insert did not settle (the chunk file keeps changing)`);
  }

  /**
   * A backup's chunk: hash, dedup-check and store raw data in one native job (no JS between
   * the steps). `known`: a non-empty chunk file exists and was touched (GC mark), nothing was
   * encoded. `new`: written now. Anything else (an empty file left by a crash, an odd file in
   * the way, a lost race) goes through `insert` with the encoded blob, which repairs it.
   */
  async storeData(data: Uint8Array, compress: boolean): Promise<{ digest: Buffer; outcome: 'known' | 'new'; size: number }> {
    const r = await storeChunk(data, {
      chunkDir: this.backend.pathOf(CHUNK_DIR),
      compress,
      fsync: this.backend.fsync,
      fileMode: this.backend.fileMode,
      dirMode: CHUNK_PREFIX_DIR_MODE,
      tmpMarker: TEMP_MARKER,
    });
    if (r.status === STORE_KNOWN) return { digest: r.digest, outcome: 'known', size: 0 };
    if (r.status === STORE_NEW) return { digest: r.digest, outcome: 'new', size: r.size };
    const ins = await this.insert(r.digest, r.blob!);
    return { digest: r.digest, outcome: ins.isDuplicate ? 'known' : 'new', size: ins.isDuplicate ? 0 : ins.encodedSize };
  }

  /** PBS rules for an existing non-empty chunk of a different size. */
  private async shouldReplace(hex: string, key: string, incoming: StoredKind, oldSize: number, newSize: number): Promise<boolean> {
    const existing = blobKind(await this.backend.getRange(key, 0, Math.min(8, oldSize)));
    if (incoming === 'plain') {
      // A verified unencrypted chunk (its content hashes to the digest) replaces a copy that
      // claims to be encrypted: an encrypted chunk's digest is keyed, so a real one cannot
      // share a digest with plain data, and keeping it would let any uploader plant garbage
      // under a digest other clients then dedup against. Otherwise keep the smaller copy.
      return existing !== 'plain' || newSize < oldSize;
    }
    if (existing === 'plain') {
      throw new Error(`chunk ${hex}: refusing to overwrite an unencrypted chunk with an encrypted one of the same digest`);
    }
    if (existing === 'encrypted-uncompressed' && incoming === 'encrypted-uncompressed') {
      throw new Error(`chunk ${hex}: an uncompressed encrypted chunk with this digest but another size exists; one of them is invalid`);
    }
    // Compressed copies may differ between zstd versions: keep the first one.
    return false;
  }

  private async ensurePrefixDir(hex: string): Promise<void> {
    const prefix = hex.slice(0, 4);
    if (this.prefixDirs.has(prefix)) return;
    await mkdir(this.backend.pathOf(`${CHUNK_DIR}/${prefix}`), { recursive: true, mode: CHUNK_PREFIX_DIR_MODE });
    this.prefixDirs.add(prefix);
  }

  async has(digest: Digest): Promise<boolean> {
    return this.backend.exists(chunkKey(digest));
  }

  /** Size of the chunk file, or null if missing. */
  async size(digest: Digest): Promise<number | null> {
    return (await this.backend.stat(chunkKey(digest)))?.size ?? null;
  }

  /** Update the chunk's atime (GC mark); false if the chunk is missing. */
  async touch(digest: Digest): Promise<boolean> {
    return this.backend.touch(chunkKey(digest));
  }

  /**
   * `touch` for many chunks in one job; per digest false if it is missing. The addon makes the
   * chunk paths from the digests: through the backend's keys and paths, a no-change backup of
   * the linux tree spent ~2-3 ms more of its JavaScript thread on its ~1,000 reused chunks.
   */
  async touchMany(digests: Digest[]): Promise<boolean[]> {
    const raw = Buffer.allocUnsafe(digests.length * 32);
    digests.forEach((d, k) => {
      if (typeof d === 'string') raw.write(digestHex(d), k * 32, 'hex');
      else if (d instanceof Uint8Array && d.length === 32) raw.set(d, k * 32);
      else digestHex(d); // (throws: not a digest)
    });
    const st = await touchChunks(this.backend.pathOf(CHUNK_DIR), raw);
    return digests.map((d, k) => (st[k] === 0 ? true : touchStatus(st[k], chunkKey(d), this.chunkPath(d))));
  }

  /** The stored (encoded) blob bytes, unverified. */
  async load(digest: Digest): Promise<Buffer> {
    const hex = digestHex(digest);
    try {
      return await this.backend.get(chunkKey(hex));
    } catch (e) {
      if (isNotFound(e)) throw this.missing(hex);
      throw e;
    }
  }

  /**
   * Load, decode and verify an unencrypted chunk: magic, CRC, zstd, SHA-256 == digest and,
   * if given, the decoded size. Returns the chunk data. Encrypted chunks are refused (they
   * need the key; decoding them belongs to the crypto layer).
   */
  async readChunk(digest: Digest, expectedSize?: number): Promise<Buffer> {
    const hex = digestHex(digest);
    const blob = await this.load(hex);
    const kind = blobKind(blob);
    if (kind === 'encrypted' || kind === 'encrypted-uncompressed') throw encryptedChunk(hex);
    let data: Buffer;
    try {
      data = await decodeBlobAsync(blob, MAX_CHUNK_SIZE, `chunk ${hex} is corrupt`);
    } catch (e) {
      throw new ChunkError(hex, 'corrupt', (e as Error).message);
    }
    const actual = (await native.sha256Async(data)).toString('hex');
    if (actual !== hex) {
      throw new ChunkError(hex, 'corrupt', `chunk ${hex} is corrupt: its content hashes to ${actual}`);
    }
    if (expectedSize !== undefined && data.length !== expectedSize) throw wrongSize(hex, data.length, expectedSize);
    return data;
  }

  /**
   * `readChunk` into `into` (at least `expectedSize` bytes) in one native job (open, read,
   * decode, SHA-256) that allocates nothing for the data, so a sequential reader can recycle
   * its buffers. Returns the view of `into` holding the chunk. `into` must not be touched
   * before the promise settles.
   */
  async readChunkInto(digest: Digest, expectedSize: number, into: Buffer): Promise<Buffer> {
    const hex = digestHex(digest);
    if (into.length < expectedSize) throw new RangeError(`readChunkInto: ${into.length} bytes of room for a ${expectedSize}-byte chunk`);
    let n: number;
    try {
      n = await readChunkInto(this.chunkPath(hex), into, typeof digest === 'string' ? Buffer.from(hex, 'hex') : digest);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // as the backend's get: a directory in place of the file is no chunk either
      if (code === 'ENOENT' || code === 'EISDIR') throw this.missing(hex);
      const m = (e as Error).message;
      if (code !== undefined) throw new Error(`cannot read chunk ${hex}: ${m}`);
      if (m.startsWith('blob is encrypted')) throw encryptedChunk(hex);
      throw new ChunkError(hex, 'corrupt', `chunk ${hex} is corrupt: ${m}`);
    }
    if (n !== expectedSize) throw wrongSize(hex, n, expectedSize);
    return into.subarray(0, n);
  }

  private missing(hex: string): ChunkError {
    return new ChunkError(hex, 'missing', `chunk ${hex} is missing (${this.chunkPath(hex)})`);
  }
}

const encryptedChunk = (hex: string) => new Error(`chunk ${hex} is encrypted; reading it needs the encryption key`);
const wrongSize = (hex: string, n: number, expected: number) => new ChunkError(hex, 'corrupt', `chunk ${hex} is corrupt: ${n} bytes, the index expects ${expected}`);
