//! `svib compare`: SVIB against the baselines at equal settings (same base preset, data,
//! backbone, crops, optimiser, budget and seeds); a results table and kNN curves.
use super::plot::{line_chart, Series};
use super::{mean_std, mean_std_cell, run_jobs, sets_note, Job, Outcome};
use crate::train::config::{apply_method, load_table, set_epochs, set_key, set_key_for, Config};
use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::Path;

pub struct CompareSpec {
    pub methods: Vec<String>,
    pub preset: String,
    pub seeds: u64,
    pub epochs: Option<usize>,
    pub knn_every: usize,
    pub sets: Vec<String>,
}

/// The config of one method and seed.
pub fn job_config(spec: &CompareSpec, method: &str, seed: u64) -> Result<Config> {
    let mut t = load_table(&spec.preset).context("--preset")?;
    apply_method(&mut t, method)?;
    if let Some(e) = spec.epochs {
        set_epochs(&mut t, e)?;
    }
    set_key(&mut t, &format!("train.knn_every={}", spec.knn_every))?;
    for s in &spec.sets {
        set_key_for(&mut t, method, s)?;
    }
    set_key(&mut t, &format!("train.seed={seed}"))?;
    Config::from_table(t)
}

pub fn run(spec: &CompareSpec, dir: &Path) -> Result<String> {
    let mut jobs = vec![];
    for m in &spec.methods {
        for seed in 0..spec.seeds {
            jobs.push(Job { name: format!("{m}-seed{seed}"), config: job_config(spec, m, seed)? });
        }
    }
    let outcomes = run_jobs(dir, &jobs)?;
    let base = &jobs[0].config;
    let mut md = String::new();
    writeln!(md, "# svib compare\n")?;
    writeln!(
        md,
        "Preset `{}`{}, data `{}`, backbone `{}`, {}, {}; kNN-{} on the test split; \
         training seconds leave out loading and the kNN at step 0 and at the end. Each method keeps the preset's data, backbone, crops, optimiser and budget and brings its own head and loss \
         (`svib presets` lists the overlays).\n",
        spec.preset,
        sets_note(&spec.sets),
        base.data.spec,
        base.model.name,
        base.length_note(),
        super::seeds_note(spec.seeds),
        base.eval.k
    )?;
    writeln!(md, "| method | kNN top-1 (mean ± std) | kNN top-5 | img/s | peak RSS (MiB) | training s per run | per seed |")?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    let mut series = vec![];
    for (mi, m) in spec.methods.iter().enumerate() {
        let runs: Vec<&Outcome> = outcomes[mi * spec.seeds as usize..(mi + 1) * spec.seeds as usize].iter().collect();
        let done: Vec<_> = runs.iter().filter_map(|o| if let Outcome::Done { result, knn_curve } = o { Some((result, knn_curve)) } else { None }).collect();
        let diverged = runs.len() - done.len();
        let per_seed: Vec<String> = runs.iter().map(|o| if let Outcome::Done { result, .. } = o { format!("{:.2}", result.knn_top1) } else { "diverged".into() }).collect();
        if done.is_empty() {
            writeln!(md, "| {m} | diverged | | | | | {} |", per_seed.join(", "))?;
            continue;
        }
        let col = |f: &dyn Fn(&crate::train::RunResult) -> f64| mean_std(&done.iter().map(|d| f(d.0)).collect::<Vec<_>>());
        let top1 = mean_std_cell(&done.iter().map(|d| d.0.knn_top1).collect::<Vec<_>>());
        let (t5, _) = col(&|r| r.knn_top5);
        let (ips, _) = col(&|r| r.images_per_second);
        let (rss, _) = col(&|r| r.peak_rss_mib.unwrap_or(f64::NAN));
        let (secs, _) = col(&|r| r.seconds);
        let note = if diverged > 0 { format!(" ({diverged} diverged)") } else { String::new() };
        writeln!(md, "| {m} | {top1}{note} | {t5:.2} | {ips:.0} | {rss:.0} | {secs:.0} | {} |", per_seed.join(", "))?;
        // the kNN curve of the method: mean over seeds at each evaluated epoch
        let epochs: Vec<f64> = done[0].1.iter().map(|p| p.0).collect();
        let points = epochs.iter().filter_map(|&e| {
            let v: Vec<f64> = done.iter().filter_map(|d| d.1.iter().find(|p| p.0 == e).map(|p| p.1)).collect();
            (v.len() == done.len()).then(|| (e, mean_std(&v).0))
        });
        series.push(Series { label: m.clone(), points: points.collect() });
    }
    writeln!(md, "\n![kNN top-1 against epoch](knn_curve.png)")?;
    line_chart(&dir.join("knn_curve.png"), &format!("kNN-{} top-1 against epoch ({})", base.eval.k, spec.preset), "epoch", "kNN top-1 (%)", &series)?;
    crate::util::write_atomic(&dir.join("results.md"), md.as_bytes())?;
    Ok(md)
}
