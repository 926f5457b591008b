//! What training reports: typed records (a step's losses and statistics, a kNN evaluation, an
//! event) written to every sink of the run: `metrics.jsonl` (one JSON object per line,
//! appended and flushed as training goes) and, with `train.tensorboard = true`, TensorBoard
//! event files under `DIR/tensorboard/`.
use super::rundir::RunDir;
use super::tensorboard::EventWriter;
use crate::eval::knn::KnnResult;
use anyhow::{Context, Result};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens the log for appending, first dropping lines of steps after `from_step` (written after
    /// the checkpoint being resumed, so they will be written again) and the final evaluation's
    /// line (written again when a run that ended before its result.json is re-run).
    pub fn open(path: &Path, from_step: usize) -> Result<MetricsLog> {
        if path.exists() {
            let mut kept = String::new();
            for_each_line(path, |l| {
                let keep = serde_json::from_str::<Value>(l)
                    .ok()
                    .is_some_and(|v| v.get("step").and_then(Value::as_u64).is_some_and(|s| (s as usize) <= from_step) && v.get("final").is_none());
                if keep {
                    kept.push_str(l);
                    kept.push('\n');
                }
                Ok(())
            })?;
            crate::util::write_atomic(path, kept.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        Ok(MetricsLog { path: path.to_path_buf(), file })
    }

    pub fn write(&mut self, fields: Map<String, Value>) -> Result<()> {
        let line = serde_json::to_string(&Value::Object(fields))?;
        writeln!(self.file, "{line}").and_then(|_| self.file.flush()).with_context(|| format!("{}: cannot write", self.path.display()))
    }
}

/// The metrics of one optimiser step (written every `train.log_every` steps).
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    /// Steps done, counting this one.
    pub step: usize,
    /// Epochs done, as a fraction.
    pub epoch: f64,
    pub loss: f64,
    /// The loss's terms (the method names them).
    pub terms: Vec<(&'static str, f64)>,
    /// The scheduled values this step used.
    pub lr: f64,
    pub weight_decay: f64,
    /// The EMA teacher's momentum (methods with a momentum teacher).
    pub teacher_momentum: Option<f64>,
    pub images_per_second: f64,
    /// Training wall time so far, across resumes.
    pub seconds: f64,
    /// The method's statistics (collapse indicators, its own schedules).
    pub stats: Vec<(&'static str, f64)>,
}

impl StepRecord {
    /// The metrics.jsonl line: every field under its name, terms and statistics flattened.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in self.scalars() {
            m.insert(k.into(), json!(v));
        }
        m.insert("step".into(), json!(self.step));
        m
    }

    /// Every value with its name (the step excepted).
    pub fn scalars(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![("epoch", self.epoch), ("loss", self.loss)];
        v.extend(self.terms.iter().copied());
        v.extend([("lr", self.lr), ("weight_decay", self.weight_decay)]);
        v.extend(self.teacher_momentum.map(|m| ("teacher_momentum", m)));
        v.extend([("images_per_second", self.images_per_second), ("seconds", self.seconds)]);
        v.extend(self.stats.iter().copied());
        v
    }
}

/// The line of a kNN evaluation; `flag` marks the untrained backbone's or the final one.
pub fn knn_json(step: usize, epoch: f64, r: &KnnResult, flag: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("step".into(), json!(step));
    m.insert("epoch".into(), json!(epoch));
    m.insert("knn_top1".into(), json!(r.top1));
    m.insert("knn_top5".into(), json!(r.top5));
    if let Some(f) = flag {
        m.insert(f.into(), Value::Bool(true));
    }
    m
}

/// Where a run's records go: the JSONL file always, TensorBoard when asked for. Closed until
/// [`Sinks::open`].
#[derive(Default)]
pub struct Sinks {
    jsonl: Option<MetricsLog>,
    tensorboard: Option<EventWriter>,
    /// Ranks other than 0 of a distributed run write nothing.
    off: bool,
}

impl Sinks {
    /// Opens the sinks of `run` for a run resumed at `from_step` (0: a new run).
    pub fn open(run: &RunDir, from_step: usize, tensorboard: bool) -> Result<Sinks> {
        let jsonl = Some(MetricsLog::open(&run.metrics_path(), from_step)?);
        let tensorboard = if tensorboard { Some(EventWriter::create(&run.path().join("tensorboard"), from_step)?) } else { None };
        Ok(Sinks { jsonl, tensorboard, off: false })
    }

    /// Sinks that drop everything (the ranks other than 0).
    pub fn off() -> Sinks {
        Sinks { off: true, ..Default::default() }
    }

    fn jsonl(&mut self) -> Result<&mut MetricsLog> {
        self.jsonl.as_mut().context("metrics written before the run's sinks were opened")
    }

    pub fn step(&mut self, r: &StepRecord) -> Result<()> {
        if self.off {
            return Ok(());
        }
        self.jsonl()?.write(r.to_json())?;
        if let Some(tb) = &mut self.tensorboard {
            let tagged: Vec<(String, f64)> = r.scalars().into_iter().map(|(k, v)| (format!("train/{k}"), v)).collect();
            tb.scalars(r.step, &tagged)?;
        }
        Ok(())
    }

    pub fn knn(&mut self, step: usize, epoch: f64, r: &KnnResult, flag: Option<&str>) -> Result<()> {
        if self.off {
            return Ok(());
        }
        self.jsonl()?.write(knn_json(step, epoch, r, flag))?;
        if let Some(tb) = &mut self.tensorboard {
            let k = r.k;
            tb.scalars(step, &[(format!("knn/top1_k{k}"), r.top1), (format!("knn/top5_k{k}"), r.top5)])?;
        }
        Ok(())
    }

    /// A named event at a step (a collapse the monitor saw).
    pub fn event(&mut self, step: usize, name: &str) -> Result<()> {
        if self.off {
            return Ok(());
        }
        let mut m = Map::new();
        m.insert("step".into(), json!(step));
        m.insert("event".into(), json!(name));
        self.jsonl()?.write(m)?;
        if let Some(tb) = &mut self.tensorboard {
            tb.scalars(step, &[(format!("events/{name}"), 1.0)])?;
        }
        Ok(())
    }
}

/// Reads every line of a metrics file (for tests and the experiment runners).
pub fn read(path: &Path) -> Result<Vec<Value>> {
    let mut lines = vec![];
    for_each_line(path, |l| {
        lines.push(serde_json::from_str(l).with_context(|| format!("{}: bad line `{}`", path.display(), l.chars().take(80).collect::<String>()))?);
        Ok(())
    })?;
    Ok(lines)
}

/// A metrics line is a few hundred bytes; a longer one is damage, passed over.
const MAX_LINE: usize = 1 << 20;

/// Calls `each` with every line of a regular file of UTF-8 text, reading one line at a time
/// (memory: one line); lines over [`MAX_LINE`] bytes are passed over.
fn for_each_line(path: &Path, mut each: impl FnMut(&str) -> Result<()>) -> Result<()> {
    use std::io::{BufRead, Read};
    let mut r = std::io::BufReader::new(crate::util::open_regular(path)?.0);
    let (mut buf, mut skipping) = (Vec::new(), false);
    loop {
        buf.clear();
        let n = (&mut r).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).with_context(|| format!("{}: cannot read", path.display()))?;
        if n == 0 {
            return Ok(());
        }
        let whole = buf.last() == Some(&b'\n');
        if !skipping && (whole || n <= MAX_LINE) {
            let line = std::str::from_utf8(&buf).map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
            each(line.trim_end_matches(['\n', '\r']))?;
        }
        skipping = !whole && n > MAX_LINE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A damaged log costs one line of memory: an over-long line is passed over, and a path
    /// that is not a regular file (a link to /dev/zero) is refused.
    #[test]
    fn long_lines_are_skipped_and_devices_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.jsonl");
        let long = format!("{{\"step\": 1, \"pad\": \"{}\"}}", "x".repeat(3 * MAX_LINE));
        std::fs::write(&p, format!("{{\"step\": 0}}\n{long}\n{{\"step\": 2}}")).unwrap();
        let steps: Vec<u64> = read(&p).unwrap().iter().map(|v| v["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![0, 2]);
        let z = d.path().join("zero.jsonl");
        std::os::unix::fs::symlink("/dev/zero", &z).unwrap();
        assert!(format!("{:#}", MetricsLog::open(&z, 5).err().unwrap()).contains("not a regular file"));
    }

    /// A run killed between its final evaluation line and result.json writes that line again on
    /// the re-run: reopening drops it (and every line after the resumed step), keeping the rest.
    #[test]
    fn reopening_drops_later_steps_and_the_final_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("metrics.jsonl");
        let lines = [
            "{\"step\":0,\"knn_top1\":10.0,\"untrained\":true}",
            "{\"step\":4,\"loss\":1.0}",
            "{\"step\":4,\"knn_top1\":20.0}",
            "{\"step\":5,\"loss\":0.9}",
            "{\"step\":4,\"knn_top1\":20.0,\"final\":true}",
        ];
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        drop(MetricsLog::open(&p, 4).unwrap());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), lines[..3].join("\n") + "\n");
    }
}
