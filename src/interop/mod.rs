//! Weights out of svib: the evaluated backbone with torchvision (ResNet) / timm (ViT) parameter
//! names, as safetensors, or renamed to Detectron2's ResNet layout (what its
//! `tools/convert-torchvision-to-d2.py` does).
pub mod pth;

use anyhow::{bail, Result};
use std::path::Path;
use tch::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// torchvision / timm names (load_state_dict(strict=True) into resnet50() / vit_small_patch16_224()).
    Torchvision,
    /// Detectron2 names: stem.conv1, res2..res5, convN.norm, shortcut.
    Detectron2,
}

/// Detectron2's renaming of a torchvision ResNet key.
pub fn detectron2_key(k: &str) -> String {
    let mut k = if k.contains("layer") { k.to_string() } else { format!("stem.{k}") };
    for t in 1..=4 {
        k = k.replace(&format!("layer{t}"), &format!("res{}", t + 1));
    }
    for t in 1..=3 {
        k = k.replace(&format!("bn{t}"), &format!("conv{t}.norm"));
    }
    k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
}

/// Named tensors of a backbone in `layout`, sorted by name. svib keeps no BatchNorm
/// `num_batches_tracked`; ResNet exports carry it as 0 so that every key torchvision's module has
/// (except the classifier `fc`, replaced by `nn.Identity()` as DINO does) is present.
pub fn export_tensors(named: Vec<(String, Tensor)>, layout: Layout, is_vit: bool) -> Result<Vec<(String, Tensor)>> {
    let mut out: Vec<(String, Tensor)> = named.into_iter().map(|(k, t)| (k, t.detach().to_device(tch::Device::Cpu).contiguous())).collect();
    if !is_vit {
        let bns: Vec<String> = out.iter().filter_map(|(k, _)| k.strip_suffix(".running_var").map(|p| format!("{p}.num_batches_tracked"))).collect();
        out.extend(bns.into_iter().map(|k| (k, Tensor::from(0i64))));
    }
    if layout == Layout::Detectron2 {
        if is_vit {
            bail!("--layout detectron2: Detectron2's conversion is for ResNets; this backbone is a ViT");
        }
        out = out.into_iter().filter(|(k, _)| !k.ends_with("num_batches_tracked")).map(|(k, t)| (detectron2_key(&k), t)).collect();
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Writes safetensors atomically; a failed write says why in words (a full disk, no permission).
pub fn write_safetensors(named: &[(String, Tensor)], path: &Path) -> Result<()> {
    crate::util::write_atomic_with(path, |tmp| Tensor::write_safetensors(named, tmp).map_err(write_problem))
}

fn write_problem(e: tch::TchError) -> anyhow::Error {
    match e {
        tch::TchError::SafeTensorError { err: safetensors::SafeTensorError::IoError(io), .. } | tch::TchError::Io(io) => io.into(),
        e => anyhow::anyhow!("{e}"),
    }
}

/// Reads a safetensors file; the error names `path` and says in words what is wrong with it.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), safetensors_problem(&e)))
}

/// What a safetensors reading error means for the user's file.
fn safetensors_problem(e: &tch::TchError) -> String {
    use safetensors::SafeTensorError as E;
    let tch::TchError::SafeTensorError { err, .. } = e else { return format!("not a readable safetensors file ({e})") };
    let what = match err {
        E::HeaderTooSmall | E::InvalidHeaderLength => "shorter than its header says (empty or cut off)".to_string(),
        E::HeaderTooLarge => "its first 8 bytes announce a header over 100 MB".to_string(),
        E::InvalidHeader | E::InvalidHeaderStart | E::InvalidHeaderDeserialization | E::JsonError(_) => "its header is not safetensors' JSON".to_string(),
        E::MetadataIncompleteBuffer => "the header's tensors do not cover the file exactly (cut off, or bytes appended)".to_string(),
        E::TensorInvalidInfo | E::InvalidOffset(_) | E::ValidationOverflow | E::InvalidTensorView(..) => "a tensor's shape, type and offsets disagree".to_string(),
        E::TensorNotFound(n) => format!("no tensor `{n}`"),
        E::IoError(io) => format!("cannot read ({io})"),
    };
    format!("not a readable safetensors file: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detectron2_names_match_its_conversion_script() {
        for (tv, d2) in [
            ("conv1.weight", "stem.conv1.weight"),
            ("bn1.running_mean", "stem.conv1.norm.running_mean"),
            ("layer1.0.conv2.weight", "res2.0.conv2.weight"),
            ("layer1.0.bn3.bias", "res2.0.conv3.norm.bias"),
            ("layer4.2.bn1.weight", "res5.2.conv1.norm.weight"),
            ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
            ("layer2.0.downsample.1.running_var", "res3.0.shortcut.norm.running_var"),
        ] {
            assert_eq!(detectron2_key(tv), d2);
        }
    }
}

/// Writes a 2-D f32 array as NumPy's `.npy` (format 1.0, little-endian, C order), atomically.
pub fn write_npy(data: &[f32], rows: usize, cols: usize, path: &Path) -> Result<()> {
    anyhow::ensure!(data.len() == rows * cols, "write_npy: {} values for a {rows} x {cols} array", data.len());
    let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    crate::util::write_atomic(path, &npy_bytes("<f4", &format!("({rows}, {cols})"), &body))
}

/// Writes class labels as a 1-D int64 `.npy` (what `np.save(path, labels)` gives), atomically.
pub fn write_npy_labels(labels: &[i64], path: &Path) -> Result<()> {
    let body: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    crate::util::write_atomic(path, &npy_bytes("<i8", &format!("({},)", labels.len()), &body))
}

/// A `.npy` file: magic, version 1.0, the header padded to a multiple of 64 bytes, the data.
fn npy_bytes(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + body.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(body);
    bytes
}

#[cfg(test)]
mod npy_tests {
    #[test]
    fn npy_header_and_data_follow_the_format() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.npy");
        super::write_npy(&[1.0, -2.5, 3.0, 0.25, 5.0, 6.0], 2, 3, &p).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }") && header.ends_with('\n'));
        let vals: Vec<f32> = b[10 + hl..].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(vals, vec![1.0, -2.5, 3.0, 0.25, 5.0, 6.0]);
    }

    /// Labels as NumPy 2.x's `np.save(p, np.array([3, -1, 0], dtype=np.int64))` writes them: the
    /// same dtype, shape and data bytes (NumPy pads its header further, to 128 bytes here).
    #[test]
    fn npy_labels_are_a_1d_int64_array() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("y.npy");
        super::write_npy_labels(&[3, -1, 0], &p).unwrap();
        let b = std::fs::read(&p).unwrap();
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(header.starts_with("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }"), "{header}");
        let numpy_data = b"\x03\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00";
        assert_eq!(&b[10 + hl..], numpy_data);
    }
}
