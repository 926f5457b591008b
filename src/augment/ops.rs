//! The per-view image operations of DINO/BYOL augmentation, on 8-bit HWC images with the
//! semantics of torchvision's PIL path (PIL's integer grey conversion, blend truncation, HSV).
use crate::data::ImageU8;
use fast_image_resize as fir;
use rand::Rng;

/// torchvision `RandomResizedCrop.get_params`: returns (top, left, height, width).
pub fn rrc_params<R: Rng>(h: u32, w: u32, scale: [f32; 2], ratio: [f32; 2], rng: &mut R) -> (u32, u32, u32, u32) {
    let area = (h * w) as f64;
    let (lr0, lr1) = ((ratio[0] as f64).ln(), (ratio[1] as f64).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale[0] as f64..=scale[1] as f64);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let cw = (target * aspect).sqrt().round() as u32;
        let ch = (target / aspect).sqrt().round() as u32;
        if cw > 0 && cw <= w && ch > 0 && ch <= h {
            let top = rng.random_range(0..=h - ch);
            let left = rng.random_range(0..=w - cw);
            return (top, left, ch, cw);
        }
    }
    // Fallback: central crop with the ratio clamped into range.
    let in_ratio = w as f32 / h as f32;
    let (ch, cw) = if in_ratio < ratio[0] {
        (((w as f32 / ratio[0]).round() as u32).clamp(1, h), w)
    } else if in_ratio > ratio[1] {
        (h, ((h as f32 * ratio[1]).round() as u32).clamp(1, w))
    } else {
        (h, w)
    };
    ((h - ch) / 2, (w - cw) / 2, ch, cw)
}

fn pixel_type(c: u8) -> fir::PixelType {
    if c == 1 {
        fir::PixelType::U8
    } else {
        fir::PixelType::U8x3
    }
}

/// Crops (top, left, h, w) and resizes to `out_w` x `out_h` with antialiased bicubic
/// (Catmull-Rom, a = -0.5: PIL's BICUBIC).
pub fn crop_resize(img: &ImageU8, crop: (u32, u32, u32, u32), out_w: u32, out_h: u32, resizer: &mut fir::Resizer) -> ImageU8 {
    let (top, left, ch, cw) = crop;
    crop_resize_f(img, [top as f64, left as f64, ch as f64, cw as f64], out_w, out_h, resizer)
}

/// [`crop_resize`] of a crop box (top, left, height, width) in fractional pixels, kept inside the image.
pub fn crop_resize_f(img: &ImageU8, crop: [f64; 4], out_w: u32, out_h: u32, resizer: &mut fir::Resizer) -> ImageU8 {
    let [top, left, ch, cw] = crop;
    let (ch, cw) = (ch.min(img.h as f64 - top), cw.min(img.w as f64 - left));
    let src = fir::images::ImageRef::new(img.w, img.h, &img.data, pixel_type(img.c)).expect("image buffer matches its size");
    let mut dst = fir::images::Image::new(out_w, out_h, pixel_type(img.c));
    let opts = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom)).crop(left, top, cw, ch);
    resizer.resize(&src, &mut dst, &opts).expect("crop inside the image");
    ImageU8::new(out_w, out_h, img.c, dst.into_vec())
}

