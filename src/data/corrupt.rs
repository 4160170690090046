//! Webcam corruptions: the image operations a dim room, a cheap lens, a
//! distant face and the browser's JPEG encoder do to a face, as seeded
//! training augmentation (`data.augment.corrupt`) and as the building blocks
//! of the robustness suite (`eval::robust`).
//!
//! Every operation works on a square u8 image of any side, so the trainer
//! applies it to its crop and the suite to the whole 48x48 face. Each kind
//! is drawn with its own probability and a severity uniform in its range, in
//! the order a camera would apply it: things in front of the face, light,
//! distance, optics, sensor, then compression.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Sensor noise, in grey levels, of `dim` at full darkness: the robustness
/// suite's low-light row uses the same law, so the two mean one camera.
pub const DIM_NOISE: f64 = 16.0;

/// One corruption's chance and severity range (in the kind's unit).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chance {
    /// Probability that an image gets this corruption.
    pub p: f64,
    /// Severity drawn uniformly from `[low, high]`.
    pub range: [f64; 2],
}

/// The training corruptions (group `data.augment.corrupt`); a missing kind
/// never fires and draws nothing, so configs without this group augment
/// exactly as before.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorruptConfig {
    /// Lower-face band as a medical mask covers it: fraction of the height
    /// covered from the bottom.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<Chance>,
    /// Band over the eyes as sunglasses cover them: height in px of 48.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sunglasses: Option<Chance>,
    /// A random square of constant grey (a hand, a cup): side in px of 48.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<Chance>,
    /// Darkening: the brightness factor (0.25 = four times darker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low_light: Option<Chance>,
    /// A dim room as a webcam films it: darker by the brightness factor,
    /// plus the sensor noise the camera's gain then amplifies (gaussian,
    /// sigma `DIM_NOISE * (1 - factor)` grey levels). Real low light never
    /// comes without that noise, and `low_light` with an independent
    /// `noise` rarely draws both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dim: Option<Chance>,
    /// Down-then-up scaling: the face's width in px before upscaling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downscale: Option<Chance>,
    /// Gaussian blur: sigma in px of 48.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blur: Option<Chance>,
    /// Motion blur along a random direction: streak length in px of 48.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub motion_blur: Option<Chance>,
    /// Gaussian sensor noise: sigma in grey levels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<Chance>,
    /// Poisson-like shot noise: sigma in grey levels at mid grey, growing
    /// with the square root of the intensity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shot_noise: Option<Chance>,
    /// JPEG re-encoding: quality 1..=100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jpeg: Option<Chance>,
}

