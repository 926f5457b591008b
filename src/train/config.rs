//! The training configuration: TOML with one table per part of the pipeline; every option of
//! SPEC.md with its default. Presets live in `presets/*.toml`; `--set key=value` edits any key.
use crate::augment::MultiCropConfig;
pub use crate::methods::head::HeadConfig;
pub use crate::methods::svib::{BetaSchedule, GmmConfig, GmmInit, IbConfig, Prior, Reinit, ReinitSource};
use crate::methods::Shared;
pub use crate::methods::{MethodConfig, TeacherConfig, METHODS};
use crate::models::ArchConfig;
use crate::util::Num;
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A run's recipe: the method with its own tables, and the tables every method shares.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    /// `method = "NAME"` and the method's tables (see [`MethodConfig`]).
    pub method: MethodConfig,
    pub data: DataConfig,
    pub model: ArchConfig,
    pub augment: MultiCropConfig,
    pub head: HeadConfig,
    pub optim: OptimConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

/// The shared tables as TOML holds them, with the method's name.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SharedTables {
    method: String,
    data: DataConfig,
    model: ArchConfig,
    augment: MultiCropConfig,
    head: HeadConfig,
    optim: OptimConfig,
    train: TrainConfig,
    eval: EvalConfig,
}

impl Default for SharedTables {
    fn default() -> Self {
        let c = Config::default();
        SharedTables { method: "svib".into(), data: c.data, model: c.model, augment: c.augment, head: c.head, optim: c.optim, train: c.train, eval: c.eval }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset spec: fashion-mnist | mnist:DIR | idx:DIR | cifar10:DIR | cifar100:DIR | stl10:DIR | folder:DIR | wds:DIR
    pub spec: String,
    /// Use only N training images (0: all): the first N, or a seeded random subset.
    pub limit: usize,
    /// Seed of a random subset of `limit` images, the same for every training seed (unset: the
    /// first N images of the file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_seed: Option<u64>,
    /// STL-10: pre-train on train + unlabeled images.
    pub use_unlabeled: bool,
    /// ImageFolder and tar shards: skip undecodable images (with a warning count) instead of stopping.
    pub skip_corrupt: bool,
    /// `wds:` tar shards: read in WebDataset's order, shards shuffled and then a shuffle buffer of
    /// this many samples (0: the global shuffle every data set gets, the same order as the folder
    /// the shards were packed from).
    #[serde(skip_serializing_if = "is_zero")]
    pub shuffle_buffer: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimName {
    Adamw,
    Lars,
    Sgd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub name: OptimName,
    /// Peak learning rate per 256 images (scaled by batch_size / 256).
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: f64,
    /// Warm-up in steps; when > 0 it replaces warmup_epochs.
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub weight_decay_end: f64,
    /// Per-parameter gradient-norm clipping (0: off), as DINO.
    pub clip_grad: f64,
    /// SGD / LARS momentum.
    pub momentum: f64,
    /// LARS trust coefficient.
    pub lars_eta: f64,
    pub betas: [f64; 2],
    pub eps: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Optimiser steps of the run; when > 0 it replaces epochs (the run ends mid-epoch if it
    /// must), and every schedule spans these steps.
    pub steps: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// cpu | cuda | cuda:N | auto
    pub device: String,
    /// Write a metrics line every N steps.
    pub log_every: usize,
    /// kNN on the test split every E epochs (0: only at the end).
    pub knn_every: usize,
    /// kNN on the test split every N steps as well (0: off).
    pub knn_every_steps: usize,
    /// kNN of the untrained backbone before the first step; later evaluations below it warn.
    pub knn_at_start: bool,
    /// Also checkpoint every N steps within an epoch (0: at epoch ends only).
    pub checkpoint_every_steps: usize,
    pub keep_checkpoints: usize,
    /// Batches augmented ahead of the training step (spread over the loader threads, at least
    /// one each).
    pub prefetch: usize,
    /// Batches the loader assembles at once, each on its own thread over the shared pool (see
    /// augment::loader::LoaderOptions::threads); 0: half the threads (--threads), 1 to 8. The
    /// batches are the same for any value.
    pub loader_threads: usize,
    /// Convolution weights and inputs in NHWC layout (oneDNN's preferred layout on CPU); the
    /// numbers are the same, the speed is not (docs/PERFORMANCE.md). No effect on ViTs.
    pub channels_last: bool,
    /// Also write the metrics as TensorBoard event files under `DIR/tensorboard/`.
    pub tensorboard: bool,
    /// CUDA only: the forward passes and the loss under libtorch's autocast in bf16 or fp16
    /// (fp16 with dynamic loss scaling that skips a step on inf/NaN, as torch's GradScaler);
    /// fp32 is IEEE float32 throughout (TF32 off). Weights, gradients and the optimiser stay f32.
    pub precision: Precision,
    /// Collapse warning when the teacher's batch-marginal entropy / log K stays below this
    /// (assignments on a few components) ...
    pub collapse_threshold: f64,
    /// ... or when the assignment hardly depends on the image: (H(mean assignment) - mean
    /// H(assignment)) / log K, an estimate of I(C; X) / log K, stays below this ...
    pub collapse_mi_threshold: f64,
    /// ... for this many consecutive steps after the warm-up.
    pub collapse_patience: usize,
}

/// The arithmetic of the training step on CUDA (`train.precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
    Fp16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    pub k: i64,
    pub temperature: f64,
    pub batch_size: usize,
    /// Evaluation image side (0: the global crop size).
    pub image_size: u32,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { spec: "fashion-mnist".into(), limit: 0, limit_seed: None, use_unlabeled: false, skip_corrupt: false, shuffle_buffer: 0 }
    }
}
impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            name: OptimName::Adamw,
            lr: 0.0005,
            min_lr: 1e-6,
            warmup_epochs: 10.0,
            warmup_steps: 0,
            weight_decay: 0.04,
            weight_decay_end: 0.4,
            clip_grad: 3.0,
            momentum: 0.9,
            lars_eta: 0.001,
            betas: [0.9, 0.999],
            eps: 1e-8,
        }
    }
}
impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 300,
            steps: 0,
            batch_size: 256,
            seed: 0,
            device: "cpu".into(),
            log_every: 10,
            knn_every: 0,
            knn_every_steps: 0,
            knn_at_start: true,
            checkpoint_every_steps: 0,
            keep_checkpoints: 2,
            prefetch: 3,
            loader_threads: 0,
            channels_last: false,
            precision: Precision::Fp32,
            tensorboard: false,
            collapse_threshold: 0.05,
            collapse_mi_threshold: 0.01,
            collapse_patience: 10,
        }
    }
}
impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig { k: 20, temperature: 0.07, batch_size: 256, image_size: 0 }
    }
}

