//! Writers of tiny data sets in each on-disk layout, for the tests.
use std::io::Write;
use std::path::Path;

/// Deterministic pseudo-random bytes (no RNG crate needed in fixtures).
pub fn bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn write(path: &Path, data: &[u8], gz: bool) {
    if gz {
        let f = std::fs::File::create(format!("{}.gz", path.display())).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap();
    } else {
        std::fs::write(path, data).unwrap();
    }
}

/// Writes `n` train and `n/2` test images of size h x w; returns the train pixels and labels.
pub fn write_idx_dir(dir: &Path, n: usize, h: usize, w: usize, gz: bool) -> (Vec<Vec<u8>>, Vec<i64>) {
    let mut out = (vec![], vec![]);
    for (prefix, count) in [("train", n), ("t10k", n / 2)] {
        let px = bytes(count * h * w, count as u32);
        let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
        write(&dir.join(format!("{prefix}-images-idx3-ubyte")), &idx_bytes(&[count as u32, h as u32, w as u32], &px), gz);
        write(&dir.join(format!("{prefix}-labels-idx1-ubyte")), &idx_bytes(&[count as u32], &labels), gz);
        if prefix == "train" {
            out = (px.chunks(h * w).map(|c| c.to_vec()).collect(), labels.iter().map(|&l| l as i64).collect());
        }
    }
    out
}
