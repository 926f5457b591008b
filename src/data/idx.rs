//! MNIST-layout IDX directories (MNIST, Fashion-MNIST, KMNIST): `train-images-idx3-ubyte[.gz]`,
//! `train-labels-idx1-ubyte[.gz]`, `t10k-…`. Format: big-endian magic `00 00 08 ndim`, ndim u32
//! sizes, then unsigned bytes.
use super::{find_file, read_maybe_gz, Dataset, ImageU8, Split};
use anyhow::{bail, Result};
use std::path::Path;

/// Parses an IDX unsigned-byte file; returns its dimensions and the payload.
pub(crate) fn parse_idx<'a>(bytes: &'a [u8], path: &Path, want_ndim: u8) -> Result<(Vec<usize>, &'a [u8])> {
    let p = path.display();
    if bytes.len() < 4 {
        bail!("{p}: truncated: {} bytes, an IDX header needs at least 4", bytes.len());
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] != want_ndim {
        bail!(
            "{p}: bad magic {:02x} {:02x} {:02x} {:02x} at offset 0, expected 00 00 08 {:02x} (IDX unsigned bytes, {}-D)",
            bytes[0],
            bytes[1],
            bytes[2],
            bytes[3],
            want_ndim,
            want_ndim
        );
    }
    let header = 4 + 4 * want_ndim as usize;
    if bytes.len() < header {
        bail!("{p}: truncated header: {} bytes, expected {header}", bytes.len());
    }
    let dims: Vec<usize> = (0..want_ndim as usize).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize).collect();
    let n: usize = dims.iter().product();
    let have = bytes.len() - header;
    if have < n {
        bail!("{p}: truncated: header says {dims:?} = {n} bytes after the {header}-byte header, the file has {have} (data ends at offset {})", bytes.len());
    }
    if have > n {
        bail!("{p}: {} unexpected trailing bytes after offset {}", have - n, header + n);
    }
    Ok((dims, &bytes[header..]))
}

pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
        Split::Unlabeled => bail!("{}: IDX data sets have no unlabeled split", dir.display()),
    };
    let img_names = [format!("{prefix}-images-idx3-ubyte"), format!("{prefix}-images.idx3-ubyte")];
    let lbl_names = [format!("{prefix}-labels-idx1-ubyte"), format!("{prefix}-labels.idx1-ubyte")];
    let img_path = find_file(dir, &[&img_names[0], &img_names[1]]).ok_or_else(|| anyhow::anyhow!("{}: no {}[.gz] found", dir.display(), img_names[0]))?;
    let lbl_path = find_file(dir, &[&lbl_names[0], &lbl_names[1]]).ok_or_else(|| anyhow::anyhow!("{}: no {}[.gz] found", dir.display(), lbl_names[0]))?;
    let img_bytes = read_maybe_gz(&img_path)?;
    let lbl_bytes = read_maybe_gz(&lbl_path)?;
    let (dims, pixels) = parse_idx(&img_bytes, &img_path, 3)?;
    let (ldims, labels) = parse_idx(&lbl_bytes, &lbl_path, 1)?;
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    if ldims[0] != n {
        bail!("{}: {} labels, but {} has {n} images", lbl_path.display(), ldims[0], img_path.display());
    }
    if h == 0 || w == 0 {
        bail!("{}: images of size {h}x{w}", img_path.display());
    }
    let images = pixels.chunks_exact(h * w).map(|c| ImageU8::new(w as u32, h as u32, 1, c.to_vec())).collect();
    let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let num_classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1).max(10);
    let class_names =
        if dir.to_string_lossy().contains("fashion") { FASHION_CLASSES.iter().map(|s| s.to_string()).collect() } else { (0..num_classes).map(|i| i.to_string()).collect() };
    Ok(Dataset { images, labels, num_classes, class_names })
}

const FASHION_CLASSES: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::*;

    #[test]
    fn reads_plain_and_gzip_and_matches_written_pixels() {
        for gz in [false, true] {
            let d = tempfile::tempdir().unwrap();
            let (imgs, labels) = write_idx_dir(d.path(), 7, 5, 4, gz);
            let ds = load(d.path(), Split::Train).unwrap();
            assert_eq!(ds.len(), 7);
            assert_eq!(ds.images[3].data, imgs[3]);
            assert_eq!((ds.images[0].w, ds.images[0].h, ds.images[0].c), (4, 5, 1));
            assert_eq!(ds.labels, labels);
            let t = load(d.path(), Split::Test).unwrap();
            assert_eq!(t.len(), 3);
        }
    }

    #[test]
    fn truncated_images_name_file_and_sizes() {
        let d = tempfile::tempdir().unwrap();
        write_idx_dir(d.path(), 7, 5, 4, false);
        let p = d.path().join("train-images-idx3-ubyte");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 10]).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Train).unwrap_err());
        assert!(e.contains("train-images-idx3-ubyte") && e.contains("truncated") && e.contains("140"), "{e}");
    }

    #[test]
    fn truncated_gzip_and_bad_magic_are_errors() {
        let d = tempfile::tempdir().unwrap();
        write_idx_dir(d.path(), 7, 5, 4, true);
        let p = d.path().join("train-labels-idx1-ubyte.gz");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() / 2]).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Train).unwrap_err());
        assert!(e.contains("train-labels-idx1-ubyte.gz") && e.contains("gzip"), "{e}");

        let d = tempfile::tempdir().unwrap();
        write_idx_dir(d.path(), 7, 5, 4, false);
        let p = d.path().join("t10k-images-idx3-ubyte");
        let mut b = std::fs::read(&p).unwrap();
        b[3] = 1;
        std::fs::write(&p, &b).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Test).unwrap_err());
        assert!(e.contains("bad magic") && e.contains("offset 0"), "{e}");
    }

    #[test]
    fn label_count_mismatch_and_missing_file() {
        let d = tempfile::tempdir().unwrap();
        write_idx_dir(d.path(), 7, 5, 4, false);
        std::fs::write(d.path().join("train-labels-idx1-ubyte"), idx_bytes(&[6], &[0; 6])).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Train).unwrap_err());
        assert!(e.contains("6 labels") && e.contains("7 images"), "{e}");
        std::fs::remove_file(d.path().join("t10k-labels-idx1-ubyte")).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Test).unwrap_err());
        assert!(e.contains("no t10k-labels-idx1-ubyte"), "{e}");
    }
}