/// Built-in presets: (name, one-line description, TOML).
pub const PRESETS: [(&str, &str, &str); 5] = [
    (
        "paper-vit-s16",
        "the paper's ViT-S/16 recipe on ImageNet-sized images (SPEC §4): 300 epochs, K 65536, 10 local crops, AdamW",
        include_str!("../../presets/paper-vit-s16.toml"),
    ),
    ("paper-rn50", "the paper's ResNet-50 recipe (SPEC §4): LARS, 6 local crops of scale (0.05, 0.14), 300 epochs", include_str!("../../presets/paper-rn50.toml")),
    ("paper-ablation", "the ablation setting (Table 4): ViT-S/16, K 8192, 2 local crops, 100 epochs, batch 512", include_str!("../../presets/paper-ablation.toml")),
    ("fmnist-cpu", "Fashion-MNIST in about 30 minutes of 2 CPU cores (19,656 steps): a small ResNet-18 (width 16), K 256", include_str!("../../presets/fmnist-cpu.toml")),
    ("fmnist-cpu-balanced", "fmnist-cpu with a Sinkhorn-balanced, centred teacher target (a variant of the objective)", include_str!("../../presets/fmnist-cpu-balanced.toml")),
];

/// The baselines as overlays on any base preset (`presets/methods/*.toml`): the method and
/// its head and options; data, backbone, crops, optimiser and budget stay the base's, so that
/// methods compare at equal settings. `dino-fmnist-cpu` is `fmnist-cpu` with the DINO overlay.
pub const METHOD_OVERLAYS: [(&str, &str); 5] = [
    ("dino", include_str!("../../presets/methods/dino.toml")),
    ("byol", include_str!("../../presets/methods/byol.toml")),
    ("mocov2", include_str!("../../presets/methods/mocov2.toml")),
    ("swav", include_str!("../../presets/methods/swav.toml")),
    ("simclr", include_str!("../../presets/methods/simclr.toml")),
];

