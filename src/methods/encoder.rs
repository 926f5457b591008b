//! What every method shares: a backbone with a projection head, views grouped by resolution,
//! and a momentum (EMA) copy of the student.
use super::head::{l2n, ProjectionHead};
use crate::models::{ArchConfig, Backbone};
use crate::train::config::Config;
use anyhow::Result;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Backbone + projection MLP (`backbone.*`, `head.mlp.*`).
pub struct Encoder {
    pub backbone: Backbone,
    pub head: ProjectionHead,
}

impl Encoder {
    pub fn new(p: &nn::Path, arch: &ArchConfig, cfg: &Config) -> Result<Encoder> {
        let backbone = Backbone::new(&(p / "backbone"), arch, cfg.augment.channels as i64)?;
        let h = &cfg.head;
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
        tch::no_grad(|| {
            for (s, t) in &self.pairs {
                let _ = t.shallow_clone().lerp_(s, 1.0 - m);
            }
        });
    }
}
