//! Hand-declared glibc / Linux syscall interface for x86_64 (no crates).
//!
//! Only symbols that exist in glibc ≤ 2.17 are linked directly; `fstatat`, `fstat` and `mknodat`
//! became real symbols only in glibc 2.33, so they go through `syscall(2)` with the kernel's
//! x86_64 numbers. `struct stat` below is the kernel's x86_64 layout (identical to glibc's).
//! Every wrapper returns `Err(errno)` on failure and retries `EINTR` where a retry is safe.
#![allow(non_camel_case_types)]
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_long, c_ulong, c_void};

pub const AT_FDCWD: c_int = -100;
pub const AT_SYMLINK_NOFOLLOW: c_int = 0x100;
pub const AT_EMPTY_PATH: c_int = 0x1000;

pub const O_RDONLY: c_int = 0;
pub const O_WRONLY: c_int = 0o1;
pub const O_CREAT: c_int = 0o100;
pub const O_EXCL: c_int = 0o200;
pub const O_TRUNC: c_int = 0o1000;
pub const O_NOCTTY: c_int = 0o400;
pub const O_NONBLOCK: c_int = 0o4000;
pub const O_DIRECTORY: c_int = 0o200000;
pub const O_NOFOLLOW: c_int = 0o400000;
pub const O_NOATIME: c_int = 0o1000000;
pub const O_CLOEXEC: c_int = 0o2000000;
pub const O_PATH: c_int = 0o10000000;

pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

pub const EPERM: c_int = 1;
pub const ENOENT: c_int = 2;
pub const EINTR: c_int = 4;
pub const EIO: c_int = 5;
pub const ENXIO: c_int = 6;
pub const EBADF: c_int = 9;
pub const EEXIST: c_int = 17;
pub const ENOTDIR: c_int = 20;
pub const EISDIR: c_int = 21;
pub const EINVAL: c_int = 22;
pub const ENOTTY: c_int = 25;
pub const ERANGE: c_int = 34;
pub const ENAMETOOLONG: c_int = 36;
pub const ENOSYS: c_int = 38;
pub const ELOOP: c_int = 40;
pub const ENODATA: c_int = 61;
pub const EOPNOTSUPP: c_int = 95;

// ioctl request numbers (x86_64, from <linux/fs.h> and <linux/msdos_fs.h>).
pub const FS_IOC_GETFLAGS: c_ulong = 0x8008_6601;
pub const FS_IOC_SETFLAGS: c_ulong = 0x4008_6602;
pub const FS_IOC_FSGETXATTR: c_ulong = 0x801c_581f;
pub const FS_IOC_FSSETXATTR: c_ulong = 0x401c_5820;
pub const FAT_IOCTL_GET_ATTRIBUTES: c_ulong = 0x8004_7210;

/// statfs f_type values that change what is read (PBS: FAT attributes only here).
pub const MSDOS_SUPER_MAGIC: i64 = 0x4d44;
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

pub const UTIME_NOW: i64 = (1 << 30) - 1;
pub const UTIME_OMIT: i64 = (1 << 30) - 2;

const SYS_FSTAT: c_long = 5;
const SYS_GETDENTS64: c_long = 217;
const SYS_MKNODAT: c_long = 259;
const SYS_NEWFSTATAT: c_long = 262;
const SYS_GETTID: c_long = 186;
const SYS_GETPRIORITY: c_long = 140;
const SYS_SETPRIORITY: c_long = 141;
const PRIO_PROCESS: c_long = 0;

/// Kernel `struct stat` on x86_64 (144 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Stat {
    pub st_dev: u64,
    pub st_ino: u64,
    pub st_nlink: u64,
    pub st_mode: u32,
    pub st_uid: u32,
    pub st_gid: u32,
    pub _pad0: i32,
    pub st_rdev: u64,
    pub st_size: i64,
    pub st_blksize: i64,
    pub st_blocks: i64,
    pub st_atime: i64,
    pub st_atime_nsec: i64,
    pub st_mtime: i64,
    pub st_mtime_nsec: i64,
    pub st_ctime: i64,
    pub st_ctime_nsec: i64,
    pub _reserved: [i64; 3],
}

#[repr(C)]
pub struct Timespec {
    pub tv_sec: i64,
    pub tv_nsec: i64,
}

