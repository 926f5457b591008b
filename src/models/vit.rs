//! Vision Transformer with timm/DINO parameter names (`patch_embed.proj`, `cls_token`,
//! `pos_embed`, `blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`, `norm`), no head.
//! Position embeddings are interpolated to the input size (local crops are smaller than global
//! ones), as DINO's `interpolate_pos_encoding` does.
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

fn linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    // timm: trunc_normal_(std=.02) weights, zero bias
    nn::linear(p, i, o, nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, bs_init: Some(nn::Init::Const(0.0)), bias: true })
}

fn layer_norm(p: nn::Path, d: i64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![d], nn::LayerNormConfig { eps: 1e-6, ..Default::default() })
}

/// Stochastic depth: drops the residual branch per sample with probability `p` in training.
fn drop_path(x: Tensor, p: f64, train: bool) -> Tensor {
    if !train || p == 0.0 {
        return x;
    }
    let keep = 1.0 - p;
    let mask = Tensor::empty([x.size()[0], 1, 1], (x.kind(), x.device())).bernoulli_float_(keep);
    x * mask / keep
}

#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
    drop_path: f64,
    /// Linear layers in bfloat16 (attention, norms, residuals and the loss stay f32).
    bf16: bool,
}

/// `x W^T + b`, in bfloat16 when asked (the result stays bfloat16).
fn lin(x: &Tensor, l: &nn::Linear, bf16: bool) -> Tensor {
    if !bf16 {
        return x.apply(l);
    }
    let bf = Kind::BFloat16;
    x.to_kind(bf).linear(&l.ws.to_kind(bf), l.bs.as_ref().map(|b| b.to_kind(bf)))
}

impl Block {
    fn new(p: &nn::Path, dim: i64, heads: i64, mlp_ratio: f64, drop_path: f64) -> Block {
        let hidden = (dim as f64 * mlp_ratio) as i64;
        Block {
            norm1: layer_norm(p / "norm1", dim),
            qkv: linear(p / "attn" / "qkv", dim, 3 * dim),
            proj: linear(p / "attn" / "proj", dim, dim),
            norm2: layer_norm(p / "norm2", dim),
            fc1: linear(p / "mlp" / "fc1", dim, hidden),
            fc2: linear(p / "mlp" / "fc2", hidden, dim),
            heads,
            drop_path,
            bf16: false,
        }
    }

    /// Self-attention; with `want_attn` also the attention weights `[B, heads, N, N]`.
    fn attention(&self, x: &Tensor, want_attn: bool) -> (Tensor, Option<Tensor>) {
        let (b, n, d) = x.size3().unwrap();
        let hd = d / self.heads;
        // the attention weights (drawn by `svib attention`) are computed in f32
        let low = self.bf16 && !want_attn;
        let qkv = lin(x, &self.qkv, low).reshape([b, n, 3, self.heads, hd]);
        // libtorch's CPU flash-attention backward is ~7x slower in bfloat16 than in f32 (measured,
        // docs/PERFORMANCE.md), so attention itself runs in f32 around the bf16 projections
        let qkv = if low { qkv.to_kind(Kind::Float) } else { qkv };
        // unbind, not three selects (DINO's `qkv[0], qkv[1], qkv[2]`): the backward of each select
        // zero-fills a tensor the size of all of qkv; unbind's backward is one stack. Unbinding the
        // `3` axis in place (strided [B, H, N, hd] views; attention reads strides) rather than
        // after timm's permute makes that stack write the [B, N, 3·D] layout the qkv layer's
        // backward reads, instead of a permuted one that reshape must copy again
        let qkv: Vec<Tensor> = qkv.unbind(2).iter().map(|t| t.transpose(1, 2)).collect();
        let (q, k, v) = (&qkv[0], &qkv[1], &qkv[2]);
        let (out, attn) = if want_attn {
            let a = (q.matmul(&k.transpose(-2, -1)) * (hd as f64).powf(-0.5)).softmax(-1, Kind::Float);
            (a.matmul(v), Some(a))
        } else {
            (Tensor::scaled_dot_product_attention::<Tensor>(q, k, v, None, 0.0, false, None, false), None)
        };
        (lin(&out.transpose(1, 2).reshape([b, n, d]), &self.proj, low).to_kind(Kind::Float), attn)
    }

    fn forward(&self, x: &Tensor, train: bool, want_attn: bool) -> (Tensor, Option<Tensor>) {
        let (y, attn) = self.attention(&x.apply(&self.norm1), want_attn);
        let x = x + drop_path(y, self.drop_path, train);
        let y = lin(&lin(&x.apply(&self.norm2), &self.fc1, self.bf16).gelu("none"), &self.fc2, self.bf16).to_kind(Kind::Float);
        (&x + drop_path(y, self.drop_path, train), attn)
    }
}

