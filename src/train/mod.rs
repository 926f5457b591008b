//! The training loop: data, schedules, optimiser, checkpoints, logs; the method supplies the loss.
pub mod amp;
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
pub mod source;
pub mod tensorboard;
pub mod trainer;

use crate::data::{self, DataSpec, Dataset, LoadOptions, Norm, Split};
use crate::eval::features::{backbone_features, labels, EvalPrep};
use crate::eval::knn::{knn_classify, KnnResult};
use crate::methods::Method;
use anyhow::{bail, Context, Result};
use config::Config;
use rundir::RunDir;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// Run-control options that are not part of the recipe (changing them does not change the run).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop (with a checkpoint) once this many steps are done in total; re-running resumes.
    pub max_steps: Option<usize>,
    /// No progress bar or epoch lines.
    pub quiet: bool,
    /// A measurement (`--budget`'s probe): its stop at `max_steps` is not reported.
    pub probe: bool,
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

/// Loads the pre-training images (STL-10 may add its unlabeled split) and applies data.limit.
pub fn load_train_data(cfg: &Config) -> Result<(DataSpec, Dataset)> {
    let spec: DataSpec = cfg.data.spec.parse().map_err(|e| anyhow::anyhow!("data.spec: {e}"))?;
    let opts = LoadOptions { skip_corrupt: cfg.data.skip_corrupt };
    let mut ds = data::load(&spec, Split::Train, &opts)?;
    if cfg.data.use_unlabeled {
        let extra = data::load(&spec, Split::Unlabeled, &opts)?;
        ds.append(extra).map_err(|e| anyhow::anyhow!("data.use_unlabeled: {e}"))?;
    }
    ds.shuffle_buffer = cfg.data.shuffle_buffer;
    match (cfg.data.limit, cfg.data.limit_seed) {
        (0, _) => {}
        (n, None) => ds.truncate_noting(n, &format!("data.limit = {n}"), "data.limit_seed = 0 takes a seeded random subset"),
        (n, Some(seed)) => ds.subset(n, seed),
    }
    Ok((spec, ds))
}

/// The images a run's kNN evaluations read: its training images (as [`load_train_data`] gives
/// them) as the memory bank, and the test split.
pub fn load_knn_data(cfg: &Config) -> Result<(DataSpec, Dataset, Dataset)> {
    let (spec, train) = load_train_data(cfg)?;
    let test = data::load(&spec, Split::Test, &LoadOptions { skip_corrupt: cfg.data.skip_corrupt })?;
    Ok((spec, train, test))
}

/// Evaluation preprocessing of a run.
pub fn eval_prep(cfg: &Config, norm: Norm) -> EvalPrep {
    let size = if cfg.eval.image_size > 0 { cfg.eval.image_size } else { cfg.augment.global_size };
    EvalPrep { size, channels: cfg.augment.channels, norm, reduced_decode: cfg.augment.reduced_decode }
}

/// kNN of `method`'s evaluation backbone, train split against test split.
pub fn knn_eval(method: &dyn Method, cfg: &Config, train: &Dataset, test: &Dataset, prep: &EvalPrep, device: Device) -> Result<KnnResult> {
    let b = method.eval_backbone();
    let ftr = backbone_features(b, train, prep, cfg.eval.batch_size, device)?;
    let fte = backbone_features(b, test, prep, cfg.eval.batch_size, device)?;
    let classes = train.num_classes.max(test.num_classes) as i64;
    Ok(knn_classify(&ftr, &labels(train, device), &fte, &labels(test, device), classes, cfg.eval.k, cfg.eval.temperature))
}

/// All tensors of a checkpoint: student.*, teacher.*, optim.*, state.*.
pub(crate) fn checkpoint_tensors(method: &dyn Method, opt: &optim::Optimizer) -> Vec<(String, Tensor)> {
    let mut t: Vec<(String, Tensor)> = method.student().variables().into_iter().map(|(k, v)| (format!("student.{k}"), v)).collect();
    if let Some(tv) = method.teacher() {
        t.extend(tv.variables().into_iter().map(|(k, v)| (format!("teacher.{k}"), v)));
    }
    t.extend(opt.state().into_iter().map(|(k, v)| (format!("optim.{k}"), v)));
    t.extend(method.state().into_iter().map(|(k, v)| (format!("state.{k}"), v)));
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
    method.load_state(&checkpoint::with_prefix(tensors, "state"))
}

