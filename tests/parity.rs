//! Parity with PyTorch: torchvision ResNets loaded from `.pth` give the same features in svib,
//! and svib's `.pth` export of them loads back with identical tensors. Needs the (large)
//! fixtures of scripts/fixtures/make_parity.py, hence ignored by default:
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
