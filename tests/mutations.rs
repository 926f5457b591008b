//! Seeded mutation loops over every reader (issue 15): valid files with bytes flipped, inserted,
//! removed, truncated or overwritten with boundary values, a few thousand per reader; no reader
//! may panic, and each loop stays within its time. Errors are expected and fine.
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use svib::data::{DataSpec, LoadOptions, Split};

/// xorshift64*: reproducible without an RNG crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four edits of `base`: flip, boundary value, insert, delete, truncate, duplicate a run.
fn mutate(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len());
        match rng.below(6) {
            0 if !b.is_empty() => b[at] ^= 1 << rng.below(8),
            1 if !b.is_empty() => b[at] = [0x00, 0xff, 0x7f, 0x80, 0x01][rng.below(5)],
            2 => b.insert(at, rng.next() as u8),
            3 if !b.is_empty() => drop(b.remove(at)),
            4 => b.truncate(at),
            _ if b.len() > 8 => {
                let (from, n) = (rng.below(b.len() - 4), 1 + rng.below(8));
                let run: Vec<u8> = b[from..(from + n).min(b.len())].to_vec();
                b.splice(at..at, run);
            }
            _ => {}
        }
    }
    b
}

/// Runs `read` on `n` mutations of `base` written to `path`; returns how many were read without error.
fn loop_over(name: &str, base: &[u8], path: &Path, n: usize, budget: Duration, read: impl Fn(&Path) -> bool) -> usize {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let started = Instant::now();
    let mut ok = 0;
    for i in 0..n {
        let m = mutate(base, &mut rng);
        std::fs::write(path, &m).unwrap();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(path))) {
            Ok(true) => ok += 1,
            Ok(false) => {}
            Err(_) => {
                let keep = std::env::temp_dir().join(format!("svib-mutation-{name}-{i}"));
                std::fs::write(&keep, &m).unwrap();
                panic!("{name}: mutation {i} panicked the reader (kept as {})", keep.display());
            }
        }
        assert!(started.elapsed() < budget, "{name}: {i} mutations took longer than {budget:?}");
    }
    ok
}

fn idx_bytes(dims: &[u32], data: &[u8], ndim: u8) -> Vec<u8> {
    let mut b = vec![0, 0, 8, ndim];
    dims.iter().for_each(|d| b.extend_from_slice(&d.to_be_bytes()));
    b.extend_from_slice(data);
    b
}

#[test]
fn idx_reader_survives_mutations() {
    let d = tempfile::tempdir().unwrap();
    let px: Vec<u8> = (0..6 * 16).map(|i| i as u8).collect();
    for (prefix, n) in [("train", 6u32), ("t10k", 6)] {
        std::fs::write(d.path().join(format!("{prefix}-images-idx3-ubyte")), idx_bytes(&[n, 4, 4], &px, 3)).unwrap();
        std::fs::write(d.path().join(format!("{prefix}-labels-idx1-ubyte")), idx_bytes(&[n], &[0, 1, 2, 0, 1, 2], 1)).unwrap();
    }
    let spec: DataSpec = format!("idx:{}", d.path().display()).parse().unwrap();
    let read = |_: &Path| svib::data::load(&spec, Split::Train, &LoadOptions::default()).is_ok();
    loop_over("idx-images", &idx_bytes(&[6, 4, 4], &px, 3), &d.path().join("train-images-idx3-ubyte"), 3000, Duration::from_secs(120), read);
    std::fs::write(d.path().join("train-images-idx3-ubyte"), idx_bytes(&[6, 4, 4], &px, 3)).unwrap();
    loop_over("idx-labels", &idx_bytes(&[6], &[0, 1, 2, 0, 1, 2], 1), &d.path().join("train-labels-idx1-ubyte"), 3000, Duration::from_secs(120), read);
    // gzip streams
    std::fs::remove_file(d.path().join("train-images-idx3-ubyte")).unwrap();
    let mut e = flate2::write::GzEncoder::new(vec![], flate2::Compression::fast());
    e.write_all(&idx_bytes(&[6, 4, 4], &px, 3)).unwrap();
    loop_over("idx-gzip", &e.finish().unwrap(), &d.path().join("train-images-idx3-ubyte.gz"), 3000, Duration::from_secs(120), read);
}

