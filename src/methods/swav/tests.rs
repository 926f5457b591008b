use super::*;

#[test]
fn sinkhorn_matches_hand_computation() {
    // B = 2 samples, K = 2 prototypes, one iteration, eps = 1
    let s = [[0.0f64, 1.0], [2.0, 0.5]];
    // Q[k][b] = exp(s[b][k]) / total
    let mut q = [[0.0f64; 2]; 2];
    for k in 0..2 {
        for b in 0..2 {
            q[k][b] = s[b][k].exp();
        }
    }
    let total: f64 = q.iter().flatten().sum();
    q.iter_mut().flatten().for_each(|v| *v /= total);
    for row in q.iter_mut() {
        let r: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= r * 2.0);
    }
    for b in 0..2 {
        let c = q[0][b] + q[1][b];
        for row in q.iter_mut() {
            row[b] /= c * 2.0;
        }
    }
    let scores = Tensor::from_slice(&s.concat().iter().map(|&v| v as f32).collect::<Vec<_>>()).view([2, 2]);
    let got = sinkhorn(&scores, 1.0, 1);
    for b in 0..2 {
        for k in 0..2 {
            assert!((got.double_value(&[b, k]) - q[k as usize][b as usize] * 2.0).abs() < 1e-6);
        }
    }
}

#[test]
fn sinkhorn_codes_are_distributions_that_spread_over_prototypes() {
    tch::manual_seed(0);
    // cosine similarities of random 128-d unit vectors have a spread of about 0.1
    let scores = Tensor::randn([64, 8], (Kind::Float, Device::Cpu)) * 0.1;
    let spread = |q: &Tensor| {
        let cols = q.sum_dim_intlist(0, false, Kind::Float);
        cols.max().double_value(&[]) - cols.min().double_value(&[])
    };
    let q = sinkhorn(&scores, 0.05, 3);
    let rows = q.sum_dim_intlist(1, false, Kind::Float);
    assert!(rows.allclose(&Tensor::ones([64], (Kind::Float, Device::Cpu)), 1e-4, 1e-4, false));
    // three iterations already spread the mass more evenly than a plain softmax ...
    let plain = (&scores / 0.05).softmax(-1, Kind::Float);
    assert!(spread(&q) < 0.5 * spread(&plain), "{} vs {}", spread(&q), spread(&plain));
    // ... and iterating converges to the equal partition: B / K = 8 samples' worth per prototype
    let cols = sinkhorn(&scores, 0.05, 200).sum_dim_intlist(0, false, Kind::Float);
    assert!(cols.allclose(&Tensor::full([8], 8.0, (Kind::Float, Device::Cpu)), 0.0, 0.05, false), "{cols}");
}

#[test]
fn prototypes_are_renormalised_and_frozen_first_and_queue_fills() {
    let cfg = SwavConfig { swav: SwavOptions { prototypes: 8, queue: 6, queue_start_epoch: 0, ..Default::default() } };
    let mut m = Swav::new(&cfg, &crate::methods::testing::Tiny::new().shared(), Device::Cpu).unwrap();
    let ctx = StepCtx { step: 0, total_steps: 3, epoch: 0, beta: 0.0, teacher_momentum: 1.0 };
    for step in 0..2 {
        tch::manual_seed(step);
        let views: Vec<Tensor> = [12, 12, 6].iter().map(|&s| Tensor::randn([4, 1, s, s], (Kind::Float, Device::Cpu))).collect();
        let out = m.loss(&views, &ctx);
        assert!(out.loss.double_value(&[]).is_finite());
    }
    let norms = m.prototypes.vectors.norm_scalaropt_dim(2, [1], false);
    assert!(norms.allclose(&Tensor::ones([cfg.swav.prototypes], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
    // 2 steps x 4 embeddings into 6 slots: full, every row a unit vector
    let q = m.queue.as_ref().unwrap();
    let qn = q.norm_scalaropt_dim(2, [2], false);
    assert!(qn.allclose(&Tensor::ones([2, 6], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
    assert_eq!(m.frozen(&StepCtx { step: 0, total_steps: 10, epoch: 0, beta: 0.0, teacher_momentum: 0.9 }), vec![PROTOTYPES.to_string()]);
    assert!(m.frozen(&StepCtx { step: 0, total_steps: 10, epoch: 1, beta: 0.0, teacher_momentum: 0.9 }).is_empty());
}

#[test]
fn sinkhorn_stays_finite_where_exp_of_the_scores_overflows_f32() {
    // scores / epsilon up to 400: exp overflows f32 (max ~3.4e38) but not f64, so the direct
    // formula in double precision is the reference for the log-domain version in f32
    let s = Tensor::from_slice(&[0.0f64, 1.0, 2.0, 0.5, -0.3, 1.7]).view([3, 2]);
    let (eps, iters) = (0.005, 3);
    let mut q = (&s / eps).exp().transpose(0, 1);
    q = &q / q.sum(Kind::Double);
    for _ in 0..iters {
        q = &q / q.sum_dim_intlist(1, true, Kind::Double) / 2.0;
        q = &q / q.sum_dim_intlist(0, true, Kind::Double) / 3.0;
    }
    let want = (q * 3.0).transpose(0, 1);
    let got = sinkhorn(&s.to_kind(Kind::Float), eps, iters).to_kind(Kind::Double);
    assert!(got.isfinite().all().int64_value(&[]) == 1, "{got}");
    assert!(got.allclose(&want, 1e-5, 1e-6, false), "{got} vs {want}");
}
