import { readFileSync, statfsSync, writeFileSync } from 'node:fs';
import { Command } from 'commander';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { registerMaintenance, registerSnapshotMaintenance } from '../../ts/cli/commands/maintenance.js';
import { UsageError } from '../../ts/cli/output.js';
import { BackupDir } from '../../ts/datastore/backup-dir.js';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import type { DataStore } from '../../ts/datastore/datastore.js';
import { BackupNamespace } from '../../ts/datastore/namespace.js';
import { parseBackupTime } from '../../ts/datastore/names.js';
import { ageChunks, chunkFiles, makeSnapshot, tempStore } from '../datastore/maintenance-helpers.js';

const ctx = { env: {} as NodeJS.ProcessEnv, signal: new AbortController().signal };

/** Run `pxb <args> --repository <ds>` with the maintenance commands; returns stdout or the error. */
async function run(ds: DataStore, ...args: string[]): Promise<{ out: string; error?: unknown }> {
  const program = new Command('pxb').exitOverride().configureOutput({ writeErr: () => undefined, writeOut: () => undefined });
  registerMaintenance(program, ctx);
  registerSnapshotMaintenance(program.command('snapshot'), ctx);
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  try {
    await program.parseAsync([...args, '--repository', ds.path], { from: 'user' });
    return { out };
  } catch (error) {
    return { out, error };
  } finally {
    spy.mockRestore();
  }
}

afterEach(() => vi.restoreAllMocks());

const g = new BackupGroup('host', 'elsa');
const TIMES = ['2019-12-02T11:59:15Z', '2019-12-03T11:59:15Z', '2019-12-04T11:59:15Z', '2019-12-04T12:59:15Z'];

describe('pxb namespace', () => {
  it('creates, lists and deletes namespaces; groups need --delete-groups', async () => {
    const ds = await tempStore();
    expect((await run(ds, 'namespace', 'create', 'a')).out).toBe('created namespace a\n');
    await run(ds, 'namespace', 'create', 'a/b');
    expect(String((await run(ds, 'namespace', 'create', 'x/y')).error)).toMatch(/parent namespace x does not exist/);
    expect(String((await run(ds, 'namespace', 'create', 'a')).error)).toMatch(/namespace a already exists/);
    expect(JSON.parse((await run(ds, 'namespace', 'list', '--output-format', 'json')).out)).toEqual([{ ns: '' }, { ns: 'a' }, { ns: 'a/b' }]);
    expect((await run(ds, 'namespace', 'list', '--ns', 'a', '--max-depth', '0')).out).toBe('a\n');

    await makeSnapshot(ds, new BackupGroup('host', 'h', BackupNamespace.parse('a/b')), 1_700_000_000);
    const refused = await run(ds, 'namespace', 'delete', 'a');
    expect(String(refused.error)).toMatch(/namespace a is not empty: .*needs delete-groups/);
    expect(await ds.namespaceExists(BackupNamespace.parse('a/b'))).toBe(true);

    const done = await run(ds, 'namespace', 'delete', 'a', '--delete-groups', '--output-format', 'json');
    expect(JSON.parse(done.out)).toEqual({ 'removed-namespaces': ['a/b', 'a'], 'removed-groups': 1, 'removed-snapshots': 1 });
    expect((await run(ds, 'namespace', 'list')).out).toBe('<root>\n');
    expect((await run(ds, 'namespace', 'delete', '')).error).toBeInstanceOf(UsageError);
  });
});

describe('pxb prune', () => {
  it('prints PBS prune results and removes with the same selection', async () => {
    const ds = await tempStore();
    for (const t of TIMES) await makeSnapshot(ds, g, parseBackupTime(t));
    const dry = await run(ds, 'prune', 'host/elsa', '--keep-daily', '2', '--dry-run', '--output-format', 'json');
    expect(JSON.parse(dry.out)).toEqual(
      TIMES.map((t, i) => ({ 'backup-type': 'host', 'backup-id': 'elsa', 'backup-time': parseBackupTime(t), keep: i % 2 === 1, protected: false })),
    );
    expect((await ds.listSnapshots(g)).length).toBe(4);

    const real = await run(ds, 'prune', 'host/elsa', '--keep-daily', '2');
    expect(real.error).toBeUndefined();
    expect(real.out).toMatch(/host\/elsa\/2019-12-02T11:59:15Z\s+removed\s+not selected by any keep option/);
    expect(real.out).toMatch(/host\/elsa\/2019-12-04T11:59:15Z\s+removed\s+older in a period kept by keep-daily/);
    expect(real.out).toMatch(/host\/elsa\/2019-12-04T12:59:15Z\s+keep\s+keep-daily/);
    expect((await ds.listSnapshots(g)).map((s) => s.dir.timeString)).toEqual([TIMES[1], TIMES[3]]);

    expect((await run(ds, 'prune', 'host/elsa', '--keep-last', '0')).error).toBeInstanceOf(UsageError);
    expect((await run(ds, 'prune', 'nohost/elsa', '--keep-last', '1')).error).toBeInstanceOf(UsageError);
  });
});

