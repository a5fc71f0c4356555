//! Tiny safe-ish layer over napi_sys: error plumbing, panic guard, argument
//! and Buffer access, export helpers. (~150 lines instead of the napi crate.)

use crate::napi::sys::*;
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::null_mut;

pub type NResult<T> = Result<T, String>;

/// Turn a napi_status into a Result, pulling the engine's message.
pub unsafe fn check(env: napi_env, st: napi_status, what: &str) -> NResult<()> {
    if st == NAPI_OK {
        return Ok(());
    }
    if st == NAPI_PENDING_EXCEPTION {
        return Err(String::new()); // a JS exception is already pending: don't throw another
    }
    let mut info: *const napi_extended_error_info = std::ptr::null();
    napi_get_last_error_info(env, &mut info);
    let msg = if !info.is_null() && !(*info).error_message.is_null() {
        std::ffi::CStr::from_ptr((*info).error_message).to_string_lossy().into_owned()
    } else {
        format!("status {}", st)
    };
    Err(format!("{}: {}", what, msg))
}

macro_rules! napi {
    ($env:expr, $call:ident ( $($arg:expr),* $(,)? )) => {
        $crate::napi::rt::check($env, $crate::napi::sys::$call($($arg),*), stringify!($call))
    };
}

pub unsafe fn throw(env: napi_env, msg: &str) {
    let mut pending = false;
    napi_is_exception_pending(env, &mut pending);
    if pending || msg.is_empty() {
        return;
    }
    let c = CString::new(msg.replace('\0', " ")).unwrap();
    napi_throw_error(env, std::ptr::null(), c.as_ptr());
}

pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Every extern "C" entry point goes through this: a Rust panic must never
/// unwind into Node (since Rust 1.81 that aborts the whole process).
pub unsafe fn guard(env: napi_env, f: impl FnOnce() -> NResult<napi_value>) -> napi_value {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(msg)) => {
            throw(env, &msg);
            null_mut()
        }
        Err(p) => {
            throw(env, &format!("native panic: {}", panic_message(&*p)));
            null_mut()
        }
    }
}

/// Fetch up to N arguments (missing ones are `undefined`) and `this`.
pub unsafe fn args<const N: usize>(env: napi_env, info: napi_callback_info) -> NResult<([napi_value; N], usize, napi_value)> {
    let mut argv = [null_mut(); N];
    let mut argc = N;
    let mut this = null_mut();
    napi!(env, napi_get_cb_info(env, info, &mut argc, argv.as_mut_ptr(), &mut this, null_mut()))?;
    Ok((argv, argc, this))
}

/// Borrow the bytes of a Buffer / Uint8Array. The slice is only valid during
/// the current call (the JS object may be GC'd, detached or mutated later).
pub unsafe fn bytes<'a>(env: napi_env, v: napi_value) -> NResult<&'a [u8]> {
    let mut data: *mut c_void = null_mut();
    let mut len = 0usize;
    napi!(env, napi_get_buffer_info(env, v, &mut data, &mut len))
        .map_err(|_| "expected a Buffer or Uint8Array".to_string())?;
    if len == 0 {
        return Ok(&[]);
    }
    Ok(std::slice::from_raw_parts(data as *const u8, len))
}

/// Borrow the bytes of a Buffer / Uint8Array mutably: only valid during the current call, and
/// the caller must not hold another borrow of the same bytes.
pub unsafe fn bytes_mut<'a>(env: napi_env, v: napi_value) -> NResult<&'a mut [u8]> {
    let b = bytes(env, v)?;
    if b.is_empty() {
        return Ok(&mut []);
    }
    Ok(std::slice::from_raw_parts_mut(b.as_ptr() as *mut u8, b.len()))
}



pub unsafe fn null_val(env: napi_env) -> NResult<napi_value> {
    let mut v = null_mut();
    napi!(env, napi_get_null(env, &mut v))?;
    Ok(v)
}

