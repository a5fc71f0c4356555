//! Access-time marks for many files in one job: the chunk store's GC mark ("touch") for reused
//! chunks and its dedup check during a backup. The modification time is kept (UTIME_OMIT);
//! symbolic links are not followed.
use super::sys::*;
use std::ffi::CString;

/// The file is there but empty (only reported with `non_empty_only`; it is not touched).
pub const TOUCH_EMPTY: i32 = 1;

/// Set the atime of every path to now. Per path: 0 (touched), `TOUCH_EMPTY`, or `-errno`
/// (ENOENT/ENOTDIR: missing). With `non_empty_only` a path must be a non-empty regular file
/// (EINVAL for anything else) to be touched.
pub fn touch_files(paths: &[CString], non_empty_only: bool) -> Vec<i32> {
    let times = [Timespec { tv_sec: 0, tv_nsec: UTIME_NOW }, Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT }];
    paths
        .iter()
        .map(|p| {
            if non_empty_only {
                match fstatat(AT_FDCWD, p, AT_SYMLINK_NOFOLLOW) {
                    Err(e) => return -e,
                    Ok(st) if st.st_mode & S_IFMT != S_IFREG => return -EINVAL,
                    Ok(st) if st.st_size == 0 => return TOUCH_EMPTY,
                    Ok(_) => {}
                }
            }
            match utimens(p, &times, true) {
                Ok(()) => 0,
                Err(e) => -e,
            }
        })
        .collect()
}

/// The chunk files of `digests` (32 bytes each) in a chunk directory (`<dir>/<hhhh>/<hex>`),
/// for `touch_files`.
pub fn chunk_paths(dir: &[u8], digests: &[u8]) -> Result<Vec<CString>, String> {
    if digests.len() % 32 != 0 {
        return Err(format!("digests: {} bytes is not a whole number of 32-byte digests", digests.len()));
    }
    digests
        .chunks_exact(32)
        .map(|d| CString::new(crate::store::chunk_file(dir, d)).map_err(|_| "chunk directory contains NUL".to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touches_atime_only() {
        let dir = crate::fs::testing::fresh_dir("touch");
        std::fs::write(dir.join("a"), b"data").unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
        let c = |n: &str| CString::new(dir.join(n).to_str().unwrap()).unwrap();
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let f = std::fs::File::options().write(true).open(dir.join("a")).unwrap();
        f.set_times(std::fs::FileTimes::new().set_accessed(old).set_modified(old)).unwrap();
        drop(f);
        let st = touch_files(&[c("a"), c("empty"), c("missing")], true);
        assert_eq!(st, vec![0, TOUCH_EMPTY, -ENOENT]);
        let m = std::fs::metadata(dir.join("a")).unwrap();
        assert_eq!(m.modified().unwrap(), old);
        assert!(m.accessed().unwrap() > old);
        assert_eq!(touch_files(&[c("empty")], false), vec![0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn chunk_paths_name_prefix_dirs() {
        let mut d = [0u8; 64];
        d[0] = 0xab;
        d[1] = 0xcd;
        d[32] = 0x01;
        let p = chunk_paths(b"/s/.chunks", &d).unwrap();
        assert_eq!(p[0].to_bytes(), format!("/s/.chunks/abcd/abcd{}", "00".repeat(30)).as_bytes());
        assert_eq!(p[1].to_bytes(), format!("/s/.chunks/0100/0100{}", "00".repeat(30)).as_bytes());
        assert!(chunk_paths(b"/s", &d[..33]).is_err());
    }
}
