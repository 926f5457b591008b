//! STL-10 binary version: `{train,test,unlabeled}_X.bin` hold 96x96x3 images, each channel stored
//! column-major (MATLAB order); `{train,test}_y.bin` hold labels 1..10.
use super::{read_records, Dataset, ImageU8, Split};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

const SIDE: usize = 96;
const PIXELS: usize = SIDE * SIDE * 3;
/// Images in one file: the unlabeled split has 100,000.
const MAX_IMAGES: usize = 100_000;

fn root(dir: &Path) -> PathBuf {
    if dir.join("stl10_binary").is_dir() {
        dir.join("stl10_binary")
    } else {
        dir.to_path_buf()
    }
}

pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    let root = root(dir);
    let x_path = root.join(format!("{}_X.bin", split.name()));
    let mut images = vec![];
    let n = read_records(&x_path, PIXELS, MAX_IMAGES, "96x96x3 images", |_, raw| {
        let mut hwc = vec![0u8; PIXELS];
        for c in 0..3 {
            for x in 0..SIDE {
                for y in 0..SIDE {
                    hwc[(y * SIDE + x) * 3 + c] = raw[c * SIDE * SIDE + x * SIDE + y];
                }
            }
        }
        images.push(ImageU8::new(SIDE as u32, SIDE as u32, 3, hwc));
        Ok(())
    })?;
    let labels: Vec<i64> = if split == Split::Unlabeled {
        vec![-1; n]
    } else {
        let y_path = root.join(format!("{}_y.bin", split.name()));
        let mut ys = vec![];
        read_records(&y_path, 1, MAX_IMAGES, "labels", |_, l| {
            ys.push(l[0]);
            Ok(())
        })?;
        if ys.len() != n {
            bail!("{}: {} labels, but {} has {n} images", y_path.display(), ys.len(), x_path.display());
        }
        if let Some((i, &l)) = ys.iter().enumerate().find(|(_, &l)| !(1..=10).contains(&l)) {
            bail!("{}: label {l} at offset {i}, expected 1..10", y_path.display());
        }
        ys.iter().map(|&l| l as i64 - 1).collect()
    };
    let class_names = std::fs::read_to_string(root.join("class_names.txt"))
        .ok()
        .map(|s| s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect::<Vec<_>>())
        .filter(|v| v.len() == 10)
        .unwrap_or_else(|| (0..10).map(|i| i.to_string()).collect());
    Ok(Dataset { images, labels, num_classes: 10, class_names, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::bytes;

    #[test]
    fn column_major_channels_and_one_based_labels() {
        let d = tempfile::tempdir().unwrap();
        let raw = bytes(2 * PIXELS, 3);
        std::fs::write(d.path().join("train_X.bin"), &raw).unwrap();
        std::fs::write(d.path().join("train_y.bin"), [1u8, 10]).unwrap();
        std::fs::write(d.path().join("unlabeled_X.bin"), &raw[..PIXELS]).unwrap();
        let ds = load(d.path(), Split::Train).unwrap();
        assert_eq!(ds.labels, vec![0, 9]);
        // pixel at row y=2, column x=7, channel 1 of image 1
        let (x, y, c) = (7, 2, 1);
        assert_eq!(ds.images[1].data[(y * SIDE + x) * 3 + c], raw[PIXELS + c * SIDE * SIDE + x * SIDE + y]);
        let u = load(d.path(), Split::Unlabeled).unwrap();
        assert_eq!(u.labels, vec![-1]);
    }

    #[test]
    fn truncated_images_and_bad_labels() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("test_X.bin"), bytes(PIXELS + 5, 1)).unwrap();
        std::fs::write(d.path().join("test_y.bin"), [1u8]).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Test).unwrap_err());
        assert!(e.contains("test_X.bin") && e.contains("truncated") && e.contains(&format!("offset {PIXELS}")), "{e}");
        std::fs::write(d.path().join("test_X.bin"), bytes(PIXELS, 1)).unwrap();
        std::fs::write(d.path().join("test_y.bin"), [0u8]).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Test).unwrap_err());
        assert!(e.contains("label 0 at offset 0"), "{e}");
    }
}
