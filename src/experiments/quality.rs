//! `svib quality`: does pre-training make the features better than the ones a user starts
//! with? For each data set variant: raw pixels, the untrained backbone and every method (seeds
//! 0..N) at one budget in steps; one Markdown table and a kNN-against-step plot per data set.
//! Runs are child processes (`run_jobs`), so the protocol resumes run by run.
use super::plot::{line_chart, Series};
use super::{mean_std, mean_std_cell, run_jobs, sets_note, Job, Outcome};
use crate::data::{self, LoadOptions, Norm, Split};
use crate::eval::features::{labels, pixel_features};
use crate::eval::knn::knn_classify;
use crate::train::config::{apply_method, load_table, set_key_for, Config};
use crate::train::{eval_prep, load_train_data};
use anyhow::{bail, Context, Result};
use std::fmt::Write;
use std::path::Path;

/// The data set variants the protocol can build from Fashion-MNIST.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// Fashion-MNIST, all 60,000 training images.
    Fmnist,
    /// A seeded 8,000-image subset of the training images (tested on the full test set).
    #[value(name = "fmnist-8k")]
    Fmnist8k,
    /// Fashion-MNIST enlarged to 56 px (crops and evaluation at twice the side).
    #[value(name = "fmnist-56")]
    Fmnist56,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Fmnist => "fmnist",
            Variant::Fmnist8k => "fmnist-8k",
            Variant::Fmnist56 => "fmnist-56",
        }
    }
    /// The config edits that make the variant.
    fn sets(self) -> Vec<String> {
        let v: &[&str] = match self {
            Variant::Fmnist => &[],
            Variant::Fmnist8k => &["data.limit=8000", "data.limit_seed=0"],
            Variant::Fmnist56 => &["augment.global_size=56", "augment.local_size=28", "eval.image_size=56"],
        };
        v.iter().map(|s| s.to_string()).collect()
    }
}

pub struct QualitySpec {
    pub preset: String,
    pub methods: Vec<String>,
    pub seeds: u64,
    pub variants: Vec<Variant>,
    /// Steps of every run (the same for every data set).
    pub steps: usize,
    pub sets: Vec<String>,
    /// Also run the peer, lightly's DINO (`bench/peer/`, from the current directory).
    pub peer: bool,
}

/// The peer's interpreter and script, relative to a checkout.
const PEER_PYTHON: &str = "bench/peer/.venv/bin/python";
const PEER_SCRIPT: &str = "bench/peer/lightly_dino.py";

/// lightly's DINO on the same images, steps, batch, lr and teacher momentum as svib's DINO run
/// (`cfg`); its JSON result is kept in `dir/lightly-dino-seedS.json`, so it runs once.
fn peer_top1(cfg: &Config, v: Variant, seed: u64, dir: &Path) -> Result<f64> {
    let out = dir.join(format!("lightly-dino-seed{seed}.json"));
    if !out.is_file() {
        let spec: crate::data::DataSpec = cfg.data.spec.parse().map_err(|e| anyhow::anyhow!("data.spec: {e}"))?;
        let n_all = data::load(&spec, Split::Train, &LoadOptions::default())?.len();
        let n = if cfg.data.limit > 0 { cfg.data.limit.min(n_all) } else { n_all };
        let idx = match cfg.data.limit_seed {
            Some(s) if cfg.data.limit > 0 => data::subset_indices(n_all, cfg.data.limit, s),
            _ => (0..n).collect(),
        };
        let idx_path = dir.join("train_indices.json");
        crate::util::write_atomic(&idx_path, serde_json::to_string(&idx)?.as_bytes())?;
        let warmup_epochs = match cfg.optim.warmup_steps {
            0 => cfg.optim.warmup_epochs,
            w => w as f64 / (n / cfg.train.batch_size).max(1) as f64,
        };
        let args = [
            "--steps".into(),
            cfg.train.steps.to_string(),
            "--seed".into(),
            seed.to_string(),
            "--indices".into(),
            idx_path.display().to_string(),
            "--lr".into(),
            cfg.optim.lr.to_string(),
            "--momentum-start".into(),
            cfg.method.teacher().map_or(0.996, |t| t.momentum_start).to_string(),
            "--warmup-epochs".into(),
            warmup_epochs.to_string(),
            "--batch-size".into(),
            cfg.train.batch_size.to_string(),
            "--k".into(),
            cfg.method.prototypes().unwrap_or(256).to_string(),
        ];
        eprintln!("[peer] {} lightly DINO seed {seed} -> {}", v.name(), out.display());
        let o = std::process::Command::new(PEER_PYTHON)
            .arg(PEER_SCRIPT)
            .args(args)
            .stderr(std::process::Stdio::inherit())
            .output()
            .with_context(|| format!("cannot start {PEER_PYTHON} (run bench/peer/setup.sh first, from the checkout)"))?;
        if !o.status.success() {
            bail!("the peer ({PEER_SCRIPT}) failed ({})", o.status);
        }
        let line = String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or_default().to_string();
        serde_json::from_str::<serde_json::Value>(&line).with_context(|| format!("the peer printed `{line}`, not a JSON line"))?;
        crate::util::write_atomic(&out, line.as_bytes())?;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?).with_context(|| format!("{}: not the peer's JSON line", out.display()))?;
    v["knn_top1"].as_f64().with_context(|| format!("{}: no knn_top1", out.display()))
}

