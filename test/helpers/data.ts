/** Deterministic pseudo-random bytes (LCG): test data whose chunking does not depend on luck. */
export function lcgBytes(n: number, seed: number): Buffer {
  const data = Buffer.allocUnsafe(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    data[i] = x >>> 24;
  }
  return data;
}
