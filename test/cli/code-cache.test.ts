/**
 * The launcher's bundle loader (ts/cli/code-cache.ts) with real files and real V8 code caches:
 * a cache is written on the first load and used on the next; a damaged, truncated, foreign or
 * unwritable cache never changes what runs, only whether a cache is used. And `bin/pxb.js`
 * itself: it runs the bundle with a cache in pxb's cache directory, and runs dist/'s modules
 * when dist/ was compiled after the bundle was made.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cacheFileName, cachedDataOf, fnv1a, loadBundle } from '../../ts/cli/code-cache.js';
import { tempDir } from '../helpers/tmp.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ID = '0123456789abcdef0123456789abcdef';

/** A bundle in the launcher's format whose exports say which build made them. */
function writeBundle(dir: string, id: string | null, tag: string): string {
  const file = path.join(dir, 'b.cjs');
  fs.writeFileSync(path.join(dir, 'dep.cjs'), 'module.exports = (x) => x * 7;');
  const body = `(function (exports, require, module, __filename, __dirname) {"use strict";
const dep = require('./dep.cjs');
function answer(n) { return dep(n) + ${JSON.stringify(tag)}.length; }
module.exports = { answer, tag: ${JSON.stringify(tag)}, file: __filename };
})`;
  fs.writeFileSync(file, id ? `// pxb-bundle ${id}\n${body}` : body);
  return file;
}

interface Exports {
  answer(n: number): number;
  tag: string;
  file: string;
}

