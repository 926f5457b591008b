use super::*;
use crate::data::ImageU8;
use crate::methods::testing::Tiny;

fn tiny_cfg() -> SvibConfig {
    SvibConfig { gmm: GmmConfig { k: 6, ..Default::default() }, ..Default::default() }
}

fn new(cfg: &SvibConfig) -> Svib {
    Svib::new(cfg, &Tiny::new().shared(), Device::Cpu).unwrap()
}

fn views(b: i64) -> Vec<Tensor> {
    tch::manual_seed(5);
    let g = |s: i64| Tensor::randn([b, 1, s, s], (Kind::Float, Device::Cpu));
    vec![g(12), g(12), g(6), g(6)]
}

fn ctx(beta: f64) -> StepCtx {
    StepCtx { step: 0, total_steps: 10, epoch: 1, beta, teacher_momentum: 0.9 }
}

fn rows(t: &[[f64; 3]]) -> Tensor {
    Tensor::from_slice(&t.iter().flatten().map(|&v| v as f32).collect::<Vec<_>>()).view([-1, 3])
}

#[test]
fn consistency_ce_matches_hand_computation() {
    // one sample, K = 3; teacher views q0, q1; student views s0, s1, s2 (log-probabilities)
    let q = [[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]];
    let s = [[0.1f64, 0.7, 0.2], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]];
    let ce = |a: &[f64; 3], b: &[f64; 3]| -(0..3).map(|k| a[k] * b[k].ln()).sum::<f64>();
    // pairs (0,1) (0,2) (1,0) (1,2)
    let expect = (ce(&q[0], &s[1]) + ce(&q[0], &s[2]) + ce(&q[1], &s[0]) + ce(&q[1], &s[2])) / 4.0;
    let tq: Vec<Tensor> = q.iter().map(|r| rows(&[*r])).collect();
    let ts: Vec<Tensor> = s.iter().map(|r| rows(&[*r]).log()).collect();
    let got = consistency_ce(&tq, &ts).double_value(&[]);
    assert!((got - expect).abs() < 1e-6, "{got} vs {expect}");
}

#[test]
fn kl_against_uniform_and_marginal_priors() {
    // logits (0, ln 3, ln 6): p = (0.1, 0.3, 0.6)
    let logits = rows(&[[0.0, 3f64.ln(), 6f64.ln()]]);
    let p = [0.1, 0.3, 0.6];
    let uniform = p.iter().map(|v: &f64| v * (v * 3.0).ln()).sum::<f64>();
    let log_u = Tensor::full([1], -(3f64.ln()), (Kind::Float, Device::Cpu));
    assert!((kl_to_prior(&logits, &log_u).double_value(&[]) - uniform).abs() < 1e-6);
    // equals log K - H(p)
    let h = -p.iter().map(|v: &f64| v * v.ln()).sum::<f64>();
    assert!((uniform - (3f64.ln() - h)).abs() < 1e-12);
    let q = [0.2, 0.2, 0.6];
    let marginal = (0..3).map(|k| p[k] * (p[k] / q[k]).ln()).sum::<f64>();
    let log_q = rows(&[q]).log();
    assert!((kl_to_prior(&logits, &log_q).double_value(&[]) - marginal).abs() < 1e-6);
}

#[test]
fn loss_is_ce_plus_beta_kl_and_starts_near_log_k() {
    let mut m = new(&tiny_cfg());
    let out = m.loss(&views(4), &ctx(0.3));
    let (ce, kl) = (out.terms[0].1.double_value(&[]), out.terms[1].1.double_value(&[]));
    assert!((out.loss.double_value(&[]) - (ce + 0.3 * kl)).abs() < 1e-5);
    assert!(kl >= 0.0 && kl <= 6f64.ln() + 1e-6);
    // Gibbs: the cross-entropy is at least the teacher's own entropy
    let h_teacher = out.stats.iter().find(|s| s.0 == "h_sample").unwrap().1;
    assert!(ce >= h_teacher - 1e-5, "{ce} < {h_teacher}");
}

#[test]
fn sinkhorn_teacher_balances_assignments_that_softmax_puts_on_one_component() {
    // teacher logits = sim - centre with sigma_t = 1; a centre of -20 on component 0 makes its
    // logit exceed every other by at least 18 whatever the features, so the plain posterior
    // sends every image to component 0; Sinkhorn-Knopp spreads them over all six
    let marginal_entropy = |iters: usize| {
        tch::manual_seed(0);
        let mut cfg = tiny_cfg();
        cfg.teacher.sinkhorn_iters = iters;
        cfg.teacher.center = true;
        cfg.gmm.sigma_teacher = 1.0;
        let mut m = new(&cfg);
        let center = Tensor::from_slice(&[-20.0f32, 0.0, 0.0, 0.0, 0.0, 0.0]).view([1, 6]);
        m.load_state(&[("center".into(), center)]).unwrap();
        let out = m.loss(&views(4), &ctx(0.0));
        let stat = |n: &str| out.stats.iter().find(|s| s.0 == n).unwrap().1;
        (stat("h_target_marginal_rel"), stat("h_marginal_rel"))
    };
    let ((plain, posterior_a), (balanced, posterior_b)) = (marginal_entropy(0), marginal_entropy(30));
    assert!(plain < 0.01, "softmax: {plain}");
    assert!(balanced > 0.9, "sinkhorn: {balanced}");
    // the collapse statistics read the GMM posterior, which neither centring nor Sinkhorn changes
    assert_eq!(posterior_a, posterior_b);
}

