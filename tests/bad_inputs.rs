//! The bad-input suite (issue 15): generated bad data files, images, configs, command-line values,
//! weight files (malicious pickles among them) and run directories. Every case must end with
//! exit code 2, exactly one `error:` line that contains what the case names (the file or key),
//! no panic, and a bounded peak memory. The figures go into docs/RELIABILITY.md
//! (`SVIB_RELIABILITY=FILE` writes them there as a Markdown table).
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/pickles.rs"]
mod pickles;

/// Peak memory a bad input may cost (libtorch alone takes ~250 MiB).
const MAX_PEAK_MIB: f64 = 1536.0;
const CASE_TIMEOUT: Duration = Duration::from_secs(120);

struct Case {
    name: String,
    args: Vec<String>,
    /// Text the error line must contain (the file or key it names).
    needle: String,
}

enum Verdict {
    Clean,
    Panic(String),
    Accepted,
    Unclear(String),
}

struct Outcome {
    verdict: Verdict,
    peak_mib: f64,
}

/// Runs the binary, waiting with wait4 to read the child's own peak RSS.
#[allow(clippy::zombie_processes)] // the child is reaped by wait4, which std does not see
fn run(c: &Case, scratch: &Path) -> Outcome {
    let err_path = scratch.join("stderr.txt");
    let err = std::fs::File::create(&err_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_svib"))
        .args(&c.args)
        .env("SVIB_CACHE_DIR", scratch.join("cache"))
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let started = Instant::now();
    let (mut status, mut usage) = (0i32, unsafe { std::mem::zeroed::<libc::rusage>() });
    loop {
        // SAFETY: waits for our own child; status and usage are valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if started.elapsed() > CASE_TIMEOUT {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let peak_mib = usage.ru_maxrss as f64 / 1024.0;
    let text = std::fs::read_to_string(&err_path).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    let code = if libc::WIFEXITED(status) { Some(libc::WEXITSTATUS(status)) } else { None };
    let verdict = if text.contains("panicked") || code.is_none() || code == Some(101) || code == Some(134) {
        Verdict::Panic(format!("exit {code:?}, signal {}: {}", libc::WTERMSIG(status), text.chars().take(300).collect::<String>()))
    } else if code == Some(0) {
        Verdict::Accepted
    } else if code == Some(2) && errors.len() == 1 && errors[0].contains(&c.needle) && !in_rust_words(errors[0]) {
        Verdict::Clean
    } else {
        Verdict::Unclear(format!("exit {code:?}, {} error lines, wanted `{}`: {}", errors.len(), c.needle, text.trim_end().chars().take(400).collect::<String>()))
    };
    Outcome { verdict, peak_mib }
}

/// An error line that speaks Rust or serde (`expected usize`, `expected struct GmmConfig`, `Os {
/// code: 2 … }`) or runs past 2,000 characters (a value echoed whole) is unclear to a user.
fn in_rust_words(line: &str) -> bool {
    let types = ["usize", "u64", "u32", "u16", "u8", "i64", "i32", "f64", "f32", "struct "];
    types.iter().any(|t| line.contains(&format!("expected {t}"))) || line.contains("Os {") || line.contains("Error(") || line.chars().count() > 2100
}

fn case(name: impl Into<String>, args: &[&str], needle: impl Into<String>) -> Case {
    Case { name: name.into(), args: args.iter().map(|s| s.to_string()).collect(), needle: needle.into() }
}

fn idx_file(path: &Path, dims: &[u32], data: &[u8], ndim_byte: u8) {
    let mut b = vec![0, 0, 8, ndim_byte];
    dims.iter().for_each(|d| b.extend_from_slice(&d.to_be_bytes()));
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

/// A valid IDX data set of 8x8 images: 20 train, 10 test, labels 0/1.
fn idx_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", 20u32), ("t10k", 10)] {
        let px: Vec<u8> = (0..n * 64).map(|i| (i * 37 % 251) as u8).collect();
        idx_file(&dir.join(format!("{prefix}-images-idx3-ubyte")), &[n, 8, 8], &px, 3);
        idx_file(&dir.join(format!("{prefix}-labels-idx1-ubyte")), &[n], &(0..n).map(|i| (i % 2) as u8).collect::<Vec<_>>(), 1);
    }
}

fn gz(path: &Path, data: &[u8]) {
    let mut e = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap();
}

fn knn_raw(spec: &str) -> Vec<String> {
    vec!["knn".into(), "--data".into(), spec.into(), "--raw-pixels".into()]
}

/// Bad IDX directories: each a copy of the valid one with one file changed.
fn idx_cases(root: &Path) -> Vec<Case> {
    let img = "train-images-idx3-ubyte";
    let lbl = "train-labels-idx1-ubyte";
    let valid_px: Vec<u8> = (0..20u32 * 64).map(|i| (i * 37 % 251) as u8).collect();
    type Mutation = Box<dyn Fn(&Path)>;
    let muts: Vec<(&str, &str, Mutation)> = vec![
        ("images truncated", img, Box::new(move |d: &Path| idx_file(&d.join(img), &[20, 8, 8], &[0; 1277], 3))),
        ("images with trailing bytes", img, Box::new(move |d: &Path| idx_file(&d.join(img), &[20, 8, 8], &[0; 1290], 3))),
        ("images bad magic", img, Box::new(move |d: &Path| idx_file(&d.join(img), &[20, 8, 8], &[0; 1280], 9))),
        ("images 2-D", img, Box::new(move |d: &Path| idx_file(&d.join(img), &[20, 64], &[0; 1280], 2))),
        ("images empty file", img, Box::new(move |d: &Path| std::fs::write(d.join(img), b"").unwrap())),
        ("images header only", img, Box::new(move |d: &Path| idx_file(&d.join(img), &[20, 8, 8], &[], 3))),
        ("images dims overflow", img, Box::new(move |d: &Path| idx_file(&d.join(img), &[u32::MAX, u32::MAX, u32::MAX], &[0; 64], 3))),
        ("images of zero rows", img, Box::new(move |d: &Path| idx_file(&d.join(img), &[20, 0, 8], &[], 3))),
        ("no images", img, Box::new(move |d: &Path| idx_file(&d.join(img), &[0, 8, 8], &[], 3))),
        (
            "images file is a folder",
            img,
            Box::new(move |d: &Path| {
                std::fs::remove_file(d.join(img)).unwrap();
                std::fs::create_dir(d.join(img)).unwrap();
            }),
        ),
        ("images missing", img, Box::new(move |d: &Path| std::fs::remove_file(d.join(img)).unwrap())),
        ("labels missing", lbl, Box::new(move |d: &Path| std::fs::remove_file(d.join(lbl)).unwrap())),
        ("labels count mismatch", lbl, Box::new(move |d: &Path| idx_file(&d.join(lbl), &[19], &[0; 19], 1))),
        ("labels bad magic", lbl, Box::new(move |d: &Path| idx_file(&d.join(lbl), &[20], &[0; 20], 3))),
        ("label 250", lbl, Box::new(move |d: &Path| idx_file(&d.join(lbl), &[20], &[[0u8, 1].as_slice(), &[1; 17], &[250]].concat(), 1))),
        (
            "test label beyond train's classes",
            "t10k-labels-idx1-ubyte",
            Box::new(move |d: &Path| idx_file(&d.join("t10k-labels-idx1-ubyte"), &[10], &[0, 1, 0, 1, 12, 0, 1, 0, 1, 0], 1)),
        ),
        ("test images truncated", "t10k-images-idx3-ubyte", Box::new(move |d: &Path| idx_file(&d.join("t10k-images-idx3-ubyte"), &[10, 8, 8], &[0; 100], 3))),
        (
            "gzip truncated",
            img,
            Box::new(move |d: &Path| {
                let p = d.join(format!("{img}.gz"));
                let mut b = vec![];
                let mut e = flate2::write::GzEncoder::new(&mut b, flate2::Compression::fast());
                e.write_all(&[0, 0, 8, 3, 0, 0, 0, 20, 0, 0, 0, 8, 0, 0, 0, 8]).unwrap();
                e.write_all(&valid_px).unwrap();
                e.finish().unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
                std::fs::remove_file(d.join(img)).unwrap();
            }),
        ),
        (
            "gzip of a non-IDX file",
            img,
            Box::new(move |d: &Path| {
                gz(&d.join(format!("{img}.gz")), b"PK\x03\x04 a zip, not IDX");
                std::fs::remove_file(d.join(img)).unwrap();
            }),
        ),
        (
            "gzip of garbage",
            img,
            Box::new(move |d: &Path| {
                std::fs::write(d.join(format!("{img}.gz")), b"\x1f\x8bnot really gzip at all").unwrap();
                std::fs::remove_file(d.join(img)).unwrap();
            }),
        ),
        (
            "gzip bomb",
            img,
            Box::new(move |d: &Path| {
                let mut e = flate2::write::GzEncoder::new(std::fs::File::create(d.join(format!("{img}.gz"))).unwrap(), flate2::Compression::best());
                e.write_all(&[0, 0, 8, 3, 0, 0, 0, 20, 0, 0, 0, 8, 0, 0, 0, 8]).unwrap();
                let zeros = vec![0u8; 1 << 20];
                (0..3072).for_each(|_| e.write_all(&zeros).unwrap()); // 3 GiB of zeros in ~3 MB
                e.finish().unwrap();
                std::fs::remove_file(d.join(img)).unwrap();
            }),
        ),
    ];
    let mut cases = vec![];
    for (i, (name, file, m)) in muts.into_iter().enumerate() {
        let d = root.join(format!("idx-{i}"));
        idx_dir(&d);
        m(&d);
        cases.push(Case { name: format!("IDX: {name}"), args: knn_raw(&format!("idx:{}", d.display())), needle: file.to_string() });
    }
    cases.push(Case { name: "IDX: folder missing".into(), args: knn_raw(&format!("idx:{}", root.join("nowhere").display())), needle: "nowhere".into() });
    cases
}

fn cifar_cases(root: &Path) -> Vec<Case> {
    let rec = 3073;
    let write_set = |d: &Path, batch1: &[u8]| {
        let b = d.join("cifar-10-batches-bin");
        std::fs::create_dir_all(&b).unwrap();
        for i in 1..=5 {
            std::fs::write(b.join(format!("data_batch_{i}.bin")), if i == 1 { batch1.to_vec() } else { vec![1u8; rec * 2] }).unwrap();
        }
        std::fs::write(b.join("test_batch.bin"), vec![1u8; rec * 2]).unwrap();
    };
    let mut label10 = vec![0u8; rec * 2];
    label10[rec] = 10;
    let variants: Vec<(&str, Vec<u8>)> = vec![("truncated record", vec![1u8; rec * 2 - 5]), ("empty batch", vec![]), ("label 10", label10)];
    let mut cases = vec![];
    for (i, (name, b1)) in variants.into_iter().enumerate() {
        let d = root.join(format!("cifar-{i}"));
        write_set(&d, &b1);
        cases.push(Case { name: format!("CIFAR-10: {name}"), args: knn_raw(&format!("cifar10:{}", d.display())), needle: "data_batch_1.bin".into() });
    }
    let d = root.join("cifar-device");
    write_set(&d, &vec![1u8; rec]);
    let batch1 = d.join("cifar-10-batches-bin/data_batch_1.bin");
    std::fs::remove_file(&batch1).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &batch1).unwrap();
    cases.push(Case { name: "CIFAR-10: batch 1 is /dev/zero".into(), args: knn_raw(&format!("cifar10:{}", d.display())), needle: "data_batch_1.bin".into() });
    let d = root.join("cifar-missing");
    write_set(&d, &vec![1u8; rec]);
    std::fs::remove_file(d.join("cifar-10-batches-bin/data_batch_3.bin")).unwrap();
    cases.push(Case { name: "CIFAR-10: batch 3 missing".into(), args: knn_raw(&format!("cifar10:{}", d.display())), needle: "data_batch_3.bin".into() });
    let d = root.join("cifar100-empty");
    std::fs::create_dir_all(d.join("cifar-100-binary")).unwrap();
    cases.push(Case { name: "CIFAR-100: no train.bin".into(), args: knn_raw(&format!("cifar100:{}", d.display())), needle: "train.bin".into() });
    cases
}

