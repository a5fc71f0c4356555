import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll } from 'vitest';

/** A fresh temp directory removed after the test file. */
export function tempDir(prefix = 'pxb-test-'): string {
  const d = mkdtempSync(path.join(os.tmpdir(), prefix));
  afterAll(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

export const isRoot = process.getuid?.() === 0;
