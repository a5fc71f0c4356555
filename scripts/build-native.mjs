#!/usr/bin/env node
// Build the Rust addon (native/) with plain cargo and place it where ts/native looks for it:
// native/build/pxb_native.node. No crates, no napi tooling: cargo alone.
//   node scripts/build-native.mjs              build (release)
//   node scripts/build-native.mjs --if-missing skip when a prebuild for this platform exists
//   node scripts/build-native.mjs --debug      debug build
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const release = !argv.includes('--debug');
const prebuild = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'pxb_native.node');

if (argv.includes('--if-missing') && fs.existsSync(prebuild)) {
  console.log(`pxb: using prebuilt addon ${path.relative(root, prebuild)}`);
  process.exit(0);
}

function findCargo() {
  if (process.env.CARGO) return process.env.CARGO;
  const home = path.join(os.homedir(), '.cargo', 'bin', 'cargo');
  return fs.existsSync(home) ? home : 'cargo';
}

const cargo = findCargo();
const manifest = path.join(root, 'native', 'Cargo.toml');
try {
  execFileSync(cargo, ['build', ...(release ? ['--release'] : []), '--manifest-path', manifest], { stdio: 'inherit' });
} catch (e) {
  const why = e.code === 'ENOENT' ? `cargo not found (tried ${cargo}); install Rust (rustup) or set CARGO` : e.message;
  console.error(`pxb: building the native addon failed: ${why}`);
  process.exit(1);
}

const lib = { linux: 'libpxb_native.so', darwin: 'libpxb_native.dylib', win32: 'pxb_native.dll' }[process.platform];
const src = path.join(root, 'native', 'target', release ? 'release' : 'debug', lib);
const out = path.join(root, 'native', 'build', 'pxb_native.node');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.copyFileSync(src, out + '.tmp');
fs.renameSync(out + '.tmp', out); // atomic; the name must end in .node
console.log(`pxb: native addon ${path.relative(root, out)} (${fs.statSync(out).size} bytes)`);
