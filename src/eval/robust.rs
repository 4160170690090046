//! Robustness suite: accuracy under graded perturbations of the test faces
//! (poor lighting, noise, blur, occlusion, rotation, compression, low
//! resolution, a face mask), as a webcam in a dim room produces them, with
//! a mean corruption error against a named baseline model as ImageNet-C
//! reports it. Three kinds (impulse noise, speckle noise, defocus blur) are
//! held back: no training corruption produces them, so retention on them is
//! the honest figure. Every perturbation is seeded per image.

use crate::artifact::Classifier;
use crate::data::corrupt::{self, gaussian};
use crate::data::{ImageSet, SIDE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The target: perturbed accuracy at least 80% of clean accuracy.
pub const TARGET_RETENTION: f64 = 0.8;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Perturbation {
    BrightnessDown,
    BrightnessUp,
    Contrast,
    Gamma,
    LowLight,
    Noise,
    Blur,
    MotionBlur,
    LowResolution,
    OcclusionEyes,
    OcclusionMouth,
    FaceMask,
    OcclusionRandom,
    Rotation,
    Jpeg,
    Impulse,
    Speckle,
    Defocus,
}

pub const ALL: [Perturbation; 18] = [
    Perturbation::BrightnessDown,
    Perturbation::BrightnessUp,
    Perturbation::Contrast,
    Perturbation::Gamma,
    Perturbation::LowLight,
    Perturbation::Noise,
    Perturbation::Blur,
    Perturbation::MotionBlur,
    Perturbation::LowResolution,
    Perturbation::OcclusionEyes,
    Perturbation::OcclusionMouth,
    Perturbation::FaceMask,
    Perturbation::OcclusionRandom,
    Perturbation::Rotation,
    Perturbation::Jpeg,
    Perturbation::Impulse,
    Perturbation::Speckle,
    Perturbation::Defocus,
];

impl Perturbation {
    pub fn name(self) -> &'static str {
        match self {
            Perturbation::BrightnessDown => "brightness down",
            Perturbation::BrightnessUp => "brightness up",
            Perturbation::Contrast => "contrast",
            Perturbation::Gamma => "gamma (dark)",
            Perturbation::LowLight => "low light (dark + noise)",
            Perturbation::Noise => "gaussian noise",
            Perturbation::Blur => "blur",
            Perturbation::MotionBlur => "motion blur",
            Perturbation::LowResolution => "low resolution",
            Perturbation::OcclusionEyes => "occlusion: eyes",
            Perturbation::OcclusionMouth => "occlusion: mouth",
            Perturbation::FaceMask => "face mask",
            Perturbation::OcclusionRandom => "occlusion: random patch",
            Perturbation::Rotation => "rotation",
            Perturbation::Jpeg => "JPEG quality",
            Perturbation::Impulse => "impulse noise (held back)",
            Perturbation::Speckle => "speckle noise (held back)",
            Perturbation::Defocus => "defocus blur (held back)",
        }
    }

    /// The three severities (mild, medium, strong), in the unit of `unit()`.
    pub fn levels(self) -> [f64; 3] {
        match self {
            Perturbation::BrightnessDown => [0.25, 0.5, 0.75],
            Perturbation::BrightnessUp => [0.15, 0.3, 0.45],
            Perturbation::Contrast => [0.3, 0.5, 0.7],
            Perturbation::Gamma => [1.5, 2.0, 3.0],
            Perturbation::LowLight => [0.5, 0.35, 0.2],
            Perturbation::Noise => [8.0, 16.0, 32.0],
            Perturbation::Blur => [0.6, 1.0, 1.6],
            Perturbation::MotionBlur => [3.0, 5.0, 9.0],
            Perturbation::LowResolution => [32.0, 24.0, 16.0],
            Perturbation::OcclusionEyes | Perturbation::OcclusionMouth => [6.0, 10.0, 14.0],
            Perturbation::FaceMask => [0.35, 0.45, 0.55],
            Perturbation::OcclusionRandom => [10.0, 16.0, 22.0],
            Perturbation::Rotation => [5.0, 10.0, 20.0],
            Perturbation::Jpeg => [50.0, 25.0, 10.0],
            Perturbation::Impulse => [0.01, 0.03, 0.06],
            Perturbation::Speckle => [0.1, 0.2, 0.35],
            Perturbation::Defocus => [1.0, 1.5, 2.5],
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Perturbation::BrightnessDown => "x darker",
            Perturbation::BrightnessUp => "of white added",
            Perturbation::Contrast => "contrast removed",
            Perturbation::Gamma => "gamma",
            Perturbation::LowLight => "x brightness, noise sigma 16(1 - x)",
            Perturbation::Noise => "sigma (grey levels)",
            Perturbation::Blur => "sigma (px)",
            Perturbation::MotionBlur => "streak length (px)",
            Perturbation::LowResolution => "face width (px)",
            Perturbation::OcclusionEyes | Perturbation::OcclusionMouth => "band height (px)",
            Perturbation::FaceMask => "fraction covered from the chin",
            Perturbation::OcclusionRandom => "square side (px)",
            Perturbation::Rotation => "degrees",
            Perturbation::Jpeg => "quality",
            Perturbation::Impulse => "fraction of pixels",
            Perturbation::Speckle => "relative sigma",
            Perturbation::Defocus => "disk radius (px)",
        }
    }

    /// A stable number for the per-image seeds: a kind's noise does not
    /// change when kinds are added to the suite.
    fn id(self) -> u64 {
        match self {
            Perturbation::BrightnessDown => 0,
            Perturbation::BrightnessUp => 1,
            Perturbation::Contrast => 2,
            Perturbation::Gamma => 3,
            Perturbation::Noise => 4,
            Perturbation::Blur => 5,
            Perturbation::OcclusionEyes => 6,
            Perturbation::OcclusionMouth => 7,
            Perturbation::OcclusionRandom => 8,
            Perturbation::Rotation => 9,
            Perturbation::Jpeg => 10,
            Perturbation::LowLight => 11,
            Perturbation::MotionBlur => 12,
            Perturbation::LowResolution => 13,
            Perturbation::FaceMask => 14,
            Perturbation::Impulse => 15,
            Perturbation::Speckle => 16,
            Perturbation::Defocus => 17,
        }
    }

    /// Held back: no training corruption or augmentation produces it.
    pub fn held_out(self) -> bool {
        matches!(
            self,
            Perturbation::Impulse | Perturbation::Speckle | Perturbation::Defocus
        )
    }

    /// A lighting row (the lighting retention target covers these).
    pub fn lighting(self) -> bool {
        matches!(
            self,
            Perturbation::BrightnessDown
                | Perturbation::BrightnessUp
                | Perturbation::Contrast
                | Perturbation::Gamma
                | Perturbation::LowLight
        )
    }

    /// Applies the perturbation at `level` to one 48x48 image in place.
    pub fn apply(self, img: &mut [u8], level: f64, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let map = |img: &mut [u8], f: &dyn Fn(f64) -> f64| {
            for p in img.iter_mut() {
                *p = f(*p as f64).round().clamp(0.0, 255.0) as u8;
            }
        };
        match self {
            Perturbation::BrightnessDown => map(img, &|v| v * (1.0 - level)),
            Perturbation::BrightnessUp => map(img, &|v| v + 255.0 * level),
            Perturbation::Contrast => {
                let mean = img.iter().map(|&p| p as f64).sum::<f64>() / img.len() as f64;
                map(img, &|v| mean + (v - mean) * (1.0 - level))
            }
            Perturbation::Gamma => map(img, &|v| 255.0 * (v / 255.0).powf(level)),
            Perturbation::LowLight => {
                map(img, &|v| v * level);
                let sigma = corrupt::DIM_NOISE * (1.0 - level);
                for p in img.iter_mut() {
                    *p = (*p as f64 + gaussian(&mut rng) * sigma)
                        .round()
                        .clamp(0.0, 255.0) as u8;
                }
            }
            Perturbation::Noise => {
                for p in img.iter_mut() {
                    let n: f64 = gaussian(&mut rng) * level;
                    *p = (*p as f64 + n).round().clamp(0.0, 255.0) as u8;
                }
            }
            Perturbation::Blur => corrupt::gaussian_blur(img, SIDE, level),
            Perturbation::MotionBlur => {
                let angle = rng.random_range(0.0..std::f64::consts::PI);
                corrupt::motion_blur(img, SIDE, level, angle)
            }
            Perturbation::LowResolution => corrupt::downscale(img, SIDE, level as usize),
            // FER faces are roughly aligned: eyes near row 18, mouth near row 36.
            Perturbation::OcclusionEyes => band(img, 18.0, level),
            Perturbation::OcclusionMouth => band(img, 36.0, level),
            Perturbation::FaceMask => {
                // A light-blue surgical mask reads as a light grey.
                let y0 = ((1.0 - level) * SIDE as f64).round() as usize;
                img[y0 * SIDE..].fill(190);
            }
            Perturbation::OcclusionRandom => {
                let s = level as usize;
                let x0 = rng.random_range(0..=SIDE - s);
                let y0 = rng.random_range(0..=SIDE - s);
                for y in y0..y0 + s {
                    img[y * SIDE + x0..y * SIDE + x0 + s].fill(0);
                }
            }
            Perturbation::Rotation => {
                let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
                rotate(img, sign * level)
            }
            Perturbation::Jpeg => corrupt::jpeg(img, SIDE, level as u8),
            Perturbation::Impulse => {
                for p in img.iter_mut() {
                    if rng.random_bool(level) {
                        *p = if rng.random_bool(0.5) { 0 } else { 255 };
                    }
                }
            }
            Perturbation::Speckle => {
                for p in img.iter_mut() {
                    let v = *p as f64;
                    *p = (v * (1.0 + gaussian(&mut rng) * level))
                        .round()
                        .clamp(0.0, 255.0) as u8;
                }
            }
            Perturbation::Defocus => defocus(img, level),
        }
    }
}

