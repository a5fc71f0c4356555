/**
 * Output rendering shared by all commands: `--output-format text|json|json-pretty`, one-line
 * errors on stderr, and a single progress line on a TTY (never in JSON mode or when piped).
 */
export type OutputFormat = 'text' | 'json' | 'json-pretty';

export function parseOutputFormat(v: string): OutputFormat {
  if (v === 'text' || v === 'json' || v === 'json-pretty') return v;
  throw new UsageError(`invalid --output-format ${JSON.stringify(v)} (text, json or json-pretty)`);
}

/** A mistake in the command line: exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function printJSON(format: OutputFormat, value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, format === 'json-pretty' ? 2 : undefined) + '\n');
}

/** Render rows as an aligned text table. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n') + '\n';
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function formatSpeed(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e6).toFixed(0)} MB/s`;
}

/** A single status line on a TTY, redrawn at most every 100 ms. */
export class ProgressLine {
  private last = 0;
  private shown = false;
  constructor(private readonly enabled: boolean) {}

  static forStderr(format: OutputFormat): ProgressLine {
    return new ProgressLine(format === 'text' && !!process.stderr.isTTY);
  }

  update(text: string, force = false): void {
    if (!this.enabled) return;
    const t = Date.now();
    if (!force && t - this.last < 100) return;
    this.last = t;
    const cols = process.stderr.columns || 80;
    process.stderr.write('\r\x1b[K' + text.slice(0, cols - 1));
    this.shown = true;
  }

  clear(): void {
    if (this.shown) process.stderr.write('\r\x1b[K');
    this.shown = false;
  }
}
