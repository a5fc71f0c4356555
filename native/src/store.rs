//! One insert into a local PBS chunk store (`.chunks/XXXX/<sha256 hex>`, spec datastore.md) per
//! pool job: hash the chunk, mark it if the store has it (atime touch, the GC mark), otherwise
//! encode the DataBlob and publish it with link-if-absent. A backup queues one job per chunk
//! instead of four (hash, dedup check, encode, write), each of which waited for the main thread.
//!
//! Mechanism only: the chunk directory, modes, fsync and the temporary-name marker come from
//! the caller. Anything unusual (a non-regular or empty file in the way, a lost publishing
//! race, a temporary-name collision) is handed back with the encoded blob for the caller's own
//! insert rules.
use crate::blob;
use crate::digest;
use crate::fs::error::FsError;
use crate::fs::touch::touch_files;
use crate::fs::write::{write_file_atomic, AtomicOpts};
use crate::fs::sys::{fstat, open_at, read_full, AT_FDCWD, EEXIST, EISDIR, ENOENT, ENOTDIR, O_CLOEXEC, O_NOCTTY, O_NOFOLLOW, O_NONBLOCK, O_RDONLY, S_IFDIR, S_IFMT, S_IFREG};
use std::cell::RefCell;
use std::ffi::CStr;
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone)]
pub struct StoreOpts {
    /// Directory holding the XXXX prefix directories (the store's `.chunks`).
    pub chunk_dir: Vec<u8>,
    pub compress: bool,
    /// fsync the chunk file and its directory (sync level "file").
    pub fsync: bool,
    pub file_mode: u32,
    /// Mode of a prefix directory created on demand.
    pub dir_mode: u32,
    /// Inserted between the chunk's path and a unique suffix for the temporary file.
    pub tmp_marker: Vec<u8>,
}