fn stl_cases(root: &Path) -> Vec<Case> {
    let img = 96 * 96 * 3;
    let variants: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        ("images truncated", vec![0u8; img * 2 - 1], vec![1, 2], "train_X.bin"),
        ("label 0", vec![0u8; img * 2], vec![0, 2], "train_y.bin"),
        ("label 11", vec![0u8; img * 2], vec![1, 11], "train_y.bin"),
        ("label count mismatch", vec![0u8; img * 2], vec![1, 2, 3], "train_y.bin"),
    ];
    let mut cases = vec![];
    for (i, (name, x, y, needle)) in variants.into_iter().enumerate() {
        let d = root.join(format!("stl-{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("train_X.bin"), x).unwrap();
        std::fs::write(d.join("train_y.bin"), y).unwrap();
        std::fs::write(d.join("test_X.bin"), vec![0u8; img]).unwrap();
        std::fs::write(d.join("test_y.bin"), [1u8]).unwrap();
        cases.push(Case { name: format!("STL-10: {name}"), args: knn_raw(&format!("stl10:{}", d.display())), needle: needle.into() });
    }
    let d = root.join("stl-none");
    std::fs::create_dir_all(&d).unwrap();
    cases.push(Case { name: "STL-10: no files".into(), args: knn_raw(&format!("stl10:{}", d.display())), needle: "train_X.bin".into() });
    cases
}

/// A PNG whose header claims `w` x `h` pixels, with a tiny body.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(vec![], flate2::Compression::best());
    z.write_all(&[0u8; 4096]).unwrap();
    png_bytes(w, h, 2, &z.finish().unwrap())
}

