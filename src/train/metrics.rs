//! `metrics.jsonl`: one JSON object per line, appended and flushed as training goes.
use anyhow::{Context, Result};
use serde_json::{Map, Value};
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
        if path.is_file() {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
            let kept: String = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<Value>(l)
                        .ok()
                        .is_some_and(|v| v.get("step").and_then(Value::as_u64).is_some_and(|s| (s as usize) <= from_step) && v.get("final").is_none())
                })
                .map(|l| format!("{l}\n"))
                .collect();
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

/// Reads every line of a metrics file (for tests and the experiment runners).
pub fn read(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("{}: bad line `{l}`", path.display()))).collect()
}

/// Peak resident memory of this process in MiB (VmHWM), where /proc exists.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
