/**
 * Exclusive, non-blocking lock files (Node has no flock). PBS uses flock on files under
 * /run/proxmox-backup/locks (spec datastore.md §1, "a compatible server only needs equivalent
 * mutual exclusion"); this is the equivalent for a single host.
 *
 * Invariants:
 *  - A lock is a file whose full content (JSON: pid, host, process start time, since, nonce,
 *    purpose) is written to a temporary file and published with link(2): it exists completely
 *    or not at all, and exactly one of several concurrent acquirers succeeds.
 *  - A lock is stale when its holder ran on this host and its pid is gone, or the pid now
 *    belongs to a process with another start time (pid reuse; Linux /proc only). Locks of
 *    other hosts are never considered stale.
 *  - Taking over a stale lock moves it aside with rename(2) and checks that the bytes moved
 *    are the stale ones (each lock has a unique nonce); if another process replaced it in
 *    the meantime, its lock is linked back and acquisition starts over. Holders call
 *    `assertHeld()` before committing, so a lock lost in such a race is detected.
 *  - `release` removes the file only while it still holds this lock's nonce.
 */
import { randomBytes } from 'node:crypto';
import { readFile, link, rename, rm } from 'node:fs/promises';
import { hostname } from 'node:os';
import { writeFileAtomic } from '../backend/fs.js';

export interface LockHolder {
  pid: number;
  host: string;
  /** Process start time (Linux: clock ticks after boot from /proc/<pid>/stat), null if unknown. */
  start: string | null;
  /** Epoch seconds when the lock was taken. */
  since: number;
  nonce: string;
  /** What holds it, e.g. "backup". */
  purpose: string;
}

export class LockedError extends Error {
  override name = 'LockedError';
  constructor(
    message: string,
    readonly holder: LockHolder | null,
  ) {
    super(message);
  }
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

/** Start time of process `pid` from /proc (field 22 of /proc/<pid>/stat), or null. */
async function processStart(pid: number): Promise<string | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'latin1');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return /^\d+$/.test(fields[19] ?? '') ? fields[19] : null;
  } catch {
    return null;
  }
}

let ownStart: Promise<string | null> | undefined;

function parseHolder(buf: Buffer): LockHolder | null {
  try {
    const v = JSON.parse(buf.toString('utf8')) as Partial<LockHolder>;
    if (
      Number.isSafeInteger(v.pid) && (v.pid as number) > 0 &&
      typeof v.host === 'string' && (v.start === null || typeof v.start === 'string') &&
      typeof v.since === 'number' && typeof v.nonce === 'string' && typeof v.purpose === 'string'
    ) {
      return v as LockHolder;
    }
  } catch {
    // fall through: not a lock file we wrote
  }
  return null;
}

async function holderAlive(h: LockHolder): Promise<boolean> {
  if (h.host !== hostname()) return true;
  try {
    process.kill(h.pid, 0);
  } catch (e) {
    if (errno(e) === 'ESRCH') return false;
    // EPERM: the process exists but belongs to someone else.
  }
  if (h.start !== null) {
    const now = await processStart(h.pid);
    if (now !== null && now !== h.start) return false;
  }
  return true;
}

async function readIfExists(p: string): Promise<Buffer | null> {
  try {
    return await readFile(p);
  } catch (e) {
    if (errno(e) === 'ENOENT') return null;
    throw e;
  }
}

export class LockFile {
  private released = false;

  private constructor(
    readonly path: string,
    readonly holder: LockHolder,
    private readonly content: Buffer,
  ) {}

  /**
   * Take the lock at `lockPath` or throw `LockedError` ("<what> is locked by another
   * <purpose> (pid N)"). Parent directories are created as needed.
   */
  static async acquire(lockPath: string, what: string, purpose: string, fsync = true): Promise<LockFile> {
    ownStart ??= processStart(process.pid);
    const holder: LockHolder = {
      pid: process.pid,
      host: hostname(),
      start: await ownStart,
      since: Math.floor(Date.now() / 1000),
      nonce: randomBytes(16).toString('hex'),
      purpose,
    };
    const content = Buffer.from(JSON.stringify(holder) + '\n');
    for (let attempt = 0; attempt < 5; attempt++) {
      if (await writeFileAtomic(lockPath, content, { ifAbsent: true, fsync, dirMode: 0o755 })) {
        return new LockFile(lockPath, holder, content);
      }
      const seen = await readIfExists(lockPath);
      if (!seen) continue; // released meanwhile
      const other = parseHolder(seen);
      if (!other) {
        throw new LockedError(`${what} is locked (unreadable lock file ${lockPath}; remove it if no pxb process is running)`, null);
      }
      if (await holderAlive(other)) {
        const where = other.host === holder.host ? '' : ` on host ${other.host}`;
        throw new LockedError(`${what} is locked by another ${other.purpose} (pid ${other.pid}${where})`, other);
      }
      await takeOverStale(lockPath, seen, holder.nonce);
    }
    throw new LockedError(`${what}: could not acquire ${lockPath} (it keeps changing)`, null);
  }

  /** True while the lock file still carries this lock's nonce. */
  async isHeld(): Promise<boolean> {
    if (this.released) return false;
    const now = await readIfExists(this.path);
    return now !== null && now.equals(this.content);
  }

  async assertHeld(): Promise<void> {
    if (!(await this.isHeld())) throw new Error(`lost the lock ${this.path} (taken over by another process?)`);
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    const now = await readIfExists(this.path);
    if (now && now.equals(this.content)) await rm(this.path, { force: true });
  }
}

/** Move a stale lock aside, undoing the move if what was moved is not `stale` any more. */
async function takeOverStale(lockPath: string, stale: Buffer, nonce: string): Promise<void> {
  const aside = `${lockPath}.stale-${nonce}`;
  try {
    await rename(lockPath, aside);
  } catch (e) {
    if (errno(e) === 'ENOENT') return; // someone else moved or released it
    throw e;
  }
  const moved = await readFile(aside);
  if (!moved.equals(stale)) {
    // We moved a fresh lock taken after our check: give it back unless yet another one exists.
    try {
      await link(aside, lockPath);
    } catch (e) {
      if (errno(e) !== 'EEXIST') throw e;
    }
  }
  await rm(aside, { force: true });
}

/**
 * The holder of the lock file at `lockPath` and whether it is still alive (same rules as
 * acquisition: holders on other hosts count as alive), or null if there is no such lock.
 * An unreadable lock file yields `holder: null, alive: true` (it cannot be judged stale).
 */
export async function inspectLock(lockPath: string): Promise<{ holder: LockHolder | null; alive: boolean } | null> {
  const seen = await readIfExists(lockPath);
  if (!seen) return null;
  const holder = parseHolder(seen);
  return { holder, alive: holder === null || (await holderAlive(holder)) };
}
