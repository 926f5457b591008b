//! The NCCL part of the shim (src/shim/nccl.cpp), built by build.rs as libsvib_nccl.so and
//! carried inside the binary: on the first GPU rank's join it is written to a temporary file
//! and loaded after libtorch_cuda.so, whose symbols (and NCCL's) it uses. The plain binary never
//! loads it, so it starts on machines without CUDA.
use anyhow::{bail, Context, Result};
use std::ffi::{c_void, CStr, CString};
use std::io::Write;
use std::sync::OnceLock;

/// libsvib_nccl.so as build.rs made it; empty when NCCL's headers were missing at build time.
static LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libsvib_nccl.so"));

/// `svib_nccl_new` of the loaded library (an address, as the C++ shim takes it), or why not.
static CONSTRUCTOR: OnceLock<std::result::Result<usize, String>> = OnceLock::new();

/// The address of `svib_nccl_new`, loading the library once.
pub fn constructor() -> Result<*const c_void> {
    match CONSTRUCTOR.get_or_init(|| load().map_err(|e| format!("{e:#}"))) {
        Ok(f) => Ok(*f as *const c_void),
        Err(e) => bail!("{e}"),
    }
}

fn load() -> Result<usize> {
    if !built_in() {
        bail!("this svib binary was built without NCCL's headers (run scripts/setup.sh, then cargo build --release), so it cannot train on several GPUs; train on one GPU with one process");
    }
    if !crate::device::try_load_cuda() {
        bail!("no CUDA device is usable (the libtorch found has no CUDA support or no GPU is visible)");
    }
    let mut file = tempfile::Builder::new().prefix("svib-nccl-").suffix(".so").tempfile().context("writing the NCCL shim to a temporary file")?;
    file.write_all(LIBRARY).and_then(|_| file.flush()).context("writing the NCCL shim to a temporary file")?;
    let path = CString::new(file.path().as_os_str().as_encoded_bytes())?;
    // SAFETY: dlopen with a valid path; the handle is intentionally leaked (the library stays
    // mapped after the file is removed when `file` drops).
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        bail!("loading the NCCL shim from {} (point TMPDIR at a folder that allows executables if this one does not): {}", file.path().display(), dl_error());
    }
    let name = CString::new("svib_nccl_new")?;
    // SAFETY: a live handle and a valid symbol name.
    let f = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if f.is_null() {
        bail!("the NCCL shim has no svib_nccl_new: {}", dl_error());
    }
    Ok(f as usize)
}

/// dlerror()'s text.
fn dl_error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl* call.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "unknown error".into()
    } else {
        // SAFETY: as above.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

/// Whether this binary carries the NCCL shim (built with NCCL's headers).
pub fn built_in() -> bool {
    !LIBRARY.is_empty()
}
