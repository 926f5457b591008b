use super::*;
use tch::Device;

fn param(v: &[f32], shape: &[i64]) -> Tensor {
    Tensor::from_slice(v).reshape(shape).set_requires_grad(true)
}

fn set_grad(p: &Tensor, g: &[f32]) {
    let loss = (p * Tensor::from_slice(g).reshape(p.size())).sum(Kind::Float);
    loss.backward();
}

fn cfg(name: OptimName) -> OptimConfig {
    OptimConfig { name, ..OptimConfig::default() }
}

#[test]
fn adamw_first_step_by_hand() {
    let w = param(&[1.0, -2.0], &[1, 2]);
    let b = param(&[0.5], &[1]);
    let mut o = Optimizer::new(&cfg(OptimName::Adamw), vec![("w".into(), w.shallow_clone()), ("b".into(), b.shallow_clone())]);
    set_grad(&w, &[0.5, -0.1]);
    set_grad(&b, &[2.0]);
    o.step(0.1, 0.01).unwrap();
    // step 1: m_hat = g, v_hat = g^2, update = lr * g / (|g| + eps) = lr * sign(g); decay lr*wd*p on w only
    let w1 = Vec::<f32>::try_from(&w.flatten(0, -1)).unwrap();
    assert!((w1[0] - (1.0 * (1.0 - 0.001) - 0.1)).abs() < 1e-6);
    assert!((w1[1] - (-2.0 * (1.0 - 0.001) + 0.1)).abs() < 1e-6);
    assert!((b.double_value(&[0]) - 0.4).abs() < 1e-6, "biases are not decayed");
    // step 2 with the same gradient: m_hat = g, v_hat = g^2 again
    o.zero_grad();
    set_grad(&b, &[2.0]);
    o.step(0.1, 0.01).unwrap();
    assert!((b.double_value(&[0]) - 0.3).abs() < 1e-6);
    // reset: back to step 0, zero moments
    o.reset_state(&["b".into()]);
    let st: std::collections::BTreeMap<String, Tensor> = o.state().into_iter().collect();
    assert_eq!(st["step.b"].int64_value(&[0]), 0);
    assert_eq!(st["m.b"].double_value(&[0]), 0.0);
}

#[test]
fn adamw_second_step_with_a_new_gradient_by_hand() {
    let b = param(&[0.5], &[1]);
    let mut o = Optimizer::new(&cfg(OptimName::Adamw), vec![("b".into(), b.shallow_clone())]);
    set_grad(&b, &[0.5]);
    o.step(0.1, 0.0).unwrap();
    assert!((b.double_value(&[0]) - 0.4).abs() < 1e-6);
    o.zero_grad();
    set_grad(&b, &[-1.0]);
    o.step(0.1, 0.0).unwrap();
    // m = 0.9 * 0.05 - 0.1 = -0.055, v = 0.999 * 0.00025 + 0.001 = 0.00124975,
    // m_hat = m / 0.19, v_hat = v / 0.001999: b = 0.4 - 0.1 * m_hat / sqrt(v_hat)
    let expected = 0.4 - 0.1 * (-0.055 / 0.19) / (0.00124975f64 / 0.001999).sqrt();
    assert!((b.double_value(&[0]) - expected).abs() < 1e-6, "{} vs {expected}", b.double_value(&[0]));
    // a zero learning rate (the first warm-up step) leaves the parameter where it is
    o.zero_grad();
    set_grad(&b, &[1.0]);
    o.step(0.0, 0.0).unwrap();
    assert!((b.double_value(&[0]) - expected).abs() < 1e-6);
}

#[test]
fn sgd_momentum_two_steps() {
    let w = param(&[1.0, 1.0], &[2, 1]);
    let mut o = Optimizer::new(&OptimConfig { momentum: 0.5, ..cfg(OptimName::Sgd) }, vec![("w".into(), w.shallow_clone())]);
    set_grad(&w, &[1.0, 0.0]);
    o.step(0.1, 0.1).unwrap();
    // d = g + wd p = (1.1, 0.1); buf = d; w = w - 0.1 d
    let w1 = Vec::<f32>::try_from(&w.flatten(0, -1)).unwrap();
    assert!((w1[0] - 0.89).abs() < 1e-6 && (w1[1] - 0.99).abs() < 1e-6);
    o.zero_grad();
    set_grad(&w, &[1.0, 0.0]);
    o.step(0.1, 0.1).unwrap();
    // d = (1 + 0.089, 0.099); buf = 0.5 * (1.1, 0.1) + d
    let w2 = Vec::<f32>::try_from(&w.flatten(0, -1)).unwrap();
    assert!((w2[0] - (0.89 - 0.1 * (0.55 + 1.089))).abs() < 1e-6);
    assert!((w2[1] - (0.99 - 0.1 * (0.05 + 0.099))).abs() < 1e-6);
}

#[test]
fn lars_trust_ratio_and_no_adaptation_for_biases() {
    let w = param(&[3.0, 4.0], &[1, 2]); // |w| = 5
    let b = param(&[1.0], &[1]);
    let mut o = Optimizer::new(&OptimConfig { momentum: 0.9, lars_eta: 0.001, ..cfg(OptimName::Lars) }, vec![("w".into(), w.shallow_clone()), ("b".into(), b.shallow_clone())]);
    set_grad(&w, &[0.0, 2.0]);
    set_grad(&b, &[0.5]);
    o.step(1.0, 0.0).unwrap();
    // w: |d| = 2, q = 0.001 * 5 / 2 = 0.0025, update = q * d = (0, 0.005)
    let w1 = Vec::<f32>::try_from(&w.flatten(0, -1)).unwrap();
    assert!((w1[0] - 3.0).abs() < 1e-6 && (w1[1] - 3.995).abs() < 1e-6, "{w1:?}");
    assert!((b.double_value(&[0]) - 0.5).abs() < 1e-6, "the bias takes the plain gradient step");
}

#[test]
fn per_param_clipping_and_frozen_params() {
    let w = param(&[0.0, 0.0], &[1, 2]);
    let v = param(&[0.0, 0.0], &[1, 2]);
    let mut o = Optimizer::new(&cfg(OptimName::Sgd), vec![("w".into(), w.shallow_clone()), ("v".into(), v.shallow_clone())]);
    set_grad(&w, &[30.0, 40.0]);
    set_grad(&v, &[0.3, 0.4]);
    o.clip_grad_per_param(3.0);
    let gw = Vec::<f32>::try_from(&w.grad().flatten(0, -1)).unwrap();
    assert!((gw[0] - 1.8).abs() < 1e-4 && (gw[1] - 2.4).abs() < 1e-4, "{gw:?}");
    assert!((v.grad().norm().double_value(&[]) - 0.5).abs() < 1e-6, "small gradients are untouched");
    o.cancel_grad(&["v".into()]);
    o.step(1.0, 0.0).unwrap();
    assert_eq!(Vec::<f32>::try_from(&v.flatten(0, -1)).unwrap(), vec![0.0, 0.0]);
    let _ = Device::Cpu;
}
