/**
 * FileBatches (archive/create.ts): small files read ahead in native batches into recycled
 * buffers. Its memory must not grow with the depth of the tree: a batch ends at a
 * subdirectory and is recycled when the encoder descends, and reads ahead wait while two
 * buffers are out. SubdirPrereads: the first files of the next subdirectories are read before
 * the encoder enters them, and a FileBatches takes such a read over only when it holds
 * exactly the files it would read first.
 */
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { BATCH_BYTES, BatchReader, BufferPool, FileBatches, SubdirPrereads, type PrefetchNode } from '../../ts/archive/create.js';
import { readDirs, type DirEntries } from '../../ts/native/fs.js';
import { tempDir } from '../helpers/tmp.js';

/** Files `<dir>/<name>` with distinct contents; the batch source entries for them. */
function files(dir: string, names: string[], cutBefore = new Set<string>()) {
  fs.mkdirSync(dir, { recursive: true });
  return names.map((n) => {
    const data = Buffer.from(`${dir}/${n}\n`.repeat(50));
    fs.writeFileSync(path.join(dir, n), data);
    return { key: n, path: () => Buffer.from(path.join(dir, n)), size: data.length, cut: cutBefore.has(n), data };
  });
}

/** Buffers are taken at once, but given back only when their read has finished: wait for that (2 s at most). */
async function inUseBecomes(reader: BatchReader, n: number): Promise<void> {
  for (let k = 0; k < 200 && reader.buffers.inUse !== n; k++) await new Promise((r) => setTimeout(r, 10));
  expect(reader.buffers.inUse).toBe(n);
}

describe('FileBatches', () => {
  it('fills a batch up to its byte limit only, so every batch fits one recycled read buffer', async () => {
    // Files of half the limit B: B/2, B/2 - 1, B/2, B/2. A batch stops before the file that
    // would take it past B: [0, 1] [2, 3], each in a pooled buffer (a batch that outgrew it
    // would get a plain allocation, not counted).
    const dir = tempDir();
    const half = BATCH_BYTES / 2;
    const sizes = [half, half - 1, half, half];
    const entries = sizes.map((n, k) => {
      const data = Buffer.alloc(n, 97 + k);
      fs.writeFileSync(path.join(dir, `f${k}`), data);
      return { key: k, path: () => Buffer.from(path.join(dir, `f${k}`)), size: n, data };
    });
    const reader = new BatchReader();
    const b = new FileBatches(reader, entries);
    expect(reader.buffers.inUse).toBe(2); // two batches read ahead, both in pooled buffers
    for (const e of entries) expect((await b.get(e.key))!.data!.equals(e.data)).toBe(true);
    b.close();
    await inUseBecomes(reader, 0);
  });

  it('ends a batch at a subdirectory, recycles it on descend, and reads ahead only while two buffers are out', async () => {
    const base = tempDir();
    const reader = new BatchReader();
    // a0 a1 | (subdirectory) | a2 a3: two batches
    const top = files(path.join(base, 'a'), ['a0', 'a1', 'a2', 'a3'], new Set(['a2']));
    const a = new FileBatches(reader, top);
    expect(reader.buffers.inUse).toBe(2); // both batches read ahead
    expect((await a.get('a0'))!.data).toEqual(top[0].data);
    expect((await a.get('a1'))!.data).toEqual(top[1].data);
    a.descend(); // the encoder reaches the subdirectory: a0/a1's batch goes back
    await inUseBecomes(reader, 1);

    // Three levels below: each would read ahead; with two buffers out, they read on demand.
    const levels = [1, 2, 3].map((d) => new FileBatches(reader, files(path.join(base, 'a', 'sub'.repeat(d)), ['x'])));
    expect(reader.buffers.inUse).toBe(2);
    for (const l of levels) {
      const got = await l.get('x');
      expect(got!.data!.toString()).toContain('/x\n');
      l.descend();
    }
    await inUseBecomes(reader, 1); // a2/a3's batch, still ahead of the encoder
    for (const l of levels) l.close();

    expect((await a.get('a2'))!.data).toEqual(top[2].data);
    expect((await a.get('a3'))!.data).toEqual(top[3].data);
    a.close();
    await inUseBecomes(reader, 0);
  });
});

