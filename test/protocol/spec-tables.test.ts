/**
 * The endpoint tables of ts/protocol checked row by row against the tables of the spec
 * (protocol.md §3.1, §3.2, §4, §5), transcribed here: method, path, parameter names, which
 * are optional, and the numeric limits.
 */
import { describe, expect, it } from 'vitest';
import {
  ADMIN_ENDPOINTS,
  BACKUP_ENDPOINTS,
  BACKUP_UPGRADE_PARAMS,
  READER_ENDPOINTS,
  READER_UPGRADE_PARAMS,
  type Endpoint,
} from '../../ts/protocol/endpoints.js';
import type { ObjectSchema } from '../../ts/protocol/params.js';
import { BACKUP_PROTOCOL_ID, DEFAULT_PORT, READER_PROTOCOL_ID } from '../../ts/protocol/constants.js';

const MiB = 1024 * 1024;

/** [method path, required params, optional params, body] as in the spec tables. */
const SPEC_BACKUP: Array<[string, string[], string[], 'none' | 'blob' | 'json']> = [
  ['GET /previous_backup_time', [], [], 'none'],
  ['GET /previous', ['archive-name'], [], 'none'],
  ['POST /blob', ['file-name', 'encoded-size'], [], 'blob'],
  ['POST /dynamic_index', ['archive-name'], [], 'none'],
  ['POST /dynamic_chunk', ['wid', 'digest', 'size', 'encoded-size'], [], 'blob'],
  ['PUT /dynamic_index', ['wid', 'digest-list', 'offset-list'], [], 'json'],
  ['POST /dynamic_close', ['wid', 'chunk-count', 'size', 'csum'], [], 'none'],
  ['POST /fixed_index', ['archive-name', 'size'], ['reuse-csum'], 'none'],
  ['POST /fixed_chunk', ['wid', 'digest', 'size', 'encoded-size'], [], 'blob'],
  ['PUT /fixed_index', ['wid', 'digest-list', 'offset-list'], [], 'json'],
  ['POST /fixed_close', ['wid', 'chunk-count', 'size', 'csum'], [], 'none'],
  ['POST /finish', [], [], 'none'],
  ['POST /speedtest', [], [], 'blob'],
];

const SPEC_READER: Array<[string, string[]]> = [
  ['GET /download', ['file-name']],
  ['GET /chunk', ['digest']],
  ['GET /speedtest', []],
];

function names(s: ObjectSchema, optional: boolean): string[] {
  return Object.entries(s)
    .filter(([, v]) => !!v.optional === optional)
    .map(([k]) => k)
    .sort();
}

function byKey(table: readonly Endpoint[]): Map<string, Endpoint> {
  return new Map(table.map((e) => [`${e.method} ${e.path}`, e]));
}

function bounds(s: ObjectSchema, key: string): [number | undefined, number | undefined] {
  const p = s[key];
  if (p.type !== 'integer') throw new Error(`${key} is not an integer parameter`);
  return [p.min, p.max];
}

