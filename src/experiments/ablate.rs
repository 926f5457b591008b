//! `svib ablate`: the paper's Table 4 grid (GMM re-initialisation x information bottleneck x
//! beta) on any preset, with kNN at regular epochs (Fig. 3's beta curves).
use super::plot::{line_chart, Series};
use super::{run_jobs, sets_note, Job, Outcome};
use crate::train::config::{load_table, set_epochs, set_key, Config};
use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::Path;

/// One row of the grid: Table 4's task number (7 and 8 complete the grid; not in the paper),
/// re-initialisation, the beta setting (None: no bottleneck) and the paper's kNN-20.
pub struct Row {
    pub task: usize,
    pub reinit: bool,
    pub beta: Option<Beta>,
    pub paper: &'static str,
}

#[derive(Clone, Copy)]
pub enum Beta {
    Const(f64),
    /// Exponential decay from 0.5 to 0.01 (SVIB's default).
    Decay,
}

impl Beta {
    fn label(&self) -> String {
        match self {
            Beta::Const(b) => format!("{b}"),
            Beta::Decay => "0.5 → 0.01".into(),
        }
    }
}

pub const GRID: [Row; 8] = [
    Row { task: 1, reinit: true, beta: None, paper: "66.3" },
    Row { task: 2, reinit: false, beta: Some(Beta::Const(0.1)), paper: "divergence" },
    Row { task: 3, reinit: false, beta: Some(Beta::Const(0.5)), paper: "61.3" },
    Row { task: 4, reinit: true, beta: Some(Beta::Const(0.5)), paper: "64.2" },
    Row { task: 5, reinit: true, beta: Some(Beta::Const(0.1)), paper: "66.8" },
    Row { task: 6, reinit: true, beta: Some(Beta::Decay), paper: "67.3" },
    Row { task: 7, reinit: false, beta: None, paper: "–" },
    Row { task: 8, reinit: false, beta: Some(Beta::Decay), paper: "–" },
];

/// The `--set` keys of a row.
pub fn row_keys(row: &Row) -> Vec<String> {
    let mut k = vec![format!("gmm.reinit=\"{}\"", if row.reinit { "every_epoch" } else { "never" })];
    match row.beta {
        None => k.extend(["ib.beta_start=0".into(), "ib.schedule=\"const\"".into()]),
        Some(Beta::Const(b)) => k.extend([format!("ib.beta_start={b}"), "ib.schedule=\"const\"".into()]),
        Some(Beta::Decay) => k.extend(["ib.beta_start=0.5".into(), "ib.beta_end=0.01".into(), "ib.schedule=\"exp\"".into()]),
    }
    k
}

pub struct AblateSpec {
    pub preset: String,
    pub epochs: Option<usize>,
    pub knn_every: Option<usize>,
    pub sets: Vec<String>,
}

fn row_config(spec: &AblateSpec, row: &Row) -> Result<Config> {
    let mut t = load_table(&spec.preset).context("--preset")?;
    set_key(&mut t, "method=\"svib\"")?;
    if let Some(e) = spec.epochs {
        set_epochs(&mut t, e)?;
    }
    for s in &spec.sets {
        set_key(&mut t, s)?;
    }
    let epochs = Config::from_table(t.clone())?.train.epochs;
    // kNN at five regular points by default, as Fig. 3 (every 20 of 100 epochs)
    set_key(&mut t, &format!("train.knn_every={}", spec.knn_every.unwrap_or((epochs / 5).max(1))))?;
    for k in row_keys(row) {
        set_key(&mut t, &k)?;
    }
    Config::from_table(t)
}

pub fn run(spec: &AblateSpec, dir: &Path) -> Result<String> {
    let jobs: Vec<Job> = GRID.iter().map(|r| Ok(Job { name: format!("task{}", r.task), config: row_config(spec, r)? })).collect::<Result<_>>()?;
    let outcomes = run_jobs(dir, &jobs)?;
    let base = &jobs[0].config;
    let mut md = String::new();
    writeln!(md, "# svib ablate\n")?;
    writeln!(
        md,
        "Table 4's grid on preset `{}`{}: data `{}`, backbone `{}`, {}, seed {}; kNN-{} top-1 on the test split. \
         The paper's column is its ViT-S/16, 100-epoch ImageNet run; tasks 7 and 8 complete the grid and are not in the paper.\n",
        spec.preset,
        sets_note(&spec.sets),
        base.data.spec,
        base.model.name,
        base.length_note(),
        base.train.seed,
        base.eval.k
    )?;
    writeln!(md, "| task | re-init | IB | β | kNN top-1 | paper | img/s | wall (s) |")?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    let mark = |b: bool| if b { "✓" } else { "✗" };
    let (mut series, mut notes) = (vec![], vec![]);
    for (row, o) in GRID.iter().zip(&outcomes) {
        let beta = row.beta.map_or("–".to_string(), |b| b.label());
        match o {
            Outcome::Done { result, knn_curve } => {
                writeln!(
                    md,
                    "| {} | {} | {} | {beta} | {:.2} | {} | {:.0} | {:.0} |",
                    row.task,
                    mark(row.reinit),
                    mark(row.beta.is_some()),
                    result.knn_top1,
                    row.paper,
                    result.images_per_second,
                    result.seconds
                )?;
                if row.reinit && row.beta.is_some() {
                    series.push(Series { label: format!("β = {beta}"), points: knn_curve.clone() });
                }
            }
            Outcome::Diverged(msg) => {
                writeln!(md, "| {} | {} | {} | {beta} | diverged | {} | | |", row.task, mark(row.reinit), mark(row.beta.is_some()), row.paper)?;
                notes.push(format!("Task {}: {}", row.task, msg.trim()));
            }
        }
    }
    for n in notes {
        writeln!(md, "\n{n}")?;
    }
    if !series.is_empty() {
        writeln!(md, "\n![kNN top-1 against epoch for each beta (re-initialisation on), as Fig. 3](beta_curve.png)")?;
        line_chart(&dir.join("beta_curve.png"), &format!("kNN-{} top-1 by β (re-init on, {})", base.eval.k, spec.preset), "epoch", "kNN top-1 (%)", &series)?;
    }
    crate::util::write_atomic(&dir.join("results.md"), md.as_bytes())?;
    Ok(md)
}