pub unsafe fn undefined(env: napi_env) -> NResult<napi_value> {
    let mut v = null_mut();
    napi!(env, napi_get_undefined(env, &mut v))?;
    Ok(v)
}

pub unsafe fn f64_val(env: napi_env, x: f64) -> NResult<napi_value> {
    let mut v = null_mut();
    napi!(env, napi_create_double(env, x, &mut v))?;
    Ok(v)
}

pub unsafe fn str_val(env: napi_env, s: &str) -> NResult<napi_value> {
    let mut v = null_mut();
    napi!(env, napi_create_string_utf8(env, s.as_ptr() as *const c_char, s.len(), &mut v))?;
    Ok(v)
}

/// New Buffer with a copy of `b` (V8 owns the memory).
pub unsafe fn buffer_copy(env: napi_env, b: &[u8]) -> NResult<napi_value> {
    let mut v = null_mut();
    napi!(env, napi_create_buffer_copy(env, b.len(), b.as_ptr() as *const c_void, null_mut(), &mut v))?;
    Ok(v)
}


unsafe extern "C" fn drop_vec_adjust(env: napi_env, _data: *mut c_void, hint: *mut c_void) {
    let v = Box::from_raw(hint as *mut Vec<u8>);
    let mut adj = 0i64;
    napi_adjust_external_memory(env, -(v.capacity() as i64), &mut adj);
    drop(v);
}

/// Like buffer_from_vec, but tells V8 how much native memory the Buffer pins,
/// so the GC runs (and finalizers free the Vecs) before RSS explodes.
pub unsafe fn buffer_from_vec_accounted(env: napi_env, v: Vec<u8>) -> NResult<napi_value> {
    if v.is_empty() {
        return buffer_copy(env, &[]);
    }
    let cap = v.capacity() as i64;
    let boxed = Box::new(v);
    let (ptr, len) = (boxed.as_ptr() as *mut c_void, boxed.len());
    let hint = Box::into_raw(boxed) as *mut c_void;
    let mut out = null_mut();
    if let Err(e) = napi!(env, napi_create_external_buffer(env, len, ptr, Some(drop_vec_adjust), hint, &mut out)) {
        drop(Box::from_raw(hint as *mut Vec<u8>));
        return Err(e);
    }
    let mut adj = 0i64;
    napi_adjust_external_memory(env, cap, &mut adj);
    Ok(out)
}




pub type Cb = unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value;

/// Property descriptor for a method. `name` must be NUL-terminated (b"x\0").
pub fn method(name: &'static [u8], cb: Cb) -> napi_property_descriptor {
    assert!(name.last() == Some(&0));
    napi_property_descriptor {
        utf8name: name.as_ptr() as *const c_char,
        name: null_mut(),
        method: Some(cb),
        getter: None,
        setter: None,
        value: null_mut(),
        attributes: NAPI_DEFAULT_METHOD | NAPI_ENUMERABLE,
        data: null_mut(),
    }
}

pub fn value_prop(name: &'static [u8], v: napi_value) -> napi_property_descriptor {
    assert!(name.last() == Some(&0));
    napi_property_descriptor {
        utf8name: name.as_ptr() as *const c_char,
        name: null_mut(),
        method: None,
        getter: None,
        setter: None,
        value: v,
        attributes: NAPI_ENUMERABLE,
        data: null_mut(),
    }
}

// ---------------------------------------------------------------------------
// Promise-returning work on a worker thread (libuv's pool or pxb's CPU workers, see Lane).
// `task` runs on a worker thread and must not touch napi_env / napi_value.
// `to_js` runs back on the JS thread and converts the result.

/// A raw pointer + length that we promise to only read while the owning
/// JS value is pinned by a napi_ref (see `promise_job`'s `keep_alive`).
#[derive(Clone, Copy)]
pub struct SendSlice(pub *const u8, pub usize);
unsafe impl Send for SendSlice {}
impl SendSlice {
    pub unsafe fn get<'a>(&self) -> &'a [u8] {
        if self.1 == 0 { &[] } else { std::slice::from_raw_parts(self.0, self.1) }
    }
}

