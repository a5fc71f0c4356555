/**
 * Hostile and corrupt archives: every problem must surface as a FormatError naming a byte
 * offset, never as a crash, a hang or a large allocation.
 */
import { describe, expect, it } from 'vitest';
import { FormatError } from '../../../ts/format/errors.js';
import {
  IFBLK,
  IFIFO,
  PXAR_ENTRY_V1,
  PXAR_FCAPS,
  PXAR_FILENAME,
  PXAR_GOODBYE,
  PXAR_GOODBYE_TAIL_MARKER,
  PXAR_HARDLINK,
  PXAR_PAYLOAD_REF,
  PXAR_XATTR,
  PxarAccessor,
  PxarDecoder,
  PxarEncoder,
  basicMetadata,
  type AccessorEntry,
  type ByteSource,
  type Metadata,
  type ReadAtSource,
} from '../../../ts/format/pxar/index.js';

const B = (s: string): Buffer => Buffer.from(s);

interface Item {
  type: bigint;
  pos: number;
  size: number;
}

function items(buf: Buffer): Item[] {
  const out: Item[] = [];
  for (let pos = 0; pos < buf.length; ) {
    const size = Number(buf.readBigUInt64LE(pos + 8));
    out.push({ type: buf.readBigUInt64LE(pos), pos, size });
    pos += size;
  }
  return out;
}

const find = (buf: Buffer, type: bigint, nth = 0): Item => items(buf).filter((i) => i.type === type)[nth];

/** A small archive with every kind of entry (unified), or a split pair. */
function sample(variant: 'unified' | 'split' = 'unified'): { meta: Buffer; payload: Buffer } {
  const parts: Buffer[] = [];
  const pay: Buffer[] = [];
  const enc =
    variant === 'split'
      ? new PxarEncoder({ variant, output: { write: (b) => parts.push(b) }, payloadOutput: { write: (b) => pay.push(b) } })
      : new PxarEncoder({ variant, output: { write: (b) => parts.push(b) } });
  const file: Metadata = {
    ...basicMetadata(0o100644),
    xattrs: [{ name: B('user.x'), value: B('y') }],
    fcaps: B('cap'),
  };
  enc.begin(basicMetadata(0o40755));
  const a = enc.beginFile(B('a_b'), file, 5);
  enc.writeFileData(B('hello'));
  enc.endFile();
  enc.enterDirectory(B('xx'), basicMetadata(0o40755));
  enc.addSymlink(B('x'), basicMetadata(0o120777), B('../a_b'));
  enc.addDevice(B('dev'), basicMetadata(IFBLK | 0o600), 8, 0);
  enc.addFifo(B('fifo'), basicMetadata(IFIFO | 0o600));
  enc.leaveDirectory();
  enc.addHardlink(B('z_link'), B('a_b'), a.linkOffset);
  enc.beginFile(B("z_second"), basicMetadata(0o100644), 3);
  enc.writeFileData(B('abc'));
  enc.endFile();
  enc.finish();
  return { meta: Buffer.concat(parts), payload: Buffer.concat(pay) };
}

/** Decode everything (reading all file data); returns the error or undefined. */
async function decodeError(meta: ByteSource, payload?: ByteSource): Promise<unknown> {
  try {
    const d = new PxarDecoder(meta, { payload });
    for await (const ev of d) {
      if (ev.type === 'entry' && ev.entry.kind === 'file' && (payload || ev.entry.payloadOffset === undefined)) {
        for await (const piece of d.contents()) void piece;
      }
    }
    return undefined;
  } catch (e) {
    return e;
  }
}

async function expectFormatError(meta: Buffer, pattern?: RegExp, payload?: Buffer): Promise<void> {
  const err = await decodeError([meta], payload ? [payload] : undefined);
  expect(err, 'expected a FormatError').toBeInstanceOf(FormatError);
  expect((err as Error).message).toMatch(/at byte \d+/);
  if (pattern) expect((err as Error).message).toMatch(pattern);
}

function source(buf: Buffer): ReadAtSource {
  return { size: buf.length, readAt: async (o, l) => buf.subarray(o, o + l) };
}

