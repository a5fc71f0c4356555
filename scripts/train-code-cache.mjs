#!/usr/bin/env node
// Makes the seed code cache of the command-line bundle: dist/cli/code-cache/<name>.v8 (name:
// ts/cli/code-cache.ts, cacheFileName). The bundle runs real commands on a small temporary tree
// in this process (full, incremental and unchanged-tree backups, restore, listings), then V8
// serializes everything compiled so far: a later run finds those functions compiled, not only
// the top level (linux tree, alternating against a cache of the top level: first no-change
// backup 0.398 s against 0.4225 and 0.406 against 0.415, full backup 2.95 against 3.03).
//
// Run by scripts/bundle-cli.mjs with the launcher's node options (bin/pxb.js): V8 rejects a cache
// made under other options. Exit 0 with the cache written, else 1 with the reason on stderr.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const bundle = path.join(root, 'dist', 'cli', 'pxb.cjs');
const seedDir = path.join(root, 'dist', 'cli', 'code-cache');
const { cacheFileName, encodeCacheFile, loadBundle } = await import(new URL('../dist/cli/code-cache.js', import.meta.url).href);
const { tuneV8 } = await import(new URL('../dist/cli/v8-tuning.js', import.meta.url).href);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pxb-train-'));
try {
  // A small tree with what a backup meets: nested directories, small and larger files, an empty
  // file and directory, a symlink, a hardlink.
  const src = path.join(tmp, 'src');
  for (let d = 0; d < 4; d++) {
    const dir = path.join(src, `dir${d}`, 'sub');
    fs.mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 24; f++) fs.writeFileSync(path.join(dir, `f${f}.txt`), `file ${d}/${f}\n`.repeat(1 + f * 40));
    fs.writeFileSync(path.join(src, `dir${d}`, 'big.bin'), Buffer.alloc(300_000 + d * 70_001, d + 1));
  }
  fs.writeFileSync(path.join(src, 'empty'), '');
  fs.mkdirSync(path.join(src, 'emptydir'));
  fs.symlinkSync('dir0/big.bin', path.join(src, 'link'));
  fs.linkSync(path.join(src, 'dir1', 'big.bin'), path.join(src, 'hard'));

  // Entries changed within the last second are not recorded in a metadata cache (racy: see
  // archive/metadata-cache.ts); older ones let the next backups take their cached paths.
  await new Promise((r) => setTimeout(r, 1100));
  Object.assign(process.env, { HOME: path.join(tmp, 'home'), PXB_CACHE_DIR: path.join(tmp, 'cache'), XDG_DATA_HOME: path.join(tmp, 'data') });
  const repo = path.join(tmp, 'repo');
  // (compiled from source, no cache read or written: the launcher's loader, as it runs the bundle,
  // under the V8 flags it sets: V8 takes a cache only under the flags it was made with)
  tuneV8();
  const { exports, buildId, script } = loadBundle(bundle, null);
  if (!buildId) throw new Error(`${bundle}: no build id`);
  const { main } = exports;
  const t0 = 1_700_000_000;
  let n = 0;
  const run = async (...args) => {
    const code = await main([...args, '--repository', repo]);
    if (code !== 0) throw new Error(`pxb ${args.join(' ')}: exit ${code}`);
  };
  const backup = () => run('backup', `root.pxar:${src}`, '--backup-id', 'train', '--backup-time', String(t0 + 60 * n++));
  await backup(); // data mode: no previous snapshot
  fs.appendFileSync(path.join(src, 'dir2', 'sub', 'f3.txt'), 'changed\n');
  await backup(); // metadata mode, one file changed
  await backup(); // no change
  await backup(); // unchanged again
  await run('restore', 'host/train', 'root.pxar', path.join(tmp, 'restored'));
  await run('list');
  await run('snapshot', 'list');
  await run('catalog', 'dump', 'host/train');

  const file = cacheFileName(seedDir, buildId);
  // (bundle-cli.mjs has removed the seeds of earlier builds)
  fs.mkdirSync(seedDir, { recursive: true });
  fs.writeFileSync(`${file}.tmp`, encodeCacheFile(script.createCachedData()));
  fs.renameSync(`${file}.tmp`, file);
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.exit(0);
