/**
 * Names used in a datastore (spec datastore.md §2): SAFE_ID, backup types and ids, snapshot
 * directory names (RFC 3339 UTC `YYYY-MM-DDTHH:MM:SSZ`), archive file names, auth ids.
 * Every name that becomes a path component is checked here before it touches the filesystem;
 * the regexes admit no `/`, no leading `.` and no control characters, so `..`, absolute paths
 * and NUL are refused.
 */
import type { BackupType } from '../format/manifest.js';

export type { BackupType };

export const SAFE_ID_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
export const BACKUP_ID_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
export const BACKUP_TIME_RE = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z$/;
export const BACKUP_TYPES: readonly BackupType[] = ['ct', 'host', 'vm'];

/** Largest epoch second that still formats with a 4-digit year (9999-12-31T23:59:59Z). */
export const MAX_BACKUP_TIME = 253402300799;

/** Name components are limited by the filesystem's NAME_MAX. */
const MAX_COMPONENT = 255;

export function isBackupType(s: string): s is BackupType {
  return (BACKUP_TYPES as readonly string[]).includes(s);
}

export function parseBackupType(s: string): BackupType {
  if (!isBackupType(s)) throw new Error(`invalid backup type ${JSON.stringify(s)} (expected host, vm or ct)`);
  return s;
}

export function validateBackupId(id: string): void {
  if (typeof id !== 'string' || !BACKUP_ID_RE.test(id) || id.length > MAX_COMPONENT) {
    throw new Error(`invalid backup id ${JSON.stringify(id)} (allowed: A-Z a-z 0-9 _ . -, not starting with . or -)`);
  }
}

export function validateSafeId(s: string, what: string): void {
  if (typeof s !== 'string' || !SAFE_ID_RE.test(s) || s.length > MAX_COMPONENT) {
    throw new Error(`invalid ${what} ${JSON.stringify(s)} (allowed: A-Z a-z 0-9 _ . -, not starting with . or -)`);
  }
}

export function validateBackupTime(time: number): void {
  if (!Number.isSafeInteger(time) || time < 1 || time > MAX_BACKUP_TIME) {
    throw new Error(`invalid backup time ${time} (epoch seconds 1..${MAX_BACKUP_TIME})`);
  }
}

/** `1715091951` → `2024-05-07T14:25:51Z`. */
export function formatBackupTime(time: number): string {
  validateBackupTime(time);
  return new Date(time * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** `2024-05-07T14:25:51Z` → `1715091951`; refuses anything else (other zones, bad dates). */
export function parseBackupTime(s: string): number {
  const m = BACKUP_TIME_RE.exec(s);
  if (m) {
    const [y, mo, d, h, mi, se] = m.slice(1).map(Number);
    const ms = Date.UTC(y, mo - 1, d, h, mi, se);
    const time = ms / 1000;
    // Round-trip rejects out-of-range fields such as month 13 or 2023-02-30.
    if (time >= 1 && formatBackupTime(time) === s) return time;
  }
  throw new Error(`invalid snapshot time ${JSON.stringify(s)} (expected YYYY-MM-DDTHH:MM:SSZ)`);
}

export type ArchiveKind = 'didx' | 'fidx' | 'blob';

/**
 * Check a snapshot file name (SAFE_ID ending in `.didx`, `.fidx` or `.blob`) and return its
 * kind, decided by the last extension.
 */
export function archiveKind(name: string): ArchiveKind {
  validateSafeId(name, 'archive name');
  const m = /\.(didx|fidx|blob)$/.exec(name);
  if (!m) throw new Error(`invalid archive name ${JSON.stringify(name)} (must end in .didx, .fidx or .blob)`);
  return m[1] as ArchiveKind;
}

/** PBS temporary name of a file being written: last extension `x` replaced by `tmp_x` for indexes, `tmp` for blobs. */
export function tmpArchiveName(name: string): string {
  const kind = archiveKind(name);
  const stem = name.slice(0, -(kind.length + 1));
  return kind === 'blob' ? `${stem}.tmp` : `${stem}.tmp_${kind}`;
}

/** `user@realm` or `user@realm!token` (PBS Authid). */
export const AUTHID_RE = /^[^\s:/@!]+@[A-Za-z0-9_][A-Za-z0-9._-]*(?:![A-Za-z0-9_][A-Za-z0-9._-]*)?$/;

export function validateAuthid(authid: string): void {
  if (typeof authid !== 'string' || authid.length > 256 || !AUTHID_RE.test(authid)) {
    throw new Error(`invalid owner ${JSON.stringify(authid)} (expected user@realm or user@realm!token)`);
  }
}

/**
 * PBS owner check: the owner itself, or a user backing up into a group owned by one of its
 * own API tokens.
 */
export function ownerMatches(groupOwner: string, authid: string): boolean {
  if (groupOwner === authid) return true;
  const bang = groupOwner.indexOf('!');
  return bang > 0 && !authid.includes('!') && groupOwner.slice(0, bang) === authid;
}
