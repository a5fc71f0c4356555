/**
 * `pxb token create|list|delete` and `pxb serve` through commander, in-process: the secret is
 * the last output line, serve prints the fingerprint clients pin, and stops on the signal.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { registerServe, registerToken } from '../../ts/cli/commands/serve.js';
import { PbsClient } from '../../ts/client/remote/client.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pxb-cli-serve-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
afterEach(() => {
  vi.restoreAllMocks();
});

/** Run `pxb <args>` with stdout/stderr captured. */
function run(args: string[], signal = new AbortController().signal) {
  const out: string[] = [];
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => (out.push(String(chunk)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  const program = new Command('pxb').exitOverride();
  const ctx = { env: { HOME: dir }, signal };
  registerServe(program, ctx);
  registerToken(program, ctx);
  return { out, done: program.parseAsync(args, { from: 'user' }) };
}

describe('pxb token', () => {
  it('creates (secret on the last line), lists and deletes', async () => {
    const cfg = path.join(dir, 'cfg1');
    const c = run(['token', 'create', 'alice@pbs!t1', '--datastore', 'store1', '--datastore', 'store2', '--role', 'backup', '--config', cfg]);
    await c.done;
    const lines = c.out.join('').trimEnd().split('\n');
    expect(lines[0]).toBe('token alice@pbs!t1: role backup on store1, store2');
    expect(lines[lines.length - 1]).toMatch(/^[0-9a-f-]{36}$/);
    vi.restoreAllMocks();
    const l = run(['token', 'list', '--config', cfg, '--output-format', 'json']);
    await l.done;
    const listed = JSON.parse(l.out.join('')) as Array<{ tokenId: string; datastores: Record<string, string> }>;
    expect(listed.map((t) => [t.tokenId, t.datastores])).toEqual([['alice@pbs!t1', { store1: 'backup', store2: 'backup' }]]);
    vi.restoreAllMocks();
    await run(['token', 'delete', 'alice@pbs!t1', '--config', cfg]).done;
    vi.restoreAllMocks();
    await expect(run(['token', 'delete', 'alice@pbs!t1', '--config', cfg]).done).rejects.toThrow(/does not exist/);
  });

  it('refuses a bad role', async () => {
    await expect(run(['token', 'create', 'a@pbs!t', '--datastore', 'store1', '--role', 'root', '--config', path.join(dir, 'x')]).done).rejects.toThrow();
  });
});

describe('pxb serve', () => {
  it('prints the fingerprint and address, serves, and stops on the signal', async () => {
    const cfg = path.join(dir, 'cfg2');
    const t = run(['token', 'create', 'ops@pbs!t', '--datastore', 'store1', '--role', 'read', '--config', cfg]);
    await t.done;
    const secret = t.out.join('').trimEnd().split('\n').pop()!;
    vi.restoreAllMocks();

    const ac = new AbortController();
    const s = run(['serve', '--listen', '127.0.0.1:0', '--datastore', `store1=${path.join(dir, 'ds')}`, '--config', cfg, '--no-fsync'], ac.signal);
    let text = '';
    while (!/listening on https:\/\/127\.0\.0\.1:(\d+)/.test(text)) {
      await new Promise((r) => setImmediate(r));
      text = s.out.join('');
    }
    const fingerprint = /fingerprint: ([0-9a-f:]{95})/.exec(text)![1];
    const port = Number(/listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(text)![1]);
    expect(text).toContain(`created a self-signed certificate in ${cfg}`);
    const client = new PbsClient({ repository: `ops@pbs!t@127.0.0.1:${port}:store1`, secret, fingerprint });
    expect(await client.listDatastores()).toEqual([{ store: 'store1', comment: null }]);
    ac.abort();
    await s.done;
    await expect(client.version()).rejects.toThrow(/cannot connect/);
  });

  it('needs a datastore', async () => {
    await expect(run(['serve', '--config', path.join(dir, 'cfg3')]).done).rejects.toThrow(/--datastore/);
  });
});
