/**
 * Listings: `pxb list` (groups), `pxb snapshot list|files`, `pxb catalog dump` — on a local
 * datastore or a server (same field names as PBS's API either way).
 */
import type { Command } from 'commander';
import { BackupGroup } from '../../datastore/backup-group.js';
import { BackupNamespace } from '../../datastore/namespace.js';
import { listArchive, openSnapshot } from '../../client/restore.js';
import { formatBytes, printJSON, quotedPath, table, type OutputFormat } from '../output.js';
import { outputFormatOption, type CliContext } from '../main.js';
import { openAnyRepository, type Repository } from '../repository.js';

const nsOf = (o: { ns?: string }) => (o.ns ? BackupNamespace.parse(o.ns) : BackupNamespace.root);
const nsParam = (ns: BackupNamespace) => (ns.isRoot ? undefined : ns.name);
const iso = (t: number) => new Date(t * 1000).toISOString().replace('.000Z', 'Z');

interface GroupRow {
  'backup-type': string;
  'backup-id': string;
  'last-backup': number;
  'backup-count': number;
  files: string[];
  owner?: string;
}

interface SnapshotRow {
  'backup-type': string;
  'backup-id': string;
  'backup-time': number;
  files: string[];
  /** Absent when the manifest cannot be read. */
  size?: number;
  protected: boolean;
  'verify-state'?: string;
}

async function groups(repo: Repository, ns: BackupNamespace): Promise<GroupRow[]> {
  if (repo.kind === 'remote') {
    return (await repo.client.listGroups({ ns: nsParam(ns) })).map((g) => ({ ...g, files: g.files }));
  }
  const rows: GroupRow[] = [];
  for (const g of await repo.ds.listGroups(ns)) {
    const snaps = (await repo.ds.listSnapshots(g)).filter((s) => s.finished);
    if (!snaps.length) continue;
    const last = snaps[snaps.length - 1];
    rows.push({ 'backup-type': g.type, 'backup-id': g.id, 'last-backup': last.dir.time, 'backup-count': snaps.length, files: last.files, owner: (await repo.ds.getOwner(g)) ?? undefined });
  }
  return rows;
}

async function snapshots(repo: Repository, ns: BackupNamespace, group?: BackupGroup): Promise<SnapshotRow[]> {
  if (repo.kind === 'remote') {
    const list = await repo.client.listSnapshots({ ns: nsParam(ns), backupType: group?.type, backupId: group?.id });
    return list
      .map((s) => ({
        'backup-type': s['backup-type'],
        'backup-id': s['backup-id'],
        'backup-time': s['backup-time'],
        files: s.files.map((f) => f.filename),
        size: s.size ?? s.files.reduce((a, f) => a + (f.size ?? 0), 0),
        protected: s.protected,
        'verify-state': s.verification?.state,
      }))
      .sort((a, b) => a['backup-id'].localeCompare(b['backup-id']) || a['backup-time'] - b['backup-time']);
  }
  const rows: SnapshotRow[] = [];
  for (const g of group ? [group] : await repo.ds.listGroups(ns)) {
    for (const s of await repo.ds.listSnapshots(g)) {
      if (!s.finished) continue;
      let m;
      try {
        m = await repo.ds.loadManifest(s.dir);
      } catch (e) {
        // one damaged manifest must not hide the other snapshots (as PBS lists it: files only)
        process.stderr.write(`warning: snapshot ${s.dir}: ${(e as Error).message}\n`);
        rows.push({ 'backup-type': g.type, 'backup-id': g.id, 'backup-time': s.dir.time, files: s.files, protected: s.protected });
        continue;
      }
      rows.push({
        'backup-type': g.type,
        'backup-id': g.id,
        'backup-time': s.dir.time,
        files: m.files.map((f) => f.filename),
        size: m.files.reduce((a, f) => a + f.size, 0),
        protected: s.protected,
        'verify-state': m.verifyState?.state,
      });
    }
  }
  return rows;
}

const source = (repo: Repository) => (repo.kind === 'local' ? { datastore: repo.ds } : { remote: repo.client });

