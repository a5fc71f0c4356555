import { describe, expect, it } from 'vitest';
import {
  CATALOG_MAGIC,
  CatalogReader,
  CatalogWriter,
  decodeVarint,
  decodeVarintI64,
  encodeVarint,
  encodeVarintI64,
  type CatalogEntry,
} from '../../ts/format/catalog.js';
import { FormatError } from '../../ts/format/errors.js';
import type { ReadAtSource } from '../../ts/format/pxar/accessor.js';

const B = (s: string): Buffer => Buffer.from(s);
const hex = (f: (out: number[]) => void): string => {
  const out: number[] = [];
  f(out);
  return Buffer.from(out).toString('hex');
};

function source(buf: Buffer): ReadAtSource {
  return { size: buf.length, readAt: async (o, l) => buf.subarray(o, o + l) };
}

function write(f: (w: CatalogWriter) => void): Buffer {
  const parts: Buffer[] = [];
  const w = new CatalogWriter({ write: (b) => parts.push(b) });
  f(w);
  return Buffer.concat(parts);
}

describe('catalog varints', () => {
  it('encodes the spec examples', () => {
    const u: [number, string][] = [
      [0, '00'],
      [127, '7f'],
      [128, '8001'],
      [300, 'ac02'],
      [1_700_000_000, '80e2cfaa06'],
    ];
    for (const [v, want] of u) {
      expect(hex((o) => encodeVarint(v, o))).toBe(want);
      expect(hex((o) => encodeVarintI64(v, o))).toBe(want);
      expect(decodeVarint(Buffer.from(want, 'hex'), 0)).toEqual({ value: v, next: want.length / 2 });
      expect(decodeVarintI64(Buffer.from(want, 'hex'), 0)).toEqual({ value: v, next: want.length / 2 });
    }
    const neg: [number, string][] = [
      [-1, '8100'],
      [-126, 'fe00'],
      [-128, '808100'],
    ];
    for (const [v, want] of neg) {
      expect(hex((o) => encodeVarintI64(v, o))).toBe(want);
      expect(decodeVarintI64(Buffer.from(want, 'hex'), 0)).toEqual({ value: v, next: want.length / 2 });
    }
  });

  it('round-trips edge values', () => {
    for (const v of [0, 1, 126, 127, 128, 2 ** 12 - 1, 2 ** 20 - 1, 2 ** 50 - 1, Number.MAX_SAFE_INTEGER]) {
      const out: number[] = [];
      encodeVarint(v, out);
      expect(decodeVarint(Buffer.from(out), 0).value).toBe(v);
      for (const s of [v, 0 - v, -(v + 1)]) {
        if (!Number.isSafeInteger(s)) continue;
        const o2: number[] = [];
        encodeVarintI64(s, o2);
        expect(decodeVarintI64(Buffer.from(o2), 0).value).toBe(s);
      }
    }
    expect(() => encodeVarint(-1, [])).toThrow(RangeError);
    expect(() => encodeVarint(2 ** 53, [])).toThrow(RangeError);
  });

  it('refuses malformed varints', () => {
    expect(() => decodeVarint(Buffer.from('8080', 'hex'), 0)).toThrow(/truncated varint at byte 0/);
    expect(() => decodeVarint(Buffer.alloc(10, 0xff), 0)).toThrow(/no end marker/);
    expect(() => decodeVarint(Buffer.from('ffffffffffffffffff01', 'hex'), 0)).toThrow(/exceeds 2\^53/);
    expect(() => decodeVarintI64(Buffer.alloc(11, 0x81), 0)).toThrow(FormatError);
  });
});

