//! `FsWalker`: the backup walk's listings (crate::fs::walk) for the JS thread.
//!
//! `new FsWalker(root, opts, devs, lookahead, lookaheadBytes, threads, onReady)`; `poll(id)` →
//! `[ArrayBuffer | Error, Int32Array]` or undefined; `want(id)` → true when `onReady(id)` will
//! be called; `drop(ids)`; `ref(on)` (whether a pending `onReady` keeps the event loop alive);
//! `close()`. `devs`: a BigUint64Array of the devices to descend into, or null for all.
use super::fs::{array_items, flag_arg, fs_error, layout_js, options_obj, opts_arg, path_arg, type_error, type_of, u32_arg};
use super::rt::*;
use super::sys::*;
use crate::fs::walk::Walker;
use std::os::raw::c_void;
use std::ptr::null_mut;

struct WalkerJs {
    walker: Option<Walker>,
    tsfn: napi_threadsafe_function,
    env: napi_env,
    /// Pins the metadata-cache table the walk reads (not copied: it grows with the tree).
    table: napi_ref,
}

struct Tsfn(napi_threadsafe_function);
unsafe impl Send for Tsfn {}
unsafe impl Sync for Tsfn {}

pub unsafe fn register(env: napi_env, exports: napi_value) -> NResult<()> {
    let cls = define_class(
        env,
        b"FsWalker\0",
        walker_new,
        &[
            method(b"poll\0", walker_poll),
            method(b"want\0", walker_want),
            method(b"drop\0", walker_drop),
            method(b"ref\0", walker_ref),
            method(b"close\0", walker_close),
        ],
    )?;
    let props = [value_prop(b"FsWalker\0", cls)];
    napi!(env, napi_define_properties(env, exports, props.len(), props.as_ptr()))
}

/// On the JS thread: hand a ready node id to the `onReady` callback.
unsafe extern "C" fn on_ready(env: napi_env, cb: napi_value, _ctx: *mut c_void, data: *mut c_void) {
    if env.is_null() || cb.is_null() {
        return; // closing: nothing to deliver
    }
    let mut id = null_mut();
    let mut undef = null_mut();
    if napi_create_int32(env, data as usize as i32, &mut id) != NAPI_OK || napi_get_undefined(env, &mut undef) != NAPI_OK {
        return;
    }
    let mut out = null_mut();
    // An exception thrown by the callback stays pending and surfaces as uncaught.
    napi_call_function(env, undef, cb, 1, &id, &mut out);
}

impl WalkerJs {
    /// Join the walker's threads, then release the thread-safe function (nothing calls it
    /// after). False when it was stopped already.
    unsafe fn stop(&mut self) -> bool {
        let Some(mut w) = self.walker.take() else { return false };
        w.close();
        napi_release_threadsafe_function(self.tsfn, NAPI_TSFN_ABORT);
        true
    }

    /// `stop`, and forget the cleanup hook and the pinned table.
    unsafe fn close(&mut self) {
        if self.stop() {
            napi_remove_env_cleanup_hook(self.env, Some(cleanup_hook), self as *mut WalkerJs as *mut c_void);
            if !self.table.is_null() {
                napi_delete_reference(self.env, self.table);
                self.table = null_mut();
            }
        }
    }
}

/// The environment is going away with a walker still open: stop its threads first.
unsafe extern "C" fn cleanup_hook(arg: *mut c_void) {
    (*(arg as *mut WalkerJs)).stop();
}

unsafe extern "C" fn finalize_walker(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
    let mut w = Box::from_raw(data as *mut WalkerJs);
    w.close();
}

