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
}

fn stem(step: usize) -> String {
    format!("ckpt-{step:08}")
}

/// Writes the pair for `meta.step` and keeps only the newest `keep` pairs.
pub fn save(dir: &Path, meta: &Meta, tensors: &[(String, Tensor)], keep: usize) -> Result<PathBuf> {
    let st = dir.join(format!("{}.safetensors", stem(meta.step)));
    let tmp = dir.join(format!(".{}.safetensors.tmp", stem(meta.step)));
    let cpu: Vec<(String, Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous())).collect();
    Tensor::write_safetensors(&cpu, &tmp).map_err(|e| anyhow::anyhow!("{}: cannot write checkpoint ({e})", tmp.display()))?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("{}: cannot sync", tmp.display()))?;
    std::fs::rename(&tmp, &st).with_context(|| format!("{}: cannot rename into place", st.display()))?;
    crate::util::write_atomic(&dir.join(format!("{}.json", stem(meta.step))), serde_json::to_string_pretty(meta)?.as_bytes())?;
    let all = list(dir);
    for (_, old) in all.iter().rev().skip(keep) {
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

/// The newest complete checkpoint: its metadata and tensors by name.
pub fn load_latest(dir: &Path) -> Result<Option<(Meta, BTreeMap<String, Tensor>, PathBuf)>> {
    let Some((_, path)) = list(dir).pop() else { return Ok(None) };
    let (meta, tensors) = load(&path)?;
    Ok(Some((meta, tensors, path)))
}

pub fn load(path: &Path) -> Result<(Meta, BTreeMap<String, Tensor>)> {
    let json = path.with_extension("json");
    let meta: Meta = serde_json::from_slice(&std::fs::read(&json).with_context(|| format!("{}: cannot read", json.display()))?)
        .map_err(|e| anyhow::anyhow!("{}: not a checkpoint description ({e})", json.display()))?;
    let tensors = Tensor::read_safetensors(path).map_err(|e| anyhow::anyhow!("{}: not a readable safetensors file ({e})", path.display()))?;
    if tensors.is_empty() {
        bail!("{}: the checkpoint holds no tensors", path.display());
    }
    Ok((meta, tensors.into_iter().collect()))
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
        Meta { step, epoch: 0, batch_in_epoch: step, seconds: 1.0, svib_version: "t".into(), rng: "derived".into() }
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
        // a corrupt checkpoint is one clear error naming the file
        std::fs::write(d.path().join("ckpt-00000011.safetensors"), b"junk").unwrap();
        let e = load_latest(d.path()).unwrap_err().to_string();
        assert!(e.contains("ckpt-00000011.safetensors") && e.contains("not a readable"), "{e}");
        assert!(!d.path().read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    }
}
