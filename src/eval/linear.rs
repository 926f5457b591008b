//! Linear probe (SPEC §5, DINO's eval_linear): one linear layer on frozen backbone features,
//! SGD with momentum 0.9, lr scaled by batch/256, cosine schedule to 0, no weight decay.
//! Without augmentation the features are computed once and cached; with it (RandomResizedCrop +
//! flip, the SPEC protocol) they are recomputed every epoch.
use crate::augment::supervised_batch;
use crate::data::Dataset;
use crate::eval::features::{pixel_batches, EvalPrep};
use crate::models::Backbone;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug)]
pub struct LinearOpts {
    pub epochs: usize,
    pub batch_size: usize,
    /// Base learning rate per 256 images.
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// RandomResizedCrop + flip on the training images (features recomputed every epoch).
    pub augment: bool,
    /// ViT: concatenate the [CLS] tokens of the last n blocks (DINO uses 4 for ViT-S).
    pub n_last_blocks: usize,
    pub seed: u64,
    pub quiet: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LinearResult {
    pub top1: f64,
    pub top5: f64,
    pub epochs: usize,
    pub feature_dim: i64,
    pub n_train: usize,
    pub n_test: usize,
    pub augment: bool,
    pub seconds: f64,
}

/// Frozen features of a batch: the pooled ResNet vector or the ViT's [CLS] token(s), unnormalised.
pub fn probe_features(model: &Backbone, x: &Tensor, n_last_blocks: usize) -> Tensor {
    tch::no_grad(|| match model.as_vit() {
        Some(vit) if n_last_blocks > 1 => Tensor::cat(&vit.last_blocks_cls(x, n_last_blocks), -1),
        _ => model.forward_t(x, false),
    })
}

fn all_features(model: &Backbone, ds: &Dataset, prep: &EvalPrep, n_last: usize, device: Device) -> Result<Tensor> {
    let parts: Vec<Tensor> = pixel_batches(ds, prep, 256).map(|x| Ok(probe_features(model, &x?.to_device(device), n_last))).collect::<Result<_>>()?;
    Ok(Tensor::cat(&parts, 0))
}

/// Top-1 and top-5 accuracy (%) of logits `[N, C]` against labels `[N]`.
pub fn topk_accuracy(logits: &Tensor, labels: &Tensor) -> (f64, f64) {
    let n = labels.size()[0] as f64;
    let k = logits.size()[1].min(5);
    let top = logits.topk(k, 1, true, true).1;
    let hit = top.eq_tensor(&labels.unsqueeze(1));
    let top1 = hit.narrow(1, 0, 1).sum(Kind::Float).double_value(&[]) / n * 100.0;
    let top5 = hit.any_dim(1, false).sum(Kind::Float).double_value(&[]) / n * 100.0;
    (top1, top5)
}

/// Trains a linear classifier on `[N, D]` features; returns it.
pub fn train_linear(
    features: impl Fn(usize) -> Result<Tensor>,
    n_train: usize,
    dim: i64,
    labels: &Tensor,
    classes: i64,
    opts: &LinearOpts,
    device: Device,
    pb: &ProgressBar,
) -> Result<nn::Linear> {
    let vs = nn::VarStore::new(device);
    tch::manual_seed(opts.seed as i64);
    let cfg = nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.01 }, bs_init: Some(nn::Init::Const(0.0)), bias: true };
    let fc = nn::linear(vs.root() / "linear", dim, classes, cfg);
    let lr0 = opts.lr * opts.batch_size as f64 / 256.0;
    let mut opt = nn::Sgd { momentum: opts.momentum, dampening: 0.0, wd: opts.weight_decay, nesterov: false }.build(&vs, lr0).expect("an SGD optimiser builds");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    for epoch in 0..opts.epochs {
        // cosine annealing per epoch to 0, as torch's CosineAnnealingLR(T_max = epochs)
        opt.set_lr(lr0 * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / opts.epochs as f64).cos()));
        let feats = features(epoch)?;
        let mut order: Vec<i64> = (0..n_train as i64).collect();
        order.shuffle(&mut rng);
        for chunk in order.chunks(opts.batch_size) {
            let idx = Tensor::from_slice(chunk).to_device(device);
            let logits = feats.index_select(0, &idx).apply(&fc);
            let loss = logits.cross_entropy_for_logits(&labels.index_select(0, &idx));
            opt.backward_step(&loss);
        }
        pb.inc(1);
    }
    Ok(fc)
}

