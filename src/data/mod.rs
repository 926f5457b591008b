//! Data sets: readers for the common on-disk layouts, producing a [`Dataset`] of 8-bit images
//! (decoded in memory, or for ImageFolder trees and tar shards an index decoded when read), and
//! the dataset spec string used on the command line.
mod cifar;
pub mod decode;
pub mod folder;
mod idx;
mod norm;
pub mod pack;
mod spec;
mod stl10;
pub mod synth;
pub mod wds;

pub use norm::Norm;
pub use spec::{absolute_spec, DataSpec, Format};

use anyhow::Result;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// An 8-bit image, row-major HWC, with 1 (grey) or 3 (RGB) channels.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageU8 {
    pub w: u32,
    pub h: u32,
    pub c: u8,
    pub data: Vec<u8>,
}

impl ImageU8 {
    pub fn new(w: u32, h: u32, c: u8, data: Vec<u8>) -> Self {
        debug_assert_eq!(data.len(), (w * h) as usize * c as usize);
        ImageU8 { w, h, c, data }
    }
}

/// Which part of a data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
    /// STL-10's unlabelled images (labels are -1).
    Unlabeled,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Unlabeled => "unlabeled",
        }
    }
}

/// Images with integer labels (-1 where a split has none): decoded in `images`, or streamed —
/// ImageFolder `files`, or tar-shard `members` of `shards` — decoded each time they are read, so
/// that memory grows with the number of images, not with their pixels. Exactly one of `images`,
/// `files` and `members` is used.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub images: Vec<ImageU8>,
    pub files: Vec<PathBuf>,
    pub members: Vec<wds::Member>,
    pub shards: Vec<PathBuf>,
    /// Tar shards: WebDataset's epoch order with a shuffle buffer of this many samples (0: the
    /// global shuffle of every data set).
    pub shuffle_buffer: usize,
    /// Streamed sets: the channels of the source images, found when the set was opened.
    pub file_channels: u8,
    pub labels: Vec<i64>,
    pub num_classes: usize,
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Fails when some images have no class (-1: a `wds:` sample without `KEY.cls`), which an
    /// evaluation with labels cannot use; `what` names the data for the message.
    pub fn require_labels(&self, what: &str) -> Result<()> {
        let n = self.labels.iter().filter(|&&l| l < 0).count();
        anyhow::ensure!(n == 0, "{what}: {n} of {} images have no class (a wds sample without KEY.cls?): kNN, linear and fine-tuning need a class for every image", self.len());
        Ok(())
    }
    /// Whether the pixels are read from files when needed.
    pub fn is_streamed(&self) -> bool {
        !self.files.is_empty() || !self.members.is_empty()
    }
    /// The encoded bytes of streamed image `i` with a name for messages (None for an image held
    /// in memory).
    pub fn encoded(&self, i: usize) -> Result<Option<(Vec<u8>, String)>> {
        if let Some(p) = self.files.get(i) {
            let bytes = std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: cannot read ({e})", p.display()))?;
            return Ok(Some((bytes, p.display().to_string())));
        }
        match self.members.get(i) {
            Some(m) => Ok(Some((wds::read(&self.shards, m)?, wds::member_name(&self.shards, m)))),
            None => Ok(None),
        }
    }
    /// Where image `i` comes from: its file, its shard and offset (`SHARD.tar (member at byte
    /// N)`), or `#i` for an image held in memory (its place in the split).
    pub fn source_name(&self, i: usize) -> String {
        if let Some(p) = self.files.get(i) {
            return p.display().to_string();
        }
        self.members.get(i).map_or_else(|| format!("#{i}"), |m| wds::member_name(&self.shards, m))
    }
    /// Image `i`: borrowed from memory, or decoded from its file or shard.
    pub fn image(&self, i: usize) -> Result<Cow<'_, ImageU8>> {
        match self.encoded(i)? {
            Some((bytes, name)) => decode::decode_bytes(&bytes, name).map(Cow::Owned).map_err(skip_hint),
            None => Ok(Cow::Borrowed(&self.images[i])),
        }
    }
    /// Image `i` for cropping: a streamed JPEG for which `reduce(width, height)` gives r > 1 is
    /// decoded at about 1/r of its size ([`decode::decode_bytes_reduced`]); all else as [`Self::image`].
    pub fn image_reduced(&self, i: usize, reduce: &dyn Fn(u32, u32) -> u32) -> Result<decode::Decoded<'_>> {
        match self.encoded(i)? {
            Some((bytes, name)) => decode::decode_bytes_reduced(&bytes, name, reduce).map_err(skip_hint),
            None => Ok(decode::Decoded { full: (self.images[i].w, self.images[i].h), img: Cow::Borrowed(&self.images[i]) }),
        }
    }
    /// Appends the images of `other`, stored the same way (STL-10's unlabeled split).
    pub fn append(&mut self, other: Dataset) -> Result<()> {
        anyhow::ensure!(other.is_empty() || self.is_streamed() == other.is_streamed(), "the splits are stored differently");
        let base = self.shards.len() as u32;
        self.members.extend(other.members.into_iter().map(|m| wds::Member { shard: m.shard + base, ..m }));
        self.shards.extend(other.shards);
        self.images.extend(other.images);
        self.files.extend(other.files);
        self.labels.extend(other.labels);
        Ok(())
    }
    /// Channels of the source images (1 when every image is grey).
    pub fn channels(&self) -> u8 {
        if self.is_streamed() {
            return self.file_channels;
        }
        self.images.iter().map(|i| i.c).max().unwrap_or(3)
    }
    /// The short side of a typical image: the median over up to 64 images spread evenly over the
    /// set's images, at least 8 px (the smallest `--image-size`) and at most 224. One thumbnail
    /// among photos does not decide it.
    pub fn typical_side(&self) -> Result<u32> {
        let mut sides: Vec<u32> = self.spread_sizes(64)?.into_iter().map(|(w, h)| w.min(h)).collect();
        sides.sort_unstable();
        Ok(sides.get(sides.len() / 2).copied().unwrap_or(224).clamp(8, 224))
    }
    /// (width, height) of up to `k` images spread evenly over the set; a streamed image's from its
    /// header, without decoding its pixels.
    pub fn spread_sizes(&self, k: usize) -> Result<Vec<(u32, u32)>> {
        let size = |i: usize| match self.encoded(i)? {
            Some((bytes, name)) => match decode::dimensions(&bytes) {
                Some(wh) => Ok(wh),
                // a header that does not say: the decoder's error names the file
                None => decode::decode_bytes(&bytes, name).map(|im| (im.w, im.h)).map_err(skip_hint),
            },
            None => Ok((self.images[i].w, self.images[i].h)),
        };
        spread(self.len(), k).into_iter().map(size).collect()
    }
    /// How many classes have at least one image.
    pub fn classes_present(&self) -> usize {
        self.labels.iter().filter(|&&l| l >= 0).collect::<std::collections::BTreeSet<_>>().len()
    }
    /// [`Self::truncate`], with a warning naming `what` (the key or flag) and what to do
    /// `instead` when the first `n` images leave classes out, as they do on a folder tree, which
    /// lists its images class by class.
    pub fn truncate_noting(&mut self, n: usize, what: &str, instead: &str) {
        let before = self.classes_present();
        self.truncate(n);
        let after = self.classes_present();
        if after < before {
            eprintln!("warning: {what} keeps the first {} images, which hold {after} of the {before} classes; {instead}", self.len());
        }
    }
    /// The first `n` images (for quick runs and tests).
    pub fn truncate(&mut self, n: usize) {
        self.images.truncate(n);
        self.files.truncate(n);
        self.members.truncate(n);
        self.labels.truncate(n);
    }

    /// Keeps a seeded random choice of `n` images (all when there are fewer), in file order.
    pub fn subset(&mut self, n: usize, seed: u64) {
        let mut keep = vec![false; self.len()];
        subset_indices(self.len(), n, seed).into_iter().for_each(|i| keep[i] = true);
        // images, files or members (the others are empty), and labels
        keep_flagged(&mut self.images, &keep);
        keep_flagged(&mut self.files, &keep);
        keep_flagged(&mut self.members, &keep);
        keep_flagged(&mut self.labels, &keep);
    }
}

