use super::*;
use crate::data::testutil::bytes;

fn colour_image(side: u32, seed: u32) -> ImageU8 {
    ImageU8::new(side, side, 3, bytes((side * side * 3) as usize, seed))
}

fn quiet() -> MultiCropConfig {
    MultiCropConfig {
        global_size: 16,
        local_size: 8,
        global_scale: [1.0, 1.0],
        local_scale: [1.0, 1.0],
        local_crops: 2,
        ratio: [1.0, 1.0],
        flip_p: 0.0,
        jitter_p: 0.0,
        grayscale_p: 0.0,
        blur_p: [0.0; 3],
        solarize_p: [0.0; 3],
        ..MultiCropConfig::default()
    }
}

#[test]
fn output_sizes_channels_and_ranges() {
    let cfg = MultiCropConfig { global_size: 20, local_size: 9, local_crops: 3, ..MultiCropConfig::default() };
    let ds = Dataset { images: (0..5).map(|i| colour_image(32, i)).collect(), labels: vec![0; 5], num_classes: 1, class_names: vec![], ..Default::default() };
    let norm = Norm { mean: vec![0.5, 0.4, 0.3], std: vec![0.2, 0.25, 0.3] };
    let out = augment_batch(&ds, &[0, 2, 4], &cfg, &norm, 7, 0).unwrap();
    let shapes: Vec<[usize; 4]> = out.views.iter().map(|v| v.1).collect();
    assert_eq!(shapes, vec![[3, 3, 20, 20], [3, 3, 20, 20], [3, 3, 9, 9], [3, 3, 9, 9], [3, 3, 9, 9]]);
    for (buf, shape) in &out.views {
        assert_eq!(buf.len(), shape.iter().product::<usize>());
        let plane = shape[2] * shape[3];
        for (i, v) in buf.iter().enumerate() {
            let ch = (i / plane) % 3;
            let (lo, hi) = ((0.0 - norm.mean[ch]) / norm.std[ch], (1.0 - norm.mean[ch]) / norm.std[ch]);
            assert!(*v >= lo - 1e-5 && *v <= hi + 1e-5);
        }
    }
}