fn band(img: &mut [u8], centre: f64, height: f64) {
    let y0 = (centre - height / 2.0).round().max(0.0) as usize;
    let y1 = ((centre + height / 2.0).round() as usize).min(SIDE);
    img[y0 * SIDE..y1 * SIDE].fill(0);
}

/// Defocus: the mean over a disk of `radius` px (a lens out of focus
/// spreads a point into a disk, not a gaussian), edges replicated.
fn defocus(img: &mut [u8], radius: f64) {
    let r = radius.ceil() as i64;
    let taps: Vec<(i64, i64)> = (-r..=r)
        .flat_map(|dy| (-r..=r).map(move |dx| (dx, dy)))
        .filter(|&(dx, dy)| ((dx * dx + dy * dy) as f64) <= radius * radius)
        .collect();
    let src = img.to_vec();
    let s = SIDE as i64;
    for y in 0..s {
        for x in 0..s {
            let sum: u32 = taps
                .iter()
                .map(|&(dx, dy)| {
                    src[((y + dy).clamp(0, s - 1) * s + (x + dx).clamp(0, s - 1)) as usize] as u32
                })
                .sum();
            img[(y * s + x) as usize] = (sum as f64 / taps.len() as f64).round() as u8;
        }
    }
}

fn rotate(img: &mut [u8], degrees: f64) {
    let src = img.to_vec();
    let (sin, cos) = degrees.to_radians().sin_cos();
    let c = (SIDE as f64 - 1.0) / 2.0;
    let at = |x: i64, y: i64| {
        src[(y.clamp(0, SIDE as i64 - 1) as usize) * SIDE + x.clamp(0, SIDE as i64 - 1) as usize]
            as f64
    };
    for y in 0..SIDE {
        for x in 0..SIDE {
            // Inverse mapping with bilinear sampling; edges are replicated.
            let (dx, dy) = (x as f64 - c, y as f64 - c);
            let sx = cos * dx + sin * dy + c;
            let sy = -sin * dx + cos * dy + c;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let v = at(x0, y0) * (1.0 - fx) * (1.0 - fy)
                + at(x0 + 1, y0) * fx * (1.0 - fy)
                + at(x0, y0 + 1) * (1.0 - fx) * fy
                + at(x0 + 1, y0 + 1) * fx * fy;
            img[y * SIDE + x] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub perturbation: Perturbation,
    pub name: String,
    pub unit: String,
    /// 1 = mild .. 3 = strong.
    pub severity: usize,
    pub level: f64,
    pub accuracy: f64,
    pub retention: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Robustness {
    pub images: usize,
    pub seed: u64,
    pub clean_accuracy: f64,
    pub rows: Vec<Row>,
    /// The reference model of the corruption errors, on the same images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
}

/// A baseline model's suite on the same images and seeds, and the
/// corruption errors relative to it (ImageNet-C, Hendrycks and Dietterich
/// 2019): per kind, the model's errors summed over the three severities
/// over the baseline's; 1.0 = as robust as the baseline, lower is better.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    /// What the baseline is (a model file's path as given).
    pub model: String,
    pub clean_accuracy: f64,
    /// The baseline's accuracy on each of `rows`, in their order.
    pub accuracy: Vec<f64>,
    /// Mean corruption error over the kinds that training may use.
    pub mce: f64,
    /// Mean corruption error over the held-back kinds.
    pub mce_held_out: f64,
}

fn accuracy(probs: &[f32], labels: &[u8]) -> f64 {
    let k = probs.len() / labels.len().max(1);
    let right = probs
        .chunks_exact(k)
        .zip(labels)
        .filter(|(row, &y)| super::metrics::argmax(row) == y as usize)
        .count();
    right as f64 / labels.len().max(1) as f64
}

/// Runs the suite on `set`, or on a seeded random sample of `limit` of its
/// images (the sets are ordered by class, so a prefix would not do).
pub fn run(
    clf: &Classifier,
    set: &ImageSet,
    limit: Option<usize>,
    seed: u64,
) -> anyhow::Result<Robustness> {
    let base = match limit.filter(|&l| l < set.len()) {
        Some(l) => {
            let mut idx =
                rand::seq::index::sample(&mut ChaCha8Rng::seed_from_u64(seed), set.len(), l)
                    .into_vec();
            idx.sort_unstable();
            set.select(&idx)
        }
        None => set.clone(),
    };
    let n = base.len();
    let clean = accuracy(&clf.predict_set(&base, false, 256)?, &base.labels);
    let mut rows = Vec::new();
    for p in ALL.iter() {
        for (si, &level) in p.levels().iter().enumerate() {
            let mut pert = base.clone();
            pert.pixels
                .par_chunks_mut(SIDE * SIDE)
                .enumerate()
                .for_each(|(i, img)| {
                    let s =
                        crate::data::augment::image_seed(seed, p.id() * 3 + si as u64, i as u64);
                    p.apply(img, level, s)
                });
            let acc = accuracy(&clf.predict_set(&pert, false, 256)?, &pert.labels);
            rows.push(Row {
                perturbation: *p,
                name: p.name().into(),
                unit: p.unit().into(),
                severity: si + 1,
                level,
                accuracy: acc,
                retention: if clean > 0.0 { acc / clean } else { 0.0 },
            });
        }
    }
    Ok(Robustness {
        images: n,
        seed,
        clean_accuracy: clean,
        rows,
        baseline: None,
    })
}

/// The fixed corrupted copy of a validation split behind `val/robust_acc`:
/// image `i` gets the suite's trained-for kind `i mod K` at medium
/// severity, seeded by its position, so every epoch and every trial of a
/// sweep sees the same images. The held-back kinds stay out of it: a metric
/// that is optimised must not touch them.
pub fn robust_val(set: &ImageSet) -> ImageSet {
    let kinds: Vec<Perturbation> = ALL.into_iter().filter(|p| !p.held_out()).collect();
    let mut out = set.clone();
    out.pixels
        .par_chunks_mut(SIDE * SIDE)
        .enumerate()
        .for_each(|(i, img)| {
            let p = kinds[i % kinds.len()];
            let s = crate::data::augment::image_seed(ROBUST_VAL_SEED, p.id(), i as u64);
            p.apply(img, p.levels()[1], s)
        });
    out
}

/// The seed of `robust_val`'s copy; not the run's seed, so that runs of
/// different seeds are compared on the same images.
const ROBUST_VAL_SEED: u64 = 0x0005_EED0_F0A1;

impl Robustness {
    /// Adds the corruption errors relative to `base`, which must be the
    /// same suite (images, seed, rows) run on the baseline model.
    pub fn with_baseline(mut self, base: &Robustness, model: &str) -> anyhow::Result<Robustness> {
        let same_rows = base.rows.len() == self.rows.len()
            && base.rows.iter().zip(&self.rows).all(|(a, b)| {
                a.perturbation == b.perturbation && a.severity == b.severity && a.level == b.level
            });
        if base.images != self.images || base.seed != self.seed || !same_rows {
            anyhow::bail!(
                "the baseline's robustness suite ({} images, seed {}) is not this one ({} images, seed {})",
                base.images,
                base.seed,
                self.images,
                self.seed
            );
        }
        let ce = |held: bool| {
            let kinds: Vec<Perturbation> =
                ALL.into_iter().filter(|p| p.held_out() == held).collect();
            let per_kind: Vec<f64> = kinds
                .iter()
                .map(|&p| {
                    let err = |r: &Robustness| {
                        r.rows
                            .iter()
                            .filter(|x| x.perturbation == p)
                            .map(|x| 1.0 - x.accuracy)
                            .sum::<f64>()
                    };
                    err(&self) / err(base).max(1e-12)
                })
                .collect();
            per_kind.iter().sum::<f64>() / per_kind.len().max(1) as f64
        };
        let (mce, mce_held_out) = (ce(false), ce(true));
        self.baseline = Some(Baseline {
            model: model.to_string(),
            clean_accuracy: base.clean_accuracy,
            accuracy: base.rows.iter().map(|r| r.accuracy).collect(),
            mce,
            mce_held_out,
        });
        Ok(self)
    }

    /// The lowest retention among rows that `keep` selects.
    pub fn worst(&self, keep: impl Fn(&Row) -> bool) -> Option<&Row> {
        self.rows
            .iter()
            .filter(|r| keep(r))
            .min_by(|a, b| a.retention.total_cmp(&b.retention))
    }

    /// A Markdown table: one row per perturbation, one column per severity,
    /// cases under the target retention in bold with a mark.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Clean accuracy {:.1}% on {} test images. Cells: accuracy (retention = perturbed / clean); **bold ✗** = retention under {:.0}%.\n\n",
            self.clean_accuracy * 100.0,
            self.images,
            TARGET_RETENTION * 100.0
        );
        s += "| perturbation | unit | mild | medium | strong |\n|---|---|---|---|---|\n";
        for p in ALL {
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.perturbation == p).collect();
            if rows.is_empty() {
                continue;
            }
            s += &format!("| {} | {} |", p.name(), p.unit());
            for r in rows {
                let cell = format!(
                    "{} → {:.1}% ({:.0}%)",
                    fmt_level(r.level),
                    r.accuracy * 100.0,
                    r.retention * 100.0
                );
                if r.retention < TARGET_RETENTION {
                    s += &format!(" **{cell} ✗** |");
                } else {
                    s += &format!(" {cell} |");
                }
            }
            s.push('\n');
        }
        let pct = |r: Option<&Row>| {
            r.map_or("-".to_string(), |r| {
                format!(
                    "{:.0}% ({}, {})",
                    r.retention * 100.0,
                    r.name,
                    fmt_level(r.level)
                )
            })
        };
        s += &format!(
            "\nWorst retention: {} at medium severity; {} at strong; {} over every lighting row; {} over the held-back kinds, which no training recipe uses.\n",
            pct(self.worst(|r| r.severity == 2)),
            pct(self.worst(|r| r.severity == 3)),
            pct(self.worst(|r| r.perturbation.lighting())),
            pct(self.worst(|r| r.perturbation.held_out())),
        );
        if let Some(b) = &self.baseline {
            s += &format!(
                "\nMean corruption error relative to `{}` (clean {:.1}%; 100% = its errors, lower is better): **{:.1}%** over the trained-for kinds, **{:.1}%** over the held-back kinds.\n",
                b.model,
                b.clean_accuracy * 100.0,
                b.mce * 100.0,
                b.mce_held_out * 100.0
            );
        }
        s
    }

    pub fn below_target(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.retention < TARGET_RETENTION)
            .collect()
    }
}

