//! Decoding one image file (JPEG, PNG, BMP, WebP) into 8-bit pixels: grey images stay
//! one-channel, everything else becomes RGB. Large JPEGs can be decoded at 1/2, 1/4 or 1/8 of
//! their size (the DCT scaling libjpeg offers, here through `jpeg-decoder`) when the caller's
//! crops need no more pixels: fewer pixels to decode and to resample (docs/PERFORMANCE.md).
use super::ImageU8;
use anyhow::{Context, Result};
use std::fmt::Display;
use std::path::Path;

/// Decodes the file at `path`.
pub fn decode_file(path: &Path) -> Result<ImageU8> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    decode_bytes(&bytes, path.display())
}

/// Largest image side decoded.
const MAX_SIDE: u32 = 16384;
/// Largest decoded image in bytes: a few decoders at once stay within a few hundred MiB each
/// (the image crate's default is 512 MiB; a 20000 x 20000 PNG of 400 kB fits that).
const MAX_DECODED: u64 = 256 << 20;

fn decode_limits() -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(MAX_SIDE);
    l.max_image_height = Some(MAX_SIDE);
    l.max_alloc = Some(MAX_DECODED);
    l
}

/// Decodes an encoded image held in memory; `name` says where it came from in errors.
pub fn decode_bytes(bytes: &[u8], name: impl Display) -> Result<ImageU8> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().with_context(|| format!("{name}: cannot read"))?;
    reader.limits(decode_limits());
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => anyhow::anyhow!("{name}: too large to decode (expected at most {MAX_SIDE} px a side and {} MiB of pixels)", MAX_DECODED >> 20),
        e => anyhow::anyhow!("{name}: not a decodable image ({e})"),
    })?;
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

/// An image as decoded, possibly reduced, with the size of the full image: crops are chosen in
/// full-image coordinates and mapped onto `img`.
pub struct Decoded<'a> {
    pub img: std::borrow::Cow<'a, ImageU8>,
    pub full: (u32, u32),
}

/// [`decode_bytes`], except that a JPEG of (width, height) for which `reduce` returns r > 1 is
/// decoded at about 1/r of its size (r in 2, 4, 8; other images, and JPEGs that jpeg-decoder
/// cannot reduce, are decoded in full).
pub fn decode_bytes_reduced(bytes: &[u8], name: impl Display, reduce: &dyn Fn(u32, u32) -> u32) -> Result<Decoded<'static>> {
    if let Some(d) = jpeg_reduced(bytes, reduce) {
        return Ok(d);
    }
    let img = decode_bytes(bytes, name)?;
    Ok(Decoded { full: (img.w, img.h), img: std::borrow::Cow::Owned(img) })
}

/// The reduced decode, or None where it does not apply (not a JPEG, r = 1, CMYK or 16-bit, or
/// an error, which the full decoder then reports).
fn jpeg_reduced(bytes: &[u8], reduce: &dyn Fn(u32, u32) -> u32) -> Option<Decoded<'static>> {
    use jpeg_decoder::PixelFormat;
    if !matches!(image::guess_format(bytes), Ok(image::ImageFormat::Jpeg)) {
        return None;
    }
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.read_info().ok()?;
    let info = d.info()?;
    let (w, h) = (info.width as u32, info.height as u32);
    let r = reduce(w, h);
    let c = match info.pixel_format {
        PixelFormat::L8 => 1,
        PixelFormat::RGB24 => 3,
        _ => return None,
    };
    if r <= 1 {
        return None;
    }
    let (sw, sh) = d.scale(w.div_ceil(r) as u16, h.div_ceil(r) as u16).ok()?;
    let px = d.decode().ok()?;
    (px.len() == sw as usize * sh as usize * c as usize).then(|| Decoded { img: std::borrow::Cow::Owned(ImageU8::new(sw as u32, sh as u32, c, px)), full: (w, h) })
}
