import { describe, expect, it } from 'vitest';
import { formatTokenAuthorization, parseAuthorization } from '../../ts/protocol/auth.js';
import { BACKUP_UPGRADE_PARAMS, BACKUP_ENDPOINTS, findEndpoint } from '../../ts/protocol/endpoints.js';
import { HttpError } from '../../ts/protocol/errors.js';
import { certificateFingerprint, normalizeFingerprint } from '../../ts/protocol/fingerprint.js';
import { encodeQuery, parseParams } from '../../ts/protocol/params.js';
import { datastorePath, sessionPath, upgradePath } from '../../ts/protocol/paths.js';
import { Semaphore } from '../../ts/protocol/semaphore.js';
import { formatRepository, parseRepository } from '../../ts/client/remote/repository.js';

const D = 'ab'.repeat(32);

function rejects(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(HttpError);
    expect((e as HttpError).status).toBe(400);
    return (e as Error).message;
  }
  throw new Error('expected a rejection');
}

describe('query encoding (json_object_to_query)', () => {
  it('writes booleans, numbers, form-urlencoded strings and repeated keys', () => {
    expect(encodeQuery({ 'backup-type': 'host', 'backup-time': 1715091951, debug: false, ns: 'a/b c', skip: undefined })).toBe(
      'backup-type=host&backup-time=1715091951&debug=false&ns=a%2Fb+c',
    );
    expect(encodeQuery({ k: ['a', 'b'] })).toBe('k=a&k=b');
  });

  it('builds the spec paths', () => {
    expect(upgradePath('backup', { store: 'store1', 'backup-type': 'host', 'backup-id': 'myhost', 'backup-time': 1715091951 })).toBe(
      '/api2/json/backup?store=store1&backup-type=host&backup-id=myhost&backup-time=1715091951',
    );
    expect(upgradePath('reader', { store: 's1x' })).toBe('/api2/json/reader?store=s1x');
    expect(datastorePath()).toBe('/api2/json/admin/datastore');
    expect(datastorePath('store1', 'groups', { ns: 'a/b' })).toBe('/api2/json/admin/datastore/store1/groups?ns=a%2Fb');
    expect(sessionPath('/dynamic_chunk', { wid: 1, digest: D, size: 4, 'encoded-size': 16 })).toBe(
      `/dynamic_chunk?wid=1&digest=${D}&size=4&encoded-size=16`,
    );
  });
});

describe('parameter checks', () => {
  const chunk = findEndpoint(BACKUP_ENDPOINTS, 'POST', '/dynamic_chunk')!.params;

  it('parses typed form parameters', () => {
    const p = parseParams(chunk, new URLSearchParams(`wid=1&digest=${D}&size=4194304&encoded-size=1234567`), 'form');
    expect(p).toEqual({ wid: 1, digest: D, size: 4194304, 'encoded-size': 1234567 });
    const up = parseParams(BACKUP_UPGRADE_PARAMS, new URLSearchParams('store=store1&backup-type=vm&backup-id=100&backup-time=1&debug=false&benchmark=0'), 'form');
    expect(up).toEqual({ store: 'store1', 'backup-type': 'vm', 'backup-id': '100', 'backup-time': 1, debug: false, benchmark: false });
  });

  it('refuses unknown, duplicate, missing and out-of-range parameters, naming each', () => {
    expect(rejects(() => parseParams(chunk, new URLSearchParams(`wid=1&digest=${D}&size=1&encoded-size=13&x=1`), 'form'))).toMatch(/'x': schema does not allow/);
    expect(rejects(() => parseParams(chunk, new URLSearchParams(`wid=1&wid=2&digest=${D}&size=1&encoded-size=13`), 'form'))).toMatch(/'wid': duplicate/);
    const m = rejects(() => parseParams(chunk, new URLSearchParams('wid=0&size=16777217&encoded-size=12'), 'form'));
    expect(m).toMatch(/'wid': value must have a minimum value of 1/);
    expect(m).toMatch(/'size': value must have a maximum value of 16777216/);
    expect(m).toMatch(/'encoded-size': value must have a minimum value of 13/);
    expect(m).toMatch(/'digest': parameter is missing/);
    expect(rejects(() => parseParams(chunk, new URLSearchParams(`wid=1&digest=${D.toUpperCase()}&size=1&encoded-size=13`), 'form'))).toMatch(/'digest'/);
    expect(rejects(() => parseParams(chunk, new URLSearchParams(`wid=1.5&digest=${D}&size=1&encoded-size=13`), 'form'))).toMatch(/'wid': value '1.5' is not an integer/);
  });

  it('checks JSON bodies by type', () => {
    const append = findEndpoint(BACKUP_ENDPOINTS, 'PUT', '/dynamic_index')!.params;
    expect(parseParams(append, { wid: 1, 'digest-list': [D], 'offset-list': [0] }, 'json')).toEqual({ wid: 1, 'digest-list': [D], 'offset-list': [0] });
    expect(rejects(() => parseParams(append, { wid: '1', 'digest-list': [D], 'offset-list': [0] }, 'json'))).toMatch(/'wid': expected an integer/);
    expect(rejects(() => parseParams(append, { wid: 1, 'digest-list': D, 'offset-list': [-1] }, 'json'))).toMatch(/'digest-list': expected an array.*'offset-list': value must have a minimum value of 0/);
  });

  it('refuses path tricks in names', () => {
    for (const bad of ['../x', '/etc', 'a/b', '.hidden', 'a\0b', '']) {
      expect(rejects(() => parseParams(BACKUP_UPGRADE_PARAMS, new URLSearchParams({ store: 'store1', 'backup-type': 'host', 'backup-id': bad, 'backup-time': '1' }), 'form'))).toMatch(/'backup-id'/);
    }
    for (const bad of ['../a', '/a', 'a//b', 'a/../b', 'a\0']) {
      expect(rejects(() => parseParams(BACKUP_UPGRADE_PARAMS, new URLSearchParams({ store: 'store1', 'backup-type': 'host', 'backup-id': 'x', 'backup-time': '1', ns: bad }), 'form'))).toMatch(/'ns'/);
    }
    expect(rejects(() => parseParams(BACKUP_UPGRADE_PARAMS, new URLSearchParams({ store: '../s', 'backup-type': 'host', 'backup-id': 'x', 'backup-time': '1' }), 'form'))).toMatch(/'store'/);
  });
});

