//! `--budget 30m`: a wall-clock budget turned into `train.steps` from the throughput measured
//! in a short probe run, so that the schedules can span the steps from the first one.
use super::config::Config;
use super::rundir::RunDir;
use super::{run, RunOptions};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Instant;

/// Steps timed by the probe (after `PROBE_WARMUP` untimed ones).
const PROBE_STEPS: usize = 20;
const PROBE_WARMUP: usize = 10;

/// A budget over a year is a typing mistake, not a plan.
const MAX_BUDGET_S: f64 = 366.0 * 24.0 * 3600.0;

fn check_bound(s: &str, secs: f64) -> Result<f64> {
    if secs > MAX_BUDGET_S {
        bail!("--budget `{s}`: expected at most a year (8784h)");
    }
    Ok(secs)
}

/// Seconds in "90s", "30m", "1h", "1h30m" or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<f64> {
    let t = s.trim();
    if let Ok(v) = t.parse::<f64>() {
        return if v > 0.0 && v.is_finite() { check_bound(s, v) } else { bail!("--budget `{s}`: expected a positive duration such as 90s, 30m or 1h30m") };
    }
    let (mut total, mut num) = (0.0, String::new());
    for c in t.chars() {
        match c {
            '0'..='9' | '.' => num.push(c),
            'h' | 'm' | 's' if !num.is_empty() => {
                let v: f64 = num.parse().map_err(|_| anyhow::anyhow!("--budget `{s}`: `{num}` is not a number"))?;
                total += v * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                num.clear();
            }
            _ => bail!("--budget `{s}`: expected a duration such as 90s, 30m or 1h30m"),
        }
    }
    if !num.is_empty() {
        bail!("--budget `{s}`: expected a duration such as 90s, 30m or 1h30m (with a unit: h, m or s)");
    }
    if total <= 0.0 {
        bail!("--budget `{s}`: expected a duration above zero, such as 90s, 30m or 1h30m");
    }
    check_bound(s, total)
}

/// Steps that fit `budget` seconds: `dir`'s own `train.steps` when it already holds a run (a
/// resumed run keeps its schedules), else measured by a probe of the same recipe.
pub fn steps_for_budget(cfg: &Config, dir: &Path, budget: f64) -> Result<usize> {
    let existing = RunDir::new(dir);
    if existing.config_path().is_file() {
        let old = existing.config()?;
        if old.train.steps > 0 {
            if crate::util::other_launched_rank().is_none() {
                eprintln!("note: --budget: {} holds a run of {} steps, which keeps its length (its budget was fitted when it began)", dir.display(), old.train.steps);
            }
            return Ok(old.train.steps);
        }
    }
    let probe_dir = RunDir::new(std::env::temp_dir().join(format!("svib-budget-probe-{}", std::process::id())));
    let mut probe = cfg.clone();
    probe.train.steps = 1_000_000;
    (probe.train.knn_at_start, probe.train.knn_every, probe.train.knn_every_steps) = (false, 0, 0);
    (probe.train.log_every, probe.train.checkpoint_every_steps) = (PROBE_WARMUP, 0);
    let started = Instant::now();
    let result = run(&probe, probe_dir.path(), &RunOptions { max_steps: Some(PROBE_WARMUP + PROBE_STEPS), quiet: true, probe: true });
    let wall = started.elapsed().as_secs_f64();
    let lines = probe_dir.metrics();
    let _ = std::fs::remove_dir_all(probe_dir.path());
    let at = |step: usize| lines.as_ref().ok().and_then(|l| l.iter().find(|v| v["step"].as_u64() == Some(step as u64))?.get("seconds")?.as_f64());
    // in a process group the probe trained data-parallel and only rank 0 wrote its timings;
    // every rank reaches the broadcast, also when its own probe failed
    let rank = crate::dist::world().0;
    let probed = result.context("--budget: the probe run failed");
    from_rank_0(probed.and_then(|_| {
        if rank > 0 {
            return Ok(0);
        }
        let (Some(a), Some(b)) = (at(PROBE_WARMUP), at(PROBE_WARMUP + PROBE_STEPS)) else { bail!("--budget: the probe run wrote no timings") };
        let per_step = ((b - a) / PROBE_STEPS as f64).max(1e-6);
        // set-up (data, initial features) happens again in the real run, and so do the kNN at
        // the start and the end; keep that and 5 % of the budget for them
        let setup = (wall - b).max(0.0);
        let steps = ((budget * 0.95 - 3.0 * setup) / per_step).floor();
        if steps < 1.0 {
            bail!("--budget {budget:.0} s: a step takes {per_step:.2} s and set-up {setup:.0} s here; not one step fits");
        }
        eprintln!("budget {budget:.0} s: {per_step:.3} s a step, {setup:.0} s set-up -> train.steps = {}", steps as usize);
        Ok(steps as usize)
    }))
}

/// Rank 0's answer, sent to every rank of the process group (the answer itself without one),
/// so that all ranks train the same number of steps; a rank whose own `mine` failed returns
/// its error after the broadcast.
fn from_rank_0(mine: Result<usize>) -> Result<usize> {
    let (rank, _) = crate::dist::world();
    let shared = crate::dist::with_global(|g| {
        let t = tch::Tensor::from_slice(&[mine.as_ref().map_or(-1, |&s| s as i64)]);
        g.broadcast(&[&t], 0)?;
        Ok(t.int64_value(&[0]))
    });
    match shared {
        None => mine,
        Some(_) if rank == 0 || mine.is_err() => mine,
        Some(Err(e)) => Err(e),
        Some(Ok(s)) if s < 0 => bail!("--budget: rank 0's probe failed (its error line says why); this is rank {rank}"),
        Some(Ok(s)) => Ok(s as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30m").unwrap(), 1800.0);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400.0);
        assert_eq!(parse_duration("90s").unwrap(), 90.0);
        assert_eq!(parse_duration("45").unwrap(), 45.0);
        for bad in ["", "0", "-3", "m", "30x", "1h30", "nan"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
