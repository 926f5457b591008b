//! SwAV (Caron et al. 2020): online clustering. Codes for the global views come from the
//! prototype scores by Sinkhorn-Knopp (equal-partition constraint); every other view predicts
//! them ("swapped prediction"). No teacher network; prototypes are renormalised before each
//! step; an optional queue of past embeddings enlarges the batch that Sinkhorn partitions.
//! `swav.prototypes` sets their number (an overlay on an SVIB preset takes `gmm.k`, so that a
//! comparison uses as many prototypes as SVIB has components).
use super::encoder::{resolution_groups, Encoder};
use super::head::{l2n, Prototypes};
use super::losses::{consistency_ce, sinkhorn};
use super::Shared;
use super::{LossOutput, Method, StepCtx};
use crate::models::Backbone;
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwavOptions {
    /// Number of prototypes (SwAV: 3000 for ImageNet).
    pub prototypes: i64,
    /// Softmax temperature of the predictions.
    pub temperature: f64,
    /// Sinkhorn-Knopp: entropic regularisation and iterations.
    pub epsilon: f64,
    pub sinkhorn_iters: usize,
    /// Embeddings kept per global view in the queue (0: no queue).
    pub queue: i64,
    /// First epoch (0-based) that uses the queue.
    pub queue_start_epoch: usize,
    /// Epochs during which the prototypes get no gradient.
    pub freeze_prototypes: usize,
}

impl Default for SwavOptions {
    fn default() -> Self {
        SwavOptions { prototypes: 3000, temperature: 0.1, epsilon: 0.05, sinkhorn_iters: 3, queue: 0, queue_start_epoch: 15, freeze_prototypes: 1 }
    }
}

impl SwavOptions {
    pub fn validate(&self) -> Result<()> {
        ensure!((2..=1 << 22).contains(&self.prototypes), "swav.prototypes: expected 2 to 4194304, got {}", self.prototypes);
        for (k, v) in [("temperature", self.temperature), ("epsilon", self.epsilon)] {
            ensure!(v.is_finite() && v >= 1e-3, "swav.{k}: expected a finite value >= 0.001, got {}", crate::util::Num(v));
        }
        ensure!((1..=1000).contains(&self.sinkhorn_iters), "swav.sinkhorn_iters: expected 1 to 1000, got {}", self.sinkhorn_iters);
        ensure!((0..=1 << 20).contains(&self.queue), "swav.queue: expected 0 to 1048576, got {}", self.queue);
        Ok(())
    }
}

/// SwAV's table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwavConfig {
    pub swav: SwavOptions,
}

const PROTOTYPES: &str = "prototypes.weight";

pub struct Swav {
    cfg: SwavConfig,
    /// Width of the embeddings (head.out).
    dim: i64,
    vs: nn::VarStore,
    net: Encoder,
    prototypes: Prototypes,
    /// Past unit-norm embeddings per global view `[2, Q, D]`, newest first (once the queue runs).
    queue: Option<Tensor>,
}

impl Swav {
    pub fn new(cfg: &SwavConfig, shared: &Shared, device: Device) -> Result<Swav> {
        let vs = nn::VarStore::new(device);
        let net = Encoder::new(&vs.root(), shared.model, shared)?;
        let dim = shared.head.out;
        let prototypes = Prototypes::named(&(vs.root() / "prototypes"), "weight", cfg.swav.prototypes, dim);
        Ok(Swav { cfg: cfg.clone(), dim, vs, net, prototypes, queue: None })
    }
}

impl Method for Swav {
    fn student(&self) -> &nn::VarStore {
        &self.vs
    }

    fn loss(&mut self, views: &[Tensor], ctx: &StepCtx) -> LossOutput {
        let s = self.cfg.swav.clone();
        let w = &self.prototypes.vectors;
        tch::no_grad(|| w.shallow_clone().copy_(&l2n(w)));
        let z = self.net.embed(&resolution_groups(views), true);
        let scores = z.matmul(&w.transpose(0, 1));
        let b = views[0].size()[0];
        if s.queue > 0 && ctx.epoch >= s.queue_start_epoch && self.queue.is_none() {
            self.queue = Some(Tensor::zeros([2, s.queue, self.dim], (Kind::Float, z.device())));
        }
        // Sinkhorn over the global batch of a distributed run (every rank's scores gathered, as
        // one process holds them; each rank keeps its own rows); the queue holds the global
        // batch's embeddings on every rank
        let rank = crate::dist::world().0 as i64;
        let codes: Vec<Tensor> = tch::no_grad(|| {
            (0..2)
                .map(|i| {
                    let all_scores = crate::dist::gather_over_ranks(&scores.narrow(0, i * b, b));
                    let global_b = all_scores.size()[0];
                    let Some(queue) = &self.queue else { return sinkhorn(&all_scores, s.epsilon, s.sinkhorn_iters).narrow(0, rank * b, b) };
                    let qi = queue.get(i);
                    // SwAV uses the queue only once it is full
                    let full = qi.get(-1).abs().sum(Kind::Float).double_value(&[]) != 0.0;
                    let codes = if full {
                        let all = Tensor::cat(&[qi.matmul(&w.transpose(0, 1)), all_scores], 0);
                        sinkhorn(&all, s.epsilon, s.sinkhorn_iters).narrow(0, s.queue + rank * b, b)
                    } else {
                        sinkhorn(&all_scores, s.epsilon, s.sinkhorn_iters).narrow(0, rank * b, b)
                    };
                    // shift: newest embeddings first
                    let n = global_b.min(s.queue);
                    let kept = qi.narrow(0, 0, s.queue - n).copy();
                    qi.narrow(0, n, s.queue - n).copy_(&kept);
                    let all_z = crate::dist::gather_over_ranks(&z.narrow(0, i * b, b));
                    qi.narrow(0, 0, n).copy_(&all_z.narrow(0, 0, n));
                    codes
                })
                .collect()
        });
        let logp = (scores / s.temperature).log_softmax(-1, Kind::Float).chunk(views.len() as i64, 0);
        let loss = consistency_ce(&codes, &logp);
        LossOutput { terms: vec![("swapped_ce", loss.shallow_clone())], loss, stats: vec![], entropies: None }
    }

    fn frozen(&self, ctx: &StepCtx) -> Vec<String> {
        if ctx.epoch < self.cfg.swav.freeze_prototypes {
            vec![PROTOTYPES.into()]
        } else {
            vec![]
        }
    }

    fn eval_backbone(&self) -> &Backbone {
        &self.net.backbone
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.queue.iter().map(|q| ("queue".to_string(), q.shallow_clone())).collect()
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        for (name, t) in state {
            match name.as_str() {
                "queue" => {
                    let want = [2, self.cfg.swav.queue, self.dim];
                    ensure!(t.size() == want, "checkpoint SwAV queue has shape {:?}, this config expects {want:?} (swav.queue, head.out)", t.size());
                    self.queue = Some(t.to_device(self.prototypes.vectors.device()));
                }
                other => bail!("unknown SwAV state `{other}` in checkpoint"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
