/**
 * Server side of one reader (restore) session (spec protocol.md §4; PBS `api2/reader`).
 *
 * Invariants:
 *  - Only files of this one snapshot can be downloaded; names are checked (SAFE_ID ending in
 *    `.didx`, `.fidx` or `.blob`) before they touch the filesystem.
 *  - A chunk can only be downloaded after an index that references it was downloaded in this
 *    session (401 "download chunk … not allowed" otherwise).
 *  - Chunks are sent as stored (the raw DataBlob); the client verifies them.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { BackupDir } from '../datastore/backup-dir.js';
import { ChunkError } from '../datastore/chunk-store.js';
import type { DataStore, SnapshotLock } from '../datastore/datastore.js';
import { archiveKind } from '../datastore/names.js';
import { DynamicIndex } from '../format/dynamic-index.js';
import { FixedIndex } from '../format/fixed-index.js';
import { SPEEDTEST_SIZE } from '../protocol/constants.js';
import { READER_ENDPOINTS, type Endpoint } from '../protocol/endpoints.js';
import { badRequest, notFound, unauthorized } from '../protocol/errors.js';
import { param, type Params } from '../protocol/params.js';
import { ProtocolSession, type SessionOptions } from './session.js';

export class ReaderSession extends ProtocolSession {
  readonly label: string;
  private readonly allowed = new Set<string>();

  /**
   * `lock`: the snapshot's shared lock (PBS holds one for a reader session), so prune or
   * forget cannot remove it, and a later GC its chunks, while a client restores it.
   */
  constructor(
    readonly datastore: DataStore,
    readonly dir: BackupDir,
    options: SessionOptions,
    private readonly lock: SnapshotLock,
  ) {
    super(READER_ENDPOINTS, options);
    this.label = `reader ${dir}`;
  }

  protected async handle(ep: Endpoint, p: Params): Promise<unknown> {
    switch (ep.path) {
      case '/download':
        return this.download(param.str(p, 'file-name'));
      case '/chunk':
        return this.chunk(param.str(p, 'digest'));
      case '/speedtest':
        return Buffer.alloc(SPEEDTEST_SIZE, 'A');
      default:
        throw notFound(`Path '${ep.path}' not found.`);
    }
  }

  private async download(name: string): Promise<Buffer> {
    const kind = archiveKind(name);
    let data: Buffer;
    try {
      data = await readFile(path.join(this.datastore.snapshotPath(this.dir), name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw notFound(`open file '${this.dir}/${name}' failed - not found`);
      throw badRequest(`open file '${this.dir}/${name}' failed: ${(e as Error).message}`);
    }
    if (kind !== 'blob') {
      const what = `${this.dir}/${name}`;
      const index = kind === 'didx' ? DynamicIndex.parse(data, what) : FixedIndex.parse(data, what);
      for (let k = 0; k < index.count; k++) this.allowed.add(index.digest(k).toString('hex'));
      this.log(`registered ${index.count} chunks of ${name} as downloadable`);
    }
    return data;
  }

  private async chunk(digest: string): Promise<Buffer> {
    if (!this.allowed.has(digest)) throw unauthorized(`download chunk ${digest} not allowed`);
    try {
      return await this.datastore.chunks.load(digest);
    } catch (e) {
      // (the reason only: the store's message names its path on the server)
      if (e instanceof ChunkError) throw badRequest(`reading chunk ${digest} failed: the chunk is ${e.reason} in the datastore`);
      throw e;
    }
  }

  protected async onEnd(): Promise<void> {
    this.lock.release();
    this.log('session ended');
  }
}
