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
//!   recorded as (metaOp, metaErrno) and stops the metadata reads for that entry. With
//!   `MetaOpts::hold` (the walk of a backup without a previous archive), a non-empty regular
//!   file's descriptor is kept for the read of its contents (`held`; token in the `fd` field).
//! * "Unsupported" errnos (ENOTTY, ENOSYS, EBADF, EOPNOTSUPP, EINVAL) for flags/FAT/projid and
//!   EOPNOTSUPP for the xattr list mean "none", as in PBS. An xattr removed between list and
//!   get (ENODATA) is skipped.
//!
//! * Metadata cache (`MetaOpts::unchanged`): a regular file or directory on a file system whose
//!   ctime changes with every xattr, ACL, chattr and project-id change (ext2/3/4, XFS, btrfs,
//!   tmpfs) whose (path hash, inode, ctime) is in the caller's table is not opened: its
//!   `metaSkipped` field is 1 and the caller takes those fields from where it recorded them.
//!   A record's fourth word (the caller's: the file's payload offset in the archive it
//!   describes, u64::MAX for none) is returned in the `prevPayload` field (-1 for none); a
//!   directory's only in its low 32 bits (all ones: none), the high ones hold its archived
//!   entry count (`unchanged::DIR_COUNT_SHIFT`).
//!
//! Output layout (one little-endian byte string, copied into one ArrayBuffer):
//! ```text
//! f64 header[4]        count, fsMagic (statfs f_type of the directory / path), LAYOUT_VERSION, FIELDS
//! f64 nums[count][FIELDS]   see the F_* indices
//! u64 ids[count][4]    st_dev, path hash (`path_hash` of the entry's full path), st_ino,
//!                      ctime in ns (0 if before 1970): the last three are a metadata-cache record
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
    /// Entries whose fd-based metadata is known (see the module doc); None: read everything.
    pub unchanged: Option<UnchangedTable>,
    /// Keep the descriptor a non-empty regular file was opened with for its metadata, held for
    /// this owner (`held`), its token in the `fd` field; None: close it.
    pub hold: Option<u64>,
}

/// A metadata-cache table: records of four u64 (path hash, inode, ctime in ns, the caller's
/// value), sorted (see `sort_table`). Borrowed from a JS buffer that the caller keeps alive
/// for the call.
#[derive(Clone, Copy, Debug)]
pub struct UnchangedTable {
    ptr: *const u64,
    records: usize,
    /// Bucket index (`build_index`), borrowed like the table; `bits` 0: none.
    index: *const u32,
    bits: u32,
}
// The buffer is neither moved nor written while a call that borrows it runs (caller's contract).
unsafe impl Send for UnchangedTable {}
unsafe impl Sync for UnchangedTable {}

impl UnchangedTable {
    /// The table of `records` records at `ptr` (RECORD_WORDS u64 each, sorted), no index.
    pub fn new(ptr: *const u64, records: usize) -> UnchangedTable {
        UnchangedTable { ptr, records, index: std::ptr::null(), bits: 0 }
    }

    fn get(&self, i: usize) -> [u64; RECORD_WORDS] {
        // SAFETY: i < records; the table holds records * RECORD_WORDS u64 (checked when it was borrowed)
        unsafe { *(self.ptr.add(i * RECORD_WORDS) as *const [u64; RECORD_WORDS]) }
    }

    /// A bucket index for a table that serves many lookups (a walk): entry k is the first record
    /// whose hash's top `bits` bits are at least k (2^bits + 1 entries, about one record per
    /// bucket). The lookups of a walk stalled on memory (linux tree, 84k records: ~30 ms of the
    /// walk threads' CPU, perf); through the index a lookup reads one entry of it and about one
    /// record, which `prefetch` can fetch ahead for a whole directory (the index alone saved
    /// little: the binary search's last steps were its misses, as these two are). Empty (bits
    /// 0) for small tables.
    pub fn build_index(&self) -> (Vec<u32>, u32) {
        if self.records < 256 || self.records > u32::MAX as usize {
            return (Vec::new(), 0);
        }
        let bits = (usize::BITS - (self.records - 1).leading_zeros()).min(22);
        let mut index = Vec::with_capacity((1 << bits) + 1);
        let mut r = 0;
        for k in 0..1u64 << bits {
            while r < self.records && self.get(r)[0] >> (64 - bits) < k {
                r += 1;
            }
            index.push(r as u32);
        }
        index.push(self.records as u32);
        (index, bits)
    }

