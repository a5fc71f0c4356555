/**
 * Prune: which snapshots of a backup group to keep, PBS's `compute_prune_info` (spec
 * gc-prune-verify.md §2), and their removal.
 *
 * Invariants:
 *  - Snapshots are considered newest first. The newest unfinished snapshot, if it is newer
 *    than every finished one, is `keep-partial`; other unfinished ones are removed.
 *  - Options apply in the fixed order last, hourly, daily, weekly, monthly, yearly. Each keeps
 *    the newest snapshot of up to N periods (period keys in the local time zone, like
 *    `strftime_local`: `%Y/%m/%d/%H`, `%Y/%m/%d`, `%G/%V`, `%Y/%m`, `%Y`; keep-last: every
 *    snapshot is its own period), skipping periods already kept by an earlier option and
 *    stopping at the first snapshot of a period beyond N. Periods without snapshots do not count.
 *  - A protected snapshot is always kept (`protected`), whatever the options say.
 *  - `prune` with no option > 0 keeps everything (PBS API semantics); `computePruneInfo`
 *    itself follows `compute_prune_info` exactly (an explicit `last: 0` selects nothing).
 *  - Removal goes oldest first through `DataStore.removeSnapshot` (group lock: impossible
 *    while a backup of the group runs); a failure is reported per snapshot and the rest
 *    continues. Chunks are only freed by a later garbage collection.
 */
import type { BackupDir } from './backup-dir.js';
import type { BackupGroup } from './backup-group.js';
import type { DataStore } from './datastore.js';

export const KEEP_OPTIONS = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
export type KeepOption = (typeof KEEP_OPTIONS)[number];
/** Number of periods to keep per option; unset (or 0 in `prune`) = option not used. */
export type KeepOptions = Partial<Record<KeepOption, number>>;

export type PruneMark = 'keep' | 'keep-partial' | 'protected' | 'remove';
export type PruneTimeZone = 'local' | 'utc';

export interface PruneCandidate {
  /** Backup time, epoch seconds. */
  time: number;
  /** Has a manifest. */
  finished: boolean;
  protected: boolean;
}

