/**
 * Test trees on real file systems: a builder that creates every kind of entry with exact
 * metadata, and a snapshot/compare pair that records what a restore must reproduce.
 *
 * - Paths are raw bytes throughout (`string | Buffer` in, `Buffer` used for every syscall), so
 *   non-UTF-8 names work. Snapshots key entries by `displayPath`: printable ASCII as is, every
 *   other byte (and `\`) as `\xNN`, which is injective and readable in a diff.
 * - The builder applies metadata in the order that keeps it: content, owner, mode (after chown,
 *   which clears set-id bits), xattrs; times are set by `finish()`, deepest entries first, once
 *   nothing below a directory changes any more.
 * - A snapshot never follows symlinks; hardlinks are compared as groups of paths sharing an
 *   inode, never by inode number.
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { listXattrs, getxattr, lchown, mknod, setxattr, utimens } from '../../ts/native/fs.js';
import type { BackupDir } from '../../ts/datastore/backup-dir.js';
import type { DataStore } from '../../ts/datastore/datastore.js';
import { IndexReadAt } from '../../ts/datastore/index-reader.js';
import { CatalogReader, type CatalogEntry } from '../../ts/format/catalog.js';
import { DynamicIndex } from '../../ts/format/dynamic-index.js';

export type RawName = string | Buffer;

export type EntryType = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chr' | 'blk';

export interface EntryMeta {
  /** Permission bits incl. set-id/sticky (`st_mode & 0o7777`). */
  mode?: number;
  uid?: number;
  gid?: number;
  /** mtime as seconds (may be negative) and nanoseconds. */
  mtime?: { sec: number; nsec: number };
  /** xattr name → value (files and directories only). */
  xattrs?: Record<string, string | Buffer>;
}

export interface TreeEntry {
  path: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  size?: number;
  sha256?: string;
  /** Symlink target (display form). */
  target?: string;
  /** Devices: `major:minor`. */
  rdev?: string;
  /** Files and directories: xattr name → hex value (all namespaces the kernel lists). */
  xattrs?: Record<string, string>;
  /** Not compared; used to derive hardlink groups. */
  ino: bigint;
  nlink: number;
}

export type TreeSnapshot = Map<string, TreeEntry>;

const SLASH = Buffer.from('/');

export function rawJoin(...parts: RawName[]): Buffer {
  const bufs: Buffer[] = [];
  for (const p of parts) {
    const b = Buffer.isBuffer(p) ? p : Buffer.from(p);
    if (!b.length) continue;
    if (bufs.length) bufs.push(SLASH);
    bufs.push(b);
  }
  return Buffer.concat(bufs);
}

/** Injective readable form of a raw path: printable ASCII kept, other bytes and `\` as `\xNN`. */
export function displayPath(raw: Buffer): string {
  let s = '';
  for (const c of raw) s += c >= 0x20 && c < 0x7f && c !== 0x5c ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
  return s;
}

/** glibc major()/minor() of a 64-bit dev_t. */
const major = (d: bigint): number => Number(((d >> 8n) & 0xfffn) | ((d >> 32n) & 0xfffff000n));
const minor = (d: bigint): number => Number((d & 0xffn) | ((d >> 12n) & 0xffffff00n));

const S_IFMT = 0o170000;
const TYPE_BITS: Record<EntryType, number> = {
  file: 0o100000,
  dir: 0o040000,
  symlink: 0o120000,
  fifo: 0o010000,
  socket: 0o140000,
  chr: 0o020000,
  blk: 0o060000,
};

function typeOf(mode: number): EntryType {
  const t = mode & S_IFMT;
  for (const [k, v] of Object.entries(TYPE_BITS)) if (v === t) return k as EntryType;
  throw new Error(`unknown file type ${t.toString(8)}`);
}

