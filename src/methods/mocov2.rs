//! MoCo v2 (Chen et al. 2020): a query encoder and a momentum key encoder, each a backbone with
//! an MLP head; InfoNCE of each query against its key (positive) and a queue of past keys
//! (negatives). Symmetric over the two global views, as solo-learn's MoCo v2+; local views add
//! queries against both global keys. Both global keys of a batch enter the queue.
use super::encoder::{resolution_groups, Ema, Encoder};
use super::head::l2n;
use super::losses::{cross_view_mean, info_nce_with_negatives};
use super::{LossOutput, Method, StepCtx};
use super::{Shared, TeacherConfig};
use crate::models::Backbone;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoOptions {
    /// Negatives kept in the queue.
    pub queue: i64,
    pub temperature: f64,
}

impl Default for MocoOptions {
    fn default() -> Self {
        MocoOptions { queue: 65536, temperature: 0.2 }
    }
}

impl MocoOptions {
    pub fn validate(&self) -> Result<()> {
        ensure!((1..=1 << 20).contains(&self.queue), "mocov2.queue: expected 1 to 1048576 negatives, got {}", self.queue);
        ensure!(self.temperature.is_finite() && self.temperature >= 1e-3, "mocov2.temperature: expected a finite value >= 0.001, got {}", crate::util::Num(self.temperature));
        Ok(())
    }
}

/// MoCo v2's tables: its options and the key encoder's momentum.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MocoConfig {
    pub mocov2: MocoOptions,
    pub teacher: TeacherConfig,
}

pub struct MocoV2 {
    cfg: MocoConfig,
    student_vs: nn::VarStore,
    teacher_vs: nn::VarStore,
    query: Encoder,
    key: Encoder,
    ema: Ema,
    /// Unit-norm past keys `[Q, D]` and the next slot to overwrite.
    queue: Tensor,
    queue_ptr: i64,
    pending_keys: Option<Tensor>,
}

impl MocoV2 {
    pub fn new(cfg: &MocoConfig, shared: &Shared, device: Device) -> Result<MocoV2> {
        let student_vs = nn::VarStore::new(device);
        let mut teacher_vs = nn::VarStore::new(device);
        let query = Encoder::new(&student_vs.root(), shared.model, shared)?;
        let key = Encoder::new(&teacher_vs.root(), shared.model, shared)?;
        let ema = Ema::new(&student_vs, &mut teacher_vs);
        // MoCo starts from a queue of random unit vectors
        let queue = l2n(&Tensor::randn([cfg.mocov2.queue, shared.head.out], (Kind::Float, device)));
        Ok(MocoV2 { cfg: cfg.clone(), student_vs, teacher_vs, query, key, ema, queue, queue_ptr: 0, pending_keys: None })
    }
}

impl Method for MocoV2 {
    fn student(&self) -> &nn::VarStore {
        &self.student_vs
    }
    fn teacher(&self) -> Option<&nn::VarStore> {
        Some(&self.teacher_vs)
    }

    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> LossOutput {
        let t = self.cfg.mocov2.temperature;
        let q = self.query.embed(&resolution_groups(views), true).chunk(views.len() as i64, 0);
        let k_all = tch::no_grad(|| self.key.embed(&resolution_groups(&views[..2]), true));
        let k = k_all.chunk(2, 0);
        let negatives: Vec<Tensor> = q.iter().map(|query| query.matmul(&self.queue.transpose(0, 1))).collect();
        let loss = cross_view_mean(k.len(), q.len(), |i, v| info_nce_with_negatives(&q[v], &k[i], &negatives[v], t));
        // every rank enqueues the keys of the global batch, in one process's order
        self.pending_keys = Some(crate::dist::gather_views(&k_all, 2));
        LossOutput { terms: vec![("info_nce", loss.shallow_clone())], loss, stats: vec![], entropies: None }
    }

    fn after_step(&mut self, ctx: &StepCtx) {
        self.ema.update(ctx.teacher_momentum);
        if let Some(keys) = self.pending_keys.take() {
            // ring buffer: overwrite the oldest keys, wrapping at the end
            let size = self.queue.size()[0];
            let n = keys.size()[0].min(size);
            let rows = Tensor::arange_start(self.queue_ptr, self.queue_ptr + n, (Kind::Int64, keys.device())).remainder(size);
            let _ = self.queue.index_copy_(0, &rows, &keys.narrow(0, 0, n));
            self.queue_ptr = (self.queue_ptr + n) % size;
        }
    }

    /// MoCo evaluates the query encoder's backbone.
    fn eval_backbone(&self) -> &Backbone {
        &self.query.backbone
    }

    fn eval_store(&self) -> &nn::VarStore {
        &self.student_vs
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        vec![("queue".into(), self.queue.shallow_clone()), ("queue_ptr".into(), Tensor::from(self.queue_ptr))]
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        for (name, t) in state {
            match name.as_str() {
                "queue" => {
                    ensure!(t.size() == self.queue.size(), "checkpoint queue has shape {:?}, this config expects {:?} (mocov2.queue, head.out)", t.size(), self.queue.size());
                    self.queue = t.to_device(self.queue.device());
                }
                "queue_ptr" => self.queue_ptr = t.int64_value(&[]),
                other => bail!("unknown MoCo v2 state `{other}` in checkpoint"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
