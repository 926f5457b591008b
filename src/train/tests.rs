use super::*;
use crate::data::testutil::write_idx_dir;

fn tiny(dir: &Path) -> Config {
    let mut c = config::tiny_for_tests();
    c.data.spec = format!("idx:{}", dir.display());
    c.optim.lr = 0.01;
    c.optim.warmup_epochs = 0.5;
    c.train.epochs = 2;
    c.train.batch_size = 8;
    c.train.log_every = 1;
    c.train.prefetch = 2;
    c.eval.k = 5;
    c
}

fn losses(dir: &Path) -> Vec<(u64, f64)> {
    metrics::read(&dir.join("metrics.jsonl")).unwrap().iter().filter_map(|v| Some((v.get("step")?.as_u64()?, v.get("loss")?.as_f64()?))).collect()
}

fn quiet(max_steps: Option<usize>) -> RunOptions {
    RunOptions { max_steps, quiet: true, probe: false }
}

#[test]
fn two_epoch_run_logs_everything_and_loss_decreases() {
    let data = tempfile::tempdir().unwrap();
    write_idx_dir(data.path(), 48, 12, 12, false);
    let out = tempfile::tempdir().unwrap();
    let cfg = tiny(data.path());
    let r = run(&cfg, out.path(), &quiet(None)).unwrap().unwrap();
    assert_eq!((r.epochs, r.steps), (2, 12));
    assert!((0.0..=100.0).contains(&r.knn_top1));
    let lines = metrics::read(&out.path().join("metrics.jsonl")).unwrap();
    assert_eq!(lines[0].get("untrained"), Some(&serde_json::Value::Bool(true)), "step 0: the untrained backbone's kNN");
    let lines = &lines[1..];
    for key in ["step", "epoch", "loss", "ce", "kl", "beta", "lr", "weight_decay", "teacher_momentum", "images_per_second", "h_marginal_rel", "h_sample_rel"] {
        assert!(lines[0].get(key).is_some(), "{key} missing in {}", lines[0]);
    }
    let l = losses(out.path());
    let first: f64 = l[..3].iter().map(|x| x.1).sum::<f64>() / 3.0;
    let last: f64 = l[l.len() - 3..].iter().map(|x| x.1).sum::<f64>() / 3.0;
    assert!(last < first, "loss should decrease: {first} -> {last}");
    let res: RunResult = serde_json::from_slice(&std::fs::read(out.path().join("result.json")).unwrap()).unwrap();
    assert_eq!((res.knn_top1, res.knn_top5, res.steps, res.epochs), (r.knn_top1, r.knn_top5, r.steps, r.epochs));
    assert!(out.path().join("config.toml").is_file());
    assert_eq!(checkpoint::list(out.path()).len(), cfg.train.keep_checkpoints);
    // `svib knn --checkpoint DIR` path: the saved run gives the same kNN
    let (c2, m) = load_run(out.path(), Device::Cpu).unwrap();
    let (spec, train) = load_train_data(&c2).unwrap();
    let test = data::load(&spec, Split::Test, &LoadOptions::default()).unwrap();
    let prep = eval_prep(&c2, Norm::for_dataset(&spec, &train));
    assert_eq!(knn_eval(m.as_ref(), &c2, &train, &test, &prep, Device::Cpu).unwrap().top1, r.knn_top1);
}

#[test]
fn resume_is_exact_mid_epoch_and_at_epoch_end() {
    let data = tempfile::tempdir().unwrap();
    write_idx_dir(data.path(), 40, 12, 12, false);
    let cfg = tiny(data.path()); // 5 steps per epoch, 10 in all
    let a = tempfile::tempdir().unwrap();
    let full = run(&cfg, a.path(), &quiet(None)).unwrap().unwrap();
    for stop in [3usize, 5] {
        let b = tempfile::tempdir().unwrap();
        assert!(run(&cfg, b.path(), &quiet(Some(stop))).unwrap().is_none());
        assert_eq!(losses(b.path()).len(), stop);
        let resumed = run(&cfg, b.path(), &quiet(None)).unwrap().unwrap();
        assert_eq!(losses(a.path()), losses(b.path()), "stopped after {stop} steps");
        assert_eq!(resumed.knn_top1, full.knn_top1);
    }
}

#[test]
fn resume_refuses_another_recipe() {
    let data = tempfile::tempdir().unwrap();
    write_idx_dir(data.path(), 16, 12, 12, false);
    let out = tempfile::tempdir().unwrap();
    let cfg = tiny(data.path());
    run(&cfg, out.path(), &quiet(Some(1))).unwrap();
    let mut other = cfg.clone();
    other.svib_mut().unwrap().gmm.k = 16;
    other.train.log_every = 5; // a run-control key may change
    let e = run(&other, out.path(), &quiet(None)).unwrap_err().to_string();
    assert!(e.contains("gmm.k (8 -> 16)") && !e.contains("log_every"), "{e}");
}

