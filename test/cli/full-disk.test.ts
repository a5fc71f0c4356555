/**
 * A backup into a datastore whose file system fills up, on a real file system: a 2 MiB tmpfs
 * mounted in a private user + mount namespace (`unshare -rm`, no root needed where user
 * namespaces are allowed; skipped, with the reason, where they are not). The backup that does
 * not fit exits 1 with one error line naming the cause, leaves no snapshot and no temporary
 * file behind, and the snapshot made before it still lists and restores byte for byte.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { lcgBytes } from '../helpers/data.js';
import { tempDir } from '../helpers/tmp.js';

const BIN = fileURLToPath(new URL('../../bin/pxb.js', import.meta.url));

/** Deterministic, incompressible bytes: SHA-256 of a counter. */
function noise(n: number, seed: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i * 32 < n; i++) parts.push(createHash('sha256').update(`${seed}:${i}`).digest());
  return Buffer.concat(parts).subarray(0, n);
}
const probe = spawnSync('unshare', ['-rm', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /mnt'], { encoding: 'utf8' });
const canMount = probe.status === 0;

/** Temp dirs under one base; `out` collects what the commands in the namespace print. */
function sandbox(...names: string[]): { base: string; dir: (n: string) => string } {
  const base = tempDir('pxb-full-');
  const dir = (n: string) => path.join(base, n);
  for (const n of ['mnt', 'out', ...names]) fs.mkdirSync(dir(n), { recursive: true });
  return { base, dir };
}

/** `pxb args` against the datastore `ds`, its stdout/stderr/exit code saved as out/<step>.{out,err,rc}. */
const step = (out: string, ds: string, name: string, args: string) =>
  `"${process.execPath}" "${BIN}" ${args} --repository "${ds}" > "${out}/${name}.out" 2> "${out}/${name}.err"; echo $? > "${out}/${name}.rc"`;

/** Run the shell lines in a private user + mount namespace; returns a reader of out/ files. */
function inNamespace(base: string, lines: string[]): (f: string) => string {
  const r = spawnSync('unshare', ['-rm', 'sh', '-c', lines.join('\n')], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: base } });
  expect(r.status, r.stderr).toBe(0);
  return (f: string) => fs.readFileSync(path.join(base, 'out', f), 'utf8');
}

describe.skipIf(!canMount)(`full disk (tmpfs in a mount namespace${canMount ? '' : `: unavailable here, ${(probe.stderr || String(probe.error)).trim()}`})`, () => {
  it('fails the backup that does not fit with one line, leaves no snapshot, keeps the earlier one intact', () => {
    const { base, dir } = sandbox('small', 'big');
    const [mnt, out, small, big] = ['mnt', 'out', 'small', 'big'].map(dir);
    fs.writeFileSync(path.join(small, 'a.bin'), lcgBytes(100_000, 1));
    fs.writeFileSync(path.join(small, 'b.txt'), 'hello\n');
    // incompressible, twice the file system's size
    fs.writeFileSync(path.join(big, 'c.bin'), noise(4 * 1024 * 1024, 2));

    const ds = path.join(mnt, 'ds');
    const read = inNamespace(base, [
      `mount -t tmpfs -o size=2m tmpfs "${mnt}"`,
      step(out, ds, 'small', `backup small.pxar:"${small}" --backup-id x --backup-time 1700000000`),
      step(out, ds, 'big', `backup big.pxar:"${big}" --backup-id x --backup-time 1700000600`),
      step(out, ds, 'list', 'snapshot list --output-format json'),
      step(out, ds, 'restore', `restore host/x small.pxar "${out}/restored"`),
      `ls -a "${ds}/host/x" > "${out}/dirs"`,
      `find "${ds}" -name '*.pxb-tmp-*' > "${out}/tmps"`,
    ]);

    expect(read('small.rc').trim(), read('small.err')).toBe('0');
    expect(read('big.rc').trim(), read('big.out')).toBe('1');
    // (the first line is the notice that the previous snapshot has no such archive)
    const err = read('big.err').split('\n').filter((l) => l.startsWith('pxb: '));
    expect(err, read('big.err')).toHaveLength(1);
    expect(err[0]).toMatch(/(ENOSPC|no space left)/i);

    const snaps = JSON.parse(read('list.out')) as Array<{ 'backup-time': number }>;
    expect(snaps.map((s) => s['backup-time'])).toEqual([1700000000]);
    const dirs = read('dirs')
      .split('\n')
      .filter((l) => l && l !== '.' && l !== '..');
    expect(dirs.filter((d) => /^\d{4}-/.test(d))).toEqual(['2023-11-14T22:13:20Z']);
    expect(read('tmps')).toBe(''); // the failed chunk write removed its temporary file

    expect(read('restore.rc').trim(), read('restore.err')).toBe('0');
    expect(fs.readFileSync(path.join(out, 'restored', 'a.bin')).equals(lcgBytes(100_000, 1))).toBe(true);
    expect(fs.readFileSync(path.join(out, 'restored', 'b.txt'), 'utf8')).toBe('hello\n');
  });

  it('fails a restore into a full file system with one line and exit 1', () => {
    const { base, dir } = sandbox('src');
    const [mnt, out, src, ds] = ['mnt', 'out', 'src', 'ds'].map(dir);
    for (let k = 0; k < 8; k++) fs.writeFileSync(path.join(src, `f${k}.bin`), noise(512 * 1024, 10 + k));
    const read = inNamespace(base, [
      step(out, ds, 'backup', `backup root.pxar:"${src}" --backup-id r`),
      `mount -t tmpfs -o size=1m tmpfs "${mnt}"`,
      step(out, ds, 'restore', `restore host/r root.pxar "${mnt}/target"`),
    ]);
    expect(read('backup.rc').trim(), read('backup.err')).toBe('0');
    expect(read('restore.rc').trim(), read('restore.out')).toBe('1');
    const err = read('restore.err').split('\n').filter((l) => l.length > 0);
    expect(err, read('restore.err')).toHaveLength(1);
    expect(err[0]).toMatch(/^pxb: .*(ENOSPC|no space left)/i);
  });
});
