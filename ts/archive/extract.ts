/**
 * Extract a decoded pxar archive into a target directory.
 *
 * Safety (the archive is untrusted):
 * - Entry names were validated by the decoder (no '', '.', '..', '/', NUL); every path is
 *   built below the target from those names only.
 * - Nothing is ever written through a symlink: files are created with O_NOFOLLOW (and O_EXCL
 *   unless overwriting), an existing non-directory where a directory must be created is an
 *   error, and hardlinks point only at files this extraction wrote itself (by entry position,
 *   never by the path stored in the archive).
 * - Metadata order per entry: contents, ownership, xattrs/ACLs, permission bits (after chown,
 *   which clears set-id bits), chattr flags, times last. Directory metadata is applied after
 *   the directory's children, so its mtime survives.
 *
 * Small files are collected and written by one native call per batch (create, write, chown,
 * chmod, set times), three batches in flight while decoding continues; anything with
 * xattrs/ACLs/flags or larger than 1 MiB is written on its own. Directory metadata is applied
 * after everything was written, deepest directories first.
 */
import { mkdir, open, lstat } from 'node:fs/promises';
import { constants as fsc, chmodSync, closeSync, lchownSync, linkSync, lstatSync, mkdirSync, openSync, symlinkSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import picomatch from 'picomatch';
import type { PxarDecoder } from '../format/pxar/decoder.js';
import type { PxarEntry } from '../format/pxar/entry.js';
import type { Metadata } from '../format/pxar/metadata.js';
import { O_PATH, mknod, setxattr, setFlags, utimens, writeFilesBatch, type WriteFileSpec } from '../native/fs.js';
import { encodeAclXattr, ACL_XATTR_ACCESS, ACL_XATTR_DEFAULT } from './acl.js';
import { aclsForRestore, chattrFrom, CHATTR_MASK } from './fs-metadata.js';

export interface ExtractOptions {
  target: string;
  /** Only entries whose path matches one of these globs (and directories leading to them). */
  patterns?: string[];
  /** Replace existing files (default: an existing file is an error). */
  overwrite?: boolean;
  /** Restore owners (default: when running as root). */
  chown?: boolean;
  /** Keep runs of zeros as holes (default true). */
  sparse?: boolean;
  signal?: AbortSignal;
  onWarning?: (message: string) => void;
  onProgress?: (p: { entries: number; bytes: number; path: string }) => void;
}

export interface ExtractStats {
  entries: number;
  /** Regular files restored, every name of a hardlinked file counted (as a backup counts them). */
  files: number;
  directories: number;
  bytes: number;
  warnings: number;
  seconds: number;
}

const BATCH_FILES = 256;
const BATCH_BYTES = 8 * 1024 * 1024;
/**
 * Batches being written while decoding goes on. 3 rather than 2: restoring the linux tree took
 * 3.7-4.4 s instead of 3.9-4.8 s (faster in 10 of 11 alternating rounds), for ~8 MiB more
 * resident memory (one more batch buffer); 4 was no faster than 3.
 */
const MAX_BATCHES_IN_FLIGHT = 3;
const SMALL_FILE = 1024 * 1024;
const S_IFMT = 0o170000;
const PXAREXCLUDE_CLI = Buffer.from('.pxarexclude-cli');

interface PendingDir {
  entry: PxarEntry;
  /** The directory's path as syscalls take it (always shorter than PATH_MAX). */
  abs: Buffer;
  /**
   * Its children's paths start with this: `abs`, or for a directory too deep for that, a
   * descriptor of it in /proc/self/fd (see `anchor`).
   */
  base: Buffer;
  /** Created on disk (with a pattern filter, only once something below it is extracted). */
  created: boolean;
  /** Matched by the pattern filter itself: everything below is extracted. */
  matched: boolean;
}

/** A restore pattern as matched against archive paths (no leading/trailing `/`); throws if empty. */
export function restoreGlob(pattern: string): string {
  const glob = pattern.replace(/^\/+/, '').replace(/\/+$/, '');
  if (!glob) throw new Error(`restore pattern ${JSON.stringify(pattern)} is empty: it matches nothing (to restore everything, give no pattern)`);
  return glob;
}

export async function extractArchive(decoder: PxarDecoder, opts: ExtractOptions): Promise<ExtractStats> {
  const t0 = performance.now();
  const stats: ExtractStats = { entries: 0, files: 0, directories: 0, bytes: 0, warnings: 0, seconds: 0 };
  const warn = (m: string) => {
    stats.warnings++;
    opts.onWarning?.(m);
  };
  const chown = opts.chown ?? process.getuid?.() === 0;
  const overwrite = !!opts.overwrite;
  const sparse = opts.sparse ?? true;
  const matchers = (opts.patterns ?? []).map((p) => picomatch(restoreGlob(p), { dot: true }));
  const filtered = matchers.length > 0;
  const matches = (rel: Buffer) => {
    const s = rel.toString();
    return matchers.some((m) => m(s));
  };

  const target = Buffer.from(path.resolve(opts.target));
  await mkdir(target, { recursive: true });
  const tst = await lstat(target);
  if (!tst.isDirectory()) throw new Error(`restore target ${target.toString()} is not a directory`);

  const stack: PendingDir[] = [];
  /** FILENAME position of every extracted regular file → its absolute path (for hardlinks). */
  const written = new Map<number, Buffer>();
  let chownWarned = false;

  // --- batched small files ----------------------------------------------------------
  // File data is copied into a batch buffer; up to MAX_BATCHES_IN_FLIGHT batches are written
  // concurrently by the native writer while decoding goes on.
  let batch: WriteFileSpec[] = [];
  // Batch buffers are reused once written: a fresh 8 MiB buffer per batch (1.3 GB of them for
  // the linux tree) cost page faults and zeroing in the kernel and drove V8 into a full GC
  // every few batches (external memory pressure).
  const spareBufs: Buffer[] = [];
  const newBatchBuf = () => spareBufs.pop() ?? Buffer.allocUnsafe(BATCH_BYTES);
  let batchBuf = newBatchBuf();
  let batchBytes = 0;
  let batchPaths: Buffer[] = [];
  const inFlight = new Set<Promise<void>>();
  let writeError: Error | null = null;
  const writeBatch = async (files: WriteFileSpec[], data: Buffer, paths: Buffer[]) => {
    const r = await writeFilesBatch(files, data, { chown, overwrite, sparse });
    for (let k = 0; k < files.length; k++) {
      const st = r.status[k];
      if (st < 0) {
        const e = r.errors.find((x) => x.index === k);
        throw new Error(`cannot restore ${rel(paths[k])}: ${e ? e.message : `errno ${-st}`}`);
      }
      if (st & 1) chownNotPermitted();
    }
  };
  const flush = async () => {
    if (batch.length) {
      const buf = batchBuf;
      const p = writeBatch(batch, buf.subarray(0, batchBytes), batchPaths).catch((e: Error) => {
        writeError ??= e;
      });
      const tracked = p.finally(() => {
        inFlight.delete(tracked);
        // the native writer is done with it (settled): the next batches may fill it again
        if (buf.length === BATCH_BYTES && spareBufs.length < MAX_BATCHES_IN_FLIGHT) spareBufs.push(buf);
      });
      inFlight.add(tracked);
      batch = [];
      batchBuf = newBatchBuf();
      batchBytes = 0;
      batchPaths = [];
    }
    while (inFlight.size >= MAX_BATCHES_IN_FLIGHT) await Promise.race(inFlight);
    if (writeError) throw writeError;
  };
  /** Wait until everything queued so far is on disk (before hardlinks and at the end). */
  const settle = async () => {
    await flush();
    await Promise.all([...inFlight]);
    if (writeError) throw writeError;
  };
  const chownNotPermitted = () => {
    if (!chownWarned) {
      chownWarned = true;
      warn('ownership not restored: changing owners is not permitted for this user');
    }
  };
  /** Directories whose metadata is applied at the end (writing children changes their mtimes). */
  const finishedDirs: Array<{ abs: Buffer; meta: Metadata }> = [];

  // Paths of PATH_MAX (4096) bytes or more are refused by the kernel. A directory whose path
  // reaches ANCHOR_AT gets an O_PATH descriptor, and the paths below it go through
  // /proc/self/fd/N (each stays shorter than ANCHOR_AT + a name). The descriptors are needed
  // until the end (directory metadata and hardlink targets are applied last) and are closed
  // then; a tree needing more than MAX_ANCHORS of them is refused with a clear message.
  const anchors = new Map<string, string>();
  const anchor = (d: PendingDir): void => {
    if (d.abs.length < ANCHOR_AT) return;
    if (anchors.size >= MAX_ANCHORS) throw new Error(`cannot restore ${rel(d.abs)}: more than ${MAX_ANCHORS} directories lie deeper than ${ANCHOR_AT} bytes`);
    const fd = openSync(d.abs, fsc.O_RDONLY | O_PATH | fsc.O_DIRECTORY | fsc.O_NOFOLLOW);
    const base = `${PROC_FD}${fd}`;
    anchors.set(base, rel(d.abs));
    d.base = Buffer.from(base);
  };
  /** A path for messages: relative to the target, through anchors too. */
  const rel = (abs: Buffer): string => {
    if (abs.subarray(0, PROC_FD.length).toString() === PROC_FD) {
      const s = abs.toString();
      const cut = s.indexOf('/', PROC_FD.length);
      const dir = anchors.get(cut < 0 ? s : s.slice(0, cut));
      if (dir !== undefined) return cut < 0 ? dir : `${dir}${s.slice(cut)}`;
    }
    return abs.subarray(target.length + 1).toString();
  };
  const join = (dir: Buffer, name: Buffer) => Buffer.concat([dir, Buffer.from('/'), name]);

  /** Make sure `dir` (and pending parents) exist as real directories. */
  // Cheap syscalls run synchronously: through the libuv pool they would queue behind the
  // batch writes and stall the extraction once per directory.
  const ensureDir = (d: PendingDir): void => {
    if (d.created) return;
    const i = stack.indexOf(d);
    if (i > 0) {
      ensureDir(stack[i - 1]);
      // the parent may have been anchored just now
      d.abs = d.base = join(stack[i - 1].base, d.entry.name);
    }
    try {
      mkdirSync(d.abs, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new Error(`cannot create directory ${rel(d.abs)}: ${(e as Error).message}`);
      if (!lstatSync(d.abs).isDirectory()) throw new Error(`cannot create directory ${rel(d.abs)}: a non-directory exists at that path`);
    }
    d.created = true;
    anchor(d);
  };

  /** Ownership, xattrs, ACLs, mode, flags, times: cheap syscalls, done synchronously. */
  const applyMeta = (abs: Buffer, meta: Metadata, kind: 'file' | 'directory' | 'symlink' | 'other') => {
    const type = meta.mode & S_IFMT;
    if (chown) {
      try {
        lchownSync(abs, meta.uid, meta.gid);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EPERM') throw e;
        chownNotPermitted();
      }
    }
    if (kind !== 'symlink') {
      for (const x of meta.xattrs) {
        try {
          setxattr(abs, x.name, x.value, true);
        } catch (e) {
          warn(`${rel(abs)}: cannot restore xattr ${x.name.toString()}: ${(e as Error).message}`);
        }
      }
      if (meta.fcaps) {
        try {
          setxattr(abs, 'security.capability', meta.fcaps, true);
        } catch (e) {
          warn(`${rel(abs)}: cannot restore file capabilities: ${(e as Error).message}`);
        }
      }
      const acls = aclsForRestore(meta);
      try {
        if (acls.access) setxattr(abs, ACL_XATTR_ACCESS, encodeAclXattr(acls.access), true);
        if (acls.default && type === 0o040000) setxattr(abs, ACL_XATTR_DEFAULT, encodeAclXattr(acls.default), true);
      } catch (e) {
        warn(`${rel(abs)}: cannot restore ACL: ${(e as Error).message}`);
      }
      // chmod after chown (chown clears set-id bits) and after the ACL (which sets group bits).
      // The path is one this extraction created (never a symlink: those take the other branch).
      chmodSync(abs, meta.mode & 0o7777);
    }
    utimens(abs, meta.mtime.secs, meta.mtime.nanos, meta.mtime.secs, meta.mtime.nanos, true);
    // Flags last: an immutable or append-only file refuses new times (and everything else).
    if (kind !== 'symlink' && meta.flags) {
      const c = chattrFrom(meta.flags);
      if (c && !setFlags(abs, c, CHATTR_MASK)) warn(`${rel(abs)}: file attributes (chattr) not supported here`);
    }
  };

  // As the native batch writer: O_NONBLOCK|O_NOCTTY so an existing FIFO or terminal never
  // blocks the open, and only an existing regular file with a single link is truncated and
  // reused; anything else in the way (symlink, FIFO, device node, socket, a hardlinked file)
  // is unlinked and the file created afresh with O_EXCL, so nothing is ever written into a
  // device, through a symlink, or into a file that has other names.
  const createFile = async (abs: Buffer): Promise<Awaited<ReturnType<typeof open>>> => {
    const base = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_NOFOLLOW | fsc.O_NONBLOCK | fsc.O_NOCTTY;
    const fail = (e: unknown): Error => {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return new Error(`cannot restore ${rel(abs)}: file exists (use --overwrite to replace it)`);
      return new Error(`cannot restore ${rel(abs)}: ${(e as Error).message}`);
    };
    if (!overwrite) return open(abs, base | fsc.O_EXCL, 0o600).catch((e: unknown) => Promise.reject(fail(e)));
    try {
      const fh = await open(abs, base, 0o600);
      let reuse = false;
      try {
        const st = await fh.stat();
        // (a file with other hard links is replaced: truncating it would change the other names)
        const single = st.isFile() && st.nlink === 1;
        if (single) await fh.truncate(0);
        reuse = single;
      } finally {
        if (!reuse) await fh.close();
      }
      if (reuse) return fh;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // ELOOP: a symlink; ENXIO: a FIFO without a reader; EISDIR stays an error below
      if (code !== 'ELOOP' && code !== 'ENXIO' && code !== 'EISDIR') throw fail(e);
    }
    let isDir = false;
    try {
      isDir = lstatSync(abs).isDirectory();
      if (!isDir) unlinkSync(abs);
    } catch {
      // gone meanwhile
    }
    if (isDir) throw new Error(`cannot restore ${rel(abs)}: a directory exists at that path`);
    return open(abs, base | fsc.O_EXCL, 0o600).catch((e: unknown) => Promise.reject(fail(e)));
  };

  const removeExisting = (abs: Buffer): void => {
    if (!overwrite) return;
    try {
      if (!lstatSync(abs).isDirectory()) unlinkSync(abs);
    } catch {
      // nothing there
    }
  };

  try {
    let lastProgress = 0;
    for (;;) {
      const ev = await decoder.next();
      if (!ev) break;
      opts.signal?.throwIfAborted();
      const e = ev.entry;
      if (ev.type === 'end') {
        const d = stack.pop()!;
        if (d.created) finishedDirs.push({ abs: d.abs, meta: e.metadata });
        continue;
      }
      stats.entries++;
      if (opts.onProgress) {
        const t = performance.now();
        if (t - lastProgress > 200) {
          lastProgress = t;
          opts.onProgress({ entries: stats.entries, bytes: stats.bytes, path: e.path.toString() });
        }
      }
      if (e.path.length === 0) {
        // The root: the target directory itself.
        const root: PendingDir = { entry: e, abs: target, base: target, created: !filtered, matched: !filtered };
        stack.push(root);
        if (!filtered) anchor(root);
        if (!filtered) stats.directories++;
        continue;
      }
      const parent = stack[stack.length - 1];
      // The exclude patterns of a unified archive are metadata, not part of the tree: restored
      // only when a pattern asks for them explicitly.
      if (stack.length === 1 && e.kind === 'file' && e.name.equals(PXAREXCLUDE_CLI) && !(filtered && matches(e.path))) continue;
      const included = !filtered || parent.matched || matches(e.path);
      if (e.kind === 'directory') {
        const abs = join(parent.base, e.name);
        const d: PendingDir = { entry: e, abs, base: abs, created: false, matched: !filtered || parent.matched || matches(e.path) };
        stack.push(d);
        if (d.matched) {
          ensureDir(d);
          stats.directories++;
        }
        continue;
      }
      if (!included) continue;
      ensureDir(parent);
      const abs = join(parent.base, e.name);
      switch (e.kind) {
        case 'file': {
          const size = e.size ?? 0;
          const meta = e.metadata;
          const simple = !meta.xattrs.length && !meta.fcaps && !meta.flags && !meta.acl.users.length && !meta.acl.groups.length && meta.acl.groupObj === undefined;
          stats.files++;
          stats.bytes += size;
          if (simple && size <= SMALL_FILE) {
            if (batchBytes + size > BATCH_BYTES) await flush();
            const offset = batchBytes;
            // Every piece is copied (here) or written (below) before the decoder reads on: a
            // restore decodes payload chunks into recycled buffers (openArchiveDecoder).
            const whole = decoder.contentInView();
            if (whole) batchBytes += whole.copy(batchBuf, batchBytes);
            else {
              for await (const piece of decoder.contents()) {
                piece.copy(batchBuf, batchBytes);
                batchBytes += piece.length;
              }
            }
            if (batchBytes - offset !== size) throw new Error(`${e.path.toString()}: archive holds ${batchBytes - offset} bytes, expected ${size}`);
            batch.push({ path: abs, offset, size, mode: meta.mode & 0o7777, uid: meta.uid, gid: meta.gid, mtimeSec: meta.mtime.secs, mtimeNsec: meta.mtime.nanos });
            batchPaths.push(abs);
            if (e.linkOffset !== undefined) written.set(e.linkOffset, abs);
            if (batch.length >= BATCH_FILES) await flush();
            break;
          }
          const fh = await createFile(abs);
          try {
            let pos = 0;
            for await (const piece of decoder.contents()) {
              if (sparse && isZero(piece)) {
                pos += piece.length;
                continue;
              }
              let off = 0;
              while (off < piece.length) {
                const { bytesWritten } = await fh.write(piece, off, piece.length - off, pos);
                off += bytesWritten;
                pos += bytesWritten;
              }
            }
            await fh.truncate(size);
          } finally {
            await fh.close();
          }
          applyMeta(abs, meta, 'file');
          if (e.linkOffset !== undefined) written.set(e.linkOffset, abs);
          break;
        }
        case 'hardlink': {
          const targetAbs = e.hardlinkTargetOffset !== undefined ? written.get(e.hardlinkTargetOffset) : undefined;
          if (!targetAbs) {
            warn(`${e.path.toString()}: hardlink target ${e.hardlinkTarget?.toString() ?? '?'} was not restored, skipped`);
            break;
          }
          await settle();
          removeExisting(abs);
          try {
            linkSync(targetAbs, abs);
          } catch (err) {
            throw new Error(`cannot restore hardlink ${e.path.toString()}: ${(err as Error).message}`);
          }
          stats.files++;
          break;
        }
        case 'symlink':
          removeExisting(abs);
          try {
            symlinkSync(e.symlinkTarget ?? Buffer.alloc(0), abs);
          } catch (err) {
            throw new Error(`cannot restore symlink ${e.path.toString()}: ${(err as Error).message}`);
          }
          applyMeta(abs, e.metadata, 'symlink');
          break;
        case 'device':
        case 'fifo':
        case 'socket': {
          removeExisting(abs);
          try {
            mknod(abs, e.metadata.mode, e.device?.major ?? 0, e.device?.minor ?? 0);
          } catch (err) {
            warn(`${e.path.toString()}: cannot create ${e.kind} (${(err as Error).message}), skipped`);
            break;
          }
          applyMeta(abs, e.metadata, 'other');
          break;
        }
        default:
          warn(`${e.path.toString()}: unsupported entry kind ${String(e.kind)}, skipped`);
      }
    }
    await settle();
    // `end` events come in post-order: children before parents (a parent made read-only last).
    for (const d of finishedDirs) applyMeta(d.abs, d.meta, 'directory');
    stats.seconds = (performance.now() - t0) / 1000;
    return stats;
  } finally {
    // (after a failure, batches may still be writing through an anchor: its number must not
    // be reused before they are done)
    await Promise.allSettled([...inFlight]);
    for (const a of anchors.keys()) closeSync(Number(a.slice(PROC_FD.length)));
  }
}

/** Path length from which a restored directory gets a descriptor (`anchor`): a name (≤ 255 bytes) below it stays under PATH_MAX. */
const ANCHOR_AT = 3800;
const MAX_ANCHORS = 512;
const PROC_FD = '/proc/self/fd/';

const ZERO = Buffer.alloc(64 * 1024);
function isZero(b: Buffer): boolean {
  for (let o = 0; o < b.length; o += ZERO.length) {
    const n = Math.min(ZERO.length, b.length - o);
    if (!b.subarray(o, o + n).equals(ZERO.subarray(0, n))) return false;
  }
  return true;
}
