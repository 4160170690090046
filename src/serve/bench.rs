//! `fer bench serve`: per-frame latency of the serving pipeline on a
//! 640x480 frame with one face, by stage, and the frames per second it
//! sustains. The frame goes through exactly what a WebSocket frame does.

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

/// Per-stage latency and sustained frame rate.
#[derive(Debug, Clone)]
pub struct ServeBench {
    pub frames: usize,
    pub jpeg_bytes: usize,
    pub faces_per_frame: f64,
    pub model: String,
    pub threads: i32,
    pub detect_width: u32,
    /// `(stage, p50 ms, p95 ms)`.
    pub stages: Vec<(String, f64, f64)>,
    pub fps: f64,
}

impl ServeBench {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"frames": self.frames, "faces_per_frame": self.faces_per_frame,
            "fps": self.fps, "threads": self.threads,
            "stages_ms": self.stages.iter().map(|(n, p50, p95)| serde_json::json!({"stage": n, "p50": p50, "p95": p95})).collect::<Vec<_>>()})
    }

    /// The table `fer bench serve` prints.
    pub fn render(&self) -> String {
        let mut s = format!(
            "fer bench serve: {} frames of 640x480 JPEG ({} bytes), {:.2} faces per frame, model {}, {} threads, detection at {} px wide\n",
            self.frames, self.jpeg_bytes, self.faces_per_frame, self.model, self.threads, self.detect_width
        );
        s += "\n| stage | p50 ms | p95 ms |\n|---|---:|---:|\n";
        for (n, p50, p95) in &self.stages {
            s += &format!("| {n} | {p50:.2} | {p95:.2} |\n");
        }
        s += &format!("\n{:.1} frames per second, one frame at a time\n", self.fps);
        if self.faces_per_frame == 0.0 {
            s += "warning: no face was found, so classify did no work; try a larger --detect-width or the haar cascade\n";
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
    let mut prev = Vec::new();
    let mut stages: [Vec<f64>; 4] = Default::default();
    let mut faces = 0;
    let mut timed = std::time::Duration::ZERO;
    for i in 0..a.warmup + a.frames {
        let t0 = std::time::Instant::now();
        let r = engine
            .process(&jpeg, Some(&mut prev))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if i >= a.warmup {
            timed += t0.elapsed();
            let tm = &r.timing_ms;
            for (v, x) in stages
                .iter_mut()
                .zip([tm.decode, tm.detect, tm.classify, tm.total])
            {
                v.push(x);
            }
            faces += r.faces.len();
        }
    }
    let _ = std::fs::remove_file(&tmp);
    let names = ["decode", "detect", "classify", "total"];
    let rows: Vec<(String, f64, f64)> = names
        .iter()
        .zip(stages.iter_mut())
        .map(|(n, v)| (n.to_string(), pct(v, 0.5), pct(v, 0.95)))
        .collect();
    Ok(ServeBench {
        frames: a.frames,
        jpeg_bytes: jpeg.len(),
        faces_per_frame: faces as f64 / a.frames as f64,
        model: engine.model_name.clone(),
        threads: tch::get_num_threads(),
        detect_width: args.detect_width,
        stages: rows,
        fps: a.frames as f64 / timed.as_secs_f64(),
    })
}
