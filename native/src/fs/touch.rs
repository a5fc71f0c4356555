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
}
