//! `fer serve`: live emotions from the browser's webcam, and the HTTP API.

use crate::serve::detect::{Cascade, Lighting};
use crate::serve::ServeOptions;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Model file or run folder (default: the release model in models/).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Address to listen on; loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub addr: String,
    /// Face detector.
    #[arg(long, value_enum, default_value = "haar")]
    pub cascade: CascadeArg,
    /// Cascade XML file (default: Debian's opencv-data copy).
    #[arg(long)]
    pub cascade_path: Option<PathBuf>,
    /// Lighting normalisation before detection.
    #[arg(long, value_enum, default_value = "equalize")]
    pub lighting: LightingArg,
    /// Frames are shrunk to this width before detection (speed).
    #[arg(long, default_value_t = 320)]
    pub detect_width: u32,
    /// Largest accepted upload in bytes (413 above it).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body: usize,
    /// Prediction log for drift monitoring (default: runs/serve/predictions.jsonl).
    #[arg(long)]
    pub drift_log: Option<PathBuf>,
    /// Rotate the prediction log above this size in bytes.
    #[arg(long, default_value_t = 10 << 20)]
    pub drift_log_max: u64,
    /// FER-2013 folder, for the drift reference (the model's validation confidence).
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CascadeArg {
    Haar,
    Lbp,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LightingArg {
    /// Global histogram equalisation.
    Equalize,
    /// Contrast-limited adaptive equalisation: evens out side lighting.
    Clahe,
    None,
}

impl ServeArgs {
    pub fn options(self) -> ServeOptions {
        ServeOptions {
            model: self.model,
            addr: self.addr,
            cascade: match self.cascade {
                CascadeArg::Haar => Cascade::Haar,
                CascadeArg::Lbp => Cascade::Lbp,
            },
            cascade_path: self.cascade_path,
            lighting: match self.lighting {
                LightingArg::Equalize => Lighting::Equalize,
                LightingArg::Clahe => Lighting::Clahe,
                LightingArg::None => Lighting::None,
            },
            detect_width: self.detect_width,
            max_body: self.max_body,
            drift_log: self.drift_log,
            drift_log_max: self.drift_log_max,
            data: self.data,
        }
    }
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    crate::serve::run(args.options(), |addr, model| {
        eprintln!("fer serve: model {model} on http://{addr}/ (Ctrl-C stops)");
        // Tests and scripts read the bound address from stdout.
        println!("http://{addr}/");
    })?;
    Ok(ExitCode::SUCCESS)
}
