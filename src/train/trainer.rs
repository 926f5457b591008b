//! The training loop as a `Trainer`: `fit` runs epochs, `train_epoch` feeds batches to `step`
//! (one optimiser step) and to the step's bookkeeping (monitor, metrics, kNN, checkpoints),
//! `end_epoch` closes an epoch. The method supplies the networks and the loss; the trainer
//! knows no method by name.
use super::amp::Amp;
use super::config::Config;
use super::metrics::{Sinks, StepRecord};
use super::monitor::{self, CollapseMonitor, Entropies};
use super::rundir::{RunDir, RunLock};
use super::schedule::Schedules;
use super::{channels_last, checkpoint, eval_prep, knn_eval, load_knn_data, optim, profile, restore, RunOptions, RunResult};
use crate::augment::loader::{CropBatch, Loader, LoaderOptions};
use crate::data::{Dataset, Norm};
use crate::eval::features::EvalPrep;
use crate::eval::knn::KnnResult;
use crate::methods::{LossOutput, Method, StepCtx};
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Tensor};

const STOPPED: &str = "with a checkpoint; run the same command again to resume";

/// Where training stands: steps done in total, the epoch in progress and its batches done.
#[derive(Clone, Copy, Debug, Default)]
struct Position {
    step: usize,
    epoch: usize,
    batch: usize,
}

/// What ended a pass over an epoch's batches.
enum EpochEnd {
    /// Every batch of the epoch is done.
    Complete,
    /// The step budget ended inside the epoch.
    Budget,
    /// `--max-steps` or Ctrl-C: checkpointed, to be resumed.
    Stopped,
}

/// Images per second over the batches since the last metrics line.
struct Window {
    images: usize,
    start: Instant,
    per_second: f64,
}

/// The data of a run: training images (shared with the loader threads), test images, and how
/// both are normalised and evaluated.
struct RunData {
    train: Arc<Dataset>,
    test: Dataset,
    norm: Norm,
    prep: EvalPrep,
    steps_per_epoch: usize,
}

pub struct Trainer<'a> {
    cfg: &'a Config,
    run: RunDir,
    opts: &'a RunOptions,
    device: Device,
    data: RunData,
    sched: Schedules,
    epochs_total: usize,
    method: Box<dyn Method>,
    opt: optim::Optimizer,
    amp: Amp,
    /// train.channels_last where it is safe (ArchConfig::cpu_channels_last_safe).
    channels_last: bool,
    monitor: CollapseMonitor,
    at: Position,
    seconds_before: f64,
    started: Instant,
    sinks: Sinks,
    untrained: Option<f64>,
    last_ckpt: Option<PathBuf>,
    window: Window,
    prof: profile::Profile,
    pb: ProgressBar,
    /// (rank, processes) of a data-parallel run; (0, 1) otherwise.
    world: (usize, usize),
    /// Images per step on this process: train.batch_size, or the run's global batch split
    /// over this run's processes when it resumes on another number of them.
    rank_batch: usize,
    _lock: Option<RunLock>,
}

/// A run directory opened for training: either already finished or ready to go on.
pub enum Opened<'a> {
    Done(RunResult),
    Ready(Box<Trainer<'a>>),
}

