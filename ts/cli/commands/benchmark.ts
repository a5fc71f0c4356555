/** `pxb benchmark`: hot-path speeds of this machine (PBS has the same command). */
import type { Command } from 'commander';
import os from 'node:os';
import { runBenchmark, syntheticData, type BenchmarkResult } from '../../client/benchmark.js';
import { native } from '../../native/index.js';
import { formatSpeed, printJSON, table, type OutputFormat } from '../output.js';
import { outputFormatOption, type CliContext } from '../main.js';

export function registerBenchmark(program: Command, ctx: CliContext): void {
  program
    .command('benchmark')
    .description('measure SHA-256, chunking, zstd and the chunk pipeline on this machine')
    .option('--size <MiB>', 'amount of synthetic (text-like) data per pass', '256')
    .option('--min-seconds <s>', 'repeat each step at least this long', '1')
    .addOption(outputFormatOption())
    .action(async (opts: { size: string; minSeconds: string; outputFormat: OutputFormat }) => {
      const size = Math.max(1, Number(opts.size)) * 1024 * 1024;
      const segments: Buffer[] = [];
      for (let left = size; left > 0; left -= 64 << 20) segments.push(syntheticData(Math.min(64 << 20, left), segments.length + 1));
      const text = opts.outputFormat === 'text';
      if (text) process.stdout.write(`pxb benchmark: ${os.cpus()[0]?.model ?? 'cpu'}, ${os.availableParallelism()} cores, zstd ${native.versions().zstd}\n`);
      const results: BenchmarkResult[] = await runBenchmark({
        data: segments,
        minSeconds: Number(opts.minSeconds),
        signal: ctx.signal,
        onResult: (r) => {
          if (text && process.stdout.isTTY) process.stdout.write(`  ${r.name}: ${formatSpeed(r.speed)}\n`);
        },
      });
      if (text) {
        if (!process.stdout.isTTY) process.stdout.write(table(['step', 'speed'], results.map((r) => [r.name, formatSpeed(r.speed)])));
      } else {
        printJSON(opts.outputFormat, results.map((r) => ({ name: r.name, 'bytes-per-second': Math.round(r.speed), 'mb-per-second': Math.round(r.speed / 1e6) })));
      }
    });
}
