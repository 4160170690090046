//! `fer compare`: models scored on the same test images, with intervals and
//! paired tests against the most accurate.

use crate::eval::compare::{compare, CompareOptions};
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Half {
    /// The PublicTest half.
    Public,
    /// The PrivateTest half.
    Private,
    /// Every test image.
    All,
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Two or more model files or run folders.
    #[arg(required = true, num_args = 2..)]
    pub models: Vec<PathBuf>,
    /// Data set folder (default: $FER2013_DIR, else data/fer2013).
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
    /// Ten-crop plus flip test-time augmentation for every model.
    #[arg(long)]
    pub tta: bool,
    /// Which test images.
    #[arg(long, value_enum, default_value = "all")]
    pub half: Half,
    /// Significance level of the verdicts (after Holm's correction).
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CompareArgs) -> Result<ExitCode> {
    if !(args.alpha > 0.0 && args.alpha < 1.0) {
        anyhow::bail!(
            "--alpha {}: expected a level between 0 and 1, e.g. 0.05",
            args.alpha
        );
    }
    let c = compare(&CompareOptions {
        models: args.models,
        data: args.data,
        tta: args.tta,
        half: match args.half {
            Half::Public => Some(crate::data::Origin::PublicTest),
            Half::Private => Some(crate::data::Origin::PrivateTest),
            Half::All => None,
        },
        alpha: args.alpha,
    })?;
    super::print_json_or(args.json, &c, crate::eval::compare::Comparison::render)?;
    Ok(ExitCode::SUCCESS)
}
