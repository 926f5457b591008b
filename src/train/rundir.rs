//! A run directory and everything in it: `config.toml` (the recipe), checkpoints,
//! `metrics.jsonl`, `result.json`, the `diverged.txt` marker, `tensorboard/`. One writer at a
//! time (a lock on `DIR/.lock` held for the whole run) and a clean start after a crash (removal
//! of what an interrupted writer left behind: temp files, a checkpoint half without its other
//! half). Training, evaluation, the experiment runners, the benchmark and the CLI all go
//! through [`RunDir`].
use super::checkpoint::{self, Loaded, Meta};
use super::config::Config;
use super::RunResult;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// A run directory (which may not exist yet).
#[derive(Clone, Debug, PartialEq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub const CONFIG: &'static str = "config.toml";
    pub const METRICS: &'static str = "metrics.jsonl";
    pub const RESULT: &'static str = "result.json";
    /// Left by a diverged run, so that a resumed experiment does not repeat a deterministic
    /// divergence.
    pub const DIVERGED: &'static str = "diverged.txt";

    pub fn new(path: impl Into<PathBuf>) -> RunDir {
        RunDir { path: path.into() }
    }

    /// The run a path names: a run directory, or a checkpoint file inside one.
    pub fn of(path: &Path) -> RunDir {
        if path.is_dir() {
            RunDir::new(path)
        } else {
            RunDir::new(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
        }
    }

    /// True for a run directory or a file inside one.
    pub fn is_run(path: &Path) -> bool {
        path.is_dir() || path.parent().is_some_and(|d| d.join(Self::CONFIG).is_file())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn config_path(&self) -> PathBuf {
        self.path.join(Self::CONFIG)
    }
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join(Self::METRICS)
    }
    pub fn result_path(&self) -> PathBuf {
        self.path.join(Self::RESULT)
    }

    /// Creates the directory, takes its lock, removes stale files (saying so) and writes
    /// config.toml, or checks that a resumed run has the same recipe.
    pub fn open_for_writing(&self, cfg: &Config) -> Result<RunLock> {
        if self.path.exists() && !self.path.is_dir() {
            bail!("--out {}: a file, not a folder; expected a run directory (a new or an existing run's folder)", self.path.display());
        }
        std::fs::create_dir_all(&self.path).with_context(|| format!("{}: cannot create", self.path.display()))?;
        let lock = lock(&self.path)?;
        for name in clean_stale(&self.path)? {
            eprintln!("note: {}: removed {name}, left by an interrupted write", self.path.display());
        }
        check_or_write_config(cfg, &self.path)?;
        Ok(lock)
    }

    /// The run's recipe as written in config.toml.
    pub fn config(&self) -> Result<Config> {
        let p = self.config_path();
        let table = super::config::load_table(p.to_str().unwrap_or_default()).with_context(|| format!("{}: the run's config.toml is needed", self.path.display()))?;
        Config::from_table(table).with_context(|| p.display().to_string())
    }

    /// The newest checkpoint that reads back whole (see [`checkpoint::load_latest`]).
    pub fn latest_checkpoint(&self) -> Result<Option<Loaded>> {
        checkpoint::load_latest(&self.path)
    }

    pub fn save_checkpoint(&self, meta: &Meta, tensors: &[(String, Tensor)], keep: usize) -> Result<PathBuf> {
        checkpoint::save(&self.path, meta, tensors, keep)
    }

    /// result.json of a finished run (None when absent or unreadable).
    pub fn read_result(&self) -> Option<RunResult> {
        std::fs::read(self.result_path()).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// result.json of a finished run, or an error naming the file.
    pub fn result(&self) -> Result<RunResult> {
        let p = self.result_path();
        serde_json::from_slice(&std::fs::read(&p).with_context(|| format!("{}: no result.json", self.path.display()))?).with_context(|| p.display().to_string())
    }

    pub fn write_result(&self, r: &RunResult) -> Result<()> {
        crate::util::write_atomic(&self.result_path(), serde_json::to_string_pretty(r)?.as_bytes())
    }

    pub fn mark_diverged(&self, why: &str) -> Result<()> {
        crate::util::write_atomic(&self.path.join(Self::DIVERGED), format!("{why}\n").as_bytes())
    }

    /// Why the run diverged, when it did.
    pub fn diverged(&self) -> Option<String> {
        let p = self.path.join(Self::DIVERGED);
        p.is_file().then(|| std::fs::read_to_string(&p).unwrap_or_default())
    }

    /// Every line of metrics.jsonl.
    pub fn metrics(&self) -> Result<Vec<Value>> {
        super::metrics::read(&self.metrics_path())
    }

    /// The untrained backbone's kNN top-1 as logged at step 0.
    pub fn untrained_knn(&self) -> Option<f64> {
        let lines = self.metrics().unwrap_or_default();
        lines.iter().find(|l| l.get("untrained").is_some()).and_then(|l| l.get("knn_top1")).and_then(Value::as_f64)
    }

    /// kNN top-1 against the metrics key `x` ("epoch" or "step"), sorted, one point per x.
    pub fn knn_curve(&self, x: &str) -> Result<Vec<(f64, f64)>> {
        let lines = self.metrics()?;
        let mut pts: Vec<(f64, f64)> = lines.iter().filter_map(|l| Some((l.get(x)?.as_f64()?, l.get("knn_top1")?.as_f64()?))).collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        pts.dedup_by(|a, b| a.0 == b.0);
        Ok(pts)
    }
}

/// Keys that may differ when a run directory is resumed.
const RESUME_FREE_KEYS: [&str; 15] = [
    "train.device",
    "train.tensorboard",
    "train.prefetch",
    "train.loader_threads",
    "train.channels_last",
    "train.log_every",
    "train.knn_every",
    "train.knn_every_steps",
    "train.knn_at_start",
    "train.keep_checkpoints",
    "train.collapse_threshold",
    "train.collapse_mi_threshold",
    "train.collapse_patience",
    // a run whose image went bad mid-run resumes by skipping it (the order of the images left
    // then differs from the uninterrupted run's, which could not have gone on)
    "data.skip_corrupt",
    "eval",
];

fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => t.iter().for_each(|(k, v)| flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out)),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// Writes DIR/config.toml, or checks that a resumed run has the same recipe.
fn check_or_write_config(cfg: &Config, dir: &Path) -> Result<()> {
    let path = dir.join("config.toml");
    if path.is_file() {
        check_same_recipe(cfg, dir)?;
    } else if let Some(name) = first_run_file(dir)? {
        bail!("{}: holds {name} but no config.toml, so it is not a run svib can resume and writing here would replace it; use another --out", dir.display());
    }
    crate::util::write_atomic(&path, cfg.to_toml().as_bytes())
}

