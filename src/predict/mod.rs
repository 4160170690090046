//! `fer predict`: emotions in people's own photos, folders and video files.
//! Each image or frame goes through the face pipeline `fer serve` uses
//! (`crate::face`): a photo is searched down to `--min-face` like a posted
//! image, a video runs as a webcam stream does (tracked between full
//! detections, labels smoothed), with the faces of consecutive frames
//! classified in one batch. Rows go to one table; `--annotate` draws the
//! answers into copies; each video gets a summary and a timeline chart.
//!
//! Submodules: `input` (what was given), `video` (ffmpeg in and out),
//! `rows` (the table), `annotate` (drawing), `summary` (per-video figures).

pub mod annotate;
pub mod input;
pub mod rows;
pub mod summary;
pub mod video;

use crate::artifact::Classifier;
use crate::face::detect::{Cascade, Detector, FaceBox, Lighting};
use crate::face::{Face, Stream};
use anyhow::{bail, Context, Result};
use input::{Input, Kind};
use rows::{Format, Row, Writer};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;
use summary::{VideoStats, VideoSummary};

/// Everything `fer predict` needs.
#[derive(Debug, Clone)]
pub struct PredictOptions {
    pub inputs: Vec<PathBuf>,
    /// Model file or run folder (default: the release model).
    pub model: Option<PathBuf>,
    pub out: PathBuf,
    pub format: Format,
    pub annotate: bool,
    /// Analyse every Nth frame of a video (1: all).
    pub every: u32,
    /// Photos are searched for faces down to this many pixels wide.
    pub min_face: u32,
    /// Write into an existing, non-empty `out`.
    pub force: bool,
    pub cascade: Cascade,
    pub cascade_path: Option<PathBuf>,
    pub lighting: Lighting,
    /// Video frames are shrunk to this width for a full detection.
    pub detect_width: u32,
    /// Videos: a full detection spread over N analysed frames, tracking
    /// between (1: a whole detection every frame).
    pub track_every: u32,
    /// Largest image (or video frame) in pixels.
    pub max_pixels: u64,
    /// Analysed frames whose faces are classified in one batch.
    pub batch_frames: usize,
    /// Show a progress bar on a terminal.
    pub progress: bool,
}

/// An input that was passed over, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub input: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageSummary {
    pub input: String,
    pub width: u32,
    pub height: u32,
    /// The smallest face the search could find here: `--min-face`, or more
    /// in photos over the scan budget (`face::detect::STILL_SCAN_PIXELS`).
    pub smallest_face: u32,
    pub faces: Vec<Face>,
    pub annotated: Option<PathBuf>,
}

/// What a `fer predict` run did, as `summary.json` records it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub out: PathBuf,
    pub table: PathBuf,
    pub model: String,
    pub cpu: String,
    pub images: Vec<ImageSummary>,
    pub videos: Vec<VideoSummary>,
    pub skipped: Vec<Skipped>,
    pub warnings: Vec<String>,
    pub rows: u64,
    pub faces: u64,
    /// Images plus analysed video frames.
    pub frames: u64,
    pub seconds: f64,
    pub frames_per_second: f64,
}

/// The folder of annotated copies inside `--out`.
const ANNOTATED: &str = "annotated";

/// A file an interrupted `fer predict` leaves behind: its hidden partial
/// outputs (`.NAME.partial`, `.NAME.partial.mp4`, `.NAME.partial.log`).
fn leftover(name: &std::ffi::OsStr) -> bool {
    let n = name.to_string_lossy();
    n.starts_with('.') && n.contains(".partial")
}

/// The partial files of an interrupted run in `out` and its `annotated/`,
/// and whether anything else is there (a lock file is nothing).
fn contents(out: &Path) -> Result<(Vec<PathBuf>, bool)> {
    let (mut partial, mut other) = (Vec::new(), false);
    for dir in [out.to_path_buf(), out.join(ANNOTATED)] {
        if !dir.is_dir() {
            continue;
        }
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let name = e.file_name();
            if name == crate::layout::LOCK || (dir == out && name == ANNOTATED) {
                continue;
            }
            if leftover(&name) {
                partial.push(e.path());
            } else {
                other = true;
            }
        }
    }
    Ok((partial, other))
}

