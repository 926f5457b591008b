//! Per-iteration schedules (DINO's `cosine_scheduler` and SPEC §2's beta decay).
#[cfg(test)]
use super::config::MethodConfig;
use super::config::{BetaSchedule, Config};
use std::f64::consts::PI;

/// `end + (start - end) * (1 + cos(pi * progress)) / 2`, progress in [0, 1].
pub fn cosine(start: f64, end: f64, progress: f64) -> f64 {
    end + 0.5 * (start - end) * (1.0 + (PI * progress).cos())
}

/// The run's length in steps: `train.steps`, or `train.epochs` whole epochs.
pub fn total_steps(cfg: &Config, steps_per_epoch: usize) -> usize {
    match cfg.train.steps {
        0 => (cfg.train.epochs * steps_per_epoch).max(1),
        n => n,
    }
}

#[derive(Clone, Debug)]
pub struct Schedules {
    pub total_steps: usize,
    pub warmup_steps: usize,
    peak_lr: f64,
    min_lr: f64,
    wd: (f64, f64),
    /// The EMA teacher's momentum (methods with a momentum teacher).
    momentum: Option<(f64, f64)>,
    /// SVIB's bottleneck weight (0 for the baselines).
    beta: (f64, f64),
    beta_schedule: BetaSchedule,
}

impl Schedules {
    /// The schedules of a run of one process.
    pub fn new(cfg: &Config, steps_per_epoch: usize) -> Schedules {
        Self::with_global_batch(cfg, steps_per_epoch, cfg.train.batch_size)
    }

    /// The schedules of a run of `global_batch` images per step (per-rank batch x ranks): the
    /// linear lr rule reads the global batch.
    pub fn with_global_batch(cfg: &Config, steps_per_epoch: usize, global_batch: usize) -> Schedules {
        let total_steps = total_steps(cfg, steps_per_epoch);
        let warmup = match cfg.optim.warmup_steps {
            0 => (cfg.optim.warmup_epochs * steps_per_epoch as f64).round() as usize,
            n => n,
        };
        let warmup_steps = warmup.min(total_steps);
        Schedules {
            total_steps,
            warmup_steps,
            peak_lr: cfg.optim.lr * global_batch as f64 / 256.0,
            min_lr: cfg.optim.min_lr,
            wd: (cfg.optim.weight_decay, cfg.optim.weight_decay_end),
            momentum: cfg.method.teacher().map(|t| (t.momentum_start, t.momentum_end)),
            beta: cfg.svib().map_or((0.0, 0.0), |c| (c.ib.beta_start, c.ib.beta_end)),
            beta_schedule: cfg.svib().map_or(BetaSchedule::Const, |c| c.ib.schedule),
        }
    }

