import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, renameSync, statSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createBackup } from '../../ts/client/backup.js';
import { restore } from '../../ts/client/restore.js';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import { digestHex, type Digest } from '../../ts/datastore/chunk-store.js';
import type { DataStore } from '../../ts/datastore/datastore.js';
import { GC_STATUS_FILE, garbageCollect, readGcStatus } from '../../ts/datastore/gc.js';
import { BackupNamespace } from '../../ts/datastore/namespace.js';
import { utimens } from '../../ts/native/fs.js';
import { ageChunks, chunkFiles, makeSnapshot, readAllChunks, referencedDigests, sha256hex as sha, storeParts, fileContents, tempDir, tempStore } from './maintenance-helpers.js';

const T = 1_700_000_000;
const DAY = 86400;
const g = new BackupGroup('host', 'a');

const chunk = (tag: string, size = 1000) => Buffer.concat([Buffer.from(tag), randomBytes(size)]);
const chunkSize = (ds: DataStore, hex: string) => statSync(ds.chunks.chunkPath(hex)).size;

describe('garbageCollect: mark and sweep', () => {
  it('removes exactly the unreferenced chunks older than the cutoff and writes .gc-status', async () => {
    const ds = await tempStore();
    const [A, B, C, D, E] = ['A', 'B', 'C', 'D', 'E'].map((t) => chunk(t));
    const s1 = await makeSnapshot(ds, g, T, [A, B, C]);
    await makeSnapshot(ds, g, T + 1, [B, C, D]);
    await ds.createNamespace(BackupNamespace.parse('x'));
    await makeSnapshot(ds, new BackupGroup('host', 'b', BackupNamespace.parse('x')), T, [E, B]);
    const garbage = await storeParts(ds, [chunk('G1'), chunk('G2')]);
    await ds.removeSnapshot(s1);
    ageChunks(ds, 3 * DAY);

    const live = await referencedDigests(ds);
    const all = chunkFiles(ds);
    const doomed = all.filter((d) => !live.has(d));
    expect(doomed.sort()).toEqual([sha(A), ...garbage.digests].sort());
    const doomedBytes = doomed.reduce((a, d) => a + chunkSize(ds, d), 0);
    const liveBytes = [...live].reduce((a, d) => a + chunkSize(ds, d), 0);

    const r = await garbageCollect(ds);
    expect(chunkFiles(ds)).toEqual([...live].sort());
    expect(r.status).toMatchObject({
      indexFileCount: 2,
      indexDataBytes: B.length + C.length + D.length + E.length + B.length,
      removedChunks: 3,
      removedBytes: doomedBytes,
      diskChunks: 4,
      diskBytes: liveBytes,
      pendingChunks: 0,
      pendingBytes: 0,
      removedBad: 0,
      stillBad: 0,
    });
    expect(r.runningWriters).toBe(0);
    expect(r.minAtime).toBe(r.phase1Start - 1445 * 60);
    expect(r.chunksBefore).toBe(all.length);
    expect(r.chunksAfter).toBe(live.size);
    expect(r.bytesAfter).toBe(liveBytes);
    // marked chunks carry an atime from this run
    for (const d of live) expect(Math.floor(lstatSync(ds.chunks.chunkPath(d)).atimeMs / 1000)).toBeGreaterThanOrEqual(r.phase1Start);

    const onDisk = JSON.parse(readFileSync(path.join(ds.path, GC_STATUS_FILE), 'utf8')) as Record<string, unknown>;
    expect(Object.keys(onDisk).sort()).toEqual(
      ['upid', 'index-file-count', 'index-data-bytes', 'disk-bytes', 'disk-chunks', 'removed-bytes', 'removed-chunks', 'pending-bytes', 'pending-chunks', 'removed-bad', 'still-bad', 'cache-stats'].sort(),
    );
    expect(onDisk['removed-chunks']).toBe(3);
    expect(onDisk['upid']).toMatch(/^UPID:[A-Za-z0-9-]+:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:garbage_collection:store:[^:]+@pam:$/);
    expect(await readGcStatus(ds)).toEqual(r.status);
  });

  it('keeps young unreferenced chunks as pending and reports them', async () => {
    const ds = await tempStore();
    await makeSnapshot(ds, g, T, [chunk('live')]);
    ageChunks(ds, 3 * DAY);
    const young = await storeParts(ds, [chunk('young')]);
    ageChunks(ds, 60, [young.digests[0]]); // used a minute ago: inside the cutoff, before phase 1
    const r = await garbageCollect(ds);
    expect(chunkFiles(ds)).toContain(young.digests[0]);
    expect(r.status.pendingChunks).toBe(1);
    expect(r.status.pendingBytes).toBe(chunkSize(ds, young.digests[0]));
    expect(r.status.removedChunks).toBe(0);
    // a small cutoff makes it collectable once it is older than that
    ageChunks(ds, 120, [young.digests[0]]);
    const r2 = await garbageCollect(ds, { cutoffSeconds: 60 });
    expect(r2.status.removedChunks).toBe(1);
    expect(chunkFiles(ds)).not.toContain(young.digests[0]);
  });

  it('keeps .bad copies of missing referenced chunks and removes stale ones', async () => {
    const ds = await tempStore();
    const X = chunk('X');
    await makeSnapshot(ds, g, T, [X, chunk('Y')]);
    const stale = await storeParts(ds, [chunk('Z')]);
    const x = sha(X);
    renameSync(ds.chunks.chunkPath(x), `${ds.chunks.chunkPath(x)}.0.bad`);
    const z = stale.digests[0];
    renameSync(ds.chunks.chunkPath(z), `${ds.chunks.chunkPath(z)}.0.bad`);
    ageChunks(ds, 3 * DAY);

    const warnings: string[] = [];
    const r = await garbageCollect(ds, { onWarning: (m) => warnings.push(m) });
    expect(r.missingChunks).toBe(1);
    expect(warnings).toEqual([`unable to access non-existent chunk ${x}, required by host/a/2023-11-14T22:13:20Z/root.pxar.didx`]);
    expect(existsSync(`${ds.chunks.chunkPath(x)}.0.bad`)).toBe(true);
    expect(existsSync(`${ds.chunks.chunkPath(z)}.0.bad`)).toBe(false);
    expect(r.status.removedBad).toBe(1);
    expect(r.status.removedChunks).toBe(0);
  });

  it('marks index files outside the snapshot hierarchy and unfinished snapshots', async () => {
    const ds = await tempStore();
    await makeSnapshot(ds, g, T, [chunk('live')]);
    const stray = await storeParts(ds, [chunk('stray')]);
    await mkdir(path.join(ds.groupPath(g), 'not-a-snapshot'));
    await writeFile(path.join(ds.groupPath(g), 'not-a-snapshot', 'extra.didx'), stray.data);
    const partial = await storeParts(ds, [chunk('partial')]);
    await mkdir(path.join(ds.groupPath(g), '2030-01-01T00:00:00Z'));
    await writeFile(path.join(ds.groupPath(g), '2030-01-01T00:00:00Z', 'root.pxar.didx'), partial.data);
    ageChunks(ds, 3 * DAY);

    const warnings: string[] = [];
    const r = await garbageCollect(ds, { onWarning: (m) => warnings.push(m) });
    expect(r.status.removedChunks).toBe(0);
    expect(r.status.indexFileCount).toBe(3);
    expect(r.strayIndexFiles).toBe(1);
    expect(warnings).toEqual(['marking chunks of index file outside the backup hierarchy: host/a/not-a-snapshot/extra.didx']);
    expect(chunkFiles(ds)).toEqual(expect.arrayContaining([...stray.digests, ...partial.digests]));
  });

  it('aborts before sweeping when an index file is damaged', async () => {
    const ds = await tempStore();
    const dir = await makeSnapshot(ds, g, T, [chunk('live')]);
    await storeParts(ds, [chunk('garbage')]);
    await writeFile(path.join(ds.snapshotPath(dir), 'root.pxar.didx'), Buffer.concat([Buffer.alloc(4096), Buffer.from('x')]));
    ageChunks(ds, 3 * DAY);
    const before = chunkFiles(ds);
    await expect(garbageCollect(ds)).rejects.toThrow(/root\.pxar\.didx: wrong magic/);
    expect(chunkFiles(ds)).toEqual(before);
    expect(existsSync(path.join(ds.path, GC_STATUS_FILE))).toBe(false);
    expect(existsSync(ds.gcLockPath)).toBe(false);
  });

  it('stops on abort without removing anything or writing a status', async () => {
    const ds = await tempStore();
    await makeSnapshot(ds, g, T, [chunk('live')]);
    await storeParts(ds, [chunk('garbage')]);
    ageChunks(ds, 3 * DAY);
    const before = chunkFiles(ds);
    const ac = new AbortController();
    await expect(garbageCollect(ds, { signal: ac.signal, onProgress: (p) => p.phase === 'mark' && ac.abort(new Error('stop')) })).rejects.toThrow(
      'stop',
    );
    expect(chunkFiles(ds)).toEqual(before);
    expect(await readGcStatus(ds)).toBeNull();
  });

  it('runs only once at a time per datastore', async () => {
    const ds = await tempStore();
    await makeSnapshot(ds, g, T, [chunk('live')]);
    const results = await Promise.allSettled([garbageCollect(ds), garbageCollect(ds)]);
    const rejected = results.filter((r) => r.status === 'rejected');
    expect(rejected).toHaveLength(1);
    expect(String((rejected[0] as PromiseRejectedResult).reason)).toMatch(/is locked by another garbage collection \(pid \d+\)/);
  });

  it('puts back removal tombstones left by an interrupted run', async () => {
    const ds = await tempStore();
    const L = chunk('L');
    const dir = await makeSnapshot(ds, g, T, [L, chunk('M')]);
    const l = ds.chunks.chunkPath(sha(L));
    renameSync(l, `${l}.pxb-gc`);
    // a tombstone whose chunk was re-inserted meanwhile is just dropped
    const other = [...(await referencedDigests(ds))].find((d) => d !== sha(L))!;
    const o = ds.chunks.chunkPath(other);
    await writeFile(`${o}.pxb-gc`, await readFile(o));
    await garbageCollect(ds);
    expect(existsSync(l)).toBe(true);
    expect(existsSync(`${l}.pxb-gc`)).toBe(false);
    expect(existsSync(`${o}.pxb-gc`)).toBe(false);
    expect(await readAllChunks(ds, dir)).toBe(2);
  });

  it('removes temporary chunk files of dead writers once older than the cutoff, not fresh ones', async () => {
    const ds = await tempStore();
    const A = chunk('A');
    const dir = await makeSnapshot(ds, g, T, [A]);
    const a = ds.chunks.chunkPath(sha(A));
    const stale = `${a}.pxb-tmp-1f2e-3`;
    const fresh = `${a}.pxb-tmp-1f2e-4`;
    await writeFile(stale, 'left by a writer killed mid-insert');
    await writeFile(fresh, 'a writer still at work');
    const old = Math.floor(Date.now() / 1000) - 2 * DAY;
    utimens(stale, old, 0, old, 0);
    const r = await garbageCollect(ds);
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(fresh)).toBe(true);
    expect(existsSync(a)).toBe(true);
    expect(r.status.removedChunks).toBe(0);
    expect(await readAllChunks(ds, dir)).toBe(1);
  });

  it('refuses a cutoff below one second', async () => {
    const ds = await tempStore();
    await expect(garbageCollect(ds, { cutoffSeconds: 0 })).rejects.toThrow(/invalid GC cutoff/);
  });
});


