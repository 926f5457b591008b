//! Heads shared by methods: DINO's projection MLP (names `head.mlp.N` as DINO's `nn.Sequential`)
//! and the GMM prototype layer whose means are normalised in the forward pass.
use crate::models::norm::BatchNorm;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

fn linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    nn::linear(p, i, o, nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, bs_init: Some(nn::Init::Const(0.0)), bias: true })
}

/// The hidden activation: GELU (DINO, SVIB) or ReLU (BYOL, MoCo v2, SwAV).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    Gelu,
    Relu,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    /// Hidden width of the projection MLP.
    pub hidden: i64,
    /// Output (bottleneck) dimension; z is L2-normalised.
    pub out: i64,
    /// Linear layers in the MLP (DINO: 3).
    pub layers: i64,
    /// BatchNorm after hidden layers (DINO: off for ViT).
    pub bn: bool,
    /// BatchNorm without affine parameters on the projection output, before the L2
    /// normalisation (SimSiam's projector). An architecture choice: the loss is unchanged.
    pub bn_out: bool,
    /// Hidden activation: gelu (DINO, SVIB) | relu (BYOL, MoCo v2, SwAV).
    pub act: Act,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig { hidden: 2048, out: 256, layers: 3, bn: false, bn_out: false, act: Act::Gelu }
    }
}

/// MLP: (Linear [BN] act) x (layers - 1), Linear [BN without affine, as SimSiam's projector];
/// numbered as DINO's nn.Sequential.
#[derive(Debug)]
pub struct ProjectionHead {
    linears: Vec<nn::Linear>,
    bns: Vec<Option<BatchNorm>>,
    out_bn: Option<BatchNorm>,
    act: Act,
}

impl ProjectionHead {
    pub fn new(p: &nn::Path, input: i64, hidden: i64, out: i64, layers: i64, bn: (bool, bool), act: Act) -> Self {
        let (bn, bn_out) = bn;
        let mp = p / "mlp";
        let mut idx = 0;
        let (mut linears, mut bns) = (vec![], vec![]);
        for l in 0..layers {
            let (i, o) = (if l == 0 { input } else { hidden }, if l == layers - 1 { out } else { hidden });
            linears.push(linear(&mp / idx.to_string(), i, o));
            idx += 1;
            if l != layers - 1 {
                bns.push(bn.then(|| {
                    let b = BatchNorm::new1d(&mp / idx.to_string(), o, Default::default());
                    idx += 1;
                    b
                }));
                idx += 1; // activation
            }
        }
        let out_bn = bn_out.then(|| {
            let c = nn::BatchNormConfig { affine: false, ..Default::default() };
            BatchNorm::new1d(&mp / idx.to_string(), out, c)
        });
        ProjectionHead { linears, bns, out_bn, act }
    }
}

impl ModuleT for ProjectionHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.shallow_clone();
        for (i, l) in self.linears.iter().enumerate() {
            y = y.apply(l);
            if let Some(bn) = self.bns.get(i) {
                if let Some(bn) = bn {
                    y = y.apply_t(bn, train);
                }
                y = match self.act {
                    Act::Gelu => y.gelu("none"),
                    Act::Relu => y.relu(),
                };
            }
        }
        match &self.out_bn {
            Some(bn) => y.apply_t(bn, train),
            None => y,
        }
    }
}

pub use crate::eval::features::l2n;

/// K prototype vectors `[K, D]`, stored unnormalised and normalised in the forward pass: SVIB's
/// GMM means (`gmm.means`), DINO's weight-normalised last layer (`weight_v`, with its gain fixed
/// at 1) and SwAV's prototypes are this one computation under three names.
#[derive(Debug)]
pub struct Prototypes {
    pub vectors: Tensor,
}

impl Prototypes {
    /// SVIB's GMM means, `gmm.means`.
    pub fn gmm(p: &nn::Path, k: i64, dim: i64) -> Self {
        Prototypes::named(&(p / "gmm"), "means", k, dim)
    }
    pub fn named(p: &nn::Path, name: &str, k: i64, dim: i64) -> Self {
        Prototypes { vectors: p.var(name, &[k, dim], nn::Init::Randn { mean: 0.0, stdev: 0.02 }) }
    }
    /// Cosine similarities `z . mu_k / |mu_k|` for unit-norm `z`: `[N, K]`.
    pub fn similarities(&self, z: &Tensor) -> Tensor {
        z.matmul(&l2n(&self.vectors).transpose(0, 1))
    }
}

impl Module for Prototypes {
    fn forward(&self, z: &Tensor) -> Tensor {
        self.similarities(z)
    }
}
