//! N-API exports of `crate::fs` (all names prefixed `fs`; typed wrapper: ts/native/fs.ts).
//!
//! * Paths and xattr names are Buffers (raw bytes, any encoding) or strings (UTF-8).
//! * Bad arguments throw a TypeError (code ERR_INVALID_ARG_TYPE) before any work starts.
//! * File-system failures become node-style errors: `code` ("ENOENT"), `errno` (negative, as
//!   node's fs uses), `syscall`, `path` (lossy UTF-8); async ones reject their promise.
//! * Async work never touches N-API on the pool thread: inputs are copied to Rust values
//!   first; the only JS memory written from the pool is the output Buffer of readFilesExact,
//!   created here, pinned by a reference and not visible to JS until the promise settles.
//!   writeFilesBatch reads (never writes) the caller's data Buffer in place, pinned the same
//!   way (no copy); the caller must not change it until the promise settles.
use super::rt::*;
use super::sys::*;
use crate::fs::dir::{self, MetaOpts, UnchangedTable};
use crate::fs::error::FsError;
use crate::fs::write::{self, AtomicOpts, WriteOpts, WriteSpec};
use crate::fs::unchanged::{self, TreeCheck};
use crate::fs::{c_path, read, restore, touch};
use std::ffi::CString;
use std::os::raw::{c_char, c_void};
use std::ptr::null_mut;

pub unsafe fn register(env: napi_env, exports: napi_value) -> NResult<()> {
    let props = [
        method(b"fsReadDirs\0", read_dirs),
        method(b"fsStatPath\0", stat_path),
        method(b"fsReadFilesExact\0", read_files_exact),
        method(b"fsBytesRead\0", bytes_read),
        method(b"fsTakeHeld\0", take_held),
        method(b"fsHeldSlots\0", held_slots),
        method(b"fsMknod\0", mknod),
        method(b"fsLchown\0", lchown),
        method(b"fsUtimens\0", utimens),
        method(b"fsSetxattr\0", setxattr),
        method(b"fsGetxattr\0", getxattr),
        method(b"fsListXattrs\0", list_xattrs),
        method(b"fsSetFlags\0", set_flags),
        method(b"fsSetProjid\0", set_projid),
        method(b"fsWriteFilesBatch\0", write_files_batch),
        method(b"fsSyncfs\0", syncfs),
        method(b"fsWriteFileAtomic\0", write_file_atomic),
        method(b"fsStoreChunk\0", store_chunk),
        method(b"fsReadChunkInto\0", read_chunk_into),
        method(b"fsTouchFiles\0", touch_files),
        method(b"fsTouchChunks\0", touch_chunks),
        method(b"fsFlock\0", flock),
        method(b"fsOpenPath\0", open_path),
        method(b"fsSortUnchangedTable\0", sort_unchanged_table),
        method(b"fsTreeUnchanged\0", tree_unchanged),
    ];
    napi!(env, napi_define_properties(env, exports, props.len(), props.as_ptr()))
}

// --- errors --------------------------------------------------------------------------

/// Throw a TypeError; returns the empty message that tells `guard` an exception is pending.
pub(super) unsafe fn type_error(env: napi_env, msg: &str) -> String {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    napi_throw_type_error(env, b"ERR_INVALID_ARG_TYPE\0".as_ptr() as *const c_char, c.as_ptr());
    String::new()
}

/// A node-style Error object for `e`.
pub(super) unsafe fn fs_error(env: napi_env, e: &FsError) -> NResult<napi_value> {
    let mut err = null_mut();
    napi!(env, napi_create_error(env, str_val(env, &e.code())?, str_val(env, &e.message())?, &mut err))?;
    let mut errno = null_mut();
    napi!(env, napi_create_int32(env, -e.errno, &mut errno))?;
    set(env, err, b"errno\0", errno)?;
    set(env, err, b"syscall\0", str_val(env, e.syscall)?)?;
    set(env, err, b"path\0", str_val(env, &String::from_utf8_lossy(&e.path))?)?;
    Ok(err)
}

unsafe fn throw_fs(env: napi_env, e: &FsError) -> String {
    match fs_error(env, e) {
        Ok(v) => {
            napi_throw(env, v);
            String::new()
        }
        Err(m) => m,
    }
}

// --- arguments -----------------------------------------------------------------------

pub(super) unsafe fn type_of(env: napi_env, v: napi_value) -> NResult<i32> {
    let mut t = 0;
    napi!(env, napi_typeof(env, v, &mut t))?;
    Ok(t)
}

/// A Buffer/Uint8Array (raw bytes) or a string (UTF-8), without NUL bytes.
pub(super) unsafe fn path_arg(env: napi_env, v: napi_value, what: &str) -> NResult<CString> {
    let raw: Vec<u8> = match type_of(env, v)? {
        NAPI_STRING_T => string_arg(env, v, what)?.into_bytes(),
        NAPI_OBJECT_T => match bytes(env, v) {
            Ok(b) => b.to_vec(),
            Err(_) => return Err(type_error(env, &format!("{} must be a Buffer or a string", what))),
        },
        _ => return Err(type_error(env, &format!("{} must be a Buffer or a string", what))),
    };
    c_path(&raw, what).map_err(|m| type_error(env, &m))
}