/** Open and walk everything through the accessor (reading files, following hardlinks). */
async function accessorError(buf: Buffer): Promise<unknown> {
  try {
    const acc = await PxarAccessor.open(source(buf));
    const walk = async (entry: AccessorEntry, depth: number): Promise<void> => {
      if (depth > 64) throw new Error('walk too deep: cycle?');
      const dir = await acc.openDirectory(entry);
      for await (const child of dir.entries()) {
        if (child.kind === 'directory') await walk(child, depth + 1);
        if (child.kind === 'file' && child.payloadOffset === undefined) {
          const f = await acc.openFile(child);
          await f.read(0, f.size);
        }
        if (child.kind === 'hardlink') await acc.followHardlink(child);
        const again = await dir.lookup(child.name);
        if (!again) throw new Error('lookup failed for a listed child');
      }
    };
    await walk((await acc.lookupPath(''))!, 0);
    return undefined;
  } catch (e) {
    return e;
  }
}

function patch(buf: Buffer, f: (b: Buffer) => void): Buffer {
  const copy = Buffer.from(buf);
  f(copy);
  return copy;
}

describe('hostile pxar input', () => {
  it('sample archives are valid', async () => {
    expect(await decodeError([sample().meta])).toBeUndefined();
    expect(await accessorError(sample().meta)).toBeUndefined();
    const split = sample('split');
    expect(await decodeError([split.meta], [split.payload])).toBeUndefined();
  });

  it('truncation at every cut point is a FormatError (decoder and accessor)', async () => {
    for (const { meta, payload } of [sample(), sample('split')]) {
      for (let cut = 0; cut < meta.length; cut++) {
        const piece = meta.subarray(0, cut);
        const err = await decodeError([piece]);
        expect(err, `decoder, cut ${cut}`).toBeInstanceOf(FormatError);
        const aerr = await accessorError(piece);
        expect(aerr, `accessor, cut ${cut}`).toBeInstanceOf(FormatError);
      }
      if (payload.length) {
        for (let cut = 0; cut < payload.length; cut++) {
          const err = await decodeError([meta], [payload.subarray(0, cut)]);
          expect(err, `payload cut ${cut}`).toBeInstanceOf(FormatError);
        }
      }
    }
  });

  it('refuses a wrong first item', async () => {
    const { meta } = sample();
    const fname = find(meta, PXAR_FILENAME);
    await expectFormatError(meta.subarray(fname.pos), /must start with ENTRY or FORMAT_VERSION, found FILENAME/);
    await expectFormatError(meta.subarray(find(meta, PXAR_GOODBYE).pos), /found GOODBYE/);
    await expectFormatError(Buffer.concat([Buffer.alloc(16, 0x41), meta]), /unknown item 0x4141414141414141 at byte 0/);
    const split = sample('split');
    // a payload stream given as metadata, and a metadata stream given as payload
    await expectFormatError(split.payload, /PAYLOAD_START_MARKER/);
    await expectFormatError(split.meta, /expected PAYLOAD_START_MARKER/, split.meta);
    // a PRELUDE without FORMAT_VERSION
    const prelude = Buffer.alloc(16);
    prelude.writeBigUInt64LE(0xe309d79d9f7b771bn, 0);
    prelude.writeBigUInt64LE(16n, 8);
    await expectFormatError(Buffer.concat([prelude, meta]), /found PRELUDE/);
    expect(await accessorError(Buffer.concat([Buffer.alloc(16, 0x41), meta]))).toBeInstanceOf(FormatError);
  });

  it('bounds item sizes before reading or allocating content', async () => {
    const { meta } = sample();
    const fname = find(meta, PXAR_FILENAME);
    const xattr = find(meta, PXAR_XATTR);
    const cases: [Buffer, RegExp][] = [
      [patch(meta, (b) => b.writeBigUInt64LE(BigInt(16 + 4098), fname.pos + 8)), /FILENAME content of 4098 bytes exceeds the limit of 4097/],
      [patch(meta, (b) => b.writeBigUInt64LE(2n ** 40n, fname.pos + 8)), /FILENAME content of \d+ bytes exceeds the limit/],
      [patch(meta, (b) => b.writeBigUInt64LE(BigInt(16 + 65792), xattr.pos + 8)), /XATTR content of 65792 bytes exceeds the limit of 65791/],
      [patch(meta, (b) => b.writeBigUInt64LE(2n ** 63n, xattr.pos + 8)), /impossible size/],
      [patch(meta, (b) => b.writeBigUInt64LE(15n, xattr.pos + 8)), /size 15 < 16/],
      [patch(meta, (b) => b.writeBigUInt64LE(57n, 8)), /ENTRY content of 41 bytes exceeds the limit of 40/],
      [patch(meta, (b) => b.writeBigUInt64LE(55n, 8)), /ENTRY of 39 bytes/],
    ];
    for (const [i, [buf, pattern]] of cases.entries()) {
      // except for the undersized ENTRY, the source refuses to deliver anything beyond the bad
      // header: the size check must come before reading (and allocating) the content
      const bad = i >= 5 ? 0 : i >= 2 ? xattr.pos : fname.pos;
      const guarded = function* (): Generator<Buffer> {
        yield buf.subarray(0, i === 6 ? buf.length : bad + 16);
        throw new Error('read past the bad header');
      };
      const err = await decodeError(guarded());
      expect(err, String(pattern)).toBeInstanceOf(FormatError);
      expect((err as Error).message).toMatch(pattern);
      expect(await accessorError(buf)).toBeInstanceOf(FormatError);
    }
  });

  it('refuses an item out of place inside an entry before reading its content', async () => {
    const { meta } = sample();
    const xattr = find(meta, PXAR_XATTR);
    // the first XATTR made a PRELUDE (same size; a PRELUDE belongs before the root only)
    const buf = patch(meta, (b) => b.writeBigUInt64LE(0xe309d79d9f7b771bn, xattr.pos));
    for (const piece of [1, xattr.pos + 16, buf.length]) {
      // the source ends right after the bad header (in pieces of one byte: nothing lies whole
      // in view), or gives everything at once
      const guarded = function* (): Generator<Buffer> {
        for (let p = 0; p < Math.min(buf.length, Math.max(piece, xattr.pos + 16)); p += piece) yield buf.subarray(p, p + piece);
        throw new Error('read past the bad header');
      };
      const err = await decodeError(guarded());
      expect(err).toBeInstanceOf(FormatError);
      expect((err as Error).message).toMatch(new RegExp(`unexpected PRELUDE inside an entry at byte ${xattr.pos}`));
    }
  });

  it("refuses bad names: '..', '.', '/', NUL, empty, missing terminator", async () => {
    const { meta } = sample();
    const all = items(meta);
    const nameItem = (name: string): Item =>
      all.find((i) => i.type === PXAR_FILENAME && meta.subarray(i.pos + 16, i.pos + i.size).equals(Buffer.from(`${name}\0`)))!;
    const pos = (name: string): number => nameItem(name).pos + 16;
    const cases: [Buffer, RegExp][] = [
      [patch(meta, (b) => b.write('..', pos('xx'))), /illegal file name: '\.\.'/],
      [patch(meta, (b) => b.write('.', pos('x'))), /illegal file name: '\.'/],
      [patch(meta, (b) => b.write('a/b', pos('a_b'))), /contains '\/'/],
      [patch(meta, (b) => (b[pos('a_b') + 1] = 0)), /contains NUL/],
      [patch(meta, (b) => (b[pos('a_b') + 3] = 0x41)), /without terminating NUL/],
    ];
    // an empty name: FILENAME of content "\0" spliced in place of "a_b\0"
    const fname = nameItem('a_b');
    const empty = Buffer.alloc(17);
    empty.writeBigUInt64LE(PXAR_FILENAME, 0);
    empty.writeBigUInt64LE(17n, 8);
    cases.push([Buffer.concat([meta.subarray(0, fname.pos), empty, meta.subarray(fname.pos + fname.size)]), /illegal file name: empty/]);
    for (const [buf, pattern] of cases) await expectFormatError(buf, pattern);
    for (const [buf] of cases.slice(0, 5)) expect(await accessorError(buf)).toBeInstanceOf(FormatError);
  });

  it('refuses HARDLINKs that do not point back at a regular file', async () => {
    const { meta } = sample();
    const all = items(meta);
    const hlIndex = all.findIndex((i) => i.type === PXAR_HARDLINK);
    const hl = all[hlIndex];
    const linkPos = all[hlIndex - 1].pos; // its FILENAME
    const dirFilename = meta.indexOf(B('xx\0')) - 16;
    const offsets: [bigint, RegExp][] = [
      [2n ** 64n - 100n, /out of range/], // "forward" (wraps)
      [BigInt(linkPos + 1), /does not point back/], // before the archive start
      [0n, /does not point back/], // itself
      [BigInt(linkPos - dirFilename), /does not point back/], // a directory
      [BigInt(linkPos - dirFilename - 3), /does not point back/], // not an entry at all
    ];
    for (const [offset, pattern] of offsets) {
      const buf = patch(meta, (b) => b.writeBigUInt64LE(offset, hl.pos + 16));
      await expectFormatError(buf, pattern);
      expect(await accessorError(buf)).toBeInstanceOf(FormatError);
    }
    await expectFormatError(patch(meta, (b) => b.write('../', hl.pos + 24)), /contains '\.\.'/);
  });

  it('split: refuses refs below the consumed payload, bad payload headers and markers', async () => {
    const { meta, payload } = sample('split');
    const second = find(meta, PXAR_PAYLOAD_REF, 1);
    await expectFormatError(
      patch(meta, (b) => b.writeBigUInt64LE(16n, second.pos + 16)),
      /PAYLOAD_REF offset 16 is below the consumed payload position 37/,
      payload,
    );
    // without a payload stream there is nothing consumed to compare with
    expect(await decodeError([patch(meta, (b) => b.writeBigUInt64LE(16n, second.pos + 16))])).toBeUndefined();
    await expectFormatError(meta, /expected PAYLOAD of 5 bytes, found PAYLOAD of 4/, patch(payload, (b) => b.writeBigUInt64LE(20n, 24)));
    await expectFormatError(meta, /expected PAYLOAD of 5 bytes, found PAYLOAD_START_MARKER/, patch(payload, (b) => payload.copy(b, 16, 0, 16)));
    await expectFormatError(meta, /payload stream: unknown item .* at byte 0/, patch(payload, (b) => (b[0] ^= 1)));
    await expectFormatError(meta, /expected PAYLOAD_START_MARKER, found PAYLOAD_TAIL_MARKER/, patch(payload, (b) => payload.copy(b, 0, payload.length - 16)));
    await expectFormatError(meta, /missing PAYLOAD_TAIL_MARKER/, payload.subarray(0, payload.length - 1));
    // unreferenced padding before the tail marker is fine
    expect(await decodeError([meta], [Buffer.concat([payload.subarray(0, payload.length - 16), Buffer.alloc(100), payload.subarray(-16)])])).toBeUndefined();
    await expectFormatError(patch(meta, (b) => b.writeBigUInt64LE(BigInt(payload.length), second.pos + 16)), /truncated/, payload);
  });

  it('refuses trailing data, goodbye size mismatches and duplicate attributes', async () => {
    const { meta } = sample();
    await expectFormatError(Buffer.concat([meta, Buffer.alloc(1)]), /trailing data after the root GOODBYE/);
    // the subdirectory's GOODBYE claims one item more (the extra bytes are inserted)
    const gb = find(meta, PXAR_GOODBYE);
    const grown = Buffer.concat([meta.subarray(0, gb.pos), Buffer.alloc(gb.size + 24), meta.subarray(gb.pos + gb.size)]);
    meta.copy(grown, gb.pos, gb.pos, gb.pos + gb.size);
    grown.writeBigUInt64LE(BigInt(gb.size + 24), gb.pos + 8);
    await expectFormatError(grown, /GOODBYE of 96 bytes for 3 entries \(expected 96\)|GOODBYE of 120 bytes for 3 entries/);
    // a second FCAPS item
    const fc = find(meta, PXAR_FCAPS);
    const dup = Buffer.concat([meta.subarray(0, fc.pos + fc.size), meta.subarray(fc.pos, fc.pos + fc.size), meta.subarray(fc.pos + fc.size)]);
    await expectFormatError(dup, /duplicate FCAPS/);
    // a GOODBYE tail that does not point at the directory: accessor refuses
    const tailPos = gb.pos + gb.size - 24;
    expect(meta.readBigUInt64LE(tailPos)).toBe(PXAR_GOODBYE_TAIL_MARKER);
    const badTail = patch(meta, (b) => b.writeBigUInt64LE(BigInt(gb.size + 1), tailPos + 8));
    expect(await accessorError(badTail)).toBeInstanceOf(FormatError);
  });

  it('survives random corruption: FormatError or a clean decode, never anything else', async () => {
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    for (const { meta, payload } of [sample(), sample('split')]) {
      for (let round = 0; round < 400; round++) {
        const buf = Buffer.from(meta);
        const flips = 1 + rand(3);
        for (let i = 0; i < flips; i++) buf[rand(buf.length)] = rand(256);
        const err = await decodeError([buf], payload.length ? [payload] : undefined);
        if (err !== undefined) expect(err, `round ${round}`).toBeInstanceOf(FormatError);
        const aerr = await accessorError(buf);
        if (aerr !== undefined) expect(aerr, `accessor round ${round}`).toBeInstanceOf(FormatError);
      }
    }
  });

  it('bounds attribute items per entry and directory nesting (no gigabyte metadata)', async () => {
    const encode = (build: (enc: PxarEncoder) => void): Buffer => {
      const parts: Buffer[] = [];
      const enc = new PxarEncoder({ variant: 'unified', output: { write: (b) => parts.push(b) } });
      enc.begin(basicMetadata(0o40755));
      build(enc);
      enc.finish();
      return Buffer.concat(parts);
    };
    const withAcl = (n: number) =>
      encode((enc) => {
        const meta: Metadata = { ...basicMetadata(0o100644), acl: { ...basicMetadata(0).acl, users: Array.from({ length: n }, (_, i) => ({ uid: i, permissions: 4 })) } };
        enc.beginFile(B('f'), meta, 0);
        enc.endFile();
      });
    expect(await decodeError([withAcl(65536)])).toBeUndefined();
    await expectFormatError(withAcl(65537), /more than 65536 ACL_USER items in one entry/);
    const xattrs = (n: number) =>
      encode((enc) => {
        enc.beginFile(B('f'), { ...basicMetadata(0o100644), xattrs: Array.from({ length: n }, (_, i) => ({ name: B(`user.${i}`), value: B('') })) }, 0);
        enc.endFile();
      });
    await expectFormatError(xattrs(65537), /more than 65536 XATTR items in one entry/);
    const nested = (depth: number) =>
      encode((enc) => {
        for (let i = 0; i < depth; i++) enc.enterDirectory(B('d'), basicMetadata(0o40755));
        for (let i = 0; i < depth; i++) enc.leaveDirectory();
      });
    expect(await decodeError([nested(8191)])).toBeUndefined(); // + the root: 8192 levels
    await expectFormatError(nested(8192), /directories nested deeper than 8192 levels/);
  }, 60_000);
});

