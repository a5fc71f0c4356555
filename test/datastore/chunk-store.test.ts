import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BLOB_MAGIC, encodeBlob } from '../../ts/format/blob.js';
import { ChunkError, chunkKey, digestHex, type ChunkStore } from '../../ts/datastore/chunk-store.js';
import { DataStore } from '../../ts/datastore/datastore.js';

const HELLO_BLOB = Buffer.from('42ab3807be8370a185114a0d68656c6c6f20776f726c64', 'hex'); // spec datastore.md §4 vector
const HELLO_DIGEST = createHash('sha256').update('hello world').digest('hex');

let dir: string;
let store: DataStore;
let chunks: ChunkStore;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'pxb-chunks-'));
  store = await DataStore.open(path.join(dir, 'ds'), { create: true });
  chunks = store.chunks;
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function sha(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

describe('ChunkStore layout and insert', () => {
  it('stores a chunk as .chunks/<first 2 bytes hex>/<64 hex>', async () => {
    expect(HELLO_DIGEST).toBe('b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9');
    expect(chunkKey(HELLO_DIGEST)).toBe(`.chunks/b94d/${HELLO_DIGEST}`);
    expect(await chunks.insert(Buffer.from(HELLO_DIGEST, 'hex'), HELLO_BLOB)).toEqual({ isDuplicate: false, encodedSize: 23 });
    const file = path.join(store.path, '.chunks', 'b94d', HELLO_DIGEST);
    expect(chunks.chunkPath(HELLO_DIGEST)).toBe(file);
    expect(await readFile(file)).toEqual(HELLO_BLOB);
    expect(await readdir(path.join(store.path, '.chunks'))).toEqual(['b94d']);
    expect(await readdir(path.join(store.path, '.chunks', 'b94d'))).toEqual([HELLO_DIGEST]);
    expect((await stat(path.join(store.path, '.chunks', 'b94d'))).mode & 0o777 & ~0o750).toBe(0);
    expect(await chunks.has(HELLO_DIGEST)).toBe(true);
    expect(await chunks.size(HELLO_DIGEST)).toBe(23);
    expect(await chunks.load(HELLO_DIGEST)).toEqual(HELLO_BLOB);
    expect((await chunks.readChunk(HELLO_DIGEST, 11)).toString()).toBe('hello world');
  });

  it('is idempotent: a duplicate insert keeps the file and refreshes its atime', async () => {
    await chunks.insert(HELLO_DIGEST, HELLO_BLOB);
    const file = chunks.chunkPath(HELLO_DIGEST);
    const old = new Date('2001-01-01T00:00:00Z');
    await utimes(file, old, old);
    expect(await chunks.insert(HELLO_DIGEST, HELLO_BLOB)).toEqual({ isDuplicate: true, encodedSize: 23 });
    const st = await stat(file);
    expect(st.atimeMs).toBeGreaterThan(old.getTime());
    expect(st.mtimeMs).toBe(old.getTime());
    expect(await readFile(file)).toEqual(HELLO_BLOB);
  });

  it('touchMany marks present chunks (atime only), reports missing ones, refuses bad digests', async () => {
    await chunks.insert(HELLO_DIGEST, HELLO_BLOB);
    const file = chunks.chunkPath(HELLO_DIGEST);
    const old = new Date('2001-01-01T00:00:00Z');
    await utimes(file, old, old);
    const missing = 'ab'.repeat(32);
    // a file where the prefix directory of another digest should be: missing too (ENOTDIR)
    await writeFile(path.join(store.path, '.chunks', 'cdcd'), 'x');
    const blocked = 'cd'.repeat(32);
    expect(await chunks.touchMany([Buffer.from(HELLO_DIGEST, 'hex'), missing, HELLO_DIGEST.toUpperCase(), Buffer.from(blocked, 'hex')])).toEqual([true, false, true, false]);
    const st = await stat(file);
    expect(st.atimeMs).toBeGreaterThan(old.getTime());
    expect(st.mtimeMs).toBe(old.getTime());
    expect(await chunks.touchMany([])).toEqual([]);
    await expect(chunks.touchMany(['xyz'])).rejects.toThrow(/invalid chunk digest/);
    await expect(chunks.touchMany([Buffer.alloc(31)])).rejects.toThrow(/invalid chunk digest/);
  });

  it('is safe for concurrent inserts of the same chunk from several tasks and store instances', async () => {
    const data = Buffer.alloc(64 * 1024, 7);
    const blob = encodeBlob(data, false);
    const digest = sha(data);
    const other = await DataStore.open(store.path);
    const results = await Promise.all(
      Array.from({ length: 16 }, (_, i) => (i % 2 ? other.chunks : chunks).insert(digest, blob)),
    );
    expect(results.filter((r) => !r.isDuplicate)).toHaveLength(1);
    expect(results.every((r) => r.encodedSize === blob.length)).toBe(true);
    expect(await readFile(chunks.chunkPath(digest))).toEqual(blob);
    expect(await readdir(path.dirname(chunks.chunkPath(digest)))).toEqual([digest]);
    expect(await chunks.readChunk(digest, data.length)).toEqual(data);
  });

  it('follows the PBS rules for an existing copy of another size', async () => {
    const data = Buffer.alloc(100_000, 1);
    const digest = sha(data);
    const plain = encodeBlob(data, false);
    const zstd = encodeBlob(data, true);
    expect(zstd.length).toBeLessThan(plain.length);
    // smaller existing copy is kept
    await chunks.insert(digest, zstd);
    expect(await chunks.insert(digest, plain)).toEqual({ isDuplicate: true, encodedSize: zstd.length });
    expect(await readFile(chunks.chunkPath(digest))).toEqual(zstd);
    // a smaller upload replaces a bigger existing copy
    await writeFile(chunks.chunkPath(digest), plain);
    expect(await chunks.insert(digest, zstd)).toEqual({ isDuplicate: false, encodedSize: zstd.length });
    expect(await readFile(chunks.chunkPath(digest))).toEqual(zstd);
    // an empty file is overwritten
    await writeFile(chunks.chunkPath(digest), '');
    expect(await chunks.insert(digest, plain)).toEqual({ isDuplicate: false, encodedSize: plain.length });
    // an encrypted blob never replaces an unencrypted chunk
    const fakeEncrypted = Buffer.concat([BLOB_MAGIC.encryptedZstd, Buffer.alloc(60)]);
    await expect(chunks.insert(digest, fakeEncrypted)).rejects.toThrow(/refusing to overwrite an unencrypted chunk/);
    expect(await readFile(chunks.chunkPath(digest))).toEqual(plain);
    // encrypted chunks are stored, but readChunk cannot verify them without the key
    const encDigest = 'ab'.repeat(32);
    expect(await chunks.insert(encDigest, fakeEncrypted)).toEqual({ isDuplicate: false, encodedSize: 68 });
    await expect(chunks.readChunk(encDigest)).rejects.toThrow(`chunk ${encDigest} is encrypted; reading it needs the encryption key`);
    // ...but an unencrypted chunk with that digest (verified: its content hashes to it)
    // replaces such a copy, even a smaller one: an encrypted chunk's digest is keyed, so the
    // "encrypted" copy was planted under another client's digest
    const other = randomBytes(50_000);
    const otherDigest = sha(other);
    const otherBlob = encodeBlob(other, true);
    await chunks.insert(otherDigest, fakeEncrypted);
    expect(await chunks.insert(otherDigest, otherBlob)).toEqual({ isDuplicate: false, encodedSize: otherBlob.length });
    expect(await chunks.readChunk(otherDigest)).toEqual(other);
  });

  it('refuses non-blobs and bad digests', async () => {
    await expect(chunks.insert(HELLO_DIGEST, Buffer.from('hello world'))).rejects.toThrow(/not a data blob/);
    await expect(chunks.insert('../../etc/passwd', HELLO_BLOB)).rejects.toThrow(/invalid chunk digest/);
    await expect(chunks.insert(Buffer.alloc(31), HELLO_BLOB)).rejects.toThrow(/invalid chunk digest/);
    expect(() => digestHex('g'.repeat(64))).toThrow(/invalid chunk digest/);
    expect(digestHex(HELLO_DIGEST.toUpperCase())).toBe(HELLO_DIGEST);
    expect(await chunks.touch(HELLO_DIGEST)).toBe(false);
  });
});

describe('ChunkStore.storeData (a backup\'s one-job insert)', () => {
  it('writes a new chunk, then finds it (touched, not rewritten), and repairs an empty file', async () => {
    const data = Buffer.from('hello world');
    const file = path.join(store.path, '.chunks', 'b94d', HELLO_DIGEST);
    const first = await chunks.storeData(data, false);
    expect(first.digest.toString('hex')).toBe(HELLO_DIGEST);
    expect(first).toMatchObject({ outcome: 'new', size: 23 });
    expect(await readFile(file)).toEqual(HELLO_BLOB);
    expect(await readdir(path.dirname(file))).toEqual([HELLO_DIGEST]); // no temporary file left
    expect((await stat(path.dirname(file))).mode & 0o777).toBe(0o750);

    const old = new Date('2001-01-01T00:00:00Z');
    await utimes(file, old, old);
    expect(await chunks.storeData(data, false)).toMatchObject({ outcome: 'known', size: 0 });
    const st = await stat(file);
    expect(st.atimeMs).toBeGreaterThan(old.getTime()); // GC mark
    expect(st.mtimeMs).toBe(old.getTime());

    await truncate(file, 0); // left by a crash
    expect(await chunks.storeData(data, false)).toMatchObject({ outcome: 'new', size: 23 });
    expect(await readFile(file)).toEqual(HELLO_BLOB);
  });
});

// readChunkInto (one native job into a caller's buffer, used by restore) must refuse exactly
// what readChunk refuses, with the same messages.
const readers = {
  readChunk: (c: ChunkStore, d: string, size?: number) => c.readChunk(d, size),
  readChunkInto: (c: ChunkStore, d: string, size = 256 * 1024) => c.readChunkInto(d, size, Buffer.alloc(size + 4096, 0xee)),
};

describe.each(Object.keys(readers) as Array<keyof typeof readers>)('ChunkStore.%s verification', (reader) => {
  const data = Buffer.alloc(256 * 1024, 0x5a);
  const digest = sha(data);
  const read = (d: string, size?: number) => readers[reader](chunks, d, size);

  async function stored(blob: Buffer): Promise<string> {
    await chunks.insert(digest, encodeBlob(data, true));
    await writeFile(chunks.chunkPath(digest), blob);
    return chunks.chunkPath(digest);
  }

  async function failure(): Promise<ChunkError> {
    try {
      await read(digest, data.length);
    } catch (e) {
      expect(e).toBeInstanceOf(ChunkError);
      return e as ChunkError;
    }
    throw new Error('readChunk unexpectedly succeeded');
  }

  it('detects a flipped byte', async () => {
    const blob = encodeBlob(data, true);
    blob[blob.length - 3] ^= 0x01;
    await stored(blob);
    const e = await failure();
    expect(e.reason).toBe('corrupt');
    expect(e.message).toBe(`chunk ${digest} is corrupt: ${e.message.split(': ').slice(1).join(': ')}`);
    expect(e.message).toMatch(/CRC mismatch/);
  });

  it('detects a missing file', async () => {
    const e = await failure();
    expect(e.reason).toBe('missing');
    expect(e.message).toMatch(new RegExp(`^chunk ${digest} is missing`));
  });

  it('detects a truncated file', async () => {
    const file = await stored(encodeBlob(data, true));
    await truncate(file, (await stat(file)).size - 4);
    expect((await failure()).message).toMatch(new RegExp(`^chunk ${digest} is corrupt: .*CRC mismatch`));
    await truncate(file, 5);
    expect((await failure()).message).toMatch(new RegExp(`^chunk ${digest} is corrupt: .*too short`));
  });

  it('detects a wrong magic', async () => {
    const blob = encodeBlob(data, true);
    blob[0] ^= 0xff;
    await stored(blob);
    expect((await failure()).message).toMatch(new RegExp(`^chunk ${digest} is corrupt: .*unknown magic`));
  });

  it('detects valid blobs with the wrong content or size', async () => {
    const other = Buffer.alloc(1000, 1);
    await stored(encodeBlob(other, true));
    expect((await failure()).message).toBe(`chunk ${digest} is corrupt: its content hashes to ${sha(other)}`);
    await writeFile(chunks.chunkPath(digest), encodeBlob(data, false));
    await expect(read(digest, data.length + 1)).rejects.toThrow(
      `chunk ${digest} is corrupt: ${data.length} bytes, the index expects ${data.length + 1}`,
    );
    expect(await read(digest)).toEqual(data);
  });

  it('takes a directory in place of the chunk file for a missing chunk', async () => {
    await mkdir(chunks.chunkPath(digest), { recursive: true });
    const e = await failure();
    expect(e.reason).toBe('missing');
    expect(e.message).toMatch(new RegExp(`^chunk ${digest} is missing`));
  });
});

describe('ChunkStore.readChunkInto', () => {
  it('decodes into the given buffer and returns the view holding the chunk', async () => {
    const data = randomBytes(300 * 1024);
    const digest = sha(data);
    await chunks.insert(digest, encodeBlob(data, true));
    const into = Buffer.alloc(512 * 1024, 0xee);
    const got = await chunks.readChunkInto(digest, data.length, into);
    expect(got.buffer).toBe(into.buffer);
    expect(got.byteOffset).toBe(into.byteOffset);
    expect(got).toEqual(data);
    // a chunk that decodes to more than the buffer holds is refused, not cut short
    await expect(chunks.readChunkInto(digest, data.length, Buffer.alloc(data.length - 1))).rejects.toThrow(RangeError);
    const small = Buffer.alloc(100 * 1024);
    await writeFile(chunks.chunkPath(digest), encodeBlob(data, false));
    await expect(chunks.readChunkInto(digest, small.length, small)).rejects.toThrow(/is corrupt: .*more than the limit/);
  });
});