/// Refuses `cfg` for the run in `dir` (which has a config.toml) when they differ in a key that
/// changes what is trained; the keys of [`RESUME_FREE_KEYS`] may change on a resume.
pub fn check_same_recipe(cfg: &Config, dir: &Path) -> Result<()> {
    let path = dir.join("config.toml");
    let old = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let old: toml::Table = toml::from_str(&old).map_err(|e| anyhow::anyhow!("{}: not valid TOML ({})", path.display(), e.message()))?;
    // a run written before a key existed has that key's default (which reproduces the old
    // behaviour), so compare through the config with today's defaults filled in
    let mut old = Config::from_table(old).with_context(|| path.display().to_string())?;
    // a run started before data paths were made absolute holds the folder as typed
    old.data.spec = crate::data::absolute_spec(&old.data.spec);
    let old: toml::Value = toml::from_str(&old.to_toml())?;
    let (mut a, mut b) = (vec![], vec![]);
    flatten("", &old, &mut a);
    flatten("", &toml::from_str(&cfg.to_toml())?, &mut b);
    let free = |k: &str| RESUME_FREE_KEYS.iter().any(|f| k == *f || k.starts_with(&format!("{f}.")));
    let a: std::collections::BTreeMap<_, _> = a.into_iter().filter(|(k, _)| !free(k)).collect();
    let b: std::collections::BTreeMap<_, _> = b.into_iter().filter(|(k, _)| !free(k)).collect();
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).filter(|k| a.get(*k) != b.get(*k)).collect();
    // the method (a top-level key) first, then the tables' keys in order
    keys.sort_by_key(|k| (k.contains('.'), *k));
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 8;
    let mut diff: Vec<String> = keys.iter().take(SHOWN).map(|k| format!("{k} ({} -> {})", a.get(*k).map_or("unset", |s| s), b.get(*k).map_or("unset", |s| s))).collect();
    if keys.len() > SHOWN {
        diff.push(format!("and {} more", keys.len() - SHOWN));
    }
    bail!("{} holds a run with another recipe; differing keys: {}. Use another --out to start a new run", dir.display(), diff.join(", "))
}

