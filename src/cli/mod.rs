//! The `svib` command line: one file per subcommand group.
mod attention_cmd;
mod augment_cmd;
mod bench_cmd;
mod data_cmd;
mod eval_cmd;
mod experiment_cmd;
mod knn_cmd;
mod train_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "svib", version, about = "Self-supervised Variational Information Bottleneck: pre-train and evaluate visual representations", long_about = None)]
pub struct Cli {
    /// CPU threads for augmentation and libtorch (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pre-train a backbone with SVIB or a baseline (resumes when --out holds a run).
    Train(train_cmd::TrainArgs),
    /// List the built-in configs.
    Presets,
    /// Pre-train SVIB and the baselines at equal settings; results.md and kNN curves (resumable).
    Compare(experiment_cmd::CompareArgs),
    /// Does pre-training beat raw pixels and the untrained backbone? Every method on several
    /// data set variants at one step budget: a Markdown table and kNN-against-step plots.
    Quality(experiment_cmd::QualityArgs),
    /// The paper's ablation grid (re-init x bottleneck x beta); results.md and beta curves (resumable).
    Ablate(experiment_cmd::AblateArgs),
    /// Weighted kNN classification of frozen features (SPEC §5): top-1/top-5 on the test split.
    Knn(knn_cmd::KnnArgs),
    /// Linear probe on frozen features (SPEC §5): top-1/top-5 as one JSON line.
    Linear(eval_cmd::LinearArgs),
    /// Semi-supervised fine-tuning on a class-balanced fraction of the labels (SPEC §5).
    Finetune(eval_cmd::FinetuneArgs),
    /// Frozen features of a split as .npy (plus labels), for plotting or search.
    Embed(eval_cmd::EmbedArgs),
    /// 2-D t-SNE of frozen features as a PNG coloured by label (points as .npy beside it).
    Tsne(eval_cmd::TsneArgs),
    /// A ViT's last-block [CLS] attention per head over images, as PNGs (paper Fig. 4).
    Attention(attention_cmd::AttentionArgs),
    /// Write a run's backbone as safetensors in torchvision/timm or Detectron2 names.
    Export(eval_cmd::ExportArgs),
    /// svib against the PyTorch reference (bench/reference): img/s, peak memory, loss equality.
    Bench(bench_cmd::BenchArgs),
    /// Multi-crop augmentation tools.
    Augment {
        #[command(subcommand)]
        command: augment_cmd::AugmentCommand,
    },
    /// Data set tools.
    Data {
        #[command(subcommand)]
        command: data_cmd::DataCommand,
    },
    /// List the backbone architectures with their parameter counts.
    Models,
    /// Run an svib command in N local processes as one data-parallel job (torchrun's
    /// variables; for users without torchrun): svib launch --nproc 2 -- train --config C --out DIR
    Launch {
        /// Processes (ranks) on this machine.
        #[arg(long)]
        nproc: usize,
        /// Port of rank 0's rendezvous store (default: a free one).
        #[arg(long)]
        master_port: Option<u16>,
        /// The svib command line each process runs.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
}

/// Threads beyond this many are a typing mistake, not a machine.
const MAX_THREADS: usize = 1024;

/// Sets rayon's and libtorch's threads (`--threads`, or every core) and returns how many.
fn set_threads(n: Option<usize>) -> Result<usize> {
    if let Some(n) = n {
        anyhow::ensure!((1..=MAX_THREADS).contains(&n), "--threads: expected 1 to {MAX_THREADS}, got {n}");
    }
    let n = n.unwrap_or_else(crate::util::cores);
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    tch::set_num_threads(n as i32);
    Ok(n)
}

fn run(cli: Cli) -> Result<()> {
    let threads = set_threads(cli.threads)?;
    match cli.command {
        Command::Train(a) => train_cmd::run_train(a),
        Command::Presets => train_cmd::list_presets(),
        Command::Compare(a) => experiment_cmd::run_compare(a),
        Command::Quality(a) => experiment_cmd::run_quality(a),
        Command::Ablate(a) => experiment_cmd::run_ablate(a),
        Command::Knn(a) => knn_cmd::run(a),
        Command::Linear(a) => eval_cmd::run_linear(a),
        Command::Finetune(a) => eval_cmd::run_finetune(a),
        Command::Export(a) => eval_cmd::run_export(a),
        Command::Embed(a) => eval_cmd::run_embed(a),
        Command::Attention(a) => attention_cmd::run(a),
        Command::Tsne(a) => eval_cmd::run_tsne(a),
        Command::Bench(a) => bench_cmd::run(a, threads),
        Command::Augment { command } => augment_cmd::run(command),
        Command::Data { command } => data_cmd::run(command),
        Command::Models => data_cmd::list_models(),
        Command::Launch { nproc, master_port, args } => match check_launched(nproc, &args).and_then(|_| crate::dist::launch(nproc, master_port, &args))? {
            0 => Ok(()),
            code => std::process::exit(code),
        },
    }
}

/// `svib launch`: the command line every rank would run is checked once here, so that a mistake
/// in it gives one error line instead of one per process; `--nproc` is bounded by the cores
/// (4 processes a core, at least 8: each loads its own libtorch).
fn check_launched(nproc: usize, args: &[String]) -> Result<()> {
    let cores = crate::util::cores();
    let most = (4 * cores).max(8);
    anyhow::ensure!(nproc <= most, "--nproc {nproc}: expected at most {most} processes on this machine's {cores} cores");
    let cli = match Cli::try_parse_from(std::iter::once("svib".to_string()).chain(args.iter().cloned())) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => return Ok(()),
        Err(e) => anyhow::bail!("the launched command: {}", clap_message(&e)),
    };
    match cli.command {
        Command::Train(a) => train_cmd::resolve(&a.config, a.method.as_deref(), a.data.as_deref(), a.epochs, &a.set).map(drop),
        _ => anyhow::bail!("svib launch runs `train` as one data-parallel job; other commands run once, without it"),
    }
}