/// Loads a finished or running run (directory or checkpoint file): its config and method.
pub fn load_run(path: &Path, device: Device) -> Result<(Config, Box<dyn Method>)> {
    let run = RunDir::of(path);
    let (tensors, ckpt) = if path.is_dir() {
        let Some((_, tensors, ckpt)) = run.latest_checkpoint()? else { bail!("{}: no checkpoint in this run directory", path.display()) };
        (tensors, ckpt)
    } else {
        let ckpt = checkpoint_file(path)?;
        (checkpoint::load(&ckpt)?.1, ckpt)
    };
    let cfg = run.config()?;
    let mut method = cfg.method.build(&cfg.shared(), device)?;
    restore(method.as_mut(), None, &tensors, &ckpt)?;
    Ok((cfg, method))
}

/// Seconds a collective may wait for the other ranks: `SVIB_DIST_TIMEOUT` (default 1800).
fn dist_timeout() -> Result<u64> {
    match std::env::var("SVIB_DIST_TIMEOUT") {
        Err(_) => Ok(1800),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(s) if (10..=604_800).contains(&s) => Ok(s),
            _ => bail!("SVIB_DIST_TIMEOUT={v}: expected whole seconds from 10 to 604800 (a week)"),
        },
    }
}

/// A checkpoint named by a file of its run: `ckpt-N.safetensors`, or its description `ckpt-N.json`.
fn checkpoint_file(path: &Path) -> Result<PathBuf> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => Ok(path.to_path_buf()),
        Some("json") if path.with_extension("safetensors").is_file() => Ok(path.with_extension("safetensors")),
        _ => bail!("{}: expected a run directory or one of its checkpoints (ckpt-N.safetensors)", path.display()),
    }
}

/// The same values with NHWC strides (a 4-D tensor viewed as NCHW), which libtorch's
/// convolutions take as a request for their channels-last kernels.
pub fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Pre-trains as `cfg` says into `dir`, resuming from its newest checkpoint when there is one;
/// `None` when stopped early (with a checkpoint, to be resumed).
pub fn run(cfg: &Config, dir: &Path, opts: &RunOptions) -> Result<Option<RunResult>> {
    join_group(cfg)?;
    let (existed, fresh) = (dir.exists(), !dir.join(RunDir::CONFIG).exists());
    let opened = trainer::Trainer::open(cfg, RunDir::new(dir), opts).inspect_err(|_| {
        if fresh {
            rundir::forget_unstarted(dir, existed);
        }
    })?;
    match opened {
        trainer::Opened::Done(r) => Ok(Some(r)),
        trainer::Opened::Ready(t) => t.fit(),
    }
}

/// In a launcher's environment (torchrun, or SLURM with 2 or more tasks): joins the process
/// group, once per process (every method trains data-parallel): over NCCL on the local rank's GPU
/// when the run trains on CUDA, else over Gloo.
fn join_group(cfg: &Config) -> Result<()> {
    let Some(env) = crate::dist::DistEnv::from_env()? else { return Ok(()) };
    crate::dist::set_sync_batch_norm(cfg.model.sync_bn);
    if crate::dist::joined() {
        return Ok(());
    }
    // `cuda`/`auto` now mean this rank's GPU (crate::device::parse)
    crate::device::set_local_rank(env.local_rank);
    let backend = match crate::device::parse_as(&cfg.train.device, "train.device")? {
        Device::Cuda(device) => crate::dist::Backend::Nccl { device },
        _ => crate::dist::Backend::Gloo,
    };
    if matches!(backend, crate::dist::Backend::Nccl { .. }) && env.world_size == 1 && !crate::dist::nccl::built_in() {
        eprintln!("note: this svib binary was built without NCCL's headers: the one process trains without a process group");
        return Ok(());
    }
    let timeout = std::time::Duration::from_secs(dist_timeout()?);
    crate::dist::set_global(crate::dist::Group::join_with(&env, timeout, backend)?)
}

#[cfg(test)]
mod tests;
