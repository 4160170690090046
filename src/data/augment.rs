//! Seeded, on-the-fly augmentation of 48x48 u8 faces into normalised f32.
//!
//! All geometry (crop with reflect padding or random resized crop, flip,
//! rotation) is folded into one inverse affine map, sampled once: an integer
//! gather when the map is a pure shift/flip, bilinear otherwise. All
//! photometry (brightness, contrast, gamma, normalisation) is folded into one
//! 256-entry lookup table per image. Random erasing then runs on the output.
//! Webcam corruptions (`corrupt.rs`), when configured, run on the 8-bit
//! crop after photometry and before normalisation. Each image draws from
//! its own RNG keyed by (seed, epoch, position), so results do not depend
//! on thread scheduling.

use super::corrupt::CorruptConfig;
use super::{PIXELS, SIDE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How the training crop is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CropKind {
    /// Centre crop of `size` (no randomness).
    None,
    /// Reflect-pad by `padding`, then a random `size` crop (the CIFAR recipe).
    #[default]
    Pad,
    /// Random area `scale` and aspect `ratio`, resized to `size` (Inception).
    Resized,
}

/// The augmentation config (group `data.augment`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// Side of the network input; crops are `size` x `size`.
    pub size: usize,
    pub crop: CropKind,
    pub padding: usize,
    /// Area fraction range for `crop: resized`.
    pub scale: [f64; 2],
    /// Aspect ratio range for `crop: resized`.
    pub ratio: [f64; 2],
    /// Probability of a horizontal flip.
    pub hflip: f64,
    /// Maximum rotation in degrees, uniform in [-rotation, rotation].
    pub rotation: f64,
    /// Brightness factor drawn from [1 - b, 1 + b].
    pub brightness: f64,
    /// Contrast factor drawn from [1 - c, 1 + c], around the image mean.
    pub contrast: f64,
    /// Gamma drawn log-uniformly from [1/(1 + g), 1 + g].
    pub gamma: f64,
    /// Probability of random erasing (one rectangle, filled with the mean).
    pub erasing: f64,
    pub erasing_scale: [f64; 2],
    pub erasing_ratio: [f64; 2],
    /// Normalisation, in [0, 1] pixel units (FER-2013 train statistics).
    pub mean: f32,
    pub std: f32,
    /// Webcam corruptions (noise, blur, JPEG, low resolution, occluders).
    #[serde(skip_serializing_if = "CorruptConfig::is_empty")]
    pub corrupt: CorruptConfig,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            size: 44,
            crop: CropKind::Pad,
            padding: 2,
            scale: [0.8, 1.0],
            ratio: [0.9, 1.1],
            hflip: 0.5,
            rotation: 10.0,
            brightness: 0.2,
            contrast: 0.2,
            gamma: 0.0,
            erasing: 0.5,
            erasing_scale: [0.02, 0.2],
            erasing_ratio: [0.3, 3.3],
            mean: super::fer2013::MEAN,
            std: super::fer2013::STD,
            corrupt: CorruptConfig::default(),
        }
    }
}