/// The corruption kinds a training config can name, in application order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mask,
    Sunglasses,
    Patch,
    LowLight,
    Dim,
    Downscale,
    Blur,
    MotionBlur,
    Noise,
    ShotNoise,
    Jpeg,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Mask,
        Kind::Sunglasses,
        Kind::Patch,
        Kind::LowLight,
        Kind::Dim,
        Kind::Downscale,
        Kind::Blur,
        Kind::MotionBlur,
        Kind::Noise,
        Kind::ShotNoise,
        Kind::Jpeg,
    ];

    /// The config key under `data.augment.corrupt`.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Mask => "mask",
            Kind::Sunglasses => "sunglasses",
            Kind::Patch => "patch",
            Kind::LowLight => "low_light",
            Kind::Dim => "dim",
            Kind::Downscale => "downscale",
            Kind::Blur => "blur",
            Kind::MotionBlur => "motion_blur",
            Kind::Noise => "noise",
            Kind::ShotNoise => "shot_noise",
            Kind::Jpeg => "jpeg",
        }
    }

    /// A middling severity range, for `fer bench data` and examples.
    pub fn typical(self) -> [f64; 2] {
        match self {
            Kind::Mask => [0.3, 0.5],
            Kind::Sunglasses => [6.0, 12.0],
            Kind::Patch => [8.0, 16.0],
            Kind::LowLight | Kind::Dim => [0.3, 0.7],
            Kind::Downscale => [16.0, 32.0],
            Kind::Blur => [0.5, 1.5],
            Kind::MotionBlur => [3.0, 9.0],
            Kind::Noise | Kind::ShotNoise => [4.0, 24.0],
            Kind::Jpeg => [10.0, 60.0],
        }
    }

    /// The severities that make sense, inclusive.
    fn domain(self) -> (f64, f64) {
        match self {
            Kind::Mask => (0.05, 0.8),
            Kind::Sunglasses => (1.0, 24.0),
            Kind::Patch => (1.0, 40.0),
            Kind::LowLight | Kind::Dim => (0.02, 1.0),
            Kind::Downscale => (4.0, 48.0),
            Kind::Blur => (0.1, 6.0),
            Kind::MotionBlur => (1.0, 24.0),
            Kind::Noise | Kind::ShotNoise => (0.0, 128.0),
            Kind::Jpeg => (1.0, 100.0),
        }
    }

    /// Applies this corruption at `level` to a square image of side `side`
    /// (levels in px are of a 48 px face and scale with `side`).
    pub fn apply(self, img: &mut [u8], side: usize, level: f64, rng: &mut impl Rng) {
        let scale = side as f64 / 48.0;
        match self {
            Kind::Mask => {
                let grey = rng.random_range(0..=255u8);
                let y0 = ((1.0 - level) * side as f64).round() as usize;
                fill_rows(img, side, y0, side, grey)
            }
            Kind::Sunglasses => {
                let grey = rng.random_range(0..=48u8);
                // FER-2013 faces are roughly aligned: eyes near row 18 of 48.
                let (c, h) = (18.0 * scale, level * scale);
                let y0 = (c - h / 2.0).round().max(0.0) as usize;
                let y1 = ((c + h / 2.0).round() as usize).min(side);
                fill_rows(img, side, y0, y1, grey)
            }
            Kind::Patch => {
                let grey = rng.random_range(0..=255u8);
                let s = ((level * scale).round() as usize).clamp(1, side);
                let x0 = rng.random_range(0..=side - s);
                let y0 = rng.random_range(0..=side - s);
                for row in img.chunks_exact_mut(side).skip(y0).take(s) {
                    row[x0..x0 + s].fill(grey);
                }
            }
            Kind::LowLight => map(img, |v| v * level),
            Kind::Dim => {
                let sigma = DIM_NOISE * (1.0 - level);
                for p in img.iter_mut() {
                    *p = to_u8(*p as f64 * level + gaussian(rng) * sigma);
                }
            }
            Kind::Downscale => downscale(img, side, ((level * scale).round() as usize).max(2)),
            Kind::Blur => gaussian_blur(img, side, level * scale),
            Kind::MotionBlur => {
                let angle = rng.random_range(0.0..std::f64::consts::PI);
                motion_blur(img, side, level * scale, angle)
            }
            Kind::Noise => {
                for p in img.iter_mut() {
                    *p = to_u8(*p as f64 + gaussian(rng) * level);
                }
            }
            Kind::ShotNoise => {
                for p in img.iter_mut() {
                    let v = *p as f64;
                    *p = to_u8(v + gaussian(rng) * level * (v / 128.0).sqrt());
                }
            }
            Kind::Jpeg => jpeg(img, side, level.round().clamp(1.0, 100.0) as u8),
        }
    }
}

impl CorruptConfig {
    /// Just `kind`, with chance `c`.
    pub fn only(kind: Kind, c: Chance) -> CorruptConfig {
        let mut cfg = CorruptConfig::default();
        let slot = match kind {
            Kind::Mask => &mut cfg.mask,
            Kind::Sunglasses => &mut cfg.sunglasses,
            Kind::Patch => &mut cfg.patch,
            Kind::LowLight => &mut cfg.low_light,
            Kind::Dim => &mut cfg.dim,
            Kind::Downscale => &mut cfg.downscale,
            Kind::Blur => &mut cfg.blur,
            Kind::MotionBlur => &mut cfg.motion_blur,
            Kind::Noise => &mut cfg.noise,
            Kind::ShotNoise => &mut cfg.shot_noise,
            Kind::Jpeg => &mut cfg.jpeg,
        };
        *slot = Some(c);
        cfg
    }

