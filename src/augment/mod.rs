//! Multi-crop augmentation (SPEC §4): 2 global + L local views per image, each with DINO's
//! per-view recipe. Deterministic per (seed, epoch, image index), so results do not depend on the
//! number of threads.
pub mod loader;
pub mod ops;
pub mod preview;

use crate::data::{Dataset, ImageU8, Norm};
use fast_image_resize as fir;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The multi-crop recipe. Defaults are DINO's ViT recipe (SPEC §4) for 224 px images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiCropConfig {
    pub global_size: u32,
    pub local_size: u32,
    pub global_scale: [f32; 2],
    pub local_scale: [f32; 2],
    pub local_crops: usize,
    pub ratio: [f32; 2],
    /// Output channels: 3 (grey sources replicated) or 1 (RGB sources converted to grey); in a
    /// run's config, 0 takes the data's (1 for a grey set, 3 for a colour one).
    pub channels: u8,
    pub flip_p: f32,
    /// Random rotation of every view by up to this many degrees either way (torchvision's
    /// `RandomAffine(degrees)`, bilinear, fill 0); 0 turns it off.
    pub rotate: f32,
    /// Random shift of every view by up to this fraction of its side on each axis (torchvision's
    /// `RandomAffine(translate=(t, t))`); 0 turns it off.
    pub translate: f32,
    pub jitter_p: f32,
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
    pub grayscale_p: f32,
    /// Blur probability for global view 1, global view 2, local views.
    pub blur_p: [f32; 3],
    pub blur_radius: [f32; 2],
    /// Solarisation probability for global view 1, global view 2, local views.
    pub solarize_p: [f32; 3],
    /// Decode large JPEGs at 1/2, 1/4 or 1/8 of their size when every crop still has at least
    /// its output size in pixels ([`MultiCropConfig::decode_reduction`]); images of ImageNet's
    /// size are never reduced by DINO's recipe.
    pub reduced_decode: bool,
}

impl Default for MultiCropConfig {
    fn default() -> Self {
        MultiCropConfig {
            global_size: 224,
            local_size: 96,
            global_scale: [0.4, 1.0],
            local_scale: [0.05, 0.4],
            local_crops: 10,
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            channels: 3,
            flip_p: 0.5,
            rotate: 0.0,
            translate: 0.0,
            jitter_p: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.2,
            hue: 0.1,
            grayscale_p: 0.2,
            blur_p: [1.0, 0.1, 0.5],
            blur_radius: [0.1, 2.0],
            solarize_p: [0.0, 0.2, 0.0],
            reduced_decode: true,
        }
    }
}

/// The recipe of one view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewSpec {
    pub size: u32,
    pub scale: [f32; 2],
    pub blur_p: f32,
    pub solarize_p: f32,
}

impl MultiCropConfig {
    /// DINO's recipe scaled to images of side `side` (global crops at the native size for small
    /// images, local crops at 96/224 of that).
    pub fn for_image_side(side: u32) -> Self {
        let mut c = MultiCropConfig::default();
        if side < 224 {
            c.global_size = side;
            c.local_size = ((side as f32 * 96.0 / 224.0).round() as u32).max(8);
        }
        c
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        use crate::util::Num;
        use anyhow::ensure;
        let unit = |p: f32| (0.0..=1.0).contains(&p);
        for (k, v) in [("global_size", self.global_size), ("local_size", self.local_size)] {
            ensure!((4..=4096).contains(&v), "augment.{k}: expected 4 to 4096 pixels, got {v}");
        }
        ensure!(self.local_crops <= 64, "augment.local_crops: expected 0 to 64, got {}", self.local_crops);
        for (k, s) in [("global_scale", self.global_scale), ("local_scale", self.local_scale)] {
            ensure!(s[0] > 0.0 && s[0] <= s[1] && s[1] <= 1.0, "augment.{k}: expected 0 < min <= max <= 1, got {s:?}");
        }
        ensure!(self.ratio[0] > 0.0 && self.ratio[0] <= self.ratio[1] && self.ratio[1] <= 100.0, "augment.ratio: expected 0 < min <= max <= 100, got {:?}", self.ratio);
        ensure!(self.channels == 1 || self.channels == 3, "augment.channels: expected 1 or 3, got {}", self.channels);
        for (k, p) in [("flip_p", self.flip_p), ("jitter_p", self.jitter_p), ("grayscale_p", self.grayscale_p)] {
            ensure!(unit(p), "augment.{k}: expected a probability in [0, 1], got {}", Num(p));
        }
        for (k, ps) in [("blur_p", self.blur_p), ("solarize_p", self.solarize_p)] {
            ensure!(ps.iter().all(|&p| unit(p)), "augment.{k}: expected probabilities in [0, 1], got {ps:?}");
        }
        for (k, v) in [("brightness", self.brightness), ("contrast", self.contrast), ("saturation", self.saturation)] {
            ensure!((0.0..=10.0).contains(&v), "augment.{k}: expected a value in [0, 10], got {}", Num(v));
        }
        ensure!((0.0..=180.0).contains(&self.rotate), "augment.rotate: expected 0 to 180 degrees, got {}", Num(self.rotate));
        ensure!((0.0..=0.5).contains(&self.translate), "augment.translate: expected a fraction of the side in [0, 0.5], got {}", Num(self.translate));
        ensure!((0.0..=0.5).contains(&self.hue), "augment.hue: expected a value in [0, 0.5], got {}", Num(self.hue));
        ensure!(
            self.blur_radius[0] > 0.0 && self.blur_radius[0] <= self.blur_radius[1] && self.blur_radius[1] <= 100.0,
            "augment.blur_radius: expected 0 < min <= max <= 100, got {:?}",
            self.blur_radius
        );
        Ok(())
    }

