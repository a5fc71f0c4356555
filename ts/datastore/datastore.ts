/**
 * DataStore: a local datastore directory in the PBS layout (spec datastore.md §1, §7).
 *
 *   <root>/.lock                      created on first use (PBS process lock file; empty)
 *   <root>/.chunks/<hhhh>/<digest>    ChunkStore (prefix dirs created lazily)
 *   <root>/[ns/<a>/…]<type>/<id>/     group: `owner`, optional `notes`
 *   …/<YYYY-MM-DDTHH:MM:SSZ>/         snapshot: `*.didx|*.fidx|*.blob`, `.protected`,
 *                                     finished iff `index.json.blob` exists
 *   <root>/.locks/…                   pxb lock files (hidden, so PBS GC and listings skip them):
 *                                     `<group path>.lock` (one writer per group; also taken by
 *                                     removeSnapshot/removeGroup) and `<snapshot path>.manifest.lock`.
 *   <root>/.gc-status                 JSON status of the last garbage collection (gc.ts)
 *
 * Invariants:
 *  - Every path is built from validated BackupNamespace/BackupGroup/BackupDir/archive names,
 *    so no input can address anything outside the datastore.
 *  - Listings only report directories whose names match the PBS regexes; symlinks, stray
 *    files and temporary files are ignored. Unfinished snapshots are skipped unless asked for.
 *  - Index and blob reads are checked against the manifest (csum and size).
 *  - The datastore must not be written by a running PBS server at the same time (PBS locks
 *    live under /run/proxmox-backup and are not seen here).
 */
import { lstat, mkdir, readdir, rm, rmdir, statfs, writeFile } from 'node:fs/promises';
import { closeSync, constants as fsConstants, openSync, readdirSync, type Dirent } from 'node:fs';
import path from 'node:path';
import { isNotFound } from '../backend/backend.js';
import { FsBackend, writeFileAtomic } from '../backend/fs.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { FormatError } from '../format/errors.js';
import { FixedIndex } from '../format/fixed-index.js';
import { BackupManifest, MANIFEST_BLOB_NAME, blobCsum, type FileInfo } from '../format/manifest.js';
import { BackupDir } from './backup-dir.js';
import { BackupGroup } from './backup-group.js';
import { BackupWriter } from './backup-writer.js';
import { CHUNK_DIR, ChunkStore } from './chunk-store.js';
import { LockFile, LockedError, inspectLock, type LockHolder } from './lock.js';
import { flock } from '../native/fs.js';
import { BackupNamespace, MAX_NAMESPACE_DEPTH } from './namespace.js';
import {
  BACKUP_ID_RE,
  BACKUP_TIME_RE,
  BACKUP_TYPES,
  SAFE_ID_RE,
  archiveKind,
  ownerMatches,
  parseBackupTime,
  tmpArchiveName,
  validateAuthid,
  validateBackupTime,
} from './names.js';

export const LOCK_FILE = '.lock';
export const LOCKS_DIR = '.locks';
export const PROTECTED_MARKER = '.protected';
const ARCHIVE_FILE_RE = /^.*\.(fidx|didx|blob)$/;

/**
 * PBS's datastore `sync-level`: `file` fsyncs every chunk, index and manifest with its
 * directory; `filesystem` writes without fsync and syncs the whole file system (syncfs) when a
 * backup finishes, before its manifest is published (PBS's default); `none` never syncs.
 */
export type SyncLevel = 'none' | 'file' | 'filesystem';

/** A held snapshot lock (`DataStore.lockSnapshotShared`). */
export interface SnapshotLock {
  release(): void;
}

export interface OpenOptions {
  /** Create the layout if the directory is missing or empty (default false). */
  create?: boolean;
  /** Shorthand for `syncLevel`: true = `file` (the default), false = `none`. */
  fsync?: boolean;
  /** Overrides `fsync`. */
  syncLevel?: SyncLevel;
}