#[derive(Debug)]
pub struct Vit {
    proj: nn::Conv2D,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    pub patch_size: i64,
    pub out_dim: i64,
    pub heads: i64,
}

impl Vit {
    /// `img_size` fixes the number of learned position embeddings (its patch grid).
    pub fn new(p: &nn::Path, in_channels: i64, img_size: i64, patch_size: i64, dim: i64, depth: i64, heads: i64, drop_path: f64) -> Vit {
        let grid = img_size / patch_size;
        let proj = nn::conv2d(
            p / "patch_embed" / "proj",
            in_channels,
            dim,
            patch_size,
            nn::ConvConfig { stride: patch_size, ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, bs_init: nn::Init::Const(0.0), ..Default::default() },
        );
        let cls_token = p.var("cls_token", &[1, 1, dim], nn::Init::Randn { mean: 0.0, stdev: 0.02 });
        let pos_embed = p.var("pos_embed", &[1, grid * grid + 1, dim], nn::Init::Randn { mean: 0.0, stdev: 0.02 });
        // DINO: drop-path rate grows linearly with depth
        let blocks = (0..depth).map(|i| Block::new(&(p / "blocks" / i.to_string()), dim, heads, 4.0, drop_path * i as f64 / (depth - 1).max(1) as f64)).collect();
        Vit { proj, cls_token, pos_embed, blocks, norm: layer_norm(p / "norm", dim), patch_size, out_dim: dim, heads }
    }

    /// Runs the blocks' linear layers in bfloat16 (f32 master weights and gradients).
    pub fn set_bf16(&mut self, on: bool) {
        for b in &mut self.blocks {
            b.bf16 = on;
        }
    }

    /// Position embeddings for an `h` x `w` patch grid (identity at the native grid).
    pub fn interpolate_pos_embed(&self, h: i64, w: i64) -> Tensor {
        let n = self.pos_embed.size()[1] - 1;
        let side = (n as f64).sqrt().round() as i64;
        if h == side && w == side {
            return self.pos_embed.shallow_clone();
        }
        let dim = self.out_dim;
        let cls = self.pos_embed.narrow(1, 0, 1);
        let patch = self.pos_embed.narrow(1, 1, n).reshape([1, side, side, dim]).permute([0, 3, 1, 2]);
        let patch = patch.upsample_bicubic2d([h, w], false, None, None).permute([0, 2, 3, 1]).reshape([1, h * w, dim]);
        Tensor::cat(&[cls, patch], 1)
    }

    fn tokens(&self, x: &Tensor) -> Tensor {
        let t = x.apply(&self.proj); // [B, D, h, w]
        let (b, _, h, w) = t.size4().unwrap();
        let t = t.flatten(2, -1).transpose(1, 2);
        let cls = self.cls_token.expand([b, 1, self.out_dim], false);
        Tensor::cat(&[cls, t], 1) + self.interpolate_pos_embed(h, w)
    }

    /// Token features after the final norm, `[B, 1 + patches, D]`; with `want_attn` also the last
    /// block's attention weights `[B, heads, N, N]`.
    pub fn forward_tokens(&self, x: &Tensor, train: bool, want_attn: bool) -> (Tensor, Option<Tensor>) {
        let mut t = self.tokens(x);
        let mut attn = None;
        let last = self.blocks.len() - 1;
        for (i, b) in self.blocks.iter().enumerate() {
            let (y, a) = b.forward(&t, train, want_attn && i == last);
            t = y;
            attn = a.or(attn);
        }
        (t.apply(&self.norm), attn)
    }

    /// The last block's attention weights for `x` (eval mode), `[B, heads, N, N]`.
    pub fn last_self_attention(&self, x: &Tensor) -> Tensor {
        self.forward_tokens(x, false, true).1.expect("the last block returns its attention")
    }

    /// The [CLS] tokens of the last `n` blocks (normalised), concatenated: DINO's linear-eval input.
    pub fn last_blocks_cls(&self, x: &Tensor, n: usize) -> Vec<Tensor> {
        let mut t = self.tokens(x);
        let mut out = vec![];
        let depth = self.blocks.len();
        for (i, b) in self.blocks.iter().enumerate() {
            t = b.forward(&t, false, false).0;
            if i + n >= depth {
                out.push(t.apply(&self.norm).select(1, 0));
            }
        }
        out
    }
}

impl ModuleT for Vit {
    /// The [CLS] token after the final norm, `[batch, dim]`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_tokens(x, train, false).0.select(1, 0)
    }
}
