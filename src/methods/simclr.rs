//! SimCLR (Chen et al. 2020): one network (backbone + projection MLP) embeds two augmented views
//! of each image; NT-Xent pulls the two together against every other view of the batch. No
//! teacher, no queue. The loss reads the two global views; local crops, if the base preset has
//! them, would only add negatives of another size, so the overlay turns them off.
use super::encoder::Encoder;
use super::losses::nt_xent_rows;
use super::{LossOutput, Method, Shared, StepCtx};
use crate::models::Backbone;
use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimClrOptions {
    /// NT-Xent temperature (solo-learn: 0.1 on ImageNet; 0.2 for small images).
    pub temperature: f64,
}

impl Default for SimClrOptions {
    fn default() -> Self {
        SimClrOptions { temperature: 0.1 }
    }
}

impl SimClrOptions {
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        ensure!(t.is_finite() && t >= 1e-3, "simclr.temperature: expected a finite value >= 0.001, got {}", crate::util::Num(t));
        Ok(())
    }
}

/// SimCLR's table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimClrConfig {
    pub simclr: SimClrOptions,
}

pub struct SimClr {
    temperature: f64,
    vs: nn::VarStore,
    net: Encoder,
}

impl SimClr {
    pub fn new(cfg: &SimClrConfig, shared: &Shared, device: Device) -> Result<SimClr> {
        let vs = nn::VarStore::new(device);
        let net = Encoder::new(&vs.root(), shared.model, shared)?;
        Ok(SimClr { temperature: cfg.simclr.temperature, vs, net })
    }
}

impl Method for SimClr {
    fn student(&self) -> &nn::VarStore {
        &self.vs
    }

    fn loss(&mut self, views: &[Tensor], _: &StepCtx) -> LossOutput {
        // both global views in one backbone pass (BatchNorm sees the whole batch of 2B, as in
        // solo-learn), then split
        let z = self.net.project(&[Tensor::cat(&views[..2], 0)], true);
        let (z0, z1) = (z.narrow(0, 0, views[0].size()[0]), z.narrow(0, views[0].size()[0], views[1].size()[0]));
        // distributed: every rank's projections are negatives (gathered with their gradient),
        // and each rank's anchors are its own images
        let (rank, b) = (crate::dist::world().0 as i64, z0.size()[0]);
        let (g0, g1) = (crate::dist::gather_over_ranks_grad(&z0), crate::dist::gather_over_ranks_grad(&z1));
        let loss = nt_xent_rows(&g0, &g1, rank * b, b, self.temperature);
        LossOutput { terms: vec![("nt_xent", loss.shallow_clone())], loss, stats: vec![], entropies: None }
    }

    fn eval_backbone(&self) -> &Backbone {
        &self.net.backbone
    }
}

#[cfg(test)]
mod tests;