impl<'a> Trainer<'a> {
    /// Prepares `dir` (lock, stale files, config), the data, the method and the optimiser, and
    /// resumes from the newest checkpoint when there is one.
    pub fn open(cfg: &'a Config, run: RunDir, opts: &'a RunOptions) -> Result<Opened<'a>> {
        // Ctrl-C from here on (the kNN at step 0 included) stops after the next step with a checkpoint
        install_interrupt_handler();
        let device = crate::device::parse_as(&cfg.train.device, "train.device")?;
        let memory = crate::util::physical_memory().filter(|_| device == tch::Device::Cpu);
        if let Some(mem) = memory {
            super::limits::check_memory(cfg, mem)?;
        }
        // (rank, processes): fixed for the run (the group is joined before the trainer opens)
        let world = crate::dist::world();
        let rank = world.0;
        // rank 0 alone writes the run folder; the others read its checkpoints once it is ready
        let lock = if rank == 0 { Some(run.open_for_writing(cfg)?) } else { None };
        crate::dist::with_global(|g| g.barrier()).transpose()?;
        let ckpt = run.latest_checkpoint().map_err(|e| anyhow::anyhow!("{e:#}; restore the checkpoint files, or move them away to start the run again"))?;
        let rank_batch = rank_batch(cfg, ckpt.as_ref().map(|c| &c.0), world)?;
        if let Some(mem) = memory.filter(|_| rank_batch != cfg.train.batch_size) {
            let mut per_rank = cfg.clone();
            per_rank.train.batch_size = rank_batch;
            super::limits::check_memory(&per_rank, mem)?;
        }
        if let Some(w) = crate::device::bf16_warning(cfg.model.bf16, device).filter(|_| rank == 0) {
            eprintln!("{w}");
        }
        let amp = Amp::new(cfg.train.precision, device)?;
        if device.is_cuda() && cfg.model.name.starts_with("resnet") {
            // cuDNN picks the fastest convolution algorithms for the (fixed) crop shapes
            tch::Cuda::cudnn_set_benchmark(true);
        }
        let global_batch = rank_batch * world.1;
        let data = RunData::load(cfg, global_batch)?;
        let sched = Schedules::with_global_batch(cfg, data.steps_per_epoch, global_batch);
        tch::manual_seed(cfg.train.seed as i64);
        let method = cfg.method.build(&cfg.shared(), device)?;
        let channels_last = cfg.train.channels_last && (device.is_cuda() || cfg.model.cpu_channels_last_safe());
        if cfg.train.channels_last && !channels_last && rank == 0 {
            eprintln!("warning: train.channels_last ignored: model.width = {} gives 1x1 stride-2 convolutions with fewer than 16 input channels, whose channels-last backward in oneDNN hangs or miscomputes on CPUs (oneDNN#6035); training in NCHW", cfg.model.width);
        }
        if channels_last {
            to_channels_last(method.as_ref());
        }
        let named: Vec<(String, Tensor)> = method.student().variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        let mut opt = optim::Optimizer::new(&cfg.optim, named);
        opt.set_lr_scale(&method.lr_scales());
        let t = &cfg.train;
        let monitor = CollapseMonitor::new(t.collapse_threshold, t.collapse_mi_threshold, t.collapse_patience);
        let epochs_total = sched.total_steps.div_ceil(data.steps_per_epoch);
        let pb = if opts.quiet || rank > 0 { ProgressBar::hidden() } else { ProgressBar::new(sched.total_steps as u64) };
        pb.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}<{eta_precise}] {bar:30} {pos}/{len} {msg}").expect("valid template"));
        let window = Window { images: 0, start: Instant::now(), per_second: 0.0 };
        let prof = profile::Profile::from_env(device);
        let (at, untrained, last_ckpt, started) = (Position::default(), None, None, Instant::now());
        let mut tr = Trainer {
            cfg,
            run,
            opts,
            device,
            data,
            sched,
            epochs_total,
            method,
            opt,
            amp,
            channels_last,
            monitor,
            at,
            seconds_before: 0.0,
            started,
            sinks: Sinks::default(),
            untrained,
            last_ckpt,
            window,
            prof,
            pb,
            world,
            rank_batch,
            _lock: lock,
        };
        if let Some(result) = tr.resume(ckpt)? {
            return Ok(Opened::Done(result));
        }
        Ok(Opened::Ready(Box::new(tr)))
    }

    /// Restores the newest checkpoint (or initialises a new run from data), reopens the
    /// metrics and measures the untrained backbone; returns the result of a finished run.
    fn resume(&mut self, ckpt: Option<checkpoint::Loaded>) -> Result<Option<RunResult>> {
        let total = self.sched.total_steps;
        match ckpt {
            Some((meta, tensors, path)) => {
                restore(self.method.as_mut(), Some(&mut self.opt), &tensors, &path)?;
                self.amp.load_state(&checkpoint::with_prefix(&tensors, "amp").into_iter().collect());
                self.at = Position { step: meta.step, epoch: meta.epoch, batch: meta.batch_in_epoch };
                self.seconds_before = meta.seconds;
                self.monitor.restore(meta.monitor.clone());
                self.last_ckpt = Some(path);
                if !self.opts.quiet && self.at.step < total && self.world.0 == 0 {
                    eprintln!("resuming {} at step {} (epoch {}, batch {})", self.run.path().display(), meta.step, meta.epoch + 1, meta.batch_in_epoch);
                }
            }
            None => self.method.init_from_data(&self.data.train, &self.data.prep, self.cfg.train.seed)?,
        }
        if self.at.step >= total {
            if let Some(r) = self.run.read_result() {
                return Ok(Some(r));
            }
        }
        self.sinks = if self.world.0 == 0 { Sinks::open(&self.run, self.at.step, self.cfg.train.tensorboard)? } else { Sinks::off() };
        self.broadcast_weights()?;
        self.untrained = self.untrained_knn()?;
        self.pb.set_position(self.at.step as u64);
        self.started = Instant::now();
        self.window.start = Instant::now();
        Ok(None)
    }

    /// Trains to the end of the budget; `None` when stopped early (with a checkpoint).
    pub fn fit(mut self) -> Result<Option<RunResult>> {
        // --max-steps counts steps in total: a run already there trains no further
        if self.at_max_steps() && self.at.step < self.sched.total_steps {
            self.stopped();
            return Ok(None);
        }
        while self.at.step < self.sched.total_steps {
            match self.train_epoch()? {
                EpochEnd::Complete => {
                    if !self.end_epoch()? {
                        return Ok(None);
                    }
                }
                EpochEnd::Budget => {
                    self.save()?;
                    break;
                }
                EpochEnd::Stopped => return Ok(None),
            }
        }
        self.finish().map(Some)
    }

    /// The remaining batches of the epoch in progress.
    fn train_epoch(&mut self) -> Result<EpochEnd> {
        let c = self.cfg;
        let (bs, spe) = (self.rank_batch, self.data.steps_per_epoch);
        let opts = LoaderOptions { prefetch: c.train.prefetch, pinned: self.device.is_cuda(), shard: self.world, threads: c.train.loader_threads };
        let loader = Loader::new(self.data.train.clone(), c.augment.clone(), self.data.norm.clone(), bs, c.train.seed, self.at.epoch as u64, self.at.batch, opts);
        self.prof.lap("other");
        for batch in loader {
            self.prof.lap("waiting for the loader");
            let (out, loss) = self.step(&batch?)?;
            self.after_step(&out, loss)?;
            if self.at.step == self.sched.total_steps && self.at.batch < spe {
                return Ok(EpochEnd::Budget);
            }
            let stop = self.should_stop();
            self.prof.lap("logs");
            let periodic = c.train.checkpoint_every_steps > 0 && self.at.step.is_multiple_of(c.train.checkpoint_every_steps);
            if (stop || periodic) && self.at.batch < spe {
                self.save()?;
            }
            self.prof.lap("checkpoints");
            if stop && self.at.batch < spe {
                self.stopped();
                return Ok(EpochEnd::Stopped);
            }
        }
        Ok(if self.at.batch < spe { EpochEnd::Budget } else { EpochEnd::Complete })
    }

    /// One optimiser step on `batch`: forward, loss, backward, update, the method's hooks.
    fn step(&mut self, batch: &CropBatch) -> Result<(LossOutput, f64)> {
        let ctx = self.ctx();
        let step = self.at.step;
        // each rank its own stream (drop-path masks), as DINO seeds seed + rank; rank 0's is
        // the one-process stream
        tch::manual_seed((self.cfg.train.seed as i64 * 1_000_003 + step as i64) ^ ((self.world.0 as i64) << 48));
        let cl = self.channels_last;
        let views: Vec<Tensor> = batch.views.iter().map(|v| to_device(v, self.device)).map(|v| if cl { channels_last(&v) } else { v }).collect();
        self.prof.lap("host to device");
        let out = self.amp.forward(|| self.method.loss(&views, &ctx))?;
        let loss = if injected_nan(step + 1) { f64::NAN } else { crate::dist::mean_over_ranks(&out.loss).double_value(&[]) };
        self.prof.lap("forward + loss");
        if !loss.is_finite() {
            return Err(self.diverged(&out, loss));
        }
        self.opt.zero_grad();
        self.amp.scale(&out.loss).backward();
        self.average_gradients()?;
        self.prof.lap("backward");
        // fp16: a step whose gradients overflowed is skipped (the scale is lowered), as GradScaler
        if self.amp.unscale(&self.opt)? {
            if self.cfg.optim.clip_grad > 0.0 {
                self.opt.clip_grad_per_param(self.cfg.optim.clip_grad);
            }
            self.opt.cancel_grad(&self.method.frozen(&ctx));
            self.opt.step(self.sched.lr(step), self.sched.weight_decay(step))?;
        }
        self.prof.lap("clip + optimiser");
        self.method.after_step(&ctx);
        self.at.step += 1;
        self.at.batch += 1;
        self.window.images += self.global_batch();
        // the one place BatchNorm running statistics change (the forward just done): every rank
        // leaves the step with rank 0's, for the re-initialisation, evaluations and checkpoints
        self.broadcast_buffers()?;
        let reset = self.method.at_step(self.at.step, &self.data.train, &self.data.prep, self.cfg.train.seed)?;
        self.reinitialised(&reset)?;
        self.prof.lap("EMA + centre");
        self.pb.inc(1);
        Ok((out, loss))
    }

    /// After a step: the collapse monitor, the metrics line and the periodic kNN.
    fn after_step(&mut self, out: &LossOutput, loss: f64) -> Result<()> {
        let (step, spe) = (self.at.step, self.data.steps_per_epoch);
        if step > self.sched.warmup_steps {
            if let Some(e) = out.entropies {
                self.observe(e)?;
            }
        }
        let t = &self.cfg.train;
        if step % t.log_every == 0 || self.at.batch == spe || step == self.sched.total_steps {
            let record = self.record(out, loss);
            self.sinks.step(&record)?;
            let msg = format!("epoch {}/{} loss {loss:.4} {:.0} img/s", self.at.epoch + 1, self.epochs_total, record.images_per_second);
            self.pb.set_message(msg);
            self.window.images = 0;
            self.window.start = Instant::now();
        }
        let epoch_end_knn = self.at.batch == spe && t.knn_every > 0 && (self.at.epoch + 1).is_multiple_of(t.knn_every);
        if t.knn_every_steps > 0 && step % t.knn_every_steps == 0 && step < self.sched.total_steps && !epoch_end_knn {
            self.evaluate(self.epoch_fraction())?;
        }
        Ok(())
    }

    /// Closes an epoch: the method's epoch hook, the optional kNN, the checkpoint. False when
    /// the run stops here (to be resumed).
    fn end_epoch(&mut self) -> Result<bool> {
        let reset = self.method.end_epoch(self.at.epoch, &self.data.train, &self.data.prep, self.cfg.train.seed)?;
        self.reinitialised(&reset)?;
        self.at.epoch += 1;
        self.at.batch = 0;
        let (epoch, step) = (self.at.epoch, self.at.step);
        // the evaluation comes before the checkpoint that closes the epoch: a crash before that
        // checkpoint redoes the epoch and its line (the log drops lines after the resumed step)
        let mut line = format!("epoch {epoch}/{} done, step {step}, {:.0} img/s", self.epochs_total, self.window.per_second);
        let k = self.cfg.train.knn_every;
        if k > 0 && epoch % k == 0 && step < self.sched.total_steps {
            let r = self.evaluate(epoch as f64)?;
            line += &format!(", kNN-{} top-1 {:.2}", r.k, r.top1);
        }
        self.save()?;
        if !self.opts.quiet {
            self.say(&line);
        }
        self.prof.lap("epoch end (re-init, kNN)");
        if self.should_stop() && step < self.sched.total_steps {
            self.stopped();
            return Ok(false);
        }
        Ok(true)
    }

    /// The final evaluation, its metrics line and result.json.
    fn finish(mut self) -> Result<RunResult> {
        self.pb.finish_and_clear();
        self.prof.report().inspect(|r| eprint!("{r}"));
        let secs = self.seconds();
        let r = self.knn()?;
        if let Some(w) = self.untrained.and_then(|u| monitor::below_untrained(self.at.step, r.top1, u)) {
            self.say(&w);
        }
        let step = self.at.step;
        let result = RunResult {
            knn_top1: r.top1,
            knn_top5: r.top5,
            epochs: self.epochs_total,
            seconds: secs,
            steps: step,
            images_per_second: (step * self.global_batch()) as f64 / secs.max(1e-9),
            peak_rss_mib: crate::util::peak_rss_mib(),
        };
        self.sinks.knn(step, step as f64 / self.data.steps_per_epoch as f64, &r, Some("final"))?;
        if self.world.0 == 0 {
            self.run.write_result(&result)?;
        }
        Ok(result)
    }

    /// A line on stderr from rank 0 (the other ranks of a distributed run say nothing but
    /// their errors, as DINO's `setup_for_distributed`), around the progress bar.
    fn say(&self, line: &str) {
        if self.world.0 == 0 {
            self.pb.suspend(|| eprintln!("{line}"));
        }
    }

    /// Images per step over all ranks.
    fn global_batch(&self) -> usize {
        self.rank_batch * self.world.1
    }

    fn ctx(&self) -> StepCtx {
        let (s, step) = (&self.sched, self.at.step);
        let teacher_momentum = s.teacher_momentum(step).unwrap_or(1.0);
        StepCtx { step, total_steps: s.total_steps, epoch: self.at.epoch, beta: s.beta(step), teacher_momentum }
    }

    fn epoch_fraction(&self) -> f64 {
        self.at.epoch as f64 + self.at.batch as f64 / self.data.steps_per_epoch as f64
    }

    fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }

    /// Whether to checkpoint and stop after this step: the step limit, or Ctrl-C on any rank (the
    /// ranks agree through one all-reduce, so that all stop after the same step).
    fn should_stop(&self) -> bool {
        let here = interrupted();
        let any = if self.world.1 > 1 { crate::dist::mean_over_ranks(&Tensor::from(here as u8 as f32)).double_value(&[]) > 0.0 } else { here };
        self.at_max_steps() || any
    }

    /// Whether `--max-steps` (steps in total) is reached.
    fn at_max_steps(&self) -> bool {
        self.opts.max_steps.is_some_and(|m| self.at.step >= m)
    }

    fn stopped(&mut self) {
        self.pb.finish_and_clear();
        self.prof.report().inspect(|r| eprint!("{r}"));
        if !self.opts.probe {
            self.say(&format!("stopped at step {} {STOPPED}", self.at.step));
        }
    }

    /// The metrics of the step just done (read from the tensors only on logging steps).
    fn record(&mut self, out: &LossOutput, loss: f64) -> StepRecord {
        self.window.per_second = self.window.images as f64 / self.window.start.elapsed().as_secs_f64().max(1e-9);
        let step = self.at.step - 1; // the schedules' values of the step just taken
        StepRecord {
            step: self.at.step,
            epoch: self.epoch_fraction(),
            loss,
            // the global batch's terms (each rank's own otherwise)
            terms: out.terms.iter().map(|(n, t)| (*n, crate::dist::mean_over_ranks(t).double_value(&[]))).collect(),
            lr: self.sched.lr(step),
            weight_decay: self.sched.weight_decay(step),
            teacher_momentum: self.sched.teacher_momentum(step),
            images_per_second: self.window.per_second,
            seconds: self.seconds(),
            stats: out.stats.iter().cloned().chain(self.amp.loss_scale().map(|s| ("loss_scale", s))).collect(),
        }
    }

    /// Feeds the collapse monitor; warns once per kind of collapse and logs it as an event.
    fn observe(&mut self, e: Entropies) -> Result<()> {
        if let Some(c) = self.monitor.observe(e) {
            let msg = c.message(self.at.step, self.monitor.patience(), e, self.method.collapse_hint(c));
            self.say(&msg);
            self.sinks.event(self.at.step, c.event())?;
        }
        Ok(())
    }

    fn knn(&self) -> Result<KnnResult> {
        knn_eval(self.method.as_ref(), self.cfg, &self.data.train, &self.data.test, &self.data.prep, self.device)
    }

    /// A kNN evaluation, logged, with the learning-curve guard's warning.
    fn evaluate(&mut self, epoch: f64) -> Result<KnnResult> {
        let r = self.knn()?;
        self.sinks.knn(self.at.step, epoch, &r, None)?;
        if let Some(w) = self.untrained.and_then(|u| monitor::below_untrained(self.at.step, r.top1, u)) {
            self.say(&w);
        }
        Ok(r)
    }

    /// The untrained backbone's kNN top-1 (train.knn_at_start): measured and logged as step 0
    /// of a new run, read back from the log when a run resumes.
    fn untrained_knn(&mut self) -> Result<Option<f64>> {
        if !self.cfg.train.knn_at_start {
            return Ok(None);
        }
        // a resumed run, or one restarted before its first checkpoint, has the line already
        let logged = self.run.untrained_knn();
        if logged.is_some() || self.at.step > 0 {
            return Ok(logged);
        }
        let r = self.knn()?;
        self.sinks.knn(0, 0.0, &r, Some("untrained"))?;
        Ok(Some(r.top1))
    }

    /// After the method re-initialised the variables `reset` (SVIB's means): their optimiser
    /// state is reset and, in a distributed run, rank 0's values go to every rank (each rank
    /// drew the same images but embedded them with its own teacher BatchNorm statistics).
    fn reinitialised(&mut self, reset: &[String]) -> Result<()> {
        if !reset.is_empty() {
            self.broadcast_where(|name| reset.iter().any(|r| name.ends_with(r.as_str())))?;
        }
        self.opt.reset_state(reset);
        Ok(())
    }

    /// Distributed: every rank starts from rank 0's weights (student and teacher).
    fn broadcast_weights(&self) -> Result<()> {
        self.broadcast_where(|_| true)
    }

    /// Distributed: rank 0's BatchNorm running statistics to every rank after each step, as
    /// DDP's `broadcast_buffers` does before the next forward (the batch statistics are per rank
    /// unless model.sync_bn).
    fn broadcast_buffers(&self) -> Result<()> {
        self.broadcast_where(|name| name.ends_with("running_mean") || name.ends_with("running_var"))
    }

    /// Rank 0's student and teacher variables whose name passes `keep`, in name order.
    fn broadcast_where(&self, keep: impl Fn(&str) -> bool) -> Result<()> {
        crate::dist::with_global(|g| {
            let mut named: Vec<(String, Tensor)> = self.method.student().variables().into_iter().map(|(k, v)| (format!("s.{k}"), v)).collect();
            if let Some(t) = self.method.teacher() {
                named.extend(t.variables().into_iter().map(|(k, v)| (format!("t.{k}"), v)));
            }
            named.retain(|(k, _)| keep(k));
            named.sort_by(|a, b| a.0.cmp(&b.0));
            if named.is_empty() {
                return Ok(());
            }
            g.broadcast(&named.iter().map(|(_, t)| t).collect::<Vec<_>>(), 0)
        })
        .transpose()
        .map(drop)
    }

    /// Distributed: the gradients averaged over the ranks (one flat bucket per dtype and device),
    /// as DDP does after backward.
    fn average_gradients(&self) -> Result<()> {
        crate::dist::with_global(|g| {
            let grads: Vec<Tensor> = self.opt.grads();
            if grads.is_empty() {
                return Ok(());
            }
            let grads: Vec<&Tensor> = grads.iter().collect();
            let flat = crate::dist::flatten(&grads);
            g.all_reduce_mean(&[&flat])?;
            crate::dist::unflatten_into(&grads, &flat);
            Ok(())
        })
        .transpose()
        .map(drop)
    }

    /// Writes a checkpoint of where training stands (rank 0 of a distributed run).
    fn save(&mut self) -> Result<()> {
        if self.world.0 > 0 {
            return Ok(());
        }
        let meta = checkpoint::Meta {
            step: self.at.step,
            epoch: self.at.epoch,
            batch_in_epoch: self.at.batch,
            seconds: self.seconds(),
            svib_version: env!("CARGO_PKG_VERSION").into(),
            rng: "derived from (train.seed, epoch, step)".into(),
            monitor: self.monitor.state().clone(),
            world_size: self.world.1,
            global_batch: Some(self.global_batch()),
        };
        let mut tensors = super::checkpoint_tensors(self.method.as_ref(), &self.opt);
        tensors.extend(self.amp.state().into_iter().map(|(k, v)| (format!("amp.{k}"), v)));
        let path = self.run.save_checkpoint(&meta, &tensors, self.cfg.train.keep_checkpoints).map_err(|e| {
            // diverged without a non-finite loss (e.g. a BatchNorm buffer overflowed): marked for the experiment runners
            if let Some(nf) = e.downcast_ref::<checkpoint::NonFinite>() {
                let _ = self.run.mark_diverged(&nf.to_string());
                return anyhow::anyhow!("{nf}; lower optim.lr and start a new run");
            }
            e
        })?;
        self.last_ckpt = Some(path);
        Ok(())
    }

    /// The error of a non-finite loss, with the diverged marker written.
    fn diverged(&self, out: &LossOutput, loss: f64) -> anyhow::Error {
        let bad: Vec<String> = out.terms.iter().map(|(n, t)| (n, t.double_value(&[]))).filter(|(_, v)| !v.is_finite()).map(|(n, v)| format!("{n} = {v}")).collect();
        let keep = self.last_ckpt.as_ref().map_or("No checkpoint was written before it".to_string(), |p| format!("The last good checkpoint is {}", p.display()));
        let what = if bad.is_empty() { format!("total = {loss}") } else { bad.join(", ") };
        let msg = format!("step {} (epoch {}): the loss is not finite ({what})", self.at.step + 1, self.at.epoch + 1);
        if let Err(e) = self.run.mark_diverged(&msg) {
            return e;
        }
        anyhow::anyhow!("{msg}; stopped. {keep}; lower optim.lr or raise gmm.sigma_* and start a new run")
    }
}

