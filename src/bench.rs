//! `svib bench`: svib against the PyTorch reference (bench/reference/svib_ref.py) on the same
//! configs, data and step counts, run alternately (A B A B …) as child processes, with img/s
//! and peak memory of each; plus a loss-equality check on a fixed batch and fixed weights.
use crate::augment::loader::{Loader, LoaderOptions};
use crate::data::Norm;
use crate::methods::svib::Svib;
use crate::methods::{Method, StepCtx};
use crate::train::config::Config;
use crate::train::{load_train_data, schedule::Schedules};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// A benchmark config: the fmnist-cpu preset with `--set` overrides.
pub struct BenchCase {
    pub name: &'static str,
    pub what: &'static str,
    pub sets: &'static [&'static str],
}

/// Applied to fmnist-cpu before every case's own overrides: the workload of the PERFORMANCE.md
/// history (2 local crops, batch 128), kept fixed while the preset changes (no local crops
/// since session 15, batch 64 since session 16).
const HISTORY: &[&str] = &["augment.local_crops=2", "train.batch_size=128"];

pub const CASES: &[BenchCase] = &[
    BenchCase { name: "resnet", what: "fmnist-cpu's ResNet-18 width 16: 2x28 px + 2x14 px crops, batch 128", sets: &[] },
    BenchCase {
        name: "vit",
        what: "small ViT (dim 192, depth 4, 3 heads, patch 4) on 28 px, 2x28 + 2x12 px crops, batch 128",
        sets: &["model.name=vit_tiny", "model.patch_size=4", "model.img_size=28", "model.depth=4", "model.drop_path=0.0", "augment.local_size=12"],
    },
    BenchCase {
        name: "vits16",
        what: "ViT-S/16-shaped (dim 384, depth 12, 6 heads, patch 16): 2x224 + 2x96 px crops, batch 16, 2,048 images",
        sets: &[
            "model.name=vit_small",
            "model.patch_size=16",
            "model.img_size=224",
            "model.drop_path=0.0",
            "augment.global_size=224",
            "augment.local_size=96",
            "train.batch_size=16",
            "data.limit=2048",
            "gmm.k=1024",
            "head.hidden=2048",
        ],
    },
];

pub fn case(name: &str) -> Result<&'static BenchCase> {
    CASES
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| anyhow::anyhow!("--configs: unknown `{name}` (expected one of {})", CASES.iter().map(|c| c.name).collect::<Vec<_>>().join(", ")))
}

/// The resolved config of a case (fmnist-cpu + `HISTORY` + its overrides + `extra`).
pub fn case_config(c: &BenchCase, extra: &[String]) -> Result<Config> {
    let mut t = crate::train::config::load_table("fmnist-cpu")?;
    for s in HISTORY.iter().chain(c.sets).map(|s| s.to_string()).chain(extra.iter().cloned()) {
        crate::train::config::set_key(&mut t, &s)?;
    }
    crate::train::config::set_key(&mut t, "train.knn_every=0")?;
    Config::from_table(t)
}

