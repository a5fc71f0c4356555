import { describe, expect, it } from 'vitest';
import { BackupDir } from '../../ts/datastore/backup-dir.js';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import { BackupNamespace } from '../../ts/datastore/namespace.js';
import {
  archiveKind,
  formatBackupTime,
  ownerMatches,
  parseBackupTime,
  tmpArchiveName,
  validateAuthid,
} from '../../ts/datastore/names.js';
import { defaultCacheDir, defaultDatastorePath } from '../../ts/datastore/location.js';

describe('snapshot times', () => {
  it('formats and parses RFC 3339 UTC directory names (fixture ctime 1715091951)', () => {
    expect(formatBackupTime(1715091951)).toBe('2024-05-07T14:25:51Z');
    expect(parseBackupTime('2024-05-07T14:25:51Z')).toBe(1715091951);
    // upstream manifest test vector: host/elsa/2020-06-26T13:56:05Z = 1593179765
    expect(parseBackupTime('2020-06-26T13:56:05Z')).toBe(1593179765);
    expect(formatBackupTime(253402300799)).toBe('9999-12-31T23:59:59Z');
  });

  it('refuses other spellings and impossible dates', () => {
    for (const s of [
      '2024-05-07T14:25:51+00:00',
      '2024-05-07T14:25:51.000Z',
      '2024-05-07 14:25:51Z',
      '2024-5-07T14:25:51Z',
      '2023-02-29T00:00:00Z',
      '2024-13-01T00:00:00Z',
      '2024-05-07T24:00:00Z',
      '1970-01-01T00:00:00Z',
      '../2024-05-07T14:25:51Z',
    ]) {
      expect(() => parseBackupTime(s), s).toThrow(/invalid snapshot time/);
    }
    for (const t of [0, -1, 1.5, 253402300800, Number.NaN]) expect(() => formatBackupTime(t), String(t)).toThrow(/invalid backup time/);
  });
});

describe('BackupNamespace', () => {
  it('parses a/b/c and ns/a/ns/b paths', () => {
    const ns = BackupNamespace.parse('a/b');
    expect(ns.name).toBe('a/b');
    expect(ns.path).toBe('ns/a/ns/b');
    expect(ns.depth).toBe(2);
    expect(BackupNamespace.fromPath('ns/a/ns/b').equals(ns)).toBe(true);
    expect(ns.parent?.name).toBe('a');
    expect(ns.child('c').path).toBe('ns/a/ns/b/ns/c');
    expect(BackupNamespace.parse('').isRoot).toBe(true);
    expect(BackupNamespace.root.path).toBe('');
    expect(BackupNamespace.root.parent).toBeNull();
  });

  it('enforces depth <= 7, length <= 256 and SAFE_ID components', () => {
    expect(BackupNamespace.parse('a/b/c/d/e/f/g').depth).toBe(7);
    expect(() => BackupNamespace.parse('a/b/c/d/e/f/g/h')).toThrow(/depth 8 > 7/);
    expect(() => BackupNamespace.parse('a/b/c/d/e/f/g').child('h')).toThrow(/depth/);
    const long = ['x'.repeat(100), 'y'.repeat(100), 'z'.repeat(54)].join('/');
    expect(BackupNamespace.parse(long).name).toHaveLength(256);
    expect(() => BackupNamespace.parse(long + 'z')).toThrow(/longer than 256/);
    for (const bad of ['..', 'a/../b', '/a', 'a/', 'a//b', '.hidden', '-x', 'a b', 'a\0b', 'ä']) {
      expect(() => BackupNamespace.parse(bad), JSON.stringify(bad)).toThrow(/invalid namespace/);
    }
    for (const bad of ['ns', 'a/ns/b', 'ns/a/x/b', 'ns/..', 'ns/a/ns']) {
      expect(() => BackupNamespace.fromPath(bad), bad).toThrow(/invalid namespace/);
    }
  });
});

