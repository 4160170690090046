//! The stream fast path: between full detections, each known face is looked
//! for only near its last box. A full detection runs every `every` frames,
//! when a face is lost, and while no face is known at most every
//! `every_empty` frames, so a face that enters is found within that many.

use super::detect::{Detector, FaceBox};
use anyhow::Result;
use serde::Serialize;

/// How a frame's boxes were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Detection {
    /// The whole (shrunk) frame was searched.
    Full,
    /// Only regions around the faces of the last frame were searched.
    Tracked,
    /// A still image, searched down to `--min-face`.
    Still,
}

/// Full detection every 30 frames (one second at 30 fps): rare enough that
/// the fast path sets the 95th percentile, often enough that a new face
/// beside a known one appears within a second.
pub const DEFAULT_EVERY: u32 = 30;

#[derive(Debug, Clone)]
pub struct Tracker {
    /// Full detection at least every this many frames (1: every frame).
    pub every: u32,
    /// While no face is known, full detection every this many frames.
    pub every_empty: u32,
    tracks: Vec<FaceBox>,
    /// Frames since the last full detection; None before the first.
    since_full: Option<u32>,
}

impl Tracker {
    pub fn new(every: u32) -> Tracker {
        let every = every.max(1);
        Tracker {
            every,
            // An empty scene is searched more often: someone stepping in
            // should not wait a whole period, and no face means no
            // classification, so those frames have time to spare.
            every_empty: every.div_ceil(6).max(1),
            tracks: Vec::new(),
            since_full: None,
        }
    }

    /// This frame's faces, largest first, and how they were found.
    pub fn boxes(
        &mut self,
        det: &mut Detector,
        gray: &image::GrayImage,
    ) -> Result<(Vec<FaceBox>, Detection)> {
        let Some(since) = self.since_full.map(|n| n + 1) else {
            return self.full(det, gray);
        };
        self.since_full = Some(since);
        let due = if self.tracks.is_empty() {
            self.every_empty
        } else {
            self.every
        };
        if since >= due {
            return self.full(det, gray);
        }
        let mut found: Vec<FaceBox> = Vec::with_capacity(self.tracks.len());
        for last in &self.tracks {
            match det.find_near(gray, last)? {
                // Two tracks that converge on one face become one.
                Some(b) if found.iter().any(|f| f.iou(&b) > 0.5) => {}
                Some(b) => found.push(b),
                None => return self.full(det, gray),
            }
        }
        found.sort_by_key(|b| std::cmp::Reverse(b.area()));
        self.tracks = found.clone();
        Ok((found, Detection::Tracked))
    }

    fn full(
        &mut self,
        det: &mut Detector,
        gray: &image::GrayImage,
    ) -> Result<(Vec<FaceBox>, Detection)> {
        let found = det.detect(gray)?;
        self.tracks = found.clone();
        self.since_full = Some(0);
        Ok((found, Detection::Full))
    }
}
