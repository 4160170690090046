//! `fer serve`: live emotions from the browser's webcam. One page (embedded
//! in the binary) streams JPEG frames over a WebSocket, one in flight; the
//! server decodes, finds faces with an OpenCV cascade, classifies them in
//! one batch and answers with boxes, labels and per-stage latency.
//!
//! This file owns the per-frame pipeline (`Engine`); `http` the server and
//! its limits, `guard` panic containment and the model's health.

pub mod bench;
pub mod detect;
pub mod drift;
mod fault;
mod form;
mod guard;
mod http;
pub mod metrics;

pub use http::run;

use crate::artifact::Classifier;
use crate::data::{ImageSet, Origin, NUM_CLASSES, PIXELS, SIDE};
use anyhow::Result;
use detect::{Cascade, Detector, FaceBox, Lighting};
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
    /// Frames are shrunk to this width before detection (speed).
    pub detect_width: u32,
    /// Largest accepted upload in bytes (413 above it).
    pub max_body: usize,
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

/// One face in an answer.
#[derive(Clone, Debug, Serialize)]
pub struct Face {
    #[serde(rename = "box")]
    pub bbox: [u32; 4],
    pub label: String,
    pub confidence: f32,
    pub probs: Vec<f32>,
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
    pub classes: Vec<String>,
    pub faces: Vec<Face>,
    pub timing_ms: Timing,
}