    /// This table, its lookups through `index` (from `build_index`, kept alive and unchanged
    /// as long as the table is used).
    pub fn with_index(self, index: &[u32], bits: u32) -> UnchangedTable {
        if bits == 0 || index.len() != (1 << bits) + 1 {
            return self;
        }
        UnchangedTable { index: index.as_ptr(), bits, ..self }
    }

    /// Start loading into the cache the index entries and the first records of these path
    /// hashes (each `(_, hash)`), so that their lookups find them there (no-op without index).
    pub fn prefetch(&self, hashes: &[(usize, u64)]) {
        if self.bits == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let bucket = |h: u64| (h >> (64 - self.bits)) as usize;
            for &(_, h) in hashes {
                // SAFETY: a prefetch does not fault; the address is within the index anyway
                unsafe { _mm_prefetch::<_MM_HINT_T0>(self.index.add(bucket(h)) as *const i8) };
            }
            for &(_, h) in hashes {
                // SAFETY: bucket < 2^bits (with_index); the record address is checked
                let r = unsafe { *self.index.add(bucket(h)) } as usize;
                if r < self.records {
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(self.ptr.add(r * RECORD_WORDS) as *const i8) };
                }
            }
        }
    }

    /// The fourth word of the record of the entry with path hash `hash` and this lstat, if there
    /// is one (never for a ctime before 1970, which records cannot hold).
    pub fn lookup_stat(&self, hash: u64, st: &Stat) -> Option<u64> {
        match ctime_ns(st) {
            0 => None,
            ctime => self.lookup(hash, st.st_ino, ctime),
        }
    }

    /// The fourth word of the record (hash, ino, ctime, _), if there is one.
    pub fn lookup(&self, hash: u64, ino: u64, ctime: u64) -> Option<u64> {
        let (mut lo, mut hi) = if self.bits == 0 {
            (0, self.records)
        } else {
            let k = (hash >> (64 - self.bits)) as usize;
            // SAFETY: k < 2^bits and the index has 2^bits + 1 entries (with_index)
            unsafe { (*self.index.add(k) as usize, *self.index.add(k + 1) as usize) }
        };
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid)[0] < hash {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        while lo < self.records {
            let r = self.get(lo);
            if r[0] != hash {
                return None;
            }
            if r[1] == ino && r[2] == ctime {
                return Some(r[3]);
            }
            lo += 1;
        }
        None
    }
}

/// u64 words per metadata-cache record.
pub const RECORD_WORDS: usize = 4;

/// Sort metadata-cache records (RECORD_WORDS u64 each) for `UnchangedTable::lookup`.
pub fn sort_table(records: &mut [u64]) {
    let n = records.len() / RECORD_WORDS;
    // SAFETY: [u64; RECORD_WORDS] has the layout of consecutive u64
    let recs = unsafe { std::slice::from_raw_parts_mut(records.as_mut_ptr() as *mut [u64; RECORD_WORDS], n) };
    recs.sort_unstable();
}

/// File systems on which every change of xattrs, ACLs, chattr flags or the project id also
/// changes the inode's ctime, and ctime has nanoseconds (FAT, FUSE, network file systems: not).
pub(crate) fn ctime_tracks_metadata(magic: i64) -> bool {
    matches!(magic, 0xEF53 | 0x5846_5342 | 0x9123_683E | 0x0102_1994)
}

