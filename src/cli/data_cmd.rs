//! `svib data info` and `svib models`.
use crate::data::{self, DataSpec, LoadOptions, Norm, Split};
use crate::models::{ArchConfig, Backbone};
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Reads both splits and prints sizes, image shape, classes and normalisation.
    Info {
        /// Data set: fashion-mnist | mnist:DIR | kmnist:DIR | idx:DIR | cifar10:DIR | cifar100:DIR | stl10:DIR | folder:DIR
        #[arg(long, default_value = "fashion-mnist")]
        data: DataSpec,
        /// ImageFolder: skip undecodable images (with a warning count) instead of failing.
        #[arg(long)]
        skip_corrupt: bool,
    },
}

pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Info { data, skip_corrupt } => {
            let opts = LoadOptions { skip_corrupt };
            let train = data::load(&data, Split::Train, &opts)?;
            let test = data::load(&data, Split::Test, &opts)?;
            let norm = Norm::for_dataset(&data, &train);
            let im = &train.images[0];
            println!("data set   {data}");
            println!("train      {} images", train.len());
            println!("test       {} images", test.len());
            println!("image      {}x{} px, {} channel(s)", im.w, im.h, train.channels());
            println!("classes    {}: {}", train.num_classes, train.class_names.join(", "));
            println!("mean/std   {:?} / {:?}", norm.mean, norm.std);
            Ok(())
        }
    }
}

pub fn list_models() -> Result<()> {
    println!("{:<10} {:>12}  notes", "arch", "parameters");
    for (name, note) in [
        ("resnet18", "torchvision names; options small_stem, width"),
        ("resnet34", "torchvision names; options small_stem, width"),
        ("resnet50", "torchvision names; options small_stem, width"),
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
