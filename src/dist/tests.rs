use super::*;
use std::process::Command;

#[test]
fn environment_of_torchrun_and_slurm() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
    let t = DistEnv::from_vars(vars(&[("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "node7"), ("MASTER_PORT", "29400")])).unwrap().unwrap();
    assert_eq!(t, DistEnv { rank: 1, world_size: 4, local_rank: 1, master_addr: "node7".into(), master_port: 29400, agent_store: false });
    let a = DistEnv::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("TORCHELASTIC_USE_AGENT_STORE", "True")])).unwrap().unwrap();
    assert!(a.agent_store, "torchrun's agent serves the store: rank 0 connects to it");
    let s = DistEnv::from_vars(vars(&[("SLURM_PROCID", "3"), ("SLURM_NTASKS", "8"), ("SLURM_LOCALID", "3"), ("MASTER_ADDR", "n1")])).unwrap().unwrap();
    assert_eq!((s.rank, s.world_size, s.local_rank, s.master_port), (3, 8, 3, 29500));
    assert_eq!(DistEnv::from_vars(vars(&[])).unwrap(), None, "no launcher: one process");
    assert_eq!(DistEnv::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "1")])).unwrap(), None, "a stray WORLD_SIZE=1: no group");
    for started_by in ["TORCHELASTIC_RUN_ID", "SVIB_LAUNCH"] {
        let pairs: &'static [(&str, &str)] = if started_by == "SVIB_LAUNCH" {
            &[("RANK", "0"), ("WORLD_SIZE", "1"), ("SVIB_LAUNCH", "1")]
        } else {
            &[("RANK", "0"), ("WORLD_SIZE", "1"), ("TORCHELASTIC_RUN_ID", "none")]
        };
        let one = DistEnv::from_vars(vars(pairs)).unwrap().expect("a launcher's one process: a group of one");
        assert_eq!((one.rank, one.world_size), (0, 1), "{started_by}");
    }
    assert_eq!(DistEnv::from_vars(vars(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")])).unwrap(), None, "a one-task SLURM step: no group");
    let e = DistEnv::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "0")])).unwrap_err().to_string();
    assert!(e.contains("WORLD_SIZE") && e.contains("1 or more"), "{e}");
    let e = DistEnv::from_vars(vars(&[("RANK", "4"), ("WORLD_SIZE", "4")])).unwrap_err().to_string();
    assert!(e.contains("RANK") && e.contains("below"), "{e}");
    let e = DistEnv::from_vars(vars(&[("RANK", "x"), ("WORLD_SIZE", "2")])).unwrap_err().to_string();
    assert!(e.contains("RANK") && e.contains("`x`"), "{e}");
}

/// A free TCP port of the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

const ROLE: &str = "SVIB_DIST_TEST_ROLE";

