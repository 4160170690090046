//! `fer predict`: emotions in photos, folders and video files.

use super::serve::{CascadeArg, LightingArg};
use crate::predict::rows::Format;
use crate::predict::PredictOptions;
use anyhow::Result;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    /// Image files, video files (AVI, MP4, MKV, WebM, ...) and folders
    /// (searched recursively).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Model file or run folder (default: the release model in models/).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Output folder (default: runs/predict/<UTC time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Table format: predictions.csv, predictions.json (one array) or
    /// predictions.jsonl (one object a line).
    #[arg(long, value_enum, default_value = "csv")]
    pub format: FormatArg,
    /// Also write annotated copies (boxes, labels, probabilities) into
    /// OUT/annotated: images as images, videos as H.264 MP4 with the
    /// input's frame count and rate.
    #[arg(long)]
    pub annotate: bool,
    /// Analyse every Nth frame of a video (annotated videos keep all frames).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub every: u32,
    /// Photos are searched for faces down to this many pixels wide (video
    /// frames use --detect-width, as the webcam does).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..))]
    pub min_face: u32,
    /// Write into an existing, non-empty --out (files of the same names are replaced).
    #[arg(long, alias = "replace")]
    pub force: bool,
    /// Face detector.
    #[arg(long, value_enum, default_value = "haar")]
    pub cascade: CascadeArg,
    /// Cascade XML file (default: Debian's opencv-data copy).
    #[arg(long)]
    pub cascade_path: Option<PathBuf>,
    /// Lighting normalisation before detection.
    #[arg(long, value_enum, default_value = "equalize")]
    pub lighting: LightingArg,
    /// Video frames are shrunk to this width for a full detection.
    #[arg(long, default_value_t = 320, value_parser = clap::value_parser!(u32).range(24..))]
    pub detect_width: u32,
    /// Videos: known faces are tracked near their last box, and a full
    /// detection is spread over N analysed frames, one slice a frame, to
    /// find new ones (1: a whole detection on every frame).
    #[arg(long, default_value_t = crate::face::track::DEFAULT_EVERY, value_parser = clap::value_parser!(u32).range(1..))]
    pub track_every: u32,
    /// Largest image or video frame in pixels (checked before decoding).
    #[arg(long, default_value_t = 100_000_000, value_parser = clap::value_parser!(u64).range(576..))]
    pub max_pixels: u64,
    /// Analysed video frames whose faces are classified in one batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub batch_frames: u32,
    /// Print the summary as JSON (as OUT/summary.json holds it).
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FormatArg {
    Csv,
    Json,
    Jsonl,
}

impl From<FormatArg> for Format {
    fn from(a: FormatArg) -> Format {
        match a {
            FormatArg::Csv => Format::Csv,
            FormatArg::Json => Format::Json,
            FormatArg::Jsonl => Format::Jsonl,
        }
    }
}

pub fn run(a: PredictArgs) -> Result<ExitCode> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| crate::layout::new_run_dir("predict"));
    let o = PredictOptions {
        inputs: a.inputs,
        model: a.model,
        out,
        format: a.format.into(),
        annotate: a.annotate,
        every: a.every,
        min_face: a.min_face,
        force: a.force,
        cascade: a.cascade.into(),
        cascade_path: a.cascade_path,
        lighting: a.lighting.into(),
        detect_width: a.detect_width,
        track_every: a.track_every,
        max_pixels: a.max_pixels,
        batch_frames: a.batch_frames as usize,
        progress: std::io::stderr().is_terminal(),
    };
    let s = crate::predict::run(&o)?;
    super::print_json_or(a.json, &s, crate::predict::Summary::render)?;
    Ok(ExitCode::SUCCESS)
}
