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
    let d = DinoConfig::default();
    assert_eq!(d.teacher_temp_at(0), 0.04);
    assert!((d.teacher_temp_at(15) - 0.055).abs() < 1e-12);
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
    let mut cfg = crate::train::config::tiny_for_tests();
    cfg.method = "dino".into();
    let mut m = Dino::new(&cfg, Device::Cpu).unwrap();
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
    assert_eq!(m.frozen(0), vec![LAST_LAYER.to_string()]);
    assert!(m.frozen(1).is_empty());
}
