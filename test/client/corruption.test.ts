/**
 * A damaged datastore must make a restore fail loudly, with a message that names the archive
 * (and for chunk damage the stream offset and the chunk digest), and must never make it write
 * outside its target directory. Hostile snapshot specs and archive names are refused.
 *
 * Every case damages a datastore of its own, made by a real backup of the same small tree.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { createBackup, type ChangeDetectionMode } from '../../ts/client/backup.js';
import { listArchive, resolveSnapshot, restore } from '../../ts/client/restore.js';
import type { BackupDir } from '../../ts/datastore/backup-dir.js';
import { DataStore } from '../../ts/datastore/datastore.js';
import { DynamicIndex } from '../../ts/format/dynamic-index.js';
import { MANIFEST_BLOB_NAME } from '../../ts/format/manifest.js';
import { tempDir } from '../helpers/tmp.js';
import { TreeBuilder, listRecursive } from '../helpers/tree.js';

const base = tempDir('pxb-corrupt-');
const src = path.join(base, 'src');
const ID = 'victim';
let caseNo = 0;

beforeAll(() => {
  const t = new TreeBuilder(src);
  t.file('a.txt', 'alpha\n');
  t.file('random.bin', randomBytes(2 * 1024 * 1024));
  t.dir('sub/deeper');
  t.file('sub/b.txt', 'beta\n'.repeat(1000));
  t.file('sub/deeper/c.bin', randomBytes(300_000));
  t.finish();
});

interface Case {
  ds: DataStore;
  dir: BackupDir;
  /** Parent of the restore target (empty before the restore). */
  out: string;
  target: string;
  index(name: string): Promise<DynamicIndex>;
  indexPath(name: string): string;
}

/** A fresh datastore with one snapshot of `src` (64 KiB chunks: several per archive). */
async function freshCase(mode: ChangeDetectionMode): Promise<Case> {
  const root = path.join(base, `case-${caseNo++}`);
  const ds = await DataStore.open(path.join(root, 'datastore'), { create: true, fsync: false });
  const r = await createBackup({ datastore: ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: ID, backupTime: 1_700_000_000, changeDetectionMode: mode, chunkSize: 64 * 1024 });
  const dir = await resolveSnapshot(ds, r.snapshot);
  const out = path.join(root, 'out');
  fs.mkdirSync(out);
  return {
    ds,
    dir,
    out,
    target: path.join(out, 'target'),
    async index(name) {
      const idx = await ds.readIndex(dir, name);
      if (!(idx instanceof DynamicIndex)) throw new Error(`${name} is not a dynamic index`);
      return idx;
    },
    indexPath: (name) => path.join(ds.snapshotPath(dir), name),
  };
}

/**
 * Restore `c` and expect a rejection matching every pattern; then check that nothing was
 * written outside the target (the parent holds at most the target; the datastore is unchanged).
 */
async function expectRestoreFails(c: Case, patterns: Array<string | RegExp>, archiveName = 'root.pxar'): Promise<string> {
  const storeBefore = listRecursive(c.ds.path);
  const outBefore = listRecursive(c.out);
  let message = '';
  await restore({ datastore: c.ds, snapshot: `host/${ID}`, archiveName, target: c.target }).then(
    () => {
      throw new Error('restore succeeded on a damaged datastore');
    },
    (e: Error) => {
      message = e.message;
    },
  );
  for (const p of patterns) {
    if (typeof p === 'string') expect(message).toContain(p);
    else expect(message).toMatch(p);
  }
  expect(listRecursive(c.out).filter((p) => p !== 'target' && !p.startsWith('target/'))).toEqual(outBefore);
  expect(listRecursive(c.ds.path)).toEqual(storeBefore);
  return message;
}

function flipByte(file: string, at: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    fs.readSync(fd, b, 0, 1, at);
    b[0] ^= 0x5a;
    fs.writeSync(fd, b, 0, 1, at);
  } finally {
    fs.closeSync(fd);
  }
}

const ARCHIVES: Array<{ mode: ChangeDetectionMode; indexes: string[] }> = [
  { mode: 'legacy', indexes: ['root.pxar.didx'] },
  { mode: 'data', indexes: ['root.mpxar.didx', 'root.ppxar.didx'] },
];

