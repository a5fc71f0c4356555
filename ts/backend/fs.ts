/**
 * Local filesystem backend: key `a/b/c` is the file `<root>/a/b/c`.
 *
 * Invariants (see the contract in backend.ts):
 *  - Writes go to a temporary file in the target's own directory (`<name>.pxb-tmp-<hex>`,
 *    created with O_EXCL), are fsynced (unless `fsync: false`), then published atomically:
 *    `rename` to replace, `link` for `ifAbsent` (link never replaces an existing name, so of
 *    several concurrent creators exactly one wins and nobody ever sees a partial file). The
 *    directory is fsynced after publishing. Missing parent directories are created on demand.
 *  - Temporary files are never listed; a crash may leave one behind (harmless, GC-invisible).
 *  - Reads refuse to follow a symbolic link in the last path component (O_NOFOLLOW); a
 *    directory or other non-regular entry is not an object.
 *  - `touch` sets the access time to now and keeps the modification time (GC marks, spec
 *    gc-prune-verify.md §1.3); it is filesystem-only, S3 has no atime.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, type Dirent } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { lstat, open, readdir, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { atomicWrite, errnoCode, touchFiles } from '../native/fs.js';
import {
  BackendError,
  ObjectNotFoundError,
  TEMP_MARKER,
  isValidKey,
  validateKey,
  validatePrefix,
  type Backend,
  type ListEntry,
  type ObjectStat,
  type PutOptions,
  type PutResult,
} from './backend.js';

const O_NOFOLLOW = fsConstants.O_NOFOLLOW ?? 0;
const { ENOENT, ENOTDIR } = osConstants.errno;

export interface AtomicWriteOptions {
  /** Temporary file to write first (default `<target>.pxb-tmp-<random hex>`). */
  tmpPath?: string;
  /** Publish with link(2): never replace an existing target; returns false if one exists. */
  ifAbsent?: boolean;
  /** fsync the file before publishing and the directory after (default true). */
  fsync?: boolean;
  /** Mode of the new file (before umask), default 0o644. */
  mode?: number;
  /** Create missing parent directories with this mode; when unset they must exist. */
  dirMode?: number;
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

/**
 * A `touchFiles` status as `touch`/`touchMany` report it: true when touched, false when the
 * object is missing, a BackendError naming `key` (its file `path`) for anything else.
 */
export function touchStatus(s: number, key: string, path: string): boolean {
  if (s === 0) return true;
  if (s === -ENOENT || s === -ENOTDIR) return false;
  throw new BackendError(key, `cannot touch ${path}: ${errnoCode(-s)}`);
}

/**
 * Write `data` to `target` atomically (temporary file + rename, or + link for `ifAbsent`).
 * Returns true if `target` now holds `data`, false if `ifAbsent` found an existing file.
 * All steps run in one native job (`atomicWrite`): one pool round trip per object instead
 * of one per syscall, which kept chunk inserts waiting for the busy main thread.
 */
export async function writeFileAtomic(target: string, data: Uint8Array, options: AtomicWriteOptions = {}): Promise<boolean> {
  const { tmpPath, ifAbsent = false, fsync = true, mode = 0o644, dirMode } = options;
  const tmp = tmpPath ?? `${target}${TEMP_MARKER}${randomBytes(6).toString('hex')}`;
  return atomicWrite(target, tmp, data, { ifAbsent, fsync, mode, dirMode, replaceStale: tmpPath !== undefined });
}

export interface FsBackendOptions {
  /** fsync files and directories on put (default true). */
  fsync?: boolean;
  /** Mode of directories created on demand (default 0o755). */
  dirMode?: number;
  /** Mode of new files (default 0o644). */
  fileMode?: number;
}

export class FsBackend implements Backend {
  readonly root: string;
  readonly location: string;
  readonly fsync: boolean;
  private readonly dirMode: number;
  /** Mode of files it creates (before umask). */
  readonly fileMode: number;

  constructor(root: string, options: FsBackendOptions = {}) {
    this.root = path.resolve(root);
    this.location = this.root;
    this.fsync = options.fsync ?? true;
    this.dirMode = options.dirMode ?? 0o755;
    this.fileMode = options.fileMode ?? 0o644;
  }

  /** Absolute path of `key` (validated). */
  pathOf(key: string): string {
    validateKey(key);
    return path.join(this.root, ...key.split('/'));
  }