#[derive(Debug)]
pub enum Stored {
    /// The store had a non-empty chunk file; it was touched.
    Known,
    /// Written now; the blob's size.
    New(usize),
    /// Not decided here: insert `blob` with the full rules.
    Insert(Vec<u8>),
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// The file of chunk `digest` in a chunk directory: `<dir>/<first 4 hex digits>/<64 hex digits>`.
pub fn chunk_file(dir: &[u8], digest: &[u8]) -> Vec<u8> {
    let h = digest::hex(digest);
    let mut p = Vec::with_capacity(dir.len() + 2 + 4 + h.len());
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(&h.as_bytes()[..4]);
    p.push(b'/');
    p.extend_from_slice(h.as_bytes());
    p
}

thread_local! {
    /// The encoded chunk of the current insert (one per worker thread, reused: a fresh multi-MiB
    /// buffer per chunk was an mmap, page faults on every page written, and an munmap).
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Bytes of `OUT` that stay resident between chunks; pages written beyond (an incompressible
/// or very large chunk) are given back after each insert.
const OUT_RESIDENT: usize = 2 << 20;

pub fn store_chunk(data: &[u8], o: &StoreOpts) -> Result<([u8; 32], Stored), String> {
    let d = digest::sha256(data);
    let path = chunk_file(&o.chunk_dir, &d);
    let cpath = CString::new(path.clone()).map_err(|_| "chunk directory contains NUL".to_string())?;
    match touch_files(std::slice::from_ref(&cpath), true)[0] {
        0 => return Ok((d, Stored::Known)),
        s if s == -ENOENT || s == -ENOTDIR => {}
        // an empty file (crash leftover) or something else in the way: link-if-absent could
        // not publish over it, so hand it to the caller's insert rules at once
        _ => return Ok((d, Stored::Insert(blob::encode(data, o.compress)?))),
    }
    let mut tmp = path;
    tmp.extend_from_slice(&o.tmp_marker);
    tmp.extend_from_slice(format!("{:x}-{:x}", std::process::id(), TMP_SEQ.fetch_add(1, Ordering::Relaxed)).as_bytes());
    let ctmp = CString::new(tmp).map_err(|_| "temporary name contains NUL".to_string())?;
    let opts = AtomicOpts { if_absent: true, fsync: o.fsync, mode: o.file_mode, dir_mode: Some(o.dir_mode), replace_stale: false };
    OUT.with(|out| {
        let mut encoded = out.borrow_mut();
        blob::encode_into(data, o.compress, &mut encoded)?;
        let r = match write_file_atomic(&cpath, &ctmp, &encoded, opts) {
            Ok(true) => Ok((d, Stored::New(encoded.len()))),
            Ok(false) => Ok((d, Stored::Insert(encoded.clone()))),
            Err(FsError { errno: EEXIST, syscall: "open", .. }) => Ok((d, Stored::Insert(encoded.clone()))),
            Err(e) => Err(e.message()),
        };
        // (the length is what this chunk wrote: everything after it is untouched)
        if encoded.len() > OUT_RESIDENT {
            let n = encoded.len();
            crate::mem::release_pages(&mut encoded[OUT_RESIDENT..n]);
        }
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &std::path::Path) -> StoreOpts {
        StoreOpts {
            chunk_dir: dir.to_str().unwrap().as_bytes().to_vec(),
            compress: true,
            fsync: false,
            file_mode: 0o644,
            dir_mode: 0o750,
            tmp_marker: b".pxb-tmp-".to_vec(),
        }
    }

    #[test]
    fn writes_then_knows_and_defers_the_unusual() {
        let dir = crate::fs::testing::fresh_dir("store");
        let o = opts(&dir);
        let data = vec![7u8; 100_000];
        let (d, s) = store_chunk(&data, &o).unwrap();
        let h = digest::hex(&d);
        let file = dir.join(&h[..4]).join(&h);
        let size = match s { Stored::New(n) => n, other => panic!("{:?}", other) };
        let stored = std::fs::read(&file).unwrap();
        assert_eq!(stored.len(), size);
        assert_eq!(blob::decode(&stored, 1 << 20).unwrap(), data);
        assert_eq!(std::fs::read_dir(dir.join(&h[..4])).unwrap().count(), 1, "no temporary file left");
        assert!(matches!(store_chunk(&data, &o).unwrap().1, Stored::Known));
        // an empty file (crash leftover) is not "known": the caller's insert replaces it
        std::fs::write(&file, b"").unwrap();
        assert!(matches!(store_chunk(&data, &o).unwrap().1, Stored::Insert(_)));
        // a directory in the way is not decided here either
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        assert!(matches!(store_chunk(&data, &o).unwrap().1, Stored::Insert(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_reused_encode_buffer_survives_large_incompressible_chunks() {
        // one thread: a large incompressible chunk (its pages past OUT_RESIDENT are given
        // back), then compressible and small ones through the same buffer
        let dir = crate::fs::testing::fresh_dir("store-reuse");
        let o = opts(&dir);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..5 << 20).map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 }).collect();
        let datas = [noise.clone(), vec![3u8; 3 << 20], noise[..1000].to_vec(), vec![9u8; 10]];
        for data in &datas {
            let (d, s) = store_chunk(data, &o).unwrap();
            assert!(matches!(s, Stored::New(_)), "{:?}", s);
            let h = digest::hex(&d);
            let stored = std::fs::read(dir.join(&h[..4]).join(&h)).unwrap();
            assert_eq!(&blob::decode(&stored, 16 << 20).unwrap(), data);
        }
        OUT.with(|b| assert!(b.borrow().capacity() >= 5 << 20, "one buffer, kept"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Why `read_chunk_into` failed: the file could not be read, or its content is not the chunk.
#[derive(Debug)]
pub enum ReadError {
    Fs(FsError),
    Corrupt(String),
}

thread_local! {
    /// The encoded chunk of the current read (one per pool thread, reused).
    static BLOB: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Read one chunk file and decode it into `dst` (at most `dst.len()` bytes): magic, CRC, zstd,
/// and SHA-256 == `want`. Returns the decoded length. One open and one read; nothing is
/// allocated per chunk, so a sequential reader can recycle `dst`.
pub fn read_chunk_into(path: &CStr, dst: &mut [u8], want: &[u8; 32]) -> Result<usize, ReadError> {
    let fs_err = |e, call| ReadError::Fs(FsError::new(e, call, path.to_bytes()));
    let fd = open_at(AT_FDCWD, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC).map_err(|e| fs_err(e, "open"))?;
    let st = fstat(&fd).map_err(|e| fs_err(e, "fstat"))?;
    match st.st_mode & S_IFMT {
        S_IFREG => {}
        S_IFDIR => return Err(fs_err(EISDIR, "read")),
        _ => return Err(ReadError::Corrupt("not a regular file (a FIFO, device or socket in place of a chunk)".into())),
    }
    let size = st.st_size.max(0) as usize;
    // An encrypted blob of the largest chunk is the largest thing a chunk file may hold.
    if size > blob::MAX_CHUNK_SIZE + 64 {
        return Err(ReadError::Corrupt(format!("blob of {} bytes is larger than any chunk", size)));
    }
    BLOB.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < size + 1 {
            b.resize(size + 1, 0);
        }
        // One byte more than fstat said: a file that grew is noticed, not cut short.
        let n = read_full(&fd, &mut b[..size + 1]).map_err(|e| fs_err(e, "read"))?;
        if n != size {
            return Err(ReadError::Corrupt(format!("the file changed size while read ({} bytes, then {})", size, n)));
        }
        let len = blob::decode_into(&b[..n], dst).map_err(ReadError::Corrupt)?;
        let got = digest::sha256(&dst[..len]);
        if &got != want {
            return Err(ReadError::Corrupt(format!("its content hashes to {}", digest::hex(&got))));
        }
        Ok(len)
    })
}