/// `path_arg` of item `i` of the array `name`: its message is only formatted for a bad item (a
/// batch of small files has thousands of items: formatting each one's name cost the JavaScript
/// thread ~0.1 us apiece).
unsafe fn path_item(env: napi_env, v: napi_value, name: &str, i: usize) -> NResult<CString> {
    if type_of(env, v)? == NAPI_OBJECT_T {
        if let Ok(c) = bytes(env, v).map_err(|_| String::new()).and_then(|b| c_path(b, name)) {
            return Ok(c);
        }
    }
    path_arg(env, v, &format!("{}[{}]", name, i))
}

/// `number_arg` of item `i` of the array `name` (see path_item).
unsafe fn number_item(env: napi_env, v: napi_value, name: &str, i: usize) -> NResult<f64> {
    let mut x = 0f64;
    if type_of(env, v)? == NAPI_NUMBER_T && napi_get_value_double(env, v, &mut x) == NAPI_OK && x.fract() == 0.0 && x.is_finite() && x.abs() <= 9007199254740991.0 {
        return Ok(x);
    }
    number_arg(env, v, &format!("{}[{}]", name, i))
}

unsafe fn number_arg(env: napi_env, v: napi_value, what: &str) -> NResult<f64> {
    if type_of(env, v)? != NAPI_NUMBER_T {
        return Err(type_error(env, &format!("{} must be a number", what)));
    }
    let mut x = 0f64;
    napi!(env, napi_get_value_double(env, v, &mut x))?;
    if x.fract() != 0.0 || !x.is_finite() || x.abs() > 9007199254740991.0 {
        return Err(type_error(env, &format!("{} must be a safe integer, got {}", what, x)));
    }
    Ok(x)
}

pub(super) unsafe fn u32_arg(env: napi_env, v: napi_value, what: &str) -> NResult<u32> {
    let x = number_arg(env, v, what)?;
    if !(0.0..=u32::MAX as f64).contains(&x) {
        return Err(type_error(env, &format!("{} must be in 0..=4294967295, got {}", what, x)));
    }
    Ok(x as u32)
}

/// A uid/gid; -1 means "leave unchanged" (as in chown(2)).
unsafe fn id_arg(env: napi_env, v: napi_value, what: &str) -> NResult<u32> {
    if number_arg(env, v, what)? == -1.0 {
        return Ok(u32::MAX);
    }
    u32_arg(env, v, what)
}

/// A boolean; `undefined` is false.
pub(super) unsafe fn flag_arg(env: napi_env, v: napi_value, what: &str) -> NResult<bool> {
    match type_of(env, v)? {
        NAPI_UNDEFINED_T => Ok(false),
        NAPI_BOOLEAN_T => bool_arg(env, v, what),
        _ => Err(type_error(env, &format!("{} must be a boolean", what))),
    }
}

/// The options and, when they carry an `unchanged` table, that buffer (to pin for the job).
pub(super) unsafe fn opts_arg(env: napi_env, v: napi_value) -> NResult<(MetaOpts, Option<napi_value>)> {
    if type_of(env, v)? == NAPI_UNDEFINED_T {
        return Ok((MetaOpts::default(), None));
    }
    let prop = options_obj(env, v)?;
    let get = |name: &'static [u8], what: &str| -> NResult<bool> { flag_arg(env, prop(name)?, what) };
    let u = prop(b"unchanged\0")?;
    let (unchanged, keep) = match if is_undefined(env, u)? { &[][..] } else { table_arg(env, u, "options.unchanged")? } {
        [] => (None, None),
        t => (Some(UnchangedTable::new(t.as_ptr(), t.len() / dir::RECORD_WORDS)), Some(u)),
    };
    let opts = MetaOpts {
        xattrs: get(b"xattrs\0", "options.xattrs")?,
        acls: get(b"acls\0", "options.acls")?,
        fcaps: get(b"fcaps\0", "options.fcaps")?,
        flags: get(b"flags\0", "options.flags")?,
        projid: get(b"projid\0", "options.projid")?,
        unchanged,
        hold: None,
    };
    Ok((opts, keep))
}

/// A metadata-cache table argument as u64 words (`dir::RECORD_WORDS` per record); refuses a
/// buffer that is not 8-aligned or not whole records.
unsafe fn table_arg<'a>(env: napi_env, v: napi_value, what: &str) -> NResult<&'a [u64]> {
    let b = buffer_arg(env, v, what)?;
    if b.is_empty() {
        return Ok(&[]);
    }
    if b.len() % (8 * dir::RECORD_WORDS) != 0 || b.as_ptr() as usize % 8 != 0 {
        return Err(type_error(env, &format!("{} must be 8-aligned records of {} bytes", what, 8 * dir::RECORD_WORDS)));
    }
    Ok(std::slice::from_raw_parts(b.as_ptr() as *const u64, b.len() / 8))
}

pub(super) unsafe fn array_items(env: napi_env, v: napi_value, what: &str) -> NResult<Vec<napi_value>> {
    let mut is = false;
    napi!(env, napi_is_array(env, v, &mut is))?;
    if !is {
        return Err(type_error(env, &format!("{} must be an array", what)));
    }
    let mut n = 0u32;
    napi!(env, napi_get_array_length(env, v, &mut n))?;
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut x = null_mut();
        napi!(env, napi_get_element(env, v, i, &mut x))?;
        out.push(x);
    }
    Ok(out)
}