describe('API token header', () => {
  it('round-trips, percent-encoding the secret, with either separator', () => {
    const h = formatTokenAuthorization('alice@pbs!t1', 'a b:c%');
    expect(h).toBe('PBSAPIToken=alice@pbs!t1:a%20b%3Ac%25');
    expect(parseAuthorization(h)).toEqual({ tokenId: 'alice@pbs!t1', secret: 'a b:c%' });
    expect(parseAuthorization('PBSAPIToken alice@pbs!t1:s')).toEqual({ tokenId: 'alice@pbs!t1', secret: 's' });
  });

  it('is null without credentials and throws on malformed tokens', () => {
    expect(parseAuthorization(undefined)).toBeNull();
    expect(parseAuthorization('Basic YTpi')).toBeNull();
    expect(() => parseAuthorization('PBSAPIToken=alice@pbs:s')).toThrow(/token id/);
    expect(() => parseAuthorization('PBSAPIToken=alice@pbs!t1')).toThrow(/malformed/);
    expect(() => parseAuthorization('PBSAPIToken=alice@pbs!t1:%zz')).toThrow(/percent/);
  });
});

describe('repository specs', () => {
  it('parses [[auth-id@]host[:port]:]datastore with PBS defaults', () => {
    expect(parseRepository('store1')).toEqual({ authId: 'root@pam', host: 'localhost', port: 8007, store: 'store1' });
    expect(parseRepository('pbs.example:store1')).toEqual({ authId: 'root@pam', host: 'pbs.example', port: 8007, store: 'store1' });
    expect(parseRepository('alice@pbs!t1@10.0.0.1:8008:store1')).toEqual({ authId: 'alice@pbs!t1', host: '10.0.0.1', port: 8008, store: 'store1' });
    expect(parseRepository('root@pam@[::1]:store1')).toEqual({ authId: 'root@pam', host: '::1', port: 8007, store: 'store1' });
    expect(parseRepository('u@pve!x@[fe80::1]:9:st_1')).toEqual({ authId: 'u@pve!x', host: 'fe80::1', port: 9, store: 'st_1' });
    expect(formatRepository(parseRepository('u@pve!x@[fe80::1]:9:st_1'))).toBe('u@pve!x@[fe80::1]:9:st_1');
  });

  it('refuses malformed specs', () => {
    for (const bad of ['', 'st', 'host:../x', 'host:99999:store1', 'ho st:store1', '[::1:store1', 'alice@host:store1']) {
      expect(() => parseRepository(bad), bad).toThrow(/invalid repository/);
    }
  });
});

describe('fingerprints', () => {
  it('formats SHA-256 as PBS does and normalizes user input', () => {
    const fp = certificateFingerprint(Buffer.from('x'));
    expect(fp).toBe('2d:71:16:42:b7:26:b0:44:01:62:7c:a9:fb:ac:32:f5:c8:53:0f:b1:90:3c:c4:db:02:25:87:17:92:1a:48:81');
    expect(normalizeFingerprint(fp.toUpperCase())).toBe(fp);
    expect(normalizeFingerprint(fp.replace(/:/g, ''))).toBe(fp);
    expect(() => normalizeFingerprint('ab:cd')).toThrow(/invalid certificate fingerprint/);
  });
});

describe('Semaphore', () => {
  it('admits in FIFO order within capacity and admits an oversize request alone', async () => {
    const s = new Semaphore(10);
    const order: string[] = [];
    const r1 = await s.acquire(6);
    const p2 = s.acquire(6).then((r) => (order.push('b'), r));
    const p3 = s.acquire(1).then((r) => (order.push('c'), r));
    await Promise.resolve();
    expect(order).toEqual([]); // c waits behind b (FIFO)
    r1();
    const r2 = await p2;
    const r3 = await p3;
    expect(order).toEqual(['b', 'c']);
    expect(s.inUse).toBe(7);
    r2();
    r3();
    r3();
    expect(s.inUse).toBe(0);
    const big = await s.acquire(50);
    expect(s.inUse).toBe(50);
    big();
  });
});
