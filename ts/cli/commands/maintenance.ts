/**
 * Datastore maintenance commands: `pxb prune`, `pxb garbage-collect`, `pxb verify`,
 * `pxb namespace create|list|delete`, and the snapshot subcommands `forget`,
 * `protected show|update`, `notes show|update` (registered on the `snapshot` command object
 * by `registerSnapshotMaintenance`). JSON output uses PBS's API field names.
 */
import type { Command } from 'commander';
import { resolveSnapshot } from '../../client/restore.js';
import { BackupDir } from '../../datastore/backup-dir.js';
import { BackupGroup } from '../../datastore/backup-group.js';
import type { DataStore } from '../../datastore/datastore.js';
import { garbageCollect, gcStatusToJSON, readGcStatus, type GcResult } from '../../datastore/gc.js';
import { BackupNamespace, MAX_NAMESPACE_DEPTH } from '../../datastore/namespace.js';
import { KEEP_OPTIONS, prune, type KeepOptions, type PruneResult } from '../../datastore/prune.js';
import { verify, type VerifyResult, type VerifyTarget } from '../../datastore/verify.js';
import { formatBytes, printJSON, ProgressLine, table, UsageError, type OutputFormat } from '../output.js';
import { outputFormatOption, type CliContext } from '../main.js';
import { openAnyRepository, type Repository } from '../repository.js';
import type { PbsClient } from '../../client/remote/client.js';
import type { SnapshotRef } from '../../client/remote/backup-session.js';

const nsOf = (o: { ns?: string }) => (o.ns ? BackupNamespace.parse(o.ns) : BackupNamespace.root);

