import { describe, expect, it } from 'vitest';
import { basicMetadata, metadataEqualForReuse, type Metadata } from '../../../ts/format/pxar/index.js';

const B = (s: string): Buffer => Buffer.from(s);

function base(): Metadata {
  return {
    mode: 0o100644,
    flags: 0x2000n,
    uid: 1000,
    gid: 100,
    mtime: { secs: 1_700_000_000, nanos: 5 },
    xattrs: [
      { name: B('user.b'), value: B('1') },
      { name: B('user.a'), value: B('2') },
    ],
    acl: {
      users: [{ uid: 1, permissions: 7 }],
      groups: [{ gid: 2, permissions: 5 }],
      groupObj: 4,
      default: { userObj: 7, groupObj: 5, other: null, mask: 7 },
      defaultUsers: [{ uid: 3, permissions: 6 }],
      defaultGroups: [{ gid: 4, permissions: 4 }],
    },
    fcaps: B('caps'),
    quotaProjectId: 9,
  };
}

describe('metadataEqualForReuse (change-detection.md §3 item 2)', () => {
  it('is true for equal metadata (deep copies)', () => {
    expect(metadataEqualForReuse(base(), base())).toBe(true);
    expect(metadataEqualForReuse(basicMetadata(0o100644), basicMetadata(0o100644))).toBe(true);
  });

  it('ignores xattr values but not names or their order (upstream quirk)', () => {
    const b = base();
    b.xattrs[0].value = B('changed');
    expect(metadataEqualForReuse(base(), b)).toBe(true);
    const swapped = base();
    swapped.xattrs.reverse();
    expect(metadataEqualForReuse(base(), swapped)).toBe(false);
    const renamed = base();
    renamed.xattrs[1].name = B('user.c');
    expect(metadataEqualForReuse(base(), renamed)).toBe(false);
    const fewer = base();
    fewer.xattrs.pop();
    expect(metadataEqualForReuse(base(), fewer)).toBe(false);
  });

  it('detects every other difference', () => {
    const changes: ((m: Metadata) => void)[] = [
      (m) => (m.mode = 0o100600),
      (m) => (m.flags = 0n),
      (m) => (m.uid = 0),
      (m) => (m.gid = 0),
      (m) => (m.mtime = { secs: 1_700_000_000, nanos: 6 }),
      (m) => (m.mtime = { secs: 1_700_000_001, nanos: 5 }),
      (m) => (m.acl.users[0].permissions = 6),
      (m) => (m.acl.users = []),
      (m) => (m.acl.groups[0].gid = 3),
      (m) => (m.acl.groupObj = undefined),
      (m) => (m.acl.default = undefined),
      (m) => (m.acl.default!.other = 0),
      (m) => (m.acl.defaultUsers[0].uid = 4),
      (m) => (m.acl.defaultGroups = []),
      (m) => (m.fcaps = B('capz')),
      (m) => (m.fcaps = undefined),
      (m) => (m.quotaProjectId = undefined),
      (m) => (m.quotaProjectId = 10),
    ];
    for (const [i, change] of changes.entries()) {
      const m = base();
      change(m);
      expect(metadataEqualForReuse(base(), m), `change ${i}`).toBe(false);
      expect(metadataEqualForReuse(m, base()), `change ${i} (swapped)`).toBe(false);
    }
  });
});
