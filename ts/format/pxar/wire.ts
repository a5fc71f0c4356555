/**
 * Item-level wire helpers shared by decoder and accessor (spec pxar.md §1–3): header parsing with
 * per-type size bounds (checked before any content is read or allocated), name validation and
 * parsers for the fixed item contents. All errors are FormatErrors naming the byte offset.
 *
 * u64 fields become numbers; values above 2^53 are refused (no real archive has them) except
 * where the format has a special value (ACL_NO_MASK → null).
 */
import { FormatError } from '../errors.js';
import {
  ACL_NO_MASK,
  HEADER_SIZE,
  ITEM_NAMES,
  MAX_ENTRY_ATTRIBUTES,
  MAX_FILENAME_LEN,
  MAX_PATH_LEN,
  PXAR_ACL_DEFAULT,
  PXAR_ACL_DEFAULT_GROUP,
  PXAR_ACL_DEFAULT_USER,
  PXAR_ACL_GROUP,
  PXAR_ACL_GROUP_OBJ,
  PXAR_ACL_USER,
  PXAR_FCAPS,
  PXAR_QUOTA_PROJID,
  PXAR_XATTR,
  STAT_SIZE,
  STAT_V1_SIZE,
  maxContentSize,
} from './constants.js';
import { NO_ACL, NO_XATTRS, ownAcl, ownXattrs, type Metadata } from './metadata.js';

export interface ItemHeader {
  htype: bigint;
  /** full_size − 16. */
  contentSize: number;
  /** Absolute position of the header. */
  pos: number;
}

const TWO32 = 2 ** 32;

/** Item type split into u32 halves once, so hot paths never touch BigInt. */
export interface TypeWords {
  lo: number;
  hi: number;
}

export const typeWords = (t: bigint): TypeWords => ({ lo: Number(t & 0xffffffffn), hi: Number(t >> 32n) });

/** Whether `buf[off]` holds a header of type `t` whose full size is `full` (< 2^32). */
export function isHeader(buf: Buffer, off: number, t: TypeWords, full: number): boolean {
  return buf.readUInt32LE(off) === t.lo && buf.readUInt32LE(off + 4) === t.hi && buf.readUInt32LE(off + 8) === full && buf.readUInt32LE(off + 12) === 0;
}

export function formatError(what: string, pos: number, message: string): FormatError {
  return new FormatError(`${what}: ${message} at byte ${pos}`);
}

export function itemName(htype: bigint): string {
  return ITEM_NAMES.get(htype) ?? `unknown item 0x${htype.toString(16).padStart(16, '0')}`;
}

/** u64 LE at `off` as a number; `pos` (absolute) is for the error message. */
export function readU64(buf: Buffer, off: number, what: string, pos: number, field: string): number {
  const lo = buf.readUInt32LE(off);
  const hi = buf.readUInt32LE(off + 4);
  if (hi >= 0x200000) throw formatError(what, pos, `${field} ${buf.readBigUInt64LE(off)} is out of range`);
  return hi * TWO32 + lo;
}

/** Writes a non-negative safe integer as u64 LE. */
export function writeU64(buf: Buffer, v: number, off: number): void {
  buf.writeUInt32LE(v >>> 0, off);
  buf.writeUInt32LE(Math.floor(v / TWO32), off + 4);
}

/**
 * Parse and bound-check the 16-byte header at `buf[off]` (absolute position `pos`): full_size
 * ≥ 16, known type, content ≤ the type's maximum.
 */