/// A Buffer/Uint8Array argument (read in place; pin it if a job reads it later).
unsafe fn buffer_arg<'a>(env: napi_env, v: napi_value, what: &str) -> NResult<&'a [u8]> {
    if type_of(env, v)? != NAPI_OBJECT_T {
        return Err(type_error(env, &format!("{} must be a Buffer", what)));
    }
    bytes(env, v).map_err(|_| type_error(env, &format!("{} must be a Buffer", what)))
}

/// An options object; `get(name)` reads one of its properties (`name` NUL-terminated).
pub(super) unsafe fn options_obj(env: napi_env, o: napi_value) -> NResult<impl Fn(&'static [u8]) -> NResult<napi_value>> {
    if type_of(env, o)? != NAPI_OBJECT_T {
        return Err(type_error(env, "options must be an object"));
    }
    Ok(move |name: &'static [u8]| -> NResult<napi_value> {
        let mut x = null_mut();
        napi!(env, napi_get_named_property(env, o, name.as_ptr() as *const c_char, &mut x))?;
        Ok(x)
    })
}

// --- promise jobs with node-style rejections ---------------------------------------------

enum Fail {
    Fs(FsError),
    Msg(String),
}

impl From<String> for Fail {
    fn from(m: String) -> Fail {
        Fail::Msg(m)
    }
}

/// File-system failures reject with node-style errors (`code`, `errno`, `syscall`, `path`).
impl JobError for Fail {
    unsafe fn rejection(self, env: napi_env) -> NResult<napi_value> {
        match self {
            Fail::Fs(e) => fs_error(env, &e),
            Fail::Msg(m) => m.rejection(env),
        }
    }
}

type ToJs<T> = unsafe fn(napi_env, T, napi_value) -> NResult<napi_value>;

/// Run `task` on `lane` (see `spawn_job`); failures reject node-style.
unsafe fn spawn<T: Send + 'static>(
    env: napi_env,
    lane: Lane,
    name: &str,
    keep: Option<napi_value>,
    task: impl FnOnce() -> Result<T, Fail> + Send + 'static,
    to_js: ToJs<T>,
) -> NResult<napi_value> {
    spawn_job(env, lane, name, keep, task, move |env, v, kept| to_js(env, v, kept))
}

// --- readDir / statPath ------------------------------------------------------------------

/// The listing as one ArrayBuffer (layout: crate::fs::dir module doc).
pub(super) unsafe fn layout_js(env: napi_env, v: Vec<u8>, _kept: napi_value) -> NResult<napi_value> {
    let mut data: *mut c_void = null_mut();
    let mut ab = null_mut();
    napi!(env, napi_create_arraybuffer(env, v.len(), &mut data, &mut ab))?;
    if !v.is_empty() {
        std::ptr::copy_nonoverlapping(v.as_ptr(), data as *mut u8, v.len());
    }
    Ok(ab)
}

/// fsReadDirs(paths, opts) -> Promise<Array<ArrayBuffer | Error>>: directories listed in one
/// pool job (layout: crate::fs::dir module doc); a directory that cannot be listed gets its
/// error in its slot. Queuing a job wakes a pool thread, which costs the JS thread ~150 us
/// under load (20-30 us idle): a walk lists runs of directories per job.
unsafe extern "C" fn read_dirs(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([ps, o], _, _) = args::<2>(env, info)?;
        let mut paths = Vec::new();
        for p in array_items(env, ps, "paths")? {
            paths.push(path_arg(env, p, "path")?);
        }
        let (opts, keep) = opts_arg(env, o)?;
        let task = move || Ok(paths.iter().map(|p| dir::read_dir(p, &opts)).collect::<Vec<_>>());
        spawn(env, Lane::Io, "pxb.fs.readDirs", keep, task, listings_js)
    })
}

unsafe fn listings_js(env: napi_env, v: Vec<Result<Vec<u8>, FsError>>, kept: napi_value) -> NResult<napi_value> {
    let arr = array(env, v.len())?;
    for (k, r) in v.into_iter().enumerate() {
        let x = match r {
            Ok(bytes) => layout_js(env, bytes, kept)?,
            Err(e) => fs_error(env, &e)?,
        };
        push(env, arr, k as u32, x)?;
    }
    Ok(arr)
}

/// fsStatPath(path, opts) -> Promise<ArrayBuffer> (one entry)
unsafe extern "C" fn stat_path(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p, o], _, _) = args::<2>(env, info)?;
        let path = path_arg(env, p, "path")?;
        let (opts, keep) = opts_arg(env, o)?;
        spawn(env, Lane::Io, "pxb.fs.statPath", keep, move || dir::stat_path(&path, &opts).map_err(Fail::Fs), layout_js)
    })
}

// --- readFilesExact ----------------------------------------------------------------------

/// A JS buffer a pool job writes into (pinned by the job until it settles).
struct OutPtr(*mut u8, usize);
unsafe impl Send for OutPtr {}

impl OutPtr {
    /// SAFETY: the buffer is pinned, and nothing else reads or writes it while the job runs.
    unsafe fn slice<'a>(&self) -> &'a mut [u8] {
        if self.1 == 0 { &mut [] } else { std::slice::from_raw_parts_mut(self.0, self.1) }
    }
}

