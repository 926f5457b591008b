use super::*;
use tch::Device;

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn write_then_read_roundtrips_kinds_and_shapes() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("x.pth");
    let named = vec![
        ("conv1.weight".to_string(), Tensor::arange(24, (Kind::Float, Device::Cpu)).view([2, 3, 2, 2])),
        ("bn1.num_batches_tracked".to_string(), Tensor::from(7i64)),
        ("big".to_string(), Tensor::full([3], 3e9 as f64, (Kind::Double, Device::Cpu))),
        ("empty".to_string(), Tensor::zeros([0, 4], (Kind::Float, Device::Cpu))),
    ];
    write_pth(&named, &path).unwrap();
    let back = read_pth(&path).unwrap();
    assert_eq!(back.len(), named.len());
    for ((n1, t1), (n2, t2)) in named.iter().zip(&back) {
        assert_eq!(n1, n2);
        assert_eq!((t1.size(), t1.kind()), (t2.size(), t2.kind()), "{n1}");
        assert!(t1.equal(t2), "{n1}");
    }
}

/// `tests/fixtures/torch_checkpoint.pth` was written by PyTorch 2.11 (scripts/fixtures/make_pth.py):
/// a DINO-style nested checkpoint with a view that starts at an offset into a shared storage.
#[test]
fn reads_a_checkpoint_written_by_pytorch() {
    let t: std::collections::BTreeMap<String, Tensor> = read_pth(&fixture("torch_checkpoint.pth")).unwrap().into_iter().collect();
    let w = &t["teacher.backbone.conv1.weight"];
    assert_eq!(w.size(), vec![2, 3]);
    assert!(w.equal(&Tensor::from_slice(&[0.0f32, 0.5, 1.0, 1.5, 2.0, 2.5]).view([2, 3])));
    // student.module.backbone.view = arange(10)[4:8] (offset 4 into a 10-element storage)
    assert!(t["student.module.backbone.view"].equal(&Tensor::from_slice(&[4i64, 5, 6, 7])));
    // a transposed (non-contiguous) tensor
    assert!(t["teacher.backbone.t"].equal(&Tensor::from_slice(&[1.0f64, 3.0, 2.0, 4.0]).view([2, 2])));
    assert_eq!(t["teacher.backbone.bn1.num_batches_tracked"].int64_value(&[]), 11);
    // non-tensor entries (epoch, args) are skipped
    assert!(!t.keys().any(|k| k.contains("epoch") || k.contains("args")));
}

#[test]
fn bad_files_are_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("legacy.pth");
    std::fs::write(&p, b"\x80\x02not a zip").unwrap();
    let e = read_pth(&p).unwrap_err().to_string();
    assert!(e.contains("legacy.pth") && e.contains("zip"), "{e}");
}