// ---- GC concurrent with a running backup ---------------------------------------------------

async function makeTree(root: string, files: number, tag: string): Promise<void> {
  await mkdir(path.join(root, 'sub'), { recursive: true });
  for (let i = 0; i < files; i++) {
    await writeFile(path.join(root, i % 3 ? 'sub' : '', `${tag}-${i}.bin`), randomBytes(20_000 + i * 977));
  }
}

async function expectRestores(ds: DataStore, snapshot: string, archive: string, source: string): Promise<void> {
  const target = path.join(await tempDir('pxb-gc-restore-'), 'out');
  await restore({ datastore: ds, snapshot, archiveName: archive, target });
  const want = fileContents(source);
  const got = fileContents(target);
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [k, v] of want) expect(got.get(k)!.equals(v), k).toBe(true);
}

describe('garbageCollect concurrent with a backup', () => {
  const backup = (ds: DataStore, specs: Array<[string, string]>, time: number) =>
    createBackup({
      datastore: ds,
      specs: specs.map(([archiveName, p]) => ({ archiveName, path: p })),
      backupId: 'x',
      backupTime: time,
      chunkSize: 64 * 1024,
      changeDetectionMode: 'data',
    });

  it('started mid-backup with a tiny cutoff, removes no chunk a finished or the running backup needs', async () => {
    const work = await tempDir('pxb-gc-src-');
    const [src1, src2, src3] = ['src1', 'src2', 'src3'].map((d) => path.join(work, d));
    await makeTree(src1, 24, 'one');
    await makeTree(src2, 12, 'two');
    await makeTree(src3, 24, 'three');
    const ds = await tempStore();
    const group = new BackupGroup('host', 'x');

    // S0 is forgotten: its chunks become unreferenced, but the next backup reuses them.
    await backup(ds, [['extra.pxar', src2]], T);
    const s1 = await backup(ds, [['root.pxar', src1]], T + 10);
    const s0Only = await referencedDigests(ds);
    await ds.removeSnapshot((await ds.listSnapshots(group))[0].dir);
    const s1Chunks = await referencedDigests(ds);
    for (const d of s1Chunks) s0Only.delete(d);
    const garbage = await storeParts(ds, [chunk('G1'), chunk('G2'), chunk('G3')]);
    ageChunks(ds, 3 * DAY); // only marks and the running backup's touches can save a chunk now

    // Backup S2: new data first (referenced by no index yet), then S1's data (deduplicated),
    // then S0's data (deduplicated against unreferenced chunks). After its 3rd chunk insert
    // it pauses while a whole GC runs.
    // (A backup stores each chunk through storeData: hash, dedup touch or write, in one job.)
    const storeData = ds.chunks.storeData.bind(ds.chunks);
    const beforeGc: string[] = [];
    let gc: Awaited<ReturnType<typeof garbageCollect>> | undefined;
    let calls = 0;
    ds.chunks.storeData = async (data: Uint8Array, compress: boolean) => {
      const r = await storeData(data, compress);
      if (r.outcome === 'new' && ++calls === 3) {
        // Let the new chunks get older than the 1 s cutoff: only the writer rule can keep them.
        await new Promise((res) => setTimeout(res, 2100));
        gc = await garbageCollect(ds, { cutoffSeconds: 1 });
      }
      if (!gc && r.outcome === 'new') beforeGc.push(digestHex(r.digest));
      return r;
    };
    const s2 = await backup(ds, [['new.pxar', src3], ['root.pxar', src1], ['extra.pxar', src2]], T + 20);
    ds.chunks.storeData = storeData;

    expect(gc).toBeDefined();
    expect(gc!.runningWriters).toBe(1);
    expect(gc!.minAtime).toBe(gc!.oldestWriter - 300);
    expect(gc!.oldestWriter).toBeLessThan(gc!.phase1Start);
    expect(beforeGc.length).toBeGreaterThanOrEqual(2);
    for (const d of beforeGc) {
      // new data: no index referenced it while GC ran, only the writer's lock protected it
      expect(s1Chunks.has(d) || s0Only.has(d)).toBe(false);
      expect(await ds.chunks.has(d), `chunk ${d} stored by the running backup`).toBe(true);
    }
    // Unreferenced chunks past the cutoff are gone: the garbage, and S0's chunks, which S2
    // had not reached yet (it stored them again afterwards).
    for (const d of garbage.digests) expect(await ds.chunks.has(d)).toBe(false);
    expect(gc!.status.removedChunks).toBe(garbage.digests.length + s0Only.size);

    // Every referenced chunk exists and every snapshot restores.
    for (const d of await referencedDigests(ds)) expect(await ds.chunks.has(d), `referenced chunk ${d}`).toBe(true);
    await expectRestores(ds, s1.snapshot, 'root.pxar', src1);
    await expectRestores(ds, s2.snapshot, 'new.pxar', src3);
    await expectRestores(ds, s2.snapshot, 'root.pxar', src1);
    await expectRestores(ds, s2.snapshot, 'extra.pxar', src2);
  }, 30_000);

  it('running fully concurrently with a backup leaves every snapshot intact', async () => {
    const work = await tempDir('pxb-gc-src-');
    const src = path.join(work, 'src');
    await makeTree(src, 30, 'c');
    const ds = await tempStore();
    const s1 = await backup(ds, [['root.pxar', src]], T);
    await storeParts(ds, [chunk('G')]);
    ageChunks(ds, 3 * DAY);
    await writeFile(path.join(src, 'new.bin'), randomBytes(300_000));
    const [s2] = await Promise.all([backup(ds, [['root.pxar', src]], T + 1), garbageCollect(ds, { cutoffSeconds: 1 })]);
    for (const d of await referencedDigests(ds)) expect(await ds.chunks.has(d), `referenced chunk ${d}`).toBe(true);
    await expectRestores(ds, s2.snapshot, 'root.pxar', src);
    await rm(path.join(src, 'new.bin'));
    await expectRestores(ds, s1.snapshot, 'root.pxar', src);
  }, 30_000);
});