type ReadResult = (Vec<i32>, Vec<(usize, FsError)>);

/// `{status: Int32Array, errors: [{index, code, errno, syscall, message}]}`: the per-file
/// outcome of a batch (readFilesExact, writeFilesBatch).
unsafe fn batch_result_js(env: napi_env, status: &[i32], errors: &[(usize, FsError)]) -> NResult<napi_value> {
    let o = object(env)?;
    let ta = i32_array(env, status)?;
    set(env, o, b"status\0", ta)?;
    let arr = array(env, errors.len())?;
    for (k, (index, e)) in errors.iter().enumerate() {
        let x = object(env)?;
        set(env, x, b"index\0", f64_val(env, *index as f64)?)?;
        set(env, x, b"code\0", str_val(env, &e.code())?)?;
        let mut errno = null_mut();
        napi!(env, napi_create_int32(env, -e.errno, &mut errno))?;
        set(env, x, b"errno\0", errno)?;
        set(env, x, b"syscall\0", str_val(env, e.syscall)?)?;
        set(env, x, b"message\0", str_val(env, &e.message())?)?;
        push(env, arr, k as u32, x)?;
    }
    set(env, o, b"errors\0", arr)?;
    Ok(o)
}

unsafe fn files_js(env: napi_env, r: ReadResult, data: napi_value) -> NResult<napi_value> {
    let o = batch_result_js(env, &r.0, &r.1)?;
    set(env, o, b"data\0", data)?;
    Ok(o)
}

/// fsReadFilesExact(paths, sizes, into?, base?) -> Promise<{data, status, errors}>. With `into`
/// (a Buffer of at least the summed sizes, pinned until the job completes) the files are read
/// into it and `data` is `into` itself, so callers can recycle read buffers. With `base` the
/// paths are names relative to that directory.
unsafe extern "C" fn read_files_exact(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([ps, ss, into, bs, hs], argc, _) = args::<5>(env, info)?;
        let base = if argc >= 4 && !is_undefined(env, bs)? { Some(path_arg(env, bs, "base")?) } else { None };
        // held: a Float64Array of descriptor tokens (crate::fs::held), one per path, -1: none
        let held = if argc >= 5 && !is_undefined(env, hs)? {
            let b = bytes(env, hs).map_err(|_| type_error(env, "held must be a Float64Array"))?;
            Some(b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect::<Vec<f64>>())
        } else {
            None
        };
        let pv = array_items(env, ps, "paths")?;
        let sv = array_items(env, ss, "sizes")?;
        if pv.len() != sv.len() {
            return Err(type_error(env, &format!("paths ({}) and sizes ({}) differ in length", pv.len(), sv.len())));
        }
        let mut paths = Vec::with_capacity(pv.len());
        let mut sizes = Vec::with_capacity(pv.len());
        let mut total = 0usize;
        for (i, (&p, &s)) in pv.iter().zip(&sv).enumerate() {
            paths.push(path_item(env, p, "paths", i)?);
            let size = number_item(env, s, "sizes", i)?;
            if size < 0.0 {
                return Err(type_error(env, &format!("sizes[{}] must not be negative", i)));
            }
            sizes.push(size as usize);
            total = total.checked_add(size as usize).ok_or_else(|| "sizes overflow".to_string())?;
        }
        if let Some(h) = held.as_ref().filter(|h| h.len() != paths.len()) {
            return Err(type_error(env, &format!("held ({}) and paths ({}) differ in length", h.len(), paths.len())));
        }
        let mut data: *mut c_void = null_mut();
        let mut buf = null_mut();
        if argc >= 3 && !is_undefined(env, into)? {
            let mut len = 0usize;
            napi!(env, napi_get_buffer_info(env, into, &mut data, &mut len))
                .map_err(|_| type_error(env, "into must be a Buffer or Uint8Array"))?;
            if len < total {
                return Err(type_error(env, &format!("into holds {} bytes, the files need {}", len, total)));
            }
            buf = into;
        } else {
            napi!(env, napi_create_buffer(env, total, &mut data, &mut buf))?;
        }
        let out = OutPtr(data as *mut u8, total);
        spawn(env, Lane::Io, "pxb.fs.readFilesExact", Some(buf), move || {
            let out = out;
            Ok(read::read_files_exact(base.as_ref(), &paths, &sizes, held.as_deref(), out.slice()))
        }, files_js)
    })
}

/// fsTakeHeld(token) -> number: the descriptor a walk held under `token` (crate::fs::held),
/// the caller's to close now; -1 when it is not held (any more).
unsafe extern "C" fn take_held(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([t], _, _) = args::<1>(env, info)?;
        let token = number_arg(env, t, "token")?;
        let fd = crate::fs::held::take(token).map_or(-1, |fd| {
            let n = fd.0;
            std::mem::forget(fd); // owned by the caller now
            n
        });
        f64_val(env, fd as f64)
    })
}

/// fsHeldSlots() -> number: how many descriptors a walk may hold at most (0: none).
unsafe extern "C" fn held_slots(env: napi_env, _info: napi_callback_info) -> napi_value {
    guard(env, || f64_val(env, crate::fs::held::slots() as f64))
}

