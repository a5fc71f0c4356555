/**
 * Verify snapshots of a local datastore (spec gc-prune-verify.md §3), as PBS's verify task.
 *
 * Per snapshot: load the manifest (failure ⇒ failed, nothing written); check every file it
 * lists: blobs against size and SHA-256 (and decode unencrypted ones), indexes against the
 * manifest's csum and size, then every chunk they reference: magic, CRC, crypt mode against
 * the index's, and for unencrypted chunks zstd, SHA-256 == digest and size == the index's
 * chunk size. The result goes into the manifest as
 * `unprotected.verify_state = {state: "ok"|"failed", upid}` (under the manifest lock).
 *
 * Invariants:
 *  - Each chunk is read at most once per run (job-wide `verified` / `corrupt` sets, one
 *    in-flight read per digest); a later reference to a corrupt chunk fails its snapshot too.
 *  - A corrupt chunk is renamed aside to `<digest>.<n>.bad` (first free n of 0..9, the 10th
 *    time reuses `.9.bad`), so the next backup stores the chunk anew instead of deduplicating
 *    against the damaged copy (`ChunkStore.insert` writes a missing chunk); GC keeps the
 *    `.bad` copy while an index still references the digest. A missing chunk fails too.
 *  - A failed snapshot is not used as the base of the next backup (datastore.md §7).
 *  - Snapshots that vanish while being verified (concurrent prune) are reported as skipped.
 *  - Up to `concurrency` chunks are read and decoded in parallel (decode and hashing run on
 *    the libuv pool).
 */
