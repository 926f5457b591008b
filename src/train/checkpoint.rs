//! Checkpoints: `ckpt-STEP.safetensors` (student, teacher, optimiser and method state) plus
//! `ckpt-STEP.json` (where training stands), each written atomically; the JSON is written last
//! and marks the pair complete. The newest complete pair is resumed; older ones are pruned.
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Steps done in total.
    pub step: usize,
    /// The epoch in progress (0-based) and the batches of it already done.
    pub epoch: usize,
    pub batch_in_epoch: usize,
    /// Training wall time so far, across resumes.
    pub seconds: f64,
    pub svib_version: String,
    /// Random streams are derived from (seed, epoch, step), so none has to be stored.
    pub rng: String,
    /// The collapse monitor's counts (absent in checkpoints of older versions).
    #[serde(default)]
    pub monitor: crate::train::monitor::MonitorState,
    /// Processes of the data-parallel run that wrote it (1 in older checkpoints).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Images per step over all processes (absent in older checkpoints: train.batch_size x
    /// world_size). A run resumed on another number of processes keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_batch: Option<usize>,
}

fn one() -> usize {
    1
}

fn stem(step: usize) -> String {
    format!("ckpt-{step:08}")
}

/// The error of [`save`] when the state holds NaN or infinity: the run has diverged.
#[derive(Debug)]
pub struct NonFinite(pub String);

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NonFinite {}

/// Writes the pair for `meta.step` and keeps only the newest `keep` pairs.
pub fn save(dir: &Path, meta: &Meta, tensors: &[(String, Tensor)], keep: usize) -> Result<PathBuf> {
    let st = dir.join(format!("{}.safetensors", stem(meta.step)));
    let cpu: Vec<(String, Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous())).collect();
    let bad = non_finite(cpu.iter().map(|(n, t)| (n, t)));
    if let Some(first) = bad.first() {
        let msg = format!("step {}: {} tensor(s) hold non-finite values ({first} first), so no checkpoint is written: training has diverged", meta.step, bad.len());
        return Err(NonFinite(msg).into());
    }
    crate::interop::write_safetensors(&cpu, &st)?;
    crate::util::write_atomic(&dir.join(format!("{}.json", stem(meta.step))), serde_json::to_string_pretty(meta)?.as_bytes())?;
    // checkpoints after this step belong to a timeline a resume abandoned (it passed over them
    // as unreadable or non-finite): they go, and only the ones up to this step count for `keep`
    let (mine, abandoned): (Vec<_>, Vec<_>) = list(dir).into_iter().partition(|(s, _)| *s <= meta.step);
    for (_, old) in abandoned.iter().chain(mine.iter().rev().skip(keep)) {
        let _ = std::fs::remove_file(old.with_extension("json"));
        let _ = std::fs::remove_file(old);
    }
    Ok(st)
}

/// Complete checkpoints in `dir`, oldest first: (step, safetensors path).
pub fn list(dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("ckpt-")?.strip_suffix(".safetensors")?.parse().ok()?;
            let p = e.path();
            p.with_extension("json").is_file().then_some((step, p))
        })
        .collect();
    v.sort();
    v
}

/// A checkpoint read back: its description, tensors by name and path.
pub type Loaded = (Meta, BTreeMap<String, Tensor>, PathBuf);

/// The newest checkpoint that reads back whole and finite, with its metadata and tensors by
/// name. An unreadable or non-finite newer one is passed over with a warning naming it.
pub fn load_latest(dir: &Path) -> Result<Option<Loaded>> {
    let all = list(dir);
    let mut last_error = None;
    for (i, (step, path)) in all.iter().enumerate().rev() {
        match load(path).and_then(|(meta, t)| check(*step, &meta, &t, path).map(|_| (meta, t))) {
            Ok((meta, tensors)) => return Ok(Some((meta, tensors, path.clone()))),
            Err(e) if i > 0 => eprintln!("warning: {e:#}; trying the checkpoint before it"),
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) => Err(e.context(format!("{}: no checkpoint reads back", dir.display()))),
        None => Ok(None),
    }
}

