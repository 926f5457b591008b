use super::*;
use tch::{nn, Device, Kind, Tensor};

fn build(arch: &str, c: i64) -> (nn::VarStore, Backbone) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let b = Backbone::new(&vs.root(), &ArchConfig::parse(arch).unwrap(), c).unwrap();
    (vs, b)
}

fn trainable(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

#[test]
fn parameter_counts_match_torchvision_and_timm() {
    // torchvision resnet50 without fc: 25,557,032 - 2048*1000 - 1000
    assert_eq!(trainable(&build("resnet50", 3).0), 23_508_032);
    // torchvision resnet18 / resnet34 without fc (11,689,512 and 21,797,672 with it)
    assert_eq!(trainable(&build("resnet18", 3).0), 11_689_512 - 513_000);
    assert_eq!(trainable(&build("resnet34", 3).0), 21_797_672 - 513_000);
    // timm / DINO vit_small_patch16_224 without head
    assert_eq!(trainable(&build("vit_small", 3).0), 21_665_664);
    // vit_tiny_patch16_224 (5,717,416 with its 192*1000+1000 head), vit_base (86,567,656 with head)
    assert_eq!(trainable(&build("vit_tiny", 3).0), 5_717_416 - 193_000);
    assert_eq!(trainable(&build("vit_base", 3).0), 86_567_656 - 769_000);
}

#[test]
fn torchvision_and_timm_names() {
    let (vs, _) = build("resnet50", 3);
    let names: std::collections::HashSet<String> = vs.variables().into_keys().collect();
    for n in ["conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer4.2.conv3.weight", "layer3.5.bn2.bias"] {
        assert!(names.contains(n), "{n}");
    }
    let (vs, _) = build("vit_small", 3);
    let names: std::collections::HashSet<String> = vs.variables().into_keys().collect();
    for n in ["cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.11.attn.qkv.bias", "blocks.0.mlp.fc2.weight", "norm.weight"] {
        assert!(names.contains(n), "{n}");
    }
    assert_eq!(vs.variables()["pos_embed"].size(), vec![1, 197, 384]);
}

#[test]
fn output_shapes_for_small_images_and_grey_input() {
    let (_, r) = build("resnet18:small_stem=true,width=16", 1);
    let y = r.forward_t(&Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu)), false);
    assert_eq!(y.size(), vec![2, 128]);
    let (_, v) = build("vit_tiny:patch_size=4,img_size=28,depth=2", 3);
    // native 28 px and a smaller 12 px local crop (interpolated position embeddings)
    for side in [28, 12] {
        let y = v.forward_t(&Tensor::randn([3, 3, side, side], (Kind::Float, Device::Cpu)), true);
        assert_eq!(y.size(), vec![3, 192]);
    }
    let a = v.as_vit().unwrap().last_self_attention(&Tensor::randn([1, 3, 28, 28], (Kind::Float, Device::Cpu)));
    assert_eq!(a.size(), vec![1, 3, 50, 50]);
    let rows = a.sum_dim_intlist(-1, false, Kind::Float);
    assert!(rows.allclose(&Tensor::ones_like(&rows), 1e-5, 1e-5, false));
}