extern "C" {
    fn __errno_location() -> *mut c_int;
    fn syscall(num: c_long, ...) -> c_long;
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, ...) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn getrlimit(resource: c_int, rlim: *mut [u64; 2]) -> c_int;
    fn flock(fd: c_int, op: c_int) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, count: usize) -> isize;
    fn readlinkat(dirfd: c_int, path: *const c_char, buf: *mut c_char, size: usize) -> isize;
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    fn fstatfs(fd: c_int, buf: *mut c_void) -> c_int;
    fn utimensat(dirfd: c_int, path: *const c_char, times: *const Timespec, flags: c_int) -> c_int;
    fn fchownat(dirfd: c_int, path: *const c_char, uid: u32, gid: u32, flags: c_int) -> c_int;
    fn flistxattr(fd: c_int, list: *mut c_char, size: usize) -> isize;
    fn fgetxattr(fd: c_int, name: *const c_char, value: *mut c_void, size: usize) -> isize;
    fn listxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize;
    fn llistxattr(path: *const c_char, list: *mut c_char, size: usize) -> isize;
    fn getxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: usize) -> isize;
    fn lgetxattr(path: *const c_char, name: *const c_char, value: *mut c_void, size: usize) -> isize;
    fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
    fn pwrite(fd: c_int, buf: *const c_void, count: usize, offset: i64) -> isize;
    fn ftruncate(fd: c_int, length: i64) -> c_int;
    fn fchown(fd: c_int, uid: u32, gid: u32) -> c_int;
    fn fchmod(fd: c_int, mode: u32) -> c_int;
    fn futimens(fd: c_int, times: *const Timespec) -> c_int;
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int;
    fn syncfs(fd: c_int) -> c_int;
    fn fsync(fd: c_int) -> c_int;
    fn sync_file_range(fd: c_int, offset: i64, nbytes: i64, flags: std::os::raw::c_uint) -> c_int;
    fn linkat(olddirfd: c_int, oldpath: *const c_char, newdirfd: c_int, newpath: *const c_char, flags: c_int) -> c_int;
    fn renameat(olddirfd: c_int, oldpath: *const c_char, newdirfd: c_int, newpath: *const c_char) -> c_int;
    fn mkdirat(dirfd: c_int, path: *const c_char, mode: u32) -> c_int;
    fn setxattr(path: *const c_char, name: *const c_char, value: *const c_void, size: usize, flags: c_int) -> c_int;
    fn lsetxattr(path: *const c_char, name: *const c_char, value: *const c_void, size: usize, flags: c_int) -> c_int;
}

pub fn errno() -> c_int {
    unsafe { *__errno_location() }
}

pub const LOCK_SH: c_int = 1;
pub const LOCK_EX: c_int = 2;
const LOCK_NB: c_int = 4;
const EWOULDBLOCK: c_int = 11;

/// `flock(fd, op)`, never blocking: `Ok(false)` when another holder conflicts (EWOULDBLOCK).
pub fn flock_nb(fd: c_int, op: c_int) -> Result<bool, c_int> {
    loop {
        if unsafe { flock(fd, op | LOCK_NB) } == 0 {
            return Ok(true);
        }
        match errno() {
            EINTR => continue,
            EWOULDBLOCK => return Ok(false),
            e => return Err(e),
        }
    }
}

/// `ret < 0` → `Err(errno)`, retrying while the call was interrupted.
macro_rules! retry {
    ($e:expr) => {{
        loop {
            let r = $e;
            if r >= 0 {
                break Ok(r);
            }
            let e = errno();
            if e != EINTR {
                break Err(e);
            }
        }
    }};
}

/// An owned file descriptor, closed on drop.
pub struct Fd(pub c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        unsafe { close(self.0) };
    }
}

/// `openat(2)`; with `O_NOATIME` in `flags`, retries without it on `EPERM` (the caller does
/// not own the file and lacks CAP_FOWNER), as PBS does.
pub fn open_at(dirfd: c_int, path: &CStr, flags: c_int) -> Result<Fd, c_int> {
    let mut flags = flags;
    loop {
        match retry!(unsafe { openat(dirfd, path.as_ptr(), flags, 0 as c_int) }) {
            Ok(fd) => return Ok(Fd(fd)),
            Err(EPERM) if flags & O_NOATIME != 0 => flags &= !O_NOATIME,
            Err(e) => return Err(e),
        }
    }
}

