/**
 * `pxb` command line: the composition root. The only place that reads process.env, argv and
 * decides exit codes. Every command is a thin layer over a library call.
 *
 * Exit codes: 0 ok, 1 failure (one-line reason on stderr), 2 usage error, 130 interrupted.
 */
import { Command, CommanderError, Option } from 'commander';
import { UsageError } from './output.js';
import { registerBenchmark } from './commands/benchmark.js';
import { registerBackup } from './commands/backup.js';
import { registerRestore } from './commands/restore.js';
import { registerList } from './commands/list.js';
import { registerMaintenance, registerSnapshotMaintenance } from './commands/maintenance.js';
import { registerServe, registerToken } from './commands/serve.js';

export interface CliContext {
  env: NodeJS.ProcessEnv;
  /** Aborted on SIGINT/SIGTERM. */
  signal: AbortSignal;
}

export const outputFormatOption = () =>
  new Option('--output-format <format>', 'output format').choices(['text', 'json', 'json-pretty']).default('text');

export function buildProgram(ctx: CliContext): Command {
  const program = new Command('pxb')
    .description('Fast, deduplicated, incremental backups in Proxmox Backup Server formats')
    .version('0.1.0')
    .exitOverride();
  registerBackup(program, ctx);
  registerRestore(program, ctx);
  registerList(program, ctx);
  registerMaintenance(program, ctx);
  const snapshot = program.commands.find((c) => c.name() === 'snapshot');
  if (snapshot) registerSnapshotMaintenance(snapshot, ctx);
  registerServe(program, ctx);
  registerToken(program, ctx);
  registerBenchmark(program, ctx);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  // Output piped into a reader that went away (`pxb catalog dump … | head`): stop quietly.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  const ac = new AbortController();
  const onSignal = () => ac.abort(new Error('interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const program = buildProgram({ env: process.env, signal: ac.signal });
  try {
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