impl AugmentConfig {
    /// No randomness at all: a centre crop and normalisation.
    pub fn eval_only(&self) -> AugmentConfig {
        AugmentConfig {
            crop: CropKind::None,
            hflip: 0.0,
            rotation: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            gamma: 0.0,
            erasing: 0.0,
            corrupt: CorruptConfig::default(),
            ..self.clone()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let prob = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(format!(
                    "data.augment.{name} is a probability in [0, 1], got {p}"
                ))
            }
        };
        if self.size == 0 || self.size > SIDE {
            return Err(format!(
                "data.augment.size must be in 1..={SIDE}, got {}",
                self.size
            ));
        }
        if self.padding > 16 {
            return Err(format!(
                "data.augment.padding must be <= 16, got {}",
                self.padding
            ));
        }
        prob("hflip", self.hflip)?;
        prob("erasing", self.erasing)?;
        for (name, r) in [
            ("scale", self.scale),
            ("ratio", self.ratio),
            ("erasing_scale", self.erasing_scale),
            ("erasing_ratio", self.erasing_ratio),
        ] {
            if !(r[0] > 0.0 && r[0] <= r[1]) {
                return Err(format!(
                    "data.augment.{name} must be [low, high] with 0 < low <= high, got {r:?}"
                ));
            }
        }
        for (name, v) in [
            ("rotation", self.rotation),
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("gamma", self.gamma),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(format!("data.augment.{name} must be >= 0, got {v}"));
            }
        }
        if self.brightness >= 1.0 || self.contrast >= 1.0 {
            return Err("data.augment.brightness and contrast must be < 1".into());
        }
        if self.std.is_nan() || self.std <= 0.0 {
            return Err(format!("data.augment.std must be > 0, got {}", self.std));
        }
        self.corrupt.validate()
    }

    /// Floats per output image.
    pub fn out_len(&self) -> usize {
        self.size * self.size
    }
}

