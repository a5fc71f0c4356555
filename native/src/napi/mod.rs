//! All Node-API glue. Each submodule exports its functions through `register`.
#[macro_use]
pub mod rt;
pub mod sys;

mod core;
mod fs;
mod pxar;
mod walk;

use rt::*;
use sys::*;

#[no_mangle]
pub unsafe extern "C" fn napi_register_module_v1(env: napi_env, exports: napi_value) -> napi_value {
    install_panic_hook();
    guard(env, || {
        core::register(env, exports)?;
        fs::register(env, exports)?;
        pxar::register(env, exports)?;
        walk::register(env, exports)?;
        Ok(exports)
    })
}
