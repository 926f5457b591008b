//! Backbones: ResNet (torchvision names) and ViT (timm/DINO names), chosen by [`ArchConfig`].
pub mod norm;
pub mod resnet;
pub mod vit;
pub mod weights;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Which backbone, and its size options. The TOML table `[model]`; on the command line
/// `NAME[:key=value,...]`, e.g. `resnet18:small_stem=true,width=32` or `vit_tiny:patch_size=4,img_size=28`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchConfig {
    /// resnet18 | resnet34 | resnet50 | vit_tiny | vit_small | vit_base
    pub name: String,
    /// ResNet: 3x3 stride-1 first conv and no max-pool, for 28-64 px images.
    pub small_stem: bool,
    /// ResNet with small_stem: stride of that first conv (1, or 2 to halve every feature map).
    pub stem_stride: i64,
    /// ResNet: channels of the first stage (torchvision: 64).
    pub width: i64,
    /// ViT: patch side in pixels.
    pub patch_size: i64,
    /// ViT: the image side the learned position embeddings are laid out for.
    pub img_size: i64,
    /// ViT: overrides of the named size (embedding dim, blocks, heads).
    pub dim: Option<i64>,
    pub depth: Option<i64>,
    pub heads: Option<i64>,
    /// ViT: stochastic-depth rate of the last block.
    pub drop_path: f64,
    /// ViT: the linear layers (qkv, proj, MLP) in bfloat16, attention itself in f32 (libtorch's bf16
    /// CPU attention backward is slow); for CPUs with AMX (slower than f32 on AVX-512-BF16 alone), or
    /// CUDA. Weights, gradients, norms, residuals and the loss stay f32. See docs/PERFORMANCE.md.
    pub bf16: bool,
    /// Distributed runs: every BatchNorm of the networks (backbone and heads) normalises with the
    /// statistics of the global batch (PyTorch's SyncBatchNorm, as `convert_sync_batchnorm`
    /// applies it); off, each rank uses its own part of the batch, as DDP without it.
    pub sync_bn: bool,
}

impl Default for ArchConfig {
    fn default() -> Self {
        ArchConfig {
            name: "vit_small".into(),
            small_stem: false,
            stem_stride: 1,
            width: 64,
            patch_size: 16,
            img_size: 224,
            dim: None,
            depth: None,
            heads: None,
            drop_path: 0.1,
            bf16: false,
            sync_bn: false,
        }
    }
}

pub const ARCH_NAMES: &str = "resnet18, resnet34, resnet50, vit_tiny, vit_small, vit_base";