    /// By how much (1, 2, 4 or 8) an image of `w` x `h` may be decoded smaller: the largest r for
    /// which every crop the views can draw keeps at least its output size in pixels (plus one) at
    /// 1/r of the size. With `reduced_decode` off, 1.
    pub fn decode_reduction(&self, w: u32, h: u32) -> u32 {
        if !self.reduced_decode {
            return 1;
        }
        // the shortest side of a crop of at least `scale` of the area at any allowed ratio
        let side_ratio = self.ratio[0].min(1.0 / self.ratio[1]) as f64;
        let shortest = |scale: f32| (w as f64 * h as f64 * scale as f64 * side_ratio).sqrt().min(w.min(h) as f64) - 1.0;
        let mut room = shortest(self.global_scale[0]) / self.global_size as f64;
        if self.local_crops > 0 {
            room = room.min(shortest(self.local_scale[0]) / self.local_size as f64);
        }
        [8, 4, 2].into_iter().find(|&r| room >= r as f64).unwrap_or(1)
    }

    /// The 2 + L views in order: global 1, global 2, locals.
    pub fn views(&self) -> Vec<ViewSpec> {
        let g = |i: usize| ViewSpec { size: self.global_size, scale: self.global_scale, blur_p: self.blur_p[i], solarize_p: self.solarize_p[i] };
        let local = ViewSpec { size: self.local_size, scale: self.local_scale, blur_p: self.blur_p[2], solarize_p: self.solarize_p[2] };
        let mut v = vec![g(0), g(1)];
        v.extend(std::iter::repeat_n(local, self.local_crops));
        v
    }
}

/// A per-image random stream that depends only on (seed, epoch, index).
pub fn image_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
    r
}

/// Which random operations fired for one view (for tests and the preview).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Trace {
    pub crop: (u32, u32, u32, u32),
    pub flip: bool,
    /// (angle in degrees, shift x, shift y in pixels) of the random affine; zeros when off.
    pub affine: (f32, f32, f32),
    pub jitter: bool,
    pub grayscale: bool,
    pub blur: bool,
    pub solarize: bool,
}

/// Applies a view's random crop and photometric ops to one image; returns an 8-bit image of
/// `view.size` squared with `channels` channels.
pub fn augment_view<R: Rng>(img: &ImageU8, cfg: &MultiCropConfig, view: &ViewSpec, rng: &mut R, resizer: &mut fir::Resizer) -> ImageU8 {
    augment_view_traced(img, cfg, view, rng, resizer).0
}

/// [`augment_view`], also saying which operations fired.
pub fn augment_view_traced<R: Rng>(img: &ImageU8, cfg: &MultiCropConfig, view: &ViewSpec, rng: &mut R, resizer: &mut fir::Resizer) -> (ImageU8, Trace) {
    augment_view_at(img, (img.w, img.h), cfg, view, rng, resizer)
}

