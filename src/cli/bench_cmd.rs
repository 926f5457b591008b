//! `svib bench`: svib against the PyTorch reference, alternating runs, medians and ratios.
use crate::bench::{case, case_config, dump_loss_case, json_result, median, reference_paths, run_reference, run_svib, Measured, RunSpec};
use crate::data::DataSpec;
use anyhow::{Context, Result};
use clap::Args;
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Configs to run (see docs/PERFORMANCE.md): resnet, vit, vits16.
    #[arg(long, value_delimiter = ',', default_value = "resnet,vit")]
    pub configs: Vec<String>,
    /// Training steps per run.
    #[arg(long, default_value_t = 60)]
    pub steps: usize,
    /// Steps left out of the steady-state img/s (start-up, allocator and cache warm-up).
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// A B pairs per config (svib, reference, svib, reference, …); medians are reported.
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    /// DataLoader worker processes of the reference.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Extra config overrides for every case, e.g. --set train.batch_size=64.
    #[arg(long = "set")]
    pub sets: Vec<String>,
    /// Only the loss-equality check (no timing).
    #[arg(long)]
    pub check_only: bool,
    /// Time the training loader alone (decode, multi-crop augmentation, batch tensors) of this
    /// preset or config file on --data, against the reference's DataLoader with --workers
    /// worker processes (svib uses --threads), alternately; no training.
    #[arg(long, value_name = "CONFIG")]
    pub loader: Option<String>,
    /// Data set of --loader (an ImageFolder: folder:DIR).
    #[arg(long)]
    pub data: Option<String>,
    /// Python of the PyTorch reference, a path (default: bench/reference/.venv/bin/python, made
    /// by bench/reference/setup.sh); any python with torch and torchvision, e.g. a GPU machine's:
    /// --python "$(command -v python3)".
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Markdown table written here as well (atomically).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(a: BenchArgs, threads: usize) -> Result<()> {
    if let Some(config) = &a.loader {
        return run_loader(&a, config, threads);
    }
    anyhow::ensure!(a.steps > a.warmup && a.warmup >= 1, "--steps must exceed --warmup (>= 1)");
    anyhow::ensure!(a.steps.is_multiple_of(a.warmup), "--steps must be a multiple of --warmup (svib logs every --warmup steps)");
    // the cases and their configs are checked before the reference is looked for
    let cases = a.configs.iter().map(|name| Ok((name, case_config(case(name)?, &a.sets)?))).collect::<Result<Vec<_>>>()?;
    let root = std::env::current_dir()?;
    let (python, script) = reference_paths(&root, a.python.as_deref())?;
    let exe = std::env::current_exe()?;
    let work = tempfile::tempdir()?;
    let mut md = String::new();
    writeln!(md, "| config | svib img/s | PyTorch img/s | ratio | svib end-to-end img/s | PyTorch end-to-end img/s | ratio | svib peak MiB | PyTorch peak MiB | loss rel. err |")?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    for (name, cfg) in cases {
        let dir = work.path().join(name);
        // 1. the same loss on the same batch and weights
        let expected = dump_loss_case(&cfg, &dir.join("loss")).with_context(|| format!("{name}: loss dump"))?;
        let mut check = std::process::Command::new(&python);
        check.arg(&script).args(["check-loss", "--dump"]).arg(dir.join("loss"));
        let v = json_result(&mut check, &format!("{name}: the reference's check-loss"))?;
        let rel = v["max_rel_err"].as_f64().unwrap_or(f64::NAN);
        println!("{name}: loss check: svib {expected} / pytorch {} -> max relative error {rel:.2e}", v["pytorch"]);
        if a.check_only {
            writeln!(md, "| {name} | | | | | | | | | {rel:.1e} |")?;
            continue;
        }
        // 2. alternating timed runs
        let config_path = dir.join("config.toml");
        crate::util::write_atomic(&config_path, cfg.to_toml().as_bytes())?;
        let data_dir = cfg.data.spec.parse::<DataSpec>().map_err(|e| anyhow::anyhow!("data.spec: {e}"))?.dir;
        let r = RunSpec { config_path: &config_path, cfg: &cfg, steps: a.steps, warmup: a.warmup, threads, work: &dir };
        let (mut ours, mut theirs): (Vec<Measured>, Vec<Measured>) = (vec![], vec![]);
        for rep in 0..a.repeats {
            let m = run_svib(&exe, &r)?;
            println!("{name} #{rep} svib:    {:7.1} img/s steady, {:7.1} end-to-end, peak {:6.0} MiB", m.steady, m.end_to_end, m.peak_pss_mib);
            ours.push(m);
            let m = run_reference(&python, &script, &data_dir, a.workers, &r)?;
            println!("{name} #{rep} pytorch: {:7.1} img/s steady, {:7.1} end-to-end, peak {:6.0} MiB", m.steady, m.end_to_end, m.peak_pss_mib);
            theirs.push(m);
        }
        let med = |v: &[Measured], f: fn(&Measured) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
        let (s, p) = (med(&ours, |m| m.steady), med(&theirs, |m| m.steady));
        let (se, pe) = (med(&ours, |m| m.end_to_end), med(&theirs, |m| m.end_to_end));
        let (sm, pm) = (med(&ours, |m| m.peak_pss_mib), med(&theirs, |m| m.peak_pss_mib));
        println!("{name}: svib/pytorch steady {:.2}x, end-to-end {:.2}x; peak memory {sm:.0} vs {pm:.0} MiB", s / p, se / pe);
        writeln!(md, "| {name} | {s:.1} | {p:.1} | **{:.2}x** | {se:.1} | {pe:.1} | {:.2}x | {sm:.0} | {pm:.0} | {rel:.1e} |", s / p, se / pe)?;
    }
    println!("\n{md}");
    if let Some(p) = &a.out {
        crate::util::write_atomic(p, md.as_bytes())?;
    }
    Ok(())
}

