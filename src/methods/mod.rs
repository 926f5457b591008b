//! Self-supervised methods behind one small trait: the trainer owns data, schedules, optimiser,
//! checkpoints and logging; a method owns its networks, its loss and its per-step/per-epoch hooks.
pub mod byol;
pub mod collapse;
pub mod dino;
pub mod encoder;
pub mod head;
pub mod losses;
pub mod mocov2;
pub mod simclr;
pub mod svib;
pub mod swav;
#[cfg(test)]
pub(crate) mod testing;

use crate::data::Dataset;
use crate::eval::features::EvalPrep;
use crate::models::{ArchConfig, Backbone};
use anyhow::{bail, Result};
pub use collapse::{Collapse, Entropies};
pub use encoder::TeacherConfig;
pub use head::HeadConfig;
use tch::{nn, Tensor};

/// Where training stands, with the scheduled values for this step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCtx {
    /// Global step (0-based) and total steps of the run.
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    pub beta: f64,
    /// The EMA teacher's momentum (1 for methods without a momentum teacher).
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

/// What every method builds its networks from: the backbone, the projection head and the
/// image channels (the shared tables of a config).
#[derive(Clone, Copy, Debug)]
pub struct Shared<'a> {
    pub model: &'a ArchConfig,
    pub head: &'a HeadConfig,
    pub channels: u8,
}

/// The method of a run with its own options: one variant and one config struct per method.
/// In TOML the variant is `method = "NAME"` and its struct's fields are the tables it reads
/// (SVIB: `[gmm]`, `[ib]`, `[teacher]`; DINO: `[dino]`, `[teacher]`; ...).
#[derive(Clone, Debug, PartialEq)]
pub enum MethodConfig {
    Svib(svib::SvibConfig),
    Dino(dino::DinoConfig),
    Byol(byol::ByolConfig),
    MocoV2(mocov2::MocoConfig),
    Swav(swav::SwavConfig),
    SimClr(simclr::SimClrConfig),
}

/// The names `method` may take.
pub const METHODS: [&str; 6] = ["svib", "dino", "byol", "mocov2", "swav", "simclr"];

/// The method's tables, as written in config.toml (the name is written with the shared tables).
impl serde::Serialize for MethodConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            MethodConfig::Svib(c) => c.serialize(s),
            MethodConfig::Dino(c) => c.serialize(s),
            MethodConfig::Byol(c) => c.serialize(s),
            MethodConfig::MocoV2(c) => c.serialize(s),
            MethodConfig::Swav(c) => c.serialize(s),
            MethodConfig::SimClr(c) => c.serialize(s),
        }
    }
}

impl Default for MethodConfig {
    fn default() -> Self {
        MethodConfig::Svib(Default::default())
    }
}

/// Deserialises one method's tables; errors name the key.
fn tables_into<T: serde::de::DeserializeOwned>(name: &str, t: toml::Table, own: &[&str]) -> Result<T> {
    if let Some(k) = t.keys().find(|k| !own.contains(&k.as_str())) {
        bail!("config key `{k}`: the {name} method has no [{k}] table (its tables: {})", own.join(", "));
    }
    serde_path_to_error::deserialize(toml::Value::Table(t)).map_err(key_error)
}

/// A config table that does not deserialise, as one line naming the key (`config key `gmm.k`:
/// invalid type: …, expected a whole number (0 or more)`), or the config when the key is its top.
pub(crate) fn key_error(e: serde_path_to_error::Error<toml::de::Error>) -> anyhow::Error {
    let (path, inner) = (e.path().to_string(), crate::util::plain_serde(&e.inner().to_string()));
    if path == "." {
        anyhow::anyhow!("config: {inner}")
    } else {
        anyhow::anyhow!("config key `{path}`: {inner}")
    }
}

