/**
 * Encoder layout details checked on the raw bytes: attribute order, field encodings, goodbye
 * tables (sizes for new vs reused files, root tail quirk, empty directory), HARDLINK offsets,
 * payload stream framing, buffer ownership, and refusal of misuse.
 */
import { describe, expect, it } from 'vitest';
import {
  IFBLK,
  IFIFO,
  IFSOCK,
  PXAR_ACL_DEFAULT,
  PXAR_ACL_DEFAULT_GROUP,
  PXAR_ACL_DEFAULT_USER,
  PXAR_ACL_GROUP,
  PXAR_ACL_GROUP_OBJ,
  PXAR_ACL_USER,
  PXAR_DEVICE,
  PXAR_ENTRY,
  PXAR_FCAPS,
  PXAR_FILENAME,
  PXAR_FORMAT_VERSION,
  PXAR_GOODBYE,
  PXAR_GOODBYE_TAIL_MARKER,
  PXAR_HARDLINK,
  PXAR_PAYLOAD,
  PXAR_PAYLOAD_REF,
  PXAR_PAYLOAD_START_MARKER,
  PXAR_PAYLOAD_TAIL_MARKER,
  PXAR_PRELUDE,
  PXAR_QUOTA_PROJID,
  PXAR_SYMLINK,
  PXAR_XATTR,
  PLAIN_RUN_FIELDS,
  PxarEncoder,
  basicMetadata,
  hashFilename,
  type Metadata,
} from '../../../ts/format/pxar/index.js';

interface Item {
  type: bigint;
  pos: number;
  content: Buffer;
}

/** Split a metadata stream into items (GOODBYE/PAYLOAD contents included). */
function items(buf: Buffer): Item[] {
  const out: Item[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const type = buf.readBigUInt64LE(pos);
    const size = Number(buf.readBigUInt64LE(pos + 8));
    out.push({ type, pos, content: buf.subarray(pos + 16, pos + size) });
    pos += size;
  }
  expect(pos).toBe(buf.length);
  return out;
}

function goodbye(item: Item): { hash: bigint; offset: number; size: number }[] {
  const out = [];
  for (let p = 0; p < item.content.length; p += 24) {
    out.push({
      hash: item.content.readBigUInt64LE(p),
      offset: Number(item.content.readBigUInt64LE(p + 8)),
      size: Number(item.content.readBigUInt64LE(p + 16)),
    });
  }
  return out;
}

const B = (s: string): Buffer => Buffer.from(s);

function collector(): { sink: { write(b: Buffer): void }; bytes(): Buffer; parts: Buffer[] } {
  const parts: Buffer[] = [];
  return { sink: { write: (b) => parts.push(b) }, bytes: () => Buffer.concat(parts), parts };
}

function fullMeta(mode: number): Metadata {
  return {
    mode,
    flags: 0x10000n,
    uid: 0xfffffffe,
    gid: 7,
    mtime: { secs: -1, nanos: 999_000_000 },
    xattrs: [
      { name: B('user.b'), value: B('2') },
      { name: B('user.a'), value: Buffer.from([1, 0, 2]) },
    ],
    acl: {
      users: [{ uid: 5, permissions: 7 }],
      groups: [{ gid: 6, permissions: 5 }],
      groupObj: 4,
      default: { userObj: 7, groupObj: null, other: 0, mask: null },
      defaultUsers: [{ uid: 8, permissions: 6 }],
      defaultGroups: [{ gid: 9, permissions: 1 }],
    },
    fcaps: B('caps'),
    quotaProjectId: 2 ** 40,
  };
}

