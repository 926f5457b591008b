//! Parity with PyTorch. A small timm ViT (committed fixture of scripts/fixtures/make_timm_vit.py)
//! gives the same [CLS] features in svib and exports back to the same tensors under timm's names.
//! torchvision ResNets loaded from `.pth` give the same features in svib, and svib's `.pth`
//! export of them loads back with identical tensors; those fixtures (scripts/fixtures/
//! make_parity.py) are large, hence ignored by default:
//! `SVIB_PARITY_DIR=/tmp/svib-parity cargo test --release -- --ignored parity`.
use std::path::PathBuf;
use svib::interop::pth::{read_pth, write_pth};
use svib::models::{weights, ArchConfig, Backbone};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

fn dir() -> PathBuf {
    PathBuf::from(std::env::var("SVIB_PARITY_DIR").unwrap_or_else(|_| "/tmp/svib-parity".into()))
}

fn get(file: &str, key: &str) -> Tensor {
    read_pth(&dir().join(file)).unwrap().into_iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{file}: no {key}")).1
}

#[test]
fn parity_timm_vit() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/timm_vit.pth");
    let all = read_pth(&fixture).unwrap();
    let pick = |k: &str| all.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
    let (x, want) = (pick("_input"), pick("_expected"));
    let weights_only: Vec<(String, Tensor)> = all.iter().filter(|(k, _)| !k.starts_with('_')).map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
    let d = tempfile::tempdir().unwrap();
    let w = d.path().join("vit.pth");
    write_pth(&weights_only, &w).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let arch = ArchConfig::parse("vit_tiny:dim=32,depth=2,heads=2,patch_size=8,img_size=32,drop_path=0").unwrap();
    let model = Backbone::new(&vs.root(), &arch, 3).unwrap();
    weights::load_safetensors(&vs, &w).unwrap();
    let y = tch::no_grad(|| model.forward_t(&x, false));
    let rel = (&y - &want).abs().max().double_value(&[]) / want.abs().max().double_value(&[]);
    assert!(rel < 1e-5, "timm ViT: max relative error {rel}");
    // export: the same tensors under the same (timm) names, nothing more, nothing less
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    let exported = svib::interop::export_tensors(named, svib::interop::Layout::Torchvision, true).unwrap();
    assert_eq!(exported.len(), weights_only.len());
    for (k, t) in &exported {
        let orig = &weights_only.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("export has `{k}`, timm has not")).1;
        assert!(t.equal(orig), "{k}");
    }
}

#[test]
#[ignore]
fn parity_torchvision_resnets() {
    let x = get("input.pth", "x");
    for name in ["resnet18", "resnet50"] {
        let vs = VarStore::new(Device::Cpu);
        let model = Backbone::new(&vs.root(), &ArchConfig::parse(name).unwrap(), 3).unwrap();
        weights::load_safetensors(&vs, &dir().join(format!("{name}.pth"))).unwrap();
        let y = tch::no_grad(|| model.forward_t(&x, false));
        let want = get("expected.pth", name);
        let rel = (&y - &want).abs().max().double_value(&[]) / want.abs().max().double_value(&[]);
        println!("{name}: max relative error {rel:e}");
        assert!(rel < 1e-5, "{name}: {rel}");
        // and back: svib's .pth export holds the same tensors under the same names
        let out = dir().join(format!("{name}-svib-export.pth"));
        let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        write_pth(&svib::interop::export_tensors(named, svib::interop::Layout::Torchvision, false).unwrap(), &out).unwrap();
        let orig: std::collections::BTreeMap<String, Tensor> = read_pth(&dir().join(format!("{name}.pth"))).unwrap().into_iter().collect();
        for (k, t) in read_pth(&out).unwrap() {
            if !k.ends_with("num_batches_tracked") {
                assert!(t.equal(&orig[&k]), "{k}");
            }
        }
        if name == "resnet18" {
            Tensor::write_safetensors(&[("features", &y)], dir().join("svib_features.safetensors")).unwrap();
        }
    }
}
