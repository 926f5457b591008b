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

/// This process's local rank in a distributed run (torchrun's LOCAL_RANK), set once on joining.
static LOCAL_RANK: OnceLock<usize> = OnceLock::new();

/// Makes `cuda` and `auto` mean the GPU of local rank `local_rank` in this process.
pub fn set_local_rank(local_rank: usize) {
    let _ = LOCAL_RANK.set(local_rank);
}

/// The CUDA device `cuda` and `auto` mean (CUDA loaded): 0, or on a distributed rank its local
/// rank's device, or device 0 when the process sees one GPU (SLURM's `--gpus-per-task=1`).
fn default_cuda(spec: &str) -> Result<usize> {
    let Some(&local) = LOCAL_RANK.get() else { return Ok(0) };
    match tch::Cuda::device_count().max(0) as usize {
        n if local < n => Ok(local),
        1 => Ok(0),
        n => bail!("--device {spec}: local rank {local} but this process sees {n} GPUs (expected one GPU per local rank, or one visible GPU per process)"),
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available); `cuda` is device 0, or the
/// local rank's device in a distributed run. Errors name `--device`.
pub fn parse(spec: &str) -> Result<Device> {
    parse_as(spec, "--device")
}

/// [`parse`], with errors naming `what`: a flag (`--device cuda: …`) or a config key
/// (`train.device = cuda: …`).
pub fn parse_as(spec: &str, what: &str) -> Result<Device> {
    let named = |s: &str| if what.starts_with("--") { format!("{what} {s}") } else { format!("{what} = {s}") };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if try_load_cuda() { Device::Cuda(default_cuda(spec)?) } else { Device::Cpu }),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let written = s.strip_prefix("cuda:").map(|n| n.parse::<usize>().map_err(|_| anyhow::anyhow!("{what}: expected cuda:N with N a number, got `{s}`"))).transpose()?;
            if !try_load_cuda() {
                bail!("{}: no CUDA device is usable (the libtorch found has no CUDA support or no GPU is visible)", named(s));
            }
            let idx = match written {
                Some(i) => i,
                None => default_cuda(s)?,
            };
            let n = tch::Cuda::device_count() as usize;
            if idx >= n {
                bail!("{}: only {n} CUDA device(s) visible", named(s));
            }
            Ok(Device::Cuda(idx))
        }
        other => bail!("{what}: expected cpu, cuda, cuda:N or auto, got `{other}`"),
    }
}

/// The libtorch calls tch 0.24 does not expose (src/shim/amp.cpp, compiled by build.rs).
pub mod shim {
    use anyhow::{bail, Result};
    use std::borrow::Borrow;
    use std::ffi::{c_char, c_int, c_void, CStr};
    use tch::Tensor;

    extern "C" {
        fn svib_autocast_cuda_dtype(bf16: c_int, err: *mut c_char, cap: usize) -> c_int;
        fn svib_set_tf32(on: c_int, err: *mut c_char, cap: usize) -> c_int;
        fn svib_unscale_check(grads: *const *const c_void, n: usize, found_inf: *const c_void, inv_scale: *const c_void, err: *mut c_char, cap: usize) -> c_int;
        fn svib_autocast_enter(prev: *mut c_int, err: *mut c_char, cap: usize) -> c_int;
        fn svib_autocast_exit(prev: c_int, err: *mut c_char, cap: usize) -> c_int;
        fn svib_empty_pinned(shape: *const i64, ndim: usize, out: *mut *mut c_void, err: *mut c_char, cap: usize) -> c_int;
        fn svib_foreach_zero(ts: *const *const c_void, n: usize, err: *mut c_char, cap: usize) -> c_int;
        fn svib_foreach_lerp(dst: *const *const c_void, src: *const *const c_void, n: usize, w: f64, err: *mut c_char, cap: usize) -> c_int;
        fn svib_foreach_clip(grads: *const *const c_void, n: usize, max: f64, err: *mut c_char, cap: usize) -> c_int;
        fn svib_foreach_adamw(
            ps: *const *const c_void,
            gs: *const *const c_void,
            ms: *const *const c_void,
            vs: *const *const c_void,
            n: usize,
            lr: f64,
            wd: f64,
            b1: f64,
            b2: f64,
            bc1: f64,
            bc2: f64,
            eps: f64,
            err: *mut c_char,
            cap: usize,
        ) -> c_int;
    }

    /// The libtorch tensors behind `ts`, for a `at::Tensor**` argument.
    fn ptrs(ts: &[impl Borrow<Tensor>]) -> Vec<*const c_void> {
        ts.iter().map(|t| t.borrow().as_ptr() as *const c_void).collect()
    }

    /// Zeroes every tensor with one multi-tensor kernel per device and dtype.
    pub fn foreach_zero(ts: &[impl Borrow<Tensor>]) -> Result<()> {
        let p = ptrs(ts);
        // SAFETY: the pointers are live tensors borrowed for the call (changed in place).
        call("zeroing the gradients", |e, n| unsafe { svib_foreach_zero(p.as_ptr(), p.len(), e, n) })
    }

