import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ACL_XATTR_ACCESS,
  ACL_XATTR_DEFAULT,
  decodeAclXattr,
  encodeAclXattr,
  type PosixAcl,
} from '../../ts/archive/acl.js';
import { FormatError } from '../../ts/format/errors.js';
import {
  READ_GREW,
  READ_OK,
  READ_SHRUNK,
  UTIME_OMIT,
  XATTR_CREATE,
  bytesReadFromFiles,
  DirWalker,
  getxattr,
  heldSlots,
  lchown,
  listXattrs,
  mknod,
  readDir,
  readDirs,
  readFilesExact,
  setFlags,
  setProjid,
  setxattr,
  statPath,
  takeHeldFile,
  TOUCH_EMPTY,
  touchFiles,
  utimens,
  type DirEntries,
  type DirEntry,
} from '../../ts/native/fs.js';

const { S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK, S_IFMT, S_IFLNK } = fs.constants;
const E = os.constants.errno;
const isRoot = process.getuid?.() === 0;
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'pxb-nativefs-'));
const B = (...parts: (string | Buffer)[]): Buffer =>
  Buffer.concat(parts.map((p, i) => Buffer.concat([i ? Buffer.from('/') : Buffer.alloc(0), Buffer.from(p)])));

/** glibc major()/minor() on a 64-bit dev_t, written independently of the addon. */
const major = (d: bigint): number => Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & 0xfffff000n));
const minor = (d: bigint): number => Number((d & 0xffn) | ((d >> 12n) & 0xffffff00n));