export interface SnapshotInfo {
  dir: BackupDir;
  /** Has `index.json.blob`. */
  finished: boolean;
  protected: boolean;
  /** `*.didx`, `*.fidx`, `*.blob` file names, sorted. */
  files: string[];
}

export interface GroupRemoval {
  removedSnapshots: number;
  /** Protected snapshots left in place (the group then stays too). */
  protectedSnapshots: number;
  groupRemoved: boolean;
}

export interface NamespaceRemoval {
  removedGroups: number;
  removedSnapshots: number;
  /** Namespaces removed, deepest first. */
  removedNamespaces: BackupNamespace[];
}

export interface BeginBackupOptions {
  /** Auth id recorded as the owner of a new group and checked against an existing one. */
  owner: string;
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | null)?.code;
}

const byName = (a: Dirent, b: Dirent) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
const missing = (e: unknown) => errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR';

async function readDirEntries(dir: string): Promise<Dirent[]> {
  try {
    return (await readdir(dir, { withFileTypes: true })).sort(byName);
  } catch (e) {
    if (missing(e)) return [];
    throw e;
  }
}

/** `readDirEntries` for small directories (a snapshot's), without a pool round trip. */
function readDirEntriesSync(dir: string): Dirent[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).sort(byName);
  } catch (e) {
    if (missing(e)) return [];
    throw e;
  }
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isDirectory();
  } catch (e) {
    if (errno(e) === 'ENOENT' || errno(e) === 'ENOTDIR') return false;
    throw e;
  }
}

/** rmdir that ignores a missing or non-empty directory. */
async function rmdirIfEmpty(p: string): Promise<void> {
  try {
    await rmdir(p);
  } catch (e) {
    if (!['ENOENT', 'ENOTEMPTY', 'EEXIST', 'ENOTDIR'].includes(errno(e) ?? '')) throw e;
  }
}

/** mkdir that reports whether it created the directory. */
async function mkdirNew(p: string, mode = 0o755): Promise<boolean> {
  try {
    await mkdir(p, { mode });
    return true;
  } catch (e) {
    if (errno(e) === 'EEXIST' && (await isDirectory(p))) return false;
    throw e;
  }
}

export class DataStore {
  readonly backend: FsBackend;
  readonly chunks: ChunkStore;

  /** fsync every written file (sync level `file`). */
  readonly fsync: boolean;

  private constructor(
    readonly path: string,
    readonly syncLevel: SyncLevel,
  ) {
    this.fsync = syncLevel === 'file';
    this.backend = new FsBackend(path, { fsync: this.fsync });
    this.chunks = new ChunkStore(this.backend);
  }

  /** Open the datastore at `root`; with `create`, lay it out first if missing or empty. */
  static async open(root: string, options: OpenOptions = {}): Promise<DataStore> {
    const { create = false, fsync = true } = options;
    const syncLevel = options.syncLevel ?? (fsync ? 'file' : 'none');
    const abs = path.resolve(root);
    const chunkDir = path.join(abs, CHUNK_DIR);
    if (!(await isDirectory(chunkDir))) {
      if (!create) throw new Error(`${abs} is not a datastore (no ${CHUNK_DIR} directory)`);
      const existing = await readDirEntries(abs);
      if (existing.length > 0) {
        throw new Error(`refusing to create a datastore in ${abs}: the directory is not empty and has no ${CHUNK_DIR}`);
      }
      await mkdir(abs, { recursive: true, mode: 0o755 });
      await mkdirNew(chunkDir, 0o750);
    }
    try {
      await writeFile(path.join(abs, LOCK_FILE), '', { flag: 'wx', mode: 0o644 });
    } catch (e) {
      if (errno(e) !== 'EEXIST') throw e;
    }
    return new DataStore(abs, syncLevel);
  }

  // ---- paths -------------------------------------------------------------------------------

  namespacePath(ns: BackupNamespace): string {
    return ns.isRoot ? this.path : path.join(this.path, ...ns.path.split('/'));
  }