/** True when `setfacl` is installed (POSIX ACL tests are skipped otherwise). */
export function haveSetfacl(): boolean {
  return spawnSync('setfacl', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** Creates entries below `root` (missing parents included); call `finish()` last to apply times. */
export class TreeBuilder {
  readonly root: Buffer;
  private readonly times: Array<{ abs: Buffer; depth: number; sec: number; nsec: number }> = [];
  private readonly dirModes: Array<{ abs: Buffer; depth: number; mode: number }> = [];

  constructor(root: RawName) {
    this.root = Buffer.isBuffer(root) ? root : Buffer.from(root);
    fs.mkdirSync(this.root, { recursive: true });
  }

  abs(rel: RawName): Buffer {
    return rawJoin(this.root, rel);
  }

  /** Absolute path of `rel`, its parent directories created (with default metadata) if missing. */
  private create(rel: RawName): Buffer {
    const abs = this.abs(rel);
    fs.mkdirSync(abs.subarray(0, abs.lastIndexOf(0x2f)), { recursive: true });
    return abs;
  }

  private depth(rel: RawName): number {
    const b = Buffer.isBuffer(rel) ? rel : Buffer.from(rel);
    return b.length ? 1 + [...b].filter((c) => c === 0x2f).length : 0;
  }

  private apply(rel: RawName, m: EntryMeta, kind: 'file' | 'dir' | 'symlink' | 'other'): void {
    const abs = this.abs(rel);
    if (m.uid !== undefined || m.gid !== undefined) lchown(abs, m.uid ?? -1, m.gid ?? -1);
    if (m.mode !== undefined && kind !== 'symlink') {
      // A directory's restrictive mode would stop us creating its children: applied in finish().
      if (kind === 'dir') this.dirModes.push({ abs, depth: this.depth(rel), mode: m.mode });
      else fs.chmodSync(abs, m.mode);
    }
    for (const [k, v] of Object.entries(m.xattrs ?? {})) setxattr(abs, k, Buffer.from(v));
    if (m.mtime) this.times.push({ abs, depth: this.depth(rel), sec: m.mtime.sec, nsec: m.mtime.nsec });
  }

  dir(rel: RawName, m: EntryMeta = {}): this {
    fs.mkdirSync(this.abs(rel), { recursive: true });
    this.apply(rel, m, 'dir');
    return this;
  }

  file(rel: RawName, content: string | Buffer = '', m: EntryMeta = {}): this {
    fs.writeFileSync(this.create(rel), content);
    this.apply(rel, m, 'file');
    return this;
  }

  /** A file of `size` bytes whose only data are `head` at 0 and `tail` at the end (a hole between). */
  sparseFile(rel: RawName, size: number, head: Buffer, tail: Buffer, m: EntryMeta = {}): this {
    const fd = fs.openSync(this.create(rel), 'w');
    try {
      fs.writeSync(fd, head, 0, head.length, 0);
      fs.writeSync(fd, tail, 0, tail.length, size - tail.length);
    } finally {
      fs.closeSync(fd);
    }
    this.apply(rel, m, 'file');
    return this;
  }

  symlink(rel: RawName, target: RawName, m: EntryMeta = {}): this {
    fs.symlinkSync(Buffer.isBuffer(target) ? target : Buffer.from(target), this.create(rel));
    this.apply(rel, m, 'symlink');
    return this;
  }

  hardlink(rel: RawName, existing: RawName): this {
    fs.linkSync(this.abs(existing), this.create(rel));
    return this;
  }

  fifo(rel: RawName, m: EntryMeta = {}): this {
    mknod(this.create(rel), TYPE_BITS.fifo | 0o644);
    this.apply(rel, m, 'other');
    return this;
  }

  device(rel: RawName, kind: 'chr' | 'blk', maj: number, min: number, m: EntryMeta = {}): this {
    mknod(this.create(rel), TYPE_BITS[kind] | 0o600, maj, min);
    this.apply(rel, m, 'other');
    return this;
  }

  /**
   * A unix socket file left behind by a real listener: bound under a temporary name and
   * renamed before the server closes (node unlinks the bound path on close).
   */
  async socket(rel: RawName, m: EntryMeta = {}): Promise<this> {
    const tmp = path.join(this.root.toString(), `.sock-${process.pid}`);
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(tmp, resolve);
    });
    fs.renameSync(tmp, this.create(rel));
    await new Promise<void>((resolve) => server.close(() => resolve()));
    this.apply(rel, m, 'other');
    return this;
  }

  /** `setfacl -m <spec>` (`-d` for a default ACL). */
  acl(rel: RawName, spec: string, isDefault = false): this {
    const r = spawnSync('setfacl', [...(isDefault ? ['-d'] : []), '-m', spec, this.abs(rel).toString()], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`setfacl ${spec} failed: ${r.stderr || r.error?.message}`);
    return this;
  }

  /** Apply directory modes and all times, deepest first (the root's last). */
  finish(rootMeta: EntryMeta = {}): void {
    if (rootMeta.mode !== undefined) this.dirModes.push({ abs: this.root, depth: 0, mode: rootMeta.mode });
    if (rootMeta.mtime) this.times.push({ abs: this.root, depth: 0, sec: rootMeta.mtime.sec, nsec: rootMeta.mtime.nsec });
    for (const d of this.dirModes.sort((a, b) => b.depth - a.depth)) fs.chmodSync(d.abs, d.mode);
    for (const t of this.times.sort((a, b) => b.depth - a.depth)) utimens(t.abs, t.sec, t.nsec, t.sec, t.nsec, true);
  }
}