describe('backup protocol (spec §3)', () => {
  it('upgrades with the spec protocol names on the spec port', () => {
    expect(BACKUP_PROTOCOL_ID).toBe('proxmox-backup-protocol-v1');
    expect(READER_PROTOCOL_ID).toBe('proxmox-backup-reader-protocol-v1');
    expect(DEFAULT_PORT).toBe(8007);
  });

  it('takes the upgrade parameters of §3.1', () => {
    expect(names(BACKUP_UPGRADE_PARAMS, false)).toEqual(['backup-id', 'backup-time', 'backup-type', 'store']);
    expect(names(BACKUP_UPGRADE_PARAMS, true)).toEqual(['benchmark', 'debug', 'no-cache', 'ns']);
    expect(bounds(BACKUP_UPGRADE_PARAMS, 'backup-time')[0]).toBe(1);
  });

  it('has exactly the endpoints of the §3.2 table with their parameters', () => {
    const table = byKey(BACKUP_ENDPOINTS);
    expect([...table.keys()].sort()).toEqual(SPEC_BACKUP.map((r) => r[0]).sort());
    for (const [key, required, optional, body] of SPEC_BACKUP) {
      const ep = table.get(key)!;
      expect(names(ep.params, false), key).toEqual([...required].sort());
      expect(names(ep.params, true), key).toEqual([...optional].sort());
      expect(ep.kind, key).toBe(body === 'blob' ? 'upload' : key === 'GET /previous' ? 'download' : 'json');
    }
  });

  it('enforces the size limits of §3.2', () => {
    const t = byKey(BACKUP_ENDPOINTS);
    for (const k of ['POST /dynamic_chunk', 'POST /fixed_chunk']) {
      const p = t.get(k)!.params;
      expect(bounds(p, 'size'), k).toEqual([1, 16 * MiB]);
      expect(bounds(p, 'encoded-size'), k).toEqual([13, 16 * MiB + 44]);
      expect(bounds(p, 'wid'), k).toEqual([1, 256]);
    }
    expect(bounds(t.get('POST /blob')!.params, 'encoded-size')).toEqual([12, 16 * MiB + 44]);
    expect(bounds(t.get('POST /dynamic_close')!.params, 'chunk-count')[0]).toBe(1);
    expect(bounds(t.get('POST /dynamic_close')!.params, 'size')[0]).toBe(1);
    expect(bounds(t.get('POST /fixed_close')!.params, 'chunk-count')[0]).toBe(0);
    expect(bounds(t.get('POST /fixed_close')!.params, 'size')[0]).toBe(0);
    expect(bounds(t.get('POST /fixed_index')!.params, 'size')[0]).toBe(1);
  });
});

describe('reader protocol (spec §4)', () => {
  it('takes the upgrade parameters of §4', () => {
    expect(names(READER_UPGRADE_PARAMS, false)).toEqual(['backup-id', 'backup-time', 'backup-type', 'store']);
    expect(names(READER_UPGRADE_PARAMS, true)).toEqual(['debug', 'ns']);
  });

  it('has exactly the endpoints of the §4 table, all downloads', () => {
    const table = byKey(READER_ENDPOINTS);
    expect([...table.keys()].sort()).toEqual(SPEC_READER.map((r) => r[0]).sort());
    for (const [key, required] of SPEC_READER) {
      expect(names(table.get(key)!.params, false), key).toEqual(required);
      expect(table.get(key)!.kind).toBe('download');
    }
  });
});

describe('listing calls (spec §5)', () => {
  it('uses the spec paths and parameters', () => {
    expect(ADMIN_ENDPOINTS.datastores.path).toBe('/admin/datastore');
    expect(ADMIN_ENDPOINTS.groups.path).toBe('/admin/datastore/{store}/groups');
    expect(names(ADMIN_ENDPOINTS.groups.params, true)).toEqual(['ns']);
    expect(ADMIN_ENDPOINTS.snapshots.path).toBe('/admin/datastore/{store}/snapshots');
    expect(names(ADMIN_ENDPOINTS.snapshots.params, true)).toEqual(['backup-id', 'backup-type', 'ns']);
    expect(ADMIN_ENDPOINTS.files.path).toBe('/admin/datastore/{store}/files');
    expect(names(ADMIN_ENDPOINTS.files.params, false)).toEqual(['backup-id', 'backup-time', 'backup-type']);
    expect(names(ADMIN_ENDPOINTS.files.params, true)).toEqual(['ns']);
    expect(ADMIN_ENDPOINTS.namespaces.path).toBe('/admin/datastore/{store}/namespace');
    expect(names(ADMIN_ENDPOINTS.namespaces.params, true)).toEqual(['max-depth', 'parent']);
    expect(ADMIN_ENDPOINTS.version.path).toBe('/version');
  });
});