/// The config of one data set, method and seed.
pub fn job_config(spec: &QualitySpec, v: Variant, method: &str, seed: u64) -> Result<Config> {
    let mut t = load_table(&spec.preset).context("--preset")?;
    apply_method(&mut t, method)?;
    let every = (spec.steps / 6).max(1);
    let mut edits = vec![format!("train.knn_every_steps={every}"), "train.knn_every=0".into(), "train.knn_at_start=true".into(), format!("train.seed={seed}")];
    if spec.steps > 0 {
        edits.push(format!("train.steps={}", spec.steps));
    }
    for s in spec.sets.iter().chain(&v.sets()).chain(&edits) {
        set_key_for(&mut t, method, s)?;
    }
    Config::from_table(t)
}

/// kNN top-1 of raw pixels for a data set variant (cached in `dir/raw_pixels.json`).
fn raw_pixels(cfg: &Config, dir: &Path) -> Result<f64> {
    let cache = dir.join("raw_pixels.json");
    if let Some(v) = std::fs::read(&cache).ok().and_then(|b| serde_json::from_slice::<f64>(&b).ok()) {
        return Ok(v);
    }
    let (spec, train) = load_train_data(cfg)?;
    let test = data::load(&spec, Split::Test, &LoadOptions { skip_corrupt: cfg.data.skip_corrupt })?;
    let prep = eval_prep(cfg, Norm::for_dataset(&spec, &train));
    let dev = tch::Device::Cpu;
    let (ftr, fte) = (pixel_features(&train, &prep, 256, dev)?, pixel_features(&test, &prep, 256, dev)?);
    let classes = train.num_classes.max(test.num_classes) as i64;
    let r = knn_classify(&ftr, &labels(&train, dev), &fte, &labels(&test, dev), classes, cfg.eval.k, cfg.eval.temperature);
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    crate::util::write_atomic(&cache, serde_json::to_string(&r.top1)?.as_bytes())?;
    Ok(r.top1)
}

/// kNN top-1 against step of a run (the untrained backbone at step 0 included).
pub fn knn_by_step(run_dir: &Path) -> Result<Vec<(f64, f64)>> {
    crate::train::rundir::RunDir::new(run_dir).knn_curve("step")
}

