//! zstd through the system `libzstd.so.1` (Debian's libzstd1, a dependency of dpkg, so it is
//! on every machine). Linked by its soname so no -dev package is needed.
#![allow(non_camel_case_types)]
use std::os::raw::{c_char, c_int, c_uint, c_ulonglong, c_void};

#[repr(C)]
pub struct ZSTD_CCtx { _p: [u8; 0] }
#[repr(C)]
pub struct ZSTD_DCtx { _p: [u8; 0] }

const ZSTD_CONTENTSIZE_UNKNOWN: u64 = u64::MAX;
const ZSTD_CONTENTSIZE_ERROR: u64 = u64::MAX - 1;

#[link(name = "libzstd.so.1", kind = "dylib", modifiers = "+verbatim")]
extern "C" {
    fn ZSTD_versionString() -> *const c_char;
    fn ZSTD_isError(code: usize) -> c_uint;
    fn ZSTD_getErrorName(code: usize) -> *const c_char;
    fn ZSTD_getFrameContentSize(src: *const c_void, src_size: usize) -> c_ulonglong;
    fn ZSTD_createCCtx() -> *mut ZSTD_CCtx;
    fn ZSTD_freeCCtx(c: *mut ZSTD_CCtx) -> usize;
    fn ZSTD_compressCCtx(c: *mut ZSTD_CCtx, dst: *mut c_void, dst_cap: usize, src: *const c_void, src_size: usize, level: c_int) -> usize;
    fn ZSTD_createDCtx() -> *mut ZSTD_DCtx;
    fn ZSTD_freeDCtx(d: *mut ZSTD_DCtx) -> usize;
    fn ZSTD_decompressDCtx(d: *mut ZSTD_DCtx, dst: *mut c_void, dst_cap: usize, src: *const c_void, src_size: usize) -> usize;
}

fn err_name(code: usize) -> String {
    unsafe { std::ffi::CStr::from_ptr(ZSTD_getErrorName(code)).to_string_lossy().into_owned() }
}

struct Ctx(*mut ZSTD_CCtx, *mut ZSTD_DCtx);
impl Drop for Ctx {
    fn drop(&mut self) {
        unsafe {
            ZSTD_freeCCtx(self.0);
            ZSTD_freeDCtx(self.1);
        }
    }
}
thread_local! {
    // One context pair per thread (JS thread and each pool thread); reuse matters for speed.
    static CTX: Ctx = unsafe { Ctx(ZSTD_createCCtx(), ZSTD_createDCtx()) };
}

pub fn version() -> String {
    unsafe { std::ffi::CStr::from_ptr(ZSTD_versionString()).to_string_lossy().into_owned() }
}

/// Compress `src` into `dst`; `Ok(None)` when the result does not fit in `dst`.
pub fn compress_into(src: &[u8], dst: &mut [u8], level: i32) -> Result<Option<usize>, String> {
    CTX.with(|c| unsafe {
        let n = ZSTD_compressCCtx(c.0, dst.as_mut_ptr() as _, dst.len(), src.as_ptr() as _, src.len(), level);
        if ZSTD_isError(n) != 0 {
            let name = err_name(n);
            if name.contains("too small") {
                return Ok(None);
            }
            return Err(format!("zstd compress: {}", name));
        }
        Ok(Some(n))
    })
}

/// Decompress into `dst` (at most `dst.len()` bytes); returns the decoded length. Data that
/// decodes to more than `dst` holds is an error, never a partial result.
pub fn decompress_into(src: &[u8], dst: &mut [u8]) -> Result<usize, String> {
    declared_size(src, dst.len())?;
    unsafe { decompress_raw(src, dst.as_mut_ptr(), dst.len(), dst.len()) }
}

/// Decompress one or more frames, refusing output larger than `limit` bytes.
pub fn decompress_limited(src: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    // Unknown size (streamed frames, as PBS 3.x wrote): decode into `limit` bytes of
    // capacity; untouched capacity costs no memory.
    let cap = declared_size(src, limit)?.unwrap_or(limit);
    let mut dst: Vec<u8> = Vec::with_capacity(cap.max(1));
    let n = unsafe { decompress_raw(src, dst.as_mut_ptr(), cap, limit)? };
    unsafe { dst.set_len(n) };
    Ok(dst)
}

/// The frame's declared content size (None: not declared), refused above `limit`.
fn declared_size(src: &[u8], limit: usize) -> Result<Option<usize>, String> {
    let declared = unsafe { ZSTD_getFrameContentSize(src.as_ptr() as _, src.len()) };
    if declared == ZSTD_CONTENTSIZE_ERROR {
        return Err("zstd: not a valid zstd frame".into());
    }
    if declared == ZSTD_CONTENTSIZE_UNKNOWN {
        return Ok(None);
    }
    if declared > limit as u64 {
        return Err(format!("zstd: frame declares {} bytes, more than the limit of {}", declared, limit));
    }
    Ok(Some(declared as usize))
}

/// Decompress into `cap` writable bytes at `dst`; `limit` is the bound named in the error.
unsafe fn decompress_raw(src: &[u8], dst: *mut u8, cap: usize, limit: usize) -> Result<usize, String> {
    CTX.with(|c| {
        let n = ZSTD_decompressDCtx(c.1, dst as _, cap, src.as_ptr() as _, src.len());
        if ZSTD_isError(n) != 0 {
            let name = err_name(n);
            if name.contains("too small") {
                return Err(format!("zstd: decompressed data exceeds the limit of {} bytes", limit));
            }
            return Err(format!("zstd decompress: {}", name));
        }
        Ok(n)
    })
}
