//! Loading backbone weights by name from safetensors or PyTorch `.pth` files, with one clear error for a checkpoint of
//! another architecture. Accepts the prefixes of common layouts (`module.`, `backbone.`,
//! DINO's `teacher.backbone.`, Detectron2's `backbone.bottom_up.` …), torchvision's ResNet names or
//! Detectron2's (`stem.conv1`, `res2` … `res5`, what `svib export --layout detectron2` writes), and
//! ignores classifier heads and `num_batches_tracked`.
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::{nn, Tensor};

const PREFIXES: [&str; 11] = [
    "",
    "teacher.backbone.",
    "backbone.",
    "module.",
    "module.backbone.",
    "student.backbone.",
    "student.module.backbone.",
    "teacher.module.backbone.",
    "teacher.",
    "student.",
    "backbone.bottom_up.",
];

fn ignored(key: &str) -> bool {
    key.ends_with("num_batches_tracked") || key.starts_with("fc.") || key.starts_with("head.") || key.starts_with("head_dist.")
}

/// Why a tensor's shape may differ from the model's: the input channels of the first layer
/// (a 4-D weight whose second dimension alone differs, 1 against 3) or another network.
fn shape_hint(have: &[i64], want: &[i64]) -> &'static str {
    let only_channels = have.len() == 4 && want.len() == 4 && have[0] == want[0] && have[2..] == want[2..] && have[1] != want[1];
    match (only_channels, have.get(1)) {
        (true, Some(3)) => "weights for colour images: give --channels 3",
        (true, Some(1)) => "weights for grey images: give --channels 1",
        _ => "a checkpoint of another architecture or size?",
    }
}

/// The name a checkpoint gives the model's variable `name`: a prefix, and torchvision's names or
/// Detectron2's (what `svib export --layout detectron2` writes).
#[derive(Clone, Copy)]
struct KeyLayout {
    prefix: &'static str,
    detectron2: bool,
}

impl KeyLayout {
    fn key(&self, name: &str) -> String {
        let name = if self.detectron2 { crate::interop::detectron2_key(name) } else { name.to_string() };
        format!("{}{name}", self.prefix)
    }
}

/// The layout under which most of the model's variables are in `have`; no prefix when none is.
fn best_layout(vars: &[String], have: &BTreeMap<String, Tensor>) -> KeyLayout {
    let layouts = [false, true].into_iter().flat_map(|detectron2| PREFIXES.iter().map(move |&prefix| KeyLayout { prefix, detectron2 }));
    let scored = layouts.map(|l| (vars.iter().filter(|k| have.contains_key(&l.key(k))).count(), l));
    // the first of equal scores, so that nothing found means no prefix
    scored.fold((0, KeyLayout { prefix: "", detectron2: false }), |best, s| if s.0 > best.0 { s } else { best }).1
}

/// Copies `named` tensors into the variables of `vs`, choosing the key layout that matches best.
pub fn load_named(vs: &nn::VarStore, named: Vec<(String, Tensor)>, source: &Path) -> Result<()> {
    let mut vars = vs.variables();
    let have: BTreeMap<String, Tensor> = named.into_iter().collect();
    let layout = best_layout(&vars.keys().cloned().collect::<Vec<_>>(), &have);
    let prefix = layout.prefix;
    let mut missing = vec![];
    let _guard = tch::no_grad_guard();
    for (name, var) in vars.iter_mut() {
        let key = layout.key(name);
        match have.get(&key) {
            None => missing.push(key),
            Some(t) if t.size() != var.size() => {
                bail!("{}: `{key}` has shape {:?}, the model expects {:?} ({})", source.display(), t.size(), var.size(), shape_hint(&t.size(), &var.size()))
            }
            Some(t) => var.copy_(&t.to_kind(var.kind())),
        }
    }
    let expected: BTreeSet<String> = vars.keys().map(|k| layout.key(k)).collect();
    let unexpected: Vec<&String> = have.keys().filter(|k| k.starts_with(prefix) && !expected.contains(*k) && !ignored(&k[prefix.len()..])).collect();
    if !missing.is_empty() || (!unexpected.is_empty() && prefix.is_empty()) {
        let show = |v: Vec<String>| {
            let n = v.len();
            let mut s = v.into_iter().take(5).collect::<Vec<_>>().join(", ");
            if n > 5 {
                s += &format!(" and {} more", n - 5);
            }
            s
        };
        let mut msg = format!("{}: does not fit the model (a checkpoint of another architecture?)", source.display());
        if !missing.is_empty() {
            missing.sort();
            msg += &format!("; missing keys: {}", show(missing));
        }
        if !unexpected.is_empty() {
            msg += &format!("; unexpected keys: {}", show(unexpected.into_iter().cloned().collect()));
        }
        bail!(msg);
    }
    Ok(())
}

