/**
 * The casync/pxar "binary tree array" layout of goodbye tables (spec pxar.md §5.1).
 *
 * A sorted array of n items is permuted so that index i has its left child (smaller or equal)
 * at 2i+1 and its right child (greater or equal) at 2i+2. The permutation only depends on n.
 */

/**
 * The permutation for `n` items: `order[dest] = source index in the sorted array`.
 * Check values are in the spec (n=4 → [2,1,3,0], n=10 → [6,3,8,1,5,7,9,0,2,4], …).
 */
export function binaryTreeArrayOrder(n: number): Uint32Array {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`binary tree array: bad size ${n}`);
  const order = new Uint32Array(n);
  if (n > 0) place(order, n, 0, 31 - Math.clz32(n), 0);
  return order;
}

function place(order: Uint32Array, n: number, o: number, e: number, i: number): void {
  // Recursion depth is log2(n): bounded even for huge directories.
  const p = 2 ** e;
  const t = p + Math.floor(p / 2) - 1;
  const m = n > t ? p - 1 : p - 1 - (t - n);
  order[i] = o + m;
  if (m > 0) place(order, m, o, e - 1, 2 * i + 1);
  if (m + 1 < n) place(order, n - m - 1, o + m + 1, e - 1, 2 * i + 2);
}

/**
 * All indices of a binary tree array of `n` items whose key equals the wanted one, best
 * candidate first. `compareAt(i)` returns <0 when the wanted key is smaller than item i, >0 when
 * greater and 0 when equal. Equal keys (hash collisions) can sit in both subtrees of the first
 * match, and only there: every ancestor separates them from the rest of the tree.
 */
export function binaryTreeArraySearch(n: number, compareAt: (i: number) => number): number[] {
  let i = 0;
  while (i < n) {
    const c = compareAt(i);
    if (c === 0) break;
    i = c < 0 ? 2 * i + 1 : 2 * i + 2;
  }
  if (i >= n) return [];
  const found: number[] = [];
  const stack = [i];
  while (stack.length) {
    const j = stack.pop() as number;
    if (j >= n) continue;
    const c = j === i ? 0 : compareAt(j);
    if (c === 0) {
      found.push(j);
      stack.push(2 * j + 2, 2 * j + 1);
    } else {
      stack.push(c < 0 ? 2 * j + 1 : 2 * j + 2);
    }
  }
  return found;
}
