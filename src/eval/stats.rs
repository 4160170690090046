//! Uncertainty of evaluation figures: class-stratified bootstrap intervals,
//! paired comparisons of two models on the same images (exact McNemar for
//! accuracy, paired bootstrap for F1), and Holm's correction.
//!
//! Everything works on label vectors (true and predicted class per image),
//! so the same code serves `fer eval`, `fer compare` and reports. Resampling
//! is seeded (ChaCha8), so a figure and its interval are reproducible.
//! Across seeds (a few trainings of one recipe) the spread is a mean with
//! its sample standard deviation and Student's t interval.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Resamples per interval: enough for stable 2.5% and 97.5% percentiles.
pub const RESAMPLES: usize = 2000;
/// The bootstrap's seed, fixed so that intervals are reproducible.
pub const SEED: u64 = 0x00B0_0757_4A9E;

/// A figure with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// `70.27% [68.8, 71.7]` for a fraction shown in percent.
    pub fn percent(&self) -> String {
        format!(
            "{:.2}% [{:.1}, {:.1}]",
            self.value * 100.0,
            self.lo * 100.0,
            self.hi * 100.0
        )
    }

    /// `0.701 [0.686, 0.716]`.
    pub fn plain(&self) -> String {
        format!("{:.3} [{:.3}, {:.3}]", self.value, self.lo, self.hi)
    }
}

/// The headline figures of one evaluation with their intervals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Intervals {
    pub resamples: usize,
    pub accuracy: Interval,
    pub weighted_f1: Interval,
    pub macro_f1: Interval,
    /// Per class, in the model's class order.
    pub per_class_f1: Vec<Interval>,
}

/// Accuracy, weighted and macro F1 and each class's F1 with 95% intervals
/// ([`RESAMPLES`] class-stratified resamples, seed [`SEED`]).
pub fn headline(truth: &[u8], pred: &[u8], k: usize) -> Intervals {
    let mut figures = vec![Figure::Accuracy, Figure::WeightedF1, Figure::MacroF1];
    figures.extend((0..k).map(Figure::ClassF1));
    let iv = intervals(truth, pred, k, &figures, RESAMPLES, SEED);
    Intervals {
        resamples: RESAMPLES,
        accuracy: iv[0],
        weighted_f1: iv[1],
        macro_f1: iv[2],
        per_class_f1: iv[3..].to_vec(),
    }
}

/// Figures that are functions of a confusion matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    Accuracy,
    WeightedF1,
    MacroF1,
    /// One class's F1.
    ClassF1(usize),
}

impl Figure {
    pub fn name(self, classes: &[String]) -> String {
        match self {
            Figure::Accuracy => "accuracy".into(),
            Figure::WeightedF1 => "weighted F1".into(),
            Figure::MacroF1 => "macro F1".into(),
            Figure::ClassF1(c) => format!(
                "{} F1",
                classes.get(c).map_or_else(|| c.to_string(), |s| s.clone())
            ),
        }
    }

    /// The figure of `confusion[true][pred]` counts.
    pub fn of(self, confusion: &[Vec<u32>]) -> f64 {
        let k = confusion.len();
        let n: u32 = confusion.iter().flatten().sum();
        if n == 0 {
            return 0.0;
        }
        let f1 = |c: usize| {
            let tp = confusion[c][c] as f64;
            let support: u32 = confusion[c].iter().sum();
            let predicted: u32 = confusion.iter().map(|row| row[c]).sum();
            let denom = support as f64 + predicted as f64;
            if denom == 0.0 {
                0.0
            } else {
                2.0 * tp / denom
            }
        };
        match self {
            Figure::Accuracy => (0..k).map(|c| confusion[c][c]).sum::<u32>() as f64 / n as f64,
            Figure::MacroF1 => {
                // Over the classes present (as scikit-learn's labels= the
                // true classes): an absent class has no F1 to average.
                let present: Vec<usize> = (0..k)
                    .filter(|&c| confusion[c].iter().sum::<u32>() > 0)
                    .collect();
                present.iter().map(|&c| f1(c)).sum::<f64>() / present.len().max(1) as f64
            }
            Figure::WeightedF1 => {
                (0..k)
                    .map(|c| f1(c) * confusion[c].iter().sum::<u32>() as f64)
                    .sum::<f64>()
                    / n as f64
            }
            Figure::ClassF1(c) => f1(c),
        }
    }
}