describe('sanity', () => {
  it('an undamaged datastore restores', async () => {
    const c = await freshCase('data');
    await restore({ datastore: c.ds, snapshot: `host/${ID}`, archiveName: 'root.pxar', target: c.target });
    expect(fs.readFileSync(path.join(c.target, 'random.bin')).equals(fs.readFileSync(path.join(src, 'random.bin')))).toBe(true);
    expect(listRecursive(c.out)).toEqual(['target', ...listRecursive(c.target).map((p) => `target/${p}`)].sort());
  });

  it('a data-mode backup stores chunks again that went missing or empty; present chunks are not re-encoded', async () => {
    const c = await freshCase('data');
    const idx = await c.index('root.ppxar.didx');
    const lost = Buffer.from(idx.chunk(1).digest).toString('hex');
    const emptied = Buffer.from(idx.chunk(2).digest).toString('hex');
    fs.rmSync(c.ds.chunks.chunkPath(lost));
    fs.truncateSync(c.ds.chunks.chunkPath(emptied), 0); // as a crash can leave it
    const r = await createBackup({ datastore: c.ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: ID, backupTime: 1_700_000_100, changeDetectionMode: 'data', chunkSize: 64 * 1024 });
    const st = r.archives[0];
    expect(st.chunksNew).toBe(2); // only those two were encoded and stored
    expect(st.chunksKnown).toBe(st.chunks - 2);
    expect(fs.existsSync(c.ds.chunks.chunkPath(lost))).toBe(true);
    expect(fs.statSync(c.ds.chunks.chunkPath(emptied)).size).toBeGreaterThan(0);
    await restore({ datastore: c.ds, snapshot: r.snapshot, archiveName: 'root.pxar', target: c.target });
    expect(fs.readFileSync(path.join(c.target, 'random.bin')).equals(fs.readFileSync(path.join(src, 'random.bin')))).toBe(true);
  });

  it('a metadata-mode backup whose reused chunk went missing fails and leaves no snapshot', async () => {
    const c = await freshCase('metadata');
    const idx = await c.index('root.ppxar.didx');
    fs.rmSync(c.ds.chunks.chunkPath(Buffer.from(idx.chunk(1).digest).toString('hex')));
    await expect(
      createBackup({ datastore: c.ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: ID, backupTime: 1_700_000_300, changeDetectionMode: 'metadata', chunkSize: 64 * 1024 }),
    ).rejects.toThrow(/previous snapshot is missing from the datastore/);
    expect(fs.existsSync(path.join(c.ds.path, 'host', ID, new Date(1_700_000_300_000).toISOString().replace('.000Z', 'Z')))).toBe(false);
  });

  it('a chunk that cannot be stored fails the backup and leaves no snapshot', async () => {
    const c = await freshCase('data');
    const idx = await c.index('root.ppxar.didx');
    // The chunk's prefix directory becomes a regular file: storing it again must fail.
    const prefixDir = path.dirname(c.ds.chunks.chunkPath(Buffer.from(idx.chunk(1).digest).toString('hex')));
    fs.rmSync(prefixDir, { recursive: true });
    fs.writeFileSync(prefixDir, 'not a directory');
    await expect(
      createBackup({ datastore: c.ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: 'blocked', backupTime: 1_700_000_200, changeDetectionMode: 'data', chunkSize: 64 * 1024 }),
    ).rejects.toThrow(/ENOTDIR|not a directory/);
    expect(fs.existsSync(path.join(c.ds.path, 'host', 'blocked', new Date(1_700_000_200_000).toISOString().replace('.000Z', 'Z')))).toBe(false);
  });
});

for (const { mode, indexes } of ARCHIVES) {
  describe(`damaged chunks (${mode})`, () => {
    for (const name of indexes) {
      it(`a flipped byte in a chunk of ${name}`, async () => {
        const c = await freshCase(mode);
        const idx = await c.index(name);
        const k = idx.count > 2 ? 1 : 0;
        const chunk = idx.chunk(k);
        const hex = Buffer.from(chunk.digest).toString('hex');
        const file = c.ds.chunks.chunkPath(hex);
        flipByte(file, Math.floor(fs.statSync(file).size / 2));
        await expectRestoreFails(c, [name, `offset ${chunk.offset}`, hex, /corrupt/]);
      });

      it(`a chunk of ${name} replaced by another valid chunk (CRC fine, digest wrong)`, async () => {
        const c = await freshCase(mode);
        const idx = await c.index(name);
        const chunk = idx.chunk(0);
        const hex = Buffer.from(chunk.digest).toString('hex');
        const donors = await c.index(indexes[indexes.length - 1]);
        const donor = Buffer.from(donors.chunk(donors.count - 1).digest).toString('hex');
        expect(donor).not.toBe(hex);
        fs.copyFileSync(c.ds.chunks.chunkPath(donor), c.ds.chunks.chunkPath(hex));
        await expectRestoreFails(c, [name, `offset ${chunk.offset}`, hex, /corrupt/]);
      });

      it(`a missing chunk of ${name}`, async () => {
        const c = await freshCase(mode);
        const idx = await c.index(name);
        const chunk = idx.chunk(idx.count - 1);
        const hex = Buffer.from(chunk.digest).toString('hex');
        fs.rmSync(c.ds.chunks.chunkPath(hex));
        await expectRestoreFails(c, [name, `offset ${chunk.offset}`, hex, /missing/]);
      });
    }
  });

  describe(`damaged index files (${mode})`, () => {
    for (const name of indexes) {
      it(`a truncated ${name}`, async () => {
        const c = await freshCase(mode);
        const p = c.indexPath(name);
        fs.truncateSync(p, fs.statSync(p).size - 20);
        await expectRestoreFails(c, [name]);
      });

      it(`a truncated ${name} that lost its whole header`, async () => {
        const c = await freshCase(mode);
        fs.truncateSync(c.indexPath(name), 100);
        await expectRestoreFails(c, [name]);
      });

      it(`${name} with a wrong magic`, async () => {
        const c = await freshCase(mode);
        flipByte(c.indexPath(name), 3);
        await expectRestoreFails(c, [name, /magic/i]);
      });

      it(`a manifest whose csum of ${name} does not match the index`, async () => {
        const c = await freshCase(mode);
        await c.ds.updateManifest(c.dir, (m) => {
          const f = m.lookup(name)!;
          f.csum = Buffer.from(f.csum).fill(0xab, 0, 4);
        });
        await expectRestoreFails(c, [name, /checksum|csum/i]);
      });

      it(`a manifest whose size of ${name} does not match the index`, async () => {
        const c = await freshCase(mode);
        await c.ds.updateManifest(c.dir, (m) => {
          m.lookup(name)!.size += 1;
        });
        await expectRestoreFails(c, [name]);
      });

      it(`a missing ${name}`, async () => {
        const c = await freshCase(mode);
        fs.rmSync(c.indexPath(name));
        await expectRestoreFails(c, [name, /missing/]);
      });
    }
  });
}