/// Why a pool job failed; becomes the promise's rejection value on the JS thread.
pub trait JobError: From<String> + Send + 'static {
    unsafe fn rejection(self, env: napi_env) -> NResult<napi_value>;
}

/// Plain failures reject with an Error carrying the message.
impl JobError for String {
    unsafe fn rejection(self, env: napi_env) -> NResult<napi_value> {
        let mut err = null_mut();
        let m = str_val(env, if self.is_empty() { "error" } else { &self })?;
        napi!(env, napi_create_error(env, null_mut(), m, &mut err))?;
        Ok(err)
    }
}

/// Where a job runs: libuv's pool (file-system work), or pxb's CPU workers (`crate::pool`:
/// hashing, compression, the blob codec), so that neither waits behind the other.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Io,
    Cpu,
}

struct Job<T, E, F, G> {
    /// Lane::Io: the async work item; Lane::Cpu: the thread-safe function that completes it.
    work: napi_async_work,
    tsfn: napi_threadsafe_function,
    deferred: napi_deferred,
    keep: napi_ref,
    task: Option<F>,
    out: Option<Result<T, E>>,
    to_js: Option<G>,
}

impl<T, E: JobError, F: FnOnce() -> Result<T, E>, G> Job<T, E, F, G> {
    /// Run the task (on a pool thread); a panic becomes its failure.
    fn run(&mut self) {
        if let Some(task) = self.task.take() {
            self.out = Some(match catch_unwind(AssertUnwindSafe(task)) {
                Ok(r) => r,
                Err(p) => Err(E::from(format!("native panic: {}", panic_message(&*p)))),
            });
        }
    }
}

unsafe extern "C" fn job_execute<T, E: JobError, F: FnOnce() -> Result<T, E>, G>(_env: napi_env, data: *mut c_void) {
    (*(data as *mut Job<T, E, F, G>)).run();
}

unsafe extern "C" fn job_complete<T, E: JobError, F, G: FnOnce(napi_env, T, napi_value) -> NResult<napi_value>>(
    env: napi_env,
    status: napi_status,
    data: *mut c_void,
) {
    let mut job = Box::from_raw(data as *mut Job<T, E, F, G>);
    let _ = catch_unwind(AssertUnwindSafe(|| {
        settle(env, status, job.deferred, job.keep, job.out.take(), job.to_js.take());
        napi_delete_async_work(env, job.work);
    }));
}

/// Resolve or reject a job's promise with its outcome (on the JS thread) and unpin `keep`.
unsafe fn settle<T, E: JobError, G: FnOnce(napi_env, T, napi_value) -> NResult<napi_value>>(
    env: napi_env,
    status: napi_status,
    deferred: napi_deferred,
    keep: napi_ref,
    out: Option<Result<T, E>>,
    to_js: Option<G>,
) {
    let mut kept = null_mut();
    if !keep.is_null() {
        napi_get_reference_value(env, keep, &mut kept);
    }
    let res = match (status, out, to_js) {
        (NAPI_OK, Some(Ok(v)), Some(to_js)) => to_js(env, v, kept).map_err(E::from),
        (NAPI_OK, Some(Err(e)), _) => Err(e),
        (st, _, _) => Err(E::from(format!("async work failed (status {})", st))),
    };
    match res {
        Ok(v) => {
            napi_resolve_deferred(env, deferred, v);
        }
        Err(e) => {
            // A JS exception raised while converting (e.g. a failed allocation) wins.
            let mut pending = false;
            napi_is_exception_pending(env, &mut pending);
            let mut v = null_mut();
            if pending {
                napi_get_and_clear_last_exception(env, &mut v);
            } else {
                v = match e.rejection(env) {
                    Ok(x) if !x.is_null() => x,
                    _ => undefined(env).unwrap_or(null_mut()),
                };
            }
            napi_reject_deferred(env, deferred, v);
        }
    }
    if !keep.is_null() {
        napi_delete_reference(env, keep);
    }
}

