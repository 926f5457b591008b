//! Frozen features of a data set under the deterministic evaluation preprocessing.
use crate::augment::eval_batch;
use crate::data::{Dataset, Norm};
use crate::models::Backbone;
use anyhow::Result;
use tch::nn::ModuleT;
use tch::{Device, Tensor};

pub use crate::augment::EvalPrep;

/// The images `indices` of `ds`, preprocessed, as one `[n, c, size, size]` tensor.
/// Fails when an image of a streamed set does not decode.
pub fn pixel_batch(ds: &Dataset, indices: &[usize], prep: &EvalPrep) -> Result<Tensor> {
    let (buf, shape) = eval_batch(ds, indices, prep)?;
    Ok(Tensor::from_slice(&buf).reshape(shape.map(|d| d as i64)))
}

/// Normalised pixel batches of `ds`, `batch` at a time, as `[n, c, size, size]` tensors.
pub fn pixel_batches<'a>(ds: &'a Dataset, prep: &'a EvalPrep, batch: usize) -> impl Iterator<Item = Result<Tensor>> + 'a {
    (0..ds.len()).step_by(batch.max(1)).map(move |s| pixel_batch(ds, &(s..(s + batch).min(ds.len())).collect::<Vec<_>>(), prep))
}

/// Rows scaled to unit L2 norm.
pub fn l2n(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}

/// Backbone features (eval mode, no gradient), L2-normalised, `[n, out_dim]` on `device`.
pub fn backbone_features(model: &Backbone, ds: &Dataset, prep: &EvalPrep, batch: usize, device: Device) -> Result<Tensor> {
    let min = model.min_input();
    anyhow::ensure!(prep.size as i64 >= min, "image size {} px is smaller than the backbone's patch ({min} px): pass a larger --image-size or use a ResNet", prep.size);
    let _guard = tch::no_grad_guard();
    normalised_rows(ds, prep, batch, |x| model.forward_t(&x.to_device(device), false))
}

/// The pixels themselves, scaled to [0, 1] without mean subtraction, as features (the raw-pixel
/// kNN baseline), L2-normalised.
pub fn pixel_features(ds: &Dataset, prep: &EvalPrep, batch: usize, device: Device) -> Result<Tensor> {
    let c = prep.channels as usize;
    let raw = EvalPrep { norm: Norm { mean: vec![0.0; c], std: vec![1.0; c] }, ..prep.clone() };
    normalised_rows(ds, &raw, batch, |x| x.flatten(1, -1).to_device(device))
}

/// `f` of every evaluation batch of `ds`, concatenated and L2-normalised row by row.
fn normalised_rows(ds: &Dataset, prep: &EvalPrep, batch: usize, f: impl Fn(Tensor) -> Tensor) -> Result<Tensor> {
    anyhow::ensure!(!ds.is_empty(), "no images to compute features of");
    let parts: Vec<Tensor> = pixel_batches(ds, prep, batch).map(|x| Ok(f(x?))).collect::<Result<_>>()?;
    Ok(l2n(&Tensor::cat(&parts, 0)))
}

/// Labels as an int64 tensor on `device`.
pub fn labels(ds: &Dataset, device: Device) -> Tensor {
    Tensor::from_slice(&ds.labels).to_device(device)
}
