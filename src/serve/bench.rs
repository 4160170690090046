//! `fer bench serve`: per-frame latency of the serving pipeline on a
//! 640x480 frame with one face, by stage, and the frames per second it
//! sustains. The frame goes through exactly what a WebSocket frame does.

use super::{Engine, ServeArgs};
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ServeBenchArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// A face photo (default: scikit-image's astronaut.png from .venv),
    /// letterboxed into a 640x480 frame and JPEG-encoded as the page does.
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    #[arg(long, default_value_t = 300)]
    pub frames: usize,
    #[arg(long)]
    pub json: bool,
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

pub fn run(a: ServeBenchArgs) -> Result<()> {
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
            .map_err(|e| anyhow::anyhow!(e.0))?;
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
    let fps = a.frames as f64 / timed.as_secs_f64();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"frames": a.frames, "faces_per_frame": faces as f64 / a.frames as f64,
                "fps": fps, "threads": tch::get_num_threads(),
                "stages_ms": rows.iter().map(|(n, p50, p95)| serde_json::json!({"stage": n, "p50": p50, "p95": p95})).collect::<Vec<_>>()})
        );
    } else {
        println!(
            "fer bench serve: {} frames of 640x480 JPEG ({} bytes), {:.2} faces per frame, model {}, {} threads, detection at {} px wide",
            a.frames,
            jpeg.len(),
            faces as f64 / a.frames as f64,
            engine.model_name,
            tch::get_num_threads(),
            args.detect_width
        );
        println!("\n| stage | p50 ms | p95 ms |\n|---|---:|---:|");
        for (n, p50, p95) in &rows {
            println!("| {n} | {p50:.2} | {p95:.2} |");
        }
        println!("\n{fps:.1} frames per second, one frame at a time");
        if faces == 0 {
            println!("warning: no face was found, so classify did no work; try a larger --detect-width or the haar cascade");
        }
    }
    Ok(())
}
