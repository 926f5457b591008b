//! Weighted k-nearest-neighbour classification (SPEC §5, DINO's eval_knn.py): cosine similarity
//! of L2-normalised features, the k nearest training samples vote with weight exp(sim / T).
use serde::Serialize;
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KnnResult {
    pub top1: f64,
    pub top5: f64,
    pub k: i64,
    pub n_train: i64,
    pub n_test: i64,
}

/// Classifies `test` against `train` (both `[n, d]`, already L2-normalised, same device).
/// Test rows go in chunks so that the `[chunk, n_train]` similarity block stays small.
pub fn knn_classify(train: &Tensor, train_labels: &Tensor, test: &Tensor, test_labels: &Tensor, num_classes: i64, k: i64, temperature: f64) -> KnnResult {
    // about 256 MiB of f32 similarities per chunk
    let chunk = (((256 << 20) / 4) / train.size()[0].max(1)).clamp(1, 1024);
    knn_classify_chunked(train, train_labels, test, test_labels, num_classes, k, temperature, chunk)
}

/// [`knn_classify`] with an explicit number of test rows per similarity block.
#[allow(clippy::too_many_arguments)]
pub fn knn_classify_chunked(train: &Tensor, train_labels: &Tensor, test: &Tensor, test_labels: &Tensor, num_classes: i64, k: i64, temperature: f64, chunk: i64) -> KnnResult {
    let _guard = tch::no_grad_guard();
    let (n_train, n_test) = (train.size()[0], test.size()[0]);
    let k = k.min(n_train);
    let train_t = train.transpose(0, 1);
    let train_labels = train_labels.to_kind(Kind::Int64);
    let (mut top1, mut top5) = (0i64, 0i64);
    let mut start = 0;
    while start < n_test {
        let len = chunk.min(n_test - start);
        let feats = test.narrow(0, start, len);
        let targets = test_labels.narrow(0, start, len).to_kind(Kind::Int64).view([-1, 1]);
        let sim = feats.matmul(&train_t);
        let (dist, idx) = sim.topk(k, 1, true, true);
        let neighbours = train_labels.index_select(0, &idx.view([-1])).view([len, k]);
        let weights = (dist / temperature).exp();
        let votes = Tensor::zeros([len, num_classes], (Kind::Float, feats.device())).scatter_add(1, &neighbours, &weights.to_kind(Kind::Float));
        let preds = votes.argsort(1, true);
        let correct = preds.eq_tensor(&targets);
        top1 += correct.narrow(1, 0, 1).sum(Kind::Int64).int64_value(&[]);
        top5 += correct.narrow(1, 0, 5.min(num_classes)).sum(Kind::Int64).int64_value(&[]);
        start += len;
    }
    KnnResult { top1: 100.0 * top1 as f64 / n_test as f64, top5: 100.0 * top5 as f64 / n_test as f64, k, n_train, n_test }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[[f32; 2]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let x = Tensor::from_slice(&flat).view([-1, 2]);
        &x / x.norm_scalaropt_dim(2, [1], true)
    }

    #[test]
    fn weighted_vote_by_hand() {
        // train: class 0 at angle 0 (x2), class 1 at angle 60deg (x1). Test at angle 40deg.
        let train = t(&[[1.0, 0.0], [1.0, 0.0], [0.5, 0.866_025_4]]);
        let tl = Tensor::from_slice(&[0i64, 0, 1]);
        let a = 40f32.to_radians();
        let test = t(&[[a.cos(), a.sin()]]);
        // k = 3, T = 0.07: class 0 weight 2*exp(cos40/T), class 1 exp(cos20/T) -> class 1 wins
        let w0 = 2.0 * (40f64.to_radians().cos() / 0.07).exp();
        let w1 = (20f64.to_radians().cos() / 0.07).exp();
        assert!(w1 > w0);
        let r = knn_classify(&train, &tl, &test, &Tensor::from_slice(&[1i64]), 2, 3, 0.07);
        assert_eq!((r.top1, r.top5, r.k), (100.0, 100.0, 3));
        // with a large T the two class-0 votes outweigh the closer class-1 one
        let r = knn_classify(&train, &tl, &test, &Tensor::from_slice(&[1i64]), 2, 3, 100.0);
        assert_eq!(r.top1, 0.0);
        // k larger than the training set is clamped
        assert_eq!(knn_classify(&train, &tl, &test, &Tensor::from_slice(&[0i64]), 2, 20, 100.0).k, 3);
    }

    #[test]
    fn chunking_does_not_change_the_result() {
        tch::manual_seed(3);
        let train = Tensor::randn([300, 8], (Kind::Float, tch::Device::Cpu));
        let train = &train / train.norm_scalaropt_dim(2, [1], true);
        let tl = Tensor::randint(7, [300], (Kind::Int64, tch::Device::Cpu));
        let test: Tensor = train.narrow(0, 0, 50) + Tensor::randn([50, 8], (Kind::Float, tch::Device::Cpu)) * 0.1;
        let test = &test / test.norm_scalaropt_dim(2, [1], true);
        let r = knn_classify(&train, &tl, &test, &tl.narrow(0, 0, 50), 7, 1, 0.07);
        // the nearest neighbour of a slightly moved training point is almost always itself
        assert!(r.top1 >= 90.0, "{r:?}");
        assert!(r.top5 >= r.top1 && r.top5 <= 100.0, "{r:?}");
        // blocks of 1, 7 (not dividing 50) or all test rows give the same result
        for chunk in [1, 7, 50] {
            let c = knn_classify_chunked(&train, &tl, &test, &tl.narrow(0, 0, 50), 7, 20, 0.07, chunk);
            let full = knn_classify_chunked(&train, &tl, &test, &tl.narrow(0, 0, 50), 7, 20, 0.07, 1024);
            assert_eq!(c, full, "chunk {chunk}");
        }
    }
}
