//! `svib linear`, `svib finetune` and `svib export`: evaluations and weights out, for a run
//! directory (its evaluated backbone) or backbone weights with --arch.
use crate::data::{self, DataSpec, Dataset, LoadOptions, Norm, Split};
use crate::eval::features::EvalPrep;
use crate::eval::finetune::{classes_below_one, finetune, FinetuneOpts};
use crate::eval::linear::{linear_probe, LinearOpts};
use crate::experiments::mean_std;
use crate::interop::{export_tensors, write_safetensors, Layout};
use crate::models::ArchConfig;
use crate::train::config::Config;
use crate::train::rundir::RunDir;
use crate::train::source::{load_backbone, LoadedBackbone};
use anyhow::{ensure, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct SourceArgs {
    /// A run directory (or one of its checkpoints), or backbone weights (.safetensors or .pth) with --arch.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Architecture for a weights file: NAME[:key=value,...] (see `svib models`).
    #[arg(long)]
    pub arch: Option<String>,
    /// Input channels for a weights file: 1 or 3 (default 3).
    #[arg(long)]
    pub channels: Option<u8>,
    /// cpu | cuda | cuda:N | auto
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl SourceArgs {
    pub(super) fn load(&self, seed: i64) -> Result<(LoadedBackbone, tch::Device)> {
        let device = crate::device::parse(&self.device)?;
        let arch = self.arch.as_deref().map(ArchConfig::parse).transpose()?;
        Ok((load_backbone(Some(&self.checkpoint), arch.as_ref(), self.channels, 3, device, seed)?, device))
    }
}

#[derive(Args, Debug)]
pub struct DataArgs {
    /// Data set (default: the run's, with its data.limit and data.skip_corrupt, as `svib knn` reads it).
    #[arg(long)]
    pub data: Option<DataSpec>,
    /// Evaluation image side (default: the run's, or the data's side up to 224).
    #[arg(long)]
    pub image_size: Option<u32>,
    /// Use only the first N training images.
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// ImageFolder and tar shards: skip undecodable images (with a warning count) instead of failing.
    #[arg(long)]
    pub skip_corrupt: bool,
}

pub(super) fn load_data(d: &DataArgs, b: &LoadedBackbone) -> Result<(Dataset, Dataset, EvalPrep)> {
    ensure!(d.limit_train != Some(0), "--limit-train: expected at least 1 image, got 0");
    let (spec, mut train, test) = eval_splits(d.data.as_ref(), b.run_config.as_ref(), d.skip_corrupt)?;
    limit_train(&mut train, d.limit_train);
    train.require_labels(&format!("{spec} (train)"))?;
    test.require_labels(&format!("{spec} (test)"))?;
    let norm = Norm::for_dataset(&spec, &train);
    let prep = eval_prep_for(b.run_config.as_ref(), d.image_size, b.channels, norm, &train)?;
    Ok((train, test, prep))
}

/// An evaluation's preprocessing: a run's own (its crop side and channels), else `channels` at
/// the short side of a typical image of `train`; `image_size` (--image-size) sets the side.
pub(super) fn eval_prep_for(run: Option<&Config>, image_size: Option<u32>, channels: u8, norm: Norm, train: &Dataset) -> Result<EvalPrep> {
    Ok(match run {
        Some(c) => {
            let mut prep = crate::train::eval_prep(c, norm);
            prep.size = image_size.unwrap_or(prep.size);
            prep
        }
        None => EvalPrep { size: image_size.map_or_else(|| train.typical_side(), Ok)?, channels, norm, reduced_decode: true },
    })
}

/// The two splits an evaluation reads: `data`'s; without it, a run's own images as its kNN
/// evaluations read them (`data.limit`, `data.skip_corrupt`). `skip_corrupt` skips undecodable
/// images in either.
pub(super) fn eval_splits(data: Option<&DataSpec>, run: Option<&Config>, skip_corrupt: bool) -> Result<(DataSpec, Dataset, Dataset)> {
    match (data, run) {
        (None, Some(c)) => {
            let mut c = c.clone();
            c.data.skip_corrupt |= skip_corrupt;
            crate::train::load_knn_data(&c).map_err(|e| e.context("the run's data set (give --data)"))
        }
        (Some(s), _) => {
            let opts = LoadOptions { skip_corrupt };
            Ok((s.clone(), data::load(s, Split::Train, &opts)?, data::load(s, Split::Test, &opts)?))
        }
        (None, None) => anyhow::bail!("--data is needed with a weights file"),
    }
}

/// `--limit-train N`: the first N training images, with a note when there are fewer (a run's
/// `data.limit` may have kept fewer already).
pub(super) fn limit_train(train: &mut Dataset, n: Option<usize>) {
    if let Some(n) = n {
        if n > train.len() {
            eprintln!("note: --limit-train {n}: the training split has {} images (a run's data.limit counts), all used", train.len());
        }
        train.truncate_noting(n, &format!("--limit-train {n}"), "the scores then compare against these classes only");
    }
}

#[derive(Args, Debug)]
pub struct LinearArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    #[arg(long, default_value_t = 1024)]
    pub batch_size: usize,
    /// Base learning rate per 256 images (SPEC: 0.3 for ResNet-50, 0.001 for ViT-S).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// RandomResizedCrop + flip on training images (SPEC protocol; recomputes features every epoch).
    #[arg(long)]
    pub augment: bool,
    /// ViT: concatenate the [CLS] tokens of the last N blocks (default 4, DINO's for ViT-S).
    #[arg(long)]
    pub n_last_blocks: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub quiet: bool,
}

/// `--n-last-blocks`: 1 to the ViT's depth (4 when not given); a ResNet has one feature layer.
fn n_last_blocks(given: Option<usize>, arch: &ArchConfig) -> Result<usize> {
    if !arch.is_vit() {
        ensure!(given.is_none(), "--n-last-blocks: only for ViT backbones (this one is a {}, read at its pooled last stage)", arch.name);
        return Ok(1);
    }
    let depth = arch.vit_dims().1 as usize;
    let n = given.unwrap_or(4.min(depth));
    ensure!((1..=depth).contains(&n), "--n-last-blocks: expected 1 to {depth} (the ViT's blocks), got {n}");
    Ok(n)
}

/// The SGD settings of `linear` and `finetune`.
fn check_sgd(lr: f64, weight_decay: f64) -> Result<()> {
    ensure!(lr.is_finite() && lr > 0.0 && lr <= 1e4, "--lr: expected a value in (0, 10000], got {lr:.3e}");
    ensure!(weight_decay.is_finite() && (0.0..=1e4).contains(&weight_decay), "--weight-decay: expected a value in [0, 10000], got {weight_decay:.3e}");
    Ok(())
}

pub fn run_linear(a: LinearArgs) -> Result<()> {
    ensure!(a.epochs >= 1 && a.batch_size >= 1, "--epochs/--batch-size: expected at least 1");
    let (b, device) = a.source.load(a.seed as i64)?;
    let n_last = n_last_blocks(a.n_last_blocks, &b.arch)?;
    let lr = a.lr.unwrap_or(if b.arch.is_vit() { 0.001 } else { 0.3 });
    check_sgd(lr, a.weight_decay)?;
    let (train, test, prep) = load_data(&a.data, &b)?;
    let opts = LinearOpts {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr,
        momentum: 0.9,
        weight_decay: a.weight_decay,
        augment: a.augment,
        n_last_blocks: n_last,
        seed: a.seed,
        quiet: a.quiet,
    };
    let r = linear_probe(&b.model, &train, &test, &prep, &opts, device)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Fraction of the labelled training set (class-balanced), e.g. 0.01 or 0.1.
    #[arg(long)]
    pub fraction: f64,
    /// Independent runs (seeds 0..N, each its own subset); mean ± std reported.
    #[arg(long, default_value_t = 1)]
    pub runs: u64,
    /// Epochs (default: SimCLR's 60 for 1 %, 30 otherwise).
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Base learning rate per 256 images.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run_finetune(a: FinetuneArgs) -> Result<()> {
    ensure!(a.fraction > 0.0 && a.fraction <= 1.0, "--fraction: expected a value in (0, 1], got {}", a.fraction);
    ensure!(a.runs >= 1 && a.batch_size >= 1, "--runs/--batch-size: expected at least 1");
    ensure!(a.runs <= 100, "--runs: expected at most 100 runs, got {}", a.runs);
    check_sgd(a.lr, a.weight_decay)?;
    ensure!(a.epochs != Some(0), "--epochs: expected at least 1, got 0");
    let epochs = a.epochs.unwrap_or(if a.fraction <= 0.01 { 60 } else { 30 });
    // the data once, with the first run's backbone (a run directory names its own data set)
    let first = a.source.load(0)?;
    let (train, test, prep) = load_data(&a.data, &first.0)?;
    let mut loaded = Some(first);
    let short = classes_below_one(&train.labels, a.fraction);
    if short > 0 {
        eprintln!("warning: --fraction {} gives fewer than one image of {short} class(es); each gets one (see labelled_fraction)", crate::util::Num(a.fraction));
    }
    let mut results = vec![];
    for seed in 0..a.runs {
        // every run starts again from the pre-trained weights
        let (b, device) = match loaded.take() {
            Some(first) => first,
            None => a.source.load(seed as i64)?,
        };
        let opts = FinetuneOpts { fraction: a.fraction, epochs, batch_size: a.batch_size, lr: a.lr, momentum: 0.9, weight_decay: a.weight_decay, seed, quiet: a.quiet };
        let r = finetune(&b.vs, &b.model, &train, &test, &prep, &opts, device)?;
        if !a.quiet {
            eprintln!("run {}/{}: top-1 {:.2} top-5 {:.2} ({} labelled images, {:.0} s)", seed + 1, a.runs, r.top1, r.top5, r.n_labelled, r.seconds);
        }
        results.push(r);
    }
    // every run draws the same number of images of every class
    let labelled_fraction = results[0].n_labelled as f64 / train.len() as f64;
    let (t1, t1s) = mean_std(&results.iter().map(|r| r.top1).collect::<Vec<_>>());
    let (t5, t5s) = mean_std(&results.iter().map(|r| r.top5).collect::<Vec<_>>());
    let out = serde_json::json!({"fraction": a.fraction, "labelled_fraction": labelled_fraction, "epochs": epochs, "runs": results, "top1_mean": t1, "top1_std": t1s, "top5_mean": t5, "top5_std": t5s});
    println!("{out}");
    Ok(())
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Key layout of the output.
    #[arg(long, value_enum, default_value_t = Layout::Torchvision)]
    pub layout: Layout,
    /// Output file: .safetensors, or .pth / .pt for PyTorch's torch.save format.
    #[arg(long)]
    pub out: PathBuf,
}

/// Checks an output file path before any work: not a folder, and not an existing file of a run
/// directory (a checkpoint, config.toml, metrics), which would be lost if replaced.
fn check_out_file(out: &Path) -> Result<()> {
    ensure!(!out.is_dir(), "--out {}: is a folder; expected a file name", out.display());
    if let Some(file) = out.ancestors().skip(1).find(|p| p.is_file()) {
        anyhow::bail!("--out {}: {} is a file, not a folder", out.display(), file.display());
    }
    if out.exists() && RunDir::is_run(out) {
        anyhow::bail!("--out {}: would replace a file of the run directory {}; choose a path outside the run", out.display(), out.parent().unwrap_or(out).display());
    }
    Ok(())
}

/// A second output written beside `out` (`X.labels.npy`, `X.npy`): checked as `out` is, and
/// not replaced unless `out` exists too (then both are this command's earlier outputs).
fn check_sibling(out: &Path, sibling: &Path) -> Result<()> {
    check_out_file(sibling)?;
    if sibling.exists() && !out.exists() {
        anyhow::bail!("--out {}: would replace {}, which this command writes beside it; move that file or choose another --out", out.display(), sibling.display());
    }
    Ok(())
}

pub fn run_export(a: ExportArgs) -> Result<()> {
    check_out_file(&a.out)?;
    let (b, _) = a.source.load(0)?;
    let named: Vec<(String, tch::Tensor)> = b.vs.variables().into_iter().collect();
    let tensors = export_tensors(named, a.layout, b.arch.is_vit())?;
    let ext = a.out.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "safetensors" => write_safetensors(&tensors, &a.out)?,
        "pth" | "pt" => crate::interop::pth::write_pth(&tensors, &a.out)?,
        _ => anyhow::bail!("--out {}: expected a .safetensors, .pth or .pt file name", a.out.display()),
    }
    println!("wrote {} tensors ({:?} layout, {}) to {}", tensors.len(), a.layout, b.arch.name, a.out.display());
    Ok(())
}

/// Which images to embed: a backbone, a data set and one of its splits.
#[derive(Args, Debug)]
pub struct SplitArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Split to embed: train or test.
    #[arg(long, default_value = "test")]
    pub split: String,
}

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub input: SplitArgs,
    /// Output features `[N, D]` (.npy, f32, L2-normalised as kNN uses them); labels go to
    /// the same name with `.labels.npy`, and each row's image and class name to `.rows.tsv`.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_embed(a: EmbedArgs) -> Result<()> {
    let (lpath, rpath) = (a.out.with_extension("labels.npy"), a.out.with_extension("rows.tsv"));
    ensure!(a.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")), "--out {}: expected a .npy file name", a.out.display());
    check_out_file(&a.out)?;
    check_sibling(&a.out, &lpath)?;
    check_sibling(&a.out, &rpath)?;
    let (v, ds, d) = split_features(&a.input, None)?;
    let n = ds.len();
    crate::interop::write_npy(&v, n, d, &a.out)?;
    crate::interop::write_npy_labels(&ds.labels, &lpath)?;
    crate::util::write_atomic(&rpath, rows_tsv(&ds).as_bytes())?;
    println!("wrote {n} x {d} features to {}, labels to {} and each row's image to {}", a.out.display(), lpath.display(), rpath.display());
    Ok(())
}

