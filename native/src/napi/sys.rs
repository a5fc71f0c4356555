//! Hand-written Node-API declarations (subset), written from Node's public C
//! headers (/usr/include/node/js_native_api.h, node_api.h). No crates.
//! The symbols are NOT linked at build time: on Linux a shared object may keep
//! undefined symbols, and `node` (which exports napi_* dynamically) satisfies
//! them when it dlopen()s the .node file.
#![allow(non_camel_case_types, dead_code)]
// Extended beyond the reference proof with the array/object/int64/string calls pxb needs.
use std::os::raw::{c_char, c_int, c_void};

macro_rules! opaque {
    ($($name:ident => $ptr:ident),* $(,)?) => {$(
        #[repr(C)] pub struct $name { _p: [u8; 0] }
        pub type $ptr = *mut $name;
    )*};
}
opaque!(
    napi_env__ => napi_env,
    napi_value__ => napi_value,
    napi_callback_info__ => napi_callback_info,
    napi_ref__ => napi_ref,
    napi_deferred__ => napi_deferred,
    napi_async_work__ => napi_async_work,
    napi_handle_scope__ => napi_handle_scope,
    napi_threadsafe_function__ => napi_threadsafe_function,
);

pub type napi_status = c_int; // C enum
pub const NAPI_OK: napi_status = 0;
pub const NAPI_PENDING_EXCEPTION: napi_status = 10;

pub type napi_callback = Option<unsafe extern "C" fn(napi_env, napi_callback_info) -> napi_value>;
pub type napi_finalize = Option<unsafe extern "C" fn(napi_env, *mut c_void, *mut c_void)>;
pub type napi_async_execute_callback = Option<unsafe extern "C" fn(napi_env, *mut c_void)>;
pub type napi_async_complete_callback =
    Option<unsafe extern "C" fn(napi_env, napi_status, *mut c_void)>;
pub type napi_threadsafe_function_call_js = Option<unsafe extern "C" fn(napi_env, napi_value, *mut c_void, *mut c_void)>;
// napi_threadsafe_function_call_mode / _release_mode
pub const NAPI_TSFN_BLOCKING: c_int = 1;
pub const NAPI_TSFN_RELEASE: c_int = 0;
pub const NAPI_TSFN_NONBLOCKING: c_int = 0;
pub const NAPI_TSFN_ABORT: c_int = 1;

// napi_property_attributes
pub const NAPI_DEFAULT: c_int = 0;
pub const NAPI_WRITABLE: c_int = 1;
pub const NAPI_ENUMERABLE: c_int = 2;
pub const NAPI_CONFIGURABLE: c_int = 4;
pub const NAPI_DEFAULT_METHOD: c_int = NAPI_WRITABLE | NAPI_CONFIGURABLE;

// napi_typedarray_type
pub const NAPI_UINT8_ARRAY: c_int = 1;
pub const NAPI_INT32_ARRAY: c_int = 5;
pub const NAPI_UINT32_ARRAY: c_int = 6;
pub const NAPI_FLOAT64_ARRAY: c_int = 8;

// napi_valuetype
pub const NAPI_UNDEFINED_T: c_int = 0;
pub const NAPI_NULL_T: c_int = 1;
pub const NAPI_BOOLEAN_T: c_int = 2;
pub const NAPI_NUMBER_T: c_int = 3;
pub const NAPI_STRING_T: c_int = 4;
pub const NAPI_OBJECT_T: c_int = 6;

#[repr(C)]
pub struct napi_property_descriptor {
    pub utf8name: *const c_char,
    pub name: napi_value,
    pub method: napi_callback,
    pub getter: napi_callback,
    pub setter: napi_callback,
    pub value: napi_value,
    pub attributes: c_int,
    pub data: *mut c_void,
}

#[repr(C)]
pub struct napi_extended_error_info {
    pub error_message: *const c_char,
    pub engine_reserved: *mut c_void,
    pub engine_error_code: u32,
    pub error_code: napi_status,
}