impl ArchConfig {
    /// Parses `NAME[:key=value,...]`.
    pub fn parse(s: &str) -> Result<ArchConfig> {
        let (name, opts) = s.split_once(':').unwrap_or((s, ""));
        let mut doc = toml::Table::new();
        doc.insert("name".into(), toml::Value::String(name.into()));
        for kv in opts.split(',').filter(|kv| !kv.is_empty()) {
            let Some((k, v)) = kv.split_once('=') else { bail!("--arch `{s}`: expected key=value after the colon, got `{kv}`") };
            let value: toml::Value =
                v.parse::<toml::Value>().or_else(|_| toml::from_str::<toml::Table>(&format!("v = {v}")).map(|t| t["v"].clone())).unwrap_or(toml::Value::String(v.into()));
            doc.insert(k.into(), value);
        }
        let cfg: ArchConfig = toml::Value::Table(doc).try_into().map_err(|e| anyhow::anyhow!("--arch `{s}`: {}", e.to_string().trim()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Whether NHWC (channels-last) convolutions are safe on the CPU for this backbone: oneDNN's
    /// NHWC backward of a 1x1 stride-2 convolution with fewer input channels than its block (8
    /// on AVX2, 16 on AVX-512) hangs, crashes or miscomputes (oneDNN#6035; seen here as a hang
    /// at width 4). The first such convolution of a ResNet (layer2's downsample) takes `width`
    /// channels (ResNet-18/34) or 4 x `width` (ResNet-50). ViTs have no convolution to worry about.
    pub fn cpu_channels_last_safe(&self) -> bool {
        let first_strided_1x1 = if self.name == "resnet50" { 4 * self.width } else { self.width };
        self.is_vit() || first_strided_1x1 >= 16
    }

    pub fn is_vit(&self) -> bool {
        self.name.starts_with("vit")
    }

    /// (dim, depth, heads) of a ViT.
    pub fn vit_dims(&self) -> (i64, i64, i64) {
        let (d, h) = match self.name.as_str() {
            "vit_tiny" => (192, 3),
            "vit_base" => (768, 12),
            _ => (384, 6),
        };
        let dim = self.dim.unwrap_or(d);
        (dim, self.depth.unwrap_or(12), self.heads.unwrap_or(if self.dim.is_some() { (dim / 64).max(1) } else { h }))
    }

    pub fn validate(&self) -> Result<()> {
        match self.name.as_str() {
            "resnet18" | "resnet34" | "resnet50" => {
                ensure!((1..=1024).contains(&self.width), "model.width: expected 1 to 1024, got {}", self.width);
                ensure!(self.stem_stride == 1 || self.stem_stride == 2, "model.stem_stride: expected 1 or 2, got {}", self.stem_stride);
                ensure!((0.0..1.0).contains(&self.drop_path), "model.drop_path: expected a rate in [0, 1), got {}", crate::util::Num(self.drop_path));
            }
            "vit_tiny" | "vit_small" | "vit_base" => {
                let (dim, depth, heads) = self.vit_dims();
                ensure!((1..=1024).contains(&self.patch_size), "model.patch_size: expected 1 to 1024, got {}", self.patch_size);
                ensure!(self.img_size <= 8192, "model.img_size: expected at most 8192, got {}", self.img_size);
                ensure!((1..=8192).contains(&dim), "model.dim: expected 1 to 8192, got {dim}");
                ensure!(depth <= 256, "model.depth: expected at most 256, got {depth}");
                ensure!(self.img_size >= self.patch_size, "model.img_size: expected >= patch_size ({}), got {}", self.patch_size, self.img_size);
                ensure!(depth >= 1, "model.depth: expected >= 1, got {depth}");
                ensure!(heads >= 1 && dim % heads == 0, "model.heads: {heads} does not divide model.dim {dim}");
                ensure!((0.0..1.0).contains(&self.drop_path), "model.drop_path: expected a rate in [0, 1), got {}", crate::util::Num(self.drop_path));
            }
            other => bail!("model.name: unknown architecture `{other}`, expected one of {ARCH_NAMES}"),
        }
        Ok(())
    }
}

/// A backbone: images `[B, C, H, W]` to features `[B, out_dim]`.
#[derive(Debug)]
pub enum Backbone {
    ResNet(resnet::ResNet),
    Vit(vit::Vit),
}

impl Backbone {
    /// Creates the backbone's variables under `p` (names as torchvision / timm).
    pub fn new(p: &nn::Path, cfg: &ArchConfig, in_channels: i64) -> Result<Backbone> {
        cfg.validate()?;
        Ok(match cfg.name.as_str() {
            "resnet18" => Backbone::ResNet(resnet::ResNet::new(p, 18, in_channels, cfg.width, cfg.small_stem.then_some(cfg.stem_stride))),
            "resnet34" => Backbone::ResNet(resnet::ResNet::new(p, 34, in_channels, cfg.width, cfg.small_stem.then_some(cfg.stem_stride))),
            "resnet50" => Backbone::ResNet(resnet::ResNet::new(p, 50, in_channels, cfg.width, cfg.small_stem.then_some(cfg.stem_stride))),
            _ => {
                let (dim, depth, heads) = cfg.vit_dims();
                let mut v = vit::Vit::new(p, in_channels, cfg.img_size, cfg.patch_size, dim, depth, heads, cfg.drop_path);
                v.set_bf16(cfg.bf16);
                Backbone::Vit(v)
            }
        })
    }

    pub fn out_dim(&self) -> i64 {
        match self {
            Backbone::ResNet(r) => r.out_dim,
            Backbone::Vit(v) => v.out_dim,
        }
    }

    /// The smallest image side the backbone accepts: one patch for a ViT.
    pub fn min_input(&self) -> i64 {
        match self {
            Backbone::ResNet(_) => 1,
            Backbone::Vit(v) => v.patch_size,
        }
    }

    pub fn as_vit(&self) -> Option<&vit::Vit> {
        match self {
            Backbone::Vit(v) => Some(v),
            _ => None,
        }
    }
}

impl ModuleT for Backbone {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Backbone::ResNet(r) => r.forward_t(x, train),
            Backbone::Vit(v) => v.forward_t(x, train),
        }
    }
}

#[cfg(test)]
mod tests;
