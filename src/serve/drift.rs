//! Drift monitoring: every prediction goes to a size-capped JSONL log, and
//! a rolling window compares the live class mix and confidence with the
//! training set's.

use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write as _;
use std::path::PathBuf;

/// Faces in the rolling window.
pub const WINDOW: usize = 1000;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub frames: u64,
    pub faces: u64,
    pub window: usize,
    pub mean_confidence: f64,
    /// The model's mean top probability on its validation split, if known.
    pub train_mean_confidence: Option<f64>,
    pub live: Vec<f64>,
    pub train: Vec<f64>,
    /// Total variation distance between `live` and `train` (0 = same mix).
    pub divergence: f64,
}

pub struct Drift {
    log: Option<PathBuf>,
    /// The open log and its size, so a frame costs one append, not a stat
    /// and an open.
    file: Option<(std::fs::File, u64)>,
    max_bytes: u64,
    recent: VecDeque<(usize, f32)>,
    frames: u64,
    faces: u64,
    train: Vec<f64>,
    train_conf: Option<f64>,
}

impl Drift {
    pub fn new(
        log: Option<PathBuf>,
        max_bytes: u64,
        train: Vec<f64>,
        train_conf: Option<f64>,
    ) -> Drift {
        if let Some(dir) = log.as_ref().and_then(|p| p.parent()) {
            let _ = std::fs::create_dir_all(dir);
        }
        Drift {
            log,
            file: None,
            max_bytes,
            recent: VecDeque::with_capacity(WINDOW),
            frames: 0,
            faces: 0,
            train,
            train_conf,
        }
    }

    /// Records one frame's predictions: (class, confidence) per face.
    pub fn record(&mut self, faces: &[(usize, f32)], classes: &[String]) {
        self.frames += 1;
        self.faces += faces.len() as u64;
        for &f in faces {
            if self.recent.len() == WINDOW {
                self.recent.pop_front();
            }
            self.recent.push_back(f);
        }
        if let Some(path) = &self.log {
            // Rotate: the log never exceeds max_bytes plus one older file.
            if self.file.as_ref().is_some_and(|f| f.1 > self.max_bytes) {
                self.file = None;
                let _ = std::fs::rename(path, path.with_extension("jsonl.1"));
            }
            if self.file.is_none() {
                self.file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .ok()
                    .map(|f| {
                        let len = f.metadata().map_or(0, |m| m.len());
                        (f, len)
                    });
            }
            let line = serde_json::json!({
                "time": crate::layout::unix_now(),
                "faces": faces.iter().map(|&(c, p)| serde_json::json!({
                    "class": classes.get(c), "confidence": p})).collect::<Vec<_>>(),
            });
            if let Some((f, len)) = &mut self.file {
                let text = format!("{line}\n");
                if f.write_all(text.as_bytes()).is_ok() {
                    *len += text.len() as u64;
                }
            }
        }
    }

    pub fn summary(&self) -> Summary {
        let k = self.train.len();
        let n = self.recent.len();
        let mut live = vec![0.0; k];
        let mut conf = 0.0;
        for &(c, p) in &self.recent {
            if c < k {
                live[c] += 1.0;
            }
            conf += p as f64;
        }
        if n > 0 {
            live.iter_mut().for_each(|v| *v /= n as f64);
        }
        let divergence = if n > 0 {
            live.iter()
                .zip(&self.train)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                / 2.0
        } else {
            0.0
        };
        Summary {
            frames: self.frames,
            faces: self.faces,
            window: n,
            mean_confidence: if n > 0 { conf / n as f64 } else { 0.0 },
            train_mean_confidence: self.train_conf,
            live,
            train: self.train.clone(),
            divergence,
        }
    }
}
