//! Hot-path exports: digests, CRC, chunker, data blobs.
use super::rt::*;
use super::sys::*;
use crate::{blob, chunker::Chunker, crc, digest, mem, zstd};

pub unsafe fn register(env: napi_env, exports: napi_value) -> NResult<()> {
    let chunker_cls = define_class(
        env,
        b"Chunker\0",
        chunker_new,
        &[method(b"scan\0", chunker_scan), method(b"reset\0", chunker_reset), method(b"chunkSize\0", chunker_size)],
    )?;
    let props = [
        method(b"versions\0", versions),
        method(b"mallocMmapThreshold\0", malloc_mmap_threshold),
        method(b"releasePages\0", release_pages),
        method(b"sha256\0", sha256),
        method(b"sha256Async\0", sha256_async),
        method(b"crc32\0", crc32),
        method(b"chunkAndHash\0", chunk_and_hash),
        method(b"chunkAndHashAsync\0", chunk_and_hash_async),
        method(b"encodeBlob\0", encode_blob),
        method(b"encodeBlobAsync\0", encode_blob_async),
        method(b"decodeBlob\0", decode_blob),
        method(b"decodeBlobAsync\0", decode_blob_async),
        method(b"verifyBlob\0", verify_blob),
        method(b"processChunk\0", process_chunk),
        value_prop(b"Chunker\0", chunker_cls),
    ];
    napi!(env, napi_define_properties(env, exports, props.len(), props.as_ptr()))
}

unsafe extern "C" fn versions(env: napi_env, _info: napi_callback_info) -> napi_value {
    guard(env, || {
        let o = object(env)?;
        set(env, o, b"zstd\0", str_val(env, &zstd::version())?)?;
        set(env, o, b"native\0", str_val(env, env!("CARGO_PKG_VERSION"))?)?;
        Ok(o)
    })
}

unsafe extern "C" fn malloc_mmap_threshold(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([n], _, _) = args::<1>(env, info)?;
        bool_val(env, mem::set_mmap_threshold(usize_arg(env, n, "threshold")?))
    })
}

unsafe extern "C" fn release_pages(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b], _, _) = args::<1>(env, info)?;
        let d = bytes_mut(env, b)?;
        f64_val(env, mem::release_pages(d) as f64)
    })
}

unsafe extern "C" fn sha256(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b], _, _) = args::<1>(env, info)?;
        buffer_copy(env, &digest::sha256(bytes(env, b)?))
    })
}

unsafe fn digest_js(env: napi_env, d: [u8; 32]) -> NResult<napi_value> {
    buffer_copy(env, &d)
}

/// The input Buffer is pinned (not copied) until the promise settles; do not mutate it.
unsafe extern "C" fn sha256_async(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b], _, _) = args::<1>(env, info)?;
        let s = { let d = bytes(env, b)?; SendSlice(d.as_ptr(), d.len()) };
        promise_job(env, "pxb.sha256", Some(b), move || Ok(digest::sha256(s.get())), digest_js)
    })
}

unsafe extern "C" fn crc32(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b], _, _) = args::<1>(env, info)?;
        f64_val(env, crc::crc32(bytes(env, b)?) as f64)
    })
}

// --- Chunker class --------------------------------------------------------------------

unsafe extern "C" fn chunker_new(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        require_new(env, info, "Chunker")?;
        let ([avg], _, this) = args::<1>(env, info)?;
        let avg = usize_arg(env, avg, "avg chunk size")?;
        wrap_new(env, this, Chunker::new(avg)?)?;
        Ok(this)
    })
}

/// scan(buf, start = 0, end = buf.length) -> bytes of buf[start..end] up to and including a
/// boundary, or 0 when buf[start..end] all belongs to the current chunk.
unsafe extern "C" fn chunker_scan(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b, s, e], argc, this) = args::<3>(env, info)?;
        let c: &mut Chunker = unwrap_mut(env, this)?;
        let data = bytes(env, b)?;
        let start = if argc > 1 && !is_undefined(env, s)? { usize_arg(env, s, "start")? } else { 0 };
        let end = if argc > 2 && !is_undefined(env, e)? { usize_arg(env, e, "end")? } else { data.len() };
        if start > end || end > data.len() {
            return Err(format!("scan range {}..{} outside buffer of {} bytes", start, end, data.len()));
        }
        f64_val(env, c.scan(&data[start..end]) as f64)
    })
}

unsafe extern "C" fn chunker_reset(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let (_, _, this) = args::<0>(env, info)?;
        let c: &mut Chunker = unwrap_mut(env, this)?;
        c.reset();
        undefined(env)
    })
}

unsafe extern "C" fn chunker_size(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let (_, _, this) = args::<0>(env, info)?;
        let c: &mut Chunker = unwrap_mut(env, this)?;
        f64_val(env, c.chunk_size() as f64)
    })
}

// --- one-shot chunk + hash ------------------------------------------------------------

struct Chunked {
    cuts: Vec<f64>,
    digests: Vec<u8>,
}

