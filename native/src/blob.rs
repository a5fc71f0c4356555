//! PBS DataBlob (spec datastore.md §4): `magic[8] ‖ crc32[4 LE] ‖ payload` for unencrypted
//! blobs; `magic ‖ crc ‖ iv[16] ‖ tag[16] ‖ ciphertext` for encrypted ones (decode of those
//! needs a key and is not done here; `inspect` still reports them).
use crate::{crc, zstd};

pub const MAGIC_PLAIN: [u8; 8] = [66, 171, 56, 7, 190, 131, 112, 161];
pub const MAGIC_ZSTD: [u8; 8] = [49, 185, 88, 66, 111, 182, 163, 127];
pub const MAGIC_ENCR: [u8; 8] = [123, 103, 133, 190, 34, 45, 76, 240];
pub const MAGIC_ENCR_ZSTD: [u8; 8] = [230, 89, 27, 191, 11, 191, 216, 11];

/// Largest chunk the backup protocol accepts; decode refuses to produce more.
pub const MAX_CHUNK_SIZE: usize = 16 * 1024 * 1024;
/// `DataBlob::encode` refuses more than this.
pub const MAX_BLOB_SIZE: usize = 128 * 1024 * 1024;
const HEADER: usize = 12;
const ENC_HEADER: usize = 44;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind { Plain, Zstd, Encrypted, EncryptedZstd }

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Plain => "uncompressed",
            Kind::Zstd => "zstd",
            Kind::Encrypted => "encrypted",
            Kind::EncryptedZstd => "encrypted+zstd",
        }
    }
}

pub fn kind_of(blob: &[u8]) -> Result<Kind, String> {
    if blob.len() < HEADER {
        return Err(format!("blob too short: {} bytes, a header needs {}", blob.len(), HEADER));
    }
    let m = &blob[..8];
    let k = if m == MAGIC_PLAIN {
        Kind::Plain
    } else if m == MAGIC_ZSTD {
        Kind::Zstd
    } else if m == MAGIC_ENCR {
        Kind::Encrypted
    } else if m == MAGIC_ENCR_ZSTD {
        Kind::EncryptedZstd
    } else {
        return Err(format!("not a data blob: unknown magic {}", crate::digest::hex(m)));
    };
    if matches!(k, Kind::Encrypted | Kind::EncryptedZstd) && blob.len() < ENC_HEADER {
        return Err(format!("encrypted blob too short: {} bytes", blob.len()));
    }
    Ok(k)
}

/// Encode `data` as an unencrypted blob. With `compress`, zstd level 1 is kept only when the
/// compressed form is not larger than the data (PBS 4.x rule).
pub fn encode(data: &[u8], compress: bool) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    encode_into(data, compress, &mut out)?;
    out.shrink_to_fit();
    Ok(out)
}

/// `encode` into `out` (its previous content is replaced; its capacity is reused, so a caller
/// that keeps one buffer per thread allocates, and faults in, nothing per chunk).
pub fn encode_into(data: &[u8], compress: bool, out: &mut Vec<u8>) -> Result<(), String> {
    if data.len() > MAX_BLOB_SIZE {
        return Err(format!("data blob too large ({} bytes, limit {})", data.len(), MAX_BLOB_SIZE));
    }
    out.clear();
    out.reserve(HEADER + data.len());
    unsafe { out.set_len(HEADER + data.len()) };
    let mut used = None;
    if compress && !data.is_empty() {
        used = zstd::compress_into(data, &mut out[HEADER..], 1)?;
    }
    let (magic, n) = match used {
        Some(n) => (MAGIC_ZSTD, n),
        None => {
            out[HEADER..].copy_from_slice(data);
            (MAGIC_PLAIN, data.len())
        }
    };
    out.truncate(HEADER + n);
    out[..8].copy_from_slice(&magic);
    let c = crc::crc32(&out[HEADER..]);
    out[8..12].copy_from_slice(&c.to_le_bytes());
    Ok(())
}

/// Check magic and CRC without decoding.
pub fn verify_crc(blob: &[u8]) -> Result<Kind, String> {
    let k = kind_of(blob)?;
    let stored = u32::from_le_bytes([blob[8], blob[9], blob[10], blob[11]]);
    let payload = match k {
        Kind::Plain | Kind::Zstd => &blob[HEADER..],
        _ => &blob[ENC_HEADER..],
    };
    let c = crc::crc32(payload);
    if c != stored {
        return Err(format!("blob CRC mismatch: stored {:08x}, computed {:08x}", stored, c));
    }
    Ok(k)
}

/// `decode` into `dst` (no allocation): at most `dst.len()` bytes; returns the decoded length.
pub fn decode_into(blob: &[u8], dst: &mut [u8]) -> Result<usize, String> {
    match verify_crc(blob)? {
        Kind::Plain => {
            let data = &blob[HEADER..];
            if data.len() > dst.len() {
                return Err(format!("blob holds {} bytes, more than the limit of {}", data.len(), dst.len()));
            }
            dst[..data.len()].copy_from_slice(data);
            Ok(data.len())
        }
        Kind::Zstd => zstd::decompress_into(&blob[HEADER..], dst),
        Kind::Encrypted | Kind::EncryptedZstd => Err("blob is encrypted; a key is needed to decode it".into()),
    }
}

/// Decode an unencrypted blob, checking magic and CRC, refusing more than `limit` bytes.
pub fn decode(blob: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let k = verify_crc(blob)?;
    match k {
        Kind::Plain => {
            if blob.len() - HEADER > limit {
                return Err(format!("blob holds {} bytes, more than the limit of {}", blob.len() - HEADER, limit));
            }
            Ok(blob[HEADER..].to_vec())
        }
        Kind::Zstd => zstd::decompress_limited(&blob[HEADER..], limit),
        Kind::Encrypted | Kind::EncryptedZstd => Err("blob is encrypted; a key is needed to decode it".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_into_matches_decode_and_refuses_what_does_not_fit() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8 ^ (i / 997) as u8).collect();
        for compress in [false, true] {
            let b = encode(&data, compress).unwrap();
            let mut dst = vec![0xeeu8; data.len() + 10];
            let n = decode_into(&b, &mut dst).unwrap();
            assert_eq!(&dst[..n], &decode(&b, MAX_CHUNK_SIZE).unwrap()[..]);
            assert_eq!(&dst[..n], &data[..]);
            let mut small = vec![0u8; data.len() - 1];
            assert!(decode_into(&b, &mut small).unwrap_err().contains("limit"));
        }
        let mut bad = encode(&data, true).unwrap();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(decode_into(&bad, &mut vec![0u8; data.len()]).unwrap_err().contains("CRC"));
    }
}
