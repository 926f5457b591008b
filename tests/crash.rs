//! The crash test (issue 15): `kill -9` a tiny training run at random instants (during
//! checkpoint writes too), re-run the same command until it finishes, and compare every metrics
//! line and the final checkpoint with an uninterrupted run.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KILLS: usize = 20;

fn write_idx(dir: &Path) {
    for (prefix, n) in [("train", 48u32), ("t10k", 16)] {
        let mut img = vec![0, 0, 8, 3];
        [n, 8, 8].iter().for_each(|d| img.extend_from_slice(&d.to_be_bytes()));
        img.extend((0..n * 64).map(|i| ((i / 64 % 2) * 150 + (i * 31 % 97)) as u8));
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
        let mut lbl = vec![0, 0, 8, 1];
        lbl.extend_from_slice(&n.to_be_bytes());
        lbl.extend((0..n).map(|i| (i % 2) as u8));
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lbl).unwrap();
    }
}

fn command(data: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_svib"));
    c.args(["--threads", "1", "train", "--config", "fmnist-cpu", "--quiet", "--data"]).arg(format!("idx:{}", data.display())).arg("--out").arg(out);
    for s in [
        "model.width=4",
        "augment.global_size=8",
        "augment.local_size=4",
        "augment.local_crops=1",
        "head.hidden=16",
        "head.out=8",
        "gmm.k=4",
        "gmm.reinit_every_steps=5",
        "gmm.freeze_steps=2",
        "optim.warmup_steps=2",
        "train.batch_size=8",
        "train.steps=16",
        "train.log_every=1",
        "train.knn_every_steps=4",
        "train.checkpoint_every_steps=1",
        "eval.k=3",
    ] {
        c.args(["--set", s]);
    }
    c.env("SVIB_CACHE_DIR", std::env::temp_dir().join("svib-test-cache")).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// Metrics lines without the wall-clock fields.
fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).unwrap();
            v.remove("seconds");
            v.remove("images_per_second");
            serde_json::to_string(&v).unwrap()
        })
        .collect()
}

fn final_checkpoint(dir: &Path) -> BTreeMap<String, tch::Tensor> {
    tch::Tensor::read_safetensors(dir.join("ckpt-00000016.safetensors")).unwrap().into_iter().collect()
}

#[test]
fn kill_9_at_random_instants_loses_nothing() {
    let root = tempfile::tempdir().unwrap();
    write_idx(root.path());
    let reference = root.path().join("reference");
    let started = Instant::now();
    assert!(command(root.path(), &reference).status().unwrap().success());
    let full = started.elapsed();
    let (want_lines, want_ckpt) = (lines(&reference), final_checkpoint(&reference));
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let (mut kills, mut runs) = (0, 0);
    while kills < KILLS {
        let out = root.path().join(format!("killed-{runs}"));
        runs += 1;
        loop {
            let mut child = command(root.path(), &out).spawn().unwrap();
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let at = Duration::from_millis(rng % (full.as_millis() as u64 + 1));
            std::thread::sleep(at);
            if child.try_wait().unwrap().is_some() {
                break; // finished before the kill
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
        }
        let status = command(root.path(), &out).status().unwrap();
        assert!(status.success(), "run {runs}: the re-run after the kills failed");
        assert_eq!(lines(&out), want_lines, "run {runs}: metrics lines differ from the uninterrupted run");
        let got = final_checkpoint(&out);
        assert_eq!(got.keys().collect::<Vec<_>>(), want_ckpt.keys().collect::<Vec<_>>());
        for (k, v) in &want_ckpt {
            assert!(got[k].equal(v), "run {runs}: {k} differs in the final checkpoint");
        }
        let leftovers: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".tmp")).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    println!("{kills} kills over {runs} runs survived; every metrics line and the final checkpoint match");
}

/// The child of `launcher` that runs rank `rank` (its environment says RANK=rank).
fn rank_pid(launcher: u32, rank: usize) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(|pid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat.rsplit(')').next().and_then(|s| s.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        ppid == Some(launcher) && env.split(|&b| b == 0).any(|v| v == format!("RANK={rank}").as_bytes())
    })
}

/// `svib launch --nproc 2` of the tiny run; stderr piped.
fn launch(data: &Path, out: &Path) -> Command {
    let train = command(data, out);
    let mut c = Command::new(env!("CARGO_BIN_EXE_svib"));
    c.args(["launch", "--nproc", "2", "--"]).args(train.get_args().skip(2)).args(["--set", "train.steps=40"]);
    c.env("SVIB_CACHE_DIR", std::env::temp_dir().join("svib-test-cache")).env("SVIB_DIST_TIMEOUT", "120").stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Issue 18: SIGKILL one of 2 ranks mid-run: the other stops within 60 s, the launcher exits
/// non-zero naming the killed rank, and the same command resumes from the last checkpoint to
/// the uninterrupted run's metrics, line for line.
#[test]
fn killing_one_of_two_ranks_stops_the_other_and_the_run_resumes() {
    let root = tempfile::tempdir().unwrap();
    write_idx(root.path());
    let reference = root.path().join("reference");
    assert!(launch(root.path(), &reference).status().unwrap().success());
    let out = root.path().join("killed");
    let mut child = launch(root.path(), &out).spawn().unwrap();
    // the newest checkpoint's step
    let newest = |d: &Path| {
        let names = std::fs::read_dir(d).map(|r| r.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect::<Vec<_>>()).unwrap_or_default();
        names.iter().filter_map(|n| n.strip_prefix("ckpt-")?.strip_suffix(".json")?.parse::<usize>().ok()).max().unwrap_or(0)
    };
    let t0 = Instant::now();
    while newest(&out) < 8 && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let victim = rank_pid(child.id(), 1).expect("rank 1's process");
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap().success());
    let killed = Instant::now();
    let output = {
        let _ = child.wait();
        let mut s = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut s).unwrap();
        s
    };
    let took = killed.elapsed();
    println!("the launcher ended {:.2} s after the kill:\n{output}", took.as_secs_f64());
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(output.contains("rank 1 of 2 ended (signal: 9"), "{output}");
    assert!(output.contains("rank 0 of 2: ") && output.contains("failed"), "{output}");
    assert!(!lines(&out).is_empty() && lines(&out).len() < lines(&reference).len(), "killed mid-run");
    let again = launch(root.path(), &out).output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(lines(&out), lines(&reference), "metrics lines differ from the uninterrupted run");
}

/// `--budget` under `svib launch`: the probe trains data-parallel, rank 0 alone has its timings,
/// and every rank trains rank 0's number of steps to the end.
#[test]
fn a_budget_under_launch_gives_every_rank_rank_0s_steps() {
    let root = tempfile::tempdir().unwrap();
    write_idx(root.path());
    let out = root.path().join("budget");
    let run = launch(root.path(), &out).args(["--set", "train.checkpoint_every_steps=50", "--set", "train.knn_every_steps=50", "--budget", "6s"]).output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    assert_eq!(err.matches("budget 6 s: ").count(), 1, "{err}");
    let cfg: toml::Table = std::fs::read_to_string(out.join("config.toml")).unwrap().parse().unwrap();
    let steps = cfg["train"]["steps"].as_integer().unwrap();
    assert!(err.contains(&format!("-> train.steps = {steps}\n")), "{err}");
    let last: serde_json::Value = serde_json::from_str(lines(&out).last().unwrap()).unwrap();
    assert_eq!(last["step"].as_i64(), Some(steps), "{err}");
}