fn fmt_level(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face() -> Vec<u8> {
        (0..SIDE * SIDE)
            .map(|i| (40 + (i % 97) * 2) as u8)
            .collect()
    }

    #[test]
    fn perturbations_change_images_as_described_and_are_seeded() {
        let f = face();
        let mean = |v: &[u8]| v.iter().map(|&p| p as f64).sum::<f64>() / v.len() as f64;
        for p in ALL {
            for &l in &p.levels() {
                let (mut a, mut b) = (f.clone(), f.clone());
                p.apply(&mut a, l, 7);
                p.apply(&mut b, l, 7);
                assert_eq!(a, b, "{p:?} is deterministic for a seed");
                assert_ne!(a, f, "{p:?} at {l} changes the image");
            }
        }
        let mut d = f.clone();
        Perturbation::BrightnessDown.apply(&mut d, 0.5, 0);
        assert!((mean(&d) - mean(&f) * 0.5).abs() < 1.0);
        let mut e = f.clone();
        Perturbation::OcclusionEyes.apply(&mut e, 10.0, 0);
        assert!(e[13 * SIDE..23 * SIDE].iter().all(|&p| p == 0));
        assert_eq!(e[30 * SIDE..], f[30 * SIDE..]);
        // Rotation by 0 and blur with a tiny sigma are the identity.
        let mut r = f.clone();
        rotate(&mut r, 0.0);
        assert_eq!(r, f);
        let mut c = f.clone();
        Perturbation::Contrast.apply(&mut c, 0.5, 0);
        let spread = |v: &[u8]| *v.iter().max().unwrap() as i32 - *v.iter().min().unwrap() as i32;
        assert!(spread(&c) < spread(&f) * 6 / 10);
    }
}

