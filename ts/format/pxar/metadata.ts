/**
 * Entry metadata as stored in a pxar archive (ENTRY + attribute items, spec pxar.md §3–4) and
 * the equality used by metadata-mode change detection (change-detection.md §3 item 2).
 *
 * Invariants: every name/value is raw bytes (`Buffer`, never assumed UTF-8); xattrs keep archive
 * order; `mtime.secs` is floor-based and may be negative, `mtime.nanos` is 0..999 999 999.
 * u64 wire fields are numbers (safe integers) except `flags`, which is a bigint bit set.
 */
import { IFBLK, IFCHR, IFDIR, IFIFO, IFLNK, IFMT, IFREG, IFSOCK } from './constants.js';

export interface MTime {
  /** Seconds since the epoch (floor; negative before 1970). */
  secs: number;
  /** Nanoseconds added to `secs`, 0..999 999 999. */
  nanos: number;
}

export interface Xattr {
  /** Attribute name (no NUL), e.g. `user.foo`. */
  name: Buffer;
  value: Buffer;
}

export interface AclUser {
  uid: number;
  /** ACL_READ | ACL_WRITE | ACL_EXECUTE bits. */
  permissions: number;
}

export interface AclGroup {
  gid: number;
  permissions: number;
}

/** ACL_DEFAULT: the default ACL's base entries; `null` = absent (ACL_NO_MASK on the wire). */
export interface AclDefault {
  userObj: number | null;
  groupObj: number | null;
  other: number | null;
  mask: number | null;
}

export interface Acl {
  users: AclUser[];
  groups: AclGroup[];
  /** Real group-obj permissions, present when the access ACL has a mask. */
  groupObj?: number;
  default?: AclDefault;
  defaultUsers: AclUser[];
  defaultGroups: AclGroup[];
}

export interface Metadata {
  /** Full st_mode: type bits (IFMT) + permission bits. */
  mode: number;
  /** Stat.flags: WITH_FLAG_* attribute bits. */
  flags: bigint;
  uid: number;
  gid: number;
  mtime: MTime;
  xattrs: Xattr[];
  acl: Acl;
  /** Raw `security.capability` value. */
  fcaps?: Buffer;
  quotaProjectId?: number;
}

export function emptyAcl(): Acl {
  return { users: [], groups: [], defaultUsers: [], defaultGroups: [] };
}

/**
 * Frozen empty ACL and xattr list shared by every entry that has none (most entries), so that
 * listing a directory does not allocate five empty objects per entry. Code that adds ACL
 * entries or xattrs gives the entry its own first (`ownAcl`, `ownXattrs`).
 */
export const NO_ACL: Acl = Object.freeze({
  users: Object.freeze([]),
  groups: Object.freeze([]),
  defaultUsers: Object.freeze([]),
  defaultGroups: Object.freeze([]),
}) as unknown as Acl;
export const NO_XATTRS: Xattr[] = Object.freeze([]) as unknown as Xattr[];

/** `meta.acl`, replaced by a fresh one first if it is the shared `NO_ACL`. */
export function ownAcl(meta: Metadata): Acl {
  return meta.acl === NO_ACL ? (meta.acl = emptyAcl()) : meta.acl;
}

/** `meta.xattrs`, replaced by a fresh array first if it is the shared `NO_XATTRS`. */
export function ownXattrs(meta: Metadata): Xattr[] {
  return meta.xattrs === NO_XATTRS ? (meta.xattrs = []) : meta.xattrs;
}

/** Metadata with only `mode` set (everything else zero/empty), like upstream's builder default. */
export function basicMetadata(mode: number): Metadata {
  return { mode, flags: 0n, uid: 0, gid: 0, mtime: { secs: 0, nanos: 0 }, xattrs: [], acl: emptyAcl() };
}

export const isDirectory = (mode: number): boolean => (mode & IFMT) === IFDIR;
export const isRegularFile = (mode: number): boolean => (mode & IFMT) === IFREG;
export const isSymlink = (mode: number): boolean => (mode & IFMT) === IFLNK;
export const isDevice = (mode: number): boolean => (mode & IFMT) === IFBLK || (mode & IFMT) === IFCHR;
export const isFifo = (mode: number): boolean => (mode & IFMT) === IFIFO;
export const isSocket = (mode: number): boolean => (mode & IFMT) === IFSOCK;

/**
 * Whether a previous archive's entry counts as unchanged (change-detection.md §3 item 2):
 * mode, flags, uid, gid, mtime (secs and nanos), xattr **names** in order (values are ignored,
 * an upstream quirk), every ACL field, fcaps bytes and quota project id.
 */
export function metadataEqualForReuse(a: Metadata, b: Metadata): boolean {
  if (
    a.mode !== b.mode ||
    a.flags !== b.flags ||
    a.uid !== b.uid ||
    a.gid !== b.gid ||
    a.mtime.secs !== b.mtime.secs ||
    a.mtime.nanos !== b.mtime.nanos
  ) {
    return false;
  }
  if (a.xattrs.length !== b.xattrs.length) return false;
  for (let i = 0; i < a.xattrs.length; i++) {
    if (!a.xattrs[i].name.equals(b.xattrs[i].name)) return false;
  }
  if (!aclEqual(a.acl, b.acl)) return false;
  if (a.fcaps === undefined || b.fcaps === undefined) {
    if (a.fcaps !== b.fcaps) return false;
  } else if (!a.fcaps.equals(b.fcaps)) {
    return false;
  }
  return a.quotaProjectId === b.quotaProjectId;
}

function aclEqual(a: Acl, b: Acl): boolean {
  return (
    usersEqual(a.users, b.users) &&
    groupsEqual(a.groups, b.groups) &&
    a.groupObj === b.groupObj &&
    defaultEqual(a.default, b.default) &&
    usersEqual(a.defaultUsers, b.defaultUsers) &&
    groupsEqual(a.defaultGroups, b.defaultGroups)
  );
}

function usersEqual(a: AclUser[], b: AclUser[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i].uid !== b[i].uid || a[i].permissions !== b[i].permissions) return false;
  }
  return true;
}

function groupsEqual(a: AclGroup[], b: AclGroup[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i].gid !== b[i].gid || a[i].permissions !== b[i].permissions) return false;
  }
  return true;
}

function defaultEqual(a: AclDefault | undefined, b: AclDefault | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.userObj === b.userObj && a.groupObj === b.groupObj && a.other === b.other && a.mask === b.mask;
}
