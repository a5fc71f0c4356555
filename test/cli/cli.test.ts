/**
 * The `pxb` command line end to end: `node bin/pxb.js` is spawned (running dist/, built by the
 * global setup) with a scrubbed environment whose HOME and XDG_DATA_HOME point into a temp
 * directory, so nothing touches the real home. Checks exit codes (0 ok, 1 failure, 2 usage),
 * one-line errors on stderr, text and JSON output against the datastore's real content.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { DataStore } from '../../ts/datastore/datastore.js';
import { BackupDir } from '../../ts/datastore/backup-dir.js';
import { DynamicIndex } from '../../ts/format/dynamic-index.js';
import { tempDir } from '../helpers/tmp.js';
import { TreeBuilder, diffTrees, listRecursive, snapshotTree } from '../helpers/tree.js';

const BIN = fileURLToPath(new URL('../../bin/pxb.js', import.meta.url));
const base = tempDir('pxb-cli-');
const src = path.join(base, 'src');
const repo = path.join(base, 'repo');
const home = path.join(base, 'home');
const xdg = path.join(base, 'xdg');
const T1 = 1_700_000_000;
const T1S = '2023-11-14T22:13:20Z';
const T2 = 1_700_000_600;
const T2S = '2023-11-14T22:23:20Z';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `pxb args…` in a clean environment (no PBS_REPOSITORY / PXB_DATASTORE unless given). */
function pxb(args: string[], env: Record<string, string> = {}, cwd = base): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    cwd,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, XDG_DATA_HOME: xdg, ...env },
  });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const lines = (s: string) => s.split('\n').filter((l) => l.length > 0);

function expectOk(r: Run): Run {
  expect(r.code, r.stderr).toBe(0);
  return r;
}

