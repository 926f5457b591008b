//! `svib augment preview` and `svib augment bench`.
use crate::augment::{augment_batch, preview, MultiCropConfig};
use crate::data::{self, DataSpec, LoadOptions, Norm, Split};
use anyhow::{ensure, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct RecipeArgs {
    /// Start from a preset's or config file's views (`augment.*`, e.g. fmnist-cpu); the flags
    /// below change them. Without it: DINO's views (2 global + 10 local crops, colour).
    #[arg(long)]
    config: Option<String>,
    /// Override a key of --config, as `svib train --set` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Side of the 2 global crops (default: the image side up to 224).
    #[arg(long)]
    global_size: Option<u32>,
    /// Side of the local crops (default: 96/224 of the global side).
    #[arg(long)]
    local_size: Option<u32>,
    /// Number of local crops (default 10).
    #[arg(long)]
    local_crops: Option<usize>,
    /// Output channels: 3, or 1 for grey (default 3).
    #[arg(long)]
    channels: Option<u8>,
    /// Random rotation of up to this many degrees either way (`augment.rotate`).
    #[arg(long)]
    rotate: Option<f32>,
    /// Random shift of up to this fraction of the side (`augment.translate`).
    #[arg(long)]
    translate: Option<f32>,
}

impl RecipeArgs {
    /// The data set to read (`--data`, else --config's, else Fashion-MNIST) and --config's views.
    fn resolve(&self, data: Option<DataSpec>) -> Result<(DataSpec, Option<MultiCropConfig>)> {
        let Some(name) = &self.config else {
            ensure!(self.set.is_empty(), "--set: needs --config (the preset or config file whose keys it changes)");
            let data = match data {
                Some(d) => d,
                None => DataSpec::fashion_mnist()?,
            };
            return Ok((data, None));
        };
        let data = data.map(|d| d.to_string());
        let cfg = super::train_cmd::resolve(name, None, data.as_deref(), None, &self.set)?;
        let spec: DataSpec = cfg.data.spec.parse().map_err(|e| anyhow::anyhow!("data.spec: {e}"))?;
        Ok((spec, Some(cfg.augment)))
    }

    /// The views: `base` (a config's) or DINO's for images of `side` px, with the flags given.
    fn config(&self, side: u32, base: Option<MultiCropConfig>) -> Result<MultiCropConfig> {
        let mut c = base.unwrap_or_else(|| {
            let mut c = MultiCropConfig::for_image_side(side);
            (c.local_crops, c.channels) = (10, 3);
            c
        });
        if let Some(g) = self.global_size {
            c.global_size = g;
            if self.local_size.is_none() {
                c.local_size = ((g as f32 * 96.0 / 224.0).round() as u32).max(8);
            }
        }
        c.local_size = self.local_size.unwrap_or(c.local_size);
        c.local_crops = self.local_crops.unwrap_or(c.local_crops);
        c.channels = self.channels.unwrap_or(c.channels);
        c.rotate = self.rotate.unwrap_or(c.rotate);
        c.translate = self.translate.unwrap_or(c.translate);
        c.validate().map_err(|e| anyhow::anyhow!(flag_names(&e.to_string())))?;
        Ok(c)
    }
}

/// A recipe error names the flag the user gave, not the config key it fills.
fn flag_names(msg: &str) -> String {
    let keys = ["global_size", "local_size", "local_crops", "channels", "rotate", "translate"];
    let key = keys.iter().find(|k| msg.starts_with(&format!("augment.{k}:")));
    key.map_or_else(|| msg.to_string(), |k| format!("--{}{}", k.replace('_', "-"), &msg["augment.".len() + k.len()..]))
}

#[derive(Subcommand, Debug)]
pub enum AugmentCommand {
    /// Writes a PNG grid of one image's crops (rows: draws; columns: source, global 1, global 2, locals).
    Preview {
        /// Data set (default: --config's, else fashion-mnist).
        #[arg(long)]
        data: Option<DataSpec>,
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
        /// Which training image.
        #[arg(long, default_value_t = 0)]
        index: usize,
        /// How many draws (rows).
        #[arg(long, default_value_t = 6)]
        rows: usize,
        /// Pixels per grid cell.
        #[arg(long, default_value_t = 112)]
        cell: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        recipe: RecipeArgs,
    },
    /// Measures augmentation throughput (crops/s) on the training split.
    Bench {
        /// Data set (default: --config's, else fashion-mnist).
        #[arg(long)]
        data: Option<DataSpec>,
        /// Images per batch.
        #[arg(long, default_value_t = 256)]
        batch_size: usize,
        /// Batches to time (after one warm-up batch).
        #[arg(long, default_value_t = 20)]
        batches: usize,
        #[command(flatten)]
        recipe: RecipeArgs,
    },
}

pub fn run(cmd: AugmentCommand) -> Result<()> {
    match cmd {
        AugmentCommand::Preview { data, out, index, rows, cell, seed, recipe } => {
            let (data, base) = recipe.resolve(data)?;
            let ds = data::load(&data, Split::Train, &LoadOptions::default())?;
            ensure!(index < ds.len(), "--index {index}: the training split has {} images", ds.len());
            ensure!((1..=64).contains(&rows), "--rows: expected 1 to 64 draws, got {rows}");
            ensure!((16..=1024).contains(&cell), "--cell: expected 16 to 1024 pixels, got {cell}");
            ensure!(out.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")), "--out {}: expected a .png file name (the grid is written as PNG)", out.display());
            let img = ds.image(index)?;
            // DINO's views for this image's side; at least 16 px for a thumbnail
            let cfg = recipe.config(img.w.min(img.h).clamp(16, 224), base)?;
            preview::write_grid(&img, &cfg, rows, seed, cell, &out)?;
            println!("wrote {} ({} rows x {} views + source)", out.display(), rows, cfg.views().len());
            Ok(())
        }
        AugmentCommand::Bench { data, batch_size, batches, recipe } => {
            ensure!(batch_size >= 1 && batches >= 1, "--batch-size/--batches: expected at least 1, got {batch_size}/{batches}");
            let (data, base) = recipe.resolve(data)?;
            let ds = data::load(&data, Split::Train, &LoadOptions::default())?;
            ensure!(!ds.is_empty(), "--data: no training images");
            let cfg = recipe.config(ds.typical_side()?.max(16), base)?;
            check_batch_memory(&cfg, batch_size)?;
            let norm = Norm::for_dataset(&data, &ds);
            ensure!(batch_size * (batches + 1) <= ds.len(), "--batch-size x (--batches + 1) exceeds the {} training images", ds.len());
            let idx: Vec<usize> = (0..ds.len()).collect();
            augment_batch(&ds, &idx[..batch_size], &cfg, &norm, 0, 0)?;
            let t = std::time::Instant::now();
            for b in 1..=batches {
                std::hint::black_box(augment_batch(&ds, &idx[b * batch_size..(b + 1) * batch_size], &cfg, &norm, 0, 0)?);
            }
            let s = t.elapsed().as_secs_f64();
            let crops = (batches * batch_size * cfg.views().len()) as f64;
            println!(
                "{:.0} crops/s, {:.0} images/s ({} views each: 2 x {} px + {} x {} px) on {} thread(s)",
                crops / s,
                (batches * batch_size) as f64 / s,
                cfg.views().len(),
                cfg.global_size,
                cfg.local_crops,
                cfg.local_size,
                rayon::current_num_threads()
            );
            Ok(())
        }
    }
}

/// A batch of crops (f32, with the u8 crops they are made from) must fit in half this machine's
/// memory: `augment bench` has no training run's estimate in front of it.
fn check_batch_memory(cfg: &MultiCropConfig, batch_size: usize) -> Result<()> {
    let pixels: f64 = cfg.views().iter().map(|v| (v.size as f64).powi(2)).sum::<f64>() * cfg.channels as f64;
    let need = batch_size as f64 * pixels * 5.0;
    if let Some(have) = crate::util::physical_memory().filter(|h| need > h / 2.0) {
        anyhow::bail!(
            "--batch-size {batch_size} with these crops needs {:.1} GB per batch, more than half of this machine's {:.1} GB; lower --batch-size, the crop sizes or --local-crops",
            need / 1e9,
            have / 1e9
        );
    }
    Ok(())
}
