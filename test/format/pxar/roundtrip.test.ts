/**
 * Round trips of a synthetic tree with every entry kind and attribute (xattrs incl. NUL in a
 * value, ACLs incl. default ACL, fcaps, quota project id, flags, negative mtimes, hardlinks,
 * empty files/dirs, 255-byte and non-UTF-8 names, a reused payload with padding) through the
 * unified and split encoders; decoded sequentially (in memory, one byte at a time, and from
 * files in a temp dir) and by random access, which must agree.
 */
import { createReadStream } from 'node:fs';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  IFBLK,
  IFCHR,
  IFIFO,
  IFSOCK,
  PXAR_PAYLOAD,
  PxarAccessor,
  PxarDecoder,
  PxarEncoder,
  WITH_FLAG_NOATIME,
  WITH_FLAG_NODUMP,
  basicMetadata,
  type AccessorEntry,
  type ByteSource,
  type Metadata,
  type PxarEntry,
  type ReadAtSource,
} from '../../../ts/format/pxar/index.js';

type Node =
  | { kind: 'dir'; name: Buffer; meta: Metadata; children: Node[] }
  | { kind: 'file'; name: Buffer; meta: Metadata; data: Buffer; reusePad?: number }
  | { kind: 'symlink'; name: Buffer; meta: Metadata; target: Buffer }
  | { kind: 'hardlink'; name: Buffer; target: string }
  | { kind: 'device'; name: Buffer; meta: Metadata; major: number; minor: number }
  | { kind: 'fifo' | 'socket'; name: Buffer; meta: Metadata };