/** Exit `code` and exactly one `pxb: …` line on stderr. */
function expectFailure(r: Run, code: number, pattern: RegExp): void {
  expect(r.code, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(code);
  expect(lines(r.stderr), r.stderr).toHaveLength(1);
  expect(r.stderr).toMatch(pattern);
}

beforeAll(() => {
  fs.mkdirSync(home);
  const t = new TreeBuilder(src);
  t.file('a.txt', 'alpha\n', { mtime: { sec: 1_600_000_000, nsec: 5 } });
  t.dir('sub/deeper');
  t.file('sub/b.txt', 'beta\n'.repeat(100));
  t.file('sub/deeper/c.bin', Buffer.alloc(200_000, 7));
  t.symlink('sub/link', '../a.txt');
  t.hardlink('sub/hard', 'a.txt');
  t.file('skip.log', 'excluded');
  t.finish();
});

describe('backup, restore and listings', () => {
  beforeAll(() => {
    const first = expectOk(pxb(['backup', `root.pxar:${src}`, '--repository', repo, '--backup-id', 'cli', '--backup-time', String(T1), '--exclude', '*.log']));
    expect(lines(first.stdout)[0]).toBe(`snapshot host/cli/${T1S}`);
  });

  it('a second backup in JSON reports the snapshot and reuses unchanged files', () => {
    const r = expectOk(pxb(['backup', `root.pxar:${src}`, '--repository', repo, '--backup-id', 'cli', '--backup-time', String(T2), '--exclude', '*.log', '--output-format', 'json']));
    const j = JSON.parse(r.stdout);
    expect(j.snapshot).toBe(`host/cli/${T2S}`);
    expect(j.backupTime).toBe(T2);
    expect(j.dryRun).toBe(false);
    expect(j.warnings).toEqual([]);
    expect(j.archives[0]).toMatchObject({ archive: 'root.pxar', mode: 'metadata' });
    expect(j.archives[0].reusedFiles).toBeGreaterThan(0);
    expect(j.files.map((f: { filename: string }) => f.filename).sort()).toEqual(['root.mpxar.didx', 'root.ppxar.didx']);
    expect(r.stderr).toBe('');
    // the metadata cache lives under $HOME/.cache/pxb, one file per datastore/group/archive
    expect(fs.readdirSync(path.join(home, '.cache', 'pxb', 'metadata'))).toHaveLength(1);
  });

  it('--no-cache keeps no metadata cache; PXB_CACHE_DIR moves it', () => {
    const elsewhere = path.join(base, 'cache-elsewhere');
    const other = path.join(base, 'repo-nocache');
    expectOk(pxb(['backup', `root.pxar:${src}`, '--repository', other, '--backup-id', 'nocache', '--backup-time', String(T1), '--no-cache'], { PXB_CACHE_DIR: elsewhere }));
    // (the launcher's code cache lives there too: bin/pxb.js)
    expect(fs.readdirSync(elsewhere)).toEqual(['code-cache']);
    expectOk(pxb(['backup', `root.pxar:${src}`, '--repository', other, '--backup-id', 'nocache', '--backup-time', String(T2)], { PXB_CACHE_DIR: elsewhere }));
    expect(fs.readdirSync(path.join(elsewhere, 'metadata'))).toHaveLength(1);
  });

  it('restores the latest snapshot into a fresh directory', () => {
    const target = path.join(base, 'restored');
    const r = expectOk(pxb(['restore', 'host/cli', 'root.pxar', target, '--repository', repo]));
    expect(r.stdout).toMatch(/^restored root\.pxar of host\/cli\/2023-11-14T22:23:20Z to /);
    const want = snapshotTree(src);
    want.delete('skip.log');
    expect(diffTrees(snapshotTree(target), want)).toEqual([]);
  });

  it('restores one file of a given snapshot with --pattern, JSON output', () => {
    const target = path.join(base, 'one-file');
    const r = expectOk(pxb(['restore', `host/cli/${T1S}`, 'root.pxar', target, '--repository', repo, '--pattern', 'sub/b.txt', '--output-format', 'json']));
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ snapshot: `host/cli/${T1S}`, archive: 'root.pxar', files: 1, warnings: [] });
    expect(listRecursive(target)).toEqual(['sub', 'sub/b.txt']);
    expect(fs.readFileSync(path.join(target, 'sub/b.txt'), 'utf8')).toBe('beta\n'.repeat(100));
  });

  it('refuses to restore over existing files without --overwrite', () => {
    const target = path.join(base, 'restored-twice');
    expectOk(pxb(['restore', 'host/cli', 'root.pxar', target, '--repository', repo]));
    expectFailure(pxb(['restore', 'host/cli', 'root.pxar', target, '--repository', repo]), 1, /^pxb: .*exists/);
    expectOk(pxb(['restore', 'host/cli', 'root.pxar', target, '--repository', repo, '--overwrite']));
  });

  it('snapshot list (text and JSON)', async () => {
    const text = expectOk(pxb(['snapshot', 'list', '--repository', repo])).stdout;
    expect(text).toContain(`host/cli/${T1S}`);
    expect(text).toContain(`host/cli/${T2S}`);
    const j = JSON.parse(expectOk(pxb(['snapshot', 'list', 'host/cli', '--repository', repo, '--output-format', 'json'])).stdout);
    expect(j.map((s: { 'backup-time': number }) => s['backup-time'])).toEqual([T1, T2]);
    const ds = await DataStore.open(repo);
    for (const s of j) {
      expect(s).toMatchObject({ 'backup-type': 'host', 'backup-id': 'cli', protected: false });
      const m = await ds.loadManifest(BackupDir.parse(`host/cli/${new Date(s['backup-time'] * 1000).toISOString().replace('.000Z', 'Z')}`));
      expect(s.files).toEqual(m.files.map((f) => f.filename));
      expect(s.size).toBe(m.files.reduce((a, f) => a + f.size, 0));
    }
  });

  it('snapshot files (text and JSON) match the manifest', async () => {
    const text = expectOk(pxb(['snapshot', 'files', `host/cli/${T1S}`, '--repository', repo])).stdout;
    expect(text).toMatch(/root\.mpxar\.didx/);
    expect(text).toMatch(/root\.ppxar\.didx/);
    const j = JSON.parse(expectOk(pxb(['snapshot', 'files', `host/cli/${T1S}`, '--repository', repo, '--output-format', 'json'])).stdout);
    const ds = await DataStore.open(repo);
    const dir = BackupDir.parse(`host/cli/${T1S}`);
    const m = await ds.loadManifest(dir);
    expect(j).toEqual(m.files.map((f) => ({ filename: f.filename, size: f.size, 'crypt-mode': 'none', csum: f.csum.toString('hex') })));
    for (const f of j) {
      const idx = await ds.readIndex(dir, f.filename);
      expect(idx).toBeInstanceOf(DynamicIndex);
      expect(idx.computeCsum().toString('hex')).toBe(f.csum);
    }
  });

  it('list (text and JSON)', () => {
    const text = expectOk(pxb(['list', '--repository', repo])).stdout;
    expect(text).toMatch(new RegExp(`host/cli\\s+${T2S}\\s+2\\s`));
    const j = JSON.parse(expectOk(pxb(['list', '--repository', repo, '--output-format', 'json'])).stdout);
    expect(j).toHaveLength(1);
    expect(j[0]).toMatchObject({ 'backup-type': 'host', 'backup-id': 'cli', 'last-backup': T2, 'backup-count': 2 });
    expect(j[0].files).toContain('index.json.blob');
  });

  it('catalog dump (text and JSON) lists every archived path', () => {
    const want = snapshotTree(src);
    want.delete('skip.log');
    const text = lines(expectOk(pxb(['catalog', 'dump', 'host/cli', '--repository', repo])).stdout);
    const typeChar: Record<string, string> = { dir: 'd', file: 'f', symlink: 'l' };
    const expectedLines = [...want.values()].map((e) => {
      const p = e.path ? `root.pxar/${e.path}` : 'root.pxar';
      // the later name of a hardlinked inode is a hardlink entry
      if (e.path === 'sub/hard') return `h "${p}"`;
      return `${typeChar[e.type]} "${p}"${e.type === 'file' ? ` ${e.size}` : ''}`;
    });
    expect(text.sort()).toEqual(expectedLines.sort());

    const j = JSON.parse(expectOk(pxb(['catalog', 'dump', 'host/cli', '--repository', repo, '--output-format', 'json'])).stdout);
    expect(j.map((e: { path: string }) => e.path).sort()).toEqual([...want.keys()].map((p) => `/${p}`).sort());
    const a = j.find((e: { path: string }) => e.path === '/a.txt');
    expect(a).toMatchObject({ archive: 'root.pxar', type: 'file', size: 6, mtime: 1_600_000_000 });
  });

  it('several archives in one snapshot: catalog dump lists all, restore picks one', () => {
    const etc = path.join(base, 'etc-src');
    fs.mkdirSync(etc);
    fs.writeFileSync(path.join(etc, 'conf'), 'x = 1\n');
    const r = expectOk(pxb(['backup', `root.pxar:${src}`, `etc.pxar:${etc}`, '--repository', repo, '--backup-id', 'two', '--change-detection-mode', 'legacy', '--output-format', 'json']));
    expect(JSON.parse(r.stdout).files.map((f: { filename: string }) => f.filename).sort()).toEqual(['catalog.pcat1.didx', 'etc.pxar.didx', 'root.pxar.didx']);
    const dump = lines(expectOk(pxb(['catalog', 'dump', 'host/two', '--repository', repo])).stdout);
    expect(dump).toContain('d "etc.pxar"');
    expect(dump).toContain('f "etc.pxar/conf" 6');
    expect(dump).toContain('f "root.pxar/a.txt" 6');
    const only = lines(expectOk(pxb(['catalog', 'dump', 'host/two', '--archive-name', 'etc.pxar', '--repository', repo])).stdout);
    expect(only).toEqual(['d "etc.pxar"', 'f "etc.pxar/conf" 6']);
    const target = path.join(base, 'etc-restored');
    expectOk(pxb(['restore', 'host/two', 'etc.pxar', target, '--repository', repo]));
    expect(listRecursive(target)).toEqual(['conf']);
  });

  it('pretty JSON parses to the same value', () => {
    const compact = JSON.parse(expectOk(pxb(['list', '--repository', repo, '--output-format', 'json'])).stdout);
    const pretty = expectOk(pxb(['list', '--repository', repo, '--output-format', 'json-pretty'])).stdout;
    expect(lines(pretty).length).toBeGreaterThan(1);
    expect(JSON.parse(pretty)).toEqual(compact);
  });

  it('a second backup with the same --backup-time is refused (exit 1, one line)', () => {
    // snapshots and groups untouched (chunks are shared and lock files come and go)
    const snapshots = () => listRecursive(repo).filter((p) => p.startsWith('host/'));
    const before = snapshots();
    expectFailure(pxb(['backup', `root.pxar:${src}`, '--repository', repo, '--backup-id', 'cli', '--backup-time', String(T2)]), 1, /^pxb: .*2023-11-14T22:23:20Z/);
    expect(snapshots()).toEqual(before);
  });
});

