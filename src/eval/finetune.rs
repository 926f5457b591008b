//! Semi-supervised fine-tuning (SPEC §5, SimCLR's protocol): the whole network plus a linear
//! layer trained on a seeded class-balanced fraction of the labelled training set, SGD with
//! momentum 0.9 and a cosine schedule, RandomResizedCrop + flip; top-1/top-5 on the test split.
use crate::augment::supervised_batch;
use crate::data::Dataset;
use crate::eval::features::{pixel_batches, EvalPrep};
use crate::eval::linear::topk_accuracy;
use crate::models::Backbone;
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug)]
pub struct FinetuneOpts {
    pub fraction: f64,
    pub epochs: usize,
    pub batch_size: usize,
    /// Base learning rate per 256 images.
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub seed: u64,
    pub quiet: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FinetuneResult {
    pub top1: f64,
    pub top5: f64,
    pub n_labelled: usize,
    pub seed: u64,
    pub seconds: f64,
}

/// A class-balanced subset: round(fraction x class size) images of every class (at least one),
/// drawn with `seed`; sorted indices.
pub fn balanced_subset(labels: &[i64], fraction: f64, seed: u64) -> Vec<usize> {
    let classes = labels.iter().copied().max().map_or(0, |m| m + 1) as usize;
    let mut by_class: Vec<Vec<usize>> = vec![vec![]; classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5E41_5E41);
    let mut out = vec![];
    for mut members in by_class.into_iter().filter(|m| !m.is_empty()) {
        let take = ((members.len() as f64 * fraction).round() as usize).clamp(1, members.len());
        members.shuffle(&mut rng);
        out.extend_from_slice(&members[..take]);
    }
    out.sort_unstable();
    out
}

/// How many classes `fraction` gives less than one image (`balanced_subset` gives them one).
pub fn classes_below_one(labels: &[i64], fraction: f64) -> usize {
    let mut sizes = std::collections::BTreeMap::<i64, usize>::new();
    for &l in labels {
        *sizes.entry(l).or_default() += 1;
    }
    sizes.values().filter(|&&n| (n as f64 * fraction).round() < 1.0).count()
}

/// Fine-tunes `model` (whose variables are in `vs`) with a new linear layer `fc` in `vs`.
pub fn finetune(vs: &nn::VarStore, model: &Backbone, train: &Dataset, test: &Dataset, prep: &EvalPrep, opts: &FinetuneOpts, device: Device) -> anyhow::Result<FinetuneResult> {
    let started = std::time::Instant::now();
    let subset = balanced_subset(&train.labels, opts.fraction, opts.seed);
    let classes = train.num_classes.max(test.num_classes) as i64;
    tch::manual_seed(opts.seed as i64);
    let fc = nn::linear(
        vs.root() / "fc",
        model.out_dim(),
        classes,
        nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.01 }, bs_init: Some(nn::Init::Const(0.0)), bias: true },
    );
    let bs = opts.batch_size.min(subset.len());
    let lr0 = opts.lr * bs as f64 / 256.0;
    let mut opt = nn::Sgd { momentum: opts.momentum, dampening: 0.0, wd: opts.weight_decay, nesterov: false }.build(vs, lr0).expect("an SGD optimiser builds");
    let steps_per_epoch = subset.len().div_ceil(bs);
    let total = opts.epochs * steps_per_epoch;
    let pb = if opts.quiet { ProgressBar::hidden() } else { ProgressBar::new(total as u64) };
    pb.set_style(ProgressStyle::with_template("{spinner} fine-tune [{elapsed_precise}<{eta_precise}] {bar:30} {pos}/{len} {msg}").expect("valid template"));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let mut step = 0;
    for epoch in 0..opts.epochs {
        let mut order = subset.clone();
        order.shuffle(&mut rng);
        for chunk in order.chunks(bs) {
            opt.set_lr(lr0 * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos()));
            let (buf, shape) = supervised_batch(train, chunk, prep.size, prep.channels, &prep.norm, [0.08, 1.0], opts.seed, epoch as u64)?;
            let x = Tensor::from_slice(&buf).reshape(shape.map(|d| d as i64)).to_device(device);
            let y = Tensor::from_slice(&chunk.iter().map(|&i| train.labels[i]).collect::<Vec<_>>()).to_device(device);
            let loss = model.forward_t(&x, true).apply(&fc).cross_entropy_for_logits(&y);
            opt.backward_step(&loss);
            step += 1;
            pb.inc(1);
            if step % 10 == 0 {
                pb.set_message(format!("loss {:.3}", loss.double_value(&[])));
            }
        }
    }
    pb.finish_and_clear();
    let logits: Vec<Tensor> = tch::no_grad(|| pixel_batches(test, prep, 256).map(|x| Ok(model.forward_t(&x?.to_device(device), false).apply(&fc))).collect::<anyhow::Result<_>>())?;
    let (top1, top5) = topk_accuracy(&Tensor::cat(&logits, 0), &Tensor::from_slice(&test.labels).to_device(device).to_kind(Kind::Int64));
    Ok(FinetuneResult { top1, top5, n_labelled: subset.len(), seed: opts.seed, seconds: started.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_is_class_balanced_seeded_and_distinct() {
        // 3 classes of 100, 50, 10 images
        let labels: Vec<i64> = (0..160)
            .map(|i| {
                if i < 100 {
                    0
                } else if i < 150 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let s = balanced_subset(&labels, 0.1, 3);
        let count = |c: i64| s.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!((count(0), count(1), count(2)), (10, 5, 1));
        assert_eq!(s, balanced_subset(&labels, 0.1, 3));
        assert_ne!(s, balanced_subset(&labels, 0.1, 4));
        let mut d = s.clone();
        d.dedup();
        assert_eq!(d.len(), s.len());
        // 10 x 0.1 is one image; 3 x 0.1 rounds to none, and balanced_subset gives it one
        let small: Vec<i64> = [vec![0; 10], vec![1; 3]].concat();
        assert_eq!((classes_below_one(&small, 0.1), classes_below_one(&small, 1e-300), classes_below_one(&small, 0.5)), (1, 2, 0));
        assert_eq!(balanced_subset(&small, 1e-300, 0).len(), 2);
    }
}
