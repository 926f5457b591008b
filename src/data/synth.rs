//! `svib data synth`: an ImageFolder of procedural JPEGs at photo sizes (default 500x375,
//! quality 90, ImageNet's typical shape), for loader benchmarks, the GPU check and tests.
//! Each class is a kind of shape (disc, square, ring, cross, stripes, …) at a random place, size
//! and colour over a random smooth background with noise, so a kNN on learned features has
//! something to find. Deterministic in (seed, split, index).
use anyhow::{bail, Context, Result};
use image::codecs::jpeg::JpegEncoder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::Path;

pub struct SynthOptions {
    pub train: usize,
    pub val: usize,
    pub classes: usize,
    pub width: u32,
    pub height: u32,
    pub quality: u8,
    pub seed: u64,
}

/// The class patterns, in class order (class i draws PATTERNS[i % 10]).
const PATTERNS: [&str; 10] = ["disc", "square", "ring", "cross", "hstripes", "vstripes", "checker", "diagonal", "dots", "triangle"];

/// Writes `out/train/<class>/*.jpg` and `out/val/<class>/*.jpg`; returns the files written.
pub fn write(out: &Path, o: &SynthOptions) -> Result<usize> {
    if o.classes == 0 || o.classes > 10_000 {
        bail!("--classes: expected 1 to 10000, got {}", o.classes);
    }
    if o.width < 8 || o.height < 8 || o.width > 8192 || o.height > 8192 {
        bail!("--size: expected from 8x8 to 8192x8192 pixels, got {}x{}", o.width, o.height);
    }
    if o.quality == 0 || o.quality > 100 {
        bail!("--quality: expected 1 to 100, got {}", o.quality);
    }
    crate::util::ensure_new_folder(out, "synth")?;
    if o.train < o.classes || o.train.saturating_add(o.val) > 10_000_000 {
        bail!(
            "svib data synth: expected --train of at least --classes ({}) images (one per class) and at most 10,000,000 in all; got --train {} --val {}",
            o.classes,
            o.train,
            o.val
        );
    }
    let mut n = 0;
    for (split, count) in [("train", o.train), ("val", o.val)] {
        for c in 0..o.classes {
            let d = out.join(split).join(class_name(c));
            std::fs::create_dir_all(&d).with_context(|| format!("{}: cannot create", d.display()))?;
        }
        let salt = if split == "train" { 0 } else { 1 << 40 };
        (0..count).into_par_iter().try_for_each(|i| -> Result<()> {
            let c = i % o.classes;
            let mut rng = ChaCha8Rng::seed_from_u64(o.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (salt + i as u64));
            let rgb = draw(c, o.width, o.height, &mut rng);
            let path = out.join(split).join(class_name(c)).join(format!("{i:07}.jpg"));
            let mut bytes = vec![];
            JpegEncoder::new_with_quality(&mut bytes, o.quality).encode(&rgb, o.width, o.height, image::ExtendedColorType::Rgb8)?;
            crate::util::write_atomic(&path, &bytes)
        })?;
        n += count;
    }
    Ok(n)
}

fn class_name(c: usize) -> String {
    format!("{c:03}_{}", PATTERNS[c % PATTERNS.len()])
}

/// One RGB image of class `c`.
fn draw(c: usize, w: u32, h: u32, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let bg0: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
    let bg1: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
    let fg: [f32; 3] = std::array::from_fn(|_| rng.random_range(0.0..255.0));
    let (cx, cy) = (rng.random_range(0.25..0.75) * w as f32, rng.random_range(0.25..0.75) * h as f32);
    let r = rng.random_range(0.15..0.4) * w.min(h) as f32;
    let period = rng.random_range(0.08..0.2) * r + 2.0;
    let angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let mut px = vec![0u8; (w * h * 3) as usize];
    for y in 0..h {
        for x in 0..w {
            let t = (x as f32 / w as f32 * angle.cos() + y as f32 / h as f32 * angle.sin()).clamp(0.0, 1.0);
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            let inside = pattern(PATTERNS[c % PATTERNS.len()], dx, dy, r, period);
            let noise = rng.random_range(-12.0..12.0);
            let i = ((y * w + x) * 3) as usize;
            for k in 0..3 {
                let v = if inside { fg[k] } else { bg0[k] * (1.0 - t) + bg1[k] * t };
                px[i + k] = (v + noise).clamp(0.0, 255.0) as u8;
            }
        }
    }
    px
}

/// Whether the offset (dx, dy) from the shape's centre is on the pattern.
fn pattern(name: &str, dx: f32, dy: f32, r: f32, period: f32) -> bool {
    let d = (dx * dx + dy * dy).sqrt();
    let inbox = dx.abs() < r && dy.abs() < r;
    let band = |v: f32| (v / period).rem_euclid(2.0) < 1.0;
    match name {
        "disc" => d < r,
        "square" => inbox,
        "ring" => d < r && d > 0.6 * r,
        "cross" => (dx.abs() < 0.25 * r && dy.abs() < r) || (dy.abs() < 0.25 * r && dx.abs() < r),
        "hstripes" => inbox && band(dy),
        "vstripes" => inbox && band(dx),
        "checker" => inbox && (band(dx) ^ band(dy)),
        "diagonal" => inbox && band(dx + dy),
        "dots" => inbox && ((dx / period).rem_euclid(2.0) - 1.0).powi(2) + ((dy / period).rem_euclid(2.0) - 1.0).powi(2) < 0.5,
        _ => dy < r && dy > -r && dx.abs() < (dy + r) * 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_deterministic_image_folder_that_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let o = SynthOptions { train: 12, val: 4, classes: 3, width: 40, height: 30, quality: 90, seed: 5 };
        assert_eq!(write(dir.path(), &o).unwrap(), 16);
        let a = std::fs::read(dir.path().join("train/001_square/0000004.jpg")).unwrap();
        let ds = crate::data::folder::load(dir.path(), crate::data::Split::Train, &Default::default()).unwrap();
        let first = ds.image(0).unwrap();
        assert_eq!((ds.len(), ds.num_classes, first.w, first.h, ds.channels()), (12, 3, 40, 30, 3));
        let again = tempfile::tempdir().unwrap();
        write(again.path(), &o).unwrap();
        assert_eq!(a, std::fs::read(again.path().join("train/001_square/0000004.jpg")).unwrap());
        assert!(write(dir.path(), &SynthOptions { quality: 0, ..o }).is_err());
    }

    #[test]
    fn patterns_cover_what_they_name() {
        assert!(pattern("disc", 3.0, 4.0, 6.0, 2.0) && !pattern("disc", 3.0, 4.0, 5.0, 2.0));
        assert!(pattern("ring", 0.0, 5.0, 6.0, 2.0) && !pattern("ring", 0.0, 1.0, 6.0, 2.0));
        assert!(pattern("hstripes", 0.0, 0.5, 6.0, 2.0) && !pattern("hstripes", 0.0, 2.5, 6.0, 2.0));
    }
}
