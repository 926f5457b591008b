//! Per-dataset normalisation: known mean/std presets, or computed from the training split and
//! cached (in $SVIB_CACHE_DIR, $XDG_CACHE_HOME/svib or ~/.cache/svib).
use super::{DataSpec, Dataset};
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

/// Per-channel mean and standard deviation of pixel values scaled to [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Norm {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Norm {
    /// The usual published values (torchvision, solo-learn).
    pub fn preset(name: &str) -> Option<Norm> {
        let (m, s): (&[f32], &[f32]) = match name {
            "fashion-mnist" => (&[0.2860], &[0.3530]),
            "mnist" => (&[0.1307], &[0.3081]),
            "kmnist" => (&[0.1918], &[0.3483]),
            "cifar10" => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]),
            "cifar100" => (&[0.5071, 0.4865, 0.4409], &[0.2673, 0.2564, 0.2762]),
            "stl10" => (&[0.4467, 0.4398, 0.4066], &[0.2603, 0.2566, 0.2713]),
            "imagenet" => (&[0.485, 0.456, 0.406], &[0.229, 0.224, 0.225]),
            _ => return None,
        };
        Some(Norm { mean: m.to_vec(), std: s.to_vec() })
    }

    /// Mean and std over (up to 20,000 evenly spaced) images, or 2,000 for a streamed set (each
    /// decoded from its file; one that does not decode is left out here and named when trained
    /// on); grey images count in every channel.
    pub fn compute(ds: &Dataset) -> Norm {
        use rayon::prelude::*;
        let c = ds.channels() as usize;
        let idx = sample(ds);
        let mut t = Sums::new(c);
        if ds.is_streamed() {
            // per-image sums, decoded in parallel and dropped at once (memory: the images in flight)
            let parts: Vec<Option<Sums>> = idx.par_iter().map(|&i| ds.image(i).ok().map(|img| Sums::new(c).add(&img))).collect();
            parts.into_iter().flatten().for_each(|p| t.merge(&p));
        } else {
            // one running sum, image after image
            t = idx.iter().fold(t, |t, &i| t.add(&ds.images[i]));
        }
        let Sums { sum, sq, n } = t;
        let mean: Vec<f32> = (0..c).map(|i| (sum[i] / n[i]) as f32).collect();
        let std = (0..c).map(|i| ((sq[i] / n[i] - (sum[i] / n[i]).powi(2)).max(1e-12).sqrt()) as f32).collect();
        Norm { mean, std }
    }

    /// The preset for the spec's name, else the cached or freshly computed statistics (cached
    /// under a key that changes when any image they are computed from changes).
    pub fn for_dataset(spec: &DataSpec, train: &Dataset) -> Norm {
        Norm::cached_in(cache_base(), spec, train)
    }

    /// [`Self::for_dataset`] with its cache under `base` (none: not cached).
    fn cached_in(base: Option<PathBuf>, spec: &DataSpec, train: &Dataset) -> Norm {
        if let Some(n) = Norm::preset(&spec.name) {
            return n;
        }
        let path = base.map(|b| cache_path(b, spec, train));
        if let Some(n) = path.as_ref().and_then(|p| std::fs::read(p).ok()).and_then(|b| serde_json::from_slice::<Norm>(&b).ok()) {
            if n.mean.len() == train.channels() as usize {
                return n;
            }
        }
        let n = Norm::compute(train);
        if let Some(p) = path {
            if let Ok(json) = serde_json::to_vec(&n) {
                let _ = crate::util::write_atomic(&p, &json);
            }
        }
        n
    }

    /// The same statistics for `c` output channels (a grey preset replicated for RGB output).
    pub fn with_channels(&self, c: usize) -> Norm {
        if self.mean.len() == c {
            return self.clone();
        }
        let avg = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        if c == 1 {
            Norm { mean: vec![avg(&self.mean)], std: vec![avg(&self.std)] }
        } else {
            Norm { mean: vec![self.mean[0]; c], std: vec![self.std[0]; c] }
        }
    }
}

/// Per-channel sums of pixel values and their squares, and pixel counts (grey images count in
/// every channel).
struct Sums {
    sum: Vec<f64>,
    sq: Vec<f64>,
    n: Vec<f64>,
}

impl Sums {
    fn new(c: usize) -> Sums {
        Sums { sum: vec![0.0; c], sq: vec![0.0; c], n: vec![0.0; c] }
    }

