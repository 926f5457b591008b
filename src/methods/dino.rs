//! DINO (Caron et al. 2021): self-distillation with a centred, sharpened EMA teacher. The head is
//! DINO's MLP -> L2 norm -> weight-normalised linear layer (`head.last_layer.weight_v`, gain
//! fixed at 1 as with `norm_last_layer=True`), with `gmm.k` outputs so that a comparison with
//! SVIB uses as many prototypes as SVIB has mixture components.
use super::encoder::{resolution_groups, Ema, Encoder};
use super::head::Prototypes;
use super::losses::{dino_loss, entropy, update_center};
use super::{Collapse, Entropies, LossOutput, Method, StepCtx};
use super::{Shared, TeacherConfig};
use crate::models::{ArchConfig, Backbone};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

/// DINO's temperatures and last-layer freezing (main_dino.py defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DinoOptions {
    /// Outputs of the last layer, K (main_dino.py's `out_dim`).
    pub out_dim: i64,
    /// Teacher temperature at the start of training, warmed up linearly to `teacher_temp`.
    pub warmup_teacher_temp: f64,
    pub teacher_temp: f64,
    pub warmup_teacher_temp_epochs: usize,
    pub student_temp: f64,
    /// Epochs during which the last layer gets no gradient.
    pub freeze_last_layer: usize,
}

impl Default for DinoOptions {
    fn default() -> Self {
        DinoOptions { out_dim: 65536, warmup_teacher_temp: 0.04, teacher_temp: 0.07, warmup_teacher_temp_epochs: 30, student_temp: 0.1, freeze_last_layer: 1 }
    }
}

impl DinoOptions {
    pub fn validate(&self) -> Result<()> {
        ensure!((2..=1 << 22).contains(&self.out_dim), "dino.out_dim: expected 2 to 4194304 outputs, got {}", self.out_dim);
        for (k, v) in [("warmup_teacher_temp", self.warmup_teacher_temp), ("teacher_temp", self.teacher_temp), ("student_temp", self.student_temp)] {
            ensure!(v.is_finite() && v >= 1e-3, "dino.{k}: expected a finite value >= 0.001, got {}", crate::util::Num(v));
        }
        Ok(())
    }
    /// The teacher temperature in `epoch` (0-based): DINO's `np.linspace(warmup, teacher, W)`
    /// for the first W epochs (the last of them already at `teacher_temp`), then constant.
    pub fn teacher_temp_at(&self, epoch: usize) -> f64 {
        let w = self.warmup_teacher_temp_epochs;
        if epoch >= w {
            self.teacher_temp
        } else if w == 1 {
            self.warmup_teacher_temp // linspace(a, b, 1) = [a]
        } else {
            self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * epoch as f64 / (w - 1) as f64
        }
    }
}

/// DINO's tables: its options and the teacher's momentum (and centre momentum).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DinoConfig {
    pub dino: DinoOptions,
    pub teacher: TeacherConfig,
}

const LAST_LAYER: &str = "head.last_layer.weight_v";

pub struct Dino {
    cfg: DinoConfig,
    student_vs: nn::VarStore,
    teacher_vs: nn::VarStore,
    student: Encoder,
    teacher: Encoder,
    last_s: Prototypes,
    last_t: Prototypes,
    ema: Ema,
    /// Running centre of the teacher's outputs, `[1, K]`.
    center: Tensor,
    /// The teacher's outputs of the last `loss`, for the centre update in `after_step`.
    pending_center: Option<Tensor>,
}

impl Dino {
    pub fn new(cfg: &DinoConfig, shared: &Shared, device: Device) -> Result<Dino> {
        let student_vs = nn::VarStore::new(device);
        let mut teacher_vs = nn::VarStore::new(device);
        let student = Encoder::new(&student_vs.root(), shared.model, shared)?;
        let teacher = Encoder::new(&teacher_vs.root(), &ArchConfig { drop_path: 0.0, ..shared.model.clone() }, shared)?;
        let k = cfg.dino.out_dim;
        let last = |vs: &nn::VarStore| {
            let p = vs.root() / "head" / "last_layer";
            // the weight-norm gain, fixed at 1: kept so that checkpoints have DINO's keys
            let _ = p.ones_no_train("weight_g", &[k, 1]);
            Prototypes::named(&p, "weight_v", k, shared.head.out)
        };
        let (last_s, last_t) = (last(&student_vs), last(&teacher_vs));
        let ema = Ema::new(&student_vs, &mut teacher_vs);
        Ok(Dino { cfg: cfg.clone(), student_vs, teacher_vs, student, teacher, last_s, last_t, ema, center: Tensor::zeros([1, k], (Kind::Float, device)), pending_center: None })
    }
}

impl Method for Dino {
    fn collapse_hint(&self, c: Collapse) -> &'static str {
        match c {
            Collapse::FewComponents => "DINO's centring should spread the outputs: try a lower teacher.center_momentum or a lower optim.lr",
            Collapse::Uniform | Collapse::Constant => {
                "an early phase of DINO when brief (loss at ln K, facebookresearch/dino#246); if it lasts, try a sharper teacher (lower dino.teacher_temp) or a lower optim.lr"
            }
        }
    }
    fn student(&self) -> &nn::VarStore {
        &self.student_vs
    }
    fn teacher(&self) -> Option<&nn::VarStore> {
        Some(&self.teacher_vs)
    }

    fn loss(&mut self, views: &[Tensor], ctx: &StepCtx) -> LossOutput {
        let d = &self.cfg.dino;
        let out_s = self.last_s.similarities(&self.student.embed(&resolution_groups(views), true));
        let out_t = tch::no_grad(|| self.last_t.similarities(&self.teacher.embed(&resolution_groups(&views[..2]), true)));
        let (loss, p_t) = dino_loss(&out_s, views.len() as i64, &out_t, &self.center, d.teacher_temp_at(ctx.epoch), d.student_temp);
        // batch statistics over every rank's images (each rank's mean, averaged: equal batches)
        self.pending_center = Some(crate::dist::batch_mean(&out_t, true));
        let log_k = (self.cfg.dino.out_dim as f64).ln();
        let h_marginal = entropy(&crate::dist::batch_mean(&p_t, true)).double_value(&[0]);
        let h_sample = crate::dist::mean_over_ranks(&entropy(&p_t).mean(Kind::Float)).double_value(&[]);
        LossOutput {
            terms: vec![("ce", loss.shallow_clone())],
            loss,
            stats: vec![("h_marginal", h_marginal), ("h_marginal_rel", h_marginal / log_k), ("h_sample", h_sample), ("h_sample_rel", h_sample / log_k)],
            entropies: Some(Entropies { marginal_rel: h_marginal / log_k, sample_rel: h_sample / log_k }),
        }
    }

    fn after_step(&mut self, ctx: &StepCtx) {
        self.ema.update(ctx.teacher_momentum);
        if let Some(out_t) = self.pending_center.take() {
            self.center = update_center(&self.center, &out_t, self.cfg.teacher.center_momentum);
        }
    }

    fn frozen(&self, ctx: &StepCtx) -> Vec<String> {
        if ctx.epoch < self.cfg.dino.freeze_last_layer {
            vec![LAST_LAYER.into()]
        } else {
            vec![]
        }
    }

    fn eval_backbone(&self) -> &Backbone {
        &self.teacher.backbone
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        vec![("center".into(), self.center.shallow_clone())]
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        for (name, t) in state {
            match name.as_str() {
                "center" => self.center = t.to_device(self.center.device()),
                other => bail!("unknown DINO state `{other}` in checkpoint"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
