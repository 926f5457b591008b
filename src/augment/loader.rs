//! A bounded prefetch queue: background threads augment the next batches (in parallel on the
//! rayon pool) while the training thread computes on the current one.
use super::{augment_batch_tensors, MultiCropConfig};
use crate::data::{Dataset, Norm};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::Tensor;

/// One training batch: a tensor per view (global views first) plus labels and dataset indices.
pub struct CropBatch {
    pub views: Vec<Tensor>,
    pub labels: Tensor,
    pub indices: Vec<usize>,
}

/// The shuffled order of one epoch (depends only on seed and epoch).
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_0000_0000 ^ epoch.wrapping_mul(0x2545_F491_4F6C_DD1D));
    order.shuffle(&mut rng);
    order
}

/// The order of one epoch of `ds`: [`epoch_order`], or for tar shards with a shuffle buffer
/// WebDataset's order (also derived from seed and epoch only).
pub fn dataset_order(ds: &Dataset, seed: u64, epoch: u64) -> Vec<usize> {
    if ds.shuffle_buffer == 0 || ds.members.is_empty() {
        return epoch_order(ds.len(), seed, epoch);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_0000_5A4D ^ epoch.wrapping_mul(0x2545_F491_4F6C_DD1D));
    crate::data::wds::buffered_order(&ds.members, ds.shuffle_buffer, &mut rng)
}

/// How a [`Loader`] runs.
#[derive(Clone, Copy, Debug)]
pub struct LoaderOptions {
    /// Batches made ahead of the one being consumed (at least 1).
    pub prefetch: usize,
    /// Views in pinned host memory (training on CUDA).
    pub pinned: bool,
    /// (rank, world size): a global batch is `batch` x world images of the epoch order and this
    /// rank gets its rank-th part, so the ranks together see every image once per epoch.
    pub shard: (usize, usize),
    /// Batches assembled at once, each by its own thread over the shared rayon pool (0: chosen
    /// by [`loader_threads`], as `train.loader_threads`): with one, the cores idle at the end of every batch while its last images finish and
    /// while its tensors are put together; with more, the next batch fills those gaps. The
    /// batches and their order do not depend on it.
    pub threads: usize,
}

/// The loader threads a request of `requested` means: itself, or with 0 half the rayon pool's
/// threads, from 1 to 8. Measured on a 16-core GPU host (docs/PERFORMANCE.md, "GPU"): 8 fed
/// paper-rn50 and paper-vit-s16 at 1.4-1.6x the images/s of 1; on 2 cores this stays 1; more
/// than 8 was not measured, and each thread holds batches of its own.
pub fn loader_threads(requested: usize) -> usize {
    if requested == 0 {
        (rayon::current_num_threads() / 2).clamp(1, 8)
    } else {
        requested
    }
}

/// The most batches a loader holds at once, the one being consumed included: each thread one
/// being made and its queue's (prefetch spread over the threads, at least one each).
pub fn batches_held(prefetch: usize, threads: usize) -> usize {
    let threads = loader_threads(threads);
    threads * (prefetch.max(1).div_ceil(threads) + 1) + 1
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions { prefetch: 1, pinned: false, shard: (0, 1), threads: 1 }
    }
}

/// Iterator over the batches of one epoch, produced ahead by background threads: batch b (from
/// the first one made) by thread b mod `threads`, each thread with its own bounded queue, read in
/// batch order.
pub struct Loader {
    queues: Vec<Receiver<anyhow::Result<CropBatch>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    /// Batches this loader yields (`batches - skip`).
    expected: usize,
    pub batches: usize,
}

