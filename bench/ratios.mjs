#!/usr/bin/env node
// Ratios of a bench/peers.sh run against the issues' targets, per pass, and a median table.
//
//   node bench/ratios.mjs bench/results/peers-<date>.csv
//
// Targets (issues 3 and 4, linux tree, warm cache): full backup <= 0.4x borg's time and peak
// RSS <= borg's; restore <= 0.5x restic's; no-change backup <= 2x `find -printf` and <= 0.2x
// borg's no-change backup; after the 1 % mutation <= 0.25x borg's time.
import { readFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node bench/ratios.mjs <peers csv>\n');
  process.exit(2);
}
const [head, ...lines] = readFileSync(file, 'utf8').trim().split('\n');
const cols = head.split(',');
const rows = lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i], v])));
const at = new Map(rows.map((r) => [`${r.pass}/${r.tool}/${r.step}`, { wall: Number(r.wall_s), rss: Number(r.maxrss_kib) / 1024, repo: Number(r.repo_bytes) / 1048576 }]));
const get = (pass, tool, step) => at.get(`${pass}/${tool}/${step}`);
const passes = [...new Set(rows.map((r) => r.pass))];
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const f2 = (x) => (x === undefined || Number.isNaN(x) ? '-' : x.toFixed(2));

/** [label, ratio of a pass, target]. */
const checks = [
  ['full / borg', (p) => get(p, 'pxb', 'full')?.wall / get(p, 'borg', 'full')?.wall, 0.4],
  ['full RSS / borg', (p) => get(p, 'pxb', 'full')?.rss / get(p, 'borg', 'full')?.rss, 1],
  ['first no-change / borg', (p) => get(p, 'pxb', 'nochange')?.wall / get(p, 'borg', 'nochange')?.wall, 0.2],
  ['first no-change / find', (p) => get(p, 'pxb', 'nochange')?.wall / get(p, 'find', 'walk')?.wall, 2],
  ['second no-change / find', (p) => get(p, 'pxb', 'nochange2')?.wall / get(p, 'find', 'walk')?.wall, 2],
  ['third no-change / find', (p) => get(p, 'pxb', 'nochange3')?.wall / get(p, 'find', 'walk')?.wall, 2],
  ['third no-change / borg', (p) => get(p, 'pxb', 'nochange3')?.wall / get(p, 'borg', 'nochange3')?.wall, 0.2],
  ['mutation / borg', (p) => get(p, 'pxb', 'mutated')?.wall / get(p, 'borg', 'mutated')?.wall, 0.25],
  // the least any client writing PBS's archive can take for that step here (bench/mutation-floor.mjs)
  ['mutation floor / borg', (p) => get(p, 'floor', 'mutated')?.wall / get(p, 'borg', 'mutated')?.wall, 0.25],
  ['restore / restic', (p) => get(p, 'pxb', 'restore')?.wall / get(p, 'restic', 'restore')?.wall, 0.5],
];

const out = [`${file}: ${passes.length} pass(es)`, '', `| ratio | ${passes.map((p) => `pass ${p}`).join(' | ')} | target | met |`, `|---|${passes.map(() => '---|').join('')}---|---|`];
for (const [label, ratio, target] of checks) {
  const vals = passes.map(ratio);
  const met = vals.filter((v) => v <= target).length;
  out.push(`| ${label} | ${vals.map(f2).join(' | ')} | <= ${target} | ${met} of ${passes.length} |`);
}
out.push('', '| step | ' + ['pxb', 'borg', 'restic'].join(' | ') + ' |', '|---|---|---|---|');
for (const step of ['full', 'nochange', 'nochange2', 'nochange3', 'mutated', 'restore']) {
  const cell = (tool) => {
    const xs = passes.map((p) => get(p, tool, step)).filter(Boolean);
    return xs.length ? `${median(xs.map((x) => x.wall)).toFixed(2)} s, ${median(xs.map((x) => x.rss)).toFixed(0)} MiB` : '-';
  };
  out.push(`| ${step} | ${cell('pxb')} | ${cell('borg')} | ${cell('restic')} |`);
}
const repo = (tool) => median(passes.map((p) => get(p, tool, 'full')?.repo).filter((x) => x !== undefined));
out.push('', `repository after the full backup (MiB, median): pxb ${repo('pxb').toFixed(0)}, borg ${repo('borg').toFixed(0)}, restic ${repo('restic').toFixed(0)}`);
process.stdout.write(out.join('\n') + '\n');
