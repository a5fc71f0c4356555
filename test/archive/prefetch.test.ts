import { describe, it, expect } from 'vitest';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { TreePrefetcher, type PrefetchNode } from '../../ts/archive/create.js';
import { tempDir } from '../helpers/tmp.js';

/** The prefetcher's counters (private fields, read for the test). */
const counters = (p: TreePrefetcher) => p as unknown as { ready: number; running: number };

async function settled(p: TreePrefetcher): Promise<void> {
  for (let i = 0; i < 500 && counters(p).running > 0; i++) await new Promise((r) => setTimeout(r, 2));
  expect(counters(p).running).toBe(0);
}

/** Take a directory the way the archiver does: list it, drop its subdirectories, release it. */
async function visit(p: TreePrefetcher, n: PrefetchNode): Promise<number> {
  const list = await p.take(n);
  p.drop(p.children(n).values());
  p.release(n);
  return list.length;
}

describe('TreePrefetcher', () => {
  it('lists a directory taken before the walk reached it once, and leaves no listing behind', async () => {
    // More subdirectories than the lookahead (64): the last ones wait in the frontier.
    const root = tempDir();
    const names = Array.from({ length: 70 }, (_, i) => `d${String(i).padStart(2, '0')}`);
    for (const n of names) mkdirSync(path.join(root, n, 'x'), { recursive: true });

    const p = new TreePrefetcher({}, () => true);
    const r = p.root(Buffer.from(root));
    expect((await p.take(r)).length).toBe(70);
    const kids = [...p.children(r).values()];
    expect(kids.length).toBe(70);
    await settled(p);
    const last = kids[kids.length - 1];
    expect(last.promise).toBeNull(); // not reached: the lookahead is full

    // Taken out of order (started by take()), then released: it must not be listed again
    // when the walk reaches it in the frontier (that listing would never be taken).
    expect(await visit(p, last)).toBe(1);
    for (const k of kids.slice(0, -1)) expect(await visit(p, k)).toBe(1);
    p.release(r);
    await settled(p);
    expect(counters(p).ready).toBe(0);
  });
});
