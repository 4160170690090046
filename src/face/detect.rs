//! Face detection with OpenCV cascades (Haar by default, LBP optional) on a
//! contrast-normalised grayscale frame, in three kinds of pass: a stream's
//! full detection on a shrunk frame, a still image's search for faces down
//! to `--min-face` pixels, and the tracker's search near a known face.

use anyhow::{bail, Context, Result};
use opencv::{core, imgproc, objdetect, prelude::*};
use std::path::{Path, PathBuf};

/// Where Debian's `opencv-data` and PyPI's opencv wheels keep the cascades.
const SEARCH: [&str; 3] = [
    "/usr/share/opencv4",
    "/usr/local/share/opencv4",
    "/opt/homebrew/share/opencv4",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Cascade {
    Haar,
    Lbp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Lighting {
    /// Global histogram equalisation.
    Equalize,
    /// Contrast-limited adaptive equalisation: evens out side lighting.
    Clahe,
    None,
}

/// The default cascade file of a kind, from the usual install folders.
pub fn default_cascade(kind: Cascade) -> Result<PathBuf> {
    let rel = match kind {
        Cascade::Haar => "haarcascades/haarcascade_frontalface_default.xml",
        Cascade::Lbp => "lbpcascades/lbpcascade_frontalface_improved.xml",
    };
    SEARCH
        .iter()
        .map(|d| Path::new(d).join(rel))
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "no {kind:?} face cascade found ({rel} under {}); install Debian's opencv-data (make setup) or pass --cascade PATH",
                SEARCH.join(", ")
            )
        })
}

/// Most pixels a still image's search scans: 2 MP, about half a second on
/// this project's 2-core machines (docs/predict.md). A 1600x1200 photo is
/// searched at full size; a 12 MP one at 41%, where faces from 59 px wide
/// are found.
pub const STILL_SCAN_PIXELS: u64 = 2_000_000;

/// Every full search's pyramid step and neighbours a face needs; a stream's
/// spread-out detection (`scan_*`) must use the same to find the same faces.
const FULL_STEP: f64 = 1.2;
const FULL_NEIGHBORS: i32 = 5;

pub struct Detector {
    cascade: objdetect::CascadeClassifier,
    clahe: Option<core::Ptr<imgproc::CLAHE>>,
    lighting: Lighting,
    /// Frames are shrunk to this width before a stream's full detection.
    pub detect_width: u32,
    /// The cascade's own window: the smallest face it can see, in the
    /// pixels it scans.
    pub window: u32,
    pub path: PathBuf,
}

/// A face box in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FaceBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl FaceBox {
    pub fn area(&self) -> u32 {
        self.w * self.h
    }

    /// Intersection over union.
    pub fn iou(&self, o: &FaceBox) -> f64 {
        let iw = (self.x + self.w)
            .min(o.x + o.w)
            .saturating_sub(self.x.max(o.x)) as f64;
        let ih = (self.y + self.h)
            .min(o.y + o.h)
            .saturating_sub(self.y.max(o.y)) as f64;
        let inter = iw * ih;
        let union = (self.area() + o.area()) as f64 - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
}

/// One cascade pass: where in the frame, at what scale, which face sizes.
struct Pass {
    /// Region of the frame searched (the whole frame for a full detection).
    roi: FaceBox,
    /// Resize factor applied to the region before the cascade runs.
    scale: f64,
    /// Smallest and largest face searched, in scaled pixels (0: no bound).
    min: u32,
    max: u32,
    /// Pyramid step between searched sizes.
    step: f64,
    /// Overlapping hits a face needs.
    neighbors: i32,
}

impl Detector {
    pub fn new(path: &Path, lighting: Lighting, detect_width: u32) -> Result<Detector> {
        if !path.is_file() {
            bail!(
                "face cascade {} does not exist (Debian: apt-get install opencv-data; or pass --cascade PATH)",
                path.display()
            );
        }
        let cascade = objdetect::CascadeClassifier::new(&*path.to_string_lossy())
            .with_context(|| format!("loading face cascade {}", path.display()))?;
        if cascade.empty()? {
            bail!("{} is not a cascade OpenCV can read", path.display());
        }
        let size = cascade.get_original_window_size()?;
        let clahe = match lighting {
            Lighting::Clahe => Some(imgproc::create_clahe(2.0, core::Size::new(8, 8))?),
            _ => None,
        };
        Ok(Detector {
            cascade,
            clahe,
            lighting,
            detect_width,
            window: size.width.max(size.height).max(1) as u32,
            path: path.to_path_buf(),
        })
    }

