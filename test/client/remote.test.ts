/**
 * Remote repositories end to end: a real `pxb serve` child process on loopback and the `pxb`
 * CLI as a client — backup, metadata-mode incremental, restore, listings, two clients on
 * different groups at once, a second writer on the same group refused, wrong credentials.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempDir } from '../helpers/tmp.js';

const bin = fileURLToPath(new URL('../../bin/pxb.js', import.meta.url));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI with node, or as a program (`asProgram`: its launcher lines run first, bin/pxb.js). */
function pxb(args: string[], env: NodeJS.ProcessEnv, asProgram = false): Promise<Run> {
  return new Promise((resolve) => {
    const opts = { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'] };
    const child = asProgram ? spawn(bin, args, opts) : spawn(process.execPath, [bin, ...args], opts);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    // A client that finished its work must also exit (no connection left open).
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function makeTree(root: string, seed: number): void {
  let x = seed;
  for (let d = 0; d < 8; d++) {
    fs.mkdirSync(path.join(root, `d${d}`), { recursive: true });
    for (let f = 0; f < 25; f++) {
      const words: string[] = [];
      for (let i = 0; i < 200 + (x % 3000); i++) words.push(`w${(x = (x * 1103515245 + 12345) >>> 0) % 5000}`);
      fs.writeFileSync(path.join(root, `d${d}`, `f${f}.txt`), words.join(' '));
    }
  }
}

function sameTree(a: string, b: string): boolean {
  const list = (r: string): string[] => fs.readdirSync(r, { recursive: true, encoding: 'utf8' }).sort();
  const la = list(a);
  if (JSON.stringify(la) !== JSON.stringify(list(b))) return false;
  return la.every((p) => {
    const sa = fs.lstatSync(path.join(a, p));
    return sa.isDirectory() || fs.readFileSync(path.join(a, p)).equals(fs.readFileSync(path.join(b, p)));
  });
}

describe('remote repository through a real pxb serve process', () => {
  const base = tempDir();
  let server: ChildProcess;
  let env: NodeJS.ProcessEnv;
  let adminEnv: NodeJS.ProcessEnv;
  let port = 0;
  let certFile = '';

  beforeAll(async () => {
    const cfg = path.join(base, 'cfg');
    certFile = path.join(cfg, 'proxy.pem');
    server = spawn(process.execPath, [bin, 'serve', '--listen', '127.0.0.1:0', '--datastore', `store1=${path.join(base, 'ds')}`, '--config', cfg, '--no-fsync'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    await new Promise<void>((resolve, reject) => {
      server.stdout!.on('data', (d) => {
        out += d;
        if (/listening on https:\/\/127\.0\.0\.1:(\d+)/.test(out)) resolve();
      });
      server.on('exit', (c) => reject(new Error(`pxb serve exited (${c}): ${out}`)));
    });
    port = Number(/listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]);
    const fingerprint = /fingerprint: ([0-9a-f:]+)/.exec(out)![1];
    const tok = await pxb(['token', 'create', 'backup@pbs!ci', '--datastore', 'store1', '--role', 'backup', '--config', cfg], {});
    expect(tok.code).toBe(0);
    const secret = tok.stdout.trim().split('\n').pop()!;
    env = { PBS_REPOSITORY: `backup@pbs!ci@127.0.0.1:${port}:store1`, PBS_PASSWORD: secret, PBS_FINGERPRINT: fingerprint, XDG_DATA_HOME: path.join(base, 'xdg') };
    const adm = await pxb(['token', 'create', 'admin@pbs!ops', '--datastore', 'store1', '--role', 'admin', '--config', cfg], {});
    adminEnv = { ...env, PBS_REPOSITORY: `admin@pbs!ops@127.0.0.1:${port}:store1`, PBS_PASSWORD: adm.stdout.trim().split('\n').pop()! };
  }, 60_000);

  afterAll(() => {
    server?.kill('SIGTERM');
  });

  it('backs up, backs up incrementally (reusing chunks), lists and restores', async () => {
    const src = path.join(base, 'src');
    makeTree(src, 1);
    // 64 KiB chunks: with 4 MiB ones this small tree is a single chunk, and any change makes
    // PBS's padding rule re-encode everything.
    const first = await pxb(['backup', `root.pxar:${src}`, '--backup-id', 'web1', '--backup-time', '1700000000', '--chunk-size', '64', '--output-format', 'json'], env);
    expect(first.stderr).toMatch(/no previous snapshot/);
    expect(first.code).toBe(0);
    fs.appendFileSync(path.join(src, 'd3', 'f7.txt'), ' changed');
    const second = await pxb(['backup', `root.pxar:${src}`, '--backup-id', 'web1', '--backup-time', '1700000100', '--chunk-size', '64', '--output-format', 'json'], env);
    expect(second.code).toBe(0);
    const stats = JSON.parse(second.stdout).archives[0];
    expect(stats.mode).toBe('metadata');
    expect(stats.reusedFiles).toBeGreaterThan(100);
    expect(stats.injectedChunks).toBeGreaterThan(0);
    expect(stats.bytesRead).toBeLessThan(JSON.parse(first.stdout).archives[0].bytesRead / 2);

    const list = await pxb(['snapshot', 'list', 'host/web1', '--output-format', 'json'], env);
    expect(list.code).toBe(0);
    expect(JSON.parse(list.stdout).map((s: { 'backup-time': number }) => s['backup-time'])).toEqual([1700000000, 1700000100]);
    const groups = await pxb(['list', '--output-format', 'json'], env);
    expect(JSON.parse(groups.stdout)[0]['backup-id']).toBe('web1');

    const out = path.join(base, 'restored');
    const r = await pxb(['restore', 'host/web1', 'root.pxar', out], env);
    expect(r.code).toBe(0);
    expect(sameTree(src, out)).toBe(true);
    const cat = await pxb(['catalog', 'dump', 'host/web1/2023-11-14T22:13:20Z'], env);
    expect(cat.code).toBe(0);
    expect(cat.stdout).toContain('"root.pxar/d3/f7.txt"');
  }, 120_000);

  it('reuses the previous archive of an unchanged tree as it is, through the server too', async () => {
    const src = path.join(base, 'src-still');
    makeTree(src, 7);
    await new Promise((r) => setTimeout(r, 1100)); // (only second-old ctimes are trusted)
    const cacheEnv = { ...env, PXB_CACHE_DIR: path.join(base, 'client-cache') };
    const runs: Array<{ archives: Array<{ unchangedTree: boolean; chunksNew: number }>; files: Array<{ csum: string }> }> = [];
    for (let k = 0; k < 4; k++) {
      const r = await pxb(['backup', `root.pxar:${src}`, '--backup-id', 'still', '--backup-time', String(1_700_000_000 + k), '--output-format', 'json'], cacheEnv);
      expect(r.code, r.stderr).toBe(0);
      runs.push(JSON.parse(r.stdout));
    }
    // data mode; metadata mode, every file reused from the data-mode chunks (a fixed point);
    // then reused as it is, twice
    expect(runs.map((r) => r.archives[0].unchangedTree)).toEqual([false, false, true, true]);
    expect(runs[2].files).toEqual(runs[1].files);
    expect(runs[3].files).toEqual(runs[1].files);
    expect(runs[3].archives[0].chunksNew).toBe(0);
    const files = await pxb(['snapshot', 'files', 'host/still/2023-11-14T22:13:23Z', '--output-format', 'json'], env);
    expect(JSON.parse(files.stdout).map((f: { csum: string }) => f.csum).sort()).toEqual(runs[2].files.map((f) => f.csum).sort());
    const out = path.join(base, 'restored-still');
    expect((await pxb(['restore', 'host/still', 'root.pxar', out], env)).code).toBe(0);
    expect(sameTree(src, out)).toBe(true);
  }, 120_000);

  it('does not reuse a previous snapshot whose chunk is lost: falls back to data mode and re-uploads it', async () => {
    const src = path.join(base, 'lost-src');
    makeTree(src, 5);
    const first = await pxb(['backup', `root.pxar:${src}`, '--backup-id', 'lost', '--backup-time', '1700000000', '--chunk-size', '64', '--output-format', 'json'], env);
    expect(first.code).toBe(0);
    // lose a payload chunk of the snapshot (disk damage, a manual cleanup): the first digest of
    // its payload index (a .didx is a 4096-byte header, then 40-byte entries: end offset, digest)
    const didx = fs.readFileSync(path.join(base, 'ds', 'host', 'lost', '2023-11-14T22:13:20Z', 'root.ppxar.didx'));
    const digest = didx.subarray(4096 + 8, 4096 + 40).toString('hex');
    const lost = path.join(base, 'ds', '.chunks', digest.slice(0, 4), digest);
    fs.rmSync(lost);
    const second = await pxb(['backup', `root.pxar:${src}`, '--backup-id', 'lost', '--backup-time', '1700000100', '--chunk-size', '64', '--output-format', 'json'], env);
    expect(second.code).toBe(0);
    expect(second.stderr).toMatch(/not usable .*missing from the datastore/);
    expect(JSON.parse(second.stdout).archives[0].mode).toBe('data');
    expect(fs.existsSync(lost)).toBe(true);
    const out = path.join(base, 'lost-restored');
    const r = await pxb(['restore', 'host/lost/2023-11-14T22:15:00Z', 'root.pxar', out], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(sameTree(src, out)).toBe(true);
  }, 120_000);

  it('serves two clients on different groups at once and refuses a second writer on one group', async () => {
    const a = path.join(base, 'a');
    const b = path.join(base, 'b');
    makeTree(a, 2);
    makeTree(b, 3);
    const [ra, rb] = await Promise.all([
      pxb(['backup', `root.pxar:${a}`, '--backup-id', 'ga', '--backup-time', '1700000000'], env),
      pxb(['backup', `root.pxar:${b}`, '--backup-id', 'gb', '--backup-time', '1700000000'], env),
    ]);
    expect([ra.code, rb.code]).toEqual([0, 0]);
    // Two writers on one group: exactly one succeeds, the other gets a clear refusal.
    const big = path.join(base, 'big');
    makeTree(big, 4);
    for (let i = 0; i < 20; i++) fs.writeFileSync(path.join(big, `blob${i}`), Buffer.alloc(2_000_000, i));
    const [w1, w2] = await Promise.all([
      pxb(['backup', `root.pxar:${big}`, '--backup-id', 'same', '--backup-time', '1700000001'], env),
      pxb(['backup', `root.pxar:${big}`, '--backup-id', 'same', '--backup-time', '1700000002'], env),
    ]);
    const codes = [w1.code, w2.code].sort();
    expect(codes[0]).toBe(0);
    if (codes[1] !== 0) expect(`${w1.stderr}${w2.stderr}`).toMatch(/lock|already|running|not newer/i);
    // the group still works afterwards
    const again = await pxb(['backup', `root.pxar:${a}`, '--backup-id', 'same', '--backup-time', '1700000010'], env);
    expect(again.code).toBe(0);
  }, 120_000);

  it('refuses a wrong secret and a wrong fingerprint with one line and exit 1', async () => {
    const bad = await pxb(['list'], { ...env, PBS_PASSWORD: 'wrong' });
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    const fp = await pxb(['list'], { ...env, PBS_FINGERPRINT: 'aa:'.repeat(31) + 'aa' });
    expect(fp.code).toBe(1);
    expect(fp.stderr).toMatch(/fingerprint/i);
  }, 60_000);

  it('trusts the CA bundle in $NODE_EXTRA_CA_CERTS, also when the launcher hands it to pxb instead of node', async () => {
    // The server's self-signed certificate (for 127.0.0.1) as the only extra CA, no pin.
    const unpinned = { ...env, PBS_FINGERPRINT: undefined, NODE_EXTRA_CA_CERTS: undefined, PXB_EXTRA_CA_CERTS: undefined };
    const untrusted = await pxb(['list'], unpinned, true);
    expect(untrusted.code).toBe(1);
    expect(untrusted.stderr).toMatch(/not trusted/);
    // as a program: the launcher moves the variable to $PXB_EXTRA_CA_CERTS, read at connect time
    const launched = await pxb(['list', '--output-format', 'json'], { ...unpinned, NODE_EXTRA_CA_CERTS: certFile }, true);
    expect(launched.code, launched.stderr).toBe(0);
    expect(Array.isArray(JSON.parse(launched.stdout))).toBe(true);
    // node reading the bundle itself (`node bin/pxb.js`), and pxb's variable on its own
    expect((await pxb(['list'], { ...unpinned, NODE_EXTRA_CA_CERTS: certFile })).code).toBe(0);
    expect((await pxb(['list'], { ...unpinned, PXB_EXTRA_CA_CERTS: certFile })).code).toBe(0);
    // an unreadable bundle: node's warning, and the certificate is not trusted
    const missing = await pxb(['list'], { ...unpinned, NODE_EXTRA_CA_CERTS: path.join(base, 'no-such.pem') }, true);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/Ignoring extra certs/);
  }, 60_000);

  it('runs maintenance through the server: notes, protection, prune, forget, verify, GC, namespaces', async () => {
    const src = path.join(base, 'maint');
    makeTree(src, 9);
    for (let k = 0; k < 4; k++) {
      const r = await pxb(['backup', `root.pxar:${src}`, '--backup-id', 'm', '--backup-time', String(1700000000 + k * 86400), '--change-detection-mode', 'data'], env);
      expect(r.code).toBe(0);
    }
    const snap = (k: number) => `host/m/${new Date((1700000000 + k * 86400) * 1000).toISOString().replace('.000Z', 'Z')}`;
    expect((await pxb(['snapshot', 'notes', 'update', snap(3), 'hello notes'], env)).code).toBe(0);
    expect((await pxb(['snapshot', 'notes', 'show', 'host/m'], env)).stdout.trim()).toBe('hello notes');
    expect((await pxb(['snapshot', 'protected', 'update', snap(0), 'true'], env)).code).toBe(0);
    expect((await pxb(['snapshot', 'protected', 'show', snap(0)], env)).stdout.trim()).toBe('true');

    const dry = await pxb(['prune', 'host/m', '--keep-last', '1', '--dry-run', '--output-format', 'json'], env);
    expect(dry.code).toBe(0);
    const plan = JSON.parse(dry.stdout) as Array<{ 'backup-time': number; keep: boolean; protected: boolean }>;
    expect(plan.filter((e) => !e.keep).map((e) => e['backup-time'])).toEqual([1700000000 + 86400, 1700000000 + 2 * 86400]);
    expect((await pxb(['prune', 'host/m', '--keep-last', '1'], env)).code).toBe(0);
    let left = JSON.parse((await pxb(['snapshot', 'list', 'host/m', '--output-format', 'json'], env)).stdout) as Array<{ 'backup-time': number }>;
    expect(left.map((s) => s['backup-time'])).toEqual([1700000000, 1700000000 + 3 * 86400]); // protected + newest

    expect((await pxb(['snapshot', 'forget', snap(0)], env)).code).not.toBe(0); // protected
    expect((await pxb(['snapshot', 'protected', 'update', snap(0), 'false'], env)).code).toBe(0);
    expect((await pxb(['snapshot', 'forget', snap(0)], env)).code).toBe(0);
    left = JSON.parse((await pxb(['snapshot', 'list', 'host/m', '--output-format', 'json'], env)).stdout);
    expect(left).toHaveLength(1);

    // Verify and GC need Datastore.Modify: refused for the backup token, done with an admin one.
    expect((await pxb(['verify', 'host/m'], env)).code).toBe(1);
    const v = await pxb(['verify', 'host/m', '--output-format', 'json'], adminEnv);
    expect(v.code).toBe(0);
    expect(JSON.parse(v.stdout).snapshots[0].state).toBe('ok');
    const gc = await pxb(['garbage-collect', '--output-format', 'json'], adminEnv);
    expect(gc.code).toBe(0);
    expect(JSON.parse(gc.stdout).upid).toMatch(/^UPID:.*:garbage_collection:store1:/); // the store's name, not its directory's
    // change-owner needs Datastore.Modify: refused for the backup token, done with an admin one
    expect((await pxb(['change-owner', 'host/m', 'other@pbs!t'], env)).code).toBe(1);
    const co = await pxb(['change-owner', 'host/m', 'other@pbs!t'], adminEnv);
    expect(co.code).toBe(0);
    expect(fs.readFileSync(path.join(base, 'ds', 'host', 'm', 'owner'), 'utf8')).toBe('other@pbs!t\n');
    expect((await pxb(['change-owner', 'host/m', 'backup@pbs!ci'], adminEnv)).code).toBe(0);
    const st = await pxb(['status', '--output-format', 'json'], adminEnv);
    expect(st.code).toBe(0);
    const usage = JSON.parse(st.stdout);
    expect(usage.total).toBe(fs.statfsSync(base).blocks * fs.statfsSync(base).bsize);
    expect(usage['gc-status']['index-file-count']).toBeGreaterThan(0);

    expect((await pxb(['namespace', 'create', 'team'], adminEnv)).code).toBe(0);
    expect((await pxb(['backup', `root.pxar:${src}`, '--backup-id', 'n', '--ns', 'team'], adminEnv)).code).toBe(0);
    expect((await pxb(['namespace', 'list', '--output-format', 'json'], adminEnv)).stdout).toContain('"team"');
    expect((await pxb(['namespace', 'delete', 'team'], adminEnv)).code).toBe(1); // has groups
    expect((await pxb(['namespace', 'delete', 'team', '--delete-groups'], adminEnv)).code).toBe(0);
  }, 180_000);
});