#[cfg(test)]
mod mce_tests {
    use super::*;

    fn suite(err: impl Fn(Perturbation) -> f64) -> Robustness {
        let rows = ALL
            .iter()
            .flat_map(|&p| {
                p.levels()
                    .into_iter()
                    .enumerate()
                    .map(move |(i, level)| (p, i, level))
            })
            .map(|(p, i, level)| Row {
                perturbation: p,
                name: p.name().into(),
                unit: p.unit().into(),
                severity: i + 1,
                level,
                accuracy: 1.0 - err(p),
                retention: (1.0 - err(p)) / 0.7,
            })
            .collect();
        Robustness {
            images: 100,
            seed: 0,
            clean_accuracy: 0.7,
            rows,
            baseline: None,
        }
    }

    #[test]
    fn corruption_error_is_relative_to_the_baseline_per_kind() {
        let base = suite(|_| 0.6);
        // Half the baseline's errors on trained-for kinds, equal on held-back.
        let model = suite(|p| if p.held_out() { 0.6 } else { 0.3 });
        let r = model.with_baseline(&base, "zoo/cnn").unwrap();
        let b = r.baseline.as_ref().unwrap();
        assert!((b.mce - 0.5).abs() < 1e-12, "{b:?}");
        assert!((b.mce_held_out - 1.0).abs() < 1e-12, "{b:?}");
        assert_eq!(b.accuracy.len(), r.rows.len());
        let md = r.markdown();
        assert!(md.contains("relative to `zoo/cnn`"), "{md}");
        assert!(
            md.contains(
                "**50.0%** over the trained-for kinds, **100.0%** over the held-back kinds"
            ),
            "{md}"
        );
        // A suite on other images is refused.
        let mut other = suite(|_| 0.6);
        other.images = 50;
        assert!(suite(|_| 0.3).with_baseline(&other, "x").is_err());
        // At least three held-back kinds, and the lighting rows are named.
        assert!(ALL.iter().filter(|p| p.held_out()).count() >= 3);
        assert!(Perturbation::LowLight.lighting() && !Perturbation::Noise.lighting());
    }
}