/// The kernel refuses path arguments of this many bytes or more (with the NUL: ENAMETOOLONG).
pub const PATH_MAX: usize = 4096;

/// The directory holding `path`'s last component and that component, for paths of any length:
/// (AT_FDCWD, path) when the kernel takes the path whole; else an `O_PATH` descriptor of the
/// parent, opened piecewise (`open_path`). Trailing slashes are not expected.
pub fn parent_of(path: &CStr) -> Result<(Option<Fd>, CString), c_int> {
    let b = path.to_bytes();
    if b.len() < PATH_MAX {
        return Ok((None, path.to_owned()));
    }
    let cut = b.iter().rposition(|&c| c == b'/').ok_or(ENAMETOOLONG)?;
    let parent = CString::new(&b[..cut.max(1)]).map_err(|_| EINVAL)?;
    let name = CString::new(&b[cut + 1..]).map_err(|_| EINVAL)?;
    Ok((Some(open_path(&parent, O_PATH | O_DIRECTORY | O_CLOEXEC)?), name))
}

/// `open_at(AT_FDCWD, path, flags)` for paths of any length. One the kernel refuses whole
/// (PATH_MAX or longer) is opened in pieces cut at slashes: each leading piece as a directory
/// (`O_PATH`, following symlinks as the kernel does inside a path) relative to the previous
/// one, the last with `flags`. That resolves the path as the kernel would (PBS walks with
/// openat and archives such trees too).
pub fn open_path(path: &CStr, flags: c_int) -> Result<Fd, c_int> {
    let mut rest = path.to_bytes();
    if rest.len() < PATH_MAX {
        return open_at(AT_FDCWD, path, flags);
    }
    let mut dir: Option<Fd> = None;
    loop {
        let dirfd = dir.as_ref().map_or(AT_FDCWD, |d| d.0);
        if rest.len() < PATH_MAX {
            return open_at(dirfd, &CString::new(rest).map_err(|_| EINVAL)?, flags);
        }
        let cut = rest[..PATH_MAX - 1].iter().rposition(|&c| c == b'/').ok_or(ENAMETOOLONG)?;
        // an absolute path's first piece may be "/" itself
        let head = CString::new(&rest[..cut.max(1)]).map_err(|_| EINVAL)?;
        dir = Some(open_at(dirfd, &head, O_PATH | O_DIRECTORY | O_CLOEXEC)?);
        rest = &rest[cut + 1..];
        while rest.first() == Some(&b'/') {
            rest = &rest[1..];
        }
        if rest.is_empty() {
            rest = b".";
        }
    }
}

/// `openat(AT_FDCWD, path, flags, mode)` for calls that may create the file (`O_CREAT`).
pub fn open_create(path: &CStr, flags: c_int, mode: u32) -> Result<Fd, c_int> {
    retry!(unsafe { openat(AT_FDCWD, path.as_ptr(), flags, mode as c_int) }).map(Fd)
}

/// The soft RLIMIT_NOFILE (node raises it to the hard limit at start-up); 1024 if unknown.
pub fn nofile_soft_limit() -> u64 {
    const RLIMIT_NOFILE: c_int = 7;
    let mut r = [0u64; 2];
    if unsafe { getrlimit(RLIMIT_NOFILE, &mut r) } == 0 { r[0] } else { 1024 }
}

pub fn fstatat(dirfd: c_int, path: &CStr, flags: c_int) -> Result<Stat, c_int> {
    let mut st = Stat::default();
    retry!(unsafe { syscall(SYS_NEWFSTATAT, dirfd as c_long, path.as_ptr(), &mut st as *mut Stat, flags as c_long) })?;
    Ok(st)
}

pub fn fstat(fd: &Fd) -> Result<Stat, c_int> {
    let mut st = Stat::default();
    retry!(unsafe { syscall(SYS_FSTAT, fd.0 as c_long, &mut st as *mut Stat) })?;
    Ok(st)
}

/// `getdents64(2)` into `buf`; returns the number of bytes filled (0 at the end).
pub fn getdents64(fd: &Fd, buf: &mut [u8]) -> Result<usize, c_int> {
    let n = retry!(unsafe { syscall(SYS_GETDENTS64, fd.0 as c_long, buf.as_mut_ptr(), buf.len() as c_long) })?;
    Ok(n as usize)
}

