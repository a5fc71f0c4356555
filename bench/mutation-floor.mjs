#!/usr/bin/env node
// The work a backup after a mutation cannot avoid on this machine, as a lower bound on its time:
// the newest snapshot of a group against the one before it, measured as CPU seconds and divided
// by the cores (perfect parallelism, nothing else counted: no encoding, chunking, index writing,
// start-up). Parts:
//   - new chunks (referenced by the newest indexes, not by the previous ones): hashed and zstd-1
//     compressed by any client that writes PBS's archive (decoded into memory first, then all
//     queued at once on the addon's CPU workers), and stored: each blob written to a new file
//     and renamed into place beside the datastore's chunks (same file system; no fsync);
//   - with --stats (pxb's `--output-format json` output of that backup): the rest of the bytes
//     PBS's rules make a client read again (files re-encoded by the 10 % padding rule whose chunks
//     turn out known) are hashed too, as upstream does;
//   - with --source (the tree backed up): the kernel's part of reading those bytes (system CPU of
//     reading every file once, scaled by bytes) and the CPU of `find -printf '%s %T@\n'`.
//
//   node bench/mutation-floor.mjs DATASTORE [--group host/bench] [--archive root] [--stats FILE] [--source DIR] [--json]
import path from 'node:path';
import { availableParallelism } from 'node:os';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, readdirSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { native } from '../dist/native/index.js';
import { DataStore } from '../dist/datastore/datastore.js';
import { BackupGroup } from '../dist/datastore/backup-group.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const store = args.find((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--')));
if (!store) {
  process.stderr.write('usage: node bench/mutation-floor.mjs DATASTORE [--group host/bench] [--archive root] [--stats FILE] [--source DIR] [--json]\n');
  process.exit(2);
}
const group = BackupGroup.parse(opt('--group', 'host/bench'));
const archive = opt('--archive', 'root');
const ds = await DataStore.open(store);
const snaps = await ds.listSnapshots(group); // (finished ones, oldest first)
if (snaps.length < 2) throw new Error(`${group}: needs two finished snapshots, has ${snaps.length}`);
const [prev, last] = snaps.slice(-2).map((x) => x.dir);

const indexes = (dir) => Promise.all(['ppxar', 'mpxar'].map((k) => ds.readIndex(dir, `${archive}.${k}.didx`)));
const known = new Set();
for (const ix of await indexes(prev)) for (let k = 0; k < ix.count; k++) known.add(ix.digest(k).toString('hex'));
const fresh = new Map();
let payloadNew = 0;
(await indexes(last)).forEach((ix, which) => {
  for (let k = 0; k < ix.count; k++) {
    const hex = ix.digest(k).toString('hex');
    if (known.has(hex) || fresh.has(hex)) continue;
    fresh.set(hex, ix.digest(k));
    if (which === 0) payloadNew += ix.end(k) - (k ? ix.end(k - 1) : 0);
  }
});
const raws = await Promise.all([...fresh.values()].map(async (d) => native.decodeBlob(await ds.chunks.load(d))));
const rawBytes = raws.reduce((s, r) => s + r.length, 0);

/** CPU seconds of all threads (process.cpuUsage) and wall seconds of fn, the round with least CPU. */
async function best(fn, rounds = 5) {
  let out = null;
  for (let i = 0; i < rounds; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await fn();
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    const cpu = (c.user + c.system) / 1e6;
    if (!out || cpu < out.cpu) out = { cpu, wall };
  }
  return out;
}
// processChunk and sha256Async run on the addon's CPU workers, one per core: all chunks queued at once.
const compressed = await best(() => Promise.all(raws.map((r) => native.processChunk(r, true))));
const hash = await best(() => Promise.all(raws.map((r) => native.sha256Async(r))));
// Storing them: each encoded chunk written to a temporary file and renamed into place, in a
// directory beside the datastore's chunk store (same file system), as a chunk store inserts.
const blobs = await Promise.all(raws.map((r) => native.encodeBlobAsync(r, true)));
const storeDir = path.join(store, `.floor-${process.pid}`);
let stored = null;
try {
  mkdirSync(storeDir);
  for (let round = 0; round < 3; round++) {
    const c0 = process.cpuUsage();
    blobs.forEach((b, k) => {
      const fd = openSync(path.join(storeDir, `${k}.tmp`), 'wx');
      try {
        writeSync(fd, b);
      } finally {
        closeSync(fd);
      }
      renameSync(path.join(storeDir, `${k}.tmp`), path.join(storeDir, String(k)));
    });
    const c = process.cpuUsage(c0);
    const cpu = (c.user + c.system) / 1e6;
    if (!stored || cpu < stored.cpu) stored = { cpu };
    for (let k = 0; k < blobs.length; k++) rmSync(path.join(storeDir, String(k)));
  }
} finally {
  rmSync(storeDir, { recursive: true, force: true });
}
const hashCpuPerByte = hash.cpu / rawBytes;
const cores = availableParallelism();

