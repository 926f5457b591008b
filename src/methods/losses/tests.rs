use super::*;

fn t2(rows: &[[f32; 2]]) -> Tensor {
    Tensor::from_slice(&rows.concat()).view([rows.len() as i64, 2])
}

#[test]
fn cross_view_mean_takes_dinos_pairs_in_order() {
    let mut seen = vec![];
    let mean = cross_view_mean(2, 4, |i, v| {
        seen.push((i, v));
        Tensor::from((10 * i + v) as f32)
    });
    assert_eq!(seen, vec![(0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]);
    // (1 + 2 + 3 + 10 + 12 + 13) / 6
    assert_eq!(mean.double_value(&[]), (41.0f32 / 6.0) as f64);
}

/// Two images whose views are identical unit vectors e1, e2 at T = 1: each of the 4 rows sees
/// its positive at cosine 1 and two negatives at cosine 0, so the loss is ln((e + 2) / e).
#[test]
fn nt_xent_hand_computed() {
    let z = t2(&[[3.0, 0.0], [0.0, 0.5]]); // normalised inside
    let got = nt_xent(&z, &z, 1.0).double_value(&[]);
    let want = (1.0 + 2.0 / std::f64::consts::E).ln();
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    // swapping the views changes nothing; a positive that disagrees costs more
    let other = t2(&[[0.0, 1.0], [1.0, 0.0]]);
    assert!((nt_xent(&other, &z, 0.5).double_value(&[]) - nt_xent(&z, &other, 0.5).double_value(&[])).abs() < 1e-6);
    assert!(nt_xent(&z, &other, 1.0).double_value(&[]) > got + 0.5);
}

/// Peer check against lightly 1.6.0's `NTXentLoss(temperature=0.2, memory_bank_size=0)` on the
/// tensors of tests/fixtures/lightly_losses.pth (scripts/fixtures/make_lightly_dino.py).
#[test]
fn nt_xent_matches_lightly() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lightly_losses.pth");
    let all = crate::interop::pth::read_pth(&path).unwrap();
    let get = |k: &str| all.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("fixture: no {k}")).1.shallow_clone();
    let (z0, z1) = (get("simclr.z0"), get("simclr.z1"));
    assert_eq!(z0.size(), vec![8, 16]);
    let want = get("simclr.loss").double_value(&[]);
    let got = nt_xent(&z0, &z1, get("simclr.temperature").double_value(&[])).double_value(&[]);
    assert!((got - want).abs() / want.abs() < 1e-6, "{got} vs lightly {want}");
}

/// One rank's part of NT-Xent over a gathered batch: the mean of the parts of 3 "ranks" of 2
/// images each is the loss of the 6 images, and a part is not the whole.
#[test]
fn nt_xent_parts_average_to_the_whole() {
    tch::manual_seed(5);
    let (z0, z1) = (Tensor::randn([6, 4], (Kind::Float, tch::Device::Cpu)), Tensor::randn([6, 4], (Kind::Float, tch::Device::Cpu)));
    let whole = nt_xent(&z0, &z1, 0.3).double_value(&[]);
    let parts: Vec<f64> = (0..3).map(|r| nt_xent_rows(&z0, &z1, 2 * r, 2, 0.3).double_value(&[])).collect();
    let mean = parts.iter().sum::<f64>() / 3.0;
    assert!((mean - whole).abs() < 1e-6 * whole, "{mean} vs {whole}");
    assert!((parts[0] - whole).abs() > 1e-3, "{parts:?} {whole}");
}
