//! ImageFolder trees: `root/train/<class>/*.{jpg,jpeg,png,bmp,webp}` and `root/val/<class>/…`
//! (or `root/test/…`). Classes are the sorted sub-folder names and the images of a class are the
//! files at any depth below its folder, as torchvision does. Opening a
//! tree indexes its files (memory grows with the file count, not the pixels); images are decoded
//! when read, by the loader threads; grey images stay one-channel.
use super::{Dataset, ImageU8, LoadOptions, Split};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub(super) const EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "ppm", "pgm"];

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

/// A class folder: its name as the file system holds it (sorted and matched by its bytes, as
/// Python's `sorted` orders UTF-8 names) and its path.
type ClassDir = (std::ffi::OsString, PathBuf);

/// A class name for lists and messages: as it is when UTF-8, else with its odd bytes escaped
/// (`caf\xe9`), so two names that differ only there stay two names.
fn display_name(name: &std::ffi::OsStr) -> String {
    name.to_str().map_or_else(|| name.as_bytes().escape_ascii().to_string(), str::to_string)
}

/// The class folders under `dir`, sorted by name.
fn class_dirs(dir: &Path) -> Result<Vec<ClassDir>> {
    let mut classes: Vec<ClassDir> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name(), e.path()))
        .collect();
    classes.sort();
    if classes.is_empty() {
        bail!("{}: no class folders (expected {}/<class>/<images>)", dir.display(), dir.display());
    }
    Ok(classes)
}

/// Whether a file name has one of the image extensions.
fn is_image(p: &Path) -> bool {
    EXTENSIONS.contains(&p.extension().map(|x| x.to_string_lossy().to_lowercase()).unwrap_or_default().as_str())
}

/// Folders below a class folder that are walked (torchvision walks without a limit; a deeper
/// tree is almost surely a link cycle or a mistake).
const MAX_DEPTH: usize = 32;

/// The files under a class folder at any depth, following links, as torchvision's ImageFolder
/// finds them (`os.walk`), in its order: folder by folder, then by name. Links to nothing are
/// counted, not returned.
fn files_under(dir: &Path) -> Result<(Vec<PathBuf>, usize)> {
    let (mut files, mut broken) = (vec![], 0);
    for e in walkdir::WalkDir::new(dir).follow_links(true).max_depth(MAX_DEPTH) {
        match e {
            Ok(e) if e.file_type().is_file() => files.push(e.into_path()),
            Ok(_) => {}
            Err(e) if e.depth() > 0 && e.path().is_some_and(|p| p.is_symlink() && !p.exists()) => broken += 1,
            Err(e) => {
                let at = e.path().unwrap_or(dir).display().to_string();
                match e.loop_ancestor() {
                    Some(a) => bail!("{at}: a link back to {} (a folder cycle)", a.display()),
                    None => bail!("{at}: cannot list ({})", e.io_error().map_or_else(|| e.to_string(), |io| io.to_string())),
                }
            }
        }
    }
    // Python compares the folder paths as strings (`a.old` before `a/x`), then the names
    let key = |p: &PathBuf| (p.parent().map(|d| d.as_os_str().as_bytes().to_vec()), p.file_name().map(|n| n.as_bytes().to_vec()));
    files.sort_by_cached_key(key);
    Ok((files, broken))
}

/// Whether a folder holds at least one file with an image extension, at any depth.
fn has_images(dir: &Path) -> bool {
    files_under(dir).is_ok_and(|(f, _)| f.iter().any(|p| is_image(p)))
}

/// Class folders of a split with their indices in the tree's class list.
type ClassIndex = Vec<(PathBuf, usize)>;

/// The class folders of `dir` and their indices. There is one class index per tree, from
/// `train/` (`unlabeled/` keeps its own folders, whose labels are not used): the folders of the test split must be among train's classes (an extra folder without
/// images is skipped with a warning; one with images is an error).
fn classes_of(root: &Path, dir: &Path, split: Split) -> Result<(Vec<String>, ClassIndex)> {
    let here = class_dirs(dir)?;
    let train_dir = root.join("train");
    if split != Split::Test || !train_dir.is_dir() {
        let idx = here.iter().enumerate().map(|(i, (_, p))| (p.clone(), i)).collect();
        return Ok((here.iter().map(|(c, _)| display_name(c)).collect(), idx));
    }
    let classes: Vec<std::ffi::OsString> = class_dirs(&train_dir)?.into_iter().map(|(c, _)| c).collect();
    let names: Vec<String> = classes.iter().map(|c| display_name(c)).collect();
    let mut idx = vec![];
    for (c, path) in here {
        match classes.binary_search(&c) {
            Ok(i) => idx.push((path, i)),
            Err(_) if !has_images(&path) => eprintln!("warning: {}: no images, and not a class of {}; skipped", path.display(), train_dir.display()),
            Err(_) => bail!("{}: `{}` is not a class of {} (the classes are train's folders: {})", path.display(), display_name(&c), train_dir.display(), names.join(", ")),
        }
    }
    Ok((names, idx))
}

