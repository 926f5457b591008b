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
        let c = CString::new("libtorch_cuda.so").unwrap();
        // SAFETY: dlopen with a valid C string; the handle is intentionally leaked.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !h.is_null() {
            return tch::Cuda::is_available();
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

/// Whether the CPU reports AMX bfloat16 units (Linux: the `amx_bf16` flag of /proc/cpuinfo).
/// libtorch's bfloat16 matrix products beat f32 only with them: on AVX-512-BF16 alone the
/// `vit` bench config ran at 0.85x its f32 speed with `model.bf16` (docs/PERFORMANCE.md).
pub fn cpu_has_amx_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| cpuinfo_has_flag(&s, "amx_bf16"))
}

/// Whether a `flags` line of /proc/cpuinfo text lists `flag` (a whole word).
pub fn cpuinfo_has_flag(cpuinfo: &str, flag: &str) -> bool {
    cpuinfo.lines().filter(|l| l.starts_with("flags")).any(|l| l.split_whitespace().any(|w| w == flag))
}

/// A warning for `model.bf16` where it would slow training down, if any.
pub fn bf16_warning(bf16: bool, device: Device) -> Option<String> {
    (bf16 && device == Device::Cpu && !cpu_has_amx_bf16()).then(|| {
        "warning: model.bf16 = true, but this CPU has no AMX units (no amx_bf16 in /proc/cpuinfo): bfloat16 matrix products are slower than f32 here (0.85x on the vit bench config); set model.bf16 = false unless you want bf16 numerics".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_flag_is_matched_as_a_whole_word_on_flags_lines_only() {
        let info = "model name\t: amx_bf16 in a name\nflags\t\t: fpu avx512_bf16 amx_tile\n";
        assert!(!cpuinfo_has_flag(info, "amx_bf16"));
        assert!(cpuinfo_has_flag(info, "amx_tile"));
        assert!(cpuinfo_has_flag("flags : a amx_bf16 b\n", "amx_bf16"));
        assert!(bf16_warning(false, Device::Cpu).is_none());
        assert!(bf16_warning(true, Device::Cuda(0)).is_none());
    }
}
