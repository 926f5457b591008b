//! Optimisers with state we can checkpoint and reset per variable: AdamW (PyTorch semantics),
//! LARS (as in DINO/BYOL: biases and norm parameters get neither weight decay nor adaptation)
//! and SGD with momentum. Parameters with one dimension (biases, norms) are not regularised.
use super::config::{OptimConfig, OptimName};
use crate::device::shim;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

struct Slot {
    param: Tensor,
    /// AdamW: first/second moments; SGD/LARS: momentum buffer in `m`.
    m: Tensor,
    v: Option<Tensor>,
    step: i64,
    regularized: bool,
    /// Multiplies the learning rate of this variable (1: the schedule's).
    lr_scale: f64,
}

pub struct Optimizer {
    cfg: OptimConfig,
    slots: BTreeMap<String, Slot>,
    /// Variables left out of the next step entirely (as PyTorch does for `grad = None`).
    skip: Vec<String>,
}

impl Optimizer {
    pub fn new(cfg: &OptimConfig, named: Vec<(String, Tensor)>) -> Optimizer {
        let slots = named
            .into_iter()
            .map(|(name, p)| {
                let regularized = p.dim() > 1;
                let v = (cfg.name == OptimName::Adamw).then(|| p.zeros_like());
                (name, Slot { m: p.zeros_like(), v, step: 0, regularized, lr_scale: 1.0, param: p })
            })
            .collect();
        Optimizer { cfg: cfg.clone(), slots, skip: vec![] }
    }

    /// Scales the learning rate (and so the decoupled weight decay) of the named variables.
    pub fn set_lr_scale(&mut self, names: &[(String, f64)]) {
        for (n, f) in names {
            if let Some(s) = self.slots.get_mut(n) {
                s.lr_scale = *f;
            }
        }
    }

    pub fn zero_grad(&mut self) {
        self.skip.clear();
        if self.on_cuda() && shim::foreach_zero(&self.grads()).is_ok() {
            return;
        }
        for s in self.slots.values_mut() {
            s.param.zero_grad();
        }
    }

    /// Leaves the named variables out of the next step: no update, no decay, no state change
    /// (frozen this step, as DINO's `cancel_gradients_last_layer`).
    pub fn cancel_grad(&mut self, names: &[String]) {
        self.skip.extend(names.iter().filter(|n| self.slots.contains_key(*n)).cloned());
    }

    /// Resets the state of the named variables (moments, momentum, step count).
    pub fn reset_state(&mut self, names: &[String]) {
        for n in names {
            if let Some(s) = self.slots.get_mut(n) {
                tch::no_grad(|| {
                    let _ = s.m.zero_();
                    if let Some(v) = &mut s.v {
                        let _ = v.zero_();
                    }
                });
                s.step = 0;
            }
        }
    }

    /// The gradients backward reached (the others are undefined).
    pub fn grads(&self) -> Vec<Tensor> {
        self.slots.values().map(|s| s.param.grad()).filter(|g| g.defined()).collect()
    }

    /// DINO's per-parameter gradient clipping: each gradient scaled to norm at most `max`.
    pub fn clip_grad_per_param(&mut self, max: f64) {
        // on CUDA one multi-tensor launch, the factors kept on the device (reading each norm back
        // would stall the GPU's queue once per variable); they are computed in f32 there, in f64 here
        if self.on_cuda() && tch::no_grad(|| shim::foreach_clip(&self.grads(), max)).is_ok() {
            return;
        }
        tch::no_grad(|| {
            for s in self.slots.values() {
                let mut g = s.param.grad();
                if !g.defined() {
                    continue;
                }
                let norm = g.norm().double_value(&[]);
                let coef = max / (norm + 1e-6);
                if coef < 1.0 {
                    let _ = g.g_mul_scalar_(coef);
                }
            }
        });
    }

    /// One update with learning rate `lr` and weight decay `wd` (regularised parameters only).
    pub fn step(&mut self, lr: f64, wd: f64) -> Result<()> {
        if self.cfg.name == OptimName::Adamw && self.on_cuda() {
            return self.adamw_step_multi_tensor(lr, wd);
        }
        self.step_per_tensor(lr, wd);
        Ok(())
    }

    fn on_cuda(&self) -> bool {
        self.slots.values().next().is_some_and(|s| s.param.device().is_cuda())
    }