extern "C" {
    // values
    pub fn napi_get_undefined(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_get_null(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_get_boolean(env: napi_env, value: bool, result: *mut napi_value) -> napi_status;
    pub fn napi_create_double(env: napi_env, value: f64, result: *mut napi_value) -> napi_status;
    pub fn napi_create_uint32(env: napi_env, value: u32, result: *mut napi_value) -> napi_status;
    pub fn napi_create_string_utf8(env: napi_env, s: *const c_char, len: usize, result: *mut napi_value) -> napi_status;
    pub fn napi_get_value_double(env: napi_env, v: napi_value, result: *mut f64) -> napi_status;
    pub fn napi_get_value_uint32(env: napi_env, v: napi_value, result: *mut u32) -> napi_status;
    pub fn napi_get_value_int32(env: napi_env, v: napi_value, result: *mut i32) -> napi_status;
    pub fn napi_create_object(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_set_named_property(env: napi_env, obj: napi_value, name: *const c_char, v: napi_value) -> napi_status;

    // functions, exports, classes
    pub fn napi_create_function(env: napi_env, utf8name: *const c_char, length: usize, cb: napi_callback, data: *mut c_void, result: *mut napi_value) -> napi_status;
    pub fn napi_get_cb_info(env: napi_env, info: napi_callback_info, argc: *mut usize, argv: *mut napi_value, this_arg: *mut napi_value, data: *mut *mut c_void) -> napi_status;
    pub fn napi_get_new_target(env: napi_env, info: napi_callback_info, result: *mut napi_value) -> napi_status;
    pub fn napi_define_properties(env: napi_env, object: napi_value, count: usize, props: *const napi_property_descriptor) -> napi_status;
    pub fn napi_define_class(env: napi_env, utf8name: *const c_char, length: usize, ctor: napi_callback, data: *mut c_void, count: usize, props: *const napi_property_descriptor, result: *mut napi_value) -> napi_status;
    pub fn napi_wrap(env: napi_env, js_object: napi_value, native: *mut c_void, finalize_cb: napi_finalize, hint: *mut c_void, result: *mut napi_ref) -> napi_status;
    pub fn napi_unwrap(env: napi_env, js_object: napi_value, result: *mut *mut c_void) -> napi_status;

    // errors
    pub fn napi_throw_error(env: napi_env, code: *const c_char, msg: *const c_char) -> napi_status;
    pub fn napi_throw_type_error(env: napi_env, code: *const c_char, msg: *const c_char) -> napi_status;
    pub fn napi_create_error(env: napi_env, code: napi_value, msg: napi_value, result: *mut napi_value) -> napi_status;
    pub fn napi_is_exception_pending(env: napi_env, result: *mut bool) -> napi_status;
    pub fn napi_get_last_error_info(env: napi_env, result: *mut *const napi_extended_error_info) -> napi_status;

    // buffers / typed arrays
    pub fn napi_get_buffer_info(env: napi_env, v: napi_value, data: *mut *mut c_void, length: *mut usize) -> napi_status;
    pub fn napi_create_buffer(env: napi_env, length: usize, data: *mut *mut c_void, result: *mut napi_value) -> napi_status;
    pub fn napi_create_buffer_copy(env: napi_env, length: usize, data: *const c_void, result_data: *mut *mut c_void, result: *mut napi_value) -> napi_status;
    pub fn napi_create_external_buffer(env: napi_env, length: usize, data: *mut c_void, finalize_cb: napi_finalize, hint: *mut c_void, result: *mut napi_value) -> napi_status;
    pub fn napi_create_arraybuffer(env: napi_env, byte_length: usize, data: *mut *mut c_void, result: *mut napi_value) -> napi_status;
    pub fn napi_create_typedarray(env: napi_env, ty: c_int, length: usize, arraybuffer: napi_value, byte_offset: usize, result: *mut napi_value) -> napi_status;
    pub fn napi_get_typedarray_info(env: napi_env, typedarray: napi_value, ty: *mut c_int, length: *mut usize, data: *mut *mut c_void, arraybuffer: *mut napi_value, byte_offset: *mut usize) -> napi_status;
    pub fn napi_adjust_external_memory(env: napi_env, change: i64, adjusted: *mut i64) -> napi_status;

    // references (keep a JS value alive across calls / threads)
    pub fn napi_create_reference(env: napi_env, v: napi_value, initial_refcount: u32, result: *mut napi_ref) -> napi_status;
    pub fn napi_delete_reference(env: napi_env, r: napi_ref) -> napi_status;
    pub fn napi_get_reference_value(env: napi_env, r: napi_ref, result: *mut napi_value) -> napi_status;

    // async work (libuv thread pool) + promises
    pub fn napi_create_async_work(env: napi_env, async_resource: napi_value, async_resource_name: napi_value, execute: napi_async_execute_callback, complete: napi_async_complete_callback, data: *mut c_void, result: *mut napi_async_work) -> napi_status;
    pub fn napi_queue_async_work(env: napi_env, work: napi_async_work) -> napi_status;
    pub fn napi_delete_async_work(env: napi_env, work: napi_async_work) -> napi_status;
    pub fn napi_create_threadsafe_function(env: napi_env, func: napi_value, async_resource: napi_value, async_resource_name: napi_value, max_queue_size: usize, initial_thread_count: usize, thread_finalize_data: *mut c_void, thread_finalize_cb: napi_finalize, context: *mut c_void, call_js_cb: napi_threadsafe_function_call_js, result: *mut napi_threadsafe_function) -> napi_status;
    pub fn napi_call_threadsafe_function(func: napi_threadsafe_function, data: *mut c_void, is_blocking: c_int) -> napi_status;
    pub fn napi_release_threadsafe_function(func: napi_threadsafe_function, mode: c_int) -> napi_status;
    pub fn napi_ref_threadsafe_function(env: napi_env, func: napi_threadsafe_function) -> napi_status;
    pub fn napi_unref_threadsafe_function(env: napi_env, func: napi_threadsafe_function) -> napi_status;
    pub fn napi_call_function(env: napi_env, recv: napi_value, func: napi_value, argc: usize, argv: *const napi_value, result: *mut napi_value) -> napi_status;
    pub fn napi_add_env_cleanup_hook(env: napi_env, fun: Option<unsafe extern "C" fn(*mut c_void)>, arg: *mut c_void) -> napi_status;
    pub fn napi_remove_env_cleanup_hook(env: napi_env, fun: Option<unsafe extern "C" fn(*mut c_void)>, arg: *mut c_void) -> napi_status;
    pub fn napi_create_promise(env: napi_env, deferred: *mut napi_deferred, promise: *mut napi_value) -> napi_status;
    pub fn napi_resolve_deferred(env: napi_env, deferred: napi_deferred, resolution: napi_value) -> napi_status;
    pub fn napi_reject_deferred(env: napi_env, deferred: napi_deferred, rejection: napi_value) -> napi_status;

    // more values, arrays, objects, strings
    pub fn napi_create_int64(env: napi_env, value: i64, result: *mut napi_value) -> napi_status;
    pub fn napi_create_int32(env: napi_env, value: i32, result: *mut napi_value) -> napi_status;
    pub fn napi_get_value_int64(env: napi_env, v: napi_value, result: *mut i64) -> napi_status;
    pub fn napi_get_value_bool(env: napi_env, v: napi_value, result: *mut bool) -> napi_status;
    pub fn napi_get_value_string_utf8(env: napi_env, v: napi_value, buf: *mut c_char, bufsize: usize, result: *mut usize) -> napi_status;
    pub fn napi_create_array_with_length(env: napi_env, length: usize, result: *mut napi_value) -> napi_status;
    pub fn napi_set_element(env: napi_env, obj: napi_value, index: u32, v: napi_value) -> napi_status;
    pub fn napi_get_element(env: napi_env, obj: napi_value, index: u32, result: *mut napi_value) -> napi_status;
    pub fn napi_get_array_length(env: napi_env, v: napi_value, result: *mut u32) -> napi_status;
    pub fn napi_get_named_property(env: napi_env, obj: napi_value, name: *const c_char, result: *mut napi_value) -> napi_status;
    pub fn napi_typeof(env: napi_env, v: napi_value, result: *mut c_int) -> napi_status;
    pub fn napi_is_buffer(env: napi_env, v: napi_value, result: *mut bool) -> napi_status;
}

// Used by napi/fs.rs: rich error objects (code/errno/syscall/path) and array checks.
extern "C" {
    pub fn napi_throw(env: napi_env, error: napi_value) -> napi_status;
    pub fn napi_get_and_clear_last_exception(env: napi_env, result: *mut napi_value) -> napi_status;
    pub fn napi_is_array(env: napi_env, v: napi_value, result: *mut bool) -> napi_status;
}
