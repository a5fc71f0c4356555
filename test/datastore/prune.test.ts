import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import { BackupDir } from '../../ts/datastore/backup-dir.js';
import { parseBackupTime } from '../../ts/datastore/names.js';
import { computePruneInfo, isoWeek, prune, type KeepOptions } from '../../ts/datastore/prune.js';
import { OWNER, makeSnapshot, tempStore } from './maintenance-helpers.js';

interface Snap {
  name: string;
  time: number;
  finished: boolean;
  protected: boolean;
}

/** `2019-11-15T09:39:15Z`, optionally suffixed `!` (protected) or `?` (unfinished). */
function snaps(...specs: string[]): Snap[] {
  return specs.map((s) => {
    const name = s.replace(/[!?]$/, '');
    return { name, time: parseBackupTime(name), finished: !s.endsWith('?'), protected: s.endsWith('!') };
  });
}

function kept(list: Snap[], keep: KeepOptions): string[] {
  return computePruneInfo(list, keep, { timeZone: 'utc' })
    .filter((s) => s.mark !== 'remove')
    .map((s) => s.snapshot.name)
    .sort();
}

function removed(list: Snap[], keep: KeepOptions): string[] {
  return computePruneInfo(list, keep, { timeZone: 'utc' })
    .filter((s) => s.mark === 'remove')
    .map((s) => s.snapshot.name)
    .sort();
}

// Upstream vectors (proxmox-backup tests/prune.rs) and hand-computed cases from the spec's
// algorithm. Expectations are written out by hand, never produced by the code under test.
const HOURLY = snaps(
  '2019-11-15T09:39:15Z',
  '2019-11-15T10:49:15Z',
  '2019-11-15T10:59:15Z',
  '2019-11-15T11:39:15Z',
  '2019-11-15T11:49:15Z',
  '2019-11-15T11:59:15Z',
);
const PROTECTED = snaps('2019-11-15T09:39:15Z!', '2019-11-15T10:39:15Z', '2019-11-15T10:49:15Z', '2019-11-15T10:59:15Z!');
const SIMPLE2 = snaps(
  '2018-11-15T11:59:15Z',
  '2019-11-15T11:59:15Z',
  '2019-11-21T11:59:15Z',
  '2019-11-22T11:59:15Z',
  '2019-11-29T11:59:15Z',
  '2019-12-01T11:59:15Z',
  '2019-12-02T11:59:15Z',
  '2019-12-03T11:59:15Z',
  '2019-12-04T11:59:15Z',
);
const SIMPLE = snaps('2019-12-02T11:59:15Z', '2019-12-03T11:59:15Z', '2019-12-04T11:59:15Z', '2019-12-04T12:59:15Z');
const SIMPLE_BUT_NEWEST = ['2019-12-02T11:59:15Z', '2019-12-03T11:59:15Z', '2019-12-04T11:59:15Z'];
// 2019-12-29 is a Sunday of ISO week 2019-W52; 2019-12-30 (Monday) starts 2020-W01.
const ISO_BOUNDARY = snaps('2019-12-29T12:00:00Z', '2019-12-30T12:00:00Z', '2020-01-05T12:00:00Z', '2020-01-06T12:00:00Z');
const SAME_DAY = snaps('2020-06-01T10:05:00Z', '2020-06-01T10:40:00Z', '2020-06-01T11:10:00Z', '2020-06-01T11:50:00Z', '2020-06-01T12:30:00Z');
const GAPS = snaps('2020-01-15T00:00:00Z', '2020-03-10T00:00:00Z', '2020-03-20T00:00:00Z', '2021-07-01T00:00:00Z');
const UNFINISHED = snaps('2020-01-01T00:00:00Z', '2020-01-02T00:00:00Z?', '2020-01-03T00:00:00Z', '2020-01-04T00:00:00Z?', '2020-01-05T00:00:00Z?');
const DAILY_PROTECTED = snaps('2020-02-01T08:00:00Z', '2020-02-02T08:00:00Z!', '2020-02-03T08:00:00Z');

