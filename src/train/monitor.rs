//! Guards that watch a run and say in plain words when it goes wrong: the two collapses of
//! self-distillation (onto a few components, and to assignments that do not depend on the
//! image) and evaluations that fall below the untrained network.

pub use crate::methods::collapse::{Collapse, Entropies};

/// What the monitor has counted: kept in checkpoints, so that a resumed run warns exactly as
/// an uninterrupted one.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MonitorState {
    /// The collapse of the latest steps and for how many steps in a row.
    pub run: Option<(Collapse, usize)>,
    /// Collapses already reported (each is reported once).
    pub reported: Vec<Collapse>,
}

/// Counts consecutive collapsed steps and reports each kind of collapse once.
#[derive(Debug)]
pub struct CollapseMonitor {
    few_threshold: f64,
    mi_threshold: f64,
    patience: usize,
    state: MonitorState,
}

impl CollapseMonitor {
    pub fn new(few_threshold: f64, mi_threshold: f64, patience: usize) -> Self {
        CollapseMonitor { few_threshold, mi_threshold, patience: patience.max(1), state: MonitorState::default() }
    }

    pub fn state(&self) -> &MonitorState {
        &self.state
    }

    /// Continues from a checkpoint's counts.
    pub fn restore(&mut self, state: MonitorState) {
        self.state = state;
    }

    /// The collapse a single step shows, if any.
    pub fn classify(&self, e: Entropies) -> Option<Collapse> {
        if e.marginal_rel < self.few_threshold {
            Some(Collapse::FewComponents)
        } else if e.marginal_rel - e.sample_rel < self.mi_threshold {
            Some(if e.sample_rel > 0.98 { Collapse::Uniform } else { Collapse::Constant })
        } else {
            None
        }
    }

    /// Feeds one step; returns the collapse the first time it has lasted `patience` steps.
    pub fn observe(&mut self, e: Entropies) -> Option<Collapse> {
        let now = self.classify(e);
        self.state.run = match (now, self.state.run) {
            (None, _) => None,
            (Some(c), Some((prev, n))) if prev == c => Some((c, n + 1)),
            (Some(c), _) => Some((c, 1)),
        };
        let (c, n) = self.state.run?;
        if n >= self.patience && !self.state.reported.contains(&c) {
            self.state.reported.push(c);
            return Some(c);
        }
        None
    }

    pub fn patience(&self) -> usize {
        self.patience
    }
}

/// The learning-curve guard's warning when an evaluation falls below the untrained backbone.
pub fn below_untrained(step: usize, top1: f64, untrained: f64) -> Option<String> {
    (top1 < untrained).then(|| {
        format!(
            "warning: at step {step} the kNN top-1 ({top1:.2}) is below the untrained backbone's ({untrained:.2}, measured before the first step): pre-training has made the features worse so far. Look for a collapse warning above; if there is none, try more steps, milder augmentations for small images, or a lower optim.lr."
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(m: f64, s: f64) -> Entropies {
        Entropies { marginal_rel: m, sample_rel: s }
    }

    #[test]
    fn names_each_collapse_after_patience_steps_once() {
        let mut mon = CollapseMonitor::new(0.05, 0.01, 3);
        assert_eq!(mon.classify(e(0.9, 0.3)), None); // healthy: confident and spread
        assert_eq!(mon.classify(e(0.02, 0.01)), Some(Collapse::FewComponents));
        assert_eq!(mon.classify(e(0.999, 0.995)), Some(Collapse::Uniform));
        assert_eq!(mon.classify(e(0.78, 0.775)), Some(Collapse::Constant)); // the run of issue 14
        assert_eq!(mon.observe(e(1.0, 0.999)), None);
        assert_eq!(mon.observe(e(1.0, 0.999)), None);
        assert_eq!(mon.observe(e(1.0, 0.999)), Some(Collapse::Uniform));
        assert_eq!(mon.observe(e(1.0, 0.999)), None, "reported once");
        // a healthy step resets the count; another kind is reported on its own
        assert_eq!(mon.observe(e(0.9, 0.3)), None);
        assert_eq!(mon.observe(e(0.5, 0.495)), None);
        assert_eq!(mon.observe(e(0.9, 0.3)), None);
        assert_eq!(mon.observe(e(0.5, 0.495)), None);
        assert_eq!(mon.observe(e(0.5, 0.495)), None);
        assert_eq!(mon.observe(e(0.5, 0.495)), Some(Collapse::Constant));
        let msg = Collapse::Constant.message(124, 3, e(0.78, 0.775), "try X");
        assert!(
            msg.starts_with("warning: collapse at step 124: the teacher gives every image the same assignment (its information about the image is 0.5% of log K)")
                && msg.ends_with("likely useless; try X."),
            "{msg}"
        );
    }

    #[test]
    fn warns_only_below_the_untrained_backbone() {
        assert_eq!(below_untrained(100, 80.0, 79.3), None);
        let w = below_untrained(558, 57.55, 79.30).unwrap();
        assert!(w.starts_with("warning: at step 558 the kNN top-1 (57.55) is below the untrained backbone's (79.30"), "{w}");
    }
}