/** Deterministic pseudo-random bytes (xorshift32). */
function noise(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

const B = (s: string): Buffer => Buffer.from(s);
const m = (mode: number, extra: Partial<Metadata> = {}): Metadata => ({ ...basicMetadata(mode), uid: 1000, gid: 1000, ...extra });

function buildTree(): Node {
  const fileMeta = m(0o100644, {
    flags: WITH_FLAG_NODUMP | WITH_FLAG_NOATIME,
    mtime: { secs: -1, nanos: 999_000_000 },
    xattrs: [
      { name: B('user.zeta'), value: B('z') },
      { name: B('user.alpha'), value: Buffer.from([0x61, 0, 0x62]) },
      { name: B('trusted.empty'), value: Buffer.alloc(0) },
    ],
    acl: {
      users: [{ uid: 1001, permissions: 6 }],
      groups: [{ gid: 100, permissions: 4 }, { gid: 101, permissions: 7 }],
      groupObj: 5,
      defaultUsers: [],
      defaultGroups: [],
    },
    fcaps: noise(20, 9),
    quotaProjectId: 42,
  });
  const dirMeta = m(0o42775, {
    mtime: { secs: 1_700_000_000, nanos: 123_456_789 },
    acl: {
      users: [],
      groups: [],
      default: { userObj: 7, groupObj: 5, other: null, mask: 7 },
      defaultUsers: [{ uid: 1002, permissions: 6 }],
      defaultGroups: [{ gid: 102, permissions: 4 }],
    },
    quotaProjectId: 3,
  });
  const children: Node[] = [
    { kind: 'file', name: B('a_file'), meta: fileMeta, data: noise(100_000, 1) },
    { kind: 'file', name: B('big'), meta: m(0o100600, { mtime: { secs: -(2 ** 40), nanos: 1 } }), data: noise(3 * 1024 * 1024 + 1, 2) },
    {
      kind: 'dir',
      name: B('dir'),
      meta: dirMeta,
      children: [
        { kind: 'device', name: B('blk'), meta: m(IFBLK | 0o660), major: 8, minor: 1 },
        { kind: 'device', name: B('chr'), meta: m(IFCHR | 0o666), major: 4095, minor: 2 ** 20 },
        { kind: 'dir', name: B('empty_dir'), meta: m(0o40700), children: [] },
        { kind: 'fifo', name: B('fifo'), meta: m(IFIFO | 0o644) },
        { kind: 'hardlink', name: B('hard'), target: 'a_file' },
        { kind: 'hardlink', name: B('hard2'), target: 'a_reused' },
        { kind: 'symlink', name: B('link'), meta: m(0o120777), target: B('../a_file') },
        { kind: 'socket', name: B('sock'), meta: m(IFSOCK | 0o755) },
        {
          kind: 'dir',
          name: B('sub'),
          meta: m(0o40755),
          children: [{ kind: 'dir', name: B('deep'), meta: m(0o40755), children: [{ kind: 'file', name: B('f'), meta: m(0o100644), data: B('x') }] }],
        },
        { kind: 'file', name: Buffer.alloc(255, 0x78), meta: m(0o100644), data: B('long name!') },
        { kind: 'file', name: Buffer.from([0xff, 0xfe, 0x80, 0x61]), meta: m(0o100644), data: Buffer.alloc(0) },
      ],
    },
    { kind: 'file', name: B('empty'), meta: m(0o100444), data: Buffer.alloc(0) },
    { kind: 'file', name: B('a_reused'), meta: m(0o100644), data: noise(5000, 3), reusePad: 7 },
    { kind: 'fifo', name: B('z_fifo_last'), meta: m(IFIFO | 0o600) },
  ];
  return {
    kind: 'dir',
    name: Buffer.alloc(0),
    meta: m(0o40755, {
      uid: 0,
      gid: 0,
      xattrs: [{ name: B('user.root'), value: B('r') }],
      acl: { users: [{ uid: 1000, permissions: 7 }], groups: [], groupObj: 5, defaultUsers: [], defaultGroups: [] },
    }),
    children,
  };
}

interface Expected {
  type: 'entry' | 'end';
  path: Buffer;
  fields: Partial<PxarEntry>;
}

interface Encoded {
  metadata: Buffer;
  payload: Buffer[];
  expected: Expected[];
  files: Map<string, Buffer>;
}

function encodeTree(variant: 'unified' | 'split'): Encoded {
  const parts: Buffer[] = [];
  const payload: Buffer[] = [];
  const encoder =
    variant === 'split'
      ? new PxarEncoder({ variant, output: { write: (b) => parts.push(b) }, payloadOutput: { write: (b) => payload.push(b) } })
      : new PxarEncoder({ variant, output: { write: (b) => parts.push(b) } });
  const expected: Expected[] = [];
  const files = new Map<string, Buffer>();
  const links = new Map<string, number>();
  const join = (dir: Buffer, name: Buffer): Buffer => (dir.length ? Buffer.concat([dir, B('/'), name]) : name);

  const visit = (node: Node, dirPath: Buffer): void => {
    const p = join(dirPath, node.name);
    const fields: Partial<PxarEntry> = { path: p, name: node.name };
    switch (node.kind) {
      case 'dir': {
        fields.kind = 'directory';
        fields.metadata = node.meta;
        if (p.length === 0) encoder.begin(node.meta);
        else {
          fields.linkOffset = encoder.metadataPosition;
          encoder.enterDirectory(node.name, node.meta);
        }
        expected.push({ type: 'entry', path: p, fields });
        const sorted = [...node.children].sort((a, b) => Buffer.compare(a.name, b.name));
        for (const c of sorted) visit(c, p);
        if (p.length) encoder.leaveDirectory();
        expected.push({ type: 'end', path: p, fields: { path: p, kind: 'directory' } });
        return;
      }
      case 'file': {
        Object.assign(fields, { kind: 'file', metadata: node.meta, size: node.data.length });
        files.set(p.toString('hex'), node.data);
        if (variant === 'split' && node.reusePad !== undefined) {
          // a reused file: ref first, then the caller injects padding + PAYLOAD item and advances
          const offset = encoder.payloadPosition + node.reusePad;
          fields.linkOffset = encoder.addPayloadRef(node.name, node.meta, node.data.length, offset);
          fields.payloadOffset = offset;
          const header = Buffer.alloc(16);
          header.writeBigUInt64LE(PXAR_PAYLOAD, 0);
          header.writeBigUInt64LE(BigInt(16 + node.data.length), 8);
          payload.push(noise(node.reusePad, 77), header, node.data);
          encoder.advancePayload(node.reusePad + 16 + node.data.length);
        } else {
          const r = encoder.beginFile(node.name, node.meta, node.data.length);
          fields.linkOffset = r.linkOffset;
          if (variant === 'split') fields.payloadOffset = r.payloadOffset;
          // odd piece sizes
          for (let off = 0; off < node.data.length; off += 65_537) encoder.writeFileData(node.data.subarray(off, off + 65_537));
          encoder.endFile();
        }
        links.set(p.toString(), fields.linkOffset as number);
        break;
      }
      case 'symlink':
        Object.assign(fields, { kind: 'symlink', metadata: node.meta, symlinkTarget: node.target });
        fields.linkOffset = encoder.addSymlink(node.name, node.meta, node.target);
        break;
      case 'hardlink': {
        const target = links.get(node.target) as number;
        Object.assign(fields, {
          kind: 'hardlink',
          metadata: basicMetadata(0),
          hardlinkTarget: B(node.target),
          hardlinkTargetOffset: target,
        });
        fields.linkOffset = encoder.addHardlink(node.name, B(node.target), target);
        break;
      }
      case 'device':
        Object.assign(fields, { kind: 'device', metadata: node.meta, device: { major: node.major, minor: node.minor } });
        fields.linkOffset = encoder.addDevice(node.name, node.meta, node.major, node.minor);
        break;
      case 'fifo':
        Object.assign(fields, { kind: 'fifo', metadata: node.meta });
        fields.linkOffset = encoder.addFifo(node.name, node.meta);
        break;
      case 'socket':
        Object.assign(fields, { kind: 'socket', metadata: node.meta });
        fields.linkOffset = encoder.addSocket(node.name, node.meta);
        break;
    }
    expected.push({ type: 'entry', path: p, fields });
  };
  visit(buildTree(), Buffer.alloc(0));
  encoder.finish();
  return { metadata: Buffer.concat(parts), payload, expected, files };
}

function pick(entry: PxarEntry, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) out[k] = (entry as unknown as Record<string, unknown>)[k];
  return out;
}