export function parseHeader(buf: Buffer, off: number, pos: number, what: string): ItemHeader {
  const tlo = buf.readUInt32LE(off);
  const known = TYPE_BY_LO.get(tlo);
  // Fast path: every item type has a distinct low word, so no BigInt is built per header.
  const htype = known !== undefined && known.hi === buf.readUInt32LE(off + 4) ? known.htype : buf.readBigUInt64LE(off);
  const lo = buf.readUInt32LE(off + 8);
  const hi = buf.readUInt32LE(off + 12);
  if (known === undefined || known.htype !== htype) {
    if (!ITEM_NAMES.has(htype)) throw formatError(what, pos, `${itemName(htype)}`);
  }
  if (hi >= 0x200000) throw formatError(what, pos, `${itemName(htype)} with impossible size ${buf.readBigUInt64LE(off + 8)}`);
  const full = hi * TWO32 + lo;
  if (full < HEADER_SIZE) throw formatError(what, pos, `${itemName(htype)} with size ${full} < 16`);
  const contentSize = full - HEADER_SIZE;
  const max = known !== undefined && known.htype === htype ? known.max : maxContentSize(htype);
  if (max !== undefined && contentSize > max) {
    throw formatError(what, pos, `${itemName(htype)} content of ${contentSize} bytes exceeds the limit of ${max}`);
  }
  return { htype, contentSize, pos };
}

/** Item types by the low 32 bits of their constant (all distinct). */
const TYPE_BY_LO = new Map<number, { htype: bigint; hi: number; max: number | undefined }>();
for (const t of ITEM_NAMES.keys()) {
  const lo = Number(t & 0xffffffffn);
  if (TYPE_BY_LO.has(lo)) throw new Error('pxar: item type constants share a low word');
  TYPE_BY_LO.set(lo, { htype: t, hi: Number(t >> 32n), max: maxContentSize(t) });
}

/** Validate a FILENAME content (name + NUL) and return the name. */
export function parseFileName(content: Buffer, what: string, pos: number): Buffer {
  if (content.length === 0 || content[content.length - 1] !== 0) {
    throw formatError(what, pos, 'file name without terminating NUL');
  }
  const name = content.subarray(0, content.length - 1);
  const problem = fileNameProblem(name);
  if (problem) throw formatError(what, pos, `illegal file name: ${problem}`);
  return name;
}

/** Why `name` is not a legal pxar file name, or undefined when it is. */
export function fileNameProblem(name: Uint8Array): string | undefined {
  if (name.length === 0) return 'empty';
  if (name.length > MAX_FILENAME_LEN) return `longer than ${MAX_FILENAME_LEN} bytes`;
  if (name.length === 1 && name[0] === 0x2e) return "'.'";
  if (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e) return "'..'";
  // a plain loop: names are short, and two includes() calls cost more than the scan
  for (let i = 0; i < name.length; i++) {
    const c = name[i];
    if (c === 0x2f) return "contains '/'";
    if (c === 0) return name.includes(0x2f) ? "contains '/'" : 'contains NUL';
  }
  return undefined;
}

/** ENTRY (Stat) or ENTRY_V1 (Stat_V1) content → fresh Metadata without attributes. */
export function parseStat(content: Buffer, v1: boolean, what: string, pos: number): Metadata {
  const expected = v1 ? STAT_V1_SIZE : STAT_SIZE;
  if (content.length !== expected) {
    throw formatError(what, pos, `${v1 ? 'ENTRY_V1' : 'ENTRY'} of ${content.length} bytes (expected ${expected})`);
  }
  const mode = readU64(content, 0, what, pos, 'mode');
  // most entries have no flags: no BigInt is built for them
  const flags = content.readUInt32LE(8) === 0 && content.readUInt32LE(12) === 0 ? 0n : content.readBigUInt64LE(8);
  const uid = content.readUInt32LE(16);
  const gid = content.readUInt32LE(20);
  let secs: number;
  let nanos: number;
  if (v1) {
    // mtime: u64 nanoseconds since the epoch
    const ns = content.readBigUInt64LE(24);
    secs = Number(ns / 1_000_000_000n);
    nanos = Number(ns % 1_000_000_000n);
  } else {
    // i64 from two words (no BigInt); |secs| must stay a safe integer (2^53 − 1)
    const hi = content.readInt32LE(28);
    const lo = content.readUInt32LE(24);
    secs = hi * TWO32 + lo;
    if (hi >= 0x200000 || hi < -0x200000 || (hi === -0x200000 && lo === 0)) {
      throw formatError(what, pos, `mtime ${content.readBigInt64LE(24)} is out of range`);
    }
    nanos = content.readUInt32LE(32);
    if (nanos > 999_999_999) throw formatError(what, pos, `mtime nanoseconds ${nanos} out of range`);
  }
  return { mode, flags, uid, gid, mtime: { secs, nanos }, xattrs: NO_XATTRS, acl: NO_ACL };
}