describe('catalog.pcat1', () => {
  it('writes the spec example byte for byte', () => {
    const bytes = write((w) => {
      w.startDirectory(B('root.pxar.didx'));
      w.addFile(B('a.txt'), 5, 1_700_000_000);
      w.startDirectory(B('sub'));
      w.addSymlink(B('link'));
      w.endDirectory();
      w.endDirectory();
      w.finish();
    });
    expect(bytes.toString('hex')).toBe(
      '91fd60f9c46758d5' +
        '07' + '01' + '6c' + '04' + '6c696e6b' +
        '14' + '02' + '66' + '05' + '612e747874' + '05' + '80e2cfaa06' + '64' + '03' + '737562' + '08' +
        '12' + '01' + '64' + '0e' + '726f6f742e707861722e64696478' + '15' +
        '2500000000000000',
    );
  });

  it('reads the spec example', async () => {
    const bytes = Buffer.from(
      '91fd60f9c46758d5' + '07016c046c696e6b' +
        '14026605612e7478740580e2cfaa066403737562081201640e726f6f742e707861722e6469647815' +
        '2500000000000000',
      'hex',
    );
    const r = await CatalogReader.open(source(bytes));
    expect(r.rootStart).toBe(37);
    const [archive] = await r.readDir(r.root());
    expect(archive).toEqual({ type: 'd', name: B('root.pxar.didx'), start: 16 });
    expect(await r.readDir(archive)).toEqual([
      { type: 'f', name: B('a.txt'), size: 5, mtime: 1_700_000_000 },
      { type: 'd', name: B('sub'), start: 8 },
    ]);
    expect(await r.lookupPath('root.pxar.didx/sub/link')).toEqual({ type: 'l', name: B('link') });
    expect(await r.lookupPath('root.pxar.didx/nope')).toBeNull();
    expect(await r.lookupPath('root.pxar.didx/a.txt/x')).toBeNull();
  });

  it('round-trips a tree with every entry type, negative mtimes, raw names and several archives', async () => {
    const nonUtf8 = Buffer.from([0xff, 0x00 + 0x41, 0x80]);
    const expected = new Map<string, CatalogEntry[]>();
    const bytes = write((w) => {
      w.startDirectory(B('root.pxar.didx'));
      w.addFile(B('f'), 2 ** 40 + 3, -1);
      w.addFile(B('g'), 0, -(2 ** 33));
      w.startDirectory(B('d'));
      w.addBlockDevice(B('b'));
      w.addCharDevice(B('c'));
      w.addHardlink(B('h'));
      w.addFifo(B('p'));
      w.addSocket(B('s'));
      w.addSymlink(B('l'));
      w.startDirectory(B('empty'));
      w.endDirectory();
      w.endDirectory();
      w.addFile(nonUtf8, 7, 1);
      w.addFile(Buffer.alloc(255, 0x78), 1, 0);
      w.endDirectory();
      w.startDirectory(B('other.pxar.didx'));
      w.endDirectory();
      w.finish();
    });
    expect(bytes.subarray(0, 8)).toEqual(CATALOG_MAGIC);
    const r = await CatalogReader.open(source(bytes));
    const dump = async (dir: CatalogEntry, prefix: string): Promise<void> => {
      const entries = await r.readDir(dir);
      expected.set(prefix, entries);
      for (const e of entries) if (e.type === 'd') await dump(e, `${prefix}/${e.name.toString('hex')}`);
    };
    await dump(r.root(), '');
    const names = (p: string): string[] => expected.get(p)!.map((e) => `${e.type}:${e.name.toString('hex')}`);
    const h = (s: string): string => B(s).toString('hex');
    expect(names('')).toEqual([`d:${h('root.pxar.didx')}`, `d:${h('other.pxar.didx')}`]);
    const rootArchive = `/${h('root.pxar.didx')}`;
    expect(expected.get(rootArchive)).toEqual([
      { type: 'f', name: B('f'), size: 2 ** 40 + 3, mtime: -1 },
      { type: 'f', name: B('g'), size: 0, mtime: -(2 ** 33) },
      { type: 'd', name: B('d'), start: expect.any(Number) },
      { type: 'f', name: nonUtf8, size: 7, mtime: 1 },
      { type: 'f', name: Buffer.alloc(255, 0x78), size: 1, mtime: 0 },
    ]);
    expect(names(`${rootArchive}/${h('d')}`)).toEqual(['b:62', 'c:63', 'h:68', 'p:70', 's:73', 'l:6c', `d:${h('empty')}`]);
    expect(expected.get(`${rootArchive}/${h('d')}/${h('empty')}`)).toEqual([]);
    expect(expected.get(`/${h('other.pxar.didx')}`)).toEqual([]);
  });

  it('refuses misuse when writing', () => {
    const w = new CatalogWriter({ write: () => undefined });
    expect(() => w.endDirectory()).toThrow(/root level/);
    expect(() => w.addFile(B(''), 1, 1)).toThrow(/bad entry name/);
    expect(() => w.addFile(Buffer.alloc(4096, 0x61), 1, 1)).toThrow(/bad entry name/);
    w.startDirectory(B('a'));
    expect(() => w.finish()).toThrow(/1 directories open/);
    w.endDirectory();
    w.finish();
    expect(() => w.addFifo(B('x'))).toThrow(/finished/);
  });

  it('refuses corrupt catalogs with FormatErrors', async () => {
    const good = write((w) => {
      w.startDirectory(B('root.pxar.didx'));
      w.startDirectory(B('sub'));
      w.addFile(B('x'), 1, 2);
      w.endDirectory();
      w.endDirectory();
      w.finish();
    });
    const expectBad = async (buf: Buffer, pattern: RegExp): Promise<void> => {
      let err: unknown;
      try {
        const r = await CatalogReader.open(source(buf));
        const walk = async (d: CatalogEntry): Promise<void> => {
          for (const e of await r.readDir(d)) if (e.type === 'd') await walk(e);
        };
        await walk(r.root());
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FormatError);
      expect((err as Error).message).toMatch(pattern);
    };
    await expectBad(Buffer.concat([Buffer.alloc(8), good.subarray(8)]), /wrong magic/);
    await expectBad(good.subarray(0, 12), /too small/);
    const badRoot = Buffer.from(good);
    badRoot.writeBigUInt64LE(BigInt(good.length), good.length - 8);
    await expectBad(badRoot, /root table offset/);
    // the 'sub' table (at 8) gets an unknown entry type
    const badType = Buffer.from(good);
    badType[10] = 0x7a;
    await expectBad(badType, /unknown entry type 0x7a at byte 10/);
    // its length claims more than the file has
    const badLen = Buffer.from(good);
    badLen[8] = 0x7f;
    await expectBad(badLen, /runs past the end/);
    // a directory distance pointing before the magic
    const dirEntry = good.indexOf(Buffer.from([0x64, 0x03, ...B('sub')]));
    const badDist = Buffer.from(good);
    badDist[dirEntry + 5] = 0x7f;
    await expectBad(badDist, /points outside the catalog/);
    // truncation anywhere
    for (let cut = 0; cut < good.length; cut++) {
      let err: unknown;
      try {
        const r = await CatalogReader.open(source(good.subarray(0, cut)));
        await r.readDir(r.root());
        for (const e of await r.readDir(r.root())) if (e.type === 'd') await r.readDir(e);
      } catch (e) {
        err = e;
      }
      expect(err, `cut ${cut}`).toBeInstanceOf(FormatError);
    }
  });
});
