use super::*;

fn t(rows: &[&[f64]]) -> Tensor {
    let k = rows[0].len() as i64;
    Tensor::from_slice(&rows.iter().flat_map(|r| r.iter().map(|&v| v as f32)).collect::<Vec<_>>()).view([-1, k])
}

fn softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn teacher_temperature_warms_up_linearly() {
    let d = DinoOptions::default();
    assert_eq!(d.teacher_temp_at(0), 0.04);
    assert!((d.teacher_temp_at(15) - (0.04 + 0.03 * 15.0 / 29.0)).abs() < 1e-12);
    assert_eq!(d.teacher_temp_at(29), 0.07);
    assert_eq!(d.teacher_temp_at(30), 0.07);
    assert_eq!(d.teacher_temp_at(299), 0.07);
}

#[test]
fn loss_matches_hand_computation() {
    // B = 1, K = 3, two global views and one local view
    let s = [[0.5, -0.2, 0.1], [0.0, 0.3, -0.4], [0.9, 0.2, -0.1]];
    let tt = [[0.2, 0.1, -0.3], [-0.1, 0.4, 0.0]];
    let c = [0.05, -0.02, 0.01];
    let (t_temp, s_temp) = (0.04, 0.1);
    let q: Vec<Vec<f64>> = tt.iter().map(|r| softmax(&[(r[0] - c[0]) / t_temp, (r[1] - c[1]) / t_temp, (r[2] - c[2]) / t_temp])).collect();
    let p: Vec<Vec<f64>> = s.iter().map(|r| softmax(&r.map(|v| v / s_temp))).collect();
    let ce = |a: &[f64], b: &[f64]| -(0..3).map(|k| a[k] * b[k].ln()).sum::<f64>();
    let expect = (ce(&q[0], &p[1]) + ce(&q[0], &p[2]) + ce(&q[1], &p[0]) + ce(&q[1], &p[2])) / 4.0;
    let (loss, p_t) = dino_loss(&t(&[&s[0], &s[1], &s[2]]), 3, &t(&[&tt[0], &tt[1]]), &t(&[&c]), t_temp, s_temp);
    assert!((loss.double_value(&[]) - expect).abs() < 1e-5, "{} vs {expect}", loss.double_value(&[]));
    assert!((p_t.double_value(&[1, 1]) - q[1][1]).abs() < 1e-6);
}

#[test]
fn centre_follows_teacher_outputs_and_last_layer_is_frozen_in_epoch_one() {
    let cfg = DinoConfig { dino: DinoOptions { out_dim: 8, ..Default::default() }, ..Default::default() };
    let mut m = Dino::new(&cfg, &crate::methods::testing::Tiny::new().shared(), Device::Cpu).unwrap();
    // DINO's parameter names, so checkpoints trade with its code
    let names = m.student().variables();
    assert!(names.contains_key("head.last_layer.weight_v") && names.contains_key("head.last_layer.weight_g") && names.contains_key("head.mlp.0.weight"));
    assert!(!names["head.last_layer.weight_g"].requires_grad());
    tch::manual_seed(3);
    let views: Vec<Tensor> = [12, 12, 6, 6].iter().map(|&s| Tensor::randn([4, 1, s, s], (Kind::Float, Device::Cpu))).collect();
    let ctx = StepCtx { step: 0, total_steps: 10, epoch: 0, beta: 0.0, teacher_momentum: 0.9 };
    let _ = m.loss(&views, &ctx);
    let out_t = tch::no_grad(|| m.last_t.similarities(&m.teacher.embed(&resolution_groups(&views[..2]), true)));
    let batch_mean = out_t.mean_dim([0i64].as_slice(), true, Kind::Float);
    m.after_step(&ctx);
    // centre starts at 0: 0.9 * 0 + 0.1 * mean
    assert!(m.center.allclose(&(batch_mean * 0.1), 1e-5, 1e-6, false));
    assert_eq!(m.frozen(&StepCtx { step: 0, total_steps: 10, epoch: 0, beta: 0.0, teacher_momentum: 0.9 }), vec![LAST_LAYER.to_string()]);
    assert!(m.frozen(&StepCtx { step: 0, total_steps: 10, epoch: 1, beta: 0.0, teacher_momentum: 0.9 }).is_empty());
}

/// Peer check against the Python library lightly 1.6.0 (`DINOLoss`, committed fixture
/// tests/fixtures/lightly_losses.pth of scripts/fixtures/make_lightly_dino.py): the same teacher
/// outputs (2 global views x 8 rows x K 16), student outputs (4 views: the 2 global ones first,
/// then 2 local) and non-zero centre give the same loss and the same updated centre, over two
/// chained steps (epoch 1, inside a 3-epoch warm-up, then epoch 5).
///
/// Like with like: the pairs (teacher view i, student view v != i), the mean over pairs of the
/// mean over rows, the centre used before its update, and the centre update (EMA of the mean over
/// all 2B teacher rows) are the same definition in both, and so is the teacher-temperature
/// warm-up (`linspace(warmup, teacher, W)`, as DINO's main_dino.py: `teacher_temp` from epoch
/// W - 1 on; svib's used `e / W` until this test showed the difference).
#[test]
fn dino_loss_matches_lightly() {
    let fixture = crate::interop::pth::Fixture::load("lightly_losses.pth");
    let (teacher, student) = (fixture.get("dino.teacher"), fixture.get("dino.student"));
    let (n_views, b, k) = (student.size()[0], student.size()[1], student.size()[2]);
    // ours takes the views stacked along rows: [2B, K] and [V*B, K], view-major
    let (teacher, student) = (teacher.reshape([-1, k]), student.reshape([-1, k]));
    assert_eq!((teacher.size()[0], n_views, b, k), (16, 4, 8, 16));
    let h = fixture.get("dino.hparams");
    let hp = |i: i64| h.double_value(&[i]);
    let cfg =
        DinoOptions { out_dim: 65536, warmup_teacher_temp: hp(0), teacher_temp: hp(1), warmup_teacher_temp_epochs: hp(2) as usize, student_temp: hp(3), freeze_last_layer: 0 };
    let momentum = hp(4);
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    let mut center = fixture.get("dino.center_init");
    for epoch in [1usize, 5] {
        let t_temp = fixture.get(&format!("dino.epoch{epoch}.teacher_temp")).double_value(&[]);
        assert!(rel(cfg.teacher_temp_at(epoch), t_temp) < 1e-7, "epoch {epoch}: teacher temperature {} vs lightly {t_temp}", cfg.teacher_temp_at(epoch));
        let want_loss = fixture.get(&format!("dino.epoch{epoch}.loss")).double_value(&[]);
        let want_center = fixture.get(&format!("dino.epoch{epoch}.center"));
        let (loss, _) = dino_loss(&student, n_views, &teacher, &center, t_temp, cfg.student_temp);
        let got = loss.double_value(&[]);
        assert!(rel(got, want_loss) < 1e-5, "epoch {epoch}: loss {got} vs lightly {want_loss}");
        center = update_center(&center, &teacher, momentum);
        let err = (&center - &want_center).abs().max().double_value(&[]) / want_center.abs().max().double_value(&[]);
        assert!(err < 1e-5, "epoch {epoch}: centre max relative error {err}");
    }
    assert_eq!(cfg.teacher_temp_at(0), hp(0));
}