describe('loadBundle', () => {
  it('writes a cache on the first load and uses it on the next', () => {
    const dir = tempDir('pxb-cc-');
    const file = writeBundle(dir, ID, 'one');
    const cacheDir = path.join(dir, 'cache', 'code');
    const a = loadBundle<Exports>(file, cacheDir);
    expect(a.cache).toBe('written');
    expect(a.cacheFile).toBe(cacheFileName(cacheDir, ID));
    expect(a.exports.answer(6)).toBe(45);
    expect(a.exports.file).toBe(file);
    const stored = fs.readFileSync(a.cacheFile!);
    expect(cachedDataOf(stored)).not.toBeNull();
    expect(fs.statSync(cacheDir).mode & 0o777).toBe(0o700);

    const b = loadBundle<Exports>(file, cacheDir);
    expect(b.cache).toBe('hit');
    expect(b.exports.answer(6)).toBe(45);
    expect(fs.readFileSync(a.cacheFile!).equals(stored)).toBe(true); // not rewritten
    expect(fs.readdirSync(cacheDir)).toEqual([path.basename(a.cacheFile!)]); // no temp files left
  });

  it('recompiles and rewrites a damaged or truncated cache', () => {
    const dir = tempDir('pxb-cc-');
    const file = writeBundle(dir, ID, 'two');
    const cacheDir = path.join(dir, 'cache');
    const { cacheFile } = loadBundle<Exports>(file, cacheDir);
    const good = fs.readFileSync(cacheFile!);

    const flipped = Buffer.from(good);
    flipped[flipped.length - 5] ^= 0x40;
    expect(cachedDataOf(flipped)).toBeNull();
    fs.writeFileSync(cacheFile!, flipped);
    const a = loadBundle<Exports>(file, cacheDir);
    expect(a.cache).toBe('written');
    expect(a.exports.answer(1)).toBe(10);
    expect(cachedDataOf(fs.readFileSync(cacheFile!))).not.toBeNull();

    for (const bad of [good.subarray(0, good.length - 1), good.subarray(0, 10), Buffer.alloc(0), Buffer.from('not a cache at all, just text')]) {
      expect(cachedDataOf(bad)).toBeNull();
      fs.writeFileSync(cacheFile!, bad);
      const r = loadBundle<Exports>(file, cacheDir);
      expect(r.cache).toBe('written');
      expect(r.exports.tag).toBe('two');
    }
  });

  it('rewrites an intact cache that V8 rejects (code of another source)', () => {
    const dir = tempDir('pxb-cc-');
    const file = writeBundle(dir, ID, 'three');
    const cacheDir = path.join(dir, 'cache');
    // Well-formed file, checksum right, but the cached code is another script's.
    const other = new vm.Script('(function () { return 1 + 1; })').createCachedData();
    const head = Buffer.alloc(16);
    Buffer.from('PXBV8CC1').copy(head);
    head.writeUInt32LE(other.length, 8);
    head.writeUInt32LE(fnv1a(other), 12);
    const cacheFile = cacheFileName(cacheDir, ID);
    fs.mkdirSync(cacheDir, { recursive: true });
    fs.writeFileSync(cacheFile, Buffer.concat([head, other]));
    expect(cachedDataOf(fs.readFileSync(cacheFile))).not.toBeNull();

    const a = loadBundle<Exports>(file, cacheDir);
    expect(a.cache).toBe('written');
    expect(a.exports.answer(2)).toBe(19);
    expect(loadBundle<Exports>(file, cacheDir).cache).toBe('hit');
  });

  it('keys the cache by build: a new build writes its own and removes the old one', () => {
    const dir = tempDir('pxb-cc-');
    const cacheDir = path.join(dir, 'cache');
    const first = loadBundle<Exports>(writeBundle(dir, ID, 'old'), cacheDir);
    expect(first.cache).toBe('written');
    const unrelated = path.join(cacheDir, 'notes.txt');
    fs.writeFileSync(unrelated, 'kept');

    const id2 = 'fedcba9876543210fedcba9876543210';
    const second = loadBundle<Exports>(writeBundle(dir, id2, 'new'), cacheDir);
    expect(second.cache).toBe('written');
    expect(second.exports.tag).toBe('new');
    expect(fs.readdirSync(cacheDir).sort()).toEqual([path.basename(second.cacheFile!), 'notes.txt'].sort());
    expect(first.cacheFile).not.toBe(second.cacheFile);
  });

  it('runs without a cache when there is no directory, no build id, or the directory cannot be made', () => {
    const dir = tempDir('pxb-cc-');
    const file = writeBundle(dir, ID, 'four');
    const none = loadBundle<Exports>(file, null);
    expect(none).toMatchObject({ cache: 'none', cacheFile: null });
    expect(none.exports.answer(3)).toBe(25);

    const blocked = path.join(dir, 'blocked');
    fs.writeFileSync(blocked, 'a file where the cache directory would go');
    const r = loadBundle<Exports>(file, path.join(blocked, 'code'));
    expect(r.cache).toBe('none');
    expect(r.exports.tag).toBe('four');

    const anon = writeBundle(fs.mkdtempSync(path.join(dir, 'x')), null, 'five');
    const cacheDir = path.join(dir, 'cache');
    expect(loadBundle<Exports>(anon, cacheDir)).toMatchObject({ cache: 'none', cacheFile: null });
    expect(fs.existsSync(cacheDir)).toBe(false);
  });

  it('uses the seed cache unless the cache directory has its own; a rejected seed is replaced there', () => {
    const dir = tempDir('pxb-cc-');
    const file = writeBundle(dir, ID, 'seeded');
    const seedDir = path.join(dir, 'seed');
    const cacheDir = path.join(dir, 'cache');
    // A seed made after running the code (as scripts/train-code-cache.mjs does).
    const made = loadBundle<Exports>(file, seedDir);
    made.exports.answer(1);
    expect(made.cache).toBe('written');

    const a = loadBundle<Exports>(file, cacheDir, seedDir);
    expect(a.cache).toBe('hit');
    expect(a.exports.answer(2)).toBe(20);
    expect(fs.existsSync(cacheDir)).toBe(false); // nothing of its own written

    // A seed V8 rejects (another script's code): compiled from source, own cache written and
    // preferred from then on. (A source this process has not compiled yet: V8 would take an
    // already compiled one from its in-memory cache without looking at the cached data.)
    const other = new vm.Script('(function () { return 3; })').createCachedData();
    fs.writeFileSync(made.cacheFile!, Buffer.concat([Buffer.from('PXBV8CC1'), Buffer.from(new Uint32Array([other.length, fnv1a(other)]).buffer), other]));
    writeBundle(dir, ID, 'seeded, rebuilt');
    const b = loadBundle<Exports>(file, cacheDir, seedDir);
    expect(b.cache).toBe('written');
    expect(b.exports.tag).toBe('seeded, rebuilt');
    expect(loadBundle<Exports>(file, cacheDir, seedDir).cache).toBe('hit');
    expect(fs.readdirSync(cacheDir)).toHaveLength(1);
  });

  it('loads the real command-line bundle and caches it', () => {
    const cacheDir = path.join(tempDir('pxb-cc-'), 'cache');
    const bundle = path.join(ROOT, 'dist', 'cli', 'pxb.cjs');
    const a = loadBundle<{ main: unknown }>(bundle, cacheDir);
    expect(a.cache).toBe('written');
    expect(typeof a.exports.main).toBe('function');
    expect(loadBundle<{ main: unknown }>(bundle, cacheDir).cache).toBe('hit');
  });
});

