//! `svib compare` and `svib ablate`.
use crate::experiments::{ablate, compare};
use crate::train::config::METHODS;
use anyhow::{ensure, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Comma-separated methods.
    #[arg(long, default_value = "svib,dino,byol,mocov2,swav", value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Base preset or config file shared by every method.
    #[arg(long, default_value = "fmnist-cpu")]
    pub preset: String,
    /// Seeds per method (0..N).
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Epochs, overriding the preset's.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// kNN on the test split every E epochs (the curve's points).
    #[arg(long, default_value_t = 1)]
    pub knn_every: usize,
    /// Config edits applied to every run (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Experiment directory: one run directory per method and seed, results.md, knn_curve.png.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct AblateArgs {
    /// Preset or config file (SVIB).
    #[arg(long, default_value = "fmnist-cpu")]
    pub preset: String,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// kNN every E epochs (default: five points over the run).
    #[arg(long)]
    pub knn_every: Option<usize>,
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Experiment directory: task1..task8 run directories, results.md, beta_curve.png.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_compare(a: CompareArgs) -> Result<()> {
    for m in &a.methods {
        ensure!(METHODS.contains(&m.as_str()), "--methods: unknown method `{m}` (expected some of {})", METHODS.join(", "));
    }
    ensure!(a.seeds >= 1, "--seeds: expected at least 1");
    ensure!(a.knn_every >= 1, "--knn-every: expected at least 1");
    let spec = compare::CompareSpec { methods: a.methods, preset: a.preset, seeds: a.seeds, epochs: a.epochs, knn_every: a.knn_every, sets: a.set };
    print!("{}", compare::run(&spec, &a.out)?);
    Ok(())
}

pub fn run_ablate(a: AblateArgs) -> Result<()> {
    ensure!(a.knn_every != Some(0), "--knn-every: expected at least 1");
    let spec = ablate::AblateSpec { preset: a.preset, epochs: a.epochs, knn_every: a.knn_every, sets: a.set };
    print!("{}", ablate::run(&spec, &a.out)?);
    Ok(())
}