/** A fetched prefetch node for directory `dir` (as the prefetch walk leaves it). */
async function node(dir: string): Promise<PrefetchNode> {
  const [list] = await readDirs([dir]);
  if (list instanceof Error) throw list;
  return { id: -1, path: Buffer.from(dir), list, error: null, children: new Map(), dropped: false, taken: true };
}

/** What encodeDir hands FileBatches for a directory without excludes: its regular files in order, names relative to it. */
function toRead(list: DirEntries) {
  const out: Array<{ key: number; path: () => Buffer; size: number; cut: boolean }> = [];
  let cut = false;
  for (let i = 0; i < list.length; i++) {
    if ((list.mode(i) & 0o170000) === 0o040000) cut = true;
    else if ((list.mode(i) & 0o170000) === 0o100000) {
      out.push({ key: i, path: () => list.name(i), size: list.size(i), cut });
      cut = false;
    }
  }
  return out;
}

describe('SubdirPrereads', () => {
  it('reads the first files of the next subdirectories ahead, and FileBatches takes them over only when they fit', async () => {
    const base = tempDir();
    const reader = new BatchReader();
    const pool = new BufferPool(256 * 1024, 12);
    for (const d of ['s1', 's2', 's5', 's6']) files(path.join(base, d), ['f0', 'f1', 'f2']);
    files(path.join(base, 's3'), ['.pxarexclude', 'f0']); // its patterns could exclude f0: not read ahead
    files(path.join(base, 's4'), ['f0']);
    fs.mkdirSync(path.join(base, 's4', '0first')); // a subdirectory before its files: nothing to read ahead
    const nodes = await Promise.all(['s1', 's2', 's3', 's4', 's5', 's6'].map((d) => node(path.join(base, d))));

    const ahead = new SubdirPrereads(reader, pool, nodes, () => true);
    expect(pool.inUse).toBe(2); // s1, s2 (the next four subdirectories: s3 and s4 have nothing to read ahead)
    const first = ahead.enter(nodes[0])!;
    expect(first.names.map(String)).toEqual(['f0', 'f1', 'f2']);
    expect(pool.inUse).toBe(3); // s5 now

    // s1 as listed: the pre-read is its first batch.
    const b1 = new FileBatches(reader, toRead(nodes[0].list!), nodes[0].path, first);
    expect(reader.buffers.inUse).toBe(0); // nothing else to read
    for (const [k, n] of ['f0', 'f1', 'f2'].entries()) {
      expect((await b1.get(k))!.data).toEqual(fs.readFileSync(path.join(base, 's1', n)));
    }
    b1.close();
    first.release(); // (a second release changes nothing)
    for (let k = 0; k < 200 && pool.inUse !== 2; k++) await new Promise((r) => setTimeout(r, 10));
    expect(pool.inUse).toBe(2);

    // s2's f1 grew after the listing: the encoder's own plan differs, the pre-read is dropped
    // and the files are read again, at their new sizes.
    const second = ahead.enter(nodes[1])!;
    fs.appendFileSync(path.join(base, 's2', 'f1'), 'more\n');
    const [relisted] = (await readDirs([path.join(base, 's2')])) as DirEntries[];
    const b2 = new FileBatches(reader, toRead(relisted), nodes[1].path, second);
    expect(reader.buffers.inUse).toBe(1); // read again, in one batch
    for (const [k, n] of ['f0', 'f1', 'f2'].entries()) {
      expect((await b2.get(k))!.data).toEqual(fs.readFileSync(path.join(base, 's2', n)));
    }
    b2.close();
    expect(ahead.enter(nodes[2])).toBeUndefined(); // s3
    expect(ahead.enter(nodes[3])).toBeUndefined(); // s4
    // s6 is started as s3 and s4 are passed; nobody takes s5 or s6: close recycles them.
    ahead.close();
    for (let k = 0; k < 200 && (pool.inUse !== 0 || reader.buffers.inUse !== 0); k++) await new Promise((r) => setTimeout(r, 10));
    expect(pool.inUse).toBe(0);
    expect(reader.buffers.inUse).toBe(0);
  });
});
