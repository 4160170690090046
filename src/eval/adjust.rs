//! Post-hoc logit adjustment (Menon et al. 2021, "Long-tail learning via
//! logit adjustment"): predictions become `argmax_c ln p_c + alpha ln prior_c`,
//! with `prior` the training-split class frequencies and `alpha` picked on
//! validation. A network trained with class weights `(1/n_c)^power` leans
//! towards rare classes; `alpha = power` undoes that lean exactly, a smaller
//! alpha keeps part of it. Only the decision changes, never the weights, so
//! the adjustment is stored in the model file's metadata and every consumer of
//! [`crate::artifact::Classifier`] (eval, report, robustness, serve) sees it.

use super::metrics::{self, Metrics};
pub use crate::artifact::LogitAdjust;
use crate::config::train::Select;
pub use crate::config::AdjustConfig;
use serde::{Deserialize, Serialize};

/// One grid point's validation score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridPoint {
    pub alpha: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub log_loss: f64,
}

/// What the fit found, for `eval.json`, MLflow and the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdjustRecord {
    pub select: Select,
    pub tta: bool,
    pub alpha: f64,
    /// Validation metrics without adjustment and at the chosen alpha.
    pub before: GridPoint,
    pub after: GridPoint,
    /// The honest estimate: validation split into two stratified halves, alpha
    /// picked on each half scores the other; correct answers summed over both
    /// halves, against the unadjusted model's on the same images.
    pub crossfit_correct: usize,
    pub unadjusted_correct: usize,
    pub crossfit_alphas: [f64; 2],
    pub n: usize,
    pub grid: Vec<GridPoint>,
}

fn score(m: &Metrics, select: Select) -> f64 {
    match select {
        Select::ValAcc => m.accuracy,
        Select::ValLoss => -m.log_loss,
        Select::ValF1Macro => m.macro_f1,
        Select::Last => unreachable!("AdjustConfig::validate refuses select: last"),
    }
}

fn point(alpha: f64, m: &Metrics) -> GridPoint {
    GridPoint {
        alpha,
        accuracy: m.accuracy,
        macro_f1: m.macro_f1,
        log_loss: m.log_loss,
    }
}

/// Metrics of `probs` adjusted by `alpha`.
pub fn adjusted_metrics(probs: &[f32], labels: &[u8], prior: &[f32], alpha: f64) -> Metrics {
    let mut p = probs.to_vec();
    LogitAdjust::new(alpha, prior).apply(&mut p);
    metrics::compute(&p, labels, prior.len())
}

/// The best alpha of the grid on `select`; ties go to the alpha nearest 0
/// (the unadjusted model), then to the smaller.
fn best(grid: &[f64], metrics: &[Metrics], select: Select) -> usize {
    let mut order: Vec<usize> = (0..grid.len()).collect();
    order.sort_by(|&a, &b| {
        grid[a]
            .abs()
            .total_cmp(&grid[b].abs())
            .then(grid[a].total_cmp(&grid[b]))
    });
    let mut top = order[0];
    for &i in &order[1..] {
        if score(&metrics[i], select) > score(&metrics[top], select) {
            top = i;
        }
    }
    top
}

fn rows(probs: &[f32], k: usize, idx: &[usize]) -> Vec<f32> {
    idx.iter()
        .flat_map(|&i| probs[i * k..(i + 1) * k].iter().copied())
        .collect()
}

/// Two stratified halves of `labels`: within each class, alternate images.
pub fn halves(labels: &[u8]) -> [Vec<usize>; 2] {
    let mut seen = [0usize; 256];
    let mut out = [Vec::new(), Vec::new()];
    for (i, &l) in labels.iter().enumerate() {
        out[seen[l as usize] % 2].push(i);
        seen[l as usize] += 1;
    }
    out
}

/// Fits alpha on validation probabilities (`n x k`, unadjusted).
pub fn fit(
    probs: &[f32],
    labels: &[u8],
    prior: &[f32],
    cfg: &AdjustConfig,
    tta: bool,
) -> AdjustRecord {
    let k = prior.len();
    let grid = cfg.grid();
    let correct = |m: &Metrics| (m.accuracy * m.n as f64).round() as usize;
    let all: Vec<Metrics> = grid
        .iter()
        .map(|&a| adjusted_metrics(probs, labels, prior, a))
        .collect();
    let chosen = best(&grid, &all, cfg.select);
    let parts = halves(labels);
    let (mut crossfit_correct, mut unadjusted_correct) = (0, 0);
    let mut crossfit_alphas = [0.0; 2];
    for h in 0..2 {
        let (fit_idx, score_idx) = (&parts[h], &parts[1 - h]);
        let fp = rows(probs, k, fit_idx);
        let fl: Vec<u8> = fit_idx.iter().map(|&i| labels[i]).collect();
        let on_fit: Vec<Metrics> = grid
            .iter()
            .map(|&a| adjusted_metrics(&fp, &fl, prior, a))
            .collect();
        let a = grid[best(&grid, &on_fit, cfg.select)];
        crossfit_alphas[h] = a;
        let sp = rows(probs, k, score_idx);
        let sl: Vec<u8> = score_idx.iter().map(|&i| labels[i]).collect();
        crossfit_correct += correct(&adjusted_metrics(&sp, &sl, prior, a));
        unadjusted_correct += correct(&metrics::compute(&sp, &sl, k));
    }
    let before = metrics::compute(probs, labels, k);
    AdjustRecord {
        select: cfg.select,
        tta,
        alpha: grid[chosen],
        before: point(0.0, &before),
        after: point(grid[chosen], &all[chosen]),
        crossfit_correct,
        unadjusted_correct,
        crossfit_alphas,
        n: labels.len(),
        grid: grid.iter().zip(&all).map(|(&a, m)| point(a, m)).collect(),
    }
}

