//! Mixed precision on CUDA (`train.precision`): the forward passes and the loss under
//! libtorch's autocast in bfloat16 or float16, and for float16 a dynamic loss scale with
//! torch.amp.GradScaler's rules (scale 2^16, halved and the step skipped when a gradient is
//! inf/NaN, doubled after 2,000 good steps). CPU runs are unchanged: they accept fp32 only.
use super::config::Precision;
use super::optim::Optimizer;
use crate::device::shim;
use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// The precision of a run's training step.
pub struct Amp {
    precision: Precision,
    scaler: Option<GradScaler>,
}

impl Amp {
    /// Sets libtorch up for `precision` on `device` (autocast dtype, TF32 off so that fp32 is
    /// IEEE float32 as on the CPU); bf16/fp16 need CUDA.
    pub fn new(precision: Precision, device: Device) -> Result<Amp> {
        if !device.is_cuda() {
            if precision != Precision::Fp32 {
                bail!(
                    "train.precision = {}: mixed precision is for CUDA devices (train.device = cuda); on the CPU use fp32 (or model.bf16 for ViTs on CPUs with AMX)",
                    precision.name()
                );
            }
            return Ok(Amp { precision, scaler: None });
        }
        shim::set_tf32(false)?;
        if precision != Precision::Fp32 {
            shim::set_autocast_dtype_bf16(precision == Precision::Bf16)?;
        }
        let scaler = (precision == Precision::Fp16).then(|| GradScaler::new(device));
        Ok(Amp { precision, scaler })
    }

    /// Runs `f` (forward passes and loss) under autocast when the precision asks for it.
    pub fn forward<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        match self.precision {
            Precision::Fp32 => Ok(f()),
            Precision::Bf16 | Precision::Fp16 => shim::autocast(f),
        }
    }

    /// The loss to call backward on (scaled under fp16).
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        match &self.scaler {
            Some(s) => loss * &s.scale,
            None => loss.shallow_clone(),
        }
    }

    /// After backward: unscales the optimiser's gradients (fp16) and says whether the step may
    /// be taken (false: a gradient overflowed, the step is skipped and the scale lowered).
    /// Without a scaler nothing is read.
    pub fn unscale(&mut self, opt: &Optimizer) -> Result<bool> {
        match &mut self.scaler {
            Some(s) => s.unscale_and_update(&opt.grads()),
            None => Ok(true),
        }
    }

    /// The loss scale under fp16, for the metrics.
    pub fn loss_scale(&self) -> Option<f64> {
        self.scaler.as_ref().map(|s| s.scale.double_value(&[0]))
    }

    /// The scaler's state for checkpoints (`scale`, `growth`); empty without fp16.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.scaler.as_ref().map_or(vec![], |s| vec![("scale".into(), s.scale.to_device(Device::Cpu)), ("growth".into(), s.growth.to_device(Device::Cpu))])
    }

    /// Restores what `state` wrote; a checkpoint without it (an fp32/bf16 run) starts anew.
    pub fn load_state(&mut self, state: &std::collections::BTreeMap<String, Tensor>) {
        if let (Some(s), Some(scale), Some(growth)) = (&mut self.scaler, state.get("scale"), state.get("growth")) {
            tch::no_grad(|| {
                s.scale.copy_(scale);
                s.growth.copy_(growth);
            });
        }
    }
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        }
    }
}

/// torch.amp.GradScaler's state: the scale, the count of good steps since the last change,
/// and the overflow flag of the last step, all on the device.
struct GradScaler {
    scale: Tensor,
    growth: Tensor,
    found_inf: Tensor,
}

impl GradScaler {
    fn new(device: Device) -> GradScaler {
        GradScaler {
            scale: Tensor::full([1], 65536.0, (Kind::Float, device)),
            growth: Tensor::zeros([1], (Kind::Int, device)),
            found_inf: Tensor::zeros([1], (Kind::Float, device)),
        }
    }

    fn unscale_and_update(&mut self, grads: &[Tensor]) -> Result<bool> {
        let _ = self.found_inf.zero_();
        let inv = self.scale.reciprocal();
        shim::unscale_check(grads, &self.found_inf, &inv)?;
        let ok = self.found_inf.double_value(&[0]) == 0.0;
        let _ = self.scale.internal_amp_update_scale_(&self.growth, &self.found_inf, 2.0, 0.5, 2000);
        Ok(ok)
    }
}