#[test]
fn cifar_and_stl_readers_survive_mutations() {
    let d = tempfile::tempdir().unwrap();
    let b = d.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&b).unwrap();
    let rec: Vec<u8> = (0..3073 * 2).map(|i| (i % 10) as u8).collect();
    for f in ["data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        std::fs::write(b.join(f), &rec).unwrap();
    }
    let spec: DataSpec = format!("cifar10:{}", d.path().display()).parse().unwrap();
    loop_over("cifar", &rec, &b.join("data_batch_1.bin"), 2000, Duration::from_secs(120), |_| svib::data::load(&spec, Split::Train, &LoadOptions::default()).is_ok());
    let s = tempfile::tempdir().unwrap();
    std::fs::write(s.path().join("train_X.bin"), vec![7u8; 96 * 96 * 3 * 2]).unwrap();
    let spec: DataSpec = format!("stl10:{}", s.path().display()).parse().unwrap();
    loop_over("stl-labels", &[1, 10], &s.path().join("train_y.bin"), 2000, Duration::from_secs(120), |_| svib::data::load(&spec, Split::Train, &LoadOptions::default()).is_ok());
}

#[test]
fn image_decoders_survive_mutations() {
    let d = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(16, 12, |x, y| image::Rgb([x as u8 * 9, y as u8 * 11, 77]));
    for (fmt, ext) in [
        (image::ImageFormat::Png, "png"),
        (image::ImageFormat::Jpeg, "jpg"),
        (image::ImageFormat::Bmp, "bmp"),
        (image::ImageFormat::WebP, "webp"),
        (image::ImageFormat::Tiff, "tif"),
    ] {
        let mut c = std::io::Cursor::new(vec![]);
        img.write_to(&mut c, fmt).unwrap();
        loop_over(ext, c.get_ref(), &d.path().join(format!("x.{ext}")), 1500, Duration::from_secs(120), |p| svib::data::folder::decode(p).is_ok());
    }
    // binary PPM (P6) and PGM (P5), the headers .ppm and .pgm files carry (the format's default writes P7)
    use image::codecs::pnm::{PnmEncoder, PnmSubtype, SampleEncoding};
    let grey = image::DynamicImage::ImageRgb8(img.clone()).into_luma8();
    for (ext, sub, px, colour) in [
        ("ppm", PnmSubtype::Pixmap(SampleEncoding::Binary), img.as_raw(), image::ExtendedColorType::Rgb8),
        ("pgm", PnmSubtype::Graymap(SampleEncoding::Binary), grey.as_raw(), image::ExtendedColorType::L8),
    ] {
        let mut b = vec![];
        PnmEncoder::new(&mut b).with_subtype(sub).encode(px.as_slice(), 16, 12, colour).unwrap();
        assert_eq!(&b[..2], if ext == "ppm" { b"P6" } else { b"P5" });
        loop_over(ext, &b, &d.path().join(format!("x.{ext}")), 1500, Duration::from_secs(120), |p| svib::data::folder::decode(p).is_ok());
    }
}

#[test]
fn weight_readers_survive_mutations() {
    let d = tempfile::tempdir().unwrap();
    let named = vec![
        ("conv1.weight".to_string(), tch::Tensor::arange(24, (tch::Kind::Float, tch::Device::Cpu)).view([2, 3, 2, 2])),
        ("bn1.num_batches_tracked".to_string(), tch::Tensor::from(3i64)),
    ];
    let p = d.path().join("base.pth");
    svib::interop::pth::write_pth(&named, &p).unwrap();
    let base = std::fs::read(&p).unwrap();
    let ok = loop_over("pth", &base, &d.path().join("m.pth"), 3000, Duration::from_secs(180), |p| svib::interop::pth::read_pth(p).is_ok());
    assert!(ok > 0, "some mutations (in unread bytes) still read");
    let s = d.path().join("base.safetensors");
    tch::Tensor::write_safetensors(&named, &s).unwrap();
    let base = std::fs::read(&s).unwrap();
    loop_over("safetensors", &base, &d.path().join("m.safetensors"), 3000, Duration::from_secs(180), |p| tch::Tensor::read_safetensors(p).is_ok());
}

#[test]
fn config_parser_survives_mutations() {
    let d = tempfile::tempdir().unwrap();
    let base = svib::train::config::Config::default().to_toml();
    loop_over("config", base.as_bytes(), &d.path().join("c.toml"), 3000, Duration::from_secs(120), |p| {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
        toml::from_str::<toml::Table>(&text).ok().is_some_and(|t| svib::train::config::Config::from_table(t).is_ok())
    });
}