describe('PxarEncoder layout', () => {
  it('writes ENTRY and attributes in the fixed order with the documented encodings', () => {
    const out = collector();
    const enc = new PxarEncoder({ variant: 'unified', output: out.sink });
    enc.begin(fullMeta(0o40755));
    enc.finish();
    const list = items(out.bytes());
    expect(list.map((i) => i.type)).toEqual([
      PXAR_ENTRY,
      PXAR_XATTR,
      PXAR_XATTR,
      PXAR_ACL_USER,
      PXAR_ACL_GROUP,
      PXAR_ACL_GROUP_OBJ,
      PXAR_ACL_DEFAULT,
      PXAR_ACL_DEFAULT_USER,
      PXAR_ACL_DEFAULT_GROUP,
      PXAR_FCAPS,
      PXAR_QUOTA_PROJID,
      PXAR_GOODBYE,
    ]);
    expect(list[0].content.toString('hex')).toBe(
      'ed41000000000000' + '0000010000000000' + 'feffffff' + '07000000' + 'ffffffffffffffff' + 'c0878b3b' + '00000000',
    );
    expect(list[1].content).toEqual(B('user.b\x002'));
    expect(list[2].content).toEqual(Buffer.from([...B('user.a'), 0, 1, 0, 2]));
    expect(list[3].content.toString('hex')).toBe('0500000000000000' + '0700000000000000');
    expect(list[5].content.toString('hex')).toBe('0400000000000000');
    expect(list[6].content.toString('hex')).toBe('0700000000000000' + 'ffffffffffffffff' + '0000000000000000' + 'ffffffffffffffff');
    expect(list[9].content).toEqual(B('caps'));
    expect(list[10].content.toString('hex')).toBe('0000000000010000');
    // empty root: GOODBYE with the tail item only; root tail offset = goodbye position (points at 0)
    const gb = goodbye(list[11]);
    expect(list[11].content.length).toBe(24);
    expect(gb).toEqual([{ hash: PXAR_GOODBYE_TAIL_MARKER, offset: list[11].pos, size: 40 }]);
  });

  it('split: FORMAT_VERSION, PRELUDE, root tail pointing at byte 0, payload framing', () => {
    const meta = collector();
    const pay = collector();
    const enc = new PxarEncoder({ variant: 'split', output: meta.sink, payloadOutput: pay.sink, prelude: B('{"x":1}') });
    enc.begin(basicMetadata(0o40755));
    expect(enc.payloadPosition).toBe(16);
    const a = enc.beginFile(B('a'), basicMetadata(0o100644), 3);
    expect(a.payloadOffset).toBe(16);
    enc.writeFileData(B('abc'));
    enc.endFile();
    enc.advancePayload(100);
    const b = enc.beginFile(B('b'), basicMetadata(0o100644), 0);
    expect(b.payloadOffset).toBe(16 + 19 + 100);
    enc.endFile();
    expect(enc.payloadPosition).toBe(16 + 19 + 100 + 16);
    enc.finish();
    expect(enc.payloadPosition).toBe(16 + 19 + 100 + 16);

    const list = items(meta.bytes());
    expect(list[0]).toMatchObject({ type: PXAR_FORMAT_VERSION, pos: 0 });
    expect(list[0].content.toString('hex')).toBe('0200000000000000');
    expect(list[1]).toMatchObject({ type: PXAR_PRELUDE, pos: 24, content: B('{"x":1}') });
    expect(list[2]).toMatchObject({ type: PXAR_ENTRY, pos: 47 });
    const refs = list.filter((i) => i.type === PXAR_PAYLOAD_REF).map((i) => i.content.toString('hex'));
    expect(refs).toEqual(['1000000000000000' + '0300000000000000', '8700000000000000' + '0000000000000000']);
    const gbItem = list[list.length - 1];
    const tail = goodbye(gbItem).pop();
    expect(tail).toEqual({ hash: PXAR_GOODBYE_TAIL_MARKER, offset: gbItem.pos, size: 16 + 24 * 3 });

    const p = pay.bytes();
    expect(p.length).toBe(16 + 19 + 16 + 16); // advanced bytes are not written
    expect(p.readBigUInt64LE(0)).toBe(PXAR_PAYLOAD_START_MARKER);
    expect(p.readBigUInt64LE(16)).toBe(PXAR_PAYLOAD);
    expect(Number(p.readBigUInt64LE(24))).toBe(19);
    expect(p.subarray(32, 35)).toEqual(B('abc'));
    expect(p.readBigUInt64LE(35)).toBe(PXAR_PAYLOAD);
    expect(Number(p.readBigUInt64LE(43))).toBe(16);
    expect(p.readBigUInt64LE(51)).toBe(PXAR_PAYLOAD_TAIL_MARKER);
    expect(Number(p.readBigUInt64LE(59))).toBe(16);
  });

  it('goodbye items: sizes per kind (new vs reused file quirk), offsets, hashes in tree order', () => {
    for (const variant of ['unified', 'split'] as const) {
      const meta = collector();
      const enc =
        variant === 'split'
          ? new PxarEncoder({ variant, output: meta.sink, payloadOutput: collector().sink })
          : new PxarEncoder({ variant, output: meta.sink });
      enc.begin(basicMetadata(0o40755));
      const starts = new Map<string, number>();
      const ends = new Map<string, number>();
      const track = (name: string, f: () => void): void => {
        starts.set(name, enc.metadataPosition);
        f();
        ends.set(name, enc.metadataPosition);
      };
      let fileLink = 0;
      track('file', () => {
        fileLink = enc.beginFile(B('file'), basicMetadata(0o100644), 1000).linkOffset;
        enc.writeFileData(Buffer.alloc(1000));
        enc.endFile();
      });
      if (variant === 'split') track('reused', () => enc.addPayloadRef(B('reused'), basicMetadata(0o100644), 5000, enc.payloadPosition + 3));
      track('dir', () => {
        enc.enterDirectory(B('dir'), basicMetadata(0o40755));
        enc.addFifo(B('fifo'), basicMetadata(IFIFO | 0o644));
        enc.leaveDirectory();
      });
      track('link', () => enc.addSymlink(B('link'), basicMetadata(0o120777), B('file')));
      track('dev', () => enc.addDevice(B('dev'), basicMetadata(IFBLK | 0o600), 1, 2));
      track('sock', () => enc.addSocket(B('sock'), basicMetadata(IFSOCK | 0o600)));
      track('hard', () => enc.addHardlink(B('hard'), B('file'), fileLink));
      enc.finish();
      const bytes = meta.bytes();
      const list = items(bytes);
      const gb = list[list.length - 1];
      const table = goodbye(gb);
      const tail = table.pop()!;
      expect(tail.size).toBe(16 + 24 * (table.length + 1));
      expect(table.length).toBe(starts.size);
      // stored in binary-tree-array order of the sorted hashes
      const sortedHashes = [...table].map((t) => t.hash).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      for (let i = 0; i < table.length; i++) {
        const left = 2 * i + 1;
        const right = 2 * i + 2;
        if (left < table.length) expect(table[left].hash < table[i].hash).toBe(true);
        if (right < table.length) expect(table[right].hash > table[i].hash).toBe(true);
      }
      expect(new Set(sortedHashes).size).toBe(table.length);
      for (const [name, start] of starts) {
        const item = table.find((t) => t.hash === hashFilename(B(name)))!;
        expect(gb.pos - item.offset, name).toBe(start);
        const real = ends.get(name)! - start;
        // a freshly encoded split file counts its data although it is in the payload stream
        const want = name === 'file' && variant === 'split' ? real + 1000 : real;
        expect(item.size, `${variant} ${name}`).toBe(want);
      }
      // the subdirectory's own tail points back at its ENTRY
      const dirGoodbye = list.find((i) => i.type === PXAR_GOODBYE && i !== gb)!;
      const dirTail = goodbye(dirGoodbye).pop()!;
      const dirEntry = list.find((i) => i.type === PXAR_ENTRY && i.pos > starts.get('dir')!)!;
      expect(dirGoodbye.pos - dirTail.offset).toBe(dirEntry.pos);
      // HARDLINK: FILENAME-to-FILENAME distance, then the target path
      const hl = list.find((i) => i.type === PXAR_HARDLINK)!;
      expect(Number(hl.content.readBigUInt64LE(0))).toBe(starts.get('hard')! - fileLink);
      expect(hl.content.subarray(8)).toEqual(B('file\0'));
      expect(list.find((i) => i.type === PXAR_SYMLINK)!.content).toEqual(B('file\0'));
      expect(list.find((i) => i.type === PXAR_DEVICE)!.content.toString('hex')).toBe('0100000000000000' + '0200000000000000');
      expect(list.filter((i) => i.type === PXAR_FILENAME).map((i) => i.content.toString())).toEqual(
        variant === 'split'
          ? ['file\0', 'reused\0', 'dir\0', 'fifo\0', 'link\0', 'dev\0', 'sock\0', 'hard\0']
          : ['file\0', 'dir\0', 'fifo\0', 'link\0', 'dev\0', 'sock\0', 'hard\0'],
      );
    }
  });

  it('hands sinks buffers it never touches again', () => {
    const meta = collector();
    const enc = new PxarEncoder({ variant: 'unified', output: meta.sink });
    enc.begin(basicMetadata(0o40755));
    const snapshots: Buffer[] = [];
    for (let i = 0; i < 3000; i++) {
      enc.addSymlink(B(`l${i}`), basicMetadata(0o120777), Buffer.alloc(20, 0x61));
      if (i % 500 === 0) {
        enc.flush();
        snapshots.push(...meta.parts.slice(snapshots.length).map((p) => Buffer.from(p)));
      }
    }
    enc.finish();
    for (let i = 0; i < snapshots.length; i++) expect(meta.parts[i].equals(snapshots[i])).toBe(true);
    expect(enc.metadataPosition).toBe(meta.bytes().length);
  });
});

