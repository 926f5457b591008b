//! Experiment runners: many training runs at equal settings, each in its own child process
//! (`svib train`), so that a failure or divergence of one run does not stop the others, every
//! run has its own peak-memory figure, and an interrupted experiment resumes run by run.
pub mod ablate;
pub mod compare;
pub mod plot;
pub mod quality;

use crate::train::config::Config;
use crate::train::rundir::RunDir;
use crate::train::RunResult;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One training run of an experiment.
pub struct Job {
    /// Run directory name under the experiment directory.
    pub name: String,
    pub config: Config,
}

/// What became of a run.
pub enum Outcome {
    Done {
        result: RunResult,
        knn_curve: Vec<(f64, f64)>,
    },
    /// The loss became non-finite; the message names the step and the term.
    Diverged(String),
}

/// kNN top-1 against epoch from a run's metrics (periodic and final evaluations).
pub fn knn_curve(run_dir: &Path) -> Result<Vec<(f64, f64)>> {
    RunDir::new(run_dir).knn_curve("epoch")
}

/// Runs (or resumes, or reads back) every job in turn under `dir`.
pub fn run_jobs(dir: &Path, jobs: &[Job]) -> Result<Vec<Outcome>> {
    let exe = std::env::current_exe().context("cannot find the svib executable")?;
    let configs = dir.join("configs");
    std::fs::create_dir_all(&configs).with_context(|| format!("{}: cannot create", configs.display()))?;
    let mut out = vec![];
    for (i, job) in jobs.iter().enumerate() {
        let run_dir = dir.join(&job.name);
        let run = RunDir::new(&run_dir);
        if let Some(why) = run.diverged() {
            eprintln!("[{}/{}] {}: diverged before (see {})", i + 1, jobs.len(), job.name, run_dir.join(RunDir::DIVERGED).display());
            out.push(Outcome::Diverged(why));
            continue;
        }
        let cfg_path: PathBuf = configs.join(format!("{}.toml", job.name));
        // a run begun with other settings: refused before its config file is replaced
        if run_dir.join("config.toml").is_file() {
            crate::train::rundir::check_same_recipe(&job.config, &run_dir)
                .with_context(|| format!("run `{}` of this experiment (the same --out with other settings; give the earlier settings or another --out)", job.name))?;
        }
        crate::util::write_atomic(&cfg_path, job.config.to_toml().as_bytes())?;
        eprintln!("[{}/{}] {} -> {}", i + 1, jobs.len(), job.name, run_dir.display());
        // the runs use the threads the experiment has (`--threads`, else every core)
        let status = Command::new(&exe)
            .arg("--threads")
            .arg(rayon::current_num_threads().to_string())
            .arg("train")
            .arg("--config")
            .arg(&cfg_path)
            .arg("--out")
            .arg(&run_dir)
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        if let Some(why) = run.diverged() {
            out.push(Outcome::Diverged(why));
            continue;
        }
        if !status.status.success() {
            let what = format!("run `{}` failed ({}); fix the cause and run the same command again to resume", job.name, status.status);
            // exit 2: the run printed its own error line
            return Err(if status.status.code() == Some(2) { crate::util::AlreadyReported(what).into() } else { anyhow::anyhow!(what) });
        }
        out.push(Outcome::Done { knn_curve: run.knn_curve("epoch")?, result: run.result()? });
    }
    Ok(out)
}

/// " with `k=v`, `k=v`" for the config edits of an experiment (empty without any).
pub fn sets_note(sets: &[String]) -> String {
    if sets.is_empty() {
        String::new()
    } else {
        format!(" with `{}`", sets.join("`, `"))
    }
}

/// The seeds of `n` runs, from 0: "seed 0", "seeds 0 and 1", "seeds 0 to 4".
pub fn seeds_note(n: u64) -> String {
    match n {
        0 | 1 => "seed 0".into(),
        2 => "seeds 0 and 1".into(),
        n => format!("seeds 0 to {}", n - 1),
    }
}

/// A table cell of runs' numbers: "—" for none, the number for one, "mean ± std" for more.
pub fn mean_std_cell(v: &[f64]) -> String {
    match v.len() {
        0 => "—".into(),
        1 => format!("{:.2}", v[0]),
        _ => {
            let (m, s) = mean_std(v);
            format!("{m:.2} ± {s:.2}")
        }
    }
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}
