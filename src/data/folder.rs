//! ImageFolder trees: `root/train/<class>/*.{jpg,jpeg,png,bmp,webp}` and `root/val/<class>/…`
//! (or `root/test/…`). Classes are the sorted sub-folder names, as torchvision does. Opening a
//! tree indexes its files (memory grows with the file count, not the pixels); images are decoded
//! when read, by the loader threads; grey images stay one-channel.
use super::{Dataset, ImageU8, LoadOptions, Split};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

pub(super) const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

/// The folder of a split (`train`, `val` or `test`, `unlabeled`); `layout` completes the
/// expected path in the error (`<class>/<images>`).
pub(super) fn split_dir(root: &Path, split: Split, layout: &str) -> Result<PathBuf> {
    let names: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["val", "test"],
        Split::Unlabeled => &["unlabeled"],
    };
    names
        .iter()
        .map(|n| root.join(n))
        .find(|p| p.is_dir())
        .ok_or_else(|| anyhow::anyhow!("{}: no {} folder (expected root/{}/{layout})", root.display(), names.join(" or "), names[0]))
}

pub use super::decode::decode_file as decode;

/// The sorted names of the class folders under `dir`.
fn class_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut classes: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.is_empty() {
        bail!("{}: no class folders (expected {}/<class>/<images>)", dir.display(), dir.display());
    }
    Ok(classes)
}

/// Whether a folder holds at least one file with an image extension.
fn has_images(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).any(|e| EXTENSIONS.contains(&e.path().extension().map(|x| x.to_string_lossy().to_lowercase()).unwrap_or_default().as_str())))
        .unwrap_or(false)
}

/// Class folders of a split with their indices in the tree's class list.
type ClassIndex = Vec<(String, usize)>;

/// The class folders of `dir` and their indices. There is one class index per tree, from
/// `train/` (`unlabeled/` keeps its own folders, whose labels are not used): the folders of the test split must be among train's classes (an extra folder without
/// images is skipped with a warning; one with images is an error).
fn classes_of(root: &Path, dir: &Path, split: Split) -> Result<(Vec<String>, ClassIndex)> {
    let here = class_dirs(dir)?;
    let train_dir = root.join("train");
    if split != Split::Test || !train_dir.is_dir() {
        let idx = here.iter().cloned().enumerate().map(|(i, c)| (c, i)).collect();
        return Ok((here, idx));
    }
    let classes = class_dirs(&train_dir)?;
    let mut idx = vec![];
    for c in here {
        match classes.binary_search(&c) {
            Ok(i) => idx.push((c, i)),
            Err(_) if !has_images(&dir.join(&c)) => eprintln!("warning: {}: no images, and not a class of {}; skipped", dir.join(&c).display(), train_dir.display()),
            Err(_) => bail!("{}: `{c}` is not a class of {} (the classes are train's folders: {})", dir.join(&c).display(), train_dir.display(), classes.join(", ")),
        }
    }
    Ok((classes, idx))
}