    /// Linear warm-up from 0 to the peak (reached at the last warm-up step), then cosine to min_lr.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * step as f64 / (self.warmup_steps - 1).max(1) as f64;
        }
        let span = (self.total_steps - self.warmup_steps).max(1);
        cosine(self.peak_lr, self.min_lr, (step - self.warmup_steps) as f64 / span as f64)
    }

    fn progress(&self, step: usize) -> f64 {
        step as f64 / self.total_steps as f64
    }

    pub fn weight_decay(&self, step: usize) -> f64 {
        cosine(self.wd.0, self.wd.1, self.progress(step))
    }

    /// The teacher's EMA momentum (None for methods without a momentum teacher).
    pub fn teacher_momentum(&self, step: usize) -> Option<f64> {
        self.momentum.map(|(a, b)| cosine(a, b, self.progress(step)))
    }

    /// beta(t) = beta0 * (beta1 / beta0)^(t / T), or constant beta0.
    pub fn beta(&self, step: usize) -> f64 {
        let (b0, b1) = self.beta;
        match self.beta_schedule {
            BetaSchedule::Const => b0,
            BetaSchedule::Exp if b0 == 0.0 => 0.0,
            BetaSchedule::Exp => b0 * (b1 / b0).powf(self.progress(step)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> Schedules {
        let mut c = Config::default();
        c.train.epochs = 10;
        c.train.batch_size = 512;
        c.optim.warmup_epochs = 2.0;
        c.optim.lr = 0.001;
        c.optim.min_lr = 1e-6;
        Schedules::new(&c, 10) // 100 steps, 20 warm-up
    }

    #[test]
    fn lr_warmup_then_cosine() {
        let s = sched();
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(19) - 0.002).abs() < 1e-12); // peak = 0.001 * 512/256 at the last warm-up step
        assert!((s.lr(10) - 0.002 * 10.0 / 19.0).abs() < 1e-12);
        assert!((s.lr(20) - 0.002).abs() < 1e-12);
        assert!((s.lr(60) - (1e-6 + 0.5 * (0.002 - 1e-6))).abs() < 1e-12); // cosine midpoint
        assert!((s.lr(99) - cosine(0.002, 1e-6, 79.0 / 80.0)).abs() < 1e-15);
    }

    #[test]
    fn wd_momentum_beta_first_middle_last() {
        let s = sched();
        assert!((s.weight_decay(0) - 0.04).abs() < 1e-12);
        assert!((s.weight_decay(50) - 0.22).abs() < 1e-12);
        assert!((s.teacher_momentum(0).unwrap() - 0.996).abs() < 1e-12);
        assert!((s.teacher_momentum(50).unwrap() - 0.998).abs() < 1e-12);
        assert!((s.teacher_momentum(99).unwrap() - cosine(0.996, 1.0, 0.99)).abs() < 1e-15);
        assert!((s.beta(0) - 0.5).abs() < 1e-12);
        // halfway the exponential decay is the geometric mean of 0.5 and 0.01
        assert!((s.beta(50) - (0.5f64 * 0.01).sqrt()).abs() < 1e-12);
        assert!((s.beta(99) - 0.5 * 0.02f64.powf(0.99)).abs() < 1e-12);
        let mut c = Config::default();
        let MethodConfig::Svib(svib) = &mut c.method else { unreachable!() };
        svib.ib.schedule = BetaSchedule::Const;
        svib.ib.beta_start = 0.1;
        assert_eq!(Schedules::new(&c, 10).beta(1234), 0.1);
        // a method without a momentum teacher has no momentum schedule, a baseline no beta
        c.method = MethodConfig::SimClr(Default::default());
        assert_eq!((Schedules::new(&c, 10).teacher_momentum(5), Schedules::new(&c, 10).beta(5)), (None, 0.0));
    }

    /// With train.steps the schedules span the steps, whatever the epoch length: 8,000 and
    /// 60,000 images get the same values at the same step.
    #[test]
    fn step_budget_replaces_epochs() {
        let mut c = Config::default();
        c.train.steps = 1000;
        c.train.epochs = 3;
        c.train.batch_size = 256;
        c.optim.warmup_steps = 100;
        c.optim.lr = 0.001;
        c.optim.min_lr = 0.0;
        for spe in [62, 468] {
            let s = Schedules::new(&c, spe);
            assert_eq!((s.total_steps, s.warmup_steps), (1000, 100));
            assert_eq!(s.lr(0), 0.0);
            assert!((s.lr(99) - 0.001).abs() < 1e-15);
            assert!((s.lr(550) - 0.0005).abs() < 1e-12); // cosine midpoint of 900 steps
            assert!((s.beta(0) - 0.5).abs() < 1e-12);
            assert!((s.beta(500) - (0.5f64 * 0.01).sqrt()).abs() < 1e-12);
            assert!((s.beta(1000) - 0.01).abs() < 1e-12);
            assert!((s.teacher_momentum(500).unwrap() - 0.998).abs() < 1e-12);
            assert!((s.weight_decay(1000) - 0.4).abs() < 1e-12);
        }
    }
}
