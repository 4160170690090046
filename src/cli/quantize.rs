//! `fer quantize`: post-training int8 quantization of a model file.

use crate::quant::{quantize, QuantizeOptions};
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// A float model file written by fer, or a run folder.
    pub model: PathBuf,
    /// Where to write the int8 model file.
    #[arg(long)]
    pub out: PathBuf,
    /// Data set folder (default: $FER2013_DIR, else data/fer2013).
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
    /// Training images (never validation or test) that calibrate the
    /// convolutions' input ranges.
    #[arg(long, default_value_t = 1024)]
    pub calibration: usize,
    /// Convolutions with fewer input channels keep float arithmetic.
    #[arg(long, default_value_t = 64)]
    pub int8_min_channels: i64,
    /// Largest PublicTest accuracy drop, in points, for which the file is written.
    #[arg(long, default_value_t = 1.0)]
    pub max_drop: f64,
    /// Write the file even when the drop is larger.
    #[arg(long)]
    pub force: bool,
    /// Seconds timed per latency figure.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    /// Overwrite an existing --out file (never the model being quantized).
    #[arg(long)]
    pub replace: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: QuantizeArgs) -> Result<ExitCode> {
    let outcome = quantize(&QuantizeOptions {
        model: args.model,
        out: args.out.clone(),
        data: args.data,
        calibration: args.calibration,
        int8_min_channels: args.int8_min_channels,
        max_drop: args.max_drop,
        force: args.force,
        seconds: args.seconds,
        replace: args.replace,
    })?;
    super::print_json_or(args.json, &outcome, crate::quant::Outcome::render)?;
    if !outcome.written {
        eprintln!(
            "error: int8 loses {:.2} points of PublicTest accuracy (limit --max-drop {}); {} not written (--force writes it anyway)",
            -outcome.test_change_points,
            args.max_drop,
            args.out.display()
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
