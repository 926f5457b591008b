//! `svib compare` and `svib ablate`.
use crate::experiments::quality::{self, Variant};
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

#[derive(Args, Debug)]
pub struct QualityArgs {
    /// Preset or config file shared by every run.
    #[arg(long, default_value = "fmnist-cpu")]
    pub preset: String,
    /// Comma-separated methods.
    #[arg(long, default_value = "svib,dino", value_delimiter = ',')]
    pub methods: Vec<String>,
    /// Seeds per method and data set (0..N).
    #[arg(long, default_value_t = 2)]
    pub seeds: u64,
    /// Comma-separated data set variants built from Fashion-MNIST.
    #[arg(long = "data", value_enum, default_value = "fmnist,fmnist-8k,fmnist-56", value_delimiter = ',')]
    pub variants: Vec<Variant>,
    /// Steps of every run (default: the preset's train.steps).
    #[arg(long, conflicts_with = "budget")]
    pub steps: Option<usize>,
    /// Wall-clock budget of one run (e.g. 30m), turned into steps once by a probe of SVIB on the
    /// first data set and kept in DIR/steps.json, so that every run gets the same steps.
    #[arg(long)]
    pub budget: Option<String>,
    /// Config edits applied to every run (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Add a column for the peer, lightly's DINO at the same steps (needs bench/peer/setup.sh
    /// and the checkout as the current directory).
    #[arg(long)]
    pub peer: bool,
    /// Experiment directory: one folder per data set with its runs, results.md, knn_*.png.
    #[arg(long)]
    pub out: PathBuf,
}

/// The methods and seeds of a grid of runs: known, each once, at most 100 seeds; the method
/// of each run is the grid's to set, not `--set method=`.
fn check_grid(methods: &[String], seeds: u64, sets: &[String]) -> Result<()> {
    for (i, m) in methods.iter().enumerate() {
        ensure!(METHODS.contains(&m.as_str()), "--methods: unknown method `{m}` (expected some of {})", METHODS.join(", "));
        ensure!(!methods[..i].contains(m), "--methods: `{m}` is given twice");
    }
    ensure!((1..=100).contains(&seeds), "--seeds: expected 1 to 100, got {seeds}");
    no_method_set(sets)
}

/// `--set method=…` would change every run of a grid that sets the method itself.
fn no_method_set(sets: &[String]) -> Result<()> {
    if let Some(m) = crate::train::config::set_value(sets, "method") {
        anyhow::bail!("--set method={m}: this command sets the method of each run; choose them with --methods");
    }
    Ok(())
}

pub fn run_quality(a: QualityArgs) -> Result<()> {
    check_grid(&a.methods, a.seeds, &a.set)?;
    ensure!(!a.variants.is_empty(), "--data: expected at least one data set");
    ensure!(a.variants.iter().enumerate().all(|(i, v)| !a.variants[..i].contains(v)), "--data: a data set is given twice");
    ensure!(a.steps != Some(0), "--steps: expected at least 1 step, got 0 (leave it out for the preset's train.steps)");
    let mut spec = quality::QualitySpec { preset: a.preset, methods: a.methods, seeds: a.seeds, variants: a.variants, steps: a.steps.unwrap_or(0), sets: a.set, peer: a.peer };
    if spec.steps == 0 {
        spec.steps = match &a.budget {
            Some(b) => quality_budget_steps(&spec, &a.out, crate::train::budget::parse_duration(b)?)?,
            None => quality::job_config(&spec, spec.variants[0], "svib", 0)?.train.steps,
        };
    }
    print!("{}", quality::run(&spec, &a.out)?);
    Ok(())
}

/// Steps for a wall-clock budget, measured once and kept in DIR/steps.json.
fn quality_budget_steps(spec: &quality::QualitySpec, dir: &std::path::Path, secs: f64) -> Result<usize> {
    let path = dir.join("steps.json");
    if let Some(n) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<usize>(&b).ok()) {
        return Ok(n);
    }
    let probe = quality::QualitySpec { preset: spec.preset.clone(), methods: vec![], seeds: 1, variants: vec![], steps: 1, sets: spec.sets.clone(), peer: false };
    let cfg = quality::job_config(&probe, spec.variants[0], "svib", 0)?;
    let n = crate::train::budget::steps_for_budget(&cfg, &dir.join("budget-probe"), secs)?;
    std::fs::create_dir_all(dir)?;
    crate::util::write_atomic(&path, serde_json::to_string(&n)?.as_bytes())?;
    Ok(n)
}

pub fn run_compare(a: CompareArgs) -> Result<()> {
    check_grid(&a.methods, a.seeds, &a.set)?;
    ensure!(a.knn_every >= 1, "--knn-every: expected at least 1");
    let spec = compare::CompareSpec { methods: a.methods, preset: a.preset, seeds: a.seeds, epochs: a.epochs, knn_every: a.knn_every, sets: a.set };
    print!("{}", compare::run(&spec, &a.out)?);
    Ok(())
}

pub fn run_ablate(a: AblateArgs) -> Result<()> {
    ensure!(a.knn_every != Some(0), "--knn-every: expected at least 1");
    no_method_set(&a.set)?;
    let spec = ablate::AblateSpec { preset: a.preset, epochs: a.epochs, knn_every: a.knn_every, sets: a.set };
    print!("{}", ablate::run(&spec, &a.out)?);
    Ok(())
}