describe('pxb snapshot forget|protected|notes', () => {
  it('protects, annotates and forgets snapshots', async () => {
    const ds = await tempStore();
    const dir = await makeSnapshot(ds, g, parseBackupTime(TIMES[0]));
    const spec = `host/elsa/${TIMES[0]}`;
    await run(ds, 'snapshot', 'protected', 'update', spec, 'true');
    expect((await run(ds, 'snapshot', 'protected', 'show', spec)).out).toBe('true\n');
    expect(String((await run(ds, 'snapshot', 'forget', spec)).error)).toMatch(/is protected/);
    expect((await run(ds, 'snapshot', 'protected', 'update', spec, 'maybe')).error).toBeInstanceOf(UsageError);

    await run(ds, 'snapshot', 'notes', 'update', spec, 'first line\nsecond');
    expect((await run(ds, 'snapshot', 'notes', 'show', 'host/elsa')).out).toBe('first line\nsecond\n');
    expect(JSON.parse((await run(ds, 'snapshot', 'notes', 'show', spec, '--output-format', 'json')).out)).toBe('first line\nsecond');
    expect((await ds.loadManifest(dir)).unprotected['notes']).toBe('first line\nsecond');

    await run(ds, 'snapshot', 'protected', 'update', spec, 'false');
    expect((await run(ds, 'snapshot', 'forget', spec)).out).toBe(`removed snapshot ${spec}\n`);
    expect(await ds.listSnapshots(g)).toEqual([]);
    expect(String((await run(ds, 'snapshot', 'forget', spec)).error)).toMatch(/does not exist/);
  });
});

describe('pxb garbage-collect and verify', () => {
  it('changes a group owner (change-owner), not while the group is backed up', async () => {
    const ds = await tempStore();
    await makeSnapshot(ds, g, parseBackupTime(TIMES[0]));
    expect((await run(ds, 'change-owner', 'host/elsa', 'anna@pbs!laptop')).out).toBe('owner of host/elsa: anna@pbs!laptop\n');
    expect(await ds.getOwner(g)).toBe('anna@pbs!laptop');
    expect(String((await run(ds, 'change-owner', 'host/elsa', 'not an auth id')).error)).toMatch(/auth/i);
    expect(String((await run(ds, 'change-owner', 'host/nobody', 'anna@pbs')).error)).toMatch(/backup group host\/nobody does not exist/);
    const w = await ds.beginBackup(BackupNamespace.root, g, parseBackupTime(TIMES[1]), { owner: 'anna@pbs!laptop' });
    expect(String((await run(ds, 'change-owner', 'host/elsa', 'olaf@pbs')).error)).toMatch(/backup group host\/elsa is locked by another backup/);
    await w.abort();
    expect(await ds.getOwner(g)).toBe('anna@pbs!laptop');
  });

  it('collects garbage and reports PBS status fields', async () => {
    const ds = await tempStore();
    await makeSnapshot(ds, g, parseBackupTime(TIMES[0]));
    const dir = await makeSnapshot(ds, g, parseBackupTime(TIMES[1]));
    await ds.removeSnapshot(dir);
    ageChunks(ds, 3 * 86400);
    const r = await run(ds, 'garbage-collect', '--output-format', 'json');
    const status = JSON.parse(r.out) as Record<string, unknown>;
    expect(status).toMatchObject({ 'index-file-count': 1, 'removed-chunks': 1, 'disk-chunks': 1, 'pending-chunks': 0 });
    expect(chunkFiles(ds)).toHaveLength(1);
    const text = await run(ds, 'garbage-collect');
    expect(text.out).toMatch(/^Removed garbage: 0 B\nRemoved chunks: 0\n/);
    expect(text.out).toMatch(/On-Disk chunks: 1\n/);
    expect((await run(ds, 'garbage-collect', '--gc-atime-cutoff', '0')).error).toBeInstanceOf(UsageError);

    // status: the file system's space (as statfs says) and the last GC's result
    const st = JSON.parse((await run(ds, 'status', '--output-format', 'json')).out) as Record<string, number & Record<string, unknown>>;
    const fsStat = statfsSync(ds.path);
    expect(st.total).toBe(fsStat.blocks * fsStat.bsize);
    expect(st.used).toBeGreaterThan(0);
    expect(st.used + st.avail).toBeLessThanOrEqual(st.total);
    expect(st['gc-status']).toMatchObject({ 'disk-chunks': 1 });
    expect((await run(ds, 'status')).out).toMatch(/^total +used +avail\n-+ +-+ +-+\n\S+ \S+ +\S+ \S+ \(\d+\.\d %\) +\S+ \S+\n$/);
  });

  it('verifies snapshots, groups and everything, and fails when something is broken', async () => {
    const ds = await tempStore();
    const dir = await makeSnapshot(ds, g, parseBackupTime(TIMES[0]), [Buffer.from('some chunk data')]);
    const ok = await run(ds, 'verify', `host/elsa/${TIMES[0]}`, '--output-format', 'json');
    expect(ok.error).toBeUndefined();
    expect(JSON.parse(ok.out)).toMatchObject({
      snapshots: [{ 'backup-type': 'host', 'backup-id': 'elsa', 'backup-time': dir.time, state: 'ok', errors: [] }],
      failed: 0,
      'verified-chunks': 1,
    });
    const [digest] = chunkFiles(ds);
    const p = ds.chunks.chunkPath(digest);
    const b = readFileSync(p);
    b[b.length - 1] ^= 1;
    writeFileSync(p, b);
    const bad = await run(ds, 'verify', '--all');
    expect(String(bad.error)).toMatch(/verification failed for 1 snapshot\(s\)/);
    expect(bad.out).toMatch(/host\/elsa\/2019-12-02T11:59:15Z\s+failed/);
    expect((await ds.loadManifest(new BackupDir(g, dir.time))).verifyState?.state).toBe('failed');
    expect((await run(ds, 'verify')).error).toBeInstanceOf(UsageError);
    expect((await run(ds, 'verify', 'host/elsa', '--all')).error).toBeInstanceOf(UsageError);
  });
});