describe('BackupGroup and BackupDir', () => {
  it('parse and format host/<id> and host/<id>/<time>', () => {
    const g = BackupGroup.parse('host/my-host.example_1');
    expect(g.type).toBe('host');
    expect(g.id).toBe('my-host.example_1');
    expect(g.path).toBe('host/my-host.example_1');
    expect(g.toString()).toBe('host/my-host.example_1');
    const d = BackupDir.parse('vm/100/2025-07-14T14:20:02Z');
    expect(d.group.type).toBe('vm');
    expect(d.timeString).toBe('2025-07-14T14:20:02Z');
    expect(d.path).toBe('vm/100/2025-07-14T14:20:02Z');
    expect(new BackupDir(d.group, d.time).equals(d)).toBe(true);
    const ns = BackupNamespace.parse('a/b');
    const inNs = BackupDir.parse('ct/7/2024-05-07T14:25:51Z', ns);
    expect(inNs.path).toBe('ns/a/ns/b/ct/7/2024-05-07T14:25:51Z');
    expect(inNs.toString()).toBe('[a/b] ct/7/2024-05-07T14:25:51Z');
  });

  it('refuses bad types, ids and shapes', () => {
    for (const bad of ['../x', 'a/b', '', '.x', '-x', 'x y', 'x\0', 'x/', '..', 'ä']) {
      expect(() => new BackupGroup('host', bad), JSON.stringify(bad)).toThrow(/invalid backup id/);
    }
    expect(() => new BackupGroup('lxc', 'x')).toThrow(/invalid backup type/);
    expect(() => BackupGroup.parse('host')).toThrow(/expected <type>\/<id>/);
    expect(() => BackupGroup.parse('host/x/y')).toThrow(/expected <type>\/<id>/);
    expect(() => BackupDir.parse('host/x')).toThrow(/invalid snapshot/);
    expect(() => BackupDir.parse('host/x/..')).toThrow(/invalid snapshot time/);
  });
});

describe('archive names, owners', () => {
  it('derives the kind from the last extension and PBS temporary names', () => {
    expect(archiveKind('root.pxar.didx')).toBe('didx');
    expect(archiveKind('disk.img.fidx')).toBe('fidx');
    expect(archiveKind('index.json.blob')).toBe('blob');
    expect(tmpArchiveName('root.pxar.didx')).toBe('root.pxar.tmp_didx');
    expect(tmpArchiveName('disk.img.fidx')).toBe('disk.img.tmp_fidx');
    expect(tmpArchiveName('index.json.blob')).toBe('index.json.tmp');
    for (const bad of ['../x.didx', 'a/b.didx', '.didx', 'root.pxar', 'x.didx.tmp', '', 'x\0.blob']) {
      expect(() => archiveKind(bad), JSON.stringify(bad)).toThrow(/invalid archive name/);
    }
  });

  it('checks auth ids and the PBS owner rule', () => {
    validateAuthid('root@pam');
    validateAuthid('user@pbs!token1');
    for (const bad of ['root', 'root@pam\n', '@pam', 'a b@pam', 'x@pam!', '']) {
      expect(() => validateAuthid(bad), JSON.stringify(bad)).toThrow(/invalid owner/);
    }
    expect(ownerMatches('root@pam', 'root@pam')).toBe(true);
    expect(ownerMatches('root@pam', 'user@pbs')).toBe(false);
    expect(ownerMatches('user@pbs!tok', 'user@pbs')).toBe(true); // user may use its token's group
    expect(ownerMatches('user@pbs', 'user@pbs!tok')).toBe(false);
    expect(ownerMatches('user@pbs!a', 'user@pbs!b')).toBe(false);
  });
});

describe('defaultDatastorePath', () => {
  it('prefers PXB_DATASTORE, then an absolute XDG_DATA_HOME, then HOME', () => {
    expect(defaultDatastorePath({ PXB_DATASTORE: '/srv/pxb', XDG_DATA_HOME: '/x', HOME: '/home/u' })).toBe('/srv/pxb');
    expect(defaultDatastorePath({ XDG_DATA_HOME: '/x/data', HOME: '/home/u' })).toBe('/x/data/pxb/datastore');
    expect(defaultDatastorePath({ XDG_DATA_HOME: 'relative', HOME: '/home/u' })).toBe('/home/u/.local/share/pxb/datastore');
    expect(defaultDatastorePath({ PXB_DATASTORE: '', HOME: '/home/u' })).toBe('/home/u/.local/share/pxb/datastore');
  });
});

describe('defaultCacheDir', () => {
  it('prefers PXB_CACHE_DIR, then an absolute XDG_CACHE_HOME, then HOME', () => {
    expect(defaultCacheDir({ PXB_CACHE_DIR: '/c', XDG_CACHE_HOME: '/x', HOME: '/home/u' })).toBe('/c');
    expect(defaultCacheDir({ XDG_CACHE_HOME: '/x', HOME: '/home/u' })).toBe('/x/pxb');
    expect(defaultCacheDir({ XDG_CACHE_HOME: 'relative', HOME: '/home/u' })).toBe('/home/u/.cache/pxb');
  });
});
