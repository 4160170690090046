//! The face pipeline that `fer serve` and `fer predict` share, so one frame
//! gets one answer in both: decoding with pixel limits, detection (`detect`),
//! the stream fast path (`track`), the crop a face is classified from, the
//! batch of crops, and the smoothing of labels over a stream's frames.

pub mod detect;
pub mod track;

use crate::artifact::Classifier;
use crate::data::{ImageSet, Origin, PIXELS, SIDE};
use anyhow::Result;
use detect::{Detector, FaceBox};
use serde::Serialize;
use track::{Detection, Tracker};

/// The photo the face tests share: scikit-image's public-domain
/// astronaut.png (one face), installed in .venv by `make setup`.
#[cfg(test)]
pub(crate) fn astronaut() -> image::GrayImage {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/lib/python3.11/site-packages/skimage/data/astronaut.png");
    image::open(p)
        .expect("astronaut.png (make setup)")
        .to_luma8()
}

/// One classified face.
#[derive(Clone, Debug, Serialize)]
pub struct Face {
    #[serde(rename = "box")]
    pub bbox: [u32; 4],
    pub label: String,
    pub confidence: f32,
    pub probs: Vec<f32>,
}

impl Face {
    pub fn face_box(&self) -> FaceBox {
        let [x, y, w, h] = self.bbox;
        FaceBox { x, y, w, h }
    }
}

/// A payload that cannot be processed, with the reason for the user.
#[derive(Debug)]
pub enum Rejected {
    /// Not a usable image.
    BadPayload(String),
    /// More pixels than allowed, known from the header alone.
    TooManyPixels(String),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::BadPayload(m) | Rejected::TooManyPixels(m) => f.write_str(m),
        }
    }
}

/// Smallest side the detector can work with.
pub const MIN_SIDE: u32 = 24;

type Reader<'a> = image::ImageReader<std::io::Cursor<&'a [u8]>>;

/// A reader of `bytes` whose size was read from the header and checked
/// against `max_pixels` before any pixel is decoded: a few hundred
/// kilobytes of PNG can claim 20000x20000 (1.2 GB as RGB). The decoder's own
/// allocation limit backs that up.
fn checked(bytes: &[u8], max_pixels: u64) -> Result<(Reader<'_>, u32, u32), Rejected> {
    use image::ImageReader;
    if bytes.is_empty() {
        return Err(Rejected::BadPayload(
            "empty body: send a JPEG or PNG image".into(),
        ));
    }
    let reader = || {
        ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| not_image(e.into()))
    };
    let (width, height) = reader()?.into_dimensions().map_err(not_image)?;
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(Rejected::TooManyPixels(format!(
            "image is {width}x{height} = {pixels} pixels, over the {max_pixels} pixel limit (--max-pixels); send a smaller image"
        )));
    }
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(Rejected::BadPayload(format!(
            "image is {width}x{height}; at least {MIN_SIDE}x{MIN_SIDE} expected"
        )));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // 8 bytes a pixel: 16-bit RGBA, the widest layout PNG or JPEG decode to.
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    let mut r = reader()?;
    r.limits(limits);
    Ok((r, width, height))
}

fn not_image(e: image::ImageError) -> Rejected {
    Rejected::BadPayload(format!("not a decodable image (JPEG or PNG expected): {e}"))
}

/// Decodes and turns upright: phone photos are stored sideways with an
/// EXIF orientation tag, and a face on its side is not found.
fn upright(r: Reader<'_>) -> Result<image::DynamicImage, Rejected> {
    let mut dec = r.into_decoder().map_err(not_image)?;
    let orientation = image::ImageDecoder::orientation(&mut dec)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(dec).map_err(not_image)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Decodes an image in colour (any format the `image` crate was built with),
/// upright, within `max_pixels`.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<image::DynamicImage, Rejected> {
    upright(checked(bytes, max_pixels)?.0)
}

/// The grayscale image the pipeline works on, within `max_pixels`. A JPEG
/// (every webcam frame) is decoded straight to its luma plane: 1.7 ms
/// instead of 4.6 for a 640x480 frame here, the difference between keeping
/// up with a stream or not. Other formats are converted from colour.
/// `fer serve` and `fer predict` both decode through here, so the same
/// file gets the same pixels in both.
pub fn decode_gray(bytes: &[u8], max_pixels: u64) -> Result<image::GrayImage, Rejected> {
    let (r, width, height) = checked(bytes, max_pixels)?;
    if r.format() != Some(image::ImageFormat::Jpeg) {
        return Ok(upright(r)?.into_luma8());
    }
    let mut dec = r.into_decoder().map_err(not_image)?;
    let orientation = image::ImageDecoder::orientation(&mut dec)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    drop(dec);
    let opts = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::Luma)
        .set_max_width(width as usize)
        .set_max_height(height as usize);
    let mut z =
        zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(bytes), opts);
    let bad = |e: String| Rejected::BadPayload(format!("not a decodable image (JPEG): {e}"));
    let px = z.decode().map_err(|e| bad(format!("{e:?}")))?;
    let (w, h) = z.dimensions().ok_or_else(|| bad("no frame size".into()))?;
    let gray = image::GrayImage::from_raw(w as u32, h as u32, px)
        .ok_or_else(|| bad("decoded size does not match its header".into()))?;
    if orientation == image::metadata::Orientation::NoTransforms {
        return Ok(gray);
    }
    let mut img = image::DynamicImage::ImageLuma8(gray);
    img.apply_orientation(orientation);
    Ok(img.into_luma8())
}

