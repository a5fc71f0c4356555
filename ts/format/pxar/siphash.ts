/**
 * SipHash-2-4 with the pxar keys (spec pxar.md §2.1): hashes file names for goodbye tables and
 * was used to derive the item-type constants.
 *
 *   k0 = 0x83ac3f1cfbb450db, k1 = 0xaa4f1b6879369fbd (first 128 bits of sha1("PROXMOX ARCHIVE FORMAT"))
 *
 * The message is the raw name without its NUL. The state is kept as 32-bit halves in local
 * variables (no BigInt in the loop); only `hashFilename` builds a bigint at the end.
 */

const K0_LO = 0xfbb450db;
const K0_HI = 0x83ac3f1c;
const K1_LO = 0x79369fbd;
const K1_HI = 0xaa4f1b68;

/** Hash halves written by `sipHash24`: [lo, hi]. Module-level to avoid an allocation per call. */
const out = new Uint32Array(2);

/**
 * SipHash-2-4 of `data` with the pxar keys; the result is left in `out` as [lo, hi] and the
 * array is returned (it is overwritten by the next call: copy what you keep).
 */
export function sipHash24(data: Uint8Array): Uint32Array {
  // v0 = k0 ^ "somepseu", v1 = k1 ^ "dorandom", v2 = k0 ^ "lygenera", v3 = k1 ^ "tedbytes"
  let v0l = (K0_LO ^ 0x70736575) >>> 0;
  let v0h = (K0_HI ^ 0x736f6d65) >>> 0;
  let v1l = (K1_LO ^ 0x6e646f6d) >>> 0;
  let v1h = (K1_HI ^ 0x646f7261) >>> 0;
  let v2l = (K0_LO ^ 0x6e657261) >>> 0;
  let v2h = (K0_HI ^ 0x6c796765) >>> 0;
  let v3l = (K1_LO ^ 0x79746573) >>> 0;
  let v3h = (K1_HI ^ 0x74656462) >>> 0;

  const len = data.length;
  const full = len - (len & 7);
  let i = 0;
  let ml = 0;
  let mh = 0;
  let t = 0;
  let last = false;

  for (;;) {
    if (i < full) {
      ml = (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)) >>> 0;
      mh = (data[i + 4] | (data[i + 5] << 8) | (data[i + 6] << 16) | (data[i + 7] << 24)) >>> 0;
      i += 8;
    } else {
      // final block: remaining bytes, length (mod 256) in the top byte
      ml = 0;
      mh = (len & 0xff) << 24;
      for (let k = 0; k < (len & 7); k++) {
        if (k < 4) ml |= data[i + k] << (8 * k);
        else mh |= data[i + k] << (8 * (k - 4));
      }
      ml >>>= 0;
      mh >>>= 0;
      last = true;
    }

    v3l = (v3l ^ ml) >>> 0;
    v3h = (v3h ^ mh) >>> 0;
    for (let r = 0; r < 2; r++) {
      // SipRound
      t = (v0l + v1l) >>> 0;
      v0h = (v0h + v1h + (t < v0l ? 1 : 0)) >>> 0;
      v0l = t;
      t = ((v1h << 13) | (v1l >>> 19)) >>> 0;
      v1l = ((v1l << 13) | (v1h >>> 19)) >>> 0;
      v1h = t;
      v1l = (v1l ^ v0l) >>> 0;
      v1h = (v1h ^ v0h) >>> 0;
      t = v0l;
      v0l = v0h;
      v0h = t;
      t = (v2l + v3l) >>> 0;
      v2h = (v2h + v3h + (t < v2l ? 1 : 0)) >>> 0;
      v2l = t;
      t = ((v3h << 16) | (v3l >>> 16)) >>> 0;
      v3l = ((v3l << 16) | (v3h >>> 16)) >>> 0;
      v3h = t;
      v3l = (v3l ^ v2l) >>> 0;
      v3h = (v3h ^ v2h) >>> 0;
      t = (v0l + v3l) >>> 0;
      v0h = (v0h + v3h + (t < v0l ? 1 : 0)) >>> 0;
      v0l = t;
      t = ((v3h << 21) | (v3l >>> 11)) >>> 0;
      v3l = ((v3l << 21) | (v3h >>> 11)) >>> 0;
      v3h = t;
      v3l = (v3l ^ v0l) >>> 0;
      v3h = (v3h ^ v0h) >>> 0;
      t = (v2l + v1l) >>> 0;
      v2h = (v2h + v1h + (t < v2l ? 1 : 0)) >>> 0;
      v2l = t;
      t = ((v1h << 17) | (v1l >>> 15)) >>> 0;
      v1l = ((v1l << 17) | (v1h >>> 15)) >>> 0;
      v1h = t;
      v1l = (v1l ^ v2l) >>> 0;
      v1h = (v1h ^ v2h) >>> 0;
      t = v2l;
      v2l = v2h;
      v2h = t;
    }
    v0l = (v0l ^ ml) >>> 0;
    v0h = (v0h ^ mh) >>> 0;
    if (last) break;
  }

  v2l = (v2l ^ 0xff) >>> 0;
  for (let r = 0; r < 4; r++) {
    t = (v0l + v1l) >>> 0;
    v0h = (v0h + v1h + (t < v0l ? 1 : 0)) >>> 0;
    v0l = t;
    t = ((v1h << 13) | (v1l >>> 19)) >>> 0;
    v1l = ((v1l << 13) | (v1h >>> 19)) >>> 0;
    v1h = t;
    v1l = (v1l ^ v0l) >>> 0;
    v1h = (v1h ^ v0h) >>> 0;
    t = v0l;
    v0l = v0h;
    v0h = t;
    t = (v2l + v3l) >>> 0;
    v2h = (v2h + v3h + (t < v2l ? 1 : 0)) >>> 0;
    v2l = t;
    t = ((v3h << 16) | (v3l >>> 16)) >>> 0;
    v3l = ((v3l << 16) | (v3h >>> 16)) >>> 0;
    v3h = t;
    v3l = (v3l ^ v2l) >>> 0;
    v3h = (v3h ^ v2h) >>> 0;
    t = (v0l + v3l) >>> 0;
    v0h = (v0h + v3h + (t < v0l ? 1 : 0)) >>> 0;
    v0l = t;
    t = ((v3h << 21) | (v3l >>> 11)) >>> 0;
    v3l = ((v3l << 21) | (v3h >>> 11)) >>> 0;
    v3h = t;
    v3l = (v3l ^ v0l) >>> 0;
    v3h = (v3h ^ v0h) >>> 0;
    t = (v2l + v1l) >>> 0;
    v2h = (v2h + v1h + (t < v2l ? 1 : 0)) >>> 0;
    v2l = t;
    t = ((v1h << 17) | (v1l >>> 15)) >>> 0;
    v1l = ((v1l << 17) | (v1h >>> 15)) >>> 0;
    v1h = t;
    v1l = (v1l ^ v2l) >>> 0;
    v1h = (v1h ^ v2h) >>> 0;
    t = v2l;
    v2l = v2h;
    v2h = t;
  }

  out[0] = v0l ^ v1l ^ v2l ^ v3l;
  out[1] = v0h ^ v1h ^ v2h ^ v3h;
  return out;
}

/** SipHash-2-4 (pxar keys) of a file name (raw bytes, no NUL) as a u64 bigint. */
export function hashFilename(name: Uint8Array): bigint {
  const h = sipHash24(name);
  return (BigInt(h[1]) << 32n) | BigInt(h[0]);
}
