/**
 * API tokens of `pxb serve`: `<config>/tokens.json` (mode 0600), one entry per token id
 * `user@realm!name` with its hashed secret and a role per datastore.
 *
 *   { "version": 1, "tokens": { "<id>": { "secret": "sha256:<salt hex>:<hash hex>",
 *                                         "created": <epoch>, "datastores": { "<store>": "backup" } } } }
 *
 * Invariants:
 *  - Secrets are generated here (a random UUID, 122 random bits, like PBS) and shown once;
 *    only `SHA-256(salt ‖ secret)` with a 16-byte random salt is stored. A slow password hash
 *    buys nothing for secrets of this entropy; comparison is constant-time.
 *  - Updates take a lock file and rewrite the file atomically, so concurrent `pxb token`
 *    runs and a running server never see a partial file. The server re-reads the file when it
 *    changes, so tokens created or deleted while it runs take effect immediately.
 *  - Roles map to PBS privileges: `backup` = Datastore.Backup (write and read back own groups),
 *    `read` = Datastore.Read + Audit (read and list everything), `admin` = all of them.
 */
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../backend/fs.js';
import { LockFile } from '../datastore/lock.js';
import { validateTokenId } from '../protocol/auth.js';
import { validateStoreName } from '../protocol/endpoints.js';

export const TOKENS_FILE = 'tokens.json';

export type Role = 'backup' | 'read' | 'admin';
export const ROLES: readonly Role[] = ['backup', 'read', 'admin'];

export interface Privileges {
  /** Datastore.Backup: create snapshots in owned groups, read them back. */
  backup: boolean;
  /** Datastore.Read: read every snapshot. */
  read: boolean;
  /** Datastore.Audit: list every group and snapshot. */
  audit: boolean;
}

const NO_PRIVILEGES: Privileges = { backup: false, read: false, audit: false };

export function privilegesOf(role: Role | undefined): Privileges {
  switch (role) {
    case 'backup':
      return { backup: true, read: false, audit: false };
    case 'read':
      return { backup: false, read: true, audit: true };
    case 'admin':
      return { backup: true, read: true, audit: true };
    default:
      return NO_PRIVILEGES;
  }
}

export function parseRole(s: string): Role {
  if (!(ROLES as readonly string[]).includes(s)) throw new Error(`invalid role ${JSON.stringify(s)} (backup, read or admin)`);
  return s as Role;
}

export interface TokenInfo {
  tokenId: string;
  /** Epoch seconds. */
  created: number;
  datastores: Record<string, Role>;
}

interface StoredToken {
  secret: string;
  created: number;
  datastores: Record<string, Role>;
}

interface TokenFile {
  version: 1;
  tokens: Record<string, StoredToken>;
}

function hashSecret(secret: string, salt: Buffer): Buffer {
  return createHash('sha256').update(salt).update(secret, 'utf8').digest();
}

function parseFile(text: string, file: string): TokenFile {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  const o = v as Partial<TokenFile> | null;
  if (!o || o.version !== 1 || !o.tokens || typeof o.tokens !== 'object' || Array.isArray(o.tokens)) {
    throw new Error(`${file}: not a pxb token file (version 1)`);
  }
  const tokens: Record<string, StoredToken> = Object.create(null) as Record<string, StoredToken>;
  for (const [id, t] of Object.entries(o.tokens)) {
    const ok =
      t && typeof t === 'object' && typeof t.secret === 'string' && /^sha256:[0-9a-f]{32}:[0-9a-f]{64}$/.test(t.secret) &&
      typeof t.created === 'number' && t.datastores && typeof t.datastores === 'object' &&
      Object.values(t.datastores).every((r) => (ROLES as readonly unknown[]).includes(r));
    if (!ok) throw new Error(`${file}: malformed entry for token ${JSON.stringify(id)}`);
    tokens[id] = { secret: t.secret, created: t.created, datastores: { ...t.datastores } };
  }
  return { version: 1, tokens };
}

export class TokenStore {
  readonly file: string;
  private cache: { key: string; data: TokenFile } | null = null;

  constructor(configDir: string) {
    this.file = path.join(configDir, TOKENS_FILE);
  }

  /** The current file contents (re-read when the file changed). */
  private async load(): Promise<TokenFile> {
    let key: string;
    try {
      const st = await stat(this.file);
      key = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, tokens: Object.create(null) as Record<string, StoredToken> };
      throw e;
    }
    if (this.cache?.key === key) return this.cache.data;
    const data = parseFile(await readFile(this.file, 'utf8'), this.file);
    this.cache = { key, data };
    return data;
  }

  private async update<T>(fn: (data: TokenFile) => T): Promise<T> {
    await mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const lock = await LockFile.acquire(`${this.file}.lock`, `token file ${this.file}`, 'token update');
    try {
      this.cache = null;
      const data = await this.load();
      const result = fn(data);
      await writeFileAtomic(this.file, Buffer.from(JSON.stringify(data, null, 2) + '\n'), { mode: 0o600, dirMode: 0o700 });
      this.cache = null;
      return result;
    } finally {
      await lock.release();
    }
  }

  async list(): Promise<TokenInfo[]> {
    const data = await this.load();
    return Object.entries(data.tokens)
      .map(([tokenId, t]) => ({ tokenId, created: t.created, datastores: { ...t.datastores } }))
      .sort((a, b) => (a.tokenId < b.tokenId ? -1 : a.tokenId > b.tokenId ? 1 : 0));
  }

  /** Create a token with a role on each named datastore; returns its secret (shown once). */
  async create(tokenId: string, datastores: Record<string, Role>): Promise<{ tokenId: string; secret: string }> {
    validateTokenId(tokenId);
    for (const [store, role] of Object.entries(datastores)) {
      validateStoreName(store);
      parseRole(role);
    }
    const secret = randomUUID();
    const salt = randomBytes(16);
    await this.update((data) => {
      if (Object.hasOwn(data.tokens, tokenId)) throw new Error(`token ${tokenId} already exists (delete it first)`);
      data.tokens[tokenId] = {
        secret: `sha256:${salt.toString('hex')}:${hashSecret(secret, salt).toString('hex')}`,
        created: Math.floor(Date.now() / 1000),
        datastores: { ...datastores },
      };
    });
    return { tokenId, secret };
  }

  /** Remove a token; false if it did not exist. */
  async delete(tokenId: string): Promise<boolean> {
    validateTokenId(tokenId);
    return this.update((data) => {
      if (!Object.hasOwn(data.tokens, tokenId)) return false;
      delete data.tokens[tokenId];
      return true;
    });
  }

  /** The token if `secret` is its secret, else null. */
  async verify(tokenId: string, secret: string): Promise<TokenInfo | null> {
    const data = await this.load();
    const t = Object.hasOwn(data.tokens, tokenId) ? data.tokens[tokenId] : undefined;
    // Hash even for unknown ids so timing does not tell which ids exist.
    const [, saltHex, hashHex] = (t?.secret ?? `sha256:${'0'.repeat(32)}:${'0'.repeat(64)}`).split(':');
    const expected = Buffer.from(hashHex, 'hex');
    const actual = hashSecret(secret, Buffer.from(saltHex, 'hex'));
    if (!timingSafeEqual(expected, actual) || !t) return null;
    return { tokenId, created: t.created, datastores: { ...t.datastores } };
  }
}