/** null when user.* xattrs work on the temp file system, else the reason. */
function probeUserXattrs(): string | null {
  const p = path.join(base, 'xattr-probe');
  fs.writeFileSync(p, '');
  try {
    setxattr(p, 'user.pxb.probe', Buffer.from('1'));
    return null;
  } catch (e) {
    return `user xattrs unsupported on ${os.tmpdir()}: ${(e as Error).message}`;
  } finally {
    fs.rmSync(p);
  }
}
const noUserXattrs = probeUserXattrs();
const hasSetfacl = (() => {
  try {
    execFileSync('setfacl', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

afterAll(() => {
  fs.rmSync(base, { recursive: true, force: true });
});

function find(d: DirEntries, name: string | Buffer): DirEntry {
  const want = Buffer.from(name);
  for (let i = 0; i < d.length; i++) if (d.name(i).equals(want)) return d.entry(i);
  throw new Error(`no entry ${want.toString('hex')}`);
}

/** Every stat field of `e` against node's lstat of the same path. */
function expectSameStat(e: DirEntry, p: Buffer): void {
  const st = fs.lstatSync(p, { bigint: true });
  expect(e.status).toBe(0);
  expect(e.mode).toBe(Number(st.mode));
  expect(e.uid).toBe(Number(st.uid));
  expect(e.gid).toBe(Number(st.gid));
  expect(e.size).toBe(Number(st.size));
  expect(BigInt(e.mtimeSec) * 1_000_000_000n + BigInt(e.mtimeNsec)).toBe(st.mtimeNs);
  expect(BigInt(e.ctimeSec) * 1_000_000_000n + BigInt(e.ctimeNsec)).toBe(st.ctimeNs);
  expect(e.nlink).toBe(Number(st.nlink));
  expect(e.dev).toBe(st.dev);
  expect(e.ino).toBe(st.ino);
  expect(e.rdevMajor).toBe(major(st.rdev));
  expect(e.rdevMinor).toBe(minor(st.rdev));
  if ((e.mode & S_IFMT) === S_IFLNK) expect(e.symlinkTarget).toEqual(fs.readlinkSync(p, { encoding: 'buffer' }));
  else expect(e.symlinkTarget).toBeNull();
}

/** The names of entries `pick` copied into one Buffer (`ends[k]` = end of name k), as a run store takes them. */
function namesOf(d: DirEntries, pick: number[]): { bytes: Buffer; ends: Uint32Array } {
  const bytes = Buffer.alloc(d.nameBytes(pick));
  const ends = new Uint32Array(pick.length);
  d.namesInto(pick, bytes, 0, ends, 0);
  return { bytes, ends };
}

describe('readDir: every entry kind', () => {
  const dir = path.join(base, 'kinds');
  const nonUtf8 = Buffer.from([0x66, 0xff, 0xfe, 0x80]);
  const long255 = 'L'.repeat(255);
  const longUtf8 = 'é'.repeat(127) + 'x'; // 255 bytes
  let server: net.Server;

  beforeAll(async () => {
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'file'), 'hello');
    fs.mkdirSync(path.join(dir, 'dir'));
    fs.writeFileSync(path.join(dir, 'dir', 'child'), 'c');
    fs.symlinkSync('file', path.join(dir, 'link'));
    fs.symlinkSync(Buffer.from([0x2f, 0x6e, 0x6f, 0xff]), path.join(dir, 'dangling'));
    mknod(path.join(dir, 'fifo'), S_IFIFO | 0o640);
    mknod(path.join(dir, 'sock-mknod'), S_IFSOCK | 0o600);
    server = net.createServer();
    await new Promise<void>((resolve) => server.listen(path.join(dir, 'sock'), resolve));
    fs.writeFileSync(path.join(dir, 'hl1'), 'linked');
    fs.linkSync(path.join(dir, 'hl1'), path.join(dir, 'hl2'));
    fs.writeFileSync(B(dir, nonUtf8), 'raw name');
    fs.writeFileSync(path.join(dir, long255), '');
    fs.writeFileSync(path.join(dir, longUtf8), '');
    fs.writeFileSync(path.join(dir, 'B-upper'), '');
    if (isRoot) {
      mknod(path.join(dir, 'null'), S_IFCHR | 0o666, 1, 3);
      mknod(path.join(dir, 'blk'), S_IFBLK | 0o600, 0xabc, 0xfedcb); // Linux: 12-bit major, 20-bit minor
    }
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('lists every name once, sorted byte-wise, without . and ..', async () => {
    const d = await readDir(dir);
    const names = Array.from({ length: d.length }, (_, i) => Buffer.from(d.name(i)));
    const expected = fs.readdirSync(dir, { encoding: 'buffer' }).sort(Buffer.compare);
    expect(names).toEqual(expected);
    expect(names.length).toBe(isRoot ? 15 : 13);
    expect(names.some((n) => n.equals(nonUtf8))).toBe(true);
    expect(names.some((n) => n.length === 255 && n.toString() === longUtf8)).toBe(true);
    expect(d.fsMagic).toBe(Number(fs.statfsSync(dir).type));
  });

  it('reports the same stat fields as node lstat (bigint) for every kind', async () => {
    const d = await readDir(Buffer.from(dir), { xattrs: true, acls: true, fcaps: true, flags: true, projid: true });
    for (const e of d) {
      expectSameStat(e, B(dir, e.name));
      expect(e.metaError).toBeNull();
    }
    expect(find(d, 'link').symlinkTarget?.toString()).toBe('file');
    expect(find(d, 'dangling').symlinkTarget).toEqual(Buffer.from([0x2f, 0x6e, 0x6f, 0xff]));
    expect(find(d, 'fifo').mode & S_IFMT).toBe(S_IFIFO);
    expect(find(d, 'sock').mode & S_IFMT).toBe(S_IFSOCK);
    expect(find(d, 'sock-mknod').mode & S_IFMT).toBe(S_IFSOCK);
    expect(find(d, nonUtf8).size).toBe(8);
    const [h1, h2] = [find(d, 'hl1'), find(d, 'hl2')];
    expect(h1.nlink).toBe(2);
    expect(h1.ino).toBe(h2.ino);
    expect(h1.dev).toBe(h2.dev);
    expect(find(d, 'dir').nlink).toBe(2);
  });

  it.runIf(isRoot)('reports device numbers with the glibc major/minor split', async () => {
    const d = await readDir(dir);
    const nul = find(d, 'null');
    expect([nul.mode & S_IFMT, nul.rdevMajor, nul.rdevMinor]).toEqual([S_IFCHR, 1, 3]);
    const blk = find(d, 'blk');
    expect([blk.mode & S_IFMT, blk.rdevMajor, blk.rdevMinor]).toEqual([S_IFBLK, 0xabc, 0xfedcb]);
    expect(fs.lstatSync(path.join(dir, 'blk'), { bigint: true }).rdev).toBe((0xabcn << 8n) | 0xcbn | (0xfed00n << 12n));
    // Numbers the kernel cannot store are refused instead of being truncated.
    expect(() => mknod(path.join(dir, 'blk2'), S_IFBLK | 0o600, 0x1000, 0)).toThrow(/EINVAL: device 4096:0 out of range/);
    expect(() => mknod(path.join(dir, 'blk2'), S_IFBLK | 0o600, 1, 0x100000)).toThrow(/EINVAL/);
  });

  it('lists a directory given by a non-UTF-8 path', async () => {
    const sub = B(base, Buffer.from([0xc3, 0x28, 0x64]));
    fs.mkdirSync(sub);
    fs.writeFileSync(B(sub, Buffer.from([0xff])), 'x');
    const d = await readDir(sub);
    expect(d.length).toBe(1);
    expect(d.name(0)).toEqual(Buffer.from([0xff]));
    expectSameStat(d.entry(0), B(sub, Buffer.from([0xff])));
    fs.mkdirSync(B(sub, 'empty'));
    const empty = await readDir(B(sub, 'empty'), { xattrs: true });
    expect([empty.length, [...empty]]).toEqual([0, []]);
    expect(() => empty.name(0)).toThrow(RangeError);
  });

  it('namesInto() copies the names of chosen entries into one buffer', async () => {
    const d = await readDir(dir);
    const pick = [d.length - 1, 0, 2];
    const { bytes, ends } = namesOf(d, pick);
    const want = pick.map((i) => Buffer.from(d.name(i)));
    expect(bytes).toEqual(Buffer.concat(want));
    expect([...ends]).toEqual(want.map((_, k) => want.slice(0, k + 1).reduce((a, b) => a + b.length, 0)));
    // a copy: it does not share the listing's memory
    expect(bytes.buffer).not.toBe(d.name(0).buffer);
    expect(namesOf(d, []).bytes.length).toBe(0);
    expect(() => namesOf(d, [d.length])).toThrow(RangeError);
  });

  it('namesInto() and statFields() of runs of entries, with symlink targets and long names between them', async () => {
    const t = path.join(base, 'runs');
    fs.mkdirSync(t);
    const long = 'l'.repeat(200);
    for (const n of ['a1', 'a2', 'a3', 'c1', 'c2', long]) fs.writeFileSync(path.join(t, n), n);
    fs.symlinkSync('a-target-between-the-names', path.join(t, 'b-link'));
    const d = await readDir(t);
    const names = [...d].map((e) => e.name.toString());
    const at = (n: string) => names.indexOf(n);
    // consecutive entries (one copy), across the symlink, out of order, with the long name
    for (const pick of [[at('a1'), at('a2'), at('a3')], [at('a3'), at('b-link'), at('c1')], [at('c2'), at('a1')], [at('c1'), at('c2'), at(long)]]) {
      const { bytes, ends } = namesOf(d, pick);
      expect(bytes.toString()).toBe(pick.map((i) => names[i]).join(''));
      expect(ends[ends.length - 1]).toBe(bytes.length);
      const out = new Float64Array(pick.length * 7).fill(-1);
      d.statFields(pick, out, 7);
      pick.forEach((i, q) => {
        const e = d.entry(i);
        expect([...out.subarray(q * 7, q * 7 + 7)]).toEqual([e.mode, e.uid, e.gid, e.mtimeSec, e.mtimeNsec, e.size, -1]);
      });
    }
    expect(() => d.statFields([0, 1], new Float64Array(13), 7)).toThrow(RangeError);

    // Into shared arrays, one pick after the other (a lookahead cache's run store): names
    // back to back with ends as offsets in the shared buffer, stat fields from an entry slot.
    const picks = [[at('a2'), at('a3')], [at(long)], [at('b-link'), at('c2'), at('a1')]];
    const out = Buffer.alloc(1000, 0xee);
    const ends = new Uint32Array(8);
    const nums = new Float64Array(8 * 7).fill(-1);
    let bytes = 5;
    let slot = 1;
    for (const pick of picks) {
      expect(d.nameBytes(pick)).toBe(pick.reduce((a, i) => a + names[i].length, 0));
      d.statFields(pick, nums, 7, slot);
      bytes = d.namesInto(pick, out, bytes, ends, slot);
      slot += pick.length;
    }
    const all = picks.flat();
    expect(out.subarray(5, bytes).toString()).toBe(all.map((i) => names[i]).join(''));
    expect(out[4]).toBe(0xee);
    expect(out[bytes]).toBe(0xee);
    all.forEach((i, q) => {
      const start = q === 0 ? 5 : ends[q];
      expect(out.subarray(start, ends[q + 1]).toString()).toBe(names[i]);
      const e = d.entry(i);
      expect([...nums.subarray((q + 1) * 7, (q + 2) * 7)]).toEqual([e.mode, e.uid, e.gid, e.mtimeSec, e.mtimeNsec, e.size, -1]);
    });
    expect([...nums.subarray(0, 7)]).toEqual(Array(7).fill(-1));
    expect(() => d.namesInto(picks[0], out, 999, ends, 0)).toThrow(RangeError);
    expect(() => d.namesInto(picks[0], out, 0, ends, 7)).toThrow(RangeError);
    expect(() => d.statFields(picks[0], nums, 7, 7)).toThrow(RangeError);
  });

  it('readDirs lists several directories in one job; one that cannot be listed gets its error', async () => {
    const got = await readDirs([dir, path.join(dir, 'no-such-dir'), Buffer.from(path.join(dir, 'file'))], { flags: true });
    expect(got).toHaveLength(3);
    const [a, missing, notDir] = got;
    if (a instanceof Error) throw a;
    const one = await readDir(dir, { flags: true });
    expect([...a].map((e) => e.name.toString())).toEqual([...one].map((e) => e.name.toString()));
    expect(a.pathHash(0)).toBe(one.pathHash(0));
    expect(missing).toBeInstanceOf(Error);
    expect((missing as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect((notDir as NodeJS.ErrnoException).code).toBe('ENOTDIR');
  });

  it('statPath lstat()s one path with the same fields', async () => {
    const root = await statPath(dir, { flags: true });
    expectSameStat(root, Buffer.from(dir));
    expect(root.name.toString()).toBe(dir);
    expect(root.fsMagic).toBe(Number(fs.statfsSync(dir).type));
    const link = await statPath(path.join(dir, 'link'));
    expectSameStat(link, Buffer.from(path.join(dir, 'link')));
    expect(link.symlinkTarget?.toString()).toBe('file');
  });

  it('survives many concurrent listings and a large directory', async () => {
    const big = path.join(base, 'big');
    fs.mkdirSync(big);
    for (let i = 0; i < 3000; i++) fs.writeFileSync(path.join(big, `f${(i * 7919) % 3000}`), '');
    const all = await Promise.all(Array.from({ length: 16 }, () => readDir(big)));
    const expected = fs.readdirSync(big, { encoding: 'buffer' }).sort(Buffer.compare).join('/');
    for (const d of all) {
      expect(d.length).toBe(3000);
      expect(Array.from({ length: d.length }, (_, i) => d.name(i)).join('/')).toBe(expected);
    }
  });
});

describe('xattrs, fcaps and flags', () => {
  const dir = path.join(base, 'xattrs');

  beforeAll(() => {
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'file'), 'x');
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.symlinkSync('file', path.join(dir, 'link'));
    mknod(path.join(dir, 'fifo'), S_IFIFO | 0o600);
  });

  it.skipIf(noUserXattrs !== null)(`round-trips user xattrs in listxattr order ${noUserXattrs ?? ''}`, async () => {
    const f = path.join(dir, 'file');
    const binary = Buffer.from([0, 0xff, 1, 0, 0x80]);
    const large = Buffer.alloc(3000, 0x5a);
    setxattr(f, 'user.b', Buffer.from('v1'));
    setxattr(f, Buffer.from('user.a\xff', 'latin1'), binary);
    setxattr(f, 'user.empty', Buffer.alloc(0));
    setxattr(f, 'user.large', large);
    setxattr(path.join(dir, 'sub'), 'user.d', Buffer.from('dir value'));
    expect(getxattr(f, Buffer.from('user.a\xff', 'latin1'))).toEqual(binary);
    expect(getxattr(f, 'user.large')).toEqual(large);
    expect(getxattr(f, 'user.missing')).toBeNull();
    expect(() => setxattr(f, 'user.b', Buffer.from('x'), true, XATTR_CREATE)).toThrow(
      expect.objectContaining({ code: 'EEXIST', syscall: 'setxattr', path: f }),
    );

    const d = await readDir(dir, { xattrs: true });
    const fe = find(d, 'file');
    const kernelOrder = listXattrs(f).filter((n) => !n.toString().startsWith('system.posix_acl_'));
    expect(fe.xattrs.map((x) => x.name)).toEqual(kernelOrder);
    for (const x of fe.xattrs) expect(x.value).toEqual(getxattr(f, x.name));
    const byName = new Map(fe.xattrs.map((x) => [x.name.toString('latin1'), x.value]));
    expect(byName.get('user.b')).toEqual(Buffer.from('v1'));
    expect(byName.get('user.a\xff')).toEqual(binary);
    expect(byName.get('user.empty')).toEqual(Buffer.alloc(0));
    expect(byName.get('user.large')).toEqual(large);
    expect(find(d, 'sub').xattrs.find((x) => x.name.toString() === 'user.d')?.value.toString()).toBe('dir value');
    // Without the option nothing is read.
    expect(find(await readDir(dir), 'file').xattrs).toEqual([]);
    // user.* is not allowed on symlinks (the kernel refuses it).
    expect(() => setxattr(path.join(dir, 'link'), 'user.x', Buffer.from('1'))).toThrow(
      expect.objectContaining({ code: 'EPERM' }),
    );
  });

  it.runIf(isRoot)('reads no xattrs of symlinks and fifos (O_PATH behaviour) although they have some', async () => {
    setxattr(path.join(dir, 'link'), 'trusted.t', Buffer.from('on link'), true);
    setxattr(path.join(dir, 'fifo'), 'trusted.t', Buffer.from('on fifo'), true);
    expect(listXattrs(path.join(dir, 'link'), true).map(String)).toContain('trusted.t');
    expect(getxattr(path.join(dir, 'fifo'), 'trusted.t', true)?.toString()).toBe('on fifo');
    const d = await readDir(dir, { xattrs: true, acls: true, fcaps: true, flags: true, projid: true });
    for (const name of ['link', 'fifo']) {
      const e = find(d, name);
      expect(e.xattrs).toEqual([]);
      expect([e.flags, e.projid]).toEqual([0, 0]);
      expect(e.metaError).toBeNull();
    }
  });

  it.runIf(isRoot)('returns security.capability only under fcaps', async () => {
    const f = path.join(dir, 'capfile');
    fs.writeFileSync(f, '');
    // VFS_CAP_REVISION_2 with CAP_NET_BIND_SERVICE (10) permitted, nothing inheritable.
    const cap = Buffer.alloc(20);
    cap.writeUInt32LE(0x02000000, 0);
    cap.writeUInt32LE(1 << 10, 4);
    setxattr(f, 'security.capability', cap);
    const fc = find(await readDir(dir, { fcaps: true }), 'capfile');
    expect(fc.xattrs).toEqual([{ name: Buffer.from('security.capability'), value: cap }]);
    const fx = find(await readDir(dir, { xattrs: true }), 'capfile');
    expect(fx.xattrs.map((x) => x.name.toString())).not.toContain('security.capability');
  });

  it('sets and reads chattr flags (FS_NODUMP_FL), cross-checked with lsattr', async () => {
    const f = path.join(dir, 'file');
    const NODUMP = 0x40;
    expect(setFlags(f, NODUMP, NODUMP)).toBe(true);
    const set = find(await readDir(dir, { flags: true }), 'file').flags;
    expect(set & NODUMP).toBe(NODUMP);
    expect(execFileSync('lsattr', ['-d', f]).toString().split(' ')[0]).toContain('d');
    expect(setFlags(f, 0, NODUMP)).toBe(true);
    expect(find(await readDir(dir, { flags: true }), 'file').flags).toBe(set & ~NODUMP);
    expect(execFileSync('lsattr', ['-d', f]).toString().split(' ')[0]).not.toContain('d');
    // Symlinks carry no chattr flags: reported, not thrown.
    expect(setFlags(path.join(dir, 'link'), NODUMP)).toBe(false);
    expect(find(await readDir(dir, { flags: true }), 'link').flags).toBe(0);
  });

  it('sets the quota project id where the file system supports it', async () => {
    const f = path.join(dir, 'file');
    const supported = setProjid(f, 4242);
    const e = find(await readDir(dir, { projid: true }), 'file');
    // ext4 without the "project" feature refuses (false); then the id stays 0.
    expect(e.projid).toBe(supported ? 4242 : 0);
  });
});

describe('POSIX ACLs', () => {
  const dir = path.join(base, 'acls');
  const parseGetfacl = (out: string): PosixAcl => {
    const acl: PosixAcl = { userObj: -1, users: [], groupObj: -1, groups: [], other: -1 };
    const perms = (s: string): number => (s[0] === 'r' ? 4 : 0) | (s[1] === 'w' ? 2 : 0) | (s[2] === 'x' ? 1 : 0);
    for (const line of out.split('\n')) {
      const [tag, id, p] = line.replace(/^default:/, '').split(':');
      if (!p) continue;
      if (tag === 'user' && id === '') acl.userObj = perms(p);
      else if (tag === 'user') acl.users.push({ uid: Number(id), perms: perms(p) });
      else if (tag === 'group' && id === '') acl.groupObj = perms(p);
      else if (tag === 'group') acl.groups.push({ gid: Number(id), perms: perms(p) });
      else if (tag === 'mask') acl.mask = perms(p);
      else if (tag === 'other') acl.other = perms(p);
    }
    return acl;
  };

  beforeAll(() => {
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'file'), '');
    fs.chmodSync(path.join(dir, 'file'), 0o640);
    fs.mkdirSync(path.join(dir, 'sub'));
  });

  it.runIf(hasSetfacl)('decodes the access and default ACLs that setfacl wrote (getfacl agrees)', async () => {
    const f = path.join(dir, 'file');
    const sub = path.join(dir, 'sub');
    execFileSync('setfacl', ['-m', 'u:2001:rw-,u:1234:r--,g:2345:r-x,m::rwx', f]);
    execFileSync('setfacl', ['-d', '-m', 'u:1234:r-x,g:77:rw-', sub]);
    const d = await readDir(dir, { acls: true });
    const fe = find(d, 'file');
    expect(fe.xattrs.map((x) => x.name.toString())).toEqual([ACL_XATTR_ACCESS]);
    const access = decodeAclXattr(fe.xattrs[0].value);
    expect(access).toEqual(parseGetfacl(execFileSync('getfacl', ['-cn', '--absolute-names', f]).toString()));
    expect(access).toEqual({
      userObj: 6,
      users: [
        { uid: 1234, perms: 4 },
        { uid: 2001, perms: 6 },
      ],
      groupObj: 4,
      groups: [{ gid: 2345, perms: 5 }],
      mask: 7,
      other: 0,
    });
    // The kernel's order is canonical: re-encoding gives the same bytes.
    expect(encodeAclXattr(access)).toEqual(fe.xattrs[0].value);
    const de = find(d, 'sub');
    const dflt = de.xattrs.find((x) => x.name.toString() === ACL_XATTR_DEFAULT);
    expect(dflt).toBeDefined();
    expect(decodeAclXattr(dflt!.value)).toEqual(
      parseGetfacl(execFileSync('getfacl', ['-cdn', '--absolute-names', sub]).toString()),
    );
    // acls alone does not return other xattrs, xattrs alone does not return ACLs.
    expect(find(await readDir(dir, { xattrs: true }), 'file').xattrs.map((x) => x.name.toString())).not.toContain(ACL_XATTR_ACCESS);
  });

  it('applies an encoded ACL through setxattr (the kernel accepts and reports it back)', async () => {
    const f = path.join(dir, 'restored');
    fs.writeFileSync(f, '');
    const acl: PosixAcl = {
      userObj: 7,
      users: [
        { uid: 3000, perms: 5 },
        { uid: 10, perms: 1 },
      ],
      groupObj: 5,
      groups: [{ gid: 42, perms: 6 }],
      mask: 7,
      other: 4,
    };
    setxattr(f, ACL_XATTR_ACCESS, encodeAclXattr(acl));
    const back = decodeAclXattr(getxattr(f, ACL_XATTR_ACCESS)!);
    expect(back).toEqual({ ...acl, users: [acl.users[1], acl.users[0]] });
    // The access ACL also sets the mode's permission bits (group bits = mask).
    expect(fs.statSync(f).mode & 0o777).toBe(0o774);
    if (hasSetfacl) {
      expect(parseGetfacl(execFileSync('getfacl', ['-cn', '--absolute-names', f]).toString())).toEqual(back);
    }
  });

  it('refuses malformed binary ACLs and invalid structured ones', () => {
    const good = encodeAclXattr({ userObj: 6, users: [], groupObj: 4, groups: [], other: 4 });
    expect(decodeAclXattr(good)).toEqual({ userObj: 6, users: [], groupObj: 4, groups: [], other: 4 });
    const bad = (mut: (b: Buffer) => Buffer): (() => PosixAcl) => () => decodeAclXattr(mut(Buffer.from(good)));
    expect(bad((b) => (b.writeUInt32LE(1, 0), b))).toThrow(FormatError);
    expect(bad((b) => b.subarray(0, 10))).toThrow(/length 10/);
    expect(bad((b) => (b.writeUInt16LE(0x40, 4), b))).toThrow(/unknown tag 0x40 at offset 4/);
    expect(bad((b) => (b.writeUInt16LE(8, 6), b))).toThrow(/permissions/);
    expect(bad((b) => (b.writeUInt16LE(1, 12), b))).toThrow(/duplicate USER_OBJ/);
    expect(bad((b) => b.subarray(0, 20))).toThrow(/missing/);
    expect(() => encodeAclXattr({ userObj: 6, users: [{ uid: 1, perms: 4 }], groupObj: 4, groups: [], other: 0 })).toThrow(
      /MASK/,
    );
    const dup = { userObj: 6, users: [{ uid: 1, perms: 4 }, { uid: 1, perms: 6 }], groupObj: 4, groups: [], mask: 7, other: 0 };
    expect(() => encodeAclXattr(dup)).toThrow(/two USER entries for id 1/);
    expect(() => encodeAclXattr({ userObj: 8, users: [], groupObj: 4, groups: [], other: 0 })).toThrow(RangeError);
  });
});

describe('restore mechanisms', () => {
  const dir = path.join(base, 'restore');
  beforeAll(() => {
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'file'), 'x');
    fs.symlinkSync('file', path.join(dir, 'link'));
  });

  it('utimens sets nanosecond mtimes (also negative ones) and keeps atime with UTIME_OMIT', async () => {
    const f = path.join(dir, 'file');
    const atimeBefore = fs.lstatSync(f, { bigint: true }).atimeNs;
    utimens(f, 0, UTIME_OMIT, 1234567890, 123456789);
    const st = fs.lstatSync(f, { bigint: true });
    expect(st.mtimeNs).toBe(1234567890123456789n);
    expect(st.atimeNs).toBe(atimeBefore);
    const e = find(await readDir(dir), 'file');
    expect([e.mtimeSec, e.mtimeNsec]).toEqual([1234567890, 123456789]);
    utimens(f, 5, 1, -2, 500_000_000);
    expect(fs.lstatSync(f, { bigint: true }).mtimeNs).toBe(-1_500_000_000n);
    expect(fs.lstatSync(f, { bigint: true }).atimeNs).toBe(5_000_000_001n);
    const neg = find(await readDir(dir), 'file');
    expect([neg.mtimeSec, neg.mtimeNsec]).toEqual([-2, 500_000_000]);
  });

  it('utimens on a symlink changes the link itself with noFollow, the target without', () => {
    const l = path.join(dir, 'link');
    const f = path.join(dir, 'file');
    const target = fs.lstatSync(f, { bigint: true }).mtimeNs;
    utimens(l, 0, UTIME_OMIT, 1000, 999_999_999, true);
    expect(fs.lstatSync(l, { bigint: true }).mtimeNs).toBe(1000_999_999_999n);
    expect(fs.lstatSync(f, { bigint: true }).mtimeNs).toBe(target);
    utimens(l, 0, UTIME_OMIT, 2000, 1, false);
    expect(fs.lstatSync(f, { bigint: true }).mtimeNs).toBe(2000_000_000_001n);
    expect(fs.lstatSync(l, { bigint: true }).mtimeNs).toBe(1000_999_999_999n);
  });

  it.runIf(isRoot)('lchown changes a symlink, not its target; -1 keeps an id', () => {
    const l = path.join(dir, 'link');
    const f = path.join(dir, 'file');
    lchown(l, 1234, 5678);
    expect([fs.lstatSync(l).uid, fs.lstatSync(l).gid]).toEqual([1234, 5678]);
    expect([fs.lstatSync(f).uid, fs.lstatSync(f).gid]).toEqual([0, 0]);
    lchown(l, -1, 99);
    expect([fs.lstatSync(l).uid, fs.lstatSync(l).gid]).toEqual([1234, 99]);
  });

  it('mknod creates fifos and sockets and refuses other kinds or existing paths', () => {
    mknod(path.join(dir, 'fifo'), S_IFIFO | 0o600);
    expect(fs.lstatSync(path.join(dir, 'fifo')).isFIFO()).toBe(true);
    expect(fs.lstatSync(path.join(dir, 'fifo')).mode & 0o777).toBe(0o600 & ~process.umask());
    mknod(path.join(dir, 'sock'), S_IFSOCK | 0o644);
    expect(fs.lstatSync(path.join(dir, 'sock')).isSocket()).toBe(true);
    expect(() => mknod(path.join(dir, 'fifo'), S_IFIFO | 0o600)).toThrow(
      expect.objectContaining({ code: 'EEXIST', syscall: 'mknod', errno: -E.EEXIST }),
    );
    expect(() => mknod(path.join(dir, 'reg'), 0o100644)).toThrow(/EINVAL: mode 0o100644 is not a device, fifo or socket/);
  });
});

