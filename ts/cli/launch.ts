/**
 * What bin/pxb.js needs before the command line's bundle runs. `scripts/bundle-cli.mjs` bundles
 * it into dist/cli/launch.cjs, a CommonJS file: with it the launcher (CommonJS too) starts
 * without node's ES module loader, which cost ~10 ms of every run (`pxb --help` 62 ms against
 * 52, an empty ES module against an empty CommonJS file alike).
 */
export { loadBundle } from './code-cache.js';
export { tuneV8 } from './v8-tuning.js';
export { defaultCacheDir } from '../datastore/location.js';
