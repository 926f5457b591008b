//! WebDataset-style tar shards: `wds:DIR` reads `DIR/train/*.tar` and `DIR/val/*.tar` (or
//! `test/`), in sorted shard order. A sample is the run of consecutive members that share a key
//! (the member name up to the first dot of its file name, as WebDataset splits it): one image
//! (`KEY.jpg`, `.jpeg`, `.png`, `.bmp` or `.webp`) and optionally its class (`KEY.cls`, an integer
//! as text; -1 without one). `DIR/classes.txt` (one name per line, as `svib data pack` writes it)
//! names the classes; without it they are numbered.
//!
//! Opening a split indexes the shards (tar headers only: memory grows with the sample count, not
//! the pixels); images are read by offset and decoded by the loader threads. Epoch orders come from
//! the index: the same global shuffle as any other set (sample `i` of the shards is image `i` of
//! the folder they were packed from, so both train alike), or with `data.shuffle_buffer = N`
//! WebDataset's order — shards shuffled, then a shuffle buffer of N samples — which reads each
//! shard front to back. Both are derived from (seed, epoch), so resume stays exact.
use super::folder::{self, EXTENSIONS};
use super::{Dataset, ImageU8, LoadOptions, Split};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Where one sample's encoded image lies: `len` bytes at `offset` of shard `shard`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub shard: u32,
    pub offset: u64,
    pub len: u64,
}

/// The class names file written next to the split folders.
pub const CLASSES_FILE: &str = "classes.txt";

/// Largest `.cls` member read (an integer as text).
const MAX_CLS_BYTES: u64 = 64;

pub fn load(root: &Path, split: Split, opts: &LoadOptions) -> Result<Dataset> {
    let dir = folder::split_dir(root, split, "*.tar")?;
    let shards = shard_paths(&dir)?;
    let (mut members, mut labels) = (vec![], vec![]);
    for (s, p) in shards.iter().enumerate() {
        index_shard(p, s as u32, &mut members, &mut labels)?;
    }
    let class_names = class_names(root, &labels)?;
    if let Some(&l) = labels.iter().find(|&&l| l < -1 || l >= class_names.len() as i64) {
        bail!(
            "{}: class {l} out of range (expected 0 to {} for the {} classes of {}, or -1 for none)",
            dir.display(),
            class_names.len() as i64 - 1,
            class_names.len(),
            root.join(CLASSES_FILE).display()
        );
    }
    let mut items: Vec<(Member, i64)> = members.into_iter().zip(labels).collect();
    if opts.skip_corrupt {
        items = folder::decodable(items, &dir, |(m, _)| decode(&shards, m).map(drop));
    }
    let file_channels = folder::channels_of(&items, |(m, _)| decode(&shards, m))?;
    let (members, labels) = items.into_iter().unzip();
    Ok(Dataset { members, shards, file_channels, labels, num_classes: class_names.len(), class_names, ..Default::default() })
}

/// The channels of the training shards: 3 when one of up to 4 images spread over each of up to
/// 16 shards spread over the set (`svib data pack` writes them in class order) is in colour, and
/// when none decodes; else 1.
pub fn peek_channels(root: &Path) -> Result<u8> {
    let shards = shard_paths(&folder::split_dir(root, Split::Train, "*.tar")?)?;
    let mut seen = vec![];
    for s in super::spread(shards.len(), 16) {
        let (mut members, mut labels) = (vec![], vec![]);
        index_shard(&shards[s], s as u32, &mut members, &mut labels)?;
        seen.extend(super::spread(members.len(), 4).into_iter().filter_map(|i| decode(&shards, &members[i]).ok()).map(|i| i.c));
    }
    Ok(seen.into_iter().max().unwrap_or(3))
}

/// The `*.tar` files of a split folder, sorted.
fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut shards: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        .collect();
    if let Some(odd) = shards.iter().find(|p| !p.is_file()) {
        bail!("{}: named as a shard but not a regular file (a folder, a device or a pipe?)", odd.display());
    }
    shards.sort();
    if shards.is_empty() {
        bail!("{}: no .tar shards (expected {}/*.tar of KEY.jpg + KEY.cls, as `svib data pack` writes)", dir.display(), dir.display());
    }
    Ok(shards)
}

/// WebDataset's split of a member name: (key, extension), at the first dot of the file name.
fn key_and_ext(name: &str) -> Option<(&str, &str)> {
    let base = name.rfind('/').map_or(0, |i| i + 1);
    let dot = base + name[base..].find('.')?;
    Some((&name[..dot], &name[dot + 1..]))
}

/// A sample being assembled while the shard is scanned.
#[derive(Default)]
struct Pending {
    key: String,
    image: Option<Member>,
    label: Option<i64>,
}

