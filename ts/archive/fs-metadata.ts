/**
 * What PBS archives of a file's metadata, and how it is put back (spec pxar.md §3.5, §4.2):
 * the policy between the native directory listing (raw stat, xattrs, chattr flags) and pxar
 * `Metadata`.
 *
 * - xattrs: only `user.*`, `trusted.*` and exactly `security.NTACL`, names 1..255 bytes, in
 *   flistxattr order; `security.capability` becomes FCAPS, `system.posix_acl_*` become ACL items.
 * - ACLs: named users sorted by (uid, perms), named groups by (gid, perms); ACL_GROUP_OBJ only
 *   when the access ACL has a mask (then st_mode's group bits hold the mask); the default ACL
 *   (directories) as ACL_DEFAULT + named default entries.
 * - chattr / FAT attributes map to Stat.flags bits; the quota project id is kept for
 *   directories and regular files on ext4/XFS/FUSE/ZFS when it is not 0.
 * Native only reads xattrs/flags for regular files and directories, as PBS does.
 */
import type { DirEntries } from '../native/fs.js';
import type { Acl, AclDefault, Metadata, Xattr } from '../format/pxar/metadata.js';
import { NO_ACL, NO_XATTRS, ownAcl } from '../format/pxar/metadata.js';
import { ACL_XATTR_ACCESS, ACL_XATTR_DEFAULT, decodeAclXattr, type PosixAcl } from './acl.js';

const FCAPS_NAME = 'security.capability';

/** chattr FS_*_FL → Stat.flags WITH_FLAG_* (pbs-client flags.rs). */
const CHATTR_MAP: Array<[number, bigint]> = [
  [0x20, 0x10000n], // APPEND
  [0x80, 0x20000n], // NOATIME
  [0x4, 0x40000n], // COMPR
  [0x800000, 0x80000n], // NOCOW
  [0x40, 0x100000n], // NODUMP
  [0x10000, 0x200000n], // DIRSYNC
  [0x10, 0x400000n], // IMMUTABLE
  [0x8, 0x800000n], // SYNC
  [0x400, 0x1000000n], // NOCOMP
  [0x20000000, 0x2000000n], // PROJINHERIT
];
/** FAT ATTR_* → WITH_FLAG_*. */
const FAT_MAP: Array<[number, bigint]> = [
  [2, 0x2000n], // HIDDEN
  [4, 0x4000n], // SYSTEM
  [32, 0x8000n], // ARCHIVE
];
/** File systems on which PBS reads the quota project id. */
const PROJID_FS = new Set([0xef53, 0x58465342, 0x65735546, 0x2fc12fc1]);

/** chattr bits that map to a flag (ext4 sets EXTENTS on nearly every file: not one of them). */
const CHATTR_MAPPED = CHATTR_MAP.reduce((m, [fs]) => m | fs, 0);
const FAT_MAPPED = FAT_MAP.reduce((m, [a]) => m | a, 0);

export function statFlagsFrom(chattr: number, fat: number): bigint {
  if ((chattr & CHATTR_MAPPED) === 0 && (fat & FAT_MAPPED) === 0) return 0n;
  let f = 0n;
  for (const [fs, w] of CHATTR_MAP) if (chattr & fs) f |= w;
  for (const [a, w] of FAT_MAP) if (fat & a) f |= w;
  return f;
}

/** Inverse of `statFlagsFrom` for the chattr part (FAT attributes are not restored). */
export function chattrFrom(flags: bigint): number {
  let c = 0;
  for (const [fs, w] of CHATTR_MAP) if (flags & w) c |= fs;
  return c;
}

/** The chattr bits pxb manages on restore (others are left untouched). */
export const CHATTR_MASK = CHATTR_MAPPED;

function archivedXattrName(name: Buffer): boolean {
  if (name.length < 1 || name.length > 255) return false;
  const s = name.toString('latin1');
  return s.startsWith('user.') || s.startsWith('trusted.') || s === 'security.NTACL';
}

const byUser = (a: { uid: number; permissions: number }, b: { uid: number; permissions: number }) =>
  a.uid - b.uid || a.permissions - b.permissions;
const byGroup = (a: { gid: number; permissions: number }, b: { gid: number; permissions: number }) =>
  a.gid - b.gid || a.permissions - b.permissions;

function accessAcl(acl: Acl, p: PosixAcl): void {
  acl.users = p.users.map((u) => ({ uid: u.uid, permissions: u.perms })).sort(byUser);
  acl.groups = p.groups.map((g) => ({ gid: g.gid, permissions: g.perms })).sort(byGroup);
  if (p.mask !== undefined) acl.groupObj = p.groupObj;
}

function defaultAcl(acl: Acl, p: PosixAcl): void {
  acl.default = { userObj: p.userObj, groupObj: p.groupObj, other: p.other, mask: p.mask ?? null };
  acl.defaultUsers = p.users.map((u) => ({ uid: u.uid, permissions: u.perms })).sort(byUser);
  acl.defaultGroups = p.groups.map((g) => ({ gid: g.gid, permissions: g.perms })).sort(byGroup);
}