pub fn load(root: &Path, split: Split, opts: &LoadOptions) -> Result<Dataset> {
    let dir = split_dir(root, split, "<class>/<images>")?;
    let (classes, class_index) = classes_of(root, &dir, split)?;
    let mut files: Vec<(PathBuf, i64)> = vec![];
    let (mut ignored, mut broken) = (0usize, 0usize);
    for (path, ci) in &class_index {
        let (entries, b) = files_under(path)?;
        broken += b;
        if split == Split::Train && !entries.iter().any(|p| is_image(p)) {
            bail!("{}: a class folder without images (as torchvision's ImageFolder, a class needs at least one); remove it or add its images", path.display());
        }
        for p in entries {
            if is_image(&p) {
                files.push((p, *ci as i64));
            } else {
                ignored += 1;
            }
        }
    }
    if ignored > 0 {
        eprintln!("warning: {}: ignored {ignored} file(s) without an image extension ({})", dir.display(), EXTENSIONS.join(", "));
    }
    if broken > 0 {
        eprintln!("warning: {}: ignored {broken} link(s) to nothing", dir.display());
    }
    let files = if opts.skip_corrupt { decodable(files, &dir, |(p, _)| decode(p).map(drop)) } else { files };
    let file_channels = channels_of(&files, |(p, _)| decode(p))?;
    let (files, labels) = files.into_iter().unzip();
    Ok(Dataset { files, file_channels, labels, num_classes: classes.len(), class_names: classes, ..Default::default() })
}

/// The channels of a streamed set: 3 when one of up to 64 images spread evenly over its images
/// (in class order) is in colour, else 1. One that does not decode is named here.
pub(super) fn channels_of<T>(items: &[T], decode: impl Fn(&T) -> Result<ImageU8>) -> Result<u8> {
    let mut channels = 1;
    for i in super::spread(items.len(), 64) {
        channels = channels.max(decode(&items[i]).map_err(super::skip_hint)?.c);
    }
    Ok(channels)
}