/// A payload the server refuses, with the reason for the client.
#[derive(Debug)]
pub enum Rejected {
    /// Not a usable image (400).
    BadPayload(String),
    /// More pixels than `--max-pixels`, known from the header alone (413).
    TooManyPixels(String),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::BadPayload(m) | Rejected::TooManyPixels(m) => f.write_str(m),
        }
    }
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
            .chunks_exact(NUM_CLASSES)
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
        anyhow::ensure!(
            clf.meta.classes.len() == NUM_CLASSES,
            "{}: the model has {} classes; fer serve expects the {NUM_CLASSES} of FER-2013",
            path.display(),
            clf.meta.classes.len()
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

    /// Decode, detect, classify one image. `previous` smooths labels over
    /// frames of one stream. A panic inside is the caller's to contain (the
    /// server's `Engine::handle` does).
    pub fn process(
        &self,
        bytes: &[u8],
        previous: Option<&mut Vec<Face>>,
    ) -> Result<FrameResult, Rejected> {
        self.frame(bytes, previous, Fault::None)
    }

    fn frame(
        &self,
        bytes: &[u8],
        previous: Option<&mut Vec<Face>>,
        fault: Fault,
    ) -> Result<FrameResult, Rejected> {
        let t0 = Instant::now();
        let gray = decode(bytes, self.max_pixels)?;
        let (width, height) = gray.dimensions();
        let t1 = Instant::now();
        let boxes = lock(&self.detector)
            .detect(&gray)
            .map_err(|e| Rejected::BadPayload(format!("face detection failed: {e:#}")))?;
        let t2 = Instant::now();
        let mut faces = self.classify(&gray, &boxes, fault);
        if let Some(prev) = previous {
            smooth(&mut faces, prev, &self.classes);
            *prev = faces.clone();
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

    /// All faces of a frame in one batch: a square crop around each box
    /// (with a margin, as FER-2013 faces are framed), scaled to 48x48.
    fn classify(&self, gray: &image::GrayImage, boxes: &[FaceBox], fault: Fault) -> Vec<Face> {
        let (w, h) = gray.dimensions();
        let mut set = ImageSet::default();
        for b in boxes {
            let side = (b.w.max(b.h) as f64 * 1.1).round() as u32;
            let cx = b.x + b.w / 2;
            let cy = b.y + b.h / 2;
            let x0 = cx
                .saturating_sub(side / 2)
                .min(w.saturating_sub(side.min(w)));
            let y0 = cy
                .saturating_sub(side / 2)
                .min(h.saturating_sub(side.min(h)));
            let crop = image::imageops::crop_imm(gray, x0, y0, side.min(w), side.min(h)).to_image();
            let face = image::imageops::resize(
                &crop,
                SIDE as u32,
                SIDE as u32,
                image::imageops::FilterType::Triangle,
            );
            debug_assert_eq!(face.as_raw().len(), PIXELS);
            set.push(face.as_raw(), 0, Origin::Unknown, String::new());
        }
        let probs = {
            let clf = lock(&self.clf);
            // Fires while the lock is held, as a real panic in the network would.
            fault.fire(&clf);
            if boxes.is_empty() {
                return vec![];
            }
            // Scores that are not finite mean a broken model, not a bad
            // image: raised as this frame's panic, so the guard answers 500
            // and probes the model (and /healthz then reports it broken).
            clf.predict_set(&set, false, 64)
                .unwrap_or_else(|e| panic!("{e:#}"))
        };
        boxes
            .iter()
            .zip(probs.chunks_exact(NUM_CLASSES))
            .map(|(b, p)| {
                let k = crate::eval::metrics::argmax(p);
                Face {
                    bbox: [b.x, b.y, b.w, b.h],
                    label: self.classes[k].clone(),
                    confidence: p[k],
                    probs: p.to_vec(),
                }
            })
            .collect()
    }
}

/// Smallest side the detector can work with.
const MIN_SIDE: u32 = 24;

/// The image as grayscale. Its size is read from the header and checked
/// against `max_pixels` before any pixel is decoded: a few hundred kilobytes
/// of PNG can claim 20000x20000 (1.2 GB as RGB). The decoder's own
/// allocation limit backs that up.
fn decode(bytes: &[u8], max_pixels: u64) -> Result<image::GrayImage, Rejected> {
    use image::ImageReader;
    if bytes.is_empty() {
        return Err(Rejected::BadPayload(
            "empty body: send a JPEG or PNG image".into(),
        ));
    }
    let not_image = |e: image::ImageError| {
        Rejected::BadPayload(format!("not a decodable image (JPEG or PNG expected): {e}"))
    };
    let reader = || {
        ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| not_image(e.into()))
    };
    let (width, height) = reader()?.into_dimensions().map_err(not_image)?;
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(Rejected::TooManyPixels(format!(
            "image is {width}x{height} = {pixels} pixels, over the {max_pixels} pixel limit (--max-pixels); send a smaller image"
        )));
    }
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(Rejected::BadPayload(format!(
            "image is {width}x{height}; at least {MIN_SIDE}x{MIN_SIDE} expected"
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // 8 bytes a pixel: 16-bit RGBA, the widest layout PNG or JPEG decode to.
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    let mut r = reader()?;
    r.limits(limits);
    Ok(r.decode().map_err(not_image)?.into_luma8())
}

fn iou(a: &[u32; 4], b: &[u32; 4]) -> f64 {
    let (ax1, ay1, bx1, by1) = (a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]);
    let iw = ax1.min(bx1).saturating_sub(a[0].max(b[0])) as f64;
    let ih = ay1.min(by1).saturating_sub(a[1].max(b[1])) as f64;
    let inter = iw * ih;
    let union = (a[2] * a[3] + b[2] * b[3]) as f64 - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Labels flicker frame to frame; each face that overlaps one of the last
/// frame keeps an exponential average of its probabilities.
fn smooth(faces: &mut [Face], prev: &[Face], classes: &[String]) {
    for f in faces.iter_mut() {
        let Some(p) = prev
            .iter()
            .filter(|p| iou(&p.bbox, &f.bbox) > 0.3)
            .max_by(|a, b| iou(&a.bbox, &f.bbox).total_cmp(&iou(&b.bbox, &f.bbox)))
        else {
            continue;
        };
        for (v, o) in f.probs.iter_mut().zip(&p.probs) {
            *v = 0.6 * *v + 0.4 * o;
        }
        let k = crate::eval::metrics::argmax(&f.probs);
        f.label = classes[k].clone();
        f.confidence = f.probs[k];
    }
}