impl Loader {
    /// Batches `skip..` of epoch `epoch` (drop-last, as DINO's loader) of `batch` images each.
    pub fn new(ds: Arc<Dataset>, cfg: MultiCropConfig, norm: Norm, batch: usize, seed: u64, epoch: u64, skip: usize, opts: LoaderOptions) -> Loader {
        let order = Arc::new(dataset_order(&ds, seed, epoch));
        let (rank, world) = opts.shard;
        let batches = ds.len() / (batch * world);
        let threads = loader_threads(opts.threads);
        let depth = opts.prefetch.max(1).div_ceil(threads);
        let (mut queues, mut handles) = (Vec::new(), Vec::new());
        for t in 0..threads {
            let (tx, rx) = sync_channel(depth);
            let (ds, cfg, norm, order) = (ds.clone(), cfg.clone(), norm.clone(), order.clone());
            handles.push(std::thread::spawn(move || {
                for b in (skip + t..batches).step_by(threads) {
                    let start = b * batch * world + rank * batch;
                    let idx = &order[start..start + batch];
                    let batch = augment_batch_tensors(&ds, idx, &cfg, &norm, seed, epoch, opts.pinned).map(|views| {
                        let labels = Tensor::from_slice(&idx.iter().map(|&i| ds.labels[i]).collect::<Vec<_>>());
                        CropBatch { views, labels, indices: idx.to_vec() }
                    });
                    let failed = batch.is_err();
                    // an error (an image that does not decode) ends the epoch after it is delivered
                    if tx.send(batch).is_err() || failed {
                        return; // consumer dropped the loader
                    }
                }
            }));
            queues.push(rx);
        }
        Loader { queues, handles, next: 0, expected: batches.saturating_sub(skip), batches }
    }
}

