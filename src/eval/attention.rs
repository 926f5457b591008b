//! ViT attention maps (paper Fig. 4, DINO's visualize_attention.py): the last block's
//! [CLS]-to-patch attention per head, drawn over the image, and the thresholded variant that
//! keeps the smallest set of patches holding a given share of a head's attention mass.
use crate::data::ImageU8;
use crate::models::vit::Vit;
use anyhow::{ensure, Result};
use plotters::style::colors::colormaps::{ColorMap, ViridisRGB};
use tch::Tensor;

/// Per-head attention of [CLS] to every patch for one image `x` (`[1, C, H, W]`, eval mode):
/// `heads` rows of `grid_h * grid_w` values, each row summing to at most 1.
pub fn cls_attention(vit: &Vit, x: &Tensor) -> Result<(Vec<Vec<f32>>, usize, usize)> {
    let (_, _, h, w) = x.size4()?;
    let p = vit.patch_size;
    ensure!(h % p == 0 && w % p == 0, "the image side ({h}x{w}) must be a multiple of the patch size {p}");
    let attn = tch::no_grad(|| vit.last_self_attention(x)); // [1, heads, N, N]
    let heads = attn.size()[1];
    let cls = attn.get(0).select(1, 0).narrow(1, 1, attn.size()[3] - 1).contiguous(); // [heads, patches]
    let n = cls.size()[1] as usize;
    let mut flat = vec![0f32; heads as usize * n];
    cls.to_kind(tch::Kind::Float).copy_data(&mut flat, heads as usize * n);
    Ok((flat.chunks(n).map(|c| c.to_vec()).collect(), (h / p) as usize, (w / p) as usize))
}

/// DINO's thresholded attention: keep the highest-attention patches until they hold `share` of
/// the head's mass (the patch that crosses the threshold is kept).
pub fn threshold_mask(attn: &[f32], share: f32) -> Vec<bool> {
    let total: f32 = attn.iter().sum();
    let mut order: Vec<usize> = (0..attn.len()).collect();
    order.sort_by(|&a, &b| attn[b].total_cmp(&attn[a]));
    let mut keep = vec![false; attn.len()];
    let mut acc = 0.0;
    for i in order {
        if acc >= share * total {
            break;
        }
        keep[i] = true;
        acc += attn[i];
    }
    keep
}

/// `img` (grey or RGB) scaled by the integer `scale` (nearest neighbour) as RGB bytes.
fn upscale_rgb(img: &ImageU8, scale: u32) -> image::RgbImage {
    image::RgbImage::from_fn(img.w * scale, img.h * scale, |x, y| {
        let (sx, sy) = ((x / scale) as usize, (y / scale) as usize);
        let at = (sy * img.w as usize + sx) * img.c as usize;
        if img.c == 1 {
            image::Rgb([img.data[at]; 3])
        } else {
            image::Rgb([img.data[at], img.data[at + 1], img.data[at + 2]])
        }
    })
}

/// The patch value under output pixel (x, y): nearest upsampling, as DINO does.
fn patch_at(x: u32, y: u32, out_w: u32, out_h: u32, grid_w: usize, grid_h: usize) -> usize {
    let gx = (x as usize * grid_w / out_w as usize).min(grid_w - 1);
    let gy = (y as usize * grid_h / out_h as usize).min(grid_h - 1);
    gy * grid_w + gx
}

/// The attention of one head (min-max scaled, viridis) blended half and half over the image.
pub fn overlay(img: &ImageU8, scale: u32, attn: &[f32], grid_h: usize, grid_w: usize) -> image::RgbImage {
    let base = upscale_rgb(img, scale);
    let (lo, hi) = attn.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let span = (hi - lo).max(1e-12);
    let (w, h) = base.dimensions();
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = (attn[patch_at(x, y, w, h, grid_w, grid_h)] - lo) / span;
        let c = ViridisRGB.get_color(v);
        let p = base.get_pixel(x, y).0;
        let blend = |a: u8, b: u8| ((a as u16 + b as u16) / 2) as u8;
        image::Rgb([blend(c.0, p[0]), blend(c.1, p[1]), blend(c.2, p[2])])
    })
}

/// The image with the patches outside `mask` darkened to a quarter.
pub fn masked(img: &ImageU8, scale: u32, mask: &[bool], grid_h: usize, grid_w: usize) -> image::RgbImage {
    let mut base = upscale_rgb(img, scale);
    let (w, h) = base.dimensions();
    for (x, y, px) in base.enumerate_pixels_mut() {
        if !mask[patch_at(x, y, w, h, grid_w, grid_h)] {
            px.0 = px.0.map(|v| v / 4);
        }
    }
    base
}

/// Panels side by side in rows (all panels the same size), with a 4 px white gutter.
pub fn grid(rows: &[Vec<image::RgbImage>]) -> image::RgbImage {
    let (pw, ph) = rows[0][0].dimensions();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(1) as u32;
    let gap = 4;
    let mut out = image::RgbImage::from_pixel(cols * (pw + gap) - gap, rows.len() as u32 * (ph + gap) - gap, image::Rgb([255; 3]));
    for (r, row) in rows.iter().enumerate() {
        for (c, panel) in row.iter().enumerate() {
            image::imageops::replace(&mut out, panel, (c as u32 * (pw + gap)) as i64, (r as u32 * (ph + gap)) as i64);
        }
    }
    out
}

/// PNG bytes of `img`.
pub fn png_bytes(img: &image::RgbImage) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, image::ImageFormat::Png)?;
    Ok(buf.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_keeps_the_smallest_top_set_reaching_the_share() {
        // sorted: 0.4 (idx 2), 0.3 (idx 0), 0.2 (idx 3), 0.1 (idx 1)
        let a = [0.3, 0.1, 0.4, 0.2];
        assert_eq!(threshold_mask(&a, 0.6), vec![true, false, true, false]); // 0.4 + 0.3 = 0.7 >= 0.6
        assert_eq!(threshold_mask(&a, 0.7), vec![true, false, true, false]); // exactly 0.7
        assert_eq!(threshold_mask(&a, 0.75), vec![true, false, true, true]);
        assert_eq!(threshold_mask(&a, 0.3), vec![false, false, true, false]);
        // relative to the mass (rows of attention to patches sum below 1: [CLS] takes a share)
        assert_eq!(threshold_mask(&[0.15, 0.05, 0.2, 0.1], 0.6), vec![true, false, true, false]);
    }

    #[test]
    fn overlay_maps_the_peak_patch_to_viridis_top_and_masks_darken() {
        let img = ImageU8::new(2, 2, 1, vec![0, 0, 0, 0]);
        let out = overlay(&img, 2, &[0.0, 0.0, 0.0, 1.0], 2, 2);
        assert_eq!(out.dimensions(), (4, 4));
        let top = ViridisRGB.get_color(1.0);
        assert_eq!(out.get_pixel(3, 3).0, [top.0 / 2, top.1 / 2, top.2 / 2]);
        let bottom = ViridisRGB.get_color(0.0);
        assert_eq!(out.get_pixel(0, 0).0, [bottom.0 / 2, bottom.1 / 2, bottom.2 / 2]);
        let m = masked(&ImageU8::new(2, 1, 1, vec![200, 200]), 1, &[true, false], 1, 2);
        assert_eq!((m.get_pixel(0, 0).0, m.get_pixel(1, 0).0), ([200; 3], [50; 3]));
    }
}
