//! Per-directory batch listing for the backup walk (`readDir`) and the single-path variant
//! for the backup root (`statPath`). Mechanism only: no excludes, no filtering of xattr names.
//!
//! Invariants (the TS decoder in ts/native/fs.ts relies on them):
//! * `.` and `..` are never listed; entries are sorted by raw byte-wise name comparison
//!   (memcmp order, as PBS sorts its file list).
//! * Every entry is `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`ed. A failed stat (ENOENT: the
//!   entry vanished after getdents) is recorded in the entry's `status` field; it never fails
//!   the whole directory.
//! * Only regular files and directories are opened (O_RDONLY|O_NOFOLLOW|O_NONBLOCK|O_NOATIME,
//!   NOATIME dropped on EPERM) to read xattrs, chattr flags, FAT attributes and the quota
//!   project id; every other kind gets none of these, matching PBS's O_PATH behaviour.
//!   Symlinks get their target (readlinkat). An unexpected errno from one of these reads is
//!   recorded as (metaOp, metaErrno) and stops the metadata reads for that entry.
//! * "Unsupported" errnos (ENOTTY, ENOSYS, EBADF, EOPNOTSUPP, EINVAL) for flags/FAT/projid and
//!   EOPNOTSUPP for the xattr list mean "none", as in PBS. An xattr removed between list and
//!   get (ENODATA) is skipped.
//!
//! Output layout (one little-endian byte string, copied into one ArrayBuffer):
//! ```text
//! f64 header[4]        count, fsMagic (statfs f_type of the directory / path), LAYOUT_VERSION, FIELDS
//! f64 nums[count][FIELDS]   see the F_* indices
//! u64 ids[count][2]    st_dev, st_ino
//! u32 offs[count][4]   nameOff, nameLen, targetLen, xattrLen (offsets into `bytes`)
//! pad to 8 bytes
//! u8  bytes[]          per entry, contiguous: name, symlink target, xattr records
//!                      (u32 nameLen, u32 valueLen, name, value)*
//! ```
use super::error::FsError;
use super::sys::*;
use std::ffi::CStr;
use std::os::raw::{c_int, c_long, c_void};

/// Which fd-based metadata to read for regular files and directories. Each flag governs its
/// own class of xattr names: `acls` the `system.posix_acl_access|default` values, `fcaps`
/// `security.capability`, `xattrs` every other name (all namespaces, unfiltered).
#[derive(Clone, Copy, Default, Debug)]
pub struct MetaOpts {
    pub xattrs: bool,
    pub acls: bool,
    pub fcaps: bool,
    pub flags: bool,
    pub projid: bool,
}

impl MetaOpts {
    fn lists_xattrs(&self) -> bool {
        self.xattrs || self.acls || self.fcaps
    }
    fn any(&self) -> bool {
        self.lists_xattrs() || self.flags || self.projid
    }
    fn wants(&self, name: &[u8]) -> bool {
        match name {
            b"system.posix_acl_access" | b"system.posix_acl_default" => self.acls,
            b"security.capability" => self.fcaps,
            _ => self.xattrs,
        }
    }
}

pub const LAYOUT_VERSION: f64 = 1.0;
pub const F_STATUS: usize = 0;
pub const F_MODE: usize = 1;
pub const F_UID: usize = 2;
pub const F_GID: usize = 3;
pub const F_SIZE: usize = 4;
pub const F_MTIME_SEC: usize = 5;
pub const F_MTIME_NSEC: usize = 6;
pub const F_CTIME_SEC: usize = 7;
pub const F_CTIME_NSEC: usize = 8;
pub const F_NLINK: usize = 9;
pub const F_RDEV_MAJOR: usize = 10;
pub const F_RDEV_MINOR: usize = 11;
pub const F_FLAGS: usize = 12;
pub const F_FAT_ATTRS: usize = 13;
pub const F_PROJID: usize = 14;
pub const F_META_OP: usize = 15;
pub const F_META_ERRNO: usize = 16;
pub const F_XATTR_COUNT: usize = 17;
pub const FIELDS: usize = 18;

/// Values of the `metaOp` field (index = code); ts/native/fs.ts has the same list.
pub const META_OPS: [&str; 8] = [
    "",
    "open",
    "readlinkat",
    "flistxattr",
    "fgetxattr",
    "ioctl(FS_IOC_GETFLAGS)",
    "ioctl(FAT_IOCTL_GET_ATTRIBUTES)",
    "ioctl(FS_IOC_FSGETXATTR)",
];
const OP_OPEN: usize = 1;
const OP_READLINK: usize = 2;
const OP_LISTXATTR: usize = 3;
const OP_GETXATTR: usize = 4;
const OP_GETFLAGS: usize = 5;
const OP_FATATTR: usize = 6;
const OP_FSGETXATTR: usize = 7;