/// The 48x48 crop a face is classified from: a square around the box with
/// a 10% margin (FER-2013 faces are framed that way), clamped to the frame.
pub fn crop(gray: &image::GrayImage, b: &FaceBox) -> image::GrayImage {
    let (w, h) = gray.dimensions();
    let side = (b.w.max(b.h) as f64 * 1.1).round() as u32;
    let cx = b.x + b.w / 2;
    let cy = b.y + b.h / 2;
    let x0 = cx
        .saturating_sub(side / 2)
        .min(w.saturating_sub(side.min(w)));
    let y0 = cy
        .saturating_sub(side / 2)
        .min(h.saturating_sub(side.min(h)));
    let c = image::imageops::crop_imm(gray, x0, y0, side.min(w), side.min(h)).to_image();
    let face = image::imageops::resize(
        &c,
        SIDE as u32,
        SIDE as u32,
        image::imageops::FilterType::Triangle,
    );
    debug_assert_eq!(face.as_raw().len(), PIXELS);
    face
}

/// The crops of many boxes (of one frame or several) as one batch.
pub fn batch<'a>(crops: impl IntoIterator<Item = &'a image::GrayImage>) -> ImageSet {
    let mut set = ImageSet::default();
    for c in crops {
        set.push(c.as_raw(), 0, Origin::Unknown, String::new());
    }
    set
}

/// Probabilities of a batch of crops. Scores that are not finite are an
/// error (a broken model, not a bad image).
pub fn probabilities(clf: &Classifier, set: &ImageSet) -> Result<Vec<f32>> {
    if set.is_empty() {
        return Ok(Vec::new());
    }
    clf.predict_set(set, false, 64)
}

/// Boxes and their rows of probabilities as labelled faces.
pub fn label(boxes: &[FaceBox], probs: &[f32], classes: &[String]) -> Vec<Face> {
    boxes
        .iter()
        .zip(probs.chunks_exact(classes.len()))
        .map(|(b, p)| {
            let k = crate::eval::metrics::argmax(p);
            Face {
                bbox: [b.x, b.y, b.w, b.h],
                label: classes[k].clone(),
                confidence: p[k],
                probs: p.to_vec(),
            }
        })
        .collect()
}

/// Labels flicker frame to frame; each face that overlaps one of the last
/// frame keeps an exponential average of its probabilities.
pub fn smooth(faces: &mut [Face], prev: &[Face], classes: &[String]) {
    for f in faces.iter_mut() {
        let b = f.face_box();
        let Some(p) = prev
            .iter()
            .filter(|p| p.face_box().iou(&b) > 0.3)
            .max_by(|x, y| x.face_box().iou(&b).total_cmp(&y.face_box().iou(&b)))
        else {
            continue;
        };
        for (v, o) in f.probs.iter_mut().zip(&p.probs) {
            *v = 0.6 * *v + 0.4 * o;
        }
        let k = crate::eval::metrics::argmax(&f.probs);
        f.label = classes[k].clone();
        f.confidence = f.probs[k];
    }
}

/// What a stream (a WebSocket, a video) carries from frame to frame.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The last frame's faces, for smoothing.
    pub faces: Vec<Face>,
    pub tracker: Tracker,
}

impl Stream {
    /// `every`: a full detection at least every this many frames (1: every
    /// frame, no fast path).
    pub fn new(every: u32) -> Stream {
        Stream {
            faces: Vec::new(),
            tracker: Tracker::new(every),
        }
    }

    /// This frame's boxes: tracked or fully detected.
    pub fn boxes(
        &mut self,
        det: &mut Detector,
        gray: &image::GrayImage,
    ) -> Result<(Vec<FaceBox>, Detection)> {
        self.tracker.boxes(det, gray)
    }

    /// Smooths this frame's faces with the last frame's, and remembers them.
    pub fn settle(&mut self, faces: &mut [Face], classes: &[String]) {
        smooth(faces, &self.faces, classes);
        self.faces = faces.to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_boxes() {
        let a = FaceBox {
            x: 0,
            y: 0,
            w: 10,
            h: 10,
        };
        let b = FaceBox { x: 5, ..a };
        assert!((a.iou(&a) - 1.0).abs() < 1e-12);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-12);
        assert_eq!(a.iou(&FaceBox { x: 20, ..a }), 0.0);
    }

    #[test]
    fn smoothing_averages_an_overlapping_face_only() {
        let classes = crate::data::fer2013::classes();
        let face = |x: u32, k: usize| {
            let mut probs = vec![0.0; classes.len()];
            probs[k] = 1.0;
            Face {
                bbox: [x, 0, 10, 10],
                label: classes[k].clone(),
                confidence: 1.0,
                probs,
            }
        };
        let prev = vec![face(0, 3)];
        let mut now = vec![face(1, 0), face(50, 0)];
        smooth(&mut now, &prev, &classes);
        assert!((now[0].probs[0] - 0.6).abs() < 1e-6);
        assert!((now[0].probs[3] - 0.4).abs() < 1e-6);
        assert_eq!(now[0].label, classes[0]);
        assert_eq!(
            now[1].probs[0], 1.0,
            "a face far from the last one is not smoothed"
        );
    }
}