export function sha256File(abs: Buffer | string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(abs, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (!n) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

export interface SnapshotOptions {
  /** Record xattrs (default true). */
  xattrs?: boolean;
}

/** Every entry below `root` (the root itself as path ''), keyed by display path. */
export function snapshotTree(root: RawName, opts: SnapshotOptions = {}): TreeSnapshot {
  const out: TreeSnapshot = new Map();
  const rootBuf = Buffer.isBuffer(root) ? root : Buffer.from(root);
  const walk = (abs: Buffer, rel: Buffer) => {
    const st = fs.lstatSync(abs, { bigint: true });
    const type = typeOf(Number(st.mode));
    const e: TreeEntry = {
      path: displayPath(rel),
      type,
      mode: Number(st.mode) & 0o7777,
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeNs: st.mtimeNs,
      ino: st.ino,
      nlink: Number(st.nlink),
    };
    if (type === 'file') {
      e.size = Number(st.size);
      e.sha256 = sha256File(abs);
    } else if (type === 'symlink') {
      e.target = displayPath(fs.readlinkSync(abs, { encoding: 'buffer' }));
    } else if (type === 'chr' || type === 'blk') {
      e.rdev = `${major(st.rdev)}:${minor(st.rdev)}`;
    }
    if ((opts.xattrs ?? true) && (type === 'file' || type === 'dir')) {
      const x: Record<string, string> = {};
      for (const name of listXattrs(abs).map((n) => n.toString()).sort()) x[name] = getxattr(abs, name)?.toString('hex') ?? '';
      e.xattrs = x;
    }
    out.set(e.path, e);
    if (type === 'dir') {
      const names = fs.readdirSync(abs, { encoding: 'buffer' }).sort(Buffer.compare);
      for (const n of names) walk(rawJoin(abs, n), rawJoin(rel, n));
    }
  };
  walk(rootBuf, Buffer.alloc(0));
  return out;
}

/** Paths sharing an inode (groups of two or more), each sorted, groups sorted. */
export function hardlinkGroups(tree: TreeSnapshot): string[][] {
  const byIno = new Map<bigint, string[]>();
  for (const e of tree.values()) {
    if (e.type !== 'file') continue;
    const g = byIno.get(e.ino) ?? [];
    g.push(e.path);
    byIno.set(e.ino, g);
  }
  return [...byIno.values()]
    .filter((g) => g.length > 1)
    .map((g) => g.sort())
    .sort((a, b) => (a[0] < b[0] ? -1 : 1));
}

/** A snapshot without the entries at `paths` and everything below them. */
export function withoutPaths(tree: TreeSnapshot, paths: string[]): TreeSnapshot {
  const out: TreeSnapshot = new Map();
  for (const [k, v] of tree) if (!paths.some((p) => k === p || k.startsWith(`${p}/`))) out.set(k, v);
  return out;
}

/** Only the entries at/below `sub`, re-rooted there (`sub` becomes ''). */
export function subtree(tree: TreeSnapshot, sub: string): TreeSnapshot {
  const out: TreeSnapshot = new Map();
  for (const [k, v] of tree) {
    if (k === sub) out.set('', { ...v, path: '' });
    else if (k.startsWith(`${sub}/`)) out.set(k.slice(sub.length + 1), { ...v, path: k.slice(sub.length + 1) });
  }
  return out;
}

export interface CompareOptions {
  /** Fields not compared (e.g. 'uid'/'gid' when owners cannot be restored). */
  ignore?: Array<keyof TreeEntry>;
  /** Paths whose metadata is not compared, only their presence and type (e.g. the root). */
  presenceOnly?: string[];
}

const COMPARED: Array<keyof TreeEntry> = ['type', 'mode', 'uid', 'gid', 'mtimeNs', 'size', 'sha256', 'target', 'rdev', 'xattrs'];

function show(v: unknown): string {
  return typeof v === 'bigint' ? v.toString() : JSON.stringify(v);
}

/**
 * Differences between a restored tree and the expected one, one readable line each (empty when
 * equal): missing/extra paths, every differing field, and differing hardlink groups.
 */
export function diffTrees(actual: TreeSnapshot, expected: TreeSnapshot, opts: CompareOptions = {}): string[] {
  const out: string[] = [];
  const ignore = new Set(opts.ignore ?? []);
  const presenceOnly = new Set(opts.presenceOnly ?? []);
  for (const [p, want] of expected) {
    const got = actual.get(p);
    if (!got) {
      out.push(`missing: ${p || '/'} (${want.type})`);
      continue;
    }
    for (const f of COMPARED) {
      if (ignore.has(f) || (presenceOnly.has(p) && f !== 'type')) continue;
      const a = show(got[f]);
      const b = show(want[f]);
      if (a !== b) out.push(`${p || '/'}: ${f} is ${a}, expected ${b}`);
    }
  }
  for (const p of actual.keys()) if (!expected.has(p)) out.push(`unexpected: ${p} (${actual.get(p)!.type})`);
  const ga = JSON.stringify(hardlinkGroups(actual));
  const gb = JSON.stringify(hardlinkGroups(expected));
  if (ga !== gb) out.push(`hardlink groups are ${ga}, expected ${gb}`);
  return out;
}

/** Recursively list a directory (names relative to it, sorted): for "nothing else was written" checks. */
export function listRecursive(dir: string): string[] {
  const out: string[] = [];
  const walk = (abs: string, rel: string) => {
    for (const d of fs.readdirSync(abs, { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      out.push(r);
      if (d.isDirectory()) walk(path.join(abs, d.name), r);
    }
  };
  walk(dir, '');
  return out.sort();
}

/**
 * Every entry of a legacy snapshot's catalog (`catalog.pcat1.didx`) below archive `archive`
 * (`root.pxar.didx`), keyed by display path relative to the archive root.
 */
export async function catalogPaths(ds: DataStore, dir: BackupDir, archive = 'root.pxar.didx'): Promise<Map<string, CatalogEntry>> {
  const idx = await ds.readIndex(dir, 'catalog.pcat1.didx');
  if (!(idx instanceof DynamicIndex)) throw new Error('catalog.pcat1.didx is not a dynamic index');
  const reader = await CatalogReader.open(new IndexReadAt(idx, { readChunk: (d, s) => ds.chunks.readChunk(d, s) }, 'catalog.pcat1.didx'));
  const top = (await reader.readDir(reader.root())).find((e) => e.name.toString() === archive);
  if (!top) throw new Error(`catalog has no archive ${archive}`);
  const out = new Map<string, CatalogEntry>();
  const walk = async (d: CatalogEntry, rel: Buffer) => {
    for (const e of await reader.readDir(d)) {
      const p = rawJoin(rel, e.name);
      out.set(displayPath(p), e);
      if (e.type === 'd') await walk(e, p);
    }
  };
  await walk(top, Buffer.alloc(0));
  return out;
}