impl AdjustRecord {
    /// A few lines for the terminal and the report.
    pub fn summary(&self) -> String {
        let pct = |x: f64| format!("{:.2}%", 100.0 * x);
        format!(
            "logit adjustment alpha {:+.2} chosen on validation ({}{}): accuracy {} -> {}, macro F1 {:.3} -> {:.3}, log loss {:.3} -> {:.3}\n\
             cross-fitted (alpha from one half of validation, scored on the other; alphas {:+.2} and {:+.2}): {} of {} correct, unadjusted {}",
            self.alpha,
            select_name(self.select),
            if self.tta { ", ten-crop TTA" } else { "" },
            pct(self.before.accuracy),
            pct(self.after.accuracy),
            self.before.macro_f1,
            self.after.macro_f1,
            self.before.log_loss,
            self.after.log_loss,
            self.crossfit_alphas[0],
            self.crossfit_alphas[1],
            self.crossfit_correct,
            self.n,
            self.unadjusted_correct,
        )
    }
}

pub fn select_name(s: Select) -> &'static str {
    match s {
        Select::ValAcc => "val_acc",
        Select::ValLoss => "val_loss",
        Select::ValF1Macro => "val_f1_macro",
        Select::Last => "last",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_equal_to_the_class_weight_power_undoes_the_weighting() {
        // Posterior p, and the weighted-loss optimum q_c ∝ w_c p_c with
        // w_c = prior_c^-0.5: adjusting q by alpha 0.5 must give p back.
        let prior = [0.6f32, 0.3, 0.1];
        let p = [0.5f32, 0.3, 0.2];
        let mut q: Vec<f32> = p
            .iter()
            .zip(&prior)
            .map(|(&x, &pr)| x * pr.powf(-0.5))
            .collect();
        let s: f32 = q.iter().sum();
        q.iter_mut().for_each(|x| *x /= s);
        assert!(
            q[2] > p[2] + 0.05,
            "the weighting must favour the rare class"
        );
        LogitAdjust::new(0.5, &prior).apply(&mut q);
        for (a, b) in q.iter().zip(&p) {
            assert!((a - b).abs() < 1e-6, "{q:?} vs {p:?}");
        }
        let mut same = p.to_vec();
        LogitAdjust::new(0.0, &prior).apply(&mut same);
        assert_eq!(same, p.to_vec());
    }

    #[test]
    fn fit_finds_the_prior_shift_and_crossfits_on_held_out_halves() {
        // Every image is class 0 or 1 with prior 0.8 / 0.2, and the scores
        // lean towards class 1: 0.45 on class 0 for class-0 images, 0.55 on
        // class 1 for class-1 images. Unadjusted, every class-0 image is
        // wrong; any alpha in (0.145, 1) gets all of them right.
        let prior = [0.8f32, 0.2];
        let mut probs = Vec::new();
        let mut labels = Vec::new();
        for i in 0..100 {
            let y = u8::from(i % 5 == 0);
            labels.push(y);
            probs.extend_from_slice(if y == 0 { &[0.45, 0.55] } else { &[0.2, 0.8] });
        }
        let r = fit(&probs, &labels, &prior, &AdjustConfig::default(), false);
        assert_eq!(r.before.accuracy, 0.2);
        assert_eq!(r.after.accuracy, 1.0);
        assert_eq!(r.alpha, 0.15);
        // Ties go to the smallest alpha that reaches the maximum.
        let first_perfect = r.grid.iter().find(|g| g.accuracy == 1.0).unwrap().alpha;
        assert_eq!(r.alpha, first_perfect);
        assert_eq!((r.crossfit_correct, r.unadjusted_correct), (100, 20));
        let [a, b] = halves(&labels);
        assert_eq!((a.len(), b.len()), (50, 50));
        assert_eq!(a.iter().filter(|&&i| labels[i] == 1).count(), 10);
    }

    #[test]
    fn the_grid_is_exact_and_bad_grids_are_refused() {
        let g = AdjustConfig::default().grid();
        assert_eq!(g.len(), 31);
        assert_eq!((g[0], g[10], g[30]), (-0.5, 0.0, 1.0));
        let bad = AdjustConfig {
            step: 0.0,
            ..AdjustConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("step"));
        let bad = AdjustConfig {
            min: 1.0,
            max: 0.0,
            ..AdjustConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("min"));
    }
}
