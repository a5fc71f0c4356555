//! CRC-32 (IEEE 802.3, zlib's) through the zlib that node bundles and exports (`crc32_z`).
use std::os::raw::c_ulong;

#[cfg_attr(test, link(name = "z"))]
extern "C" {
    fn crc32_z(crc: c_ulong, buf: *const u8, len: usize) -> c_ulong;
}

pub fn crc32(data: &[u8]) -> u32 {
    unsafe { crc32_z(0, data.as_ptr(), data.len()) as u32 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hello() { assert_eq!(super::crc32(b"hello"), 0x3610a686); }
}
