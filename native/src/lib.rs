//! pxb native layer: mechanisms, no policy.
//!
//! * [`chunker`]: PBS's buzhash content-defined chunker (byte-exact with proxmox-backup).
//! * [`digest`]: SHA-256 through the OpenSSL EVP functions the node binary exports.
//! * [`crc`]: CRC-32 (IEEE) through node's bundled zlib.
//! * [`zstd`]: zstd through the system `libzstd.so.1`.
//! * [`blob`]: PBS DataBlob encode/decode.
//! * [`mem`]: allocator settings (glibc's mmap threshold).
//! * [`pool`]: worker threads for CPU-bound jobs, one per core.
//! * [`fs`]: file-system mechanisms for backup and restore (tree walk, batch reads, xattrs).
//!
//! All Node-API glue lives in `napi/`; nothing outside it knows about JS.
pub mod blob;
pub mod chunker;
pub mod crc;
pub mod digest;
pub mod fs;
pub mod mem;
pub mod pool;
pub mod pxar;
pub mod store;
pub mod zstd;

#[cfg(not(test))]
mod napi;
