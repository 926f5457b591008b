//! Decoding one image file (JPEG, PNG, BMP, WebP) into 8-bit pixels: grey images stay
//! one-channel, everything else becomes RGB.
use super::ImageU8;
use anyhow::{Context, Result};
use std::fmt::Display;
use std::path::Path;

/// Decodes the file at `path`.
pub fn decode_file(path: &Path) -> Result<ImageU8> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    decode_bytes(&bytes, path.display())
}

/// Decodes an encoded image held in memory; `name` says where it came from in errors.
pub fn decode_bytes(bytes: &[u8], name: impl Display) -> Result<ImageU8> {
    let img = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .with_context(|| format!("{name}: cannot read"))?
        .decode()
        .map_err(|e| anyhow::anyhow!("{name}: not a decodable image ({e})"))?;
    Ok(match img.color().channel_count() {
        1 | 2 => {
            let g = img.into_luma8();
            ImageU8::new(g.width(), g.height(), 1, g.into_raw())
        }
        _ => {
            let c = img.into_rgb8();
            ImageU8::new(c.width(), c.height(), 3, c.into_raw())
        }
    })
}
