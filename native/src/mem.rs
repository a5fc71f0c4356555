//! Process memory knobs of the C allocator.
//!
//! glibc raises its mmap threshold each time it frees a large mmapped block (up to 32 MiB), so
//! after the first freed multi-MiB buffer (a chunk window, a decoded chunk) later ones come from
//! the heap arenas of whichever thread allocated them, where freed memory is rarely returned:
//! the resident set creeps up with every pool thread. Setting the threshold explicitly fixes it
//! and turns the dynamic adjustment off.
use std::os::raw::c_int;

extern "C" {
    fn mallopt(param: c_int, value: c_int) -> c_int;
    fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: c_int) -> c_int;
}

/// Linux's `MADV_DONTNEED`: private anonymous pages read back as zeros afterwards.
const MADV_DONTNEED: c_int = 4;
const PAGE: usize = 4096;

/// glibc's `M_MMAP_THRESHOLD`.
const M_MMAP_THRESHOLD: c_int = -3;

/// Serve allocations of at least `bytes` with their own mapping (returned to the system when
/// freed). False when the allocator refused (or is not glibc's and ignores it).
pub fn set_mmap_threshold(bytes: usize) -> bool {
    let Ok(v) = c_int::try_from(bytes) else { return false };
    // SAFETY: mallopt only adjusts allocator parameters; any value is checked by glibc.
    unsafe { mallopt(M_MMAP_THRESHOLD, v) == 1 }
}

/// Give the whole pages inside `buf` back to the system (`madvise(MADV_DONTNEED)`): the
/// resident set drops at once instead of when the owner frees the buffer. The bytes read as
/// zeros afterwards and the memory stays valid, so a buffer kept alive by its owner (a
/// JavaScript Buffer awaiting garbage collection) can be released early: this is for bytes
/// nobody will read again. Pages shared with neighbouring allocations (the partial first and
/// last page, the allocator's header) are left alone. Returns the bytes released.
pub fn release_pages(buf: &mut [u8]) -> usize {
    let start = buf.as_mut_ptr() as usize;
    let from = (start + PAGE - 1) & !(PAGE - 1);
    let to = (start + buf.len()) & !(PAGE - 1);
    if to <= from {
        return 0;
    }
    // SAFETY: [from, to) lies within `buf`, which we borrow mutably; MADV_DONTNEED on private
    // anonymous (or heap) memory only replaces its pages with zero pages on the next touch.
    let rc = unsafe { madvise(from as *mut std::ffi::c_void, to - from, MADV_DONTNEED) };
    if rc == 0 { to - from } else { 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sets_threshold() {
        assert!(super::set_mmap_threshold(128 * 1024));
        assert!(!super::set_mmap_threshold(usize::MAX));
    }

    #[test]
    fn releases_whole_pages_only() {
        let mut v = vec![7u8; 5 * super::PAGE];
        let off = 100;
        let n = super::release_pages(&mut v[off..off + 3 * super::PAGE]);
        // the slice covers two whole pages at most, whatever the vector's alignment
        assert!(n == 2 * super::PAGE || n == 3 * super::PAGE && (v.as_ptr() as usize + off) % super::PAGE == 0);
        let start = v.as_ptr() as usize + off;
        let from = (start + super::PAGE - 1) & !(super::PAGE - 1);
        for (i, &b) in v.iter().enumerate() {
            let a = v.as_ptr() as usize + i;
            assert_eq!(b, if a >= from && a < from + n { 0 } else { 7 }, "byte {i}");
        }
        assert_eq!(super::release_pages(&mut v[1..100]), 0);
    }
}
