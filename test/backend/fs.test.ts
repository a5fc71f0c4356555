import { mkdtemp, mkdir, readFile, readdir, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BackendError, InvalidKeyError, ObjectNotFoundError, TEMP_MARKER, validateKey, type ListEntry } from '../../ts/backend/backend.js';
import { FsBackend, writeFileAtomic } from '../../ts/backend/fs.js';

let base: string;
let root: string;
let be: FsBackend;

beforeEach(async () => {
  base = await mkdtemp(path.join(tmpdir(), 'pxb-fsbackend-'));
  root = path.join(base, 'store');
  await mkdir(root);
  be = new FsBackend(root);
});

afterEach(async () => {
  await rm(base, { recursive: true, force: true });
});

async function collect(it: AsyncIterable<ListEntry>): Promise<ListEntry[]> {
  const out: ListEntry[] = [];
  for await (const e of it) out.push(e);
  return out.sort((a, b) => (a.key < b.key ? -1 : 1));
}

describe('FsBackend', () => {
  it('stores key a/b/c as the file <root>/a/b/c, creating directories on demand', async () => {
    const data = Buffer.from('payload bytes');
    expect(await be.put('a/b/c', data)).toEqual({ created: true });
    expect(await readFile(path.join(root, 'a', 'b', 'c'))).toEqual(data);
    expect(await be.get('a/b/c')).toEqual(data);
    expect(await be.stat('a/b/c')).toMatchObject({ size: data.length });
    expect(await be.exists('a/b/c')).toBe(true);
    // only the object itself, no temporary files left behind
    expect(await readdir(path.join(root, 'a', 'b'))).toEqual(['c']);
  });

  it('replaces whole objects, and ifAbsent never touches an existing one', async () => {
    await be.put('k', Buffer.from('first'));
    await be.put('k', Buffer.from('second, longer'));
    expect((await be.get('k')).toString()).toBe('second, longer');
    expect(await be.put('k', Buffer.from('third'), { ifAbsent: true })).toEqual({ created: false });
    expect((await be.get('k')).toString()).toBe('second, longer');
    expect(await readdir(root)).toEqual(['k']);
  });

  it('lets exactly one of many concurrent ifAbsent writers win, with its bytes intact', async () => {
    const payloads = Array.from({ length: 12 }, (_, i) => Buffer.alloc(64 * 1024 + i, i + 1));
    const results = await Promise.all(payloads.map((p) => be.put('x/obj', p, { ifAbsent: true })));
    const winners = results.flatMap((r, i) => (r.created ? [i] : []));
    expect(winners).toHaveLength(1);
    expect(await be.get('x/obj')).toEqual(payloads[winners[0]]);
    expect(await readdir(path.join(root, 'x'))).toEqual(['obj']);
  });

  it('reports absent objects: get throws ObjectNotFoundError, stat null, delete false', async () => {
    await expect(be.get('no/such')).rejects.toBeInstanceOf(ObjectNotFoundError);
    await expect(be.get('no/such')).rejects.toThrow(/object no\/such not found/);
    expect(await be.stat('no/such')).toBeNull();
    expect(await be.exists('no/such')).toBe(false);
    expect(await be.delete('no/such')).toBe(false);
    await be.put('no/such', Buffer.from('x'));
    expect(await be.delete('no/such')).toBe(true);
    expect(await be.exists('no/such')).toBe(false);
  });

  it('treats a directory as no object', async () => {
    await be.put('d/inner', Buffer.from('x'));
    await expect(be.get('d')).rejects.toBeInstanceOf(ObjectNotFoundError);
    await expect(be.stat('d')).rejects.toThrow(/not a regular file/);
  });

  it('reads exact ranges and refuses ranges past the end', async () => {
    await be.put('r', Buffer.from('0123456789'));
    expect((await be.getRange('r', 3, 4)).toString()).toBe('3456');
    expect((await be.getRange('r', 0, 10)).toString()).toBe('0123456789');
    await expect(be.getRange('r', 8, 5)).rejects.toThrow(/range 8\+5 is beyond its end \(10\)/);
    await expect(be.getRange('missing', 0, 1)).rejects.toBeInstanceOf(ObjectNotFoundError);
  });

  it('lists by plain string prefix, recursively, without temporary files or symlinks', async () => {
    await be.put('.chunks/ab12/ab12ff', Buffer.alloc(3));
    await be.put('.chunks/ab13/ab13ee', Buffer.alloc(5));
    await be.put('.chunks/cd00/cd00aa', Buffer.alloc(7));
    await be.put('host/x/owner', Buffer.from('root@pam\n'));
    await writeFile(path.join(root, '.chunks', 'ab12', `ab12ff${TEMP_MARKER}0123456789ab`), 'partial');
    await symlink(path.join(root, 'host', 'x', 'owner'), path.join(root, '.chunks', 'ab12', 'link'));
    expect(await collect(be.list('.chunks/ab1'))).toEqual([
      { key: '.chunks/ab12/ab12ff', size: 3 },
      { key: '.chunks/ab13/ab13ee', size: 5 },
    ]);
    expect((await collect(be.list('.chunks/'))).map((e) => e.key)).toEqual([
      '.chunks/ab12/ab12ff',
      '.chunks/ab13/ab13ee',
      '.chunks/cd00/cd00aa',
    ]);
    expect((await collect(be.list(''))).map((e) => e.key)).toEqual([
      '.chunks/ab12/ab12ff',
      '.chunks/ab13/ab13ee',
      '.chunks/cd00/cd00aa',
      'host/x/owner',
    ]);
    expect(await collect(be.list('nothing/here/'))).toEqual([]);
  });

  it('refuses hostile keys before touching the filesystem', async () => {
    const hostile = ['../x', '../../etc/passwd', '/etc/passwd', 'a/../../b', 'a/./b', 'a//b', 'a/', '', 'a\0b', 'a\\..\\b', 'a\nb', `x${TEMP_MARKER}abc`, '.', '..'];
    for (const key of hostile) {
      expect(() => validateKey(key), JSON.stringify(key)).toThrow(InvalidKeyError);
      await expect(be.put(key, Buffer.from('evil')), JSON.stringify(key)).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(be.get(key), JSON.stringify(key)).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(be.delete(key), JSON.stringify(key)).rejects.toBeInstanceOf(InvalidKeyError);
    }
    await expect(collect(be.list('../'))).rejects.toBeInstanceOf(InvalidKeyError);
    expect(existsSync(path.join(base, 'x'))).toBe(false);
    expect(await readdir(root)).toEqual([]);
    expect(await readdir(base)).toEqual(['store']);
  });

  it('does not follow a symlink planted in place of an object', async () => {
    const secret = path.join(base, 'secret');
    await writeFile(secret, 'outside the store');
    await symlink(secret, path.join(root, 'obj'));
    await expect(be.get('obj')).rejects.toBeInstanceOf(BackendError);
    await expect(be.get('obj')).rejects.toThrow(/symbolic link/);
  });

  it('refuses a FIFO or device in place of an object instead of waiting on it', async () => {
    spawnSync('mkfifo', [path.join(root, 'fifo')]);
    await expect(be.get('fifo')).rejects.toThrow(/fifo is not a regular file/);
    await expect(be.getRange('fifo', 0, 1)).rejects.toThrow(/not a regular file/);
    if (process.getuid?.() === 0) {
      spawnSync('mknod', [path.join(root, 'dev'), 'c', '1', '5']); // /dev/zero: endless
      await expect(be.get('dev')).rejects.toThrow(/dev is not a regular file/);
    }
  });

  it('touch sets atime to now and keeps mtime', async () => {
    await be.put('c', Buffer.from('chunk'));
    const p = path.join(root, 'c');
    const old = new Date('2001-02-03T04:05:06Z');
    await utimes(p, old, old);
    const before = Date.now();
    expect(await be.touch('c')).toBe(true);
    const st = await stat(p);
    expect(st.mtime.getTime()).toBe(old.getTime());
    expect(st.atimeMs).toBeGreaterThanOrEqual(before - 1000);
    expect(await be.touch('missing')).toBe(false);
  });
});

describe('writeFileAtomic', () => {
  it('writes through a named temporary file and replaces a stale one left by a crash', async () => {
    const target = path.join(root, 'root.pxar.didx');
    const tmp = path.join(root, 'root.pxar.tmp_didx');
    await writeFile(tmp, 'stale leftover');
    expect(await writeFileAtomic(target, Buffer.from('index'), { tmpPath: tmp })).toBe(true);
    expect((await readFile(target)).toString()).toBe('index');
    expect(await readdir(root)).toEqual(['root.pxar.didx']);
  });

  it('fails cleanly when the directory is missing and creation was not asked for', async () => {
    await expect(writeFileAtomic(path.join(root, 'nodir', 'f'), Buffer.from('x'))).rejects.toThrow(/ENOENT/);
    expect(await readdir(root)).toEqual([]);
  });
});
