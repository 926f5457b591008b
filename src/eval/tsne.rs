//! 2-D t-SNE of frozen features (the bhtsne crate, Barnes-Hut), for plots coloured by label.
use anyhow::{ensure, Result};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// Iterations of early exaggeration in a run of 1,000 or more.
const EARLY_EPOCHS: usize = 250;

pub struct TsneOpts {
    pub perplexity: f32,
    pub epochs: usize,
    /// Barnes-Hut accuracy (smaller: more exact, slower).
    pub theta: f32,
    pub seed: u64,
}

/// `rows` feature vectors (each `dim` long, row-major in `features`) embedded in 2-D, with
/// Euclidean distance (for unit-norm features a monotone function of the cosine).
pub fn tsne_2d(features: &[f32], dim: usize, o: &TsneOpts) -> Result<Vec<[f32; 2]>> {
    ensure!(dim > 0 && features.len().is_multiple_of(dim), "features: {} values are not rows of {dim}", features.len());
    let n = features.len() / dim;
    // bhtsne looks at 3 x perplexity neighbours of every point
    // (below 1 it looks at no neighbour at all)
    ensure!(o.perplexity >= 1.0 && (3.0 * o.perplexity) < (n - 1) as f32, "--perplexity {}: needs 1 <= perplexity and 3 x perplexity < points - 1 ({n} points)", o.perplexity);
    ensure!(o.epochs >= 1 && o.theta > 0.0, "t-SNE: expected epochs >= 1 and theta > 0");
    let rows: Vec<&[f32]> = features.chunks(dim).collect();
    // a seeded start (the crate's own is not seedable): small Gaussian noise, as in the paper
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(o.seed);
    let normal = Normal::new(0.0f32, 1e-4).expect("valid normal");
    let start: Vec<f32> = (0..n * 2).map(|_| normal.sample(&mut rng)).collect();
    let mut t = bhtsne::tSNE::<f32, &[f32], 2>::new(&rows);
    // the early exaggeration and low momentum take 250 iterations (van der Maaten's), or the
    // first quarter of a shorter run: with 250 of 300 the points had no time to spread out
    // and ended on one dot
    let early = EARLY_EPOCHS.min(o.epochs / 4);
    t.stop_lying_epoch(early).momentum_switch_epoch(early);
    t.perplexity(o.perplexity).epochs(o.epochs).initial_embedding(start).barnes_hut(o.theta, |a, b| a.iter().zip(b.iter()).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt());
    Ok(t.embedding().chunks(2).map(|p| [p[0], p[1]]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_separated_clusters_stay_apart_in_2d() {
        // three tight clusters of 20 points in 8-D, far apart
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let noise = Normal::new(0.0f32, 0.01).unwrap();
        let mut f = vec![];
        for c in 0..3 {
            for _ in 0..20 {
                f.extend((0..8).map(|d| if d == c { 1.0 } else { 0.0 } + noise.sample(&mut rng)));
            }
        }
        let dist = |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        // 300 iterations: most of them were early exaggeration and the points ended on one dot
        for epochs in [1000, 300, 100] {
            let y = tsne_2d(&f, 8, &TsneOpts { perplexity: 5.0, epochs, theta: 0.5, seed: 0 }).unwrap();
            // t-SNE keeps neighbourhoods (not cluster centres: it may split a cluster in two):
            // every point's nearest neighbour in 2-D is from its own cluster
            for (i, p) in y.iter().enumerate() {
                let nearest = (0..y.len()).filter(|&j| j != i).min_by(|&a, &b| dist(*p, y[a]).total_cmp(&dist(*p, y[b]))).unwrap();
                assert_eq!(nearest / 20, i / 20, "{epochs} iterations: point {i}'s nearest neighbour {nearest} is from another cluster");
            }
            // spread out, not one dot
            let spread = y.iter().map(|p| dist(*p, y[0])).fold(0f32, f32::max);
            assert!(spread > 1.0, "{epochs} iterations: all points within {spread} of the first");
        }
        assert!(tsne_2d(&f, 8, &TsneOpts { perplexity: 30.0, epochs: 10, theta: 0.5, seed: 0 }).is_err());
    }
}