  groupPath(group: BackupGroup): string {
    return path.join(this.path, ...group.path.split('/'));
  }

  snapshotPath(dir: BackupDir): string {
    return path.join(this.path, ...dir.path.split('/'));
  }

  private groupLockPath(group: BackupGroup): string {
    return path.join(this.path, LOCKS_DIR, ...group.path.split('/')) + '.lock';
  }

  private manifestLockPath(dir: BackupDir): string {
    return path.join(this.path, LOCKS_DIR, ...dir.path.split('/')) + '.manifest.lock';
  }

  // ---- namespaces --------------------------------------------------------------------------

  async namespaceExists(ns: BackupNamespace): Promise<boolean> {
    return ns.isRoot || isDirectory(this.namespacePath(ns));
  }

  /** Create `ns` (its parent must exist); false if it already existed. */
  async createNamespace(ns: BackupNamespace): Promise<boolean> {
    const parent = ns.parent;
    if (!parent) return false;
    if (!(await this.namespaceExists(parent))) throw new Error(`parent namespace ${parent} does not exist`);
    const nsDir = path.join(this.namespacePath(parent), 'ns');
    await mkdirNew(nsDir);
    return mkdirNew(path.join(nsDir, ns.components[ns.depth - 1]));
  }

  /** `anchor` and its descendants up to `maxDepth` levels below it, depth first, sorted. */
  async listNamespaces(anchor: BackupNamespace = BackupNamespace.root, maxDepth = MAX_NAMESPACE_DEPTH): Promise<BackupNamespace[]> {
    if (!(await this.namespaceExists(anchor))) throw new Error(`namespace ${anchor} does not exist`);
    const out: BackupNamespace[] = [];
    const walk = async (ns: BackupNamespace, left: number): Promise<void> => {
      out.push(ns);
      if (left === 0 || ns.depth === MAX_NAMESPACE_DEPTH) return;
      for (const e of await readDirEntries(path.join(this.namespacePath(ns), 'ns'))) {
        if (e.isDirectory() && SAFE_ID_RE.test(e.name)) await walk(ns.child(e.name), left - 1);
      }
    };
    await walk(anchor, maxDepth);
    return out;
  }

  // ---- groups ------------------------------------------------------------------------------

  /** Groups of `ns` (not of its children), sorted by type and id. */
  async listGroups(ns: BackupNamespace = BackupNamespace.root): Promise<BackupGroup[]> {
    const out: BackupGroup[] = [];
    for (const type of BACKUP_TYPES) {
      for (const e of await readDirEntries(path.join(this.namespacePath(ns), type))) {
        if (e.isDirectory() && BACKUP_ID_RE.test(e.name)) out.push(new BackupGroup(type, e.name, ns));
      }
    }
    return out;
  }

  /** Owner auth id of a group, or null if the group has no owner file. */
  async getOwner(group: BackupGroup): Promise<string | null> {
    const text = await this.readOptional(`${group.path}/owner`);
    if (text === null) return null;
    const owner = text.toString('utf8').split('\n')[0].trimEnd();
    try {
      validateAuthid(owner);
    } catch (e) {
      throw new FormatError(`owner file of ${group}: ${(e as Error).message}`);
    }
    return owner;
  }

  async groupExists(group: BackupGroup): Promise<boolean> {
    return isDirectory(this.groupPath(group));
  }

  /** Change a group's owner (PBS change-owner), under the group lock: not while it is backed up. */
  async setOwner(group: BackupGroup, authid: string): Promise<void> {
    validateAuthid(authid);
    await this.requireDir(this.groupPath(group), `backup group ${group}`);
    const lock = await LockFile.acquire(this.groupLockPath(group), `backup group ${group}`, 'owner change', this.fsync);
    try {
      await this.backend.put(`${group.path}/owner`, Buffer.from(`${authid}\n`));
    } finally {
      await lock.release();
    }
  }