unsafe extern "C" fn cpu_job_complete<T, E: JobError, F, G: FnOnce(napi_env, T, napi_value) -> NResult<napi_value>>(
    env: napi_env,
    _callback: napi_value,
    _context: *mut c_void,
    data: *mut c_void,
) {
    let mut job = Box::from_raw(data as *mut Job<T, E, F, G>);
    if env.is_null() {
        return; // the environment is going away: nothing to settle
    }
    let _ = catch_unwind(AssertUnwindSafe(|| settle(env, NAPI_OK, job.deferred, job.keep, job.out.take(), job.to_js.take())));
}

struct SendPtr(*mut c_void);
unsafe impl Send for SendPtr {}

/// Run `task` on `lane` and return a promise for its result. `keep` is pinned until the job
/// completes (memory the task reads or writes); `to_js` converts the result on the JS thread
/// and receives `keep` (null when none). A failure or panic rejects the promise. A CPU job's
/// result comes back through a thread-safe function of its own.
pub unsafe fn spawn_job<T, E, F, G>(env: napi_env, lane: Lane, name: &str, keep: Option<napi_value>, task: F, to_js: G) -> NResult<napi_value>
where
    T: Send + 'static,
    E: JobError,
    F: FnOnce() -> Result<T, E> + Send + 'static,
    G: FnOnce(napi_env, T, napi_value) -> NResult<napi_value> + 'static,
{
    let mut deferred = null_mut();
    let mut promise = null_mut();
    napi!(env, napi_create_promise(env, &mut deferred, &mut promise))?;
    let mut keep_ref = null_mut();
    if let Some(v) = keep {
        napi!(env, napi_create_reference(env, v, 1, &mut keep_ref))?;
    }
    let job = Box::into_raw(Box::new(Job::<T, E, F, G> { work: null_mut(), tsfn: null_mut(), deferred, keep: keep_ref, task: Some(task), out: None, to_js: Some(to_js) }));
    let res = (|| {
        let rname = str_val(env, name)?;
        match lane {
            Lane::Io => {
                napi!(env, napi_create_async_work(env, null_mut(), rname, Some(job_execute::<T, E, F, G>), Some(job_complete::<T, E, F, G>), job as *mut c_void, &mut (*job).work))?;
                napi!(env, napi_queue_async_work(env, (*job).work))
            }
            Lane::Cpu => napi!(env, napi_create_threadsafe_function(env, null_mut(), null_mut(), rname, 0, 1, null_mut(), None, null_mut(), Some(cpu_job_complete::<T, E, F, G>), &mut (*job).tsfn)),
        }
    })();
    if let Err(e) = res {
        let job = Box::from_raw(job);
        if !job.keep.is_null() { napi_delete_reference(env, job.keep); }
        if !job.work.is_null() { napi_delete_async_work(env, job.work); }
        return Err(e); // the promise is dropped; caller gets a thrown error instead
    }
    if lane == Lane::Cpu {
        let ptr = SendPtr(job as *mut c_void);
        crate::pool::submit(Box::new(move || {
            let ptr = ptr; // the whole Send wrapper, not its raw-pointer field
            let job = &mut *(ptr.0 as *mut Job<T, E, F, G>);
            job.run();
            // The JS thread may free the job as soon as it is queued.
            let tsfn = job.tsfn;
            // Fails only when the environment is being torn down; the job is then left behind.
            napi_call_threadsafe_function(tsfn, ptr.0, NAPI_TSFN_BLOCKING);
            napi_release_threadsafe_function(tsfn, NAPI_TSFN_RELEASE);
        }));
    }
    Ok(promise)
}

/// `spawn_job` on the CPU workers for tasks that fail with a message and conversions that need no pinned value.
pub unsafe fn promise_job<T: Send + 'static, F: FnOnce() -> NResult<T> + Send + 'static>(
    env: napi_env,
    name: &str,
    keep_alive: Option<napi_value>,
    task: F,
    to_js: unsafe fn(napi_env, T) -> NResult<napi_value>,
) -> NResult<napi_value> {
    spawn_job(env, Lane::Cpu, name, keep_alive, task, move |env, v, _kept| to_js(env, v))
}

