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

/**
 * A raw file name or path for one line of text output, inside double quotes: printable
 * UTF-8 as is; `"` and `\` escaped; control characters (C0, DEL, C1), bidirectional
 * overrides and bytes that are not UTF-8 escaped (`\n`, `\t`, `\r`, `\xNN`, `\u{NNNN}`),
 * so a hostile name can neither forge lines nor send sequences to the terminal.
 */
export function quotedPath(raw: Uint8Array): string {
  const b = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
  let out = '"';
  for (let i = 0; i < b.length; ) {
    const c = b[i];
    if (c >= 0x20 && c < 0x7f) {
      out += c === 0x22 ? '\\"' : c === 0x5c ? '\\\\' : String.fromCharCode(c);
      i++;
      continue;
    }
    if (c === 0x0a || c === 0x09 || c === 0x0d) {
      out += c === 0x0a ? '\\n' : c === 0x09 ? '\\t' : '\\r';
      i++;
      continue;
    }
    const len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
    const seq = len && i + len <= b.length ? b.subarray(i, i + len) : null;
    const ch = seq ? seq.toString('utf8') : '';
    // a valid sequence decodes to one code point that re-encodes to the same bytes
    if (seq && [...ch].length === 1 && Buffer.from(ch, 'utf8').equals(seq)) {
      const cp = ch.codePointAt(0)!;
      const unsafe = cp < 0xa0 || (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) || cp === 0x200e || cp === 0x200f;
      out += unsafe ? `\\u{${cp.toString(16)}}` : ch;
      i += len;
      continue;
    }
    out += `\\x${c.toString(16).padStart(2, '0')}`;
    i++;
  }
  return out + '"';
}
