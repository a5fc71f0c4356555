/**
 * `RemoteChunkUploader`: the archive writer's `ChunkUploader` (ts/archive/create.ts) on top of
 * a remote backup session, so `createArchive` can stream straight to a server. Each index
 * file gets its own `IndexUploader`, created on its first chunk; `close(name)` closes it on the
 * server and checks that the server's index is the one built locally.
 *
 * Invariants: chunks of one index arrive in stream order (the archive writer awaits each);
 * a chunk's offset must be where the remote index currently ends; a chunk without data must
 * be known to the server (from `downloadPrevious` or an earlier upload in this session).
 */
import type { ChunkUploader } from '../../archive/create.js';
import type { ChunkRecord } from '../../archive/chunk-stream.js';
import type { BackupSession, IndexUploader, IndexUploadResult } from './backup-session.js';

export class RemoteChunkUploader implements ChunkUploader {
  private readonly indexes = new Map<string, Promise<IndexUploader>>();

  constructor(private readonly session: BackupSession) {}

  private uploader(name: string): Promise<IndexUploader> {
    let p = this.indexes.get(name);
    if (!p) {
      p = this.session.dynamicUploader(name);
      this.indexes.set(name, p);
    }
    return p;
  }

  /** Known to the server (previous snapshot's indexes, or uploaded in this session). */
  known(digest: Buffer): boolean {
    return this.session.isKnown(digest);
  }

  async upload(archive: string, rec: ChunkRecord): Promise<{ isDuplicate: boolean; storedBytes: number }> {
    const up = await this.uploader(archive);
    if (rec.offset !== up.size) throw new Error(`${archive}: chunk at offset ${rec.offset}, but the index ends at ${up.size}`);
    const known = !rec.blob || this.session.isKnown(rec.digest);
    await up.add({ digest: rec.digest, size: rec.size, blob: rec.blob ?? undefined });
    return { isDuplicate: known, storedBytes: known || !rec.blob ? 0 : rec.blob.length };
  }

  /** Close the remote index `name`; `expected` is the locally built index's csum and size. */
  async close(name: string, expected?: { csum: Uint8Array; size: number }): Promise<IndexUploadResult> {
    const p = this.indexes.get(name);
    if (!p) throw new Error(`${name}: no chunk was uploaded for this index`);
    this.indexes.delete(name);
    const result = await (await p).close();
    if (expected && (!result.csum.equals(expected.csum) || result.size !== expected.size)) {
      throw new Error(`${name}: the server's index (${result.size} bytes, csum ${result.csum.toString('hex')}) differs from the local one`);
    }
    return result;
  }
}