    /// `dst[i].lerp_(src[i], w)` for every i (the EMA teacher update), multi-tensor.
    pub fn foreach_lerp(dst: &[impl Borrow<Tensor>], src: &[impl Borrow<Tensor>], w: f64) -> Result<()> {
        assert_eq!(dst.len(), src.len());
        let (d, s) = (ptrs(dst), ptrs(src));
        // SAFETY: as above; both lists have the same length.
        call("the EMA update", |e, n| unsafe { svib_foreach_lerp(d.as_ptr(), s.as_ptr(), d.len(), w, e, n) })
    }

    /// DINO's per-parameter clipping, g *= min(1, max / (|g| + 1e-6)), multi-tensor.
    pub fn foreach_clip(grads: &[impl Borrow<Tensor>], max: f64) -> Result<()> {
        let p = ptrs(grads);
        // SAFETY: as above.
        call("clipping the gradients", |e, n| unsafe { svib_foreach_clip(p.as_ptr(), p.len(), max, e, n) })
    }

    /// One AdamW step of tensors that share lr, weight decay and step count (see the shim).
    #[allow(clippy::too_many_arguments)]
    pub fn foreach_adamw(
        p: &[impl Borrow<Tensor>],
        g: &[impl Borrow<Tensor>],
        m: &[impl Borrow<Tensor>],
        v: &[impl Borrow<Tensor>],
        lr: f64,
        wd: f64,
        betas: [f64; 2],
        bc: [f64; 2],
        eps: f64,
    ) -> Result<()> {
        assert!(g.len() == p.len() && m.len() == p.len() && v.len() == p.len());
        let (pp, gp, mp, vp) = (ptrs(p), ptrs(g), ptrs(m), ptrs(v));
        // SAFETY: as above; the four lists have the same length.
        call("the AdamW step", |e, n| unsafe {
            svib_foreach_adamw(pp.as_ptr(), gp.as_ptr(), mp.as_ptr(), vp.as_ptr(), pp.len(), lr, wd, betas[0], betas[1], bc[0], bc[1], eps, e, n)
        })
    }

    /// Runs one shim call and turns its error text into an error.
    fn call(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
        let mut buf = [0 as c_char; 512];
        if f(buf.as_mut_ptr(), buf.len()) != 0 {
            // SAFETY: the shim NUL-terminates what it writes into buf.
            let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
            bail!("{what}: {msg}");
        }
        Ok(())
    }

    /// The dtype CUDA autocast casts to: bfloat16, or float16.
    pub fn set_autocast_dtype_bf16(bf16: bool) -> Result<()> {
        // SAFETY: a call into libtorch's global state; the buffer is valid for the call.
        call("autocast dtype", |e, n| unsafe { svib_autocast_cuda_dtype(c_int::from(bf16), e, n) })
    }

    /// TF32 tensor cores for float32 matrix products and convolutions on CUDA.
    pub fn set_tf32(on: bool) -> Result<()> {
        // SAFETY: as above.
        call("TF32", |e, n| unsafe { svib_set_tf32(c_int::from(on), e, n) })
    }

    /// Runs `f` with CUDA autocast on (nesting and the weight-cast cache as torch.autocast).
    pub fn autocast<T>(f: impl FnOnce() -> T) -> Result<T> {
        let mut prev: c_int = 0;
        // SAFETY: prev and the buffer are valid for the call.
        call("autocast", |e, n| unsafe { svib_autocast_enter(&mut prev, e, n) })?;
        let out = f();
        // SAFETY: as above.
        call("autocast", |e, n| unsafe { svib_autocast_exit(prev, e, n) })?;
        Ok(out)
    }

    /// torch's fused unscale of the gradients by `inv_scale`, setting `found_inf` to 1 when any
    /// holds an inf or NaN.
    pub fn unscale_check(grads: &[impl Borrow<Tensor>], found_inf: &Tensor, inv_scale: &Tensor) -> Result<()> {
        let p = ptrs(grads);
        // SAFETY: every pointer is a live tensor borrowed for the call; libtorch changes the
        // gradients and found_inf in place.
        call("unscaling the gradients", |e, n| unsafe { svib_unscale_check(p.as_ptr(), p.len(), found_inf.as_ptr() as *const c_void, inv_scale.as_ptr() as *const c_void, e, n) })
    }

    /// A new float32 CPU tensor of `shape` in pinned memory (for non-blocking copies to CUDA).
    pub fn empty_pinned(shape: &[i64]) -> Result<Tensor> {
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: shape and out are valid for the call.
        call("pinned memory", |e, n| unsafe { svib_empty_pinned(shape.as_ptr(), shape.len(), &mut out, e, n) })?;
        // SAFETY: out is a heap at::Tensor* the shim created for us; tch's Tensor frees it.
        Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) })
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
