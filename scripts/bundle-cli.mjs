#!/usr/bin/env node
// Bundles the compiled command line (dist/cli/main.js and everything it imports, commander
// included) into one CommonJS file, dist/cli/pxb.cjs, which bin/pxb.js runs with a V8 code cache
// (ts/cli/code-cache.ts: why). Run after tsc: `npm run build` does both.
//
// - CommonJS, because node 20 can feed a code cache only to a vm.Script; dynamic import() is
//   turned into require() (a vm.Script has no loader for it), import.meta.url into the bundle's
//   own URL (native/index.js finds the addon from it; the bundle sits in dist/cli/ as main.js
//   does, so relative paths stay the same).
// - Whitespace and syntax minified (names kept, so stack traces still name functions): a smaller
//   source to read and hash, and a smaller cache.
// - The file is a CommonJS module's wrapper function, `(function (exports, require, module,
//   __filename, __dirname) {…})`, ready for vm.Script as it is read (no concatenated copy of
//   half a megabyte), in ASCII (esbuild escapes the rest; the launcher reads it as latin1).
// - First line: `// pxb-bundle <id>`, the id a SHA-256 prefix of the rest; the code cache is keyed
//   by it.
// - Then the seed code cache, dist/cli/code-cache/ (scripts/train-code-cache.mjs).
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = `${root}dist/cli/pxb.cjs`;

// What the launcher (CommonJS) needs before the bundle runs: the code-cache loader
// (ts/cli/launch.ts). Written first, so a current bundle always has a current one.
await build({
  absWorkingDir: root,
  entryPoints: ['dist/cli/launch.js'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outfile: 'dist/cli/launch.cjs',
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: 'warning',
});

const result = await build({
  absWorkingDir: root,
  entryPoints: ['dist/cli/main.js'],
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  write: false,
  minifyWhitespace: true,
  minifySyntax: true,
  supported: { 'dynamic-import': false },
  define: { 'import.meta.url': 'import_meta_url' },
  banner: { js: '"use strict";var import_meta_url=require("node:url").pathToFileURL(__filename).href;' },
  logLevel: 'warning',
});
const text = `(function (exports, require, module, __filename, __dirname) {${result.outputFiles[0].text}\n})`;
if (!/^[\x00-\x7f]*$/.test(text)) throw new Error('bundle-cli: the bundle is not ASCII (the launcher reads it as latin1)');
const id = createHash('sha256').update(text).digest('hex').slice(0, 32);
writeFileSync(`${out}.tmp`, `// pxb-bundle ${id} (scripts/bundle-cli.mjs; generated, do not edit)\n${text}`);
renameSync(`${out}.tmp`, out);

// The seed code cache (scripts/train-code-cache.mjs), made under the launcher's node options. A
// failure costs only speed: the launcher then makes a cache of the top level on its first run.
rmSync(`${root}dist/cli/code-cache`, { recursive: true, force: true });
const launcher = readFileSync(`${root}bin/pxb.js`, 'utf8');
const flags = /exec node (.*?) "\$0"/.exec(launcher)?.[1].split(/\s+/) ?? [];
const t = spawnSync(process.execPath, [...flags, `${root}scripts/train-code-cache.mjs`], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
if (t.status !== 0) process.stderr.write(`bundle-cli: warning: no seed code cache (${(t.stderr || t.error?.message || `exit ${t.status}`).trim().split('\n').slice(-3).join(' / ')})\n`);
