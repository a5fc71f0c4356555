#!/usr/bin/env node
// The floor of a no-change incremental backup: how long listing a tree takes, with the
// metadata PBS's archiver reads per entry and without it, next to `find -printf '%s %T@\n'`.
// Every variant lists every directory on the libuv pool with `concurrency` listings in flight
// (the prefetch walk of a backup keeps several), and nothing is encoded or compared.
//
//   node bench/walk.mjs [DIR] [--runs N] [--concurrency K] [--json FILE]
//
// Variants: `find` (one lstat per entry), `stat` (readDir: fstatat per entry, no fd-based
// metadata), `pbs` (readDir as a backup calls it: open + flistxattr (+ values when present)
// + FS_IOC_GETFLAGS + FS_IOC_FSGETXATTR + close per file and directory).
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readDir } from '../dist/native/fs.js';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const runs = Number(opt('--runs', 5));
const concurrency = Number(opt('--concurrency', 4));
const jsonOut = opt('--json', null);
const dir = args[0] ?? '/var/tmp/pxb-bench/src/linux-source-6.1';

const FULL = { xattrs: true, acls: true, fcaps: true, flags: true, projid: true };
const NONE = { xattrs: false, acls: false, fcaps: false, flags: false, projid: false };

async function walk(root, opts) {
  const queue = [Buffer.from(root)];
  let entries = 0;
  let active = 0;
  await new Promise((resolve, reject) => {
    const pump = () => {
      while (active < concurrency && queue.length) {
        const d = queue.pop();
        active++;
        readDir(d, opts).then((list) => {
          active--;
          entries += list.length;
          for (let i = 0; i < list.length; i++) {
            if ((list.mode(i) & 0o170000) === 0o040000) queue.push(Buffer.from(join(d.toString('latin1'), list.name(i).toString('latin1')), 'latin1'));
          }
          if (!active && !queue.length) resolve();
          else pump();
        }, reject);
      }
    };
    pump();
  });
  return entries;
}

function timeFind() {
  const t = process.hrtime.bigint();
  const out = execFileSync('find', [dir, '-printf', '%s %T@\n'], { maxBuffer: 1 << 30 });
  return { seconds: Number(process.hrtime.bigint() - t) / 1e9, entries: out.toString().split('\n').length - 1 };
}

async function timeWalk(opts) {
  const cpu0 = process.cpuUsage();
  const t = process.hrtime.bigint();
  const entries = await walk(dir, opts);
  const seconds = Number(process.hrtime.bigint() - t) / 1e9;
  const c = process.cpuUsage(cpu0);
  return { seconds, cpuSeconds: (c.user + c.system) / 1e6, entries };
}

const results = { find: [], stat: [], pbs: [] };
await timeWalk(FULL); // warm the page cache and the code
for (let r = 0; r < runs; r++) {
  results.find.push(timeFind());
  results.stat.push(await timeWalk(NONE));
  results.pbs.push(await timeWalk(FULL));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const summary = {};
for (const [k, rs] of Object.entries(results)) {
  summary[k] = { medianSeconds: median(rs.map((r) => r.seconds)), entries: rs[0].entries };
  if (rs[0].cpuSeconds !== undefined) summary[k].medianCpuSeconds = median(rs.map((r) => r.cpuSeconds));
}
for (const [k, s] of Object.entries(summary)) {
  const cpu = s.medianCpuSeconds !== undefined ? `, ${s.medianCpuSeconds.toFixed(3)} CPU-s` : '';
  console.log(`${k.padEnd(5)} ${s.medianSeconds.toFixed(3)} s (median of ${runs}${cpu}), ${s.entries} entries, ${(s.medianSeconds / summary.find.medianSeconds).toFixed(2)}x find`);
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ dir, runs, concurrency, date: new Date().toISOString(), results, summary }, null, 2) + '\n');