/// The first file that a run writes once it has taken steps (metrics, result, checkpoint) found
/// in `dir`.
fn first_run_file(dir: &Path) -> Result<Option<String>> {
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if [RunDir::METRICS, RunDir::RESULT, RunDir::DIVERGED].contains(&name.as_str()) || (name.starts_with("ckpt-") && name.ends_with(".safetensors")) {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// After a new run failed before its first step (bad data, too little memory): removes the
/// config.toml and lock it wrote (and the folder, when the run created it) so that a corrected
/// command starts afresh instead of meeting "another recipe". Only when no other writer holds the
/// folder and no step was logged or saved.
pub fn forget_unstarted(dir: &Path, existed: bool) {
    let Ok(_lock) = lock(dir) else { return };
    if matches!(first_run_file(dir), Ok(None)) {
        let _ = std::fs::remove_file(dir.join(RunDir::CONFIG));
        let _ = std::fs::remove_file(dir.join(LOCK));
        if !existed {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// The lock file of a run directory.
const LOCK: &str = ".lock";

/// Held while a run writes its directory; released when dropped (or when the process dies).
pub struct RunLock {
    _file: std::fs::File,
}

/// Takes the run directory's lock, or fails with one line naming the process that holds it.
pub fn lock(dir: &Path) -> Result<RunLock> {
    let path = dir.join(LOCK);
    let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).with_context(|| format!("{}: cannot open", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            bail!("{}: cannot lock ({err}); svib needs a file system with flock for a run directory", path.display());
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let who = if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
        bail!("{}: {who} is writing this run directory (lock {}); wait for it to finish, or choose another --out", dir.display(), path.display());
    }
    file.set_len(0).and_then(|_| file.rewind()).and_then(|_| write!(file, "{}", std::process::id())).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(RunLock { _file: file })
}

/// Removes what a writer killed mid-write left: `.NAME.PID.tmp` files and checkpoint halves (a
/// `.safetensors` without its `.json`, or the reverse). Call with the lock held.
pub fn clean_stale(dir: &Path) -> Result<Vec<String>> {
    let mut removed = vec![];
    for e in std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let half = name.starts_with("ckpt-")
            && match p.extension().and_then(|x| x.to_str()) {
                Some("safetensors") => !p.with_extension("json").is_file(),
                Some("json") => !p.with_extension("safetensors").is_file(),
                _ => false,
            };
        let ours = [".config.toml.", ".metrics.jsonl.", ".result.json.", ".diverged.txt.", ".ckpt-"];
        let tmp = ours.iter().any(|p| name.starts_with(p)) && name.ends_with(".tmp");
        if (tmp || half) && std::fs::remove_file(&p).is_ok() {
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holders_pid() {
        let d = tempfile::tempdir().unwrap();
        let held = lock(d.path()).unwrap();
        let e = lock(d.path()).err().unwrap().to_string();
        assert!(e.contains(&format!("process {}", std::process::id())) && e.contains("another --out"), "{e}");
        drop(held);
        lock(d.path()).unwrap();
    }

    #[test]
    fn stale_temp_files_and_checkpoint_halves_are_removed() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            ".config.toml.123.tmp",
            ".ckpt-00000005.safetensors.tmp",
            "ckpt-00000006.safetensors",
            "ckpt-00000007.json",
            "ckpt-00000004.safetensors",
            "ckpt-00000004.json",
            "metrics.jsonl",
        ] {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        let removed = clean_stale(d.path()).unwrap();
        assert_eq!(removed, vec![".ckpt-00000005.safetensors.tmp", ".config.toml.123.tmp", "ckpt-00000006.safetensors", "ckpt-00000007.json"]);
        let mut left: Vec<String> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, vec!["ckpt-00000004.json", "ckpt-00000004.safetensors", "metrics.jsonl"]);
    }
}
