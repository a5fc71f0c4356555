/**
 * Storage backend: a flat namespace of objects addressed by keys, restic style. The datastore
 * layout (spec datastore.md §1, s3.md §2) is expressed as relative keys such as
 * `.chunks/b94d/b94d27…` or `ns/a/host/x/2024-05-07T14:25:51Z/index.json.blob`.
 *
 * Contract every implementation must keep (so a filesystem and an S3 bucket behave alike):
 *  - Keys are validated with `validateKey` before any I/O; hostile keys (absolute, `..`, `.`,
 *    empty components, NUL/control characters, backslashes) are refused with `InvalidKeyError`.
 *  - `put` is atomic: a reader sees either no object or the complete new one, never a prefix.
 *    With `ifAbsent` it creates the object only if none exists (S3 `If-None-Match: *`); of
 *    concurrent `ifAbsent` writers exactly one gets `created: true`, the others `false`, and
 *    the winner's bytes are never modified. Without `ifAbsent` the object is replaced whole.
 *  - There is no rename and no directory: "directories" are key prefixes and exist only
 *    implicitly. A key is either an object or absent.
 *  - `get` of an absent key throws `ObjectNotFoundError`; `stat` returns null; `delete` of an
 *    absent key returns false (idempotent).
 *  - `list(prefix)` yields every object whose key starts with `prefix` (plain string prefix),
 *    recursively, in no particular order; objects being written are never listed. Objects
 *    added or removed during a listing may or may not appear.
 */

export interface ObjectStat {
  /** Size in bytes. */
  size: number;
  /** Last modification, epoch milliseconds. */
  mtimeMs: number;
}

export interface PutOptions {
  /** Create only if absent (conditional create); the result says whether it was created. */
  ifAbsent?: boolean;
}

export interface PutResult {
  /** False only with `ifAbsent` when an object already existed (it is left untouched). */
  created: boolean;
}

export interface ListEntry {
  key: string;
  size: number;
}

export interface Backend {
  /** Human-readable location for error messages (a path or `s3://bucket/prefix`). */
  readonly location: string;
  get(key: string): Promise<Buffer>;
  /** Exactly `length` bytes starting at `offset`; throws if the object is shorter. */
  getRange?(key: string, offset: number, length: number): Promise<Buffer>;
  put(key: string, data: Uint8Array, options?: PutOptions): Promise<PutResult>;
  stat(key: string): Promise<ObjectStat | null>;
  exists(key: string): Promise<boolean>;
  /** Remove the object; false if it did not exist. */
  delete(key: string): Promise<boolean>;
  list(prefix: string): AsyncIterable<ListEntry>;
}

/** Base class of all backend errors; `key` names the object concerned. */
export class BackendError extends Error {
  override name = 'BackendError';
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(message);
  }
}

export class ObjectNotFoundError extends BackendError {
  override name = 'ObjectNotFoundError';
}

export class InvalidKeyError extends BackendError {
  override name = 'InvalidKeyError';
}

export function isNotFound(e: unknown): e is ObjectNotFoundError {
  return e instanceof ObjectNotFoundError;
}

/** Longest key accepted (S3 allows 1024 bytes, minus room for a store prefix). */
export const MAX_KEY_LENGTH = 900;

/**
 * Suffix marker of in-flight temporary objects of a backend (`<name>.pxb-tmp-<hex>`). Keys
 * containing it are refused, and listings skip such names.
 */
export const TEMP_MARKER = '.pxb-tmp-';

const CONTROL = /[\u0000-\u001f\u007f\\]/;

/** Throw `InvalidKeyError` unless `key` is a safe relative object key. */
export function validateKey(key: string): void {
  checkKey(key, false);
}

export function isValidKey(key: string): boolean {
  try {
    checkKey(key, false);
    return true;
  } catch {
    return false;
  }
}

/** Like `validateKey`, but also allows '' and a trailing '/' (for `list`). */
export function validatePrefix(prefix: string): void {
  if (prefix !== '') checkKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix, true);
}

function checkKey(key: string, isPrefix: boolean): void {
  const what = isPrefix ? 'prefix' : 'key';
  const shown = JSON.stringify(key);
  if (typeof key !== 'string' || key.length === 0) throw new InvalidKeyError(String(key), `invalid object ${what}: empty`);
  if (Buffer.byteLength(key) > MAX_KEY_LENGTH) {
    throw new InvalidKeyError(key, `invalid object ${what} ${shown.slice(0, 80)}…: longer than ${MAX_KEY_LENGTH} bytes`);
  }
  if (CONTROL.test(key)) throw new InvalidKeyError(key, `invalid object ${what} ${shown}: contains a control character or backslash`);
  if (key.startsWith('/')) throw new InvalidKeyError(key, `invalid object ${what} ${shown}: absolute`);
  for (const c of key.split('/')) {
    if (c === '' || c === '.' || c === '..') {
      throw new InvalidKeyError(key, `invalid object ${what} ${shown}: empty, "." or ".." component`);
    }
    if (c.includes(TEMP_MARKER)) throw new InvalidKeyError(key, `invalid object ${what} ${shown}: reserved temporary name`);
  }
}