/// The default panic hook prints every caught panic to stderr. Install a quiet
/// one once per process (the hook is global to this .node's copy of std);
/// set PXB_NATIVE_DEBUG=1 to see panics with their location.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::env::var_os("PXB_NATIVE_DEBUG").is_some() {
                default(info);
            }
        }));
    });
}

// ---------------------------------------------------------------------------
// pxb additions: objects, arrays, more argument kinds.

pub unsafe fn object(env: napi_env) -> NResult<napi_value> {
    let mut v = null_mut();
    napi!(env, napi_create_object(env, &mut v))?;
    Ok(v)
}

/// `name` must be NUL-terminated.
pub unsafe fn set(env: napi_env, obj: napi_value, name: &'static [u8], v: napi_value) -> NResult<()> {
    napi!(env, napi_set_named_property(env, obj, name.as_ptr() as *const c_char, v))
}

#[allow(dead_code)] // used by the fs exports
pub unsafe fn bool_val(env: napi_env, b: bool) -> NResult<napi_value> {
    let mut v = null_mut();
    napi!(env, napi_get_boolean(env, b, &mut v))?;
    Ok(v)
}

pub unsafe fn bool_arg(env: napi_env, v: napi_value, what: &str) -> NResult<bool> {
    let mut t = 0;
    napi!(env, napi_typeof(env, v, &mut t))?;
    if t == NAPI_UNDEFINED_T {
        return Ok(false);
    }
    let mut b = false;
    napi!(env, napi_get_value_bool(env, v, &mut b)).map_err(|_| format!("{} must be a boolean", what))?;
    Ok(b)
}

pub unsafe fn is_undefined(env: napi_env, v: napi_value) -> NResult<bool> {
    let mut t = 0;
    napi!(env, napi_typeof(env, v, &mut t))?;
    Ok(t == NAPI_UNDEFINED_T || t == NAPI_NULL_T)
}

/// A non-negative integer argument (exact up to 2^53).
pub unsafe fn usize_arg(env: napi_env, v: napi_value, what: &str) -> NResult<usize> {
    let mut x = 0f64;
    napi!(env, napi_get_value_double(env, v, &mut x)).map_err(|_| format!("{} must be a number", what))?;
    if !(x >= 0.0) || x.fract() != 0.0 || x > 9007199254740991.0 {
        return Err(format!("{} must be a non-negative integer, got {}", what, x));
    }
    Ok(x as usize)
}

#[allow(dead_code)] // used by the fs exports
pub unsafe fn string_arg(env: napi_env, v: napi_value, what: &str) -> NResult<String> {
    let mut len = 0usize;
    napi!(env, napi_get_value_string_utf8(env, v, null_mut(), 0, &mut len)).map_err(|_| format!("{} must be a string", what))?;
    let mut buf = vec![0u8; len + 1];
    let mut got = 0usize;
    napi!(env, napi_get_value_string_utf8(env, v, buf.as_mut_ptr() as *mut c_char, len + 1, &mut got))?;
    buf.truncate(got);
    String::from_utf8(buf).map_err(|_| format!("{} is not valid UTF-8", what))
}

#[allow(dead_code)] // used by the fs exports
pub unsafe fn array(env: napi_env, len: usize) -> NResult<napi_value> {
    let mut v = null_mut();
    napi!(env, napi_create_array_with_length(env, len, &mut v))?;
    Ok(v)
}

#[allow(dead_code)] // used by the fs exports
pub unsafe fn push(env: napi_env, arr: napi_value, i: u32, v: napi_value) -> NResult<()> {
    napi!(env, napi_set_element(env, arr, i, v))
}