/// The batch of each process: train.batch_size, except where a run resumes on another number
/// of processes than wrote its checkpoint: then the run's global batch, split evenly, so that
/// every step takes the same images in the same order and the lr rule stays (exact with
/// model.sync_bn or without BatchNorm, up to the order of float sums).
fn rank_batch(cfg: &Config, ckpt: Option<&checkpoint::Meta>, world: (usize, usize)) -> Result<usize> {
    let Some(meta) = ckpt else { return Ok(cfg.train.batch_size) };
    let global = meta.global_batch.unwrap_or(cfg.train.batch_size * meta.world_size);
    if global == cfg.train.batch_size * world.1 {
        return Ok(cfg.train.batch_size);
    }
    if global % world.1 != 0 {
        bail!("train.batch_size: the run was started with {} process(es) and {global} images per step, which {} processes cannot share evenly; resume with a number of processes that divides {global}", meta.world_size, world.1);
    }
    if world.0 == 0 {
        eprintln!("note: resuming a run of {} process(es) with {}: {} images per process keep its {global} images per step", meta.world_size, world.1, global / world.1);
    }
    Ok(global / world.1)
}

impl RunData {
    fn load(cfg: &Config, global_batch: usize) -> Result<RunData> {
        let (spec, train, test) = load_knn_data(cfg)?;
        // every run ends with a kNN evaluation: unlabelled images fail here, not after training
        train.require_labels(&format!("{spec} (train)"))?;
        test.require_labels(&format!("{spec} (test)"))?;
        let bs = global_batch;
        if train.len() < bs {
            bail!("train.batch_size: {bs} images per step (over all processes) is more than the {} training images", train.len());
        }
        let norm = Norm::for_dataset(&spec, &train);
        let prep = eval_prep(cfg, norm.clone());
        let steps_per_epoch = train.len() / bs;
        Ok(RunData { train: Arc::new(train), test, norm, prep, steps_per_epoch })
    }
}

