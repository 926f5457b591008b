//! The binary end to end on small generated data: exit codes, one-line errors, outputs.
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

fn svib(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_svib")).args(args).env("SVIB_CACHE_DIR", std::env::temp_dir().join("svib-test-cache")).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes an IDX data set of two well-separated classes (dark vs bright images) with noise.
fn write_two_class_idx(dir: &Path, n: usize) {
    let mut seed = 7u32;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed % 60) as u8
    };
    for (prefix, count) in [("train", n), ("t10k", n / 2)] {
        let mut px = vec![];
        let mut labels = vec![];
        for i in 0..count {
            let class = (i % 2) as u8;
            labels.push(class);
            for p in 0..64 {
                // class 0: bright left half; class 1: bright right half
                let bright = ((p % 8) < 4) == (class == 0);
                px.push(if bright { 180 + rnd() } else { rnd() });
            }
        }
        let mut f = std::fs::File::create(dir.join(format!("{prefix}-images-idx3-ubyte"))).unwrap();
        f.write_all(&[0, 0, 8, 3]).unwrap();
        for d in [count as u32, 8, 8] {
            f.write_all(&d.to_be_bytes()).unwrap();
        }
        f.write_all(&px).unwrap();
        let mut f = std::fs::File::create(dir.join(format!("{prefix}-labels-idx1-ubyte"))).unwrap();
        f.write_all(&[0, 0, 8, 1]).unwrap();
        f.write_all(&(count as u32).to_be_bytes()).unwrap();
        f.write_all(&labels).unwrap();
    }
}