/// A checkpoint is good when its description names its own step and holds values a run can
/// have written (and, see [`load`], every tensor is finite).
fn check(step: usize, meta: &Meta, _tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<()> {
    let json = path.with_extension("json");
    if meta.step != step {
        bail!("{}: describes step {}, but its name says step {step}", json.display(), meta.step);
    }
    let checks = [
        (meta.epoch <= step && meta.batch_in_epoch <= step, "epoch and batch_in_epoch: expected at most the step"),
        (meta.seconds.is_finite() && meta.seconds >= 0.0, "seconds: expected a finite time of at least 0"),
        ((1..=65_536).contains(&meta.world_size), "world_size: expected 1 to 65536 processes"),
        (meta.global_batch.is_none_or(|g| (2..=1 << 20).contains(&g) && g % meta.world_size == 0), "global_batch: expected 2 to 1048576 images, a multiple of world_size"),
    ];
    if let Some((_, what)) = checks.iter().find(|c| !c.0) {
        bail!("{}: {what}; not written by svib", json.display());
    }
    Ok(())
}

/// Names of floating-point tensors holding NaN or infinity.
fn non_finite<'a>(named: impl Iterator<Item = (&'a String, &'a Tensor)>) -> Vec<&'a String> {
    named.filter(|(_, t)| t.is_floating_point() && !bool::try_from(t.isfinite().all()).unwrap_or(false)).map(|(n, _)| n).collect()
}

/// A checkpoint's description and tensors; one holding non-finite values is an error.
pub fn load(path: &Path) -> Result<(Meta, BTreeMap<String, Tensor>)> {
    let json = path.with_extension("json");
    let meta: Meta = serde_json::from_slice(&std::fs::read(&json).with_context(|| format!("{}: its description {} cannot be read", path.display(), json.display()))?)
        .map_err(|e| anyhow::anyhow!("{}: not a checkpoint description ({})", json.display(), crate::util::plain_serde(&e.to_string())))?;
    let tensors = crate::interop::read_safetensors(path)?;
    if tensors.is_empty() {
        bail!("{}: the checkpoint holds no tensors", path.display());
    }
    let tensors: BTreeMap<String, Tensor> = tensors.into_iter().collect();
    let bad = non_finite(tensors.iter());
    if let Some(first) = bad.first() {
        bail!("{}: {} tensor(s) hold non-finite values ({first} first): not a usable checkpoint", path.display(), bad.len());
    }
    Ok((meta, tensors))
}

/// The tensors under `prefix.` with the prefix removed.
pub fn with_prefix(tensors: &BTreeMap<String, Tensor>, prefix: &str) -> Vec<(String, Tensor)> {
    let p = format!("{prefix}.");
    tensors.iter().filter_map(|(k, v)| k.strip_prefix(&p).map(|k| (k.to_string(), v.shallow_clone()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(step: usize) -> Meta {
        Meta { step, epoch: 0, batch_in_epoch: step, seconds: 1.0, svib_version: "t".into(), rng: "derived".into(), monitor: Default::default(), world_size: 1, global_batch: None }
    }

    #[test]
    fn save_load_prune_and_ignore_incomplete() {
        let d = tempfile::tempdir().unwrap();
        for s in [3, 7, 11] {
            save(d.path(), &meta(s), &[("student.w".into(), Tensor::from_slice(&[s as f32, 2.0]))], 2).unwrap();
        }
        assert_eq!(list(d.path()).iter().map(|x| x.0).collect::<Vec<_>>(), vec![7, 11]);
        // a safetensors without its JSON (a crash between the two writes) is not a checkpoint
        std::fs::write(d.path().join("ckpt-00000020.safetensors"), b"junk").unwrap();
        let (m, t, _) = load_latest(d.path()).unwrap().unwrap();
        assert_eq!(m, meta(11));
        assert_eq!(Vec::<f32>::try_from(&t["student.w"]).unwrap(), vec![11.0, 2.0]);
        assert_eq!(with_prefix(&t, "student")[0].0, "w");
        // an unreadable, a non-finite or a mislabelled newest checkpoint is passed over
        std::fs::write(d.path().join("ckpt-00000011.safetensors"), b"junk").unwrap();
        assert_eq!(load_latest(d.path()).unwrap().unwrap().0, meta(7));
        let e = save(d.path(), &meta(12), &[("student.w".into(), Tensor::from_slice(&[f32::NAN, 2.0]))], 5).unwrap_err().to_string();
        assert!(e.contains("step 12") && e.contains("student.w") && e.contains("diverged"), "{e}");
        Tensor::write_safetensors(&[("student.w", Tensor::from_slice(&[f32::INFINITY]))], d.path().join("ckpt-00000013.safetensors")).unwrap();
        std::fs::write(d.path().join("ckpt-00000013.json"), serde_json::to_string(&meta(13)).unwrap()).unwrap();
        save(d.path(), &meta(999_999), &[("student.w".into(), Tensor::from_slice(&[1.0f32]))], 5).unwrap();
        std::fs::rename(d.path().join("ckpt-00999999.safetensors"), d.path().join("ckpt-00000014.safetensors")).unwrap();
        std::fs::rename(d.path().join("ckpt-00999999.json"), d.path().join("ckpt-00000014.json")).unwrap();
        assert_eq!(load_latest(d.path()).unwrap().unwrap().0, meta(7));
        // when none can be read, one error naming the directory
        std::fs::write(d.path().join("ckpt-00000007.safetensors"), b"junk").unwrap();
        let e = format!("{:#}", load_latest(d.path()).unwrap_err());
        assert!(e.contains("no checkpoint reads back") && e.contains("ckpt-00000007.safetensors"), "{e}");
        assert!(!d.path().read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    }

    /// Values no run writes (an edited description) make a checkpoint unusable, named.
    #[test]
    fn descriptions_out_of_range_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ckpt-00000003.safetensors");
        let t = BTreeMap::new();
        let bad = [Meta { global_batch: Some(0), ..meta(3) }, Meta { seconds: -1e300, ..meta(3) }, Meta { epoch: 99_999, ..meta(3) }, Meta { world_size: 0, ..meta(3) }];
        for (m, key) in bad.iter().zip(["global_batch", "seconds", "epoch", "world_size"]) {
            let e = format!("{:#}", check(3, m, &t, &p).unwrap_err());
            assert!(e.contains("ckpt-00000003.json") && e.contains(key), "{e}");
        }
        check(3, &Meta { global_batch: Some(128), world_size: 2, ..meta(3) }, &t, &p).unwrap();
    }

    /// After a resume fell back past a bad checkpoint, saving drops the abandoned later ones
    /// first, so that `keep` never deletes the good checkpoint just written or the one before.
    #[test]
    fn saving_after_a_fallback_drops_the_abandoned_checkpoints() {
        let d = tempfile::tempdir().unwrap();
        let w = |v: f32| [("student.w".to_string(), Tensor::from_slice(&[v]))];
        save(d.path(), &meta(10), &w(1.0), 1).unwrap();
        save(d.path(), &meta(15), &w(2.0), 2).unwrap();
        std::fs::write(d.path().join("ckpt-00000015.safetensors"), b"junk").unwrap();
        assert_eq!(load_latest(d.path()).unwrap().unwrap().0, meta(10));
        save(d.path(), &meta(12), &w(3.0), 1).unwrap();
        assert_eq!(list(d.path()).iter().map(|x| x.0).collect::<Vec<_>>(), vec![12]);
        assert_eq!(load_latest(d.path()).unwrap().unwrap().0, meta(12));
    }
}