impl Config {
    /// Which objective the config trains: SPEC's, which additions make it a variant, or a
    /// baseline.
    pub fn objective(&self) -> String {
        self.method.objective()
    }

    /// What the method builds its networks from.
    pub fn shared(&self) -> Shared<'_> {
        Shared { model: &self.model, head: &self.head, channels: self.augment.channels }
    }

    /// SVIB's tables (None for a baseline).
    pub fn svib(&self) -> Option<&crate::methods::svib::SvibConfig> {
        self.method.svib()
    }
    pub fn svib_mut(&mut self) -> Option<&mut crate::methods::svib::SvibConfig> {
        self.method.svib_mut()
    }
}

/// Sets `method` in a config table, with the method's overlay (svib: none).
pub fn apply_method(table: &mut toml::Table, method: &str) -> Result<()> {
    if method == "svib" {
        table.insert("method".into(), toml::Value::String("svib".into()));
        adopt_tables(table, method);
        return Ok(());
    }
    let Some((_, text)) = METHOD_OVERLAYS.iter().find(|m| m.0 == method) else {
        bail!("method `{method}`: expected one of {}", METHODS.join(", "));
    };
    merge(table, toml::from_str(text).expect("method overlays are valid TOML"));
    adopt_tables(table, method);
    Ok(())
}

/// Fits the tables of a base preset (or of a config.toml written before each method had its
/// own tables, when every file held every method's tables) to `method`: the base's number of
/// components (`gmm.k`) becomes the method's number of prototypes unless the method sets its
/// own, and tables the method does not read are dropped.
fn adopt_tables(table: &mut toml::Table, method: &str) {
    let k = table.get("gmm").and_then(|g| g.get("k")).cloned();
    let target = MethodConfig::prototypes_key(method).and_then(|key| key.split_once('.')).filter(|(t, _)| *t != "gmm");
    if let (Some(k), Some((t, key))) = (k, target) {
        if let Some(own) = table.entry(t).or_insert_with(|| toml::Value::Table(Default::default())).as_table_mut() {
            own.entry(key).or_insert(k);
        }
    }
    let own = MethodConfig::tables(method).unwrap_or_default();
    table.retain(|k, _| !is_method_table(k) || own.contains(&k));
}

/// `--set` of an experiment that trains several methods with the same edits: an edit of a table
/// `method` does not read is skipped for it, except `gmm.k`, which sets every method's number of
/// prototypes (DINO's `dino.out_dim`, SwAV's `swav.prototypes`), as an overlay does.
pub fn set_key_for(table: &mut toml::Table, method: &str, assignment: &str) -> Result<()> {
    let key = assignment.split_once('=').map_or(assignment, |kv| kv.0).trim();
    let top = key.split('.').next().unwrap_or_default();
    if !is_method_table(top) || MethodConfig::tables(method).unwrap_or_default().contains(&top) {
        return set_key(table, assignment);
    }
    match MethodConfig::prototypes_key(method) {
        Some(own) if key == "gmm.k" => set_key(table, &assignment.replacen("gmm.k", own, 1)),
        _ => Ok(()),
    }
}

/// A table that belongs to some method (not shared by all).
fn is_method_table(key: &str) -> bool {
    METHODS.iter().any(|m| MethodConfig::tables(m).unwrap_or_default().contains(&key))
}

/// A config.toml of the layout before each method had its own tables held every baseline's.
fn is_legacy_layout(table: &toml::Table) -> bool {
    ["dino", "byol", "mocov2", "swav"].iter().filter(|t| table.contains_key(**t)).count() >= 2
}

/// Sets the run length to `epochs` whole epochs (a step budget of the preset gives way).
pub fn set_epochs(table: &mut toml::Table, epochs: usize) -> Result<()> {
    ensure!((1..=10_000_000).contains(&epochs), "--epochs: expected 1 to 10000000, got {epochs}");
    set_key(table, &format!("train.epochs={epochs}"))?;
    set_key(table, "train.steps=0")
}