interface Decoded {
  entries: PxarEntry[];
  contents: Map<string, Buffer>;
  /** Files read with contentInView. */
  inView: number;
}

/** Decode everything, checking events against the expectation, collecting file contents. */
async function decodeAndCheck(enc: Encoded, source: ByteSource, payload?: ByteSource, releasePayload?: (piece: Buffer) => void): Promise<Decoded> {
  const decoder = new PxarDecoder(source, { payload, releasePayload });
  const entries: PxarEntry[] = [];
  const contents = new Map<string, Buffer>();
  let i = 0;
  let files = 0;
  let inView = 0;
  for await (const ev of decoder) {
    const want = enc.expected[i++];
    expect(ev.type).toBe(want.type);
    expect(ev.entry.path).toEqual(want.path);
    if (ev.type === 'end') continue;
    expect(pick(ev.entry, Object.keys(want.fields))).toEqual(want.fields);
    entries.push(ev.entry);
    if (ev.entry.kind === 'file' && (payload || ev.entry.payloadOffset === undefined)) {
      const pieces: Buffer[] = [];
      // every other file as one view where it lies whole in the bytes at hand
      const whole = ++files % 2 ? decoder.contentInView() : null;
      if (whole) {
        inView++;
        pieces.push(Buffer.from(whole));
      } else for await (const piece of decoder.contents()) pieces.push(Buffer.from(piece));
      contents.set(ev.entry.path.toString('hex'), Buffer.concat(pieces));
    }
  }
  expect(i).toBe(enc.expected.length);
  return { entries, contents, inView };
}