    /// A stream's full detection: faces in a frame shrunk to `detect_width`
    /// (and height to four times that: a frame 100 px wide and 160000 tall
    /// would otherwise be scanned at full size, 2 s here, instead of 1 ms).
    /// Faces under a tenth of the shrunk frame's short side are not looked
    /// for. Largest first.
    pub fn detect(&mut self, gray: &image::GrayImage) -> Result<Vec<FaceBox>> {
        let (w, h) = gray.dimensions();
        let (scale, min) = self.full_scale(w, h);
        self.whole(gray, scale, min)
    }

    /// A full detection's resize factor and smallest face (scaled pixels).
    fn full_scale(&self, w: u32, h: u32) -> (f64, u32) {
        let dw = self.detect_width as f64;
        let scale = (dw / w as f64).min(4.0 * dw / h as f64).min(1.0);
        let short = (w.min(h) as f64 * scale).round();
        let min = (short * 0.1).max(20.0).max(self.window as f64) as u32;
        (scale, min)
    }

    /// The resize factor of a still image's search: the resolution where a
    /// face `min_face` pixels wide in the original still fills the
    /// cascade's window, unless that would scan more than
    /// [`STILL_SCAN_PIXELS`]; then the budget's, and the smallest face found
    /// grows with the square root of the image's size.
    pub fn still_scale(&self, w: u32, h: u32, min_face: u32) -> f64 {
        let budget = (STILL_SCAN_PIXELS as f64 / (w as f64 * h as f64).max(1.0)).sqrt();
        (self.window as f64 / min_face.max(1) as f64)
            .min(budget)
            .min(1.0)
    }

    /// The smallest face a still image's search finds, in original pixels.
    pub fn still_min_face(&self, w: u32, h: u32, min_face: u32) -> u32 {
        let found = (self.window as f64 / self.still_scale(w, h, min_face)).ceil() as u32;
        found.max(min_face)
    }

    /// A still image's detection, at [`Detector::still_scale`]: small faces
    /// in ordinary photos are found. Largest first.
    pub fn detect_still(&mut self, gray: &image::GrayImage, min_face: u32) -> Result<Vec<FaceBox>> {
        let (w, h) = gray.dimensions();
        let scale = self.still_scale(w, h, min_face);
        let min = ((min_face as f64 * scale).round() as u32).max(self.window);
        self.whole(gray, scale, min)
    }

    /// The whole frame at `scale`, faces from `min` scaled pixels up, with
    /// the settings every full search shares (step 1.2, 5 neighbours).
    fn whole(&mut self, gray: &image::GrayImage, scale: f64, min: u32) -> Result<Vec<FaceBox>> {
        let (w, h) = gray.dimensions();
        self.pass(
            gray,
            &Pass {
                roi: FaceBox { x: 0, y: 0, w, h },
                scale,
                min,
                max: 0,
                step: FULL_STEP,
                neighbors: FULL_NEIGHBORS,
            },
        )
    }

    /// The face near `last` in this frame, if still there: the cascade runs
    /// only on a region twice the box's size around it, shrunk so the face
    /// is two windows wide, for sizes within 0.7x to 1.4x of the last box. About a millisecond instead of a full frame's 25.
    pub fn find_near(
        &mut self,
        gray: &image::GrayImage,
        last: &FaceBox,
    ) -> Result<Option<FaceBox>> {
        let (w, h) = gray.dimensions();
        let side = last.w.max(last.h);
        let cx = last.x + last.w / 2;
        let cy = last.y + last.h / 2;
        let x0 = cx.saturating_sub(side);
        let y0 = cy.saturating_sub(side);
        let roi = FaceBox {
            x: x0,
            y: y0,
            w: (cx + side).min(w) - x0,
            h: (cy + side).min(h) - y0,
        };
        let scale = (2.0 * self.window as f64 / side.max(1) as f64).min(1.0);
        let scaled = side as f64 * scale;
        let min = (scaled * 0.7).max(self.window as f64) as u32;
        let max = (scaled * 1.4).ceil() as u32;
        if roi.w < min.max(1) || roi.h < min.max(1) {
            return Ok(None);
        }
        let found = self.pass(
            gray,
            &Pass {
                roi,
                scale,
                min,
                max,
                step: 1.1,
                neighbors: 3,
            },
        )?;
        Ok(found
            .into_iter()
            .max_by(|a, b| a.iou(last).total_cmp(&b.iou(last)))
            .filter(|b| b.iou(last) > 0.0))
    }

