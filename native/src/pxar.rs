//! pxar records of plain reused files (spec pxar.md §4, change-detection.md §5): the metadata
//! archive's entries of a run of regular files without chattr flags, xattrs, ACLs, fcaps or
//! project id, each FILENAME + ENTRY + PAYLOAD_REF, and their goodbye items. The TypeScript
//! encoder (ts/format/pxar/encoder.ts, `addPlainPayloadRefs`) owns the stream and calls this
//! for the bytes of a no-change backup's files, which are nearly all of its entries.
//!
//! A run is given in columns: names concatenated (`ends[q]` is the end of name q, it starts at
//! `ends[q - 1]` or 0) and `FIELDS` numbers per file in `nums`: mode, uid, gid, mtime seconds,
//! mtime nanoseconds, size, payload offset (to which `delta` is added).

/// Item types (spec pxar.md §3).
pub const PXAR_ENTRY: u64 = 0xd5956474e588acef;
pub const PXAR_FILENAME: u64 = 0x16701121063917b3;
pub const PXAR_PAYLOAD_REF: u64 = 0x419d3d6bc4ba977e;
const HEADER: usize = 16;
const STAT: usize = 40;
const MAX_FILENAME_LEN: usize = 4096;
const IFMT: u64 = 0o170000;
const IFREG: u64 = 0o100000;
/// Numbers per file in a run.
pub const FIELDS: usize = 7;

/// SipHash-2-4 keys of pxar (first 128 bits of sha1("PROXMOX ARCHIVE FORMAT")).
const K0: u64 = 0x83ac3f1cfbb450db;
const K1: u64 = 0xaa4f1b6879369fbd;

/// SipHash-2-4 of `data` with the pxar keys (goodbye-table hash of a file name).
pub fn siphash24(data: &[u8]) -> u64 {
    let mut v0 = K0 ^ 0x736f6d6570736575;
    let mut v1 = K1 ^ 0x646f72616e646f6d;
    let mut v2 = K0 ^ 0x6c7967656e657261;
    let mut v3 = K1 ^ 0x7465646279746573;
    #[inline(always)]
    fn round(v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64) {
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    }
    let mut blocks = data.chunks_exact(8);
    for b in &mut blocks {
        let m = u64::from_le_bytes(b.try_into().unwrap());
        v3 ^= m;
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        v0 ^= m;
    }
    let mut m = (data.len() as u64 & 0xff) << 56;
    for (k, &c) in blocks.remainder().iter().enumerate() {
        m |= (c as u64) << (8 * k);
    }
    v3 ^= m;
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    v0 ^= m;
    v2 ^= 0xff;
    for _ in 0..4 {
        round(&mut v0, &mut v1, &mut v2, &mut v3);
    }
    v0 ^ v1 ^ v2 ^ v3
}

/// What is wrong with a file name, if anything (as the TypeScript `fileNameProblem`).
pub fn file_name_problem(name: &[u8]) -> Option<String> {
    if name.is_empty() {
        return Some("empty".into());
    }
    if name.len() > MAX_FILENAME_LEN {
        return Some(format!("longer than {} bytes", MAX_FILENAME_LEN));
    }
    if name == b"." {
        return Some("'.'".into());
    }
    if name == b".." {
        return Some("'..'".into());
    }
    if name.contains(&b'/') {
        return Some("contains '/'".into());
    }
    if name.contains(&0) {
        return Some("contains NUL".into());
    }
    None
}

/// A run of plain files, in columns (module doc).
pub struct PlainRun<'a> {
    pub names: &'a [u8],
    pub ends: &'a [u32],
    pub nums: &'a [f64],
    pub delta: f64,
}

fn non_negative_int(v: f64) -> bool {
    v >= 0.0 && v <= 9007199254740991.0 && v.fract() == 0.0
}

fn u32_int(v: f64) -> bool {
    v >= 0.0 && v <= u32::MAX as f64 && v.fract() == 0.0
}

