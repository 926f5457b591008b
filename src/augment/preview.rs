//! `svib augment preview`: a PNG grid of one image's crops, one row per draw: the source image,
//! then global 1, global 2 and the local crops, each scaled so the recipe can be seen.
use super::{augment_all, image_rng, ops, MultiCropConfig};
use crate::data::ImageU8;
use anyhow::Result;
use fast_image_resize as fir;
use std::path::Path;

/// Draws `rows` samples of every view of `img` and writes the grid to `out`.
pub fn write_grid(img: &ImageU8, cfg: &MultiCropConfig, rows: usize, seed: u64, cell: u32, out: &Path) -> Result<()> {
    let cols = 1 + cfg.views().len();
    let pad = 4u32;
    let (gw, gh) = (cols as u32 * (cell + pad) + pad, rows as u32 * (cell + pad) + pad);
    let mut grid = image::RgbImage::from_pixel(gw, gh, image::Rgb([255, 255, 255]));
    let mut resizer = fir::Resizer::new();
    let mut paste = |im: &ImageU8, r: usize, c: usize, size: u32| {
        let rgb = ops::to_channels(im, 3);
        // nearest-neighbour upscaling keeps the crop's pixels visible; local crops are drawn
        // at their size relative to the global ones
        let (x0, y0) = (pad + c as u32 * (cell + pad), pad + r as u32 * (cell + pad));
        for y in 0..size {
            for x in 0..size {
                let (sx, sy) = (x * rgb.w / size, y * rgb.h / size);
                let i = ((sy * rgb.w + sx) * 3) as usize;
                grid.put_pixel(x0 + x, y0 + y, image::Rgb([rgb.data[i], rgb.data[i + 1], rgb.data[i + 2]]));
            }
        }
    };
    for r in 0..rows {
        let mut rng = image_rng(seed, r as u64, 0);
        paste(img, r, 0, cell);
        for (c, (v, spec)) in augment_all(img, cfg, &mut rng, &mut resizer).iter().zip(cfg.views()).enumerate() {
            let size = (cell as f32 * spec.size as f32 / cfg.global_size as f32).round().max(1.0) as u32;
            paste(v, r, c + 1, size.min(cell));
        }
    }
    let mut png = Vec::new();
    grid.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    crate::util::write_atomic(out, &png)
}