describe('failures', () => {
  it('a missing snapshot: exit 1, one line', () => {
    expectFailure(pxb(['restore', 'host/nope', 'root.pxar', path.join(base, 'nope'), '--repository', repo]), 1, /^pxb: .*host\/nope/);
    expectFailure(pxb(['restore', 'host/cli/2020-01-01T00:00:00Z', 'root.pxar', path.join(base, 'nope'), '--repository', repo]), 1, /^pxb: .*does not exist/);
    expectFailure(pxb(['snapshot', 'files', 'host/nope', '--repository', repo]), 1, /^pxb: /);
    expectFailure(pxb(['catalog', 'dump', 'host/cli/2020-01-01T00:00:00Z', '--repository', repo]), 1, /^pxb: /);
    expect(fs.existsSync(path.join(base, 'nope'))).toBe(false);
  });

  it('a missing archive: exit 1, one line', () => {
    expectFailure(pxb(['restore', 'host/cli', 'other.pxar', path.join(base, 'nope2'), '--repository', repo]), 1, /^pxb: archive other\.pxar not found/);
  });

  it('a namespace that does not exist: exit 1, one line', () => {
    expectFailure(pxb(['backup', `root.pxar:${src}`, '--repository', repo, '--backup-id', 'ns', '--ns', 'nope']), 1, /^pxb: namespace nope does not exist/);
    expect(fs.existsSync(path.join(repo, 'ns'))).toBe(false);
  });

  it('a source that is not a directory: exit 1, the error as the one pxb: line', () => {
    // (the first backup of a group may print the "no previous snapshot" notice before it)
    for (const [source, pattern] of [
      [path.join(src, 'a.txt'), /^pxb: .*a\.txt: not a directory$/],
      [path.join(base, 'missing'), /^pxb: .*missing/],
    ] as Array<[string, RegExp]>) {
      const r = pxb(['backup', `root.pxar:${source}`, '--repository', repo, '--backup-id', 'file']);
      expect(r.code).toBe(1);
      const errors = lines(r.stderr).filter((l) => l.startsWith('pxb: '));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(pattern);
      expect(lines(r.stderr).at(-1)).toBe(errors[0]);
    }
    expect(fs.existsSync(path.join(repo, 'host', 'file'))).toBe(false);
  });

  it('a source given as a symlink to a directory is followed (as upstream), nothing below it is', () => {
    const link = path.join(base, 'src-link');
    fs.symlinkSync(src, link);
    const r = expectOk(pxb(['backup', `root.pxar:${link}`, '--repository', repo, '--backup-id', 'via-link', '--output-format', 'json']));
    const direct = expectOk(pxb(['backup', `root.pxar:${src}`, '--repository', repo, '--backup-id', 'direct', '--output-format', 'json']));
    const count = (x: Run) => JSON.parse(x.stdout).archives[0].entries;
    expect(count(r)).toBe(count(direct));
    const out = path.join(base, 'from-link');
    expectOk(pxb(['restore', 'host/via-link', 'root.pxar', out, '--repository', repo]));
    expect(diffTrees(snapshotTree(out), snapshotTree(src), { presenceOnly: [''] })).toEqual([]);
  });

  it('a repository that is not a datastore: exit 1, one line', () => {
    fs.mkdirSync(path.join(base, 'not-a-store'));
    expectFailure(pxb(['list', '--repository', path.join(base, 'not-a-store')]), 1, /^pxb: .*not a datastore/);
  });

  it('a corrupt chunk: exit 1, one line naming the archive and the chunk', async () => {
    const copy = path.join(base, 'repo-corrupt');
    fs.cpSync(repo, copy, { recursive: true });
    const ds = await DataStore.open(copy);
    const dir = BackupDir.parse(`host/cli/${T2S}`);
    const idx = await ds.readIndex(dir, 'root.ppxar.didx');
    const hex = Buffer.from(idx.chunk(0).digest).toString('hex');
    const file = ds.chunks.chunkPath(hex);
    const blob = fs.readFileSync(file);
    blob[blob.length - 1] ^= 0xff;
    fs.writeFileSync(file, blob);
    const r = pxb(['restore', 'host/cli', 'root.pxar', path.join(base, 'from-corrupt'), '--repository', copy]);
    expectFailure(r, 1, new RegExp(`^pxb: root\\.ppxar\\.didx: .*${hex}.*corrupt`));
  });

  it('a damaged manifest: the other snapshots are still listed, and the group can be backed up', async () => {
    const copy = path.join(base, 'repo-bad-manifest');
    fs.cpSync(repo, copy, { recursive: true });
    const ds = await DataStore.open(copy);
    const snaps = (await ds.listSnapshots(BackupDir.parse(`host/cli/${T2S}`).group)).map((s) => s.dir);
    expect(snaps.length).toBeGreaterThanOrEqual(2);
    const newest = snaps[snaps.length - 1];
    fs.writeFileSync(path.join(ds.snapshotPath(newest), 'index.json.blob'), 'not a blob');
    const list = expectOk(pxb(['snapshot', 'list', 'host/cli', '--repository', copy, '--output-format', 'json']));
    expect(list.stderr).toMatch(new RegExp(`^warning: snapshot ${newest.toString()}: `));
    const rows = JSON.parse(list.stdout) as Array<{ 'backup-time': number; size?: number }>;
    expect(rows.map((r) => r['backup-time'])).toEqual(snaps.map((d) => d.time));
    expect(rows[rows.length - 1].size).toBeUndefined();
    const again = expectOk(pxb(['backup', `root.pxar:${src}`, '--backup-id', 'cli', '--repository', copy, '--output-format', 'json']));
    expect(JSON.parse(again.stdout).archives[0].mode).toBe('data');
  });

  describe('bad usage: exit 2', () => {
    it('messages of pxb itself are one line', () => {
      expectFailure(pxb(['backup', 'nonsense', '--repository', repo]), 2, /^pxb: invalid backup spec "nonsense"/);
      expectFailure(pxb(['backup', `root.img:${src}`, '--repository', repo]), 2, /^pxb: .*only \.pxar/);
      expectFailure(pxb(['backup', `root.pxar:${src}`, '--repository', repo, '--chunk-size', '3']), 2, /^pxb: --chunk-size must be one of/);
      expectFailure(pxb(['backup', `root.pxar:${src}`, '--repository', repo, '--backup-time', 'yesterday']), 2, /^pxb: --backup-time/);
      expectFailure(pxb(['list', '--repository', 'user@host:store']), 2, /^pxb: .*repository/);
    });

    // commander's own errors (unknown command/option, missing argument, bad choice) are followed by
    // the whole help text (`showHelpAfterError()` in ts/cli/main.ts): many lines, not one.
    it('parser errors are one line too', () => {
      expectFailure(pxb(['backup']), 2, /missing required argument/);
      expectFailure(pxb(['frobnicate']), 2, /unknown command/);
      expectFailure(pxb(['list', '--bogus']), 2, /unknown option/);
      expectFailure(pxb(['list', '--output-format', 'xml']), 2, /xml/);
    });

    it('parser errors exit 2 and name the problem on the first line of stderr', () => {
      for (const [args, pattern] of [
        [['backup'], /missing required argument 'specs'/],
        [['frobnicate'], /unknown command 'frobnicate'/],
        [['list', '--bogus'], /unknown option '--bogus'/],
        [['list', '--output-format', 'xml'], /'xml' is invalid/],
        [['backup', `root.pxar:${src}`, '--change-detection-mode', 'fast'], /'fast' is invalid/],
        [['restore', 'host/cli', 'root.pxar', path.join(base, 'never'), '--repository', repo, '--pattern', '/'], /--pattern "\/": an empty pattern/],
        [['restore', 'host/cli', 'root.pxar', path.join(base, 'never'), '--repository', repo, '--pattern', ''], /--pattern "": an empty pattern/],
      ] as Array<[string[], RegExp]>) {
        const r = pxb(args);
        expect(r.code, args.join(' ')).toBe(2);
        expect(lines(r.stderr)[0]).toMatch(pattern);
        expect(r.stdout).toBe('');
      }
    });
  });
});