unsafe extern "C" fn bytes_read(env: napi_env, _info: napi_callback_info) -> napi_value {
    guard(env, || f64_val(env, read::bytes_read() as f64))
}

// --- restore (synchronous) ---------------------------------------------------------------

/// Run a restore call; an FsError is thrown as a node-style error.
unsafe fn sys_call<T>(env: napi_env, r: Result<T, FsError>) -> NResult<T> {
    r.map_err(|e| throw_fs(env, &e))
}

/// fsMknod(path, mode, major, minor)
unsafe extern "C" fn mknod(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p, m, ma, mi], _, _) = args::<4>(env, info)?;
        let path = path_arg(env, p, "path")?;
        let (mode, major, minor) = (u32_arg(env, m, "mode")?, u32_arg(env, ma, "major")?, u32_arg(env, mi, "minor")?);
        sys_call(env, restore::mknod(&path, mode, major, minor))?;
        undefined(env)
    })
}

/// fsLchown(path, uid, gid)
unsafe extern "C" fn lchown(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p, u, g], _, _) = args::<3>(env, info)?;
        let path = path_arg(env, p, "path")?;
        let (uid, gid) = (id_arg(env, u, "uid")?, id_arg(env, g, "gid")?);
        sys_call(env, restore::lchown(&path, uid, gid))?;
        undefined(env)
    })
}

/// fsUtimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec, noFollow)
unsafe extern "C" fn utimens(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p, asec, ansec, msec, mnsec, nf], _, _) = args::<6>(env, info)?;
        let path = path_arg(env, p, "path")?;
        let atime = (number_arg(env, asec, "atimeSec")? as i64, number_arg(env, ansec, "atimeNsec")? as i64);
        let mtime = (number_arg(env, msec, "mtimeSec")? as i64, number_arg(env, mnsec, "mtimeNsec")? as i64);
        let no_follow = flag_arg(env, nf, "noFollow")?;
        sys_call(env, restore::utimens(&path, atime, mtime, no_follow))?;
        undefined(env)
    })
}

/// fsSetxattr(path, name, value, noFollow, flags)
unsafe extern "C" fn setxattr(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p, n, v, nf, fl], _, _) = args::<5>(env, info)?;
        let path = path_arg(env, p, "path")?;
        let name = path_arg(env, n, "name")?;
        if type_of(env, v)? != NAPI_OBJECT_T {
            return Err(type_error(env, "value must be a Buffer"));
        }
        let value = bytes(env, v).map_err(|_| type_error(env, "value must be a Buffer"))?.to_vec();
        let no_follow = flag_arg(env, nf, "noFollow")?;
        let flags = if is_undefined(env, fl)? { 0 } else { u32_arg(env, fl, "flags")? as i32 };
        sys_call(env, restore::setxattr(&path, &name, &value, no_follow, flags))?;
        undefined(env)
    })
}

/// fsGetxattr(path, name, noFollow) -> Buffer | null
unsafe extern "C" fn getxattr(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p, n, nf], _, _) = args::<3>(env, info)?;
        let path = path_arg(env, p, "path")?;
        let name = path_arg(env, n, "name")?;
        let no_follow = flag_arg(env, nf, "noFollow")?;
        match sys_call(env, restore::getxattr(&path, &name, no_follow))? {
            Some(v) => buffer_copy(env, &v),
            None => {
                let mut v = null_mut();
                napi!(env, napi_get_null(env, &mut v))?;
                Ok(v)
            }
        }
    })
}

/// fsListXattrs(path, noFollow) -> Buffer[]
unsafe extern "C" fn list_xattrs(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p, nf], _, _) = args::<2>(env, info)?;
        let path = path_arg(env, p, "path")?;
        let no_follow = flag_arg(env, nf, "noFollow")?;
        let names = sys_call(env, restore::listxattrs(&path, no_follow))?;
        let arr = array(env, names.len())?;
        for (i, n) in names.iter().enumerate() {
            push(env, arr, i as u32, buffer_copy(env, n)?)?;
        }
        Ok(arr)
    })
}

/// fsSetFlags(path, flags, mask) -> boolean (false: unsupported here)
unsafe extern "C" fn set_flags(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p, f, m], _, _) = args::<3>(env, info)?;
        let path = path_arg(env, p, "path")?;
        let flags = u32_arg(env, f, "flags")?;
        let mask = if is_undefined(env, m)? { u32::MAX } else { u32_arg(env, m, "mask")? };
        bool_val(env, sys_call(env, restore::set_flags(&path, flags, mask))?)
    })
}

/// fsFlock(fd, op) -> boolean: op "sh" | "ex", never blocking; false when another holder
/// conflicts. Throws on any other error (EBADF, ...). Closing the fd releases the lock.
unsafe extern "C" fn flock(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([f, o], _, _) = args::<2>(env, info)?;
        let fd = u32_arg(env, f, "fd")? as i32;
        let op = match string_arg(env, o, "op")?.as_str() {
            "sh" => crate::fs::sys::LOCK_SH,
            "ex" => crate::fs::sys::LOCK_EX,
            other => return Err(type_error(env, &format!("op must be sh or ex, not {other}"))),
        };
        let locked = crate::fs::sys::flock_nb(fd, op).map_err(|e| FsError::new(e, "flock", b""));
        bool_val(env, sys_call(env, locked)?)
    })
}