#[test]
fn batchnorm_train_and_eval_differ_and_update_stats() {
    let (vs, r) = build("resnet18:small_stem=true,width=8", 3);
    let x = Tensor::randn([4, 3, 16, 16], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
    let before = vs.variables()["bn1.running_mean"].copy();
    let e1 = tch::no_grad(|| r.forward_t(&x, false));
    assert!(vs.variables()["bn1.running_mean"].equal(&before), "eval must not touch running stats");
    let t = tch::no_grad(|| r.forward_t(&x, true));
    assert!(!vs.variables()["bn1.running_mean"].equal(&before), "train updates running stats");
    assert!(!t.allclose(&e1, 1e-4, 1e-4, false));
    // eval mode is deterministic and per-sample: one image alone gives the same features
    let e2 = tch::no_grad(|| r.forward_t(&x, false));
    let single = tch::no_grad(|| r.forward_t(&x.narrow(0, 1, 1), false));
    assert!(e2.narrow(0, 1, 1).allclose(&single, 1e-5, 1e-5, false));
}

#[test]
fn pos_embed_interpolation_is_identity_at_native_size() {
    let (vs, v) = build("vit_tiny:patch_size=4,img_size=28,depth=1", 3);
    let v = v.as_vit().unwrap();
    assert!(v.interpolate_pos_embed(7, 7).equal(&vs.variables()["pos_embed"]));
    let small = v.interpolate_pos_embed(3, 3);
    assert_eq!(small.size(), vec![1, 10, 192]);
    // the class position is carried over untouched
    assert!(small.narrow(1, 0, 1).equal(&vs.variables()["pos_embed"].narrow(1, 0, 1)));
}

#[test]
fn arch_strings_and_errors() {
    let a = ArchConfig::parse("vit_small:patch_size=8,img_size=32,depth=4,drop_path=0.0").unwrap();
    assert_eq!((a.patch_size, a.img_size, a.vit_dims()), (8, 32, (384, 4, 6)));
    assert!(ArchConfig::parse("resnet51").unwrap_err().to_string().contains("unknown architecture"));
    assert!(ArchConfig::parse("resnet18:depht=3").unwrap_err().to_string().contains("depht"));
    assert!(ArchConfig::parse("vit_small:heads=5").unwrap_err().to_string().contains("model.heads"));
}

/// Output of a one-block ViT and the gradient of a fixed function of it w.r.t. the input and
/// the qkv weight. `explicit` takes the attention path that writes softmax(q k^T / sqrt(d)) v
/// out (the one `svib attention` uses) instead of the fused kernel behind unbind.
fn vit_out_and_grads(v: &vit::Vit, vs: &nn::VarStore, x: &Tensor, explicit: bool) -> (Tensor, Tensor, Tensor) {
    let x = x.detach().set_requires_grad(true);
    let (t, _) = v.forward_tokens(&x, true, explicit);
    let w = Tensor::linspace(-1.0, 1.0, t.numel() as i64, (Kind::Float, Device::Cpu)).reshape(t.size());
    for mut t in vs.trainable_variables() {
        t.zero_grad();
    }
    (&t * w).sum(Kind::Float).backward();
    (t.detach(), x.grad().copy(), vs.variables()["blocks.0.attn.qkv.weight"].grad().copy())
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
}

#[test]
fn vit_fused_attention_and_bf16_agree_with_the_written_out_attention() {
    let (vs, mut b) = build("vit_tiny:dim=48,depth=1,heads=3,patch_size=4,img_size=16,drop_path=0", 1);
    let x = Tensor::randn([4, 1, 16, 16], (Kind::Float, Device::Cpu));
    let (t_ref, gx_ref, gw_ref) = vit_out_and_grads(b.as_vit().unwrap(), &vs, &x, true);
    // f32 fused kernel (q, k, v by unbind): the same numbers up to summation order (1e-5 seen)
    let (t, gx, gw) = vit_out_and_grads(b.as_vit().unwrap(), &vs, &x, false);
    for (name, a, r) in [("output", &t, &t_ref), ("input grad", &gx, &gx_ref), ("qkv grad", &gw, &gw_ref)] {
        assert!(rel_err(a, r) < 1e-4, "f32 {name}: {}", rel_err(a, r));
    }
    // bfloat16 projections (8-bit mantissa): within a few percent, and not bit-identical
    let Backbone::Vit(v) = &mut b else { unreachable!() };
    v.set_bf16(true);
    let (t, gx, gw) = vit_out_and_grads(v, &vs, &x, false);
    for (name, a, r) in [("output", &t, &t_ref), ("input grad", &gx, &gx_ref), ("qkv grad", &gw, &gw_ref)] {
        let e = rel_err(a, r);
        assert!(e < 3e-2 && e > 0.0, "bf16 {name}: {e}");
    }
}
