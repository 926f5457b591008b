//! `svib data pack`: writes any data set as WebDataset-style tar shards (`OUT/train/*.tar`,
//! `OUT/val/*.tar`, `OUT/classes.txt`) that `wds:OUT` reads. Sample `i` of the shards is image `i`
//! of the source, so a run on the shards trains as on the source. Files are copied byte for byte
//! (a JPEG stays the same JPEG); images held in memory (IDX, CIFAR, STL-10) are written as PNG,
//! which is lossless.
use super::wds::CLASSES_FILE;
use super::{DataSpec, Dataset, LoadOptions, Split};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::Path;

/// What was written: (split folder, images, shards) per split.
pub struct PackSummary {
    pub splits: Vec<(&'static str, usize, usize)>,
}

/// Packs the train split, and the test split where the source has one, `shard_size` samples
/// per shard.
pub fn pack(spec: &DataSpec, out: &Path, shard_size: usize, opts: &LoadOptions) -> Result<PackSummary> {
    if shard_size == 0 {
        bail!("--shard-size: expected at least 1 image per shard");
    }
    // OUT/.pack-incomplete marks a set being written: an interrupted or failed pack leaves it,
    // and the same command then clears OUT and starts afresh
    let marker = out.join(INCOMPLETE);
    if marker.is_file() {
        clear_interrupted(out)?;
    }
    crate::util::ensure_new_folder(out, "pack")?;
    crate::util::write_atomic(&marker, b"svib data pack is writing this folder\n")?;
    let train = super::load(spec, Split::Train, opts)?;
    let mut splits = vec![("train", train.len(), write_split(&train, &out.join("train"), shard_size)?)];
    match super::load(spec, Split::Test, opts) {
        Ok(test) => splits.push(("val", test.len(), write_split(&test, &out.join("val"), shard_size)?)),
        Err(e) => eprintln!("warning: no test split packed ({e:#})"),
    }
    write_classes(&train, out)?;
    std::fs::remove_file(&marker).with_context(|| format!("{}: cannot remove", marker.display()))?;
    Ok(PackSummary { splits })
}

/// The marker of a pack in progress (see [`pack`]).
const INCOMPLETE: &str = ".pack-incomplete";

/// Removes what an interrupted pack wrote into `out`: its split folders, classes file and
/// marker, and nothing else (anything else found there stops it).
fn clear_interrupted(out: &Path) -> Result<()> {
    for e in std::fs::read_dir(out).with_context(|| format!("{}: cannot list", out.display()))?.flatten() {
        let name = e.file_name();
        let p = e.path();
        match name.to_str() {
            Some("train" | "val") if p.is_dir() => std::fs::remove_dir_all(&p),
            Some(INCOMPLETE | CLASSES_FILE) => std::fs::remove_file(&p),
            Some(n) if n.starts_with(&format!(".{CLASSES_FILE}.")) => std::fs::remove_file(&p),
            _ => bail!("--out {}: an interrupted pack, but it also holds {}; move that away", out.display(), p.display()),
        }
        .with_context(|| format!("{}: cannot remove", p.display()))?;
    }
    eprintln!("note: {}: cleared an interrupted pack", out.display());
    Ok(())
}

/// `classes.txt`: the class names of the training split, one per line.
fn write_classes(ds: &Dataset, out: &Path) -> Result<()> {
    let names: Vec<String> = if ds.class_names.is_empty() { (0..ds.num_classes).map(|c| c.to_string()).collect() } else { ds.class_names.clone() };
    if let Some(n) = names.iter().find(|n| n.contains('\n') || n.contains('\r')) {
        bail!("class name {n:?}: a line break cannot be written to {CLASSES_FILE}");
    }
    crate::util::write_atomic(&out.join(CLASSES_FILE), names.iter().map(|n| format!("{n}\n")).collect::<String>().as_bytes())
}

/// Writes `dir/shard-NNNNNN.tar`, in parallel; returns the number of shards.
fn write_split(ds: &Dataset, dir: &Path, shard_size: usize) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let shards = ds.len().div_ceil(shard_size);
    (0..shards).into_par_iter().try_for_each(|s| {
        let range = s * shard_size..((s + 1) * shard_size).min(ds.len());
        let tar = shard_bytes(ds, range)?;
        crate::util::write_atomic(&dir.join(format!("shard-{s:06}.tar")), &tar)
    })?;
    Ok(shards)
}

/// One shard in memory: `NNNNNNNN.<ext>` (the image) and `NNNNNNNN.cls` (its label) per sample.
fn shard_bytes(ds: &Dataset, range: std::ops::Range<usize>) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for i in range {
        let (bytes, ext) = encoded(ds, i)?;
        append(&mut b, &format!("{i:08}.{ext}"), &bytes)?;
        if ds.labels[i] >= 0 {
            append(&mut b, &format!("{i:08}.cls"), ds.labels[i].to_string().as_bytes())?;
        }
    }
    Ok(b.into_inner()?)
}

fn append(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data)?;
    Ok(())
}

/// Image `i` encoded, with its extension: a file's own bytes, or PNG for an image in memory.
fn encoded(ds: &Dataset, i: usize) -> Result<(Vec<u8>, &'static str)> {
    let Some((bytes, name)) = ds.encoded(i)? else {
        let im = &ds.images[i];
        let color = if im.c == 1 { image::ExtendedColorType::L8 } else { image::ExtendedColorType::Rgb8 };
        let mut png = vec![];
        image::ImageEncoder::write_image(image::codecs::png::PngEncoder::new(&mut png), &im.data, im.w, im.h, color)?;
        return Ok((png, "png"));
    };
    let ext = match image::guess_format(&bytes) {
        Ok(image::ImageFormat::Jpeg) => "jpg",
        Ok(image::ImageFormat::Png) => "png",
        Ok(image::ImageFormat::WebP) => "webp",
        Ok(image::ImageFormat::Bmp) => "bmp",
        _ => bail!("{name}: not a JPEG, PNG, WebP or BMP file"),
    };
    Ok((bytes, ext))
}
