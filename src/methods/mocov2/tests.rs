use super::*;
use crate::methods::losses::info_nce;

#[test]
fn info_nce_matches_hand_computation() {
    let q = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
    let k = Tensor::from_slice(&[1.0f32, 0.0]).view([1, 2]);
    let queue = Tensor::from_slice(&[0.0f32, 1.0, -1.0, 0.0]).view([2, 2]);
    // logits (1, 0, -1) / 0.2 = (5, 0, -5); positive first
    let expect = -(5f64.exp() / (5f64.exp() + 1.0 + (-5f64).exp())).ln();
    assert!((info_nce(&q, &k, &queue, 0.2).double_value(&[]) - expect).abs() < 1e-6);
}

#[test]
fn queue_is_a_ring_buffer_of_both_global_keys() {
    let cfg = MocoConfig { mocov2: MocoOptions { queue: 10, ..Default::default() }, ..Default::default() };
    let mut m = MocoV2::new(&cfg, &crate::methods::testing::Tiny::new().shared(), Device::Cpu).unwrap();
    let ctx = StepCtx { step: 0, total_steps: 3, epoch: 0, beta: 0.0, teacher_momentum: 0.99 };
    let mut last_keys = Tensor::new();
    for step in 0..3 {
        tch::manual_seed(step);
        let views: Vec<Tensor> = [12, 12, 6].iter().map(|&s| Tensor::randn([2, 1, s, s], (Kind::Float, Device::Cpu))).collect();
        let out = m.loss(&views, &ctx);
        assert!(out.loss.double_value(&[]).is_finite());
        last_keys = m.pending_keys.as_ref().unwrap().copy(); // 2 globals x 2 images
        m.after_step(&ctx);
    }
    // 3 steps x 4 keys = 12 into 10 slots: the third step wrote rows 8, 9, 0, 1
    assert_eq!(m.queue_ptr, 2);
    let rows = m.queue.index_select(0, &Tensor::from_slice(&[8i64, 9, 0, 1]));
    assert!(rows.equal(&last_keys));
    let norms = m.queue.norm_scalaropt_dim(2, [1], false);
    assert!(norms.allclose(&Tensor::ones([10], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
}