  /**
   * Open an object for reading: never through a symlink, never waiting (a FIFO or device put
   * in an object's place opens at once with O_NONBLOCK) and only a regular file (a
   * directory counts as no object), so a damaged store cannot hang or feed a reader.
   */
  private async openObject(p: string): Promise<FileHandle> {
    const fh = await open(p, fsConstants.O_RDONLY | O_NOFOLLOW | fsConstants.O_NONBLOCK | fsConstants.O_NOCTTY);
    let st;
    try {
      st = await fh.stat();
    } finally {
      if (!st?.isFile()) await fh.close();
    }
    if (st.isDirectory()) throw Object.assign(new Error(`EISDIR: is a directory, open '${p}'`), { code: 'EISDIR' });
    if (!st.isFile()) throw new Error(`${p} is not a regular file (a FIFO, device or socket in place of an object)`);
    return fh;
  }

  async get(key: string): Promise<Buffer> {
    const p = this.pathOf(key);
    try {
      const fh = await this.openObject(p);
      try {
        return await fh.readFile();
      } finally {
        await fh.close();
      }
    } catch (e) {
      throw this.readError(key, e);
    }
  }

  async getRange(key: string, offset: number, length: number): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`object ${key}: bad range offset ${offset} length ${length}`);
    }
    const p = this.pathOf(key);
    const buf = Buffer.alloc(length);
    let got = 0;
    try {
      const fh = await this.openObject(p);
      try {
        while (got < length) {
          const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
      } finally {
        await fh.close();
      }
    } catch (e) {
      throw this.readError(key, e);
    }
    if (got < length) {
      throw new BackendError(key, `object ${key} in ${this.location}: range ${offset}+${length} is beyond its end (${offset + got})`);
    }
    return buf;
  }

  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const created = await writeFileAtomic(this.pathOf(key), data, {
      ifAbsent: options.ifAbsent,
      fsync: this.fsync,
      mode: this.fileMode,
      dirMode: this.dirMode,
    });
    return { created };
  }

  async stat(key: string): Promise<ObjectStat | null> {
    const p = this.pathOf(key);
    try {
      const st = await lstat(p);
      if (!st.isFile()) throw new BackendError(key, `${p} exists but is not a regular file`);
      return { size: st.size, mtimeMs: st.mtimeMs };
    } catch (e) {
      if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') return null;
      throw e;
    }
  }

  async exists(key: string): Promise<boolean> {
    return (await this.stat(key)) !== null;
  }

  async delete(key: string): Promise<boolean> {
    try {
      await unlink(this.pathOf(key));
      return true;
    } catch (e) {
      if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') return false;
      throw e;
    }
  }

  /** Set the access time to now, keeping the modification time; false if absent. */
  async touch(key: string): Promise<boolean> {
    return (await this.touchMany([key]))[0];
  }

  /** `touch` for many objects in one job on the libuv pool. Per key: true if touched, false if missing. */
  async touchMany(keys: string[]): Promise<boolean[]> {
    const st = await touchFiles(keys.map((k) => this.pathOf(k)));
    return keys.map((k, i) => touchStatus(st[i], k, this.pathOf(k)));
  }

  async *list(prefix: string): AsyncGenerator<ListEntry> {
    validatePrefix(prefix);
    const slash = prefix.lastIndexOf('/');
    yield* this.walk(slash < 0 ? '' : prefix.slice(0, slash), prefix.slice(slash + 1));
  }

  private async *walk(dirKey: string, namePrefix: string): AsyncGenerator<ListEntry> {
    const dir = dirKey ? path.join(this.root, ...dirKey.split('/')) : this.root;
    let entries: Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (e) {
      if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') return;
      throw e;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const ent of entries) {
      if (!ent.name.startsWith(namePrefix)) continue;
      const key = dirKey ? `${dirKey}/${ent.name}` : ent.name;
      if (!isValidKey(key)) continue; // temporary files and names no key can address
      if (ent.isDirectory()) {
        yield* this.walk(key, '');
      } else if (ent.isFile()) {
        try {
          const st = await lstat(path.join(dir, ent.name));
          yield { key, size: st.size };
        } catch (e) {
          if (errno(e) !== 'ENOENT') throw e; // removed while listing
        }
      }
    }
  }

  private readError(key: string, e: unknown): Error {
    const code = errno(e);
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') {
      return new ObjectNotFoundError(key, `object ${key} not found in ${this.location}`);
    }
    if (code === 'ELOOP') return new BackendError(key, `object ${key} in ${this.location} is a symbolic link; refusing to follow it`);
    return e as Error;
  }
}
