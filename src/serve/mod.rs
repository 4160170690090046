//! `fer serve`: live emotions from the browser's webcam. One page (embedded
//! in the binary) streams JPEG frames over a WebSocket, one in flight; the
//! server decodes, finds faces with an OpenCV cascade, classifies them in
//! one batch and answers with boxes, labels and per-stage latency.
//!
//! This file owns the per-frame pipeline (`Engine`); `http` the server and
//! its limits, `guard` panic containment and the model's health.

pub mod bench;
pub mod drift;
mod fault;
mod form;
mod guard;
mod http;
pub mod metrics;

pub use http::run;

use crate::artifact::Classifier;
use crate::face::detect::{self, Cascade, Detector, FaceBox, Lighting};
use crate::face::track::Detection;
pub use crate::face::{Face, Rejected, Stream};
use anyhow::Result;
use fault::Fault;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

const PAGE: &str = include_str!("page.html");

/// Where the release model lives once it ships (a later issue).
pub const RELEASE_MODEL: &str = "models/fer-release.safetensors";

/// How `fer serve` runs: model, address, detector, limits, drift log.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Model file or run folder (default: the release model in models/).
    pub model: Option<PathBuf>,
    /// Address to listen on (the CLI defaults to loopback).
    pub addr: String,
    /// Face detector.
    pub cascade: Cascade,
    /// Cascade XML file (default: Debian's opencv-data copy).
    pub cascade_path: Option<PathBuf>,
    /// Lighting normalisation before detection.
    pub lighting: Lighting,
    /// Stream frames are shrunk to this width for a full detection.
    pub detect_width: u32,
    /// A still image (`POST /api/predict`) is searched for faces down to
    /// this many pixels wide.
    pub min_face: u32,
    /// A stream tracks known faces and spreads a full detection over this
    /// many frames to find new ones (1: a whole detection on every frame).
    pub track_every: u32,
    /// Largest accepted upload in bytes (413 above it).
    pub max_body: usize,
    /// Bytes of request bodies held at once, over all connections.
    pub max_buffered: usize,
    /// Largest accepted image in pixels, read from its header before
    /// decoding (413 above it).
    pub max_pixels: u64,
    /// Frames decoded and classified at once; others wait their turn.
    pub max_concurrent: usize,
    /// How long a request waits for its turn before a 503.
    pub queue_timeout: Duration,
    /// A request's head, and then its body, must arrive within this.
    pub read_timeout: Duration,
    /// A WebSocket with no message for this long is closed.
    pub ws_idle_timeout: Duration,
    /// Prediction log for drift monitoring (default: runs/serve/predictions.jsonl).
    pub drift_log: Option<PathBuf>,
    /// Rotate the prediction log above this size in bytes.
    pub drift_log_max: u64,
    /// FER-2013 folder, for the drift reference (the model's validation confidence).
    pub data: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    pub decode: f64,
    pub detect: f64,
    pub classify: f64,
    pub total: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct FrameResult {
    pub width: u32,
    pub height: u32,
    /// Whole frame, around known faces (a stream's fast path), or a still.
    pub detection: Detection,
    pub classes: Vec<String>,
    pub faces: Vec<Face>,
    pub timing_ms: Timing,
}

/// Locks a mutex whether or not an earlier holder panicked. A panic in one
/// request must not turn every later one into a 500; what these mutexes
/// guard (a network used read-only, a cascade, counters) stays usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything one request needs: the model, the detector, the monitors.
pub struct Engine {
    clf: Mutex<Classifier>,
    detector: Mutex<Detector>,
    pub metrics: metrics::Metrics,
    pub drift: Mutex<drift::Drift>,
    pub classes: Vec<String>,
    pub model_name: String,
    /// Largest accepted image in pixels.
    pub max_pixels: u64,
    /// A still image's smallest face, in pixels.
    pub min_face: u32,
    /// Frames a new stream's full detection is spread over.
    pub track_every: u32,
    /// The model's answers on a fixed probe batch at start-up, and whether
    /// it has broken since.
    health: guard::Health,
    /// Test-only faults, off unless `FER_TEST_FAULTS=1` (see `fault`).
    faults: bool,
}

/// The model to serve: the given one, else the shipped release model.
pub fn model_path(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None => {
            let p = PathBuf::from(RELEASE_MODEL);
            anyhow::ensure!(
                p.exists(),
                "no --model given, and the release model {RELEASE_MODEL} is not under the current folder; run from the repository root, or pass --model runs/<name>/<time> (or a .safetensors model file)"
            );
            Ok(p)
        }
    }
}

/// The model's mean top probability on its own validation split: what live
/// confidence is compared with. None (with a note) without the data set.
fn reference_confidence(clf: &Classifier, dir: Option<&Path>) -> Option<f64> {
    let crate::artifact::ModelData {
        loaded, split: tv, ..
    } = match clf
        .meta
        .load_data(dir, crate::artifact::DataUse::Validation)
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("fer serve: no reference confidence for drift ({e:#}); pass --data DIR");
            return None;
        }
    };
    // A refit (trained on all of train) has no validation split; the test
    // set, which it was never selected on, stands in as held-out faces.
    let val = if tv.val.is_empty() {
        loaded.data.test.clone()
    } else {
        loaded.data.train.select(&tv.val)
    };
    let probs = match clf.predict_set(&val, false, 256) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("fer serve: no reference confidence for drift ({e:#})");
            return None;
        }
    };
    let n = val.len().max(1) as f64;
    Some(
        probs
            .chunks_exact(clf.meta.classes.len())
            .map(|r| r.iter().copied().fold(0f32, f32::max) as f64)
            .sum::<f64>()
            / n,
    )
}

