//! Unchanged-tree check (`fsTreeUnchanged`): does a tree still hold exactly the entries a
//! metadata-cache table recorded, each with the inode and ctime it had? Mechanism only: the
//! caller decides what an unchanged tree lets it skip (ts/archive/metadata-cache.ts).
//!
//! The table is the metadata cache's (`dir::UnchangedTable`): one record per archived entry,
//! (path hash, inode, ctime ns, value). A directory's value carries, in its high 32 bits, how
//! many of its entries were archived (`DIR_COUNT_SHIFT`). The walk:
//! * starts at the root, which must have a directory record;
//! * lists each recorded directory it reaches (getdents + lstat of every entry) and looks every
//!   entry up; an entry without a record was not archived (excluded) and is not descended into;
//! * descends into recorded directories on an allowed device (others were archived empty);
//! * answers "changed" as soon as a directory's recorded entries found differ from its count
//!   (an archived entry is gone, or its inode or ctime moved), a directory is on a file system
//!   whose ctime does not track every metadata change, a `.pxarexclude` has no record (its
//!   patterns could have changed unseen), or anything cannot be listed or stat'ed.
//!
//! Why that proves the archived set unchanged: a directory's ctime moves whenever an entry is
//! added, removed or renamed in it, so a recorded directory found with its ctime has the names
//! it had; every archived one among them is found by its record (its own ctime moves with any
//! change of content, mode, owner, times, links or xattrs); the others were excluded then and,
//! the patterns being unchanged (`.pxarexclude` files are archived entries too), still are.
//!
//! Two threads share a stack of directories; the first mismatch stops both.
use super::dir::{ctime_tracks_metadata, dir_hash, open_dir, path_hash, Names, UnchangedTable, PATH_HASH_INIT};
use super::sys::*;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

/// A directory record's value holds its archived entry count from this bit on.
pub const DIR_COUNT_SHIFT: u32 = 32;

/// Directories may be descended into on these devices, or on any (`None`).
pub type Devices = Option<Vec<u64>>;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct TreeCheck {
    pub unchanged: bool,
    /// Recorded entries found unchanged, the root included.
    pub entries: u64,
    pub directories: u64,
    /// Why the tree is not unchanged (empty when it is).
    pub reason: String,
}

struct Shared<'a> {
    table: &'a UnchangedTable,
    devs: &'a Devices,
    stack: Mutex<(Vec<(CString, u64)>, usize)>,
    cv: Condvar,
    stop: AtomicBool,
    reason: Mutex<String>,
    entries: AtomicU64,
    directories: AtomicU64,
}

