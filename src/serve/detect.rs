//! Face detection with OpenCV cascades (Haar by default, LBP optional) on a
//! downscaled, contrast-normalised grayscale frame.

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

pub struct Detector {
    cascade: objdetect::CascadeClassifier,
    clahe: Option<core::Ptr<imgproc::CLAHE>>,
    lighting: Lighting,
    /// Frames are shrunk to this width before detection.
    pub detect_width: u32,
    pub path: PathBuf,
}

/// A face box in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct FaceBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
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
        let clahe = match lighting {
            Lighting::Clahe => Some(imgproc::create_clahe(2.0, core::Size::new(8, 8))?),
            _ => None,
        };
        Ok(Detector {
            cascade,
            clahe,
            lighting,
            detect_width,
            path: path.to_path_buf(),
        })
    }

    /// Faces in a grayscale frame, largest first.
    pub fn detect(&mut self, gray: &image::GrayImage) -> Result<Vec<FaceBox>> {
        let (w, h) = gray.dimensions();
        // Width to `detect_width`, and height to four times that: a frame
        // 100 px wide and 160000 tall would otherwise be scanned at full
        // size (2 s here) instead of 1 ms.
        let dw = self.detect_width as f64;
        let scale = (dw / w as f64).min(4.0 * dw / h as f64).min(1.0);
        let small = if scale < 1.0 {
            image::imageops::resize(
                gray,
                (w as f64 * scale).round().max(1.0) as u32,
                (h as f64 * scale).round().max(1.0) as u32,
                image::imageops::FilterType::Triangle,
            )
        } else {
            gray.clone()
        };
        let (sw, sh) = small.dimensions();
        let mat = core::Mat::new_rows_cols_with_data(sh as i32, sw as i32, small.as_raw())?;
        let mut norm = core::Mat::default();
        match (self.lighting, &mut self.clahe) {
            (Lighting::Clahe, Some(c)) => c.apply(&mat, &mut norm)?,
            (Lighting::Equalize, _) => imgproc::equalize_hist(&mat, &mut norm)?,
            _ => mat.copy_to(&mut norm)?,
        }
        let mut found = core::Vector::<core::Rect>::new();
        let min = ((sw.min(sh) as f64) * 0.1).max(20.0) as i32;
        self.cascade.detect_multi_scale(
            &norm,
            &mut found,
            1.2,
            5,
            0,
            core::Size::new(min, min),
            core::Size::new(0, 0),
        )?;
        let mut faces: Vec<FaceBox> = found
            .iter()
            .map(|r| FaceBox {
                x: ((r.x as f64 / scale).round() as u32).min(w - 1),
                y: ((r.y as f64 / scale).round() as u32).min(h - 1),
                w: (r.width as f64 / scale).round() as u32,
                h: (r.height as f64 / scale).round() as u32,
            })
            .map(|b| FaceBox {
                w: b.w.min(w - b.x).max(1),
                h: b.h.min(h - b.y).max(1),
                ..b
            })
            .collect();
        faces.sort_by_key(|b| std::cmp::Reverse(b.w * b.h));
        Ok(faces)
    }
}