function* pieces(buf: Buffer[] | Buffer, size: number): Generator<Buffer> {
  for (const b of Array.isArray(buf) ? buf : [buf]) for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

function memorySource(buf: Buffer): ReadAtSource {
  return { size: buf.length, readAt: async (o, l) => buf.subarray(o, o + l) };
}

async function walkAccessor(accessor: PxarAccessor): Promise<AccessorEntry[]> {
  const out: AccessorEntry[] = [];
  const rootEntry = (await accessor.lookupPath('')) as AccessorEntry;
  out.push(rootEntry);
  const walk = async (entry: AccessorEntry): Promise<void> => {
    const dir = await accessor.openDirectory(entry);
    for await (const child of dir.entries()) {
      out.push(child);
      if (child.kind === 'directory') await walk(child);
    }
  };
  await walk(rootEntry);
  return out;
}

async function checkAccessor(enc: Encoded, accessor: PxarAccessor, decoded: Decoded, withPayload: boolean): Promise<void> {
  const viaAccessor = await walkAccessor(accessor);
  expect(viaAccessor.length).toBe(decoded.entries.length);
  for (let i = 0; i < viaAccessor.length; i++) {
    const { endOffset, ...rest } = viaAccessor[i];
    expect(rest).toEqual(decoded.entries[i]);
    expect(endOffset).toBeGreaterThan(rest.entryOffset);
    // lookup by path finds the same entry
    expect(await accessor.lookupPath(rest.path)).toEqual(viaAccessor[i]);
    if (rest.kind === 'file' && (withPayload || rest.payloadOffset === undefined)) {
      const f = await accessor.openFile(viaAccessor[i]);
      const data = await f.read(0, f.size);
      expect(data.equals(enc.files.get(rest.path.toString('hex')) as Buffer)).toBe(true);
      if (f.size > 10) expect((await f.read(3, 5)).equals(data.subarray(3, 8))).toBe(true);
    }
    if (rest.kind === 'hardlink') {
      const target = await accessor.followHardlink(viaAccessor[i]);
      expect(target.kind).toBe('file');
      expect(target.linkOffset).toBe(rest.hardlinkTargetOffset);
      expect(target.path).toEqual(rest.hardlinkTarget);
    }
  }
  expect(await accessor.lookupPath('dir/nope')).toBeNull();
  expect(await accessor.lookupPath('dir/link/x')).toBeNull();
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pxb-pxar-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('round trip', () => {
  for (const variant of ['unified', 'split'] as const) {
    it(`${variant}: decoder returns what was encoded, also fed in tiny pieces`, async () => {
      const enc = encodeTree(variant);
      const payload = variant === 'split' ? enc.payload : undefined;
      const decoded = await decodeAndCheck(enc, [enc.metadata], payload);
      expect(decoded.contents.size).toBe(enc.files.size);
      for (const [k, data] of enc.files) expect(decoded.contents.get(k)?.equals(data), k).toBe(true);
      // whole streams: entries and (every other file's) data without awaits, the same result
      const whole = await decodeAndCheck(enc, [enc.metadata], payload && [Buffer.concat(payload)]);
      expect(whole.inView).toBeGreaterThan(2);
      expect(whole.contents).toEqual(decoded.contents);
      // metadata one byte at a time (payload in odd-sized pieces)
      if (variant === 'split') {
        await decodeAndCheck(enc, pieces(enc.metadata, 1), pieces(enc.payload, 4093));
        // a split .mpxar alone decodes too (no contents then)
        await decodeAndCheck(enc, pieces(enc.metadata, 3));
      } else {
        await decodeAndCheck(enc, pieces(enc.metadata, 997));
        const small = encodeSmallUnified();
        await decodeAndCheck(small, pieces(small.metadata, 1));
      }
    });

    it(`${variant}: accessor agrees with the sequential decoder`, async () => {
      const enc = encodeTree(variant);
      const payload = variant === 'split' ? Buffer.concat(enc.payload) : undefined;
      const decoded = await decodeAndCheck(enc, [enc.metadata], payload ? [payload] : undefined);
      const accessor = await PxarAccessor.open(memorySource(enc.metadata), payload ? { payload: memorySource(payload) } : {});
      expect(accessor.version).toBe(variant === 'split' ? 2 : 1);
      await checkAccessor(enc, accessor, decoded, true);
    });

    it(`${variant}: round trip through files in a temp dir (stream decode, file-handle accessor)`, async () => {
      const enc = encodeTree(variant);
      const metaFile = path.join(tmp, `${variant}.${variant === 'split' ? 'mpxar' : 'pxar'}`);
      await writeFile(metaFile, enc.metadata);
      let payloadFile: string | undefined;
      if (variant === 'split') {
        payloadFile = path.join(tmp, `${variant}.ppxar`);
        await writeFile(payloadFile, Buffer.concat(enc.payload));
      }
      const decoded = await decodeAndCheck(
        enc,
        createReadStream(metaFile, { highWaterMark: 1000 }),
        payloadFile ? createReadStream(payloadFile, { highWaterMark: 64 * 1024 }) : undefined,
      );
      const fh = await open(metaFile);
      const ph = payloadFile ? await open(payloadFile) : undefined;
      try {
        const fileSource = async (h: typeof fh): Promise<ReadAtSource> => ({
          size: (await h.stat()).size,
          readAt: async (offset, length) => {
            const buf = Buffer.alloc(length);
            const { bytesRead } = await h.read(buf, 0, length, offset);
            return buf.subarray(0, bytesRead);
          },
        });
        const accessor = await PxarAccessor.open(await fileSource(fh), ph ? { payload: await fileSource(ph) } : {});
        await checkAccessor(enc, accessor, decoded, true);
      } finally {
        await fh.close();
        await ph?.close();
      }
    });
  }

  it('split: a recycling payload source gets each piece back once, only after the decoder is past it', async () => {
    const enc = encodeTree('split');
    // Pieces of very mixed sizes (headers straddle them, several tiny ones in a row), each
    // its own buffer; a released piece is overwritten at once, as a reused buffer would be.
    const sizes = [1, 7, 16, 3, 3000, 17, 65536, 2, 15, 100000, 40000];
    const all = Buffer.concat(enc.payload);
    const given = new Set<Buffer>();
    const released = new Set<ArrayBufferLike>();
    function* source(): Generator<Buffer> {
      for (let at = 0, k = 0; at < all.length; k++) {
        // its own ArrayBuffer (small Buffer.from copies share node's pool), as the pool's are
        const b = Buffer.allocUnsafeSlow(Math.min(sizes[k % sizes.length], all.length - at));
        all.copy(b, 0, at, at + b.length);
        at += b.length;
        given.add(b);
        yield b;
      }
    }
    const release = (piece: Buffer) => {
      const own = [...given].find((b) => b.buffer === piece.buffer);
      expect(own, 'released a buffer the source did not give').toBeDefined();
      expect(released.has(piece.buffer), 'released twice').toBe(false);
      released.add(piece.buffer);
      own!.fill(0xee);
    };
    const decoded = await decodeAndCheck(enc, [enc.metadata], source(), release);
    for (const [k, data] of enc.files) expect(decoded.contents.get(k)?.equals(data), k).toBe(true);
    // everything but the pieces still held at the end came back
    expect(released.size).toBeGreaterThanOrEqual(given.size - 2);
    expect(given.size).toBeGreaterThan(50);
  });

  it('split: file data streams in pieces without reading whole files', async () => {
    const enc = encodeTree('split');
    const decoder = new PxarDecoder([enc.metadata], { payload: pieces(enc.payload, 256 * 1024) });
    for await (const ev of decoder) {
      if (ev.type === 'entry' && ev.entry.path.toString() === 'big') {
        let max = 0;
        let total = 0;
        for await (const piece of decoder.contents()) {
          max = Math.max(max, piece.length);
          total += piece.length;
        }
        expect(total).toBe(3 * 1024 * 1024 + 1);
        expect(max).toBeLessThanOrEqual(1024 * 1024);
      }
    }
  });

  it('skips unread file data (unified and split)', async () => {
    for (const variant of ['unified', 'split'] as const) {
      const enc = encodeTree(variant);
      const decoder = new PxarDecoder([enc.metadata], { payload: variant === 'split' ? enc.payload : undefined });
      let n = 0;
      let partial = false;
      for await (const ev of decoder) {
        if (ev.type === 'entry') n++;
        if (ev.type === 'entry' && ev.entry.path.toString() === 'big') {
          // read one piece only, then move on
          for await (const piece of decoder.contents()) {
            expect(piece.length).toBeGreaterThan(0);
            partial = true;
            break;
          }
        }
      }
      expect(partial).toBe(true);
      expect(n).toBe(enc.expected.filter((e) => e.type === 'entry').length);
    }
  });
});

/** A tiny unified archive (no big files) for byte-at-a-time decoding. */
function encodeSmallUnified(): Encoded {
  const parts: Buffer[] = [];
  const encoder = new PxarEncoder({ variant: 'unified', output: { write: (b) => parts.push(b) } });
  const root = m(0o40755);
  const f = m(0o100644, { xattrs: [{ name: B('user.a'), value: B('1') }] });
  encoder.begin(root);
  const r = encoder.beginFile(B('f'), f, 3);
  encoder.writeFileData(B('abc'));
  encoder.endFile();
  encoder.addHardlink(B('g'), B('f'), r.linkOffset);
  encoder.finish();
  return {
    metadata: Buffer.concat(parts),
    payload: [],
    files: new Map([[B('f').toString('hex'), B('abc')]]),
    expected: [
      { type: 'entry', path: Buffer.alloc(0), fields: { kind: 'directory', metadata: root } },
      { type: 'entry', path: B('f'), fields: { kind: 'file', metadata: f, size: 3, linkOffset: r.linkOffset } },
      { type: 'entry', path: B('g'), fields: { kind: 'hardlink', hardlinkTarget: B('f'), hardlinkTargetOffset: r.linkOffset } },
      { type: 'end', path: Buffer.alloc(0), fields: {} },
    ],
  };
}