    /// Adds every pixel of `img` to the running sums.
    fn add(mut self, img: &crate::data::ImageU8) -> Sums {
        let c = self.sum.len();
        for px in img.data.chunks_exact(img.c as usize) {
            for ch in 0..c {
                let v = px[ch.min(px.len() - 1)] as f64 / 255.0;
                self.sum[ch] += v;
                self.sq[ch] += v * v;
                self.n[ch] += 1.0;
            }
        }
        self
    }

    fn merge(&mut self, o: &Sums) {
        for ch in 0..self.sum.len() {
            self.sum[ch] += o.sum[ch];
            self.sq[ch] += o.sq[ch];
            self.n[ch] += o.n[ch];
        }
    }
}

/// The images the statistics are computed from: up to 20,000 evenly spaced, 2,000 for a streamed set.
fn sample(ds: &Dataset) -> Vec<usize> {
    let step = (ds.len() / if ds.is_streamed() { 2_000 } else { 20_000 }).max(1);
    (0..ds.len()).step_by(step).collect()
}

/// $SVIB_CACHE_DIR, $XDG_CACHE_HOME/svib or ~/.cache/svib.
fn cache_base() -> Option<PathBuf> {
    std::env::var_os("SVIB_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("svib")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/svib")))
}

/// The cache file of a set's statistics: a hash of the folder, the number of images and what
/// the statistics are computed from (the sampled images' pixels, or their files' or the shards'
/// paths, sizes and modification times), so that rewritten images are measured again.
fn cache_path(base: PathBuf, spec: &DataSpec, train: &Dataset) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    spec.dir.canonicalize().unwrap_or(spec.dir.clone()).hash(&mut h);
    spec.name.hash(&mut h);
    train.len().hash(&mut h);
    let stamp = |p: &PathBuf| std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().ok()));
    for i in sample(train) {
        match (train.images.get(i), train.files.get(i)) {
            (Some(img), _) => img.data.hash(&mut h),
            (None, Some(f)) => (f, stamp(f)).hash(&mut h),
            _ => {}
        }
    }
    train.shards.iter().for_each(|p| (p, stamp(p)).hash(&mut h));
    base.join("norm").join(format!("{:016x}.json", h.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageU8;

    #[test]
    fn computed_statistics_match_hand_values() {
        // two 1x2 grey images: pixels 0, 255, 51, 204 -> values 0, 1, .2, .8: mean .5
        let ds = Dataset {
            images: vec![ImageU8::new(2, 1, 1, vec![0, 255]), ImageU8::new(2, 1, 1, vec![51, 204])],
            labels: vec![0, 1],
            num_classes: 2,
            class_names: vec![],
            ..Default::default()
        };
        let n = Norm::compute(&ds);
        let var = (0.25 + 0.25 + 0.09 + 0.09) / 4.0f32;
        assert!((n.mean[0] - 0.5).abs() < 1e-6);
        assert!((n.std[0] - var.sqrt()).abs() < 1e-6);
        assert_eq!(n.with_channels(3).mean, vec![0.5; 3]);
    }

    #[test]
    fn rewritten_images_are_measured_again() {
        let d = tempfile::tempdir().unwrap();
        let grey = |v: u8| {
            let mut b = vec![];
            image::GrayImage::from_pixel(4, 4, image::Luma([v])).write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png).unwrap();
            b
        };
        for c in ["a", "b"] {
            std::fs::create_dir_all(d.path().join(format!("train/{c}"))).unwrap();
            std::fs::create_dir_all(d.path().join(format!("val/{c}"))).unwrap();
            std::fs::write(d.path().join(format!("val/{c}/0.png")), grey(0)).unwrap();
        }
        let write_set = |v: u8| {
            // the first image stays as it was: names, sizes and count are the same
            std::fs::write(d.path().join("train/a/0.png"), grey(128)).unwrap();
            std::fs::write(d.path().join("train/b/0.png"), grey(v)).unwrap();
        };
        let spec: DataSpec = format!("folder:{}", d.path().display()).parse().unwrap();
        let mean = || {
            let ds = crate::data::load(&spec, crate::data::Split::Train, &Default::default()).unwrap();
            Norm::cached_in(Some(d.path().join("cache")), &spec, &ds).mean[0]
        };
        write_set(0);
        assert!((mean() - 64.0 / 255.0).abs() < 1e-5);
        // a later time stamp: the file systems of CI may keep whole seconds only
        write_set(255);
        let f = std::fs::File::options().write(true).open(d.path().join("train/b/0.png")).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
        assert!((mean() - (128.0 + 255.0) / 2.0 / 255.0).abs() < 1e-5);
    }
}