/// An inode's ctime in ns since the epoch as metadata-cache records hold it (0: before 1970).
pub(crate) fn ctime_ns(st: &Stat) -> u64 {
    if st.st_ctime >= 0 { (st.st_ctime as u64).saturating_mul(1_000_000_000).saturating_add(st.st_ctime_nsec as u64) } else { 0 }
}

/// Open a directory to list it (not following a symlink, not touching its atime).
pub(crate) fn open_dir(path: &CStr) -> Result<Fd, c_int> {
    open_path(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOATIME)
}

/// FNV-1a, 64 bit: the path hash of the metadata cache (a collision can only pair entries that
/// also have the same inode and ctime, i.e. names of one inode, whose metadata is the same).
pub fn path_hash(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
pub const PATH_HASH_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// Hash state after `dir` and the separator its entries' paths have ("/a" + "/" + name, "/" + name).
pub(crate) fn dir_hash(dir: &[u8]) -> u64 {
    let h = path_hash(PATH_HASH_INIT, dir);
    if dir.last() == Some(&b'/') { h } else { path_hash(h, b"/") }
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

pub const LAYOUT_VERSION: f64 = 4.0;
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
/// 1 when the fd-based metadata was not read because the metadata cache has it.
pub const F_META_SKIPPED: usize = 18;
/// The fourth word of the entry's metadata-cache record as f64 (-1: none, or not representable).
pub const F_PREV_PAYLOAD: usize = 19;
/// Token of the entry's held descriptor (`MetaOpts::hold`, `held::take`); -1: none.
pub const F_FD: usize = 20;
pub const FIELDS: usize = 21;

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
    /// Descriptors to hold (`MetaOpts::hold`) and their entries.
    held: Vec<(usize, Fd)>,
}

type MetaErr = (usize, c_int);

impl Builder {
    fn new() -> Self {
        Builder { nums: Vec::new(), ids: Vec::new(), offs: Vec::new(), bytes: Vec::new(), list_buf: Vec::new(), val_buf: Vec::new(), held: Vec::new() }
    }

    fn count(&self) -> usize {
        self.ids.len() / 4
    }

    /// Empty again, keeping the buffers (`held` was taken).
    fn clear(&mut self) {
        self.nums.clear();
        self.ids.clear();
        self.offs.clear();
        self.bytes.clear();
        self.held.clear();
    }

    fn name(&self, i: usize) -> &[u8] {
        let (off, len) = (self.offs[i * 4] as usize, self.offs[i * 4 + 1] as usize);
        &self.bytes[off..off + len]
    }

    /// Stat one entry of `dirfd` and read what `opts` asks for; appends one record.
    /// Stat `name` in `dirfd` (and read its metadata); the entry is recorded as `record_name`.
    fn collect(&mut self, dirfd: c_int, name: &CStr, record_name: &[u8], opts: &MetaOpts, magic: i64, hash: u64) {
        let i = self.count();
        self.offs.extend_from_slice(&[self.bytes.len() as u32, record_name.len() as u32, 0, 0]);
        self.bytes.extend_from_slice(record_name);
        self.ids.extend_from_slice(&[0, hash, 0, 0]);
        let base = self.nums.len();
        self.nums.resize(base + FIELDS, 0.0);
        self.nums[base + F_FD] = -1.0;
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
        let ctime = ctime_ns(&st);
        self.ids[i * 4] = st.st_dev;
        self.ids[i * 4 + 2] = st.st_ino;
        self.ids[i * 4 + 3] = ctime;

        let fmt = st.st_mode & S_IFMT;
        self.nums[base + F_PREV_PAYLOAD] = -1.0;
        let known = match &opts.unchanged {
            Some(t) if (fmt == S_IFREG || fmt == S_IFDIR) && ctime_tracks_metadata(magic) => t.lookup_stat(hash, &st),
            _ => None,
        };
        let res = if fmt == S_IFLNK {
            self.read_link(i, dirfd, name, st.st_size.max(0) as usize)
        } else if let Some(v) = known {
            self.nums[base + F_META_SKIPPED] = 1.0;
            // A directory's value holds its archived entry count above the low word
            // (unchanged.rs); the low word is the caller's (all ones: none).
            let v = if fmt != S_IFDIR { v } else if v as u32 == u32::MAX { u64::MAX } else { v & 0xffff_ffff };
            if v < (1u64 << 53) {
                self.nums[base + F_PREV_PAYLOAD] = v as f64;
            }
            Ok(())
        } else if (fmt == S_IFREG || fmt == S_IFDIR) && opts.any() {
            match open_at(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | O_NOATIME) {
                Ok(fd) => {
                    let r = self.read_meta(i, base, &fd, opts, magic);
                    if r.is_ok() && fmt == S_IFREG && st.st_size > 0 && opts.hold.is_some() {
                        self.held.push((i, fd));
                    }
                    r
                }
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
        let mut out = Vec::with_capacity(32 + n * (FIELDS * 8 + 32 + 16) + self.bytes.len() + 8);
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
            for x in &self.ids[p * 4..p * 4 + 4] {
                out.extend_from_slice(&x.to_le_bytes());
            }
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
/// Reads a listing in the layout above (what `read_dir` returns); panics on a malformed one.
pub struct Layout<'a> {
    b: &'a [u8],
    n: usize,
}

impl<'a> Layout<'a> {
    pub fn new(b: &'a [u8]) -> Layout<'a> {
        Layout { b, n: f64::from_le_bytes(b[0..8].try_into().unwrap()) as usize }
    }
    /// Number of entries.
    pub fn count(&self) -> usize {
        self.n
    }
    /// Field `f` (an F_* index) of entry `i`.
    pub fn num(&self, i: usize, f: usize) -> f64 {
        let at = 32 + (i * FIELDS + f) * 8;
        f64::from_le_bytes(self.b[at..at + 8].try_into().unwrap())
    }
    /// st_dev of entry `i`.
    pub fn dev(&self, i: usize) -> u64 {
        let at = 32 + self.n * FIELDS * 8 + i * 32;
        u64::from_le_bytes(self.b[at..at + 8].try_into().unwrap())
    }
    /// Name of entry `i`.
    pub fn name(&self, i: usize) -> &'a [u8] {
        let offs = 32 + self.n * (FIELDS * 8 + 32) + i * 16;
        let u = |at: usize| u32::from_le_bytes(self.b[at..at + 4].try_into().unwrap()) as usize;
        let bytes = (32 + self.n * (FIELDS * 8 + 32 + 16) + 7) & !7;
        let (off, len) = (u(offs), u(offs + 4));
        &self.b[bytes + off..bytes + off + len]
    }
}

/// A directory's names as getdents returned them (each with its NUL), each with its end there
/// and its path hash: a listing reads all of them first, so that their table records can be
/// fetched into the cache together (UnchangedTable::prefetch) before each entry is stat'ed and
/// looked up (the lookups stalled on memory one at a time). Used by read_dir and the tree check.
#[derive(Default)]
pub(crate) struct Names {
    bytes: Vec<u8>,
    ends: Vec<(usize, u64)>,
}

impl Names {
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Append `name` of the directory whose dir_hash is `prefix`.
    pub(crate) fn push(&mut self, prefix: u64, name: &CStr) {
        self.bytes.extend_from_slice(name.to_bytes_with_nul());
        self.ends.push((self.bytes.len(), path_hash(prefix, name.to_bytes())));
    }

    /// Fetch the table records of these names into the cache (no-op without a table index).
    pub(crate) fn prefetch(&self, table: &UnchangedTable) {
        table.prefetch(&self.ends);
    }

    /// Each name with its path hash, in listing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&CStr, u64)> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|e| e.0));
        starts.zip(&self.ends).map(|(start, &(end, hash))| (CStr::from_bytes_with_nul(&self.bytes[start..end]).expect("a name from getdents"), hash))
    }
}

/// A thread's buffers for listing directories (read_dir), kept from one directory to the next:
/// allocating and growing them anew for each took a walk thread ~10 % of its own CPU time.
struct Scratch {
    b: Builder,
    names: Names,
}

/// Buffers grown past this many bytes (a huge directory) are given back after it.
const SCRATCH_KEEP: usize = 1 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch { b: Builder::new(), names: Names::default() });
}

pub fn read_dir(path: &CStr, opts: &MetaOpts) -> Result<Vec<u8>, FsError> {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        // (emptied first: a panic may have left an earlier listing's entries behind)
        s.b.clear();
        s.names.clear();
        let r = read_dir_with(path, opts, &mut s);
        if s.b.bytes.capacity() + s.b.nums.capacity() * 8 + s.names.bytes.capacity() > SCRATCH_KEEP {
            *s = Scratch { b: Builder::new(), names: Names::default() };
        }
        r
    })
}