#[test]
fn knn_raw_pixels_json_on_separable_data() {
    let d = tempfile::tempdir().unwrap();
    write_two_class_idx(d.path(), 40);
    let spec = format!("idx:{}", d.path().display());
    let o = svib(&["knn", "--data", &spec, "--raw-pixels", "--json", "--k", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["top1"].as_f64().unwrap(), 100.0);
    assert_eq!((v["k"].as_i64(), v["n_train"].as_i64(), v["n_test"].as_i64()), (Some(5), Some(40), Some(20)));
    // a random-init small ResNet runs on the same data
    let o = svib(&["knn", "--data", &spec, "--random-init", "--arch", "resnet18:small_stem=true,width=8", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_inputs_give_one_line_and_exit_2() {
    let d = tempfile::tempdir().unwrap();
    write_two_class_idx(d.path(), 10);
    let spec = format!("idx:{}", d.path().display());
    let p = d.path().join("train-images-idx3-ubyte");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 3]).unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["knn", "--raw-pixels", "--bogus"], "--bogus"),
        (vec!["knn", "--data", "imagenet:/x", "--raw-pixels"], "unknown dataset"),
        (vec!["knn", "--data", "cifar10:/does/not/exist", "--raw-pixels"], "does not exist"),
        (vec!["knn", "--data", &spec, "--raw-pixels"], "truncated"),
        (vec!["knn", "--data", &spec, "--random-init", "--arch", "resnet99"], "unknown architecture"),
        (vec!["knn", "--raw-pixels", "--k", "0"], "--k"),
        (vec!["knn", "--data", &spec], "required"),
    ];
    for (args, needle) in cases {
        let o = svib(&args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{args:?}: {e}");
        assert!(e.contains(needle) && !e.contains("panicked"), "{args:?}: {e}");
    }
}

#[test]
fn augment_preview_writes_a_grid_png() {
    let d = tempfile::tempdir().unwrap();
    write_two_class_idx(d.path(), 4);
    let out = d.path().join("grid.png");
    let o = svib(&["augment", "preview", "--data", &format!("idx:{}", d.path().display()), "--out", out.to_str().unwrap(), "--rows", "3", "--cell", "32", "--local-crops", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&out).unwrap();
    // 1 source + 2 global + 4 local columns of 32 px with 4 px padding
    assert_eq!((img.width(), img.height()), (7 * 36 + 4, 3 * 36 + 4));
}

#[test]
fn train_then_knn_checkpoint_reproduces_result() {
    let d = tempfile::tempdir().unwrap();
    write_two_class_idx(d.path(), 32);
    let out = d.path().join("run");
    let spec = format!("idx:{}", d.path().display());
    let sets = TINY;
    let mut args = vec!["train", "--config", "fmnist-cpu", "--data", &spec, "--epochs", "2", "--out", out.to_str().unwrap(), "--quiet", "--json"];
    for s in &sets {
        args.push("--set");
        args.push(s);
    }
    let o = svib(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["epochs"].as_u64(), Some(2));
    assert_eq!(r["steps"].as_u64(), Some(8));
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(saved["knn_top1"], r["knn_top1"]);
    let o = svib(&["knn", "--data", &spec, "--checkpoint", out.to_str().unwrap(), "--k", "3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let k: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(k["top1"], r["knn_top1"]);
    // an unknown key and an out-of-range value are one-line errors naming the key
    for (set, needle) in [("gmm.kk=3", "gmm.kk"), ("ib.prior_momentum=1.5", "ib.prior_momentum"), ("augment.jitter_p=2", "augment.jitter_p")] {
        let o = svib(&["train", "--data", &spec, "--out", d.path().join("x").to_str().unwrap(), "--set", set]);
        assert_eq!(o.status.code(), Some(2), "{set}");
        assert!(stderr(&o).contains(needle) && stderr(&o).trim_end().lines().count() == 1, "{set}: {}", stderr(&o));
    }
    // presets are listed one per line
    let o = svib(&["presets"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for p in ["paper-vit-s16", "paper-rn50", "paper-ablation", "fmnist-cpu"] {
        assert!(text.lines().any(|l| l.starts_with(p)), "{p}");
    }
}

const TINY: [&str; 12] = [
    "model.name=\"resnet18\"",
    "model.small_stem=true",
    "model.width=4",
    "augment.global_size=8",
    "augment.local_size=4",
    "augment.local_crops=1",
    "augment.channels=1",
    "head.hidden=16",
    "head.out=8",
    "gmm.k=4",
    "train.batch_size=8",
    "eval.k=3",
];

fn with_sets<'a, S: AsRef<str>>(mut args: Vec<&'a str>, sets: &'a [S]) -> Vec<&'a str> {
    for s in sets {
        args.push("--set");
        args.push(s.as_ref());
    }
    args
}

/// The tiny settings on a two-class IDX set of 32 training images written into `dir`, as
/// `--set` values of an experiment.
fn tiny_sets_on_idx(dir: &Path) -> Vec<String> {
    write_two_class_idx(dir, 32);
    let mut sets: Vec<String> = TINY.iter().map(|s| s.to_string()).collect();
    sets.push(format!("data.spec=\"idx:{}\"", dir.display()));
    sets
}

#[test]
fn compare_writes_table_and_curve_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    let mut sets = tiny_sets_on_idx(d.path());
    sets.push("mocov2.queue=16".into());
    let out = d.path().join("cmp");
    let args = with_sets(vec!["compare", "--methods", "svib,dino,byol,mocov2,swav", "--seeds", "2", "--epochs", "2", "--out", out.to_str().unwrap()], &sets);
    let o = svib(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    for m in ["svib", "dino", "byol", "mocov2", "swav"] {
        let row = md.lines().find(|l| l.starts_with(&format!("| {m} |"))).unwrap_or_else(|| panic!("{m} row missing:\n{md}"));
        assert!(row.contains(" ± "), "{row}");
        assert!(out.join(format!("{m}-seed1/result.json")).is_file());
    }
    let png = std::fs::read(out.join("knn_curve.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // a second call finds every run finished and rebuilds the same table without training
    let started = std::time::Instant::now();
    let o = svib(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("results.md")).unwrap(), md);
    assert!(started.elapsed().as_secs_f64() < 60.0);
    // unknown method: one line, exit 2
    let o = svib(&["compare", "--methods", "svib,barlowtwins", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("barlowtwins"), "{}", stderr(&o));
}

#[test]
fn quality_reports_raw_pixels_untrained_and_methods_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    let sets = tiny_sets_on_idx(d.path());
    let out = d.path().join("q");
    let args = with_sets(vec!["quality", "--methods", "svib,dino", "--seeds", "2", "--steps", "6", "--data", "fmnist,fmnist-8k", "--out", out.to_str().unwrap()], &sets);
    let o = svib(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| data set | raw pixels | untrained | svib | dino |"), "{md}");
    for v in ["fmnist", "fmnist-8k"] {
        let row = md.lines().find(|l| l.starts_with(&format!("| {v} |"))).unwrap_or_else(|| panic!("{v} row missing:\n{md}"));
        // raw pixels separate the two classes perfectly; every other cell is mean ± std
        assert!(row.starts_with(&format!("| {v} | 100.00 | ")), "{row}");
        assert_eq!(row.matches(" ± ").count(), 3, "{row}");
        let png = std::fs::read(out.join(format!("knn_{v}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let cfg = std::fs::read_to_string(out.join(format!("{v}/svib-seed1/config.toml"))).unwrap();
        assert!(cfg.contains("steps = 6"), "{cfg}");
    }
    // the kNN of the untrained backbone is step 0 of every run's metrics
    let m = std::fs::read_to_string(out.join("fmnist/dino-seed0/metrics.jsonl")).unwrap();
    assert!(m.lines().next().unwrap().contains("\"untrained\":true"), "{m}");
    let o = svib(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(out.join("results.md")).unwrap(), md);
}

#[test]
fn ablate_reports_every_task_and_diverged_runs() {
    let d = tempfile::tempdir().unwrap();
    let sets = tiny_sets_on_idx(d.path());
    let out = d.path().join("abl");
    let o = svib(&with_sets(vec!["ablate", "--epochs", "2", "--knn-every", "1", "--out", out.to_str().unwrap()], &sets));
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    for task in 1..=8 {
        assert!(md.lines().any(|l| l.starts_with(&format!("| {task} |"))), "task {task} missing:\n{md}");
    }
    // task 1 has no bottleneck: beta 0 in every metrics line; task 3 keeps beta at 0.5
    let betas = |t: &str| -> Vec<f64> {
        std::fs::read_to_string(out.join(t).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("beta")?.as_f64())
            .collect()
    };
    assert!(betas("task1").iter().all(|&b| b == 0.0) && !betas("task1").is_empty());
    assert!(betas("task3").iter().all(|&b| b == 0.5));
    assert_eq!(&std::fs::read(out.join("beta_curve.png")).unwrap()[1..4], b"PNG");
    // a run whose loss is not finite is reported as diverged, not dropped
    let out2 = d.path().join("abl-div");
    let args = with_sets(vec!["ablate", "--epochs", "1", "--out", out2.to_str().unwrap()], &sets);
    let o = Command::new(env!("CARGO_BIN_EXE_svib"))
        .args(&args)
        .env("SVIB_CACHE_DIR", std::env::temp_dir().join("svib-test-cache"))
        .env("SVIB_INJECT_NAN_AT_STEP", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out2.join("results.md")).unwrap();
    assert_eq!(md.lines().filter(|l| l.contains("| diverged |")).count(), 8, "{md}");
    assert!(md.contains("not finite"), "{md}");
}

#[test]
fn linear_finetune_and_export_on_a_trained_run() {
    let d = tempfile::tempdir().unwrap();
    write_two_class_idx(d.path(), 64);
    let spec = format!("idx:{}", d.path().display());
    let run = d.path().join("run");
    let o = svib(&with_sets(vec!["train", "--config", "fmnist-cpu", "--data", &spec, "--epochs", "1", "--out", run.to_str().unwrap(), "--quiet", "--json"], &TINY));
    assert!(o.status.success(), "{}", stderr(&o));
    let trained: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // linear probe: one JSON line; the two classes differ in brightness layout, so it learns them
    let o = svib(&["linear", "--checkpoint", run.to_str().unwrap(), "--epochs", "30", "--batch-size", "16", "--lr", "1.0", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["top1"].as_f64().unwrap() >= 90.0, "{r}");
    assert_eq!((r["n_train"].as_u64(), r["n_test"].as_u64(), r["feature_dim"].as_i64()), (Some(64), Some(32), Some(32)));
    // fine-tuning on half the labels, twice: mean and std over the runs
    let o = svib(&["finetune", "--checkpoint", run.to_str().unwrap(), "--fraction", "0.5", "--runs", "2", "--epochs", "2", "--batch-size", "8", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(f["runs"].as_array().unwrap().len(), 2);
    assert_eq!(f["runs"][0]["n_labelled"].as_u64(), Some(32));
    assert!(f["top1_mean"].as_f64().unwrap() >= 0.0 && f["top1_std"].as_f64().is_some());
    // export, then kNN on the exported weights: the same number as the run itself
    let w = d.path().join("backbone.safetensors");
    let o = svib(&["export", "--checkpoint", run.to_str().unwrap(), "--out", w.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o =
        svib(&["knn", "--data", &spec, "--checkpoint", w.to_str().unwrap(), "--arch", "resnet18:small_stem=true,width=4,stem_stride=2", "--channels", "1", "--k", "3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let k: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(k["top1"], trained["knn_top1"]);
    // Detectron2 layout
    let w2 = d.path().join("d2.safetensors");
    let o = svib(&["export", "--checkpoint", run.to_str().unwrap(), "--layout", "detectron2", "--out", w2.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&w2).unwrap();
    let header = String::from_utf8_lossy(&bytes[8..8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize]).into_owned();
    assert!(header.contains("stem.conv1.weight") && header.contains("res5.1.conv2.norm.running_var") && !header.contains("layer1"), "{header}");
    // embed: features and labels as .npy
    let e = d.path().join("emb.npy");
    let o = svib(&["embed", "--checkpoint", run.to_str().unwrap(), "--out", e.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b = std::fs::read(&e).unwrap();
    assert!(String::from_utf8_lossy(&b[10..80]).contains("'shape': (32, 32)"));
    assert_eq!(b.len(), 128 + 32 * 32 * 4);
    assert!(d.path().join("emb.labels.npy").is_file());
    // a weights file without --arch is one clear error
    let o = svib(&["linear", "--checkpoint", w.to_str().unwrap(), "--data", &spec]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--arch"), "{}", stderr(&o));
}

#[test]
fn attention_maps_and_tsne_plot_on_a_tiny_vit_run() {
    let d = tempfile::tempdir().unwrap();
    write_two_class_idx(d.path(), 64);
    let spec = format!("idx:{}", d.path().display());
    let run = d.path().join("vit");
    let vit = [
        "model.name=\"vit_tiny\"",
        "model.patch_size=4",
        "model.img_size=8",
        "model.dim=16",
        "model.depth=2",
        "model.heads=2",
        "augment.global_size=8",
        "augment.local_size=4",
        "augment.local_crops=1",
        "augment.channels=1",
        "head.hidden=16",
        "head.out=8",
        "gmm.k=4",
        "train.batch_size=8",
        "eval.k=3",
    ];
    let o = svib(&with_sets(vec!["train", "--config", "fmnist-cpu", "--data", &spec, "--epochs", "1", "--out", run.to_str().unwrap(), "--quiet", "--json"], &vit));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = d.path().join("attn");
    let o = svib(&["attention", "--checkpoint", run.to_str().unwrap(), "--indices", "0,3", "--scale", "10", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for name in ["test0", "test3"] {
        for h in ["head0", "head1", "mean"] {
            for kind in ["attn", "mask"] {
                let img = image::open(out.join(format!("{name}-{kind}-{h}.png"))).unwrap();
                assert_eq!((img.width(), img.height()), (80, 80));
            }
        }
        // image + 2 heads + mean, two rows, 4 px gutters
        let g = image::open(out.join(format!("{name}-grid.png"))).unwrap();
        assert_eq!((g.width(), g.height()), (4 * 80 + 3 * 4, 2 * 80 + 4));
    }
    // t-SNE of the test split: a PNG and the 2-D points as .npy
    let png = d.path().join("tsne.png");
    let o = svib(&["tsne", "--checkpoint", run.to_str().unwrap(), "--perplexity", "5", "--iters", "250", "--out", png.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(image::open(&png).unwrap().width() > 100);
    let b = std::fs::read(d.path().join("tsne.npy")).unwrap();
    assert!(String::from_utf8_lossy(&b[10..80]).contains("'shape': (32, 2)"));
    // a ResNet has no attention maps: one clear error
    let rn = d.path().join("rn");
    let o = svib(&with_sets(vec!["train", "--config", "fmnist-cpu", "--data", &spec, "--epochs", "1", "--out", rn.to_str().unwrap(), "--quiet"], &TINY));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = svib(&["attention", "--checkpoint", rn.to_str().unwrap(), "--indices", "0", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("need a ViT"), "{}", stderr(&o));
}

#[test]
fn a_failed_first_start_leaves_nothing_that_blocks_the_corrected_command() {
    let d = tempfile::tempdir().unwrap();
    write_two_class_idx(d.path(), 32);
    let spec = format!("idx:{}", d.path().display());
    let run = d.path().join("run");
    let r = run.to_str().unwrap();
    // a wrong data path: one error, and no run folder (so no recipe) left behind
    let o = svib(&with_sets(vec!["train", "--config", "fmnist-cpu", "--data", "idx:/nonexistent/data", "--epochs", "1", "--out", r, "--quiet"], &TINY));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!run.exists(), "a failed start left {:?}", std::fs::read_dir(&run).map(|d| d.count()));
    // the same in a folder the user made: the folder stays, empty
    std::fs::create_dir_all(&run).unwrap();
    let o = svib(&with_sets(vec!["train", "--config", "fmnist-cpu", "--data", "idx:/nonexistent/data", "--epochs", "1", "--out", r, "--quiet"], &TINY));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 0);
    // the corrected command starts a run there
    let o = svib(&with_sets(vec!["train", "--config", "fmnist-cpu", "--data", &spec, "--epochs", "1", "--out", r, "--quiet", "--json"], &TINY));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(run.join("config.toml").is_file() && run.join("result.json").is_file());
}

/// Session 25's probe: the evaluation commands read a run's own images as `knn` does (its
/// `data.limit`), `embed` writes integer labels, and Ctrl-C stops training with a checkpoint and
/// exit status 130 (so `svib train ... && svib knn ...` does not go on).
#[test]
fn evaluations_read_the_runs_images_and_ctrl_c_exits_130() {
    let d = tempfile::tempdir().unwrap();
    write_two_class_idx(d.path(), 64);
    let spec = format!("idx:{}", d.path().display());
    let run = d.path().join("run");
    let r = run.to_str().unwrap();
    let o = svib(&with_sets(vec!["train", "--config", "fmnist-cpu", "--data", &spec, "--epochs", "1", "--out", r, "--quiet", "--set", "data.limit=40"], &TINY));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = svib(&["knn", "--checkpoint", r, "--json"]);
    let k: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", stderr(&o)));
    let o = svib(&["linear", "--checkpoint", r, "--epochs", "1", "--batch-size", "16", "--quiet"]);
    let l: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", stderr(&o)));
    assert_eq!((k["n_train"].as_u64(), l["n_train"].as_u64()), (Some(40), Some(40)));
    let e = d.path().join("tr.npy");
    let o = svib(&["embed", "--checkpoint", r, "--split", "train", "--out", e.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b = std::fs::read(d.path().join("tr.labels.npy")).unwrap();
    assert!(String::from_utf8_lossy(&b[10..80]).contains("{'descr': '<i8', 'fortran_order': False, 'shape': (40,), }"), "{}", String::from_utf8_lossy(&b[..80]));
    assert_eq!(b.len(), 128 + 40 * 8);
    // Ctrl-C: a checkpoint, the line that says so, exit 130
    let long = d.path().join("long");
    let args = with_sets(vec!["train", "--config", "fmnist-cpu", "--data", &spec, "--out", long.to_str().unwrap(), "--set", "train.steps=1000000"], &TINY);
    let child = Command::new(env!("CARGO_BIN_EXE_svib")).args(&args).stderr(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while !long.join("metrics.jsonl").is_file() && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("stopped at step") && stderr(&o).contains("with a checkpoint"), "{}", stderr(&o));
}

/// A compare re-run into the same --out with other settings is refused before it replaces the
/// config files of the runs it made.
#[test]
fn a_compare_rerun_with_other_settings_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let sets = tiny_sets_on_idx(d.path());
    let out = d.path().join("cmp");
    let o = svib(&with_sets(vec!["compare", "--methods", "svib", "--seeds", "1", "--epochs", "1", "--out", out.to_str().unwrap()], &sets));
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    // one seed: its number, without a spread of 0.00
    let row = md.lines().find(|l| l.starts_with("| svib |")).unwrap_or_else(|| panic!("{md}"));
    assert!(md.contains("1 epoch of batch 8, seed 0;") && !row.contains(" ± "), "{md}");
    let cfg = std::fs::read(out.join("configs/svib-seed0.toml")).unwrap();
    let o = svib(&with_sets(vec!["compare", "--methods", "svib", "--seeds", "1", "--epochs", "2", "--out", out.to_str().unwrap()], &sets));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("train.epochs (1 -> 2)") && stderr(&o).trim_end().lines().count() == 1, "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("configs/svib-seed0.toml")).unwrap(), cfg);
}