/// fsOpenPath(path, flags) -> Promise<number>: open(2) for paths of any length (one too long
/// for the kernel is opened in pieces, crate::fs::sys::open_path); O_CLOEXEC is added. The
/// caller owns the descriptor (close it with fs.close).
unsafe extern "C" fn open_path(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p, f], _, _) = args::<2>(env, info)?;
        let path = path_arg(env, p, "path")?;
        let flags = u32_arg(env, f, "flags")? as i32 | crate::fs::sys::O_CLOEXEC;
        let task = move || {
            let fd = crate::fs::sys::open_path(&path, flags).map_err(|e| Fail::Fs(FsError::new(e, "open", path.to_bytes())))?;
            let n = fd.0;
            std::mem::forget(fd); // owned by the caller now
            Ok(n)
        };
        spawn(env, Lane::Io, "pxb.fs.openPath", None, task, |env, n, _| f64_val(env, n as f64))
    })
}

/// fsSortUnchangedTable(buf): sort metadata-cache records (u64 path hash, inode, ctime ns,
/// caller's value; 8-aligned, a multiple of 32 bytes) in place, as readDir's `unchanged`
/// option needs them.
unsafe extern "C" fn sort_unchanged_table(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b], _, _) = args::<1>(env, info)?;
        let t = table_arg(env, b, "table")?;
        // SAFETY: no other reference to these words lives during the call
        dir::sort_table(std::slice::from_raw_parts_mut(t.as_ptr() as *mut u64, t.len()));
        undefined(env)
    })
}

/// fsTreeUnchanged(root, table, devices) -> Promise<{unchanged, entries, directories, reason}>:
/// crate::fs::unchanged on the pool. `devices`: u64 device numbers (a Buffer of whole u64s) a
/// walk may descend into, or null for any. The table is read in place (pinned for the job).
unsafe extern "C" fn tree_unchanged(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([r, t, d], _, _) = args::<3>(env, info)?;
        let root = path_arg(env, r, "root")?;
        let table = table_arg(env, t, "table")?;
        let table = UnchangedTable::new(table.as_ptr(), table.len() / dir::RECORD_WORDS);
        let devs = match type_of(env, d)? {
            NAPI_NULL_T => None,
            _ => {
                let b = buffer_arg(env, d, "devices")?;
                if b.len() % 8 != 0 {
                    return Err(type_error(env, "devices must be whole u64 values"));
                }
                Some(b.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap())).collect::<Vec<u64>>())
            }
        };
        let task = move || -> Result<TreeCheck, Fail> { Ok(unchanged::tree_unchanged(&root, &table, &devs)) };
        spawn(env, Lane::Io, "pxb.fs.treeUnchanged", Some(t), task, check_js)
    })
}

unsafe fn check_js(env: napi_env, c: TreeCheck, _kept: napi_value) -> NResult<napi_value> {
    let o = object(env)?;
    set(env, o, b"unchanged\0", bool_val(env, c.unchanged)?)?;
    set(env, o, b"entries\0", f64_val(env, c.entries as f64)?)?;
    set(env, o, b"directories\0", f64_val(env, c.directories as f64)?)?;
    set(env, o, b"reason\0", str_val(env, &c.reason)?)?;
    Ok(o)
}

/// fsSetProjid(path, projid) -> boolean (false: unsupported here)
unsafe extern "C" fn set_projid(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p, id], _, _) = args::<2>(env, info)?;
        let path = path_arg(env, p, "path")?;
        let projid = u32_arg(env, id, "projid")?;
        bool_val(env, sys_call(env, restore::set_projid(&path, projid))?)
    })
}

// --- writeFilesBatch / syncfs ------------------------------------------------------------

/// Numbers per file in writeFilesBatch's `nums` (f64, native endianness), in this order.
const WRITE_NUMS: [&str; 7] = ["offset", "size", "mode", "uid", "gid", "mtimeSec", "mtimeNsec"];

type WriteResult = (Vec<i32>, Vec<(usize, FsError)>);

unsafe fn write_js(env: napi_env, r: WriteResult, _kept: napi_value) -> NResult<napi_value> {
    batch_result_js(env, &r.0, &r.1)
}

/// `files[i].<field>` from the packed numbers: an integer in `lo..=hi`.
unsafe fn packed_int(env: napi_env, x: f64, i: usize, field: usize, lo: f64, hi: f64) -> NResult<f64> {
    if !(x.fract() == 0.0 && x >= lo && x <= hi) {
        return Err(type_error(env, &format!("files[{}].{} must be an integer in {}..={}, got {}", i, WRITE_NUMS[field], lo, hi, x)));
    }
    Ok(x)
}

