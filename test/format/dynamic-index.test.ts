import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { DynamicIndex, DynamicIndexWriter } from '../../ts/format/dynamic-index.js';
import { FixedIndex, FixedIndexWriter } from '../../ts/format/fixed-index.js';
import { FormatError } from '../../ts/format/errors.js';

const fixture = readFileSync(new URL('../fixtures/pbs/backup-client-pxar-data.ppxar.didx', import.meta.url));
const sha = (...parts: Buffer[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};
const header = (htype: bigint, size: number) => {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(htype, 0);
  b.writeBigUInt64LE(BigInt(size), 8);
  return b;
};
const START = 0x834c68c2194a4ed2n;
const PAYLOAD = 0x28147a1b0b7c1a25n;
const TAIL = 0x6c72b78b984c81b5n;

describe('DynamicIndex', () => {
  it('parses the PBS fixture and recomputes its csum', () => {
    const idx = DynamicIndex.parse(fixture);
    expect(idx.count).toBe(100);
    expect(idx.uuid.toString('hex')).toBe('f0ef7665555e417ea6eba00a375ceee0');
    expect(idx.ctime).toBe(1715091951);
    expect(idx.size).toBe(104_859_232);
    expect(idx.computeCsum().equals(idx.headerCsum)).toBe(true);
    expect(idx.headerCsum.toString('hex')).toBe('e13b71c181693fb7d7b46e2f34aadee48337c6828674820e0924ef940a2cbd20');
    expect(idx.chunk(0).size).toBe(1_048_608);
    for (let k = 1; k < 99; k++) expect(idx.chunk(k).size).toBe(1_048_592);
    expect(idx.chunk(99).size).toBe(1_048_608);
  });

  it('reproduces the three chunk digests from the bytes the README describes', () => {
    const idx = DynamicIndex.parse(fixture);
    const zeros = Buffer.alloc(1 << 20);
    const payloadHdr = header(PAYLOAD, 16 + zeros.length);
    const first = sha(header(START, 16), payloadHdr, zeros);
    const middle = sha(payloadHdr, zeros);
    const last = sha(payloadHdr, zeros, header(TAIL, 16));
    expect(idx.digest(0).toString('hex')).toBe(first);
    for (let k = 1; k < 99; k++) expect(idx.digest(k).toString('hex')).toBe(middle);
    expect(idx.digest(99).toString('hex')).toBe(last);
    expect(first).toBe('5c85c0827ed968c4147d6a7e59b0237fa342f6f2a9d4e6ced767f2bfc19a560f');
  });

  it('re-writes the fixture byte for byte', () => {
    const idx = DynamicIndex.parse(fixture);
    const w = new DynamicIndexWriter(idx.uuid, idx.ctime);
    for (const c of idx.chunks()) w.add(c.offset + c.size, c.digest);
    const out = w.finish();
    expect(out.data.equals(fixture)).toBe(true);
    expect(out.size).toBe(idx.size);
    expect(out.csum.equals(idx.headerCsum)).toBe(true);
  });

  it('finds chunks by offset (binary search)', () => {
    const idx = DynamicIndex.parse(fixture);
    expect(idx.findChunk(0)).toBe(0);
    expect(idx.findChunk(1_048_607)).toBe(0);
    expect(idx.findChunk(1_048_608)).toBe(1);
    expect(idx.findChunk(idx.size - 1)).toBe(99);
    expect(idx.findChunk(idx.size)).toBe(-1);
    for (let k = 0; k < 100; k += 7) {
      const c = idx.chunk(k);
      expect(idx.findChunk(c.offset + (c.size >> 1))).toBe(k);
    }
  });

  it('rejects truncated, misaligned and wrongly tagged files with clear errors', () => {
    expect(() => DynamicIndex.parse(fixture.subarray(0, 100), 'root.ppxar.didx')).toThrow(/root.ppxar.didx: truncated/);
    expect(() => DynamicIndex.parse(fixture.subarray(0, fixture.length - 3))).toThrow(FormatError);
    const bad = Buffer.from(fixture);
    bad[0] ^= 1;
    expect(() => DynamicIndex.parse(bad)).toThrow(/wrong magic/);
    const unordered = Buffer.from(fixture);
    unordered.writeBigUInt64LE(1n, 4096 + 40); // second end before the first
    expect(() => DynamicIndex.parse(unordered)).toThrow(/not after/);
  });
});

describe('FixedIndex', () => {
  it('round-trips and checks sizes', () => {
    const size = 4 * 1024 * 1024 * 2 + 5;
    const w = new FixedIndexWriter(size);
    const d = (i: number) => createHash('sha256').update(String(i)).digest();
    w.set(2, 5, d(2));
    w.set(0, 4 * 1024 * 1024, d(0));
    expect(() => w.finish()).toThrow(/never written/);
    w.set(1, 4 * 1024 * 1024, d(1));
    expect(() => w.set(2, 6, d(2))).toThrow(/expected 5/);
    const out = w.finish();
    const idx = FixedIndex.parse(out.data);
    expect(idx.count).toBe(3);
    expect(idx.size).toBe(size);
    expect(idx.chunk(2).size).toBe(5);
    expect(idx.computeCsum().equals(out.csum)).toBe(true);
    expect(idx.findChunk(4 * 1024 * 1024)).toBe(1);
    expect(() => FixedIndex.parse(out.data.subarray(0, out.data.length - 1))).toThrow(FormatError);
  });
});