    /// The frame region a pass searches, cropped, resized and normalised as
    /// the cascade sees it.
    fn prepare(&mut self, gray: &image::GrayImage, roi: &FaceBox, scale: f64) -> Result<core::Mat> {
        let (w, h) = gray.dimensions();
        // OpenCV's own crop (a view) and area resize: several times faster
        // than copying and filtering with `image`, which matters on the
        // tracker's millisecond budget.
        let whole = core::Mat::new_rows_cols_with_data(h as i32, w as i32, gray.as_raw())?;
        let rect = core::Rect::new(roi.x as i32, roi.y as i32, roi.w as i32, roi.h as i32);
        let region = whole.roi(rect)?;
        let mut small = core::Mat::default();
        if scale < 1.0 {
            let size = core::Size::new(
                (roi.w as f64 * scale).round().max(1.0) as i32,
                (roi.h as f64 * scale).round().max(1.0) as i32,
            );
            imgproc::resize(&region, &mut small, size, 0.0, 0.0, imgproc::INTER_AREA)?;
        } else {
            region.copy_to(&mut small)?;
        }
        let mut norm = core::Mat::default();
        match (self.lighting, &mut self.clahe) {
            (Lighting::Clahe, Some(c)) => c.apply(&small, &mut norm)?,
            (Lighting::Equalize, _) => imgproc::equalize_hist(&small, &mut norm)?,
            _ => norm = small,
        }
        Ok(norm)
    }

    fn pass(&mut self, gray: &image::GrayImage, p: &Pass) -> Result<Vec<FaceBox>> {
        let norm = self.prepare(gray, &p.roi, p.scale)?;
        let mut found = core::Vector::<core::Rect>::new();
        self.cascade.detect_multi_scale(
            &norm,
            &mut found,
            p.step,
            p.neighbors,
            0,
            core::Size::new(p.min as i32, p.min as i32),
            core::Size::new(p.max as i32, p.max as i32),
        )?;
        Ok(to_frame(&found, &p.roi, p.scale, gray.dimensions()))
    }

    /// A stream's full detection cut into about `pieces` slices of equal
    /// work, to be run one per frame ([`Detector::scan_slice`]) and grouped
    /// at the end ([`Detector::scan_faces`]): the same windows, scales and
    /// grouping as [`Detector::detect`], with no frame paying for all of it.
    pub fn scan_plan(&self, w: u32, h: u32, pieces: u32) -> ScanPlan {
        let (scale, min) = self.full_scale(w, h);
        let sw = (w as f64 * scale).round().max(1.0) as u32;
        let sh = (h as f64 * scale).round().max(1.0) as u32;
        let win = self.window as f64;
        // OpenCV's pyramid for step 1.2 (cascadedetect.cpp): factors 1.2^k
        // while the window fits; windows every 2 scaled pixels up to a
        // factor of 2, every pixel above.
        let mut levels: Vec<(u32, f64)> = Vec::new();
        let mut factor = 1.0f64;
        loop {
            let size = (win * factor).round() as u32;
            if size > sw || size > sh {
                break;
            }
            if size >= min {
                let stride = if factor > 2.0 { 1.0 } else { 2.0 };
                let across = ((sw as f64 / factor - win) / stride).floor() + 1.0;
                let down = ((sh as f64 / factor - win) / stride).floor() + 1.0;
                levels.push((size, across * down));
            }
            factor *= FULL_STEP;
        }
        let total: f64 = levels.iter().map(|l| l.1).sum();
        let budget = total / pieces.max(1) as f64;
        let mut slices: Vec<Slice> = Vec::new();
        let mut pending: Option<(Slice, f64)> = None;
        for &(size, windows) in &levels {
            if windows > budget {
                if let Some((s, _)) = pending.take() {
                    slices.push(s);
                }
                // One level in horizontal bands of window tops; each band
                // also reads the rows its windows reach below it.
                let span = sh - size + 1;
                let bands = ((windows / budget).ceil() as u32).min(span);
                for b in 0..bands {
                    slices.push(Slice {
                        min: size,
                        max: size,
                        top: span * b / bands,
                        end: span * (b + 1) / bands,
                    });
                }
                continue;
            }
            pending = match pending.take() {
                Some((mut s, cost)) if cost + windows <= budget => {
                    s.max = size;
                    Some((s, cost + windows))
                }
                other => {
                    if let Some((s, _)) = other {
                        slices.push(s);
                    }
                    let s = Slice {
                        min: size,
                        max: size,
                        top: 0,
                        end: sh - size + 1,
                    };
                    Some((s, windows))
                }
            };
        }
        if let Some((s, _)) = pending {
            slices.push(s);
        }
        ScanPlan {
            frame: (w, h),
            scale,
            shrunk: (sw, sh),
            slices,
        }
    }