#[test]
fn kl_sends_gradient_into_means_only_when_shared() {
    let m = &mut new(&tiny_cfg());
    let out = m.loss(&views(4), &ctx(0.5));
    out.terms[1].1.backward();
    let g = m.means().grad();
    assert!(g.defined() && g.norm().double_value(&[]) > 0.0, "KL must reach the shared means");
    // but not the student's backbone: the teacher's features carry no gradient
    for (name, t) in m.student().variables() {
        if name.starts_with("backbone.") && t.requires_grad() {
            let g = t.grad();
            assert!(!g.defined() || g.norm().double_value(&[]) == 0.0, "{name}");
        }
    }
    let mut cfg = tiny_cfg();
    cfg.gmm.shared = false;
    let mut m = new(&cfg);
    let out = m.loss(&views(4), &ctx(0.5));
    assert!(!out.terms[1].1.requires_grad(), "with an EMA copy of the means the KL term is a constant");
}

#[test]
fn ema_update_follows_the_formula() {
    let mut m = new(&tiny_cfg());
    let name = "head.mlp.0.weight";
    let s = m.student().variables()[name].shallow_clone();
    let t0 = m.teacher().unwrap().variables()[name].copy();
    assert!(t0.equal(&s), "the teacher starts as a copy of the student");
    tch::no_grad(|| s.shallow_clone().copy_(&(&s + 1.0)));
    m.after_step(&ctx(0.1)); // momentum 0.9
    let t1 = m.teacher().unwrap().variables()[name].copy();
    let expect = &t0 * 0.9 + &s * 0.1;
    assert!(t1.allclose(&expect, 1e-6, 1e-6, false));
}

#[test]
fn reinit_sets_means_to_normalised_teacher_features() {
    let cfg = tiny_cfg();
    let mut m = new(&cfg);
    let images: Vec<ImageU8> = (0..10).map(|i| ImageU8::new(12, 12, 1, crate::data::testutil::bytes(144, i))).collect();
    let ds = Dataset { images, labels: vec![0; 10], num_classes: 1, class_names: vec![], ..Default::default() };
    let prep = EvalPrep { size: 12, channels: 1, norm: crate::data::Norm { mean: vec![0.5], std: vec![0.25] }, reduced_decode: true };
    let reset = m.end_epoch(0, &ds, &prep, 1).unwrap();
    assert_eq!(reset, vec!["gmm.means".to_string()]);
    let z = m.teacher_embed(&pixel_batch(&ds, &(0..10).collect::<Vec<_>>(), &prep).unwrap());
    let means = m.means();
    assert_eq!(means.size(), vec![6, 8]);
    // every mean is one of the teacher's unit features (K = 6 <= 10 images: no noise)
    let cos = means.matmul(&z.transpose(0, 1)); // [6, 10]
    let best = cos.max_dim(1, false).0;
    assert!(best.allclose(&Tensor::ones([6], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false), "{best}");
    let norms = means.norm_scalaropt_dim(2, [1], false);
    assert!(norms.allclose(&Tensor::ones([6], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
    // with fewer images than components: drawn with replacement plus noise, still unit norm
    let mut cfg = tiny_cfg();
    cfg.gmm.k = 25;
    let mut m = new(&cfg);
    m.end_epoch(0, &ds, &prep, 1).unwrap();
    let norms = m.means().norm_scalaropt_dim(2, [1], false);
    assert!(norms.allclose(&Tensor::ones([25], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
    cfg.gmm.reinit = Reinit::Never;
    let mut m = new(&cfg);
    let before = m.means().copy();
    assert!(m.end_epoch(0, &ds, &prep, 1).unwrap().is_empty());
    assert!(m.means().equal(&before));
}

#[test]
fn reinit_from_views_takes_the_k_newest_teacher_features_of_first_views() {
    let mut cfg = tiny_cfg();
    cfg.gmm.reinit_source = ReinitSource::Views;
    let mut m = new(&cfg);
    let c = StepCtx { teacher_momentum: 1.0, ..ctx(0.5) };
    let (a, b) = (views(4), views(4).iter().map(|v| v.flip([3])).collect::<Vec<_>>());
    let first_views = |v: &[Tensor], m: &Svib| tch::no_grad(|| m.teacher.embed(&resolution_groups(&v[..2]), true)).narrow(0, 0, 4);
    let (za, zb) = (first_views(&a, &m), first_views(&b, &m));
    let images: Vec<ImageU8> = (0..3).map(|i| ImageU8::new(12, 12, 1, crate::data::testutil::bytes(144, i))).collect();
    let ds = Dataset { images, labels: vec![0; 3], num_classes: 1, class_names: vec![], ..Default::default() };
    let prep = EvalPrep { size: 12, channels: 1, norm: crate::data::Norm { mean: vec![0.5], std: vec![0.25] }, reduced_decode: true };
    let _ = m.loss(&a, &c);
    m.after_step(&c);
    // 4 rows < K = 6: sampled images (3 of them, drawn with replacement plus noise), not the queue
    m.end_epoch(0, &ds, &prep, 1).unwrap();
    assert!(!m.means().narrow(0, 0, 4).allclose(&za, 1e-3, 1e-3, false));
    let _ = m.loss(&b, &c);
    m.after_step(&c);
    // K = 6: the last 2 of step a's 4 first views, then step b's 4
    let want = Tensor::cat(&[za.narrow(0, 2, 2), zb], 0);
    let state = m.state();
    assert_eq!(state.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["center", "prior", "recent_views"]);
    m.end_epoch(0, &ds, &prep, 1).unwrap();
    assert!(m.means().allclose(&want, 1e-5, 1e-6, false), "{} vs {want}", m.means());
    // a resumed run has the same queue
    let mut resumed = new(&cfg);
    resumed.load_state(&state).unwrap();
    resumed.end_epoch(0, &ds, &prep, 1).unwrap();
    assert!(resumed.means().allclose(&want, 1e-5, 1e-6, false));
}
