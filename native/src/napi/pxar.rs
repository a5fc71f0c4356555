//! pxar encoding exports (crate::pxar): the records of a run of plain reused files.
use super::rt::*;
use super::sys::*;
use crate::pxar::{goodbye_size, siphash24, write_goodbye, Items, PlainRun};

pub unsafe fn register(env: napi_env, exports: napi_value) -> NResult<()> {
    let props = [method(b"pxarPlainRun\0", plain_run), method(b"pxarGoodbye\0", goodbye), method(b"pxarSipHash\0", sip_hash)];
    napi!(env, napi_define_properties(env, exports, props.len(), props.as_ptr()))
}

unsafe fn num(env: napi_env, v: napi_value, what: &str) -> NResult<f64> {
    let mut x = 0f64;
    napi!(env, napi_get_value_double(env, v, &mut x)).map_err(|_| format!("{} must be a number", what))?;
    Ok(x)
}

/// The `N` arguments of a call whose first two are an output Buffer and an offset in it: the
/// arguments and the output from that offset on (writable: the caller's Buffer, for the call).
unsafe fn output_args<'a, const N: usize>(env: napi_env, info: napi_callback_info, what: &str) -> NResult<([napi_value; N], &'a mut [u8])> {
    let (a, argc, _) = args::<N>(env, info)?;
    if argc < N {
        return Err(format!("{}: {} arguments expected", what, N));
    }
    let out = bytes_mut(env, a[0])?;
    let at = usize_arg(env, a[1], "at")?;
    if at > out.len() {
        return Err(format!("{}: offset {} beyond the output ({} bytes)", what, at, out.len()));
    }
    Ok((a, &mut out[at..]))
}

/// Goodbye item columns (hashLo, hashHi, itemOffset, itemSize) from four typed arrays.
unsafe fn items_arg<'a>(env: napi_env, a: &[napi_value]) -> NResult<Items<'a>> {
    Ok(Items {
        hash_lo: typed_slice(env, a[0], "hashLo")?,
        hash_hi: typed_slice(env, a[1], "hashHi")?,
        offset: typed_slice(env, a[2], "itemOffset")?,
        size: typed_slice(env, a[3], "itemSize")?,
    })
}

/// pxarPlainRun(out, at, pos, names, ends, nums, from, to, delta, payloadPos, hashLo, hashHi,
/// itemOffset, itemSize, itemAt) -> files written. Checks files `from..to` (throws, writing
/// nothing, if one is refused), then writes their records into `out[at..]` while they fit, `pos`
/// being the stream position of `out[at]`, and their goodbye items from index `itemAt` while the
/// item arrays have room. The caller advances by the bytes of the files written
/// (`PlainRun::record_size`: 121 + name length each) and calls again for the rest.
unsafe extern "C" fn plain_run(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let (a, out) = output_args::<15>(env, info, "pxarPlainRun")?;
        let pos = num(env, a[2], "pos")?;
        let names = bytes(env, a[3])?;
        let ends: &[u32] = typed_slice(env, a[4], "ends")?;
        let nums: &[f64] = typed_slice(env, a[5], "nums")?;
        let from = usize_arg(env, a[6], "from")?;
        let to = usize_arg(env, a[7], "to")?;
        let delta = num(env, a[8], "delta")?;
        let payload_pos = num(env, a[9], "payloadPos")?;
        let mut items = items_arg(env, &a[10..14])?;
        let item_at = usize_arg(env, a[14], "itemAt")?;
        let run = PlainRun { names, ends, nums, delta };
        run.check(from, to, payload_pos)?;
        let (n, _) = run.write(out, from, to, pos, &mut items, item_at);
        f64_val(env, n as f64)
    })
}

/// pxarSipHash(data, out): SipHash-2-4 of `data` with the pxar keys into `out` (a Uint32Array
/// of at least 2) as [low, high] halves.
unsafe extern "C" fn sip_hash(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let (a, argc, _) = args::<2>(env, info)?;
        if argc < 2 {
            return Err("pxarSipHash: 2 arguments expected".to_string());
        }
        let h = siphash24(bytes(env, a[0])?);
        let out: &mut [u32] = typed_slice(env, a[1], "out")?;
        if out.len() < 2 {
            return Err("pxarSipHash: out must hold 2 numbers".to_string());
        }
        out[0] = h as u32;
        out[1] = (h >> 32) as u32;
        undefined(env)
    })
}

/// pxarGoodbye(out, at, hashLo, hashHi, itemOffset, itemSize, n, goodbyePos, entryPos) ->
/// bytes written: the GOODBYE item of a directory's first `n` goodbye items into `out[at..]`
/// (crate::pxar::write_goodbye; 16 + 24 (n + 1) bytes, which must fit).
unsafe extern "C" fn goodbye(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let (a, out) = output_args::<9>(env, info, "pxarGoodbye")?;
        let items = items_arg(env, &a[2..6])?;
        let n = usize_arg(env, a[6], "n")?;
        let goodbye_pos = num(env, a[7], "goodbyePos")?;
        let entry_pos = num(env, a[8], "entryPos")?;
        if n > items.capacity() {
            return Err(format!("pxarGoodbye: {} items, the arrays hold {}", n, items.capacity()));
        }
        let full = goodbye_size(n);
        if out.len() < full {
            return Err(format!("pxarGoodbye: {} bytes do not fit in {}", full, out.len()));
        }
        write_goodbye(&mut out[..full], &items, n, goodbye_pos, entry_pos);
        f64_val(env, full as f64)
    })
}
