//! BatchNorm that can normalise with the statistics of the global batch of a distributed run
//! (PyTorch's `SyncBatchNorm`): every BatchNorm of svib's networks (ResNet backbones and MLP
//! heads) is this one module, with torchvision's parameter and buffer names.
use crate::dist;
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// A BatchNorm layer over `nn::BatchNorm`'s parameters and running statistics. In training mode
/// with synchronised statistics switched on ([`dist::set_sync_batch_norm`]) in a distributed run,
/// the batch mean and variance are the global batch's, through a differentiable all-reduce (the
/// gradient reaches every rank's inputs, as SyncBatchNorm's); otherwise libtorch's own batch norm.
#[derive(Debug)]
pub struct BatchNorm {
    inner: nn::BatchNorm,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    /// For `[N, C]` (or `[N, C, L]`) inputs, as `nn::batch_norm1d`.
    pub fn new1d(p: nn::Path, c: i64, config: nn::BatchNormConfig) -> BatchNorm {
        let (eps, momentum) = (config.eps, config.momentum);
        BatchNorm { inner: nn::batch_norm1d(p, c, config), eps, momentum }
    }

    /// For `[N, C, H, W]` inputs, as `nn::batch_norm2d`.
    pub fn new2d(p: nn::Path, c: i64, config: nn::BatchNormConfig) -> BatchNorm {
        let (eps, momentum) = (config.eps, config.momentum);
        BatchNorm { inner: nn::batch_norm2d(p, c, config), eps, momentum }
    }

    /// Batch norm with the global batch's statistics; updates the running statistics as
    /// SyncBatchNorm does (unbiased variance of the global batch).
    fn forward_synced(&self, x: &Tensor) -> Tensor {
        let c = x.size()[1];
        let dims: Vec<i64> = std::iter::once(0).chain(2..x.dim() as i64).collect();
        let mut shape = vec![1i64; x.dim()];
        shape[1] = c;
        let xf = x.to_kind(Kind::Float);
        // every rank holds the same number of images (the loader's equal shards)
        let count = (x.numel() as i64 / c) as f64 * dist::world().1 as f64;
        let mean = dist::sum_over_ranks_grad(&xf.sum_dim_intlist(dims.as_slice(), false, Kind::Float)) / count;
        let d = &xf - mean.view(shape.as_slice());
        let var = dist::sum_over_ranks_grad(&(&d * &d).sum_dim_intlist(dims.as_slice(), false, Kind::Float)) / count;
        tch::no_grad(|| {
            let m = self.momentum;
            let unbiased = &var * (count / (count - 1.0).max(1.0));
            let _ = self.inner.running_mean.shallow_clone().g_mul_scalar_(1.0 - m).g_add_(&(&mean * m));
            let _ = self.inner.running_var.shallow_clone().g_mul_scalar_(1.0 - m).g_add_(&(unbiased * m));
        });
        // (not in place: autograd keeps the intermediate products)
        let y = d * (var + self.eps).rsqrt().view(shape.as_slice());
        let y = match &self.inner.ws {
            Some(w) => y * w.view(shape.as_slice()),
            None => y,
        };
        let y = match &self.inner.bs {
            Some(b) => y + b.view(shape.as_slice()),
            None => y,
        };
        y.to_kind(x.kind())
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if train && dist::sync_batch_norm() {
            self.forward_synced(x)
        } else {
            self.inner.forward_t(x, train)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Without a group the synchronised path is the plain batch norm: outputs, input gradients
    /// and running statistics equal libtorch's kernel (so in a distributed run it differs from
    /// the one-process run only by where the sums are taken).
    #[test]
    fn synced_formula_equals_libtorch_batch_norm() {
        tch::manual_seed(3);
        for (dims, two_d) in [(vec![6i64, 4], false), (vec![3, 4, 5, 2], true)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = nn::BatchNormConfig { ws_init: nn::Init::Uniform { lo: 0.5, up: 1.5 }, bs_init: nn::Init::Uniform { lo: -1.0, up: 1.0 }, ..Default::default() };
            let (a, b) = if two_d {
                (BatchNorm::new2d(vs.root() / "a", 4, cfg), BatchNorm::new2d(vs.root() / "b", 4, cfg))
            } else {
                (BatchNorm::new1d(vs.root() / "a", 4, cfg), BatchNorm::new1d(vs.root() / "b", 4, cfg))
            };
            tch::no_grad(|| {
                b.inner.ws.as_ref().unwrap().shallow_clone().copy_(a.inner.ws.as_ref().unwrap());
                b.inner.bs.as_ref().unwrap().shallow_clone().copy_(a.inner.bs.as_ref().unwrap());
            });
            let x = (Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu)) * 3.0 + 1.0).set_requires_grad(true);
            let w = Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu));
            let ya = a.inner.forward_t(&x, true);
            let ga = Tensor::run_backward(&[(&ya * &w).sum(Kind::Float)], &[&x], false, false).remove(0);
            let yb = b.forward_synced(&x);
            let gb = Tensor::run_backward(&[(&yb * &w).sum(Kind::Float)], &[&x], false, false).remove(0);
            let close = |p: &Tensor, q: &Tensor| (p - q).abs().max().double_value(&[]);
            assert!(close(&ya, &yb) < 1e-5, "outputs differ by {}", close(&ya, &yb));
            assert!(close(&ga, &gb) < 1e-4, "input gradients differ by {}", close(&ga, &gb));
            assert!(close(&a.inner.running_mean, &b.inner.running_mean) < 1e-6);
            assert!(close(&a.inner.running_var, &b.inner.running_var) < 1e-5);
            assert!(close(&b.inner.running_mean, &Tensor::zeros([4], (Kind::Float, Device::Cpu))) > 1e-3, "the running mean moved");
        }
    }
}
