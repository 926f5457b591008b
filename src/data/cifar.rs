//! CIFAR-10 / CIFAR-100 binary versions. Records are `label (1 byte) + 3072 bytes` (CIFAR-10) or
//! `coarse + fine label + 3072 bytes` (CIFAR-100); pixels are planar R, G, B of 32x32.
use super::{read_records, Dataset, ImageU8, Split};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

const PIXELS: usize = 32 * 32 * 3;
/// Records in one file: CIFAR-100's train.bin has 50,000.
const MAX_RECORDS: usize = 60_000;

/// The folder holding the .bin files: DIR itself or the archive's own sub-folder.
fn batches_dir(dir: &Path, sub: &str, probe: &str) -> Result<PathBuf> {
    for d in [dir.to_path_buf(), dir.join(sub)] {
        if d.join(probe).is_file() {
            return Ok(d);
        }
    }
    bail!("{}: no {probe} found (looked in the directory and in {sub}/)", dir.display())
}

pub fn load(dir: &Path, split: Split, hundred: bool) -> Result<Dataset> {
    let (sub, files, label_bytes, classes): (&str, Vec<String>, usize, usize) = match (hundred, split) {
        (false, Split::Train) => ("cifar-10-batches-bin", (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(), 1, 10),
        (false, Split::Test) => ("cifar-10-batches-bin", vec!["test_batch.bin".into()], 1, 10),
        (true, Split::Train) => ("cifar-100-binary", vec!["train.bin".into()], 2, 100),
        (true, Split::Test) => ("cifar-100-binary", vec!["test.bin".into()], 2, 100),
        (_, Split::Unlabeled) => bail!("{}: CIFAR has no unlabeled split", dir.display()),
    };
    let root = batches_dir(dir, sub, &files[0])?;
    let record = label_bytes + PIXELS;
    let (mut images, mut labels) = (vec![], vec![]);
    for f in &files {
        let path = root.join(f);
        read_records(&path, record, MAX_RECORDS, &format!("{record}-byte records"), |i, r| {
            let label = r[label_bytes - 1] as usize;
            if label >= classes {
                bail!("{}: record {i} (offset {}) has label {label}, expected 0..{}", path.display(), i * record + label_bytes - 1, classes - 1);
            }
            let px = &r[label_bytes..];
            let mut hwc = vec![0u8; PIXELS];
            for p in 0..1024 {
                for c in 0..3 {
                    hwc[p * 3 + c] = px[c * 1024 + p];
                }
            }
            images.push(ImageU8::new(32, 32, 3, hwc));
            labels.push(label as i64);
            Ok(())
        })?;
    }
    let meta = if hundred { "fine_label_names.txt" } else { "batches.meta.txt" };
    let class_names = std::fs::read_to_string(root.join(meta))
        .ok()
        .map(|s| s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect::<Vec<_>>())
        .filter(|v| v.len() == classes)
        .unwrap_or_else(|| (0..classes).map(|i| i.to_string()).collect());
    Ok(Dataset { images, labels, num_classes: classes, class_names, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::bytes;

    fn write_cifar(dir: &Path, hundred: bool, n: usize) -> Vec<u8> {
        let mut all = vec![];
        let files: Vec<&str> = if hundred {
            vec!["train.bin", "test.bin"]
        } else {
            vec!["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"]
        };
        for (k, f) in files.iter().enumerate() {
            let mut v = vec![];
            for i in 0..n {
                if hundred {
                    v.push(3);
                }
                v.push(((i + k) % 10) as u8 * if hundred { 9 } else { 1 });
                v.extend(bytes(PIXELS, (k * 100 + i) as u32));
            }
            if k == 0 {
                all = v.clone();
            }
            std::fs::write(dir.join(f), v).unwrap();
        }
        all
    }

    #[test]
    fn cifar10_planar_to_hwc_and_labels() {
        let d = tempfile::tempdir().unwrap();
        let raw = write_cifar(d.path(), false, 4);
        let ds = load(d.path(), Split::Train, false).unwrap();
        assert_eq!(ds.len(), 20);
        // record 1 of batch 1: label byte then planes; pixel (row 0, col 5) green = plane 1 offset 5.
        let r = &raw[3073..2 * 3073];
        assert_eq!(ds.labels[1], r[0] as i64);
        assert_eq!(ds.images[1].data[5 * 3 + 1], r[1 + 1024 + 5]);
        assert_eq!(ds.images[1].data[(32 * 31 + 31) * 3 + 2], r[1 + 2048 + 1023]);
        assert_eq!(load(d.path(), Split::Test, false).unwrap().len(), 4);
    }

    #[test]
    fn cifar100_uses_fine_label_and_subfolder() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("cifar-100-binary");
        std::fs::create_dir(&sub).unwrap();
        let raw = write_cifar(&sub, true, 3);
        let ds = load(d.path(), Split::Train, true).unwrap();
        assert_eq!(ds.num_classes, 100);
        assert_eq!(ds.labels[2], raw[2 * 3074 + 1] as i64);
    }

    #[test]
    fn truncated_and_bad_label() {
        let d = tempfile::tempdir().unwrap();
        write_cifar(d.path(), false, 4);
        let p = d.path().join("test_batch.bin");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 1]).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Test, false).unwrap_err());
        assert!(e.contains("test_batch.bin") && e.contains("truncated") && e.contains("offset 9219"), "{e}");
        let mut b2 = b.clone();
        b2[3073] = 12;
        std::fs::write(&p, &b2).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Test, false).unwrap_err());
        assert!(e.contains("record 1") && e.contains("label 12"), "{e}");
    }
}
