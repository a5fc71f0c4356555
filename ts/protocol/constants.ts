/**
 * Constants of the PBS HTTP API and of its backup/reader protocols (spec protocol.md §1, §3,
 * §4; size limits from datastore.md §4). Shared by `pxb serve` and the protocol client, so
 * both sides agree on every limit.
 */
import { MAX_CHUNK_SIZE } from '../format/blob.js';
import { FIXED_CHUNK_SIZE } from '../format/fixed-index.js';

export { MAX_CHUNK_SIZE, FIXED_CHUNK_SIZE };

export const DEFAULT_PORT = 8007;
export const DEFAULT_HOST = 'localhost';
/** Auth id the PBS client assumes when a repository names none. */
export const DEFAULT_AUTH_ID = 'root@pam';
export const API_PREFIX = '/api2/json';

/** `Upgrade:` value of a backup (writer) session. */
export const BACKUP_PROTOCOL_ID = 'proxmox-backup-protocol-v1';
/** `Upgrade:` value of a reader (restore) session. */
export const READER_PROTOCOL_ID = 'proxmox-backup-reader-protocol-v1';

export const USER_AGENT = 'proxmox-backup-client/1.0';
/** Authority of requests inside an upgraded session (the server ignores it). */
export const H2_AUTHORITY = 'https://localhost:8007';

export const BLOB_HEADER_SIZE = 12;
export const ENCRYPTED_BLOB_HEADER_SIZE = 44;
/** Largest `encoded-size` of a chunk or blob upload: 16 MiB of data plus the encrypted header. */
export const MAX_ENCODED_SIZE = MAX_CHUNK_SIZE + ENCRYPTED_BLOB_HEADER_SIZE;
/** Smallest chunk upload: a header and one byte. */
export const MIN_CHUNK_ENCODED_SIZE = BLOB_HEADER_SIZE + 1;
/** Smallest blob upload: a bare header (empty payload). */
export const MIN_BLOB_ENCODED_SIZE = BLOB_HEADER_SIZE;

/** Index writer ids are 1..256 per session. */
export const MAX_WRITER_ID = 256;

/** Limit of a non-upload request body (JSON or form), bytes. */
export const MAX_REQUEST_BODY = 512 * 1024;
/** The PBS client refuses query strings longer than this inside a session. */
export const MAX_H2_QUERY_LENGTH = 4096;
/** The REST server answers 414 when path + query exceed this. */
export const MAX_REST_URI_LENGTH = 3072;

/** Appends are sent once this many index entries are pending (PBS client behaviour). */
export const APPEND_BATCH_SIZE = 64;

/** Data of `GET /speedtest` in a reader session: 1 MiB of 'A'. */
export const SPEEDTEST_SIZE = 1024 * 1024;

/**
 * HTTP/2 settings of `pxb serve`. PBS uses 32 MiB stream windows; a smaller stream window with
 * a bounded number of streams keeps the memory a session can pin bounded (≤ streams × window
 * of unread data), while the connection window stays at PBS's 32 MiB.
 */
export const SERVER_H2 = {
  streamWindow: 4 * 1024 * 1024,
  connectionWindow: 32 * 1024 * 1024,
  maxFrameSize: 4 * 1024 * 1024,
  maxConcurrentStreams: 64,
} as const;

/** HTTP/2 settings of the protocol client. */
export const CLIENT_H2 = {
  streamWindow: 32 * 1024 * 1024,
  connectionWindow: 64 * 1024 * 1024,
  maxFrameSize: 4 * 1024 * 1024,
} as const;