/// Writes what the reference's `check-loss` needs: the config, the student's and teacher's
/// variables, a non-zero centre, the views of one real batch, and svib's loss terms and the
/// gradient norm of the means on them.
pub fn dump_loss_case(cfg: &Config, dir: &Path) -> Result<serde_json::Value> {
    let Some(svib_cfg) = cfg.svib() else { bail!("the loss check is for SVIB, not {}", cfg.method.name()) };
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    tch::manual_seed(cfg.train.seed as i64);
    let (spec, train) = load_train_data(cfg)?;
    let norm = Norm::for_dataset(&spec, &train);
    let bs = cfg.train.batch_size;
    let mut svib = Svib::new(svib_cfg, &cfg.shared(), Device::Cpu)?;
    // a teacher that differs from the student and a centre that is not zero, so both matter
    tch::no_grad(|| {
        for (_, mut t) in svib.teacher().expect("SVIB has a teacher").variables() {
            let _ = t.g_add_(&(t.randn_like() * 0.01));
        }
    });
    let k = svib_cfg.gmm.k;
    svib.load_state(&[("center".into(), Tensor::randn([1, k], (Kind::Float, Device::Cpu)) * 0.05)])?;
    let batch = Loader::new(Arc::new(train.clone()), cfg.augment.clone(), norm, bs, cfg.train.seed, 0, 0, LoaderOptions::default()).next().context("no batch")??;
    let sched = Schedules::new(cfg, train.len() / bs);
    let ctx = StepCtx { step: 0, total_steps: sched.total_steps, epoch: 0, beta: sched.beta(0), teacher_momentum: sched.teacher_momentum(0).unwrap_or(1.0) };
    let out = svib.loss(&batch.views, &ctx);
    out.loss.backward();
    let term = |n: &str| out.terms.iter().find(|t| t.0 == n).map(|t| t.1.double_value(&[])).unwrap_or(f64::NAN);
    let grad_norm = svib.means().grad().norm().double_value(&[]);
    let mut named: Vec<(String, Tensor)> = vec![];
    for (n, t) in svib.student().variables() {
        named.push((format!("student.{n}"), t.detach()));
    }
    for (n, t) in svib.teacher().expect("teacher").variables() {
        named.push((format!("teacher.{n}"), t.detach()));
    }
    for (n, t) in svib.state() {
        named.push((n, t));
    }
    for (i, v) in batch.views.iter().enumerate() {
        named.push((format!("view.{i}"), v.shallow_clone()));
    }
    crate::interop::pth::write_pth(&named, &dir.join("state.pth"))?;
    crate::util::write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    let expected = serde_json::json!({"loss": out.loss.double_value(&[]), "ce": term("ce"), "kl": term("kl"), "grad_norm_means": grad_norm, "beta": ctx.beta});
    crate::util::write_atomic(&dir.join("expected.json"), expected.to_string().as_bytes())?;
    Ok(expected)
}

/// What one child run measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// img/s between the end of the warm-up steps and the last step.
    pub steady: f64,
    /// Images of all steps over the child's whole wall time (start-up, data, checkpoint included).
    pub end_to_end: f64,
    /// Peak proportional set size of the child and its descendants (DataLoader workers), MiB.
    pub peak_pss_mib: f64,
}

/// Proportional set size (kB) of `pid` and all its descendants.
fn tree_pss_kb(pid: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            total += s.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                    stack.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
                }
            }
        }
    }
    total
}

/// How often the process tree's PSS is read. Each read walks the page tables of every process
/// (~10 ms for a 1.4 GB process); at 20 reads a second that slowed the measured `vit` step by
/// ~16 % on 2 cores, so once a second (the peak recurs every step; a missed peak of the
/// reference, whose heap shrinks between steps, only makes its number smaller).
const PSS_EVERY: Duration = Duration::from_secs(1);

/// Runs `cmd` to completion, sampling its process tree's memory every [`PSS_EVERY`]; (wall s, peak MiB, stdout).
fn run_sampled(cmd: &mut Command) -> Result<(f64, f64, String)> {
    let t0 = Instant::now();
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    let pid = child.id();
    // the sampler reads PSS, then waits up to PSS_EVERY for the end signal: dropping `stop`
    // (also on an early return) ends it at once
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0u64;
        loop {
            peak = peak.max(tree_pss_kb(pid));
            if stopped.recv_timeout(PSS_EVERY) != Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                return peak;
            }
        }
    });
    let out = child.wait_with_output()?;
    let wall = t0.elapsed().as_secs_f64();
    drop(stop);
    let peak = sampler.join().unwrap_or(0);
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).lines().rev().take(5).collect::<Vec<_>>().join(" | "));
    }
    Ok((wall, peak as f64 / 1024.0, String::from_utf8_lossy(&out.stdout).into_owned()))
}

