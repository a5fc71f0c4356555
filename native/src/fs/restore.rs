//! Restore-side mechanisms Node lacks: mknod, lchown, nanosecond utimensat (also on symlinks),
//! xattrs by path (with or without following the last symlink), chattr flags and the quota
//! project id. Each call is one syscall or a short fixed sequence; errors carry errno and path.
//!
//! `set_flags`/`set_projid` follow PBS's restore: read the current value, merge, write only if
//! it changes, and treat the "unsupported" errnos (ENOTTY, ENOSYS, EBADF, EOPNOTSUPP, EINVAL)
//! as "this file system has no such attribute" (`Ok(false)`), not as an error. Only regular
//! files and directories carry them; other kinds also give `Ok(false)` (nothing is opened).
use super::error::FsError;
use super::sys::*;
use std::ffi::CStr;
use std::os::raw::{c_int, c_long, c_void};

fn err(e: c_int, syscall: &'static str, path: &CStr) -> FsError {
    FsError::new(e, syscall, path.to_bytes())
}

/// Create a device node, fifo or socket inode. `mode` includes the type bits.
pub fn mknod(path: &CStr, mode: u32, major: u32, minor: u32) -> Result<(), FsError> {
    match mode & S_IFMT {
        S_IFCHR | S_IFBLK | S_IFIFO | S_IFSOCK => {}
        _ => {
            return Err(FsError {
                detail: Some(format!("mode 0o{:o} is not a device, fifo or socket", mode)),
                ..err(EINVAL, "mknod", path)
            })
        }
    }
    // The kernel's dev_t holds a 12-bit major and a 20-bit minor; more would be truncated.
    if major > 0xfff || minor > 0xf_ffff {
        return Err(FsError {
            detail: Some(format!("device {}:{} out of range (major ≤ 4095, minor ≤ 1048575)", major, minor)),
            ..err(EINVAL, "mknod", path)
        });
    }
    mknod_at(path, mode, makedev(major, minor)).map_err(|e| err(e, "mknod", path))
}

/// Change owner without following a final symlink; `u32::MAX` leaves an id unchanged.
pub fn lchown(path: &CStr, uid: u32, gid: u32) -> Result<(), FsError> {
    super::sys::lchown(path, uid, gid).map_err(|e| err(e, "lchown", path))
}

/// Set atime and mtime (seconds, nanoseconds; nsec may be UTIME_OMIT / UTIME_NOW).
pub fn utimens(path: &CStr, atime: (i64, i64), mtime: (i64, i64), no_follow: bool) -> Result<(), FsError> {
    let times = [Timespec { tv_sec: atime.0, tv_nsec: atime.1 }, Timespec { tv_sec: mtime.0, tv_nsec: mtime.1 }];
    super::sys::utimens(path, &times, no_follow).map_err(|e| err(e, "utimensat", path))
}

pub fn setxattr(path: &CStr, name: &CStr, value: &[u8], no_follow: bool, flags: c_int) -> Result<(), FsError> {
    set_xattr(path, name, value, no_follow, flags).map_err(|e| err(e, "setxattr", path))
}

/// One xattr value, `None` when the file has no such attribute (ENODATA).
pub fn getxattr(path: &CStr, name: &CStr, no_follow: bool) -> Result<Option<Vec<u8>>, FsError> {
    let mut buf = Vec::new();
    match get_xattr(XTarget::Path(path, no_follow), name, &mut buf) {
        Ok(v) => Ok(Some(v.to_vec())),
        Err(ENODATA) => Ok(None),
        Err(e) => Err(err(e, "getxattr", path)),
    }
}

/// xattr names in kernel (listxattr) order.
pub fn listxattrs(path: &CStr, no_follow: bool) -> Result<Vec<Vec<u8>>, FsError> {
    let mut buf = Vec::new();
    let names = list_xattrs(XTarget::Path(path, no_follow), &mut buf).map_err(|e| err(e, "listxattr", path))?;
    Ok(names.split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| n.to_vec()).collect())
}