describe('readFilesExact', () => {
  const dir = path.join(base, 'read');
  beforeAll(() => fs.mkdirSync(dir));

  it('reads each file at exactly its expected size (shrunk, grew, vanished, not regular)', async () => {
    const p = (n: string | Buffer): Buffer => B(dir, n);
    const raw = Buffer.from([0x72, 0xff]);
    fs.writeFileSync(p('same'), 'hello');
    fs.writeFileSync(p('shrunk'), '0123456789');
    fs.writeFileSync(p('grew'), 'abc');
    fs.writeFileSync(p('gone'), 'vanish');
    fs.writeFileSync(p('empty'), '');
    fs.writeFileSync(p(raw), 'raw');
    fs.mkdirSync(p('dir'));
    fs.symlinkSync('same', p('link'));
    mknod(p('fifo'), S_IFIFO | 0o600);
    const names: (string | Buffer)[] = ['same', 'shrunk', 'grew', 'gone', 'empty', raw, 'dir', 'link', 'fifo'];
    const sizes = names.map((n) => (fs.lstatSync(p(n)).isFile() ? fs.lstatSync(p(n)).size : 4));
    // The files change after the archiver recorded their sizes.
    fs.truncateSync(p('shrunk'), 4);
    fs.appendFileSync(p('grew'), 'defgh');
    fs.rmSync(p('gone'));

    const before = bytesReadFromFiles();
    const r = await readFilesExact(names.map(p), sizes);
    expect(bytesReadFromFiles() - before).toBe(5 + 4 + 3 + 0 + 3);
    expect([...r.status]).toEqual([READ_OK, READ_SHRUNK, READ_GREW, -E.ENOENT, READ_OK, READ_OK, -E.EISDIR, -E.ELOOP, -E.EINVAL]);
    expect(r.data).toEqual(
      Buffer.concat([
        Buffer.from('hello'),
        Buffer.from('0123\0\0\0\0\0\0'),
        Buffer.from('abc'),
        Buffer.alloc(6),
        Buffer.from('raw'),
        Buffer.alloc(12),
      ]),
    );
    expect(r.errors.map((e) => [e.index, e.code, e.syscall])).toEqual([
      [3, 'ENOENT', 'open'],
      [6, 'EISDIR', 'open'],
      [7, 'ELOOP', 'open'],
      [8, 'EINVAL', 'open'],
    ]);
    expect(r.errors[0].errno).toBe(-E.ENOENT);
    expect(r.errors[0].message).toBe(`ENOENT: No such file or directory, open '${path.join(dir, 'gone')}'`);
    expect(r.errors[3].message).toMatch(/not a regular file/);
  });

  it('reads into a caller-given buffer and refuses one that is too small', async () => {
    fs.writeFileSync(path.join(dir, 'into-a'), 'first');
    fs.writeFileSync(path.join(dir, 'into-b'), 'second!');
    const into = Buffer.alloc(32, 0x55);
    const r = await readFilesExact([path.join(dir, 'into-a'), path.join(dir, 'into-b')], [5, 7], into);
    expect(r.data).toBe(into);
    expect([...r.status]).toEqual([READ_OK, READ_OK]);
    expect(into.subarray(0, 12).toString()).toBe('firstsecond!');
    expect(into[12]).toBe(0x55);
    await expect(readFilesExact([path.join(dir, 'into-a')], [5], Buffer.alloc(4))).rejects.toThrow(/into holds 4 bytes, the files need 5/);
  });

  it('names the bad item of a batch', async () => {
    const ok = Buffer.from(path.join(dir, 'into-a'));
    const bad = (paths: unknown[], sizes: unknown[]) => readFilesExact(paths as Buffer[], sizes as number[]);
    await expect(bad([ok, ok, 42], [1, 1, 1])).rejects.toThrow(/^paths\[2\] must be a Buffer or a string$/);
    await expect(bad([ok, Buffer.from('a\0b')], [1, 1])).rejects.toThrow(/^paths\[1\] contains a NUL byte$/);
    await expect(bad([ok, Buffer.alloc(0)], [1, 1])).rejects.toThrow(/^paths\[1\] is empty$/);
    await expect(bad([ok, ok], [1, 1.5])).rejects.toThrow(/^sizes\[1\] must be a safe integer, got 1.5$/);
    await expect(bad([ok, ok], ['1', 1])).rejects.toThrow(/^sizes\[0\] must be a number$/);
    await expect(bad([ok, ok], [1, -1])).rejects.toThrow(/^sizes\[1\] must not be negative$/);
  });

  it('reads names relative to a base directory, never through a symlinked base', async () => {
    fs.writeFileSync(path.join(dir, 'rel-a'), 'first');
    const r = await readFilesExact(['rel-a', 'nope'], [5, 2], undefined, dir);
    expect([...r.status]).toEqual([READ_OK, -E.ENOENT]);
    expect(r.data.subarray(0, 5).toString()).toBe('first');
    expect(r.errors[0].message).toBe(`ENOENT: No such file or directory, open '${path.join(dir, 'nope')}'`);
    fs.symlinkSync(dir, path.join(base, 'read-link'));
    const l = await readFilesExact(['rel-a'], [5], undefined, path.join(base, 'read-link'));
    expect([...l.status]).toEqual([-E.ENOTDIR]);
  });

  it('reads nothing (and counts nothing) for an empty batch', async () => {
    const before = bytesReadFromFiles();
    const r = await readFilesExact([], []);
    expect([r.data.length, r.status.length, r.errors.length]).toEqual([0, 0, 0]);
    expect(bytesReadFromFiles()).toBe(before);
  });
});

