/** `pxb restore <snapshot> <archive> <target> [--pattern GLOB]…` */
import type { Command } from 'commander';
import { restoreGlob } from '../../archive/extract.js';
import { restore } from '../../client/restore.js';
import { BackupNamespace } from '../../datastore/namespace.js';
import { formatBytes, printJSON, ProgressLine, UsageError, type OutputFormat } from '../output.js';
import { outputFormatOption, type CliContext } from '../main.js';
import { openAnyRepository } from '../repository.js';

export function registerRestore(program: Command, ctx: CliContext): void {
  program
    .command('restore')
    .description('restore an archive of a snapshot: pxb restore host/<id>[/<time>] root.pxar <target>')
    .argument('<snapshot>', 'host/<id> (latest) or host/<id>/<time>')
    .argument('<archive>', 'archive name, e.g. root.pxar')
    .argument('<target>', 'target directory (created if missing)')
    .option('--repository <repo>', 'datastore path or [[user@realm!token@]host[:port]:]store')
    .option('--fingerprint <fp>', 'server certificate fingerprint (default: $PBS_FINGERPRINT)')
    .option('--ns <namespace>', 'namespace')
    .option('--pattern <glob>', 'restore only matching paths (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--overwrite', 'replace existing files in the target')
    .option('--no-sparse', 'write zeros instead of holes')
    .addOption(outputFormatOption())
    .action(async (snapshot: string, archive: string, target: string, o) => {
      for (const p of o.pattern as string[]) {
        try {
          restoreGlob(p);
        } catch {
          throw new UsageError(`--pattern ${JSON.stringify(p)}: an empty pattern matches nothing (to restore everything, leave --pattern out)`);
        }
      }
      const format = o.outputFormat as OutputFormat;
      const repo = await openAnyRepository(o, ctx.env, false);
      const progress = ProgressLine.forStderr(format);
      const warnings: string[] = [];
      const r = await restore({
        datastore: repo.kind === 'local' ? repo.ds : undefined,
        remote: repo.kind === 'remote' ? repo.client : undefined,
        snapshot,
        archiveName: archive,
        target,
        namespace: o.ns ? BackupNamespace.parse(o.ns) : BackupNamespace.root,
        patterns: o.pattern,
        overwrite: !!o.overwrite,
        sparse: o.sparse !== false,
        signal: ctx.signal,
        onWarning: (m) => {
          warnings.push(m);
          progress.clear();
          process.stderr.write(`warning: ${m}\n`);
        },
        onProgress: (p) => progress.update(`${p.entries} entries, ${formatBytes(p.bytes)}  ${p.path}`),
      });
      progress.clear();
      if (format !== 'text') {
        printJSON(format, { ...r, warnings });
        return;
      }
      process.stdout.write(
        `restored ${r.archive} of ${r.snapshot} to ${target}: ${r.files} files, ${r.directories} directories, ${formatBytes(r.bytes)} in ${r.seconds.toFixed(2)} s\n`,
      );
    });
}