/// One line per embedded image: row, label, class name and where the image comes from. No field
/// holds a tab or line break: backslashes, tabs, line breaks and other control characters in
/// names are written as Rust (and Python) escapes (`\\`, `\t`, `\n`, `\u{1b}`).
fn rows_tsv(ds: &Dataset) -> String {
    let clean = |s: &str| s.chars().map(|c| if c == '\\' || c.is_control() { c.escape_debug().to_string() } else { c.to_string() }).collect::<String>();
    let mut out = String::from("row\tlabel\tclass\timage\n");
    for (i, &l) in ds.labels.iter().enumerate() {
        let class = usize::try_from(l).ok().and_then(|l| ds.class_names.get(l)).map_or("", |c| c.as_str());
        out += &format!("{i}\t{l}\t{}\t{}\n", clean(class), clean(&ds.source_name(i)));
    }
    out
}

/// Frozen, L2-normalised features (row-major `[n, d]`) of a split, the images embedded and `d`.
fn split_features(input: &SplitArgs, limit: Option<usize>) -> Result<(Vec<f32>, Dataset, usize)> {
    let (b, device) = input.source.load(0)?;
    let (train, test, prep) = load_data(&input.data, &b)?;
    let mut ds = match input.split.as_str() {
        "train" => train,
        "test" => test,
        other => anyhow::bail!("--split `{other}`: expected train or test"),
    };
    if let Some(n) = limit {
        ds.truncate(n);
    }
    let f = crate::eval::features::backbone_features(&b.model, &ds, &prep, 256, device)?.to_device(tch::Device::Cpu);
    let (n, d) = (f.size()[0] as usize, f.size()[1] as usize);
    let mut v = vec![0f32; n * d];
    f.contiguous().copy_data(&mut v, n * d);
    Ok((v, ds, d))
}

