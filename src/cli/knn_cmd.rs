//! `svib knn`: weighted kNN on frozen features of a checkpoint, a random-init backbone, or raw pixels.
use super::eval_cmd::eval_prep_for;
use crate::data::{self, DataSpec, Norm};
use crate::eval::features::{backbone_features, labels, pixel_features};
use crate::eval::knn::{knn_classify, KnnResult};
use crate::models::ArchConfig;
use crate::train::rundir::RunDir;
use crate::train::source::load_backbone;
use anyhow::{ensure, Result};
use clap::{ArgGroup, Args};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("features").required(true).args(["checkpoint", "random_init", "raw_pixels"])), allow_negative_numbers = true)]
pub struct KnnArgs {
    /// Data set: fashion-mnist | mnist:DIR | kmnist:DIR | idx:DIR | cifar10:DIR | cifar100:DIR | stl10:DIR | folder:DIR | wds:DIR
    /// (default: a run's own data set, else fashion-mnist)
    #[arg(long)]
    pub data: Option<DataSpec>,
    /// A run directory or one of its checkpoints (the teacher backbone is evaluated), or backbone
    /// weights (.safetensors or .pth; torchvision/timm/DINO key layouts) together with --arch.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// A randomly initialised backbone of --arch (a baseline).
    #[arg(long, requires = "arch")]
    pub random_init: bool,
    /// The normalised pixels themselves as features (a baseline).
    #[arg(long)]
    pub raw_pixels: bool,
    /// Architecture: NAME[:key=value,...], e.g. resnet18:small_stem=true (see `svib models`).
    #[arg(long)]
    pub arch: Option<String>,
    /// Neighbours that vote.
    #[arg(long, default_value_t = 20)]
    pub k: i64,
    /// Vote weight exp(similarity / T).
    #[arg(long, default_value_t = 0.07)]
    pub temperature: f64,
    /// Print one JSON line {"top1", "top5", "k", "n_train", "n_test"} instead of text.
    #[arg(long)]
    pub json: bool,
    /// Side of the evaluation image (default: a run's own; else the short side of a typical image,
    /// the median of 64 spread over the set, 8 to 224).
    #[arg(long)]
    pub image_size: Option<u32>,
    /// Input channels: 1 or 3 (default: the data set's).
    #[arg(long)]
    pub channels: Option<u8>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// cpu | cuda | cuda:N | auto
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seed of the random initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// ImageFolder: skip undecodable images (with a warning count) instead of failing.
    #[arg(long)]
    pub skip_corrupt: bool,
    /// Use only the first N training images (quick checks).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Use only the first N test images (quick checks).
    #[arg(long)]
    pub limit_test: Option<usize>,
}

pub fn run(a: KnnArgs) -> Result<()> {
    check_ranges(&a)?;
    let device = crate::device::parse(&a.device)?;
    let arch = a.arch.as_deref().map(ArchConfig::parse).transpose()?;
    let (spec, train, test) = load_data(&a)?;
    let norm = Norm::for_dataset(&spec, &train);
    ensure!(!train.is_empty(), "--data: no training images");
    ensure!(!test.is_empty(), "--data: no test images");
    let channels = a.channels.unwrap_or(train.channels());
    ensure!(channels == 1 || channels == 3, "--channels: expected 1 or 3, got {channels}");
    let (ftrain, ftest) = if a.raw_pixels {
        let prep = eval_prep_for(None, a.image_size, channels, norm, &train)?;
        (pixel_features(&train, &prep, a.batch_size, device)?, pixel_features(&test, &prep, a.batch_size, device)?)
    } else {
        let ck = a.checkpoint.as_deref();
        ensure!(
            ck.is_none_or(RunDir::is_run) || arch.is_some(),
            "--checkpoint {}: not a run directory (no config.toml beside it), so --arch is needed to read it as backbone weights",
            ck.map_or(String::new(), |c| c.display().to_string())
        );
        let b = load_backbone(ck, arch.as_ref(), a.channels, channels, device, a.seed)?;
        // a run brings its own preprocessing (crop size, channels)
        let prep = eval_prep_for(b.run_config.as_ref(), a.image_size, channels, norm, &train)?;
        (backbone_features(&b.model, &train, &prep, a.batch_size, device)?, backbone_features(&b.model, &test, &prep, a.batch_size, device)?)
    };
    let num_classes = train.num_classes.max(test.num_classes) as i64;
    let r = knn_classify(&ftrain, &labels(&train, device), &ftest, &labels(&test, device), num_classes, a.k, a.temperature);
    print_result(&r, a.json);
    Ok(())
}

fn check_ranges(a: &KnnArgs) -> Result<()> {
    ensure!(a.k >= 1, "--k: expected at least 1, got {}", a.k);
    ensure!(a.k <= 100_000, "--k: expected at most 100000, got {}", a.k);
    ensure!(a.temperature.is_finite() && (1e-3..=1e3).contains(&a.temperature), "--temperature: expected a value in [0.001, 1000], got {}", a.temperature);
    ensure!((1..=65536).contains(&a.batch_size), "--batch-size: expected 1 to 65536, got {}", a.batch_size);
    ensure!(a.limit_train != Some(0), "--limit-train: expected at least 1 image, got 0");
    ensure!(a.limit_test != Some(0), "--limit-test: expected at least 1 image, got 0");
    if let Some(c) = a.checkpoint.as_deref() {
        crate::train::source::check_exists(c)?;
    }
    ensure!(a.image_size.is_none_or(|s| (8..=4096).contains(&s)), "--image-size: expected 8 to 4096 pixels, got {}", a.image_size.unwrap_or(0));
    Ok(())
}

/// The two splits: `--data`'s; without it, a run's own training images as its kNN evaluations
/// read them (`data.limit`, `data.skip_corrupt`), else Fashion-MNIST's.
fn load_data(a: &KnnArgs) -> Result<(DataSpec, data::Dataset, data::Dataset)> {
    let run = a.checkpoint.as_deref().filter(|c| a.data.is_none() && RunDir::is_run(c)).map(|c| RunDir::of(c).config()).transpose()?;
    let data = match (&a.data, &run) {
        (None, None) => Some(DataSpec::fashion_mnist()?),
        (d, _) => d.clone(),
    };
    let (spec, mut train, mut test) = super::eval_cmd::eval_splits(data.as_ref(), run.as_ref(), a.skip_corrupt)?;
    super::eval_cmd::limit_train(&mut train, a.limit_train);
    if let Some(n) = a.limit_test {
        test.truncate_noting(n, &format!("--limit-test {n}"), "the score then covers these classes only");
    }
    train.require_labels(&format!("--data {spec} (train)"))?;
    test.require_labels(&format!("--data {spec} (test)"))?;
    Ok((spec, train, test))
}

pub fn print_result(r: &KnnResult, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).expect("plain numbers serialise"));
    } else {
        println!("kNN-{} top-1 {:.2}  top-5 {:.2}  ({} train, {} test)", r.k, r.top1, r.top5, r.n_train, r.n_test);
    }
}