impl Shared<'_> {
    fn fail(&self, why: String) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_empty() {
            *r = why;
        }
        self.stop.store(true, Ordering::SeqCst);
        self.cv.notify_all();
    }

    fn allowed(&self, dev: u64) -> bool {
        self.devs.as_ref().map_or(true, |d| d.contains(&dev))
    }

    fn worker(&self) {
        loop {
            let job = {
                let mut g = self.stack.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if self.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Some(j) = g.0.pop() {
                        g.1 += 1;
                        break j;
                    }
                    if g.1 == 0 {
                        self.cv.notify_all();
                        return;
                    }
                    g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
                }
            };
            let mut found = Vec::new();
            if let Err(why) = self.check_dir(&job.0, job.1, &mut found) {
                self.fail(why);
            }
            let mut g = self.stack.lock().unwrap_or_else(|e| e.into_inner());
            g.1 -= 1;
            g.0.extend(found);
            self.cv.notify_all();
        }
    }

    /// List `path` (recorded with `count` archived entries); queue its recorded subdirectories.
    fn check_dir(&self, path: &CStr, count: u64, subdirs: &mut Vec<(CString, u64)>) -> Result<(), String> {
        let show = || String::from_utf8_lossy(path.to_bytes()).into_owned();
        let dir = open_dir(path).map_err(|e| format!("{}: cannot be opened (errno {})", show(), e))?;
        let magic = fs_magic(&dir).map_err(|e| format!("{}: fstatfs failed (errno {})", show(), e))?;
        if !ctime_tracks_metadata(magic) {
            return Err(format!("{}: its file system does not track metadata changes in ctime", show()));
        }
        let prefix = dir_hash(path.to_bytes());
        let mut matched = 0u64;
        let listing = |e| match e {
            DirentError::Errno(e) => format!("{}: cannot be listed (errno {})", show(), e),
            DirentError::Malformed => format!("{}: malformed directory record", show()),
        };
        // (all names first, their records prefetched, then each entry: see dir::Names)
        let mut names = Names::default();
        each_dirent(&dir, listing, |name| {
            names.push(prefix, name);
            Ok(())
        })?;
        names.prefetch(&self.table);
        for (name, hash) in names.iter() {
            if self.stop.load(Ordering::Relaxed) {
                return Err(String::new()); // (another thread found a difference)
            }
            let nb = name.to_bytes();
            let st = fstatat(dir.0, name, AT_SYMLINK_NOFOLLOW).map_err(|e| format!("{}/{}: cannot be stat'ed (errno {})", show(), String::from_utf8_lossy(nb), e))?;
            let Some(value) = self.table.lookup_stat(hash, &st) else {
                if nb == b".pxarexclude" {
                    return Err(format!("{}/.pxarexclude: not recorded", show()));
                }
                continue;
            };
            matched += 1;
            if st.st_mode & S_IFMT == S_IFDIR && self.allowed(st.st_dev) {
                let mut p = path.to_bytes().to_vec();
                if p.last() != Some(&b'/') {
                    p.push(b'/');
                }
                p.extend_from_slice(nb);
                let c = CString::new(p).map_err(|_| format!("{}: bad name", show()))?;
                subdirs.push((c, value >> DIR_COUNT_SHIFT));
            }
        }
        self.entries.fetch_add(matched, Ordering::Relaxed);
        self.directories.fetch_add(1, Ordering::Relaxed);
        if matched != count {
            return Err(format!("{}: {} of its {} archived entries found unchanged", show(), matched, count));
        }
        Ok(())
    }
}

/// Check the tree at `root` against `table` (see the module doc).
pub fn tree_unchanged(root: &CStr, table: &UnchangedTable, devs: &Devices) -> TreeCheck {
    let (index, bits) = table.build_index();
    let indexed = table.with_index(&index, bits);
    let table = &indexed;
    let show = || String::from_utf8_lossy(root.to_bytes()).into_owned();
    let no = |reason: String| TreeCheck { reason, ..Default::default() };
    let (parent, last) = match parent_of(root) {
        Ok(v) => v,
        Err(e) => return no(format!("{}: cannot be stat'ed (errno {})", show(), e)),
    };
    let st = match fstatat(parent.as_ref().map_or(AT_FDCWD, |d| d.0), &last, AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(e) => return no(format!("{}: cannot be stat'ed (errno {})", show(), e)),
    };
    if st.st_mode & S_IFMT != S_IFDIR {
        return no(format!("{}: not a directory", show()));
    }
    let Some(value) = table.lookup_stat(path_hash(PATH_HASH_INIT, root.to_bytes()), &st) else {
        return no(format!("{}: changed", show()));
    };
    let shared = Shared {
        table,
        devs,
        stack: Mutex::new((vec![(root.to_owned(), value >> DIR_COUNT_SHIFT)], 0)),
        cv: Condvar::new(),
        stop: AtomicBool::new(false),
        reason: Mutex::new(String::new()),
        entries: AtomicU64::new(1),
        directories: AtomicU64::new(0),
    };
    std::thread::scope(|s| {
        let helper = s.spawn(|| shared.worker());
        shared.worker();
        let _ = helper.join();
    });
    let stopped = shared.stop.load(Ordering::SeqCst);
    let reason = shared.reason.into_inner().unwrap_or_else(|e| e.into_inner());
    TreeCheck {
        unchanged: !stopped,
        entries: shared.entries.load(Ordering::SeqCst),
        directories: shared.directories.load(Ordering::SeqCst),
        reason,
    }
}