struct Builder {
    nums: Vec<f64>,
    ids: Vec<u64>,
    offs: Vec<u32>,
    bytes: Vec<u8>,
    list_buf: Vec<u8>,
    val_buf: Vec<u8>,
}

type MetaErr = (usize, c_int);

impl Builder {
    fn new() -> Self {
        Builder { nums: Vec::new(), ids: Vec::new(), offs: Vec::new(), bytes: Vec::new(), list_buf: Vec::new(), val_buf: Vec::new() }
    }

    fn count(&self) -> usize {
        self.ids.len() / 2
    }

    fn name(&self, i: usize) -> &[u8] {
        let (off, len) = (self.offs[i * 4] as usize, self.offs[i * 4 + 1] as usize);
        &self.bytes[off..off + len]
    }

    /// Stat one entry of `dirfd` and read what `opts` asks for; appends one record.
    fn collect(&mut self, dirfd: c_int, name: &CStr, opts: &MetaOpts, magic: i64) {
        let i = self.count();
        self.offs.extend_from_slice(&[self.bytes.len() as u32, name.to_bytes().len() as u32, 0, 0]);
        self.bytes.extend_from_slice(name.to_bytes());
        self.ids.extend_from_slice(&[0, 0]);
        let base = self.nums.len();
        self.nums.resize(base + FIELDS, 0.0);
        let st = match fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(e) => {
                self.nums[base + F_STATUS] = e as f64;
                return;
            }
        };
        let n = &mut self.nums[base..base + FIELDS];
        n[F_MODE] = st.st_mode as f64;
        n[F_UID] = st.st_uid as f64;
        n[F_GID] = st.st_gid as f64;
        n[F_SIZE] = st.st_size as f64;
        n[F_MTIME_SEC] = st.st_mtime as f64;
        n[F_MTIME_NSEC] = st.st_mtime_nsec as f64;
        n[F_CTIME_SEC] = st.st_ctime as f64;
        n[F_CTIME_NSEC] = st.st_ctime_nsec as f64;
        n[F_NLINK] = st.st_nlink as f64;
        n[F_RDEV_MAJOR] = major(st.st_rdev) as f64;
        n[F_RDEV_MINOR] = minor(st.st_rdev) as f64;
        self.ids[i * 2] = st.st_dev;
        self.ids[i * 2 + 1] = st.st_ino;

