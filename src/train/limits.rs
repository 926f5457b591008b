//! What a run will need, estimated from its configuration before anything is allocated, so that
//! a size that cannot fit (`gmm.k = 3000000000`, `augment.global_size = 60000`) is one clear error
//! instead of an allocation that dies. The estimate is a lower bound: parameters with their
//! teacher copy, gradients and optimiser state, the batch of crops, and the K-way posteriors of
//! every view; activations come on top.
use super::config::{Config, MethodConfig};
use anyhow::{ensure, Result};

/// Parameters of the backbone (torchvision / timm sizes, scaled by width).
fn backbone_params(cfg: &Config) -> f64 {
    let m = &cfg.model;
    match m.name.as_str() {
        "resnet18" => 11.2e6 * (m.width as f64 / 64.0).powi(2),
        "resnet34" => 21.3e6 * (m.width as f64 / 64.0).powi(2),
        "resnet50" => 23.5e6 * (m.width as f64 / 64.0).powi(2),
        _ => {
            let (dim, depth, _) = m.vit_dims();
            let (dim, patches) = (dim as f64, (m.img_size as f64 / m.patch_size as f64).powi(2));
            12.0 * depth as f64 * dim * dim + (m.patch_size as f64).powi(2) * 3.0 * dim + patches * dim
        }
    }
}

/// Output width of the backbone.
fn feature_dim(cfg: &Config) -> f64 {
    let m = &cfg.model;
    match m.name.as_str() {
        "resnet18" | "resnet34" => 8.0 * m.width as f64,
        "resnet50" => 32.0 * m.width as f64,
        _ => m.vit_dims().0 as f64,
    }
}

/// The names of the two parts that grow with the number of prototypes, by the key that sets it.
fn prototype_parts(m: &MethodConfig) -> (&'static str, &'static str) {
    match m {
        MethodConfig::Svib(_) => ("gmm.k x head.out (the means)", "gmm.k x train.batch_size (posteriors)"),
        MethodConfig::Dino(_) => ("dino.out_dim x head.out (the last layer)", "dino.out_dim x train.batch_size (outputs)"),
        MethodConfig::Swav(_) => ("swav.prototypes x head.out (the prototypes)", "swav.prototypes x train.batch_size (scores)"),
        _ => ("(no prototypes)", "head.out x train.batch_size (embeddings)"),
    }
}

/// (what drives it, bytes) for each part of the estimate.
pub fn memory_parts(cfg: &Config) -> Vec<(&'static str, f64)> {
    // methods without prototypes compare embeddings of width head.out
    let (h, k, a) = (&cfg.head, cfg.method.prototypes().unwrap_or(cfg.head.out) as f64, &cfg.augment);
    let (hidden, out) = (h.hidden as f64, h.out as f64);
    let head = feature_dim(cfg) * hidden + (h.layers as f64 - 2.0).max(0.0) * hidden * hidden + hidden * out;
    // student + teacher + gradient + two optimiser moments
    let params = 5.0 * 4.0 * (backbone_params(cfg) + head);
    let means = 5.0 * 4.0 * k * out;
    let views = 2.0 + a.local_crops as f64;
    let batch = cfg.train.batch_size as f64;
    let pixels = a.channels as f64 * (2.0 * (a.global_size as f64).powi(2) + a.local_crops as f64 * (a.local_size as f64).powi(2));
    // the batch being trained, the prefetched ones and those being made, as f32
    let held = crate::augment::loader::batches_held(cfg.train.prefetch, cfg.train.loader_threads);
    let crops = 4.0 * batch * pixels * held as f64;
    // student and teacher posteriors, their logarithms and gradients
    let posteriors = 4.0 * 4.0 * batch * (views + 2.0) * k;
    let (means_part, outputs_part) = prototype_parts(&cfg.method);
    vec![
        ("model.* / head.hidden / head.layers (parameters)", params),
        (means_part, if cfg.method.prototypes().is_some() { means } else { 0.0 }),
        ("augment.global_size / local_size x train.batch_size (crops)", crops),
        (outputs_part, posteriors),
    ]
}

/// An error naming the largest part when the estimate exceeds `available` bytes.
pub fn check_memory(cfg: &Config, available: f64) -> Result<()> {
    let parts = memory_parts(cfg);
    let total: f64 = parts.iter().map(|p| p.1).sum();
    let (largest, bytes) = parts.iter().copied().fold(("", 0.0), |m, p| if p.1 > m.1 { p } else { m });
    let gb = |b: f64| b / 1e9;
    ensure!(
        total <= available,
        "{largest}: this run needs at least {:.1} GB ({:.1} GB for these alone), this machine has {:.1} GB; lower them",
        gb(total),
        gb(bytes),
        gb(available)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_name_what_does_not_fit() {
        let mut cfg = crate::train::config::tiny_for_tests();
        check_memory(&cfg, 1e9).unwrap();
        // 1M components x 8 dims: 5 copies of 32 MB of means, and 1M-way posteriors of 4 views x 256 images
        cfg.svib_mut().unwrap().gmm.k = 1 << 20;
        cfg.train.batch_size = 256;
        let parts = memory_parts(&cfg);
        assert_eq!(parts[1].1, 5.0 * 4.0 * (1u64 << 20) as f64 * 8.0);
        assert_eq!(parts[3].1, 16.0 * 256.0 * 6.0 * (1u64 << 20) as f64);
        let e = check_memory(&cfg, 8e9).unwrap_err().to_string();
        assert!(e.starts_with("gmm.k x train.batch_size") && e.contains("8.0 GB"), "{e}");
        cfg.svib_mut().unwrap().gmm.k = 8;
        cfg.augment.global_size = 4096;
        let e = check_memory(&cfg, 8e9).unwrap_err().to_string();
        assert!(e.starts_with("augment.global_size"), "{e}");
    }
}