    /// Runs slice `i` of `plan` on this frame, adding its ungrouped hits
    /// (in shrunk-frame pixels) to `raw`.
    pub fn scan_slice(
        &mut self,
        gray: &image::GrayImage,
        plan: &ScanPlan,
        i: usize,
        raw: &mut Vec<core::Rect>,
    ) -> Result<()> {
        let (w, h) = gray.dimensions();
        anyhow::ensure!(
            (w, h) == plan.frame,
            "a {w}x{h} frame in a scan planned for {}x{}",
            plan.frame.0,
            plan.frame.1
        );
        let s = &plan.slices[i];
        let whole = FaceBox { x: 0, y: 0, w, h };
        let norm = self.prepare(gray, &whole, plan.scale)?;
        let rows = (s.end - s.top + s.max - 1).min(plan.shrunk.1 - s.top);
        let band = norm.roi(core::Rect::new(
            0,
            s.top as i32,
            plan.shrunk.0 as i32,
            rows as i32,
        ))?;
        let mut found = core::Vector::<core::Rect>::new();
        // No grouping here (0 neighbours): hits are grouped over the whole
        // scan, as detectMultiScale groups them over the whole pyramid.
        self.cascade.detect_multi_scale(
            &band,
            &mut found,
            FULL_STEP,
            0,
            0,
            core::Size::new(s.min as i32, s.min as i32),
            core::Size::new(s.max as i32, s.max as i32),
        )?;
        for mut r in found {
            r.y += s.top as i32;
            // A band's last rows are read for its windows only; a window
            // starting there belongs to the next band.
            if (r.y as u32) < s.end {
                raw.push(r);
            }
        }
        Ok(())
    }

    /// The faces of a finished scan: its hits grouped as detectMultiScale
    /// groups them (5 neighbours, eps 0.2), in frame pixels, largest first.
    pub fn scan_faces(&self, plan: &ScanPlan, raw: &[core::Rect]) -> Result<Vec<FaceBox>> {
        let mut hits: core::Vector<core::Rect> = raw.iter().copied().collect();
        objdetect::group_rectangles(&mut hits, FULL_NEIGHBORS, 0.2)?;
        let (w, h) = plan.frame;
        let whole = FaceBox { x: 0, y: 0, w, h };
        Ok(to_frame(&hits, &whole, plan.scale, (w, h)))
    }
}

/// A stream's full detection cut into slices (see [`Detector::scan_plan`]).
#[derive(Clone, Debug)]
pub struct ScanPlan {
    /// The frame size it was planned for.
    pub frame: (u32, u32),
    scale: f64,
    shrunk: (u32, u32),
    pub slices: Vec<Slice>,
}

/// Pyramid levels from `min` to `max` window pixels, windows whose top row
/// (in the shrunk frame) lies in `top..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    pub min: u32,
    pub max: u32,
    pub top: u32,
    pub end: u32,
}

