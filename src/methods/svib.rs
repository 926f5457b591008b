//! SVIB (SPEC §1-§3): DINO-style self-distillation through a GMM prototype layer, plus an
//! information-bottleneck KL of the teacher's assignment against a prior q(c).
//!
//! Loss = CE(p_t(.|z2), p_s(.|z1)) + beta * KL(p_t(.|z2) || q), with
//! p(c = k | z) = softmax_k(mu_k . z / sigma^2) for unit z and unit means.
use super::encoder::{resolution_groups, Ema, Encoder};
use super::head::{l2n, Prototypes};
use super::losses::{consistency_ce, entropy, kl_to_prior, sinkhorn};
use super::{Collapse, Entropies, LossOutput, Method, StepCtx};
use super::{Shared, TeacherConfig};
use crate::data::Dataset;
use crate::eval::features::{pixel_batch, EvalPrep};
use crate::models::{ArchConfig, Backbone};
use crate::util::Num;
use anyhow::{bail, ensure, Context, Result};
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reinit {
    EveryEpoch,
    Never,
}

/// Where a re-initialisation takes its features from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReinitSource {
    /// Sampled training images, centre-cropped as for evaluation, through the teacher in eval
    /// mode (BatchNorm's running statistics).
    Images,
    /// The teacher's z2 of the latest training steps' first global views (augmented, BatchNorm
    /// on the batch), as the teacher sees images when it makes the targets; the K newest rows
    /// (`images` until K rows have been seen).
    Views,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GmmInit {
    Random,
    Features,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GmmConfig {
    /// Mixture components K.
    pub k: i64,
    /// Initial means: random (as DINO's last layer), or normalised teacher features of sampled
    /// images, as at a re-initialisation.
    pub init: GmmInit,
    /// One set of means for both branches (true) or an EMA copy for the teacher (false).
    pub shared: bool,
    pub reinit: Reinit,
    pub reinit_source: ReinitSource,
    /// Images sampled for re-initialisation (0: K).
    pub reinit_samples: usize,
    /// Std of the noise added when fewer samples than K are drawn (with replacement).
    pub reinit_noise: f64,
    pub sigma_teacher: f64,
    pub sigma_student: f64,
    /// Epochs during which the means get no gradient (DINO's freeze_last_layer).
    pub freeze_epochs: usize,
    /// Steps during which the means get no gradient; when > 0 it replaces freeze_epochs.
    pub freeze_steps: usize,
    /// Multiplies the learning rate of the means (an optimiser setting: the loss is unchanged).
    pub lr_scale: f64,
    /// Re-initialise the means every N steps instead of at epoch ends (0: at epoch ends), so
    /// that the interval does not depend on the size of the data set.
    pub reinit_every_steps: usize,
}

impl Default for GmmConfig {
    fn default() -> Self {
        GmmConfig {
            k: 65536,
            init: GmmInit::Random,
            shared: true,
            reinit: Reinit::EveryEpoch,
            reinit_source: ReinitSource::Images,
            reinit_samples: 0,
            reinit_noise: 0.01,
            sigma_teacher: 0.2,
            sigma_student: 0.32,
            freeze_epochs: 1,
            freeze_steps: 0,
            lr_scale: 1.0,
            reinit_every_steps: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prior {
    Uniform,
    Marginal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    Exp,
    Const,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IbConfig {
    pub prior: Prior,
    /// Momentum of the running marginal (prior = marginal).
    pub prior_momentum: f64,
    pub beta_start: f64,
    pub beta_end: f64,
    pub schedule: BetaSchedule,
}

impl Default for IbConfig {
    fn default() -> Self {
        IbConfig { prior: Prior::Uniform, prior_momentum: 0.9, beta_start: 0.5, beta_end: 0.01, schedule: BetaSchedule::Exp }
    }
}

/// SVIB's tables: the GMM prototype layer, the information bottleneck and the teacher.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SvibConfig {
    pub gmm: GmmConfig,
    pub ib: IbConfig,
    pub teacher: TeacherConfig,
}

impl SvibConfig {
    /// Every value within its range; errors name the key.
    pub fn validate(&self) -> Result<()> {
        let (g, ib) = (&self.gmm, &self.ib);
        let ranges = [
            ("gmm.k", g.k as f64, 2.0, (1u64 << 22) as f64),
            ("gmm.reinit_samples", g.reinit_samples as f64, 0.0, 1e8),
            ("gmm.reinit_noise", g.reinit_noise, 0.0, 10.0),
            ("gmm.sigma_teacher", g.sigma_teacher, 1e-3, 100.0),
            ("gmm.sigma_student", g.sigma_student, 1e-3, 100.0),
            ("gmm.lr_scale", g.lr_scale, 0.0, 1e3),
            ("ib.beta_start", ib.beta_start, 0.0, 1e3),
            ("ib.beta_end", ib.beta_end, 0.0, 1e3),
        ];
        for (key, v, lo, hi) in ranges {
            ensure!(v.is_finite() && v >= lo && v <= hi, "{key}: expected a value in [{}, {}], got {}", Num(lo), Num(hi), Num(v));
        }
        let pm = ib.prior_momentum;
        ensure!(pm.is_finite() && (0.0..1.0).contains(&pm), "ib.prior_momentum: expected a value in [0, 1), got {}", Num(pm));
        ensure!(
            ib.schedule == BetaSchedule::Const || ib.beta_start == 0.0 || ib.beta_end > 0.0,
            "ib.beta_end: an exponential schedule needs beta_end > 0 (or ib.schedule = \"const\")"
        );
        self.teacher.validate()
    }

    /// SPEC's objective, or which additions make it a variant.
    pub fn objective(&self) -> String {
        let mut extra = vec![];
        if self.teacher.sinkhorn_iters > 0 {
            extra.push(format!("Sinkhorn-balanced target ({} iterations)", self.teacher.sinkhorn_iters));
        }
        if self.teacher.center {
            extra.push("centred target".to_string());
        }
        if extra.is_empty() {
            "SVIB, the paper's objective".into()
        } else {
            format!("SVIB variant: {}", extra.join(", "))
        }
    }
}

pub struct Svib {
    cfg: SvibConfig,
    student_vs: nn::VarStore,
    teacher_vs: nn::VarStore,
    student: Encoder,
    teacher: Encoder,
    gmm: Prototypes,
    /// The teacher's EMA copy of the means (only when `gmm.shared = false`).
    teacher_gmm: Option<Prototypes>,
    ema: Ema,
    /// DINO's centre of the teacher's similarities, `[1, K]`.
    center: Tensor,
    /// Running marginal q(c), `[K]` (prior = marginal).
    prior: Tensor,
    /// Batch values kept from `loss` for `after_step`.
    pending_center: Option<Tensor>,
    pending_marginal: Option<Tensor>,
    /// The newest teacher features of first global views, at most K rows
    /// (`gmm.reinit_source = "views"`), and this step's, added after the step.
    recent_views: Tensor,
    pending_views: Option<Tensor>,
}

impl Svib {
    pub fn new(cfg: &SvibConfig, shared: &Shared, device: Device) -> Result<Svib> {
        let student_vs = nn::VarStore::new(device);
        let mut teacher_vs = nn::VarStore::new(device);
        let student = Encoder::new(&student_vs.root(), shared.model, shared)?;
        let dim = shared.head.out;
        let gmm = Prototypes::gmm(&student_vs.root(), cfg.gmm.k, dim);
        // DINO's teacher has no stochastic depth
        let teacher_arch = ArchConfig { drop_path: 0.0, ..shared.model.clone() };
        let teacher = Encoder::new(&teacher_vs.root(), &teacher_arch, shared)?;
        let teacher_gmm = (!cfg.gmm.shared).then(|| Prototypes::gmm(&teacher_vs.root(), cfg.gmm.k, dim));
        let ema = Ema::new(&student_vs, &mut teacher_vs);
        let k = cfg.gmm.k;
        Ok(Svib {
            cfg: cfg.clone(),
            student_vs,
            teacher_vs,
            student,
            teacher,
            gmm,
            teacher_gmm,
            ema,
            center: Tensor::zeros([1, k], (Kind::Float, device)),
            prior: Tensor::full([k], 1.0 / k as f64, (Kind::Float, device)),
            pending_center: None,
            pending_marginal: None,
            recent_views: Tensor::zeros([0, dim], (Kind::Float, device)),
            pending_views: None,
        })
    }
}

impl Method for Svib {
    fn collapse_hint(&self, c: Collapse) -> &'static str {
        match c {
            Collapse::FewComponents => "try a larger ib.beta_start, more frequent GMM re-initialisation (gmm.reinit_every_steps) or a lower optim.lr",
            Collapse::Uniform | Collapse::Constant => {
                "try head.bn_out = true, a sharper teacher (lower gmm.sigma_teacher) or more frequent GMM re-initialisation (gmm.reinit_every_steps)"
            }
        }
    }
    fn student(&self) -> &nn::VarStore {
        &self.student_vs
    }
    fn teacher(&self) -> Option<&nn::VarStore> {
        Some(&self.teacher_vs)
    }

    fn loss(&mut self, views: &[Tensor], ctx: &StepCtx) -> LossOutput {
        let g = &self.cfg.gmm;
        let n_views = views.len() as i64;
        let z_s = self.student.embed(&resolution_groups(views), true);
        let logp_s = (self.gmm.similarities(&z_s) / (g.sigma_student * g.sigma_student)).log_softmax(-1, Kind::Float).chunk(n_views, 0);
        let z_t = tch::no_grad(|| self.teacher.embed(&resolution_groups(&views[..2]), true));
        // Teacher similarities: through the shared means (gradient into them for the KL term)
        // or through the teacher's EMA means (no gradient at all).
        let sim_t = match &self.teacher_gmm {
            None => self.gmm.similarities(&z_t),
            Some(tg) => tch::no_grad(|| tg.similarities(&z_t)),
        };
        // The GMM posterior p(c|z2) (paper eq. 19): the KL term, the marginal prior and the
        // collapse statistics read it; centring and Sinkhorn balancing (options, not SPEC's
        // objective) change only the consistency target.
        let t2 = g.sigma_teacher * g.sigma_teacher;
        let logits_t = &sim_t / t2;
        let posterior = logits_t.detach().softmax(-1, Kind::Float);
        let target = if self.cfg.teacher.center { ((&sim_t - &self.center) / t2).detach() } else { logits_t.detach() };
        let p_t = match self.cfg.teacher.sinkhorn_iters {
            0 if !self.cfg.teacher.center => posterior.shallow_clone(),
            0 => target.softmax(-1, Kind::Float),
            // DINOv2: balance the target over the batch; exp(logits) = exp(sim / sigma_t^2)
            // over the global batch of a distributed run, as one process would balance it
            n => tch::no_grad(|| crate::dist::own_rows(&sinkhorn(&crate::dist::gather_views(&target, 2), 1.0, n), 2)),
        };
        let ce = consistency_ce(&p_t.chunk(2, 0), &logp_s);
        let log_q = match self.cfg.ib.prior {
            Prior::Uniform => Tensor::full([1], -(g.k as f64).ln(), (Kind::Float, p_t.device())),
            Prior::Marginal => self.prior.clamp_min(1e-12).log().unsqueeze(0),
        };
        let kl = kl_to_prior(&logits_t, &log_q);
        let loss = &ce + &kl * ctx.beta;
        // batch statistics over every rank's images (each rank's mean, averaged: equal batches)
        let marginal = crate::dist::batch_mean(&posterior, false);
        let log_k = (g.k as f64).ln();
        let h_marginal = entropy(&marginal.unsqueeze(0)).double_value(&[0]);
        let h_sample = crate::dist::mean_over_ranks(&entropy(&posterior).mean(Kind::Float)).double_value(&[]);
        self.pending_center = self.cfg.teacher.center.then(|| crate::dist::batch_mean(&sim_t.detach(), true));
        self.pending_marginal = Some(marginal);
        if g.reinit_source == ReinitSource::Views && g.reinit != Reinit::Never {
            // the global batch's first views, in one process's order
            self.pending_views = Some(crate::dist::gather_over_ranks(&z_t.narrow(0, 0, z_t.size()[0] / 2).detach()));
        }
        let mut stats = vec![("h_marginal", h_marginal), ("h_marginal_rel", h_marginal / log_k), ("h_sample", h_sample), ("h_sample_rel", h_sample / log_k)];
        if self.cfg.teacher.center || self.cfg.teacher.sinkhorn_iters > 0 {
            // the variant's consistency target, which is not the posterior
            let m = crate::dist::batch_mean(&p_t, false).unsqueeze(0);
            stats.push(("h_target_marginal_rel", entropy(&m).double_value(&[0]) / log_k));
        }
        stats.push(("beta", ctx.beta));
        let entropies = Some(Entropies { marginal_rel: h_marginal / log_k, sample_rel: h_sample / log_k });
        LossOutput { loss, terms: vec![("ce", ce), ("kl", kl)], stats, entropies }
    }

    fn after_step(&mut self, ctx: &StepCtx) {
        let m = ctx.teacher_momentum;
        // the teacher's own means (gmm.shared = false) are among the EMA pairs
        self.ema.update(m);
        tch::no_grad(|| {
            if let Some(c) = self.pending_center.take() {
                let cm = self.cfg.teacher.center_momentum;
                self.center = &self.center * cm + c * (1.0 - cm);
            }
            if let Some(q) = self.pending_marginal.take() {
                let pm = self.cfg.ib.prior_momentum;
                self.prior = &self.prior * pm + q * (1.0 - pm);
            }
            if let Some(v) = self.pending_views.take() {
                let all = Tensor::cat(&[&self.recent_views, &v], 0);
                let n = all.size()[0];
                self.recent_views = all.narrow(0, (n - self.cfg.gmm.k).max(0), n.min(self.cfg.gmm.k));
            }
        });
    }

    fn frozen(&self, ctx: &StepCtx) -> Vec<String> {
        let g = &self.cfg.gmm;
        let frozen = if g.freeze_steps > 0 { ctx.step < g.freeze_steps } else { ctx.epoch < g.freeze_epochs };
        if frozen {
            vec!["gmm.means".into()]
        } else {
            vec![]
        }
    }

    fn lr_scales(&self) -> Vec<(String, f64)> {
        vec![("gmm.means".into(), self.cfg.gmm.lr_scale)]
    }

    fn at_step(&mut self, step: usize, train: &Dataset, prep: &EvalPrep, seed: u64) -> Result<Vec<String>> {
        let every = self.cfg.gmm.reinit_every_steps;
        if self.cfg.gmm.reinit == Reinit::Never || every == 0 || !step.is_multiple_of(every) {
            return Ok(vec![]);
        }
        // seeds distinct from the epoch-end draws (which use the epoch number)
        self.reinit_means(1 << 40 | step as u64, train, prep, seed).with_context(|| format!("GMM re-initialisation after step {step}"))?;
        Ok(vec!["gmm.means".into()])
    }

    fn end_epoch(&mut self, epoch: usize, train: &Dataset, prep: &EvalPrep, seed: u64) -> Result<Vec<String>> {
        if self.cfg.gmm.reinit == Reinit::Never || self.cfg.gmm.reinit_every_steps > 0 {
            return Ok(vec![]);
        }
        self.reinit_means(epoch as u64, train, prep, seed).with_context(|| format!("GMM re-initialisation at the end of epoch {}", epoch + 1))?;
        Ok(vec!["gmm.means".into()])
    }

    fn init_from_data(&mut self, train: &Dataset, prep: &EvalPrep, seed: u64) -> Result<()> {
        if self.cfg.gmm.init == GmmInit::Features {
            self.reinit_means(u64::MAX, train, prep, seed).context("GMM initialisation from features")?;
        }
        Ok(())
    }

    fn eval_backbone(&self) -> &Backbone {
        &self.teacher.backbone
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut s = vec![("center".into(), self.center.shallow_clone()), ("prior".into(), self.prior.shallow_clone())];
        if self.recent_views.size()[0] > 0 {
            s.push(("recent_views".into(), self.recent_views.shallow_clone()));
        }
        s
    }

    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        for (name, t) in state {
            match name.as_str() {
                "center" => self.center = t.to_device(self.center.device()),
                "prior" => self.prior = t.to_device(self.prior.device()),
                "recent_views" => self.recent_views = t.to_device(self.recent_views.device()),
                other => bail!("unknown method state `{other}` in checkpoint"),
            }
        }
        Ok(())
    }
}

impl Svib {
    /// Sets the means to normalised teacher features of sampled training images (SPEC §3), and
    /// the teacher's copy too; `epoch` seeds the draw.
    fn reinit_means(&mut self, epoch: u64, train: &Dataset, prep: &EvalPrep, seed: u64) -> Result<()> {
        let k = self.cfg.gmm.k as usize;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6D6D_0000 ^ epoch.wrapping_mul(0x9E37_79B9));
        let device = self.gmm.vectors.device();
        // the views' queue once it holds K rows; sampled images before that
        let feats = if self.cfg.gmm.reinit_source == ReinitSource::Views && self.recent_views.size()[0] == k as i64 {
            self.recent_views.shallow_clone()
        } else {
            let wanted = if self.cfg.gmm.reinit_samples == 0 { k } else { self.cfg.gmm.reinit_samples };
            let idx: Vec<usize> = sample(&mut rng, train.len(), wanted.min(train.len())).into_vec();
            tch::no_grad(|| -> Result<Tensor> {
                let mut parts = vec![];
                for chunk in idx.chunks(256) {
                    parts.push(self.teacher.embed(&[pixel_batch(train, chunk, prep)?.to_device(device)], false));
                }
                Ok(Tensor::cat(&parts, 0))
            })?
        };
        let m = feats.size()[0] as usize;
        let new_means = if m >= k {
            feats.narrow(0, 0, k as i64)
        } else {
            // fewer samples than components: draw with replacement and jitter, then renormalise
            let pick: Vec<i64> = (0..k).map(|_| rng.random_range(0..m) as i64).collect();
            let chosen = feats.index_select(0, &Tensor::from_slice(&pick).to_device(device));
            tch::manual_seed((seed ^ epoch) as i64);
            l2n(&(chosen + Tensor::randn([k as i64, feats.size()[1]], (Kind::Float, device)) * self.cfg.gmm.reinit_noise))
        };
        if new_means.isfinite().all().int64_value(&[]) == 0 {
            bail!("the teacher's features are not finite");
        }
        tch::no_grad(|| {
            self.gmm.vectors.copy_(&new_means);
            if let Some(tg) = &self.teacher_gmm {
                tg.vectors.shallow_clone().copy_(&new_means);
            }
        });
        Ok(())
    }

    /// The student's GMM means (for tests and inspection).
    pub fn means(&self) -> &Tensor {
        &self.gmm.vectors
    }
    /// The teacher's unit-norm projections of `x` in eval mode.
    pub fn teacher_embed(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| self.teacher.embed(&[x.shallow_clone()], false))
    }
}

#[cfg(test)]
mod tests;