impl MethodConfig {
    pub fn name(&self) -> &'static str {
        match self {
            MethodConfig::Svib(_) => "svib",
            MethodConfig::Dino(_) => "dino",
            MethodConfig::Byol(_) => "byol",
            MethodConfig::MocoV2(_) => "mocov2",
            MethodConfig::Swav(_) => "swav",
            MethodConfig::SimClr(_) => "simclr",
        }
    }

    /// The top-level tables the method `name` reads (None: no such method).
    pub fn tables(name: &str) -> Option<&'static [&'static str]> {
        Some(match name {
            "svib" => &["gmm", "ib", "teacher"],
            "dino" => &["dino", "teacher"],
            "byol" => &["byol", "teacher"],
            "mocov2" => &["mocov2", "teacher"],
            "swav" => &["swav"],
            "simclr" => &["simclr"],
            _ => return None,
        })
    }

    /// The key that sets the number of prototypes of the method `name`, where it has them.
    pub fn prototypes_key(name: &str) -> Option<&'static str> {
        match name {
            "svib" => Some("gmm.k"),
            "dino" => Some("dino.out_dim"),
            "swav" => Some("swav.prototypes"),
            _ => None,
        }
    }

    /// The method `name` with its options from `t`, which holds only its tables.
    pub fn from_tables(name: &str, t: toml::Table) -> Result<MethodConfig> {
        let Some(own) = Self::tables(name) else { bail!("method: `{name}` is not available (expected one of {})", METHODS.join(", ")) };
        Ok(match name {
            "svib" => MethodConfig::Svib(tables_into(name, t, own)?),
            "dino" => MethodConfig::Dino(tables_into(name, t, own)?),
            "byol" => MethodConfig::Byol(tables_into(name, t, own)?),
            "mocov2" => MethodConfig::MocoV2(tables_into(name, t, own)?),
            "swav" => MethodConfig::Swav(tables_into(name, t, own)?),
            _ => MethodConfig::SimClr(tables_into(name, t, own)?),
        })
    }

    /// The method's networks on `device`.
    pub fn build(&self, shared: &Shared, device: tch::Device) -> Result<Box<dyn Method>> {
        Ok(match self {
            MethodConfig::Svib(c) => Box::new(svib::Svib::new(c, shared, device)?),
            MethodConfig::Dino(c) => Box::new(dino::Dino::new(c, shared, device)?),
            MethodConfig::Byol(c) => Box::new(byol::Byol::new(c, shared, device)?),
            MethodConfig::MocoV2(c) => Box::new(mocov2::MocoV2::new(c, shared, device)?),
            MethodConfig::Swav(c) => Box::new(swav::Swav::new(c, shared, device)?),
            MethodConfig::SimClr(c) => Box::new(simclr::SimClr::new(c, shared, device)?),
        })
    }

    /// Every value within its range; errors name the key.
    pub fn validate(&self) -> Result<()> {
        match self {
            MethodConfig::Svib(c) => c.validate(),
            MethodConfig::Dino(c) => c.dino.validate().and(c.teacher.validate()),
            MethodConfig::Byol(c) => c.byol.validate().and(c.teacher.validate()),
            MethodConfig::MocoV2(c) => c.mocov2.validate().and(c.teacher.validate()),
            MethodConfig::Swav(c) => c.swav.validate(),
            MethodConfig::SimClr(c) => c.simclr.validate(),
        }
    }

    /// The EMA teacher's momentum schedule, for methods with a momentum teacher.
    pub fn teacher(&self) -> Option<&TeacherConfig> {
        match self {
            MethodConfig::Svib(c) => Some(&c.teacher),
            MethodConfig::Dino(c) => Some(&c.teacher),
            MethodConfig::Byol(c) => Some(&c.teacher),
            MethodConfig::MocoV2(c) => Some(&c.teacher),
            MethodConfig::Swav(_) | MethodConfig::SimClr(_) => None,
        }
    }

    /// SVIB's options (None for the baselines).
    pub fn svib(&self) -> Option<&svib::SvibConfig> {
        match self {
            MethodConfig::Svib(c) => Some(c),
            _ => None,
        }
    }

    pub fn svib_mut(&mut self) -> Option<&mut svib::SvibConfig> {
        match self {
            MethodConfig::Svib(c) => Some(c),
            _ => None,
        }
    }

    /// Outputs per view that the loss compares over K prototypes (SVIB's means, DINO's last
    /// layer, SwAV's prototypes), for the memory estimate.
    pub fn prototypes(&self) -> Option<i64> {
        match self {
            MethodConfig::Svib(c) => Some(c.gmm.k),
            MethodConfig::Dino(c) => Some(c.dino.out_dim),
            MethodConfig::Swav(c) => Some(c.swav.prototypes),
            _ => None,
        }
    }

    /// Which objective the config trains: SPEC's, a variant of it, or a baseline.
    pub fn objective(&self) -> String {
        match self {
            MethodConfig::Svib(c) => c.objective(),
            other => format!("{} (baseline)", other.name()),
        }
    }
}

pub trait Method {
    /// What to try when the collapse monitor sees `c` (the method knows its own remedies).
    fn collapse_hint(&self, _c: Collapse) -> &'static str {
        "try a lower optim.lr or a slower teacher (a higher teacher.momentum_start)"
    }
    /// The variables the optimiser trains (student).
    fn student(&self) -> &nn::VarStore;
    /// Variables that follow the student without gradient (teacher / momentum encoder); none
    /// by default.
    fn teacher(&self) -> Option<&nn::VarStore> {
        None
    }
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
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![]
    }
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()> {
        if let Some((name, _)) = state.first() {
            anyhow::bail!("unknown method state `{name}` in checkpoint");
        }
        Ok(())
    }
}