impl<'a> PlainRun<'a> {
    fn name(&self, q: usize) -> &'a [u8] {
        let a = if q == 0 { 0 } else { self.ends[q - 1] as usize };
        &self.names[a..self.ends[q] as usize]
    }

    fn field(&self, q: usize, f: usize) -> f64 {
        self.nums[q * FIELDS + f]
    }

    /// Bytes file q takes in the metadata stream.
    pub fn record_size(&self, q: usize) -> usize {
        let a = if q == 0 { 0 } else { self.ends[q - 1] as usize };
        (HEADER + (self.ends[q] as usize - a) + 1) + (HEADER + STAT) + (HEADER + 16)
    }

    /// Check files `from..to` (everything before anything is written): names, stat fields, a
    /// regular file's mode, size, and payload offsets not below `payload_pos`.
    pub fn check(&self, from: usize, to: usize, payload_pos: f64) -> Result<(), String> {
        if from > to || to > self.ends.len() || to * FIELDS > self.nums.len() {
            return Err(format!("pxar encoder: plain run {}..{} out of range", from, to));
        }
        for q in from..to {
            let a = if q == 0 { 0 } else { self.ends[q - 1] as usize };
            let e = self.ends[q] as usize;
            if a > e || e > self.names.len() {
                return Err(format!("pxar encoder: plain run name {} out of range", q));
            }
            let name = &self.names[a..e];
            if let Some(p) = file_name_problem(name) {
                return Err(format!("pxar encoder: illegal file name {:?}: {}", String::from_utf8_lossy(name), p));
            }
            let (mode, uid, gid, secs, nanos) = (self.field(q, 0), self.field(q, 1), self.field(q, 2), self.field(q, 3), self.field(q, 4));
            if !non_negative_int(mode) {
                return Err(format!("pxar encoder: mode {} is not a non-negative integer", mode));
            }
            if !u32_int(uid) || !u32_int(gid) {
                return Err(format!("pxar encoder: uid/gid {}/{} out of u32 range", uid, gid));
            }
            if !(secs.abs() <= 9007199254740991.0 && secs.fract() == 0.0) {
                return Err(format!("pxar encoder: mtime seconds {} not an integer", secs));
            }
            if !(nanos >= 0.0 && nanos <= 999_999_999.0 && nanos.fract() == 0.0) {
                return Err(format!("pxar encoder: mtime nanoseconds {} out of range", nanos));
            }
            if (mode as u64) & IFMT != IFREG {
                return Err(format!("pxar encoder: regular file metadata has mode 0o{:o} (wrong file type)", mode as u64));
            }
            let size = self.field(q, 5);
            if !non_negative_int(size) {
                return Err(format!("pxar encoder: file size {} is not a non-negative integer", size));
            }
            let offset = self.field(q, 6) + self.delta;
            if !non_negative_int(offset) {
                return Err(format!("pxar encoder: payload offset {} is not a non-negative integer", offset));
            }
            if offset < payload_pos {
                return Err(format!("pxar encoder: payload offset {} is below the current payload position {}", offset, payload_pos));
            }
        }
        Ok(())
    }

    /// Write files `from..` into `out` while they fit (checked before: `check`); `pos` is the
    /// stream position of `out[0]`. Goodbye items go to `items` from index `at` (hash, FILENAME
    /// position, record size). Returns (files written, bytes written).
    pub fn write(&self, out: &mut [u8], from: usize, to: usize, pos: f64, items: &mut Items, at: usize) -> (usize, usize) {
        let mut o = 0usize;
        let mut q = from;
        while q < to {
            let n = self.record_size(q);
            if o + n > out.len() || at + (q - from) >= items.capacity() {
                break;
            }
            let start = o;
            let name = self.name(q);
            // FILENAME
            header(&mut out[o..], PXAR_FILENAME, HEADER + name.len() + 1);
            o += HEADER;
            out[o..o + name.len()].copy_from_slice(name);
            o += name.len();
            out[o] = 0;
            o += 1;
            // ENTRY (plain: no flags)
            header(&mut out[o..], PXAR_ENTRY, HEADER + STAT);
            o += HEADER;
            let secs = self.field(q, 3);
            put_u64(&mut out[o..], self.field(q, 0) as u64);
            put_u64(&mut out[o + 8..], 0);
            out[o + 16..o + 20].copy_from_slice(&(self.field(q, 1) as u32).to_le_bytes());
            out[o + 20..o + 24].copy_from_slice(&(self.field(q, 2) as u32).to_le_bytes());
            out[o + 24..o + 32].copy_from_slice(&(secs as i64).to_le_bytes());
            out[o + 32..o + 36].copy_from_slice(&(self.field(q, 4) as u32).to_le_bytes());
            out[o + 36..o + 40].copy_from_slice(&0u32.to_le_bytes());
            o += STAT;
            // PAYLOAD_REF
            header(&mut out[o..], PXAR_PAYLOAD_REF, HEADER + 16);
            o += HEADER;
            put_u64(&mut out[o..], (self.field(q, 6) + self.delta) as u64);
            put_u64(&mut out[o + 8..], self.field(q, 5) as u64);
            o += 16;
            let h = siphash24(name);
            let k = at + (q - from);
            items.hash_lo[k] = h as u32;
            items.hash_hi[k] = (h >> 32) as u32;
            items.offset[k] = pos + start as f64;
            items.size[k] = (o - start) as f64;
            q += 1;
        }
        (q - from, o)
    }
}

/// Item type of a goodbye table and the hash of its tail item (spec pxar.md §5).
pub const PXAR_GOODBYE: u64 = 0x2fec4fa642d5731d;
pub const PXAR_GOODBYE_TAIL_MARKER: u64 = 0xef5eed5b753e1555;
const GOODBYE_ITEM: usize = 24;