/// A typed array of `kind` (whose element type is `T`) with a copy of `xs`.
unsafe fn typed_array<T: Copy>(env: napi_env, xs: &[T], kind: c_int) -> NResult<napi_value> {
    let mut data: *mut c_void = null_mut();
    let mut ab = null_mut();
    napi!(env, napi_create_arraybuffer(env, std::mem::size_of_val(xs), &mut data, &mut ab))?;
    if !xs.is_empty() {
        std::ptr::copy_nonoverlapping(xs.as_ptr(), data as *mut T, xs.len());
    }
    let mut ta = null_mut();
    napi!(env, napi_create_typedarray(env, kind, xs.len(), ab, 0, &mut ta))?;
    Ok(ta)
}

/// Element types of typed arrays, with their napi_typedarray_type.
pub trait TypedElem {
    const KIND: c_int;
}
impl TypedElem for u32 {
    const KIND: c_int = NAPI_UINT32_ARRAY;
}
impl TypedElem for f64 {
    const KIND: c_int = NAPI_FLOAT64_ARRAY;
}

/// Borrow the elements of a typed array of element type `T`, mutably: only valid during the
/// current call, and the caller must not hold two borrows of one array.
pub unsafe fn typed_slice<'a, T: TypedElem>(env: napi_env, v: napi_value, what: &str) -> NResult<&'a mut [T]> {
    let (mut ty, mut len, mut data, mut ab, mut off) = (0 as c_int, 0usize, null_mut::<c_void>(), null_mut(), 0usize);
    napi!(env, napi_get_typedarray_info(env, v, &mut ty, &mut len, &mut data, &mut ab, &mut off)).map_err(|_| format!("{} must be a typed array", what))?;
    if ty != T::KIND {
        return Err(format!("{} has the wrong typed array type", what));
    }
    if len == 0 {
        return Ok(&mut []);
    }
    Ok(std::slice::from_raw_parts_mut(data as *mut T, len))
}

/// Float64Array with a copy of `xs` (offsets up to 2^53 are exact).
pub unsafe fn f64_array(env: napi_env, xs: &[f64]) -> NResult<napi_value> {
    typed_array(env, xs, NAPI_FLOAT64_ARRAY)
}

/// Int32Array with a copy of `xs`.
#[allow(dead_code)] // used by the fs exports
pub unsafe fn i32_array(env: napi_env, xs: &[i32]) -> NResult<napi_value> {
    typed_array(env, xs, NAPI_INT32_ARRAY)
}

/// Define a class with a native state `T` boxed behind `this`.
pub unsafe fn unwrap_mut<'a, T>(env: napi_env, this: napi_value) -> NResult<&'a mut T> {
    let mut p: *mut c_void = null_mut();
    napi!(env, napi_unwrap(env, this, &mut p))?;
    if p.is_null() {
        return Err("native object is not initialised".into());
    }
    Ok(&mut *(p as *mut T))
}

pub unsafe extern "C" fn finalize_box<T>(_env: napi_env, data: *mut c_void, _hint: *mut c_void) {
    drop(Box::from_raw(data as *mut T));
}

pub unsafe fn wrap_new<T>(env: napi_env, this: napi_value, state: T) -> NResult<()> {
    let p = Box::into_raw(Box::new(state));
    if let Err(e) = napi!(env, napi_wrap(env, this, p as *mut c_void, Some(finalize_box::<T>), null_mut(), null_mut())) {
        drop(Box::from_raw(p));
        return Err(e);
    }
    Ok(())
}

/// Refuse a class constructor called without `new`.
pub unsafe fn require_new(env: napi_env, info: napi_callback_info, class: &str) -> NResult<()> {
    let mut target = null_mut();
    napi!(env, napi_get_new_target(env, info, &mut target))?;
    if target.is_null() {
        return Err(format!("{} must be called with new", class));
    }
    Ok(())
}

pub unsafe fn define_class(env: napi_env, name: &'static [u8], ctor: Cb, methods: &[napi_property_descriptor]) -> NResult<napi_value> {
    let mut cls = null_mut();
    napi!(env, napi_define_class(env, name.as_ptr() as *const c_char, name.len() - 1, Some(ctor), null_mut(), methods.len(), methods.as_ptr(), &mut cls))?;
    Ok(cls)
}
