/**
 * `pxb` command line: the composition root. The only place that reads process.env, argv and
 * decides exit codes. Every command is a thin layer over a library call.
 *
 * Exit codes: 0 ok, 1 failure (one-line reason on stderr), 2 usage error, 130 interrupted.
 */
import { Command, CommanderError, Option } from 'commander';
import { UsageError } from './output.js';
import { native } from '../native/index.js';

export interface CliContext {
  env: NodeJS.ProcessEnv;
  /** Aborted on SIGINT/SIGTERM. */
  signal: AbortSignal;
}

export const outputFormatOption = () =>
  new Option('--output-format <format>', 'output format').choices(['text', 'json', 'json-pretty']).default('text');

type Group = 'backup' | 'restore' | 'list' | 'maintenance' | 'serve' | 'benchmark';
const ALL_GROUPS: Group[] = ['backup', 'restore', 'list', 'maintenance', 'serve', 'benchmark'];
/** Which command modules a top-level command needs (anything else, e.g. help: all of them). */
const GROUPS_OF: Record<string, Group[]> = {
  backup: ['backup'],
  restore: ['restore'],
  list: ['list'],
  catalog: ['list'],
  snapshot: ['list', 'maintenance'],
  prune: ['maintenance'],
  'garbage-collect': ['maintenance'],
  verify: ['maintenance'],
  namespace: ['maintenance'],
  serve: ['serve'],
  token: ['serve'],
  benchmark: ['benchmark'],
};

/**
 * The command tree. Command modules are loaded on demand: with `argv`, only the ones its first
 * word needs (a backup does not load the server or the maintenance code), else all of them.
 */
export async function buildProgram(ctx: CliContext, argv?: string[]): Promise<Command> {
  const program = new Command('pxb')
    .description('Fast, deduplicated, incremental backups in Proxmox Backup Server formats')
    .version('0.1.0')
    .exitOverride();
  const first = argv?.find((a) => !a.startsWith('-'));
  const groups = new Set((first !== undefined && GROUPS_OF[first]) || ALL_GROUPS);
  // Registration order fixes the order of `pxb --help`.
  if (groups.has('backup')) (await import('./commands/backup.js')).registerBackup(program, ctx);
  if (groups.has('restore')) (await import('./commands/restore.js')).registerRestore(program, ctx);
  if (groups.has('list')) (await import('./commands/list.js')).registerList(program, ctx);
  if (groups.has('maintenance')) {
    const m = await import('./commands/maintenance.js');
    m.registerMaintenance(program, ctx);
    const snapshot = program.commands.find((c) => c.name() === 'snapshot');
    if (snapshot) m.registerSnapshotMaintenance(snapshot, ctx);
  }
  if (groups.has('serve')) {
    const m = await import('./commands/serve.js');
    m.registerServe(program, ctx);
    m.registerToken(program, ctx);
  }
  if (groups.has('benchmark')) (await import('./commands/benchmark.js')).registerBenchmark(program, ctx);
  return program;
}

/** Allocations from this size on are mmapped by the C allocator (see NativeAddon.mallocMmapThreshold). */
const MMAP_THRESHOLD = 128 * 1024;

export async function main(argv: string[]): Promise<number> {
  // Output piped into a reader that went away (`pxb catalog dump … | head`): stop quietly.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  // Large buffers (chunk windows, decoded chunks, compressed blobs) get their own mappings and
  // go back to the system when freed, instead of piling up in per-thread malloc arenas.
  native.mallocMmapThreshold(MMAP_THRESHOLD);
  const ac = new AbortController();
  const onSignal = () => ac.abort(new Error('interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const program = await buildProgram({ env: process.env, signal: ac.signal }, argv);
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
      return 2; // commander already printed the message
    }
    if (ac.signal.aborted) {
      process.stderr.write('pxb: interrupted\n');
      return 130;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`pxb: ${e.message}\n`);
      return 2;
    }
    const msg = e instanceof Error ? e.message : String(e);
    process.stderr.write(`pxb: ${msg}\n`);
    if (process.env.PXB_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
