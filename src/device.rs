//! Device selection. The binary is linked against libtorch's CPU library only (the linker drops
//! libtorch_cuda because no symbol of it is used), so that it starts on machines without the CUDA
//! libraries. When the libtorch it finds has CUDA, loading libtorch_cuda.so with RTLD_GLOBAL
//! registers the CUDA backend, exactly as `import torch` does.
use anyhow::{bail, Result};
use std::ffi::CString;
use std::sync::OnceLock;
use tch::Device;

static CUDA_LOADED: OnceLock<bool> = OnceLock::new();

/// Loads libtorch_cuda.so if it can be found and loaded; returns whether CUDA is usable.
pub fn try_load_cuda() -> bool {
    *CUDA_LOADED.get_or_init(|| {
        for name in ["libtorch_cuda.so"] {
            let c = CString::new(name).unwrap();
            // SAFETY: dlopen with a valid C string; the handle is intentionally leaked.
            let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if !h.is_null() {
                return tch::Cuda::is_available();
            }
        }
        false
    })
}

/// Parses `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available).
pub fn parse(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if try_load_cuda() { Device::Cuda(0) } else { Device::Cpu }),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let idx: usize = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| anyhow::anyhow!("--device: expected cuda:N with N a number, got `{s}`"))?,
                None => 0,
            };
            if !try_load_cuda() {
                bail!("--device {s}: no CUDA device is usable (the libtorch found has no CUDA support or no GPU is visible)");
            }
            let n = tch::Cuda::device_count() as usize;
            if idx >= n {
                bail!("--device {s}: only {n} CUDA device(s) visible");
            }
            Ok(Device::Cuda(idx))
        }
        other => bail!("--device: expected cpu, cuda, cuda:N or auto, got `{other}`"),
    }
}