/// [`augment_view_traced`] of an image decoded at a reduced size from a full image of size
/// `full` (width, height): the crop is drawn in full-image coordinates (the same random numbers
/// as for the full image) and mapped onto `img`.
fn augment_view_at<R: Rng>(img: &ImageU8, full: (u32, u32), cfg: &MultiCropConfig, view: &ViewSpec, rng: &mut R, resizer: &mut fir::Resizer) -> (ImageU8, Trace) {
    let mut t = Trace::default();
    // Grey sources are processed in one channel and replicated at the end: every op gives the
    // same result on a replicated grey image (PIL's L of (g,g,g) is g), at a third of the work.
    let work_c = if img.c == 1 || cfg.channels == 1 { 1 } else { 3 };
    let src = if img.c != work_c { std::borrow::Cow::Owned(ops::to_channels(img, work_c)) } else { std::borrow::Cow::Borrowed(img) };
    t.crop = ops::rrc_params(full.1, full.0, view.scale, cfg.ratio, rng);
    let (top, left, ch, cw) = t.crop;
    let (fx, fy) = (full.0 as f64 / img.w as f64, full.1 as f64 / img.h as f64);
    let mut out = ops::crop_resize_f(&src, [top as f64 / fy, left as f64 / fx, ch as f64 / fy, cw as f64 / fx], view.size, view.size, resizer);
    t.flip = rng.random_bool(cfg.flip_p as f64);
    if t.flip {
        ops::hflip(&mut out);
    }
    if cfg.rotate > 0.0 || cfg.translate > 0.0 {
        t.affine = random_affine(cfg, view.size, rng);
        out = ops::affine(&out, t.affine.0, t.affine.1, t.affine.2);
    }
    t.jitter = rng.random_bool(cfg.jitter_p as f64);
    if t.jitter {
        let b = rng.random_range((1.0 - cfg.brightness).max(0.0)..=1.0 + cfg.brightness);
        let c = rng.random_range((1.0 - cfg.contrast).max(0.0)..=1.0 + cfg.contrast);
        let s = rng.random_range((1.0 - cfg.saturation).max(0.0)..=1.0 + cfg.saturation);
        let h = rng.random_range(-cfg.hue..=cfg.hue);
        let mut order = [0u8, 1, 2, 3];
        order.shuffle(rng);
        for op in order {
            match op {
                0 => ops::adjust_brightness(&mut out, b),
                1 => ops::adjust_contrast(&mut out, c),
                2 => ops::adjust_saturation(&mut out, s),
                _ => ops::adjust_hue(&mut out, h),
            }
        }
    }
    t.grayscale = rng.random_bool(cfg.grayscale_p as f64);
    if t.grayscale {
        ops::grayscale(&mut out);
    }
    t.blur = rng.random_bool(view.blur_p as f64);
    if t.blur {
        let sigma = rng.random_range(cfg.blur_radius[0]..=cfg.blur_radius[1]);
        ops::gaussian_blur(&mut out, sigma);
    }
    t.solarize = rng.random_bool(view.solarize_p as f64);
    if t.solarize {
        ops::solarize(&mut out);
    }
    if out.c != cfg.channels {
        out = ops::to_channels(&out, cfg.channels);
    }
    (out, t)
}

/// torchvision `RandomAffine.get_params` without scale or shear: an angle in [-rotate, rotate]
/// and whole-pixel shifts of at most `translate` of the side.
fn random_affine<R: Rng>(cfg: &MultiCropConfig, side: u32, rng: &mut R) -> (f32, f32, f32) {
    let angle = if cfg.rotate > 0.0 { rng.random_range(-cfg.rotate..=cfg.rotate) } else { 0.0 };
    let max = (cfg.translate * side as f32) as f64;
    let mut shift = || if max > 0.0 { rng.random_range(-max..=max).round() as f32 } else { 0.0 };
    let (tx, ty) = (shift(), shift());
    (angle, tx, ty)
}

/// All views of one image, in the order of [`MultiCropConfig::views`].
pub fn augment_all(img: &ImageU8, cfg: &MultiCropConfig, rng: &mut ChaCha8Rng, resizer: &mut fir::Resizer) -> Vec<ImageU8> {
    augment_all_at(img, (img.w, img.h), cfg, rng, resizer)
}