describe('legacy ENTRY_V1', () => {
  it('decodes a v1 root with a nanosecond mtime', async () => {
    const entry = Buffer.alloc(16 + 32);
    entry.writeBigUInt64LE(PXAR_ENTRY_V1, 0);
    entry.writeBigUInt64LE(48n, 8);
    entry.writeBigUInt64LE(0o40755n, 16);
    entry.writeUInt32LE(1000, 32);
    entry.writeUInt32LE(100, 36);
    entry.writeBigUInt64LE(1_500_000_000_123_456_789n, 40);
    const gb = Buffer.alloc(40);
    gb.writeBigUInt64LE(PXAR_GOODBYE, 0);
    gb.writeBigUInt64LE(40n, 8);
    gb.writeBigUInt64LE(PXAR_GOODBYE_TAIL_MARKER, 16);
    gb.writeBigUInt64LE(48n, 24);
    gb.writeBigUInt64LE(40n, 32);
    const archive = Buffer.concat([entry, gb]);
    const d = new PxarDecoder([archive]);
    const root = await d.next();
    expect(root?.entry.metadata).toEqual({ ...basicMetadata(0o40755), uid: 1000, gid: 100, mtime: { secs: 1_500_000_000, nanos: 123_456_789 } });
    expect((await d.next())?.type).toBe('end');
    expect(await d.next()).toBeNull();
    expect(d.version).toBe(1);
    const acc = await PxarAccessor.open(source(archive));
    expect((await (await acc.openRoot()).entry()).metadata.mtime).toEqual({ secs: 1_500_000_000, nanos: 123_456_789 });
  });
});