pub struct RunSpec<'a> {
    pub config_path: &'a Path,
    pub cfg: &'a Config,
    pub steps: usize,
    pub warmup: usize,
    pub threads: usize,
    pub work: &'a Path,
}

/// One svib run: `svib train … --max-steps` in a fresh directory; steady img/s from the
/// `seconds` of the metrics lines at the warm-up step and the last step.
pub fn run_svib(exe: &Path, r: &RunSpec) -> Result<Measured> {
    let out = r.work.join("svib-run");
    let _ = std::fs::remove_dir_all(&out);
    let mut cmd = Command::new(exe);
    cmd.args(["--threads", &r.threads.to_string(), "train", "--config"])
        .arg(r.config_path)
        .args(["--max-steps", &r.steps.to_string(), "--set", &format!("train.log_every={}", r.warmup), "--out"])
        .arg(&out);
    let (wall, pss, _) = run_sampled(&mut cmd)?;
    let lines = crate::train::rundir::RunDir::new(&out).metrics()?;
    let at = |step: usize| -> Option<f64> { lines.iter().find(|v| v["step"].as_u64() == Some(step as u64) && v.get("loss").is_some()).and_then(|v| v["seconds"].as_f64()) };
    let (Some(a), Some(b)) = (at(r.warmup), at(r.steps)) else { bail!("{}: no metrics at steps {} and {}", out.display(), r.warmup, r.steps) };
    let imgs = ((r.steps - r.warmup) * r.cfg.train.batch_size) as f64;
    let _ = std::fs::remove_dir_all(&out);
    Ok(Measured { steady: imgs / (b - a), end_to_end: (r.steps * r.cfg.train.batch_size) as f64 / wall, peak_pss_mib: pss })
}

/// One reference run: `python svib_ref.py train …`.
pub fn run_reference(python: &Path, script: &Path, data_dir: &Path, workers: usize, r: &RunSpec) -> Result<Measured> {
    let norm = Norm::preset("fashion-mnist").expect("preset");
    let mut cmd = Command::new(python);
    cmd.arg(script).args(["train", "--config"]).arg(r.config_path).arg("--data").arg(data_dir);
    cmd.args(["--steps", &r.steps.to_string(), "--warmup", &r.warmup.to_string(), "--workers", &workers.to_string(), "--threads", &r.threads.to_string()]);
    cmd.args(["--mean", &norm.mean[0].to_string(), "--std", &norm.std[0].to_string()]);
    let (wall, pss, stdout) = run_sampled(&mut cmd)?;
    let v = last_json(&stdout).context("the reference printed no JSON result")?;
    let steady = v["images_per_second"].as_f64().context("reference: no images_per_second")?;
    Ok(Measured { steady, end_to_end: (r.steps * r.cfg.train.batch_size) as f64 / wall, peak_pss_mib: pss })
}

/// images/s of the training loader alone (augmentation into batch tensors, with the run's
/// threads), over `batches` batches after `warmup`, epochs chained; plus the seconds it took to
/// open the data set.
pub fn loader_images_per_second(cfg: &Config, batches: usize, warmup: usize) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let (spec, train) = load_train_data(cfg)?;
    let open = t0.elapsed().as_secs_f64();
    let norm = Norm::for_dataset(&spec, &train);
    let (bs, train) = (cfg.train.batch_size, Arc::new(train));
    ensure!(train.len() >= bs, "train.batch_size {bs} is larger than the {} training images", train.len());
    let mut epoch = 0;
    let mut next_loader = || {
        epoch += 1;
        Loader::new(
            train.clone(),
            cfg.augment.clone(),
            norm.clone(),
            bs,
            cfg.train.seed,
            epoch - 1,
            0,
            LoaderOptions { prefetch: cfg.train.prefetch, threads: cfg.train.loader_threads, ..Default::default() },
        )
    };
    let mut loader = next_loader();
    let mut start = Instant::now();
    for i in 0..warmup + batches {
        if i == warmup {
            start = Instant::now();
        }
        match loader.next() {
            Some(batch) => drop(batch?),
            None => {
                loader = next_loader();
                drop(loader.next().context("an epoch without a batch")??);
            }
        }
    }
    Ok(((batches * bs) as f64 / start.elapsed().as_secs_f64(), open))
}