/// fsWriteFilesBatch(paths, nums, data, {chown, overwrite, sparse}) -> Promise<{status, errors}>
/// `nums` holds WRITE_NUMS.len() f64s per file as bytes (a Uint8Array view of a Float64Array).
unsafe extern "C" fn write_files_batch(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([ps, ns, d, o], _, _) = args::<4>(env, info)?;
        let pv = array_items(env, ps, "paths")?;
        let nums_bytes = match type_of(env, ns)? {
            NAPI_OBJECT_T => bytes(env, ns).map_err(|_| type_error(env, "nums must be a Uint8Array"))?,
            _ => return Err(type_error(env, "nums must be a Uint8Array")),
        };
        let per = WRITE_NUMS.len() * 8;
        if nums_bytes.len() != pv.len() * per {
            return Err(type_error(env, &format!("nums has {} bytes, expected {} for {} files", nums_bytes.len(), pv.len() * per, pv.len())));
        }
        let data = buffer_arg(env, d, "data")?;
        let prop = options_obj(env, o)?;
        let get = |name: &'static [u8], what: &str| -> NResult<bool> { flag_arg(env, prop(name)?, what) };
        let opts = WriteOpts {
            chown: get(b"chown\0", "options.chown")?,
            overwrite: get(b"overwrite\0", "options.overwrite")?,
            sparse: get(b"sparse\0", "options.sparse")?,
        };
        const SAFE: f64 = 9007199254740991.0;
        let mut specs = Vec::with_capacity(pv.len());
        for (i, (&p, rec)) in pv.iter().zip(nums_bytes.chunks_exact(per)).enumerate() {
            let path = path_arg(env, p, &format!("files[{}].path", i))?;
            let mut n = [0f64; 7];
            for (k, b) in rec.chunks_exact(8).enumerate() {
                n[k] = f64::from_ne_bytes(b.try_into().unwrap_or_default());
            }
            let offset = packed_int(env, n[0], i, 0, 0.0, SAFE)? as usize;
            let size = packed_int(env, n[1], i, 1, 0.0, SAFE)? as usize;
            if offset.checked_add(size).map_or(true, |end| end > data.len()) {
                return Err(type_error(env, &format!("files[{}]: bytes {}+{} lie outside the {}-byte data", i, offset, size, data.len())));
            }
            specs.push(WriteSpec {
                path,
                offset,
                size,
                mode: packed_int(env, n[2], i, 2, 0.0, u32::MAX as f64)? as u32,
                uid: packed_int(env, n[3], i, 3, 0.0, u32::MAX as f64)? as u32,
                gid: packed_int(env, n[4], i, 4, 0.0, u32::MAX as f64)? as u32,
                mtime: (packed_int(env, n[5], i, 5, -SAFE, SAFE)? as i64, packed_int(env, n[6], i, 6, 0.0, 999_999_999.0)? as i64),
            });
        }
        // Read in place on the pool: `d` stays pinned by a reference until the job completes.
        let pinned = SendSlice(data.as_ptr(), data.len());
        spawn(env, Lane::Io, "pxb.fs.writeFilesBatch", Some(d), move || Ok(write::write_files_batch(&specs, pinned.get(), opts)), write_js)
    })
}

unsafe fn undefined_js(env: napi_env, _r: (), _kept: napi_value) -> NResult<napi_value> {
    undefined(env)
}

/// fsWriteFileAtomic(target, tmp, data, {ifAbsent, fsync, mode, dirMode?, replaceStale})
/// -> Promise<boolean>: `write::write_file_atomic` in one pool job. `data` is read in place,
/// pinned until the job completes (the caller must not change it before the promise settles).
unsafe extern "C" fn write_file_atomic(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([t, p, d, o], _, _) = args::<4>(env, info)?;
        let target = path_arg(env, t, "target")?;
        let tmp = path_arg(env, p, "tmp")?;
        let data = buffer_arg(env, d, "data")?;
        let prop = options_obj(env, o)?;
        let dir_mode = prop(b"dirMode\0")?;
        let opts = AtomicOpts {
            if_absent: flag_arg(env, prop(b"ifAbsent\0")?, "options.ifAbsent")?,
            fsync: flag_arg(env, prop(b"fsync\0")?, "options.fsync")?,
            mode: u32_arg(env, prop(b"mode\0")?, "options.mode")?,
            dir_mode: if type_of(env, dir_mode)? == NAPI_UNDEFINED_T { None } else { Some(u32_arg(env, dir_mode, "options.dirMode")?) },
            replace_stale: flag_arg(env, prop(b"replaceStale\0")?, "options.replaceStale")?,
        };
        let pinned = SendSlice(data.as_ptr(), data.len());
        spawn(env, Lane::Io, "pxb.fs.writeFileAtomic", Some(d), move || write::write_file_atomic(&target, &tmp, pinned.get(), opts).map_err(Fail::Fs), bool_js)
    })
}

unsafe fn bool_js(env: napi_env, v: bool, _kept: napi_value) -> NResult<napi_value> {
    bool_val(env, v)
}