/// An 8-bit PNG of (w, h), colour type `color` (0 grey, 2 RGB), with the given zlib-compressed
/// scanlines.
fn png_bytes(w: u32, h: u32, color: u8, idat: &[u8]) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        c.extend_from_slice(&crc.sum().to_be_bytes());
        c
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, color, 0, 0, 0]);
    [b"\x89PNG\r\n\x1a\n".to_vec(), chunk(b"IHDR", &ihdr), chunk(b"IDAT", idat), chunk(b"IEND", &[])].concat()
}

fn folder_cases(root: &Path) -> Vec<Case> {
    let png = |p: &Path| image::GrayImage::from_pixel(8, 8, image::Luma([9])).save(p).unwrap();
    let tree = |d: &Path| {
        for split in ["train", "val"] {
            for c in ["a", "b"] {
                std::fs::create_dir_all(d.join(split).join(c)).unwrap();
                png(&d.join(split).join(c).join("0.png"));
                png(&d.join(split).join(c).join("1.png"));
            }
        }
    };
    type Mutation = Box<dyn Fn(&Path)>;
    let muts: Vec<(&str, &str, Mutation)> = vec![
        ("no train folder", "train", Box::new(|d: &Path| std::fs::remove_dir_all(d.join("train")).unwrap())),
        (
            "no class folders",
            "train",
            Box::new(|d: &Path| {
                std::fs::remove_dir_all(d.join("train")).unwrap();
                std::fs::create_dir_all(d.join("train")).unwrap();
            }),
        ),
        ("corrupt png", "broken.png", Box::new(move |d: &Path| std::fs::write(d.join("train/a/broken.png"), &png_claiming(8, 8)[..40]).unwrap())),
        ("zero-byte jpeg", "empty.jpg", Box::new(|d: &Path| std::fs::write(d.join("train/b/empty.jpg"), b"").unwrap())),
        ("text named .jpg", "notes.jpg", Box::new(|d: &Path| std::fs::write(d.join("train/b/notes.jpg"), b"hello, not an image").unwrap())),
        (
            "png of 20000 x 20000 pixels in 400 kB (a decompression bomb)",
            "bomb.png",
            Box::new(|d: &Path| {
                let mut z = flate2::write::ZlibEncoder::new(vec![], flate2::Compression::default());
                let row = [vec![0u8], vec![0u8; 20_000]].concat();
                for _ in 0..20_000 {
                    z.write_all(&row).unwrap();
                }
                std::fs::write(d.join("train/a/bomb.png"), png_bytes(20_000, 20_000, 0, &z.finish().unwrap())).unwrap()
            }),
        ),
        ("png claiming 100000 x 100000 pixels", "huge.png", Box::new(|d: &Path| std::fs::write(d.join("train/a/huge.png"), png_claiming(100_000, 100_000)).unwrap())),
        (
            "truncated jpeg",
            "cut.jpg",
            Box::new(|d: &Path| {
                let mut b = std::io::Cursor::new(vec![]);
                image::GrayImage::from_pixel(64, 64, image::Luma([100])).write_to(&mut b, image::ImageFormat::Jpeg).unwrap();
                std::fs::write(d.join("train/a/cut.jpg"), &b.get_ref()[..b.get_ref().len() / 3]).unwrap();
            }),
        ),
        (
            "jpeg cut off mid-scan (decoders fill the rest with grey; session 26)",
            "mid.jpg",
            Box::new(|d: &Path| {
                let mut b = std::io::Cursor::new(vec![]);
                let noise = image::GrayImage::from_fn(64, 64, |x, y| image::Luma([((x * 37 + y * 91) % 251) as u8]));
                noise.write_to(&mut b, image::ImageFormat::Jpeg).unwrap();
                std::fs::write(d.join("train/b/mid.jpg"), &b.get_ref()[..b.get_ref().len() * 3 / 4]).unwrap();
            }),
        ),
        (
            "val class that train lacks",
            "zebra",
            Box::new(move |d: &Path| {
                std::fs::create_dir_all(d.join("val/zebra")).unwrap();
                png(&d.join("val/zebra/0.png"));
            }),
        ),
        ("no val or test folder", "val", Box::new(|d: &Path| std::fs::remove_dir_all(d.join("val")).unwrap())),
        ("a link from a class folder to itself", "folder cycle", Box::new(|d: &Path| std::os::unix::fs::symlink(d.join("train/a"), d.join("train/a/loop")).unwrap())),
    ];
    let mut cases = vec![];
    let file = root.join("folder-is-a-file.png");
    png(&file);
    cases.push(Case { name: "ImageFolder: a file given as the folder".into(), args: knn_raw(&format!("folder:{}", file.display())), needle: "not a directory".into() });
    for (i, (name, needle, m)) in muts.into_iter().enumerate() {
        let d = root.join(format!("folder-{i}"));
        tree(&d);
        m(&d);
        cases.push(Case { name: format!("ImageFolder: {name}"), args: knn_raw(&format!("folder:{}", d.display())), needle: needle.into() });
    }
    cases
}

