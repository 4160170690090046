//! `fer calibrate`: a logit adjustment fitted on validation into a copy of a
//! model file.

use crate::calibrate::{calibrate, CalibrateOptions};
use crate::config::train::Select;
use crate::eval::adjust::AdjustConfig;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// A model file written by fer, or a run folder.
    pub model: PathBuf,
    /// Where to write the adjusted model file (a new file unless --replace).
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite an existing --out (never the model being calibrated).
    #[arg(long)]
    pub replace: bool,
    /// Data set folder (default: $FER2013_DIR, else data/fer2013).
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
    /// Fit on ten-crop TTA probabilities (use it when the model is evaluated
    /// with TTA).
    #[arg(long)]
    pub tta: bool,
    /// The validation metric alpha maximises.
    #[arg(long, value_enum, default_value = "val-acc")]
    pub select: SelectArg,
    /// The alpha grid: min, max and step.
    #[arg(long, default_value_t = -0.5, allow_hyphen_values = true)]
    pub min: f64,
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub max: f64,
    #[arg(long, default_value_t = 0.05)]
    pub step: f64,
    /// Print the fit as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SelectArg {
    ValAcc,
    ValLoss,
    ValF1Macro,
}

pub fn run(args: CalibrateArgs) -> Result<ExitCode> {
    if !(args.step > 0.0 && args.step.is_finite()) {
        bail!("--step must be above 0, got {}", args.step);
    }
    if args.min.is_nan() || args.max.is_nan() || args.min > args.max {
        bail!("--min ({}) must be at most --max ({})", args.min, args.max);
    }
    let adjust = AdjustConfig {
        select: match args.select {
            SelectArg::ValAcc => Select::ValAcc,
            SelectArg::ValLoss => Select::ValLoss,
            SelectArg::ValF1Macro => Select::ValF1Macro,
        },
        min: args.min,
        max: args.max,
        step: args.step,
    };
    let out = calibrate(&CalibrateOptions {
        model: args.model,
        out: args.out.clone(),
        replace: args.replace,
        data: args.data,
        tta: args.tta,
        adjust,
    })?;
    let rec = &out.fit;
    if args.json {
        println!("{}", serde_json::to_string_pretty(rec)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>7}  {:>8}  {:>8}  {:>8}",
        "alpha", "val acc", "macro F1", "log loss"
    );
    for g in &rec.grid {
        let mark = if g.alpha == rec.alpha { "  <" } else { "" };
        println!(
            "{:>+7.2}  {:>7.2}%  {:>8.4}  {:>8.4}{mark}",
            g.alpha,
            100.0 * g.accuracy,
            g.macro_f1,
            g.log_loss
        );
    }
    println!("{}", rec.summary());
    print!("{}", out.report.render(&out.classes));
    println!("wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
