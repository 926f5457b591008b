use super::*;
use tch::Kind;

fn t(rows: &[[f32; 2]]) -> Tensor {
    Tensor::from_slice(&rows.concat()).view([-1, 2])
}

#[test]
fn loss_matches_hand_computation() {
    // targets z0, z1; predictions p0, p1 (unnormalised; the loss normalises)
    let z = [t(&[[0.0, 2.0]]), t(&[[3.0, 0.0]])];
    let p = [t(&[[1.0, 1.0]]), t(&[[5.0, 0.0]])];
    // pairs (z0, p1): cos 0 -> 2; (z1, p0): cos 1/sqrt 2 -> 2 - sqrt 2
    let expect = (2.0 + (2.0 - 2f64.sqrt())) / 2.0;
    assert!((byol_loss(&z, &p).double_value(&[]) - expect).abs() < 1e-6);
    // identical directions cost nothing
    let same = [t(&[[1.0, 2.0]]), t(&[[1.0, 2.0]])];
    assert!(byol_loss(&same, &[t(&[[2.0, 4.0]]), t(&[[0.5, 1.0]])]).double_value(&[]).abs() < 1e-6);
}

#[test]
fn predictor_is_online_only_and_target_gets_no_gradient() {
    let mut m = Byol::new(&ByolConfig::default(), &crate::methods::testing::Tiny::new().shared(), Device::Cpu).unwrap();
    assert!(m.student().variables().contains_key("predictor.mlp.0.weight"));
    assert!(!m.teacher().unwrap().variables().contains_key("predictor.mlp.0.weight"));
    tch::manual_seed(1);
    let views: Vec<Tensor> = [12, 12].iter().map(|&s| Tensor::randn([4, 1, s, s], (Kind::Float, Device::Cpu))).collect();
    let out = m.loss(&views, &StepCtx { step: 0, total_steps: 1, epoch: 0, beta: 0.0, teacher_momentum: 0.99 });
    let l = out.loss.double_value(&[]);
    assert!((0.0..=4.0).contains(&l), "{l}");
    out.loss.backward();
    for (name, v) in m.teacher().unwrap().variables() {
        assert!(!v.grad().defined(), "{name} got a gradient");
    }
    assert!(m.student().variables()["predictor.mlp.0.weight"].grad().defined());
}