  async getGroupNotes(group: BackupGroup): Promise<string | null> {
    return (await this.readOptional(`${group.path}/notes`))?.toString('utf8') ?? null;
  }

  async setGroupNotes(group: BackupGroup, notes: string): Promise<void> {
    await this.requireDir(this.groupPath(group), `backup group ${group}`);
    await this.backend.put(`${group.path}/notes`, Buffer.from(notes, 'utf8'));
  }

  // ---- snapshots ---------------------------------------------------------------------------

  /** Snapshots of a group, oldest first; unfinished ones only with `includeUnfinished`. */
  async listSnapshots(group: BackupGroup, options: { includeUnfinished?: boolean } = {}): Promise<SnapshotInfo[]> {
    // A snapshot directory holds a handful of files: listed synchronously (~10 us each), a
    // group of 265 snapshots takes ~3 ms; one pool round trip each took 12-26 ms idle and
    // several times that next to a busy backup (a backup lists its group once).
    const out: SnapshotInfo[] = [];
    for (const e of await readDirEntries(this.groupPath(group))) {
      if (!e.isDirectory() || !BACKUP_TIME_RE.test(e.name)) continue;
      let dir: BackupDir;
      try {
        dir = new BackupDir(group, parseBackupTime(e.name));
      } catch {
        continue; // matches the pattern but is no real date
      }
      const entries = readDirEntriesSync(this.snapshotPath(dir));
      const files = entries.filter((f) => f.isFile() && ARCHIVE_FILE_RE.test(f.name)).map((f) => f.name);
      const finished = files.includes(MANIFEST_BLOB_NAME);
      if (!finished && !options.includeUnfinished) continue;
      const prot = entries.some((f) => f.name === PROTECTED_MARKER && f.isFile());
      out.push({ dir, finished, protected: prot, files });
    }
    return out.sort((a, b) => a.dir.time - b.dir.time);
  }

  /** Space of the file system holding the datastore, in bytes (PBS `status`: total, used, avail). */
  async usage(): Promise<{ total: number; used: number; avail: number }> {
    const st = await statfs(this.path);
    return { total: st.blocks * st.bsize, used: (st.blocks - st.bfree) * st.bsize, avail: st.bavail * st.bsize };
  }

  /**
   * Base for an incremental backup (spec §7): the newest finished snapshot, or null if there
   * is none or its manifest says `verify_state.state == "failed"` (no fallback to older ones).
   */
  async lastSuccessfulSnapshot(group: BackupGroup): Promise<BackupDir | null> {
    return (await this.baseSnapshot(group)).dir;
  }

  /** `lastSuccessfulSnapshot`, or why there is none (for the one-line notice of a backup). */
  async baseSnapshot(group: BackupGroup, listed?: SnapshotInfo[]): Promise<{ dir: BackupDir } | { dir: null; why: string }> {
    const snapshots = (listed ?? (await this.listSnapshots(group))).filter((s) => s.finished);
    const newest = snapshots[snapshots.length - 1];
    if (!newest) return { dir: null, why: 'no previous snapshot in this group' };
    let manifest: BackupManifest;
    try {
      manifest = await this.loadManifest(newest.dir);
    } catch (e) {
      // damaged: not a base (the next backup must not fail because of it)
      return { dir: null, why: `previous snapshot ${newest.dir} has an unreadable manifest (${(e as Error).message})` };
    }
    if (manifest.verifyState?.state === 'failed') return { dir: null, why: `previous snapshot ${newest.dir} failed verification` };
    return { dir: newest.dir };
  }

  async loadManifest(dir: BackupDir): Promise<BackupManifest> {
    const what = `${dir}/${MANIFEST_BLOB_NAME}`;
    let blob: Buffer;
    try {
      blob = await this.backend.get(`${dir.path}/${MANIFEST_BLOB_NAME}`);
    } catch (e) {
      if (isNotFound(e)) throw new Error(`snapshot ${dir} has no manifest (missing or unfinished)`);
      throw e;
    }
    return BackupManifest.fromBlob(blob, what);
  }

