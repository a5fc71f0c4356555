/** Listings: `pxb list` (groups), `pxb snapshot list|files`, `pxb catalog dump`. */
import type { Command } from 'commander';
import { BackupGroup } from '../../datastore/backup-group.js';
import { BackupNamespace } from '../../datastore/namespace.js';
import { listArchive, resolveSnapshot } from '../../client/restore.js';
import { formatBytes, printJSON, table, type OutputFormat } from '../output.js';
import { outputFormatOption, type CliContext } from '../main.js';
import { openRepository } from '../repository.js';

const nsOf = (o: { ns?: string }) => (o.ns ? BackupNamespace.parse(o.ns) : BackupNamespace.root);
const iso = (t: number) => new Date(t * 1000).toISOString().replace('.000Z', 'Z');

export function registerList(program: Command, ctx: CliContext): void {
  program
    .command('list')
    .description('list backup groups')
    .option('--repository <repo>', 'datastore path')
    .option('--ns <namespace>', 'namespace')
    .addOption(outputFormatOption())
    .action(async (o) => {
      const ds = await openRepository(o.repository, ctx.env, false);
      const rows = [];
      for (const g of await ds.listGroups(nsOf(o))) {
        const snaps = (await ds.listSnapshots(g)).filter((s) => s.finished);
        if (!snaps.length) continue;
        const last = snaps[snaps.length - 1];
        rows.push({
          'backup-type': g.type,
          'backup-id': g.id,
          'last-backup': last.dir.time,
          'backup-count': snaps.length,
          files: last.files,
          owner: (await ds.getOwner(g)) ?? undefined,
        });
      }
      const format = o.outputFormat as OutputFormat;
      if (format !== 'text') return printJSON(format, rows);
      process.stdout.write(
        table(['group', 'last snapshot', 'count', 'files'], rows.map((r) => [`${r['backup-type']}/${r['backup-id']}`, iso(r['last-backup']), String(r['backup-count']), r.files.join(' ')])),
      );
    });

  const snapshot = program.command('snapshot').description('snapshot management');
  snapshot
    .command('list')
    .description('list snapshots (of one group, or all)')
    .argument('[group]', 'host/<id>')
    .option('--repository <repo>', 'datastore path')
    .option('--ns <namespace>', 'namespace')
    .addOption(outputFormatOption())
    .action(async (group: string | undefined, o) => {
      const ds = await openRepository(o.repository, ctx.env, false);
      const ns = nsOf(o);
      const groups = group ? [BackupGroup.parse(group, ns)] : await ds.listGroups(ns);
      const rows = [];
      for (const g of groups) {
        for (const s of await ds.listSnapshots(g)) {
          if (!s.finished) continue;
          const m = await ds.loadManifest(s.dir);
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
      const format = o.outputFormat as OutputFormat;
      if (format !== 'text') return printJSON(format, rows);
      process.stdout.write(
        table(['snapshot', 'size', 'files'], rows.map((r) => [`${r['backup-type']}/${r['backup-id']}/${iso(r['backup-time'])}`, formatBytes(r.size), r.files.join(' ')])),
      );
    });
  snapshot
    .command('files')
    .description('list the files of a snapshot')
    .argument('<snapshot>', 'host/<id>[/<time>]')
    .option('--repository <repo>', 'datastore path')
    .option('--ns <namespace>', 'namespace')
    .addOption(outputFormatOption())
    .action(async (spec: string, o) => {
      const ds = await openRepository(o.repository, ctx.env, false);
      const dir = await resolveSnapshot(ds, spec, nsOf(o));
      const m = await ds.loadManifest(dir);
      const rows = [...m.files.map((f) => ({ filename: f.filename, size: f.size, 'crypt-mode': f.cryptMode, csum: f.csum.toString('hex') }))];
      const format = o.outputFormat as OutputFormat;
      if (format !== 'text') return printJSON(format, rows);
      process.stdout.write(table(['file', 'size', 'crypt-mode'], rows.map((r) => [r.filename, formatBytes(r.size), r['crypt-mode']])));
    });

  program
    .command('catalog')
    .description('archive catalogs')
    .command('dump')
    .description('list every path of an archive')
    .argument('<snapshot>', 'host/<id>[/<time>]')
    .option('--archive-name <name>', 'archive (default: every pxar archive of the snapshot)')
    .option('--repository <repo>', 'datastore path')
    .option('--ns <namespace>', 'namespace')
    .addOption(outputFormatOption())
    .action(async (spec: string, o) => {
      const ds = await openRepository(o.repository, ctx.env, false);
      const dir = await resolveSnapshot(ds, spec, nsOf(o));
      const m = await ds.loadManifest(dir);
      const archives: string[] = o.archiveName
        ? [o.archiveName]
        : m.files.map((f) => f.filename).filter((f) => /\.(mpxar|pxar)\.didx$/.test(f)).map((f) => f.replace(/\.m?pxar\.didx$/, '.pxar'));
      const format = o.outputFormat as OutputFormat;
      const out: Array<Record<string, unknown>> = [];
      const typeChar: Record<string, string> = { directory: 'd', file: 'f', symlink: 'l', hardlink: 'h', device: 'c', fifo: 'p', socket: 's' };
      for (const a of archives) {
        for await (const e of listArchive(ds, dir, a)) {
          const p = `/${e.path.toString()}`;
          if (format === 'text') {
            process.stdout.write(`${typeChar[e.kind] ?? '?'} "${a}${p === '/' ? '' : p}"${e.kind === 'file' ? ` ${e.size}` : ''}\n`);
          } else {
            out.push({ archive: a, path: p, type: e.kind, size: e.size, mtime: e.metadata.mtime.secs });
          }
        }
      }
      if (format !== 'text') printJSON(format, out);
    });
}
