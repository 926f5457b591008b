//! The losses of every method as pure functions of tensors (no networks, no state), each tested
//! against hand-computed values or an independent implementation (PyTorch, lightly), and the one
//! helper that averages a term over DINO's pairs of views.
use super::head::l2n;
use tch::{Kind, Tensor};

/// Mean of `term(i, v)` over DINO's pairs of views: every teacher (target) view `i` in
/// `0..n_teacher` with every student (online) view `v` in `0..n_student`, `v != i`. The sum runs
/// in that order, so every method that uses it keeps its numbers bit for bit.
pub fn cross_view_mean(n_teacher: usize, n_student: usize, mut term: impl FnMut(usize, usize) -> Tensor) -> Tensor {
    let mut total: Option<Tensor> = None;
    let mut n = 0;
    for i in 0..n_teacher {
        for v in (0..n_student).filter(|&v| v != i) {
            let t = term(i, v);
            total = Some(match total {
                None => Tensor::zeros([], (Kind::Float, t.device())) + t,
                Some(acc) => acc + t,
            });
            n += 1;
        }
    }
    total.expect("at least one pair of views") / n as f64
}

/// Cross-entropy of the teacher's (detached) assignments against the student's log-probabilities,
/// averaged over DINO's pairs (SVIB's consistency term, DINO's and SwAV's loss).
pub fn consistency_ce(teacher_probs: &[Tensor], student_logp: &[Tensor]) -> Tensor {
    cross_view_mean(teacher_probs.len(), student_logp.len(), |i, v| (-(&teacher_probs[i] * &student_logp[v]).sum_dim_intlist(-1, false, Kind::Float)).mean(Kind::Float))
}

/// Mean over rows of KL(softmax(logits) || q), `log_q` broadcast against `[N, K]` (SVIB's
/// bottleneck term).
pub fn kl_to_prior(logits: &Tensor, log_q: &Tensor) -> Tensor {
    let logp = logits.log_softmax(-1, Kind::Float);
    (logp.exp() * (&logp - log_q)).sum_dim_intlist(-1, false, Kind::Float).mean(Kind::Float)
}

/// Entropy of each row of probabilities (natural log), `[N]`.
pub fn entropy(p: &Tensor) -> Tensor {
    -(p * p.clamp_min(1e-12).log()).sum_dim_intlist(-1, false, Kind::Float)
}

/// Sinkhorn-Knopp on scores `[B, K]`: codes whose rows sum to 1 and whose columns each hold
/// 1/K of the mass (SwAV's `distributed_sinkhorn` on one process).
pub fn sinkhorn(scores: &Tensor, epsilon: f64, iters: usize) -> Tensor {
    let (b, k) = (scores.size()[0] as f64, scores.size()[1] as f64);
    // In the log domain: exp(scores / epsilon) overflows f32 once scores / epsilon passes ~88
    // (cosines over a teacher temperature of 0.01), and plain normalisation then gives NaN.
    let lse = |t: &Tensor, dim: i64| t.logsumexp([dim].as_slice(), true);
    let mut log_q = (scores / epsilon).transpose(0, 1).to_kind(Kind::Float); // [K, B]
    log_q = &log_q - log_q.flatten(0, -1).logsumexp([0i64].as_slice(), false);
    for _ in 0..iters {
        log_q = &log_q - lse(&log_q, 1) - k.ln();
        log_q = &log_q - lse(&log_q, 0) - b.ln();
    }
    (log_q + b.ln()).exp().transpose(0, 1)
}

/// DINO's loss on head outputs: the teacher's global-view outputs `[2B, K]` centred and
/// sharpened at `teacher_temp`, the student's outputs `[V*B, K]` at `student_temp`, and the
/// cross-entropy averaged over pairs (teacher view i, student view v != i). Returns the loss and
/// the teacher's probabilities.
pub fn dino_loss(student_out: &Tensor, n_views: i64, teacher_out: &Tensor, center: &Tensor, teacher_temp: f64, student_temp: f64) -> (Tensor, Tensor) {
    let logp_s = (student_out / student_temp).log_softmax(-1, Kind::Float).chunk(n_views, 0);
    let p_t = ((teacher_out - center) / teacher_temp).softmax(-1, Kind::Float).detach();
    (consistency_ce(&p_t.chunk(2, 0), &logp_s), p_t)
}