  /** Load, modify and atomically rewrite a snapshot's manifest under its manifest lock. */
  async updateManifest(dir: BackupDir, update: (manifest: BackupManifest) => void): Promise<BackupManifest> {
    const lock = await LockFile.acquire(this.manifestLockPath(dir), `manifest of ${dir}`, 'manifest update', this.fsync);
    try {
      const manifest = await this.loadManifest(dir);
      update(manifest);
      const snap = this.snapshotPath(dir);
      await writeFileAtomic(path.join(snap, MANIFEST_BLOB_NAME), manifest.toBlob(), {
        tmpPath: path.join(snap, tmpArchiveName(MANIFEST_BLOB_NAME)),
        fsync: this.fsync,
      });
      return manifest;
    } finally {
      await lock.release();
    }
  }

  /** Parse an index file and check its csum and size against the manifest entry. */
  async readIndex(dir: BackupDir, name: string, manifest?: BackupManifest): Promise<DynamicIndex | FixedIndex> {
    const kind = archiveKind(name);
    if (kind === 'blob') throw new Error(`${name} is a blob, not an index`);
    const { entry, data } = await this.readListedFile(dir, name, manifest);
    const what = `archive ${name} of ${dir}`;
    const index = kind === 'didx' ? DynamicIndex.parse(data, what) : FixedIndex.parse(data, what);
    const csum = index.computeCsum();
    if (!csum.equals(entry.csum)) {
      throw new FormatError(`${what}: index checksum ${csum.toString('hex')} does not match the manifest (${entry.csum.toString('hex')})`);
    }
    if (index.size !== entry.size) {
      throw new FormatError(`${what}: index describes ${index.size} bytes, the manifest says ${entry.size}`);
    }
    return index;
  }

  /** Raw bytes of a `.blob` listed in the manifest, checked against its csum and size. */
  async readBlob(dir: BackupDir, name: string, manifest?: BackupManifest): Promise<Buffer> {
    if (archiveKind(name) !== 'blob') throw new Error(`${name} is not a blob`);
    const { entry, data } = await this.readListedFile(dir, name, manifest);
    if (data.length !== entry.size || !blobCsum(data).equals(entry.csum)) {
      throw new FormatError(`blob ${name} of ${dir}: size or checksum does not match the manifest`);
    }
    return data;
  }

  private async readListedFile(dir: BackupDir, name: string, manifest?: BackupManifest): Promise<{ entry: FileInfo; data: Buffer }> {
    const m = manifest ?? (await this.loadManifest(dir));
    const entry = m.lookup(name);
    if (!entry) throw new Error(`archive ${name} is not listed in the manifest of ${dir}`);
    try {
      return { entry, data: await this.backend.get(`${dir.path}/${name}`) };
    } catch (e) {
      if (isNotFound(e)) throw new Error(`archive ${name} of ${dir} is missing`);
      throw e;
    }
  }

  /** `*.didx`, `*.fidx`, `*.blob` files of a snapshot, sorted. */
  async listFiles(dir: BackupDir): Promise<string[]> {
    const snap = this.snapshotPath(dir);
    await this.requireDir(snap, `snapshot ${dir}`);
    return (await readDirEntries(snap)).filter((e) => e.isFile() && ARCHIVE_FILE_RE.test(e.name)).map((e) => e.name);
  }

  async isProtected(dir: BackupDir): Promise<boolean> {
    return this.backend.exists(`${dir.path}/${PROTECTED_MARKER}`);
  }

  async setProtected(dir: BackupDir, on: boolean): Promise<void> {
    await this.requireDir(this.snapshotPath(dir), `snapshot ${dir}`);
    const key = `${dir.path}/${PROTECTED_MARKER}`;
    if (on) await this.backend.put(key, Buffer.alloc(0), { ifAbsent: true });
    else await this.backend.delete(key);
  }

