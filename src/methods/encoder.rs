//! What every method shares: a backbone with a projection head, views grouped by resolution,
//! and a momentum (EMA) copy of the student.
use super::head::{l2n, ProjectionHead};
use super::Shared;
use crate::models::{ArchConfig, Backbone};
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Backbone + projection MLP (`backbone.*`, `head.mlp.*`).
pub struct Encoder {
    pub backbone: Backbone,
    pub head: ProjectionHead,
}

impl Encoder {
    /// A backbone of `arch` (the shared one, or a variant of it such as DINO's teacher without
    /// stochastic depth) with the shared projection head.
    pub fn new(p: &nn::Path, arch: &ArchConfig, shared: &Shared) -> Result<Encoder> {
        let backbone = Backbone::new(&(p / "backbone"), arch, shared.channels as i64)?;
        let h = shared.head;
        let head = ProjectionHead::new(&(p / "head"), backbone.out_dim(), h.hidden, h.out, h.layers, (h.bn, h.bn_out), h.act);
        Ok(Encoder { backbone, head })
    }
    /// Projections of groups of same-sized views, one backbone pass per group, concatenated.
    pub fn project(&self, groups: &[Tensor], train: bool) -> Tensor {
        let feats: Vec<Tensor> = groups.iter().map(|g| self.backbone.forward_t(g, train)).collect();
        Tensor::cat(&feats, 0).apply_t(&self.head, train)
    }
    /// Unit-norm projections.
    pub fn embed(&self, groups: &[Tensor], train: bool) -> Tensor {
        l2n(&self.project(groups, train))
    }
}

/// Concatenates consecutive views of equal resolution (globals, locals) into one batch each, so
/// that a backbone runs once per resolution, as DINO's MultiCropWrapper does.
pub fn resolution_groups(views: &[Tensor]) -> Vec<Tensor> {
    let mut groups: Vec<Vec<&Tensor>> = vec![];
    let mut last = None;
    for v in views {
        let s = v.size()[2..].to_vec();
        if last.as_ref() != Some(&s) {
            groups.push(vec![]);
            last = Some(s);
        }
        groups.last_mut().unwrap().push(v);
    }
    groups.into_iter().map(|g| Tensor::cat(&g, 0)).collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TeacherConfig {
    pub momentum_start: f64,
    pub momentum_end: f64,
    /// DINO's teacher centring of the consistency target (off for SVIB; not SPEC's objective).
    /// The KL term, the marginal prior and the collapse statistics keep the plain posterior.
    pub center: bool,
    pub center_momentum: f64,
    /// Sinkhorn-Knopp iterations that balance the teacher's target over the batch (DINOv2's
    /// replacement for centring; 0 = off; not SPEC's objective). The KL term, the marginal prior
    /// and the collapse statistics keep the plain GMM posterior.
    pub sinkhorn_iters: usize,
}

impl Default for TeacherConfig {
    fn default() -> Self {
        TeacherConfig { momentum_start: 0.996, momentum_end: 1.0, center: false, center_momentum: 0.9, sinkhorn_iters: 0 }
    }
}

impl TeacherConfig {
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [("teacher.momentum_start", self.momentum_start), ("teacher.momentum_end", self.momentum_end)] {
            ensure!(v.is_finite() && (0.0..=1.0).contains(&v), "{key}: expected a value in [0, 1], got {}", crate::util::Num(v));
        }
        let (cm, it) = (self.center_momentum, self.sinkhorn_iters);
        ensure!(cm.is_finite() && (0.0..1.0).contains(&cm), "teacher.center_momentum: expected a value in [0, 1), got {}", crate::util::Num(cm));
        ensure!(it <= 100, "teacher.sinkhorn_iters: expected a value in [0, 100], got {it}");
        Ok(())
    }
}

/// A momentum copy: teacher variables start equal to the student's and follow them by EMA.
/// Only trainable parameters are averaged (as DINO, BYOL and MoCo do); BatchNorm running
/// statistics stay the teacher's own. The teacher's variables are frozen.
pub struct Ema {
    pairs: Vec<(Tensor, Tensor)>,
}

impl Ema {
    pub fn new(student: &nn::VarStore, teacher: &mut nn::VarStore) -> Ema {
        let sv = student.variables();
        let mut tv = teacher.variables();
        tch::no_grad(|| {
            for (name, t) in tv.iter_mut() {
                if let Some(s) = sv.get(name) {
                    t.copy_(s);
                }
            }
        });
        let pairs = sv.iter().filter(|(_, s)| s.requires_grad()).filter_map(|(n, s)| tv.get(n).map(|t| (s.shallow_clone(), t.shallow_clone()))).collect();
        teacher.freeze();
        Ema { pairs }
    }
    /// teacher = m * teacher + (1 - m) * student.
    pub fn update(&self, m: f64) {
        if self.pairs.first().is_some_and(|(s, _)| s.device().is_cuda()) {
            // one multi-tensor launch instead of one per variable (the same lerp)
            let (s, t): (Vec<&Tensor>, Vec<&Tensor>) = self.pairs.iter().map(|(s, t)| (s, t)).unzip();
            if tch::no_grad(|| crate::device::shim::foreach_lerp(&t, &s, 1.0 - m)).is_ok() {
                return;
            }
        }
        tch::no_grad(|| {
            for (s, t) in &self.pairs {
                let _ = t.shallow_clone().lerp_(s, 1.0 - m);
            }
        });
    }
}