#[test]
fn grey_source_gives_equal_channels_or_one_channel() {
    let grey = ImageU8::new(28, 28, 1, bytes(784, 3));
    let cfg = MultiCropConfig::for_image_side(28);
    let mut r = fir::Resizer::new();
    for i in 0..20 {
        let mut rng = image_rng(1, 0, i);
        for v in augment_all(&grey, &cfg, &mut rng, &mut r) {
            assert_eq!(v.c, 3);
            assert!(v.data.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        }
    }
    let one = MultiCropConfig { channels: 1, ..cfg };
    let v = augment_all(&colour_image(28, 1), &one, &mut image_rng(1, 0, 0), &mut r);
    assert!(v.iter().all(|v| v.c == 1 && v.data.len() == (v.w * v.h) as usize));
}

#[test]
fn grayscale_op_equalises_channels() {
    let cfg = MultiCropConfig { grayscale_p: 1.0, ..quiet() };
    let (v, t) = augment_view_traced(&colour_image(16, 4), &cfg, &cfg.views()[0], &mut image_rng(0, 0, 0), &mut fir::Resizer::new());
    assert!(t.grayscale);
    assert!(v.data.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
}

#[test]
fn flip_with_full_crop_mirrors_input() {
    let img = colour_image(16, 9);
    let cfg = MultiCropConfig { flip_p: 1.0, ..quiet() };
    let v = augment_view(&img, &cfg, &cfg.views()[0], &mut image_rng(0, 0, 0), &mut fir::Resizer::new());
    let mut expect = img.clone();
    ops::hflip(&mut expect);
    assert_eq!(v.data, expect.data);
    // and with nothing random enabled, the view is the image itself
    let v = augment_view(&img, &quiet(), &quiet().views()[0], &mut image_rng(0, 0, 0), &mut fir::Resizer::new());
    assert_eq!(v.data, img.data);
}

#[test]
fn solarised_view_has_no_bright_values() {
    let cfg = MultiCropConfig { solarize_p: [1.0; 3], ..quiet() };
    let v = augment_view(&colour_image(16, 2), &cfg, &cfg.views()[1], &mut image_rng(0, 0, 0), &mut fir::Resizer::new());
    assert!(v.data.iter().all(|&x| x <= 127));
}

#[test]
fn each_op_fires_with_its_probability() {
    let cfg = MultiCropConfig { global_size: 8, local_size: 8, ..MultiCropConfig::default() };
    let img = colour_image(12, 5);
    let views = cfg.views();
    let mut r = fir::Resizer::new();
    let n = 4000;
    let mut counts = [[0usize; 5]; 3]; // view kind x (flip, jitter, grey, blur, solarize)
    for i in 0..n {
        let mut rng = image_rng(42, 1, i);
        for (k, vi) in [(0, 0), (1, 1), (2, 2)] {
            let (_, t) = augment_view_traced(&img, &cfg, &views[vi], &mut rng, &mut r);
            for (j, f) in [t.flip, t.jitter, t.grayscale, t.blur, t.solarize].into_iter().enumerate() {
                counts[k][j] += f as usize;
            }
        }
    }
    let expect = [[0.5, 0.8, 0.2, 1.0, 0.0], [0.5, 0.8, 0.2, 0.1, 0.2], [0.5, 0.8, 0.2, 0.5, 0.0]];
    for k in 0..3 {
        for j in 0..5 {
            let p = expect[k][j];
            let freq = counts[k][j] as f64 / n as f64;
            let tol = 4.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-9;
            assert!((freq - p).abs() <= tol, "view {k} op {j}: {freq} vs {p}");
        }
    }
}

#[test]
fn batches_are_identical_for_any_thread_count() {
    let cfg = MultiCropConfig::for_image_side(24);
    let ds = Dataset { images: (0..16).map(|i| colour_image(24, i)).collect(), labels: vec![0; 16], num_classes: 1, class_names: vec![], ..Default::default() };
    let norm = Norm::preset("cifar10").unwrap();
    let idx: Vec<usize> = (0..16).rev().collect();
    let run = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| augment_batch(&ds, &idx, &cfg, &norm, 3, 2).unwrap());
    let (a, b) = (run(1), run(3));
    for (x, y) in a.views.iter().zip(&b.views) {
        assert_eq!(x.0, y.0);
    }
    // a different epoch gives different crops
    let c = augment_batch(&ds, &idx, &cfg, &norm, 3, 3).unwrap();
    assert_ne!(a.views[0].0, c.views[0].0);
}

#[test]
fn eval_image_passes_native_size_and_centre_crops_others() {
    let img = colour_image(28, 1);
    let mut r = fir::Resizer::new();
    assert_eq!(eval_image(&img, 28, 3, &mut r).data, img.data);
    let wide = ImageU8::new(40, 20, 3, vec![99; 2400]);
    let out = eval_image(&wide, 16, 3, &mut r);
    assert_eq!((out.w, out.h), (16, 16));
    assert!(out.data.iter().all(|&v| v == 99));
}

#[test]
fn config_validation_names_the_key() {
    let bad = MultiCropConfig { local_scale: [0.5, 0.2], ..MultiCropConfig::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("augment.local_scale"));
    let bad = MultiCropConfig { jitter_p: 1.5, ..MultiCropConfig::default() };
    assert!(bad.validate().unwrap_err().to_string().contains("augment.jitter_p"));
    assert!(MultiCropConfig::default().validate().is_ok());
}

#[test]
fn decode_reduction_keeps_every_crop_at_its_output_size() {
    let dino = MultiCropConfig::default(); // 224 px at scale >= 0.4, 96 px at >= 0.05, ratio 3/4-4/3
                                           // local: sqrt(W H 0.05 3/4) - 1 over 96; global: sqrt(W H 0.4 3/4) - 1 over 224
    for ((w, h), r) in [((500, 375), 1), ((1000, 750), 1), ((2000, 1500), 2), ((4000, 3000), 4), ((8000, 6000), 8), ((16000, 12000), 8)] {
        assert_eq!(dino.decode_reduction(w, h), r, "{w}x{h}");
    }
    // a long strip: its short side bounds every crop (40000x600: global crops at most 599/224 =
    // 2.67 times their output size, not sqrt(24e6 0.3) = 2683 px)
    assert_eq!(dino.decode_reduction(40000, 600), 2);
    let globals = MultiCropConfig { local_crops: 0, ..dino.clone() };
    assert_eq!(globals.decode_reduction(4000, 3000), 8);
    let off = MultiCropConfig { reduced_decode: false, ..dino };
    assert_eq!(off.decode_reduction(4000, 3000), 1);
    // evaluation at 224 px resizes the shorter side to 256: 3000 / 8 = 375 >= 257; 1500 / 4 too,
    // 1500 / 8 not; 514 / 2 = 257; 375 < 2 x 257
    let eval = |w, h| eval_decode_reduction(224, w, h);
    assert_eq!((eval(4000, 3000), eval(2000, 1500), eval(600, 514), eval(500, 375)), (8, 4, 2, 1));
}

/// A large smooth JPEG is decoded at 1/4 of its size, and its crops are those of the full
/// decode up to resampling differences.
#[test]
fn reduced_decode_gives_the_crops_of_the_full_image() {
    let d = tempfile::tempdir().unwrap();
    let (w, h) = (1600u32, 1200u32);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        image::Rgb([(255.0 * fx) as u8, (255.0 * fy) as u8, (127.0 + 120.0 * (6.0 * fx + 4.0 * fy).sin()) as u8])
    });
    let path = d.path().join("big.jpg");
    img.save(&path).unwrap();
    let ds = Dataset { files: vec![path], file_channels: 3, labels: vec![0], num_classes: 1, ..Default::default() };
    // locals: (sqrt(1600 1200 0.05 3/4) - 1) / 48 = 5.6; globals: 11.8
    let cfg = MultiCropConfig { global_size: 64, local_size: 48, local_crops: 4, ..quiet() };
    let cfg = MultiCropConfig { global_scale: [0.4, 1.0], local_scale: [0.05, 0.4], ratio: [0.75, 4.0 / 3.0], ..cfg };
    assert_eq!(cfg.decode_reduction(w, h), 4);
    let reduced = ds.image_reduced(0, &|w, h| cfg.decode_reduction(w, h)).unwrap();
    assert_eq!(((reduced.img.w, reduced.img.h), reduced.full), ((400, 300), (w, h)));
    let norm = Norm { mean: vec![0.0; 3], std: vec![1.0; 3] };
    let a = augment_batch(&ds, &[0], &cfg, &norm, 3, 0).unwrap();
    let b = augment_batch(&ds, &[0], &MultiCropConfig { reduced_decode: false, ..cfg }, &norm, 3, 0).unwrap();
    for ((va, _), (vb, _)) in a.views.iter().zip(&b.views) {
        let mad = va.iter().zip(vb).map(|(x, y)| (x - y).abs()).sum::<f32>() / va.len() as f32;
        assert!(mad < 2.0 / 255.0, "mean difference {:.2} levels", mad * 255.0);
        assert!(mad > 0.0, "the views come from another decode");
    }
}

