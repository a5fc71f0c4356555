import { describe, it, expect } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { TreePrefetcher, type PrefetchNode } from '../../ts/archive/create.js';
import { tempDir } from '../helpers/tmp.js';

/** Take a directory the way the archiver does: list it, drop its subdirectories, release it. */
async function visit(p: TreePrefetcher, n: PrefetchNode): Promise<string[]> {
  const list = await p.take(n);
  const names = Array.from({ length: list.length }, (_, i) => list.name(i).toString());
  p.drop(p.children(n).values());
  p.release(n);
  return names;
}

describe('TreePrefetcher', () => {
  it('lists a directory taken before the walk reached it (past the lookahead), and the rest in any order', async () => {
    // More subdirectories than the lookahead: the last ones wait in the walk's frontier.
    const root = tempDir();
    const names = Array.from({ length: 70 }, (_, i) => `d${String(i).padStart(2, '0')}`);
    for (const n of names) mkdirSync(path.join(root, n, `x${n}`), { recursive: true });

    const p = new TreePrefetcher({}, null, 8, 2);
    const r = p.root(Buffer.from(root));
    expect((await p.take(r)).length).toBe(70);
    const kids = [...p.children(r).values()];
    expect(kids.map((k) => path.basename(k.path.toString()))).toEqual(names);
    await new Promise((res) => setTimeout(res, 50));
    const last = kids[kids.length - 1];
    expect(p.peek(last)).toBe(false); // not reached: the lookahead is full

    // Taken out of order: the walk lists it next, past the lookahead.
    expect(await visit(p, last)).toEqual(['xd69']);
    for (const [k, n] of kids.slice(0, -1).entries()) expect(await visit(p, n)).toEqual([`x${names[k]}`]);
    p.release(r);
    p.close();
  });

  it('abandons dropped subtrees, even ones it has fetched, and takes nothing from them', async () => {
    const root = tempDir();
    for (const d of ['a/b/c', 'a/e', 'z']) mkdirSync(path.join(root, d), { recursive: true });
    writeFileSync(path.join(root, 'a', 'f'), 'f');
    const p = new TreePrefetcher({}, null, 64, 1);
    const r = p.root(Buffer.from(root));
    await p.take(r);
    const [a, z] = [...p.children(r).values()];
    for (let k = 0; k < 100 && !p.peek(a); k++) await new Promise((res) => setTimeout(res, 5));
    expect(a.list?.length).toBe(3); // fetched, not taken (SubdirPrereads looks at it)
    p.drop([a]);
    expect(a.dropped).toBe(true);
    expect(a.list).toBeNull();
    await expect(p.take(a)).rejects.toThrow(/dropped|not pending|closed/);
    expect(await visit(p, z)).toEqual([]);
    p.close();
  });

  it('descends only into directories on the allowed devices, and reports a directory it cannot list', async () => {
    const root = tempDir();
    mkdirSync(path.join(root, 'sub', 'deeper'), { recursive: true });
    const p = new TreePrefetcher({}, [12345n], 64, 1);
    const r = p.root(Buffer.from(root));
    const list = await p.take(r);
    expect(list.length).toBe(1);
    expect(p.children(r).size).toBe(0); // 'sub' is on another device than 12345
    p.close();

    const q = new TreePrefetcher({}, null, 64, 1);
    const missing = q.root(Buffer.from(path.join(root, 'nope')));
    await expect(q.take(missing)).rejects.toMatchObject({ code: 'ENOENT' });
    q.close();
  });
});
