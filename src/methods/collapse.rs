//! The vocabulary of collapse: what a method reports of its assignments each step, and the
//! collapses the trainer's monitor (`train::monitor`) names from it.

/// What the collapse monitor reads of a step: the entropies of the teacher's mean assignment
/// and of its per-image assignments, as fractions of log K.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Entropies {
    pub marginal_rel: f64,
    pub sample_rel: f64,
}

/// A collapse the monitor names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Collapse {
    /// Every image goes to the same few components (low H(mean assignment)).
    FewComponents,
    /// Every image gets the same assignment, here the uniform one (CE at log K, KL near 0).
    Uniform,
    /// Every image gets the same assignment, not uniform (the output ignores the image).
    Constant,
}

impl Collapse {
    pub fn event(self) -> &'static str {
        match self {
            Collapse::FewComponents => "collapse_few_components",
            Collapse::Uniform => "collapse_uniform",
            Collapse::Constant => "collapse_constant",
        }
    }

    /// The warning, with what to try (`hint`, from the method: see `Method::collapse_hint`).
    pub fn message(self, step: usize, patience: usize, e: Entropies, hint: &str) -> String {
        let what = match self {
            Collapse::FewComponents => {
                format!("the teacher assigns (almost) every image to the same few components (entropy of its mean assignment {:.0}% of log K)", e.marginal_rel * 100.0)
            }
            Collapse::Uniform => "the teacher's assignments are uniform for every image (the consistency loss sits at log K), so the student learns nothing".to_string(),
            Collapse::Constant => {
                format!("the teacher gives every image the same assignment (its information about the image is {:.1}% of log K)", (e.marginal_rel - e.sample_rel).max(0.0) * 100.0)
            }
        };
        format!("warning: collapse at step {step}: {what}, for {patience} steps in a row. Representations learnt from here on are likely useless; {hint}.")
    }
}