fn read_dir_with(path: &CStr, opts: &MetaOpts, s: &mut Scratch) -> Result<Vec<u8>, FsError> {
    let dir = open_dir(path).map_err(|e| err(e, "opendir", path))?;
    let magic = fs_magic(&dir).map_err(|e| err(e, "fstatfs", path))?;
    let prefix = dir_hash(path.to_bytes());
    let Scratch { b, names } = s;
    each_dirent(
        &dir,
        |e| match e {
            DirentError::Errno(e) => err(e, "readdir", path),
            DirentError::Malformed => FsError { detail: Some("malformed directory record".into()), ..err(5, "readdir", path) },
        },
        |name| {
            names.push(prefix, name);
            Ok(())
        },
    )?;
    if let Some(t) = &opts.unchanged {
        names.prefetch(t);
    }
    for (name, hash) in names.iter() {
        b.collect(dir.0, name, name.to_bytes(), opts, magic, hash);
    }
    if let Some(owner) = opts.hold {
        let (idx, fds): (Vec<usize>, Vec<Fd>) = std::mem::take(&mut b.held).into_iter().unzip();
        for (i, t) in idx.into_iter().zip(super::held::hold(owner, fds)) {
            b.nums[i * FIELDS + F_FD] = t;
        }
    }
    let mut perm: Vec<u32> = (0..b.count() as u32).collect();
    perm.sort_unstable_by(|&x, &y| b.name(x as usize).cmp(b.name(y as usize)));
    b.finish(&perm, magic).map_err(|m| FsError { detail: Some(m), ..err(27, "readdir", path) })
}

