//! Batch read of many small files, each into its own slot of one output buffer, with PBS's
//! exact-size semantics: a slot is always exactly the expected size (the size the archiver
//! already recorded from stat). A file that shrank is zero-padded, one that grew is truncated,
//! one that vanished or failed is all zeros and reports an error.
//!
//! Files are opened with O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_NOATIME (NOATIME dropped on EPERM)
//! and must still be regular files. Every byte stored from a file is added to a process-wide
//! counter (`bytes_read`), so tests can assert that an unchanged incremental backup reads
//! nothing.
use super::error::FsError;
use super::sys::*;
use std::ffi::CString;
use std::os::raw::c_int;
use std::sync::atomic::{AtomicU64, Ordering};

pub const READ_OK: i32 = 0;
pub const READ_SHRUNK: i32 = 1;
pub const READ_GREW: i32 = 2;

static BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// Total bytes stored from files by `read_files_exact` in this process.
pub fn bytes_read() -> u64 {
    BYTES_READ.load(Ordering::Relaxed)
}

/// `base/path` for messages (just `path` without a base).
fn shown(base: Option<&CString>, path: &CString) -> Vec<u8> {
    match base {
        Some(b) => [b.as_bytes(), b"/", path.as_bytes()].concat(),
        None => path.as_bytes().to_vec(),
    }
}

/// Open one file (relative to `dirfd`) as the reads do.
fn open_one(dirfd: i32, path: &CString) -> Result<Fd, c_int> {
    let flags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | O_NOATIME;
    // (a whole path may be longer than the kernel takes: opened in pieces)
    if dirfd == AT_FDCWD { open_path(path, flags) } else { open_at(dirfd, path, flags) }
}

/// Read one open file into `slot` (its expected size). Returns READ_OK / READ_SHRUNK /
/// READ_GREW.
fn read_one(fd: Fd, base: Option<&CString>, path: &CString, slot: &mut [u8]) -> Result<i32, FsError> {
    let err = |e, syscall| FsError::new(e, syscall, &shown(base, path));
    let st = fstat(&fd).map_err(|e| err(e, "fstat"))?;
    if st.st_mode & S_IFMT != S_IFREG {
        let is_dir = st.st_mode & S_IFMT == S_IFDIR;
        return Err(FsError { detail: Some("not a regular file".into()), ..err(if is_dir { EISDIR } else { EINVAL }, "open") });
    }
    let got = read_full(&fd, slot).map_err(|e| err(e, "read"))?;
    BYTES_READ.fetch_add(got as u64, Ordering::Relaxed);
    if got < slot.len() {
        slot[got..].fill(0);
        return Ok(READ_SHRUNK);
    }
    // Growth is seen through the current size (no extra read): the slot is full either way.
    Ok(if st.st_size as u64 > slot.len() as u64 { READ_GREW } else { READ_OK })
}

/// Read `paths[i]` into `out[offset_i .. offset_i + sizes[i]]` (slots laid out back to back).
/// With `base`, the paths are names relative to that directory, which is opened once
/// (O_NOFOLLOW: one path walk per batch, and no symlinked parent can redirect the reads).
/// `out.len()` must equal the sum of `sizes`. Returns per-file status (READ_* or `-errno`) and
/// the errors of the failed files as (index, error).
///
/// `held[i]`, when given and not negative, is the token of a descriptor the walk kept open
/// for file i (`held::take`): the file is read through it, not opened again by name (which it
/// is when the token is no longer held). The base directory is opened only for a file that
/// needs it.
pub fn read_files_exact(base: Option<&CString>, paths: &[CString], sizes: &[usize], held: Option<&[f64]>, out: &mut [u8]) -> (Vec<i32>, Vec<(usize, FsError)>) {
    debug_assert_eq!(paths.len(), sizes.len());
    debug_assert!(held.map_or(true, |h| h.len() == paths.len()));
    debug_assert_eq!(out.len(), sizes.iter().sum::<usize>());
    let mut dir: Option<Result<Fd, c_int>> = None;
    let mut held: Vec<Option<Fd>> = held.map_or_else(Vec::new, super::held::take_all);
    let mut status = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    let mut off = 0;
    for (i, (p, &size)) in paths.iter().zip(sizes).enumerate() {
        let slot = &mut out[off..off + size];
        off += size;
        let fd = match held.get_mut(i).and_then(Option::take) {
            Some(fd) => Ok(fd),
            None => {
                let dirfd = match base {
                    None => Ok(AT_FDCWD),
                    Some(b) => match dir.get_or_insert_with(|| open_path(b, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) {
                        Ok(d) => Ok(d.0),
                        Err(e) => Err(*e),
                    },
                };
                dirfd.and_then(|d| open_one(d, p))
            }
        };
        let r = match fd {
            Ok(fd) => read_one(fd, base, p, slot),
            Err(e) => Err(FsError::new(e, "open", &shown(base, p))),
        };
        match r {
            Ok(s) => status.push(s),
            Err(e) => {
                slot.fill(0);
                status.push(-e.errno);
                errors.push((i, e));
            }
        }
    }
    (status, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_sizes() {
        let dir = crate::fs::testing::fresh_dir("read");
        std::fs::write(dir.join("a"), b"hello").unwrap();
        std::fs::write(dir.join("b"), b"hi").unwrap();
        let p = |n: &str| CString::new(dir.join(n).to_str().unwrap()).unwrap();
        let paths = [p("a"), p("b"), p("missing"), p("a")];
        let sizes = [5, 4, 3, 2];
        let mut out = vec![0xaau8; 14];
        let before = bytes_read();
        let (st, errs) = read_files_exact(None, &paths, &sizes, None, &mut out);
        assert_eq!(st, vec![READ_OK, READ_SHRUNK, -ENOENT, READ_GREW]);
        assert_eq!(&out, b"hellohi\0\0\0\0\0he");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].0, 2);
        assert!(bytes_read() - before >= 9);

        // Relative to a base directory: same results; a missing base fails every file.
        let base = CString::new(dir.to_str().unwrap()).unwrap();
        let names = [CString::new("a").unwrap(), CString::new("missing").unwrap()];
        let mut out = vec![0xaau8; 8];
        let (st, errs) = read_files_exact(Some(&base), &names, &[5, 3], None, &mut out);
        assert_eq!(st, vec![READ_OK, -ENOENT]);
        assert_eq!(&out, b"hello\0\0\0");
        assert_eq!(errs[0].1.path, [dir.to_str().unwrap().as_bytes(), b"/missing"].concat());
        let gone = CString::new(dir.join("nope").to_str().unwrap()).unwrap();
        let (st, _) = read_files_exact(Some(&gone), &names, &[5, 3], None, &mut out);
        assert_eq!(st, vec![-ENOENT, -ENOENT]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
