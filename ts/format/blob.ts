/**
 * DataBlob (spec datastore.md §4): chunks and `.blob` files. The codec itself is native
 * (CRC, zstd); this module names the magics and gives typed wrappers.
 */
import { native, type BlobKind } from '../native/index.js';
import { FormatError } from './errors.js';

export const BLOB_MAGIC = {
  uncompressed: Buffer.from([66, 171, 56, 7, 190, 131, 112, 161]),
  zstd: Buffer.from([49, 185, 88, 66, 111, 182, 163, 127]),
  encrypted: Buffer.from([123, 103, 133, 190, 34, 45, 76, 240]),
  encryptedZstd: Buffer.from([230, 89, 27, 191, 11, 191, 216, 11]),
} as const;

/** Largest chunk the protocol accepts and decode will produce. */
export const MAX_CHUNK_SIZE = 16 * 1024 * 1024;

export type { BlobKind };

/** Encode `data` as an unencrypted blob, zstd-1 compressed when that is not larger. */
export function encodeBlob(data: Uint8Array, compress = true): Buffer {
  return native.encodeBlob(data, compress);
}

export function encodeBlobAsync(data: Uint8Array, compress = true): Promise<Buffer> {
  return native.encodeBlobAsync(data, compress);
}

/** Decode a blob, checking magic and CRC; refuses more than `limit` bytes of output. */
export function decodeBlob(blob: Uint8Array, limit = MAX_CHUNK_SIZE, what = 'blob'): Buffer {
  try {
    return native.decodeBlob(blob, limit);
  } catch (e) {
    throw new FormatError(`${what}: ${(e as Error).message}`);
  }
}

export async function decodeBlobAsync(blob: Uint8Array, limit = MAX_CHUNK_SIZE, what = 'blob'): Promise<Buffer> {
  try {
    return await native.decodeBlobAsync(blob, limit);
  } catch (e) {
    throw new FormatError(`${what}: ${(e as Error).message}`);
  }
}

/** Check magic and CRC without decoding; returns the blob kind. */
export function verifyBlob(blob: Uint8Array, what = 'blob'): BlobKind {
  try {
    return native.verifyBlob(blob);
  } catch (e) {
    throw new FormatError(`${what}: ${(e as Error).message}`);
  }
}