describe('held descriptors (DirWalker holdFds)', () => {
  const dir = path.join(base, 'held');
  beforeAll(() => {
    fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
    for (const n of ['a', 'b', 'c', 'big']) fs.writeFileSync(path.join(dir, n), `old ${n}`);
    fs.writeFileSync(path.join(dir, 'empty'), '');
    fs.symlinkSync('a', path.join(dir, 'link'));
  });

  async function walkRoot(opts: { holdFds?: boolean }): Promise<{ w: DirWalker; list: DirEntries }> {
    const w = new DirWalker(Buffer.from(dir), { xattrs: true, ...opts }, null, 4, 1 << 20, 2, () => {});
    for (;;) {
      const l = w.poll(0);
      if (l) {
        if (l.list instanceof Error) throw l.list;
        return { w, list: l.list };
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  }
  const token = (list: DirEntries, n: string): number => list.fdToken([...list].findIndex((e) => e.name.toString() === n));

  it('keep the descriptor a non-empty regular file was listed with; reads go through it once, then by name', async () => {
    expect(heldSlots()).toBeGreaterThanOrEqual(256);
    const { w, list } = await walkRoot({ holdFds: true });
    try {
      for (const n of ['empty', 'link', 'sub']) expect(token(list, n)).toBe(-1);
      for (const n of ['a', 'b', 'c', 'big']) expect(token(list, n)).toBeGreaterThanOrEqual(0);
      // The files are replaced after the walk listed them: a held descriptor still reads the
      // file that was listed (as PBS's single open does); without one, the new file is read.
      for (const n of ['a', 'b', 'c', 'big']) {
        fs.rmSync(path.join(dir, n));
        fs.writeFileSync(path.join(dir, n), `new ${n}`);
      }
      const held = Float64Array.from([token(list, 'a'), -1, token(list, 'c')]);
      const r = await readFilesExact(['a', 'b', 'c'], [5, 5, 5], undefined, dir, held);
      expect([...r.status]).toEqual([READ_OK, READ_OK, READ_OK]);
      expect(r.data.toString()).toBe('old anew bold c');
      // taken: the same tokens now read by name
      const again = await readFilesExact(['a', 'c'], [5, 5], undefined, dir, held.filter((t) => t >= 0));
      expect(again.data.toString()).toBe('new anew c');
      // a large file's reader takes its descriptor once
      const fh = takeHeldFile(token(list, 'big'));
      expect(fh).not.toBeNull();
      const buf = Buffer.alloc(7);
      expect((await fh!.read(buf, 0, 7, 0)).bytesRead).toBe(7);
      await fh!.close();
      expect(buf.toString()).toBe('old big');
      expect(takeHeldFile(token(list, 'big'))).toBeNull();
      expect(takeHeldFile(-1)).toBeNull();
      await expect(readFilesExact(['a'], [5], undefined, dir, new Float64Array(2))).rejects.toThrow(/held \(2\) and paths \(1\) differ/);
    } finally {
      w.close();
    }
  });

  it('are closed when the walk closes, and not kept without holdFds', async () => {
    const { w, list } = await walkRoot({ holdFds: true });
    const t = token(list, 'b');
    expect(t).toBeGreaterThanOrEqual(0);
    const fdsBefore = fs.readdirSync('/proc/self/fd').length;
    w.close();
    expect(fs.readdirSync('/proc/self/fd').length).toBeLessThan(fdsBefore);
    expect(takeHeldFile(t)).toBeNull();
    const plain = await walkRoot({});
    plain.w.close();
    for (let i = 0; i < plain.list.length; i++) expect(plain.list.fdToken(i)).toBe(-1);
  });
});

describe('touchFiles', () => {
  it('sets atime to now, keeps mtime, reports missing and (with nonEmptyOnly) empty files', async () => {
    const dir = path.join(base, 'touch');
    fs.mkdirSync(dir);
    const p = (n: string) => path.join(dir, n);
    fs.writeFileSync(p('a'), 'data');
    fs.writeFileSync(p('empty'), '');
    fs.symlinkSync('a', p('link'));
    fs.utimesSync(p('a'), 1_000_000, 2_000_000);
    const st = await touchFiles([p('a'), p('empty'), p('missing'), p('a/below')], true);
    expect([...st]).toEqual([0, TOUCH_EMPTY, -E.ENOENT, -E.ENOTDIR]);
    const s = fs.statSync(p('a'));
    expect(s.mtimeMs).toBe(2_000_000_000);
    expect(s.atimeMs).toBeGreaterThan(Date.now() - 60_000);
    // Without nonEmptyOnly an empty file is touched; a symlink itself, never its target.
    fs.utimesSync(p('a'), 1_000_000, 2_000_000);
    expect([...(await touchFiles([p('empty'), p('link')]))]).toEqual([0, 0]);
    expect(fs.statSync(p('a')).atimeMs).toBe(1_000_000_000);
  });
});

describe('errors are rejections or exceptions, never crashes', () => {
  it('rejects for a missing directory, a file, or a symlink given as the directory', async () => {
    const missing = path.join(base, 'no-such-dir');
    await expect(readDir(missing)).rejects.toMatchObject({
      code: 'ENOENT',
      errno: -E.ENOENT,
      syscall: 'opendir',
      path: missing,
      message: `ENOENT: No such file or directory, opendir '${missing}'`,
    });
    const file = path.join(base, 'plain-file');
    fs.writeFileSync(file, '');
    await expect(readDir(file)).rejects.toMatchObject({ code: 'ENOTDIR', path: file });
    fs.symlinkSync(base, path.join(base, 'dirlink'));
    await expect(readDir(path.join(base, 'dirlink'))).rejects.toMatchObject({ code: 'ENOTDIR' });
    await expect(statPath(missing)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'lstat' });
  });

  it('rejects bad argument types with a TypeError', async () => {
    const bad = (f: () => unknown, msg: RegExp): Promise<void> =>
      expect(Promise.resolve().then(f)).rejects.toThrow(expect.objectContaining({ name: 'TypeError', message: expect.stringMatching(msg) }));
    const anyReadDir = readDir as unknown as (...a: unknown[]) => Promise<DirEntries>;
    await bad(() => anyReadDir(42), /path must be a Buffer or a string/);
    await bad(() => anyReadDir(null), /path must be a Buffer or a string/);
    await bad(() => anyReadDir(base, 'xattrs'), /options must be an object/);
    await bad(() => anyReadDir(base, { xattrs: 1 }), /options.xattrs must be a boolean/);
    await bad(() => readDir('a\0b'), /path contains a NUL byte/);
    await bad(() => readDir(''), /path is empty/);
    const anyRead = readFilesExact as unknown as (...a: unknown[]) => Promise<unknown>;
    await bad(() => anyRead('x', [1]), /paths must be an array/);
    await bad(() => anyRead(['x'], [1, 2]), /differ in length/);
    await bad(() => anyRead(['x'], [-1]), /sizes\[0\] must not be negative/);
    await bad(() => anyRead(['x'], [1.5]), /sizes\[0\] must be a safe integer/);
    await bad(() => anyRead([{}], [1]), /paths\[0\] must be a Buffer or a string/);
    const anySet = setxattr as unknown as (...a: unknown[]) => void;
    await bad(() => anySet(base, 'user.x', 'not a buffer'), /value must be a Buffer/);
    await bad(() => mknod(path.join(base, 'x'), -1), /mode must be in 0\.\.=4294967295/);
    expect(() => utimens(path.join(base, 'missing'), 0, 0, 0, 0)).toThrow(
      expect.objectContaining({ code: 'ENOENT', syscall: 'utimensat' }),
    );
  });
});