/// Reads a weights file and loads it with [`load_named`]: safetensors, or PyTorch's torch.save
/// format for `.pth`, `.pt`, `.bin`, `.tar` and `.ckpt` files.
pub fn load_safetensors(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let named = if ["pth", "pt", "bin", "tar", "ckpt"].contains(&ext.as_str()) {
        // only tensors whose name ends in a variable's name (torchvision's or Detectron2's) and
        // whose shape is that variable's are read
        let vars: Vec<([String; 2], Vec<i64>)> = vs.variables().into_iter().map(|(k, v)| ([crate::interop::detectron2_key(&k), k], v.size())).collect();
        let ends_in = |name: &str, k: &str| name.strip_suffix(k).is_some_and(|p| p.is_empty() || p.ends_with('.'));
        let wanted = |name: &str, size: &[i64]| vars.iter().any(|(keys, s)| s == size && keys.iter().any(|k| ends_in(name, k)));
        crate::interop::pth::read_pth_where(path, wanted)?
    } else {
        crate::interop::read_safetensors(path).map_err(|e| anyhow::anyhow!("{e:#}; PyTorch files need a .pth or .pt name"))?
    };
    load_named(vs, named, path).with_context(|| "loading backbone weights".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{ArchConfig, Backbone};
    use tch::Device;

    fn model(arch: &str) -> nn::VarStore {
        let vs = nn::VarStore::new(Device::Cpu);
        Backbone::new(&vs.root(), &ArchConfig::parse(arch).unwrap(), 3).unwrap();
        vs
    }

    #[test]
    fn roundtrip_with_prefix_and_ignored_head() {
        let src = model("resnet18:width=8");
        let mut named: Vec<(String, Tensor)> = src.variables().into_iter().map(|(k, v)| (format!("teacher.backbone.{k}"), v)).collect();
        named.push(("teacher.backbone.fc.weight".into(), Tensor::zeros([10, 64], (tch::Kind::Float, Device::Cpu))));
        let dst = model("resnet18:width=8");
        load_named(&dst, named, Path::new("x.safetensors")).unwrap();
        for (k, v) in src.variables() {
            assert!(v.equal(&dst.variables()[&k]), "{k}");
        }
    }

    #[test]
    fn wrong_architecture_names_keys() {
        let src = model("resnet18:width=8");
        let named: Vec<(String, Tensor)> = src.variables().into_iter().collect();
        let e = load_named(&model("resnet34:width=8"), named.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect(), Path::new("r18.safetensors")).unwrap_err().to_string();
        assert!(e.contains("r18.safetensors") && e.contains("missing keys") && e.contains("layer"), "{e}");
        let e = load_named(&model("resnet18:width=16"), named, Path::new("r18.safetensors")).unwrap_err().to_string();
        assert!(e.contains("has shape"), "{e}");
        // nothing of the model in the file: its keys are named without a guessed prefix
        let e = load_named(&model("resnet18:width=8"), vec![("other".into(), Tensor::from(1f32))], Path::new("o.safetensors")).unwrap_err().to_string();
        assert!(e.contains("missing keys: bn1.") && e.contains("unexpected keys: other"), "{e}");
    }

    #[test]
    fn detectron2_export_loads_back() {
        let src = model("resnet18:width=8");
        let named = crate::interop::export_tensors(src.variables().into_iter().collect(), crate::interop::Layout::Detectron2, false).unwrap();
        assert!(named.iter().any(|(k, _)| k == "res5.1.conv2.norm.running_var"));
        // as Detectron2 keeps a ResNet inside its FPN
        let named = named.into_iter().map(|(k, v)| (format!("backbone.bottom_up.{k}"), v)).collect();
        let dst = model("resnet18:width=8");
        load_named(&dst, named, Path::new("d2.safetensors")).unwrap();
        for (k, v) in src.variables() {
            assert!(v.equal(&dst.variables()[&k]), "{k}");
        }
    }
}