        let fmt = st.st_mode & S_IFMT;
        let res = if fmt == S_IFLNK {
            self.read_link(i, dirfd, name, st.st_size.max(0) as usize)
        } else if (fmt == S_IFREG || fmt == S_IFDIR) && opts.any() {
            match open_at(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | O_NOATIME) {
                Ok(fd) => self.read_meta(i, base, &fd, opts, magic),
                Err(e) => Err((OP_OPEN, e)),
            }
        } else {
            Ok(())
        };
        if let Err((op, e)) = res {
            self.nums[base + F_META_OP] = op as f64;
            self.nums[base + F_META_ERRNO] = e as f64;
        }
    }

    fn read_link(&mut self, i: usize, dirfd: c_int, name: &CStr, hint: usize) -> Result<(), MetaErr> {
        let target = readlink_at(dirfd, name, hint).map_err(|e| (OP_READLINK, e))?;
        self.bytes.extend_from_slice(&target);
        self.offs[i * 4 + 2] = target.len() as u32;
        Ok(())
    }

    fn read_meta(&mut self, i: usize, base: usize, fd: &Fd, opts: &MetaOpts, magic: i64) -> Result<(), MetaErr> {
        if opts.lists_xattrs() {
            let start = self.bytes.len();
            let count = self.read_xattrs(fd, opts)?;
            self.offs[i * 4 + 3] = (self.bytes.len() - start) as u32;
            self.nums[base + F_XATTR_COUNT] = count as f64;
        }
        if opts.flags {
            let mut v: c_long = 0;
            match unsafe { ioctl_ptr(fd, FS_IOC_GETFLAGS, &mut v as *mut c_long as *mut c_void) } {
                Ok(()) => self.nums[base + F_FLAGS] = (v as u32) as f64,
                Err(e) if is_unsupported(e) => {}
                Err(e) => return Err((OP_GETFLAGS, e)),
            }
            if magic == MSDOS_SUPER_MAGIC || magic == FUSE_SUPER_MAGIC {
                let mut a: u32 = 0;
                match unsafe { ioctl_ptr(fd, FAT_IOCTL_GET_ATTRIBUTES, &mut a as *mut u32 as *mut c_void) } {
                    Ok(()) => self.nums[base + F_FAT_ATTRS] = a as f64,
                    Err(e) if is_unsupported(e) => {}
                    Err(e) => return Err((OP_FATATTR, e)),
                }
            }
        }
        if opts.projid {
            // struct fsxattr: xflags, extsize, nextents, projid, cowextsize (u32 each), pad[8]
            let mut fsx = [0u32; 7];
            match unsafe { ioctl_ptr(fd, FS_IOC_FSGETXATTR, fsx.as_mut_ptr() as *mut c_void) } {
                Ok(()) => self.nums[base + F_PROJID] = fsx[3] as f64,
                Err(e) if is_unsupported(e) => {}
                Err(e) => return Err((OP_FSGETXATTR, e)),
            }
        }
        Ok(())
    }

    /// Append the wanted xattrs as records, in flistxattr order; returns how many.
    fn read_xattrs(&mut self, fd: &Fd, opts: &MetaOpts) -> Result<usize, MetaErr> {
        let mut list = std::mem::take(&mut self.list_buf);
        let mut val = std::mem::take(&mut self.val_buf);
        let res = (|| {
            let names = match list_xattrs(XTarget::Fd(fd), &mut list) {
                Ok(names) => names,
                Err(EOPNOTSUPP) => return Ok(0),
                Err(e) => return Err((OP_LISTXATTR, e)),
            };
            let mut count = 0;
            for name in names.split_inclusive(|&b| b == 0) {
                let cname = match CStr::from_bytes_with_nul(name) {
                    Ok(c) if !c.to_bytes().is_empty() => c,
                    _ => continue, // a trailing fragment without NUL: not a name
                };
                if !opts.wants(cname.to_bytes()) {
                    continue;
                }
                let value = match get_xattr(XTarget::Fd(fd), cname, &mut val) {
                    Ok(v) => v,
                    Err(ENODATA) | Err(EOPNOTSUPP) => continue,
                    Err(e) => return Err((OP_GETXATTR, e)),
                };
                let nb = cname.to_bytes();
                self.bytes.extend_from_slice(&(nb.len() as u32).to_le_bytes());
                self.bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
                self.bytes.extend_from_slice(nb);
                self.bytes.extend_from_slice(value);
                count += 1;
            }
            Ok(count)
        })();
        self.list_buf = list;
        self.val_buf = val;
        res
    }

    /// Serialize in `perm` order (see the layout in the module doc).
    fn finish(&self, perm: &[u32], magic: i64) -> Result<Vec<u8>, String> {
        if self.bytes.len() > u32::MAX as usize {
            return Err(format!("directory listing too large ({} bytes of names and xattrs)", self.bytes.len()));
        }
        let n = perm.len();
        let mut out = Vec::with_capacity(32 + n * (FIELDS * 8 + 16 + 16) + self.bytes.len() + 8);
        for h in [n as f64, magic as f64, LAYOUT_VERSION, FIELDS as f64] {
            out.extend_from_slice(&h.to_le_bytes());
        }
        for &p in perm {
            let p = p as usize;
            for x in &self.nums[p * FIELDS..(p + 1) * FIELDS] {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        for &p in perm {
            let p = p as usize;
            out.extend_from_slice(&self.ids[p * 2].to_le_bytes());
            out.extend_from_slice(&self.ids[p * 2 + 1].to_le_bytes());
        }
        for &p in perm {
            for x in &self.offs[p as usize * 4..p as usize * 4 + 4] {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out.resize((out.len() + 7) & !7, 0);
        out.extend_from_slice(&self.bytes);
        Ok(out)
    }
}

fn err(e: c_int, syscall: &'static str, path: &CStr) -> FsError {
    FsError::new(e, syscall, path.to_bytes())
}

/// List one directory (see the module doc). Errors only for the directory itself.
pub fn read_dir(path: &CStr, opts: &MetaOpts) -> Result<Vec<u8>, FsError> {
    let dir = open_at(AT_FDCWD, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOATIME)
        .map_err(|e| err(e, "opendir", path))?;
    let magic = fs_magic(&dir).map_err(|e| err(e, "fstatfs", path))?;
    let mut b = Builder::new();
    let mut buf = vec![0u64; 8192]; // 64 KiB, 8-aligned for the dirent64 records
    loop {
        let bytes = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, buf.len() * 8) };
        let filled = getdents64(&dir, bytes).map_err(|e| err(e, "readdir", path))?;
        if filled == 0 {
            break;
        }
        let mut off = 0;
        while off + 19 < filled {
            // struct linux_dirent64: u64 d_ino, i64 d_off, u16 d_reclen, u8 d_type, char d_name[]
            let reclen = u16::from_ne_bytes([bytes[off + 16], bytes[off + 17]]) as usize;
            if reclen == 0 || off + reclen > filled {
                break;
            }
            let name = CStr::from_bytes_until_nul(&bytes[off + 19..off + reclen]).map_err(|_| FsError {
                detail: Some("malformed directory record".into()),
                ..err(5, "readdir", path)
            })?;
            let nb = name.to_bytes();
            if nb != b"." && nb != b".." {
                b.collect(dir.0, name, opts, magic);
            }
            off += reclen;
        }
    }
    let mut perm: Vec<u32> = (0..b.count() as u32).collect();
    perm.sort_unstable_by(|&x, &y| b.name(x as usize).cmp(b.name(y as usize)));
    b.finish(&perm, magic).map_err(|m| FsError { detail: Some(m), ..err(27, "readdir", path) })
}

/// lstat one path (the backup root) with the same fields and metadata as a `read_dir` entry;
/// the entry's name is the path itself and fsMagic is the file system of the path.
pub fn stat_path(path: &CStr, opts: &MetaOpts) -> Result<Vec<u8>, FsError> {
    let p = open_at(AT_FDCWD, path, O_PATH | O_NOFOLLOW | O_CLOEXEC).map_err(|e| err(e, "lstat", path))?;
    let magic = fs_magic(&p).map_err(|e| err(e, "fstatfs", path))?;
    let mut b = Builder::new();
    b.collect(AT_FDCWD, path, opts, magic);
    let status = b.nums[F_STATUS] as c_int;
    if status != 0 {
        return Err(err(status, "lstat", path));
    }
    b.finish(&[0], magic).map_err(|m| FsError { detail: Some(m), ..err(27, "lstat", path) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn lists_sorted_and_records_vanished_entries() {
        let dir = crate::fs::testing::fresh_dir("dir");
        for n in ["b", "a", "B", "aa"] {
            std::fs::write(dir.join(n), n).unwrap();
        }
        std::os::unix::fs::symlink("target-of-link", dir.join("l")).unwrap();
        let c = CString::new(dir.to_str().unwrap()).unwrap();
        let out = read_dir(&c, &MetaOpts::default()).unwrap();
        let f = |i: usize| f64::from_le_bytes(out[i * 8..i * 8 + 8].try_into().unwrap());
        assert_eq!(f(0), 5.0);
        assert_eq!(f(3), FIELDS as f64);
        let n = 5;
        let offs_at = 32 + n * FIELDS * 8 + n * 16;
        let bytes_at = (offs_at + n * 16 + 7) & !7;
        let u = |i: usize| u32::from_le_bytes(out[offs_at + i * 4..offs_at + i * 4 + 4].try_into().unwrap()) as usize;
        let names: Vec<Vec<u8>> = (0..n).map(|i| out[bytes_at + u(i * 4)..bytes_at + u(i * 4) + u(i * 4 + 1)].to_vec()).collect();
        assert_eq!(names, vec![b"B".to_vec(), b"a".to_vec(), b"aa".to_vec(), b"b".to_vec(), b"l".to_vec()]);
        let t = bytes_at + u(16) + u(17);
        assert_eq!(&out[t..t + u(18)], b"target-of-link");

        // An entry that vanished between getdents and fstatat is recorded, not an error.
        let fd = open_at(AT_FDCWD, &c, O_RDONLY | O_DIRECTORY | O_CLOEXEC).unwrap();
        let mut b = Builder::new();
        b.collect(fd.0, &CString::new("gone").unwrap(), &MetaOpts { xattrs: true, ..Default::default() }, 0);
        b.collect(fd.0, &CString::new("a").unwrap(), &MetaOpts::default(), 0);
        assert_eq!(b.nums[F_STATUS], ENOENT as f64);
        assert_eq!(b.nums[FIELDS + F_STATUS], 0.0);
        assert_eq!(b.nums[FIELDS + F_SIZE], 1.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