#[derive(Args, Debug)]
pub struct TsneArgs {
    #[command(flatten)]
    pub input: SplitArgs,
    /// Use the first N images of the split (t-SNE time grows with N).
    #[arg(long, default_value_t = 2000)]
    pub limit: usize,
    #[arg(long, default_value_t = 30.0)]
    pub perplexity: f32,
    #[arg(long, default_value_t = 1000)]
    pub iters: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output plot (.png); the 2-D points go beside it as .npy.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_tsne(a: TsneArgs) -> Result<()> {
    ensure!(a.limit >= 2, "--limit: expected at least 2 images");
    ensure!((1..=100_000).contains(&a.iters), "--iters: expected 1 to 100000, got {}", a.iters);
    let npy = a.out.with_extension("npy");
    ensure!(a.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")), "--out {}: expected a .png file name (the points go beside it as .npy)", a.out.display());
    check_out_file(&a.out)?;
    check_sibling(&a.out, &npy)?;
    let (v, ds, d) = split_features(&a.input, Some(a.limit))?;
    let t0 = std::time::Instant::now();
    let opts = crate::eval::tsne::TsneOpts { perplexity: a.perplexity, epochs: a.iters, theta: 0.5, seed: a.seed };
    let pts = crate::eval::tsne::tsne_2d(&v, d, &opts)?;
    let title = format!("t-SNE of {} {} features ({} images)", a.input.source.checkpoint.display(), a.input.split, ds.len());
    crate::experiments::plot::scatter_chart(&a.out, &title, &pts, &ds.labels, &ds.class_names)?;
    let flat: Vec<f32> = pts.iter().flatten().copied().collect();
    crate::interop::write_npy(&flat, pts.len(), 2, &npy)?;
    println!("t-SNE of {} points ({d}-d features) in {:.1} s -> {} and {}", pts.len(), t0.elapsed().as_secs_f64(), a.out.display(), npy.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_last_blocks_fits_the_backbone() {
        let (vit, resnet) = (ArchConfig::parse("vit_tiny").unwrap(), ArchConfig::parse("resnet18").unwrap());
        assert_eq!(n_last_blocks(None, &vit).unwrap(), 4);
        assert_eq!(n_last_blocks(Some(12), &vit).unwrap(), 12);
        assert_eq!(n_last_blocks(Some(0), &vit).unwrap_err().to_string(), "--n-last-blocks: expected 1 to 12 (the ViT's blocks), got 0");
        assert!(n_last_blocks(Some(13), &vit).is_err());
        assert_eq!(n_last_blocks(None, &resnet).unwrap(), 1);
        assert!(n_last_blocks(Some(2), &resnet).unwrap_err().to_string().starts_with("--n-last-blocks: only for ViT backbones"));
    }
}