    fn get(&self, k: Kind) -> Option<Chance> {
        match k {
            Kind::Mask => self.mask,
            Kind::Sunglasses => self.sunglasses,
            Kind::Patch => self.patch,
            Kind::LowLight => self.low_light,
            Kind::Dim => self.dim,
            Kind::Downscale => self.downscale,
            Kind::Blur => self.blur,
            Kind::MotionBlur => self.motion_blur,
            Kind::Noise => self.noise,
            Kind::ShotNoise => self.shot_noise,
            Kind::Jpeg => self.jpeg,
        }
    }

    /// No kind configured: augmentation takes its exact pre-corruption path.
    pub fn is_empty(&self) -> bool {
        Kind::ALL.iter().all(|&k| self.get(k).is_none())
    }

    /// The configured kinds with their chances, in application order.
    pub fn kinds(&self) -> impl Iterator<Item = (Kind, Chance)> + '_ {
        Kind::ALL
            .into_iter()
            .filter_map(|k| self.get(k).map(|c| (k, c)))
    }

    pub fn validate(&self) -> Result<(), String> {
        for (k, c) in self.kinds() {
            let name = format!("data.augment.corrupt.{}", k.key());
            if !(0.0..=1.0).contains(&c.p) {
                return Err(format!("{name}.p is a probability in [0, 1], got {}", c.p));
            }
            let (lo, hi) = k.domain();
            let [a, b] = c.range;
            if !(a.is_finite() && b.is_finite() && lo <= a && a <= b && b <= hi) {
                return Err(format!(
                    "{name}.range must be [low, high] with {lo} <= low <= high <= {hi}, got {:?}",
                    c.range
                ));
            }
        }
        Ok(())
    }

    /// Draws and applies each configured kind to one image in place.
    pub fn apply(&self, img: &mut [u8], side: usize, rng: &mut impl Rng) {
        for (k, c) in self.kinds() {
            // Both draws always happen, so one kind's outcome never shifts
            // the stream of the kinds after it.
            let fire = rng.random::<f64>() < c.p;
            let level = if c.range[0] < c.range[1] {
                rng.random_range(c.range[0]..=c.range[1])
            } else {
                c.range[0]
            };
            let own: u64 = rng.random();
            if fire {
                k.apply(img, side, level, &mut ChaCha8Rng::seed_from_u64(own));
            }
        }
    }
}

#[inline]
fn to_u8(v: f64) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

fn map(img: &mut [u8], f: impl Fn(f64) -> f64) {
    for p in img.iter_mut() {
        *p = to_u8(f(*p as f64));
    }
}

fn fill_rows(img: &mut [u8], side: usize, y0: usize, y1: usize, grey: u8) {
    if y0 < y1 {
        img[y0 * side..y1 * side].fill(grey);
    }
}

