//! ResNet-18/34/50 with torchvision's parameter names (`conv1`, `bn1`, `layer1.0.conv1`,
//! `layer1.0.downsample.0`, …), without the classifier. Options: a small-image stem (3x3 stride-1
//! conv, no max-pool, as solo-learn does for CIFAR) and a base width other than 64.
use super::norm::BatchNorm;
use tch::nn::{self, ModuleT};
use tch::Tensor;

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> nn::Conv2D {
    // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), no bias
    let ws_init = nn::Init::Kaiming { dist: nn::init::NormalOrUniform::Normal, fan: nn::init::FanInOut::FanOut, non_linearity: nn::init::NonLinearity::ReLU };
    nn::conv2d(p, cin, cout, k, nn::ConvConfig { stride, padding, bias: false, ws_init, ..Default::default() })
}

fn bn(p: nn::Path, c: i64) -> BatchNorm {
    BatchNorm::new2d(p, c, Default::default())
}

#[derive(Debug)]
struct Block {
    convs: Vec<nn::Conv2D>,
    bns: Vec<BatchNorm>,
    downsample: Option<(nn::Conv2D, BatchNorm)>,
}

impl Block {
    fn new(p: &nn::Path, cin: i64, planes: i64, stride: i64, bottleneck: bool) -> Block {
        let expansion = if bottleneck { 4 } else { 1 };
        let cout = planes * expansion;
        let (convs, bns) = if bottleneck {
            (
                vec![conv(p / "conv1", cin, planes, 1, 1, 0), conv(p / "conv2", planes, planes, 3, stride, 1), conv(p / "conv3", planes, cout, 1, 1, 0)],
                vec![bn(p / "bn1", planes), bn(p / "bn2", planes), bn(p / "bn3", cout)],
            )
        } else {
            (vec![conv(p / "conv1", cin, planes, 3, stride, 1), conv(p / "conv2", planes, planes, 3, 1, 1)], vec![bn(p / "bn1", planes), bn(p / "bn2", planes)])
        };
        let downsample = (stride != 1 || cin != cout).then(|| (conv(p / "downsample" / "0", cin, cout, 1, stride, 0), bn(p / "downsample" / "1", cout)));
        Block { convs, bns, downsample }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.shallow_clone();
        let last = self.convs.len() - 1;
        for (i, (c, b)) in self.convs.iter().zip(&self.bns).enumerate() {
            y = y.apply(c).apply_t(b, train);
            if i != last {
                y = y.relu();
            }
        }
        let identity = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (y + identity).relu()
    }
}

#[derive(Debug)]
pub struct ResNet {
    conv1: nn::Conv2D,
    bn1: BatchNorm,
    small_stem: bool,
    layers: Vec<Vec<Block>>,
    pub out_dim: i64,
}

impl ResNet {
    /// `depth` 18, 34 or 50; `small_stem`: the stride of a 3x3 first conv without max-pool
    /// (None: torchvision's 7x7 stride-2 conv and max-pool).
    pub fn new(p: &nn::Path, depth: u32, in_channels: i64, width: i64, small_stem: Option<i64>) -> ResNet {
        let (counts, bottleneck) = match depth {
            18 => ([2, 2, 2, 2], false),
            34 => ([3, 4, 6, 3], false),
            50 => ([3, 4, 6, 3], true),
            _ => panic!("resnet depth {depth} is not one of 18, 34, 50"),
        };
        let conv1 = match small_stem {
            Some(stride) => conv(p / "conv1", in_channels, width, 3, stride, 1),
            None => conv(p / "conv1", in_channels, width, 7, 2, 3),
        };
        let bn1 = bn(p / "bn1", width);
        let expansion = if bottleneck { 4 } else { 1 };
        let mut cin = width;
        let mut layers = vec![];
        for (li, &n) in counts.iter().enumerate() {
            let planes = width << li;
            let stride = if li == 0 { 1 } else { 2 };
            let lp = p / format!("layer{}", li + 1);
            let blocks = (0..n)
                .map(|bi| {
                    let b = Block::new(&(&lp / bi.to_string()), cin, planes, if bi == 0 { stride } else { 1 }, bottleneck);
                    cin = planes * expansion;
                    b
                })
                .collect();
            layers.push(blocks);
        }
        ResNet { conv1, bn1, small_stem: small_stem.is_some(), layers, out_dim: cin }
    }
}

impl ModuleT for ResNet {
    /// Global-average-pooled features `[batch, out_dim]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        if !self.small_stem {
            y = y.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for layer in &self.layers {
            for b in layer {
                y = b.forward_t(&y, train);
            }
        }
        y.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}
