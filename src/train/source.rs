//! Where a backbone to evaluate comes from — the one way every command loads one: a run
//! directory (or one of its checkpoints), a weights file in torchvision/timm/DINO layout
//! together with an architecture, or a random initialisation. The backbone gets a VarStore of
//! its own, so it can be fine-tuned or exported.
use super::config::Config;
use super::rundir::RunDir;
use crate::models::{weights, ArchConfig, Backbone};
use anyhow::{bail, ensure, Result};
use std::path::Path;
use tch::{nn, Device};

pub struct LoadedBackbone {
    /// Variables named as torchvision/timm name them (no prefix).
    pub vs: nn::VarStore,
    pub model: Backbone,
    pub arch: ArchConfig,
    pub channels: u8,
    /// The run's config when the backbone came from a run.
    pub run_config: Option<Config>,
}

/// `--checkpoint PATH` names something that exists (before any data set is read for it).
pub fn check_exists(path: &Path) -> Result<()> {
    if !path.exists() {
        bail!("--checkpoint {}: no such file or folder (expected a run directory, one of its checkpoints, or a weights file)", path.display());
    }
    Ok(())
}

/// The backbone of `checkpoint` (a run, or weights with `arch`) or a random one of `arch`.
/// `channels` is what the user asked for (a weights file or random init otherwise takes
/// `default_channels`); a run brings its own architecture and channels, so asking for others is
/// an error.
pub fn load_backbone(checkpoint: Option<&Path>, arch: Option<&ArchConfig>, channels: Option<u8>, default_channels: u8, device: Device, seed: i64) -> Result<LoadedBackbone> {
    tch::manual_seed(seed);
    if let Some(p) = checkpoint {
        check_exists(p)?;
    }
    match checkpoint {
        Some(path) if RunDir::is_run(path) => {
            if arch.is_some() {
                bail!("--arch: {} is a run, which brings its own architecture; leave --arch out (it is for weights files)", path.display());
            }
            from_run(path, channels, device)
        }
        other => {
            let channels = channels.unwrap_or(default_channels);
            let Some(arch) = arch else {
                bail!("--arch is needed to build a backbone{}", other.map_or(String::new(), |p| format!(" for the weights in {} (not a run directory)", p.display())))
            };
            ensure!(channels == 1 || channels == 3, "--channels: expected 1 or 3, got {channels}");
            let vs = nn::VarStore::new(device);
            let model = Backbone::new(&vs.root(), arch, channels as i64)?;
            if let Some(p) = other {
                weights::load_safetensors(&vs, p)?;
            }
            Ok(LoadedBackbone { vs, model, arch: arch.clone(), channels, run_config: None })
        }
    }
}

/// The evaluated backbone of a run directory (or one of its checkpoints); `channels`, when the
/// user gave it, must be the run's.
fn from_run(path: &Path, channels: Option<u8>, device: Device) -> Result<LoadedBackbone> {
    let (cfg, method) = super::load_run(path, device)?;
    let (arch, run_channels) = (cfg.model.clone(), cfg.augment.channels);
    if let Some(given) = channels.filter(|c| *c != run_channels) {
        bail!("--channels {given}: the run {} takes {run_channels}-channel images; a run brings its own, so leave --channels out", path.display());
    }
    let vs = nn::VarStore::new(device);
    let model = Backbone::new(&vs.root(), &arch, run_channels as i64)?;
    let src = method.eval_store().variables();
    tch::no_grad(|| -> Result<()> {
        for (name, var) in vs.variables().iter_mut() {
            let Some(t) = src.get(&format!("backbone.{name}")) else { bail!("{}: the run has no `backbone.{name}`", path.display()) };
            var.copy_(t);
        }
        Ok(())
    })?;
    Ok(LoadedBackbone { vs, model, arch, channels: run_channels, run_config: Some(cfg) })
}
