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

describe.skipIf(!canMount)(`full disk (tmpfs in a mount namespace${canMount ? '' : `: unavailable here, ${(probe.stderr || String(probe.error)).trim()}`})`, () => {
  it('fails the backup that does not fit with one line, leaves no snapshot, keeps the earlier one intact', () => {
    const base = tempDir('pxb-full-');
    const mnt = path.join(base, 'mnt');
    const out = path.join(base, 'out');
    const small = path.join(base, 'small');
    const big = path.join(base, 'big');
    for (const d of [mnt, out, small, big]) fs.mkdirSync(d, { recursive: true });
    fs.writeFileSync(path.join(small, 'a.bin'), lcgBytes(100_000, 1));
    fs.writeFileSync(path.join(small, 'b.txt'), 'hello\n');
    // incompressible, twice the file system's size
    fs.writeFileSync(path.join(big, 'c.bin'), noise(4 * 1024 * 1024, 2));

    const ds = path.join(mnt, 'ds');
    const pxb = (args: string) => `"${process.execPath}" "${BIN}" ${args} --repository "${ds}"`;
    const script = [
      `mount -t tmpfs -o size=2m tmpfs "${mnt}"`,
      `${pxb(`backup small.pxar:"${small}" --backup-id x --backup-time 1700000000`)} > "${out}/out1" 2> "${out}/err1"; echo $? > "${out}/rc1"`,
      `${pxb(`backup big.pxar:"${big}" --backup-id x --backup-time 1700000600`)} > "${out}/out2" 2> "${out}/err2"; echo $? > "${out}/rc2"`,
      `${pxb('snapshot list --output-format json')} > "${out}/list" 2> "${out}/err3"`,
      `${pxb(`restore host/x small.pxar "${out}/restored"`)} 2> "${out}/err4"; echo $? > "${out}/rc4"`,
      `ls -a "${ds}/host/x" > "${out}/dirs"`,
      `find "${ds}" -name '*.pxb-tmp-*' > "${out}/tmps"`,
    ].join('\n');
    const r = spawnSync('unshare', ['-rm', 'sh', '-c', script], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: base } });
    expect(r.status, r.stderr).toBe(0);
    const read = (f: string) => fs.readFileSync(path.join(out, f), 'utf8');

    expect(read('rc1').trim(), read('err1')).toBe('0');
    expect(read('rc2').trim(), read('out2')).toBe('1');
    // (the first line is the notice that the previous snapshot has no such archive)
    const err = read('err2').split('\n').filter((l) => l.startsWith('pxb: '));
    expect(err, read('err2')).toHaveLength(1);
    expect(err[0]).toMatch(/(ENOSPC|no space left)/i);

    const snaps = JSON.parse(read('list')) as Array<{ 'backup-time': number }>;
    expect(snaps.map((s) => s['backup-time'])).toEqual([1700000000]);
    const dirs = read('dirs')
      .split('\n')
      .filter((l) => l && l !== '.' && l !== '..');
    expect(dirs.filter((d) => /^\d{4}-/.test(d))).toEqual(['2023-11-14T22:13:20Z']);
    expect(read('tmps')).toBe(''); // the failed chunk write removed its temporary file

    expect(read('rc4').trim(), read('err4')).toBe('0');
    expect(fs.readFileSync(path.join(out, 'restored', 'a.bin')).equals(lcgBytes(100_000, 1))).toBe(true);
    expect(fs.readFileSync(path.join(out, 'restored', 'b.txt'), 'utf8')).toBe('hello\n');
  });

  it('fails a restore into a full file system with one line and exit 1', () => {
    const base = tempDir('pxb-full-');
    const mnt = path.join(base, 'mnt');
    const out = path.join(base, 'out');
    const src = path.join(base, 'src');
    const ds = path.join(base, 'ds');
    for (const d of [mnt, out, src]) fs.mkdirSync(d, { recursive: true });
    for (let k = 0; k < 8; k++) fs.writeFileSync(path.join(src, `f${k}.bin`), noise(512 * 1024, 10 + k));
    const pxb = (args: string) => `"${process.execPath}" "${BIN}" ${args} --repository "${ds}"`;
    const script = [
      `${pxb(`backup root.pxar:"${src}" --backup-id r`)} > /dev/null 2> "${out}/err1"; echo $? > "${out}/rc1"`,
      `mount -t tmpfs -o size=1m tmpfs "${mnt}"`,
      `${pxb(`restore host/r root.pxar "${mnt}/target"`)} > "${out}/out2" 2> "${out}/err2"; echo $? > "${out}/rc2"`,
    ].join('\n');
    const r = spawnSync('unshare', ['-rm', 'sh', '-c', script], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: base } });
    expect(r.status, r.stderr).toBe(0);
    const read = (f: string) => fs.readFileSync(path.join(out, f), 'utf8');
    expect(read('rc1').trim(), read('err1')).toBe('0');
    expect(read('rc2').trim(), read('out2')).toBe('1');
    const err = read('err2').split('\n').filter((l) => l.length > 0);
    expect(err, read('err2')).toHaveLength(1);
    expect(err[0]).toMatch(/^pxb: .*(ENOSPC|no space left)/i);
  });
});