pub fn load(root: &Path, split: Split, opts: &LoadOptions) -> Result<Dataset> {
    let dir = split_dir(root, split, "<class>/<images>")?;
    let (classes, class_index) = classes_of(root, &dir, split)?;
    let mut files: Vec<(PathBuf, i64)> = vec![];
    let mut ignored = 0usize;
    for (c, ci) in &class_index {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir.join(c))
            .with_context(|| format!("{}: cannot list", dir.join(c).display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        for p in entries {
            let ext = p.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
            if EXTENSIONS.contains(&ext.as_str()) {
                files.push((p, *ci as i64));
            } else {
                ignored += 1;
            }
        }
    }
    if ignored > 0 {
        eprintln!("warning: {}: ignored {ignored} file(s) without an image extension ({})", dir.display(), EXTENSIONS.join(", "));
    }
    let files = if opts.skip_corrupt { decodable(files, &dir, |(p, _)| decode(p).map(drop)) } else { files };
    let file_channels = channels_of(files.iter().map(|(p, _)| p), |p| decode(p))?;
    let (files, labels) = files.into_iter().unzip();
    Ok(Dataset { files, file_channels, labels, num_classes: classes.len(), class_names: classes, ..Default::default() })
}

/// The channels of a streamed set, from its first 16 images (one that does not decode is named
/// here).
pub(super) fn channels_of<T>(items: impl Iterator<Item = T>, decode: impl Fn(T) -> Result<ImageU8>) -> Result<u8> {
    let mut channels = 1;
    for it in items.take(16) {
        channels = channels.max(decode(it).map_err(|e| e.context("use --skip-corrupt to skip undecodable images"))?.c);
    }
    Ok(channels)
}

/// The items whose image decodes (each decoded once, in parallel, pixels dropped), with a
/// warning for the others: `--skip-corrupt`.
pub(super) fn decodable<T: Sync>(items: Vec<T>, dir: &Path, check: impl Fn(&T) -> Result<()> + Sync) -> Vec<T> {
    let ok: Vec<Option<anyhow::Error>> = items.par_iter().map(|it| check(it).err()).collect();
    let skipped = ok.iter().filter(|e| e.is_some()).count();
    for e in ok.iter().flatten().take(3) {
        eprintln!("warning: skipping {e:#}");
    }
    if skipped > 0 {
        eprintln!("warning: {}: skipped {skipped} corrupt image(s)", dir.display());
    }
    items.into_iter().zip(ok).filter(|(_, e)| e.is_none()).map(|(f, _)| f).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn tree(root: &Path) {
        for (split, class, n) in [("train", "cat", 2), ("train", "dog", 3), ("val", "cat", 1), ("val", "dog", 1)] {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(6 + i, 4, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, i as u8]));
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
        image::GrayImage::from_pixel(3, 3, image::Luma([77])).save(root.join("train/dog/grey.jpg")).unwrap();
    }

    #[test]
    fn reads_classes_sizes_and_pixels() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let ds = load(d.path(), Split::Train, &LoadOptions::default()).unwrap();
        assert_eq!(ds.class_names, vec!["cat", "dog"]);
        assert_eq!(ds.labels, vec![0, 0, 1, 1, 1, 1]);
        // opening indexes the files; pixels are decoded when read
        assert!(ds.is_streamed() && ds.images.is_empty());
        assert_eq!(ds.channels(), 3);
        let one = ds.image(1).unwrap();
        assert_eq!((one.w, one.h, one.c), (7, 4, 3));
        // pixel (x=2, y=3) of train/cat/1.png is (20, 60, 1)
        assert_eq!(&one.data[(3 * 7 + 2) * 3..(3 * 7 + 2) * 3 + 3], &[20, 60, 1]);
        let grey = ds.image(5).unwrap();
        assert_eq!(grey.c, 1);
        assert!(grey.data.iter().all(|&v| (v as i32 - 77).abs() <= 1));
        assert_eq!(load(d.path(), Split::Test, &LoadOptions::default()).unwrap().len(), 2);
    }

    #[test]
    fn corrupt_image_is_named_or_skipped() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let bad = d.path().join("train/cat/broken.png");
        let good = std::fs::read(d.path().join("train/cat/0.png")).unwrap();
        std::fs::write(&bad, &good[..good.len() / 2]).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Train, &LoadOptions::default()).unwrap_err());
        assert!(e.contains("broken.png") && e.contains("not a decodable image"), "{e}");
        let ds = load(d.path(), Split::Train, &LoadOptions { skip_corrupt: true }).unwrap();
        assert_eq!(ds.len(), 6);
    }

    #[test]
    fn missing_split_folder() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("train/a")).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Test, &LoadOptions::default()).unwrap_err());
        assert!(e.contains("no val or test folder"), "{e}");
    }

    #[test]
    fn val_classes_take_train_indices() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        // val/ without `cat` and with an empty extra folder that sorts first: dog is still 1
        std::fs::remove_dir_all(d.path().join("val/cat")).unwrap();
        std::fs::create_dir_all(d.path().join("val/aardvark")).unwrap();
        let t = load(d.path(), Split::Test, &LoadOptions::default()).unwrap();
        assert_eq!((t.labels.clone(), t.num_classes, t.class_names.clone()), (vec![1], 2, vec!["cat".to_string(), "dog".to_string()]));
        // an extra class with images is an error naming it
        image::GrayImage::from_pixel(3, 3, image::Luma([7])).save(d.path().join("val/aardvark/0.png")).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Test, &LoadOptions::default()).unwrap_err());
        assert!(e.contains("val/aardvark") && e.contains("not a class of") && e.contains("cat, dog"), "{e}");
    }
}