/// Removes what an interrupted run left in `out` (called under its lock),
/// saying so.
fn clean_leftovers(out: &Path) -> Result<()> {
    let (partial, _) = contents(out)?;
    for p in &partial {
        std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        eprintln!(
            "predict: removed {}, left by an interrupted run",
            p.display()
        );
    }
    Ok(())
}

/// Refuses an existing non-empty `out` unless `force`; an interrupted run's
/// partial files (hidden) do not count, and are removed once the run holds
/// the folder's lock.
fn check_out(out: &Path, force: bool) -> Result<()> {
    if out.is_file() {
        bail!(
            "{}: --out is a file; choose a folder (nothing was written)",
            out.display()
        );
    }
    let busy = out.is_dir() && contents(out)?.1;
    if busy && !force {
        bail!(
            "{} already exists and is not empty; choose another --out, or pass --force to write into it (its files of the same names are replaced; nothing was written)",
            out.display()
        );
    }
    Ok(())
}

/// The pipeline's parts, loaded once.
struct Parts {
    clf: Classifier,
    det: Detector,
    classes: Vec<String>,
}

fn load(o: &PredictOptions) -> Result<Parts> {
    let path = crate::serve::model_path(o.model.as_deref())?;
    let clf = Classifier::load(&path, tch::Device::Cpu)?;
    anyhow::ensure!(
        clf.net.is_some(),
        "{}: a {} baseline ignores the image; use a trained network",
        path.display(),
        clf.meta.model.family()
    );
    let cascade = match &o.cascade_path {
        Some(p) => p.clone(),
        None => crate::face::detect::default_cascade(o.cascade)?,
    };
    let det = Detector::new(&cascade, o.lighting, o.detect_width)?;
    Ok(Parts {
        classes: clf.meta.classes.clone(),
        clf,
        det,
    })
}

/// Names that outputs take under `out`, kept unique.
#[derive(Default)]
struct Names(HashSet<String>);

impl Names {
    fn take(&mut self, want: String) -> String {
        if self.0.insert(want.clone()) {
            return want;
        }
        let (stem, ext) = match want.rsplit_once('.') {
            Some((s, e)) => (s.to_string(), format!(".{e}")),
            None => (want.clone(), String::new()),
        };
        (2..)
            .map(|i| format!("{stem}-{i}{ext}"))
            .find(|n| self.0.insert(n.clone()))
            .unwrap_or(want)
    }
}

