//! File-system mechanisms for backup and restore (x86_64 Linux, glibc; no crates).
//!
//! * [`dir`]: per-directory batch listing (`readDir`) and root stat (`statPath`) for the walk.
//! * [`walk`]: the backup walk's listings in DFS preorder, ahead of the encoder, on threads of its own.
//! * [`held`]: descriptors the walk opened, kept for the file's read (one open per file).
//! * [`read`]: batch exact-size reads of small files (`readFilesExact`) + bytes-read counter.
//! * [`restore`]: mknod, lchown, utimensat (ns), xattrs by path, chattr flags, project id.
//! * [`write`]: batch restore of small regular files (`writeFilesBatch`) and `syncfs`.
//! * [`touch`]: atime marks for many files in one job (chunk store: GC marks, dedup checks).
//! * [`error`]: errno-carrying errors; [`sys`]: the hand-declared libc/syscall layer.
//!
//! Policy (excludes, xattr name filters, ACL interpretation, what to archive) lives in TS.
//! Paths and names are raw bytes end to end (non-UTF-8 names work); nothing here touches JS.
pub mod dir;
pub mod error;
pub mod held;
pub mod read;
pub mod restore;
pub mod sys;
pub mod touch;
pub mod unchanged;
pub mod walk;
pub mod write;

use std::ffi::CString;

/// A path or name argument as a C string; a NUL byte inside it is refused.
pub fn c_path(bytes: &[u8], what: &str) -> Result<CString, String> {
    if bytes.is_empty() {
        return Err(format!("{} is empty", what));
    }
    CString::new(bytes).map_err(|_| format!("{} contains a NUL byte", what))
}

/// Helpers of the unit tests in this module's files.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;

    /// A fresh, empty directory for test `name` (per process; removed first if left over).
    pub fn fresh_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pxb-fs-{}-{}", name, std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }
}
