/**
 * The archive writer (`createArchive`) streaming to `pxb serve` through `RemoteChunkUploader`,
 * and the stream read back through a reader session: the bytes the server returns are the
 * bytes the archive writer produced, and a second backup only appends known chunks.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createArchive, type ChunkUploader } from '../../ts/archive/create.js';
import type { ChunkRecord } from '../../ts/archive/chunk-stream.js';
import { RemoteChunkUploader } from '../../ts/client/remote/chunk-uploader.js';
import type { BackupSession } from '../../ts/client/remote/backup-session.js';
import { indexStream } from '../../ts/datastore/index-reader.js';
import { decodeBlob } from '../../ts/format/blob.js';
import { BackupManifest } from '../../ts/format/manifest.js';
import { startHarness, type Harness } from './harness.js';
import { lcgBytes } from '../helpers/data.js';

const T0 = 1715091951;
const TOKEN = 'writer@pbs!t';
let h: Harness;
let secret: string;
let source: string;

beforeAll(async () => {
  h = await startHarness();
  secret = await h.token(TOKEN, 'backup');
  source = path.join(h.dir, 'src');
  await mkdir(path.join(source, 'sub'), { recursive: true });
  // Seeded data: the chunk count asserted below must not depend on luck (random data with
  // 64 KiB chunks gave exactly 5 chunks now and then).
  await writeFile(path.join(source, 'a.bin'), lcgBytes(1_000_000, 1));
  await writeFile(path.join(source, 'sub', 'b.txt'), 'hello\n'.repeat(20_000));
  await writeFile(path.join(source, 'sub', 'c.bin'), lcgBytes(600_000, 2));
});

afterAll(async () => {
  await h.close();
});

/** Back up `source` as root.pxar (legacy mode); returns the stream bytes the writer produced. */
async function backup(s: BackupSession, time: number): Promise<{ stream: Buffer; stats: { chunksNew: number; chunksKnown: number } }> {
  const remote = new RemoteChunkUploader(s);
  const parts: Buffer[] = [];
  const tee: ChunkUploader = {
    upload(archive: string, rec: ChunkRecord) {
      if (rec.blob) parts.push(decodeBlob(rec.blob));
      return remote.upload(archive, rec);
    },
  };
  const r = await createArchive({ source, archiveName: 'root.pxar', mode: 'legacy', uploader: tee, chunkSize: 64 * 1024 });
  const m = new BackupManifest('host', 'tree', time);
  for (const f of r.files) {
    const closed = await remote.close(f.filename, { csum: f.csum, size: f.size });
    m.addFile(f.filename, closed.size, closed.csum);
  }
  await s.uploadManifest(m);
  await s.finish();
  await h.server.whenIdle();
  return { stream: Buffer.concat(parts), stats: r.stats };
}

describe('createArchive over the backup protocol', () => {
  it('stores the archive on the server and reads the same stream back', async () => {
    const c = h.client(TOKEN, secret);
    const { stream, stats } = await backup(await c.startBackup({ backupType: 'host', backupId: 'tree', backupTime: T0 }), T0);
    expect(stats.chunksNew).toBeGreaterThan(5);
    const r = await c.startReader({ backupType: 'host', backupId: 'tree', backupTime: T0 });
    const idx = await r.downloadIndex('root.pxar.didx');
    const parts: Buffer[] = [];
    for await (const b of indexStream(idx, r, 'root.pxar.didx')) parts.push(b);
    expect(Buffer.concat(parts).equals(stream)).toBe(true);
    await r.close();
    await h.server.whenIdle();
  });

  it('appends the chunks of an unchanged tree without uploading them again', async () => {
    const s = await h.client(TOKEN, secret).startBackup({ backupType: 'host', backupId: 'tree', backupTime: T0 + 1 });
    await s.downloadPrevious('root.pxar.didx');
    const { stats } = await backup(s, T0 + 1);
    expect(stats.chunksNew).toBe(0);
    expect(stats.chunksKnown).toBeGreaterThan(5);
    const a = await h.ds.readIndex((await h.ds.listSnapshots((await h.ds.listGroups())[0]))[0].dir, 'root.pxar.didx');
    const b = await h.ds.readIndex((await h.ds.listSnapshots((await h.ds.listGroups())[0]))[1].dir, 'root.pxar.didx');
    expect(b.computeCsum().equals(a.computeCsum())).toBe(true);
  });
});
