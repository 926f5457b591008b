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