/// The help to read for a command line clap refused: `svib NAME --help` for the subcommand
/// (and sub-subcommand) it names, else `svib --help`.
fn help_command(mut args: impl Iterator<Item = String>) -> String {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut path = vec!["svib".to_string()];
    while let Some(a) = args.next() {
        if a == "--threads" {
            args.next();
            continue;
        }
        if a.starts_with('-') {
            continue;
        }
        match cmd.find_subcommand(&a) {
            Some(sub) => {
                path.push(a);
                cmd = sub.clone();
            }
            None => break,
        }
    }
    path.push("--help".into());
    path.join(" ")
}

/// The line of clap's message that says what is wrong (its first paragraph, joined).
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first: Vec<&str> = text.lines().map(str::trim).skip_while(|l| l.is_empty()).take_while(|l| !l.is_empty()).collect();
    let first = if first.is_empty() { "invalid arguments".to_string() } else { first.join(" ") };
    first.trim_start_matches("error: ").to_string()
}

/// Entry point: parses arguments, runs, and turns every error into one line and exit code 2.
pub fn main() -> i32 {
    std::panic::set_hook(Box::new(|info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).or_else(|| info.payload().downcast_ref::<&str>().copied()).unwrap_or("unknown");
        let first = msg.lines().next().unwrap_or(msg);
        // `svib presets | head`: stdout closed early is the reader's choice, not an error
        if first.starts_with("failed printing to stdout") && first.contains("Broken pipe") {
            std::process::exit(141);
        }
        eprintln!("svib: internal error: {first} (at {})", info.location().map_or("?".into(), |l| l.to_string()));
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            let _ = e.print();
            return if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { 2 } else { 0 };
        }
        Err(e) => {
            // clap's message is several lines (tip, usage); keep the one that says what is wrong
            eprintln!("error: {} (see `{}`)", clap_message(&e), help_command(std::env::args().skip(1)));
            return 2;
        }
    };
    match std::panic::catch_unwind(|| run(cli)) {
        // stopped by Ctrl-C with a checkpoint (said above): 130, as a shell gives for SIGINT
        Ok(Ok(())) if crate::train::trainer::interrupted() => 130,
        Ok(Ok(())) => 0,
        Ok(Err(e)) if e.is::<crate::util::AlreadyReported>() => {
            eprintln!("{e}");
            2
        }
        Ok(Err(e)) => {
            eprintln!("{}{}", crate::util::error_prefix(), one_line(&e));
            2
        }
        Err(_) => 101,
    }
}

/// The error chain as one line: "outer: inner: root cause", at most 2,000 characters.
pub fn one_line(e: &anyhow::Error) -> String {
    crate::util::shorten(&format!("{e:#}").replace('\n', " "), 2000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_refused_command_line_points_to_its_subcommands_help() {
        let help = |args: &[&str]| super::help_command(args.iter().map(|s| s.to_string()));
        assert_eq!(help(&["knn", "--k", "x"]), "svib knn --help");
        assert_eq!(help(&["--threads", "2", "data", "info", "--bogus"]), "svib data info --help");
        assert_eq!(help(&["tarin", "--config", "x"]), "svib --help");
        assert_eq!(help(&[]), "svib --help");
    }
}