/// Cascade hits in the pixels of a region scaled by `scale`, as boxes in
/// frame pixels, largest first.
fn to_frame(
    found: &core::Vector<core::Rect>,
    roi: &FaceBox,
    scale: f64,
    (w, h): (u32, u32),
) -> Vec<FaceBox> {
    let back = |v: i32| (v.max(0) as f64 / scale).round() as u32;
    let mut faces: Vec<FaceBox> = found
        .iter()
        .map(|r| {
            let x = (roi.x + back(r.x)).min(w - 1);
            let y = (roi.y + back(r.y)).min(h - 1);
            FaceBox {
                x,
                y,
                w: back(r.width).min(w - x).max(1),
                h: back(r.height).min(h - y).max(1),
            }
        })
        .collect();
    faces.sort_by_key(|b| std::cmp::Reverse(b.area()));
    faces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::astronaut;

    fn haar() -> Detector {
        let p = default_cascade(Cascade::Haar).expect("Debian's opencv-data (make setup)");
        Detector::new(&p, Lighting::Equalize, 320).unwrap()
    }

    #[test]
    fn still_images_are_searched_down_to_min_face_within_the_scan_budget() {
        let d = haar();
        assert_eq!(d.window, 24);
        assert_eq!(d.still_scale(640, 480, 24), 1.0);
        assert_eq!(d.still_scale(640, 480, 48), 0.5);
        assert_eq!(d.still_min_face(640, 480, 24), 24);
        let s = d.still_scale(4000, 3000, 24);
        assert!((s - (2.0f64 / 12.0).sqrt()).abs() < 1e-9, "{s}");
        assert_eq!(d.still_min_face(4000, 3000, 24), 59);
    }

    #[test]
    fn a_full_detection_in_slices_finds_what_a_whole_one_does() {
        let mut d = haar();
        let gray = astronaut();
        let (w, h) = gray.dimensions();
        let whole = d.detect(&gray).unwrap();
        assert_eq!(whole.len(), 1, "{whole:?}");
        for pieces in [1, 8, 30] {
            let plan = d.scan_plan(w, h, pieces);
            let n = plan.slices.len();
            assert!(n as u32 >= pieces.min(13), "{pieces} pieces: {n} slices");
            assert!(n as u32 <= pieces + 13, "{pieces} pieces: {n} slices");
            // Every window size of the pyramid, every top row, exactly once.
            let mut rows: std::collections::BTreeMap<u32, Vec<(u32, u32)>> = Default::default();
            for s in &plan.slices {
                assert!(s.min <= s.max && s.top < s.end, "{s:?}");
                for size in [s.min, s.max] {
                    rows.entry(size).or_default().push((s.top, s.end));
                }
            }
            for (size, mut spans) in rows {
                spans.sort();
                spans.dedup();
                assert_eq!(spans[0].0, 0, "size {size}: {spans:?}");
                for p in spans.windows(2) {
                    assert_eq!(p[0].1, p[1].0, "size {size}: {spans:?}");
                }
            }
            let mut raw = Vec::new();
            for i in 0..n {
                d.scan_slice(&gray, &plan, i, &mut raw).unwrap();
            }
            let sliced = d.scan_faces(&plan, &raw).unwrap();
            assert_eq!(sliced.len(), 1, "{pieces} pieces: {sliced:?}");
            assert!(
                sliced[0].iou(&whole[0]) > 0.8,
                "{pieces} pieces: {:?} vs {:?}",
                sliced[0],
                whole[0]
            );
        }
        // A frame of another size is refused, not scanned wrongly.
        let plan = d.scan_plan(w / 2, h, 8);
        assert!(d.scan_slice(&gray, &plan, 0, &mut Vec::new()).is_err());
    }

    #[test]
    fn a_face_found_by_full_detection_is_found_again_near_its_box() {
        let mut d = haar();
        let gray = astronaut();
        let full = d.detect(&gray).unwrap();
        assert_eq!(full.len(), 1, "{full:?}");
        let near = d.find_near(&gray, &full[0]).unwrap().expect("found near");
        assert!(near.iou(&full[0]) > 0.6, "{near:?} vs {:?}", full[0]);
        // Looked for where there is no face: not found.
        let empty = FaceBox {
            x: 400,
            y: 400,
            ..full[0]
        };
        assert_eq!(d.find_near(&gray, &empty).unwrap(), None);
    }
}