/// A stable per-image seed from the run seed, epoch and position in epoch.
pub fn image_seed(seed: u64, epoch: u64, position: u64) -> u64 {
    // splitmix64 finaliser over a simple combination: cheap and well mixed.
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(epoch.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(position.wrapping_mul(0x94D0_49BB_1331_11EB))
        .wrapping_add(0x2545_F491_4F6C_DD1D);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline]
fn reflect(i: i32) -> usize {
    // torch 'reflect' (edge not repeated); clamps beyond one reflection.
    let n = SIDE as i32;
    let r = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    r.clamp(0, n - 1) as usize
}

/// Inverse map from output pixel (u, v) to source (x, y):
/// x = a*u + b*v + c, y = d*u + e*v + f.
#[derive(Clone, Copy, Debug)]
struct Affine {
    a: f32,
    b: f32,
    c: f32,
    d: f32,
    e: f32,
    f: f32,
}

fn warp(src: &[u8], size: usize, m: Affine, out: &mut [u8]) {
    let integer = m.b == 0.0
        && m.d == 0.0
        && m.e == 1.0
        && (m.a == 1.0 || m.a == -1.0)
        && m.c.fract() == 0.0
        && m.f.fract() == 0.0;
    if integer {
        // Pure shift and flip: an index gather, exact like torchvision's crop.
        let xs: Vec<usize> = (0..size)
            .map(|u| reflect((m.a * u as f32 + m.c) as i32))
            .collect();
        for v in 0..size {
            let row = &src[reflect(v as i32 + m.f as i32) * SIDE..][..SIDE];
            let o = &mut out[v * size..(v + 1) * size];
            for (dst, &x) in o.iter_mut().zip(&xs) {
                *dst = row[x];
            }
        }
        return;
    }
    for v in 0..size {
        let (vf, row) = (v as f32, &mut out[v * size..(v + 1) * size]);
        for (u, dst) in row.iter_mut().enumerate() {
            let uf = u as f32;
            let x = m.a * uf + m.b * vf + m.c;
            let y = m.d * uf + m.e * vf + m.f;
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = (x - x0, y - y0);
            let (x0, y0) = (x0 as i32, y0 as i32);
            let (xa, xb, ya, yb) = (reflect(x0), reflect(x0 + 1), reflect(y0), reflect(y0 + 1));
            let p = |yy: usize, xx: usize| src[yy * SIDE + xx] as f32;
            let top = p(ya, xa) + (p(ya, xb) - p(ya, xa)) * fx;
            let bot = p(yb, xa) + (p(yb, xb) - p(yb, xa)) * fx;
            *dst = (top + (bot - top) * fy + 0.5) as u8;
        }
    }
}

fn centre_affine(size: usize) -> Affine {
    let off = ((SIDE - size) / 2) as f32;
    Affine {
        a: 1.0,
        b: 0.0,
        c: off,
        d: 0.0,
        e: 1.0,
        f: off,
    }
}

fn sample_affine(cfg: &AugmentConfig, rng: &mut impl Rng) -> Affine {
    let s = cfg.size as f32;
    // Crop: source rectangle (x0, y0, w, h) in original pixel coordinates.
    let (x0, y0, w, h) = match cfg.crop {
        CropKind::None => {
            let off = ((SIDE - cfg.size) / 2) as f32;
            (off, off, s, s)
        }
        CropKind::Pad => {
            let range = (SIDE + 2 * cfg.padding - cfg.size) as i32;
            let ox = rng.random_range(0..=range) - cfg.padding as i32;
            let oy = rng.random_range(0..=range) - cfg.padding as i32;
            (ox as f32, oy as f32, s, s)
        }
        CropKind::Resized => {
            let area = (SIDE * SIDE) as f64;
            let mut rect = None;
            for _ in 0..10 {
                let target = area * rng.random_range(cfg.scale[0]..=cfg.scale[1]);
                let log_r = rng.random_range(cfg.ratio[0].ln()..=cfg.ratio[1].ln());
                let ar = log_r.exp();
                let w = (target * ar).sqrt().round();
                let h = (target / ar).sqrt().round();
                if w >= 1.0 && h >= 1.0 && w <= SIDE as f64 && h <= SIDE as f64 {
                    let x = rng.random_range(0..=(SIDE - w as usize)) as f32;
                    let y = rng.random_range(0..=(SIDE - h as usize)) as f32;
                    rect = Some((x, y, w as f32, h as f32));
                    break;
                }
            }
            rect.unwrap_or((0.0, 0.0, SIDE as f32, SIDE as f32))
        }
    };
    let flip = cfg.hflip > 0.0 && rng.random_bool(cfg.hflip);
    let angle = if cfg.rotation > 0.0 {
        rng.random_range(-cfg.rotation..=cfg.rotation).to_radians() as f32
    } else {
        0.0
    };
    // Output (u, v) -> centred, rotated, flipped, scaled into the crop rect.
    let (sx, sy) = (w / s, h / s);
    let c_out = (s - 1.0) / 2.0;
    let (cx, cy) = (x0 + (w - 1.0) / 2.0, y0 + (h - 1.0) / 2.0);
    let (cos, sin) = (angle.cos(), angle.sin());
    let fl = if flip { -1.0 } else { 1.0 };
    // x = cx + sx * fl * (cos*(u-c) - sin*(v-c)); y = cy + sy * (sin*(u-c) + cos*(v-c))
    let a = sx * fl * cos;
    let b = -sx * fl * sin;
    let d = sy * sin;
    let e = sy * cos;
    let mut m = Affine {
        a,
        b,
        c: cx - a * c_out - b * c_out,
        d,
        e,
        f: cy - d * c_out - e * c_out,
    };
    if angle == 0.0 && sx == 1.0 && sy == 1.0 {
        // Keep the integer fast path exact despite float rounding.
        m.c = m.c.round();
        m.f = m.f.round();
        m.b = 0.0;
        m.d = 0.0;
    }
    m
}

/// A 256-entry map from u8 pixel to normalised float, with brightness,
/// contrast (around `mean_px`) and gamma applied in that order.
fn photometric_lut(cfg: &AugmentConfig, mean_px: f32, rng: &mut impl Rng, lut: &mut [f32; 256]) {
    let b = if cfg.brightness > 0.0 {
        rng.random_range(1.0 - cfg.brightness..=1.0 + cfg.brightness) as f32
    } else {
        1.0
    };
    let c = if cfg.contrast > 0.0 {
        rng.random_range(1.0 - cfg.contrast..=1.0 + cfg.contrast) as f32
    } else {
        1.0
    };
    let g = if cfg.gamma > 0.0 {
        let l = (1.0 + cfg.gamma).ln();
        rng.random_range(-l..=l).exp() as f32
    } else {
        1.0
    };
    let m = (mean_px / 255.0 * b).clamp(0.0, 1.0);
    let inv_std = 1.0 / cfg.std;
    for (i, out) in lut.iter_mut().enumerate() {
        let mut x = (i as f32 / 255.0 * b).min(1.0);
        x = ((x - m) * c + m).clamp(0.0, 1.0);
        if g != 1.0 {
            x = x.powf(g);
        }
        *out = (x - cfg.mean) * inv_std;
    }
}

fn erase(cfg: &AugmentConfig, rng: &mut impl Rng, out: &mut [f32]) {
    if cfg.erasing <= 0.0 || !rng.random_bool(cfg.erasing) {
        return;
    }
    let s = cfg.size;
    let area = (s * s) as f64;
    for _ in 0..10 {
        let target = area * rng.random_range(cfg.erasing_scale[0]..=cfg.erasing_scale[1]);
        let ar = rng
            .random_range(cfg.erasing_ratio[0].ln()..=cfg.erasing_ratio[1].ln())
            .exp();
        let h = (target * ar).sqrt().round() as usize;
        let w = (target / ar).sqrt().round() as usize;
        if h == 0 || w == 0 || h >= s || w >= s {
            continue;
        }
        let y = rng.random_range(0..=s - h);
        let x = rng.random_range(0..=s - w);
        for row in out.chunks_exact_mut(s).skip(y).take(h) {
            // 0 after normalisation is the data set's mean grey.
            row[x..x + w].fill(0.0);
        }
        return;
    }
}

/// Augments one 48x48 image into `out` (`size * size` floats).
pub fn augment_one(src: &[u8], cfg: &AugmentConfig, rng: &mut impl Rng, out: &mut [f32]) {
    debug_assert_eq!(src.len(), PIXELS);
    let mut scratch = [0u8; PIXELS];
    let m = sample_affine(cfg, rng);
    warp(src, cfg.size, m, &mut scratch);
    let mean_px = if cfg.contrast > 0.0 {
        src.iter().map(|&p| p as u32).sum::<u32>() as f32 / PIXELS as f32
    } else {
        0.0
    };
    let mut lut = [0f32; 256];
    photometric_lut(cfg, mean_px, rng, &mut lut);
    let n = cfg.out_len();
    if cfg.corrupt.is_empty() {
        for (o, &p) in out.iter_mut().zip(&scratch[..n]) {
            *o = lut[p as usize];
        }
    } else {
        // As a camera does: lighting lands in 8 bits, then the corruptions
        // (sensor noise on the darkened image, then compression).
        let back = |x: f32| ((x * cfg.std + cfg.mean) * 255.0).round().clamp(0.0, 255.0) as u8;
        for p in scratch[..n].iter_mut() {
            *p = back(lut[*p as usize]);
        }
        cfg.corrupt.apply(&mut scratch[..n], cfg.size, rng);
        let inv = 1.0 / cfg.std;
        for (o, &p) in out.iter_mut().zip(&scratch[..n]) {
            *o = (p as f32 / 255.0 - cfg.mean) * inv;
        }
    }
    erase(cfg, rng, out);
}

/// Centre crop and normalisation only (evaluation).
pub fn eval_one(src: &[u8], cfg: &AugmentConfig, out: &mut [f32]) {
    let mut scratch = [0u8; PIXELS];
    warp(src, cfg.size, centre_affine(cfg.size), &mut scratch);
    let inv = 1.0 / cfg.std;
    for (o, &p) in out.iter_mut().zip(&scratch[..cfg.out_len()]) {
        *o = (p as f32 / 255.0 - cfg.mean) * inv;
    }
}

/// Augments the images at `indices` of `pixels` (contiguous 48x48 faces) in
/// parallel into `out`. Position `k` of the batch uses the RNG keyed by
/// `(seed, epoch, first_position + k)`.
pub fn augment_batch(
    pixels: &[u8],
    indices: &[usize],
    cfg: &AugmentConfig,
    seed: u64,
    epoch: u64,
    first_position: u64,
    out: &mut [f32],
) {
    let n = cfg.out_len();
    out.par_chunks_mut(n)
        .zip(indices.par_iter())
        .enumerate()
        .for_each(|(k, (o, &i))| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(image_seed(seed, epoch, first_position + k as u64));
            augment_one(&pixels[i * PIXELS..(i + 1) * PIXELS], cfg, &mut rng, o);
        });
}

