#!/usr/bin/env node
// pxar metadata rates: what a no-change metadata-mode backup spends per entry on writing the
// new .mpxar (FILENAME + ENTRY + PAYLOAD_REF per file, a GOODBYE per directory) and on reading
// the previous one back (PxarDirectory.list of every directory, as change detection does).
// Synthetic: DIRS directories of FILES files each, names like the linux tree's.
//   node bench/encoder.mjs [--dirs 5000] [--files 16] [--rounds 7] [--json FILE]
import fs from 'node:fs';
import { PxarEncoder } from '../dist/format/pxar/encoder.js';
import { PxarAccessor } from '../dist/format/pxar/accessor.js';
import { NO_ACL, NO_XATTRS } from '../dist/format/pxar/metadata.js';

const args = process.argv.slice(2);
const opt = (name, def) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : def);
const dirs = opt('--dirs', 5000);
const files = opt('--files', 16);
const rounds = opt('--rounds', 7);
const jsonOut = args.includes('--json') ? args[args.indexOf('--json') + 1] : null;

const sink = { write() {} };
const dirNames = Array.from({ length: dirs }, (_, d) => Buffer.from(`subsystem_${d}`));
const fileNames = Array.from({ length: dirs * files }, (_, i) => Buffer.from(`source_file_${i}.c`));
const dirMeta = { mode: 0o40755, flags: 0n, uid: 0, gid: 0, mtime: { secs: 1_700_000_000, nanos: 1 }, xattrs: NO_XATTRS, acl: NO_ACL };
const fileMetas = Array.from({ length: files }, (_, k) => ({ mode: 0o100644, flags: 0n, uid: 0, gid: 0, mtime: { secs: 1_700_000_000, nanos: k }, xattrs: NO_XATTRS, acl: NO_ACL }));

const times = [];
let bytes = 0;
let archive = [];
for (let r = 0; r < rounds; r++) {
  let out = 0;
  const pieces = [];
  const counting = { write: (b) => ((out += b.length), pieces.push(b)) };
  const enc = new PxarEncoder({ variant: 'split', output: counting, payloadOutput: sink });
  enc.begin(dirMeta);
  const t = performance.now();
  let payload = 16;
  for (let d = 0; d < dirs; d++) {
    enc.enterDirectory(dirNames[d], dirMeta);
    for (let k = 0; k < files; k++) {
      enc.addPayloadRef(fileNames[d * files + k], fileMetas[k], 1000, payload);
      payload += 1016;
    }
    enc.leaveDirectory();
  }
  enc.finish();
  times.push(performance.now() - t);
  bytes = out;
  archive = pieces;
}
times.sort((a, b) => a - b);

// read it back: every directory listed, as the change detection of a no-change backup does
const mpxar = Buffer.concat(archive);
const source = { size: mpxar.length, readAt: async (o, n) => mpxar.subarray(o, Math.min(mpxar.length, o + n)) };
const readTimes = [];
for (let r = 0; r < rounds; r++) {
  const acc = await PxarAccessor.open(source);
  const t = performance.now();
  const root = await acc.openRoot();
  let seen = 0;
  for (const d of await root.list({ paths: false })) {
    const sub = await acc.openDirectory(d);
    seen += 1 + (await sub.list({ paths: false })).length;
  }
  readTimes.push(performance.now() - t);
  if (seen !== dirs * (files + 1)) throw new Error(`listed ${seen} entries`);
}
readTimes.sort((a, b) => a - b);
const entries = dirs * (files + 1);
const median = times[Math.floor(times.length / 2)];
const result = {
  entries,
  metadataBytes: bytes,
  medianMs: Number(median.toFixed(1)),
  bestMs: Number(times[0].toFixed(1)),
  entriesPerSecond: Math.round(entries / (median / 1000)),
  usPerEntry: Number(((median * 1000) / entries).toFixed(2)),
  readMedianMs: Number(readTimes[Math.floor(readTimes.length / 2)].toFixed(1)),
  readUsPerEntry: Number(((readTimes[Math.floor(readTimes.length / 2)] * 1000) / entries).toFixed(2)),
};
console.log(`pxar encoder: ${entries} entries (${(bytes / 2 ** 20).toFixed(1)} MiB of .mpxar) median ${result.medianMs} ms, best ${result.bestMs} ms: ${result.usPerEntry} µs/entry, ${result.entriesPerSecond} entries/s`);
console.log(`pxar accessor: every directory listed, median ${result.readMedianMs} ms: ${result.readUsPerEntry} µs/entry`);
if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify({ date: new Date().toISOString(), node: process.version, ...result }, null, 2) + '\n');