/// torchvision's `RandomAffine` with no scale or shear, given its draw, on a uint8 tensor:
/// `F.affine(img, angle, [tx, ty], 1, [0, 0], BILINEAR, fill=[0] * C)`. Rotates by `angle_deg`
/// clockwise (as `F.affine`; `F.rotate` turns the other way) about the image centre, then shifts
/// by (`tx`, `ty`) pixels; bilinear sampling with zeros outside the image, rounded. As
/// torchvision does with a fill, the result is also multiplied by the share of the sample that
/// fell inside the image, which darkens the pixels along a rotated border a second time.
/// (imageproc's warp rounds down twice per pixel, hence this short loop.)
pub fn affine(img: &ImageU8, angle_deg: f32, tx: f32, ty: f32) -> ImageU8 {
    let (w, h, c) = (img.w as i64, img.h as i64, img.c as usize);
    let (cx, cy) = ((w - 1) as f64 / 2.0, (h - 1) as f64 / 2.0);
    let (sin, cos) = (-angle_deg as f64).to_radians().sin_cos();
    let inside = |x: i64, y: i64| x >= 0 && y >= 0 && x < w && y < h;
    let mut out = vec![0u8; img.data.len()];
    for y in 0..h {
        for x in 0..w {
            // the inverse map: undo the shift, then rotate back about the centre
            let (dx, dy) = (x as f64 - cx - tx as f64, y as f64 - cy - ty as f64);
            let (sx, sy) = (cos * dx - sin * dy + cx, sin * dx + cos * dy + cy);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            // the four neighbours with their bilinear weights; those outside the image count 0
            let corners = [(x0, y0, (1.0 - fx) * (1.0 - fy)), (x0 + 1, y0, fx * (1.0 - fy)), (x0, y0 + 1, (1.0 - fx) * fy), (x0 + 1, y0 + 1, fx * fy)];
            let corners = corners.map(|(x, y, wt)| if inside(x, y) { (((y * w + x) as usize * c), wt) } else { (0, 0.0) });
            let mask: f64 = corners.iter().map(|(_, wt)| wt).sum();
            for k in 0..c {
                let v: f64 = corners.iter().map(|&(i, wt)| wt * img.data[i + k] as f64).sum();
                out[(y * w + x) as usize * c + k] = (v * mask).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    ImageU8::new(img.w, img.h, img.c, out)
}

pub fn hflip(img: &mut ImageU8) {
    let (w, c) = (img.w as usize, img.c as usize);
    for row in img.data.chunks_exact_mut(w * c) {
        for x in 0..w / 2 {
            for k in 0..c {
                row.swap(x * c + k, (w - 1 - x) * c + k);
            }
        }
    }
}

/// PIL's RGB -> L: (R*19595 + G*38470 + B*7471 + 0x8000) >> 16.
#[inline]
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((r as u32 * 19595 + g as u32 * 38470 + b as u32 * 7471 + 0x8000) >> 16) as u8
}

/// PIL's Image.blend(degenerate, img, factor), truncating like its C code.
#[inline]
fn blend(degenerate: u8, v: u8, factor: f32) -> u8 {
    let t = degenerate as f32 + factor * (v as f32 - degenerate as f32);
    if t <= 0.0 {
        0
    } else if t >= 255.0 {
        255
    } else {
        t as u8
    }
}

pub fn adjust_brightness(img: &mut ImageU8, f: f32) {
    img.data.iter_mut().for_each(|v| *v = blend(0, *v, f));
}

pub fn adjust_contrast(img: &mut ImageU8, f: f32) {
    let sum: u64 = if img.c == 1 { img.data.iter().map(|&v| v as u64).sum() } else { img.data.chunks_exact(3).map(|p| luma(p[0], p[1], p[2]) as u64).sum() };
    let mean = ((sum as f64 / (img.w * img.h) as f64) + 0.5) as u8;
    img.data.iter_mut().for_each(|v| *v = blend(mean, *v, f));
}

pub fn adjust_saturation(img: &mut ImageU8, f: f32) {
    if img.c != 3 {
        return;
    }
    for p in img.data.chunks_exact_mut(3) {
        let l = luma(p[0], p[1], p[2]);
        p.iter_mut().for_each(|v| *v = blend(l, *v, f));
    }
}

/// PIL's rgb2hsv (all channels in 0..=255).
fn rgb_to_hsv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (maxc, minc) = (r.max(g).max(b), r.min(g).min(b));
    if maxc == minc {
        return (0, 0, maxc);
    }
    let (rf, gf, bf, mx) = (r as f32, g as f32, b as f32, maxc as f32);
    let cr = mx - minc as f32;
    let s = cr / mx;
    let (rc, gc, bc) = ((mx - rf) / cr, (mx - gf) / cr, (mx - bf) / cr);
    let h = if r == maxc {
        bc - gc
    } else if g == maxc {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    let h = (h / 6.0 + 1.0).rem_euclid(1.0);
    (((h * 255.0) as i32).clamp(0, 255) as u8, ((s * 255.0) as i32).clamp(0, 255) as u8, maxc)
}

/// PIL's hsv2rgb.
fn hsv_to_rgb(h: u8, s: u8, v: u8) -> (u8, u8, u8) {
    if s == 0 {
        return (v, v, v);
    }
    let hf = h as f32 * 6.0 / 255.0;
    let sf = s as f32 / 255.0;
    let vf = v as f32;
    let i = hf.floor();
    let f = hf - i;
    let c = |x: f32| (x.round() as i32).clamp(0, 255) as u8;
    let (p, q, t) = (c(vf * (1.0 - sf)), c(vf * (1.0 - sf * f)), c(vf * (1.0 - sf * (1.0 - f))));
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// torchvision adjust_hue on PIL: shift H (uint8, wrapping) by hue*255; grey images unchanged.
pub fn adjust_hue(img: &mut ImageU8, hue: f32) {
    if img.c != 3 {
        return;
    }
    let shift = (hue * 255.0) as i32 as u8;
    for p in img.data.chunks_exact_mut(3) {
        let (h, s, v) = rgb_to_hsv(p[0], p[1], p[2]);
        let (r, g, b) = hsv_to_rgb(h.wrapping_add(shift), s, v);
        p.copy_from_slice(&[r, g, b]);
    }
}

/// Grey with the same number of channels (torchvision RandomGrayscale on RGB).
pub fn grayscale(img: &mut ImageU8) {
    if img.c != 3 {
        return;
    }
    for p in img.data.chunks_exact_mut(3) {
        let l = luma(p[0], p[1], p[2]);
        p.copy_from_slice(&[l, l, l]);
    }
}

/// Gaussian blur with standard deviation `sigma` pixels (PIL's GaussianBlur radius), separable,
/// kernel truncated at 3 sigma, edges extended.
pub fn gaussian_blur(img: &mut ImageU8, sigma: f32) {
    let r = (3.0 * sigma).ceil().max(1.0) as i64;
    let mut k: Vec<f32> = (-r..=r).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let s: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    let (w, h, c) = (img.w as i64, img.h as i64, img.c as i64);
    let src: Vec<f32> = img.data.iter().map(|&v| v as f32).collect();
    let mut tmp = vec![0f32; src.len()];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let mut acc = 0.0;
                for (j, kv) in k.iter().enumerate() {
                    let xx = (x + j as i64 - r).clamp(0, w - 1);
                    acc += kv * src[((y * w + xx) * c + ch) as usize];
                }
                tmp[((y * w + x) * c + ch) as usize] = acc;
            }
        }
    }
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let mut acc = 0.0;
                for (j, kv) in k.iter().enumerate() {
                    let yy = (y + j as i64 - r).clamp(0, h - 1);
                    acc += kv * tmp[((yy * w + x) * c + ch) as usize];
                }
                img.data[((y * w + x) * c + ch) as usize] = acc.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
}