describe('PxarEncoder refuses misuse', () => {
  const open = (variant: 'unified' | 'split' = 'unified'): PxarEncoder => {
    const enc =
      variant === 'split'
        ? new PxarEncoder({ variant, output: collector().sink, payloadOutput: collector().sink })
        : new PxarEncoder({ variant, output: collector().sink });
    enc.begin(basicMetadata(0o40755));
    return enc;
  };

  it('checks call order', () => {
    const fresh = new PxarEncoder({ variant: 'unified', output: collector().sink });
    expect(() => fresh.addFifo(B('x'), basicMetadata(IFIFO))).toThrow(/begin/);
    expect(() => fresh.begin(basicMetadata(0o100644))).toThrow(/root directory/);
    const enc = open();
    expect(() => enc.begin(basicMetadata(0o40755))).toThrow(/twice/);
    expect(() => enc.leaveDirectory()).toThrow(/subdirectory/);
    expect(() => enc.writeFileData(B('x'))).toThrow(/beginFile/);
    enc.enterDirectory(B('d'), basicMetadata(0o40755));
    expect(() => enc.finish()).toThrow(/still open/);
    enc.leaveDirectory();
    enc.finish();
    expect(() => enc.finish()).toThrow(/finished/);
  });

  it('checks file sizes and poisons the encoder on a short file', () => {
    const enc = open();
    enc.beginFile(B('f'), basicMetadata(0o100644), 4);
    expect(() => enc.writeFileData(B('12345'))).toThrow(/4 of 4 left/);
    expect(() => enc.addFifo(B('g'), basicMetadata(IFIFO))).toThrow(/not ended/);
    enc.writeFileData(B('12'));
    expect(() => enc.endFile()).toThrow(/2 of 4 bytes missing/);
    expect(() => enc.finish()).toThrow(/2 of 4 bytes missing/);
  });

  it('checks names, modes, payload refs and hardlink targets', () => {
    const enc = open('split');
    const f = basicMetadata(0o100644);
    for (const bad of [B(''), B('.'), B('..'), B('a/b'), B('a\0b'), Buffer.alloc(4097, 0x61)]) {
      expect(() => enc.addFifo(bad, basicMetadata(IFIFO))).toThrow(/illegal file name/);
    }
    expect(() => enc.beginFile(B('x'), basicMetadata(0o40755), 1)).toThrow(/wrong file type/);
    expect(() => enc.addSymlink(B('x'), f, B('t'))).toThrow(/wrong file type/);
    expect(() => enc.addDevice(B('x'), f, 1, 1)).toThrow(/IFBLK or IFCHR/);
    expect(() => enc.addSocket(B('x'), basicMetadata(IFIFO))).toThrow(/wrong file type/);
    expect(() => enc.addPayloadRef(B('x'), f, 10, 15)).toThrow(/below the current payload position 16/);
    expect(() => enc.addHardlink(B('x'), B('t'), enc.metadataPosition)).toThrow(/does not precede/);
    expect(() => enc.beginFile(B('x'), { ...f, mtime: { secs: 0, nanos: 1e9 } }, 0)).toThrow(/nanoseconds/);
    expect(() => enc.beginFile(B('x'), { ...f, xattrs: [{ name: B(''), value: B('') }] }, 0)).toThrow(/xattr/);
    expect(() => enc.beginFile(B('x'), { ...f, uid: -1 }, 0)).toThrow(/uid/);
    // still usable: none of these wrote anything
    enc.addPayloadRef(B('ok'), f, 10, 16);
    enc.finish();

    const unified = open();
    expect(() => unified.addPayloadRef(B('x'), f, 1, 16)).toThrow(/split/);
    expect(() => unified.advancePayload(1)).toThrow(/split/);
  });

  /** A run for addPlainPayloadRefs: names, ends and numbers (payload offsets minus `delta`). */
  function plainRun(files: Array<{ name: Buffer; meta: Metadata; size: number; offset: number }>, delta: number) {
    const nums = new Float64Array(files.length * PLAIN_RUN_FIELDS);
    const ends: number[] = [];
    let end = 0;
    files.forEach((x, q) => {
      nums.set([x.meta.mode, x.meta.uid, x.meta.gid, x.meta.mtime.secs, x.meta.mtime.nanos, x.size, x.offset - delta], q * PLAIN_RUN_FIELDS);
      ends.push((end += x.name.length));
    });
    return { names: Buffer.concat(files.map((x) => x.name)), ends: Uint32Array.from(ends), nums };
  }

  it('writes a run of plain files byte for byte as addPayloadRef writes each', () => {
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
    const files = Array.from({ length: 300 }, (_, q) => ({
      name: Buffer.concat([B(`f${q}-`), Buffer.alloc(rnd(400), 0x61 + rnd(26)), Buffer.from([0xff, 0x80 + rnd(100)])]),
      meta: { ...basicMetadata(0o100000 | rnd(0o7777)), uid: q === 1 ? 0xfffffffe : rnd(70000), gid: rnd(70000), mtime: { secs: q === 2 ? -1 : q === 3 ? 2 ** 40 : rnd(2 ** 31), nanos: q === 4 ? 999_999_999 : rnd(1e9) } },
      size: q === 5 ? 2 ** 41 + 3 : rnd(1e6),
      offset: q === 6 ? 2 ** 36 + 1 : 16 + rnd(1e9),
    }));
    const encode = (write: (enc: PxarEncoder) => void) => {
      const meta = collector();
      const payload = collector();
      const enc = new PxarEncoder({ variant: 'split', output: meta.sink, payloadOutput: payload.sink });
      enc.begin(basicMetadata(0o40755));
      enc.enterDirectory(B('d'), basicMetadata(0o40700));
      write(enc);
      enc.leaveDirectory();
      enc.addFifo(B('z'), basicMetadata(IFIFO));
      enc.finish();
      return [meta.bytes(), payload.bytes()];
    };
    const each = encode((enc) => {
      for (const x of files) enc.addPayloadRef(x.name, x.meta, x.size, x.offset);
    });
    const run = plainRun(files, 12345);
    const batched = encode((enc) => {
      enc.addPlainPayloadRefs(run.names, run.ends, run.nums, 0, 1, 12345);
      enc.addPlainPayloadRefs(run.names, run.ends, run.nums, 1, 1, 12345);
      enc.addPlainPayloadRefs(run.names, run.ends, run.nums, 1, 300, 12345);
    });
    expect(each[0].length).toBeGreaterThan(64 * 1024); // (the encoder's stage filled more than once)
    expect(batched[0].equals(each[0])).toBe(true);
    expect(batched[1].equals(each[1])).toBe(true);
  });

  it('writes new plain files byte for byte as beginFile, their data and endFile write each', () => {
    let seed = 11;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
    const files = Array.from({ length: 200 }, (_, q) => ({
      name: Buffer.concat([B(`n${q}-`), Buffer.alloc(rnd(300), 0x61 + rnd(26))]),
      meta: { ...basicMetadata(0o100000 | rnd(0o7777)), uid: rnd(70000), gid: rnd(70000), mtime: { secs: rnd(2 ** 31), nanos: rnd(1e9) } },
      data: Buffer.alloc(q % 7 === 0 ? 0 : rnd(5000), q & 0xff),
    }));
    const encode = (write: (enc: PxarEncoder, marks: number[]) => void) => {
      const meta = collector();
      const payload = collector();
      const enc = new PxarEncoder({ variant: 'split', output: meta.sink, payloadOutput: payload.sink });
      const marks: number[] = [];
      enc.begin(basicMetadata(0o40755));
      enc.addPayloadRef(B('before'), basicMetadata(0o100644), 3, 16);
      enc.advancePayload(100);
      enc.enterDirectory(B('d'), basicMetadata(0o40700));
      write(enc, marks);
      enc.leaveDirectory();
      enc.finish();
      return { meta: meta.bytes(), payload: payload.bytes(), marks };
    };
    const each = encode((enc, marks) => {
      for (const x of files) {
        marks.push(enc.payloadPosition);
        enc.beginFile(x.name, x.meta, x.data.length);
        enc.writeFileData(x.data);
        enc.endFile();
      }
    });
    const run = plainRun(files.map((x) => ({ name: x.name, meta: x.meta, size: x.data.length, offset: 0 })), 0);
    const data = files.map((x) => x.data);
    const grouped = encode((enc, marks) => {
      const mark = (pos: number) => marks.push(pos);
      enc.addPlainFiles(run.names, run.ends, run.nums, 0, 1, data.slice(0, 1), mark);
      enc.addPlainFiles(run.names, run.ends, run.nums, 1, 1, [], mark);
      enc.addPlainFiles(run.names, run.ends, run.nums, 1, 120, data.slice(1, 120), mark);
      enc.addPlainFiles(run.names, run.ends, run.nums, 120, 200, data.slice(120), mark);
    });
    expect(grouped.meta.equals(each.meta)).toBe(true);
    expect(grouped.payload.equals(each.payload)).toBe(true);
    expect(grouped.marks).toEqual(each.marks);
    // each file's payload offset is left in the numbers, at its PAYLOAD header
    expect(Array.from({ length: 200 }, (_, q) => run.nums[q * PLAIN_RUN_FIELDS + 6])).toEqual(each.marks);

    // data of the wrong size: refused before anything is written
    const enc = open('split');
    const pos = [enc.metadataPosition, enc.payloadPosition];
    expect(() => enc.addPlainFiles(run.names, run.ends, run.nums, 1, 3, [data[1], Buffer.alloc(data[2].length + 1)], () => {})).toThrow(/bytes given for a file of/);
    expect(() => enc.addPlainFiles(run.names, run.ends, run.nums, 1, 3, [data[1]], () => {})).toThrow(/out of range/);
    expect([enc.metadataPosition, enc.payloadPosition]).toEqual(pos);
    const unified = open();
    expect(() => unified.addPlainFiles(run.names, run.ends, run.nums, 0, 1, data, () => {})).toThrow(/split/);
  });

  it('refuses a bad run of plain files before writing any of it', () => {
    const enc = open('split');
    const ok = { name: B('ok'), meta: basicMetadata(0o100644), size: 1, offset: 16 };
    const bad = (change: Partial<typeof ok>, delta = 0) => {
      const r = plainRun([ok, { ...ok, ...change }], delta);
      return () => enc.addPlainPayloadRefs(r.names, r.ends, r.nums, 0, 2, delta);
    };
    const pos = enc.metadataPosition;
    expect(bad({ name: B('a/b') })).toThrow(/illegal file name/);
    expect(bad({ name: B('..') })).toThrow(/illegal file name/);
    expect(bad({ meta: basicMetadata(0o40755) })).toThrow(/wrong file type/);
    expect(bad({ meta: { ...ok.meta, uid: 2 ** 32 } })).toThrow(/uid/);
    expect(bad({ meta: { ...ok.meta, mtime: { secs: 0, nanos: 1e9 } } })).toThrow(/mtime/);
    expect(bad({ size: -1 })).toThrow(/file size/);
    expect(bad({ offset: 15 })).toThrow(/below the current payload position 16/);
    const r = plainRun([ok], 0);
    expect(() => enc.addPlainPayloadRefs(r.names, r.ends, r.nums, 0, 2, 0)).toThrow(/out of range/);
    expect(() => enc.addPlainPayloadRefs(r.names.subarray(1), r.ends, r.nums, 0, 1, 0)).toThrow(/out of range/);
    expect(enc.metadataPosition).toBe(pos);
    enc.addPlainPayloadRefs(r.names, r.ends, r.nums, 0, 1, 0);
    expect(enc.metadataPosition).toBeGreaterThan(pos);
    enc.finish();
    const unified = open();
    expect(() => unified.addPlainPayloadRefs(r.names, r.ends, r.nums, 0, 1, 0)).toThrow(/split/);
  });
});
