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
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = `${root}dist/cli/pxb.cjs`;
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
