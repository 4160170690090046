//! `fer bench serve`: per-frame latency of the serving pipeline on a
//! 640x480 frame with one face, by stage, and the frames per second it
//! sustains, for each way of finding faces side by side: a stream's fast
//! path (tracking), a stream with full detection on every frame, and a
//! still image searched down to `--min-face`. Frames go through exactly
//! what a WebSocket frame (or a posted image) does.

use super::{Engine, ServeOptions};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// What `fer bench serve` times.
#[derive(Debug, Clone)]
pub struct ServeBenchOptions {
    pub serve: ServeOptions,
    /// A face photo (default: scikit-image's astronaut.png from .venv),
    /// letterboxed into a 640x480 frame and JPEG-encoded as the page does.
    pub image: Option<PathBuf>,
    pub warmup: usize,
    pub frames: usize,
}

/// One way of finding faces, timed on the same frame.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathBench {
    /// What was timed, for the table.
    pub path: String,
    pub faces_per_frame: f64,
    /// Share of frames that ran a full detection.
    pub full_share: f64,
    /// `(stage, p50 ms, p95 ms)`.
    pub stages: Vec<(String, f64, f64)>,
    pub fps: f64,
}

/// Per-stage latency and sustained frame rate of each path.
#[derive(Debug, Clone)]
pub struct ServeBench {
    pub frames: usize,
    pub jpeg_bytes: usize,
    pub model: String,
    pub threads: i32,
    pub detect_width: u32,
    pub track_every: u32,
    pub min_face: u32,
    pub cpu: String,
    pub paths: Vec<PathBench>,
}

impl ServeBench {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"frames": self.frames, "threads": self.threads, "cpu": self.cpu,
            "model": self.model, "detect_width": self.detect_width,
            "track_every": self.track_every, "min_face": self.min_face,
            "paths": self.paths.iter().map(|p| serde_json::json!({
                "path": p.path, "fps": p.fps, "faces_per_frame": p.faces_per_frame,
                "full_share": p.full_share,
                "stages_ms": p.stages.iter().map(|(n, p50, p95)| serde_json::json!({"stage": n, "p50": p50, "p95": p95})).collect::<Vec<_>>()})).collect::<Vec<_>>()})
    }

    /// The table `fer bench serve` prints: one row per path, p50/p95 per stage.
    pub fn render(&self) -> String {
        let mut s = format!(
            "fer bench serve: {} frames per path of one 640x480 JPEG ({} bytes), model {}, {} threads, {}\n",
            self.frames, self.jpeg_bytes, self.model, self.threads, self.cpu
        );
        s += "\n| path | decode p50/p95 | detect p50/p95 | classify p50/p95 | total p50/p95 | FPS | faces/frame | full detections |\n|---|---:|---:|---:|---:|---:|---:|---:|\n";
        for p in &self.paths {
            s += &format!("| {} |", p.path);
            for (_, p50, p95) in &p.stages {
                s += &format!(" {p50:.2} / {p95:.2} |");
            }
            s += &format!(
                " {:.1} | {:.2} | {:.0}% |\n",
                p.fps,
                p.faces_per_frame,
                100.0 * p.full_share
            );
        }
        s += "\nTimes in ms, one frame at a time. Stream paths shrink frames to ";
        s += &format!(
            "{} px wide for a full detection; the still path searches the whole frame down to {} px faces (--min-face).\n",
            self.detect_width, self.min_face
        );
        if self.paths.iter().any(|p| p.faces_per_frame == 0.0) {
            s += "warning: a path found no face, so its classify did no work; try a larger --detect-width or the haar cascade\n";
        }
        s
    }
}

fn frame_jpeg(path: &std::path::Path) -> Result<Vec<u8>> {
    let img = image::open(path)
        .with_context(|| format!("reading {}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let s = (480.0 / h as f64).min(640.0 / w as f64);
    let (nw, nh) = ((w as f64 * s) as u32, (h as f64 * s) as u32);
    let small = image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Triangle);
    let mut frame = image::RgbImage::new(640, 480);
    image::imageops::overlay(
        &mut frame,
        &small,
        ((640 - nw) / 2) as i64,
        ((480 - nh) / 2) as i64,
    );
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode_image(&frame)?;
    Ok(out)
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

pub fn run(a: &ServeBenchOptions) -> Result<ServeBench> {
    let photo = a.image.clone().unwrap_or_else(|| {
        let venv =
            std::env::var_os("VIRTUAL_ENV").map_or_else(|| PathBuf::from(".venv"), PathBuf::from);
        venv.join("lib/python3.11/site-packages/skimage/data/astronaut.png")
    });
    let jpeg = frame_jpeg(&photo)?;
    let mut args = a.serve.clone();
    let tmp = std::env::temp_dir().join(format!("fer-bench-serve-{}.jsonl", std::process::id()));
    args.drift_log = Some(tmp.clone());
    let engine = Engine::new(&args)?;
    let every = args.track_every.max(1);
    let paths = [
        (
            format!("stream, tracked (full detection spread over {every} frames)"),
            Some(every),
        ),
        ("stream, full detection every frame".to_string(), Some(1)),
        (
            format!("still image (faces down to {} px)", args.min_face),
            None,
        ),
    ];
    let mut out = Vec::new();
    for (name, every) in paths {
        out.push(time_path(&engine, &jpeg, name, every, a.warmup, a.frames)?);
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(ServeBench {
        frames: a.frames,
        jpeg_bytes: jpeg.len(),
        model: engine.model_name.clone(),
        threads: tch::get_num_threads(),
        detect_width: args.detect_width,
        track_every: every,
        min_face: args.min_face,
        cpu: crate::cpu::model(),
        paths: out,
    })
}

/// Times one path: a stream with the given full-detection period, or (None)
/// the still-image search.
fn time_path(
    engine: &Engine,
    jpeg: &[u8],
    name: String,
    every: Option<u32>,
    warmup: usize,
    frames: usize,
) -> Result<PathBench> {
    let mut stream = every.map(crate::face::Stream::new);
    let mut stages: [Vec<f64>; 4] = Default::default();
    let (mut faces, mut full) = (0, 0);
    let mut timed = std::time::Duration::ZERO;
    for i in 0..warmup + frames {
        let t0 = std::time::Instant::now();
        let r = engine
            .process(jpeg, stream.as_mut())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if i >= warmup {
            timed += t0.elapsed();
            let tm = &r.timing_ms;
            for (v, x) in stages
                .iter_mut()
                .zip([tm.decode, tm.detect, tm.classify, tm.total])
            {
                v.push(x);
            }
            faces += r.faces.len();
            full += usize::from(r.detection == crate::face::track::Detection::Full);
        }
    }
    let names = ["decode", "detect", "classify", "total"];
    let rows: Vec<(String, f64, f64)> = names
        .iter()
        .zip(stages.iter_mut())
        .map(|(n, v)| (n.to_string(), pct(v, 0.5), pct(v, 0.95)))
        .collect();
    Ok(PathBench {
        path: name,
        faces_per_frame: faces as f64 / frames as f64,
        full_share: full as f64 / frames as f64,
        stages: rows,
        fps: frames as f64 / timed.as_secs_f64(),
    })
}
