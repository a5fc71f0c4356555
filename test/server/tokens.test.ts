import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TOKENS_FILE, TokenStore, privilegesOf } from '../../ts/server/tokens.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pxb-tokens-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('TokenStore', () => {
  it('creates a token whose secret verifies and is stored only hashed', async () => {
    const cfg = path.join(dir, 'a');
    const store = new TokenStore(cfg);
    const { secret } = await store.create('alice@pbs!t1', { store1: 'backup', store2: 'read' });
    expect(secret).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const text = await readFile(path.join(cfg, TOKENS_FILE), 'utf8');
    expect(text).not.toContain(secret);
    expect((await stat(path.join(cfg, TOKENS_FILE))).mode & 0o777).toBe(0o600);
    expect((await stat(cfg)).mode & 0o777).toBe(0o700);
    const info = await store.verify('alice@pbs!t1', secret);
    expect(info).toMatchObject({ tokenId: 'alice@pbs!t1', datastores: { store1: 'backup', store2: 'read' } });
    expect(await store.verify('alice@pbs!t1', secret.toUpperCase())).toBeNull();
    expect(await store.verify('alice@pbs!t2', secret)).toBeNull();
    expect(await store.verify('__proto__', secret)).toBeNull();
  });

  it('refuses duplicates, bad ids, bad datastore names and roles', async () => {
    const store = new TokenStore(path.join(dir, 'b'));
    await store.create('bob@pbs!x', { store1: 'admin' });
    await expect(store.create('bob@pbs!x', { store1: 'admin' })).rejects.toThrow(/already exists/);
    await expect(store.create('bob@pbs', { store1: 'admin' })).rejects.toThrow(/invalid API token id/);
    await expect(store.create('bob@pbs!y', { '../x': 'admin' })).rejects.toThrow(/datastore name/);
    await expect(store.create('bob@pbs!y', { store1: 'root' as never })).rejects.toThrow(/invalid role/);
  });

  it('lists and deletes; a running server sees changes at once', async () => {
    const cfg = path.join(dir, 'c');
    const server = new TokenStore(cfg);
    const cli = new TokenStore(cfg);
    const { secret } = await cli.create('carol@pbs!t', { store1: 'read' });
    expect(await server.verify('carol@pbs!t', secret)).not.toBeNull();
    expect((await server.list()).map((t) => t.tokenId)).toEqual(['carol@pbs!t']);
    expect(await cli.delete('carol@pbs!t')).toBe(true);
    expect(await cli.delete('carol@pbs!t')).toBe(false);
    expect(await server.verify('carol@pbs!t', secret)).toBeNull();
  });

  it('reports a corrupt token file instead of guessing', async () => {
    const cfg = path.join(dir, 'd');
    await new TokenStore(cfg).create('dave@pbs!t', { store1: 'read' });
    await writeFile(path.join(cfg, TOKENS_FILE), '{"version":1,"tokens":{"dave@pbs!t":{"secret":"plain"}}}');
    await expect(new TokenStore(cfg).verify('dave@pbs!t', 'plain')).rejects.toThrow(/malformed entry for token "dave@pbs!t"/);
  });
});

describe('roles', () => {
  it('map to PBS privileges', () => {
    expect(privilegesOf('backup')).toEqual({ backup: true, read: false, audit: false });
    expect(privilegesOf('read')).toEqual({ backup: false, read: true, audit: true });
    expect(privilegesOf('admin')).toEqual({ backup: true, read: true, audit: true });
    expect(privilegesOf(undefined)).toEqual({ backup: false, read: false, audit: false });
  });
});
