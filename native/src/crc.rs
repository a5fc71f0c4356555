//! CRC-32 (IEEE 802.3, reflected poly 0xEDB88320, zlib's convention: `crc32(prev, data)` takes
//! and returns finalized values). Carry-less multiplication folding (PCLMULQDQ) for long
//! inputs when the CPU has it; node's bundled zlib (`crc32_z`) otherwise and for the tail.
use std::os::raw::c_ulong;

#[cfg_attr(test, link(name = "z"))]
extern "C" {
    fn crc32_z(crc: c_ulong, buf: *const u8, len: usize) -> c_ulong;
}

fn zlib(prev: u32, data: &[u8]) -> u32 {
    unsafe { crc32_z(prev as c_ulong, data.as_ptr(), data.len()) as u32 }
}

pub fn crc32(data: &[u8]) -> u32 {
    update(0, data)
}

/// Continue a CRC over more data.
pub fn update(prev: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if data.len() >= 128 && std::is_x86_feature_detected!("pclmulqdq") && std::is_x86_feature_detected!("sse4.1") {
            return unsafe { clmul::update(prev, data) };
        }
    }
    zlib(prev, data)
}

#[cfg(target_arch = "x86_64")]
mod clmul {
    use std::arch::x86_64::*;

    // Folding constants for the reflected CRC-32 polynomial (x^n mod P, bit-reflected).
    const K1: i64 = 0x154442bd4; // fold 4×128 bits
    const K2: i64 = 0x1c6e41596;
    const K3: i64 = 0x1751997d0; // fold 1×128 bits
    const K4: i64 = 0x0ccaa009e;
    const K5: i64 = 0x163cd6124; // 64 -> 32 bits
    const P_X: i64 = 0x1db710641; // P(x), reflected
    const U_PRIME: i64 = 0x1f7011641; // Barrett constant

    #[inline(always)]
    unsafe fn load(b: &[u8]) -> __m128i {
        _mm_loadu_si128(b.as_ptr() as *const __m128i)
    }

    #[inline(always)]
    unsafe fn fold(a: __m128i, b: __m128i, keys: __m128i) -> __m128i {
        _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, keys, 0x00), _mm_clmulepi64_si128(a, keys, 0x11)), b)
    }

    /// `data.len() >= 64` (callers use >= 128).
    #[target_feature(enable = "pclmulqdq,sse2,sse4.1")]
    pub unsafe fn update(prev: u32, mut data: &[u8]) -> u32 {
        let mut x3 = load(&data[0..]);
        let mut x2 = load(&data[16..]);
        let mut x1 = load(&data[32..]);
        let mut x0 = load(&data[48..]);
        x3 = _mm_xor_si128(x3, _mm_cvtsi32_si128(!prev as i32));
        data = &data[64..];
        let k1k2 = _mm_set_epi64x(K2, K1);
        while data.len() >= 64 {
            x3 = fold(x3, load(&data[0..]), k1k2);
            x2 = fold(x2, load(&data[16..]), k1k2);
            x1 = fold(x1, load(&data[32..]), k1k2);
            x0 = fold(x0, load(&data[48..]), k1k2);
            data = &data[64..];
        }
        let k3k4 = _mm_set_epi64x(K4, K3);
        let mut x = fold(x3, x2, k3k4);
        x = fold(x, x1, k3k4);
        x = fold(x, x0, k3k4);
        while data.len() >= 16 {
            x = fold(x, load(data), k3k4);
            data = &data[16..];
        }
        // 128 -> 64 bits
        x = _mm_xor_si128(_mm_clmulepi64_si128(x, k3k4, 0x10), _mm_srli_si128(x, 8));
        // 64 -> 32 bits
        let low32 = _mm_set_epi32(0, 0, 0, !0);
        x = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x, low32), _mm_set_epi64x(0, K5), 0x00), _mm_srli_si128(x, 4));
        // Barrett reduction to 32 bits
        let pu = _mm_set_epi64x(U_PRIME, P_X);
        let t1 = _mm_clmulepi64_si128(_mm_and_si128(x, low32), pu, 0x10);
        let t2 = _mm_clmulepi64_si128(_mm_and_si128(t1, low32), pu, 0x00);
        let c = _mm_extract_epi32(_mm_xor_si128(x, t2), 1) as u32;
        super::zlib(!c, data)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hello() {
        assert_eq!(super::crc32(b"hello"), 0x3610a686);
    }

    #[test]
    fn folding_matches_zlib() {
        let mut x = 12345u32;
        let data: Vec<u8> = (0..100_000)
            .map(|_| {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                (x >> 24) as u8
            })
            .collect();
        for len in [128usize, 129, 143, 144, 191, 192, 255, 256, 1000, 4096, 65_537, 100_000] {
            for start in [0usize, 1, 7] {
                if start + len > data.len() {
                    continue;
                }
                let d = &data[start..start + len];
                assert_eq!(super::update(0, d), super::zlib(0, d), "len {} start {}", len, start);
                assert_eq!(super::update(0xdeadbeef, d), super::zlib(0xdeadbeef, d), "prev, len {}", len);
            }
        }
    }
}