export interface PruneSelection<T extends PruneCandidate> {
  snapshot: T;
  mark: PruneMark;
  /** Why: `keep-daily`, `protected`, `unfinished`, … */
  reason: string;
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

/** Calendar fields of `time` in the chosen zone. */
function fields(time: number, tz: PruneTimeZone): { y: number; m: number; d: number; h: number } {
  const t = new Date(time * 1000);
  return tz === 'utc'
    ? { y: t.getUTCFullYear(), m: t.getUTCMonth() + 1, d: t.getUTCDate(), h: t.getUTCHours() }
    : { y: t.getFullYear(), m: t.getMonth() + 1, d: t.getDate(), h: t.getHours() };
}

/** ISO 8601 week-based year and week number (`%G`, `%V`) of a calendar date. */
export function isoWeek(y: number, m: number, d: number): { year: number; week: number } {
  const day = Math.floor(Date.UTC(y, m - 1, d) / 86400000);
  const dow = ((new Date(day * 86400000).getUTCDay() + 6) % 7) + 1; // Monday 1 … Sunday 7
  const thursday = day + 4 - dow; // the Thursday of this ISO week decides its year
  const year = new Date(thursday * 86400000).getUTCFullYear();
  const jan1 = Math.floor(Date.UTC(year, 0, 1) / 86400000);
  return { year, week: Math.floor((thursday - jan1) / 7) + 1 };
}

/** The period a snapshot at `time` belongs to for `option` (PBS's strftime formats). */
export function periodKey(option: KeepOption, time: number, tz: PruneTimeZone = 'local'): string {
  if (option === 'last') return String(time);
  const { y, m, d, h } = fields(time, tz);
  switch (option) {
    case 'hourly':
      return `${pad(y, 4)}/${pad(m)}/${pad(d)}/${pad(h)}`;
    case 'daily':
      return `${pad(y, 4)}/${pad(m)}/${pad(d)}`;
    case 'weekly': {
      const w = isoWeek(y, m, d);
      return `${pad(w.year, 4)}/${pad(w.week)}`;
    }
    case 'monthly':
      return `${pad(y, 4)}/${pad(m)}`;
    case 'yearly':
      return pad(y, 4);
  }
}

/** Check the keep options: every given value is an integer ≥ 0. */
export function validateKeepOptions(keep: KeepOptions): void {
  for (const [k, v] of Object.entries(keep)) {
    if (!(KEEP_OPTIONS as readonly string[]).includes(k)) throw new Error(`unknown prune option keep-${k}`);
    if (v !== undefined && (!Number.isSafeInteger(v) || v < 0)) throw new Error(`keep-${k} must be a non-negative integer, got ${String(v)}`);
  }
}

/** True if some option keeps at least one period (PBS `keeps_something`). */
export function keepsSomething(keep: KeepOptions): boolean {
  return KEEP_OPTIONS.some((o) => (keep[o] ?? 0) > 0);
}

/**
 * PBS `compute_prune_info`: a mark for every snapshot, newest first. `list` may be in any
 * order; snapshot times must be distinct (they are, within a group).
 */
export function computePruneInfo<T extends PruneCandidate>(
  list: readonly T[],
  keep: KeepOptions,
  options: { timeZone?: PruneTimeZone } = {},
): Array<PruneSelection<T>> {
  validateKeepOptions(keep);
  const tz = options.timeZone ?? 'local';
  const sorted = [...list].sort((a, b) => b.time - a.time);
  const marks = new Map<T, { mark: PruneMark; reason: string }>();

  // Unfinished snapshots: keep only the newest, and only if nothing finished is newer.
  let keepUnfinished = true;
  for (const s of sorted) {
    if (s.finished) {
      keepUnfinished = false;
      continue;
    }
    marks.set(s, keepUnfinished ? { mark: 'keep-partial', reason: 'newest, unfinished' } : { mark: 'remove', reason: 'unfinished' });
    keepUnfinished = false;
  }

  for (const option of KEEP_OPTIONS) {
    const n = keep[option];
    if (n === undefined) continue;
    const already = new Set<string>();
    for (const s of sorted) if (marks.get(s)?.mark === 'keep') already.add(periodKey(option, s.time, tz));
    const included = new Set<string>();
    for (const s of sorted) {
      if (marks.has(s)) continue;
      if (s.protected) {
        marks.set(s, { mark: 'protected', reason: 'protected' });
        continue;
      }
      const key = periodKey(option, s.time, tz);
      if (already.has(key)) continue;
      if (!included.has(key)) {
        if (included.size >= n) break;
        included.add(key);
        marks.set(s, { mark: 'keep', reason: `keep-${option}` });
      } else {
        marks.set(s, { mark: 'remove', reason: `older in a period kept by keep-${option}` });
      }
    }
  }

  return sorted.map((s) => {
    if (s.protected) return { snapshot: s, mark: 'protected' as const, reason: 'protected' };
    const m = marks.get(s);
    return { snapshot: s, mark: m?.mark ?? 'remove', reason: m?.reason ?? 'not selected by any keep option' };
  });
}

export interface PruneOptions {
  /** Only compute the decisions (default false). */
  dryRun?: boolean;
  /** Time zone of the period keys (default: local, as PBS). */
  timeZone?: PruneTimeZone;
}

export interface PruneEntry {
  dir: BackupDir;
  mark: PruneMark;
  /** False only for `remove`. */
  keep: boolean;
  protected: boolean;
  reason: string;
  /** Removed by this run. */
  removed: boolean;
  /** Why the removal failed (the snapshot is still there). */
  error?: string;
}

export interface PruneResult {
  group: BackupGroup;
  /** No option > 0 was given: everything is kept. */
  keepAll: boolean;
  dryRun: boolean;
  /** Every snapshot of the group (finished or not), oldest first. */
  entries: PruneEntry[];
}

/** Prune one backup group: compute the marks and (unless dry-run) remove, oldest first. */
export async function prune(ds: DataStore, group: BackupGroup, keep: KeepOptions, options: PruneOptions = {}): Promise<PruneResult> {
  validateKeepOptions(keep);
  const dryRun = !!options.dryRun;
  const keepAll = !keepsSomething(keep);
  const snapshots = (await ds.listSnapshots(group, { includeUnfinished: true })).map((s) => ({
    time: s.dir.time,
    finished: s.finished,
    protected: s.protected,
    dir: s.dir,
  }));
  if (snapshots.length === 0 && !(await ds.listGroups(group.ns)).some((g) => g.equals(group))) {
    throw new Error(`backup group ${group} does not exist`);
  }
  const marks = computePruneInfo(snapshots, keep, { timeZone: options.timeZone }).reverse();
  const entries: PruneEntry[] = [];
  for (const { snapshot, mark, reason } of marks) {
    const keepIt = keepAll || mark !== 'remove';
    const entry: PruneEntry = {
      dir: snapshot.dir,
      mark: keepAll && mark === 'remove' ? 'keep' : mark,
      keep: keepIt,
      protected: mark === 'protected',
      reason: keepAll && mark === 'remove' ? 'no keep option given: keeping everything' : reason,
      removed: false,
    };
    if (!keepIt && !dryRun) {
      try {
        await ds.removeSnapshot(snapshot.dir);
        entry.removed = true;
      } catch (e) {
        entry.error = e instanceof Error ? e.message : String(e);
      }
    }
    entries.push(entry);
  }
  return { group, keepAll, dryRun, entries };
}