describe('bin/pxb.js', () => {
  /** A copy of the package's bin/ and dist/ (addon and dependencies linked) to age files in. */
  function packageCopy(): string {
    const pkg = tempDir('pxb-pkg-');
    fs.cpSync(path.join(ROOT, 'bin'), path.join(pkg, 'bin'), { recursive: true });
    fs.cpSync(path.join(ROOT, 'dist'), path.join(pkg, 'dist'), { recursive: true, preserveTimestamps: true });
    fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(pkg, 'package.json'));
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
    fs.symlinkSync(path.join(ROOT, 'native'), path.join(pkg, 'native'));
    return pkg;
  }

  function run(pkg: string, cache: string, args: string[]) {
    const r = spawnSync(path.join(pkg, 'bin', 'pxb.js'), args, {
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: path.join(cache, 'home'), PXB_CACHE_DIR: cache },
    });
    expect(r.status, r.stderr).toBe(0);
    return { out: r.stdout, err: r.stderr };
  }

  it('runs the bundle through a code cache in the cache directory, and dist/ when the bundle is stale or broken', () => {
    const pkg = packageCopy();
    const cache = tempDir('pxb-cache-');
    const codeCache = path.join(cache, 'code-cache');
    // The build's seed (scripts/train-code-cache.mjs) is there, made under the launcher's options:
    // it is used as it is.
    const seeds = fs.readdirSync(path.join(pkg, 'dist', 'cli', 'code-cache'));
    expect(seeds).toHaveLength(1);
    expect(seeds[0]).toMatch(new RegExp(`^[0-9a-f]{32}-${process.version}-${process.arch}-[0-9a-f]{8}\\.v8$`));
    const help = run(pkg, cache, ['backup', '--help']);
    expect(help.out).toMatch(/--change-detection-mode/);
    expect(help.err).toBe('');
    expect(fs.existsSync(codeCache)).toBe(false);

    // Without a seed (or one for another node), the first run writes a cache of its own.
    fs.rmSync(path.join(pkg, 'dist', 'cli', 'code-cache'), { recursive: true });
    expect(run(pkg, cache, ['backup', '--help'])).toEqual(help);
    const files = fs.readdirSync(codeCache);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(new RegExp(`^[0-9a-f]{32}-${process.version}-${process.arch}-[0-9a-f]{8}\\.v8$`));
    const written = fs.statSync(path.join(codeCache, files[0])).mtimeMs;
    expect(run(pkg, cache, ['backup', '--help'])).toEqual(help);
    expect(fs.statSync(path.join(codeCache, files[0])).mtimeMs).toBe(written); // used, not rewritten

    // dist/ compiled after the bundle (tsc alone): the bundle may be old code; it is not even
    // read, dist/'s modules run.
    fs.rmSync(codeCache, { recursive: true });
    const bundle = path.join(pkg, 'dist', 'cli', 'pxb.cjs');
    fs.writeFileSync(bundle, '// pxb-bundle 00000000000000000000000000000000\n(function () { throw new Error("stale bundle ran"); })');
    const later = new Date(fs.statSync(bundle).mtimeMs + 5000);
    fs.utimesSync(path.join(pkg, 'dist', 'cli', 'main.js'), later, later);
    expect(run(pkg, cache, ['backup', '--help'])).toEqual(help);
    expect(fs.existsSync(codeCache)).toBe(false);

    // A current but broken bundle: a warning, and the same program from dist/.
    const evenLater = new Date(later.getTime() + 5000);
    fs.utimesSync(bundle, evenLater, evenLater);
    const broken = run(pkg, cache, ['backup', '--help']);
    expect(broken.out).toBe(help.out);
    expect(broken.err).toMatch(/^pxb: warning: .*pxb\.cjs: stale bundle ran; running dist\/ without it/);

    // The launcher's CommonJS loader (dist/cli/launch.cjs) missing: the same, from dist/.
    fs.rmSync(path.join(pkg, 'dist', 'cli', 'launch.cjs'));
    const noLoader = run(pkg, cache, ['backup', '--help']);
    expect(noLoader.out).toBe(help.out);
    expect(noLoader.err).toMatch(/^pxb: warning: .*pxb\.cjs: Cannot find module .*launch\.cjs.*; running dist\/ without it/s);
  });
});