describe('computePruneInfo (PBS selection, UTC period keys)', () => {
  const table: Array<[string, Snap[], KeepOptions, { keep?: string[]; remove?: string[] }]> = [
    ['upstream hourly=3', HOURLY, { hourly: 3 }, { remove: ['2019-11-15T10:49:15Z', '2019-11-15T11:39:15Z', '2019-11-15T11:49:15Z'] }],
    ['upstream hourly=2', HOURLY, { hourly: 2 }, { keep: ['2019-11-15T10:59:15Z', '2019-11-15T11:59:15Z'] }],
    ['upstream protected, last=1', PROTECTED, { last: 1 }, { remove: ['2019-11-15T10:39:15Z'] }],
    ['upstream protected, hourly=1', PROTECTED, { hourly: 1 }, { remove: ['2019-11-15T10:39:15Z'] }],
    ['upstream simple2 daily=1', SIMPLE2, { daily: 1 }, { keep: ['2019-12-04T11:59:15Z'] }],
    ['upstream simple2 last=1 daily=1', SIMPLE2, { last: 1, daily: 1 }, { keep: ['2019-12-03T11:59:15Z', '2019-12-04T11:59:15Z'] }],
    ['upstream simple2 daily=1 weekly=1', SIMPLE2, { daily: 1, weekly: 1 }, { keep: ['2019-12-01T11:59:15Z', '2019-12-04T11:59:15Z'] }],
    [
      'upstream simple2 daily=1 weekly=1 monthly=1',
      SIMPLE2,
      { daily: 1, weekly: 1, monthly: 1 },
      { keep: ['2019-11-22T11:59:15Z', '2019-12-01T11:59:15Z', '2019-12-04T11:59:15Z'] },
    ],
    ['upstream simple2 monthly=1 yearly=1', SIMPLE2, { monthly: 1, yearly: 1 }, { keep: ['2018-11-15T11:59:15Z', '2019-12-04T11:59:15Z'] }],
    ['upstream simple last=4', SIMPLE, { last: 4 }, { remove: [] }],
    ['upstream simple last=3', SIMPLE, { last: 3 }, { remove: ['2019-12-02T11:59:15Z'] }],
    ['upstream simple last=2', SIMPLE, { last: 2 }, { remove: ['2019-12-02T11:59:15Z', '2019-12-03T11:59:15Z'] }],
    ['upstream simple last=1', SIMPLE, { last: 1 }, { remove: SIMPLE_BUT_NEWEST }],
    ['upstream simple last=0', SIMPLE, { last: 0 }, { keep: [] }],
    ['upstream simple last=2 daily=2', SIMPLE, { last: 2, daily: 2 }, { remove: [] }],
    ['upstream simple daily=3', SIMPLE, { daily: 3 }, { remove: ['2019-12-04T11:59:15Z'] }],
    ['upstream simple daily=2', SIMPLE, { daily: 2 }, { remove: ['2019-12-02T11:59:15Z', '2019-12-04T11:59:15Z'] }],
    ['upstream simple weekly=5', SIMPLE, { weekly: 5 }, { remove: SIMPLE_BUT_NEWEST }],
    ['upstream simple daily=1 weekly=5', SIMPLE, { daily: 1, weekly: 5 }, { remove: SIMPLE_BUT_NEWEST }],
    ['upstream simple monthly=6', SIMPLE, { monthly: 6 }, { remove: SIMPLE_BUT_NEWEST }],
    ['upstream simple yearly=7', SIMPLE, { yearly: 7 }, { remove: SIMPLE_BUT_NEWEST }],
    ['upstream simple weekly=5 monthly=6 yearly=7', SIMPLE, { weekly: 5, monthly: 6, yearly: 7 }, { remove: SIMPLE_BUT_NEWEST }],
    // hand-computed
    ['ISO week boundary weekly=2', ISO_BOUNDARY, { weekly: 2 }, { keep: ['2020-01-05T12:00:00Z', '2020-01-06T12:00:00Z'] }],
    ['ISO week boundary weekly=3', ISO_BOUNDARY, { weekly: 3 }, { keep: ['2019-12-29T12:00:00Z', '2020-01-05T12:00:00Z', '2020-01-06T12:00:00Z'] }],
    ['calendar (not ISO) year for yearly=2', ISO_BOUNDARY, { yearly: 2 }, { keep: ['2019-12-30T12:00:00Z', '2020-01-06T12:00:00Z'] }],
    ['last=2 then hourly=2 covers older hours only', SAME_DAY, { last: 2, hourly: 2 }, { keep: ['2020-06-01T10:40:00Z', '2020-06-01T11:50:00Z', '2020-06-01T12:30:00Z'] }],
    ['monthly=2 skips months without snapshots', GAPS, { monthly: 2 }, { keep: ['2020-03-20T00:00:00Z', '2021-07-01T00:00:00Z'] }],
    ['unfinished: newest kept partial, others removed', UNFINISHED, { last: 1 }, { keep: ['2020-01-03T00:00:00Z', '2020-01-05T00:00:00Z'] }],
    ['protected does not use up a period', DAILY_PROTECTED, { daily: 1 }, { keep: ['2020-02-02T08:00:00Z', '2020-02-03T08:00:00Z'] }],
    ['no option: nothing selected (compute_prune_info)', SIMPLE, {}, { keep: [] }],
  ];

  it.each(table)('%s', (_name, list, keep, expected) => {
    if (expected.keep) expect(kept(list, keep)).toEqual([...expected.keep].sort());
    if (expected.remove) expect(removed(list, keep)).toEqual([...expected.remove].sort());
  });

  it('returns marks and reasons newest first', () => {
    const r = computePruneInfo(SAME_DAY, { last: 2, hourly: 2 }, { timeZone: 'utc' });
    expect(r.map((s) => [s.snapshot.name.slice(11, 16), s.mark, s.reason])).toEqual([
      ['12:30', 'keep', 'keep-last'],
      ['11:50', 'keep', 'keep-last'],
      ['11:10', 'remove', 'not selected by any keep option'],
      ['10:40', 'keep', 'keep-hourly'],
      ['10:05', 'remove', 'older in a period kept by keep-hourly'],
    ]);
    const u = computePruneInfo(UNFINISHED, { last: 1 }, { timeZone: 'utc' });
    expect(u.map((s) => s.mark)).toEqual(['keep-partial', 'remove', 'keep', 'remove', 'remove']);
    expect(computePruneInfo(PROTECTED, {}, { timeZone: 'utc' }).map((s) => s.mark)).toEqual(['protected', 'remove', 'remove', 'protected']);
  });

  it('uses the local time zone by default, like strftime_local', () => {
    // 03:00Z on the 4th and 20:00Z on the 3rd are both on Dec 3rd in New York (UTC-5).
    const list = snaps('2019-12-03T20:00:00Z', '2019-12-04T03:00:00Z');
    const saved = process.env.TZ;
    process.env.TZ = 'America/New_York';
    try {
      expect(computePruneInfo(list, { daily: 2 }).map((s) => s.mark)).toEqual(['keep', 'remove']);
      expect(computePruneInfo(list, { daily: 2 }, { timeZone: 'utc' }).map((s) => s.mark)).toEqual(['keep', 'keep']);
    } finally {
      if (saved === undefined) delete process.env.TZ;
      else process.env.TZ = saved;
    }
  });

  it('computes ISO weeks (%G/%V)', () => {
    expect(isoWeek(2019, 12, 29)).toEqual({ year: 2019, week: 52 });
    expect(isoWeek(2019, 12, 30)).toEqual({ year: 2020, week: 1 });
    expect(isoWeek(2021, 1, 3)).toEqual({ year: 2020, week: 53 });
    expect(isoWeek(2021, 1, 4)).toEqual({ year: 2021, week: 1 });
    expect(isoWeek(2008, 12, 29)).toEqual({ year: 2009, week: 1 });
    expect(isoWeek(2024, 5, 7)).toEqual({ year: 2024, week: 19 });
  });

  it('rejects bad keep values', () => {
    expect(() => computePruneInfo(SIMPLE, { last: -1 })).toThrow(/keep-last must be a non-negative integer/);
    expect(() => computePruneInfo(SIMPLE, { daily: 1.5 })).toThrow(/keep-daily/);
  });
});