const ATTRIBUTE_TYPES: ReadonlySet<bigint> = new Set([
  PXAR_XATTR,
  PXAR_ACL_USER,
  PXAR_ACL_GROUP,
  PXAR_ACL_GROUP_OBJ,
  PXAR_ACL_DEFAULT,
  PXAR_ACL_DEFAULT_USER,
  PXAR_ACL_DEFAULT_GROUP,
  PXAR_FCAPS,
  PXAR_QUOTA_PROJID,
]);

/** XATTR, ACL_*, FCAPS, QUOTA_PROJID: the items between ENTRY and an entry's data item. */
export function isAttribute(htype: bigint): boolean {
  return ATTRIBUTE_TYPES.has(htype);
}

/**
 * Apply one attribute item (`isAttribute(htype)` must hold) to `meta`. Duplicates of GROUP_OBJ, DEFAULT, FCAPS, QUOTA_PROJID are refused.
 */
export function applyAttribute(meta: Metadata, htype: bigint, content: Buffer, what: string, pos: number): void {
  const room = (list: unknown[]): void => {
    if (list.length >= MAX_ENTRY_ATTRIBUTES) throw formatError(what, pos, `more than ${MAX_ENTRY_ATTRIBUTES} ${itemName(htype)} items in one entry`);
  };
  switch (htype) {
    case PXAR_XATTR: {
      const nul = content.indexOf(0);
      if (nul < 0) throw formatError(what, pos, 'XATTR without name terminator');
      room(meta.xattrs);
      ownXattrs(meta).push({ name: Buffer.from(content.subarray(0, nul)), value: Buffer.from(content.subarray(nul + 1)) });
      return;
    }
    case PXAR_ACL_USER:
    case PXAR_ACL_DEFAULT_USER: {
      expectSize(content, 16, htype, what, pos);
      const e = { uid: readU64(content, 0, what, pos, 'ACL uid'), permissions: readU64(content, 8, what, pos, 'ACL permissions') };
      const acl = ownAcl(meta);
      const list = htype === PXAR_ACL_USER ? acl.users : acl.defaultUsers;
      room(list);
      list.push(e);
      return;
    }
    case PXAR_ACL_GROUP:
    case PXAR_ACL_DEFAULT_GROUP: {
      expectSize(content, 16, htype, what, pos);
      const e = { gid: readU64(content, 0, what, pos, 'ACL gid'), permissions: readU64(content, 8, what, pos, 'ACL permissions') };
      const acl = ownAcl(meta);
      const list = htype === PXAR_ACL_GROUP ? acl.groups : acl.defaultGroups;
      room(list);
      list.push(e);
      return;
    }
    case PXAR_ACL_GROUP_OBJ:
      expectSize(content, 8, htype, what, pos);
      if (meta.acl.groupObj !== undefined) throw formatError(what, pos, 'duplicate ACL_GROUP_OBJ');
      ownAcl(meta).groupObj = readU64(content, 0, what, pos, 'ACL permissions');
      return;
    case PXAR_ACL_DEFAULT: {
      expectSize(content, 32, htype, what, pos);
      if (meta.acl.default !== undefined) throw formatError(what, pos, 'duplicate ACL_DEFAULT');
      const perm = (off: number): number | null =>
        content.readBigUInt64LE(off) === ACL_NO_MASK ? null : readU64(content, off, what, pos, 'ACL permissions');
      ownAcl(meta).default = { userObj: perm(0), groupObj: perm(8), other: perm(16), mask: perm(24) };
      return;
    }
    case PXAR_FCAPS:
      if (meta.fcaps !== undefined) throw formatError(what, pos, 'duplicate FCAPS');
      meta.fcaps = Buffer.from(content);
      return;
    case PXAR_QUOTA_PROJID:
      expectSize(content, 8, htype, what, pos);
      if (meta.quotaProjectId !== undefined) throw formatError(what, pos, 'duplicate QUOTA_PROJID');
      meta.quotaProjectId = readU64(content, 0, what, pos, 'quota project id');
      return;
    default:
      throw formatError(what, pos, `${itemName(htype)} is not an attribute`);
  }
}