/// `svib train --set key=value` for values outside each key's range, and malformed assignments.
fn config_cases(root: &Path, data: &str) -> Vec<Case> {
    let bad: &[(&str, &[&str])] = &[
        ("gmm.k", &["0", "1", "-5", "3000000000", "\"many\"", "1.5"]),
        ("head.hidden", &["0", "2000000000", "-1"]),
        ("head.out", &["0", "100000"]),
        ("head.layers", &["0", "100"]),
        ("gmm.sigma_teacher", &["0", "-0.2", "nan", "inf", "1e-30"]),
        ("gmm.sigma_student", &["0", "nan", "inf"]),
        ("gmm.reinit_noise", &["-1", "nan"]),
        ("gmm.lr_scale", &["-1", "inf"]),
        ("gmm.init", &["\"zeros\""]),
        ("ib.beta_start", &["-0.5", "nan"]),
        ("ib.beta_end", &["-1"]),
        ("ib.prior_momentum", &["1.0", "-0.1"]),
        ("ib.prior", &["\"gaussian\""]),
        ("teacher.momentum_start", &["1.5", "-0.1", "nan"]),
        ("teacher.momentum_end", &["2"]),
        ("teacher.center_momentum", &["1"]),
        ("teacher.sinkhorn_iters", &["1000", "-1"]),
        ("optim.lr", &["0", "-1", "nan", "inf"]),
        ("optim.min_lr", &["-1", "1000"]),
        ("optim.weight_decay", &["-1", "nan"]),
        ("optim.clip_grad", &["-1"]),
        ("optim.momentum", &["1.0"]),
        ("optim.betas", &["[2.0, 0.999]", "[0.9]", "\"x\""]),
        ("optim.eps", &["-1", "0"]),
        ("optim.name", &["\"adam2\""]),
        ("optim.warmup_epochs", &["-1"]),
        ("train.epochs", &["0", "-1"]),
        ("train.steps", &["-3"]),
        ("train.batch_size", &["0", "1", "10000000"]),
        ("train.log_every", &["0"]),
        ("train.keep_checkpoints", &["0"]),
        ("train.prefetch", &["1000"]),
        ("train.device", &["\"tpu\""]),
        ("train.collapse_threshold", &["2"]),
        ("eval.k", &["0"]),
        ("eval.temperature", &["0", "1e-30", "-1"]),
        ("eval.batch_size", &["0"]),
        ("eval.image_size", &["1", "100000"]),
        ("augment.global_size", &["0", "60000", "2"]),
        ("augment.local_size", &["1"]),
        ("augment.local_crops", &["1000", "-1"]),
        ("augment.global_scale", &["[0.5, 0.2]", "[0, 1]", "[0.5, 2]"]),
        ("augment.channels", &["2"]),
        ("augment.flip_p", &["1.5", "nan"]),
        ("augment.hue", &["0.9"]),
        ("augment.blur_radius", &["[0, 1]", "[2, 1]"]),
        ("augment.ratio", &["[0, 1]"]),
        ("model.name", &["\"resnet99\""]),
        ("model.width", &["0", "100000"]),
        ("model.stem_stride", &["3"]),
        ("method", &["\"simclr2\""]),
        ("gmm.kk", &["3"]),
        ("foo.bar", &["1"]),
        ("data.spec", &["\"imagenet:/x\""]),
        // session 24: serde's type names and long numbers in words
        ("gmm", &["3"]),
        ("teacher", &["true"]),
        ("train.seed", &["99999999999999999999", "-1", "1.5"]),
        ("gmm.k", &["[1]"]),
    ];
    let out = root.join("config-run");
    let train = |sets: &[&str]| {
        let mut a: Vec<String> = ["train", "--config", "fmnist-cpu", "--data", data, "--out", out.to_str().unwrap(), "--quiet"].iter().map(|s| s.to_string()).collect();
        for s in sets {
            a.push("--set".into());
            a.push(s.to_string());
        }
        a
    };
    let mut cases = vec![];
    for (key, values) in bad {
        for v in *values {
            let needle = match *key {
                "data.spec" => "imagenet".to_string(),
                "foo.bar" => "foo".to_string(),
                _ => key.split('.').next_back().unwrap().to_string(),
            };
            cases.push(Case { name: format!("config: {key} = {v}"), args: train(&[&format!("{key}={v}")]), needle });
        }
    }
    for (set, needle) in [("gmm.k", "gmm.k"), ("=3", "=3"), ("gmm..k=3", "gmm..k"), ("gmm.k=[1,", "gmm.k")] {
        cases.push(Case { name: format!("--set `{set}`"), args: train(&[set]), needle: needle.into() });
    }
    let vit = ["model.name=\"vit_tiny\"", "model.patch_size=16", "model.img_size=32", "augment.local_crops=2"];
    cases.push(Case { name: "config: ViT patch larger than the local crop".into(), args: train(&vit), needle: "augment.local_size".into() });
    for (i, (text, needle)) in [
        ("method = \"svib\"\n[gmm\nk = 3\n", "bad.toml"),
        ("[gmm]\nk = \"many\"\n", "gmm.k"),
        ("[nonsense]\nx = 1\n", "nonsense"),
        ("\u{0}\u{1}binary", "bad.toml"),
        ("[train]\nbatch_size = -4\n", "batch_size"),
        ("[optim]\nlr = 1e-300\n", "got 1e-300"),
        (&*format!("method = \"{}\"\n", "m".repeat(5_000_000)), "is not available"),
    ]
    .into_iter()
    .enumerate()
    {
        let p = root.join(format!("bad-{i}")).join("bad.toml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        let args = ["train", "--config", p.to_str().unwrap(), "--data", data, "--out", out.to_str().unwrap()];
        cases.push(case(format!("config file: {}", text.escape_debug()), &args, needle));
    }
    cases
}

fn cli_cases(root: &Path, data: &str) -> Vec<Case> {
    let out = root.join("cli-run");
    let o = out.to_str().unwrap();
    let file = root.join("a-file.log");
    std::fs::write(&file, b"the user's log\n").unwrap();
    let file_out = file.to_str().unwrap();
    fn joined<'a>(base: [&'a str; 4], extra: &[&'a str]) -> Vec<&'a str> {
        [&base[..], extra].concat()
    }
    let knn = |extra: &[&'static str]| joined(["knn", "--data", data, "--raw-pixels"], extra);
    let rnd = |extra: &[&'static str]| joined(["knn", "--data", data, "--random-init"], extra);
    let list: Vec<(Vec<&str>, &str)> = vec![
        (knn(&["--k", "0"]), "--k"),
        (knn(&["--k", "-3"]), "--k"),
        (knn(&["--k", "1000000"]), "--k"),
        (knn(&["--temperature", "0"]), "--temperature"),
        (knn(&["--temperature", "1e-30"]), "--temperature"),
        (knn(&["--temperature", "nan"]), "--temperature"),
        (knn(&["--batch-size", "0"]), "--batch-size"),
        (knn(&["--image-size", "0"]), "--image-size"),
        (knn(&["--image-size", "1"]), "--image-size"),
        (knn(&["--image-size", "100000"]), "--image-size"),
        (knn(&["--device", "tpu"]), "tpu"),
        (knn(&["--bogus"]), "--bogus"),
        (rnd(&["--arch", "resnet99"]), "resnet99"),
        (rnd(&["--arch", "resnet18:width=0"]), "width"),
        (rnd(&["--arch", "resnet18:bogus=1"]), "bogus"),
        (rnd(&[]), "--arch"),
        (vec!["knn", "--data", data, "--checkpoint", "/nonexistent/run"], "/nonexistent/run"),
        (vec!["knn", "--data", "bogus", "--raw-pixels"], "bogus"),
        (vec!["train", "--config", "fmnist-cpu", "--data", data, "--out", o, "--epochs", "0"], "epochs"),
        (vec!["train", "--config", "fmnist-cpu", "--data", data, "--out", o, "--budget", "xyz"], "xyz"),
        (vec!["train", "--config", "fmnist-cpu", "--data", data, "--out", o, "--budget", "0s"], "--budget"),
        (vec!["train", "--config", "no-such-preset", "--data", data, "--out", o], "no-such-preset"),
        (vec!["export", "--checkpoint", "/nonexistent/run", "--out", o], "/nonexistent/run"),
        (knn(&["--limit-test", "0"]), "--limit-test"),
        (vec!["train", "--config", "fmnist-cpu", "--data", data, "--out", o, "--max-steps", "0"], "--max-steps"),
        (vec!["augment", "bench", "--data", data, "--batch-size", "0"], "--batch-size"),
        (vec!["quality", "--steps", "0", "--out", o], "--steps"),
        (rnd(&["--arch", "vit_tiny:depth=1", "--image-size", "8"]), "patch"),
        (vec!["data", "synth", "--out", o, "--size", "100000x100000", "--train", "1", "--val", "1"], "--size"),
        (vec!["finetune", "--checkpoint", "/nonexistent/run", "--fraction", "0.1", "--epochs", "0"], "--epochs"),
        // session 23's second probe: sizes and counts without an upper bound, and contradictions
        (vec!["--threads", "0", "presets"], "--threads"),
        (vec!["--threads", "100000", "presets"], "--threads"),
        (vec!["augment", "preview", "--data", data, "--rows", "100000", "--out", "p.png"], "--rows"),
        (vec!["augment", "preview", "--data", data, "--out", "p.jpg"], "p.jpg"),
        (vec!["augment", "bench", "--data", data, "--local-crops", "64", "--global-size", "4096", "--batch-size", "256"], "--batch-size"),
        (vec!["attention", "--checkpoint", "/nonexistent/run", "--indices", "0", "--scale", "100000", "--out", o], "--scale"),
        (vec!["tsne", "--checkpoint", "/nonexistent/run", "--iters", "4000000000", "--out", "t.png"], "--iters"),
        (vec!["tsne", "--checkpoint", "/nonexistent/run", "--out", "t.npy"], "t.npy"),
        (vec!["finetune", "--checkpoint", "/nonexistent/run", "--fraction", "0.1", "--runs", "1000000000"], "--runs"),
        (vec!["compare", "--seeds", "1000000", "--out", o], "--seeds"),
        (vec!["compare", "--methods", "svib,svib", "--out", o], "svib"),
        (vec!["compare", "--set", "method=dino", "--out", o], "method=dino"),
        (vec!["quality", "--data", "fmnist,fmnist", "--out", o], "--data"),
        (vec!["train", "--data", data, "--out", o, "--budget", "100000h"], "--budget"),
        (vec!["train", "--data", data, "--out", o, "--epochs", "2", "--set", "train.steps=3"], "train.steps"),
        (vec!["launch", "--nproc", "1", "--master-port", "0", "--", "train", "--data", data, "--out", o], "--master-port"),
        (vec!["launch", "--nproc", "1", "--", "knn", "--raw-pixels", "--data", data], "train"),
        (vec!["data", "synth", "--out", o, "--train", "0", "--val", "0"], "--train"),
        (vec!["train", "--data", data, "--out", o, "--set", "model.drop_path=1.5"], "model.drop_path"),
        // session 24: flags named as flags, the reference's python in words
        (vec!["augment", "preview", "--data", data, "--global-size", "0", "--out", "p.png"], "--global-size"),
        (vec!["augment", "preview", "--data", data, "--channels", "2", "--out", "p.png"], "--channels"),
        (vec!["compare", "--epochs", "0", "--out", o], "--epochs"),
        (vec!["ablate", "--epochs", "0", "--out", o], "--epochs"),
        (vec!["bench", "--python", root.to_str().unwrap(), "--check-only"], "a folder"),
        (vec!["bench", "--configs", "resnet", "--python", "/bin/false", "--check-only"], "exit status"),
        // session 25's probe: which value was wrong, and a file given as the run's folder
        (vec!["train", "--config", "fmnist-cpu", "--data", data, "--out", o, "--budget", "0m"], "above zero"),
        (vec!["data", "synth", "--out", o, "--size", "0x10"], "--size"),
        (vec!["data", "synth", "--out", o, "--quality", "0"], "--quality"),
        (vec!["train", "--config", "fmnist-cpu", "--data", data, "--out", file_out, "--set", "train.steps=1"], "a file"),
        (vec!["train", "--config", "fmnist-cpu", "--data", data, "--out", o, "--set", "train.device=tpu"], "train.device"),
        (vec!["augment", "preview", "--data", data, "--set", "augment.rotate=3", "--out", "p.png"], "--config"),
        (vec!["augment", "preview", "--config", "no-such-preset", "--out", "p.png"], "no-such-preset"),
    ];
    list.into_iter().map(|(args, needle)| case(format!("CLI: {}", args.join(" ").replace(data, "DATA")), &args, needle)).collect()
}

/// BINUNICODE: `X`, a 4-byte length, the UTF-8 bytes.
fn unicode(text: &str) -> Vec<u8> {
    [vec![b'X'], (text.len() as u32).to_le_bytes().to_vec(), text.as_bytes().to_vec()].concat()
}

/// A torch.save zip archive around `pickle`, with the given storages.
fn pth(path: &Path, pickle: &[u8], storages: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(pickle).unwrap();
    for (k, b) in storages {
        zip.start_file(format!("archive/data/{k}"), opts).unwrap();
        zip.write_all(b).unwrap();
    }
    zip.finish().unwrap();
}

fn tensor_pickle(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
    pickles::tensor_pickle("conv1.weight", numel, offset, size, stride)
}

fn weight_cases(root: &Path, data: &str) -> Vec<Case> {
    let d = root.join("weights");
    std::fs::create_dir_all(&d).unwrap();
    let marker = d.join("PWNED");
    let m = marker.to_str().unwrap();
    let mut files: Vec<(&str, Vec<u8>, &str)> = vec![]; // (name, bytes, kind: "pth" | "raw")
    files.push(("empty.pth", vec![], "raw"));
    files.push(("not-a-zip.pth", b"\x80\x02}q\x00.".to_vec(), "raw"));
    files.push(("garbage.safetensors", b"this is not a safetensors file".to_vec(), "raw"));
    let mut huge_header = (u64::MAX / 2).to_le_bytes().to_vec();
    huge_header.extend_from_slice(b"{}");
    files.push(("huge-header.safetensors", huge_header, "raw"));
    let hdr = br#"{"conv1.weight":{"dtype":"F32","shape":[1000000,1000],"data_offsets":[0,4000000000]}}"#;
    let mut beyond = (hdr.len() as u64).to_le_bytes().to_vec();
    beyond.extend_from_slice(hdr);
    beyond.extend_from_slice(&[0u8; 64]);
    files.push(("offsets-beyond.safetensors", beyond, "raw"));
    let mut cases = vec![];
    for (name, bytes, _) in &files {
        std::fs::write(d.join(name), bytes).unwrap();
    }
    type Storages = Vec<(&'static str, Vec<u8>)>;
    let pickles: Vec<(&str, Vec<u8>, Storages)> = vec![
        ("os-system.pth", format!("cos\nsystem\n(S'touch {m}'\ntR.").into_bytes(), vec![]),
        ("posix-system.pth", [b"\x80\x02cposix\nsystem\n".to_vec(), unicode(&format!("touch {m}")), b"\x85R.".to_vec()].concat(), vec![]),
        ("builtins-exec.pth", [b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93".to_vec(), unicode(&format!("import os; os.system('touch {m}')")), b"\x85R.".to_vec()].concat(), vec![]),
        (
            "eval-in-dict.pth",
            [b"\x80\x02}X\x01\0\0\0ac__builtin__\neval\n".to_vec(), unicode(&format!("__import__('os').system('touch {m}')")), b"\x85Rs.".to_vec()].concat(),
            vec![],
        ),
        ("negative-offset.pth", tensor_pickle(4, -1, &[2], &[1]), vec![("0", vec![0u8; 16])]),
        ("negative-size.pth", tensor_pickle(4, 0, &[-2], &[1]), vec![("0", vec![0u8; 16])]),
        ("negative-stride.pth", tensor_pickle(4, 0, &[2], &[-1]), vec![("0", vec![0u8; 16])]),
        ("size-overflow.pth", tensor_pickle(4, 0, &[1 << 40, 1 << 40], &[1, 1]), vec![("0", vec![0u8; 16])]),
        ("stride-0-64GiB.pth", tensor_pickle(4, 0, &[1 << 20, 1 << 14], &[0, 0]), vec![("0", vec![0u8; 16])]),
        ("past-storage.pth", tensor_pickle(4, 0, &[16, 3, 3, 3], &[27, 9, 3, 1]), vec![("0", vec![0u8; 16])]),
        ("storage-missing.pth", tensor_pickle(4, 0, &[2], &[1]), vec![]),
        ("nested-million.pth", [vec![0x80, 2], vec![b']'; 1_000_000], vec![b'a'; 999_999], vec![b'.']].concat(), vec![]),
        ("memo-doubling.pth", [vec![0x80, 2, b']', b'q', 0], [b'h', 0, b'h', 0, 0x86, b'q', 0].repeat(64), vec![b'.']].concat(), vec![]),
        ("binunicode8-2^64.pth", [vec![0x80, 4, 0x8d], u64::MAX.to_le_bytes().to_vec(), vec![b'.']].concat(), vec![]),
        ("truncated-pickle.pth", tensor_pickle(4, 0, &[2], &[1])[..60].to_vec(), vec![]),
        ("unknown-opcode.pth", vec![0x80, 2, 0xfe, b'.'], vec![]),
        ("no-tensors.pth", b"\x80\x02}q\x00.".to_vec(), vec![]),
    ];
    for (name, pickle, storages) in &pickles {
        let st: Vec<(&str, &[u8])> = storages.iter().map(|(k, b)| (*k, b.as_slice())).collect();
        pth(&d.join(name), pickle, &st);
    }
    let arch = "resnet18:small_stem=true,width=4";
    for name in files.iter().map(|f| f.0).chain(pickles.iter().map(|p| p.0)) {
        let p = d.join(name);
        cases.push(case(format!("weights: {name}"), &["knn", "--data", data, "--checkpoint", p.to_str().unwrap(), "--arch", arch], name));
    }
    // a 1.3 GB storage deflated to about 1.3 MB, behind a tensor of the model's first conv
    let deflated = d.join("deflated-1.3GB-storage.pth");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&deflated).unwrap());
    let opts = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Deflated).large_file(true);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(&tensor_pickle(325_000_000, 0, &[4, 1, 3, 3], &[9, 9, 3, 1])).unwrap();
    zip.start_file("archive/data/0", opts).unwrap();
    let zeros = vec![0u8; 1 << 20];
    (0..1240).for_each(|_| zip.write_all(&zeros).unwrap());
    zip.finish().unwrap();
    cases.push(case("weights: 1.3 GB deflated storage", &["knn", "--data", data, "--checkpoint", deflated.to_str().unwrap(), "--arch", arch], "deflated-1.3GB-storage.pth"));
    let no_zip_entry = d.join("no-data-pkl.pth");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&no_zip_entry).unwrap());
    zip.start_file("archive/other", zip::write::FileOptions::default()).unwrap();
    zip.write_all(b"x").unwrap();
    zip.finish().unwrap();
    cases.push(case("weights: zip without data.pkl", &["knn", "--data", data, "--checkpoint", no_zip_entry.to_str().unwrap(), "--arch", arch], "no-data-pkl.pth"));
    cases
}

/// Run directories that cannot be resumed or evaluated, and a second writer.
fn rundir_cases(root: &Path, data: &str) -> (Vec<Case>, std::fs::File) {
    let mut cases = vec![];
    let empty = root.join("run-empty");
    std::fs::create_dir_all(&empty).unwrap();
    cases.push(case("run dir: no checkpoint", &["knn", "--data", data, "--checkpoint", empty.to_str().unwrap()], "run-empty"));
    let junk = root.join("run-junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("ckpt-00000004.safetensors"), b"junk").unwrap();
    std::fs::write(junk.join("ckpt-00000004.json"), b"{not json").unwrap();
    cases.push(case("run dir: every checkpoint unreadable", &["knn", "--data", data, "--checkpoint", junk.to_str().unwrap()], "run-junk"));
    for (name, value, step) in [("run-nan", f32::NAN, 4usize), ("run-step-999999", 1.0, 999_999)] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        tch::Tensor::write_safetensors(&[("student.backbone.conv1.weight", tch::Tensor::from_slice(&[value, 1.0]))], dir.join("ckpt-00000004.safetensors")).unwrap();
        let meta = format!("{{\"step\": {step}, \"epoch\": 0, \"batch_in_epoch\": 4, \"seconds\": 1.0, \"svib_version\": \"0.1.0\", \"rng\": \"derived\"}}");
        std::fs::write(dir.join("ckpt-00000004.json"), meta).unwrap();
        cases.push(case(format!("run dir: {name}"), &["knn", "--data", data, "--checkpoint", dir.to_str().unwrap()], name));
    }
    let file = root.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    cases.push(case("run dir: --out is a file", &["train", "--config", "fmnist-cpu", "--data", data, "--out", file.to_str().unwrap()], "a-file"));
    let locked = root.join("run-locked");
    std::fs::create_dir_all(&locked).unwrap();
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(locked.join(".lock")).unwrap();
    // SAFETY: flock on a descriptor this test owns; held until the suite ends.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    cases.push(case("run dir: another writer holds the lock", &["train", "--config", "fmnist-cpu", "--data", data, "--out", locked.to_str().unwrap()], "run-locked"));
    let recipe = root.join("run-recipe");
    std::fs::create_dir_all(&recipe).unwrap();
    std::fs::write(recipe.join("config.toml"), "method = \"dino\"\n").unwrap();
    cases.push(case("run dir: another recipe", &["train", "--config", "fmnist-cpu", "--data", data, "--out", recipe.to_str().unwrap()], "another recipe"));
    let badcfg = root.join("run-badcfg");
    std::fs::create_dir_all(&badcfg).unwrap();
    std::fs::write(badcfg.join("config.toml"), "[gmm\n").unwrap();
    cases.push(case("run dir: config.toml not TOML", &["train", "--config", "fmnist-cpu", "--data", data, "--out", badcfg.to_str().unwrap()], "config.toml"));
    let notrun = root.join("not-a-run");
    std::fs::create_dir_all(&notrun).unwrap();
    std::fs::write(notrun.join("metrics.jsonl"), "the user's own\n").unwrap();
    cases.push(case("run dir: metrics.jsonl without config.toml", &["train", "--config", "fmnist-cpu", "--data", data, "--out", notrun.to_str().unwrap()], "metrics.jsonl"));
    let into_run = recipe.join("config.toml");
    cases.push(case("export over a run's config.toml", &["export", "--checkpoint", "/nonexistent/run", "--out", into_run.to_str().unwrap()], "would replace"));
    let full = root.join("synth-full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("mine.txt"), b"keep").unwrap();
    cases.push(case("data synth into a non-empty folder", &["data", "synth", "--out", full.to_str().unwrap(), "--train", "2", "--val", "1"], "synth-full"));
    cases.push(wds_without_cls(root));
    cases.extend(misdirected_cases(root, &recipe, &file, data));
    (cases, lock)
}

/// Right values for the wrong command or file: a run's config.toml as a checkpoint, --arch with
/// a run, an output below a file, contradicting options, a launch whose ranks would all fail.
fn misdirected_cases(root: &Path, run: &Path, file: &Path, data: &str) -> Vec<Case> {
    let (run_s, config) = (run.to_str().unwrap(), run.join("config.toml"));
    let below_file = file.join("x.pth");
    let out = root.join("run-new");
    let out = out.to_str().unwrap();
    let wds = root.join("wds-folder-shard");
    for split in ["train", "val"] {
        std::fs::create_dir_all(wds.join(split).join("0.tar")).unwrap();
    }
    let wds = format!("wds:{}", wds.display());
    vec![
        case("wds: a folder named as a shard", &["knn", "--raw-pixels", "--data", &wds], "0.tar"),
        case("knn --checkpoint RUN/config.toml", &["knn", "--data", data, "--checkpoint", config.to_str().unwrap()], "config.toml: expected a run directory"),
        case("knn --checkpoint RUN --arch", &["knn", "--data", data, "--checkpoint", run_s, "--arch", "resnet18"], "--arch"),
        case("export --out below a file", &["export", "--checkpoint", "/nonexistent/run", "--out", below_file.to_str().unwrap()], "a-file"),
        case("train --method and --set method disagree", &["train", "--data", data, "--method", "byol", "--set", "method=dino", "--out", out], "disagree"),
        case("bench --configs unknown", &["bench", "--configs", "nope"], "--configs"),
        case("bench --loader unknown", &["bench", "--loader", "nope", "--data", data], "--loader"),
        case("launch: the ranks' config is bad", &["launch", "--nproc", "1", "--", "train", "--data", data, "--set", "gmm.k=abc", "--out", out], "gmm.k"),
        case("launch --nproc 100000", &["launch", "--nproc", "100000", "--", "train", "--data", data, "--out", out], "--nproc"),
    ]
}

/// A `wds:` set whose one sample has an image but no `KEY.cls`: fine for training, an error for kNN.
fn wds_without_cls(root: &Path) -> Case {
    let dir = root.join("wds-nocls");
    let mut png = vec![];
    image::GrayImage::from_pixel(8, 8, image::Luma([9])).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    for split in ["train", "val"] {
        std::fs::create_dir_all(dir.join(split)).unwrap();
        let mut b = tar::Builder::new(std::fs::File::create(dir.join(split).join("0.tar")).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(png.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "a.png", &png[..]).unwrap();
        b.finish().unwrap();
    }
    case("wds: a sample without .cls, evaluated", &["knn", "--raw-pixels", "--data", &format!("wds:{}", dir.display())], "no class")
}

fn all_cases(root: &Path) -> (Vec<Case>, std::fs::File) {
    let good = root.join("good-idx");
    idx_dir(&good);
    let data = format!("idx:{}", good.display());
    let mut cases = idx_cases(root);
    cases.extend(cifar_cases(root));
    cases.extend(stl_cases(root));
    cases.extend(folder_cases(root));
    cases.extend(config_cases(root, &data));
    cases.extend(cli_cases(root, &data));
    cases.extend(weight_cases(root, &data));
    let (more, lock) = rundir_cases(root, &data);
    cases.extend(more);
    (cases, lock)
}

fn report(n: usize, clean: usize, panics: &[String], accepted: &[String], unclear: &[String], worst: (f64, &str)) -> String {
    let mut s = format!(
        "| cases | clean errors | panics | wrongly accepted | unclear | worst peak memory |\n|---|---|---|---|---|---|\n| {n} | {clean} | {} | {} | {} | {:.0} MiB ({}) |\n",
        panics.len(),
        accepted.len(),
        unclear.len(),
        worst.0,
        worst.1
    );
    for (what, list) in [("panic", panics), ("accepted", accepted), ("unclear", unclear)] {
        for l in list {
            s += &format!("\n- {what}: {l}");
        }
    }
    s
}

#[test]
fn every_bad_input_gives_one_error_line_and_exit_2() {
    let root = tempfile::tempdir().unwrap();
    let (cases, _lock) = all_cases(root.path());
    assert!(cases.len() >= 150, "{} cases", cases.len());
    let scratch = root.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (mut clean, mut panics, mut accepted, mut unclear, mut worst) = (0, vec![], vec![], vec![], (0.0, String::new()));
    for c in &cases {
        let o = run(c, &scratch);
        if o.peak_mib > worst.0 {
            worst = (o.peak_mib, c.name.clone());
        }
        match o.verdict {
            Verdict::Clean if o.peak_mib <= MAX_PEAK_MIB => clean += 1,
            Verdict::Clean => unclear.push(format!("{}: peak memory {:.0} MiB", c.name, o.peak_mib)),
            Verdict::Panic(t) => panics.push(format!("{}: {t}", c.name)),
            Verdict::Accepted => accepted.push(c.name.clone()),
            Verdict::Unclear(t) => unclear.push(format!("{}: {t}", c.name)),
        }
    }
    let marker = root.path().join("weights/PWNED");
    assert!(!marker.exists(), "a malicious pickle ran a command");
    let table = report(cases.len(), clean, &panics, &accepted, &unclear, (worst.0, &worst.1));
    println!("{table}");
    if let Ok(out) = std::env::var("SVIB_RELIABILITY") {
        std::fs::write(PathBuf::from(out), &table).unwrap();
    }
    assert!(panics.is_empty() && accepted.is_empty() && unclear.is_empty(), "{table}");
}