// What PBS's rules make a client read again: bytesRead of the backup (its JSON statistics). The
// part of it not in new chunks must still be read and hashed (its chunks turn out known).
let bytesRead = 0;
let reencodedFiles = null;
const statsFile = opt('--stats', null);
if (statsFile) {
  const text = readFileSync(statsFile, 'utf8');
  const stats = JSON.parse(text.slice(text.indexOf('{')));
  const a = stats.archives.find((x) => x.archive === `${archive}.pxar`) ?? stats.archives[0];
  bytesRead = a.bytesRead;
  reencodedFiles = a.reencodedFiles;
}
const rehashCpu = Math.max(0, bytesRead - payloadNew) * hashCpuPerByte;

// With --source (the tree that was backed up): the kernel's part of reading every file once
// (open, read into one buffer, close; system CPU only, scaled to bytesRead by bytes: per-file costs
// make that an underestimate), and `find -printf '%s %T@\n'`'s CPU (the lstat walk any backup does).
let readCpu = 0;
let walkCpu = 0;
const source = opt('--source', null);
if (source) {
  const files = [];
  const list = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) list(p);
      else if (e.isFile()) files.push(p);
    }
  };
  list(source);
  const buf = Buffer.allocUnsafe(64 << 20);
  let total = 0;
  let sys = Infinity;
  for (let round = 0; round < 3; round++) {
    const r0 = process.resourceUsage().systemCPUTime;
    total = 0;
    for (const p of files) {
      let fd;
      try {
        fd = openSync(p, 'r');
      } catch {
        continue;
      }
      for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) total += n;
      closeSync(fd);
    }
    sys = Math.min(sys, (process.resourceUsage().systemCPUTime - r0) / 1e6);
  }
  readCpu = bytesRead ? (sys * bytesRead) / total : 0;
  // children's user + system ticks from /proc/self/stat (fields 16, 17) around one find
  const childTicks = () => {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(f[13]) + Number(f[14]);
  };
  walkCpu = Infinity;
  for (let round = 0; round < 3; round++) {
    const t0 = childTicks();
    const r = spawnSync('find', [source, '-printf', '%s %T@\n'], { stdio: ['ignore', 'ignore', 'inherit'] });
    if (r.status !== 0) throw new Error(`find ${source} failed`);
    walkCpu = Math.min(walkCpu, (childTicks() - t0) / 100);
  }
}

const floorCpu = compressed.cpu + stored.cpu + rehashCpu + readCpu + walkCpu;
const result = {
  previous: prev.timeString,
  snapshot: last.timeString,
  cores,
  newChunks: fresh.size,
  newRawBytes: rawBytes,
  newPayloadBytes: payloadNew,
  newCpu: compressed.cpu,
  storeCpu: stored.cpu,
  newWall: compressed.wall,
  hashMBps: rawBytes / hash.wall / 1e6,
  bytesRead,
  reencodedFiles,
  rehashCpu,
  readCpu,
  walkCpu,
  floorCpu,
  floorSeconds: floorCpu / cores,
};
if (args.includes('--json')) process.stdout.write(JSON.stringify(result) + '\n');
else {
  const mb = (b) => (b / 1e6).toFixed(1);
  const s = (x) => `${x.toFixed(3)} s`;
  const row = (label, cpu, extra = '') => `  ${label.padEnd(46)} ${s(cpu)} CPU${extra}`;
  const lines = [
    `${group} ${last.timeString} against ${prev.timeString}: ${fresh.size} new chunks, ${mb(rawBytes)} MB raw`,
    row('hash + zstd-1 of the new chunks', compressed.cpu, ` (${s(compressed.wall)} wall on ${cores} cores; SHA-256 ${(rawBytes / hash.wall / 1e6).toFixed(0)} MB/s)`),
    row(`storing them (${mb(blobs.reduce((a, b) => a + b.length, 0))} MB of blobs)`, stored.cpu),
  ];
  if (statsFile) lines.push(row(`hashing the other ${mb(Math.max(0, bytesRead - payloadNew))} MB re-read`, rehashCpu, ` (${reencodedFiles} files re-encoded)`));
  if (source) lines.push(row(`reading ${mb(bytesRead)} MB (kernel only)`, readCpu), row("find -printf '%s %T@\\n'", walkCpu));
  lines.push(`  floor: ${s(floorCpu)} CPU = ${s(floorCpu / cores)} on ${cores} cores, nothing else counted`);
  process.stdout.write(lines.join('\n') + '\n');
}