/// lstat one path (the backup root) with the same fields and metadata as a `read_dir` entry;
/// the entry's name is the path itself and fsMagic is the file system of the path.
pub fn stat_path(path: &CStr, opts: &MetaOpts) -> Result<Vec<u8>, FsError> {
    // (a path too long for the kernel is opened and stat'ed in its parent, opened piecewise;
    // the entry is still named `path`)
    let (parent, last) = parent_of(path).map_err(|e| err(e, "lstat", path))?;
    let dirfd = parent.as_ref().map_or(AT_FDCWD, |d| d.0);
    let p = open_at(dirfd, &last, O_PATH | O_NOFOLLOW | O_CLOEXEC).map_err(|e| err(e, "lstat", path))?;
    let magic = fs_magic(&p).map_err(|e| err(e, "fstatfs", path))?;
    let mut b = Builder::new();
    // never from the cache: this is how a caller reads what the cache would have skipped
    let opts = MetaOpts { unchanged: None, hold: None, ..*opts };
    b.collect(dirfd, &last, path.to_bytes(), &opts, magic, path_hash(PATH_HASH_INIT, path.to_bytes()));
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
    fn table_lookup_finds_every_record_of_uniform_skewed_and_repeated_hashes() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let tables: [Box<dyn Fn(u64) -> u64>; 3] = [Box::new(|r| r), Box::new(|r| r % 5000), Box::new(|r| if r % 3 == 0 { u64::MAX - r % 7 } else { r >> 40 })];
        for f in &tables {
            let mut words = Vec::new();
            for i in 0..20_000u64 {
                words.extend_from_slice(&[f(rnd()), i, 1000 + i, i * 3]);
            }
            sort_table(&mut words);
            let plain = UnchangedTable::new(words.as_ptr(), words.len() / RECORD_WORDS);
            let (index, bits) = plain.build_index();
            assert_eq!(bits, 15); // 20,000 records: about one per bucket
            let indexed = plain.with_index(&index, bits);
            for t in [plain, indexed] {
                for r in words.chunks_exact(RECORD_WORDS) {
                    assert_eq!(t.lookup(r[0], r[1], r[2]), Some(r[3]));
                    assert_eq!(t.lookup(r[0], r[1], r[2] + 1), None);
                }
                for _ in 0..20_000 {
                    let h = f(rnd());
                    let want = words.chunks_exact(RECORD_WORDS).find(|r| r[0] == h && r[1] == 7 && r[2] == 1007).map(|r| r[3]);
                    assert_eq!(t.lookup(h, 7, 1007), want);
                }
                assert_eq!(t.lookup(0, 0, 0), None);
                assert_eq!(t.lookup(u64::MAX, 0, 0), None);
            }
            let empty = UnchangedTable::new(words.as_ptr(), 0);
            assert_eq!(empty.lookup(words[0], words[1], words[2]), None);
        }
    }

    #[test]
    fn lists_and_stats_paths_longer_than_path_max() {
        let dir = crate::fs::testing::fresh_dir("long");
        // 30 levels of 200-byte names, made with paths relative to the level above
        let name = "d".repeat(200);
        let mut fd = open_at(AT_FDCWD, &CString::new(dir.to_str().unwrap()).unwrap(), O_RDONLY | O_DIRECTORY | O_CLOEXEC).unwrap();
        let cname = CString::new(name.clone()).unwrap();
        for _ in 0..30 {
            assert_eq!(unsafe { mkdirat(fd.0, cname.as_ptr(), 0o755) }, 0);
            fd = open_at(fd.0, &cname, O_RDONLY | O_DIRECTORY | O_CLOEXEC).unwrap();
        }
        let f = open_create_at(fd.0, &CString::new("leaf").unwrap());
        drop(f);
        let long = format!("{}/{}", dir.to_str().unwrap(), vec![name.as_str(); 30].join("/"));
        assert!(long.len() > PATH_MAX);
        let c = CString::new(long.clone()).unwrap();
        let out = read_dir(&c, &MetaOpts::default()).unwrap();
        assert_eq!(f64::from_le_bytes(out[0..8].try_into().unwrap()), 1.0);
        let leaf = CString::new(format!("{}/leaf", long)).unwrap();
        let one = stat_path(&leaf, &MetaOpts::default()).unwrap();
        assert_eq!(f64::from_le_bytes(one[32 + F_STATUS * 8..40 + F_STATUS * 8].try_into().unwrap()), 0.0);
        assert!(open_path(&CString::new(format!("{}/nope", long)).unwrap(), O_RDONLY | O_CLOEXEC).is_err());
        std::process::Command::new("rm").arg("-rf").arg(&dir).status().unwrap();
    }

    extern "C" {
        fn mkdirat(dirfd: c_int, path: *const std::os::raw::c_char, mode: u32) -> c_int;
        fn openat(dirfd: c_int, path: *const std::os::raw::c_char, flags: c_int, ...) -> c_int;
    }

    fn open_create_at(dirfd: c_int, name: &CStr) -> Fd {
        Fd(unsafe { openat(dirfd, name.as_ptr(), O_WRONLY | O_CREAT | O_CLOEXEC, 0o644 as c_int) })
    }

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
        let offs_at = 32 + n * FIELDS * 8 + n * 32;
        let bytes_at = (offs_at + n * 16 + 7) & !7;
        let u = |i: usize| u32::from_le_bytes(out[offs_at + i * 4..offs_at + i * 4 + 4].try_into().unwrap()) as usize;
        let names: Vec<Vec<u8>> = (0..n).map(|i| out[bytes_at + u(i * 4)..bytes_at + u(i * 4) + u(i * 4 + 1)].to_vec()).collect();
        assert_eq!(names, vec![b"B".to_vec(), b"a".to_vec(), b"aa".to_vec(), b"b".to_vec(), b"l".to_vec()]);
        let t = bytes_at + u(16) + u(17);
        assert_eq!(&out[t..t + u(18)], b"target-of-link");

        // An entry that vanished between getdents and fstatat is recorded, not an error.
        let fd = open_at(AT_FDCWD, &c, O_RDONLY | O_DIRECTORY | O_CLOEXEC).unwrap();
        let mut b = Builder::new();
        b.collect(fd.0, &CString::new("gone").unwrap(), b"gone", &MetaOpts { xattrs: true, ..Default::default() }, 0, 1);
        b.collect(fd.0, &CString::new("a").unwrap(), b"a", &MetaOpts::default(), 0, 2);
        assert_eq!(b.nums[F_STATUS], ENOENT as f64);
        assert_eq!(b.nums[FIELDS + F_STATUS], 0.0);
        assert_eq!(b.nums[FIELDS + F_SIZE], 1.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn consecutive_listings_on_one_thread_hold_only_their_own_entries() {
        // (the thread's buffers are reused, and dropped after a directory past SCRATCH_KEEP)
        let dir = crate::fs::testing::fresh_dir("scratch");
        let big = dir.join("big");
        let small = dir.join("small");
        std::fs::create_dir(&big).unwrap();
        std::fs::create_dir(&small).unwrap();
        let long = "n".repeat(200);
        for i in 0..6000 {
            std::fs::write(big.join(format!("{}{:05}", long, i)), "").unwrap();
        }
        std::fs::write(small.join("b"), "bb").unwrap();
        std::fs::write(small.join("a"), "a").unwrap();
        let names = |p: &std::path::Path| {
            let out = read_dir(&CString::new(p.to_str().unwrap()).unwrap(), &MetaOpts::default()).unwrap();
            let l = Layout::new(&out);
            (0..l.count()).map(|i| (l.name(i).to_vec(), l.num(i, F_SIZE))).collect::<Vec<_>>()
        };
        let want = vec![(b"a".to_vec(), 1.0), (b"b".to_vec(), 2.0)];
        assert_eq!(names(&small), want);
        let listed = names(&big);
        assert_eq!(listed.len(), 6000);
        assert_eq!(listed[0].0, format!("{}00000", long).into_bytes());
        assert_eq!(names(&small), want);
        assert_eq!(names(&small), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_indexed_table_vouches_for_every_entry_of_a_large_directory() {
        // (the walk's path: index built, each directory's records prefetched, then looked up)
        let dir = crate::fs::testing::fresh_dir("indexed");
        for i in 0..700 {
            std::fs::write(dir.join(format!("f{}", i)), "x").unwrap();
        }
        let c = CString::new(dir.to_str().unwrap()).unwrap();
        let opts = MetaOpts { xattrs: true, flags: true, ..Default::default() };
        let out = read_dir(&c, &opts).unwrap();
        let l = Layout::new(&out);
        let ids = 32 + l.count() * FIELDS * 8;
        let u = |i: usize| u64::from_le_bytes(out[ids + i * 8..ids + i * 8 + 8].try_into().unwrap());
        // every entry's record (path hash, inode, ctime), its value its position; one more
        // record per entry under another hash, as other directories' entries would be
        let mut table = Vec::new();
        for i in 0..l.count() {
            table.extend_from_slice(&[u(i * 4 + 1), u(i * 4 + 2), u(i * 4 + 3), 1000 + i as u64]);
            table.extend_from_slice(&[u(i * 4 + 1) ^ (1 << 63), u(i * 4 + 2), u(i * 4 + 3), 1]);
        }
        sort_table(&mut table);
        let plain = UnchangedTable::new(table.as_ptr(), table.len() / RECORD_WORDS);
        let (index, bits) = plain.build_index();
        assert!(bits > 0);
        let indexed = plain.with_index(&index, bits);
        let fs_magic = f64::from_le_bytes(out[8..16].try_into().unwrap()) as i64;
        let out2 = read_dir(&c, &MetaOpts { unchanged: Some(indexed), ..opts }).unwrap();
        let l2 = Layout::new(&out2);
        assert_eq!(l2.count(), 700);
        for i in 0..l2.count() {
            let want = if ctime_tracks_metadata(fs_magic) { 1000.0 + i as f64 } else { -1.0 };
            assert_eq!(l2.num(i, F_PREV_PAYLOAD), want, "entry {}", i);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn metadata_cache_skips_unchanged_entries_only() {
        let dir = crate::fs::testing::fresh_dir("unchanged");
        std::fs::write(dir.join("f"), "x").unwrap();
        std::fs::write(dir.join("g"), "y").unwrap();
        let c = CString::new(dir.to_str().unwrap()).unwrap();
        let opts = MetaOpts { xattrs: true, flags: true, ..Default::default() };
        let list = |o: &MetaOpts| {
            let out = read_dir(&c, o).unwrap();
            let f = |i: usize| f64::from_le_bytes(out[i * 8..i * 8 + 8].try_into().unwrap());
            let n = f(0) as usize;
            let ids = 32 + n * FIELDS * 8;
            let u = |i: usize| u64::from_le_bytes(out[ids + i * 8..ids + i * 8 + 8].try_into().unwrap());
            let skipped: Vec<bool> = (0..n).map(|i| f(4 + i * FIELDS + F_META_SKIPPED) == 1.0).collect();
            let ctime: Vec<u64> = (0..n).map(|i| f(4 + i * FIELDS + F_CTIME_SEC) as u64 * 1_000_000_000 + f(4 + i * FIELDS + F_CTIME_NSEC) as u64).collect();
            let rec: Vec<[u64; 3]> = (0..n).map(|i| [u(i * 4 + 1), u(i * 4 + 2), u(i * 4 + 3)]).collect();
            assert_eq!(rec.iter().map(|r| r[2]).collect::<Vec<_>>(), ctime);
            (f(1) as i64, skipped, rec)
        };
        let (magic, skipped, rec) = list(&opts);
        assert_eq!(skipped, vec![false, false]);
        let mut path = dir.to_str().unwrap().as_bytes().to_vec();
        path.extend_from_slice(b"/f");
        assert_eq!(rec[0][0], path_hash(PATH_HASH_INIT, &path), "hash of the full path");
        // a table with f only (sorted); g's record has another ctime
        let mut table: Vec<u64> = vec![rec[1][0], rec[1][1], rec[1][2] + 1, 7, rec[0][0], rec[0][1], rec[0][2], 4242];
        sort_table(&mut table);
        let t = UnchangedTable::new(table.as_ptr(), 2);
        let (_, skipped, _) = list(&MetaOpts { unchanged: Some(t), ..opts });
        assert_eq!(skipped, vec![ctime_tracks_metadata(magic), false]);
        // the record's fourth word comes back with the entry it matched
        let out = read_dir(&c, &MetaOpts { unchanged: Some(t), ..opts }).unwrap();
        let f = |i: usize| f64::from_le_bytes(out[i * 8..i * 8 + 8].try_into().unwrap());
        let want = if ctime_tracks_metadata(magic) { 4242.0 } else { -1.0 };
        assert_eq!([f(4 + F_PREV_PAYLOAD), f(4 + FIELDS + F_PREV_PAYLOAD)], [want, -1.0]);
        // stat_path never takes entries from the cache
        let mut cp = path.clone();
        cp.push(0);
        let one = stat_path(CStr::from_bytes_with_nul(&cp).unwrap(), &MetaOpts { unchanged: Some(t), ..opts }).unwrap();
        assert_eq!(f64::from_le_bytes(one[32 + F_META_SKIPPED * 8..40 + F_META_SKIPPED * 8].try_into().unwrap()), 0.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