/// Up to `k` indices of `0..len` spread evenly, the first always among them.
pub fn spread(len: usize, k: usize) -> Vec<usize> {
    let k = k.min(len);
    (0..k).map(|j| j * len / k).collect()
}

/// Keeps the items of `v` whose flag is set (an empty `v` stays empty).
fn keep_flagged<T>(v: &mut Vec<T>, keep: &[bool]) {
    let mut k = keep.iter();
    v.retain(|_| *k.next().expect("one flag per item"));
}

/// The indices, ascending, of a seeded random choice of `n` of `len` items (all when n >= len).
pub fn subset_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    use rand::SeedableRng;
    if n >= len {
        return (0..len).collect();
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut keep = rand::seq::index::sample(&mut rng, len, n).into_vec();
    keep.sort_unstable();
    keep
}

/// An image of a streamed set that does not decode, with how to get past it (after the cause).
pub(crate) fn skip_hint(e: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!("{e:#} (to skip images that do not decode: --set data.skip_corrupt=true for svib train, --skip-corrupt for evaluation and data commands)")
}

/// Options that change how a data set is read.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// ImageFolder: skip images that fail to decode (with a warning count) instead of failing.
    pub skip_corrupt: bool,
}

/// The channels of a data set's training images, without loading it: 1 for IDX, 3 for CIFAR and
/// STL-10, what the first images hold for image folders and tar shards.
pub fn peek_channels(spec: &DataSpec) -> Result<u8> {
    match spec.format {
        Format::Folder => folder::peek_channels(&spec.dir),
        Format::Wds => wds::peek_channels(&spec.dir),
        f => Ok(f.fixed_channels().expect("a format of fixed channels")),
    }
}