describe('damaged manifest', () => {
  it('a flipped byte in index.json.blob', async () => {
    const c = await freshCase('data');
    const p = path.join(c.ds.snapshotPath(c.dir), MANIFEST_BLOB_NAME);
    flipByte(p, fs.statSync(p).size - 3);
    await expectRestoreFails(c, [MANIFEST_BLOB_NAME]);
  });
});

describe('listing a damaged archive', () => {
  it('rejects with the archive, offset and digest of a corrupt metadata chunk', async () => {
    const c = await freshCase('data');
    const idx = await c.index('root.mpxar.didx');
    const chunk = idx.chunk(0);
    const hex = Buffer.from(chunk.digest).toString('hex');
    flipByte(c.ds.chunks.chunkPath(hex), 20);
    const list = async () => {
      for await (const e of listArchive(c.ds, c.dir, 'root.pxar')) void e;
    };
    await expect(list()).rejects.toThrow(new RegExp(`root\\.mpxar\\.didx.*offset 0.*${hex}`));
  });
});

describe('hostile names', () => {
  let c: Case;
  beforeAll(async () => {
    c = await freshCase('data');
    // a decoy beside the datastore that a path traversal would reach
    fs.writeFileSync(path.join(path.dirname(c.ds.path), 'x'), 'decoy');
  });

  const SPECS = ['../x', '../../x', 'host/../x', 'host/..', `host/${ID}/..`, `host/${ID}/../../x`, '/etc/passwd', '/x', 'host/', '/', '', `host/${ID}/2023-11-14T22:13:20Z/..`, './host/victim', 'host/./victim'];
  for (const spec of SPECS) {
    it(`refuses the snapshot spec ${JSON.stringify(spec)}`, async () => {
      await expect(resolveSnapshot(c.ds, spec)).rejects.toThrow(/invalid|does not exist|no finished/);
      const out = listRecursive(c.out);
      await expect(restore({ datastore: c.ds, snapshot: spec, archiveName: 'root.pxar', target: c.target })).rejects.toThrow(/invalid|does not exist|no finished/);
      expect(fs.readFileSync(path.join(path.dirname(c.ds.path), 'x'), 'utf8')).toBe('decoy');
      expect(listRecursive(c.out)).toEqual(out);
    });
  }

  const ARCHIVE_NAMES = ['../root.pxar', '../../x', '/etc/passwd', '/root.pxar', 'root.pxar/../../x.pxar', '..', '.', 'index.json.blob', `../../${ID}/2023-11-14T22:13:20Z/root.pxar`, 'root\0.pxar'];
  for (const name of ARCHIVE_NAMES) {
    it(`refuses the archive name ${JSON.stringify(name)}`, async () => {
      const out = listRecursive(c.out);
      await expect(restore({ datastore: c.ds, snapshot: `host/${ID}`, archiveName: name, target: c.target })).rejects.toThrow(/not found|invalid/);
      expect(listRecursive(c.out)).toEqual(out);
    });
  }

  it('refuses a manifest that lists an index outside the snapshot directory', async () => {
    const d = await freshCase('data');
    // the traversal target exists and is a valid index of the same snapshot
    const snap = d.ds.snapshotPath(d.dir);
    fs.copyFileSync(path.join(snap, 'root.mpxar.didx'), path.join(d.ds.path, 'evil.mpxar.didx'));
    fs.copyFileSync(path.join(snap, 'root.ppxar.didx'), path.join(d.ds.path, 'evil.ppxar.didx'));
    await d.ds.updateManifest(d.dir, (m) => {
      for (const kind of ['mpxar', 'ppxar']) {
        const f = m.lookup(`root.${kind}.didx`)!;
        m.files.push({ ...f, filename: `../../../evil.${kind}.didx` });
      }
    });
    await expect(restore({ datastore: d.ds, snapshot: `host/${ID}`, archiveName: '../../../evil.pxar', target: d.target })).rejects.toThrow(/invalid archive name/);
    expect(fs.existsSync(d.target)).toBe(false);
  });
});
