#!/bin/sh
':' //; [ -z "${NODE_EXTRA_CA_CERTS:-}" ] || { PXB_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS; export PXB_EXTRA_CA_CERTS; unset NODE_EXTRA_CA_CERTS; }
':' //; exec node --max-semi-space-size=4 --v8-pool-size=1 "$0" "$@"
// pxb command line. The compiled TypeScript lives in dist/ (built by `npm install` / `npm run build`).
//
// The two lines above are both shell and JavaScript (a string, then a comment): run as a
// program, /bin/sh starts node on this file with the flags below; `node bin/pxb.js` skips them.
// - Node parses the CA bundle named by $NODE_EXTRA_CA_CERTS when it starts (~140 certificates:
//   40 ms of every pxb run here, a local backup included). The launcher hands it over as
//   $PXB_EXTRA_CA_CERTS instead, which pxb reads only when it opens a TLS connection
//   (cli/repository.ts: the same certificates are trusted).
// - The young generation is capped at 4 MiB semi-spaces (V8's default grows to 16 MiB): a
//   backup allocates little that survives, so it runs as fast with a smaller resident set
//   (linux tree, alternating against 8 MiB: full backup 2.63-2.82 s at ~120 MiB against
//   2.63-3.03 s at ~127; first no-change 0.41-0.45 s at 112-117 MiB against 0.43-0.47 s at
//   123-126; restore equal; scavenges of a full backup 58 ms against 51).
// - One V8 platform thread (node's default: four) for background compilation and GC: pxb's
//   heavy work runs on its own native threads, and four V8 threads compiling at once took the
//   cores from them and from the JavaScript thread (linux tree, 2 vCPUs, alternating: first
//   no-change backup 0.65-0.69 s against 0.71-0.77, full backup 2.70-2.92 s against 2.86-3.08,
//   restore equal).
// - Other V8 flags are set once node runs (ts/cli/v8-tuning.ts, tuneV8: on the command line
//   each V8 flag made node compile its built-in modules from source, ~11 ms of every run), and
//   the semi-space flag is put back to its default value first thing below: the heap keeps its
//   size, and the built-in modules load from their code caches.
// - The command line runs from one bundle of dist/ (dist/cli/pxb.cjs, `npm run build` makes it)
//   through a V8 code cache: the one the build made after running commands (dist/cli/code-cache/),
//   else one of the top level in pxb's cache directory (ts/cli/code-cache.ts): `pxb backup --help`
//   53-58 ms instead of 82-85; linux tree, alternating: first no-change backup median 0.42 s
//   against 0.445 (8 pairs), full backup 3.06 s against 3.23 (5 pairs, peak RSS +1 MiB); the
//   build's cache against one of the top level only: first no-change 0.406 s against 0.415 and
//   0.398 against 0.4225 (8 pairs each), full backup 2.95 against 3.03 (RSS +1.2 MiB). When
//   dist/ was compiled after the bundle was made (tsc run alone), the bundle is stale and the
//   modules of dist/ run instead.
// - This file is CommonJS (bin/package.json), and so is what it loads before the bundle
//   (dist/cli/launch.cjs: the code-cache loader): node's ES module loader is not started unless
//   dist/'s modules have to run (`pxb --help` 52 ms instead of 62).
'use strict';
require('node:v8').setFlagsFromString('--max-semi-space-size=0');
const { statSync } = require('node:fs');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

const dist = path.join(__dirname, '..', 'dist');
const entry = path.join(dist, 'cli', 'main.js');
const mtime = (p) => statSync(p, { throwIfNoEntry: false })?.mtimeMs;

async function start() {
  const built = mtime(entry);
  if (built === undefined) {
    process.stderr.write('pxb: dist/ is missing; run "npm install" or "npm run build" in the package directory\n');
    process.exit(1);
  }
  const bundle = path.join(dist, 'cli', 'pxb.cjs');
  let main;
  if (mtime(bundle) >= built) {
    try {
      const { loadBundle, defaultCacheDir, tuneV8 } = require(path.join(dist, 'cli', 'launch.cjs'));
      tuneV8();
      let cacheDir = null;
      try {
        cacheDir = path.join(defaultCacheDir(process.env), 'code-cache');
      } catch {
        // (no home directory: no cache)
      }
      ({ main } = loadBundle(bundle, cacheDir, path.join(dist, 'cli', 'code-cache')).exports);
    } catch (e) {
      // (an unreadable or broken bundle: the same code runs from dist/'s modules)
      process.stderr.write(`pxb: warning: ${bundle}: ${e.message}; running dist/ without it (npm run build makes it again)\n`);
    }
  }
  if (!main) ({ main } = await import(pathToFileURL(entry).href));
  const code = await main(process.argv.slice(2));
  // Everything a command does is awaited before main returns: exit now, without waiting for node
  // to wind down its event loop and threads (~5 ms of a no-change backup's 0.42 s, eight
  // alternating pairs), unless output is still queued (a pipe where writes are asynchronous).
  if (process.stdout.writableLength === 0 && process.stderr.writableLength === 0) process.exit(code);
  process.exitCode = code;
}

// (a rejection ends the process with its error and exit code 1, as node does with any)
start();
