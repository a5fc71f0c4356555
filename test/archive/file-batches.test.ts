/**
 * FileBatches (archive/create.ts): small files read ahead in native batches into recycled
 * buffers. Its memory must not grow with the depth of the tree: a batch ends at a
 * subdirectory and is recycled when the encoder descends, and reads ahead wait while two
 * buffers are out.
 */
import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { BatchReader, FileBatches } from '../../ts/archive/create.js';
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
