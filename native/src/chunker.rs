//! PBS buzhash chunker (`pbs-datastore/src/chunker.rs`), see spec chunking-and-crypto.md §1.
//!
//! A push scanner: [`Chunker::scan`] consumes bytes of the current chunk and returns the
//! number of bytes up to and including a boundary, or 0 when all of `data` belongs to the
//! current chunk. State carries across calls, so cuts do not depend on how the stream is split.

const WINDOW: usize = 64;

/// Format constant (chunking-and-crypto.md §1.7).
pub static BUZHASH_TABLE: [u32; 256] = [
    0x458be752, 0xc10748cc, 0xfbbcdbb8, 0x6ded5b68, 0xb10a82b5, 0x20d75648, 0xdfc5665f, 0xa8428801,
    0x7ebf5191, 0x841135c7, 0x65cc53b3, 0x280a597c, 0x16f60255, 0xc78cbc3e, 0x294415f5, 0xb938d494,
    0xec85c4e6, 0xb7d33edc, 0xe549b544, 0xfdeda5aa, 0x882bf287, 0x3116737c, 0x05569956, 0xe8cc1f68,
    0x0806ac5e, 0x22a14443, 0x15297e10, 0x50d090e7, 0x4ba60f6f, 0xefd9f1a7, 0x5c5c885c, 0x82482f93,
    0x9bfd7c64, 0x0b3e7276, 0xf2688e77, 0x8fad8abc, 0xb0509568, 0xf1ada29f, 0xa53efdfe, 0xcb2b1d00,
    0xf2a9e986, 0x6463432b, 0x95094051, 0x5a223ad2, 0x9be8401b, 0x61e579cb, 0x1a556a14, 0x5840fdc2,
    0x9261ddf6, 0xcde002bb, 0x52432bb0, 0xbf17373e, 0x7b7c222f, 0x2955ed16, 0x9f10ca59, 0xe840c4c9,
    0xccabd806, 0x14543f34, 0x1462417a, 0x0d4a1f9c, 0x087ed925, 0xd7f8f24c, 0x7338c425, 0xcf86c8f5,
    0xb19165cd, 0x9891c393, 0x325384ac, 0x0308459d, 0x86141d7e, 0xc922116a, 0xe2ffa6b6, 0x53f52aed,
    0x2cd86197, 0xf5b9f498, 0xbf319c8f, 0xe0411fae, 0x977eb18c, 0xd8770976, 0x9833466a, 0xc674df7f,
    0x8c297d45, 0x8ca48d26, 0xc49ed8e2, 0x7344f874, 0x556f79c7, 0x6b25eaed, 0xa03e2b42, 0xf68f66a4,
    0x8e8b09a2, 0xf2e0e62a, 0x0d3a9806, 0x9729e493, 0x8c72b0fc, 0x160b94f6, 0x450e4d3d, 0x7a320e85,
    0xbef8f0e1, 0x21d73653, 0x4e3d977a, 0x1e7b3929, 0x1cc6c719, 0xbe478d53, 0x8d752809, 0xe6d8c2c6,
    0x275f0892, 0xc8acc273, 0x4cc21580, 0xecc4a617, 0xf5f7be70, 0xe795248a, 0x375a2fe9, 0x425570b6,
    0x8898dcf8, 0xdc2d97c4, 0x0106114b, 0x364dc22f, 0x1e0cad1f, 0xbe63803c, 0x5f69fac2, 0x4d5afa6f,
    0x1bc0dfb5, 0xfb273589, 0x0ea47f7b, 0x3c1c2b50, 0x21b2a932, 0x6b1223fd, 0x2fe706a8, 0xf9bd6ce2,
    0xa268e64e, 0xe987f486, 0x3eacf563, 0x1ca2018c, 0x65e18228, 0x2207360a, 0x57cf1715, 0x34c37d2b,
    0x1f8f3cde, 0x93b657cf, 0x31a019fd, 0xe69eb729, 0x8bca7b9b, 0x4c9d5bed, 0x277ebeaf, 0xe0d8f8ae,
    0xd150821c, 0x31381871, 0xafc3f1b0, 0x927db328, 0xe95effac, 0x305a47bd, 0x426ba35b, 0x1233af3f,
    0x686a5b83, 0x50e072e5, 0xd9d3bb2a, 0x8befc475, 0x487f0de6, 0xc88dff89, 0xbd664d5e, 0x971b5d18,
    0x63b14847, 0xd7d3c1ce, 0x7f583cf3, 0x72cbcb09, 0xc0d0a81c, 0x7fa3429b, 0xe9158a1b, 0x225ea19a,
    0xd8ca9ea3, 0xc763b282, 0xbb0c6341, 0x020b8293, 0xd4cd299d, 0x58cfa7f8, 0x91b4ee53, 0x37e4d140,
    0x95ec764c, 0x30f76b06, 0x5ee68d24, 0x679c8661, 0xa41979c2, 0xf2b61284, 0x4fac1475, 0x0adb49f9,
    0x19727a23, 0x15a7e374, 0xc43a18d5, 0x3fb1aa73, 0x342fc615, 0x924c0793, 0xbee2d7f0, 0x8a279de9,
    0x4aa2d70c, 0xe24dd37f, 0xbe862c0b, 0x177c22c2, 0x5388e5ee, 0xcd8a7510, 0xf901b4fd, 0xdbc13dbc,
    0x6c0bae5b, 0x64efe8c7, 0x48b02079, 0x80331a49, 0xca3d8ae6, 0xf3546190, 0xfed7108b, 0xc49b941b,
    0x32baf4a9, 0xeb833a4a, 0x88a3f1a5, 0x3a91ce0a, 0x3cc27da1, 0x7112e684, 0x4a3096b1, 0x3794574c,
    0xa3c8b6f3, 0x1d213941, 0x6e0a2e00, 0x233479f1, 0x0f4cd82f, 0x6093edd2, 0x5d7d209e, 0x464fe319,
    0xd4dcac9e, 0x0db845cb, 0xfb5e4bc3, 0xe0256ce1, 0x09fb4ed1, 0x0914be1e, 0xa5bdb2c3, 0xc6eb57bb,
    0x30320350, 0x3f397e91, 0xa67791bc, 0x86bc0e2c, 0xefa0a7e2, 0xe9ff7543, 0xe733612c, 0xd185897b,
    0x329e5388, 0x91dd236b, 0x2ecb0d93, 0xf4d82a3d, 0x35b5c03f, 0xe4e606f0, 0x05b21843, 0x37b45964,
    0x5eff22f4, 0x6027f4cc, 0x77178b3c, 0xae507131, 0x7bf7cabc, 0xf9c18d66, 0x593ade65, 0xd95ddf11,
];