/// Bytes of the GOODBYE item of a directory with `n` children.
pub fn goodbye_size(n: usize) -> usize {
    HEADER + GOODBYE_ITEM * (n + 1)
}

/// The binary tree array permutation for `n` sorted items (spec pxar.md §5.1):
/// `order[dest] = source index`.
pub fn binary_tree_array_order(n: usize) -> Vec<u32> {
    fn place(order: &mut [u32], n: usize, o: usize, e: u32, i: usize) {
        let p = 1usize << e;
        let t = p + p / 2 - 1;
        let m = if n > t { p - 1 } else { p - 1 - (t - n) };
        order[i] = (o + m) as u32;
        if m > 0 {
            place(order, m, o, e - 1, 2 * i + 1);
        }
        if m + 1 < n {
            place(order, n - m - 1, o + m + 1, e - 1, 2 * i + 2);
        }
    }
    let mut order = vec![0u32; n];
    if n > 0 {
        place(&mut order, n, 0, usize::BITS - 1 - n.leading_zeros(), 0);
    }
    order
}

/// Write the GOODBYE item of a directory into `out` (exactly `goodbye_size(n)` bytes): its
/// first `n` items sorted by hash (ties in the order given), laid out as a binary tree array,
/// offsets made relative to `goodbye_pos`, then the tail item pointing back at `entry_pos`.
pub fn write_goodbye(out: &mut [u8], items: &Items, n: usize, goodbye_pos: f64, entry_pos: f64) {
    let full = goodbye_size(n);
    let mut sorted: Vec<u32> = (0..n as u32).collect();
    let hash = |i: u32| ((items.hash_hi[i as usize] as u64) << 32) | items.hash_lo[i as usize] as u64;
    sorted.sort_by_key(|&i| hash(i)); // stable: equal hashes keep their order
    let order = binary_tree_array_order(n);
    header(out, PXAR_GOODBYE, full);
    let mut q = HEADER;
    for &d in &order {
        let i = sorted[d as usize];
        put_u64(&mut out[q..], hash(i));
        put_u64(&mut out[q + 8..], (goodbye_pos - items.offset[i as usize]) as u64);
        put_u64(&mut out[q + 16..], items.size[i as usize] as u64);
        q += GOODBYE_ITEM;
    }
    put_u64(&mut out[q..], PXAR_GOODBYE_TAIL_MARKER);
    put_u64(&mut out[q + 8..], (goodbye_pos - entry_pos) as u64);
    put_u64(&mut out[q + 16..], full as u64);
}

/// Goodbye items in columns (the encoder's GoodbyeItems arrays).
pub struct Items<'a> {
    pub hash_lo: &'a mut [u32],
    pub hash_hi: &'a mut [u32],
    pub offset: &'a mut [f64],
    pub size: &'a mut [f64],
}

impl Items<'_> {
    pub fn capacity(&self) -> usize {
        self.hash_lo.len().min(self.hash_hi.len()).min(self.offset.len()).min(self.size.len())
    }
}

fn put_u64(out: &mut [u8], v: u64) {
    out[..8].copy_from_slice(&v.to_le_bytes());
}