/// PIL ImageOps.solarize(threshold=128): values >= 128 are inverted.
pub fn solarize(img: &mut ImageU8) {
    img.data.iter_mut().for_each(|v| {
        if *v >= 128 {
            *v = 255 - *v
        }
    });
}

/// Converts between 1 and 3 channels (grey replicated; RGB to PIL's L).
pub fn to_channels(img: &ImageU8, c: u8) -> ImageU8 {
    match (img.c, c) {
        (a, b) if a == b => img.clone(),
        (1, 3) => ImageU8::new(img.w, img.h, 3, img.data.iter().flat_map(|&v| [v, v, v]).collect()),
        (3, 1) => ImageU8::new(img.w, img.h, 1, img.data.chunks_exact(3).map(|p| luma(p[0], p[1], p[2])).collect()),
        (a, b) => panic!("unsupported channel conversion {a} -> {b}"),
    }
}

/// Scales to [0, 1], normalises per channel, writes CHW into `out` (len c*h*w).
pub fn normalize_into(img: &ImageU8, mean: &[f32], std: &[f32], out: &mut [f32]) {
    let (hw, c) = ((img.w * img.h) as usize, img.c as usize);
    debug_assert_eq!(out.len(), hw * c);
    for ch in 0..c {
        let (m, s) = (mean[ch], 1.0 / std[ch]);
        let plane = &mut out[ch * hw..(ch + 1) * hw];
        for (i, o) in plane.iter_mut().enumerate() {
            *o = (img.data[i * c + ch] as f32 / 255.0 - m) * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> ImageU8 {
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&f(x, y));
            }
        }
        ImageU8::new(w, h, 3, v)
    }

    #[test]
    fn rrc_params_respect_bounds_and_scale() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..2000 {
            let (t, l, h, w) = rrc_params(40, 60, [0.2, 0.6], [0.75, 4.0 / 3.0], &mut rng);
            assert!(t + h <= 40 && l + w <= 60 && h > 0 && w > 0);
            let frac = (h * w) as f32 / 2400.0;
            // rounding of sides lets the area stray a little outside the scale range
            assert!((0.17..=0.65).contains(&frac), "{frac}");
        }
        // impossible scale forces the fallback: whole image with clamped ratio
        assert_eq!(rrc_params(10, 40, [2.0, 3.0], [0.75, 4.0 / 3.0], &mut rng), (0, 13, 10, 13));
    }

    #[test]
    fn flip_reverses_rows() {
        let mut img = rgb(3, 2, |x, y| [x as u8, y as u8, 9]);
        hflip(&mut img);
        assert_eq!(&img.data[0..9], &[2, 0, 9, 1, 0, 9, 0, 0, 9]);
    }

    #[test]
    fn blend_ops_match_pil_formulas() {
        let mut img = rgb(1, 2, |_, y| if y == 0 { [100, 200, 50] } else { [0, 10, 250] });
        adjust_brightness(&mut img, 1.3);
        assert_eq!(img.data, vec![130, 255, 65, 0, 13, 255]);
        // contrast: L of (130,255,65) = 0.299*130+0.587*255+0.114*65 = 195.0.. ; L of (0,13,255)= 36.7..
        let l0 = luma(130, 255, 65) as f32;
        let l1 = luma(0, 13, 255) as f32;
        let mean = ((l0 + l1) / 2.0 + 0.5) as u8 as f32;
        let mut c = img.clone();
        adjust_contrast(&mut c, 0.5);
        assert_eq!(c.data[0], (mean + 0.5 * (130.0 - mean)) as u8);
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(10, 10, 10), 10);
        let mut s = img.clone();
        adjust_saturation(&mut s, 0.0);
        assert!(s.data.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    }

    #[test]
    fn hue_roundtrip_and_shift() {
        // zero shift keeps colours within PIL's HSV rounding
        let mut img = rgb(4, 1, |x, _| [(x * 60) as u8, 200 - (x * 30) as u8, 90]);
        let orig = img.clone();
        adjust_hue(&mut img, 0.0);
        for (a, b) in img.data.iter().zip(&orig.data) {
            assert!((*a as i32 - *b as i32).abs() <= 2, "{a} {b}");
        }
        // pure red shifted by a third of the circle becomes green
        let mut red = rgb(1, 1, |_, _| [255, 0, 0]);
        adjust_hue(&mut red, 1.0 / 3.0);
        assert!(red.data[1] > 240 && red.data[0] < 15 && red.data[2] < 15, "{:?}", red.data);
    }

    #[test]
    fn blur_preserves_constant_and_smooths_impulse() {
        let mut flat = rgb(9, 9, |_, _| [70, 70, 70]);
        gaussian_blur(&mut flat, 1.5);
        assert!(flat.data.iter().all(|&v| v == 70));
        let mut imp = ImageU8::new(9, 9, 1, (0..81).map(|i| if i == 40 { 255 } else { 0 }).collect());
        gaussian_blur(&mut imp, 1.0);
        let k0 = 1.0f32;
        let k1 = (-0.5f32).exp();
        let norm: f32 = (-3..=3).map(|i: i32| (-(i * i) as f32 / 2.0).exp()).sum();
        assert_eq!(imp.data[40], (255.0 * k0 * k0 / norm / norm).round() as u8);
        assert_eq!(imp.data[41], (255.0 * k1 * k0 / norm / norm).round() as u8);
    }

    #[test]
    fn solarize_threshold_is_128() {
        let mut img = ImageU8::new(4, 1, 1, vec![0, 127, 128, 255]);
        solarize(&mut img);
        assert_eq!(img.data, vec![0, 127, 127, 0]);
    }

    #[test]
    fn resize_keeps_constant_and_size() {
        let img = rgb(20, 10, |_, _| [10, 20, 30]);
        let mut r = fir::Resizer::new();
        let out = crop_resize(&img, (2, 3, 5, 7), 16, 16, &mut r);
        assert_eq!((out.w, out.h, out.data.len()), (16, 16, 768));
        assert!(out.data.chunks(3).all(|p| p == [10, 20, 30]));
    }
}