describe('dry run and datastore location', () => {
  it('--dry-run reads everything and stores nothing', () => {
    const dry = path.join(base, 'dry');
    const r = expectOk(pxb(['backup', `root.pxar:${src}`, '--repository', dry, '--backup-id', 'dry', '--dry-run', '--output-format', 'json']));
    const j = JSON.parse(r.stdout);
    expect(j.dryRun).toBe(true);
    expect(j.archives[0].bytesRead).toBeGreaterThan(200_000);
    expect(j.archives[0].bytesStored).toBe(0);
    const stored = listRecursive(dry).filter((p) => !fs.statSync(path.join(dry, p)).isDirectory() && p !== '.lock');
    expect(stored).toEqual([]);
    expect(fs.existsSync(path.join(dry, 'host'))).toBe(false);
  });

  it('without --repository the datastore is created under $XDG_DATA_HOME/pxb/datastore', async () => {
    const r = expectOk(pxb(['backup', `root.pxar:${src}`, '--backup-id', 'xdg', '--backup-time', String(T1)]));
    expect(lines(r.stdout)[0]).toBe(`snapshot host/xdg/${T1S}`);
    const store = path.join(xdg, 'pxb', 'datastore');
    const ds = await DataStore.open(store);
    expect((await ds.listGroups()).map((g) => g.toString())).toEqual(['host/xdg']);
    expect(fs.existsSync(path.join(home, '.local'))).toBe(false);
    // and every command finds it there
    const j = JSON.parse(expectOk(pxb(['list', '--output-format', 'json'])).stdout);
    expect(j.map((g: { 'backup-id': string }) => g['backup-id'])).toEqual(['xdg']);
  });

  it('a relative $XDG_DATA_HOME is ignored: $HOME/.local/share/pxb/datastore', async () => {
    expectOk(pxb(['backup', `root.pxar:${src}`, '--backup-id', 'home', '--backup-time', String(T1)], { XDG_DATA_HOME: 'relative/dir' }));
    const ds = await DataStore.open(path.join(home, '.local', 'share', 'pxb', 'datastore'));
    expect((await ds.listGroups()).map((g) => g.toString())).toEqual(['host/home']);
    expect(fs.existsSync(path.join(base, 'relative'))).toBe(false);
  });

  it('$PXB_DATASTORE overrides the default location', async () => {
    const store = path.join(base, 'env-store');
    expectOk(pxb(['backup', `root.pxar:${src}`, '--backup-id', 'env', '--backup-time', String(T1)], { PXB_DATASTORE: store }));
    const ds = await DataStore.open(store);
    expect((await ds.listGroups()).map((g) => g.toString())).toEqual(['host/env']);
    expectOk(pxb(['restore', 'host/env', 'root.pxar', path.join(base, 'env-restored')], { PXB_DATASTORE: store }));
    expect(fs.readFileSync(path.join(base, 'env-restored', 'a.txt'), 'utf8')).toBe('alpha\n');
  });

  it('a relative --repository is resolved against the working directory', async () => {
    const cwd = path.join(base, 'cwd');
    fs.mkdirSync(cwd);
    expectOk(pxb(['backup', `root.pxar:${src}`, '--repository', './rel-store', '--backup-id', 'rel', '--backup-time', String(T1)], {}, cwd));
    const ds = await DataStore.open(path.join(cwd, 'rel-store'));
    expect((await ds.listGroups()).map((g) => g.toString())).toEqual(['host/rel']);
  });
});

describe('benchmark', () => {
  it('reports the hot-path speeds as JSON', () => {
    const j = JSON.parse(expectOk(pxb(['benchmark', '--size', '1', '--min-seconds', '0', '--output-format', 'json'])).stdout);
    expect(j.length).toBeGreaterThan(3);
    for (const s of j) {
      expect(typeof s.name).toBe('string');
      expect(s['bytes-per-second']).toBeGreaterThan(0);
    }
  });
});