/// The reference's DataLoader alone (`svib_ref.py loader`): images/s.
pub fn reference_loader_images_per_second(python: &Path, script: &Path, config: &Path, data_dir: &Path, workers: usize, batches: usize, warmup: usize) -> Result<f64> {
    let mut cmd = Command::new(python);
    cmd.arg(script).args(["loader", "--config"]).arg(config).arg("--data").arg(data_dir);
    cmd.args(["--batches", &batches.to_string(), "--warmup", &warmup.to_string(), "--workers", &workers.to_string()]);
    let v = json_result(&mut cmd, "the reference's loader")?;
    v["images_per_second"].as_f64().context("reference: no images_per_second")
}

/// Runs a reference command to its end and reads the last JSON line it printed; `what` names it
/// in the error when it fails (with why: [`failure`]) or prints no JSON.
pub fn json_result(cmd: &mut Command, what: &str) -> Result<serde_json::Value> {
    let out = cmd.output().with_context(|| format!("{}: cannot run", cmd.get_program().to_string_lossy()))?;
    ensure!(out.status.success(), "{what} failed: {}", failure(&out));
    last_json(&String::from_utf8_lossy(&out.stdout)).with_context(|| format!("{what} printed no JSON"))
}

/// The last line of `stdout` that is JSON (the reference prints its result last).
fn last_json(stdout: &str) -> Option<serde_json::Value> {
    stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok())
}

/// Why a child process failed, in one line: its last line on stderr, or its exit status when it
/// printed nothing.
fn failure(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines().rev().map(str::trim).find(|l| !l.is_empty()).map_or_else(|| format!("{}, with no message", out.status), str::to_string)
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The reference's files: (python, script), the python `python` or else the reference's own
/// venv; an error that says how to set it up.
pub fn reference_paths(root: &Path, python: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
    let script = root.join("bench/reference/svib_ref.py");
    ensure!(script.is_file(), "{}: the reference script is missing (run svib bench from the repository)", script.display());
    let Some(given) = python else {
        let venv = root.join("bench/reference/.venv/bin/python");
        ensure!(venv.is_file(), "{}: the reference's python is missing; create its venv with `bash bench/reference/setup.sh` or pass --python", venv.display());
        return Ok((venv, script));
    };
    ensure!(!given.is_dir(), "--python {}: a folder; expected a python executable (e.g. {})", given.display(), given.join("bin/python").display());
    ensure!(given.is_file(), "--python {}: no such file; expected a python executable with torch and torchvision", given.display());
    Ok((given.to_path_buf(), script))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn every_case_resolves_to_a_valid_config() {
        for c in CASES {
            let cfg = case_config(c, &[]).unwrap();
            assert_eq!(cfg.train.knn_every, 0, "{}", c.name);
        }
        assert_eq!(case_config(case("vit").unwrap(), &[]).unwrap().model.patch_size, 4);
        assert!(case("nope").is_err());
    }

    #[test]
    fn cases_keep_the_historical_crops_and_batch() {
        // whatever the preset's crops and batch, the benchmark's workload stays that of its history
        for (name, batch) in [("resnet", 128), ("vit", 128), ("vits16", 16)] {
            let cfg = case_config(case(name).unwrap(), &[]).unwrap();
            assert_eq!((cfg.augment.local_crops, cfg.train.batch_size), (2, batch), "{name}");
        }
    }

    #[test]
    fn process_tree_memory_is_sampled() {
        // this test process itself has a proportional set size
        assert!(tree_pss_kb(std::process::id()) > 0);
    }
}
