#!/usr/bin/env node
// Hot-path throughput on real data (issue: native foundation). Loads the contents of a source
// tree (default: the Debian linux-source-6.1 tree prepared by ../shared/peers/prepare_data.sh)
// into memory as 64 MiB segments, then runs each step of `pxb benchmark` over all of it once.
//   node bench/chunking.mjs [DIR] [--min-gib 1] [--json FILE]
import fs from 'node:fs';
import path from 'node:path';
import { runBenchmark } from '../dist/client/benchmark.js';

const args = process.argv.slice(2);
const dir = args.find((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--'))) ?? '/var/tmp/pxb-bench/src/linux-source-6.1';
const minGiB = Number(args[args.indexOf('--min-gib') + 1] ?? 1) || 1;
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : null;

const SEG = 64 << 20;
const segments = [];
let cur = Buffer.allocUnsafe(SEG);
let fill = 0;
let files = 0;
function add(buf) {
  let off = 0;
  while (off < buf.length) {
    const n = Math.min(buf.length - off, SEG - fill);
    buf.copy(cur, fill, off, off + n);
    fill += n;
    off += n;
    if (fill === SEG) {
      segments.push(cur);
      cur = Buffer.allocUnsafe(SEG);
      fill = 0;
    }
  }
}
function walk(d) {
  for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = path.join(d, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.isFile()) {
      add(fs.readFileSync(p));
      files++;
    }
  }
}
if (!fs.existsSync(dir)) {
  console.error(`bench: ${dir} not found; run ../shared/peers/prepare_data.sh first`);
  process.exit(1);
}
walk(dir);
// Repeat the tree until at least minGiB (real data, never zeros).
const once = segments.length;
while ((segments.length + 1) * SEG < minGiB * 2 ** 30 && once > 0) segments.push(segments[segments.length % once]);
if (fill) segments.push(cur.subarray(0, fill));
const total = segments.reduce((a, b) => a + b.length, 0);
console.log(`data: ${dir}, ${files} files, ${(total / 1e9).toFixed(2)} GB in memory`);
const results = await runBenchmark({
  data: segments,
  minSeconds: 0,
  onResult: (r) => console.log(`${r.name.padEnd(52)} ${(r.speed / 1e6).toFixed(0).padStart(6)} MB/s`),
});
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ dir, bytes: total, results }, null, 2));
