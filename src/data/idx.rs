//! MNIST-layout IDX directories (MNIST, Fashion-MNIST, KMNIST): `train-images-idx3-ubyte[.gz]`,
//! `train-labels-idx1-ubyte[.gz]`, `t10k-…`. Format: big-endian magic `00 00 08 ndim`, ndim u32
//! sizes, then unsigned bytes.
use super::{find_file, Dataset, ImageU8, Split};
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// An IDX file's bytes (gunzipped for `.gz`), reading no more than its header announces and one
/// byte beyond, so that a gzip bomb or a file with trailing data stops there.
fn read_idx(path: &Path, ndim: u8) -> Result<Vec<u8>> {
    let file = std::io::BufReader::new(std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?);
    let mut r: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    let gz_err = |e: std::io::Error| anyhow::anyhow!("{}: corrupt or truncated gzip stream ({e})", path.display());
    let header = 4 + 4 * ndim as usize;
    let mut bytes = Vec::with_capacity(header);
    (&mut r).take(header as u64).read_to_end(&mut bytes).map_err(gz_err)?;
    if bytes.len() < header || bytes[..4] != [0, 0, 8, ndim] {
        return Ok(bytes); // parse_idx names what is wrong
    }
    let n = (0..ndim as usize)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as u64)
        .try_fold(1u64, |a, d| a.checked_mul(d))
        .ok_or_else(|| anyhow::anyhow!("{}: header dimensions overflow", path.display()))?;
    if let Some(mem) = crate::util::physical_memory() {
        anyhow::ensure!((n as f64) <= mem, "{}: the header announces {n} bytes, more than this machine's memory", path.display());
    }
    bytes.reserve(n.min(64 << 20) as usize);
    r.take(n.saturating_add(1)).read_to_end(&mut bytes).map_err(gz_err)?;
    Ok(bytes)
}

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
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| anyhow::anyhow!("{p}: header dimensions {dims:?} overflow"))?;
    let have = bytes.len() - header;
    if have < n {
        bail!("{p}: truncated: header says {dims:?} = {n} bytes after the {header}-byte header, the file has {have} (data ends at offset {})", bytes.len());
    }
    if have > n {
        bail!("{p}: unexpected trailing bytes after offset {} (the header says {dims:?})", header + n);
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
    let img_bytes = read_idx(&img_path, 3)?;
    let lbl_bytes = read_idx(&lbl_path, 1)?;
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
    let num_classes = match split {
        Split::Train => class_count(labels, &lbl_path)?,
        _ => test_classes(dir, labels, &lbl_path)?,
    };
    let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let class_names =
        if dir.to_string_lossy().contains("fashion") { FASHION_CLASSES.iter().map(|s| s.to_string()).collect() } else { (0..num_classes).map(|i| i.to_string()).collect() };
    Ok(Dataset { images, labels, num_classes, class_names, ..Default::default() })
}

/// The classes of a training split: 0..=max label (at least 10, as MNIST-layout sets have);
/// labels above 9 must leave no class without an image (a stray label 250 is an error, not 251 classes).
fn class_count(labels: &[u8], path: &Path) -> Result<usize> {
    let Some(&max) = labels.iter().max() else { return Ok(10) };
    let mut seen = [false; 256];
    labels.iter().for_each(|&l| seen[l as usize] = true);
    if max >= 10 {
        if let Some(gap) = (0..max as usize).find(|&k| !seen[k]) {
            let i = labels.iter().position(|&l| l == max).unwrap_or(0);
            bail!("{}: item {i} has label {max}, but no item has label {gap}: IDX labels must number the classes 0..C-1", path.display());
        }
    }
    Ok((max as usize + 1).max(10))
}

/// The classes of a test split are the training split's; a test label beyond them is an error.
fn test_classes(dir: &Path, labels: &[u8], path: &Path) -> Result<usize> {
    let train = find_file(dir, &["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"]);
    let classes = match train {
        Some(t) => class_count(parse_idx(&read_idx(&t, 1)?, &t, 1)?.1, &t)?,
        None => class_count(labels, path)?,
    };
    if let Some(i) = labels.iter().position(|&l| l as usize >= classes) {
        bail!("{}: item {i} has label {}, but the training labels number {classes} classes (0..{})", path.display(), labels[i], classes - 1);
    }
    Ok(classes)
}

const FASHION_CLASSES: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::*;
    use std::io::Write;

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

    #[test]
    fn a_gzip_bomb_stops_at_what_the_header_announces() {
        let d = tempfile::tempdir().unwrap();
        write_idx_dir(d.path(), 7, 5, 4, false);
        // 7 images of 5x4 announced, 256 MiB of zeros delivered in a 256 KiB gzip stream
        let f = std::fs::File::create(d.path().join("train-images-idx3-ubyte.gz")).unwrap();
        std::fs::remove_file(d.path().join("train-images-idx3-ubyte")).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::best());
        e.write_all(&idx_bytes(&[7, 5, 4], &[])).unwrap();
        let zeros = vec![0u8; 1 << 20];
        (0..256).for_each(|_| e.write_all(&zeros).unwrap());
        e.finish().unwrap();
        let before = crate::util::peak_rss_mib().unwrap_or(0.0);
        let err = format!("{:#}", load(d.path(), Split::Train).unwrap_err());
        assert!(err.contains("train-images-idx3-ubyte.gz") && err.contains("trailing bytes after offset 156"), "{err}");
        let after = crate::util::peak_rss_mib().unwrap_or(0.0);
        assert!(after - before < 64.0, "peak RSS grew by {} MiB", after - before);
    }

    #[test]
    fn labels_must_number_the_classes() {
        let d = tempfile::tempdir().unwrap();
        write_idx_dir(d.path(), 12, 2, 2, false);
        // a stray label 250 among 0..9 is an error, not 251 classes
        let mut labels: Vec<u8> = (0..12).map(|i| (i % 10) as u8).collect();
        labels[11] = 250;
        std::fs::write(d.path().join("train-labels-idx1-ubyte"), idx_bytes(&[12], &labels)).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Train).unwrap_err());
        assert!(e.contains("train-labels-idx1-ubyte") && e.contains("item 11 has label 250") && e.contains("label 10"), "{e}");
        // 12 classes without gaps are fine; a test label beyond them is an error
        std::fs::write(d.path().join("train-labels-idx1-ubyte"), idx_bytes(&[12], &(0..12).collect::<Vec<u8>>())).unwrap();
        assert_eq!(load(d.path(), Split::Train).unwrap().num_classes, 12);
        std::fs::write(d.path().join("t10k-labels-idx1-ubyte"), idx_bytes(&[6], &[0, 1, 2, 12, 4, 5])).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Test).unwrap_err());
        assert!(e.contains("t10k-labels-idx1-ubyte") && e.contains("item 3 has label 12") && e.contains("12 classes"), "{e}");
    }
}
