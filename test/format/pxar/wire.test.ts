import { describe, expect, it } from 'vitest';
import { PXAR_ACL_GROUP_OBJ, PXAR_ACL_USER, PXAR_XATTR, STAT_SIZE } from '../../../ts/format/pxar/constants.js';
import { applyAttribute, parseStat } from '../../../ts/format/pxar/wire.js';

/** ENTRY content: mode, flags, uid, gid, mtime secs (i64), nanos, padding. */
function stat(secs: bigint, flags = 0n, nanos = 0): Buffer {
  const b = Buffer.alloc(STAT_SIZE);
  b.writeBigUInt64LE(0o100644n, 0);
  b.writeBigUInt64LE(flags, 8);
  b.writeUInt32LE(1000, 16);
  b.writeUInt32LE(100, 20);
  b.writeBigInt64LE(secs, 24);
  b.writeUInt32LE(nanos, 32);
  return b;
}

describe('parseStat', () => {
  it('reads mtime seconds over the whole safe-integer range, negative ones included', () => {
    const max = BigInt(Number.MAX_SAFE_INTEGER);
    for (const s of [0n, 1n, -1n, 1_700_000_000n, -1_700_000_000n, 2n ** 32n, -(2n ** 32n), 2n ** 32n - 1n, -(2n ** 32n) + 1n, max, -max]) {
      expect(parseStat(stat(s, 0n, 7), false, 'test', 0).mtime).toEqual({ secs: Number(s), nanos: 7 });
    }
  });

  it('refuses mtime seconds beyond ±(2^53 − 1)', () => {
    const max = BigInt(Number.MAX_SAFE_INTEGER);
    for (const s of [max + 1n, -max - 1n, 2n ** 63n - 1n, -(2n ** 63n)]) {
      expect(() => parseStat(stat(s), false, 'test', 0)).toThrow(/mtime .* is out of range/);
    }
  });

  it('reads flags in both words', () => {
    expect(parseStat(stat(0n, 0n), false, 'test', 0).flags).toBe(0n);
    expect(parseStat(stat(0n, 0x2000n), false, 'test', 0).flags).toBe(0x2000n);
    expect(parseStat(stat(0n, 1n << 40n), false, 'test', 0).flags).toBe(1n << 40n);
  });

  it('gives attributes to one entry only (the empty ACL and xattr list are shared until written)', () => {
    const a = parseStat(stat(1n), false, 'test', 0);
    const b = parseStat(stat(1n), false, 'test', 0);
    const xattr = Buffer.concat([Buffer.from('user.x\0'), Buffer.from('v')]);
    applyAttribute(a, PXAR_XATTR, xattr, 'test', 0);
    const user = Buffer.alloc(16);
    user.writeBigUInt64LE(42n, 0);
    user.writeBigUInt64LE(6n, 8);
    applyAttribute(a, PXAR_ACL_USER, user, 'test', 0);
    applyAttribute(a, PXAR_ACL_GROUP_OBJ, Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]), 'test', 0);
    expect(a.xattrs.map((x) => x.name.toString())).toEqual(['user.x']);
    expect(a.acl.users).toEqual([{ uid: 42, permissions: 6 }]);
    expect(a.acl.groupObj).toBe(5);
    expect(b.xattrs).toEqual([]);
    expect(b.acl).toEqual({ users: [], groups: [], defaultUsers: [], defaultGroups: [] });
    expect(parseStat(stat(1n), false, 'test', 0).acl.groupObj).toBeUndefined();
  });
});
