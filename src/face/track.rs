//! The stream fast path: each known face is looked for only near its last
//! box, and new faces are found by a full detection cut into slices, one
//! slice per frame, so that no frame pays for a whole detection. A whole
//! detection still runs at once when a face is lost, and while no face is
//! known at most every `every_empty` frames, so a face that enters is found
//! within that many.

use super::detect::{Detector, FaceBox, ScanPlan};
use anyhow::Result;
use serde::Serialize;

/// How a frame's boxes were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Detection {
    /// The whole (shrunk) frame was searched.
    Full,
    /// Only regions around the faces of the last frame were searched (and
    /// one slice of the spread-out full detection).
    Tracked,
    /// A still image, searched down to `--min-face`.
    Still,
}

/// A full detection spread over 30 frames (one second at 30 fps): under a
/// millisecond a frame, and a new face beside a known one appears within
/// about a second.
pub const DEFAULT_EVERY: u32 = 30;

#[derive(Debug, Clone)]
pub struct Tracker {
    /// A full detection is spread over this many frames (1: a whole one on
    /// every frame, no fast path).
    pub every: u32,
    /// While no face is known, a whole detection every this many frames.
    pub every_empty: u32,
    tracks: Vec<FaceBox>,
    /// Frames since the last whole detection; None before the first.
    since_full: Option<u32>,
    scan: Option<Scan>,
}

/// A spread-out full detection under way.
#[derive(Debug, Clone)]
struct Scan {
    plan: ScanPlan,
    next: usize,
    raw: Vec<opencv::core::Rect>,
}

impl Scan {
    fn restart(&mut self) {
        self.next = 0;
        self.raw.clear();
    }
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
            scan: None,
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
        if self.every == 1 || (self.tracks.is_empty() && since >= self.every_empty) {
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
        if !found.is_empty() {
            if let Some(scanned) = self.scan_step(det, gray)? {
                found = merge(det, gray, found, &scanned)?;
            }
        }
        found.sort_by_key(|b| std::cmp::Reverse(b.area()));
        self.tracks = found.clone();
        Ok((found, Detection::Tracked))
    }

    /// Runs this frame's slice of the spread-out full detection; its faces
    /// once the last slice has run.
    fn scan_step(
        &mut self,
        det: &mut Detector,
        gray: &image::GrayImage,
    ) -> Result<Option<Vec<FaceBox>>> {
        let frame = gray.dimensions();
        let scan = match &mut self.scan {
            Some(s) if s.plan.frame == frame => s,
            // A new stream, or the frame size changed: plan afresh.
            _ => self.scan.insert(Scan {
                plan: det.scan_plan(frame.0, frame.1, self.every),
                next: 0,
                raw: Vec::new(),
            }),
        };
        if scan.plan.slices.is_empty() {
            return Ok(None);
        }
        det.scan_slice(gray, &scan.plan, scan.next, &mut scan.raw)?;
        scan.next += 1;
        if scan.next < scan.plan.slices.len() {
            return Ok(None);
        }
        let faces = det.scan_faces(&scan.plan, &scan.raw)?;
        scan.restart();
        Ok(Some(faces))
    }

    fn full(
        &mut self,
        det: &mut Detector,
        gray: &image::GrayImage,
    ) -> Result<(Vec<FaceBox>, Detection)> {
        let found = det.detect(gray)?;
        self.tracks = found.clone();
        self.since_full = Some(0);
        // A whole detection has just answered: a scan under way starts over.
        if let Some(s) = &mut self.scan {
            s.restart();
        }
        Ok((found, Detection::Full))
    }
}

