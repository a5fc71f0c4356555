import { describe, expect, it } from 'vitest';
import { binaryTreeArrayOrder, binaryTreeArraySearch } from '../../../ts/format/pxar/binary-tree-array.js';

describe('goodbye binary tree array', () => {
  it('produces every check value of spec §5.1', () => {
    const checks: Record<number, number[]> = {
      1: [0],
      2: [1, 0],
      3: [1, 0, 2],
      4: [2, 1, 3, 0],
      5: [3, 1, 4, 0, 2],
      6: [3, 1, 5, 0, 2, 4],
      7: [3, 1, 5, 0, 2, 4, 6],
      8: [4, 2, 6, 1, 3, 5, 7, 0],
      9: [5, 3, 7, 1, 4, 6, 8, 0, 2],
      10: [6, 3, 8, 1, 5, 7, 9, 0, 2, 4],
      16: [8, 4, 12, 2, 6, 10, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0],
      17: [9, 5, 13, 3, 7, 11, 15, 1, 4, 6, 8, 10, 12, 14, 16, 0, 2],
    };
    for (const [n, want] of Object.entries(checks)) expect([...binaryTreeArrayOrder(Number(n))], `n=${n}`).toEqual(want);
    expect(binaryTreeArrayOrder(0).length).toBe(0);
  });

  it('is a permutation forming a search tree for all sizes up to 300', () => {
    for (let n = 1; n <= 300; n++) {
      const order = binaryTreeArrayOrder(n);
      expect(new Set(order).size).toBe(n);
      // in-order traversal of the implicit tree must visit sorted indices 0..n-1
      const visited: number[] = [];
      const walk = (i: number): void => {
        if (i >= n) return;
        walk(2 * i + 1);
        visited.push(order[i]);
        walk(2 * i + 2);
      };
      walk(0);
      expect(visited).toEqual(Array.from({ length: n }, (_, i) => i));
    }
  });

  it('finds every key, and all items of equal keys', () => {
    // sorted keys with runs of duplicates, laid out as a tree
    const sorted = [1, 2, 2, 2, 5, 7, 7, 9, 12, 12, 12, 12, 15, 20];
    const order = binaryTreeArrayOrder(sorted.length);
    const table = [...order].map((src) => sorted[src]);
    for (const key of new Set(sorted)) {
      const found = binaryTreeArraySearch(table.length, (i) => key - table[i]);
      expect(found.length, `key ${key}`).toBe(sorted.filter((k) => k === key).length);
      for (const i of found) expect(table[i]).toBe(key);
    }
    expect(binaryTreeArraySearch(table.length, (i) => 6 - table[i])).toEqual([]);
    expect(binaryTreeArraySearch(0, () => 0)).toEqual([]);
  });
});
