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
}

/// glibc's `M_MMAP_THRESHOLD`.
const M_MMAP_THRESHOLD: c_int = -3;

/// Serve allocations of at least `bytes` with their own mapping (returned to the system when
/// freed). False when the allocator refused (or is not glibc's and ignores it).
pub fn set_mmap_threshold(bytes: usize) -> bool {
    let Ok(v) = c_int::try_from(bytes) else { return false };
    // SAFETY: mallopt only adjusts allocator parameters; any value is checked by glibc.
    unsafe { mallopt(M_MMAP_THRESHOLD, v) == 1 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sets_threshold() {
        assert!(super::set_mmap_threshold(128 * 1024));
        assert!(!super::set_mmap_threshold(usize::MAX));
    }
}