/// Why `each_dirent` stopped: getdents64 failed (errno), or a record was malformed.
pub enum DirentError {
    Errno(c_int),
    Malformed,
}

/// Call `f` with the name of every entry of the directory `dir` except `.` and `..`, in
/// getdents order; stops at the first error of `f` or of the listing (mapped by `fail`).
pub fn each_dirent<E>(dir: &Fd, fail: impl Fn(DirentError) -> E, mut f: impl FnMut(&CStr) -> Result<(), E>) -> Result<(), E> {
    let mut buf = vec![0u64; 8192]; // 64 KiB, 8-aligned for the dirent64 records
    loop {
        let bytes = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, buf.len() * 8) };
        let filled = getdents64(dir, bytes).map_err(|e| fail(DirentError::Errno(e)))?;
        if filled == 0 {
            return Ok(());
        }
        let mut off = 0;
        while off + 19 < filled {
            // struct linux_dirent64: u64 d_ino, i64 d_off, u16 d_reclen, u8 d_type, char d_name[]
            let reclen = u16::from_ne_bytes([bytes[off + 16], bytes[off + 17]]) as usize;
            if reclen == 0 || off + reclen > filled {
                break;
            }
            let name = CStr::from_bytes_until_nul(&bytes[off + 19..off + reclen]).map_err(|_| fail(DirentError::Malformed))?;
            off += reclen;
            let nb = name.to_bytes();
            if nb != b"." && nb != b".." {
                f(name)?;
            }
        }
    }
}

/// The calling thread's nice value (PRIO_PROCESS of its thread id is that thread alone).
pub fn thread_nice() -> Result<c_int, c_int> {
    let tid = unsafe { syscall(SYS_GETTID) };
    // The raw call returns 20 - nice (1..=40), never a negative success value.
    let r = retry!(unsafe { syscall(SYS_GETPRIORITY, PRIO_PROCESS, tid) })?;
    Ok(20 - r as c_int)
}

/// Set the calling thread's nice value.
pub fn set_thread_nice(nice: c_int) -> Result<(), c_int> {
    let tid = unsafe { syscall(SYS_GETTID) };
    retry!(unsafe { syscall(SYS_SETPRIORITY, PRIO_PROCESS, tid, nice as c_long) }).map(|_| ())
}

pub fn fs_magic(fd: &Fd) -> Result<i64, c_int> {
    // struct statfs is 120 bytes on x86_64; f_type (a long) comes first.
    let mut buf = [0i64; 15];
    retry!(unsafe { fstatfs(fd.0, buf.as_mut_ptr() as *mut c_void) })?;
    Ok(buf[0])
}