/// `svib bench --loader CONFIG --data folder:DIR`: loader images/s, svib vs the DataLoader, A B A B.
fn run_loader(a: &BenchArgs, config: &str, threads: usize) -> Result<()> {
    let data = a.data.as_deref().context("--loader needs --data folder:DIR")?;
    let mut t = crate::train::config::load_table(config).context("--loader")?;
    crate::train::config::set_key(&mut t, &format!("data.spec={}", toml::Value::String(data.to_string())))?;
    for s in &a.sets {
        crate::train::config::set_key(&mut t, s)?;
    }
    let cfg = crate::train::config::Config::from_table(t)?;
    let dir = cfg.data.spec.parse::<DataSpec>().map_err(|e| anyhow::anyhow!("--data: {e}"))?.dir;
    let (python, script) = reference_paths(&std::env::current_dir()?, a.python.as_deref())?;
    let work = tempfile::tempdir()?;
    let config_path = work.path().join("config.toml");
    crate::util::write_atomic(&config_path, cfg.to_toml().as_bytes())?;
    let (batches, warmup) = (a.steps, a.warmup);
    let (mut ours, mut theirs) = (vec![], vec![]);
    for rep in 0..a.repeats {
        let (ips, open) = crate::bench::loader_images_per_second(&cfg, batches, warmup)?;
        println!("#{rep} svib loader ({threads} threads): {ips:7.1} img/s (data set opened in {open:.1} s)");
        ours.push(ips);
        let ips = crate::bench::reference_loader_images_per_second(&python, &script, &config_path, &dir, a.workers, batches, warmup)?;
        println!("#{rep} PyTorch DataLoader ({} workers): {ips:7.1} img/s", a.workers);
        theirs.push(ips);
    }
    let (s, p) = (median(&ours), median(&theirs));
    println!("loader {config}: svib {s:.1} img/s, PyTorch {p:.1} img/s: {:.2}x (medians of {})", s / p, a.repeats);
    Ok(())
}