/// The linear probe on `model` with train/test sets.
pub fn linear_probe(model: &Backbone, train: &Dataset, test: &Dataset, prep: &EvalPrep, opts: &LinearOpts, device: Device) -> Result<LinearResult> {
    let started = std::time::Instant::now();
    let pb = if opts.quiet { ProgressBar::hidden() } else { ProgressBar::new(opts.epochs as u64) };
    pb.set_style(ProgressStyle::with_template("{spinner} linear probe [{elapsed_precise}<{eta_precise}] {bar:30} epoch {pos}/{len}").expect("valid template"));
    let labels = Tensor::from_slice(&train.labels).to_device(device);
    let classes = train.num_classes.max(test.num_classes) as i64;
    let cached = (!opts.augment).then(|| all_features(model, train, prep, opts.n_last_blocks, device)).transpose()?;
    let dim = probe_features(model, &crate::eval::features::pixel_batch(train, &[0], prep)?.to_device(device), opts.n_last_blocks).size()[1];
    let features = |epoch: usize| -> Result<Tensor> {
        let Some(f) = &cached else { return augmented_features(model, train, prep, opts, epoch, device) };
        Ok(f.shallow_clone())
    };
    let fc = train_linear(features, train.len(), dim, &labels, classes, opts, device, &pb)?;
    pb.finish_and_clear();
    let test_feats = all_features(model, test, prep, opts.n_last_blocks, device)?;
    let logits = tch::no_grad(|| test_feats.apply(&fc));
    let (top1, top5) = topk_accuracy(&logits, &Tensor::from_slice(&test.labels).to_device(device));
    Ok(LinearResult {
        top1,
        top5,
        epochs: opts.epochs,
        feature_dim: dim,
        n_train: train.len(),
        n_test: test.len(),
        augment: opts.augment,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Features of the training images under the probe's augmentation of `epoch`.
fn augmented_features(model: &Backbone, train: &Dataset, prep: &EvalPrep, opts: &LinearOpts, epoch: usize, device: Device) -> Result<Tensor> {
    let idx: Vec<usize> = (0..train.len()).collect();
    let parts: Vec<Tensor> = idx
        .chunks(256)
        .map(|c| {
            let (buf, shape) = supervised_batch(train, c, prep.size, prep.channels, &prep.norm, [0.08, 1.0], opts.seed, epoch as u64)?;
            let x = Tensor::from_slice(&buf).reshape(shape.map(|d| d as i64)).to_device(device);
            Ok(probe_features(model, &x, opts.n_last_blocks))
        })
        .collect::<Result<_>>()?;
    Ok(Tensor::cat(&parts, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_accuracy_counts_by_hand() {
        // 3 samples, 6 classes; sample 0 right at top-1, sample 1 at rank 2, sample 2 at rank 6
        let logits = Tensor::from_slice(&[
            9.0f32, 1.0, 2.0, 3.0, 4.0, 5.0, //
            1.0, 2.0, 9.0, 3.0, 4.0, 5.0, //
            6.0, 5.0, 4.0, 3.0, 2.0, 1.0,
        ])
        .view([3, 6]);
        let labels = Tensor::from_slice(&[0i64, 5, 5]);
        let (t1, t5) = topk_accuracy(&logits, &labels);
        assert!((t1 - 100.0 / 3.0).abs() < 1e-9 && (t5 - 200.0 / 3.0).abs() < 1e-9, "{t1} {t5}");
    }

    #[test]
    fn learns_a_linearly_separable_problem() {
        // 4 classes, features = class centre + noise in 8 dims: a linear layer must reach 100%
        tch::manual_seed(0);
        let n = 400i64;
        let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(4);
        let centres = Tensor::eye(8, (Kind::Float, Device::Cpu)).narrow(0, 0, 4) * 3.0;
        let feats = centres.index_select(0, &labels) + Tensor::randn([n, 8], (Kind::Float, Device::Cpu)) * 0.3;
        let opts = LinearOpts { epochs: 30, batch_size: 64, lr: 0.1, momentum: 0.9, weight_decay: 0.0, augment: false, n_last_blocks: 1, seed: 1, quiet: true };
        let fc = train_linear(|_| Ok(feats.shallow_clone()), n as usize, 8, &labels, 4, &opts, Device::Cpu, &ProgressBar::hidden()).unwrap();
        let (t1, _) = topk_accuracy(&tch::no_grad(|| feats.apply(&fc)), &labels);
        assert_eq!(t1, 100.0);
        // shuffled labels are not linearly separable: far from 100%, so the check above can fail
        let wrong = labels.index_select(0, &Tensor::randperm(n, (Kind::Int64, Device::Cpu)));
        let fc = train_linear(|_| Ok(feats.shallow_clone()), n as usize, 8, &wrong, 4, &opts, Device::Cpu, &ProgressBar::hidden()).unwrap();
        let fit = topk_accuracy(&tch::no_grad(|| feats.apply(&fc)), &wrong).0;
        assert!(fit < 60.0, "{fit}");
    }
}