#[test]
fn non_finite_loss_names_step_and_term() {
    let data = tempfile::tempdir().unwrap();
    write_idx_dir(data.path(), 16, 12, 12, false);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = tiny(data.path());
    cfg.svib_mut().unwrap().gmm.sigma_teacher = 1e-30; // similarities / sigma^2 overflow to +-inf
    let e = run(&cfg, out.path(), &quiet(None)).unwrap_err().to_string();
    assert!(e.contains("step 1 ") && e.contains("not finite") && e.contains("ce = NaN") && e.contains("No checkpoint was written"), "{e}");
    assert!(checkpoint::list(out.path()).is_empty());
}

#[test]
fn ablation_switches_run() {
    let data = tempfile::tempdir().unwrap();
    write_idx_dir(data.path(), 16, 12, 12, false);
    for (key, value) in [("ib.beta_start", "0"), ("gmm.reinit", "\"never\""), ("ib.prior", "\"marginal\""), ("gmm.shared", "false"), ("teacher.center", "true")] {
        let mut t: toml::Table = toml::from_str(&tiny(data.path()).to_toml()).unwrap();
        config::set_key(&mut t, &format!("{key}={value}")).unwrap();
        let cfg = Config::from_table(t).unwrap();
        let out = tempfile::tempdir().unwrap();
        let r = run(&cfg, out.path(), &quiet(None)).unwrap().unwrap();
        assert_eq!(r.steps, 4, "{key}");
        let lines = metrics::read(&out.path().join("metrics.jsonl")).unwrap();
        if key == "ib.beta_start" {
            assert!(lines.iter().filter_map(|l| l.get("beta")).all(|b| b.as_f64() == Some(0.0)));
        }
    }
}

#[test]
fn every_baseline_trains_and_resumes_exactly() {
    let data = tempfile::tempdir().unwrap();
    write_idx_dir(data.path(), 40, 12, 12, false);
    for method in ["dino", "byol", "mocov2", "swav", "simclr"] {
        let mut t: toml::Table = toml::from_str(&tiny(data.path()).to_toml()).unwrap();
        config::apply_method(&mut t, method).unwrap();
        // small queues that fill within the run, so that their state must survive the resume
        for s in ["mocov2.queue=24", "swav.queue=8", "swav.queue_start_epoch=0"] {
            config::set_key_for(&mut t, method, s).unwrap();
        }
        let cfg = Config::from_table(t).unwrap();
        let a = tempfile::tempdir().unwrap();
        let full = run(&cfg, a.path(), &quiet(None)).unwrap().unwrap();
        assert_eq!(full.steps, 10, "{method}");
        let b = tempfile::tempdir().unwrap();
        assert!(run(&cfg, b.path(), &quiet(Some(7))).unwrap().is_none());
        let resumed = run(&cfg, b.path(), &quiet(None)).unwrap().unwrap();
        let la = losses(a.path());
        assert!(la.iter().all(|l| l.1.is_finite()), "{method}");
        assert_eq!(la, losses(b.path()), "{method}: resumed losses differ");
        assert_eq!(resumed.knn_top1, full.knn_top1, "{method}");
    }
}

/// train.steps ends the run inside an epoch; every-N-step re-initialisation and evaluations
/// happen on their steps; a stop and resume gives the same losses; the untrained backbone's kNN
/// is logged once, as step 0.
#[test]
fn step_budget_ends_mid_epoch_and_resumes_exactly() {
    let data = tempfile::tempdir().unwrap();
    write_idx_dir(data.path(), 40, 12, 12, false);
    let mut cfg = tiny(data.path()); // 5 steps per epoch
    cfg.train.steps = 7;
    cfg.optim.warmup_steps = 2;
    cfg.svib_mut().unwrap().gmm.reinit_every_steps = 3;
    cfg.svib_mut().unwrap().gmm.freeze_steps = 2;
    cfg.train.knn_every_steps = 4;
    let a = tempfile::tempdir().unwrap();
    let full = run(&cfg, a.path(), &quiet(None)).unwrap().unwrap();
    assert_eq!((full.steps, full.epochs), (7, 2));
    let lines = metrics::read(&a.path().join("metrics.jsonl")).unwrap();
    let knn_steps: Vec<u64> = lines.iter().filter(|l| l.get("knn_top1").is_some()).map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(knn_steps, vec![0, 4, 7], "untrained, every 4 steps, final");
    assert_eq!(lines.iter().filter(|l| l.get("untrained").is_some()).count(), 1);
    for stop in [3usize, 6] {
        let b = tempfile::tempdir().unwrap();
        assert!(run(&cfg, b.path(), &quiet(Some(stop))).unwrap().is_none());
        let resumed = run(&cfg, b.path(), &quiet(None)).unwrap().unwrap();
        assert_eq!(losses(a.path()), losses(b.path()), "stopped after {stop} steps");
        assert_eq!(resumed.knn_top1, full.knn_top1);
        let again = metrics::read(&b.path().join("metrics.jsonl")).unwrap();
        assert_eq!(again.iter().filter(|l| l.get("untrained").is_some()).count(), 1);
    }
    // re-running a finished run returns its result
    assert_eq!(run(&cfg, a.path(), &quiet(None)).unwrap().unwrap(), full);
}