fn confusion(
    truth: &[u8],
    pred: &[u8],
    k: usize,
    idx: impl Iterator<Item = usize>,
) -> Vec<Vec<u32>> {
    let mut m = vec![vec![0u32; k]; k];
    for i in idx {
        m[truth[i] as usize][pred[i] as usize] += 1;
    }
    m
}

/// Indices of each true class, for class-stratified resampling: every
/// resample keeps the class counts of the test set, as a fixed test set has.
fn strata(truth: &[u8], k: usize) -> Vec<Vec<usize>> {
    let mut s = vec![Vec::new(); k];
    for (i, &t) in truth.iter().enumerate() {
        s[t as usize].push(i);
    }
    s
}

/// One class-stratified resample of image indices.
fn resample(strata: &[Vec<usize>], rng: &mut ChaCha8Rng, out: &mut Vec<usize>) {
    out.clear();
    for s in strata {
        for _ in 0..s.len() {
            out.push(s[rng.random_range(0..s.len())]);
        }
    }
}

/// The `q` quantile (linear interpolation, as NumPy's default) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (h - lo as f64)
}

/// `n` statistics over `resamples` class-stratified resamples (seeded):
/// `score` fills one value per statistic from a resample's image indices.
fn bootstrap(
    truth: &[u8],
    k: usize,
    n: usize,
    resamples: usize,
    seed: u64,
    mut score: impl FnMut(&[usize], &mut [f64]),
) -> Vec<Vec<f64>> {
    let strata = strata(truth, k);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draws: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); n];
    let mut idx = Vec::with_capacity(truth.len());
    let mut values = vec![0.0; n];
    for _ in 0..resamples {
        resample(&strata, &mut rng, &mut idx);
        score(&idx, &mut values);
        for (d, v) in draws.iter_mut().zip(&values) {
            d.push(*v);
        }
    }
    draws
}

/// 95% percentile intervals of `figures` for one model's predictions,
/// from `resamples` class-stratified bootstrap resamples.
pub fn intervals(
    truth: &[u8],
    pred: &[u8],
    k: usize,
    figures: &[Figure],
    resamples: usize,
    seed: u64,
) -> Vec<Interval> {
    assert_eq!(truth.len(), pred.len(), "one prediction per image");
    let full = confusion(truth, pred, k, 0..truth.len());
    let draws = bootstrap(truth, k, figures.len(), resamples, seed, |idx, out| {
        let m = confusion(truth, pred, k, idx.iter().copied());
        for (o, f) in out.iter_mut().zip(figures) {
            *o = f.of(&m);
        }
    });
    figures
        .iter()
        .zip(draws)
        .map(|(f, mut d)| {
            d.sort_by(f64::total_cmp);
            Interval {
                value: f.of(&full),
                lo: quantile(&d, 0.025),
                hi: quantile(&d, 0.975),
            }
        })
        .collect()
}

/// Two models on the same images: A's figure minus B's, with a paired
/// bootstrap interval and p-value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    pub difference: Interval,
    /// Two-sided: twice the smaller share of resampled differences on
    /// either side of zero (at least 1 / resamples).
    pub p_bootstrap: f64,
}

/// The paired bootstrap of `figures` for models A and B: both are scored
/// on the same resampled images each time, so what the two share (the
/// hard images) cancels out of the difference.
pub fn paired(
    truth: &[u8],
    pred_a: &[u8],
    pred_b: &[u8],
    k: usize,
    figures: &[Figure],
    resamples: usize,
    seed: u64,
) -> Vec<PairedDifference> {
    assert!(truth.len() == pred_a.len() && truth.len() == pred_b.len());
    let all = || 0..truth.len();
    let (full_a, full_b) = (
        confusion(truth, pred_a, k, all()),
        confusion(truth, pred_b, k, all()),
    );
    let draws = bootstrap(truth, k, figures.len(), resamples, seed, |idx, out| {
        let a = confusion(truth, pred_a, k, idx.iter().copied());
        let b = confusion(truth, pred_b, k, idx.iter().copied());
        for (o, f) in out.iter_mut().zip(figures) {
            *o = f.of(&a) - f.of(&b);
        }
    });
    figures
        .iter()
        .zip(draws)
        .map(|(f, mut d)| {
            d.sort_by(f64::total_cmp);
            let below = d.iter().filter(|&&x| x <= 0.0).count() as f64;
            let above = d.iter().filter(|&&x| x >= 0.0).count() as f64;
            let n = d.len().max(1) as f64;
            PairedDifference {
                difference: Interval {
                    value: f.of(&full_a) - f.of(&full_b),
                    lo: quantile(&d, 0.025),
                    hi: quantile(&d, 0.975),
                },
                p_bootstrap: (2.0 * below.min(above) / n).clamp(1.0 / n, 1.0),
            }
        })
        .collect()
}