#[derive(Clone)]
pub struct Chunker {
    h: u32,
    window: [u8; WINDOW],
    window_len: usize,
    chunk_size: usize,
    min: usize,
    max: usize,
    mask: u32,
    break_min: u32,
}

impl Chunker {
    /// `avg` must be a power of two; PBS accepts 64 KiB ..= 4 MiB for archives,
    /// we allow 64 B .. 1 GiB so tests can use small sizes.
    pub fn new(avg: usize) -> Result<Chunker, String> {
        if !avg.is_power_of_two() || avg < 64 || avg > (1 << 30) {
            return Err(format!("chunk size {} is not a power of two in 64 B ..= 1 GiB", avg));
        }
        let mask = (2 * avg - 1) as u32;
        Ok(Chunker {
            h: 0,
            window: [0; WINDOW],
            window_len: 0,
            chunk_size: 0,
            min: avg >> 2,
            max: avg << 2,
            mask,
            break_min: mask - 2,
        })
    }

    pub fn min_size(&self) -> usize { self.min }
    pub fn max_size(&self) -> usize { self.max }

    /// Forget the current chunk (after a forced or suggested cut).
    pub fn reset(&mut self) {
        self.h = 0;
        self.chunk_size = 0;
        self.window_len = 0;
    }

    /// Bytes of the current chunk seen so far.
    pub fn chunk_size(&self) -> usize { self.chunk_size }