/// The channels of a tree's training images without indexing all of it: 3 when the first image
/// that decodes in any of up to 64 classes spread over the class list is in colour, else 1; 3
/// when none decodes (loading names it).
pub fn peek_channels(root: &Path) -> Result<u8> {
    let dir = split_dir(root, Split::Train, "<class>/<images>")?;
    let classes = class_dirs(&dir)?;
    let mut seen = vec![];
    for i in super::spread(classes.len(), 64) {
        seen.extend(files_under(&classes[i].1)?.0.into_iter().filter(|p| is_image(p)).filter_map(|p| decode(&p).ok()).take(1).map(|i| i.c));
    }
    Ok(seen.into_iter().max().unwrap_or(3))
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
    fn a_colour_class_after_a_hundred_grey_images_makes_the_set_colour() {
        // session 26's probe: the first 16 images decided, so a first class of grey scans made a colour set grey
        let d = tempfile::tempdir().unwrap();
        for (class, n) in [("0_scans", 100), ("red", 3), ("teal", 3)] {
            for split in ["train", "val"] {
                std::fs::create_dir_all(d.path().join(split).join(class)).unwrap();
            }
            for i in 0..n {
                let p = d.path().join("train").join(class).join(format!("{i}.png"));
                match class {
                    "0_scans" => image::GrayImage::from_pixel(6, 6, image::Luma([90])).save(p).unwrap(),
                    _ => image::RgbImage::from_pixel(6, 6, image::Rgb([200, 10, 30])).save(p).unwrap(),
                }
            }
        }
        let ds = load(d.path(), Split::Train, &LoadOptions::default()).unwrap();
        assert_eq!((ds.len(), ds.channels()), (106, 3));
        assert_eq!(peek_channels(d.path()).unwrap(), 3);
        // a grey set stays grey
        std::fs::remove_dir_all(d.path().join("train/red")).unwrap();
        std::fs::remove_dir_all(d.path().join("train/teal")).unwrap();
        assert_eq!((load(d.path(), Split::Train, &LoadOptions::default()).unwrap().channels(), peek_channels(d.path()).unwrap()), (1, 1));
    }

    #[test]
    fn tiff_ppm_and_pgm_files_are_read_as_torchvision_reads_them() {
        use image::codecs::pnm::{PnmEncoder, PnmSubtype, SampleEncoding};
        let d = tempfile::tempdir().unwrap();
        for split in ["train", "val"] {
            std::fs::create_dir_all(d.path().join(split).join("a")).unwrap();
        }
        let a = d.path().join("train/a");
        image::RgbImage::from_pixel(5, 4, image::Rgb([10, 20, 30])).save(a.join("0.TIF")).unwrap();
        image::RgbImage::from_pixel(5, 4, image::Rgb([40, 50, 60])).save(a.join("1.tiff")).unwrap();
        let pnm = |sub, px: &[u8], colour| {
            let mut b = vec![];
            PnmEncoder::new(&mut b).with_subtype(sub).encode(px, 2, 1, colour).unwrap();
            b
        };
        std::fs::write(a.join("2.pgm"), pnm(PnmSubtype::Graymap(SampleEncoding::Binary), &[7, 9], image::ExtendedColorType::L8)).unwrap();
        std::fs::write(a.join("3.ppm"), pnm(PnmSubtype::Pixmap(SampleEncoding::Binary), &[1, 2, 3, 4, 5, 6], image::ExtendedColorType::Rgb8)).unwrap();
        let ds = load(d.path(), Split::Train, &LoadOptions::default()).unwrap();
        assert_eq!(ds.len(), 4);
        let px = |i: usize| {
            let im = ds.image(i).unwrap();
            (im.w, im.h, im.c, im.data[..im.c as usize].to_vec())
        };
        assert_eq!((px(0), px(1)), ((5, 4, 3, vec![10, 20, 30]), (5, 4, 3, vec![40, 50, 60])));
        assert_eq!((px(2), px(3)), ((2, 1, 1, vec![7]), (2, 1, 3, vec![1, 2, 3])));
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
    fn nested_images_belong_to_their_class_in_torchvisions_order() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let deeper = d.path().join("train/cat/a_sub/b");
        std::fs::create_dir_all(&deeper).unwrap();
        image::GrayImage::from_pixel(3, 3, image::Luma([1])).save(deeper.join("0.png")).unwrap();
        image::GrayImage::from_pixel(3, 3, image::Luma([2])).save(d.path().join("train/cat/z.png")).unwrap();
        for sub in ["a/x", "a.old"] {
            std::fs::create_dir_all(d.path().join("train/cat").join(sub)).unwrap();
            image::GrayImage::from_pixel(3, 3, image::Luma([3])).save(d.path().join("train/cat").join(sub).join("1.png")).unwrap();
        }
        let ds = load(d.path(), Split::Train, &LoadOptions::default()).unwrap();
        let names: Vec<String> = ds.files.iter().map(|p| p.strip_prefix(d.path()).unwrap().display().to_string()).collect();
        // sorted(os.walk()): the class folder's own files first, then each sub-folder's, the
        // folders ordered as strings ('.' < '/' < '_')
        assert_eq!(names[..6], ["train/cat/0.png", "train/cat/1.png", "train/cat/z.png", "train/cat/a.old/1.png", "train/cat/a/x/1.png", "train/cat/a_sub/b/0.png"]);
        assert_eq!(ds.labels, vec![0, 0, 0, 0, 0, 0, 1, 1, 1, 1]);
    }

    #[test]
    fn non_utf8_class_folder_and_link_cycle() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let odd = d.path().join("train").join(std::ffi::OsStr::from_bytes(b"cl\xffs"));
        std::fs::rename(d.path().join("train/dog"), &odd).unwrap();
        let ds = load(d.path(), Split::Train, &LoadOptions::default()).unwrap();
        assert_eq!((ds.len(), ds.class_names[1].as_str()), (6, "cl\\xffs"));
        // a second name that differs only in its odd byte is a second class, and val/ matches by bytes
        let odd2 = d.path().join("train").join(std::ffi::OsStr::from_bytes(b"cl\xfes"));
        std::fs::create_dir_all(&odd2).unwrap();
        std::fs::copy(odd.join("0.png"), odd2.join("0.png")).unwrap();
        std::fs::rename(d.path().join("val/dog"), d.path().join("val").join(std::ffi::OsStr::from_bytes(b"cl\xffs"))).unwrap();
        let t = load(d.path(), Split::Test, &LoadOptions::default()).unwrap();
        assert_eq!((t.labels.clone(), t.class_names.clone()), (vec![0, 2], vec!["cat".to_string(), "cl\\xfes".to_string(), "cl\\xffs".to_string()]));
        std::os::unix::fs::symlink(d.path().join("train/cat"), d.path().join("train/cat/loop")).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Train, &LoadOptions::default()).unwrap_err());
        assert!(e.contains("cat/loop") && e.contains("folder cycle"), "{e}");
    }

    #[test]
    fn a_training_class_without_images_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        std::fs::create_dir_all(d.path().join("train/emu")).unwrap();
        let e = format!("{:#}", load(d.path(), Split::Train, &LoadOptions::default()).unwrap_err());
        assert!(e.contains("train/emu") && e.contains("without images"), "{e}");
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