/// fsStoreChunk(chunk, {chunkDir, compress, fsync, fileMode, dirMode, tmpMarker})
/// -> Promise<{digest, status, size, blob}>: `store::store_chunk` in one pool job. status 0:
/// the store had it (touched), 1: written now (`size` bytes), 2: not decided, `blob` must be
/// inserted by the caller. The chunk Buffer is pinned, not copied.
unsafe extern "C" fn store_chunk(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([b, o], _, _) = args::<2>(env, info)?;
        let data = buffer_arg(env, b, "chunk")?;
        if data.len() > crate::blob::MAX_CHUNK_SIZE {
            return Err(format!("chunk of {} bytes exceeds the 16 MiB maximum", data.len()));
        }
        let prop = options_obj(env, o)?;
        let opts = crate::store::StoreOpts {
            chunk_dir: path_arg(env, prop(b"chunkDir\0")?, "options.chunkDir")?.into_bytes(),
            compress: flag_arg(env, prop(b"compress\0")?, "options.compress")?,
            fsync: flag_arg(env, prop(b"fsync\0")?, "options.fsync")?,
            file_mode: u32_arg(env, prop(b"fileMode\0")?, "options.fileMode")?,
            dir_mode: u32_arg(env, prop(b"dirMode\0")?, "options.dirMode")?,
            tmp_marker: path_arg(env, prop(b"tmpMarker\0")?, "options.tmpMarker")?.into_bytes(),
        };
        let pinned = SendSlice(data.as_ptr(), data.len());
        spawn(env, Lane::Cpu, "pxb.fs.storeChunk", Some(b), move || crate::store::store_chunk(pinned.get(), &opts).map_err(Fail::Msg), stored_js)
    })
}

unsafe fn stored_js(env: napi_env, r: ([u8; 32], crate::store::Stored), _kept: napi_value) -> NResult<napi_value> {
    use crate::store::Stored;
    let o = object(env)?;
    set(env, o, b"digest\0", buffer_copy(env, &r.0)?)?;
    let (status, size, blob) = match r.1 {
        Stored::Known => (0.0, 0.0, None),
        Stored::New(n) => (1.0, n as f64, None),
        Stored::Insert(b) => (2.0, b.len() as f64, Some(b)),
    };
    set(env, o, b"status\0", f64_val(env, status)?)?;
    set(env, o, b"size\0", f64_val(env, size)?)?;
    let blob = match blob {
        Some(v) => buffer_from_vec_accounted(env, v)?,
        None => null_val(env)?,
    };
    set(env, o, b"blob\0", blob)?;
    Ok(o)
}

/// fsSyncfs(path) -> Promise<void>
unsafe extern "C" fn syncfs(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p], _, _) = args::<1>(env, info)?;
        let path = path_arg(env, p, "path")?;
        spawn(env, Lane::Io, "pxb.fs.syncfs", None, move || write::syncfs(&path).map_err(Fail::Fs), undefined_js)
    })
}

/// fsTouchFiles(paths, nonEmptyOnly) -> Promise<Int32Array>: per path 0 (atime set to now,
/// mtime kept), 1 (empty file, not touched; only with nonEmptyOnly) or -errno.
unsafe extern "C" fn touch_files(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([ps, ne], _, _) = args::<2>(env, info)?;
        let pv = array_items(env, ps, "paths")?;
        let mut paths = Vec::with_capacity(pv.len());
        for (i, &p) in pv.iter().enumerate() {
            paths.push(path_item(env, p, "paths", i)?);
        }
        let non_empty_only = flag_arg(env, ne, "nonEmptyOnly")?;
        spawn(env, Lane::Io, "pxb.fs.touchFiles", None, move || Ok(touch::touch_files(&paths, non_empty_only)), int32_array_js)
    })
}

/// fsTouchChunks(chunkDir, digests) -> Promise<Int32Array>: `fsTouchFiles` (nonEmptyOnly
/// false) of the chunk files of `digests` (a Buffer of 32-byte digests) in `chunkDir`, their
/// paths made here (`<chunkDir>/<hhhh>/<hex>`).
unsafe extern "C" fn touch_chunks(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([dir, ds], _, _) = args::<2>(env, info)?;
        let dir = path_arg(env, dir, "chunkDir")?;
        let paths = touch::chunk_paths(dir.to_bytes(), bytes(env, ds)?)?;
        spawn(env, Lane::Io, "pxb.fs.touchChunks", None, move || Ok(touch::touch_files(&paths, false)), int32_array_js)
    })
}

unsafe fn int32_array_js(env: napi_env, v: Vec<i32>, _kept: napi_value) -> NResult<napi_value> {
    i32_array(env, &v)
}

// --- readChunkInto -------------------------------------------------------------------------

/// fsReadChunkInto(path, into, digest) -> Promise<number>: read a chunk file, decode it into
/// `into` (pinned until the promise settles) and check its SHA-256 (crate::store). A file that
/// cannot be read rejects node-style (`code`); a damaged one with a plain message.
unsafe extern "C" fn read_chunk_into(env: napi_env, info: napi_callback_info) -> napi_value {
    guard(env, || {
        let ([p, i, d], _, _) = args::<3>(env, info)?;
        let path = path_arg(env, p, "path")?;
        let dst = buffer_arg(env, i, "into")?;
        let out = OutPtr(dst.as_ptr() as *mut u8, dst.len());
        let want: [u8; 32] = buffer_arg(env, d, "digest")?.try_into().map_err(|_| type_error(env, "digest must be 32 bytes"))?;
        let task = move || {
            let out = out; // the whole Send wrapper, not its raw-pointer field
            crate::store::read_chunk_into(&path, out.slice(), &want).map_err(|e| match e {
                crate::store::ReadError::Fs(e) => Fail::Fs(e),
                crate::store::ReadError::Corrupt(m) => Fail::Msg(m),
            })
        };
        spawn(env, Lane::Io, "pxb.fs.readChunkInto", Some(i), task, |env, n, _| f64_val(env, n as f64))
    })
}