    /// Scan `data`, the next bytes of the current chunk. Returns the length of the prefix that
    /// ends the chunk (boundary found, state reset) or 0 (no boundary, all consumed).
    pub fn scan(&mut self, data: &[u8]) -> usize {
        let t = &BUZHASH_TABLE;
        let len = data.len();
        let mut pos = 0usize;
        if self.window_len < WINDOW {
            // Fill phase: no boundary test (spec §1.2).
            let n = (WINDOW - self.window_len).min(len);
            for &b in &data[..n] {
                self.window[self.window_len] = b;
                self.h = self.h.rotate_left(1) ^ t[b as usize];
                self.window_len += 1;
            }
            pos = n;
            self.chunk_size += n;
            if self.window_len < WINDOW {
                return 0;
            }
        }
        let mut h = self.h;
        let mut size = self.chunk_size;

        // Ring phase: the byte leaving the window precedes `data`, it is in the ring.
        while pos < len && pos < WINDOW {
            let enter = data[pos];
            let idx = size & (WINDOW - 1);
            let leave = self.window[idx];
            self.window[idx] = enter;
            h = h.rotate_left(1) ^ t[leave as usize] ^ t[enter as usize];
            size += 1;
            pos += 1;
            if self.shall_break(h, size) {
                self.reset();
                return pos;
            }
        }
        if pos < len {
            // Direct phase: every byte of data[..pos] belongs to this chunk, so the leaving
            // byte is data[pos - 64]. No boundary can lie before min, and the rolling hash
            // after any byte depends only on the 64 bytes ending there (each byte's table value
            // is rotated by its distance from the end, and a byte 64 back rotates by 64 = 0
            // mod 32 and cancels). So skip to min - 1 and hash just the last 64 bytes there:
            // nothing below min is scanned (most of a chunk when suggested boundaries cut
            // at the first file past min).
            if size + 1 < self.min {
                let n = (self.min - 1 - size).min(len - pos);
                h = if n >= WINDOW {
                    window_hash(&data[pos + n - WINDOW..pos + n])
                } else {
                    roll(h, &data[pos..pos + n], &data[pos - WINDOW..pos + n - WINDOW])
                };
                size += n;
                pos += n;
            }
            // ... then test every byte, at most up to the maximum chunk size.
            if pos < len {
                let limit = (pos + (self.max - size)).min(len);
                let (mask, brk) = (self.mask, self.break_min);
                let enter = &data[pos..limit];
                let leave = &data[pos - WINDOW..limit - WINDOW];
                let n = enter.len();
                let mut i = 0usize;
                while i + 4 <= n {
                    let [h1, h2, h3, h4] = step4(h, &leave[i..i + 4], &enter[i..i + 4]);
                    let hit = ((h1 & mask) >= brk) | ((h2 & mask) >= brk) | ((h3 & mask) >= brk) | ((h4 & mask) >= brk);
                    if hit {
                        let j = if (h1 & mask) >= brk { 1 } else if (h2 & mask) >= brk { 2 } else if (h3 & mask) >= brk { 3 } else { 4 };
                        self.reset();
                        return pos + i + j;
                    }
                    h = h4;
                    i += 4;
                }
                while i < n {
                    h = h.rotate_left(1) ^ t[leave[i] as usize] ^ t[enter[i] as usize];
                    i += 1;
                    if (h & mask) >= brk {
                        self.reset();
                        return pos + i;
                    }
                }
                size += limit - pos;
                pos = limit;
                if size >= self.max {
                    self.reset();
                    return pos;
                }
            }
            // No boundary: keep the last 64 bytes of the chunk in the ring.
            for p in len.saturating_sub(WINDOW)..len {
                let chunk_pos = size - (len - p);
                self.window[chunk_pos & (WINDOW - 1)] = data[p];
            }
        }
        self.h = h;
        self.chunk_size = size;
        0
    }

    #[inline(always)]
    fn shall_break(&self, h: u32, size: usize) -> bool {
        size >= self.max || (size >= self.min && (h & self.mask) >= self.break_min)
    }
}

/// Four rolling steps. Only the last hash depends on `h` through one rotate and one xor, so
/// the rotate/xor dependency chain advances four bytes at a time; the intermediate hashes
/// (needed for the boundary test, dropped by the optimizer where unused) are computed off it.
#[inline(always)]
fn step4(h: u32, leave: &[u8], enter: &[u8]) -> [u32; 4] {
    let t = &BUZHASH_TABLE;
    let x0 = t[leave[0] as usize] ^ t[enter[0] as usize];
    let x1 = t[leave[1] as usize] ^ t[enter[1] as usize];
    let x2 = t[leave[2] as usize] ^ t[enter[2] as usize];
    let x3 = t[leave[3] as usize] ^ t[enter[3] as usize];
    let k2 = x0.rotate_left(1) ^ x1;
    let k3 = k2.rotate_left(1) ^ x2;
    let k4 = k3.rotate_left(1) ^ x3;
    [h.rotate_left(1) ^ x0, h.rotate_left(2) ^ k2, h.rotate_left(3) ^ k3, h.rotate_left(4) ^ k4]
}

