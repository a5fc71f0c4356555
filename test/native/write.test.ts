import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mknod, syncfs, WRITE_CHOWN_EPERM, writeFilesBatch, type WriteFileSpec, type WriteFilesOptions } from '../../ts/native/fs.js';
import { packageRoot } from '../../ts/native/index.js';

const E = os.constants.errno;
const isRoot = process.getuid?.() === 0;
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'pxb-nativewrite-'));
const plain: WriteFilesOptions = { chown: false, overwrite: false, sparse: false };

afterAll(() => {
  fs.rmSync(base, { recursive: true, force: true });
});

/** A spec's path for node's fs (the tests only use strings and Buffers). */
const P = (f: WriteFileSpec): string | Buffer => f.path as string | Buffer;

let dirSeq = 0;
function freshDir(name: string): string {
  const d = path.join(base, `${name}-${dirSeq++}`);
  fs.mkdirSync(d);
  return d;
}

/** Lay out `contents` back to back in one Buffer; spec i gets contents[i]. */
function batch(
  paths: (string | Buffer)[],
  contents: Buffer[],
  meta: Partial<Omit<WriteFileSpec, 'path' | 'offset' | 'size'>> = {},
): { files: WriteFileSpec[]; data: Buffer } {
  let off = 0;
  const files = paths.map((p, i) => {
    const f: WriteFileSpec = {
      path: p,
      offset: off,
      size: contents[i].length,
      mode: 0o644,
      uid: 0,
      gid: 0,
      mtimeSec: 1_700_000_000,
      mtimeNsec: 0,
      ...meta,
    };
    off += contents[i].length;
    return f;
  });
  return { files, data: Buffer.concat(contents) };
}

/** The addon file the loader picks (same order as ts/native/index.ts), for child processes. */
function addonFile(): string | null {
  const candidates = [
    process.env.PXB_NATIVE_PATH,
    path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, 'pxb_native.node'),
    path.join(packageRoot, 'native', 'build', 'pxb_native.node'),
  ];
  return candidates.find((p): p is string => !!p && fs.existsSync(p)) ?? null;
}

/**
 * Run one raw fsWriteFilesBatch call in a child process (for limits this process cannot
 * change: another uid, RLIMIT_FSIZE). The packing mirrors writeFilesBatch's.
 */
function childBatch(
  files: WriteFileSpec[],
  data: Buffer,
  opts: WriteFilesOptions,
  how: { uid?: number; gid?: number; fsizeLimitBlocks?: number },
): { status: number[]; errors: { index: number; code: string; syscall: string }[] } {
  const nums = files.flatMap((f) => [f.offset, f.size, f.mode, f.uid, f.gid, f.mtimeSec, f.mtimeNsec]);
  const script = `
    process.on('SIGXFSZ', () => {});
    const a = require(${JSON.stringify(addonFile())});
    const [paths, nums, data, opts] = JSON.parse(process.argv[1]);
    a.fsWriteFilesBatch(paths, new Uint8Array(new Float64Array(nums).buffer), Buffer.from(data, 'base64'), opts)
      .then((r) => process.stdout.write(JSON.stringify({ status: Array.from(r.status), errors: r.errors })));
  `;
  const arg = JSON.stringify([files.map((f) => String(f.path)), nums, data.toString('base64'), opts]);
  const cmd = how.fsizeLimitBlocks !== undefined ? 'ulimit -f ' + how.fsizeLimitBlocks + '; exec "$0" -e "$1" "$2"' : 'exec "$0" -e "$1" "$2"';
  const out = execFileSync('/bin/sh', ['-c', cmd, process.execPath, script, arg], { uid: how.uid, gid: how.gid, encoding: 'utf8' });
  return JSON.parse(out);
}