/// DINO's centre update after a step: `momentum * center + (1 - momentum) * mean`, the mean taken
/// over all rows of the teacher's outputs `[2B, K]` (both global views together).
pub fn update_center(center: &Tensor, teacher_out: &Tensor, momentum: f64) -> Tensor {
    center * momentum + teacher_out.mean_dim([0i64].as_slice(), true, Kind::Float) * (1.0 - momentum)
}

/// BYOL: mean over DINO's pairs of 2 - 2 cos(p_v, z_i) for target views i and online
/// predictions v != i.
pub fn byol_loss(targets: &[Tensor], predictions: &[Tensor]) -> Tensor {
    let targets: Vec<Tensor> = targets.iter().map(l2n).collect();
    cross_view_mean(targets.len(), predictions.len(), |i, v| ((l2n(&predictions[v]) * &targets[i]).sum_dim_intlist(-1, false, Kind::Float) * -2.0 + 2.0).mean(Kind::Float))
}

/// InfoNCE: cross-entropy of `[q.k+, q.queue] / t` with the positive at index 0, for unit-norm
/// queries `q [N, D]`, keys `k [N, D]` and `queue [Q, D]` (MoCo v2).
pub fn info_nce(q: &Tensor, k: &Tensor, queue: &Tensor, temperature: f64) -> Tensor {
    info_nce_with_negatives(q, k, &q.matmul(&queue.transpose(0, 1)), temperature)
}

/// InfoNCE given the negative similarities `q.queue [N, Q]` (computed once per query view and
/// shared by both keys: the queue product dominates MoCo's cost on small backbones).
pub fn info_nce_with_negatives(q: &Tensor, k: &Tensor, neg: &Tensor, temperature: f64) -> Tensor {
    let pos = (q * k).sum_dim_intlist(-1, true, Kind::Float);
    let logits = Tensor::cat(&[pos, neg.shallow_clone()], 1) / temperature;
    let labels = Tensor::zeros([q.size()[0]], (Kind::Int64, q.device()));
    logits.cross_entropy_for_logits(&labels)
}

/// SimCLR's NT-Xent on two views' projections `[B, D]` (normalised here): for each of the 2B
/// rows, cross-entropy over the 2B - 1 others at `temperature`, the positive being the same
/// image's other view; the mean over the 2B rows (lightly's `NTXentLoss` without a memory bank).
pub fn nt_xent(z0: &Tensor, z1: &Tensor, temperature: f64) -> Tensor {
    nt_xent_rows(z0, z1, 0, z0.size()[0], temperature)
}

/// [`nt_xent`] averaged over the anchors of images `first..first + n` only (both views), against
/// every row: one rank's part of the loss over a gathered global batch (the mean over the ranks
/// of their parts is the global batch's NT-Xent).
pub fn nt_xent_rows(z0: &Tensor, z1: &Tensor, first: i64, n: i64, temperature: f64) -> Tensor {
    let b = z0.size()[0];
    let z = Tensor::cat(&[l2n(z0), l2n(z1)], 0);
    let opts = (Kind::Int64, z.device());
    let anchors = Tensor::cat(&[Tensor::arange_start(first, first + n, opts), Tensor::arange_start(b + first, b + first + n, opts)], 0);
    let own = Tensor::zeros([2 * n, 2 * b], (Kind::Bool, z.device())).scatter_value(1, &anchors.unsqueeze(1), 1);
    let logits = (z.index_select(0, &anchors).matmul(&z.transpose(0, 1)) / temperature).masked_fill(&own, f64::NEG_INFINITY);
    logits.cross_entropy_for_logits(&(anchors + b).remainder(2 * b))
}

#[cfg(test)]
mod tests;