/// Appends the samples of one shard to `members` and `labels`, reading only the tar headers
/// (and the small `.cls` members).
fn index_shard(path: &Path, shard: u32, members: &mut Vec<Member>, labels: &mut Vec<i64>) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let size = file.metadata()?.len();
    let bad = |what: String| anyhow::anyhow!("{}: not a readable tar shard ({what})", path.display());
    let mut archive = tar::Archive::new(file);
    let mut cur = Pending::default();
    let (mut no_image, mut end) = (0usize, 0u64);
    for entry in archive.entries_with_seek().map_err(|e| bad(e.to_string()))? {
        let mut e = entry.map_err(|e| bad(e.to_string()))?;
        end = e.raw_file_position().saturating_add(e.size().div_ceil(512).saturating_mul(512));
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = e.path().map_err(|e| bad(e.to_string()))?.to_string_lossy().into_owned();
        let Some((key, ext)) = key_and_ext(&name) else { continue };
        if key != cur.key {
            no_image += flush(std::mem::take(&mut cur), members, labels);
            cur.key = key.to_string();
        }
        let (offset, len) = (e.raw_file_position(), e.size());
        if offset.saturating_add(len) > size {
            bail!("{}: member {name} runs past the end of the file (truncated shard?)", path.display());
        }
        let ext = ext.to_ascii_lowercase();
        if EXTENSIONS.contains(&ext.as_str()) {
            cur.image = Some(Member { shard, offset, len });
        } else if ext == "cls" {
            let mut text = String::new();
            (&mut e).take(MAX_CLS_BYTES).read_to_string(&mut text).map_err(|err| bad(format!("{name}: {err}")))?;
            let l = text.trim().parse::<i64>().map_err(|_| anyhow::anyhow!("{}: {name}: expected an integer class, got {:?}", path.display(), text.trim()))?;
            cur.label = Some(l);
        }
    }
    no_image += flush(cur, members, labels);
    // a complete archive ends with zero blocks after its last member; a cut-off copy does not
    if end > 0 && size < end + 512 {
        bail!("{}: truncated (no end-of-archive block after the last member)", path.display());
    }
    if no_image > 0 {
        eprintln!("warning: {}: skipped {no_image} sample(s) without an image member ({})", path.display(), EXTENSIONS.join(", "));
    }
    Ok(())
}

/// Adds a finished sample; returns 1 when it had no image (and is skipped), else 0.
fn flush(p: Pending, members: &mut Vec<Member>, labels: &mut Vec<i64>) -> usize {
    match p.image {
        Some(m) => {
            members.push(m);
            labels.push(p.label.unwrap_or(-1));
            0
        }
        None => usize::from(!p.key.is_empty()),
    }
}

/// The class names: `classes.txt` beside the split folders, or `0..=max label`.
fn class_names(root: &Path, labels: &[i64]) -> Result<Vec<String>> {
    let path = root.join(CLASSES_FILE);
    if path.is_file() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read as text", path.display()))?;
        return Ok(text.lines().map(str::to_string).collect());
    }
    let n = labels.iter().copied().max().unwrap_or(-1) + 1;
    Ok((0..n).map(|c| c.to_string()).collect())
}

/// The encoded bytes of one sample's image.
pub fn read(shards: &[PathBuf], m: &Member) -> Result<Vec<u8>> {
    let path = &shards[m.shard as usize];
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut buf = vec![0u8; m.len as usize];
    file.read_exact_at(&mut buf, m.offset).with_context(|| format!("{}: cannot read {} bytes at {} (changed since it was indexed?)", path.display(), m.len, m.offset))?;
    Ok(buf)
}

/// How messages name a sample: its shard and offset.
pub fn member_name(shards: &[PathBuf], m: &Member) -> String {
    format!("{} (member at byte {})", shards[m.shard as usize].display(), m.offset)
}

/// Decodes one sample's image.
pub fn decode(shards: &[PathBuf], m: &Member) -> Result<ImageU8> {
    super::decode::decode_bytes(&read(shards, m)?, member_name(shards, m))
}

/// WebDataset's epoch order over `members`: shards in a shuffled order, each read front to back,
/// through a shuffle buffer of `buffer` samples.
pub fn buffered_order(members: &[Member], buffer: usize, rng: &mut impl Rng) -> Vec<usize> {
    let shards = members.iter().map(|m| m.shard as usize + 1).max().unwrap_or(0);
    let mut by_shard: Vec<Vec<usize>> = vec![vec![]; shards];
    members.iter().enumerate().for_each(|(i, m)| by_shard[m.shard as usize].push(i));
    let mut shard_order: Vec<usize> = (0..shards).collect();
    shard_order.shuffle(rng);
    let mut out = Vec::with_capacity(members.len());
    let mut buf: Vec<usize> = Vec::with_capacity(buffer);
    for i in shard_order.into_iter().flat_map(|s| std::mem::take(&mut by_shard[s])) {
        if buf.len() < buffer.max(1) {
            buf.push(i);
        } else {
            let j = rng.random_range(0..buf.len());
            out.push(std::mem::replace(&mut buf[j], i));
        }
    }
    buf.shuffle(rng);
    out.extend(buf);
    out
}

#[cfg(test)]
mod tests;