/// Evaluation transform over a batch, in parallel.
pub fn eval_batch(pixels: &[u8], indices: &[usize], cfg: &AugmentConfig, out: &mut [f32]) {
    let n = cfg.out_len();
    out.par_chunks_mut(n)
        .zip(indices.par_iter())
        .for_each(|(o, &i)| eval_one(&pixels[i * PIXELS..(i + 1) * PIXELS], cfg, o));
}

/// Ten-crop test-time augmentation: the four corner crops and the centre
/// crop of `cfg.size`, each also flipped: `10 * size * size` floats.
pub fn ten_crop(src: &[u8], cfg: &AugmentConfig, out: &mut [f32]) {
    let s = cfg.size;
    let far = (SIDE - s) as f32;
    let mid = ((SIDE - s) / 2) as f32;
    let corners = [(0.0, 0.0), (far, 0.0), (0.0, far), (far, far), (mid, mid)];
    let inv = 1.0 / cfg.std;
    let mut scratch = [0u8; PIXELS];
    let mut k = 0;
    for flip in [false, true] {
        for &(x0, y0) in &corners {
            let m = if flip {
                Affine {
                    a: -1.0,
                    b: 0.0,
                    c: x0 + (s - 1) as f32,
                    d: 0.0,
                    e: 1.0,
                    f: y0,
                }
            } else {
                Affine {
                    a: 1.0,
                    b: 0.0,
                    c: x0,
                    d: 0.0,
                    e: 1.0,
                    f: y0,
                }
            };
            warp(src, s, m, &mut scratch);
            let o = &mut out[k * s * s..(k + 1) * s * s];
            for (o, &p) in o.iter_mut().zip(&scratch[..s * s]) {
                *o = (p as f32 / 255.0 - cfg.mean) * inv;
            }
            k += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(seed: u64) -> Vec<u8> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..PIXELS).map(|_| rng.random()).collect()
    }

    fn denorm(cfg: &AugmentConfig, x: f32) -> u8 {
        ((x * cfg.std + cfg.mean) * 255.0).round() as u8
    }

    #[test]
    fn same_seed_same_batch_different_seed_differs() {
        let px: Vec<u8> = (0..8).flat_map(face).collect();
        let idx: Vec<usize> = (0..8).collect();
        let cfg = AugmentConfig::default();
        let run = |seed, epoch| {
            let mut out = vec![0f32; 8 * cfg.out_len()];
            augment_batch(&px, &idx, &cfg, seed, epoch, 0, &mut out);
            out
        };
        assert_eq!(run(1, 0), run(1, 0));
        assert_ne!(run(1, 0), run(2, 0));
        assert_ne!(run(1, 0), run(1, 1));
    }

    #[test]
    fn identity_config_is_a_normalised_copy() {
        let src = face(3);
        let cfg = AugmentConfig {
            size: SIDE,
            ..AugmentConfig::default()
        }
        .eval_only();
        let mut out = vec![0f32; PIXELS];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        augment_one(&src, &cfg, &mut rng, &mut out);
        let back: Vec<u8> = out.iter().map(|&x| denorm(&cfg, x)).collect();
        assert_eq!(back, src);
        let mut ev = vec![0f32; PIXELS];
        eval_one(&src, &cfg, &mut ev);
        assert_eq!(ev, out);
    }

    #[test]
    fn flip_mirrors_rows() {
        let src = face(4);
        let cfg = AugmentConfig {
            size: SIDE,
            hflip: 1.0,
            ..AugmentConfig::default().eval_only()
        };
        let mut out = vec![0f32; PIXELS];
        augment_one(&src, &cfg, &mut ChaCha8Rng::seed_from_u64(0), &mut out);
        for v in 0..SIDE {
            for u in 0..SIDE {
                assert_eq!(
                    denorm(&cfg, out[v * SIDE + u]),
                    src[v * SIDE + SIDE - 1 - u]
                );
            }
        }
    }

    #[test]
    fn pad_crop_is_a_shifted_window_with_reflection() {
        let src = face(5);
        let cfg = AugmentConfig {
            size: 44,
            padding: 4,
            crop: CropKind::Pad,
            ..AugmentConfig::default().eval_only()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut out = vec![0f32; 44 * 44];
        // Replay the draw to know the offsets.
        let m = sample_affine(&cfg, &mut ChaCha8Rng::seed_from_u64(9));
        augment_one(&src, &cfg, &mut rng, &mut out);
        for v in 0..44 {
            for u in 0..44 {
                let x = reflect(u as i32 + m.c as i32);
                let y = reflect(v as i32 + m.f as i32);
                assert_eq!(denorm(&cfg, out[v * 44 + u]), src[y * SIDE + x]);
            }
        }
    }

    #[test]
    fn rotation_keeps_the_centre_and_erasing_fills_mean() {
        // A constant image stays constant under any rotation (reflect border).
        let src = vec![100u8; PIXELS];
        let cfg = AugmentConfig {
            rotation: 30.0,
            ..AugmentConfig::default().eval_only()
        };
        let mut out = vec![0f32; cfg.out_len()];
        augment_one(&src, &cfg, &mut ChaCha8Rng::seed_from_u64(1), &mut out);
        assert!(out.iter().all(|&x| denorm(&cfg, x) == 100));
        let cfg = AugmentConfig {
            erasing: 1.0,
            ..cfg
        };
        augment_one(&src, &cfg, &mut ChaCha8Rng::seed_from_u64(1), &mut out);
        let zeros = out.iter().filter(|&&x| x == 0.0).count();
        assert!(zeros > 0 && zeros < out.len());
    }

    #[test]
    fn ten_crop_views() {
        let src = face(6);
        let cfg = AugmentConfig::default();
        let s = cfg.size;
        let mut out = vec![0f32; 10 * s * s];
        ten_crop(&src, &cfg, &mut out);
        // View 0 is the top-left crop; view 5 is its mirror image.
        assert_eq!(denorm(&cfg, out[0]), src[0]);
        assert_eq!(denorm(&cfg, out[5 * s * s + s - 1]), src[0]);
        // View 4 (centre) equals the eval transform.
        let mut ev = vec![0f32; s * s];
        eval_one(&src, &cfg, &mut ev);
        assert_eq!(&out[4 * s * s..5 * s * s], &ev[..]);
    }

    #[test]
    fn resized_crop_and_photometric_stay_finite_and_bounded() {
        let src = face(7);
        let cfg = AugmentConfig {
            crop: CropKind::Resized,
            gamma: 0.5,
            ..AugmentConfig::default()
        };
        let mut out = vec![0f32; cfg.out_len()];
        for seed in 0..50 {
            augment_one(&src, &cfg, &mut ChaCha8Rng::seed_from_u64(seed), &mut out);
            let lo = (0.0 - cfg.mean) / cfg.std - 1e-4;
            let hi = (1.0 - cfg.mean) / cfg.std + 1e-4;
            assert!(out.iter().all(|&x| x.is_finite() && x >= lo && x <= hi));
        }
    }

    #[test]
    fn config_validation_names_the_field() {
        let bad = AugmentConfig {
            hflip: 1.5,
            ..AugmentConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("data.augment.hflip"));
        let bad = AugmentConfig {
            scale: [0.5, 0.1],
            ..AugmentConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("data.augment.scale"));
    }
}