/// McNemar's exact test on the same images: `a_only` images only A gets
/// right, `b_only` only B. Two-sided binomial p of the smaller count under
/// p = 1/2 (statsmodels' `mcnemar(exact=True)`, SciPy's `binomtest`).
pub fn mcnemar_exact(a_only: u64, b_only: u64) -> f64 {
    let n = a_only + b_only;
    if n == 0 {
        return 1.0;
    }
    let k = a_only.min(b_only);
    // P(X <= k) for X ~ Binomial(n, 1/2), summed in the log domain
    // (0.5^n underflows for n above about 1,000).
    let mut log_pmf = -(n as f64) * std::f64::consts::LN_2;
    let mut terms = Vec::with_capacity(k as usize + 1);
    for i in 0..=k {
        terms.push(log_pmf);
        log_pmf += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let cdf = max.exp() * terms.iter().map(|t| (t - max).exp()).sum::<f64>();
    (2.0 * cdf).min(1.0)
}

/// Images only A classifies right, and only B.
pub fn discordant(truth: &[u8], pred_a: &[u8], pred_b: &[u8]) -> (u64, u64) {
    let mut a_only = 0;
    let mut b_only = 0;
    for ((t, a), b) in truth.iter().zip(pred_a).zip(pred_b) {
        match (a == t, b == t) {
            (true, false) => a_only += 1,
            (false, true) => b_only += 1,
            _ => {}
        }
    }
    (a_only, b_only)
}

/// Holm's step-down adjustment of `p` (the family-wise error rate), in the
/// input order: `min(1, max over earlier ranks of (m - rank) * p)`.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// One figure over several trainings of a recipe (one per seed): the mean,
/// the sample standard deviation (n - 1) and the 95% interval of the mean
/// from Student's t with n - 1 degrees of freedom (SciPy's
/// `stats.t.interval(0.95, n - 1, mean, sem)`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub n: usize,
    pub mean: f64,
    pub std: f64,
    pub lo: f64,
    pub hi: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `69.84% ± 0.31 [69.07, 70.61]` for a fraction shown in percent.
    pub fn percent(&self) -> String {
        format!(
            "{:.2}% ± {:.2} [{:.2}, {:.2}]",
            self.mean * 100.0,
            self.std * 100.0,
            self.lo * 100.0,
            self.hi * 100.0
        )
    }

    /// `0.698 ± 0.004 [0.689, 0.707]`.
    pub fn plain(&self) -> String {
        format!(
            "{:.3} ± {:.3} [{:.3}, {:.3}]",
            self.mean, self.std, self.lo, self.hi
        )
    }
}

