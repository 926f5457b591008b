//! The training loop: data, schedules, optimiser, checkpoints, logs; the method supplies the loss.
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod monitor;
pub mod optim;
pub mod profile;
pub mod rundir;
pub mod schedule;

use crate::augment::loader::Loader;
use crate::data::{self, DataSpec, Dataset, LoadOptions, Norm, Split};
use crate::eval::features::{backbone_features, labels, EvalPrep};
use crate::eval::knn::{knn_classify, KnnResult};
use crate::methods::build as build_method;
use crate::methods::{Method, StepCtx};
use anyhow::{bail, Context, Result};
use config::Config;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Tensor};

/// Run-control options that are not part of the recipe (changing them does not change the run).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop (with a checkpoint) once this many steps are done in total; re-running resumes.
    pub max_steps: Option<usize>,
    /// No progress bar or epoch lines.
    pub quiet: bool,
}

/// What a finished run reports (also `DIR/result.json`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RunResult {
    pub knn_top1: f64,
    pub knn_top5: f64,
    pub epochs: usize,
    pub seconds: f64,
    pub steps: usize,
    pub images_per_second: f64,
    pub peak_rss_mib: Option<f64>,
}

/// Keys that may differ when a run directory is resumed.
const RESUME_FREE_KEYS: [&str; 12] = [
    "train.device",
    "train.prefetch",
    "train.channels_last",
    "train.log_every",
    "train.knn_every",
    "train.knn_every_steps",
    "train.knn_at_start",
    "train.keep_checkpoints",
    "train.collapse_threshold",
    "train.collapse_mi_threshold",
    "train.collapse_patience",
    "eval",
];

fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => t.iter().for_each(|(k, v)| flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out)),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// Writes DIR/config.toml, or checks that a resumed run has the same recipe.
fn check_or_write_config(cfg: &Config, dir: &Path) -> Result<()> {
    let path = dir.join("config.toml");
    let text = cfg.to_toml();
    if path.is_file() {
        let old = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let old: toml::Table = toml::from_str(&old).map_err(|e| anyhow::anyhow!("{}: not valid TOML ({})", path.display(), e.message()))?;
        // a run written before a key existed has that key's default (which reproduces the old
        // behaviour), so compare through the config with today's defaults filled in
        let old: toml::Value = toml::from_str(&Config::from_table(old).with_context(|| path.display().to_string())?.to_toml())?;
        let (mut a, mut b) = (vec![], vec![]);
        flatten("", &old, &mut a);
        flatten("", &toml::from_str(&text)?, &mut b);
        let free = |k: &str| RESUME_FREE_KEYS.iter().any(|f| k == *f || k.starts_with(&format!("{f}.")));
        let a: std::collections::BTreeMap<_, _> = a.into_iter().filter(|(k, _)| !free(k)).collect();
        let b: std::collections::BTreeMap<_, _> = b.into_iter().filter(|(k, _)| !free(k)).collect();
        let diff: Vec<String> = a
            .keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| format!("{k} ({} -> {})", a.get(k).map_or("unset", |s| s), b.get(k).map_or("unset", |s| s)))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !diff.is_empty() {
            bail!("{} holds a run with another recipe; differing keys: {}. Use another --out to start a new run", dir.display(), diff.join(", "));
        }
    }
    crate::util::write_atomic(&path, text.as_bytes())
}

/// Loads the pre-training images (STL-10 may add its unlabeled split) and applies data.limit.
pub fn load_train_data(cfg: &Config) -> Result<(DataSpec, Dataset)> {
    let spec: DataSpec = cfg.data.spec.parse().map_err(|e| anyhow::anyhow!("data.spec: {e}"))?;
    let opts = LoadOptions { skip_corrupt: cfg.data.skip_corrupt };
    let mut ds = data::load(&spec, Split::Train, &opts)?;
    if cfg.data.use_unlabeled {
        let extra = data::load(&spec, Split::Unlabeled, &opts)?;
        ds.images.extend(extra.images);
        ds.labels.extend(extra.labels);
    }
    match (cfg.data.limit, cfg.data.limit_seed) {
        (0, _) => {}
        (n, None) => ds.truncate(n),
        (n, Some(seed)) => ds.subset(n, seed),
    }
    Ok((spec, ds))
}

