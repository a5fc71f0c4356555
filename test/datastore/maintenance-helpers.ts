/** Helpers shared by the prune/GC/verify/namespace tests: real datastores in temp dirs. */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach } from 'vitest';
import { encodeBlob } from '../../ts/format/blob.js';
import { DynamicIndex, DynamicIndexWriter } from '../../ts/format/dynamic-index.js';
import { BackupManifest } from '../../ts/format/manifest.js';
import type { BackupDir } from '../../ts/datastore/backup-dir.js';
import type { BackupGroup } from '../../ts/datastore/backup-group.js';
import { DataStore } from '../../ts/datastore/datastore.js';
import { BackupNamespace } from '../../ts/datastore/namespace.js';
import { utimens } from '../../ts/native/fs.js';

export const OWNER = 'root@pam';

const dirs: string[] = [];
afterEach(async () => {
  while (dirs.length) await rm(dirs.pop()!, { recursive: true, force: true });
});

/** A fresh temp directory, removed after the test. */
export async function tempDir(prefix = 'pxb-maint-'): Promise<string> {
  const d = await mkdtemp(path.join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** A new empty datastore in a temp dir. */
export async function tempStore(): Promise<DataStore> {
  return DataStore.open(path.join(await tempDir(), 'store'), { create: true, fsync: false });
}

export function sha256hex(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Insert `parts` as chunks and return a dynamic index over them. */
export async function storeParts(ds: DataStore, parts: Buffer[]): Promise<{ data: Buffer; csum: Buffer; size: number; digests: string[] }> {
  const w = new DynamicIndexWriter();
  let end = 0;
  const digests: string[] = [];
  for (const p of parts) {
    const digest = createHash('sha256').update(p).digest();
    await ds.chunks.insert(digest, encodeBlob(p));
    end += p.length;
    w.add(end, digest);
    digests.push(digest.toString('hex'));
  }
  return { ...w.finish(), digests };
}

/** A finished snapshot whose `root.pxar.didx` references `parts` (default: one chunk naming the time). */
export async function makeSnapshot(
  ds: DataStore,
  group: BackupGroup,
  time: number,
  parts: Buffer[] = [Buffer.from(`data at ${time}`)],
  ns: BackupNamespace = group.ns,
): Promise<BackupDir> {
  const idx = await storeParts(ds, parts);
  const w = await ds.beginBackup(ns, group, time, { owner: OWNER });
  await w.addIndex('root.pxar.didx', idx.data, idx);
  const m = new BackupManifest(group.type, group.id, time);
  m.addFile('root.pxar.didx', idx.size, idx.csum);
  await w.finish(m);
  return w.dir;
}

/** Chunk file names (`<digest>` and `<digest>.<n>.bad`) in the store, sorted. */
export function chunkFiles(ds: DataStore): string[] {
  const root = path.join(ds.path, '.chunks');
  const out: string[] = [];
  for (const prefix of readdirSync(root)) {
    const dir = path.join(root, prefix);
    if (!lstatSync(dir).isDirectory()) continue;
    out.push(...readdirSync(dir));
  }
  return out.sort();
}

/** Set the atime (and mtime) of every chunk file to `secondsAgo` before now. */
export function ageChunks(ds: DataStore, secondsAgo: number, names: string[] = chunkFiles(ds)): void {
  const t = Math.floor(Date.now() / 1000) - secondsAgo;
  for (const n of names) utimens(path.join(ds.path, '.chunks', n.slice(0, 4), n), t, 0, t, 0);
}

/** Digests referenced by every `.didx` below the datastore root, read directly from the files. */
export async function referencedDigests(ds: DataStore): Promise<Set<string>> {
  const out = new Set<string>();
  const walk = async (dir: string): Promise<void> => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.name.startsWith('.')) continue;
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith('.didx')) {
        const idx = DynamicIndex.parse(await readFile(p), p);
        for (let k = 0; k < idx.count; k++) out.add(idx.digest(k).toString('hex'));
      }
    }
  };
  await walk(ds.path);
  return out;
}

/** Read every chunk of every index of `dir` through the verifying chunk reader. */
export async function readAllChunks(ds: DataStore, dir: BackupDir): Promise<number> {
  const m = await ds.loadManifest(dir);
  let n = 0;
  for (const f of m.files) {
    if (!f.filename.endsWith('idx')) continue;
    const idx = await ds.readIndex(dir, f.filename, m);
    for (let k = 0; k < idx.count; k++) {
      const c = idx.chunk(k);
      await ds.chunks.readChunk(c.digest, c.size);
      n++;
    }
  }
  return n;
}

/** Every regular file below `root` with its contents, keyed by relative path. */
export function fileContents(root: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (rel: string) => {
    for (const e of readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(r);
      else out.set(r, readFileSync(path.join(root, r)));
    }
  };
  walk('');
  return out;
}
