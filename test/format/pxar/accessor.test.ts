/**
 * Accessor details that the fixtures cannot show: equal goodbye hashes (name compare decides,
 * search continues past mismatches) and the bounded directory cache.
 */
import { describe, expect, it } from 'vitest';
import { FormatError } from '../../../ts/format/errors.js';
import {
  PXAR_GOODBYE,
  PxarAccessor,
  PxarEncoder,
  basicMetadata,
  binaryTreeArrayOrder,
  hashFilename,
  type ReadAtSource,
} from '../../../ts/format/pxar/index.js';

const B = (s: string): Buffer => Buffer.from(s);

function archive(names: string[], dirs = 0): Buffer {
  const parts: Buffer[] = [];
  const enc = new PxarEncoder({ variant: 'unified', output: { write: (b) => parts.push(b) } });
  enc.begin(basicMetadata(0o40755));
  for (const n of names) {
    enc.beginFile(B(n), basicMetadata(0o100644), n.length);
    enc.writeFileData(B(n));
    enc.endFile();
  }
  for (let d = 0; d < dirs; d++) {
    enc.enterDirectory(B(`d${d}`), basicMetadata(0o40755));
    enc.addSymlink(B('l'), basicMetadata(0o120777), B(`t${d}`));
    enc.leaveDirectory();
  }
  enc.finish();
  return Buffer.concat(parts);
}

function source(buf: Buffer, counter = { reads: 0 }): ReadAtSource {
  return {
    size: buf.length,
    readAt: async (o, l) => {
      counter.reads++;
      return buf.subarray(o, o + l);
    },
  };
}

/** Give the root goodbye items of `victims` the hash of `as`, keeping a valid search tree. */
function forgeEqualHashes(buf: Buffer, victims: string[], as: string): Buffer {
  const out = Buffer.from(buf);
  const tail = out.length - 24;
  const size = Number(out.readBigUInt64LE(tail + 16));
  const gb = out.length - size;
  expect(out.readBigUInt64LE(gb)).toBe(PXAR_GOODBYE);
  const n = (size - 16) / 24 - 1;
  const items: { hash: bigint; rest: Buffer }[] = [];
  for (let i = 0; i < n; i++) {
    const p = gb + 16 + i * 24;
    items.push({ hash: out.readBigUInt64LE(p), rest: Buffer.from(out.subarray(p + 8, p + 24)) });
  }
  const victimHashes = new Set(victims.map((v) => hashFilename(B(v))));
  for (const it of items) if (victimHashes.has(it.hash)) it.hash = hashFilename(B(as));
  items.sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0));
  const order = binaryTreeArrayOrder(n);
  for (let d = 0; d < n; d++) {
    const p = gb + 16 + d * 24;
    out.writeBigUInt64LE(items[order[d]].hash, p);
    items[order[d]].rest.copy(out, p + 8);
  }
  return out;
}

describe('PxarAccessor lookups', () => {
  it('resolves equal goodbye hashes by comparing names', async () => {
    const names = ['a', 'b', 'c', 'd', 'e', 'f', 'g'];
    const plain = archive(names);
    // every item gets the same hash: whichever is met first, the search must go on to the right name
    for (const wanted of names) {
      const forged = forgeEqualHashes(plain, names, wanted);
      const root = await (await PxarAccessor.open(source(forged))).openRoot();
      const hit = await root.lookup(wanted);
      expect(hit?.name).toEqual(B(wanted));
      expect(hit?.size).toBe(1);
      for (const other of names.filter((n) => n !== wanted)) expect(await root.lookup(other)).toBeNull();
    }
    // some items share a hash: the others are still found, the forged ones are not
    const forged = forgeEqualHashes(plain, ['c', 'e', 'g'], 'a');
    const acc = await PxarAccessor.open(source(forged));
    const root = await acc.openRoot();
    const a = await root.lookup('a');
    expect(await (await acc.openFile(a!)).read(0, 1)).toEqual(B('a'));
    for (const other of ['b', 'd', 'f']) expect((await root.lookup(other))?.name).toEqual(B(other));
    for (const gone of ['c', 'e', 'g']) expect(await root.lookup(gone)).toBeNull();
    // listing checks every name against its hash
    await expect(async () => {
      for await (const e of root.entries()) void e;
    }).rejects.toThrow(FormatError);
  });

  it('keeps a bounded number of opened directories', async () => {
    const buf = archive([], 5);
    const counter = { reads: 0 };
    const acc = await PxarAccessor.open(source(buf, counter), { directoryCacheSize: 2 });
    const root = await acc.openRoot();
    const dirs = [];
    for (let d = 0; d < 5; d++) dirs.push((await root.lookup(`d${d}`))!);
    const first = await acc.openDirectory(dirs[4]);
    expect(await acc.openDirectory(dirs[4])).toBe(first); // cached
    for (let d = 0; d < 4; d++) await acc.openDirectory(dirs[d]);
    const reopened = await acc.openDirectory(dirs[4]); // evicted meanwhile
    expect(reopened).not.toBe(first);
    expect((await reopened.lookup('l'))?.symlinkTarget).toEqual(B('t4'));
    expect(counter.reads).toBeGreaterThan(0);
  });
});
