/**
 * Killing a backup at a random point leaves the previous snapshot intact, no half snapshot,
 * and the next backup of the group works (the dead writer's lock is taken over).
 */
import { describe, it, expect } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DataStore } from '../../ts/datastore/datastore.js';
import { BackupGroup } from '../../ts/datastore/backup-group.js';
import { createBackup } from '../../ts/client/backup.js';
import { restore } from '../../ts/client/restore.js';
import { tempDir } from '../helpers/tmp.js';

const bin = fileURLToPath(new URL('../../bin/pxb.js', import.meta.url));

function makeTree(root: string, seed: number): void {
  let x = seed;
  for (let d = 0; d < 40; d++) {
    const dir = path.join(root, `dir${d}`);
    fs.mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 40; f++) {
      const b = Buffer.allocUnsafe(20_000 + ((x = (x * 1103515245 + 12345) >>> 0) % 200_000));
      for (let i = 0; i < b.length; i += 4) b.writeUInt32LE((x = (x * 1664525 + 1013904223) >>> 0), Math.min(i, b.length - 4));
      fs.writeFileSync(path.join(dir, `f${f}`), b);
    }
  }
}

function sameContent(a: string, b: string): boolean {
  for (const e of fs.readdirSync(a, { withFileTypes: true })) {
    const pa = path.join(a, e.name);
    const pb = path.join(b, e.name);
    if (e.isDirectory()) {
      if (!sameContent(pa, pb)) return false;
    } else if (!fs.readFileSync(pa).equals(fs.readFileSync(pb))) return false;
  }
  return fs.readdirSync(a).length === fs.readdirSync(b).length;
}

describe('interrupted backups', () => {
  it('a backup killed at random points leaves the previous snapshot intact and the next backup works', async () => {
    const base = tempDir();
    const src = path.join(base, 'src');
    makeTree(src, 42);
    const dsPath = path.join(base, 'ds');
    const ds = await DataStore.open(dsPath, { create: true, fsync: false });
    const first = await createBackup({ datastore: ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: 'kill', backupTime: 1_700_000_000, changeDetectionMode: 'data' });
    // change some data so the next backup has work to do
    for (let d = 0; d < 40; d += 3) fs.appendFileSync(path.join(src, `dir${d}`, 'f1'), 'changed');

    for (const [k, delayMs] of [150, 400, 900].entries()) {
      const child = spawn(process.execPath, [bin, 'backup', `root.pxar:${src}`, '--repository', dsPath, '--backup-id', 'kill', '--backup-time', String(1_700_000_100 + k), '--change-detection-mode', k % 2 ? 'metadata' : 'data'], { stdio: 'ignore' });
      // Listen before waiting: a child that finishes before the kill has exited already.
      const exited = new Promise((r) => child.on('exit', r));
      await new Promise((r) => setTimeout(r, delayMs));
      child.kill('SIGKILL');
      await exited;
      const snaps = await ds.listSnapshots(new BackupGroup('host', 'kill'), { includeUnfinished: true });
      // Either the kill came after the commit (then that snapshot is complete) or nothing new is listed as finished.
      for (const s of snaps.filter((x) => x.finished)) {
        const out = path.join(base, `check-${k}-${s.dir.time}`);
        await restore({ datastore: ds, snapshot: s.dir.toString(), archiveName: 'root.pxar', target: out });
        fs.rmSync(out, { recursive: true });
      }
    }
    // The first snapshot still restores exactly.
    const out = path.join(base, 'restore-first');
    await restore({ datastore: ds, snapshot: first.snapshot, archiveName: 'root.pxar', target: out });
    expect(fs.existsSync(out)).toBe(true);

    // The next backup works (stale lock of the killed process taken over, leftovers removed).
    const next = await createBackup({ datastore: ds, specs: [{ archiveName: 'root.pxar', path: src }], backupId: 'kill', backupTime: 1_700_001_000, changeDetectionMode: 'metadata' });
    const out2 = path.join(base, 'restore-next');
    await restore({ datastore: ds, snapshot: next.snapshot, archiveName: 'root.pxar', target: out2 });
    expect(sameContent(src, out2)).toBe(true);
    const after = await ds.listSnapshots(new BackupGroup('host', 'kill'), { includeUnfinished: true });
    expect(after.filter((s) => !s.finished)).toEqual([]);
  }, 180_000);
});