/// 4-D variables of the method's networks with NHWC strides.
/// A batch tensor on `device`: on CUDA copied without blocking from the pinned host memory the
/// loader wrote it to, so the copy overlaps the work already queued.
fn to_device(v: &Tensor, device: Device) -> Tensor {
    v.to_device_(device, v.kind(), device.is_cuda(), false)
}

fn to_channels_last(method: &dyn Method) {
    for vs in [Some(method.student()), method.teacher()].into_iter().flatten() {
        for (_, mut v) in vs.variables() {
            if v.dim() == 4 {
                tch::no_grad(|| v.set_data(&channels_last(&v)));
            }
        }
    }
}

/// Fault injection for the tests of divergence handling: `SVIB_INJECT_NAN_AT_STEP=N` makes the
/// loss of step N (1-based, as in metrics.jsonl) NaN; every config value in range trains finitely.
fn injected_nan(step: usize) -> bool {
    static AT: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *AT.get_or_init(|| std::env::var("SVIB_INJECT_NAN_AT_STEP").ok().and_then(|v| v.parse().ok())) == Some(step)
}

/// Set by Ctrl-C: the loop checkpoints at the next step and stops.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C stopped this process's training (`svib train` then exits 130, as a shell
/// does for SIGINT, so that `svib train ... && svib knn ...` does not go on).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Installs the Ctrl-C handler that sets [`interrupted`] (once per process).
fn install_interrupt_handler() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                // a second Ctrl-C stops at once: _exit runs no exit handlers, which would tear
                // libtorch down under its running threads (a segfault)
                eprintln!("\nquit at once: the same command resumes from the newest checkpoint in the run directory");
                unsafe { libc::_exit(130) };
            }
            if crate::dist::world().0 == 0 {
                eprintln!("\ninterrupted: saving a checkpoint after this step (Ctrl-C again to quit at once)");
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(world_size: usize, global_batch: Option<usize>) -> checkpoint::Meta {
        checkpoint::Meta { step: 3, epoch: 0, batch_in_epoch: 3, seconds: 1.0, svib_version: "t".into(), rng: "d".into(), monitor: Default::default(), world_size, global_batch }
    }

    /// The per-process batch keeps the run's global batch across any number of resumes on any
    /// number of processes that divides it.
    #[test]
    fn resumed_runs_keep_their_global_batch() {
        let mut cfg = crate::train::config::tiny_for_tests();
        cfg.train.batch_size = 4;
        assert_eq!(rank_batch(&cfg, None, (0, 2)).unwrap(), 4, "a new run: the config's batch per process");
        assert_eq!(rank_batch(&cfg, Some(&meta(2, None)), (0, 1)).unwrap(), 8, "2 x 4 (an older checkpoint) resumed by 1");
        assert_eq!(rank_batch(&cfg, Some(&meta(1, Some(8))), (0, 1)).unwrap(), 8, "resumed again by 1: still 8");
        assert_eq!(rank_batch(&cfg, Some(&meta(1, Some(8))), (0, 4)).unwrap(), 2, "then by 4");
        assert_eq!(rank_batch(&cfg, Some(&meta(2, Some(8))), (1, 2)).unwrap(), 4);
        let e = rank_batch(&cfg, Some(&meta(2, Some(8))), (0, 3)).unwrap_err().to_string();
        assert!(e.starts_with("train.batch_size") && e.contains("3 processes") && e.contains("8 images per step"), "{e}");
    }
}