/// Cut a whole buffer with a fresh plain chunker and hash every chunk (the last chunk is
/// whatever remains). One crossing for the whole buffer.
fn chunk_and_hash_impl(data: &[u8], avg: usize) -> NResult<Chunked> {
    let mut c = Chunker::new(avg)?;
    let mut cuts = Vec::new();
    let mut digests = Vec::new();
    let mut start = 0usize;
    while start < data.len() {
        let n = c.scan(&data[start..]);
        let end = if n == 0 { data.len() } else { start + n };
        digests.extend_from_slice(&digest::sha256(&data[start..end]));
        cuts.push(end as f64);
        start = end;
    }
    Ok(Chunked { cuts, digests })
}

unsafe fn chunked_js(env: napi_env, r: Chunked) -> NResult<napi_value> {
    let o = object(env)?;
    set(env, o, b"cuts\0", f64_array(env, &r.cuts)?)?;
    set(env, o, b"digests\0", buffer_copy(env, &r.digests)?)?;
    Ok(o)
}

unsafe extern "C" fn chunk_and_hash(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b, avg], _, _) = args::<2>(env, info)?;
        let avg = usize_arg(env, avg, "avg chunk size")?;
        chunked_js(env, chunk_and_hash_impl(bytes(env, b)?, avg)?)
    })
}

unsafe extern "C" fn chunk_and_hash_async(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b, avg], _, _) = args::<2>(env, info)?;
        let avg = usize_arg(env, avg, "avg chunk size")?;
        let s = { let d = bytes(env, b)?; SendSlice(d.as_ptr(), d.len()) };
        promise_job(env, "pxb.chunkAndHash", Some(b), move || chunk_and_hash_impl(s.get(), avg), chunked_js)
    })
}

// --- data blobs -----------------------------------------------------------------------

unsafe fn vec_js(env: napi_env, v: Vec<u8>) -> NResult<napi_value> {
    buffer_from_vec_accounted(env, v)
}

unsafe extern "C" fn encode_blob(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b, c], _, _) = args::<2>(env, info)?;
        let compress = bool_arg(env, c, "compress")?;
        let out = blob::encode(bytes(env, b)?, compress)?;
        buffer_copy(env, &out)
    })
}

unsafe extern "C" fn encode_blob_async(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b, c], _, _) = args::<2>(env, info)?;
        let compress = bool_arg(env, c, "compress")?;
        let s = { let d = bytes(env, b)?; SendSlice(d.as_ptr(), d.len()) };
        promise_job(env, "pxb.encodeBlob", Some(b), move || blob::encode(s.get(), compress), vec_js)
    })
}

unsafe fn limit_arg(env: napi_env, argc: usize, v: napi_value) -> NResult<usize> {
    if argc > 1 && !is_undefined(env, v)? { usize_arg(env, v, "limit") } else { Ok(blob::MAX_CHUNK_SIZE) }
}

/// decodeBlob(blob, limit = 16 MiB) -> Buffer. Checks magic, CRC and the size limit.
unsafe extern "C" fn decode_blob(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b, l], argc, _) = args::<2>(env, info)?;
        let limit = limit_arg(env, argc, l)?;
        let out = blob::decode(bytes(env, b)?, limit)?;
        buffer_copy(env, &out)
    })
}

unsafe extern "C" fn decode_blob_async(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b, l], argc, _) = args::<2>(env, info)?;
        let limit = limit_arg(env, argc, l)?;
        let s = { let d = bytes(env, b)?; SendSlice(d.as_ptr(), d.len()) };
        promise_job(env, "pxb.decodeBlob", Some(b), move || blob::decode(s.get(), limit), vec_js)
    })
}

/// verifyBlob(blob) -> "uncompressed" | "zstd" | "encrypted" | "encrypted+zstd"; throws on a
/// bad magic or CRC.
unsafe extern "C" fn verify_blob(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b], _, _) = args::<1>(env, info)?;
        str_val(env, blob::verify_crc(bytes(env, b)?)?.name())
    })
}

struct Processed {
    digest: [u8; 32],
    blob: Vec<u8>,
}

unsafe fn processed_js(env: napi_env, p: Processed) -> NResult<napi_value> {
    let o = object(env)?;
    set(env, o, b"digest\0", buffer_copy(env, &p.digest)?)?;
    set(env, o, b"blob\0", buffer_from_vec_accounted(env, p.blob)?)?;
    Ok(o)
}

/// processChunk(chunk, compress) -> Promise<{digest, blob}>: SHA-256 and blob encoding of one
/// chunk on a pool thread. The chunk Buffer is pinned, not copied.
unsafe extern "C" fn process_chunk(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b, c], _, _) = args::<2>(env, info)?;
        let compress = bool_arg(env, c, "compress")?;
        let s = { let d = bytes(env, b)?; SendSlice(d.as_ptr(), d.len()) };
        if s.1 > blob::MAX_CHUNK_SIZE {
            return Err(format!("chunk of {} bytes exceeds the 16 MiB maximum", s.1));
        }
        promise_job(env, "pxb.processChunk", Some(b), move || {
            let data = s.get();
            Ok(Processed { digest: digest::sha256(data), blob: blob::encode(data, compress)? })
        }, processed_js)
    })
}
