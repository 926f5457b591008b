//! `svib attention`: a ViT's last-block [CLS]-to-patch attention per head over images (paper
//! Fig. 4), as PNGs: one overlay and one thresholded mask per head, and an overview grid.
use super::eval_cmd::{load_data, DataArgs, SourceArgs};
use crate::augment::eval_batch;
use crate::data::{folder, Dataset, ImageU8, Norm};
use crate::eval::attention::{cls_attention, grid, masked, overlay, png_bytes, threshold_mask};
use crate::eval::features::EvalPrep;
use crate::util::write_atomic;
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use std::path::PathBuf;
use tch::Tensor;

#[derive(Args, Debug)]
pub struct AttentionArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Image files to draw (PNG, JPEG, BMP, WebP).
    #[arg(long, num_args = 1..)]
    pub image: Vec<PathBuf>,
    /// Or: test-split images of the data set (the run's, or --data) by index, e.g. 0,1,2.
    #[arg(long, value_delimiter = ',')]
    pub indices: Vec<usize>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Share of each head's attention mass the thresholded mask keeps (DINO: 0.6).
    #[arg(long, default_value_t = 0.6)]
    pub threshold: f32,
    /// Output pixels per input pixel (default: enough for a 224 px panel).
    #[arg(long)]
    pub scale: Option<u32>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(a: AttentionArgs) -> Result<()> {
    ensure!(!a.image.is_empty() || !a.indices.is_empty(), "give --image PATH... or --indices N,... (test-split images)");
    ensure!(a.threshold > 0.0 && a.threshold <= 1.0, "--threshold: expected a share in (0, 1], got {}", a.threshold);
    ensure!(a.scale.is_none_or(|s| (1..=64).contains(&s)), "--scale: expected 1 to 64 output pixels per input pixel, got {}", a.scale.unwrap_or(0));
    let (b, device) = a.source.load(0)?;
    let Some(vit) = b.model.as_vit() else { bail!("{}: attention maps need a ViT backbone, this one is {}", a.source.checkpoint.display(), b.arch.name) };
    // the images with a name each, and how to prepare them
    let mut images: Vec<(String, ImageU8)> = a.image.iter().map(|p| Ok((stem(p), folder::decode(p)?))).collect::<Result<_>>()?;
    let prep = if a.indices.is_empty() && b.run_config.is_none() && a.data.data.is_none() {
        // image files and a weights file: ImageNet's normalisation at 224 px unless told
        EvalPrep { size: a.data.image_size.unwrap_or(224), channels: b.channels, norm: Norm::preset("imagenet").unwrap().with_channels(b.channels as usize), reduced_decode: true }
    } else {
        let (_, test, prep) = load_data(&a.data, &b)?;
        for &i in &a.indices {
            ensure!(i < test.len(), "--indices: {i} is past the test split ({} images)", test.len());
            images.push((format!("test{i}"), test.image(i)?.into_owned()));
        }
        prep
    };
    let names = unique_names(images.iter().map(|(n, _)| n.clone()).collect());
    images.iter_mut().zip(names).for_each(|((n, _), u)| *n = u);
    let scale = a.scale.unwrap_or((224 / prep.size).max(1));
    ensure!(prep.size * scale <= 4096, "--scale {scale}: panels of {} px a side; expected at most 4096 (lower --scale)", prep.size * scale);
    std::fs::create_dir_all(&a.out).with_context(|| format!("{}: cannot create", a.out.display()))?;
    for (name, img) in &images {
        let ds = Dataset { images: vec![img.clone()], labels: vec![-1], num_classes: 0, class_names: vec![], ..Default::default() };
        let (buf, shape) = eval_batch(&ds, &[0], &prep)?;
        let x = Tensor::from_slice(&buf).reshape(shape.map(|d| d as i64)).to_device(device);
        let (heads, gh, gw) = cls_attention(vit, &x).with_context(|| format!("image {name}"))?;
        // what the network saw, for drawing: the evaluation crop without normalisation
        let shown = crate::augment::eval_image(img, prep.size, prep.channels, &mut fast_image_resize::Resizer::new());
        let mean: Vec<f32> = (0..gh * gw).map(|i| heads.iter().map(|h| h[i]).sum::<f32>() / heads.len() as f32).collect();
        // both rows start with the plain image (a mask that keeps everything)
        let plain = masked(&shown, scale, &vec![true; gh * gw], gh, gw);
        let (mut row_attn, mut row_mask) = (vec![plain.clone()], vec![plain]);
        for (h, att) in heads.iter().chain(std::iter::once(&mean)).enumerate() {
            let tag = if h == heads.len() { "mean".to_string() } else { format!("head{h}") };
            let o = overlay(&shown, scale, att, gh, gw);
            let m = masked(&shown, scale, &threshold_mask(att, a.threshold), gh, gw);
            write_atomic(&a.out.join(format!("{name}-attn-{tag}.png")), &png_bytes(&o)?)?;
            write_atomic(&a.out.join(format!("{name}-mask-{tag}.png")), &png_bytes(&m)?)?;
            row_attn.push(o);
            row_mask.push(m);
        }
        write_atomic(&a.out.join(format!("{name}-grid.png")), &png_bytes(&grid(&[row_attn, row_mask]))?)?;
        println!("{name}: {} heads on a {gh}x{gw} patch grid -> {} (and {name}-{{attn,mask}}-head*.png beside it)", heads.len(), a.out.join(format!("{name}-grid.png")).display());
    }
    Ok(())
}

fn stem(p: &std::path::Path) -> String {
    p.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned())
}

/// Output names of the images (the --image files' stems, then `testN` for --indices), with `-N`
/// (the image's place among them, from 1) where two share one, so that no image's maps replace
/// another's.
fn unique_names(stems: Vec<String>) -> Vec<String> {
    let mut used = std::collections::HashSet::new();
    let mut names = vec![];
    for (i, s) in stems.iter().enumerate() {
        let mut name = if stems.iter().filter(|t| *t == s).count() > 1 { format!("{s}-{}", i + 1) } else { s.clone() };
        // a suffixed name may be another image's stem (`0-1.png` beside two `0.png`)
        while used.contains(&name) || (name != *s && stems.contains(&name)) {
            name = format!("{name}-{}", i + 1);
        }
        used.insert(name.clone());
        names.push(name);
    }
    names
}

#[cfg(test)]
mod tests {
    #[test]
    fn images_with_one_file_name_get_their_place_added() {
        let p = |s: &str| super::stem(std::path::Path::new(s));
        let names = super::unique_names(vec![p("a/0.png"), p("b/0.png"), p("c/1.jpg"), p("d/0.jpg"), p("test3.png"), "test3".into(), "test4".into()]);
        assert_eq!(names, ["0-1", "0-2", "1", "0-4", "test3-5", "test3-6", "test4"]);
        let names = super::unique_names(vec!["0".into(), "0".into(), "0-1".into()]);
        assert_eq!(names, ["0-1-1", "0-2", "0-1"]);
    }
}