describe('writeFilesBatch: contents and metadata', () => {
  it('writes many files (empty, 1 byte, odd sizes, raw names) with exact content, mode and ns times', async () => {
    const dir = freshDir('many');
    const sizes = [0, 1, 2, 4095, 4096, 4097, 0, 1, 65536 + 3, 12_345];
    for (let i = 0; i < 290; i++) sizes.push((i * 7919) % 20_000);
    const contents = sizes.map((n) => randomBytes(n));
    const paths: (string | Buffer)[] = sizes.map((_, i) => path.join(dir, `f${i}`));
    paths[5] = Buffer.concat([Buffer.from(dir + '/'), Buffer.from([0x72, 0xff, 0xfe, 0x80])]); // not UTF-8
    const modes = [0o644, 0o600, 0o755, 0o400, 0o1644, 0o2755, 0o4755, 0o6711, 0o7777, 0o000];
    const times = [
      [1_700_000_000, 123_456_789],
      [0, 0],
      [-1, 999_999_999],
      [4_102_444_800, 1],
      [1_234_567_890, 999_999_999],
    ];
    const { files, data } = batch(paths, contents);
    files.forEach((f, i) => {
      f.mode = modes[i % modes.length];
      [f.mtimeSec, f.mtimeNsec] = times[i % times.length];
    });
    const r = await writeFilesBatch(files, data, plain);
    expect(r.errors).toEqual([]);
    expect(Array.from(r.status)).toEqual(files.map(() => 0));
    // Stat everything before any read: reading can move atime (relatime).
    const stats = files.map((f) => fs.lstatSync(P(f), { bigint: true }));
    files.forEach((f, i) => {
      const st = stats[i];
      const ns = BigInt(f.mtimeSec) * 1_000_000_000n + BigInt(f.mtimeNsec);
      expect(st.isFile()).toBe(true);
      expect(Number(st.mode) & 0o7777).toBe(f.mode);
      expect(st.mtimeNs).toBe(ns);
      expect(st.atimeNs).toBe(ns);
      expect(Number(st.nlink)).toBe(1);
    });
    files.forEach((f, i) => expect(fs.readFileSync(P(f)).equals(contents[i])).toBe(true));
    expect(fs.readdirSync(dir).length).toBe(files.length);
  });

  it('keeps suid/sgid when chowning to another owner (root only)', { skip: !isRoot }, async () => {
    const dir = freshDir('suid');
    const { files, data } = batch([path.join(dir, 'a'), path.join(dir, 'b')], [Buffer.from('#!/bin/true\n'), Buffer.from('x')], {
      uid: 1234,
      gid: 5678,
      mode: 0o6755,
    });
    files[1].mode = 0o4711;
    files[1].uid = 4_000_000_000;
    const r = await writeFilesBatch(files, data, { ...plain, chown: true });
    expect(Array.from(r.status)).toEqual([0, 0]);
    const a = fs.statSync(P(files[0]));
    expect([a.uid, a.gid, a.mode & 0o7777]).toEqual([1234, 5678, 0o6755]);
    const b = fs.statSync(P(files[1]));
    expect([b.uid, b.gid, b.mode & 0o7777]).toEqual([4_000_000_000, 5678, 0o4711]);
  });

  it('without chown, files keep the writer\'s ids', async () => {
    const dir = freshDir('nochown');
    const { files, data } = batch([path.join(dir, 'a')], [Buffer.from('a')], { uid: 4321, gid: 4321 });
    const r = await writeFilesBatch(files, data, plain);
    expect(Array.from(r.status)).toEqual([0]);
    const st = fs.statSync(P(files[0]));
    expect([st.uid, st.gid]).toEqual([process.getuid?.(), process.getgid?.()]);
  });

  it('reports a chown EPERM as a warning flag, not a failure (unprivileged child)', { skip: !isRoot || !addonFile() }, () => {
    const dir = freshDir('eperm');
    fs.chmodSync(base, 0o755);
    fs.chmodSync(dir, 0o777);
    const { files, data } = batch([path.join(dir, 'a'), path.join(dir, 'b')], [Buffer.from('alpha'), Buffer.from('')], {
      uid: 0,
      gid: 0,
      mode: 0o640,
      mtimeSec: 1_600_000_000,
      mtimeNsec: 5,
    });
    const r = childBatch(files, data, { ...plain, chown: true }, { uid: 65534, gid: 65534 });
    expect(r.status).toEqual([WRITE_CHOWN_EPERM, WRITE_CHOWN_EPERM]);
    expect(r.errors).toEqual([]);
    const st = fs.statSync(P(files[0]), { bigint: true });
    expect([Number(st.uid), Number(st.mode) & 0o7777, st.mtimeNs]).toEqual([65534, 0o640, 1_600_000_000_000_000_005n]);
    expect(fs.readFileSync(P(files[0]), 'utf8')).toBe('alpha');
    expect(fs.statSync(P(files[1])).size).toBe(0);
  });
});