    /// AdamW on CUDA: the variables grouped by (learning rate, weight decay, step count), one
    /// multi-tensor launch per operation and group instead of one per variable; the same
    /// element-wise arithmetic as `step_per_tensor`.
    fn adamw_step_multi_tensor(&mut self, lr: f64, wd: f64) -> Result<()> {
        let c = self.cfg.clone();
        let mut groups: BTreeMap<(u64, u64, i64), Vec<&mut Slot>> = BTreeMap::new();
        for (name, s) in self.slots.iter_mut() {
            if !s.param.grad().defined() || self.skip.contains(name) {
                continue;
            }
            s.step += 1;
            let (lr, wd) = (lr * s.lr_scale, if s.regularized { wd } else { 0.0 });
            groups.entry((lr.to_bits(), wd.to_bits(), s.step)).or_default().push(s);
        }
        tch::no_grad(|| {
            for ((lr, wd, step), slots) in groups {
                let (lr, wd) = (f64::from_bits(lr), f64::from_bits(wd));
                let (b1, b2) = (c.betas[0], c.betas[1]);
                let bc = [1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32)];
                let grads: Vec<Tensor> = slots.iter().map(|s| s.param.grad()).collect();
                let p: Vec<&Tensor> = slots.iter().map(|s| &s.param).collect();
                let m: Vec<&Tensor> = slots.iter().map(|s| &s.m).collect();
                let v: Vec<&Tensor> = slots.iter().map(|s| s.v.as_ref().expect("AdamW has second moments")).collect();
                shim::foreach_adamw(&p, &grads, &m, &v, lr, wd, [b1, b2], bc, c.eps)?;
            }
            Ok(())
        })
    }

    fn step_per_tensor(&mut self, lr: f64, wd: f64) {
        let c = &self.cfg;
        tch::no_grad(|| {
            for (name, s) in self.slots.iter_mut() {
                let g = s.param.grad();
                if !g.defined() || self.skip.contains(name) {
                    continue;
                }
                let wd = if s.regularized { wd } else { 0.0 };
                let lr = lr * s.lr_scale;
                let p = &mut s.param;
                match c.name {
                    OptimName::Adamw => {
                        s.step += 1;
                        let (b1, b2) = (c.betas[0], c.betas[1]);
                        let v = s.v.as_mut().expect("AdamW has second moments");
                        if wd != 0.0 {
                            let _ = p.g_mul_scalar_(1.0 - lr * wd);
                        }
                        // in place where libtorch allows: two temporaries per tensor (g^2, denom)
                        let _ = s.m.lerp_(&g, 1.0 - b1);
                        let _ = v.lerp_(&(&g * &g), 1.0 - b2);
                        let bc1 = 1.0 - b1.powi(s.step as i32);
                        let bc2 = 1.0 - b2.powi(s.step as i32);
                        if lr > 0.0 {
                            // p -= lr/bc1 * m / (sqrt(v/bc2) + eps), as p += m / denom'
                            let mut denom = v.sqrt();
                            let _ = denom.g_div_scalar_(bc2.sqrt()).g_add_scalar_(c.eps).g_mul_scalar_(-bc1 / lr);
                            let _ = p.addcdiv_(&s.m, &denom);
                        }
                    }
                    OptimName::Sgd => {
                        let d = if wd != 0.0 { &g + &*p * wd } else { g.shallow_clone() };
                        let _ = s.m.g_mul_scalar_(c.momentum).g_add_(&d);
                        let _ = p.g_add_(&(&s.m * (-lr)));
                    }
                    OptimName::Lars => {
                        let mut d = g.shallow_clone();
                        if s.regularized && p.device().is_cuda() {
                            // the trust ratio on the device: no synchronisation per variable
                            d = &d + &*p * wd;
                            let (pn, un) = (p.norm(), d.norm());
                            let ok = pn.gt(0.0).logical_and(&un.gt(0.0));
                            d = &d * ok.where_self(&(&pn * c.lars_eta / &un.clamp_min(1e-30)), &pn.ones_like());
                        } else if s.regularized {
                            d = &d + &*p * wd;
                            let pn = p.norm().double_value(&[]);
                            let un = d.norm().double_value(&[]);
                            if pn > 0.0 && un > 0.0 {
                                d = &d * (c.lars_eta * pn / un);
                            }
                        }
                        let _ = s.m.g_mul_scalar_(c.momentum).g_add_(&d);
                        let _ = p.g_add_(&(&s.m * (-lr)));
                    }
                }
            }
        });
    }

    /// State tensors by name (`m.NAME`, `v.NAME`, `step.NAME`) for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        for (n, s) in &self.slots {
            out.push((format!("m.{n}"), s.m.shallow_clone()));
            if let Some(v) = &s.v {
                out.push((format!("v.{n}"), v.shallow_clone()));
            }
            out.push((format!("step.{n}"), Tensor::from_slice(&[s.step])));
        }
        out
    }

    pub fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        for (n, s) in self.slots.iter_mut() {
            let get = |k: String| state.get(&k).ok_or_else(|| anyhow::anyhow!("optimiser state `{k}` missing"));
            let m = get(format!("m.{n}"))?;
            if m.size() != s.m.size() {
                bail!("optimiser state `m.{n}` has shape {:?}, expected {:?}", m.size(), s.m.size());
            }
            tch::no_grad(|| s.m.copy_(m));
            if let Some(v) = &mut s.v {
                tch::no_grad(|| v.copy_(get(format!("v.{n}")).unwrap_or(&v.zeros_like())));
            }
            s.step = get(format!("step.{n}"))?.to_kind(Kind::Int64).int64_value(&[0]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
