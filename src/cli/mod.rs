//! The command-line shell: the only place that knows clap and the only place
//! that prints results to stdout. Each command is one file: its arguments,
//! their validation, the options struct handed to the library, and how the
//! returned value is printed. Nothing in the library imports this module.

mod bench;
mod calibrate;
mod compare;
mod data;
mod demo;
mod ensemble;
mod eval;
mod mlflow;
mod predict;
mod quantize;
mod report;
mod serve;
mod sweep;
mod train;

use crate::data::DataConfig;
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "fer",
    version,
    about = "Facial emotion recognition research harness for FER-2013"
)]
pub struct Cli {
    /// Threads for decoding, augmentation and libtorch (default: all cores).
    #[arg(long, global = true, env = "FER_THREADS")]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Data set commands.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Train a model from a run config (or resume a run).
    Train(train::TrainArgs),
    /// Evaluate a model file or run folder.
    Eval(eval::EvalArgs),
    /// Hyperparameter sweep over an experiment's search space.
    Sweep(sweep::SweepArgs),
    /// Post-training int8 quantization of a model file.
    Quantize(quantize::QuantizeArgs),
    /// Fit a post-hoc logit adjustment on validation into a copy of a model file.
    Calibrate(calibrate::CalibrateArgs),
    /// Models scored on the same test images: intervals, and paired tests
    /// (McNemar, paired bootstrap, Holm) against the most accurate.
    Compare(compare::CompareArgs),
    /// Average trained models (files or run folders) into one ensemble file.
    Ensemble(ensemble::EnsembleArgs),
    /// Benchmarks, compared side by side with PyTorch/torchvision in one run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Live emotions from the browser's webcam (and an HTTP API).
    Serve(serve::ServeArgs),
    /// Emotions in photos, folders and video files: a table of faces,
    /// annotated copies, per-video summaries and timelines.
    Predict(predict::PredictArgs),
    /// A Markdown report (with PNGs) of a run, a folder of runs, or a sweep.
    Report(report::ReportArgs),
    /// The whole harness in a few minutes: a sweep logged to a local MLflow
    /// server, its report, and the webcam page.
    Demo(demo::DemoArgs),
    /// A local MLflow server, and uploads of run folders to any server.
    #[command(subcommand)]
    Mlflow(mlflow::MlflowCommand),
}

/// Where the data is and how to read it; shared by every data-using command.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Data set folder (one folder per class, as FER-2013's Kaggle layout)
    /// or challenge CSV (default: $FER2013_DIR, unless --config names a folder).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A data config YAML (the `data` group), e.g. configs/data/fer2013.yaml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Decode from the files even if a cache exists.
    #[arg(long)]
    pub no_cache: bool,
}

impl DataArgs {
    /// The data config: file (or defaults), then command-line overrides.
    pub fn resolve(&self) -> Result<DataConfig> {
        let mut cfg = match &self.config {
            Some(p) => crate::config::load_yaml::<DataConfig>(p)?,
            None => DataConfig::default(),
        };
        if let Some(d) = self.data.clone().or_else(|| cfg.fer2013_env()) {
            cfg.dir = d;
        }
        if self.no_cache {
            cfg.cache = false;
        }
        cfg.validate()
            .map_err(anyhow::Error::msg)
            .with_context(|| match &self.config {
                Some(p) => format!("in {}", p.display()),
                None => "in the default data config".into(),
            })?;
        Ok(cfg)
    }
}

/// Prints `value` as pretty JSON with `--json`, else the text `render` makes
/// of it: the two outputs every reporting command offers.
fn print_json_or<T: serde::Serialize>(
    json: bool,
    value: &T,
    render: impl FnOnce(&T) -> String,
) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", render(value));
    }
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

pub fn run() -> Result<ExitCode> {
    crate::runtime::tune_allocator();
    let cli = Cli::parse();
    init_logging();
    crate::runtime::init_cli_threads(cli.threads);
    match cli.command {
        Command::Data(cmd) => data::run(cmd),
        Command::Demo(a) => demo::run(a),
        Command::Train(a) => train::run(a),
        Command::Mlflow(cmd) => mlflow::run(cmd),
        Command::Serve(a) => serve::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Report(a) => report::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Sweep(a) => sweep::run(a, cli.threads),
        Command::Quantize(a) => quantize::run(a),
        Command::Ensemble(a) => ensemble::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Bench(cmd) => bench::run(cmd),
    }
}