impl Iterator for Loader {
    type Item = anyhow::Result<CropBatch>;
    fn next(&mut self) -> Option<anyhow::Result<CropBatch>> {
        if self.next >= self.expected {
            return None;
        }
        let t = self.next % self.queues.len();
        let item = self.queues[t].recv().unwrap_or_else(|_| Err(anyhow::anyhow!("loader thread {t} stopped before batch {} of the epoch (it panicked)", self.next)));
        // after an error the epoch ends: the thread that sent it has stopped
        self.next = if item.is_err() { self.expected } else { self.next + 1 };
        Some(item)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock the producers: drop the receivers so their next send fails, then join them.
        self.queues.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageU8;

    #[test]
    fn yields_all_full_batches_in_seeded_order() {
        let ds = Arc::new(Dataset {
            images: (0..10).map(|i| ImageU8::new(8, 8, 1, vec![i as u8 * 20; 64])).collect(),
            labels: (0..10).collect(),
            num_classes: 10,
            class_names: vec![],
            ..Default::default()
        });
        let cfg = MultiCropConfig { global_size: 8, local_size: 4, local_crops: 1, ..MultiCropConfig::default() };
        let norm = Norm { mean: vec![0.5], std: vec![0.5] };
        let batches: Vec<CropBatch> =
            Loader::new(ds.clone(), cfg.clone(), norm.clone(), 3, 9, 0, 0, LoaderOptions { prefetch: 2, ..Default::default() }).collect::<anyhow::Result<_>>().unwrap();
        assert_eq!(batches.len(), 3);
        assert_eq!(batches[0].views.len(), 3);
        assert_eq!(batches[0].views[2].size(), vec![3, 3, 4, 4]);
        let order = epoch_order(10, 9, 0);
        assert_eq!(batches[1].indices, order[3..6].to_vec());
        assert_eq!(Vec::<i64>::try_from(&batches[1].labels).unwrap(), order[3..6].iter().map(|&i| i as i64).collect::<Vec<_>>());
        // skipping resumes mid-epoch with the same batches
        let rest: Vec<CropBatch> =
            Loader::new(ds.clone(), cfg.clone(), norm.clone(), 3, 9, 0, 2, LoaderOptions { prefetch: 2, ..Default::default() }).collect::<anyhow::Result<_>>().unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].indices, batches[2].indices);
        assert!(rest[0].views[0].equal(&batches[2].views[0]));
        // the views equal augment_batch's buffers, value for value
        let bufs = crate::augment::augment_batch(&ds, &batches[1].indices, &cfg, &norm, 9, 0).unwrap();
        for (t, (data, shape)) in batches[1].views.iter().zip(bufs.views) {
            assert_eq!(t.size(), shape.map(|s| s as i64).to_vec());
            assert_eq!(Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap(), data);
        }
        // dropping a loader early does not hang
        assert_ne!(epoch_order(10, 9, 1), order);
    }

    #[test]
    fn several_threads_make_the_same_batches_in_the_same_order() {
        let ds = Arc::new(Dataset {
            images: (0..23).map(|i| ImageU8::new(8, 8, 1, (0..64).map(|p| (i * 7 + p) as u8).collect())).collect(),
            labels: (0..23).map(|i| i % 5).collect(),
            num_classes: 5,
            class_names: vec![],
            ..Default::default()
        });
        let cfg = MultiCropConfig { global_size: 8, local_size: 4, local_crops: 2, ..MultiCropConfig::default() };
        let norm = Norm { mean: vec![0.5], std: vec![0.5] };
        let run = |threads: usize, prefetch: usize, skip: usize| -> Vec<CropBatch> {
            let opts = LoaderOptions { prefetch, threads, ..Default::default() };
            Loader::new(ds.clone(), cfg.clone(), norm.clone(), 3, 4, 1, skip, opts).collect::<anyhow::Result<_>>().unwrap()
        };
        let one = run(1, 2, 0);
        assert_eq!(one.len(), 7);
        for (threads, prefetch, skip) in [(3, 2, 0), (2, 1, 0), (4, 8, 3), (7, 1, 0), (9, 3, 2)] {
            let many = run(threads, prefetch, skip);
            assert_eq!(many.len(), 7 - skip, "threads {threads} skip {skip}");
            for (a, b) in one[skip..].iter().zip(&many) {
                assert_eq!(a.indices, b.indices);
                assert!(a.labels.equal(&b.labels));
                assert!(a.views.iter().zip(&b.views).all(|(x, y)| x.equal(y)), "threads {threads}: views differ");
            }
        }
        // what a loader holds at most: 1 consumed + per thread one being made and its queue
        assert_eq!((batches_held(3, 1), batches_held(3, 8), batches_held(0, 1), batches_held(8, 3)), (5, 17, 3, 13));
        // dropping a loader of several threads after one batch does not hang
        let mut l = Loader::new(ds.clone(), cfg.clone(), norm.clone(), 3, 4, 1, 0, LoaderOptions { prefetch: 1, threads: 3, ..Default::default() });
        assert!(l.next().unwrap().is_ok());
        drop(l);
    }

    #[test]
    fn a_corrupt_image_past_the_first_ones_is_named_by_the_loader() {
        let d = tempfile::tempdir().unwrap();
        crate::data::folder::tests::tree(d.path());
        let good = std::fs::read(d.path().join("train/cat/0.png")).unwrap();
        for i in 0..100 {
            std::fs::write(d.path().join(format!("train/cat/a{i:02}.png")), &good).unwrap();
        }
        // sorts last in cat/ (image 102 of 107), where opening (which decodes 64 images spread over the set) does not look
        std::fs::write(d.path().join("train/cat/zz.png"), &good[..good.len() / 2]).unwrap();
        let ds = std::sync::Arc::new(crate::data::folder::load(d.path(), crate::data::Split::Train, &Default::default()).unwrap());
        assert!(ds.source_name(102).ends_with("zz.png") && !crate::data::spread(ds.len(), 64).contains(&102));
        let cfg = MultiCropConfig { global_size: 8, local_size: 4, local_crops: 1, channels: 3, ..Default::default() };
        let norm = crate::data::Norm { mean: vec![0.5; 3], std: vec![0.5; 3] };
        let n = ds.len();
        let batches: Vec<_> = Loader::new(ds, cfg, norm, n, 0, 0, 0, LoaderOptions::default()).collect();
        let e = format!("{:#}", batches.into_iter().next().unwrap().err().expect("the bad file fails the batch"));
        assert!(e.contains("zz.png") && e.contains("not a decodable image"), "{e}");
    }
}