/// Recursively overwrites `base` with `over`.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Reads a preset name (`fmnist-cpu`, or `METHOD-PRESET` such as `dino-fmnist-cpu`) or a TOML
/// file into a table (not yet validated).
pub fn load_table(name_or_path: &str) -> Result<toml::Table> {
    let preset = |name: &str| PRESETS.iter().find(|p| p.0 == name).map(|p| toml::from_str::<toml::Table>(p.2).expect("presets are valid TOML"));
    if let Some(t) = preset(name_or_path) {
        return Ok(t);
    }
    if let Some((method, base)) = name_or_path.split_once('-') {
        if let (Some(mut t), true) = (preset(base), METHOD_OVERLAYS.iter().any(|m| m.0 == method)) {
            apply_method(&mut t, method)?;
            return Ok(t);
        }
    }
    let path = Path::new(name_or_path);
    if !path.is_file() {
        let prefixes: Vec<String> = METHOD_OVERLAYS.iter().map(|m| format!("{}-", m.0)).collect();
        bail!("`{name_or_path}`: neither a preset ({}, optionally prefixed with one of {}) nor a file", PRESETS.map(|p| p.0).join(", "), prefixes.join(", "));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    toml::from_str::<toml::Table>(&text).map_err(|e| anyhow::anyhow!("{}: not valid TOML: {}", path.display(), one_line(&e.to_string())))
}

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('|')).collect::<Vec<_>>().join(" ")
}

/// Parses a `--set` value: TOML (number, bool, array, quoted string) or else a bare string.
fn parse_value(v: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {v}")).ok().and_then(|mut t| t.remove("v")).unwrap_or_else(|| toml::Value::String(v.to_string()))
}

/// The value the last of `sets` (`KEY=VALUE` assignments, as `--set` takes them) gives `key`,
/// unquoted; None when none sets it.
pub fn set_value(sets: &[String], key: &str) -> Option<String> {
    let v = sets.iter().rev().filter_map(|s| s.split_once('=')).find(|(k, _)| k.trim() == key)?.1.trim();
    let unquoted = ['"', '\''].iter().find_map(|q| v.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)));
    Some(unquoted.unwrap_or(v).to_string())
}

/// Applies `key.path=value` to the table.
pub fn set_key(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let Some((key, value)) = assignment.split_once('=') else { bail!("--set `{assignment}`: expected key=value, e.g. gmm.k=4096") };
    let parts: Vec<&str> = key.trim().split('.').collect();
    ensure!(parts.iter().all(|p| !p.is_empty()), "--set `{assignment}`: empty part in key `{key}`");
    let mut t = table;
    for p in &parts[..parts.len() - 1] {
        let entry = t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
        t = entry.as_table_mut().ok_or_else(|| anyhow::anyhow!("--set `{assignment}`: `{p}` is not a table"))?;
    }
    t.insert(parts[parts.len() - 1].to_string(), parse_value(value.trim()));
    Ok(())
}

