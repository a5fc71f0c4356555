import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';

// One hook per test file (this module is evaluated again for every file). A hook registered
// inside a running test (tempDir() called from an `it` body) never ran: such directories were
// left behind, ~800 MiB per run of the interrupt test, until the disk filled up.
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fresh temp directory, removed after the test file (also when created inside a test). */
export function tempDir(prefix = 'pxb-test-'): string {
  const d = mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(d);
  return d;
}

export const isRoot = process.getuid?.() === 0;