describe('prune on a datastore', () => {
  const g = new BackupGroup('host', 'elsa');
  const times = ['2019-12-02T11:59:15Z', '2019-12-03T11:59:15Z', '2019-12-04T11:59:15Z', '2019-12-04T12:59:15Z'].map(parseBackupTime);
  const listed = async (ds: Awaited<ReturnType<typeof tempStore>>) =>
    (await ds.listSnapshots(g, { includeUnfinished: true })).map((s) => s.dir.timeString);

  it('dry-run removes nothing; a real run removes oldest first and never a protected snapshot', async () => {
    const ds = await tempStore();
    for (const t of times) await makeSnapshot(ds, g, t);
    await ds.setProtected(new BackupDir(g, times[0]), true);

    const dry = await prune(ds, g, { daily: 1 }, { dryRun: true });
    expect(dry.entries.map((e) => [e.dir.timeString, e.mark, e.keep, e.removed])).toEqual([
      ['2019-12-02T11:59:15Z', 'protected', true, false],
      ['2019-12-03T11:59:15Z', 'remove', false, false],
      ['2019-12-04T11:59:15Z', 'remove', false, false],
      ['2019-12-04T12:59:15Z', 'keep', true, false],
    ]);
    expect(await listed(ds)).toHaveLength(4);

    const real = await prune(ds, g, { daily: 1 });
    expect(real.entries.filter((e) => e.removed).map((e) => e.dir.timeString)).toEqual(['2019-12-03T11:59:15Z', '2019-12-04T11:59:15Z']);
    expect(await listed(ds)).toEqual(['2019-12-02T11:59:15Z', '2019-12-04T12:59:15Z']);
  });

  it('keeps everything without keep options, and keeps the newest unfinished snapshot', async () => {
    const ds = await tempStore();
    for (const t of times.slice(0, 3)) await makeSnapshot(ds, g, t);
    // an unfinished snapshot dir (no manifest) left by a dead writer
    await mkdir(path.join(ds.groupPath(g), '2019-12-04T12:59:15Z'));
    await writeFile(path.join(ds.groupPath(g), '2019-12-04T12:59:15Z', 'root.pxar.didx'), Buffer.alloc(4096));

    const all = await prune(ds, g, {});
    expect(all.keepAll).toBe(true);
    expect(all.entries.every((e) => e.keep && !e.removed)).toBe(true);
    expect(await listed(ds)).toHaveLength(4);

    const r = await prune(ds, g, { last: 1 });
    expect(r.entries.map((e) => [e.dir.timeString, e.mark])).toEqual([
      ['2019-12-02T11:59:15Z', 'remove'],
      ['2019-12-03T11:59:15Z', 'remove'],
      ['2019-12-04T11:59:15Z', 'keep'],
      ['2019-12-04T12:59:15Z', 'keep-partial'],
    ]);
    expect(await listed(ds)).toEqual(['2019-12-04T11:59:15Z', '2019-12-04T12:59:15Z']);
  });

  it('cannot remove snapshots while a backup of the group runs, and says why', async () => {
    const ds = await tempStore();
    for (const t of times.slice(0, 2)) await makeSnapshot(ds, g, t);
    const writer = await ds.beginBackup(g.ns, g, times[3], { owner: OWNER });
    try {
      const r = await prune(ds, g, { last: 1 });
      const failed = r.entries.filter((e) => e.error);
      expect(failed.map((e) => e.dir.timeString)).toEqual(['2019-12-02T11:59:15Z']);
      expect(failed[0].error).toMatch(/locked by another backup/);
    } finally {
      await writer.abort();
    }
    expect(await listed(ds)).toEqual(['2019-12-02T11:59:15Z', '2019-12-03T11:59:15Z']);
  });

  it('refuses an unknown group', async () => {
    const ds = await tempStore();
    await expect(prune(ds, new BackupGroup('vm', '100'), { last: 1 })).rejects.toThrow(/backup group vm\/100 does not exist/);
  });
});