describe('writeFilesBatch: sparse files', () => {
  const MiB = 1024 * 1024;

  it('leaves a 1 MiB zero run as a hole and keeps the content identical', async () => {
    const dir = freshDir('sparse');
    const content = Buffer.concat([randomBytes(1.5 * MiB), Buffer.alloc(MiB), randomBytes(1.5 * MiB)]);
    const tail = Buffer.concat([randomBytes(5000), Buffer.alloc(2 * MiB)]); // ends in a hole
    const zeros = Buffer.alloc(MiB + 17); // nothing but a hole (unaligned size)
    const { files, data } = batch(['s', 'tail', 'zeros', 'dense'].map((n) => path.join(dir, n)), [content, tail, zeros, content]);
    const rs = await writeFilesBatch(files.slice(0, 3), data, { ...plain, sparse: true });
    expect(Array.from(rs.status)).toEqual([0, 0, 0]);
    const rd = await writeFilesBatch(files.slice(3), data, plain);
    expect(Array.from(rd.status)).toEqual([0]);
    const s = fs.statSync(P(files[0]));
    const d = fs.statSync(P(files[3]));
    expect(s.size).toBe(4 * MiB);
    expect(s.blocks * 512).toBeLessThanOrEqual(3 * MiB + 64 * 1024); // the hole is not allocated
    expect(s.blocks).toBeLessThan(d.blocks);
    expect(fs.readFileSync(P(files[0])).equals(content)).toBe(true);
    expect(fs.readFileSync(P(files[3])).equals(content)).toBe(true);
    const t = fs.statSync(P(files[1]));
    expect(t.size).toBe(tail.length);
    expect(t.blocks * 512).toBeLessThan(MiB);
    expect(fs.readFileSync(P(files[1])).equals(tail)).toBe(true);
    expect(fs.statSync(P(files[2])).size).toBe(zeros.length);
    expect(fs.readFileSync(P(files[2])).equals(zeros)).toBe(true);
  });

  it('a sparse overwrite of an existing file leaves no old bytes in the holes', async () => {
    const dir = freshDir('sparse-over');
    const p = path.join(dir, 'f');
    fs.writeFileSync(p, Buffer.alloc(3 * 4096, 0xee));
    const content = Buffer.concat([Buffer.from('head'), Buffer.alloc(3 * 4096)]);
    const { files, data } = batch([p], [content]);
    const r = await writeFilesBatch(files, data, { ...plain, sparse: true, overwrite: true });
    expect(Array.from(r.status)).toEqual([0]);
    expect(fs.readFileSync(p).equals(content)).toBe(true);
  });
});