import { renameSync, existsSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import path from 'node:path';
import { BLOB_MAGIC, MAX_CHUNK_SIZE, decodeBlobAsync, verifyBlob } from '../format/blob.js';
import type { CryptMode, BackupManifest } from '../format/manifest.js';
import { native } from '../native/index.js';
import type { BackupDir } from './backup-dir.js';
import type { BackupGroup } from './backup-group.js';
import type { DataStore } from './datastore.js';
import type { AnyIndex } from './index-reader.js';
import { BackupNamespace, MAX_NAMESPACE_DEPTH } from './namespace.js';
import { archiveKind } from './names.js';
import { newUpid, upidStartTime } from './upid.js';

export type VerifyTarget =
  | { snapshot: BackupDir }
  | { group: BackupGroup }
  | { all: true; ns?: BackupNamespace; maxDepth?: number };

export interface VerifyProgress {
  /** Snapshot being verified (`toString()` form). */
  snapshot: string;
  done: number;
  total: number;
}

export interface VerifyOptions {
  signal?: AbortSignal;
  /** Skip snapshots that already have a verify_state (PBS `ignore-verified`; default false). */
  ignoreVerified?: boolean;
  /** With `ignoreVerified`: re-verify when the last verification is older than this many days. */
  outdatedAfterDays?: number;
  /** Recorded in the UPID (default `<user>@pam`). */
  authId?: string;
  /** The datastore's name in the UPID (default: its directory's name; a server passes its store name). */
  storeName?: string;
  /** Chunks in flight (default 4). */
  concurrency?: number;
  onProgress?: (p: VerifyProgress) => void;
  /** Task-log style messages (chunk errors, renames, skips). */
  onLog?: (message: string) => void;
}

export interface SnapshotVerifyResult {
  dir: BackupDir;
  state: 'ok' | 'failed' | 'skipped';
  /** Problems found (at most 20 lines per archive, then a count). */
  errors: string[];
}

export interface VerifyResult {
  upid: string;
  snapshots: SnapshotVerifyResult[];
  /** Snapshots that failed. */
  failed: number;
  /** Distinct chunks found good / corrupt or missing. */
  verifiedChunks: number;
  corruptChunks: number;
  /** Paths chunks were renamed to. */
  renamedChunks: string[];
  /** Encoded bytes read and decoded bytes checked. */
  readBytes: number;
  decodedBytes: number;
  seconds: number;
}

const MAX_MESSAGES = 20;
/** Blobs (`*.blob`) may be larger than chunks. */
const MAX_BLOB_SIZE = 128 * 1024 * 1024;

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

type StoredCrypt = 'none' | 'encrypt';

function blobCrypt(blob: Uint8Array): StoredCrypt | null {
  const m = Buffer.from(blob.buffer, blob.byteOffset, Math.min(8, blob.length));
  if (m.equals(BLOB_MAGIC.uncompressed) || m.equals(BLOB_MAGIC.zstd)) return 'none';
  if (m.equals(BLOB_MAGIC.encrypted) || m.equals(BLOB_MAGIC.encryptedZstd)) return 'encrypt';
  return null;
}

/**
 * Move a corrupt chunk aside to `<digest>.<n>.bad` (PBS: first n in 0..9 not taken, else 9).
 * Returns the new path, or null if the chunk was not there.
 */
export function renameCorruptChunk(ds: DataStore, hex: string): string | null {
  const p = ds.chunks.chunkPath(hex);
  let n = 0;
  while (n < 9 && existsSync(`${p}.${n}.bad`)) n++;
  const target = `${p}.${n}.bad`;
  try {
    renameSync(p, target);
    return target;
  } catch (e) {
    if (errno(e) === 'ENOENT') return null;
    throw e;
  }
}

/** Job-wide chunk state: each digest is checked once. */
class ChunkVerifier {
  readonly verified = new Set<string>();
  readonly corrupt = new Set<string>();
  private readonly inFlight = new Map<string, Promise<string | null>>();
  readonly renamed: string[] = [];
  readBytes = 0;
  decodedBytes = 0;

  constructor(
    private readonly ds: DataStore,
    private readonly concurrency: number,
    private readonly log: (m: string) => void,
    private readonly signal?: AbortSignal,
  ) {}

  /** Check every chunk of `index`; returns the problems found. */
  async verifyIndex(index: AnyIndex, cryptMode: CryptMode): Promise<string[]> {
    const expected: StoredCrypt = cryptMode === 'encrypt' ? 'encrypt' : 'none';
    const problems: string[] = [];
    // Results are collected in index order, whatever order the reads finish in.
    const window: Array<Promise<string | null>> = [];
    const collect = (problem: string | null) => {
      if (problem) problems.push(problem);
    };
    for (let k = 0; k < index.count; k++) {
      if ((k & 1023) === 0) this.signal?.throwIfAborted();
      const digest = index.digest(k);
      const key = digest.toString('latin1');
      if (this.verified.has(key)) continue;
      if (this.corrupt.has(key) && !this.inFlight.has(key)) {
        window.push(Promise.resolve(`chunk ${digest.toString('hex')} was marked as corrupt`));
      } else {
        let p = this.inFlight.get(key);
        if (!p) {
          const started = this.check(digest.toString('hex'), key, index.chunk(k).size, expected);
          this.inFlight.set(key, started);
          void started.finally(() => this.inFlight.delete(key));
          p = started;
        }
        window.push(p);
      }
      if (window.length >= this.concurrency) collect(await window.shift()!);
    }
    for (const p of window) collect(await p);
    this.signal?.throwIfAborted();
    return problems;
  }

  /** Load and check one chunk; null if good, else the problem. Never rejects. */
  private async check(hex: string, key: string, size: number, expected: StoredCrypt): Promise<string | null> {
    let blob: Buffer;
    try {
      blob = await this.ds.chunks.load(hex);
    } catch (e) {
      // Missing: counts as corrupt (nothing to rename). Any other error (EACCES, EIO, EMFILE)
      // says nothing about the bytes: the snapshot fails verification, but the chunk is not
      // renamed to .bad, which would turn a readable-again chunk into a missing one.
      const ioError = !!(e as NodeJS.ErrnoException).code;
      return this.markCorrupt(hex, key, `can't verify chunk ${hex}, load failed - ${message(e)}`, !ioError);
    }
    this.readBytes += blob.length;
    const crypt = blobCrypt(blob);
    if (crypt === null) return this.markCorrupt(hex, key, `chunk ${hex} is corrupt: not a data blob (magic ${blob.subarray(0, 8).toString('hex')})`);
    try {
      if (crypt === 'encrypt') {
        verifyBlob(blob, `chunk ${hex} is corrupt`);
      } else {
        const data = await decodeBlobAsync(blob, MAX_CHUNK_SIZE, `chunk ${hex} is corrupt`);
        const actual = (await native.sha256Async(data)).toString('hex');
        if (actual !== hex) throw new Error(`chunk ${hex} is corrupt: its content hashes to ${actual}`);
        if (data.length !== size) throw new Error(`chunk ${hex} is corrupt: ${data.length} bytes, the index expects ${size}`);
        this.decodedBytes += data.length;
      }
    } catch (e) {
      return this.markCorrupt(hex, key, message(e));
    }
    this.verified.add(key);
    if (crypt !== expected) return `chunk ${hex}: crypt mode ${crypt} does not match the index crypt mode ${expected}`;
    return null;
  }

  private markCorrupt(hex: string, key: string, problem: string, rename = true): string {
    this.corrupt.add(key);
    this.log(problem);
    if (!rename) return problem;
    try {
      const to = renameCorruptChunk(this.ds, hex);
      if (to) {
        this.renamed.push(to);
        this.log(`corrupted chunk renamed to ${to}`);
      }
    } catch (e) {
      this.log(`could not rename corrupted chunk ${hex} - ${message(e)}`);
    }
    return problem;
  }
}

/** PBS `verify_filter`: false if the snapshot should be skipped. */
function wantsVerify(manifest: BackupManifest, options: VerifyOptions): boolean {
  if (!options.ignoreVerified) return true;
  const last = manifest.verifyState;
  if (!last) return true;
  if (options.outdatedAfterDays === undefined) return false;
  const started = upidStartTime(last.upid);
  if (started === null) return true;
  return Math.floor((Date.now() / 1000 - started) / 86400) > options.outdatedAfterDays;
}

async function verifySnapshot(ds: DataStore, dir: BackupDir, upid: string, verifier: ChunkVerifier, options: VerifyOptions): Promise<SnapshotVerifyResult> {
  const log = options.onLog ?? (() => undefined);
  try {
    await stat(ds.snapshotPath(dir));
  } catch (e) {
    if (errno(e) !== 'ENOENT') throw e;
    log(`SKIPPED: verify ${dir} - snapshot does not exist (anymore)`);
    return { dir, state: 'skipped', errors: [] };
  }
  let manifest: BackupManifest;
  try {
    manifest = await ds.loadManifest(dir);
  } catch (e) {
    log(`verify ${dir} - manifest load error: ${message(e)}`);
    return { dir, state: 'failed', errors: [`manifest: ${message(e)}`] };
  }
  if (!wantsVerify(manifest, options)) {
    log(`SKIPPED: verify ${dir} (recently verified)`);
    return { dir, state: 'skipped', errors: [] };
  }
  log(`verify ${dir}`);
  const errors: string[] = [];
  for (const info of manifest.files) {
    options.signal?.throwIfAborted();
    log(`  check ${info.filename}`);
    try {
      const kind = archiveKind(info.filename);
      if (kind === 'blob') {
        const blob = await ds.readBlob(dir, info.filename, manifest);
        const crypt = blobCrypt(blob);
        if (crypt === null) throw new Error('not a data blob');
        if (crypt === 'none') await decodeBlobAsync(blob, MAX_BLOB_SIZE, info.filename);
        else verifyBlob(blob, info.filename);
      } else {
        const index = await ds.readIndex(dir, info.filename, manifest);
        const problems = await verifier.verifyIndex(index, info.cryptMode);
        if (problems.length) {
          const shown = problems.slice(0, MAX_MESSAGES).map((p) => `${info.filename}: ${p}`);
          if (problems.length > MAX_MESSAGES) shown.push(`${info.filename}: … and ${problems.length - MAX_MESSAGES} more`);
          errors.push(...shown, `${info.filename}: ${problems.length} chunk(s) could not be verified`);
        }
      }
    } catch (e) {
      if (options.signal?.aborted) throw e;
      errors.push(`${info.filename}: ${message(e)}`);
    }
  }
  const state = errors.length ? 'failed' : 'ok';
  if (state === 'failed') log(`verify ${dir} failed: ${errors.length} problem(s)`);
  try {
    await ds.updateManifest(dir, (m) => {
      m.unprotected['verify_state'] = { state, upid };
    });
  } catch (e) {
    try {
      await stat(ds.snapshotPath(dir));
    } catch {
      log(`SKIPPED: verify ${dir} - snapshot removed while verifying`);
      return { dir, state: 'skipped', errors };
    }
    errors.push(`unable to update manifest blob - ${message(e)}`);
    return { dir, state: 'failed', errors };
  }
  return { dir, state, errors };
}

async function targetSnapshots(ds: DataStore, target: VerifyTarget): Promise<BackupDir[]> {
  const newestFirst = async (g: BackupGroup) => (await ds.listSnapshots(g)).map((s) => s.dir).reverse();
  if ('snapshot' in target) return [target.snapshot];
  if ('group' in target) {
    if (!(await ds.listGroups(target.group.ns)).some((g) => g.equals(target.group))) {
      throw new Error(`backup group ${target.group} does not exist`);
    }
    return newestFirst(target.group);
  }
  const out: BackupDir[] = [];
  for (const ns of await ds.listNamespaces(target.ns ?? BackupNamespace.root, target.maxDepth ?? MAX_NAMESPACE_DEPTH)) {
    for (const g of await ds.listGroups(ns)) out.push(...(await newestFirst(g)));
  }
  return out;
}

function workerOf(ds: DataStore, target: VerifyTarget, storeName?: string): { type: string; id: string } {
  const store = storeName ?? path.basename(ds.path);
  const nsPath = (ns: BackupNamespace) => ns.path; // PBS display_as_path: ns/a/ns/b
  if ('snapshot' in target) {
    const d = target.snapshot;
    const t = d.time.toString(16).toUpperCase().padStart(8, '0');
    return { type: 'verify_snapshot', id: `${store}:${nsPath(d.group.ns)}/${d.group.type}/${d.group.id}/${t}` };
  }
  if ('group' in target) {
    const g = target.group;
    return { type: 'verify_group', id: `${store}:${nsPath(g.ns)}/${g.type}/${g.id}` };
  }
  const ns = target.ns ?? BackupNamespace.root;
  return { type: 'verify', id: ns.isRoot ? store : `${store}:${nsPath(ns)}` };
}

/** Verify one snapshot, every snapshot of a group (newest first), or everything below a namespace. */
export async function verify(ds: DataStore, target: VerifyTarget, options: VerifyOptions = {}): Promise<VerifyResult> {
  const t0 = performance.now();
  const concurrency = options.concurrency ?? 4;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) throw new Error(`invalid verify concurrency ${concurrency}`);
  options.signal?.throwIfAborted();
  const worker = workerOf(ds, target, options.storeName);
  const upid = newUpid(worker.type, worker.id, options.authId ?? `${userInfo().username}@pam`);
  const dirs = await targetSnapshots(ds, target);
  const verifier = new ChunkVerifier(ds, concurrency, options.onLog ?? (() => undefined), options.signal);
  const snapshots: SnapshotVerifyResult[] = [];
  for (const dir of dirs) {
    options.onProgress?.({ snapshot: dir.toString(), done: snapshots.length, total: dirs.length });
    snapshots.push(await verifySnapshot(ds, dir, upid, verifier, options));
  }
  options.onProgress?.({ snapshot: '', done: snapshots.length, total: dirs.length });
  return {
    upid,
    snapshots,
    failed: snapshots.filter((s) => s.state === 'failed').length,
    verifiedChunks: verifier.verified.size,
    corruptChunks: verifier.corrupt.size,
    renamedChunks: verifier.renamed,
    readBytes: verifier.readBytes,
    decodedBytes: verifier.decodedBytes,
    seconds: (performance.now() - t0) / 1000,
  };
}
