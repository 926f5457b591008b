//! `svib train` and `svib presets`.
use crate::train::config::{apply_method, load_table, set_epochs, set_key, set_value, Config, METHOD_OVERLAYS, PRESETS};
use crate::train::{run, RunOptions};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// A preset name (see `svib presets`) or a TOML config file.
    #[arg(long, default_value = "fmnist-cpu")]
    pub config: String,
    /// Method: svib | dino | byol | mocov2 | swav | simclr (a baseline applies its overlay to the config).
    #[arg(long)]
    pub method: Option<String>,
    /// Data set, overriding the config's data.spec.
    #[arg(long)]
    pub data: Option<String>,
    /// Epochs, overriding train.epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Wall-clock budget (e.g. 30m, 1h30m): sets train.steps from the throughput measured in a
    /// short probe of the same recipe; every schedule spans those steps. A resumed run keeps its steps.
    #[arg(long)]
    pub budget: Option<String>,
    /// Any config key, e.g. --set gmm.k=4096 --set ib.prior=marginal (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run directory: config.toml, metrics.jsonl, checkpoints, result.json. An existing run resumes.
    #[arg(long)]
    pub out: PathBuf,
    /// Stop with a checkpoint after this many steps in total (run again to resume).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Print the final result as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// The key of `sets` that sets the run's length, if any.
fn length_key(sets: &[String]) -> Option<&'static str> {
    ["train.steps", "train.epochs"].into_iter().find(|k| set_value(sets, k).is_some())
}

/// The resolved config of a `train`-like command line.
pub fn resolve(config: &str, method: Option<&str>, data: Option<&str>, epochs: Option<usize>, sets: &[String]) -> Result<Config> {
    let mut table = load_table(config).context("--config")?;
    if let (Some(m), Some(s)) = (method, set_value(sets, "method")) {
        anyhow::ensure!(m == s, "--method {m} and --set method={s} disagree; give one of them");
    }
    if let Some(m) = method {
        apply_method(&mut table, m).context("--method")?;
    }
    if let Some(d) = data {
        // a TOML string, so that a path's backslashes and quotes stay as typed
        set_key(&mut table, &format!("data.spec={}", toml::Value::String(d.to_string())))?;
    }
    if let Some(e) = epochs {
        if let Some(key) = length_key(sets) {
            anyhow::bail!("--epochs {e} and --set {key}= both set the run's length; give one of them");
        }
        set_epochs(&mut table, e)?;
    }
    for s in sets {
        set_key(&mut table, s)?;
    }
    let mut cfg = Config::from_table(table)?;
    cfg.data.spec = crate::data::absolute_spec(&cfg.data.spec);
    Ok(cfg)
}

pub fn run_train(a: TrainArgs) -> Result<()> {
    anyhow::ensure!(a.max_steps != Some(0), "--max-steps: expected at least 1 step, got 0");
    let mut cfg = resolve(&a.config, a.method.as_deref(), a.data.as_deref(), a.epochs, &a.set)?;
    if let Some(b) = &a.budget {
        // said once: by the process that is not another rank of a launch
        if let Some(key) = length_key(&a.set).or(a.epochs.map(|_| "--epochs")).filter(|_| crate::util::other_launched_rank().is_none()) {
            eprintln!("warning: --budget {b} sets the run's length; {key} is replaced");
        }
        let secs = crate::train::budget::parse_duration(b)?;
        cfg.train.steps = crate::train::budget::steps_for_budget(&cfg, &a.out, secs)?;
    }
    let opts = RunOptions { max_steps: a.max_steps, quiet: a.quiet, probe: false };
    // rank 0 alone reports a distributed run
    if let Some(r) = run(&cfg, &a.out, &opts)?.filter(|_| crate::dist::world().0 == 0) {
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "kNN-{} top-1 {:.2}  top-5 {:.2}  ({} epochs, {} steps, {:.0} s, {:.0} img/s, peak RSS {})",
                cfg.eval.k,
                r.knn_top1,
                r.knn_top5,
                r.epochs,
                r.steps,
                r.seconds,
                r.images_per_second,
                r.peak_rss_mib.map_or("?".into(), |m| format!("{m:.0} MiB"))
            );
            println!("run directory: {}", a.out.display());
        }
    }
    Ok(())
}

pub fn list_presets() -> Result<()> {
    for (name, about, _) in PRESETS {
        let cfg = Config::from_table(load_table(name)?)?;
        println!("{name:<20} {about}\n{:<20} objective: {}", "", cfg.objective());
    }
    let methods: Vec<&str> = METHOD_OVERLAYS.iter().map(|m| m.0).collect();
    println!("\nBaselines: prefix a preset with {}- (e.g. dino-fmnist-cpu), or pass --method; the", methods.join("-, "));
    println!("method's head and options replace SVIB's, everything else stays the preset's.");
    println!("\nsvib train --config NAME [--method M] --out DIR [--data SPEC] [--epochs N] [--set key=value ...]");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_data_path_is_kept_as_typed_and_made_absolute() {
        for path in [r"folder:/data/x\tb", r#"folder:/data/dq"uote"#, "folder:/data/with space/ä 📷"] {
            let c = super::resolve("fmnist-cpu", None, Some(path), None, &["augment.channels=1".into()]).unwrap();
            assert_eq!(c.data.spec, path);
        }
        let here = std::env::current_dir().unwrap();
        let c = super::resolve("fmnist-cpu", None, Some(r"folder:sets\photos"), None, &["augment.channels=1".into()]).unwrap();
        assert_eq!(c.data.spec, format!("folder:{}", here.join(r"sets\photos").display()));
        let c = super::resolve("fmnist-cpu", None, None, None, &["data.spec=idx:../fd".into()]).unwrap();
        assert_eq!(c.data.spec, format!("idx:{}", here.join("../fd").display()));
        assert_eq!(super::resolve("fmnist-cpu", None, None, None, &[]).unwrap().data.spec, "fashion-mnist");
    }
}
