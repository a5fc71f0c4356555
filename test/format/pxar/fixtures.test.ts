/**
 * The real PBS fixtures (test/fixtures/pbs, see its README): decoding, byte-exact re-encoding
 * (metadata stream and, via the .ppxar.didx digests, the payload stream) and random access.
 */
import { createHash, type Hash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DynamicIndex } from '../../../ts/format/dynamic-index.js';
import {
  PxarAccessor,
  PxarDecoder,
  PxarEncoder,
  basicMetadata,
  type DecoderEvent,
  type Metadata,
  type ReadAtSource,
} from '../../../ts/format/pxar/index.js';

const fixture = (name: string): Buffer => readFileSync(new URL(`../../fixtures/pbs/${name}`, import.meta.url));
const DATA = fixture('backup-client-pxar-data.mpxar');
const EXPECTED = fixture('backup-client-pxar-expected.mpxar');
const PAYLOAD_INDEX = fixture('backup-client-pxar-data.ppxar.didx');

const MiB = 1024 * 1024;
const FILE_ITEM = 16 + MiB; // PAYLOAD header + data

function meta(mode: number): Metadata {
  return { ...basicMetadata(mode), uid: 1000, gid: 1000 };
}

/** The event sequence the README describes; `firstOffset` = payload offset of folder_0/file_0. */
function expectedEvents(firstOffset: number): unknown[] {
  const out: unknown[] = [{ type: 'entry', path: '', kind: 'directory', metadata: meta(0o40777) }];
  for (let i = 0; i < 10; i++) {
    out.push({ type: 'entry', path: `folder_${i}`, kind: 'directory', metadata: meta(0o40777) });
    for (let j = 0; j < 10; j++) {
      out.push({
        type: 'entry',
        path: `folder_${i}/file_${j}`,
        kind: 'file',
        metadata: meta(0o100777),
        size: MiB,
        payloadOffset: firstOffset + (i * 10 + j) * FILE_ITEM,
      });
    }
    out.push({ type: 'end', path: `folder_${i}`, kind: 'directory', metadata: meta(0o40777) });
  }
  out.push({ type: 'end', path: '', kind: 'directory', metadata: meta(0o40777) });
  return out;
}

function summarize(ev: DecoderEvent): unknown {
  const e = ev.entry;
  const s: Record<string, unknown> = { type: ev.type, path: e.path.toString(), kind: e.kind, metadata: e.metadata };
  if (ev.type === 'entry' && e.kind === 'file') {
    s.size = e.size;
    s.payloadOffset = e.payloadOffset;
  }
  return s;
}

