//! A video's figures: the share of analysed frames with a face, the share
//! of each emotion (of the largest face) overall and in up to ten spans of
//! time, and the timeline chart of the seven probabilities.

use super::video::Probe;
use crate::face::Face;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One span of time and what it held.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub start_s: f64,
    pub end_s: f64,
    pub frames: usize,
    pub face_share: f64,
    /// Share of the span's frames with a face that showed each emotion.
    pub emotions: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VideoSummary {
    pub input: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Frames decoded (all of them, analysed or not).
    pub frames: u64,
    pub analysed: usize,
    /// Share of analysed frames with at least one face.
    pub face_share: f64,
    /// Share of frames with a face whose largest face showed each emotion.
    pub emotions: BTreeMap<String, f64>,
    pub dominant: Option<String>,
    pub over_time: Vec<Span>,
    pub timeline: PathBuf,
    pub annotated: Option<PathBuf>,
    pub warning: Option<String>,
}

/// Per analysed frame: its time and the largest face's probabilities.
pub struct VideoStats {
    fps: f64,
    times: Vec<f64>,
    probs: Vec<Option<Vec<f32>>>,
}

fn shares(labels: impl Iterator<Item = usize>, classes: &[String]) -> BTreeMap<String, f64> {
    let mut counts = vec![0usize; classes.len()];
    let mut n = 0;
    for k in labels {
        counts[k] += 1;
        n += 1;
    }
    classes
        .iter()
        .zip(counts)
        .map(|(c, k)| (c.clone(), if n == 0 { 0.0 } else { k as f64 / n as f64 }))
        .collect()
}

impl VideoStats {
    pub fn new(fps: f64) -> VideoStats {
        VideoStats {
            fps,
            times: Vec::new(),
            probs: Vec::new(),
        }
    }

    pub fn push(&mut self, frame: u64, faces: &[Face]) {
        self.times.push(frame as f64 / self.fps);
        // Faces come largest first.
        self.probs.push(faces.first().map(|f| f.probs.clone()));
    }

    fn label(p: &[f32]) -> usize {
        crate::eval::metrics::argmax(p)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn summary(
        &self,
        input: &str,
        probe: &Probe,
        frames: u64,
        classes: &[String],
        timeline: PathBuf,
        annotated: Option<PathBuf>,
        warning: Option<String>,
    ) -> VideoSummary {
        let with_face = self.probs.iter().filter(|p| p.is_some()).count();
        let emotions = shares(self.probs.iter().flatten().map(|p| Self::label(p)), classes);
        let dominant = (with_face > 0)
            .then(|| {
                emotions
                    .iter()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(k, _)| k.clone())
            })
            .flatten();
        let duration = frames as f64 / self.fps;
        // Ten spans, none under a second.
        let n = ((duration).floor() as usize).clamp(1, 10);
        let span = duration / n as f64;
        let over_time = (0..n)
            .map(|i| {
                let (a, b) = (i as f64 * span, (i + 1) as f64 * span);
                let idx: Vec<usize> = (0..self.times.len())
                    .filter(|&j| self.times[j] >= a && (self.times[j] < b || i == n - 1))
                    .collect();
                let faces: Vec<&Vec<f32>> =
                    idx.iter().filter_map(|&j| self.probs[j].as_ref()).collect();
                Span {
                    start_s: (a * 100.0).round() / 100.0,
                    end_s: (b * 100.0).round() / 100.0,
                    frames: idx.len(),
                    face_share: if idx.is_empty() {
                        0.0
                    } else {
                        faces.len() as f64 / idx.len() as f64
                    },
                    emotions: shares(faces.iter().map(|p| Self::label(p)), classes),
                }
            })
            .collect();
        VideoSummary {
            input: input.to_string(),
            width: probe.width,
            height: probe.height,
            fps: probe.fps,
            frames,
            analysed: self.times.len(),
            face_share: if self.times.is_empty() {
                0.0
            } else {
                with_face as f64 / self.times.len() as f64
            },
            emotions,
            dominant,
            over_time,
            timeline,
            annotated,
            warning,
        }
    }

    /// The seven probabilities of the largest face over time; gaps where
    /// no face was found.
    pub fn plot(&self, path: &Path, input: &str, classes: &[String]) -> Result<()> {
        let series: Vec<(String, Vec<Option<f64>>)> = classes
            .iter()
            .enumerate()
            .map(|(k, c)| {
                (
                    c.clone(),
                    self.probs
                        .iter()
                        .map(|p| p.as_ref().map(|p| p[k] as f64))
                        .collect(),
                )
            })
            .collect();
        let name = Path::new(input)
            .file_name()
            .map_or(input.to_string(), |n| n.to_string_lossy().into_owned());
        crate::plot::timeline(
            path,
            &format!("{name}: emotion probabilities of the largest face"),
            &self.times,
            &series,
            &super::annotate::CLASS_COLORS,
        )
    }
}

impl VideoSummary {
    /// The lines `fer predict` prints for a video.
    pub fn render(&self) -> String {
        let top: Vec<String> = {
            let mut e: Vec<(&String, &f64)> = self.emotions.iter().collect();
            e.sort_by(|a, b| b.1.total_cmp(a.1));
            e.iter()
                .take(3)
                .filter(|(_, v)| **v > 0.0)
                .map(|(k, v)| format!("{k} {:.0}%", 100.0 * **v))
                .collect()
        };
        let mut s = format!(
            "{}: {} frames ({}x{}, {:.2} fps), {} analysed, a face in {:.0}% of them{}{}\n  timeline: {}\n",
            self.input,
            self.frames,
            self.width,
            self.height,
            self.fps,
            self.analysed,
            100.0 * self.face_share,
            if top.is_empty() { "" } else { "; " },
            top.join(", "),
            self.timeline.display()
        );
        if let Some(a) = &self.annotated {
            s += &format!("  annotated: {}\n", a.display());
        }
        s
    }
}