describe('writeFilesBatch: existing entries', () => {
  it('exclusive mode reports EEXIST per file, leaves the existing file alone and continues', async () => {
    const dir = freshDir('excl');
    const old = path.join(dir, 'old');
    fs.writeFileSync(old, 'previous contents');
    fs.chmodSync(old, 0o604);
    const { files, data } = batch([path.join(dir, 'new1'), old, path.join(dir, 'new2')], [Buffer.from('one'), Buffer.from('X'), Buffer.from('two')]);
    const r = await writeFilesBatch(files, data, plain);
    expect(Array.from(r.status)).toEqual([0, -E.EEXIST, 0]);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toMatchObject({ index: 1, code: 'EEXIST', errno: -E.EEXIST, syscall: 'open' });
    expect(r.errors[0].message).toContain(old);
    expect(fs.readFileSync(old, 'utf8')).toBe('previous contents');
    expect(fs.statSync(old).mode & 0o7777).toBe(0o604);
    expect(fs.readFileSync(P(files[0]), 'utf8')).toBe('one');
    expect(fs.readFileSync(P(files[2]), 'utf8')).toBe('two');
  });

  it('overwrite truncates and rewrites an existing longer file', async () => {
    const dir = freshDir('over');
    const p = path.join(dir, 'f');
    fs.writeFileSync(p, 'a much longer previous content');
    const { files, data } = batch([p], [Buffer.from('short')], { mode: 0o755 });
    const r = await writeFilesBatch(files, data, { ...plain, overwrite: true });
    expect(Array.from(r.status)).toEqual([0]);
    expect(fs.readFileSync(p, 'utf8')).toBe('short');
    expect(fs.statSync(p).mode & 0o7777).toBe(0o755);
  });

  it('never writes through a symlink at the target path', async () => {
    const dir = freshDir('symlink');
    const victim = path.join(dir, 'victim');
    fs.writeFileSync(victim, 'untouched');
    fs.chmodSync(victim, 0o600);
    const victimTimes = fs.statSync(victim, { bigint: true }).mtimeNs;
    const links = ['l-excl', 'l-over', 'dangling-excl', 'dangling-over'].map((n) => path.join(dir, n));
    fs.symlinkSync(victim, links[0]);
    fs.symlinkSync(victim, links[1]);
    fs.symlinkSync(path.join(dir, 'would-be-created'), links[2]);
    fs.symlinkSync(path.join(dir, 'would-be-created'), links[3]);
    const excl = batch([links[0], links[2]], [Buffer.from('EVIL'), Buffer.from('EVIL')], { mode: 0o777 });
    const r1 = await writeFilesBatch(excl.files, excl.data, plain);
    expect(Array.from(r1.status)).toEqual([-E.EEXIST, -E.EEXIST]);
    expect(fs.lstatSync(links[0]).isSymbolicLink()).toBe(true);
    expect(fs.lstatSync(links[2]).isSymbolicLink()).toBe(true);
    const over = batch([links[1], links[3]], [Buffer.from('new'), Buffer.from('new2')]);
    const r2 = await writeFilesBatch(over.files, over.data, { ...plain, overwrite: true });
    expect(Array.from(r2.status)).toEqual([0, 0]);
    expect(fs.lstatSync(links[1]).isFile()).toBe(true); // the symlink was replaced
    expect(fs.readFileSync(links[1], 'utf8')).toBe('new');
    expect(fs.readFileSync(links[3], 'utf8')).toBe('new2');
    expect(fs.existsSync(path.join(dir, 'would-be-created'))).toBe(false);
    const v = fs.statSync(victim, { bigint: true });
    expect(fs.readFileSync(victim, 'utf8')).toBe('untouched');
    expect([Number(v.mode) & 0o7777, v.mtimeNs]).toEqual([0o600, victimTimes]);
  });

  it('overwrite replaces a hard-linked file without changing its other name', async () => {
    const dir = freshDir('hardlink');
    const other = path.join(dir, 'other');
    const p = path.join(dir, 'f');
    fs.writeFileSync(other, 'shared inode');
    fs.linkSync(other, p);
    const { files, data } = batch([p], [Buffer.from('fresh')]);
    const r = await writeFilesBatch(files, data, { ...plain, overwrite: true });
    expect(Array.from(r.status)).toEqual([0]);
    expect(fs.readFileSync(p, 'utf8')).toBe('fresh');
    expect(fs.readFileSync(other, 'utf8')).toBe('shared inode');
    expect(fs.statSync(other).nlink).toBe(1);
  });

  it('overwrite replaces a fifo without blocking; a directory stays an EISDIR failure', async () => {
    const dir = freshDir('kinds');
    const fifo = path.join(dir, 'fifo');
    const sub = path.join(dir, 'sub');
    mknod(fifo, fs.constants.S_IFIFO | 0o644);
    fs.mkdirSync(sub);
    const { files, data } = batch([fifo, sub], [Buffer.from('was a fifo'), Buffer.from('x')]);
    const r = await writeFilesBatch(files, data, { ...plain, overwrite: true });
    expect(Array.from(r.status)).toEqual([0, -E.EISDIR]);
    expect(r.errors[0]).toMatchObject({ index: 1, code: 'EISDIR', syscall: 'open' });
    expect(fs.lstatSync(fifo).isFile()).toBe(true);
    expect(fs.readFileSync(fifo, 'utf8')).toBe('was a fifo');
    expect(fs.lstatSync(sub).isDirectory()).toBe(true);
  });
});

