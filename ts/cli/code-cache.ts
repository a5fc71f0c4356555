/**
 * Running the bundled command line (`dist/cli/pxb.cjs`, made by `scripts/bundle-cli.mjs`) with
 * a V8 code cache.
 *
 * Node 20 has no compile cache for ES modules: every `pxb` run resolved, read, parsed and
 * compiled the ~85 modules of dist/ before doing any work (`pxb backup --help` 82–85 ms, node
 * itself ~22), and then compiled every function it ran. The launcher (`bin/pxb.js`) runs one
 * CommonJS bundle of them instead, compiled through `vm.Script` with cached code: the seed the
 * build made after running real commands (`scripts/train-code-cache.mjs`, in
 * `dist/cli/code-cache/`), or, when there is none for this node and these options or V8
 * rejects it, a cache of the top level this module writes on the first run (53–58 ms).
 *
 * The cache is V8 bytecode, and V8 checks only its own version, its flags and the length of the
 * source, not the source text, nor (in release builds) the integrity of the cached data. So the
 * file name carries the bundle's build id (a hash of its text, which the bundler writes on its
 * first line), node's version, arch and V8 options, the file carries a checksum of its payload,
 * and it is written atomically (temp file + rename). Anything wrong (no cache directory, an
 * unreadable, truncated or corrupt file, V8 rejecting it) means the bundle is compiled from
 * source as it would be without a cache, and the cache is written anew when the directory is
 * writable. Writing costs a few milliseconds, once per build, node version and option set.
 */
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { createRequire } from 'node:module';

const MAGIC = Buffer.from('PXBV8CC1');
const HEADER = MAGIC.length + 8; // magic, payload length (u32), checksum (u32)
const BUILD_LINE = /^\/\/ pxb-bundle ([0-9a-f]{16,64})\b/;

export type CodeCacheUse =
  /** The cache was read and V8 accepted it. */
  | 'hit'
  /** No usable cache: compiled from source, and a new cache was written. */
  | 'written'
  /** No usable cache and none written (no directory, not writable, no build id). */
  | 'none';

export interface LoadedBundle<T> {
  exports: T;
  cache: CodeCacheUse;
  /** The cache file (set whenever the bundle has a build id and a cache directory was given). */
  cacheFile: string | null;
  /** The bundle's build id (its first line), or null. */
  buildId: string | null;
  /** The compiled bundle (`createCachedData()` serializes what it has compiled so far). */
  script: vm.Script;
}

/** FNV-1a (32-bit) of `b`: a checksum against torn or damaged files, not an adversary. */
export function fnv1a(b: Uint8Array, h = 0x811c9dc5): number {
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return h >>> 0;
}

/** The cache file of bundle `buildId` under `dir` for this node binary and these V8 options. */
export function cacheFileName(dir: string, buildId: string, execArgv: readonly string[] = process.execArgv): string {
  const opts = fnv1a(Buffer.from(execArgv.join('\0'))).toString(16).padStart(8, '0');
  return path.join(dir, `${buildId}-${process.version}-${process.arch}-${opts}.v8`);
}

/** The cached data inside a cache file's bytes, or null if they are not a whole, intact one. */
export function cachedDataOf(file: Buffer): Buffer | null {
  if (file.length < HEADER || !file.subarray(0, MAGIC.length).equals(MAGIC)) return null;
  const len = file.readUInt32LE(MAGIC.length);
  if (file.length !== HEADER + len) return null;
  const data = file.subarray(HEADER);
  return fnv1a(data) === file.readUInt32LE(MAGIC.length + 4) ? data : null;
}

function readCache(file: string): Buffer | null {
  try {
    return cachedDataOf(fs.readFileSync(file));
  } catch {
    return null;
  }
}

/** A cache file's bytes holding `data` (cachedDataOf's inverse). */
export function encodeCacheFile(data: Buffer): Buffer {
  const head = Buffer.alloc(HEADER);
  MAGIC.copy(head);
  head.writeUInt32LE(data.length, MAGIC.length);
  head.writeUInt32LE(fnv1a(data), MAGIC.length + 4);
  return Buffer.concat([head, data]);
}

function writeCache(file: string, data: Buffer): boolean {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.writeFileSync(tmp, encodeCacheFile(data), { mode: 0o600 });
    fs.renameSync(tmp, file);
  } catch {
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      // (no directory to leave a temp file in)
    }
    return false;
  }
  // Caches of other builds for this node and these options are dead weight now.
  const dir = path.dirname(file);
  const suffix = path.basename(file).replace(/^[0-9a-f]+/, '');
  try {
    for (const name of fs.readdirSync(dir)) {
      if (name !== path.basename(file) && name.endsWith(suffix) && /^[0-9a-f]+-/.test(name)) fs.rmSync(path.join(dir, name), { force: true });
    }
  } catch {
    // (a cache that cannot be tidied still works)
  }
  return true;
}

/**
 * Run the bundle `file` and return its exports, using and maintaining a code cache in `cacheDir`
 * (null: none). The file is ASCII (read as latin1) and is one CommonJS wrapper function,
 * `(function (exports, require, module, __filename, __dirname) {…})`, optionally after a first
 * line `// pxb-bundle <build id>` (without one: no cache).
 *
 * `seedDir` holds the cache the build made (scripts/train-code-cache.mjs: after real commands,
 * so it has their functions compiled too, not only the top level); it is used unless
 * `cacheDir` has a cache of its own, which is written only when there is no seed for this node
 * and these options, or V8 rejected it.
 */
export function loadBundle<T>(file: string, cacheDir: string | null, seedDir: string | null = null): LoadedBundle<T> {
  const source = fs.readFileSync(file, 'latin1');
  const id = BUILD_LINE.exec(source)?.[1];
  const cacheFile = id && cacheDir ? cacheFileName(cacheDir, id) : null;
  // A cache of this run's own is only written when the seed is missing or V8 rejected it.
  let cachedData = cacheFile ? readCache(cacheFile) ?? undefined : undefined;
  if (!cachedData && id && seedDir) cachedData = readCache(cacheFileName(seedDir, id)) ?? undefined;
  const script = new vm.Script(source, { filename: file, cachedData });
  const module = { exports: {} as T };
  const run = script.runInThisContext() as (e: T, r: NodeRequire, m: { exports: T }, f: string, d: string) => void;
  run.call(module.exports, module.exports, createRequire(file), module, file, path.dirname(file));
  let cache: CodeCacheUse = 'none';
  if (cachedData && !script.cachedDataRejected) cache = 'hit';
  // Made after the top level ran: the functions it compiled on the way are in it too.
  else if (cacheFile && writeCache(cacheFile, script.createCachedData())) cache = 'written';
  return { exports: module.exports, cache, cacheFile, buildId: id ?? null, script };
}
