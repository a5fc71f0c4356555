/**
 * Exclude patterns as the PBS client applies them (spec pxar.md §8.2): `--exclude` patterns
 * from the command line and `.pxarexclude` files found while walking (patterns relative to the
 * directory holding the file, applying to it and everything below).
 *
 * Pattern syntax (gitignore-like, as proxmox's pathpatterns): glob with `*`, `?`, `[..]`, `**`;
 * a leading `!` re-includes; a trailing `/` matches directories only; a pattern containing a
 * `/` (other than a trailing one) is anchored at its base directory (a leading `/` is dropped),
 * otherwise it matches the entry name at any depth. Empty lines and `#` comments are ignored in
 * `.pxarexclude` files. The last matching pattern decides.
 */
import { createRequire } from 'node:module';
import type picomatchType from 'picomatch';

const load = createRequire(import.meta.url);
let picomatch: typeof picomatchType | undefined;

/**
 * A pattern body's matcher. picomatch is loaded on first use: most backups compile no
 * pattern, and loading it took ~4-7 ms of every backup's start-up.
 */
function glob(body: string): (s: string) => boolean {
  picomatch ??= load('picomatch') as typeof picomatchType;
  return picomatch(body, { dot: true, nonegate: true, noext: true });
}

export interface ExcludePattern {
  /** The pattern as written (without `!`). */
  text: string;
  include: boolean;
  dirOnly: boolean;
  anchored: boolean;
  /** Relative directory where the pattern was defined ('' = archive root). */
  base: string;
  test: (s: string) => boolean;
}

export function parsePattern(line: string, base = ''): ExcludePattern | null {
  let p = line.replace(/\r$/, '');
  if (!p.trim() || p.startsWith('#')) return null;
  let include = false;
  if (p.startsWith('!')) {
    include = true;
    p = p.slice(1);
  }
  let dirOnly = false;
  if (p.length > 1 && p.endsWith('/')) {
    dirOnly = true;
    p = p.replace(/\/+$/, '');
  }
  const anchored = p.includes('/');
  const body = p.replace(/^\/+/, '');
  if (!body) return null;
  const test = glob(body);
  return { text: line.replace(/^!/, ''), include, dirOnly, anchored, base, test };
}

export function parsePatternFile(content: string, base: string): ExcludePattern[] {
  return content.split('\n').map((l) => parsePattern(l, base)).filter((p): p is ExcludePattern => p !== null);
}

/**
 * The patterns in force for one directory: parent patterns plus the directory's own
 * `.pxarexclude`. Immutable; `with()` makes the child's matcher.
 */
export class ExcludeMatcher {
  constructor(readonly patterns: readonly ExcludePattern[] = []) {}

  with(more: ExcludePattern[]): ExcludeMatcher {
    return more.length ? new ExcludeMatcher([...this.patterns, ...more]) : this;
  }

  /** True if the entry at relative path `rel` (name = last component) is excluded. */
  excluded(rel: string, name: string, isDir: boolean): boolean {
    let result = false;
    for (const p of this.patterns) {
      if (p.dirOnly && !isDir) continue;
      let subject: string;
      if (p.anchored) {
        if (p.base) {
          if (!rel.startsWith(p.base + '/')) continue;
          subject = rel.slice(p.base.length + 1);
        } else {
          subject = rel;
        }
      } else {
        if (p.base && !rel.startsWith(p.base + '/')) continue;
        subject = name;
      }
      if (p.test(subject)) result = !p.include;
    }
    return result;
  }

  /** The CLI patterns as PBS serializes them (one per line, `!` for includes, `/` for dir-only). */
  static serialize(lines: string[]): string {
    return lines.map((l) => `${l}\n`).join('');
  }
}