export interface MetadataOptions {
  /** Archive xattrs, ACLs and fcaps (PBS: on by default). */
  xattrs: boolean;
  /** Path for error messages. */
  describe: (i: number) => string;
}

/**
 * The part of an entry's Metadata that lstat gives (no flags, xattrs, ACLs, fcaps, project id):
 * all of it for an entry the metadata cache vouches for as plain (metadata-cache.ts).
 */
export function statMetadata(list: DirEntries, i: number): Metadata {
  return plainMetadata(list.mode(i), list.uid(i), list.gid(i), list.mtimeSec(i), list.mtimeNsec(i));
}

/** Metadata with only lstat's fields (a fresh object: callers may fill in the rest). */
export function plainMetadata(mode: number, uid: number, gid: number, secs: number, nanos: number): Metadata {
  return { mode, flags: 0n, uid, gid, mtime: { secs, nanos }, xattrs: NO_XATTRS, acl: NO_ACL };
}

/**
 * Metadata of an entry the walk did not open because the metadata cache vouches for it
 * (`metaSkipped`): lstat's part from the listing, the fd-based part (chattr flags, xattrs,
 * ACLs, fcaps, project id) from `prev`, the previous archive's metadata of the same inode.
 */
export function cachedEntryMetadata(list: DirEntries, i: number, prev: Metadata): Metadata {
  const meta = statMetadata(list, i);
  meta.flags = prev.flags;
  meta.xattrs = prev.xattrs;
  meta.acl = prev.acl;
  if (prev.fcaps !== undefined) meta.fcaps = prev.fcaps;
  if (prev.quotaProjectId !== undefined) meta.quotaProjectId = prev.quotaProjectId;
  return meta;
}

/** pxar Metadata of entry `i` of a native listing. */
export function entryMetadata(list: DirEntries, i: number, opts: MetadataOptions): Metadata {
  const meta = statMetadata(list, i);
  const type = meta.mode & 0o170000;
  if (type !== 0o100000 && type !== 0o040000) return meta;
  const chattr = list.flags(i);
  const fat = list.fatAttrs(i);
  if (chattr || fat) meta.flags = statFlagsFrom(chattr, fat);
  const projid = list.projid(i);
  if (projid && PROJID_FS.has(list.fsMagic)) meta.quotaProjectId = projid;
  if (!opts.xattrs || !list.hasXattrs(i)) return meta;
  const xattrs: Xattr[] = [];
  const own = () => ownAcl(meta);
  for (const x of list.xattrs(i)) {
    const name = x.name.toString('latin1');
    if (name === FCAPS_NAME) {
      meta.fcaps = Buffer.from(x.value);
    } else if (name === ACL_XATTR_ACCESS) {
      accessAcl(own(), decodeAclXattr(x.value, `${opts.describe(i)}: access ACL`));
    } else if (name === ACL_XATTR_DEFAULT) {
      if (type === 0o040000) defaultAcl(own(), decodeAclXattr(x.value, `${opts.describe(i)}: default ACL`));
    } else if (archivedXattrName(x.name)) {
      xattrs.push({ name: Buffer.from(x.name), value: Buffer.from(x.value) });
    }
  }
  if (xattrs.length) meta.xattrs = xattrs;
  return meta;
}

/** The kernel ACLs to set on restore, or null where none is needed (mode says it all). */
export function aclsForRestore(meta: Metadata): { access: PosixAcl | null; default: PosixAcl | null } {
  const a = meta.acl;
  const mode = meta.mode;
  let access: PosixAcl | null = null;
  if (a.users.length || a.groups.length || a.groupObj !== undefined) {
    access = {
      userObj: (mode >> 6) & 7,
      users: a.users.map((u) => ({ uid: u.uid, perms: u.permissions })),
      groupObj: a.groupObj ?? (mode >> 3) & 7,
      groups: a.groups.map((g) => ({ gid: g.gid, perms: g.permissions })),
      mask: (mode >> 3) & 7,
      other: mode & 7,
    };
  }
  let def: PosixAcl | null = null;
  const d: AclDefault | undefined = a.default;
  if (d || a.defaultUsers.length || a.defaultGroups.length) {
    const named = a.defaultUsers.length + a.defaultGroups.length > 0;
    const groupObj = d?.groupObj ?? (mode >> 3) & 7;
    def = {
      userObj: d?.userObj ?? (mode >> 6) & 7,
      users: a.defaultUsers.map((u) => ({ uid: u.uid, perms: u.permissions })),
      groupObj,
      groups: a.defaultGroups.map((g) => ({ gid: g.gid, perms: g.permissions })),
      other: d?.other ?? mode & 7,
    };
    const mask = d?.mask ?? (named ? groupObj : null);
    if (mask !== null) def.mask = mask;
  }
  return { access, default: def };
}