pub fn run(o: &PredictOptions) -> Result<Summary> {
    anyhow::ensure!(o.every >= 1, "--every must be at least 1");
    let (inputs, passed) = input::expand(&o.inputs)?;
    check_out(&o.out, o.force)?;
    let parts = load(o)?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let _lock = crate::lock::acquire(&o.out)?;
    clean_leftovers(&o.out)?;
    let started = Instant::now();

    let (work, mut skipped) = probe(inputs);
    for (path, why) in passed {
        let input = input::shown(path.as_os_str());
        eprintln!("warning: skipped {input}: {why}");
        skipped.push(Skipped { input, reason: why });
    }
    let total: u64 = work
        .iter()
        .map(|(_, p)| {
            p.as_ref().map_or(1, |p| {
                p.declared_frames.unwrap_or(0).div_ceil(o.every as u64)
            })
        })
        .sum();
    let bar = progress(o.progress, total);

    // The table's columns follow the model's classes.
    let table = Writer::create(&o.out, o.format, &parts.classes)?;
    let mut run = Run {
        o,
        parts,
        table,
        names: Names::default(),
        bar,
        faces: 0,
        frames: 0,
        warnings: Vec::new(),
    };
    let mut images = Vec::new();
    let mut videos = Vec::new();
    for (inp, probe) in work {
        let shown = inp.path.display().to_string();
        let r = match probe {
            None => run.image(&inp).map(|s| images.push(s)),
            Some(p) => run.video(&inp, &p).map(|s| videos.push(s)),
        };
        if let Err(e) = r {
            // A broken model is not the input's fault: stop.
            if e.downcast_ref::<BadInput>().is_none() {
                return Err(e.context(format!("while predicting {shown}")));
            }
            let reason = format!("{e:#}");
            run.bar.suspend(|| eprintln!("warning: skipped {reason}"));
            skipped.push(Skipped {
                input: shown,
                reason,
            });
        }
    }
    run.bar.finish_and_clear();
    if images.is_empty() && videos.is_empty() {
        bail!(
            "no input could be read ({} skipped: {}); nothing was written",
            skipped.len(),
            skipped
                .iter()
                .map(|s| s.reason.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let Run {
        table,
        faces,
        frames,
        warnings,
        parts,
        ..
    } = run;
    let rows = table.rows;
    let table = table.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    let s = Summary {
        out: o.out.clone(),
        table,
        model: parts.clf.meta.name.clone(),
        cpu: crate::cpu::model(),
        images,
        videos,
        skipped,
        warnings,
        rows,
        faces,
        frames,
        seconds,
        frames_per_second: frames as f64 / seconds.max(1e-9),
    };
    crate::layout::write_atomic(
        &o.out.join(crate::layout::SUMMARY_JSON),
        serde_json::to_string_pretty(&s)?.as_bytes(),
    )?;
    Ok(s)
}

/// Videos are probed first: for the progress bar's length, and so a file
/// named like a video that is not one is skipped before any work.
fn probe(inputs: Vec<Input>) -> (Vec<(Input, Option<video::Probe>)>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let mut work = Vec::new();
    for i in inputs {
        match i.kind {
            Kind::Image => work.push((i, None)),
            Kind::Video => match video::probe(&i.path) {
                Ok(p) => work.push((i, Some(p))),
                Err(e) => {
                    eprintln!("warning: skipped {e:#}");
                    skipped.push(Skipped {
                        input: input::shown(i.path.as_os_str()),
                        reason: format!("{e:#}"),
                    });
                }
            },
        }
    }
    (work, skipped)
}

fn progress(show: bool, total: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{bar:30}] {pos}/{len} frames, {per_sec}, ETA {eta} {wide_msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// An input that cannot be read: a warning and a skip, not the run's end.
#[derive(Debug)]
struct BadInput(String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

struct Run<'a> {
    o: &'a PredictOptions,
    parts: Parts,
    table: Writer,
    names: Names,
    bar: indicatif::ProgressBar,
    faces: u64,
    frames: u64,
    warnings: Vec<String>,
}

impl Run<'_> {
    fn rows(&mut self, input: &str, frame: u64, time: f64, faces: &[Face]) -> Result<()> {
        if faces.is_empty() {
            return self.table.push(&Row {
                input,
                frame,
                time,
                faces: 0,
                face: None,
            });
        }
        for (i, f) in faces.iter().enumerate() {
            self.table.push(&Row {
                input,
                frame,
                time,
                faces: faces.len(),
                face: Some((i, f)),
            })?;
        }
        self.faces += faces.len() as u64;
        Ok(())
    }

    fn classify(&self, crops: &[image::GrayImage]) -> Result<Vec<f32>> {
        crate::face::probabilities(&self.parts.clf, &crate::face::batch(crops))
    }

    fn image(&mut self, inp: &Input) -> Result<ImageSummary> {
        let shown = inp.path.display().to_string();
        let bytes = std::fs::read(&inp.path)
            .map_err(|e| BadInput(format!("{shown}: cannot be read ({e})")))?;
        let bad = |e: crate::face::Rejected| BadInput(format!("{shown}: {e}"));
        let gray = crate::face::decode_gray(&bytes, self.o.max_pixels).map_err(bad)?;
        let (width, height) = gray.dimensions();
        let boxes = self.parts.det.detect_still(&gray, self.o.min_face)?;
        let crops: Vec<_> = boxes.iter().map(|b| crate::face::crop(&gray, b)).collect();
        let probs = self.classify(&crops)?;
        let faces = crate::face::label(&boxes, &probs, &self.parts.classes);
        self.rows(&shown, 0, 0.0, &faces)?;
        self.frames += 1;
        self.bar.inc(1);
        let annotated = if self.o.annotate {
            let mut rgb = crate::face::decode(&bytes, self.o.max_pixels)
                .map_err(bad)?
                .to_rgb8();
            annotate::draw(&mut rgb, &faces, &self.parts.classes)?;
            Some(self.save_image(inp, &rgb)?)
        } else {
            None
        };
        Ok(ImageSummary {
            input: shown,
            width,
            height,
            smallest_face: self
                .parts
                .det
                .still_min_face(width, height, self.o.min_face),
            faces,
            annotated,
        })
    }

    fn save_image(&mut self, inp: &Input, rgb: &image::RgbImage) -> Result<PathBuf> {
        let flat = input::flat_name(&inp.name);
        let lower = flat.to_ascii_lowercase();
        let (name, fmt) = if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
            (flat, image::ImageFormat::Jpeg)
        } else if lower.ends_with(".png") {
            (flat, image::ImageFormat::Png)
        } else {
            (format!("{flat}.png"), image::ImageFormat::Png)
        };
        let dir = self.o.out.join(ANNOTATED);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(self.names.take(name));
        let mut buf = Vec::new();
        rgb.write_to(&mut std::io::Cursor::new(&mut buf), fmt)?;
        crate::layout::write_atomic(&path, &buf)?;
        Ok(path)
    }

    fn video(&mut self, inp: &Input, probe: &video::Probe) -> Result<VideoSummary> {
        let shown = inp.path.display().to_string();
        let pixels = probe.width as u64 * probe.height as u64;
        if pixels > self.o.max_pixels {
            return Err(BadInput(format!(
                "{shown}: frames are {}x{}, over the {} pixel limit (--max-pixels)",
                probe.width, probe.height, self.o.max_pixels
            ))
            .into());
        }
        let flat = input::flat_name(&inp.name);
        let stem = flat
            .rsplit_once('.')
            .map_or(flat.as_str(), |(s, _)| s)
            .to_string();
        let annotated = self.o.annotate.then(|| {
            self.o
                .out
                .join(ANNOTATED)
                .join(self.names.take(format!("{stem}.mp4")))
        });
        if annotated.is_some() {
            std::fs::create_dir_all(self.o.out.join(ANNOTATED))?;
        }
        let mut v = VideoRun {
            stream: Stream::new(self.o.track_every),
            pending: Vec::new(),
            crops: Vec::new(),
            last: Vec::new(),
            encoder: None,
            annotated: annotated.clone(),
            stats: VideoStats::new(probe.fps),
            decoded: 0,
        };
        let every = self.o.every as u64;
        let batch = self.o.batch_frames.max(1);
        let decoded = video::decode(&inp.path, |i, rgb| {
            v.decoded = i + 1;
            let analysed = i % every == 0;
            let mut boxes = Vec::new();
            if analysed {
                let gray = image::imageops::grayscale(&rgb);
                boxes = v.stream.boxes(&mut self.parts.det, &gray)?.0;
                v.crops
                    .extend(boxes.iter().map(|b| crate::face::crop(&gray, b)));
            }
            v.pending.push(Pending {
                index: i,
                rgb: v.annotated.is_some().then_some(rgb),
                boxes,
                analysed,
            });
            if v.pending.iter().filter(|p| p.analysed).count() >= batch {
                self.flush(&mut v, &shown, probe)?;
            }
            Ok(())
        });
        let (frames, ending) = match decoded {
            Ok(d) => d,
            // Nothing decodable at all: the input's fault.
            Err(e) if v.decoded == 0 => return Err(BadInput(format!("{e:#}")).into()),
            Err(e) => return Err(e),
        };
        self.flush(&mut v, &shown, probe)?;
        let mut warning = None;
        let short = probe
            .declared_frames
            .is_some_and(|d| frames + 2.max(d / 100) < d);
        if short || !ending.errors.is_empty() {
            let last = ending.errors.last().map_or("", |s| s.as_str());
            let w = format!(
                "{shown}: the video looks truncated or corrupt: {frames}{} frames decoded, the last good one is frame {} at {:.2} s; rows and outputs hold the frames decoded so far{}",
                probe
                    .declared_frames
                    .map_or(String::new(), |d| format!(" of {d} declared")),
                frames - 1,
                (frames - 1) as f64 / probe.fps,
                if last.is_empty() { String::new() } else { format!(" (ffmpeg: {last})") }
            );
            self.bar.suspend(|| eprintln!("warning: {w}"));
            self.warnings.push(w.clone());
            warning = Some(w);
        }
        let encoded = match v.encoder.take() {
            Some(e) => {
                anyhow::ensure!(
                    e.frames == frames,
                    "{shown}: {} frames annotated of {frames} decoded",
                    e.frames
                );
                Some(e.finish()?)
            }
            None => None,
        };
        let timeline = self.o.out.join("timelines").join(format!("{stem}.png"));
        let timeline = self.names.take(timeline.to_string_lossy().into_owned());
        let timeline = PathBuf::from(timeline);
        v.stats.plot(&timeline, &shown, &self.parts.classes)?;
        Ok(v.stats.summary(
            &shown,
            probe,
            frames,
            &self.parts.classes,
            timeline,
            encoded,
            warning,
        ))
    }

    /// Classifies the pending frames' faces in one batch, then settles each
    /// frame in order: smoothing, rows, statistics, annotation.
    fn flush(&mut self, v: &mut VideoRun, shown: &str, probe: &video::Probe) -> Result<()> {
        let probs = self.classify(&v.crops)?;
        v.crops.clear();
        let mut off = 0;
        for p in std::mem::take(&mut v.pending) {
            if p.analysed {
                let n = p.boxes.len() * self.parts.classes.len();
                let mut faces =
                    crate::face::label(&p.boxes, &probs[off..off + n], &self.parts.classes);
                off += n;
                v.stream.settle(&mut faces, &self.parts.classes);
                let time = p.index as f64 / probe.fps;
                self.rows(shown, p.index, time, &faces)?;
                v.stats.push(p.index, &faces);
                v.last = faces;
                self.frames += 1;
                self.bar.inc(1);
            }
            if let Some(mut rgb) = p.rgb {
                annotate::draw(&mut rgb, &v.last, &self.parts.classes)?;
                if v.encoder.is_none() {
                    let (w, h) = rgb.dimensions();
                    let path = v.annotated.as_ref().context("no annotated path")?;
                    v.encoder = Some(video::Encoder::new(path, w, h, &probe.rate)?);
                }
                if let Some(e) = v.encoder.as_mut() {
                    e.push(&rgb)?;
                }
            }
        }
        Ok(())
    }
}

/// A decoded frame waiting for its batch to be classified.
struct Pending {
    index: u64,
    rgb: Option<image::RgbImage>,
    boxes: Vec<FaceBox>,
    analysed: bool,
}

struct VideoRun {
    stream: Stream,
    pending: Vec<Pending>,
    crops: Vec<image::GrayImage>,
    /// The last analysed frame's faces, drawn on frames in between.
    last: Vec<Face>,
    encoder: Option<video::Encoder>,
    annotated: Option<PathBuf>,
    stats: VideoStats,
    decoded: u64,
}

impl Summary {
    /// What `fer predict` prints: a line per input, then the totals.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let show = 20;
        for i in self.images.iter().take(show) {
            let labels: Vec<String> = i
                .faces
                .iter()
                .map(|f| format!("{} {:.0}%", f.label, 100.0 * f.confidence))
                .collect();
            s += &format!(
                "{}: {} face{}{}{}\n",
                i.input,
                i.faces.len(),
                if i.faces.len() == 1 { "" } else { "s" },
                if labels.is_empty() { "" } else { ": " },
                labels.join(", ")
            );
        }
        if self.images.len() > show {
            s += &format!("... and {} more images\n", self.images.len() - show);
        }
        for v in &self.videos {
            s += &v.render();
        }
        s += &format!(
            "\n{} images and {} videos: {} frames analysed, {} faces, {} rows in {}; {:.1} frames per second ({:.1} s, {})\n",
            self.images.len(),
            self.videos.len(),
            self.frames,
            self.faces,
            self.rows,
            self.table.display(),
            self.frames_per_second,
            self.seconds,
            self.cpu
        );
        if !self.skipped.is_empty() {
            s += &format!(
                "{} input{} skipped (see the warnings above and summary.json)\n",
                self.skipped.len(),
                if self.skipped.len() == 1 { "" } else { "s" }
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_stay_unique() {
        let mut n = Names::default();
        assert_eq!(n.take("a.mp4".into()), "a.mp4");
        assert_eq!(n.take("a.mp4".into()), "a-2.mp4");
        assert_eq!(n.take("a.mp4".into()), "a-3.mp4");
        assert_eq!(n.take("b".into()), "b");
        assert_eq!(n.take("b".into()), "b-2");
    }

    #[test]
    fn an_existing_out_is_refused_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        check_out(&dir.path().join("new"), false).unwrap();
        check_out(dir.path(), false).unwrap();
        std::fs::write(dir.path().join("predictions.csv"), "x").unwrap();
        let e = check_out(dir.path(), false).unwrap_err().to_string();
        assert!(
            e.contains("--force") && e.contains("nothing was written"),
            "{e}"
        );
        check_out(dir.path(), true).unwrap();
        let e = check_out(&dir.path().join("predictions.csv"), true).unwrap_err();
        assert!(e.to_string().contains("is a file"), "{e}");
    }
}