export function expectSize(content: Buffer, size: number, htype: bigint, what: string, pos: number): void {
  if (content.length !== size) {
    throw formatError(what, pos, `${itemName(htype)} of ${content.length} bytes (expected ${size})`);
  }
}

/** SYMLINK content → target (without NUL). */
export function parseSymlink(content: Buffer, what: string, pos: number): Buffer {
  if (content.length === 0 || content[content.length - 1] !== 0) {
    throw formatError(what, pos, 'SYMLINK target without terminating NUL');
  }
  return Buffer.from(content.subarray(0, content.length - 1));
}

/** HARDLINK content → stored offset and target path (no NUL, no '..' component). */
export function parseHardlink(content: Buffer, what: string, pos: number): { offset: number; target: Buffer } {
  if (content.length <= 8) throw formatError(what, pos, 'HARDLINK too small');
  if (content[content.length - 1] !== 0) throw formatError(what, pos, 'HARDLINK target without terminating NUL');
  const offset = readU64(content, 0, what, pos, 'HARDLINK offset');
  const target = Buffer.from(content.subarray(8, content.length - 1));
  if (target.length === 0 || target.length > MAX_PATH_LEN || target.includes(0)) {
    throw formatError(what, pos, 'HARDLINK with an empty or malformed target path');
  }
  for (const part of splitPath(target)) {
    if (part.length === 2 && part[0] === 0x2e && part[1] === 0x2e) {
      throw formatError(what, pos, "HARDLINK target path contains '..'");
    }
  }
  return { offset, target };
}

/** Components of a '/'-separated path (empty components kept). */
export function splitPath(p: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let start = 0;
  for (;;) {
    const slash = p.indexOf(0x2f, start);
    if (slash < 0) {
      parts.push(p.subarray(start));
      return parts;
    }
    parts.push(p.subarray(start, slash));
    start = slash + 1;
  }
}

/** PAYLOAD_REF content → offset, size. */
export function parsePayloadRef(content: Buffer, what: string, pos: number): { offset: number; size: number } {
  if (content.length !== 16) throw formatError(what, pos, `PAYLOAD_REF of ${content.length} bytes (expected 16)`);
  return { offset: readU64(content, 0, what, pos, 'payload offset'), size: readU64(content, 8, what, pos, 'payload size') };
}

/** DEVICE content → major, minor. */
export function parseDevice(content: Buffer, what: string, pos: number): { major: number; minor: number } {
  if (content.length !== 16) throw formatError(what, pos, `DEVICE of ${content.length} bytes (expected 16)`);
  return { major: readU64(content, 0, what, pos, 'device major'), minor: readU64(content, 8, what, pos, 'device minor') };
}

/** `parent/name` (or `name` below the root) as raw bytes. */
export function joinPath(parent: Buffer, name: Buffer): Buffer {
  if (parent.length === 0) return name;
  const out = Buffer.allocUnsafe(parent.length + 1 + name.length);
  parent.copy(out, 0);
  out[parent.length] = 0x2f;
  name.copy(out, parent.length + 1);
  return out;
}