/// Evaluation preprocessing of a run.
pub fn eval_prep(cfg: &Config, norm: Norm) -> EvalPrep {
    let size = if cfg.eval.image_size > 0 { cfg.eval.image_size } else { cfg.augment.global_size };
    EvalPrep { size, channels: cfg.augment.channels, norm }
}

/// kNN of `method`'s evaluation backbone, train split against test split.
pub fn knn_eval(method: &dyn Method, cfg: &Config, train: &Dataset, test: &Dataset, prep: &EvalPrep, device: Device) -> KnnResult {
    let b = method.eval_backbone();
    let ftr = backbone_features(b, train, prep, cfg.eval.batch_size, device);
    let fte = backbone_features(b, test, prep, cfg.eval.batch_size, device);
    let classes = train.num_classes.max(test.num_classes) as i64;
    knn_classify(&ftr, &labels(train, device), &fte, &labels(test, device), classes, cfg.eval.k, cfg.eval.temperature)
}

/// All tensors of a checkpoint: student.*, teacher.*, optim.*, state.*.
fn checkpoint_tensors(method: &dyn Method, opt: &optim::Optimizer) -> Vec<(String, Tensor)> {
    let mut t: Vec<(String, Tensor)> = method.student().variables().into_iter().map(|(k, v)| (format!("student.{k}"), v)).collect();
    if let Some(tv) = method.teacher() {
        t.extend(tv.variables().into_iter().map(|(k, v)| (format!("teacher.{k}"), v)));
    }
    t.extend(opt.state().into_iter().map(|(k, v)| (format!("optim.{k}"), v)));
    t.extend(method.extra_state().into_iter().map(|(k, v)| (format!("state.{k}"), v)));
    t
}

fn load_vars(vs: &tch::nn::VarStore, tensors: &std::collections::BTreeMap<String, Tensor>, prefix: &str, source: &Path) -> Result<()> {
    let mut vars = vs.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, var) in vars.iter_mut() {
            let key = format!("{prefix}.{name}");
            let t = tensors.get(&key).ok_or_else(|| anyhow::anyhow!("{}: missing `{key}` (a checkpoint of another recipe?)", source.display()))?;
            if t.size() != var.size() {
                bail!("{}: `{key}` has shape {:?}, the model expects {:?}", source.display(), t.size(), var.size());
            }
            var.copy_(t);
        }
        Ok(())
    })
}

/// Restores a method (and optionally an optimiser) from checkpoint tensors.
pub fn restore(method: &mut dyn Method, opt: Option<&mut optim::Optimizer>, tensors: &std::collections::BTreeMap<String, Tensor>, source: &Path) -> Result<()> {
    load_vars(method.student(), tensors, "student", source)?;
    if let Some(tv) = method.teacher() {
        load_vars(tv, tensors, "teacher", source)?;
    }
    if let Some(opt) = opt {
        let st: std::collections::BTreeMap<String, Tensor> = checkpoint::with_prefix(tensors, "optim").into_iter().collect();
        opt.load_state(&st).with_context(|| format!("{}", source.display()))?;
    }
    method.load_extra_state(&checkpoint::with_prefix(tensors, "state"))
}

/// Loads a finished or running run (directory or checkpoint file): its config and method.
pub fn load_run(path: &Path, device: Device) -> Result<(Config, Box<dyn Method>)> {
    let (dir, (_, tensors, ckpt)) = if path.is_dir() {
        let Some(latest) = checkpoint::load_latest(path)? else { bail!("{}: no checkpoint in this run directory", path.display()) };
        (path.to_path_buf(), latest)
    } else {
        let (meta, tensors) = checkpoint::load(path)?;
        (path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".")), (meta, tensors, path.to_path_buf()))
    };
    let cfg_path = dir.join("config.toml");
    let table = config::load_table(cfg_path.to_str().unwrap_or_default()).with_context(|| format!("{}: the run's config.toml is needed", dir.display()))?;
    let cfg = Config::from_table(table).with_context(|| cfg_path.display().to_string())?;
    let mut method = build_method(&cfg, device)?;
    restore(method.as_mut(), None, &tensors, &ckpt)?;
    Ok((cfg, method))
}

