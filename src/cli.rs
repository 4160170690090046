//! Command-line interface: arguments are parsed and validated here, then
//! handed to the library as real objects.

use crate::data::{self, DataConfig};
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
    Data(DataCommand),
    /// Benchmarks, compared side by side with PyTorch/torchvision in one run.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Counts per split and class, imbalance, blank and duplicate images, digest.
    Stats(StatsArgs),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Load/decode (uncached and cached) and augmentation throughput.
    Data(crate::bench::DataBenchArgs),
}

/// Where the data is and how to read it; shared by every data-using command.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Data set folder (Kaggle layout) or challenge CSV.
    #[arg(long, env = "FER2013_DIR")]
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
        if let Some(d) = &self.data {
            cfg.dir = d.clone();
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

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where to write the class-distribution chart.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Sets the thread counts of rayon and libtorch once, before any work.
pub fn init_threads(threads: Option<usize>) -> usize {
    let n = threads
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    tch::set_num_threads(n as i32);
    n
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
    let cli = Cli::parse();
    init_logging();
    init_threads(cli.threads);
    match cli.command {
        Command::Data(DataCommand::Stats(args)) => data_stats(args),
        Command::Bench(BenchCommand::Data(args)) => crate::bench::data(args),
    }
}

fn data_stats(args: StatsArgs) -> Result<ExitCode> {
    let cfg = args.data.resolve()?;
    let loaded = data::load(&cfg, &crate::paths::cache_dir())?;
    let stats = data::stats::compute(&cfg, &loaded.data, loaded.seconds, loaded.from_cache);
    let plot = args
        .plot
        .unwrap_or_else(|| crate::paths::data_dir().join("class_distribution.png"));
    stats.plot(&plot)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", stats.render());
        println!("chart:      {}", plot.display());
    }
    Ok(ExitCode::SUCCESS)
}
