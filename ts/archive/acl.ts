/**
 * POSIX ACLs in the kernel's binary xattr format (`system.posix_acl_access` /
 * `system.posix_acl_default`, as `readDir` returns them and `setxattr` takes them) and a
 * structured form the archiver maps to pxar ACL items.
 *
 * Binary format (little-endian): u32 version = 2, then 8-byte entries `u16 tag, u16 perm,
 * u32 id`; tags USER_OBJ 1, USER 2, GROUP_OBJ 4, GROUP 8, MASK 0x10, OTHER 0x20; `id` is the
 * uid/gid for USER/GROUP and 0xffffffff (ACL_UNDEFINED_ID) otherwise; perms are r=4 w=2 x=1.
 *
 * Invariants: `decodeAclXattr` accepts only what the kernel can store: exactly one USER_OBJ,
 * GROUP_OBJ and OTHER, at most one MASK, perms ≤ 7; it throws a FormatError otherwise.
 * `encodeAclXattr` writes the kernel's canonical order (by tag, then USER by uid and GROUP by
 * gid ascending) and refuses duplicate ids, bad perms or ids, and named entries without a mask
 * (all of which the kernel would reject with EINVAL).
 */
import { FormatError } from '../format/errors.js';

export const ACL_XATTR_ACCESS = 'system.posix_acl_access';
export const ACL_XATTR_DEFAULT = 'system.posix_acl_default';
export const ACL_EA_VERSION = 2;
export const ACL_UNDEFINED_ID = 0xffffffff;

export const ACL_TAG = {
  USER_OBJ: 0x01,
  USER: 0x02,
  GROUP_OBJ: 0x04,
  GROUP: 0x08,
  MASK: 0x10,
  OTHER: 0x20,
} as const;

export const ACL_READ = 4;
export const ACL_WRITE = 2;
export const ACL_EXECUTE = 1;

export interface AclUser {
  uid: number;
  perms: number;
}

export interface AclGroup {
  gid: number;
  perms: number;
}

/** A POSIX ACL; `mask` is absent for a minimal ACL (no named users/groups). */
export interface PosixAcl {
  userObj: number;
  users: AclUser[];
  groupObj: number;
  groups: AclGroup[];
  mask?: number;
  other: number;
}

/** Decode the binary xattr value; named entries keep the stored (kernel-sorted) order. */
export function decodeAclXattr(buf: Uint8Array, what = 'ACL xattr'): PosixAcl {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 4 || (b.length - 4) % 8 !== 0) {
    throw new FormatError(`${what}: length ${b.length} is not 4 + 8*n`);
  }
  const version = b.readUInt32LE(0);
  if (version !== ACL_EA_VERSION) throw new FormatError(`${what}: version ${version}, expected ${ACL_EA_VERSION}`);
  let userObj: number | undefined;
  let groupObj: number | undefined;
  let other: number | undefined;
  let mask: number | undefined;
  const users: AclUser[] = [];
  const groups: AclGroup[] = [];
  const once = (prev: number | undefined, name: string, off: number, perms: number): number => {
    if (prev !== undefined) throw new FormatError(`${what}: duplicate ${name} entry at offset ${off}`);
    return perms;
  };
  for (let off = 4; off < b.length; off += 8) {
    const tag = b.readUInt16LE(off);
    const perms = b.readUInt16LE(off + 2);
    const id = b.readUInt32LE(off + 4);
    if (perms > 7) throw new FormatError(`${what}: permissions 0x${perms.toString(16)} at offset ${off}`);
    switch (tag) {
      case ACL_TAG.USER_OBJ:
        userObj = once(userObj, 'USER_OBJ', off, perms);
        break;
      case ACL_TAG.GROUP_OBJ:
        groupObj = once(groupObj, 'GROUP_OBJ', off, perms);
        break;
      case ACL_TAG.OTHER:
        other = once(other, 'OTHER', off, perms);
        break;
      case ACL_TAG.MASK:
        mask = once(mask, 'MASK', off, perms);
        break;
      case ACL_TAG.USER:
        users.push({ uid: id, perms });
        break;
      case ACL_TAG.GROUP:
        groups.push({ gid: id, perms });
        break;
      default:
        throw new FormatError(`${what}: unknown tag 0x${tag.toString(16)} at offset ${off}`);
    }
  }
  if (userObj === undefined || groupObj === undefined || other === undefined) {
    throw new FormatError(`${what}: missing USER_OBJ, GROUP_OBJ or OTHER entry`);
  }
  const acl: PosixAcl = { userObj, users, groupObj, groups, other };
  if (mask !== undefined) acl.mask = mask;
  return acl;
}

function checkPerms(p: number, name: string): void {
  if (!Number.isInteger(p) || p < 0 || p > 7) throw new RangeError(`ACL ${name} permissions ${p} outside 0..7`);
}

function checkIds(ids: number[], name: string): void {
  for (const id of ids) {
    if (!Number.isInteger(id) || id < 0 || id >= ACL_UNDEFINED_ID) throw new RangeError(`ACL ${name} id ${id} is not a valid id`);
  }
  const sorted = [...ids].sort((x, y) => x - y);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i] === sorted[i - 1]) throw new RangeError(`ACL has two ${name} entries for id ${sorted[i]}`);
  }
}

/** Encode in the kernel's canonical order (see the module doc). */
export function encodeAclXattr(acl: PosixAcl): Buffer {
  checkPerms(acl.userObj, 'USER_OBJ');
  checkPerms(acl.groupObj, 'GROUP_OBJ');
  checkPerms(acl.other, 'OTHER');
  if (acl.mask !== undefined) checkPerms(acl.mask, 'MASK');
  for (const u of acl.users) checkPerms(u.perms, `USER ${u.uid}`);
  for (const g of acl.groups) checkPerms(g.perms, `GROUP ${g.gid}`);
  checkIds(acl.users.map((u) => u.uid), 'USER');
  checkIds(acl.groups.map((g) => g.gid), 'GROUP');
  if (acl.mask === undefined && (acl.users.length > 0 || acl.groups.length > 0)) {
    throw new RangeError('ACL with named users or groups needs a MASK entry');
  }
  const entries: [number, number, number][] = [[ACL_TAG.USER_OBJ, acl.userObj, ACL_UNDEFINED_ID]];
  for (const u of [...acl.users].sort((x, y) => x.uid - y.uid)) entries.push([ACL_TAG.USER, u.perms, u.uid]);
  entries.push([ACL_TAG.GROUP_OBJ, acl.groupObj, ACL_UNDEFINED_ID]);
  for (const g of [...acl.groups].sort((x, y) => x.gid - y.gid)) entries.push([ACL_TAG.GROUP, g.perms, g.gid]);
  if (acl.mask !== undefined) entries.push([ACL_TAG.MASK, acl.mask, ACL_UNDEFINED_ID]);
  entries.push([ACL_TAG.OTHER, acl.other, ACL_UNDEFINED_ID]);
  const out = Buffer.alloc(4 + entries.length * 8);
  out.writeUInt32LE(ACL_EA_VERSION, 0);
  entries.forEach(([tag, perms, id], i) => {
    out.writeUInt16LE(tag, 4 + i * 8);
    out.writeUInt16LE(perms, 6 + i * 8);
    out.writeUInt32LE(id, 8 + i * 8);
  });
  return out;
}