fn header(out: &mut [u8], ty: u64, full: usize) {
    put_u64(out, ty);
    put_u64(&mut out[8..], full as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vectors() {
        // pxar's type constants are SipHash-2-4 of their names with these keys (spec pxar.md §3)
        assert_eq!(siphash24(b"__PROXMOX_FORMAT_FILENAME__"), PXAR_FILENAME);
        assert_eq!(siphash24(b"__PROXMOX_FORMAT_ENTRY_V2__"), PXAR_ENTRY);
        assert_eq!(siphash24(b"__PROXMOX_FORMAT_PXAR_PAYLOAD_REF__"), PXAR_PAYLOAD_REF);
        assert_eq!(siphash24(b"__PROXMOX_FORMAT_GOODBYE__"), PXAR_GOODBYE);
        assert_eq!(siphash24(b"__PROXMOX_FORMAT_PXAR_GOODBYE_TAIL_MARKER__"), PXAR_GOODBYE_TAIL_MARKER);
    }

    #[test]
    fn writes_filename_entry_payload_ref_and_items() {
        let names = b"ab";
        let ends = [1u32, 2];
        let nums = [0o100644 as f64, 1000.0, 100.0, -5.0, 7.0, 3.0, 10.0, 0o100600 as f64, 0.0, 0.0, 4294967296.0, 0.0, 0.0, 13.0];
        let run = PlainRun { names, ends: &ends, nums: &nums, delta: 6.0 };
        run.check(0, 2, 16.0).unwrap();
        assert!(run.check(0, 2, 17.0).unwrap_err().contains("below the current payload position"));
        let (mut lo, mut hi, mut off, mut size) = ([0u32; 2], [0u32; 2], [0f64; 2], [0f64; 2]);
        let mut items = Items { hash_lo: &mut lo, hash_hi: &mut hi, offset: &mut off, size: &mut size };
        let mut out = vec![0u8; 300];
        // room for one record only
        let (n, b) = run.write(&mut out[..run.record_size(0) + 10], 0, 2, 100.0, &mut items, 0);
        assert_eq!((n, b), (1, 18 + 56 + 32));
        let (n2, b2) = run.write(&mut out[b..], 1, 2, 100.0 + b as f64, &mut items, 1);
        assert_eq!((n2, b2), (1, 106));
        assert_eq!(&out[0..8], &PXAR_FILENAME.to_le_bytes());
        assert_eq!(u64::from_le_bytes(out[8..16].try_into().unwrap()), 18);
        assert_eq!(&out[16..18], b"a\0");
        assert_eq!(&out[18..26], &PXAR_ENTRY.to_le_bytes());
        assert_eq!(u64::from_le_bytes(out[34..42].try_into().unwrap()), 0o100644);
        assert_eq!(i64::from_le_bytes(out[58..66].try_into().unwrap()), -5);
        assert_eq!(&out[74..82], &PXAR_PAYLOAD_REF.to_le_bytes());
        assert_eq!(u64::from_le_bytes(out[90..98].try_into().unwrap()), 16);
        assert_eq!(u64::from_le_bytes(out[98..106].try_into().unwrap()), 3);
        // second file: secs 2^32
        assert_eq!(i64::from_le_bytes(out[106 + 58..106 + 66].try_into().unwrap()), 4294967296);
        assert_eq!(off, [100.0, 206.0]);
        assert_eq!(size, [106.0, 106.0]);
        assert_eq!(((hi[0] as u64) << 32) | lo[0] as u64, siphash24(b"a"));
    }

    #[test]
    fn binary_tree_array_order_matches_the_spec() {
        assert_eq!(binary_tree_array_order(4), [2, 1, 3, 0]);
        assert_eq!(binary_tree_array_order(10), [6, 3, 8, 1, 5, 7, 9, 0, 2, 4]);
        assert!(binary_tree_array_order(0).is_empty());
        assert_eq!(binary_tree_array_order(1), [0]);
    }

    #[test]
    fn goodbye_sorts_by_hash_stably_and_points_back() {
        let (mut lo, mut hi) = ([5u32, 1, 1, 0], [0u32, 1, 1, 0]);
        let (mut off, mut size) = ([100.0, 200.0, 300.0, 400.0], [1.0, 2.0, 3.0, 4.0]);
        let items = Items { hash_lo: &mut lo, hash_hi: &mut hi, offset: &mut off, size: &mut size };
        let mut out = vec![0u8; goodbye_size(4)];
        write_goodbye(&mut out, &items, 4, 1000.0, 50.0);
        let word = |k: usize| u64::from_le_bytes(out[k..k + 8].try_into().unwrap());
        assert_eq!((word(0), word(8)), (PXAR_GOODBYE, 16 + 24 * 5));
        // sorted: item 3 (0), item 0 (5), item 1 (2^32+1), item 2 (2^32+1, after item 1); order [2,1,3,0]
        let at = |d: usize| (word(16 + 24 * d), word(24 + 24 * d), word(32 + 24 * d));
        assert_eq!(at(0), ((1 << 32) | 1, 800, 2));
        assert_eq!(at(1), (5, 900, 1));
        assert_eq!(at(2), ((1 << 32) | 1, 700, 3));
        assert_eq!(at(3), (0, 600, 4));
        assert_eq!(at(4), (PXAR_GOODBYE_TAIL_MARKER, 950, 136));
    }

    #[test]
    fn refuses_bad_names_and_metadata() {
        let nums = [0o100644 as f64, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        for (name, what) in [(&b".."[..], "'..'"), (b"a/b", "'/'"), (b"a\0", "NUL"), (b"", "empty")] {
            let ends = [name.len() as u32];
            let run = PlainRun { names: name, ends: &ends, nums: &nums, delta: 0.0 };
            assert!(run.check(0, 1, 0.0).unwrap_err().contains(what), "{:?}", name);
        }
        let dir = [0o040755 as f64, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let run = PlainRun { names: b"d", ends: &[1], nums: &dir, delta: 0.0 };
        assert!(run.check(0, 1, 0.0).unwrap_err().contains("wrong file type"));
        let nanos = [0o100644 as f64, 0.0, 0.0, 0.0, 1e9, 0.0, 0.0];
        let run = PlainRun { names: b"f", ends: &[1], nums: &nanos, delta: 0.0 };
        assert!(run.check(0, 1, 0.0).unwrap_err().contains("nanoseconds"));
    }
}