impl Config {
    /// Deserialises and validates; errors name the key (`gmm.k: …`).
    pub fn from_table(mut table: toml::Table) -> Result<Config> {
        let method = match table.get("method") {
            None => "svib".to_string(),
            Some(toml::Value::String(m)) => m.clone(),
            Some(other) => bail!("config key `method`: expected a string (one of {}), got {}", METHODS.join(", "), crate::util::shorten(&other.to_string(), 60)),
        };
        ensure!(MethodConfig::tables(&method).is_some(), "method: `{}` is not available (expected one of {})", crate::util::shorten(&method, 60), METHODS.join(", "));
        if is_legacy_layout(&table) {
            adopt_tables(&mut table, &method);
        }
        let (mine, shared): (toml::Table, toml::Table) = table.into_iter().partition(|(k, _)| is_method_table(k));
        let s: SharedTables = serde_path_to_error::deserialize(toml::Value::Table(shared)).map_err(crate::methods::key_error)?;
        let method = MethodConfig::from_tables(&method, mine)?;
        let mut cfg = Config { method, data: s.data, model: s.model, augment: s.augment, head: s.head, optim: s.optim, train: s.train, eval: s.eval };
        if cfg.augment.channels == 0 {
            cfg.augment.channels = cfg.data_channels()?;
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// `augment.channels = 0`: the channels of the training images (1 for a grey set, 3 for a
    /// colour one), so that one recipe serves both; the run's config.toml records the number.
    fn data_channels(&self) -> Result<u8> {
        // the format alone answers for IDX, CIFAR and STL-10 (`svib presets` needs no data)
        let name = self.data.spec.split_once(':').map_or(self.data.spec.as_str(), |(n, _)| n);
        if let Some(c) = crate::data::Format::from_name(name).and_then(crate::data::Format::fixed_channels) {
            return Ok(c);
        }
        let spec = self.data.spec.parse::<crate::data::DataSpec>().map_err(|e| anyhow::anyhow!("data.spec: {e}"))?;
        crate::data::peek_channels(&spec).context("augment.channels = 0 (the data's channels)")
    }

    /// The run's length as its config sets it: "N steps of batch B" or "N epochs of batch B".
    pub fn length_note(&self) -> String {
        let plural = |n: usize, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
        match self.train.steps {
            0 => format!("{} of batch {}", plural(self.train.epochs, "epoch"), self.train.batch_size),
            n => format!("{} of batch {}", plural(n, "step"), self.train.batch_size),
        }
    }

    pub fn to_toml(&self) -> String {
        let c = self.clone();
        let shared =
            SharedTables { method: self.method.name().into(), data: c.data, model: c.model, augment: c.augment, head: c.head, optim: c.optim, train: c.train, eval: c.eval };
        #[derive(Serialize)]
        struct File<'a> {
            #[serde(flatten)]
            shared: SharedTables,
            #[serde(flatten)]
            method: &'a MethodConfig,
        }
        toml::to_string(&File { shared, method: &self.method }).expect("the config serialises")
    }

    /// Every value within its range (finite, where a float), and settings that must agree.
    pub fn validate(&self) -> Result<()> {
        self.method.validate()?;
        self.model.validate()?;
        // 0 (the data's) is resolved by now; a config may also say so
        let c = self.augment.channels;
        ensure!(c == 1 || c == 3, "augment.channels: expected 1 or 3 (or 0 in a config: the data's), got {c}");
        self.augment.validate()?;
        for (key, v, lo, hi) in self.closed_ranges() {
            ensure!(v.is_finite() && v >= lo && v <= hi, "{key}: expected a value in [{}, {}], got {}", Num(lo), Num(hi), Num(v));
        }
        for (key, v, lo, hi) in self.half_open_ranges() {
            ensure!(v.is_finite() && v >= lo && v < hi, "{key}: expected a value in [{}, {}), got {}", Num(lo), Num(hi), Num(v));
        }
        let peak = self.optim.lr * self.train.batch_size as f64 / 256.0;
        ensure!(
            self.optim.min_lr <= peak,
            "optim.min_lr: expected at most the peak learning rate (optim.lr x train.batch_size / 256 = {}), got {}",
            Num(peak),
            Num(self.optim.min_lr)
        );
        ensure!(self.eval.image_size == 0 || self.eval.image_size >= 8, "eval.image_size: expected 0 (the global crop size) or at least 8 pixels, got {}", self.eval.image_size);
        ensure!(self.data.shuffle_buffer == 0 || self.data.spec.starts_with("wds:"), "data.shuffle_buffer: only for `wds:` tar shards (data.spec is `{}`)", self.data.spec);
        self.check_patch_fits()
    }

    /// (key, value, min, max), both ends allowed.
    fn closed_ranges(&self) -> Vec<(&'static str, f64, f64, f64)> {
        let (h, o, tr, e) = (&self.head, &self.optim, &self.train, &self.eval);
        vec![
            ("head.hidden", h.hidden as f64, 1.0, 65536.0),
            ("head.out", h.out as f64, 1.0, 65536.0),
            ("head.layers", h.layers as f64, 1.0, 16.0),
            ("optim.lr", o.lr, 1e-12, 100.0),
            ("optim.min_lr", o.min_lr, 0.0, 100.0),
            ("optim.warmup_epochs", o.warmup_epochs, 0.0, 1e6),
            ("optim.weight_decay", o.weight_decay, 0.0, 100.0),
            ("optim.weight_decay_end", o.weight_decay_end, 0.0, 100.0),
            ("optim.clip_grad", o.clip_grad, 0.0, 1e9),
            ("optim.lars_eta", o.lars_eta, 1e-12, 10.0),
            ("optim.eps", o.eps, 1e-30, 1.0),
            ("train.epochs", tr.epochs as f64, 1.0, 1e7),
            ("train.steps", tr.steps as f64, 0.0, 1e10),
            ("train.batch_size", tr.batch_size as f64, 2.0, (1u64 << 20) as f64),
            ("train.log_every", tr.log_every as f64, 1.0, 1e9),
            ("train.keep_checkpoints", tr.keep_checkpoints as f64, 1.0, 1000.0),
            ("train.prefetch", tr.prefetch as f64, 0.0, 64.0),
            ("train.loader_threads", tr.loader_threads as f64, 0.0, 64.0),
            ("train.collapse_threshold", tr.collapse_threshold, 0.0, 1.0),
            ("train.collapse_mi_threshold", tr.collapse_mi_threshold, 0.0, 1.0),
            ("eval.k", e.k as f64, 1.0, 1e5),
            ("eval.temperature", e.temperature, 1e-3, 1e3),
            ("eval.batch_size", e.batch_size as f64, 1.0, 65536.0),
            ("eval.image_size", e.image_size as f64, 0.0, 4096.0),
            ("data.shuffle_buffer", self.data.shuffle_buffer as f64, 0.0, 1e7),
        ]
    }

    /// (key, value, min, bound): the bound itself is not allowed (momenta and Adam's betas).
    fn half_open_ranges(&self) -> Vec<(&'static str, f64, f64, f64)> {
        vec![("optim.momentum", self.optim.momentum, 0.0, 1.0), ("optim.betas[0]", self.optim.betas[0], 0.0, 1.0), ("optim.betas[1]", self.optim.betas[1], 0.0, 1.0)]
    }

    /// A ViT's patch must fit every crop it sees (libtorch would fail inside the patch embedding).
    fn check_patch_fits(&self) -> Result<()> {
        if !self.model.name.starts_with("vit") {
            return Ok(());
        }
        let p = self.model.patch_size;
        let a = &self.augment;
        let mut sizes = vec![("augment.global_size", a.global_size as i64), ("eval.image_size", self.eval.image_size as i64)];
        if a.local_crops > 0 {
            sizes.push(("augment.local_size", a.local_size as i64));
        }
        for (key, size) in sizes.into_iter().filter(|&(_, s)| s > 0) {
            ensure!(size >= p, "{key}: {size} px is smaller than model.patch_size ({p} px): a ViT needs crops of at least one patch");
        }
        Ok(())
    }
}

/// A tiny recipe for tests: a ResNet-18 of width 4 on 12 px grey crops, K 8.
#[cfg(test)]
pub(crate) fn tiny_for_tests() -> Config {
    let mut c = Config { model: ArchConfig::parse("resnet18:small_stem=true,width=4").unwrap(), ..Config::default() };
    c.augment.global_size = 12;
    c.augment.local_size = 6;
    c.augment.local_crops = 2;
    c.augment.channels = 1;
    c.head.hidden = 16;
    c.head.out = 8;
    c.method = MethodConfig::Svib(crate::methods::svib::SvibConfig { gmm: GmmConfig { k: 8, ..Default::default() }, ..Default::default() });
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: a preset trains SPEC's objective unless its name says it is a variant.
    #[test]
    fn presets_train_the_papers_objective_unless_named_as_a_variant() {
        for (name, about, _) in PRESETS {
            let c = Config::from_table(load_table(name).unwrap()).unwrap();
            let variant = name.ends_with("-balanced");
            assert_eq!(c.objective() == "SVIB, the paper's objective", !variant, "{name}: {}", c.objective());
            assert_eq!(about.contains("variant"), variant, "{name}: the description must say so");
        }
        let b = Config::from_table(load_table("fmnist-cpu-balanced").unwrap()).unwrap();
        assert_eq!(b.objective(), "SVIB variant: Sinkhorn-balanced target (3 iterations), centred target");
    }

    /// `augment.channels = 0` (the Fashion-MNIST presets) takes the data's channels.
    #[test]
    fn channels_zero_follows_the_data() {
        let with = |spec: &str| {
            let mut t = load_table("fmnist-cpu").unwrap();
            set_key(&mut t, &format!("data.spec=\"{spec}\"")).unwrap();
            Config::from_table(t).map(|c| c.augment.channels)
        };
        assert_eq!(with("fashion-mnist").unwrap(), 1);
        // the format decides without reading the (missing) folder
        assert_eq!((with("cifar10:/nonexistent/set").unwrap(), with("idx:/nonexistent/set").unwrap()), (3, 1));
        let d = tempfile::tempdir().unwrap();
        crate::data::folder::tests::tree(d.path());
        assert_eq!(with(&format!("folder:{}", d.path().display())).unwrap(), 3);
        for class in ["cat", "dog"] {
            for f in std::fs::read_dir(d.path().join("train").join(class)).unwrap() {
                let p = f.unwrap().path();
                image::open(&p).unwrap().to_luma8().save(&p).unwrap();
            }
        }
        assert_eq!(with(&format!("folder:{}", d.path().display())).unwrap(), 1);
        let e = format!("{:#}", with("folder:/nonexistent/set").unwrap_err());
        assert!(e.starts_with("data.spec: ") && e.contains("/nonexistent/set"), "{e}");
    }

    #[test]
    fn presets_parse_and_validate_against_defaults() {
        for (name, _, _) in PRESETS {
            let c = Config::from_table(load_table(name).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(c.method.name(), "svib");
            for (method, _) in METHOD_OVERLAYS {
                let c = Config::from_table(load_table(&format!("{method}-{name}")).unwrap()).unwrap_or_else(|e| panic!("{method}-{name}: {e}"));
                assert_eq!(c.method.name(), method);
            }
        }
        // an overlay changes the method's own keys and keeps the base's budget
        let (base, dino) = (Config::from_table(load_table("fmnist-cpu").unwrap()).unwrap(), Config::from_table(load_table("mocov2-fmnist-cpu").unwrap()).unwrap());
        let MethodConfig::MocoV2(moco) = &dino.method else { panic!("{:?}", dino.method) };
        assert_eq!((dino.head.out, dino.head.layers, moco.mocov2.queue), (128, 2, 65536));
        assert_eq!((dino.train.epochs, dino.augment.clone(), dino.model.clone(), dino.optim.lr), (base.train.epochs, base.augment, base.model, base.optim.lr));
        let vit = Config::from_table(load_table("paper-vit-s16").unwrap()).unwrap();
        let s = vit.svib().unwrap();
        assert_eq!((s.gmm.k, vit.augment.local_crops, vit.train.epochs), (65536, 10, 300));
        assert_eq!((s.ib.beta_start, s.ib.beta_end, s.gmm.sigma_teacher, s.gmm.sigma_student), (0.5, 0.01, 0.2, 0.32));
    }

    #[test]
    fn set_overrides_and_key_errors() {
        let mut t = load_table("fmnist-cpu").unwrap();
        set_key(&mut t, "ib.beta_start=0").unwrap();
        set_key(&mut t, "gmm.reinit=never").unwrap();
        set_key(&mut t, "augment.global_scale=[0.3, 1.0]").unwrap();
        let c = Config::from_table(t.clone()).unwrap();
        let s = c.svib().unwrap();
        assert_eq!((s.ib.beta_start, s.gmm.reinit, c.augment.global_scale), (0.0, Reinit::Never, [0.3, 1.0]));
        let mut bad = t.clone();
        set_key(&mut bad, "gmm.kk=3").unwrap();
        let e = Config::from_table(bad).unwrap_err().to_string();
        assert!(e.contains("gmm.kk") && e.contains("unknown field"), "{e}");
        let mut bad = t.clone();
        set_key(&mut bad, "gmm.k=lots").unwrap();
        assert!(Config::from_table(bad).unwrap_err().to_string().contains("gmm.k"));
        let mut bad = t;
        set_key(&mut bad, "ib.prior=gaussian").unwrap();
        assert!(Config::from_table(bad).unwrap_err().to_string().contains("ib.prior"));
        assert!(set_key(&mut Default::default(), "novalue").is_err());
    }

    #[test]
    fn resolved_config_roundtrips() {
        let c = Config::from_table(load_table("paper-rn50").unwrap()).unwrap();
        let back = Config::from_table(toml::from_str(&c.to_toml()).unwrap()).unwrap();
        assert_eq!(c, back);
    }
}
