//! `fer ensemble`: model files or run folders averaged into one ensemble file.

use crate::combine::{ensemble, EnsembleOptions};
use crate::config::WeightsDtype;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct EnsembleArgs {
    /// Model files written by fer, or run folders: networks or ensembles
    /// (whose members join one by one).
    #[arg(required = true, num_args = 2..)]
    pub models: Vec<PathBuf>,
    /// Where to write the ensemble's model file (a new file unless --replace).
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite an existing --out (never one of the models being combined).
    #[arg(long)]
    pub replace: bool,
    /// The ensemble's name in its metadata (default: the output file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// How the file stores the weights (inference runs in float32).
    #[arg(long, value_enum, default_value = "f32")]
    pub weights: WeightsArg,
    /// Data set folder (default: $FER2013_DIR, else data/fer2013).
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum WeightsArg {
    F32,
    F16,
}

pub fn run(args: EnsembleArgs) -> Result<ExitCode> {
    let out = ensemble(&EnsembleOptions {
        models: args.models,
        out: args.out,
        replace: args.replace,
        name: args.name,
        weights: match args.weights {
            WeightsArg::F32 => WeightsDtype::F32,
            WeightsArg::F16 => WeightsDtype::F16,
        },
        data: args.data,
    })?;
    for (family, acc, path) in &out.sources {
        println!("{family:<8} val acc {acc:.4}  {}", path.display());
    }
    println!(
        "ensemble val acc {:.4}  {}",
        out.val_accuracy,
        out.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