/// A standard normal draw (Box-Muller).
pub fn gaussian(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Separable convolution with a normalised 1-D kernel, edges replicated.
fn separable(img: &mut [u8], side: usize, k: &[f64]) {
    let r = (k.len() / 2) as i64;
    let s = side as i64;
    let src: Vec<f64> = img.iter().map(|&p| p as f64).collect();
    let mut tmp = vec![0f64; src.len()];
    for y in 0..s {
        for x in 0..s {
            tmp[(y * s + x) as usize] = (-r..=r)
                .map(|i| src[(y * s + (x + i).clamp(0, s - 1)) as usize] * k[(i + r) as usize])
                .sum();
        }
    }
    for y in 0..s {
        for x in 0..s {
            let v: f64 = (-r..=r)
                .map(|i| tmp[((y + i).clamp(0, s - 1) * s + x) as usize] * k[(i + r) as usize])
                .sum();
            img[(y * s + x) as usize] = to_u8(v);
        }
    }
}

/// Gaussian blur with the kernel cut at 3 sigma.
pub fn gaussian_blur(img: &mut [u8], side: usize, sigma: f64) {
    let r = (3.0 * sigma).ceil().max(1.0) as i64;
    let k: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    let k: Vec<f64> = k.iter().map(|v| v / sum).collect();
    separable(img, side, &k);
}

/// Averages `img` along a centred streak of `length` px at `angle` (radians),
/// sampled bilinearly at unit steps, edges replicated.
pub fn motion_blur(img: &mut [u8], side: usize, length: f64, angle: f64) {
    let n = length.round().max(1.0) as usize;
    if n < 2 {
        return;
    }
    let (dy, dx) = angle.sin_cos();
    let src: Vec<f64> = img.iter().map(|&p| p as f64).collect();
    let s = side as i64;
    let at = |x: i64, y: i64| src[(y.clamp(0, s - 1) * s + x.clamp(0, s - 1)) as usize];
    let sample = |x: f64, y: f64| {
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        at(x0, y0) * (1.0 - fx) * (1.0 - fy)
            + at(x0 + 1, y0) * fx * (1.0 - fy)
            + at(x0, y0 + 1) * (1.0 - fx) * fy
            + at(x0 + 1, y0 + 1) * fx * fy
    };
    let half = (n - 1) as f64 / 2.0;
    for y in 0..side {
        for x in 0..side {
            let sum: f64 = (0..n)
                .map(|i| {
                    let t = i as f64 - half;
                    sample(x as f64 + t * dx, y as f64 + t * dy)
                })
                .sum();
            img[y * side + x] = to_u8(sum / n as f64);
        }
    }
}

/// Area-averages `img` down to `small` px, then scales it back up
/// bilinearly: the detail a face `small` px wide has.
pub fn downscale(img: &mut [u8], side: usize, small: usize) {
    if small >= side {
        return;
    }
    let g = image::GrayImage::from_raw(side as u32, side as u32, img.to_vec())
        .expect("square u8 buffer");
    let down = image::imageops::resize(
        &g,
        small as u32,
        small as u32,
        image::imageops::FilterType::Triangle,
    );
    let up = image::imageops::resize(
        &down,
        side as u32,
        side as u32,
        image::imageops::FilterType::Triangle,
    );
    img.copy_from_slice(up.as_raw());
}

/// Encodes as baseline JPEG at `quality` and decodes again.
pub fn jpeg(img: &mut [u8], side: usize, quality: u8) {
    let g = image::GrayImage::from_raw(side as u32, side as u32, img.to_vec())
        .expect("square u8 buffer");
    let mut bytes = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality);
    if g.write_with_encoder(enc).is_ok() {
        if let Ok(d) = image::load_from_memory(&bytes) {
            img.copy_from_slice(d.to_luma8().as_raw());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(side: usize) -> Vec<u8> {
        (0..side * side)
            .map(|i| (40 + (i * 7 % 97) * 2) as u8)
            .collect()
    }

    fn all(p: f64) -> CorruptConfig {
        let c = |lo: f64, hi: f64| Some(Chance { p, range: [lo, hi] });
        CorruptConfig {
            mask: c(0.3, 0.5),
            sunglasses: c(6.0, 12.0),
            patch: c(8.0, 16.0),
            low_light: c(0.3, 0.7),
            dim: c(0.3, 0.7),
            downscale: c(16.0, 32.0),
            blur: c(0.5, 1.5),
            motion_blur: c(3.0, 9.0),
            noise: c(4.0, 24.0),
            shot_noise: c(4.0, 24.0),
            jpeg: c(10.0, 60.0),
        }
    }

    #[test]
    fn each_kind_is_deterministic_for_a_seed_and_keeps_shape() {
        for side in [44, 48] {
            let f = face(side);
            for k in Kind::ALL {
                let (lo, hi) = k.domain();
                let level = match k {
                    Kind::Jpeg => 20.0,
                    Kind::LowLight | Kind::Dim => 0.5,
                    Kind::Mask => 0.4,
                    _ => (lo + hi) / 4.0,
                };
                let run = |seed| {
                    let mut img = f.clone();
                    k.apply(&mut img, side, level, &mut ChaCha8Rng::seed_from_u64(seed));
                    img
                };
                let a = run(3);
                assert_eq!(a.len(), side * side, "{k:?}");
                assert_eq!(a, run(3), "{k:?} is deterministic for a seed");
                assert_ne!(a, f, "{k:?} at {level} changes the image");
            }
        }
    }

    #[test]
    fn config_draws_are_seeded_and_independent_of_outcomes() {
        let f = face(44);
        let cfg = all(0.5);
        let run = |seed| {
            let mut img = f.clone();
            cfg.apply(&mut img, 44, &mut ChaCha8Rng::seed_from_u64(seed));
            img
        };
        assert_eq!(run(1), run(1));
        assert!((0..20).map(run).any(|img| img != run(1)));
        // With every chance at zero nothing changes.
        let mut img = f.clone();
        all(0.0).apply(&mut img, 44, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(img, f);
    }

    #[test]
    fn operations_do_what_they_say() {
        let f = face(48);
        let mean = |v: &[u8]| v.iter().map(|&p| p as f64).sum::<f64>() / v.len() as f64;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut d = f.clone();
        Kind::LowLight.apply(&mut d, 48, 0.25, &mut rng);
        assert!((mean(&d) - mean(&f) * 0.25).abs() < 1.0);
        // A dim room darkens as low light does and adds noise of sigma
        // 16 * (1 - 0.25) = 12 on a flat grey patch.
        let mut dim = vec![200u8; 48 * 48];
        Kind::Dim.apply(&mut dim, 48, 0.25, &mut rng);
        let m = mean(&dim);
        let sd = (dim.iter().map(|&p| (p as f64 - m).powi(2)).sum::<f64>() / 2304.0).sqrt();
        assert!(
            (m - 50.0).abs() < 1.5 && (sd - 12.0).abs() < 1.2,
            "dim {m} {sd}"
        );
        let mut m = f.clone();
        Kind::Mask.apply(&mut m, 48, 0.5, &mut rng);
        let g = m[47 * 48];
        assert!(m[24 * 48..].iter().all(|&p| p == g));
        assert_eq!(m[..24 * 48], f[..24 * 48]);
        // Noise of sigma 16 gives a residual std near 16 on a mid-grey image.
        let flat = vec![128u8; 48 * 48];
        let mut n = flat.clone();
        Kind::Noise.apply(&mut n, 48, 16.0, &mut rng);
        let sd =
            (n.iter().map(|&p| (p as f64 - 128.0).powi(2)).sum::<f64>() / n.len() as f64).sqrt();
        assert!((sd - 16.0).abs() < 1.5, "noise sd {sd}");
        // Shot noise is weaker in the dark than in the light.
        let (mut dark, mut light) = (vec![16u8; 2304], vec![224u8; 2304]);
        Kind::ShotNoise.apply(&mut dark, 48, 16.0, &mut rng);
        Kind::ShotNoise.apply(&mut light, 48, 16.0, &mut rng);
        let dev = |v: &[u8], c: f64| v.iter().map(|&p| (p as f64 - c).abs()).sum::<f64>();
        assert!(dev(&dark, 16.0) < dev(&light, 224.0) * 0.5);
        // Blurs and down-up scaling keep a constant image constant.
        for k in [Kind::Blur, Kind::MotionBlur, Kind::Downscale] {
            let mut c = vec![90u8; 48 * 48];
            k.apply(&mut c, 48, 8.0, &mut rng);
            assert!(c.iter().all(|&p| p == 90), "{k:?}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = all(0.5);
        assert!(c.validate().is_ok());
        c.jpeg = Some(Chance {
            p: 0.5,
            range: [0.0, 50.0],
        });
        assert!(c
            .validate()
            .unwrap_err()
            .contains("data.augment.corrupt.jpeg.range"));
        c.jpeg = None;
        c.noise = Some(Chance {
            p: 1.5,
            range: [1.0, 2.0],
        });
        assert!(c
            .validate()
            .unwrap_err()
            .contains("data.augment.corrupt.noise.p"));
        assert!(CorruptConfig::default().is_empty());
    }
}
