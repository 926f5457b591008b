use super::*;
use crate::methods::losses::nt_xent;
use crate::methods::testing::Tiny;
use tch::Kind;

fn ctx() -> StepCtx {
    StepCtx { step: 0, total_steps: 1, epoch: 0, beta: 0.0, teacher_momentum: 1.0 }
}

/// The method's loss is NT-Xent of its own projections of the two global views (local views
/// are not read), and its gradient reaches the backbone.
#[test]
fn loss_is_nt_xent_of_the_two_global_views() {
    let cfg = SimClrConfig { simclr: SimClrOptions { temperature: 0.2 } };
    // seeded before the network is built: its random weights decide how far from ln 7 the loss
    // of a random network lands (unseeded, about 1 run in 20 landed more than 1 away)
    tch::manual_seed(3);
    let mut m = SimClr::new(&cfg, &Tiny::new().shared(), Device::Cpu).unwrap();
    assert!(m.teacher().is_none());
    assert!(m.student().variables().contains_key("backbone.conv1.weight") && m.student().variables().contains_key("head.mlp.0.weight"));
    tch::manual_seed(3);
    let views: Vec<Tensor> = [12, 12, 6].iter().map(|&s| Tensor::randn([4, 1, s, s], (Kind::Float, Device::Cpu))).collect();
    let out = m.loss(&views, &ctx());
    // the same projections computed here, both views in one batch as the method does
    let z = m.net.project(&[Tensor::cat(&views[..2], 0)], true);
    let want = nt_xent(&z.narrow(0, 0, 4), &z.narrow(0, 4, 4), 0.2);
    assert!((out.loss.double_value(&[]) - want.double_value(&[])).abs() < 1e-6);
    // 4 images: each row's positive is one of 7 candidates, so a random network is near ln 7
    assert!((out.loss.double_value(&[]) - 7f64.ln()).abs() < 1.0, "{}", out.loss.double_value(&[]));
    out.loss.backward();
    let g = m.student().variables()["backbone.conv1.weight"].grad();
    assert!(g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}