fn grid(w: u32, h: u32) -> ImageU8 {
    ImageU8::new(w, h, 1, (0..w * h).map(|i| 10 + i as u8).collect())
}

#[test]
fn affine_rotates_clockwise_and_shifts_like_torchvision() {
    let (w, h) = (5usize, 5usize);
    let img = grid(w as u32, h as u32);
    // torchvision F.affine(img, angle=90) turns clockwise: the left-hand middle pixel moves to
    // the top middle
    let r = ops::affine(&img, 90.0, 0.0, 0.0);
    for row in 0..h {
        for col in 0..w {
            assert_eq!(r.data[row * w + col], img.data[(h - 1 - col) * w + row], "row {row} col {col}");
        }
    }
    // a shift of 2 right and 1 down, zeros where the source is outside
    let s = ops::affine(&img, 0.0, 2.0, 1.0);
    for row in 0..h {
        for col in 0..w {
            let want = if row >= 1 && col >= 2 { img.data[(row - 1) * w + col - 2] } else { 0 };
            assert_eq!(s.data[row * w + col], want, "row {row} col {col}");
        }
    }
    // three channels move together
    let rgb = ops::to_channels(&img, 3);
    assert_eq!(ops::to_channels(&ops::affine(&rgb, 90.0, 0.0, 0.0), 1).data, r.data);
}