export function registerList(program: Command, ctx: CliContext): void {
  const repoOptions = (c: Command) =>
    c
      .option('--repository <repo>', 'datastore path or [[user@realm!token@]host[:port]:]store')
      .option('--fingerprint <fp>', 'server certificate fingerprint (default: $PBS_FINGERPRINT)')
      .option('--ns <namespace>', 'namespace')
      .addOption(outputFormatOption());

  repoOptions(program.command('list').description('list backup groups')).action(async (o) => {
    const repo = await openAnyRepository(o, ctx.env, false);
    const rows = await groups(repo, nsOf(o));
    const format = o.outputFormat as OutputFormat;
    if (format !== 'text') return printJSON(format, rows);
    process.stdout.write(
      table(['group', 'last snapshot', 'count', 'files'], rows.map((r) => [`${r['backup-type']}/${r['backup-id']}`, iso(r['last-backup']), String(r['backup-count']), r.files.join(' ')])),
    );
  });

  const snapshot = program.command('snapshot').description('snapshot management');
  repoOptions(snapshot.command('list').description('list snapshots (of one group, or all)').argument('[group]', 'host/<id>')).action(async (group: string | undefined, o) => {
    const repo = await openAnyRepository(o, ctx.env, false);
    const ns = nsOf(o);
    const rows = await snapshots(repo, ns, group ? BackupGroup.parse(group, ns) : undefined);
    const format = o.outputFormat as OutputFormat;
    if (format !== 'text') return printJSON(format, rows);
    process.stdout.write(
      table(['snapshot', 'size', 'files'], rows.map((r) => [`${r['backup-type']}/${r['backup-id']}/${iso(r['backup-time'])}`, r.size === undefined ? '-' : formatBytes(r.size), r.files.join(' ')])),
    );
  });
  repoOptions(snapshot.command('files').description('list the files of a snapshot').argument('<snapshot>', 'host/<id>[/<time>]')).action(async (spec: string, o) => {
    const repo = await openAnyRepository(o, ctx.env, false);
    const src = await openSnapshot(source(repo), spec, nsOf(o));
    try {
      const m = await src.manifest();
      const rows = m.files.map((f) => ({ filename: f.filename, size: f.size, 'crypt-mode': f.cryptMode, csum: f.csum.toString('hex') }));
      const format = o.outputFormat as OutputFormat;
      if (format !== 'text') return printJSON(format, rows);
      process.stdout.write(table(['file', 'size', 'crypt-mode'], rows.map((r) => [r.filename, formatBytes(r.size), r['crypt-mode']])));
    } finally {
      await src.close();
    }
  });

  repoOptions(
    program
      .command('catalog')
      .description('archive catalogs')
      .command('dump')
      .description('list every path of an archive')
      .argument('<snapshot>', 'host/<id>[/<time>]')
      .option('--archive-name <name>', 'archive (default: every pxar archive of the snapshot)'),
  ).action(async (spec: string, o) => {
    const repo = await openAnyRepository(o, ctx.env, false);
    const src = await openSnapshot(source(repo), spec, nsOf(o));
    try {
      const m = await src.manifest();
      const archives: string[] = o.archiveName
        ? [o.archiveName]
        : m.files.map((f) => f.filename).filter((f) => /\.(mpxar|pxar)\.didx$/.test(f)).map((f) => f.replace(/\.m?pxar\.didx$/, '.pxar'));
      const format = o.outputFormat as OutputFormat;
      const out: Array<Record<string, unknown>> = [];
      const typeChar: Record<string, string> = { directory: 'd', file: 'f', symlink: 'l', hardlink: 'h', device: 'c', fifo: 'p', socket: 's' };
      for (const a of archives) {
        for await (const e of listArchive(src, a)) {
          const p = `/${e.path.toString()}`;
          if (format === 'text') {
            const shown = quotedPath(Buffer.concat([Buffer.from(a), e.path.length ? Buffer.from('/') : Buffer.alloc(0), e.path]));
            process.stdout.write(`${typeChar[e.kind] ?? '?'} ${shown}${e.kind === 'file' ? ` ${e.size}` : ''}\n`);
          } else {
            out.push({ archive: a, path: p, type: e.kind, size: e.size, mtime: e.metadata.mtime.secs });
          }
        }
      }
      if (format !== 'text') printJSON(format, out);
    } finally {
      await src.close();
    }
  });
}