/// Open a regular file or directory for an attribute ioctl; `None` for other kinds.
fn open_for_ioctl(path: &CStr) -> Result<Option<Fd>, FsError> {
    let st = fstatat(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW).map_err(|e| err(e, "lstat", path))?;
    let fmt = st.st_mode & S_IFMT;
    if fmt != S_IFREG && fmt != S_IFDIR {
        return Ok(None);
    }
    let fd = open_at(AT_FDCWD, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC).map_err(|e| err(e, "open", path))?;
    Ok(Some(fd))
}

/// chattr: new = (flags & mask) | (current & !mask), written only when it differs.
/// `Ok(true)`: the flags are in place; `Ok(false)`: not supported here (ignored, as PBS does).
pub fn set_flags(path: &CStr, flags: u32, mask: u32) -> Result<bool, FsError> {
    let fd = match open_for_ioctl(path)? {
        Some(fd) => fd,
        None => return Ok(false),
    };
    let mut cur: c_long = 0;
    match unsafe { ioctl_ptr(&fd, FS_IOC_GETFLAGS, &mut cur as *mut c_long as *mut c_void) } {
        Ok(()) => {}
        Err(e) if is_unsupported(e) => return Ok(false),
        Err(e) => return Err(err(e, "ioctl(FS_IOC_GETFLAGS)", path)),
    }
    let cur32 = cur as u32;
    let mut new: c_long = ((flags & mask) | (cur32 & !mask)) as c_long;
    if new as u32 == cur32 {
        return Ok(true);
    }
    match unsafe { ioctl_ptr(&fd, FS_IOC_SETFLAGS, &mut new as *mut c_long as *mut c_void) } {
        Ok(()) => Ok(true),
        Err(e) if is_unsupported(e) => Ok(false),
        Err(e) => Err(err(e, "ioctl(FS_IOC_SETFLAGS)", path)),
    }
}

/// Set the quota project id (FS_IOC_FSGETXATTR, change fsx_projid, FS_IOC_FSSETXATTR).
/// `Ok(false)` when the file system does not support it.
pub fn set_projid(path: &CStr, projid: u32) -> Result<bool, FsError> {
    let fd = match open_for_ioctl(path)? {
        Some(fd) => fd,
        None => return Ok(false),
    };
    let mut fsx = [0u32; 7];
    match unsafe { ioctl_ptr(&fd, FS_IOC_FSGETXATTR, fsx.as_mut_ptr() as *mut c_void) } {
        Ok(()) => {}
        Err(e) if is_unsupported(e) => return Ok(false),
        Err(e) => return Err(err(e, "ioctl(FS_IOC_FSGETXATTR)", path)),
    }
    if fsx[3] == projid {
        return Ok(true);
    }
    fsx[3] = projid;
    match unsafe { ioctl_ptr(&fd, FS_IOC_FSSETXATTR, fsx.as_mut_ptr() as *mut c_void) } {
        Ok(()) => Ok(true),
        Err(e) if is_unsupported(e) => Ok(false),
        Err(e) => Err(err(e, "ioctl(FS_IOC_FSSETXATTR)", path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn utimens_nanoseconds_and_xattrs() {
        let dir = crate::fs::testing::fresh_dir("restore");
        let f = dir.join("f");
        std::fs::write(&f, b"x").unwrap();
        let p = CString::new(f.to_str().unwrap()).unwrap();
        utimens(&p, (0, UTIME_OMIT), (-1, 999_999_999), true).unwrap();
        let st = fstatat(AT_FDCWD, &p, AT_SYMLINK_NOFOLLOW).unwrap();
        assert_eq!((st.st_mtime, st.st_mtime_nsec), (-1, 999_999_999));
        let name = CString::new("user.pxb").unwrap();
        match setxattr(&p, &name, b"v\0w", true, 0) {
            Ok(()) => {
                assert_eq!(getxattr(&p, &name, true).unwrap(), Some(b"v\0w".to_vec()));
                assert!(listxattrs(&p, true).unwrap().contains(&b"user.pxb".to_vec()));
            }
            Err(e) => assert_eq!(e.errno, EOPNOTSUPP),
        }
        assert_eq!(getxattr(&p, &CString::new("user.none").unwrap(), true).unwrap(), None);
        let e = mknod(&p, S_IFREG | 0o644, 0, 0).unwrap_err();
        assert_eq!(e.errno, EINVAL);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