  /** Snapshot notes (manifest `unprotected.notes`), or null. */
  async getSnapshotNotes(dir: BackupDir): Promise<string | null> {
    const notes = (await this.loadManifest(dir)).unprotected['notes'];
    return typeof notes === 'string' ? notes : null;
  }

  async setSnapshotNotes(dir: BackupDir, notes: string): Promise<void> {
    await this.updateManifest(dir, (m) => {
      m.unprotected['notes'] = notes;
    });
  }

  /**
   * Remove a snapshot (protected ones only with `force`). Takes the group lock, so it fails
   * while a backup of the group runs. The manifest goes first: an interrupted removal leaves
   * an unfinished snapshot, never a finished one with missing files.
   */
  async removeSnapshot(dir: BackupDir, options: { force?: boolean } = {}): Promise<void> {
    const group = dir.group;
    const lock = await LockFile.acquire(this.groupLockPath(group), `backup group ${group}`, 'snapshot removal', this.fsync);
    try {
      await this.requireDir(this.snapshotPath(dir), `snapshot ${dir}`);
      if (!options.force && (await this.isProtected(dir))) throw new Error(`snapshot ${dir} is protected`);
      await this.removeSnapshotLocked(dir);
    } finally {
      await lock.release();
    }
  }

  private async removeSnapshotLocked(dir: BackupDir): Promise<void> {
    // Also under the snapshot's manifest lock: a manifest update (verify state, notes) running
    // meanwhile would otherwise land its rewritten manifest in the directory being removed,
    // leaving a "finished" snapshot without archives. While one runs, the removal fails.
    const lock = await LockFile.acquire(this.manifestLockPath(dir), `manifest of ${dir}`, 'snapshot removal', this.fsync);
    // And exclusively under the snapshot lock: not while it is being read (a restore, a reader
    // session of pxb serve), whose chunks a GC after the removal could delete mid-read.
    let snap: SnapshotLock | null = null;
    try {
      snap = this.openSnapshotLock(dir, 'ex');
      await this.backend.delete(`${dir.path}/${MANIFEST_BLOB_NAME}`);
      await rm(this.snapshotPath(dir), { recursive: true, force: true });
    } finally {
      snap?.release();
      await lock.release();
    }
  }

  /**
   * Hold a snapshot for reading (PBS's shared snapshot lock: flock on the snapshot directory)
   * until `release()`: removing it (prune, forget, group or namespace removal) is refused
   * meanwhile, in this and any other process. Ends with the process, so it cannot go stale.
   */
  lockSnapshotShared(dir: BackupDir): SnapshotLock {
    const lock = this.openSnapshotLock(dir, 'sh');
    if (!lock) throw new Error(`snapshot ${dir} does not exist`);
    return lock;
  }