/// A metrics line with a kNN result.
fn knn_line(step: usize, epoch: f64, r: &KnnResult) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("step".into(), json!(step));
    m.insert("epoch".into(), json!(epoch));
    m.insert("knn_top1".into(), json!(r.top1));
    m.insert("knn_top5".into(), json!(r.top5));
    m
}

/// Fault injection for the tests of divergence handling: `SVIB_INJECT_NAN_AT_STEP=N` makes the
/// loss of step N (1-based, as in metrics.jsonl) NaN; every config value in range trains finitely.
fn injected_nan(step: usize) -> bool {
    static AT: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *AT.get_or_init(|| std::env::var("SVIB_INJECT_NAN_AT_STEP").ok().and_then(|v| v.parse().ok())) == Some(step)
}

const STOPPED: &str = "with a checkpoint; run the same command again to resume";

/// Set by Ctrl-C: the loop checkpoints at the next step and stops.
fn interrupt_flag() -> &'static AtomicBool {
    static FLAG: AtomicBool = AtomicBool::new(false);
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if FLAG.swap(true, Ordering::SeqCst) {
                std::process::exit(130); // a second Ctrl-C stops at once
            }
            eprintln!("\ninterrupted: saving a checkpoint after this step (Ctrl-C again to quit at once)");
        });
    });
    &FLAG
}