/// The hash of a full window from scratch: what rolling arrives at after its last byte.
#[inline(always)]
fn window_hash(w: &[u8]) -> u32 {
    let t = &BUZHASH_TABLE;
    w.iter().fold(0u32, |h, &b| h.rotate_left(1) ^ t[b as usize])
}

/// Roll the hash over `enter` (with the matching leaving bytes) without testing.
#[inline(always)]
fn roll(mut h: u32, enter: &[u8], leave: &[u8]) -> u32 {
    let t = &BUZHASH_TABLE;
    let n = enter.len().min(leave.len());
    let mut i = 0usize;
    while i + 4 <= n {
        h = step4(h, &leave[i..i + 4], &enter[i..i + 4])[3];
        i += 4;
    }
    while i < n {
        h = h.rotate_left(1) ^ t[leave[i] as usize] ^ t[enter[i] as usize];
        i += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input_a() -> Vec<u8> {
        (0u32..262144).flat_map(|i| i.to_le_bytes()).collect()
    }

    fn cuts(c: &mut Chunker, data: &[u8], piece: usize) -> Vec<usize> {
        let mut out = vec![];
        let mut last = 0usize;
        let mut off = 0usize;
        while off < data.len() {
            let end = (off + piece).min(data.len());
            let mut p = off;
            while p < end {
                let n = c.scan(&data[p..end]);
                if n == 0 { break; }
                p += n;
                out.push(p - last);
                last = p;
            }
            off = end;
        }
        if last < data.len() { out.push(data.len() - last); }
        out
    }

    /// The spec's chunker, byte by byte, no shortcuts: the reference for the fast paths.
    fn reference_cuts(data: &[u8], avg: usize) -> Vec<usize> {
        let (min, max, mask) = (avg >> 2, avg << 2, (2 * avg - 1) as u32);
        let mut out = vec![];
        let (mut h, mut size, mut last) = (0u32, 0usize, 0usize);
        for (p, &b) in data.iter().enumerate() {
            size += 1;
            if size <= WINDOW {
                // fill phase (spec §1.2): no test, not even for the byte that fills the window
                h = h.rotate_left(1) ^ BUZHASH_TABLE[b as usize];
                continue;
            } else {
                h = h.rotate_left(1) ^ BUZHASH_TABLE[data[p - WINDOW] as usize] ^ BUZHASH_TABLE[b as usize];
            }
            if size >= max || (size >= min && (h & mask) >= mask - 2) {
                out.push(p + 1 - last);
                last = p + 1;
                h = 0;
                size = 0;
            }
        }
        if last < data.len() { out.push(data.len() - last); }
        out
    }

    #[test]
    fn fast_paths_match_the_reference() {
        // Pseudo-random data, several averages (many cuts, some forced at the maximum) and
        // piece sizes that split the fill, ring, skip-to-min and 4-byte test phases anywhere.
        let mut x = 0x1234_5678u32;
        let data: Vec<u8> = (0..3 << 20).map(|_| { x = x.wrapping_mul(1103515245).wrapping_add(12345); (x >> 24) as u8 }).collect();
        for avg in [64usize, 4096, 65536, 1 << 20] {
            let expect = reference_cuts(&data, avg);
            for piece in [data.len(), 100_000, 4096 + 7, 1021, 127, 65, 61] {
                let mut c = Chunker::new(avg).unwrap();
                assert_eq!(cuts(&mut c, &data, piece), expect, "avg {} piece {}", avg, piece);
            }
        }
    }

    #[test]
    fn upstream_vector_64k() {
        let d = input_a();
        for piece in [1usize, 7, 64, 65, 4096, d.len()] {
            let mut c = Chunker::new(64 * 1024).unwrap();
            assert_eq!(cuts(&mut c, &d, piece), vec![143377, 262144, 262144, 262144, 118767], "piece {}", piece);
        }
    }
}