/// One data set: its jobs, raw pixels, the table row and the plot.
fn variant_row(spec: &QualitySpec, v: Variant, dir: &Path) -> Result<String> {
    let vdir = dir.join(v.name());
    let mut jobs = vec![];
    for m in &spec.methods {
        for seed in 0..spec.seeds {
            jobs.push(Job { name: format!("{m}-seed{seed}"), config: job_config(spec, v, m, seed)? });
        }
    }
    let raw = raw_pixels(&jobs[0].config, &vdir)?;
    let outcomes = run_jobs(&vdir, &jobs)?;
    let mut untrained = vec![];
    let (mut cells, mut series) = (vec![], vec![]);
    for (mi, m) in spec.methods.iter().enumerate() {
        let (mut top1, mut secs, mut curves) = (vec![], vec![], vec![]);
        for (si, o) in outcomes[mi * spec.seeds as usize..][..spec.seeds as usize].iter().enumerate() {
            let run_dir = vdir.join(format!("{m}-seed{si}"));
            let curve = knn_by_step(&run_dir)?;
            if let Some(&(0.0, u)) = curve.first() {
                untrained.push(u);
            }
            if let Outcome::Done { result, .. } = o {
                top1.push(result.knn_top1);
                secs.push(result.seconds);
                curves.push(curve);
            }
        }
        let diverged = spec.seeds as usize - top1.len();
        let note = if diverged > 0 { format!(" ({diverged} diverged)") } else { String::new() };
        cells.push(format!("{}{note} ({:.0} s)", mean_std_cell(&top1), mean_std(&secs).0));
        if let Some(first) = curves.first() {
            let pts = first.iter().filter_map(|&(s, _)| {
                let at: Vec<f64> = curves.iter().filter_map(|c| c.iter().find(|p| p.0 == s).map(|p| p.1)).collect();
                (at.len() == curves.len()).then(|| (s, mean_std(&at).0))
            });
            series.push(Series { label: m.clone(), points: pts.collect() });
        }
    }
    if spec.peer {
        // the peer reads the IDX files of Fashion-MNIST at 28 px only
        let dino = job_config(spec, v, "dino", 0)?;
        let peer: Vec<f64> = if v == Variant::Fmnist56 { vec![] } else { (0..spec.seeds).map(|s| peer_top1(&dino, v, s, &vdir)).collect::<Result<_>>()? };
        cells.push(mean_std_cell(&peer));
    }
    series.push(Series { label: "raw pixels".into(), points: vec![(0.0, raw), (spec.steps as f64, raw)] });
    let k = jobs[0].config.eval.k;
    line_chart(&dir.join(format!("knn_{}.png", v.name())), &format!("kNN-{k} top-1 against step ({}, {})", v.name(), spec.preset), "step", "kNN top-1 (%)", &series)?;
    Ok(format!("| {} | {:.2} | {} | {} |", v.name(), raw, mean_std_cell(&untrained), cells.join(" | ")))
}

pub fn run(spec: &QualitySpec, dir: &Path) -> Result<String> {
    if spec.steps == 0 {
        bail!("svib quality: no step budget (give --steps or --budget, or a preset with train.steps)");
    }
    if spec.peer && !Path::new(PEER_PYTHON).is_file() {
        bail!("--peer: {PEER_PYTHON} is missing (run bench/peer/setup.sh first, from the checkout)");
    }
    let mut md = String::new();
    writeln!(md, "# svib quality\n")?;
    writeln!(
        md,
        "Preset `{}`{}, {} steps per run, {}; kNN-20 top-1 on the full test split, mean ± std over seeds \
         (wall seconds of training per run). `untrained`: the same backbone before the first step.\n",
        spec.preset,
        sets_note(&spec.sets),
        spec.steps,
        super::seeds_note(spec.seeds)
    )?;
    let peer = if spec.peer { " | lightly DINO (peer)" } else { "" };
    writeln!(md, "| data set | raw pixels | untrained | {}{peer} |", spec.methods.join(" | "))?;
    writeln!(md, "|---|---|---|{}", "---|".repeat(spec.methods.len() + spec.peer as usize))?;
    for &v in &spec.variants {
        let row = variant_row(spec, v, dir).with_context(|| format!("data set {}", v.name()))?;
        writeln!(md, "{row}")?;
    }
    writeln!(md)?;
    for v in &spec.variants {
        writeln!(md, "![kNN against step, {0}](knn_{0}.png)", v.name())?;
    }
    crate::util::write_atomic(&dir.join("results.md"), md.as_bytes())?;
    Ok(md)
}
