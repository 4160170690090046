//! `fer serve`: live emotions from the browser's webcam, and the HTTP API.

use crate::face::detect::{Cascade, Lighting};
use crate::serve::ServeOptions;
use anyhow::Result;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Webcam frames are shrunk to this width for a full detection (speed).
    #[arg(long, default_value_t = 320, value_parser = clap::value_parser!(u32).range(24..))]
    pub detect_width: u32,
    /// A posted still image is searched for faces down to this many pixels
    /// wide (slower for large photos: see docs/predict.md).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..))]
    pub min_face: u32,
    /// Webcam streams: known faces are tracked near their last box, and a
    /// full detection is spread over N frames, one slice a frame, to find
    /// new ones (1: a whole detection on every frame). A lost face triggers
    /// a whole detection at once.
    #[arg(long, default_value_t = crate::face::track::DEFAULT_EVERY, value_parser = clap::value_parser!(u32).range(1..))]
    pub track_every: u32,
    /// Largest accepted upload in bytes (413 above it).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body: usize,
    /// Bytes of request bodies held in memory at once, over all
    /// connections; an upload waits for room up to --queue-timeout, then
    /// gets 503. Bounds memory under a burst of large uploads.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_buffered: usize,
    /// Largest accepted image in pixels, read from its header before
    /// decoding (413 above it). 16 MP holds a 12 MP phone photo and a 4K
    /// frame; detection shrinks frames to --detect-width anyway.
    #[arg(long, default_value_t = 16_000_000, value_parser = clap::value_parser!(u64).range(576..))]
    pub max_pixels: u64,
    /// Frames decoded and classified at once (bounds memory); others wait.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent: u32,
    /// Seconds a request waits for its turn before a 503.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub queue_timeout: u64,
    /// Seconds for a request's head, and again for its body, to arrive
    /// (the connection is closed, or the upload answered 408, after).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub read_timeout: u64,
    /// Seconds a WebSocket may stay without a message before it is closed.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_idle_timeout: u64,
    /// Prediction log for drift monitoring (default: runs/serve/predictions.jsonl).
    #[arg(long)]
    pub drift_log: Option<PathBuf>,
    /// Rotate the prediction log above this size in bytes.
    #[arg(long, default_value_t = 10 << 20)]
    pub drift_log_max: u64,
    /// The model's data set folder, for the drift reference (its validation confidence).
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

impl From<CascadeArg> for Cascade {
    fn from(a: CascadeArg) -> Cascade {
        match a {
            CascadeArg::Haar => Cascade::Haar,
            CascadeArg::Lbp => Cascade::Lbp,
        }
    }
}

impl From<LightingArg> for Lighting {
    fn from(a: LightingArg) -> Lighting {
        match a {
            LightingArg::Equalize => Lighting::Equalize,
            LightingArg::Clahe => Lighting::Clahe,
            LightingArg::None => Lighting::None,
        }
    }
}

impl ServeArgs {
    pub fn options(self) -> ServeOptions {
        ServeOptions {
            model: self.model,
            addr: self.addr,
            cascade: self.cascade.into(),
            cascade_path: self.cascade_path,
            lighting: self.lighting.into(),
            detect_width: self.detect_width,
            min_face: self.min_face,
            track_every: self.track_every,
            max_body: self.max_body,
            max_buffered: self.max_buffered,
            max_pixels: self.max_pixels,
            max_concurrent: self.max_concurrent as usize,
            queue_timeout: Duration::from_secs(self.queue_timeout),
            read_timeout: Duration::from_secs(self.read_timeout),
            ws_idle_timeout: Duration::from_secs(self.ws_idle_timeout),
            drift_log: self.drift_log,
            drift_log_max: self.drift_log_max,
            data: self.data,
        }
    }
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    crate::serve::run(args.options(), |addr, model| {
        eprintln!("fer serve: model {model} on http://{addr}/ (Ctrl-C stops)");
        if !addr.ip().is_loopback() {
            // No authentication and no TLS: say what is now reachable.
            eprintln!(
                "fer serve: warning: {addr} is not loopback: anyone who reaches this machine can use the page, \
                 POST /api/predict, /metrics and /api/drift, over plain HTTP; browsers give the webcam \
                 only to localhost or HTTPS (see docs/guides/deploy-webcam.md)"
            );
        }
        // Tests and scripts read the bound address from stdout.
        println!("http://{addr}/");
    })?;
    Ok(ExitCode::SUCCESS)
}