/// Read into `buf` until it is full or EOF; returns the bytes read.
pub fn read_full(fd: &Fd, buf: &mut [u8]) -> Result<usize, c_int> {
    let mut got = 0;
    while got < buf.len() {
        let n = retry!(unsafe { read(fd.0, buf[got..].as_mut_ptr() as *mut c_void, buf.len() - got) })?;
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    Ok(got)
}

/// Symlink target, growing the buffer until it fits (`hint` = lstat's st_size).
pub fn readlink_at(dirfd: c_int, path: &CStr, hint: usize) -> Result<Vec<u8>, c_int> {
    let mut cap = (hint + 1).max(64);
    loop {
        let mut buf = vec![0u8; cap];
        let n = retry!(unsafe { readlinkat(dirfd, path.as_ptr(), buf.as_mut_ptr() as *mut c_char, cap) })? as usize;
        if n < cap {
            buf.truncate(n);
            return Ok(buf);
        }
        cap *= 2;
    }
}

/// `ioctl` with a pointer argument.
pub unsafe fn ioctl_ptr(fd: &Fd, req: c_ulong, arg: *mut c_void) -> Result<(), c_int> {
    retry!(ioctl(fd.0, req, arg)).map(|_| ())
}

/// Errnos that mean "this file system / file kind has no such attribute" (PBS ignores these
/// for chattr flags, FAT attributes and the quota project id).
pub fn is_unsupported(e: c_int) -> bool {
    matches!(e, ENOTTY | ENOSYS | EBADF | EOPNOTSUPP | EINVAL)
}

/// glibc `makedev` (spec pxar.md §3.2).
pub fn makedev(major: u32, minor: u32) -> u64 {
    let (ma, mi) = (major as u64, minor as u64);
    ((ma & 0xfff) << 8) | ((ma & 0xffff_f000) << 32) | (mi & 0xff) | ((mi & 0xffff_ff00) << 12)
}

pub fn major(dev: u64) -> u32 {
    (((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000)) as u32
}

pub fn minor(dev: u64) -> u32 {
    ((dev & 0xff) | ((dev >> 12) & 0xffff_ff00)) as u32
}

pub fn mknod_at(path: &CStr, mode: u32, dev: u64) -> Result<(), c_int> {
    retry!(unsafe { syscall(SYS_MKNODAT, AT_FDCWD as c_long, path.as_ptr(), mode as c_long, dev as c_long) }).map(|_| ())
}

pub fn lchown(path: &CStr, uid: u32, gid: u32) -> Result<(), c_int> {
    retry!(unsafe { fchownat(AT_FDCWD, path.as_ptr(), uid, gid, AT_SYMLINK_NOFOLLOW) }).map(|_| ())
}

pub fn utimens(path: &CStr, times: &[Timespec; 2], no_follow: bool) -> Result<(), c_int> {
    let flags = if no_follow { AT_SYMLINK_NOFOLLOW } else { 0 };
    retry!(unsafe { utimensat(AT_FDCWD, path.as_ptr(), times.as_ptr(), flags) }).map(|_| ())
}

/// Target of an xattr call: an open descriptor, or a path (following the last symlink or not).
#[derive(Clone, Copy)]
pub enum XTarget<'a> {
    Fd(&'a Fd),
    Path(&'a CStr, bool /* no_follow */),
}

unsafe fn list_raw(t: XTarget, buf: *mut c_char, size: usize) -> isize {
    match t {
        XTarget::Fd(fd) => flistxattr(fd.0, buf, size),
        XTarget::Path(p, true) => llistxattr(p.as_ptr(), buf, size),
        XTarget::Path(p, false) => listxattr(p.as_ptr(), buf, size),
    }
}

unsafe fn get_raw(t: XTarget, name: &CStr, buf: *mut c_void, size: usize) -> isize {
    match t {
        XTarget::Fd(fd) => fgetxattr(fd.0, name.as_ptr(), buf, size),
        XTarget::Path(p, true) => lgetxattr(p.as_ptr(), name.as_ptr(), buf, size),
        XTarget::Path(p, false) => getxattr(p.as_ptr(), name.as_ptr(), buf, size),
    }
}

/// Size-probing loop shared by list/get: try with `buf`; on ERANGE ask for the size and grow.
fn sized(buf: &mut Vec<u8>, mut call: impl FnMut(&mut Vec<u8>) -> isize) -> Result<usize, c_int> {
    if buf.len() < 256 {
        buf.resize(256, 0);
    }
    loop {
        match retry!(call(buf)) {
            Ok(n) => return Ok(n as usize),
            Err(ERANGE) => {
                let mut empty = Vec::new();
                let need = retry!(call(&mut empty))? as usize;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The NUL-separated name list of `flistxattr`/`llistxattr`/`listxattr`, in kernel order.
/// `buf` is scratch space reused across calls; the result borrows it.
pub fn list_xattrs<'b>(t: XTarget, buf: &'b mut Vec<u8>) -> Result<&'b [u8], c_int> {
    let n = sized(buf, |b| unsafe {
        if b.is_empty() { list_raw(t, std::ptr::null_mut(), 0) } else { list_raw(t, b.as_mut_ptr() as *mut c_char, b.len()) }
    })?;
    Ok(&buf[..n])
}

/// One xattr value into the scratch `buf`; the result borrows it.
pub fn get_xattr<'b>(t: XTarget, name: &CStr, buf: &'b mut Vec<u8>) -> Result<&'b [u8], c_int> {
    let n = sized(buf, |b| unsafe {
        if b.is_empty() { get_raw(t, name, std::ptr::null_mut(), 0) } else { get_raw(t, name, b.as_mut_ptr() as *mut c_void, b.len()) }
    })?;
    Ok(&buf[..n])
}

pub fn set_xattr(path: &CStr, name: &CStr, value: &[u8], no_follow: bool, flags: c_int) -> Result<(), c_int> {
    let v = value.as_ptr() as *const c_void;
    retry!(unsafe {
        if no_follow {
            lsetxattr(path.as_ptr(), name.as_ptr(), v, value.len(), flags)
        } else {
            setxattr(path.as_ptr(), name.as_ptr(), v, value.len(), flags)
        }
    })
    .map(|_| ())
}

// --- writing (restore of regular files) ---------------------------------------------------

/// Close and report the error (EIO, ENOSPC, EDQUOT on NFS or quota-limited file systems).
/// Never retried: Linux releases the descriptor even when close fails.
pub fn close_fd(fd: Fd) -> Result<(), c_int> {
    let raw = fd.0;
    std::mem::forget(fd);
    if unsafe { close(raw) } < 0 {
        return Err(errno());
    }
    Ok(())
}

/// Write all of `buf` at the current offset, looping on short writes.
pub fn write_all(fd: &Fd, buf: &[u8]) -> Result<(), c_int> {
    let mut done = 0;
    while done < buf.len() {
        let n = retry!(unsafe { write(fd.0, buf[done..].as_ptr() as *const c_void, buf.len() - done) })?;
        if n == 0 {
            return Err(EIO);
        }
        done += n as usize;
    }
    Ok(())
}

/// Write all of `buf` at file offset `off`, looping on short writes.
pub fn pwrite_all(fd: &Fd, buf: &[u8], off: u64) -> Result<(), c_int> {
    let mut done = 0;
    while done < buf.len() {
        let at = (off + done as u64) as i64;
        let n = retry!(unsafe { pwrite(fd.0, buf[done..].as_ptr() as *const c_void, buf.len() - done, at) })?;
        if n == 0 {
            return Err(EIO);
        }
        done += n as usize;
    }
    Ok(())
}

pub fn ftruncate_fd(fd: &Fd, len: u64) -> Result<(), c_int> {
    retry!(unsafe { ftruncate(fd.0, len as i64) }).map(|_| ())
}

pub fn fchown_fd(fd: &Fd, uid: u32, gid: u32) -> Result<(), c_int> {
    retry!(unsafe { fchown(fd.0, uid, gid) }).map(|_| ())
}

pub fn fchmod_fd(fd: &Fd, mode: u32) -> Result<(), c_int> {
    retry!(unsafe { fchmod(fd.0, mode) }).map(|_| ())
}

pub fn futimens_fd(fd: &Fd, times: &[Timespec; 2]) -> Result<(), c_int> {
    retry!(unsafe { futimens(fd.0, times.as_ptr()) }).map(|_| ())
}

/// `unlink(2)` of a non-directory (a symlink itself, never its target).
pub fn unlink(path: &CStr) -> Result<(), c_int> {
    retry!(unsafe { unlinkat(AT_FDCWD, path.as_ptr(), 0) }).map(|_| ())
}

/// Flush the whole file system that `fd` lives on (`syncfs(2)`).
pub fn syncfs_fd(fd: &Fd) -> Result<(), c_int> {
    retry!(unsafe { syncfs(fd.0) }).map(|_| ())
}

pub fn fsync_fd(fd: &Fd) -> Result<(), c_int> {
    retry!(unsafe { fsync(fd.0) }).map(|_| ())
}

/// Start writing `fd`'s dirty pages back, without waiting (`sync_file_range(2)`,
/// `SYNC_FILE_RANGE_WRITE`): a later fsync/syncfs then has less left to wait for.
pub fn start_writeback(fd: &Fd) -> Result<(), c_int> {
    const SYNC_FILE_RANGE_WRITE: std::os::raw::c_uint = 2;
    retry!(unsafe { sync_file_range(fd.0, 0, 0, SYNC_FILE_RANGE_WRITE) }).map(|_| ())
}

/// `link(2)` (never replaces an existing `to`: `EEXIST`).
pub fn link(from: &CStr, to: &CStr) -> Result<(), c_int> {
    retry!(unsafe { linkat(AT_FDCWD, from.as_ptr(), AT_FDCWD, to.as_ptr(), 0) }).map(|_| ())
}

/// `rename(2)` (atomically replaces `to`).
pub fn rename(from: &CStr, to: &CStr) -> Result<(), c_int> {
    retry!(unsafe { renameat(AT_FDCWD, from.as_ptr(), AT_FDCWD, to.as_ptr()) }).map(|_| ())
}

pub fn mkdir(path: &CStr, mode: u32) -> Result<(), c_int> {
    retry!(unsafe { mkdirat(AT_FDCWD, path.as_ptr(), mode) }).map(|_| ())
}