/// Runs this test function again in `n` child processes (role "worker" or as given per rank)
/// and returns their outputs.
fn spawn(test: &str, roles: &[&str]) -> Vec<std::process::Output> {
    let port = free_port().to_string();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = roles
        .iter()
        .enumerate()
        .map(|(r, role)| {
            Command::new(&exe)
                .args(["--exact", test, "--nocapture", "--test-threads", "1"])
                .env(ROLE, role)
                .envs([("RANK", r.to_string()), ("WORLD_SIZE", roles.len().to_string()), ("MASTER_ADDR", "127.0.0.1".into()), ("MASTER_PORT", port.clone())])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

fn group() -> Group {
    Group::join(&DistEnv::from_env().unwrap().unwrap(), Duration::from_secs(20)).unwrap()
}

/// Rank r holds [r + 1, 10 (r + 1)]: the sum over 2 ranks is [3, 30]; rank 1's broadcast
/// reaches rank 0; the gather is in rank order.
#[test]
fn two_gloo_processes_reduce_broadcast_and_gather() {
    if std::env::var(ROLE).is_ok() {
        let g = group();
        let r = g.rank as f64;
        let t = Tensor::from_slice(&[r + 1.0, 10.0 * (r + 1.0)]);
        g.all_reduce_sum(&[&t]).unwrap();
        assert_eq!(Vec::<f64>::try_from(&t).unwrap(), vec![3.0, 30.0]);
        let m = Tensor::from_slice(&[r * 4.0]);
        g.all_reduce_mean(&[&m]).unwrap();
        assert_eq!(m.double_value(&[0]), 2.0);
        let b = Tensor::from_slice(&[r + 7.0, r]);
        g.broadcast(&[&b], 1).unwrap();
        assert_eq!(Vec::<f64>::try_from(&b).unwrap(), vec![8.0, 1.0]);
        let all = g.all_gather(&Tensor::from_slice(&[r as i64 * 5, 1]).view([1, 2])).unwrap();
        assert_eq!(Vec::<i64>::try_from(&all.view([-1])).unwrap(), vec![0, 1, 5, 1]);
        // differentiable all-reduce: loss_r = w_r . sum(x), w_r = [r + 1, 1], so every x gets
        // the gradient w_0 + w_1 = [3, 2]
        let x = Tensor::from_slice(&[r + 1.0, 2.0 * (r + 1.0)]).set_requires_grad(true);
        let y = g.all_reduce_sum_grad(&x).unwrap();
        assert_eq!(Vec::<f64>::try_from(&y.detach()).unwrap(), vec![3.0, 6.0]);
        (y * Tensor::from_slice(&[r + 1.0, 1.0])).sum(tch::Kind::Double).backward();
        assert_eq!(Vec::<f64>::try_from(&x.grad()).unwrap(), vec![3.0, 2.0]);
        // differentiable gather: loss_r = sum((r + 1) * [1; 10] * z): rank 0's rows get
        // (1 + 2) * 1, rank 1's (1 + 2) * 10
        let x = Tensor::from_slice(&[r, r]).view([1, 2]).set_requires_grad(true);
        let z = g.all_gather_grad(&x).unwrap();
        assert_eq!(Vec::<f64>::try_from(&z.detach().view([-1])).unwrap(), vec![0.0, 0.0, 1.0, 1.0]);
        (z * Tensor::from_slice(&[1.0, 10.0]).view([2, 1]) * (r + 1.0)).sum(tch::Kind::Double).backward();
        assert_eq!(Vec::<f64>::try_from(&x.grad().view([-1])).unwrap(), vec![3.0 * 10f64.powi(g.rank as i32); 2]);
        g.barrier().unwrap();
        println!("rank {} ok", g.rank);
        return;
    }
    let outs = spawn("dist::tests::two_gloo_processes_reduce_broadcast_and_gather", &["a", "b"]);
    for (r, o) in outs.iter().enumerate() {
        let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && text.contains(&format!("rank {r} ok")), "rank {r}: {text}");
    }
}

/// A rank that leaves stops the other's next collective with an error, well within the timeout.
#[test]
fn a_rank_that_dies_stops_the_other() {
    if let Ok(role) = std::env::var(ROLE) {
        let g = group();
        if role == "dies" {
            std::process::exit(3);
        }
        let t0 = std::time::Instant::now();
        let e = g.all_reduce_sum(&[&Tensor::from_slice(&[1.0f32])]).unwrap_err();
        println!("stopped after {:.1} s: {e:#}", t0.elapsed().as_secs_f64());
        assert!(t0.elapsed() < Duration::from_secs(20));
        return;
    }
    let outs = spawn("dist::tests::a_rank_that_dies_stops_the_other", &["survives", "dies"]);
    assert_eq!(outs[1].status.code(), Some(3));
    let text = String::from_utf8_lossy(&outs[0].stdout).to_string() + &String::from_utf8_lossy(&outs[0].stderr);
    assert!(outs[0].status.success() && text.contains("stopped after") && text.contains("all-reduce"), "{text}");
}