  /** flock on the snapshot directory, or null if it is gone; throws LockedError on conflict. */
  private openSnapshotLock(dir: BackupDir, mode: 'sh' | 'ex'): SnapshotLock | null {
    let fd: number;
    try {
      fd = openSync(this.snapshotPath(dir), fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
    let held = false;
    try {
      held = flock(fd, mode);
    } finally {
      if (!held) closeSync(fd);
    }
    if (!held) {
      throw new LockedError(mode === 'ex' ? `snapshot ${dir} is being read (a restore or reader session); not removed` : `snapshot ${dir} is being removed`, null);
    }
    let open = true;
    return {
      release: () => {
        if (open) closeSync(fd);
        open = false;
      },
    };
  }

  /**
   * Remove a backup group as PBS does: under the group lock (so never during a backup of it),
   * every snapshot (finished or not) except protected ones; the group directory (owner,
   * notes) goes only if no snapshot is left.
   */
  async removeGroup(group: BackupGroup): Promise<GroupRemoval> {
    const lock = await LockFile.acquire(this.groupLockPath(group), `backup group ${group}`, 'group removal', this.fsync);
    try {
      await this.requireDir(this.groupPath(group), `backup group ${group}`);
      const stats: GroupRemoval = { removedSnapshots: 0, protectedSnapshots: 0, groupRemoved: false };
      for (const s of await this.listSnapshots(group, { includeUnfinished: true })) {
        if (s.protected) {
          stats.protectedSnapshots++;
          continue;
        }
        await this.removeSnapshotLocked(s.dir);
        stats.removedSnapshots++;
      }
      if (stats.protectedSnapshots === 0) {
        await rm(this.groupPath(group), { recursive: true, force: true });
        stats.groupRemoved = true;
      }
      return stats;
    } finally {
      await lock.release();
    }
  }

  /**
   * Remove namespace `ns` and its descendants (spec gc-prune-verify.md §4). Without
   * `deleteGroups` it must hold no backup group; with it every group is removed first, but a
   * protected snapshot anywhere below `ns` refuses the whole removal before anything is
   * deleted. Directories are removed bottom-up with rmdir, so anything created concurrently
   * (or a foreign file) makes the removal fail instead of being deleted.
   */
  async removeNamespace(ns: BackupNamespace, options: { deleteGroups?: boolean } = {}): Promise<NamespaceRemoval> {
    if (ns.isRoot) throw new Error('the root namespace cannot be removed');
    const all = await this.listNamespaces(ns);
    const groups: BackupGroup[] = [];
    for (const n of all) groups.push(...(await this.listGroups(n)));
    if (groups.length && !options.deleteGroups) {
      throw new Error(
        `namespace ${ns} is not empty: it holds ${groups.length} backup group(s) (${groups.slice(0, 3).join(', ')}` +
          `${groups.length > 3 ? ', …' : ''}); deleting them needs delete-groups`,
      );
    }
    const protectedSnaps: BackupDir[] = [];
    for (const g of groups) {
      for (const s of await this.listSnapshots(g, { includeUnfinished: true })) if (s.protected) protectedSnaps.push(s.dir);
    }
    if (protectedSnaps.length) {
      throw new Error(`namespace ${ns} holds protected snapshot(s) (${protectedSnaps.slice(0, 3).join(', ')}); unprotect them first`);
    }
    const out: NamespaceRemoval = { removedGroups: 0, removedSnapshots: 0, removedNamespaces: [] };
    for (const g of groups) {
      const r = await this.removeGroup(g);
      out.removedSnapshots += r.removedSnapshots;
      if (r.groupRemoved) out.removedGroups++;
    }
    for (const n of [...all].sort((a, b) => b.depth - a.depth)) {
      const dir = this.namespacePath(n);
      for (const sub of [...BACKUP_TYPES, 'ns']) await rmdirIfEmpty(path.join(dir, sub));
      try {
        await rmdir(dir);
        out.removedNamespaces.push(n);
      } catch (e) {
        if (errno(e) === 'ENOENT') continue;
        if (errno(e) === 'ENOTEMPTY' || errno(e) === 'EEXIST') {
          throw new Error(`namespace ${n} could not be removed: ${dir} is not empty (created concurrently, or foreign files)`);
        }
        throw e;
      }
    }
    return out;
  }

  /**
   * Live holders of the pxb group locks (running backups, snapshot/group removals), oldest
   * first. Stale locks of dead processes are skipped; the garbage collector derives its
   * "oldest writer" from this list.
   */
  async activeGroupLocks(): Promise<LockHolder[]> {
    const out: LockHolder[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readDirEntries(dir)) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.isFile() && e.name.endsWith('.lock') && !e.name.endsWith('.manifest.lock') && p !== this.gcLockPath) {
          const seen = await inspectLock(p);
          // An unreadable lock cannot be dated: count it as held since the epoch (keeps everything).
          if (seen?.alive) out.push(seen.holder ?? { pid: 0, host: '?', start: null, since: 0, nonce: '', purpose: 'unknown' });
        }
      }
    };
    await walk(path.join(this.path, LOCKS_DIR));
    return out.sort((a, b) => a.since - b.since);
  }

  /** Lock file that serializes garbage collection runs. */
  get gcLockPath(): string {
    return path.join(this.path, LOCKS_DIR, 'gc.lock');
  }

  // ---- backup ------------------------------------------------------------------------------

  /**
   * Start a backup of `group` (type/id) in namespace `ns` at `time` (epoch seconds). Takes the
   * group's writer lock, creates the group with `owner` or checks the owner, removes snapshot
   * dirs left unfinished by dead writers, requires `time` to be newer than the last successful
   * snapshot (spec §7) and creates the snapshot directory, which must not exist.
   */
  async beginBackup(ns: BackupNamespace, group: BackupGroup, time: number, options: BeginBackupOptions): Promise<BackupWriter> {
    validateAuthid(options.owner);
    validateBackupTime(time);
    if (!group.ns.isRoot && !group.ns.equals(ns)) {
      throw new Error(`backup group ${group} is not in namespace ${ns}`);
    }
    const g = group.inNamespace(ns);
    if (!(await this.namespaceExists(ns))) throw new Error(`namespace ${ns} does not exist`);
    const lock = await LockFile.acquire(this.groupLockPath(g), `backup group ${g}`, 'backup', this.fsync);
    const groupPath = this.groupPath(g);
    let newGroup = false;
    try {
      await mkdir(path.dirname(groupPath), { recursive: true, mode: 0o755 });
      newGroup = await mkdirNew(groupPath);
      const owner = newGroup ? null : await this.getOwner(g);
      if (owner === null) {
        // A group directory without an owner file is adopted only while it holds no finished
        // snapshot (a crash between creating it and writing the owner): otherwise whoever
        // backs up first would gain access to someone else's snapshots (upstream refuses too).
        if (!newGroup && (await this.listSnapshots(g)).length) {
          throw new Error(`backup group ${g} has snapshots but no owner file; refusing to adopt it (set one with pxb change-owner)`);
        }
        await this.backend.put(`${g.path}/owner`, Buffer.from(`${options.owner}\n`));
      } else if (!ownerMatches(owner, options.owner)) throw new Error(`backup owner check failed (${options.owner} != ${owner})`);
      const snapshots = await this.listSnapshots(g, { includeUnfinished: true });
      for (const s of snapshots) {
        if (!s.finished) await rm(this.snapshotPath(s.dir), { recursive: true, force: true });
      }
      const previous = (await this.baseSnapshot(g, snapshots)).dir;
      const dir = new BackupDir(g, time);
      if (previous && time <= previous.time) {
        // (a second backup started within the same second as the last one: say why it clashes)
        const same = time === previous.time ? ' (snapshots are named by the second: the last one was made in this second)' : '';
        throw new Error(`backup time ${dir.timeString} is not newer than the last snapshot ${previous}${same}`);
      }
      const snapPath = this.snapshotPath(dir);
      if (!(await mkdirNew(snapPath))) throw new Error(`snapshot ${dir} already exists`);
      return new BackupWriter({ dir, path: snapPath, groupPath, newGroup, previous, lock, fsync: this.fsync, syncfs: this.syncLevel === 'filesystem' });
    } catch (e) {
      if (newGroup) await rm(groupPath, { recursive: true, force: true });
      await lock.release();
      throw e;
    }
  }

  // ---- helpers -----------------------------------------------------------------------------

  private async readOptional(key: string): Promise<Buffer | null> {
    try {
      return await this.backend.get(key);
    } catch (e) {
      if (isNotFound(e)) return null;
      throw e;
    }
  }

  private async requireDir(p: string, what: string): Promise<void> {
    if (!(await isDirectory(p))) throw new Error(`${what} does not exist`);
  }
}