/// This frame's tracked faces after a spread-out full detection finished:
/// as a whole detection would replace the tracks, a tracked face the scan
/// did not see anywhere near is dropped (the scan's slices ran on earlier
/// frames, so "near" allows a face's width of movement), and a face the
/// scan found away from every track is added once it is found again in
/// this frame.
fn merge(
    det: &mut Detector,
    gray: &image::GrayImage,
    tracked: Vec<FaceBox>,
    scanned: &[FaceBox],
) -> Result<Vec<FaceBox>> {
    let mut out: Vec<FaceBox> = tracked
        .into_iter()
        .filter(|t| scanned.iter().any(|s| near(s, t)))
        .collect();
    for s in scanned {
        if out.iter().any(|t| near(s, t)) {
            continue;
        }
        if let Some(b) = det.find_near(gray, s)? {
            if !out.iter().any(|t| t.iou(&b) > 0.5) {
                out.push(b);
            }
        }
    }
    Ok(out)
}

/// Whether two boxes are one face seen a few frames apart: centres closer
/// than the larger box's width.
fn near(a: &FaceBox, b: &FaceBox) -> bool {
    let centre = |f: &FaceBox| (f.x as f64 + f.w as f64 / 2.0, f.y as f64 + f.h as f64 / 2.0);
    let (ax, ay) = centre(a);
    let (bx, by) = centre(b);
    let reach = a.w.max(b.w) as f64;
    (ax - bx).hypot(ay - by) < reach
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::detect::{default_cascade, Cascade, Lighting};

    /// A 1024x512 frame: the astronaut on the left, and on the right either
    /// a second astronaut or flat gray.
    fn frame(two: bool) -> image::GrayImage {
        let one = crate::face::astronaut();
        let mut f = image::GrayImage::from_pixel(1024, 512, image::Luma([128]));
        image::imageops::replace(&mut f, &one, 0, 0);
        if two {
            image::imageops::replace(&mut f, &one, 512, 0);
        }
        f
    }

    #[test]
    fn a_face_joining_a_tracked_one_is_found_by_the_spread_out_detection() {
        let p = default_cascade(Cascade::Haar).expect("Debian's opencv-data (make setup)");
        // 640 px wide: the astronaut's face shrunk with a 1024 px frame to
        // 320 would be under the cascade's window.
        let mut det = Detector::new(&p, Lighting::Equalize, 640).unwrap();
        let (one, two) = (frame(false), frame(true));
        assert_eq!(
            det.detect(&two).unwrap().len(),
            2,
            "the frame has two faces"
        );
        let every = 10;
        let mut t = Tracker::new(every);
        let (first, how) = t.boxes(&mut det, &one).unwrap();
        assert_eq!((first.len(), how), (1, Detection::Full));
        // The second face appears; no whole detection runs, yet within one
        // spread-out detection (plus the slices already under way) it is found.
        let plan_len = det.scan_plan(1024, 512, every).slices.len();
        let mut seen = None;
        for i in 1..=2 * plan_len {
            let (faces, how) = t.boxes(&mut det, &two).unwrap();
            assert_eq!(how, Detection::Tracked, "frame {i}");
            if faces.len() == 2 {
                seen = Some(i);
                break;
            }
            assert_eq!(faces.len(), 1, "frame {i}");
        }
        let i = seen.expect("the second face was found");
        assert!(i <= plan_len, "found after {i} frames, {plan_len} slices");
        // Both stay tracked, and the tracker keeps them apart.
        for _ in 0..plan_len + 1 {
            let (faces, how) = t.boxes(&mut det, &two).unwrap();
            assert_eq!((faces.len(), how), (2, Detection::Tracked));
            assert!(faces[0].iou(&faces[1]) == 0.0);
        }
        // The second face leaves: its track is lost, and a lost face means
        // a whole detection at once.
        let (faces, how) = t.boxes(&mut det, &one).unwrap();
        assert_eq!((faces.len(), how), (1, Detection::Full));
    }

    #[test]
    fn near_means_within_a_face_width() {
        let a = FaceBox {
            x: 100,
            y: 100,
            w: 50,
            h: 50,
        };
        assert!(near(&a, &FaceBox { x: 140, ..a }));
        assert!(!near(&a, &FaceBox { x: 160, ..a }));
    }
}