describe('writeFilesBatch: failures', () => {
  it('a missing parent directory fails that file with ENOENT; the batch continues', async () => {
    const dir = freshDir('enoent');
    const { files, data } = batch(
      [path.join(dir, 'a'), path.join(dir, 'missing', 'b'), path.join(dir, 'c')],
      [Buffer.from('A'), Buffer.from('B'), Buffer.from('C')],
    );
    const r = await writeFilesBatch(files, data, { chown: isRoot, overwrite: true, sparse: true });
    expect(Array.from(r.status)).toEqual([0, -E.ENOENT, 0]);
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toMatchObject({ index: 1, code: 'ENOENT', errno: -E.ENOENT, syscall: 'open' });
    expect(fs.readFileSync(P(files[2]), 'utf8')).toBe('C');
  });

  it('a write failure after create unlinks the half-written file (RLIMIT_FSIZE child)', { skip: !addonFile() }, () => {
    const dir = freshDir('efbig');
    const big = randomBytes(64 * 1024);
    const { files, data } = batch(['small', 'big', 'after'].map((n) => path.join(dir, n)), [Buffer.from('ok'), big, Buffer.from('fine')]);
    const r = childBatch(files, data, plain, { fsizeLimitBlocks: 8 });
    expect(r.status).toEqual([0, -E.EFBIG, 0]);
    expect(r.errors).toMatchObject([{ index: 1, code: 'EFBIG', syscall: 'write' }]);
    expect(fs.existsSync(P(files[1]))).toBe(false);
    expect(fs.readFileSync(P(files[0]), 'utf8')).toBe('ok');
    expect(fs.readFileSync(P(files[2]), 'utf8')).toBe('fine');
  });

  it('an empty batch resolves to empty results', async () => {
    const r = await writeFilesBatch([], Buffer.alloc(0), plain);
    expect(r.status).toBeInstanceOf(Int32Array);
    expect(r.status.length).toBe(0);
    expect(r.errors).toEqual([]);
  });

  it('rejects bad arguments with a TypeError before writing anything', async () => {
    const dir = freshDir('badargs');
    const ok = batch([path.join(dir, 'a')], [Buffer.from('abc')]);
    const spec = ok.files[0];
    const bad: [string, unknown[]][] = [
      ['files not an array', ['nope', ok.data, plain]],
      ['file not an object', [[null], ok.data, plain]],
      ['path a number', [[{ ...spec, path: 42 }], ok.data, plain]],
      ['empty path', [[{ ...spec, path: '' }], ok.data, plain]],
      ['NUL in path', [[{ ...spec, path: dir + '/a\0b' }], ok.data, plain]],
      ['range past the data', [[{ ...spec, size: 4 }], ok.data, plain]],
      ['offset past the data', [[{ ...spec, offset: 4, size: 0 }], ok.data, plain]],
      ['negative size', [[{ ...spec, size: -1 }], ok.data, plain]],
      ['fractional offset', [[{ ...spec, offset: 0.5 }], ok.data, plain]],
      ['mode a string', [[{ ...spec, mode: '644' }], ok.data, plain]],
      ['negative mode', [[{ ...spec, mode: -1 }], ok.data, plain]],
      ['uid too large', [[{ ...spec, uid: 2 ** 32 }], ok.data, plain]],
      ['nsec too large', [[{ ...spec, mtimeNsec: 1e9 }], ok.data, plain]],
      ['mtime a bigint', [[{ ...spec, mtimeSec: 1n }], ok.data, plain]],
      ['mtime NaN', [[{ ...spec, mtimeSec: NaN }], ok.data, plain]],
      ['data not a buffer', [[spec], 'abc', plain]],
      ['data missing', [[spec], undefined, plain]],
      ['options missing', [[spec], ok.data, undefined]],
      ['option not a boolean', [[spec], ok.data, { ...plain, sparse: 1 }]],
    ];
    const call = writeFilesBatch as (...a: unknown[]) => Promise<unknown>;
    for (const [what, args] of bad) {
      await expect(call(...args), what).rejects.toThrow(TypeError);
    }
    expect(fs.readdirSync(dir)).toEqual([]);
    // The same batch with valid arguments works.
    const r = await writeFilesBatch(ok.files, ok.data, plain);
    expect(Array.from(r.status)).toEqual([0]);
  });
});

describe('syncfs', () => {
  it('flushes the file system of a directory or a file', async () => {
    const f = path.join(base, 'sync-me');
    fs.writeFileSync(f, 'x');
    await expect(syncfs(base)).resolves.toBeUndefined();
    await expect(syncfs(Buffer.from(f))).resolves.toBeUndefined();
  });

  it('rejects with a node-style error for a missing path and a TypeError for bad arguments', async () => {
    const missing = path.join(base, 'no-such-dir');
    await expect(syncfs(missing)).rejects.toMatchObject({ code: 'ENOENT', errno: -E.ENOENT, syscall: 'open', path: missing });
    await expect((syncfs as (p: unknown) => Promise<void>)(7)).rejects.toThrow(TypeError);
  });
});
