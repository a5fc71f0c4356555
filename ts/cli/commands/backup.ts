/** `pxb backup <name>.pxar:<dir> …`: PBS's grammar. */
import { Option, type Command } from 'commander';
import { createBackup, parseBackupSpec, type ChangeDetectionMode } from '../../client/backup.js';
import { BackupNamespace } from '../../datastore/namespace.js';
import { defaultCacheDir } from '../../datastore/location.js';
import { formatBytes, printJSON, ProgressLine, table, UsageError, type OutputFormat } from '../output.js';
import { outputFormatOption, type CliContext } from '../main.js';
import { openAnyRepository } from '../repository.js';

const CHUNK_SIZES = [64, 128, 256, 512, 1024, 2048, 4096];

function positiveInt(v: string, what: string): number {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`${what} must be a positive integer`);
  return n;
}

export function registerBackup(program: Command, ctx: CliContext): void {
  program
    .command('backup')
    .description('back up directories: pxb backup root.pxar:/path [more.pxar:/other …]')
    .argument('<specs...>', '<name>.pxar:<directory>')
    .option('--repository <repo>', 'datastore path or [[user@realm!token@]host[:port]:]store (default: $PBS_REPOSITORY, else ~/.local/share/pxb/datastore)')
    .option('--fingerprint <fp>', 'server certificate fingerprint (default: $PBS_FINGERPRINT)')
    .addOption(new Option('--backup-type <type>', 'backup type').choices(['host', 'vm', 'ct']).default('host'))
    .option('--backup-id <id>', 'backup id (default: host name)')
    .option('--backup-time <epoch>', 'backup time in epoch seconds (default: now)')
    .option('--ns <namespace>', 'namespace (a/b/c)')
    .addOption(new Option('--change-detection-mode <mode>', 'legacy, data or metadata').choices(['legacy', 'data', 'metadata']).default('metadata'))
    .option('--incremental', 'same as --change-detection-mode metadata')
    .option('--exclude <pattern>', 'exclude pattern (repeatable; ! re-includes)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--all-file-systems', 'descend into other file systems')
    .option('--include-dev <path>', 'include the file system mounted at <path> (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--skip-lost-and-found', 'exclude lost+found directories')
    .option('--chunk-size <KiB>', `average chunk size in KiB (${CHUNK_SIZES.join(', ')})`)
    .option('--lookahead-capacity <entries>', 'metadata mode: entries the lookahead cache holds (default: RLIMIT_NOFILE hard - soft/2, as PBS); larger lets runs of tiny unchanged files be reused, at up to ~1 KiB of memory per entry')
    .option('--dry-run', 'read and chunk everything, store nothing')
    .option('--no-cache', 'keep no metadata cache (default: in $PXB_CACHE_DIR, else $XDG_CACHE_HOME/pxb or ~/.cache/pxb): the next metadata-mode backup then opens every file to read its xattrs and flags, as PBS does, and never reuses an unchanged tree\'s archive as it is')
    .addOption(outputFormatOption())
    .action(async (specs: string[], o) => {
      const format = o.outputFormat as OutputFormat;
      let chunkSize: number | undefined;
      if (o.chunkSize !== undefined) {
        const k = Number(o.chunkSize);
        if (!CHUNK_SIZES.includes(k)) throw new UsageError(`--chunk-size must be one of ${CHUNK_SIZES.join(', ')} (KiB)`);
        chunkSize = k * 1024;
      }
      let backupTime: number | undefined;
      if (o.backupTime !== undefined) {
        backupTime = Number(o.backupTime);
        if (!Number.isSafeInteger(backupTime) || backupTime < 1) throw new UsageError('--backup-time must be epoch seconds');
      }
      const parsed = specs.map((s) => {
        try {
          return parseBackupSpec(s);
        } catch (e) {
          throw new UsageError((e as Error).message);
        }
      });
      const mode: ChangeDetectionMode = o.incremental ? 'metadata' : o.changeDetectionMode;
      const ns = o.ns ? BackupNamespace.parse(o.ns) : BackupNamespace.root;
      const includeDevices: bigint[] = [];
      for (const p of o.includeDev as string[]) {
        const { statSync } = await import('node:fs');
        includeDevices.push(statSync(p, { bigint: true }).dev);
      }
      const repo = await openAnyRepository(o, ctx.env, true);
      const progress = ProgressLine.forStderr(format);
      const warnings: string[] = [];
      const result = await createBackup({
        datastore: repo.kind === 'local' ? repo.ds : undefined,
        remote: repo.kind === 'remote' ? repo.client : undefined,
        specs: parsed,
        backupType: o.backupType,
        backupId: o.backupId,
        backupTime,
        namespace: ns,
        changeDetectionMode: mode,
        excludes: o.exclude,
        allFileSystems: !!o.allFileSystems,
        includeDevices,
        skipLostAndFound: !!o.skipLostAndFound,
        chunkSize,
        lookaheadCapacity: o.lookaheadCapacity !== undefined ? positiveInt(o.lookaheadCapacity, '--lookahead-capacity') : undefined,
        dryRun: !!o.dryRun,
        cacheDir: o.cache === false ? undefined : defaultCacheDir(ctx.env),
        signal: ctx.signal,
        onWarning: (m) => {
          warnings.push(m);
          progress.clear();
          process.stderr.write(`warning: ${m}\n`);
        },
        onNotice: (m) => {
          progress.clear();
          process.stderr.write(`${m}\n`);
        },
        onProgress: (p) => progress.update(`${p.archive}: ${p.entries} entries, ${formatBytes(p.bytesRead)} read  ${p.path}`),
      });
      progress.clear();
      if (format !== 'text') {
        printJSON(format, { ...result, warnings });
        return;
      }
      process.stdout.write(`${result.dryRun ? 'dry run of' : 'snapshot'} ${result.snapshot}\n`);
      process.stdout.write(
        table(
          ['archive', 'mode', 'files', 'dirs', 'read', 'chunks new/known', 'stored', 'time'],
          result.archives.map((a) => [
            a.archive,
            a.mode,
            String(a.files),
            String(a.directories),
            formatBytes(a.bytesRead),
            `${a.chunksNew}/${a.chunksKnown}`,
            formatBytes(a.bytesStored),
            `${a.seconds.toFixed(2)} s`,
          ]),
        ),
      );
      for (const a of result.archives) {
        if (a.mode !== 'metadata') continue;
        const what = a.unchangedTree
          ? `tree unchanged, previous archive reused as it is (${formatBytes(a.reusedBytes)} of payload)`
          : `${a.reusedFiles} files reused (${formatBytes(a.reusedBytes)}, ${a.injectedChunks} chunks injected, ${formatBytes(a.paddingBytes)} padding), ${a.reencodedFiles} re-encoded`;
        process.stdout.write(`${a.archive}: ${what}; ${a.metadataCached} entries' metadata from the cache\n`);
      }
      if (warnings.length) process.stdout.write(`${warnings.length} warning(s)\n`);
      process.stdout.write(`duration ${result.seconds.toFixed(2)} s\n`);
    });
}