unsafe extern "C" fn walker_new(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        require_new(env, info, "FsWalker")?;
        let ([root, o, devs, lookahead, lookahead_bytes, threads, cb], _, this) = args::<7>(env, info)?;
        let root = path_arg(env, root, "root")?;
        // The table (if any) is pinned below until close(); the caller must not change it.
        let (mut opts, keep) = opts_arg(env, o)?;
        // holdFds: keep regular files' descriptors for their reads (crate::fs::held)
        if type_of(env, o)? != NAPI_UNDEFINED_T && flag_arg(env, options_obj(env, o)?(b"holdFds\0")?, "options.holdFds")? {
            opts.hold = Some(crate::fs::held::new_owner());
        }
        let devs = if matches!(type_of(env, devs)?, NAPI_NULL_T | NAPI_UNDEFINED_T) {
            None
        } else {
            let b = bytes(env, devs).map_err(|_| type_error(env, "devs must be a BigUint64Array or null"))?;
            Some(b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>())
        };
        let lookahead = u32_arg(env, lookahead, "lookahead")? as usize;
        let lookahead_bytes = u32_arg(env, lookahead_bytes, "lookaheadBytes")? as usize;
        let threads = u32_arg(env, threads, "threads")? as usize;
        let mut tsfn = null_mut();
        napi!(env, napi_create_threadsafe_function(env, cb, null_mut(), str_val(env, "pxb.fs.walk")?, 0, 1, null_mut(), None, null_mut(), Some(on_ready), &mut tsfn))?;
        napi!(env, napi_unref_threadsafe_function(env, tsfn))?;
        let t = Tsfn(tsfn);
        let notify = Box::new(move |id: u32| {
            let t = &t;
            napi_call_threadsafe_function(t.0, id as usize as *mut c_void, NAPI_TSFN_NONBLOCKING);
        });
        let mut table = null_mut();
        if let Some(t) = keep {
            napi!(env, napi_create_reference(env, t, 1, &mut table))?;
        }
        let walker = Walker::new(root, opts, devs, lookahead, lookahead_bytes, threads, notify);
        let p = Box::into_raw(Box::new(WalkerJs { walker: Some(walker), tsfn, env, table }));
        if let Err(e) = napi!(env, napi_wrap(env, this, p as *mut c_void, Some(finalize_walker), null_mut(), null_mut())) {
            finalize_walker(env, p as *mut c_void, null_mut());
            return Err(e);
        }
        napi!(env, napi_add_env_cleanup_hook(env, Some(cleanup_hook), p as *mut c_void))?;
        Ok(this)
    })
}

unsafe fn open<'a>(env: napi_env, this: napi_value) -> NResult<(&'a mut WalkerJs, &'a Walker)> {
    let w: &mut WalkerJs = unwrap_mut(env, this)?;
    let walker = w.walker.as_ref().ok_or_else(|| "the walk is closed".to_string())? as *const Walker;
    Ok((w, &*walker))
}

unsafe extern "C" fn walker_poll(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([id], _, this) = args::<1>(env, info)?;
        let (_, w) = open(env, this)?;
        match w.poll(u32_arg(env, id, "id")?)? {
            None => undefined(env),
            Some((listing, kids)) => {
                let arr = array(env, 2)?;
                let first = match listing {
                    Ok(b) => layout_js(env, b, null_mut())?,
                    Err(e) => fs_error(env, &e)?,
                };
                push(env, arr, 0, first)?;
                push(env, arr, 1, i32_array(env, &kids)?)?;
                Ok(arr)
            }
        }
    })
}

unsafe extern "C" fn walker_want(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([id], _, this) = args::<1>(env, info)?;
        let (_, w) = open(env, this)?;
        bool_val(env, w.want(u32_arg(env, id, "id")?)?)
    })
}

unsafe extern "C" fn walker_drop(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([ids], _, this) = args::<1>(env, info)?;
        let (_, w) = open(env, this)?;
        let mut v = Vec::new();
        for x in array_items(env, ids, "ids")? {
            v.push(u32_arg(env, x, "id")?);
        }
        w.drop_nodes(&v);
        undefined(env)
    })
}

unsafe extern "C" fn walker_ref(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([on], _, this) = args::<1>(env, info)?;
        let (w, _) = open(env, this)?;
        if bool_arg(env, on, "on")? {
            napi!(env, napi_ref_threadsafe_function(env, w.tsfn))?;
        } else {
            napi!(env, napi_unref_threadsafe_function(env, w.tsfn))?;
        }
        undefined(env)
    })
}

unsafe extern "C" fn walker_close(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let (_, _, this) = args::<0>(env, info)?;
        let w: &mut WalkerJs = unwrap_mut(env, this)?;
        w.close();
        undefined(env)
    })
}
