/**
 * BackupWriter: the transaction that creates one snapshot (spec datastore.md §1, §7).
 * Created by `DataStore.beginBackup`, which holds the group's writer lock for it.
 *
 * Invariants:
 *  - Index files are written as `<stem>.tmp_didx` / `.tmp_fidx`, blobs as `<stem>.tmp`, then
 *    renamed into place, so a file name in the snapshot always has complete contents.
 *  - `index.json.blob` is written last (tmp + rename): only then is the snapshot finished.
 *    Before that the snapshot dir has no manifest and listings skip it.
 *  - `finish` checks that the manifest names this snapshot and that every file it lists was
 *    added here with the same size and checksum, and that the lock is still held.
 *  - `abort` removes the snapshot directory (and the group directory if this writer created
 *    it and no snapshot is left in it). After `finish` or `abort` the lock is released and
 *    every method throws.
 */
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../backend/fs.js';
import { syncfs } from '../native/fs.js';
import { verifyBlob } from '../format/blob.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { FixedIndex } from '../format/fixed-index.js';
import { BackupManifest, MANIFEST_BLOB_NAME, blobCsum } from '../format/manifest.js';
import type { BackupDir } from './backup-dir.js';
import type { LockFile } from './lock.js';
import { archiveKind, tmpArchiveName } from './names.js';

export interface AddedFile {
  size: number;
  csum: Buffer;
}

/** What `DataStore.beginBackup` hands over to the writer. */
export interface BackupWriterContext {
  dir: BackupDir;
  /** Absolute snapshot directory (already created, empty). */
  path: string;
  /** Absolute group directory. */
  groupPath: string;
  /** True if this backup created the group (removed again on abort if left empty). */
  newGroup: boolean;
  /** Last successful snapshot of the group (base for incremental backups), or null. */
  previous: BackupDir | null;
  lock: LockFile;
  fsync: boolean;
  /** syncfs the datastore before publishing the manifest (sync level `filesystem`). */
  syncfs: boolean;
}

export class BackupWriter {
  readonly dir: BackupDir;
  readonly path: string;
  readonly previous: BackupDir | null;
  private readonly ctx: BackupWriterContext;
  private readonly files = new Map<string, AddedFile>();
  private readonly inFlight = new Set<string>();
  private state: 'open' | 'finished' | 'aborted' = 'open';

  constructor(ctx: BackupWriterContext) {
    this.ctx = ctx;
    this.dir = ctx.dir;
    this.path = ctx.path;
    this.previous = ctx.previous;
  }

  /** Names and checksums of the files added so far. */
  get addedFiles(): ReadonlyMap<string, AddedFile> {
    return this.files;
  }

  /**
   * Add a `.didx`/`.fidx` file. `csum`/`size` are what the manifest will say; they are checked
   * against the parsed index (index csum and archive/image size).
   */
  async addIndex(name: string, data: Buffer, expected: { csum: Uint8Array; size: number }): Promise<void> {
    this.ensureOpen();
    const kind = archiveKind(name);
    if (kind === 'blob') throw new Error(`${this.dir}: ${name} is a blob, not an index (use addBlob)`);
    const index = kind === 'didx' ? DynamicIndex.parse(data, name) : FixedIndex.parse(data, name);
    const csum = index.computeCsum();
    if (!csum.equals(expected.csum)) {
      throw new Error(`${this.dir}: ${name}: index checksum ${csum.toString('hex')} differs from the expected ${Buffer.from(expected.csum).toString('hex')}`);
    }
    if (index.size !== expected.size) {
      throw new Error(`${this.dir}: ${name}: index describes ${index.size} bytes, expected ${expected.size}`);
    }
    await this.write(name, data, { size: index.size, csum });
  }

  /** Add a `.blob` file (checked: magic and CRC). Returns its manifest size and csum. */
  async addBlob(name: string, data: Buffer): Promise<AddedFile> {
    this.ensureOpen();
    if (archiveKind(name) !== 'blob') throw new Error(`${this.dir}: ${name} is not a .blob name`);
    if (name === MANIFEST_BLOB_NAME) throw new Error(`${this.dir}: ${name} is written by finish(), not addBlob`);
    verifyBlob(data, `${this.dir}: ${name}`);
    const info = { size: data.length, csum: blobCsum(data) };
    await this.write(name, data, info);
    return info;
  }

  private async write(name: string, data: Buffer, info: AddedFile): Promise<void> {
    if (this.files.has(name) || this.inFlight.has(name)) throw new Error(`${this.dir}: ${name} was already added`);
    this.inFlight.add(name);
    try {
      await writeFileAtomic(path.join(this.path, name), data, {
        tmpPath: path.join(this.path, tmpArchiveName(name)),
        fsync: this.ctx.fsync,
      });
      this.files.set(name, info);
    } finally {
      this.inFlight.delete(name);
    }
  }

  /** Check `manifest` against the added files and publish it; the snapshot is then finished. */
  async finish(manifest: BackupManifest): Promise<void> {
    this.ensureOpen();
    const g = this.dir.group;
    if (manifest.backupType !== g.type || manifest.backupId !== g.id || manifest.backupTime !== this.dir.time) {
      throw new Error(
        `${this.dir}: manifest is for ${manifest.backupType}/${manifest.backupId} at ${manifest.backupTime}, not this snapshot`,
      );
    }
    if (this.inFlight.size > 0) throw new Error(`${this.dir}: ${[...this.inFlight].join(', ')} still being written`);
    if (this.files.size === 0) throw new Error(`${this.dir}: backup does not contain valid files (file count == 0)`);
    for (const f of manifest.files) {
      const added = this.files.get(f.filename);
      if (!added) throw new Error(`${this.dir}: manifest lists ${f.filename}, which was not added to this backup`);
      if (added.size !== f.size || !added.csum.equals(f.csum)) {
        throw new Error(
          `${this.dir}: manifest entry ${f.filename} (size ${f.size}, csum ${f.csum.toString('hex')}) ` +
            `does not match the added file (size ${added.size}, csum ${added.csum.toString('hex')})`,
        );
      }
    }
    await this.ctx.lock.assertHeld();
    // Everything the manifest references (chunks, indexes) must be on disk before it is.
    if (this.ctx.syncfs) await syncfs(this.path);
    await writeFileAtomic(path.join(this.path, MANIFEST_BLOB_NAME), manifest.toBlob(), {
      tmpPath: path.join(this.path, tmpArchiveName(MANIFEST_BLOB_NAME)),
      fsync: this.ctx.fsync,
    });
    this.state = 'finished';
    await this.ctx.lock.release();
  }

  /** Remove the unfinished snapshot and release the lock. Idempotent; refused after finish. */
  async abort(): Promise<void> {
    if (this.state === 'aborted') return;
    if (this.state === 'finished') throw new Error(`${this.dir}: already finished, use removeSnapshot`);
    this.state = 'aborted';
    try {
      await rm(this.path, { recursive: true, force: true });
      if (this.ctx.newGroup) {
        const left = await readdir(this.ctx.groupPath);
        if (left.every((n) => n === 'owner')) await rm(this.ctx.groupPath, { recursive: true, force: true });
      }
    } finally {
      await this.ctx.lock.release();
    }
  }

  get finished(): boolean {
    return this.state === 'finished';
  }

  private ensureOpen(): void {
    if (this.state !== 'open') throw new Error(`${this.dir}: backup writer is ${this.state}`);
  }
}
