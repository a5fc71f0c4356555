//! pxar encoding exports (crate::pxar): the records of a run of plain reused files.
use super::rt::*;
use super::sys::*;
use crate::pxar::{Items, PlainRun};

pub unsafe fn register(env: napi_env, exports: napi_value) -> NResult<()> {
    let props = [method(b"pxarPlainRun\0", plain_run)];
    napi!(env, napi_define_properties(env, exports, props.len(), props.as_ptr()))
}

unsafe fn num(env: napi_env, v: napi_value, what: &str) -> NResult<f64> {
    let mut x = 0f64;
    napi!(env, napi_get_value_double(env, v, &mut x)).map_err(|_| format!("{} must be a number", what))?;
    Ok(x)
}

/// pxarPlainRun(out, at, pos, names, ends, nums, from, to, delta, payloadPos, hashLo, hashHi,
/// itemOffset, itemSize, itemAt) -> files written. Checks files `from..to` (throws, writing
/// nothing, if one is refused), then writes their records into `out[at..]` while they fit, `pos`
/// being the stream position of `out[at]`, and their goodbye items from index `itemAt` while the
/// item arrays have room. The caller advances by the bytes of the files written
/// (`PlainRun::record_size`: 121 + name length each) and calls again for the rest.
unsafe extern "C" fn plain_run(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let (a, argc, _) = args::<15>(env, info)?;
        if argc < 15 {
            return Err("pxarPlainRun: 15 arguments expected".into());
        }
        let out = bytes(env, a[0])?;
        let at = usize_arg(env, a[1], "at")?;
        let pos = num(env, a[2], "pos")?;
        let names = bytes(env, a[3])?;
        let ends: &[u32] = typed_slice(env, a[4], NAPI_UINT32_ARRAY, "ends")?;
        let nums: &[f64] = typed_slice(env, a[5], NAPI_FLOAT64_ARRAY, "nums")?;
        let from = usize_arg(env, a[6], "from")?;
        let to = usize_arg(env, a[7], "to")?;
        let delta = num(env, a[8], "delta")?;
        let payload_pos = num(env, a[9], "payloadPos")?;
        let mut items = Items {
            hash_lo: typed_slice(env, a[10], NAPI_UINT32_ARRAY, "hashLo")?,
            hash_hi: typed_slice(env, a[11], NAPI_UINT32_ARRAY, "hashHi")?,
            offset: typed_slice(env, a[12], NAPI_FLOAT64_ARRAY, "itemOffset")?,
            size: typed_slice(env, a[13], NAPI_FLOAT64_ARRAY, "itemSize")?,
        };
        let item_at = usize_arg(env, a[14], "itemAt")?;
        if at > out.len() {
            return Err(format!("pxarPlainRun: offset {} beyond the output ({} bytes)", at, out.len()));
        }
        let run = PlainRun { names, ends, nums, delta };
        run.check(from, to, payload_pos)?;
        // (the output is a Buffer the caller owns for the duration of the call)
        let out = std::slice::from_raw_parts_mut(out.as_ptr() as *mut u8, out.len());
        let (n, _) = run.write(&mut out[at..], from, to, pos, &mut items, item_at);
        f64_val(env, n as f64)
    })
}
