//! `fer bench data|train|infer|serve`: benchmarks, each compared side by side
//! in one run.

use super::serve::ServeArgs;
use super::DataArgs;
use crate::bench::{self, DataBenchOptions, InferBenchOptions, TrainBenchOptions, TrainMode};
use crate::serve::bench::ServeBenchOptions;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Load/decode (uncached and cached) and augmentation throughput.
    Data(DataBenchArgs),
    /// Training img/s per family against an equivalent PyTorch loop.
    Train(TrainBenchArgs),
    /// Serving latency per stage (p50/p95) and FPS on a 640x480 face frame.
    Serve(ServeBenchArgs),
    /// Inference latency, throughput and GFLOP/s per model and batch size.
    Infer(InferBenchArgs),
}

#[derive(Args, Debug)]
pub struct DataBenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Images per augmentation measurement.
    #[arg(long, default_value_t = 20_000)]
    pub images: usize,
    /// Repeats of each load measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Python with torch and torchvision (default: .venv/bin/python).
    #[arg(long, env = "FER_PYTHON")]
    pub python: Option<PathBuf>,
    /// Measure only the Rust side.
    #[arg(long)]
    pub no_python: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Families to measure, comma-separated.
    #[arg(long, default_value = "logistic,mlp,cnn,resnet18,vit")]
    pub families: String,
    /// Arithmetic and layout per measurement, comma-separated: fp32, bf16,
    /// auto (what `train.precision: auto` picks here), each optionally
    /// -nhwc (train.precision and train.channels_last).
    #[arg(long, default_value = "fp32,bf16-nhwc", value_delimiter = ',')]
    pub modes: Vec<TrainMode>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed batches per measurement.
    #[arg(long, default_value_t = 20)]
    pub batches: usize,
    #[arg(long, env = "FER_PYTHON")]
    pub python: Option<PathBuf>,
    #[arg(long)]
    pub no_python: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InferBenchArgs {
    /// Model files, run folders, or folders of run folders (e.g. runs/zoo).
    #[arg(default_value = "runs/zoo")]
    pub models: Vec<PathBuf>,
    /// Batch sizes.
    #[arg(long, default_value = "1,8,32,128", value_delimiter = ',')]
    pub batches: Vec<usize>,
    /// Minimum seconds timed per (model, batch).
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Convolution kernel layouts, timed side by side: nchw, nhwc (what
    /// fer loads float networks in).
    #[arg(long, default_value = "nhwc", value_delimiter = ',')]
    pub layouts: Vec<crate::artifact::Layout>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeBenchArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// A face photo (default: scikit-image's astronaut.png from .venv),
    /// letterboxed into a 640x480 frame and JPEG-encoded as the page does.
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    #[arg(long, default_value_t = 300)]
    pub frames: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Data(a) => {
            let (b, table) = bench::data(&DataBenchOptions {
                data: a.data.resolve()?,
                images: a.images,
                repeats: a.repeats,
                python: a.python,
                no_python: a.no_python,
            })?;
            super::print_json_or(a.json, &b, |_| table)?;
        }
        BenchCommand::Train(a) => {
            let (rows, table) = bench::train(&TrainBenchOptions {
                data: a.data.resolve()?,
                families: a.families,
                modes: a.modes,
                batch_size: a.batch_size,
                warmup: a.warmup,
                batches: a.batches,
                python: a.python,
                no_python: a.no_python,
            })?;
            super::print_json_or(a.json, &rows, |_| table)?;
        }
        BenchCommand::Infer(a) => {
            let b = bench::infer(&InferBenchOptions {
                models: a.models,
                batches: a.batches,
                seconds: a.seconds,
                layouts: a.layouts,
            })?;
            super::print_json_or(a.json, &b, bench::InferBench::render)?;
        }
        BenchCommand::Serve(a) => {
            let b = crate::serve::bench::run(&ServeBenchOptions {
                serve: a.serve.options(),
                image: a.image,
                warmup: a.warmup,
                frames: a.frames,
            })?;
            if a.json {
                println!("{}", b.to_json());
            } else {
                print!("{}", b.render());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