/// The spread of `values` (one per seed); None below two values, where
/// neither a deviation nor an interval exists, or when one is not finite.
pub fn spread(values: &[f64]) -> Option<Spread> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let n = values.len();
    if n < 2 || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .ok()?
        .inverse_cdf(0.975);
    let half = t * std / (n as f64).sqrt();
    Some(Spread {
        n,
        mean,
        std,
        lo: mean - half,
        hi: mean + half,
        min: values.iter().cloned().fold(f64::INFINITY, f64::min),
        max: values.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_matches_scipy_t_interval() {
        // scipy.stats.t.interval(0.95, 2, loc=mean, scale=sem) for
        // [0.70, 0.68, 0.71]: mean 0.69667, sd 0.015275, (0.658721, 0.734612).
        let s = spread(&[0.70, 0.68, 0.71]).unwrap();
        assert!((s.mean - 0.696_666_7).abs() < 1e-6, "{s:?}");
        assert!((s.std - 0.015_275_25).abs() < 1e-6, "{s:?}");
        assert!((s.lo - 0.658_720_8).abs() < 1e-5, "{s:?}");
        assert!((s.hi - 0.734_612_5).abs() < 1e-5, "{s:?}");
        assert_eq!((s.min, s.max), (0.68, 0.71));
        assert!(spread(&[0.7]).is_none());
        assert!(spread(&[0.7, f64::NAN]).is_none());
    }

    #[test]
    fn mcnemar_matches_the_binomial_by_hand() {
        // n = 10, k = 2: 2 * (1 + 10 + 45) / 1024.
        assert!((mcnemar_exact(2, 8) - 112.0 / 1024.0).abs() < 1e-12);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // Large n stays finite and symmetric.
        let p = mcnemar_exact(150, 210);
        assert!(p > 0.0 && p < 0.01, "{p}");
        assert_eq!(p, mcnemar_exact(210, 150));
    }

    #[test]
    fn holm_adjusts_in_input_order() {
        let adj = holm(&[0.01, 0.04, 0.03]);
        // Sorted 0.01, 0.03, 0.04 -> 0.03, 0.06, max(0.06, 0.04) = 0.06.
        let want = [0.03, 0.06, 0.06];
        for (a, w) in adj.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{adj:?}");
        }
    }

    #[test]
    fn figures_of_a_confusion_matrix() {
        // 2 classes: true 0 -> [3 right, 1 wrong], true 1 -> [2 wrong, 4 right].
        let m = vec![vec![3, 1], vec![2, 4]];
        assert!((Figure::Accuracy.of(&m) - 0.7).abs() < 1e-12);
        let f0 = 2.0 * 3.0 / (4.0 + 5.0);
        let f1 = 2.0 * 4.0 / (6.0 + 5.0);
        assert!((Figure::ClassF1(0).of(&m) - f0).abs() < 1e-12);
        assert!((Figure::MacroF1.of(&m) - (f0 + f1) / 2.0).abs() < 1e-12);
        assert!((Figure::WeightedF1.of(&m) - (4.0 * f0 + 6.0 * f1) / 10.0).abs() < 1e-12);
    }

    #[test]
    fn intervals_hold_the_figure_and_shrink_with_more_images() {
        let make = |n: usize| {
            let truth: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
            // 70% right, wrong ones spread over the other classes.
            let pred: Vec<u8> = (0..n)
                .map(|i| {
                    if i % 10 < 7 {
                        (i % 3) as u8
                    } else {
                        ((i + 1) % 3) as u8
                    }
                })
                .collect();
            (truth, pred)
        };
        let (t, p) = make(300);
        let small = intervals(&t, &p, 3, &[Figure::Accuracy], 1000, SEED)[0];
        let (t, p) = make(3000);
        let large = intervals(&t, &p, 3, &[Figure::Accuracy], 1000, SEED)[0];
        for iv in [small, large] {
            assert!(iv.lo <= iv.value && iv.value <= iv.hi, "{iv:?}");
        }
        assert!((large.hi - large.lo) < 0.5 * (small.hi - small.lo));
        // The normal approximation: 1.96 * sqrt(0.7 * 0.3 / 3000) = 1.64 points each side.
        let half = (large.hi - large.lo) / 2.0;
        assert!((half - 0.0164).abs() < 0.004, "{half}");
        // Seeded: the same interval again.
        assert_eq!(
            intervals(&t, &p, 3, &[Figure::Accuracy], 1000, SEED)[0],
            large
        );
    }

    #[test]
    fn a_model_compared_with_itself_differs_by_nothing() {
        let truth: Vec<u8> = (0..500).map(|i| (i % 7) as u8).collect();
        let pred: Vec<u8> = (0..500).map(|i| ((i * 3) % 7) as u8).collect();
        let d = paired(
            &truth,
            &pred,
            &pred,
            7,
            &[Figure::Accuracy, Figure::MacroF1],
            500,
            SEED,
        );
        for x in d {
            assert_eq!(
                (x.difference.value, x.difference.lo, x.difference.hi),
                (0.0, 0.0, 0.0)
            );
            assert_eq!(x.p_bootstrap, 1.0);
        }
    }
}