/// [`augment_all`] of an image decoded at a reduced size from a full image of size `full`.
fn augment_all_at(img: &ImageU8, full: (u32, u32), cfg: &MultiCropConfig, rng: &mut ChaCha8Rng, resizer: &mut fir::Resizer) -> Vec<ImageU8> {
    cfg.views().iter().map(|v| augment_view_at(img, full, cfg, v, rng, resizer).0).collect()
}

/// Normalised float crops of a batch: one buffer per view, each `[batch, channels, size, size]`.
pub struct CropBuffers {
    pub views: Vec<(Vec<f32>, [usize; 4])>,
}

/// Augments `indices` of `ds` in parallel into per-view normalised buffers.
pub fn augment_batch(ds: &Dataset, indices: &[usize], cfg: &MultiCropConfig, norm: &Norm, seed: u64, epoch: u64) -> anyhow::Result<CropBuffers> {
    let views = cfg.views();
    let c = cfg.channels as usize;
    let norm = norm.with_channels(c);
    let per_image = augment_images(ds, indices, cfg, seed, epoch)?;
    let b = indices.len();
    let views = views
        .iter()
        .enumerate()
        .map(|(v, spec)| {
            let n = c * (spec.size * spec.size) as usize;
            let mut buf = vec![0f32; b * n];
            normalize_view(&per_image, v, &norm, &mut buf);
            (buf, [b, c, spec.size as usize, spec.size as usize])
        })
        .collect();
    Ok(CropBuffers { views })
}

/// View `v` of every image, normalised into `out` (`[batch, channels, size, size]`), in parallel.
fn normalize_view(per_image: &[Vec<ImageU8>], v: usize, norm: &Norm, out: &mut [f32]) {
    let n = out.len() / per_image.len().max(1);
    out.par_chunks_mut(n.max(1)).zip(per_image.par_iter()).for_each(|(o, imgs)| ops::normalize_into(&imgs[v], &norm.mean, &norm.std, o));
}

/// Every view of every image of `indices`, augmented in parallel on the rayon pool.
/// A streamed image is decoded once here, for all of its crops.
fn augment_images(ds: &Dataset, indices: &[usize], cfg: &MultiCropConfig, seed: u64, epoch: u64) -> anyhow::Result<Vec<Vec<ImageU8>>> {
    indices
        .par_iter()
        .map_init(fir::Resizer::new, |resizer, &i| -> anyhow::Result<Vec<ImageU8>> {
            let d = ds.image_reduced(i, &|w, h| cfg.decode_reduction(w, h))?;
            let mut rng = image_rng(seed, epoch, i as u64);
            Ok(augment_all_at(&d.img, d.full, cfg, &mut rng, resizer))
        })
        .collect()
}

/// As [`augment_batch`], normalised straight into one tensor per view `[batch, channels, size,
/// size]` (no intermediate buffer); in pinned host memory with `pinned` (for non-blocking copies
/// to CUDA; plain memory if pinning fails). The same values as `augment_batch`.
pub fn augment_batch_tensors(ds: &Dataset, indices: &[usize], cfg: &MultiCropConfig, norm: &Norm, seed: u64, epoch: u64, pinned: bool) -> anyhow::Result<Vec<tch::Tensor>> {
    let c = cfg.channels as usize;
    let norm = norm.with_channels(c);
    let per_image = augment_images(ds, indices, cfg, seed, epoch)?;
    let b = indices.len();
    Ok(cfg
        .views()
        .iter()
        .enumerate()
        .map(|(v, spec)| {
            let s = spec.size as i64;
            let shape = [b as i64, c as i64, s, s];
            let plain = || tch::Tensor::empty(shape, (tch::Kind::Float, tch::Device::Cpu));
            let t = if pinned { crate::device::shim::empty_pinned(&shape).unwrap_or_else(|_| plain()) } else { plain() };
            let n = c * (spec.size * spec.size) as usize;
            // SAFETY: `t` is a new contiguous f32 tensor of b * n elements that nothing else
            // references until it is returned; the chunks written in parallel are disjoint.
            let out = unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, b * n) };
            normalize_view(&per_image, v, &norm, out);
            t
        })
        .collect())
}

