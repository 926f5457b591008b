//! Self-supervised methods behind one small trait: the trainer owns data, schedules, optimiser,
//! checkpoints and logging; a method owns its networks, its loss and its per-step/per-epoch hooks.
pub mod byol;
pub mod collapse;
pub mod dino;
pub mod encoder;
pub mod head;
pub mod losses;
pub mod mocov2;
pub mod svib;
pub mod swav;

use crate::data::Dataset;
use crate::eval::features::EvalPrep;
use crate::models::Backbone;
use anyhow::Result;
pub use collapse::{Collapse, Entropies};
use tch::{nn, Tensor};

/// Where training stands, with the scheduled values for this step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCtx {
    /// Global step (0-based) and total steps of the run.
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub beta: f64,
    pub teacher_momentum: f64,
}

/// A loss with its named terms (for logs) and named statistics (collapse indicators …).
pub struct LossOutput {
    pub loss: Tensor,
    pub terms: Vec<(&'static str, Tensor)>,
    pub stats: Vec<(&'static str, f64)>,
    /// The entropies of the assignments, for the collapse monitor (methods with assignments).
    pub entropies: Option<Entropies>,
}

/// The method `cfg.method` names, with its networks on `device`.
pub fn build(cfg: &crate::train::config::Config, device: tch::Device) -> Result<Box<dyn Method>> {
    match cfg.method.as_str() {
        "svib" => Ok(Box::new(svib::Svib::new(cfg, device)?)),
        "dino" => Ok(Box::new(dino::Dino::new(cfg, device)?)),
        "byol" => Ok(Box::new(byol::Byol::new(cfg, device)?)),
        "mocov2" => Ok(Box::new(mocov2::MocoV2::new(cfg, device)?)),
        "swav" => Ok(Box::new(swav::Swav::new(cfg, device)?)),
        other => anyhow::bail!("method: `{other}` is not available"),
    }
}

pub trait Method {
    /// What to try when the collapse monitor sees `c` (the method knows its own remedies).
    fn collapse_hint(&self, _c: Collapse) -> &'static str {
        "try a lower optim.lr or a slower teacher (a higher teacher.momentum_start)"
    }
    /// The variables the optimiser trains (student).
    fn student(&self) -> &nn::VarStore;
    /// Variables that follow the student without gradient (teacher / momentum encoder).
    fn teacher(&self) -> Option<&nn::VarStore>;
    /// The loss on one batch; `views[0..2]` are the global views.
    fn loss(&mut self, views: &[Tensor], ctx: &StepCtx) -> LossOutput;
    /// After the optimiser step: EMA of the teacher, running centres and priors.
    fn after_step(&mut self, _ctx: &StepCtx) {}
    /// Names of student variables that get no gradient at this step (e.g. the frozen GMM means).
    fn frozen(&self, _ctx: &StepCtx) -> Vec<String> {
        vec![]
    }
    /// Student variables whose learning rate is scaled, with the factor (none by default).
    fn lr_scales(&self) -> Vec<(String, f64)> {
        vec![]
    }
    /// After `step` steps are done (counted from 1); returns the student variables whose
    /// optimiser state must be reset (e.g. GMM means re-initialised every N steps).
    fn at_step(&mut self, _step: usize, _train: &Dataset, _prep: &EvalPrep, _seed: u64) -> Result<Vec<String>> {
        Ok(vec![])
    }
    /// At the end of an epoch; returns the student variables whose optimiser state must be reset.
    fn end_epoch(&mut self, _epoch: usize, _train: &Dataset, _prep: &EvalPrep, _seed: u64) -> Result<Vec<String>> {
        Ok(vec![])
    }
    /// Before the first step of a new run (e.g. GMM means from data); nothing by default.
    fn init_from_data(&mut self, _train: &Dataset, _prep: &EvalPrep, _seed: u64) -> Result<()> {
        Ok(())
    }
    /// The backbone whose features are evaluated (the teacher's, when there is one).
    fn eval_backbone(&self) -> &Backbone;
    /// The variables holding that backbone, under `backbone.` (for export and fine-tuning).
    fn eval_store(&self) -> &nn::VarStore {
        self.teacher().unwrap_or(self.student())
    }
    /// Extra state to checkpoint (centres, running priors), by name.
    fn extra_state(&self) -> Vec<(String, Tensor)> {
        vec![]
    }
    fn load_extra_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        if let Some((name, _)) = state.first() {
            anyhow::bail!("unknown method state `{name}` in checkpoint");
        }
        Ok(())
    }
}
