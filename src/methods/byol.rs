//! BYOL (Grill et al. 2020): the online network (backbone, projector, predictor) predicts the
//! target network's projection of another view; the target is an EMA of the online network and
//! gets no gradient. Loss per pair: 2 - 2 cos(prediction, target projection).
//!
//! With more than two views, every target global view i is paired with every online view v != i
//! (DINO's multi-crop pairs) and the loss is the mean over pairs; with two views that is BYOL's
//! symmetric loss divided by 2.
use super::encoder::{resolution_groups, Ema, Encoder};
use super::head::ProjectionHead;
use super::losses::byol_loss;
use super::{LossOutput, Method, StepCtx};
use super::{Shared, TeacherConfig};
use crate::models::Backbone;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Device, Tensor};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ByolOptions {
    /// Hidden width of the predictor MLP (0: `head.hidden`).
    pub predictor_hidden: i64,
}

impl ByolOptions {
    pub fn validate(&self) -> Result<()> {
        ensure!((0..=65536).contains(&self.predictor_hidden), "byol.predictor_hidden: expected 0 to 65536, got {}", self.predictor_hidden);
        Ok(())
    }
}

/// BYOL's tables: its options and the target network's momentum.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ByolConfig {
    pub byol: ByolOptions,
    pub teacher: TeacherConfig,
}

pub struct Byol {
    student_vs: nn::VarStore,
    teacher_vs: nn::VarStore,
    online: Encoder,
    predictor: ProjectionHead,
    target: Encoder,
    ema: Ema,
}

impl Byol {
    pub fn new(cfg: &ByolConfig, shared: &Shared, device: Device) -> Result<Byol> {
        let student_vs = nn::VarStore::new(device);
        let mut teacher_vs = nn::VarStore::new(device);
        let online = Encoder::new(&student_vs.root(), shared.model, shared)?;
        let h = shared.head;
        let hidden = if cfg.byol.predictor_hidden > 0 { cfg.byol.predictor_hidden } else { h.hidden };
        let predictor = ProjectionHead::new(&(student_vs.root() / "predictor"), h.out, hidden, h.out, 2, (h.bn, false), h.act);
        let target = Encoder::new(&teacher_vs.root(), shared.model, shared)?;
        let ema = Ema::new(&student_vs, &mut teacher_vs);
        Ok(Byol { student_vs, teacher_vs, online, predictor, target, ema })
    }
}

impl Method for Byol {
    fn student(&self) -> &nn::VarStore {
        &self.student_vs
    }
    fn teacher(&self) -> Option<&nn::VarStore> {
        Some(&self.teacher_vs)
    }

    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> LossOutput {
        let p = self.online.project(&resolution_groups(views), true).apply_t(&self.predictor, true);
        let z = tch::no_grad(|| self.target.project(&resolution_groups(&views[..2]), true));
        let loss = byol_loss(&z.chunk(2, 0), &p.chunk(views.len() as i64, 0));
        LossOutput { terms: vec![("byol", loss.shallow_clone())], loss, stats: vec![], entropies: None }
    }

    fn after_step(&mut self, ctx: &StepCtx) {
        self.ema.update(ctx.teacher_momentum);
    }

    /// BYOL evaluates the online network's backbone.
    fn eval_backbone(&self) -> &Backbone {
        &self.online.backbone
    }

    fn eval_store(&self) -> &nn::VarStore {
        &self.student_vs
    }
}

#[cfg(test)]
mod tests;
