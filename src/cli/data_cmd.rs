//! `svib data info`, `svib data synth`, `svib data pack` and `svib models`.
use crate::data::{self, DataSpec, LoadOptions, Norm, Split};
use crate::models::{ArchConfig, Backbone};
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Indexes both splits and prints sizes, image shape, classes and normalisation (a folder or
    /// shard set's images are decoded only for the shape and statistics, so an image that does
    /// not decode may show only when training reads it; --skip-corrupt checks every one).
    Info {
        /// Data set: fashion-mnist | mnist:DIR | kmnist:DIR | idx:DIR | cifar10:DIR | cifar100:DIR | stl10:DIR | folder:DIR | wds:DIR
        #[arg(long, default_value = "fashion-mnist")]
        data: DataSpec,
        /// ImageFolder and tar shards: skip undecodable images (with a warning count) instead of failing.
        #[arg(long)]
        skip_corrupt: bool,
    },
    /// Writes a data set as WebDataset-style tar shards (OUT/train/shard-NNNNNN.tar, OUT/val/…,
    /// OUT/classes.txt; KEY.jpg + KEY.cls per image) for `--data wds:OUT`. Files are copied as they
    /// are; images held in memory are written as PNG. The order is kept, so the shards train as
    /// the source does.
    Pack {
        /// The source data set (any --data spec).
        #[arg(long)]
        data: DataSpec,
        /// A new (or empty) folder.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Images per shard.
        #[arg(long, default_value_t = 1000)]
        shard_size: usize,
        /// Leave out images that do not decode (each decoded once) instead of copying them.
        #[arg(long)]
        skip_corrupt: bool,
    },
    /// Writes an ImageFolder of procedural JPEGs at photo size (OUT/train/<class>/, OUT/val/<class>/),
    /// one shape per class over random backgrounds, for benchmarks and tests.
    Synth {
        #[arg(long)]
        out: std::path::PathBuf,
        /// Training images (spread evenly over the classes).
        #[arg(long, default_value_t = 5000)]
        train: usize,
        /// Validation images.
        #[arg(long, default_value_t = 1000)]
        val: usize,
        #[arg(long, default_value_t = 10)]
        classes: usize,
        /// WIDTHxHEIGHT in pixels.
        #[arg(long, default_value = "500x375")]
        size: String,
        /// JPEG quality (1-100).
        #[arg(long, default_value_t = 90)]
        quality: u8,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Info { data, skip_corrupt } => {
            let opts = LoadOptions { skip_corrupt };
            let train = data::load(&data, Split::Train, &opts)?;
            let test = data::load(&data, Split::Test, &opts)?;
            let norm = Norm::for_dataset(&data, &train);
            anyhow::ensure!(!train.is_empty(), "{data}: no training images");
            println!("data set   {data}");
            println!("train      {} images", train.len());
            println!("test       {} images", test.len());
            println!("image      {}, {} channel(s)", image_sizes(&train)?, train.channels());
            println!("classes    {}: {}", train.num_classes, shown_names(&with_counts(&train)));
            println!("mean/std   {:?} / {:?}", norm.mean, norm.std);
            Ok(())
        }
        DataCommand::Pack { data, out, shard_size, skip_corrupt } => {
            let t = std::time::Instant::now();
            let sum = data::pack::pack(&data, &out, shard_size, &LoadOptions { skip_corrupt })?;
            let parts: Vec<String> = sum.splits.iter().map(|(s, n, k)| format!("{s}: {n} images in {k} shard(s)")).collect();
            println!("packed {data} into {} ({}) in {:.1} s; train with --data wds:{}", out.display(), parts.join(", "), t.elapsed().as_secs_f64(), out.display());
            Ok(())
        }
        DataCommand::Synth { out, train, val, classes, size, quality, seed } => {
            let (width, height) = size
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
                .ok_or_else(|| anyhow::anyhow!("--size: expected WIDTHxHEIGHT (e.g. 500x375), got `{size}`"))?;
            let o = data::synth::SynthOptions { train, val, classes, width, height, quality, seed };
            let t = std::time::Instant::now();
            let n = data::synth::write(&out, &o)?;
            println!("wrote {n} JPEGs ({width}x{height}, quality {quality}, {classes} classes) under {} in {:.1} s", out.display(), t.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

pub fn list_models() -> Result<()> {
    println!("{:<10} {:>12}  notes", "arch", "parameters");
    for (name, note) in [
        ("resnet18", "torchvision names; options small_stem, stem_stride, width"),
        ("resnet34", "torchvision names; options small_stem, stem_stride, width"),
        ("resnet50", "torchvision names; options small_stem, stem_stride, width"),
        ("vit_tiny", "timm names, dim 192, 3 heads; options patch_size, img_size, dim, depth, heads, drop_path"),
        ("vit_small", "timm names, dim 384, 6 heads (ViT-S/16 at 224 px)"),
        ("vit_base", "timm names, dim 768, 12 heads"),
    ] {
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _ = Backbone::new(&vs.root(), &ArchConfig::parse(name)?, 3)?;
        let n: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        println!("{name:<10} {n:>12}  {note}");
    }
    println!("\nOn the command line: NAME[:key=value,...], e.g. resnet18:small_stem=true,width=32 or vit_tiny:patch_size=4,img_size=28,depth=6");
    Ok(())
}

/// The commonest size among up to 64 images spread over the set, and the range of short sides
/// where they differ.
fn image_sizes(train: &data::Dataset) -> Result<String> {
    let sizes = train.spread_sizes(64)?;
    let mut counts = std::collections::BTreeMap::new();
    sizes.iter().for_each(|s| *counts.entry(*s).or_insert(0) += 1);
    let ((w, h), n) = counts.iter().max_by_key(|(_, n)| **n).map(|(s, n)| (*s, *n)).unwrap_or(((0, 0), 0));
    if n == sizes.len() {
        return Ok(format!("{w}x{h} px"));
    }
    let short: Vec<u32> = sizes.iter().map(|(w, h)| *w.min(h)).collect();
    let (lo, hi) = (short.iter().min().unwrap_or(&0), short.iter().max().unwrap_or(&0));
    Ok(format!("{w}x{h} px in {n} of {} sampled, short sides {lo} to {hi} px", sizes.len()))
}

/// Class names with their training images: `name (N)`.
fn with_counts(train: &data::Dataset) -> Vec<String> {
    let mut counts = vec![0usize; train.num_classes];
    train.labels.iter().filter_map(|&l| usize::try_from(l).ok()).for_each(|l| {
        if let Some(c) = counts.get_mut(l) {
            *c += 1;
        }
    });
    train.class_names.iter().zip(counts).map(|(n, c)| format!("{n} ({c})")).collect()
}

/// Class names for one line: control characters escaped, at most the first 50.
fn shown_names(names: &[String]) -> String {
    let mut s: Vec<String> = names.iter().take(50).map(|n| if n.chars().any(char::is_control) { n.escape_debug().to_string() } else { n.clone() }).collect();
    if names.len() > 50 {
        s.push(format!("… ({} more)", names.len() - 50));
    }
    s.join(", ")
}