#[test]
fn random_affine_stays_within_its_bounds() {
    let cfg = MultiCropConfig { rotate: 15.0, translate: 0.1, ..quiet() };
    let img = grid(20, 20);
    let (mut max_a, mut max_t) = (0f32, 0f32);
    for i in 0..300 {
        let (v, t) = augment_view_traced(&img, &cfg, &cfg.views()[0], &mut image_rng(0, 0, i), &mut fir::Resizer::new());
        assert_eq!((v.w, v.h), (16, 16));
        let (a, tx, ty) = t.affine;
        assert!(a.abs() <= 15.0 && tx.abs() <= 2.0 && ty.abs() <= 2.0 && tx.fract() == 0.0 && ty.fract() == 0.0, "{:?}", t.affine);
        (max_a, max_t) = (max_a.max(a.abs()), max_t.max(tx.abs()).max(ty.abs()));
    }
    assert!(max_a > 12.0 && max_t == 2.0, "draws cover the range: {max_a} {max_t}");
    assert!(MultiCropConfig { rotate: 181.0, ..quiet() }.validate().is_err());
    assert!(MultiCropConfig { translate: 0.6, ..quiet() }.validate().is_err());
}

/// `ops::affine` against torchvision's `F.affine` (bilinear, fill 0, uint8) on a grey and a
/// colour image, six angle/shift cases (tests/fixtures/torchvision_affine.pth of
/// scripts/fixtures/make_torchvision_affine.py). Rounding of values that fall on .5 in one
/// library's float arithmetic and not the other's may differ by one grey level.
#[test]
fn affine_matches_torchvision() {
    let fixture = crate::interop::pth::Fixture::load("torchvision_affine.pth");
    let params = fixture.get("params");
    for name in ["grey", "rgb"] {
        let input = fixture.get(&format!("{name}.input"));
        let (c, h, w) = (input.size()[0], input.size()[1], input.size()[2]);
        let hwc: Vec<u8> = Vec::try_from(input.permute([1, 2, 0]).contiguous().flatten(0, -1)).unwrap();
        let img = ImageU8::new(w as u32, h as u32, c as u8, hwc);
        let outs = fixture.get(&format!("{name}.out"));
        for i in 0..params.size()[0] {
            let p = |j: i64| params.double_value(&[i, j]) as f32;
            let want: Vec<u8> = Vec::try_from(outs.get(i).permute([1, 2, 0]).contiguous().flatten(0, -1)).unwrap();
            let got = ops::affine(&img, p(0), p(1), p(2));
            let worst = got.data.iter().zip(&want).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
            assert!(worst <= 1, "{name} case {i} ({} deg, {}, {}): off by up to {worst}", p(0), p(1), p(2));
            let off = got.data.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert!(off * 50 <= want.len(), "{name} case {i}: {off} of {} values differ", want.len());
        }
    }
}
