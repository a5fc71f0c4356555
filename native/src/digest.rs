//! SHA-256 through OpenSSL's EVP interface. The symbols are not linked at build time:
//! node exports its OpenSSL (`nm -D node | grep EVP_`) and resolves them when it loads the
//! addon. Unit tests link the system libcrypto instead.
use std::os::raw::{c_int, c_uint, c_void};
use std::sync::OnceLock;

#[repr(C)]
pub struct EVP_MD { _p: [u8; 0] }
#[repr(C)]
pub struct EVP_MD_CTX { _p: [u8; 0] }

#[cfg_attr(test, link(name = "libcrypto.so.3", kind = "dylib", modifiers = "+verbatim"))]
extern "C" {
    fn EVP_MD_fetch(ctx: *mut c_void, algorithm: *const u8, properties: *const u8) -> *mut EVP_MD;
    fn EVP_Digest(data: *const c_void, count: usize, md: *mut u8, size: *mut c_uint, ty: *const EVP_MD, engine: *mut c_void) -> c_int;
    fn EVP_MD_CTX_new() -> *mut EVP_MD_CTX;
    fn EVP_MD_CTX_free(ctx: *mut EVP_MD_CTX);
    fn EVP_DigestInit_ex(ctx: *mut EVP_MD_CTX, ty: *const EVP_MD, engine: *mut c_void) -> c_int;
    fn EVP_DigestUpdate(ctx: *mut EVP_MD_CTX, d: *const c_void, cnt: usize) -> c_int;
    fn EVP_DigestFinal_ex(ctx: *mut EVP_MD_CTX, md: *mut u8, s: *mut c_uint) -> c_int;
}

struct Md(*mut EVP_MD);
unsafe impl Send for Md {}
unsafe impl Sync for Md {}

/// The SHA-256 implementation, fetched once (explicit fetch avoids a per-call lookup).
fn sha256_md() -> *const EVP_MD {
    static MD: OnceLock<Md> = OnceLock::new();
    MD.get_or_init(|| Md(unsafe { EVP_MD_fetch(std::ptr::null_mut(), b"SHA256\0".as_ptr(), std::ptr::null()) })).0
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut n: c_uint = 0;
    let ok = unsafe { EVP_Digest(data.as_ptr() as *const c_void, data.len(), out.as_mut_ptr(), &mut n, sha256_md(), std::ptr::null_mut()) };
    assert!(ok == 1 && n == 32, "EVP_Digest(SHA256) failed");
    out
}

/// Incremental SHA-256 (index checksums, keyed digests).
pub struct Sha256 { ctx: *mut EVP_MD_CTX }
unsafe impl Send for Sha256 {}

impl Sha256 {
    pub fn new() -> Sha256 {
        unsafe {
            let ctx = EVP_MD_CTX_new();
            assert!(!ctx.is_null() && EVP_DigestInit_ex(ctx, sha256_md(), std::ptr::null_mut()) == 1, "EVP_DigestInit_ex failed");
            Sha256 { ctx }
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        unsafe { assert!(EVP_DigestUpdate(self.ctx, data.as_ptr() as *const c_void, data.len()) == 1) }
    }
    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut n: c_uint = 0;
        unsafe { assert!(EVP_DigestFinal_ex(self.ctx, out.as_mut_ptr(), &mut n) == 1 && n == 32) }
        out
    }
}

impl Drop for Sha256 {
    fn drop(&mut self) { unsafe { EVP_MD_CTX_free(self.ctx) } }
}

impl Default for Sha256 {
    fn default() -> Self { Self::new() }
}

/// Lower-case hex of bytes (a digest's usual spelling, e.g. its chunk file name).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{:02x}", x)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hello_world() {
        let d = super::sha256(b"hello world");
        let hex: String = d.iter().map(|b| format!("{:02x}", b)).collect();
        assert_eq!(hex, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
    }
}