impl Engine {
    pub fn new(a: &ServeOptions) -> Result<Engine> {
        let path = model_path(a.model.as_deref())?;
        let clf = Classifier::load(&path, tch::Device::Cpu)?;
        anyhow::ensure!(
            clf.net.is_some(),
            "{}: a {} baseline ignores the image; serve a trained network",
            path.display(),
            clf.meta.model.family()
        );
        let cascade = match &a.cascade_path {
            Some(p) => p.clone(),
            None => detect::default_cascade(a.cascade)?,
        };
        let detector = Detector::new(&cascade, a.lighting, a.detect_width)?;
        // Before anything else runs the network: a model that panics or
        // answers NaN on a plain input is refused here, not at the first face.
        let health = guard::Health::check(&clf).map_err(|e| {
            anyhow::anyhow!("{}: refusing to serve this model: {e}", path.display())
        })?;
        let log = a
            .drift_log
            .clone()
            .unwrap_or_else(crate::layout::serve_predictions);
        let train: Vec<f64> = clf.meta.prior.iter().map(|&p| p as f64).collect();
        let reference = reference_confidence(&clf, a.data.as_deref());
        Ok(Engine {
            classes: clf.meta.classes.clone(),
            model_name: clf.meta.name.clone(),
            max_pixels: a.max_pixels,
            min_face: a.min_face,
            track_every: a.track_every,
            health,
            faults: fault::enabled(),
            drift: Mutex::new(drift::Drift::new(
                Some(log),
                a.drift_log_max,
                train,
                reference,
            )),
            clf: Mutex::new(clf),
            detector: Mutex::new(detector),
            metrics: metrics::Metrics::default(),
        })
    }

    /// The state a new stream (a WebSocket) starts with.
    pub fn stream(&self) -> Stream {
        Stream::new(self.track_every)
    }

    /// Decode, detect, classify one image: a frame of `stream` (tracked
    /// between full detections, labels smoothed over frames), or a still
    /// image searched down to `--min-face`. A panic inside is the caller's
    /// to contain (the server's `Engine::handle` does).
    pub fn process(
        &self,
        bytes: &[u8],
        stream: Option<&mut Stream>,
    ) -> Result<FrameResult, Rejected> {
        self.frame(bytes, stream, Fault::None)
    }

    fn frame(
        &self,
        bytes: &[u8],
        mut stream: Option<&mut Stream>,
        fault: Fault,
    ) -> Result<FrameResult, Rejected> {
        let t0 = Instant::now();
        let gray = crate::face::decode_gray(bytes, self.max_pixels)?;
        let (width, height) = gray.dimensions();
        let t1 = Instant::now();
        let found = {
            let mut det = lock(&self.detector);
            match stream.as_deref_mut() {
                Some(s) => s.boxes(&mut det, &gray),
                None => det
                    .detect_still(&gray, self.min_face)
                    .map(|b| (b, Detection::Still)),
            }
        };
        let (boxes, detection) =
            found.map_err(|e| Rejected::BadPayload(format!("face detection failed: {e:#}")))?;
        let t2 = Instant::now();
        let mut faces = self.classify(&gray, &boxes, fault);
        if let Some(s) = stream {
            s.settle(&mut faces, &self.classes);
        }
        let t3 = Instant::now();
        let secs = [
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t3 - t0).as_secs_f64(),
        ];
        let predicted: Vec<usize> = faces
            .iter()
            .filter_map(|f| self.classes.iter().position(|c| *c == f.label))
            .collect();
        self.metrics.frame(secs, &predicted);
        let conf: Vec<(usize, f32)> = predicted
            .iter()
            .zip(&faces)
            .map(|(&c, f)| (c, f.confidence))
            .collect();
        lock(&self.drift).record(&conf, &self.classes);
        let ms = |s: f64| (s * 1e5).round() / 100.0;
        Ok(FrameResult {
            width,
            height,
            detection,
            classes: self.classes.clone(),
            faces,
            timing_ms: Timing {
                decode: ms(secs[0]),
                detect: ms(secs[1]),
                classify: ms(secs[2]),
                total: ms(secs[3]),
            },
        })
    }

    /// All faces of a frame in one batch (see `face::crop`).
    fn classify(&self, gray: &image::GrayImage, boxes: &[FaceBox], fault: Fault) -> Vec<Face> {
        let crops: Vec<image::GrayImage> =
            boxes.iter().map(|b| crate::face::crop(gray, b)).collect();
        let set = crate::face::batch(&crops);
        let probs = {
            let clf = lock(&self.clf);
            // Fires while the lock is held, as a real panic in the network would.
            fault.fire(&clf);
            // Scores that are not finite mean a broken model, not a bad
            // image: raised as this frame's panic, so the guard answers 500
            // and probes the model (and /healthz then reports it broken).
            crate::face::probabilities(&clf, &set).unwrap_or_else(|e| panic!("{e:#}"))
        };
        crate::face::label(boxes, &probs, &self.classes)
    }
}