/// result.json gives back the very numbers it was written from (the failure CI once saw:
/// 13.833994678483197 read back as ...196 without exact float parsing).
#[test]
fn run_result_round_trips_exactly() {
    let r = RunResult { knn_top1: 5.0, knn_top5: 50.0, epochs: 2, seconds: 4.047999244, steps: 7, images_per_second: 13.833994678483197, peak_rss_mib: Some(160.84375) };
    for x in [r.images_per_second, 0.1 + 0.2, 1.0 / 3.0, 2.2250738585072014e-308, 123456.78901234567] {
        let json = serde_json::to_string(&RunResult { images_per_second: x, ..r.clone() }).unwrap();
        let back: RunResult = serde_json::from_str(&json).unwrap();
        assert_eq!(back.images_per_second.to_bits(), x.to_bits(), "{json}");
    }
}

/// `train.tensorboard = true`: the step metrics and every kNN evaluation also go to a
/// TensorBoard event file; a resumed run opens a second file.
#[test]
fn tensorboard_files_hold_the_curves() {
    let data = tempfile::tempdir().unwrap();
    write_idx_dir(data.path(), 40, 12, 12, false);
    let out = tempfile::tempdir().unwrap();
    let mut cfg = tiny(data.path());
    cfg.train.tensorboard = true;
    assert!(run(&cfg, out.path(), &quiet(Some(3))).unwrap().is_none());
    run(&cfg, out.path(), &quiet(None)).unwrap().unwrap();
    let files: Vec<Vec<u8>> = std::fs::read_dir(out.path().join("tensorboard")).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    assert_eq!(files.len(), 2);
    let all: Vec<u8> = files.concat();
    let has = |tag: &str| all.windows(tag.len()).any(|w| w == tag.as_bytes());
    for tag in ["brain.Event:2", "train/loss", "train/ce", "train/kl", "train/lr", "train/h_sample_rel", "knn/top1_k5"] {
        assert!(has(tag), "{tag} missing");
    }
}

/// `svib data pack`'s shards train to the very losses of the folder they were packed from; with
/// WebDataset's shuffle buffer the order changes, and a stop and resume is still exact.
#[test]
fn packed_shards_train_as_their_folder_and_resume_exactly() {
    let data = tempfile::tempdir().unwrap();
    let o = crate::data::synth::SynthOptions { train: 40, val: 10, classes: 4, width: 24, height: 18, quality: 90, seed: 5 };
    crate::data::synth::write(&data.path().join("folder"), &o).unwrap();
    let folder: DataSpec = format!("folder:{}", data.path().join("folder").display()).parse().unwrap();
    crate::data::pack::pack(&folder, &data.path().join("wds"), 8, &LoadOptions::default()).unwrap();
    let mut cfg = tiny(data.path());
    cfg.train.epochs = 1;
    let mut at = |spec: String, buffer: usize, stop: Option<usize>, out: &Path| {
        cfg.data.spec = spec;
        cfg.data.shuffle_buffer = buffer;
        run(&cfg, out, &quiet(stop)).unwrap()
    };
    let (a, b, c, d) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let wds = format!("wds:{}", data.path().join("wds").display());
    at(folder.to_string(), 0, None, a.path());
    at(wds.clone(), 0, None, b.path());
    assert_eq!(losses(a.path()).len(), 5);
    assert_eq!(losses(a.path()), losses(b.path()), "folder vs its shards");
    at(wds.clone(), 6, None, c.path());
    assert_ne!(losses(a.path()), losses(c.path()), "a shuffle buffer reads in another order");
    assert!(at(wds.clone(), 6, Some(2), d.path()).is_none());
    at(wds, 6, None, d.path());
    assert_eq!(losses(c.path()), losses(d.path()), "resumed with the shuffle buffer");
}

