//! scripts/gpu-check.sh --dry-run: the prepared GPU check runs end to end on the CPU (tiny
//! models, fp32, the PyTorch reference skipped without torchvision, the distributed part over
//! Gloo) and reports every part.
use std::process::Command;

#[test]
fn gpu_check_dry_run_reports_every_method_and_both_paper_presets() {
    let out = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let o = Command::new("bash")
        .arg(format!("{root}/scripts/gpu-check.sh"))
        .args(["--dry-run", "--bin", env!("CARGO_BIN_EXE_svib"), "--out"])
        .arg(out.path())
        .env("PYTHON", "python3")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("gpu-check: all parts ran"), "{text}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("gpu-check.json")).unwrap()).unwrap();
    let methods = report["methods"].as_array().unwrap();
    let names: Vec<&str> = methods.iter().map(|m| m["method"].as_str().unwrap()).collect();
    assert_eq!(names, ["svib", "dino", "byol", "mocov2", "swav", "simclr"]);
    for m in methods {
        // the same device (CPU) on both sides: resuming the same checkpoint gives the same losses
        assert!(m["cpu_vs_device_max_rel"].as_f64().unwrap() <= 1e-6, "{m}");
        assert_eq!(m["fp32_steps"], 6, "{m}");
    }
    let paper = report["paper"].as_array().unwrap();
    assert_eq!(paper.len(), 4);
    assert!(paper.iter().all(|r| r["svib_img_s"].as_f64().unwrap() > 0.0), "{paper:?}");
    assert!(std::fs::read_to_string(out.path().join("gpu-check.md")).unwrap().contains("| paper-vit-s16 | 2 |"));
    // (d) the distributed path as a group of one (Gloo on the CPU): the plain run's losses
    let d = &report["distributed"];
    assert_eq!((d["plain_steps"].as_u64(), d["launch_steps"].as_u64()), (Some(6), Some(6)), "{d}");
    assert!(d["launch_max_rel"].as_f64().unwrap() <= 1e-6, "{d}");
    assert!(d["vit"].as_array().unwrap().iter().all(|r| r["group_img_s"].as_f64().unwrap() > 0.0), "{d}");
}