async function decodeAll(source: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<{ events: unknown[]; decoder: PxarDecoder }> {
  const decoder = new PxarDecoder(source);
  const events: unknown[] = [];
  for await (const ev of decoder) events.push(summarize(ev));
  return { events, decoder };
}

function* oneByteAtATime(buf: Buffer): Generator<Buffer> {
  for (let i = 0; i < buf.length; i++) yield buf.subarray(i, i + 1);
}

function bufferSource(buf: Buffer, counter?: { reads: number }): ReadAtSource {
  return {
    size: buf.length,
    readAt: async (offset, length) => {
      if (counter) counter.reads++;
      return buf.subarray(offset, offset + length);
    },
  };
}

describe('decoding the PBS fixtures', () => {
  it('data.mpxar: 10 dirs × 10 files, offsets 16 + k·1048592, no prelude', async () => {
    const { events, decoder } = await decodeAll([DATA]);
    expect(events).toEqual(expectedEvents(16));
    expect(decoder.version).toBe(2);
    expect(decoder.prelude).toBeUndefined();
  });

  it('expected.mpxar: same tree, offsets 32 + k·1048592, empty prelude', async () => {
    const { events, decoder } = await decodeAll([EXPECTED]);
    expect(events).toEqual(expectedEvents(32));
    expect(decoder.version).toBe(2);
    expect(decoder.prelude).toEqual(Buffer.alloc(0));
  });

  it('gives the same result when fed one byte at a time', async () => {
    expect((await decodeAll(oneByteAtATime(DATA))).events).toEqual(expectedEvents(16));
    expect((await decodeAll(oneByteAtATime(EXPECTED))).events).toEqual(expectedEvents(32));
  });

  it('reports FILENAME positions and the data of the worked example (spec §9)', async () => {
    const decoder = new PxarDecoder([EXPECTED]);
    const root = await decoder.next();
    expect(root?.entry.entryOffset).toBe(0x28);
    const folder = await decoder.next();
    expect(folder?.entry.linkOffset).toBe(0x60);
    const file = await decoder.next();
    expect(file?.entry.payloadOffset).toBe(32);
    expect(file?.entry.linkOffset).toBe(0x60 + 25 + 56);
  });
});

/** Encodes the fixture tree; `reused` = metadata-mode run over unchanged data (expected.mpxar). */
function encodeFixtureTree(reused: boolean, payloadSink: (b: Buffer) => void): { metadata: Buffer; encoder: PxarEncoder } {
  const parts: Buffer[] = [];
  const encoder = new PxarEncoder({
    variant: 'split',
    output: { write: (b) => parts.push(b) },
    payloadOutput: { write: payloadSink },
    prelude: reused ? Buffer.alloc(0) : undefined,
  });
  const zeros = Buffer.alloc(MiB);
  encoder.begin(meta(0o40777));
  for (let i = 0; i < 10; i++) {
    encoder.enterDirectory(Buffer.from(`folder_${i}`), meta(0o40777));
    for (let j = 0; j < 10; j++) {
      const name = Buffer.from(`file_${j}`);
      const k = i * 10 + j;
      if (reused) {
        // previous offset + 16: the new stream's start marker precedes the injected old stream
        encoder.addPayloadRef(name, meta(0o100777), MiB, 32 + k * FILE_ITEM);
      } else {
        const r = encoder.beginFile(name, meta(0o100777), MiB);
        expect(r.payloadOffset).toBe(16 + k * FILE_ITEM);
        encoder.writeFileData(zeros.subarray(0, 1000));
        encoder.writeFileData(zeros.subarray(1000));
        encoder.endFile();
      }
    }
    encoder.leaveDirectory();
  }
  if (reused) encoder.advancePayload(104_859_232); // all 100 previous chunks injected
  encoder.finish();
  return { metadata: Buffer.concat(parts), encoder };
}

describe('encoding the fixture tree', () => {
  it('split encoder without prelude reproduces data.mpxar byte for byte', () => {
    let payloadBytes = 0;
    const { metadata, encoder } = encodeFixtureTree(false, (b) => (payloadBytes += b.length));
    expect(metadata.length).toBe(DATA.length);
    expect(metadata.equals(DATA)).toBe(true);
    expect(encoder.payloadPosition).toBe(16 + 100 * FILE_ITEM); // tail marker not counted
    expect(payloadBytes).toBe(16 + 100 * FILE_ITEM + 16);
  });

  it('produces the payload stream whose chunks data.ppxar.didx lists (start/tail markers, headers, data)', () => {
    const index = DynamicIndex.parse(PAYLOAD_INDEX, 'data.ppxar.didx');
    expect(index.size).toBe(104_859_232);
    // hash the stream chunk by chunk along the index's (file-aligned) boundaries
    const digests: Buffer[] = [];
    let k = 0;
    let hash: Hash = createHash('sha256');
    let left = index.chunk(0).size;
    let total = 0;
    const headers = new Map<number, string>();
    const sink = (buf: Buffer): void => {
      if (buf.length === 16) headers.set(total, buf.toString('hex'));
      total += buf.length;
      let off = 0;
      while (off < buf.length) {
        if (k >= index.count) throw new Error('payload stream longer than the index');
        const n = Math.min(left, buf.length - off);
        hash.update(buf.subarray(off, off + n));
        off += n;
        left -= n;
        if (left === 0) {
          digests.push(hash.digest());
          k++;
          hash = createHash('sha256');
          left = k < index.count ? index.chunk(k).size : 0;
        }
      }
    };
    encodeFixtureTree(false, sink);
    expect(total).toBe(index.size);
    // start marker, one PAYLOAD header (full size 16 + 1 MiB) per file at 16 + k·1048592, tail marker
    const want = new Map<number, string>([[0, 'd24e4a19c2684c83' + '1000000000000000']]);
    for (let k = 0; k < 100; k++) want.set(16 + k * FILE_ITEM, '251a7c0b1b7a1428' + '1000100000000000');
    want.set(16 + 100 * FILE_ITEM, 'b5814c988bb7726c' + '1000000000000000');
    expect(headers).toEqual(want);
    expect(digests.length).toBe(index.count);
    for (let i = 0; i < index.count; i++) expect(digests[i].equals(index.digest(i)), `chunk ${i}`).toBe(true);
    expect(index.digest(0).toString('hex')).toBe('5c85c0827ed968c4147d6a7e59b0237fa342f6f2a9d4e6ced767f2bfc19a560f');
  });

  it('payload refs of reused files (prelude, advancePayload) reproduce expected.mpxar byte for byte', () => {
    const payload: Buffer[] = [];
    const { metadata, encoder } = encodeFixtureTree(true, (b) => payload.push(Buffer.from(b)));
    expect(metadata.equals(EXPECTED)).toBe(true);
    expect(encoder.payloadPosition).toBe(16 + 104_859_232);
    // only the start and tail markers are written: the reused data is injected by the caller
    expect(Buffer.concat(payload).toString('hex')).toBe('d24e4a19c2684c83' + '1000000000000000' + 'b5814c988bb7726c' + '1000000000000000');
  });

  it('decodes its own split output together with the payload stream', async () => {
    const payload: Buffer[] = [];
    const { metadata } = encodeFixtureTree(false, (b) => payload.push(b));
    const decoder = new PxarDecoder([metadata], { payload });
    let files = 0;
    const zeros = Buffer.alloc(MiB);
    for await (const ev of decoder) {
      if (ev.type !== 'entry' || ev.entry.kind !== 'file') continue;
      const got: Buffer[] = [];
      for await (const piece of decoder.contents()) got.push(Buffer.from(piece));
      expect(Buffer.concat(got).equals(zeros)).toBe(true);
      files++;
    }
    expect(files).toBe(100);
  });
});

describe('random access on the fixtures', () => {
  for (const [name, buf, first, itemSize, goodbye, rootEntry] of [
    ['data.mpxar', DATA, 16, 111 + MiB, 14790, 24],
    ['expected.mpxar', EXPECTED, 32, 111, 14806, 40],
  ] as const) {
    it(`${name}: root listing, folder_3/file_7 and its PAYLOAD_REF`, async () => {
      const counter = { reads: 0 };
      const accessor = await PxarAccessor.open(bufferSource(buf, counter));
      expect(accessor.version).toBe(2);
      expect(accessor.rootEntryOffset).toBe(rootEntry);
      const root = await accessor.openRoot();
      expect(root.goodbyeOffset).toBe(goodbye);
      expect(root.entryOffset).toBe(rootEntry);
      expect(root.count).toBe(10);
      expect((await root.entry()).metadata).toEqual(meta(0o40777));
      const names: string[] = [];
      for await (const e of root.entries()) {
        names.push(e.name.toString());
        expect(e.kind).toBe('directory');
        expect(e.metadata).toEqual(meta(0o40777));
      }
      expect(names).toEqual(Array.from({ length: 10 }, (_, i) => `folder_${i}`));

      const folder = await root.lookup('folder_3');
      expect(folder?.kind).toBe('directory');
      const dir = await accessor.openDirectory(folder!);
      expect(dir.count).toBe(10);
      const file = await dir.lookup(Buffer.from('file_7'));
      expect(file).not.toBeNull();
      expect(file!.path.toString()).toBe('folder_3/file_7');
      expect(file!.kind).toBe('file');
      expect(file!.metadata).toEqual(meta(0o100777));
      expect(file!.size).toBe(MiB);
      expect(file!.payloadOffset).toBe(first + 37 * FILE_ITEM);
      expect(file!.endOffset - file!.linkOffset!).toBe(itemSize); // goodbye size quirk

      const viaPath = await accessor.lookupPath('folder_3/file_7');
      expect(viaPath).toEqual(file);
      expect(await accessor.lookupPath('folder_3/file_10')).toBeNull();
      expect(await accessor.lookupPath('folder_3/file_7/x')).toBeNull();
      expect(await accessor.lookupPath('nope')).toBeNull();
      expect((await accessor.lookupPath(''))?.kind).toBe('directory');

      // the directory (goodbye table) is cached: reopening and looking up again is cheap
      const before = counter.reads;
      const again = await accessor.openDirectory(folder!);
      expect(again).toBe(dir);
      expect((await again.lookup('file_8'))?.payloadOffset).toBe(first + 38 * FILE_ITEM);
      expect(counter.reads - before).toBeLessThanOrEqual(1);
    });
  }

  it('agrees with the sequential decoder on every entry of both fixtures', async () => {
    for (const buf of [DATA, EXPECTED]) {
      const accessor = await PxarAccessor.open(bufferSource(buf));
      const seen: unknown[] = [];
      const walk = async (dirEntry: Awaited<ReturnType<PxarAccessor['lookupPath']>>): Promise<void> => {
        const dir = await accessor.openDirectory(dirEntry!);
        for await (const e of dir.entries()) {
          seen.push({ type: 'entry', path: e.path.toString(), kind: e.kind, metadata: e.metadata, ...(e.kind === 'file' ? { size: e.size, payloadOffset: e.payloadOffset } : {}) });
          if (e.kind === 'directory') {
            await walk(e);
          }
        }
      };
      await walk(await accessor.lookupPath(''));
      const { events } = await decodeAll([buf]);
      expect(seen).toEqual(events.filter((e) => (e as { type: string; path: string }).type === 'entry' && (e as { path: string }).path !== ''));
    }
  });
});