/// The same values with NHWC strides (a 4-D tensor viewed as NCHW), which libtorch's
/// convolutions take as a request for their channels-last kernels.
pub fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Pre-trains as `cfg` says into `dir`, resuming from its newest checkpoint when there is one.
pub fn run(cfg: &Config, dir: &Path, opts: &RunOptions) -> Result<Option<RunResult>> {
    let device = crate::device::parse(&cfg.train.device).context("train.device")?;
    if let (tch::Device::Cpu, Some(mem)) = (device, limits::physical_memory()) {
        limits::check_memory(cfg, mem)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let _lock = rundir::lock(dir)?;
    for name in rundir::clean_stale(dir)? {
        eprintln!("note: {}: removed {name}, left by an interrupted write", dir.display());
    }
    check_or_write_config(cfg, dir)?;
    if let Some(w) = crate::device::bf16_warning(cfg.model.bf16, device) {
        eprintln!("{w}");
    }
    let (spec, train) = load_train_data(cfg)?;
    let test = data::load(&spec, Split::Test, &LoadOptions { skip_corrupt: cfg.data.skip_corrupt })?;
    let bs = cfg.train.batch_size;
    if train.len() < bs {
        bail!("train.batch_size {bs} is larger than the {} training images", train.len());
    }
    let norm = Norm::for_dataset(&spec, &train);
    let prep = eval_prep(cfg, norm.clone());
    let steps_per_epoch = train.len() / bs;
    let sched = schedule::Schedules::new(cfg, steps_per_epoch);
    let total = sched.total_steps;
    let epochs_total = total.div_ceil(steps_per_epoch);

    tch::manual_seed(cfg.train.seed as i64);
    let mut method = build_method(cfg, device)?;
    if cfg.train.channels_last {
        for vs in [Some(method.student()), method.teacher()].into_iter().flatten() {
            for (_, mut v) in vs.variables() {
                if v.dim() == 4 {
                    tch::no_grad(|| v.set_data(&channels_last(&v)));
                }
            }
        }
    }
    let named: Vec<(String, Tensor)> = method.student().variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    let mut opt = optim::Optimizer::new(&cfg.optim, named);
    opt.set_lr_scale(&method.lr_scales());
    let (mut step, mut epoch, mut skip, mut seconds_before) = (0usize, 0usize, 0usize, 0f64);
    let mut monitor = monitor::CollapseMonitor::new(cfg.train.collapse_threshold, cfg.train.collapse_mi_threshold, cfg.train.collapse_patience);
    let resumed = checkpoint::load_latest(dir)?;
    if let Some((meta, tensors, path)) = &resumed {
        restore(method.as_mut(), Some(&mut opt), tensors, path)?;
        (step, epoch, skip, seconds_before) = (meta.step, meta.epoch, meta.batch_in_epoch, meta.seconds);
        monitor.restore(meta.monitor.clone());
        if !opts.quiet && step < total {
            eprintln!("resuming {} at step {step} (epoch {}, batch {skip})", dir.display(), epoch + 1);
        }
    } else {
        method.init_from_data(&train, &prep, cfg.train.seed)?;
    }
    let resumed_path = resumed.as_ref().map(|r| r.2.clone());
    drop(resumed);
    if step >= total {
        if let Some(r) = std::fs::read(dir.join("result.json")).ok().and_then(|b| serde_json::from_slice::<RunResult>(&b).ok()) {
            return Ok(Some(r));
        }
    }
    let mut log = metrics::MetricsLog::open(&dir.join("metrics.jsonl"), step)?;
    let untrained = untrained_knn(method.as_ref(), cfg, (&train, &test), &prep, device, step, &mut log, dir)?;
    let train = Arc::new(train);
    let interrupted = interrupt_flag();
    let should_stop = |step: usize| opts.max_steps.is_some_and(|m| step >= m) || interrupted.load(Ordering::SeqCst);
    let pb = if opts.quiet { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
    pb.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}<{eta_precise}] {bar:30} {pos}/{len} {msg}").expect("valid template"));
    pb.set_position(step as u64);
    let started = Instant::now();
    let seconds = |s: &Instant| seconds_before + s.elapsed().as_secs_f64();
    let save = |method: &dyn Method, opt: &optim::Optimizer, mon: &monitor::CollapseMonitor, step: usize, epoch: usize, batch: usize, secs: f64| -> Result<PathBuf> {
        let meta = checkpoint::Meta {
            step,
            epoch,
            batch_in_epoch: batch,
            seconds: secs,
            svib_version: env!("CARGO_PKG_VERSION").into(),
            rng: "derived from (train.seed, epoch, step)".into(),
            monitor: mon.state().clone(),
        };
        checkpoint::save(dir, &meta, &checkpoint_tensors(method, opt), cfg.train.keep_checkpoints).map_err(|e| {
            // diverged without a non-finite loss (e.g. a BatchNorm buffer overflowed): marked for the experiment runners
            if let Some(nf) = e.downcast_ref::<checkpoint::NonFinite>() {
                let _ = crate::util::write_atomic(&dir.join(crate::experiments::DIVERGED), format!("{nf}\n").as_bytes());
                return anyhow::anyhow!("{nf}; lower optim.lr and start a new run");
            }
            e
        })
    };
    let mut last_ckpt: Option<PathBuf> = resumed_path;
    let (mut window_images, mut window_start) = (0usize, Instant::now());
    let mut images_per_second = 0.0;
    let mut prof = profile::Profile::from_env(device);
    let evaluate = |method: &dyn Method, step: usize, epoch: f64, log: &mut metrics::MetricsLog| -> Result<KnnResult> {
        let r = knn_eval(method, cfg, &train, &test, &prep, device);
        log.write(knn_line(step, epoch, &r))?;
        if let Some(w) = untrained.and_then(|u| monitor::below_untrained(step, r.top1, u)) {
            pb.suspend(|| eprintln!("{w}"));
        }
        Ok(r)
    };
    while step < total {
        let loader = Loader::new(train.clone(), cfg.augment.clone(), norm.clone(), bs, cfg.train.seed, epoch as u64, skip, cfg.train.prefetch);
        let mut batch_idx = skip;
        prof.lap("other");
        for batch in loader {
            prof.lap("waiting for the loader");
            let ctx = StepCtx { step, total_steps: total, epoch, beta: sched.beta(step), teacher_momentum: sched.teacher_momentum(step) };
            let (lr, wd) = (sched.lr(step), sched.weight_decay(step));
            tch::manual_seed(cfg.train.seed as i64 * 1_000_003 + step as i64);
            let views: Vec<Tensor> = batch.views.iter().map(|v| v.to_device(device)).map(|v| if cfg.train.channels_last { channels_last(&v) } else { v }).collect();
            prof.lap("host to device");
            let out = method.loss(&views, &ctx);
            let loss_v = if injected_nan(step + 1) { f64::NAN } else { out.loss.double_value(&[]) };
            prof.lap("forward + loss");
            if !loss_v.is_finite() {
                let bad: Vec<String> = out.terms.iter().map(|(n, t)| (n, t.double_value(&[]))).filter(|(_, v)| !v.is_finite()).map(|(n, v)| format!("{n} = {v}")).collect();
                let keep = last_ckpt.as_ref().map_or("No checkpoint was written before it".to_string(), |p| format!("The last good checkpoint is {}", p.display()));
                let msg =
                    format!("step {} (epoch {}): the loss is not finite ({})", step + 1, epoch + 1, if bad.is_empty() { format!("total = {loss_v}") } else { bad.join(", ") });
                crate::util::write_atomic(&dir.join(crate::experiments::DIVERGED), format!("{msg}\n").as_bytes())?;
                bail!("{msg}; stopped. {keep}; lower optim.lr or raise gmm.sigma_* and start a new run");
            }
            opt.zero_grad();
            out.loss.backward();
            prof.lap("backward");
            if cfg.optim.clip_grad > 0.0 {
                opt.clip_grad_per_param(cfg.optim.clip_grad);
            }
            opt.cancel_grad(&method.frozen(&ctx));
            opt.step(lr, wd);
            prof.lap("clip + optimiser");
            method.after_step(&ctx);
            step += 1;
            batch_idx += 1;
            window_images += bs;
            let reset = method.at_step(step, &train, &prep, cfg.train.seed)?;
            opt.reset_state(&reset);
            prof.lap("EMA + centre");
            pb.inc(1);

            if step > sched.warmup_steps {
                let stat = |name: &str| out.stats.iter().find(|s| s.0 == name).map(|s| s.1);
                if let (Some(m), Some(s)) = (stat("h_marginal_rel"), stat("h_sample_rel")) {
                    let e = monitor::Entropies { marginal_rel: m, sample_rel: s };
                    if let Some(c) = monitor.observe(e) {
                        pb.suspend(|| eprintln!("{}", c.message(step, monitor.patience(), e, method.collapse_hint(c))));
                        let mut m = Map::new();
                        m.insert("step".into(), json!(step));
                        m.insert("event".into(), json!(c.event()));
                        log.write(m)?;
                    }
                }
            }
            if step % cfg.train.log_every == 0 || batch_idx == steps_per_epoch || step == total {
                images_per_second = window_images as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
                let mut m = Map::new();
                m.insert("step".into(), json!(step));
                m.insert("epoch".into(), json!(epoch as f64 + batch_idx as f64 / steps_per_epoch as f64));
                m.insert("loss".into(), json!(loss_v));
                for (n, t) in &out.terms {
                    m.insert(n.to_string(), json!(t.double_value(&[])));
                }
                m.insert("lr".into(), json!(lr));
                m.insert("weight_decay".into(), json!(wd));
                m.insert("teacher_momentum".into(), json!(ctx.teacher_momentum));
                m.insert("images_per_second".into(), json!(images_per_second));
                m.insert("seconds".into(), json!(seconds(&started)));
                for (n, v) in &out.stats {
                    m.insert(n.to_string(), json!(v));
                }
                log.write(m)?;
                pb.set_message(format!("epoch {}/{epochs_total} loss {loss_v:.4} {images_per_second:.0} img/s", epoch + 1));
                window_images = 0;
                window_start = Instant::now();
            }
            let epoch_end_knn = batch_idx == steps_per_epoch && cfg.train.knn_every > 0 && (epoch + 1) % cfg.train.knn_every == 0;
            if cfg.train.knn_every_steps > 0 && step % cfg.train.knn_every_steps == 0 && step < total && !epoch_end_knn {
                evaluate(method.as_ref(), step, epoch as f64 + batch_idx as f64 / steps_per_epoch as f64, &mut log)?;
            }
            if step == total && batch_idx < steps_per_epoch {
                break; // the step budget ends the run inside this epoch
            }
            let stop_now = should_stop(step);
            prof.lap("logs");
            let periodic = cfg.train.checkpoint_every_steps > 0 && step % cfg.train.checkpoint_every_steps == 0;
            if (stop_now || periodic) && batch_idx < steps_per_epoch {
                last_ckpt = Some(save(method.as_ref(), &opt, &monitor, step, epoch, batch_idx, seconds(&started))?);
            }
            prof.lap("checkpoints");
            if stop_now && batch_idx < steps_per_epoch {
                pb.finish_and_clear();
                prof.report().inspect(|r| eprint!("{r}"));
                eprintln!("stopped at step {step} {STOPPED}");
                return Ok(None);
            }
        }
        if batch_idx < steps_per_epoch {
            save(method.as_ref(), &opt, &monitor, step, epoch, batch_idx, seconds(&started))?;
            break;
        }
        // end of epoch: GMM re-initialisation, checkpoint, optional kNN
        let reset = method.end_epoch(epoch, &train, &prep, cfg.train.seed)?;
        opt.reset_state(&reset);
        epoch += 1;
        skip = 0;
        // the evaluation comes before the checkpoint that closes the epoch: a crash before that
        // checkpoint redoes the epoch and its line (the log drops lines after the resumed step)
        let mut line = format!("epoch {epoch}/{epochs_total} done, step {step}, {images_per_second:.0} img/s");
        if cfg.train.knn_every > 0 && epoch % cfg.train.knn_every == 0 && step < total {
            let r = evaluate(method.as_ref(), step, epoch as f64, &mut log)?;
            line += &format!(", kNN-{} top-1 {:.2}", r.k, r.top1);
        }
        last_ckpt = Some(save(method.as_ref(), &opt, &monitor, step, epoch, 0, seconds(&started))?);
        if !opts.quiet {
            pb.suspend(|| eprintln!("{line}"));
        }
        prof.lap("epoch end (re-init, kNN)");
        let stop_now = should_stop(step);
        if stop_now && step < total {
            pb.finish_and_clear();
            prof.report().inspect(|r| eprint!("{r}"));
            eprintln!("stopped at step {step} {STOPPED}");
            return Ok(None);
        }
    }
    pb.finish_and_clear();
    prof.report().inspect(|r| eprint!("{r}"));
    let secs = seconds(&started);
    let r = knn_eval(method.as_ref(), cfg, &train, &test, &prep, device);
    if let Some(w) = untrained.and_then(|u| monitor::below_untrained(step, r.top1, u)) {
        eprintln!("{w}");
    }
    let result = RunResult {
        knn_top1: r.top1,
        knn_top5: r.top5,
        epochs: epochs_total,
        seconds: secs,
        steps: step,
        images_per_second: (step * bs) as f64 / secs.max(1e-9),
        peak_rss_mib: metrics::peak_rss_mib(),
    };
    let mut m = knn_line(step, step as f64 / steps_per_epoch as f64, &r);
    m.insert("final".into(), Value::Bool(true));
    log.write(m)?;
    crate::util::write_atomic(&dir.join("result.json"), serde_json::to_string_pretty(&result)?.as_bytes())?;
    Ok(Some(result))
}

/// The untrained backbone's kNN top-1 (train.knn_at_start): measured and logged as step 0 of a
/// new run, read back from the log when a run resumes.
fn untrained_knn(
    method: &dyn Method,
    cfg: &Config,
    data: (&Dataset, &Dataset),
    prep: &EvalPrep,
    device: Device,
    step: usize,
    log: &mut metrics::MetricsLog,
    dir: &Path,
) -> Result<Option<f64>> {
    if !cfg.train.knn_at_start {
        return Ok(None);
    }
    // a resumed run, or one restarted before its first checkpoint, has the line already
    let lines = metrics::read(&dir.join("metrics.jsonl")).unwrap_or_default();
    let logged = lines.iter().find(|l| l.get("untrained").is_some()).and_then(|l| l.get("knn_top1")).and_then(Value::as_f64);
    if logged.is_some() || step > 0 {
        return Ok(logged);
    }
    let r = knn_eval(method, cfg, data.0, data.1, prep, device);
    let mut m = knn_line(0, 0.0, &r);
    m.insert("untrained".into(), Value::Bool(true));
    log.write(m)?;
    Ok(Some(r.top1))
}

#[cfg(test)]
mod tests;
