/**
 * SipHash-2-4 with the pxar keys (spec pxar.md §2.1): hashes file names for goodbye tables and
 * was used to derive the item-type constants.
 *
 *   k0 = 0x83ac3f1cfbb450db, k1 = 0xaa4f1b6879369fbd (first 128 bits of sha1("PROXMOX ARCHIVE FORMAT"))
 *
 * The message is the raw name without its NUL. Computed by the native addon
 * (native/src/pxar.rs, which also hashes the plain files of runs): the JavaScript version,
 * 64-bit arithmetic on 32-bit halves, boxed its intermediate values as heap numbers whenever
 * it was not optimized (7 MB of garbage in a first no-change backup of the linux tree, where
 * its optimized code was thrown away early for a dependency change).
 */
import { native } from '../../native/index.js';

/** Hash halves written by `sipHash24`: [lo, hi]. Module-level to avoid an allocation per call. */
const out = new Uint32Array(2);

/**
 * SipHash-2-4 of `data` with the pxar keys; the result is left in `out` as [lo, hi] and the
 * array is returned (it is overwritten by the next call: copy what you keep).
 */
export function sipHash24(data: Uint8Array): Uint32Array {
  native.pxarSipHash(data, out);
  return out;
}

/** The 64-bit hash as a bigint (as pxar stores it). */
export function hashFilename(name: Uint8Array): bigint {
  const h = sipHash24(name);
  return (BigInt(h[1]) << 32n) | BigInt(h[0]);
}
