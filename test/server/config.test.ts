import { describe, expect, it } from 'vitest';
import { defaultConfigDir, parseDatastoreSpec, parseListen } from '../../ts/server/config.js';

describe('serve configuration', () => {
  it('parses listen addresses', () => {
    expect(parseListen('127.0.0.1:8007')).toEqual({ host: '127.0.0.1', port: 8007 });
    expect(parseListen('0.0.0.0')).toEqual({ host: '0.0.0.0', port: 8007 });
    expect(parseListen('9000')).toEqual({ host: '127.0.0.1', port: 9000 });
    expect(parseListen('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(parseListen('::')).toEqual({ host: '::', port: 8007 });
    expect(parseListen('localhost:1')).toEqual({ host: 'localhost', port: 1 });
    for (const bad of ['a b:1', '127.0.0.1:x', '127.0.0.1:70000', ':80', '[::1]:']) expect(() => parseListen(bad), bad).toThrow(/invalid/);
  });

  it('parses NAME=PATH datastores', () => {
    expect(parseDatastoreSpec('store1=/srv/ds')).toEqual(['store1', '/srv/ds']);
    expect(() => parseDatastoreSpec('/srv/ds')).toThrow(/NAME=PATH/);
    expect(() => parseDatastoreSpec('x=/srv')).toThrow(/3 to 32/);
    expect(() => parseDatastoreSpec('../a=/srv')).toThrow(/datastore name/);
    expect(() => parseDatastoreSpec('store1=')).toThrow(/empty path/);
  });

  it('finds the config directory from the environment', () => {
    expect(defaultConfigDir({ PXB_CONFIG_DIR: '/etc/pxb' })).toBe('/etc/pxb');
    expect(defaultConfigDir({ XDG_CONFIG_HOME: '/x', HOME: '/h' })).toBe('/x/pxb/server');
    expect(defaultConfigDir({ XDG_CONFIG_HOME: 'rel', HOME: '/h' })).toBe('/h/.config/pxb/server');
  });
});