function intOption(v: string | undefined, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${name} must be an integer from ${min} to ${max === Number.MAX_SAFE_INTEGER ? '…' : max}, got ${JSON.stringify(v)}`);
  }
  return n;
}

function parseBool(v: string): boolean {
  const s = v.toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(s)) return true;
  if (['false', '0', 'no', 'off'].includes(s)) return false;
  throw new UsageError(`expected true or false, got ${JSON.stringify(v)}`);
}

/** A local datastore, or the server a command is run against (maintenance through the API). */
async function open(o: { repository?: string; fingerprint?: string }, env: NodeJS.ProcessEnv): Promise<Repository> {
  return openAnyRepository(o, env, false);
}

const nsParam = (ns: BackupNamespace) => (ns.isRoot ? undefined : ns.name);

/** `<type>/<id>/<time>` (or `<type>/<id>` = latest, when allowed) on a server. */
async function remoteSnapshot(client: PbsClient, spec: string, ns: BackupNamespace, latestOk: boolean): Promise<{ dir: BackupDir; ref: SnapshotRef }> {
  let dir: BackupDir;
  if (spec.split('/').length === 2 && latestOk) {
    const group = BackupGroup.parse(spec, ns);
    const snaps = await client.listSnapshots({ ns: nsParam(ns), backupType: group.type, backupId: group.id });
    if (!snaps.length) throw new Error(`backup group ${group} has no snapshot`);
    dir = new BackupDir(group, Math.max(...snaps.map((x) => x['backup-time'])));
  } else {
    try {
      dir = BackupDir.parse(spec, ns);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  return { dir, ref: { ns: nsParam(ns), backupType: dir.group.type, backupId: dir.group.id, backupTime: dir.time } };
}

/** PBS snapshot/group reference fields (`ns` only outside the root namespace). */
function snapshotFields(dir: BackupDir): Record<string, unknown> {
  const g = dir.group;
  return { ...(g.ns.isRoot ? {} : { ns: g.ns.name }), 'backup-type': g.type, 'backup-id': g.id, 'backup-time': dir.time };
}

/** An existing snapshot given exactly as `<type>/<id>/<time>` (finished or not). */
async function exactSnapshot(ds: DataStore, spec: string, ns: BackupNamespace): Promise<BackupDir> {
  let dir: BackupDir;
  try {
    dir = BackupDir.parse(spec, ns);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const snaps = await ds.listSnapshots(dir.group, { includeUnfinished: true });
  if (!snaps.some((s) => s.dir.equals(dir))) throw new Error(`snapshot ${dir} does not exist`);
  return dir;
}

function repoOptions(cmd: Command, withNs = true): Command {
  cmd.option('--repository <repo>', 'datastore path or [[user@realm!token@]host[:port]:]store (default: $PBS_REPOSITORY or ~/.local/share/pxb/datastore)');
  cmd.option('--fingerprint <fp>', 'server certificate fingerprint (default: $PBS_FINGERPRINT)');
  if (withNs) cmd.option('--ns <namespace>', 'namespace (a/b/c)');
  return cmd.addOption(outputFormatOption());
}

// ---- prune ------------------------------------------------------------------------------

function printPrune(format: OutputFormat, r: PruneResult): void {
  if (format !== 'text') {
    printJSON(format, r.entries.map((e) => ({ ...snapshotFields(e.dir), keep: e.keep, protected: e.protected })));
    return;
  }
  if (r.keepAll) process.stdout.write('no keep options given: keeping everything\n');
  process.stdout.write(
    table(
      ['snapshot', 'action', 'reason'],
      r.entries.map((e) => [
        `${e.dir.group.type}/${e.dir.group.id}/${e.dir.timeString}`,
        e.error ? 'remove failed' : e.keep ? e.mark : r.dryRun ? 'remove (dry run)' : 'removed',
        e.error ?? e.reason,
      ]),
    ),
  );
}

// ---- garbage collection -------------------------------------------------------------------

function printGc(format: OutputFormat, r: GcResult): void {
  const s = r.status;
  if (format !== 'text') {
    printJSON(format, gcStatusToJSON(s));
    return;
  }
  const lines = [`Removed garbage: ${formatBytes(s.removedBytes)}`, `Removed chunks: ${s.removedChunks}`];
  if (s.removedBad) lines.push(`Removed bad chunks: ${s.removedBad}`);
  if (s.stillBad) lines.push(`Leftover bad chunks: ${s.stillBad}`);
  if (s.pendingBytes) lines.push(`Pending removals: ${formatBytes(s.pendingBytes)} (in ${s.pendingChunks} chunks)`);
  lines.push(`Original data usage: ${formatBytes(s.indexDataBytes)}`);
  if (s.indexDataBytes > 0) {
    lines.push(`On-Disk usage: ${formatBytes(s.diskBytes)} (${((s.diskBytes * 100) / s.indexDataBytes).toFixed(2)}%)`);
  } else {
    lines.push(`On-Disk usage: ${formatBytes(s.diskBytes)}`);
  }
  lines.push(`On-Disk chunks: ${s.diskChunks}`);
  if (s.diskBytes > 0) lines.push(`Deduplication factor: ${(s.indexDataBytes / s.diskBytes).toFixed(2)}`);
  if (s.diskChunks > 0) lines.push(`Average chunk size: ${formatBytes(Math.round(s.diskBytes / s.diskChunks))}`);
  if (r.missingChunks) lines.push(`Missing chunks (referenced, not on disk): ${r.missingChunks}`);
  lines.push(`Duration: ${r.seconds.toFixed(2)} s`);
  process.stdout.write(lines.join('\n') + '\n');
}

// ---- verify ------------------------------------------------------------------------------

function printVerify(format: OutputFormat, r: VerifyResult): void {
  if (format !== 'text') {
    printJSON(format, {
      upid: r.upid,
      snapshots: r.snapshots.map((s) => ({ ...snapshotFields(s.dir), state: s.state, errors: s.errors })),
      failed: r.failed,
      'verified-chunks': r.verifiedChunks,
      'corrupt-chunks': r.corruptChunks,
      'renamed-chunks': r.renamedChunks,
      'read-bytes': r.readBytes,
      'decoded-bytes': r.decodedBytes,
    });
    return;
  }
  process.stdout.write(table(['snapshot', 'state'], r.snapshots.map((s) => [s.dir.toString(), s.state])));
  for (const s of r.snapshots) for (const e of s.errors) process.stdout.write(`${s.dir}: ${e}\n`);
  process.stdout.write(
    `verified ${r.verifiedChunks} chunks (${formatBytes(r.readBytes)} read, ${formatBytes(r.decodedBytes)} decoded), ` +
      `${r.corruptChunks} corrupt or missing, in ${r.seconds.toFixed(2)} s\n`,
  );
}

export function registerMaintenance(program: Command, ctx: CliContext): void {
  const pruneCmd = program
    .command('prune')
    .description('remove snapshots of a backup group according to keep options (PBS selection)')
    .argument('<group>', '<type>/<id>');
  for (const k of KEEP_OPTIONS) pruneCmd.option(`--keep-${k} <N>`, `keep the newest snapshot of the last N ${k === 'last' ? 'snapshots' : `${k} periods`}`);
  pruneCmd.option('--dry-run', 'only show what would be removed');
  repoOptions(pruneCmd).action(async (groupSpec: string, o) => {
    const format = o.outputFormat as OutputFormat;
    let group: BackupGroup;
    try {
      group = BackupGroup.parse(groupSpec, nsOf(o));
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    const keep: KeepOptions = {};
    for (const k of KEEP_OPTIONS) {
      const camel = `keep${k[0].toUpperCase()}${k.slice(1)}`;
      const v = intOption(o[camel] as string | undefined, `--keep-${k}`, 1);
      if (v !== undefined) keep[k] = v;
    }
    const repo = await open(o, ctx.env);
    if (repo.kind === 'remote') {
      const list = await repo.client.prune({ ns: nsParam(group.ns), backupType: group.type, backupId: group.id }, keep, !!o.dryRun);
      if (format !== 'text') return printJSON(format, list);
      process.stdout.write(table(['snapshot', 'decision'], list.map((e) => [new BackupDir(group, e['backup-time']).toString(), e.keep ? (e.protected ? 'keep (protected)' : 'keep') : o.dryRun ? 'would remove' : 'removed'])));
      return;
    }
    const ds = repo.ds;
    const r = await prune(ds, group, keep, { dryRun: !!o.dryRun });
    printPrune(format, r);
    const failed = r.entries.filter((e) => e.error);
    if (failed.length) throw new Error(`${failed.length} snapshot(s) could not be removed: ${failed[0].error}`);
  });

  repoOptions(
    program
      .command('garbage-collect')
      .description('remove chunks no snapshot references any more (mark and sweep by atime)')
      .option('--gc-atime-cutoff <minutes>', 'keep unreferenced chunks used within this many minutes (1..2880, default 1445)'),
    false,
  ).action(async (o) => {
    const format = o.outputFormat as OutputFormat;
    const minutes = intOption(o.gcAtimeCutoff as string | undefined, '--gc-atime-cutoff', 1, 2880);
    const repo = await open(o, ctx.env);
    if (repo.kind === 'remote') {
      if (minutes !== undefined) throw new UsageError('--gc-atime-cutoff applies to local datastores only');
      const upid = await repo.client.garbageCollect();
      const st = await repo.client.status();
      if (format !== 'text') return printJSON(format, { upid, status: st['gc-status'] ?? null });
      process.stdout.write(`garbage collection finished: ${upid}\n${JSON.stringify(st['gc-status'] ?? {}, null, 2)}\n`);
      return;
    }
    const ds = repo.ds;
    const progress = ProgressLine.forStderr(format);
    const r = await garbageCollect(ds, {
      cutoffSeconds: minutes === undefined ? undefined : minutes * 60,
      signal: ctx.signal,
      onProgress: (p) => progress.update(`${p.phase === 'mark' ? 'marking' : 'sweeping'}: ${p.done}/${p.total}`),
      onWarning: (m) => {
        progress.clear();
        process.stderr.write(`warning: ${m}\n`);
      },
    });
    progress.clear();
    printGc(format, r);
  });

  repoOptions(program.command('change-owner').description('give a backup group a new owner (auth id, e.g. user@pbs!token)').argument('<group>', 'host/<id>').argument('<new-owner>', 'auth id')).action(
    async (groupSpec: string, newOwner: string, o) => {
      let group: BackupGroup;
      try {
        group = BackupGroup.parse(groupSpec, nsOf(o));
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const repo = await open(o, ctx.env);
      if (repo.kind === 'remote') await repo.client.changeOwner({ ns: nsParam(group.ns), backupType: group.type, backupId: group.id }, newOwner);
      else await repo.ds.setOwner(group, newOwner);
      if ((o.outputFormat as OutputFormat) !== 'text') return printJSON(o.outputFormat as OutputFormat, { group: group.toString(), owner: newOwner });
      process.stdout.write(`owner of ${group}: ${newOwner}\n`);
    },
  );

  repoOptions(program.command('status').description('space of the datastore: total, used, available (and the last garbage collection)'), false).action(async (o) => {
    const format = o.outputFormat as OutputFormat;
    const repo = await open(o, ctx.env);
    let usage: { total: number; used: number; avail: number };
    let gc: Record<string, unknown> | null;
    if (repo.kind === 'remote') {
      const st = await repo.client.status();
      usage = { total: Number(st.total), used: Number(st.used), avail: Number(st.avail) };
      gc = (st['gc-status'] as Record<string, unknown> | undefined) ?? null;
    } else {
      usage = await repo.ds.usage();
      const g = await readGcStatus(repo.ds).catch(() => null);
      gc = g ? gcStatusToJSON(g) : null;
    }
    if (format !== 'text') return printJSON(format, { ...usage, 'gc-status': gc ?? undefined });
    const pct = usage.total > 0 ? ` (${((100 * usage.used) / usage.total).toFixed(1)} %)` : '';
    process.stdout.write(table(['total', 'used', 'avail'], [[formatBytes(usage.total), `${formatBytes(usage.used)}${pct}`, formatBytes(usage.avail)]]));
  });

  repoOptions(
    program
      .command('verify')
      .description('re-read and check every chunk of a snapshot, a group, or all snapshots (--all)')
      .argument('[target]', '<type>/<id> (group) or <type>/<id>/<time> (snapshot)')
      .option('--all', 'verify every snapshot below --ns (default: the whole datastore)')
      .option('--max-depth <n>', 'with --all: namespace levels below --ns to include')
      .option('--ignore-verified', 'skip snapshots that were verified before')
      .option('--outdated-after <days>', 'with --ignore-verified: re-verify after this many days'),
  ).action(async (spec: string | undefined, o) => {
    const format = o.outputFormat as OutputFormat;
    const ns = nsOf(o);
    if (spec && o.all) throw new UsageError('give either a snapshot/group or --all, not both');
    if (!spec && !o.all) throw new UsageError('nothing to verify: give <type>/<id>[/<time>] or --all');
    const repo = await open(o, ctx.env);
    if (repo.kind === 'remote') {
      let t: { ns?: string; backupType?: string; backupId?: string; backupTime?: number } = { ns: nsParam(ns) };
      if (spec) {
        const parts = spec.split('/');
        if (parts.length === 2) {
          const g = BackupGroup.parse(spec, ns);
          t = { ...t, backupType: g.type, backupId: g.id };
        } else {
          t = (await remoteSnapshot(repo.client, spec, ns, false)).ref;
        }
      }
      const upid = await repo.client.verify(t);
      const snaps = await repo.client.listSnapshots({ ns: nsParam(ns), backupType: t.backupType, backupId: t.backupId });
      const rows = snaps.filter((x) => t.backupTime === undefined || x['backup-time'] === t.backupTime);
      const failed = rows.filter((x) => x.verification?.state === 'failed').length;
      if (format !== 'text') printJSON(format, { upid, snapshots: rows.map((x) => ({ 'backup-type': x['backup-type'], 'backup-id': x['backup-id'], 'backup-time': x['backup-time'], state: x.verification?.state })), failed });
      else process.stdout.write(table(['snapshot', 'state'], rows.map((x) => [`${x['backup-type']}/${x['backup-id']}/${new BackupDir(new BackupGroup(x['backup-type'], x['backup-id'], ns), x['backup-time']).timeString}`, x.verification?.state ?? '-'])));
      if (failed) throw new Error(`verification failed for ${failed} snapshot(s)`);
      return;
    }
    const ds = repo.ds;
    let target: VerifyTarget;
    if (o.all) {
      target = { all: true, ns, maxDepth: intOption(o.maxDepth as string | undefined, '--max-depth', 0, MAX_NAMESPACE_DEPTH) };
    } else if (spec!.split('/').length === 2) {
      try {
        target = { group: BackupGroup.parse(spec!, ns) };
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
    } else {
      target = { snapshot: await exactSnapshot(ds, spec!, ns) };
    }
    const progress = ProgressLine.forStderr(format);
    const r = await verify(ds, target, {
      signal: ctx.signal,
      ignoreVerified: !!o.ignoreVerified,
      outdatedAfterDays: intOption(o.outdatedAfter as string | undefined, '--outdated-after', 0),
      onProgress: (p) => progress.update(`verifying ${p.snapshot} (${p.done}/${p.total})`),
    });
    progress.clear();
    printVerify(format, r);
    if (r.failed) throw new Error(`verification failed for ${r.failed} snapshot(s)`);
  });

  const nsCmd = program.command('namespace').description('namespace management');
  repoOptions(nsCmd.command('create').description('create a namespace (its parent must exist)').argument('<ns>', 'a/b/c'), false).action(
    async (name: string, o) => {
      const ns = parseNamespace(name);
      if (ns.isRoot) throw new UsageError('the root namespace always exists');
      const repo = await open(o, ctx.env);
      if (repo.kind === 'remote') {
        await repo.client.createNamespace(ns.components[ns.components.length - 1], ns.parent?.isRoot ? undefined : ns.parent?.name);
      } else if (!(await repo.ds.createNamespace(ns))) throw new Error(`namespace ${ns} already exists`);
      const format = o.outputFormat as OutputFormat;
      if (format !== 'text') printJSON(format, { ns: ns.name });
      else process.stdout.write(`created namespace ${ns}\n`);
    },
  );
  repoOptions(
    nsCmd
      .command('list')
      .description('list namespaces below --ns (default: all)')
      .option('--max-depth <n>', 'levels below --ns to include'),
  ).action(async (o) => {
    const repo = await open(o, ctx.env);
    const depth = intOption(o.maxDepth as string | undefined, '--max-depth', 0, MAX_NAMESPACE_DEPTH);
    const list =
      repo.kind === 'remote'
        ? (await repo.client.listNamespaces({ parent: nsParam(nsOf(o)), maxDepth: depth })).map((n) => BackupNamespace.parse(n.ns))
        : await repo.ds.listNamespaces(nsOf(o), depth);
    const format = o.outputFormat as OutputFormat;
    if (format !== 'text') printJSON(format, list.map((n) => ({ ns: n.name })));
    else process.stdout.write(list.map((n) => `${n}\n`).join(''));
  });
  repoOptions(
    nsCmd
      .command('delete')
      .description('delete a namespace and its children; with groups only with --delete-groups')
      .argument('<ns>', 'a/b/c')
      .option('--delete-groups', 'also delete every backup group (and snapshot) in it'),
    false,
  ).action(async (name: string, o) => {
    const ns = parseNamespace(name);
    if (ns.isRoot) throw new UsageError('the root namespace cannot be deleted');
    const repo = await open(o, ctx.env);
    if (repo.kind === 'remote') {
      await repo.client.deleteNamespace(ns.name, !!o.deleteGroups);
      const f = o.outputFormat as OutputFormat;
      if (f !== 'text') printJSON(f, { ns: ns.name });
      else process.stdout.write(`deleted namespace ${ns}\n`);
      return;
    }
    const ds = repo.ds;
    if (!(await ds.namespaceExists(ns))) throw new Error(`namespace ${ns} does not exist`);
    const r = await ds.removeNamespace(ns, { deleteGroups: !!o.deleteGroups });
    const format = o.outputFormat as OutputFormat;
    if (format !== 'text') {
      printJSON(format, { 'removed-namespaces': r.removedNamespaces.map((n) => n.name), 'removed-groups': r.removedGroups, 'removed-snapshots': r.removedSnapshots });
    } else {
      process.stdout.write(`deleted namespace ${ns} (${r.removedNamespaces.length} namespace(s), ${r.removedGroups} group(s), ${r.removedSnapshots} snapshot(s))\n`);
    }
  });
}

function parseNamespace(name: string): BackupNamespace {
  try {
    return BackupNamespace.parse(name);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** `forget`, `protected show|update`, `notes show|update` under the `snapshot` command. */
export function registerSnapshotMaintenance(snapshot: Command, ctx: CliContext): void {
  repoOptions(snapshot.command('forget').description('remove a snapshot (not protected ones)').argument('<snapshot>', '<type>/<id>/<time>')).action(
    async (spec: string, o) => {
      const repo = await open(o, ctx.env);
      let dir: BackupDir;
      if (repo.kind === 'remote') {
        const r = await remoteSnapshot(repo.client, spec, nsOf(o), false);
        await repo.client.forgetSnapshot(r.ref);
        dir = r.dir;
      } else {
        dir = await exactSnapshot(repo.ds, spec, nsOf(o));
        await repo.ds.removeSnapshot(dir);
      }
      const format = o.outputFormat as OutputFormat;
      if (format !== 'text') printJSON(format, snapshotFields(dir));
      else process.stdout.write(`removed snapshot ${dir}\n`);
    },
  );

  const prot = snapshot.command('protected').description('snapshot protection (protected snapshots are never pruned)');
  repoOptions(prot.command('show').argument('<snapshot>', '<type>/<id>[/<time>]')).action(async (spec: string, o) => {
    const repo = await open(o, ctx.env);
    let dir: BackupDir;
    let on: boolean;
    if (repo.kind === 'remote') {
      const r = await remoteSnapshot(repo.client, spec, nsOf(o), true);
      dir = r.dir;
      on = await repo.client.getProtected(r.ref);
    } else {
      dir = await resolveSnapshot(repo.ds, spec, nsOf(o));
      on = await repo.ds.isProtected(dir);
    }
    const format = o.outputFormat as OutputFormat;
    if (format !== 'text') printJSON(format, { ...snapshotFields(dir), protected: on });
    else process.stdout.write(`${on}\n`);
  });
  repoOptions(prot.command('update').argument('<snapshot>', '<type>/<id>/<time>').argument('<protected>', 'true or false')).action(
    async (spec: string, value: string, o) => {
      const on = parseBool(value);
      const repo = await open(o, ctx.env);
      let dir: BackupDir;
      if (repo.kind === 'remote') {
        const r = await remoteSnapshot(repo.client, spec, nsOf(o), false);
        dir = r.dir;
        await repo.client.setProtected(r.ref, on);
      } else {
        dir = await exactSnapshot(repo.ds, spec, nsOf(o));
        await repo.ds.setProtected(dir, on);
      }
      const format = o.outputFormat as OutputFormat;
      if (format !== 'text') printJSON(format, { ...snapshotFields(dir), protected: on });
      else process.stdout.write(`snapshot ${dir} is ${on ? 'now' : 'no longer'} protected\n`);
    },
  );

  const notes = snapshot.command('notes').description('snapshot notes (manifest unprotected.notes)');
  repoOptions(notes.command('show').argument('<snapshot>', '<type>/<id>[/<time>]')).action(async (spec: string, o) => {
    const repo = await open(o, ctx.env);
    let text: string;
    if (repo.kind === 'remote') {
      text = await repo.client.getNotes((await remoteSnapshot(repo.client, spec, nsOf(o), true)).ref);
    } else {
      text = (await repo.ds.getSnapshotNotes(await resolveSnapshot(repo.ds, spec, nsOf(o)))) ?? '';
    }
    const format = o.outputFormat as OutputFormat;
    if (format !== 'text') printJSON(format, text);
    else process.stdout.write(text.endsWith('\n') || text === '' ? text : `${text}\n`);
  });
  repoOptions(notes.command('update').argument('<snapshot>', '<type>/<id>/<time>').argument('<notes>', 'new notes text')).action(
    async (spec: string, text: string, o) => {
      const repo = await open(o, ctx.env);
      let dir: BackupDir;
      if (repo.kind === 'remote') {
        const r = await remoteSnapshot(repo.client, spec, nsOf(o), false);
        dir = r.dir;
        await repo.client.setNotes(r.ref, text);
      } else {
        dir = await exactSnapshot(repo.ds, spec, nsOf(o));
        await repo.ds.setSnapshotNotes(dir, text);
      }
      const format = o.outputFormat as OutputFormat;
      if (format !== 'text') printJSON(format, { ...snapshotFields(dir), notes: text });
    },
  );
}
