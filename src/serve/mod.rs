//! `fer serve`: live emotions from the browser's webcam. One page (embedded
//! in the binary) streams JPEG frames over a WebSocket, one in flight; the
//! server decodes, finds faces with an OpenCV cascade, classifies them in
//! one batch and answers with boxes, labels and per-stage latency.

pub mod bench;
pub mod detect;
pub mod drift;
pub mod metrics;

use crate::artifact::Classifier;
use crate::data::{ImageSet, Origin, NUM_CLASSES, PIXELS, SIDE};
use anyhow::{Context, Result};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use detect::{Cascade, Detector, FaceBox, Lighting};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
pub struct BadInput(pub String);

/// Everything one request needs: the model, the detector, the monitors.
pub struct Engine {
    clf: Mutex<Classifier>,
    detector: Mutex<Detector>,
    pub metrics: metrics::Metrics,
    pub drift: Mutex<drift::Drift>,
    pub classes: Vec<String>,
    pub model_name: String,
    pub max_body: usize,
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
        let cascade = match &a.cascade_path {
            Some(p) => p.clone(),
            None => detect::default_cascade(a.cascade)?,
        };
        let detector = Detector::new(&cascade, a.lighting, a.detect_width)?;
        let log = a
            .drift_log
            .clone()
            .unwrap_or_else(crate::layout::serve_predictions);
        let train: Vec<f64> = clf.meta.prior.iter().map(|&p| p as f64).collect();
        let reference = reference_confidence(&clf, a.data.as_deref());
        Ok(Engine {
            classes: clf.meta.classes.clone(),
            model_name: clf.meta.name.clone(),
            max_body: a.max_body,
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
    /// frames of one stream.
    pub fn process(
        &self,
        bytes: &[u8],
        previous: Option<&mut Vec<Face>>,
    ) -> Result<FrameResult, BadInput> {
        let t0 = Instant::now();
        if bytes.is_empty() {
            return Err(BadInput("empty body: send a JPEG or PNG image".into()));
        }
        let img = image::load_from_memory(bytes)
            .map_err(|e| BadInput(format!("not a decodable image (JPEG or PNG expected): {e}")))?;
        let gray = img.to_luma8();
        let (width, height) = gray.dimensions();
        if width < 24 || height < 24 {
            return Err(BadInput(format!(
                "image is {width}x{height}; at least 24x24 expected"
            )));
        }
        let t1 = Instant::now();
        let boxes = self
            .detector
            .lock()
            .unwrap()
            .detect(&gray)
            .map_err(|e| BadInput(format!("face detection failed: {e:#}")))?;
        let t2 = Instant::now();
        let mut faces = self.classify(&gray, &boxes)?;
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
        self.drift.lock().unwrap().record(&conf, &self.classes);
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
    fn classify(&self, gray: &image::GrayImage, boxes: &[FaceBox]) -> Result<Vec<Face>, BadInput> {
        if boxes.is_empty() {
            return Ok(vec![]);
        }
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
        let probs = self
            .clf
            .lock()
            .unwrap()
            .predict_set(&set, false, 64)
            .map_err(|e| BadInput(format!("{e:#}")))?;
        Ok(boxes
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
            .collect())
    }
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

type Shared = Arc<Engine>;

fn error_json(status: StatusCode, msg: String) -> Response {
    (status, Json(serde_json::json!({"error": msg}))).into_response()
}

async fn predict(State(e): State<Shared>, req: axum::extract::Request) -> Response {
    e.metrics.request("predict");
    let too_large = || {
        e.metrics.error("too_large");
        error_json(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over the {} byte limit (--max-body)", e.max_body),
        )
    };
    // Refuse a declared oversize upload before reading any of it, so the
    // client gets its 413 instead of a connection reset mid-upload.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > e.max_body) {
        return too_large();
    }
    let Ok(body) = axum::body::to_bytes(req.into_body(), e.max_body).await else {
        return too_large();
    };
    let e2 = e.clone();
    match tokio::task::spawn_blocking(move || e2.process(&body, None)).await {
        Ok(Ok(r)) => Json(r).into_response(),
        Ok(Err(BadInput(m))) => {
            e.metrics.error("bad_payload");
            error_json(StatusCode::BAD_REQUEST, m)
        }
        Err(err) => {
            e.metrics.error("internal");
            error_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {err}"),
            )
        }
    }
}

async fn ws(State(e): State<Shared>, up: WebSocketUpgrade) -> Response {
    e.metrics.request("ws");
    up.max_message_size(e.max_body)
        .on_upgrade(move |s| stream(s, e))
}

async fn stream(mut socket: WebSocket, e: Shared) {
    let mut prev: Vec<Face> = Vec::new();
    let mut frame = 0u64;
    while let Some(Ok(msg)) = socket.recv().await {
        let bytes = match msg {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            Message::Text(_) => {
                let _ = socket
                    .send(Message::Text(
                        r#"{"error":"send frames as binary JPEG messages"}"#.into(),
                    ))
                    .await;
                continue;
            }
            _ => continue,
        };
        frame += 1;
        let e2 = e.clone();
        let mut p = std::mem::take(&mut prev);
        let res = tokio::task::spawn_blocking(move || {
            let r = e2.process(&bytes, Some(&mut p));
            (r, p)
        })
        .await;
        let reply = match res {
            Ok((Ok(r), p)) => {
                prev = p;
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                v["frame"] = frame.into();
                if frame % 10 == 1 {
                    v["drift"] =
                        serde_json::to_value(e.drift.lock().unwrap().summary()).unwrap_or_default();
                }
                v.to_string()
            }
            Ok((Err(BadInput(m)), _)) => {
                e.metrics.error("bad_payload");
                serde_json::json!({"frame": frame, "error": m}).to_string()
            }
            Err(err) => serde_json::json!({"frame": frame, "error": err.to_string()}).to_string(),
        };
        if socket.send(Message::Text(reply.into())).await.is_err() {
            break;
        }
    }
}

async fn health(State(e): State<Shared>) -> Response {
    e.metrics.request("healthz");
    Json(serde_json::json!({"status": "ok", "model": e.model_name})).into_response()
}

async fn metrics_text(State(e): State<Shared>) -> Response {
    e.metrics.request("metrics");
    let drift = e.drift.lock().unwrap().summary();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        e.metrics.render(&e.classes, &drift),
    )
        .into_response()
}

async fn drift_json(State(e): State<Shared>) -> Response {
    Json(e.drift.lock().unwrap().summary()).into_response()
}

pub fn router(engine: Shared) -> Router {
    let api = Router::new().route("/api/predict", post(predict));
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics_text))
        .route("/api/drift", get(drift_json))
        .route("/ws", get(ws))
        .merge(api)
        .with_state(engine)
}

/// Serves until Ctrl-C; `on_ready` is told the bound address and the model
/// once the socket listens.
pub fn run(a: ServeOptions, on_ready: impl FnOnce(std::net::SocketAddr, &str)) -> Result<()> {
    let engine = Arc::new(Engine::new(&a)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&a.addr)
            .await
            .with_context(|| format!("binding {}", a.addr))?;
        let addr = listener.local_addr()?;
        on_ready(addr, &engine.model_name);
        axum::serve(listener, router(engine))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving")
    })
}
