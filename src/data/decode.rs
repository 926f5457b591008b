//! Decoding one image file (JPEG, PNG, BMP, WebP, TIFF, PPM/PGM) into 8-bit pixels: grey images stay
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

/// Whether a JPEG's marker segments reach its end-of-image marker. The decoders fill the rows of
/// a file cut off mid-scan with grey and report nothing, where PIL (and so torchvision) refuses it
/// as truncated. Walks the segments by their lengths (so an EXIF thumbnail inside APP1 is passed
/// over) and each scan's entropy-coded data to the next marker; bytes after the end marker
/// (Multi-Picture images, a phone's appended video) are not read. A file whose structure is
/// not JPEG's counts as complete: the decoder's own error then says what is wrong.
pub fn jpeg_complete(b: &[u8]) -> bool {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return true;
    }
    let mut i = 2;
    loop {
        if i >= b.len() {
            return false;
        }
        if b[i] != 0xFF {
            return true;
        }
        while i < b.len() && b[i] == 0xFF {
            i += 1; // fill bytes
        }
        let Some(&m) = b.get(i) else { return false };
        i += 1;
        match m {
            0xD9 => return true,
            0x01 | 0xD0..=0xD8 => continue,
            _ => {
                let Some(len) = b.get(i..i + 2).map(|l| u16::from_be_bytes([l[0], l[1]]) as usize) else { return false };
                if len < 2 {
                    return true;
                }
                i += len;
                if m == 0xDA {
                    i = scan_end(b, i);
                }
            }
        }
    }
}

/// Where a scan's entropy-coded data starting at `i` ends: the 0xFF of the next marker (neither
/// a stuffed 0xFF 0x00 nor a restart marker), or the end of `b`.
/// It runs on every decode of a training image, so it jumps from one 0xFF to the next (memchr).
fn scan_end(b: &[u8], mut i: usize) -> usize {
    while let Some(at) = b.get(i..).and_then(|rest| memchr::memchr(0xFF, rest)).map(|off| i + off) {
        match b.get(at + 1) {
            None => break,
            Some(0x00 | 0xD0..=0xD7 | 0xFF) => i = at + 1,
            Some(_) => return at,
        }
    }
    b.len()
}

fn check_complete(bytes: &[u8], name: &dyn Display) -> Result<()> {
    if matches!(image::guess_format(bytes), Ok(image::ImageFormat::Jpeg)) && !jpeg_complete(bytes) {
        anyhow::bail!("{name}: not a decodable image (a JPEG cut off before its end: a truncated download or copy?)");
    }
    Ok(())
}

/// An encoded image's (width, height) from its header, when the header says.
pub fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok()?.into_dimensions().ok()
}

/// Decodes an encoded image held in memory; `name` says where it came from in errors.
pub fn decode_bytes(bytes: &[u8], name: impl Display) -> Result<ImageU8> {
    check_complete(bytes, &name)?;
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
    if r <= 1 || !jpeg_complete(bytes) {
        return None;
    }
    let (sw, sh) = d.scale(w.div_ceil(r) as u16, h.div_ceil(r) as u16).ok()?;
    let px = d.decode().ok()?;
    (px.len() == sw as usize * sh as usize * c as usize).then(|| Decoded { img: std::borrow::Cow::Owned(ImageU8::new(sw as u32, sh as u32, c, px)), full: (w, h) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32, seed: u8) -> Vec<u8> {
        let px: Vec<u8> = (0..w * h * 3).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let mut out = vec![];
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode(&px, w, h, image::ExtendedColorType::Rgb8).unwrap();
        out
    }

    #[test]
    fn a_jpeg_cut_off_is_refused_and_one_with_bytes_after_its_end_is_read() {
        let full = jpeg(64, 48, 0);
        assert_eq!(decode_bytes(&full, "a.jpg").unwrap().w, 64);
        let cut = &full[..full.len() / 2];
        let e = decode_bytes(cut, "a.jpg").unwrap_err().to_string();
        assert!(e.starts_with("a.jpg: ") && e.contains("cut off"), "{e}");
        assert!(jpeg_reduced(&full, &|_, _| 2).is_some() && jpeg_reduced(cut, &|_, _| 2).is_none());
        assert!(decode_bytes_reduced(cut, "a.jpg", &|_, _| 2).is_err());
        // the end marker alone missing is a cut too; bytes after it are not
        assert!(!jpeg_complete(&full[..full.len() - 2]));
        let mut trailing = full.clone();
        trailing.extend_from_slice(b"a phone's video \xFF\xDA\xFF\xD8 after the end");
        trailing.extend(&jpeg(8, 8, 1)[..40]);
        assert!(jpeg_complete(&trailing) && decode_bytes(&trailing, "motion.jpg").unwrap().w == 64);
    }

    #[test]
    fn a_complete_thumbnail_does_not_hide_a_cut_main_image() {
        let main = jpeg(64, 48, 2);
        let thumb = jpeg(8, 8, 3);
        // SOI, an APP1 segment holding a whole JPEG (as EXIF thumbnails do), then the main image cut in half
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(&thumb);
        let mut f = main[..2].to_vec();
        f.extend([0xFF, 0xE1]);
        f.extend(((app1.len() + 2) as u16).to_be_bytes());
        f.extend(&app1);
        f.extend(&main[2..]);
        assert!(jpeg_complete(&f));
        let cut = &f[..f.len() - main.len() / 2];
        assert!(!jpeg_complete(cut));
    }
}
