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
use crate::fs::sys::{EEXIST, ENOENT, ENOTDIR};
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

pub fn store_chunk(data: &[u8], o: &StoreOpts) -> Result<([u8; 32], Stored), String> {
    let d = digest::sha256(data);
    let h = digest::hex(&d);
    let mut path = o.chunk_dir.clone();
    path.extend_from_slice(format!("/{}/{}", &h[..4], h).as_bytes());
    let cpath = CString::new(path.clone()).map_err(|_| "chunk directory contains NUL".to_string())?;
    match touch_files(std::slice::from_ref(&cpath), true)[0] {
        0 => return Ok((d, Stored::Known)),
        s if s == -ENOENT || s == -ENOTDIR => {}
        // an empty file (crash leftover) or something else in the way: link-if-absent could
        // not publish over it, so hand it to the caller's insert rules at once
        _ => return Ok((d, Stored::Insert(blob::encode(data, o.compress)?))),
    }
    let encoded = blob::encode(data, o.compress)?;
    let mut tmp = path;
    tmp.extend_from_slice(&o.tmp_marker);
    tmp.extend_from_slice(format!("{:x}-{:x}", std::process::id(), TMP_SEQ.fetch_add(1, Ordering::Relaxed)).as_bytes());
    let ctmp = CString::new(tmp).map_err(|_| "temporary name contains NUL".to_string())?;
    let opts = AtomicOpts { if_absent: true, fsync: o.fsync, mode: o.file_mode, dir_mode: Some(o.dir_mode), replace_stale: false };
    match write_file_atomic(&cpath, &ctmp, &encoded, opts) {
        Ok(true) => Ok((d, Stored::New(encoded.len()))),
        Ok(false) => Ok((d, Stored::Insert(encoded))),
        Err(FsError { errno: EEXIST, syscall: "open", .. }) => Ok((d, Stored::Insert(encoded))),
        Err(e) => Err(e.message()),
    }
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
}