/// Deterministic evaluation preprocessing: images already `size` square pass unchanged; others
/// are resized (shorter side to size/0.875, bicubic) and centre-cropped, as DINO's eval does.
pub fn eval_image(img: &ImageU8, size: u32, channels: u8, resizer: &mut fir::Resizer) -> ImageU8 {
    let img = if img.c != channels { std::borrow::Cow::Owned(ops::to_channels(img, channels)) } else { std::borrow::Cow::Borrowed(img) };
    if img.w == size && img.h == size {
        return img.into_owned();
    }
    let short = (size as f32 / 0.875).round() as u32;
    let (rw, rh) = if img.w <= img.h {
        (short, ((img.h as f32 * short as f32 / img.w as f32).round() as u32).max(short))
    } else {
        (((img.w as f32 * short as f32 / img.h as f32).round() as u32).max(short), short)
    };
    let resized = ops::crop_resize(&img, (0, 0, img.h, img.w), rw, rh, resizer);
    let (top, left) = ((rh - size) / 2, (rw - size) / 2);
    ops::crop_resize(&resized, (top, left, size, size), size, size, resizer)
}

/// How evaluation images are prepared.
#[derive(Clone, Debug)]
pub struct EvalPrep {
    pub size: u32,
    pub channels: u8,
    pub norm: Norm,
    /// Decode large JPEGs smaller where the resize needs fewer pixels
    /// ([`crate::augment::eval_decode_reduction`]); a run's `augment.reduced_decode`.
    pub reduced_decode: bool,
}

/// By how much (1, 2, 4 or 8) [`eval_image`] may see an image of `w` x `h` decoded smaller: the
/// largest r that keeps the shorter side, plus one pixel, at least the resize target.
pub fn eval_decode_reduction(size: u32, w: u32, h: u32) -> u32 {
    let short = (size as f32 / 0.875).round() as u32 + 1;
    [8, 4, 2].into_iter().find(|&r| w.min(h) >= r * short).unwrap_or(1)
}

/// Evaluation tensors' data for `indices`: `[n, channels, size, size]`, normalised.
pub fn eval_batch(ds: &Dataset, indices: &[usize], prep: &EvalPrep) -> anyhow::Result<(Vec<f32>, [usize; 4])> {
    let (size, channels) = (prep.size, prep.channels);
    let c = channels as usize;
    let norm = prep.norm.with_channels(c);
    let n = c * (size * size) as usize;
    let mut buf = vec![0f32; indices.len() * n];
    buf.par_chunks_mut(n).zip(indices.par_iter()).try_for_each_init(fir::Resizer::new, |resizer, (out, &i)| -> anyhow::Result<()> {
        let reduce = |w, h| if prep.reduced_decode { eval_decode_reduction(size, w, h) } else { 1 };
        let img = eval_image(&ds.image_reduced(i, &reduce)?.img, size, channels, resizer);
        ops::normalize_into(&img, &norm.mean, &norm.std, out);
        Ok(())
    })?;
    Ok((buf, [indices.len(), c, size as usize, size as usize]))
}

/// Training tensors' data for supervised evaluation (linear probe with augmentation,
/// fine-tuning): RandomResizedCrop(size, scale) + horizontal flip, normalised; deterministic per
/// (seed, epoch, image index).
pub fn supervised_batch(ds: &Dataset, indices: &[usize], size: u32, channels: u8, norm: &Norm, scale: [f32; 2], seed: u64, epoch: u64) -> anyhow::Result<(Vec<f32>, [usize; 4])> {
    let c = channels as usize;
    let norm = norm.with_channels(c);
    let n = c * (size * size) as usize;
    let mut buf = vec![0f32; indices.len() * n];
    buf.par_chunks_mut(n).zip(indices.par_iter()).try_for_each_init(fir::Resizer::new, |resizer, (out, &i)| -> anyhow::Result<()> {
        let mut rng = image_rng(seed, epoch, i as u64);
        let src = ds.image(i)?;
        let src = if src.c != channels { ops::to_channels(&src, channels) } else { src.into_owned() };
        let crop = ops::rrc_params(src.h, src.w, scale, [3.0 / 4.0, 4.0 / 3.0], &mut rng);
        let mut img = ops::crop_resize(&src, crop, size, size, resizer);
        if rng.random_bool(0.5) {
            ops::hflip(&mut img);
        }
        ops::normalize_into(&img, &norm.mean, &norm.std, out);
        Ok(())
    })?;
    Ok((buf, [indices.len(), c, size as usize, size as usize]))
}

#[cfg(test)]
mod tests;
