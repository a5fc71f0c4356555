/**
 * The addon's own Rust unit tests (chunker against a byte-by-byte reference of the spec, batch
 * reads, directory listing, blob codec, ...), run as part of the suite so CI runs them too.
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const nativeDir = path.resolve(import.meta.dirname, '../../native');

describe('native unit tests (cargo test)', () => {
  it('pass', () => {
    const env = { ...process.env, PATH: `${path.join(os.homedir(), '.cargo', 'bin')}${path.delimiter}${process.env.PATH ?? ''}` };
    const r = spawnSync('cargo', ['test', '--release', '--lib', '--quiet'], { cwd: nativeDir, env, encoding: 'utf8' });
    if (r.error) throw r.error;
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/test result: ok\. [1-9]\d* passed; 0 failed/);
  }, 600_000);
});