/// Data-parallel training (issue 18): 2 Gloo processes with 4 images each train as one process
/// with 8, step for step, for every method (with synchronised BatchNorm: the heads of BYOL,
/// MoCo v2, SwAV and SimCLR and the ResNet have BatchNorm, whose statistics would otherwise be
/// per rank; the ViTs run without drop-path, whose masks are drawn per rank). "svib+sinkhorn"
/// is the balanced variant (Sinkhorn over the gathered batch). The parent runs the single
/// process and starts the two ranks as children of this very test. "svib>1": the ranks stop
/// after 2 steps and one process resumes their run (keeping its 8 images per step).
#[test]
fn two_ranks_train_as_one_process_with_their_global_batch() {
    const DIR: &str = "SVIB_DDP_TEST_DATA";
    let cfg_for = |data: &Path, case: &str, batch: usize| {
        let mut c = tiny(data);
        let vit = "vit_tiny:patch_size=3,img_size=12,dim=24,depth=2,heads=2,drop_path=0";
        let arch = if matches!(case, "byol" | "swav") { "resnet18:small_stem=true,width=8" } else { vit };
        c.model = crate::models::ArchConfig::parse(arch).unwrap();
        c.model.sync_bn = true;
        c.train.batch_size = batch;
        c.train.steps = 4;
        c.train.knn_at_start = false;
        c.train.channels_last = false;
        let method = case.split(['+', '>']).next().unwrap();
        let mut t: toml::Table = toml::from_str(&c.to_toml()).unwrap();
        config::apply_method(&mut t, method).unwrap();
        if case == "svib+sinkhorn" {
            config::set_key(&mut t, "teacher.sinkhorn_iters=3").unwrap();
        }
        if method == "mocov2" {
            config::set_key(&mut t, "mocov2.queue=16").unwrap();
        }
        Config::from_table(t).unwrap()
    };
    if let Ok(dir) = std::env::var(DIR) {
        let (data, out) = (Path::new(&dir).join("data"), Path::new(&dir).join(std::env::var("SVIB_DDP_TEST_METHOD").unwrap()));
        let stop = std::env::var("SVIB_DDP_TEST_METHOD").unwrap().ends_with(">1").then_some(2);
        run(&cfg_for(&data, &std::env::var("SVIB_DDP_TEST_METHOD").unwrap(), 4), &out, &quiet(stop)).unwrap();
        println!("rank done");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    write_idx_dir(&dir.path().join("data"), 40, 12, 12, false);
    let exe = std::env::current_exe().unwrap();
    for method in ["svib", "svib>1", "dino", "svib+sinkhorn", "byol", "mocov2", "swav", "simclr"] {
        let one = tempfile::tempdir().unwrap();
        run(&cfg_for(&dir.path().join("data"), method, 8), one.path(), &quiet(None)).unwrap().unwrap();
        let port = crate::dist::tests::free_port().to_string();
        let ranks: Vec<_> = (0..2)
            .map(|r| {
                std::process::Command::new(&exe)
                    .args(["--exact", "train::tests::two_ranks_train_as_one_process_with_their_global_batch", "--nocapture", "--test-threads", "1"])
                    .envs([(DIR, dir.path().display().to_string()), ("SVIB_DDP_TEST_METHOD", method.into()), ("RANK", r.to_string()), ("WORLD_SIZE", "2".into())])
                    .envs([("MASTER_ADDR", "127.0.0.1".to_string()), ("MASTER_PORT", port.clone()), ("SVIB_DIST_TIMEOUT", "120".into())])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        for (r, o) in ranks.iter().enumerate() {
            let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success() && text.contains("rank done"), "{method} rank {r}: {text}");
        }
        if method.ends_with(">1") {
            assert_eq!(losses(&dir.path().join(method)).len(), 2, "the ranks stopped after 2 steps");
            run(&cfg_for(&dir.path().join("data"), method, 4), &dir.path().join(method), &quiet(None)).unwrap().unwrap();
        }
        let (a, b) = (losses(one.path()), losses(&dir.path().join(method)));
        let worst = a.iter().zip(&b).map(|((_, x), (_, y))| (x - y).abs() / x.abs()).fold(0.0, f64::max);
        println!("{method}: largest relative difference of the 4 losses {worst:.2e}");
        assert_eq!(a.len(), 4, "{method}");
        assert_eq!(a.iter().map(|x| x.0).collect::<Vec<_>>(), b.iter().map(|x| x.0).collect::<Vec<_>>(), "{method}: steps");
        for ((s, x), (_, y)) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * x.abs(), "{method} step {s}: one process {x}, two ranks {y}");
        }
        assert!(dir.path().join(method).join("result.json").is_file(), "{method}: rank 0 writes the result");
    }
}