/// Loads one split of the data set a spec names.
pub fn load(spec: &DataSpec, split: Split, opts: &LoadOptions) -> Result<Dataset> {
    let ds = match spec.format {
        Format::Idx => idx::load(&spec.dir, split),
        Format::Cifar10 => cifar::load(&spec.dir, split, false),
        Format::Cifar100 => cifar::load(&spec.dir, split, true),
        Format::Stl10 => stl10::load(&spec.dir, split),
        Format::Folder => folder::load(&spec.dir, split, opts),
        Format::Wds => wds::load(&spec.dir, split, opts),
    }?;
    if ds.is_empty() {
        anyhow::bail!("{}: the {} split has no images", spec.dir.display(), split.name());
    }
    Ok(ds)
}

/// Reads the fixed-size records of a regular file one at a time (memory: one record), calling
/// `each(index, record)`; the file must hold a whole number of records, at least one and at most
/// `max_records` (so a device or a huge file named like a data file is refused before reading).
/// `what` names a record in the error ("3073-byte records").
pub(crate) fn read_records(path: &Path, record: usize, max_records: usize, what: &str, mut each: impl FnMut(usize, &[u8]) -> Result<()>) -> Result<usize> {
    use std::io::Read;
    let (file, len) = crate::util::open_regular(path)?;
    let len = len as usize;
    if len == 0 || !len.is_multiple_of(record) {
        anyhow::bail!("{}: truncated or corrupt: {len} bytes is not a whole number of {what} (last one starts at offset {})", path.display(), len / record * record);
    }
    let n = len / record;
    anyhow::ensure!(n <= max_records, "{}: {n} {what}, more than the {max_records} this format holds", path.display());
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; record];
    for i in 0..n {
        r.read_exact(&mut buf).map_err(|e| anyhow::anyhow!("{}: cannot read record {i} ({e})", path.display()))?;
        each(i, &buf)?;
    }
    Ok(n)
}

/// Returns the first of `names` that exists in `dir` (each also tried with `.gz`).
pub(crate) fn find_file(dir: &Path, names: &[&str]) -> Option<std::path::PathBuf> {
    names.iter().flat_map(|n| [dir.join(n), dir.join(format!("{n}.gz"))]).find(|p| p.is_file())
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thumbnail_first_does_not_set_the_size_and_a_cut_names_the_classes_left() {
        let sq = |side: u32| ImageU8::new(side, side, 1, vec![0; (side * side) as usize]);
        let mut ds = Dataset { images: vec![sq(1), sq(64), sq(64), sq(3), sq(64), sq(500)], labels: vec![0, 0, 0, 1, 1, 2], num_classes: 3, ..Default::default() };
        assert_eq!(ds.typical_side().unwrap(), 64);
        assert_eq!(spread(6, 64), [0, 1, 2, 3, 4, 5]);
        assert_eq!(spread(100, 4), [0, 25, 50, 75]);
        assert_eq!(ds.classes_present(), 3);
        ds.truncate_noting(3, "data.limit = 3", "");
        assert_eq!((ds.len(), ds.classes_present()), (3, 1));
        let tiny = Dataset { images: vec![sq(2), sq(3)], labels: vec![0, 0], num_classes: 1, ..Default::default() };
        assert_eq!(tiny.typical_side().unwrap(), 8, "at least the smallest --image-size");
        assert_eq!(ds.source_name(1), "#1");
    }

    #[test]
    fn seeded_subset_keeps_pairs_in_order_and_is_reproducible() {
        let make = || Dataset {
            images: (0..100u8).map(|i| ImageU8::new(1, 1, 1, vec![i])).collect(),
            labels: (0..100).collect(),
            num_classes: 100,
            class_names: vec![],
            ..Default::default()
        };
        let (mut a, mut b, mut c) = (make(), make(), make());
        a.subset(10, 0);
        b.subset(10, 0);
        c.subset(10, 1);
        assert_eq!(a.len(), 10);
        assert_eq!(a.labels, b.labels, "same seed, same subset");
        assert_ne!(a.labels, c.labels, "another seed, another subset");
        assert!(a.labels.windows(2).all(|w| w[0] < w[1]), "file order kept");
        assert!(a.images.iter().zip(&a.labels).all(|(im, &l)| im.data[0] as i64 == l), "images stay with their labels");
        assert_ne!(a.labels, (0..10).collect::<Vec<i64>>(), "not the first ten");
        let mut d = make();
        d.subset(1000, 0);
        assert_eq!(d.len(), 100);
    }
}
