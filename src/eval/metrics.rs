//! Classification metrics from predicted probabilities, our own code (linfa
//! 0.8 swaps precision and recall): accuracy, top-2, per-class P/R/F1, macro
//! and weighted F1, the confusion matrix (rows = true class), log loss and
//! expected calibration error.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub n: usize,
    pub accuracy: f64,
    pub top2_accuracy: f64,
    pub macro_f1: f64,
    pub weighted_f1: f64,
    /// Mean negative log-probability of the true class (probabilities
    /// clamped at 1e-12).
    pub log_loss: f64,
    /// Expected calibration error over 15 equal-width confidence bins.
    pub ece: f64,
    pub per_class: Vec<ClassMetrics>,
    /// Counts, `confusion[true][pred]`.
    pub confusion: Vec<Vec<usize>>,
    /// Each row divided by its support (zeros for an absent class).
    pub confusion_normalized: Vec<Vec<f64>>,
}

impl Metrics {
    /// What in these metrics is out of range (fractions outside [0, 1], a
    /// negative or non-finite loss, counts that do not add up), each named
    /// under `at` (e.g. `test.overall.accuracy`); empty when all is well.
    pub fn out_of_range(&self, at: &str) -> Vec<String> {
        let mut bad = Vec::new();
        let mut frac = |name: &str, v: f64| {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                bad.push(format!("{at}.{name} is {v}, expected a fraction in [0, 1]"));
            }
        };
        frac("accuracy", self.accuracy);
        frac("top2_accuracy", self.top2_accuracy);
        frac("macro_f1", self.macro_f1);
        frac("weighted_f1", self.weighted_f1);
        frac("ece", self.ece);
        for (i, c) in self.per_class.iter().enumerate() {
            frac(&format!("per_class[{i}].precision"), c.precision);
            frac(&format!("per_class[{i}].recall"), c.recall);
            frac(&format!("per_class[{i}].f1"), c.f1);
        }
        if !(self.log_loss.is_finite() && self.log_loss >= 0.0) {
            bad.push(format!(
                "{at}.log_loss is {}, expected a finite number >= 0",
                self.log_loss
            ));
        }
        let counted: usize = self.confusion.iter().flatten().sum();
        if counted != self.n {
            bad.push(format!(
                "{at}.n is {}, but its confusion matrix counts {counted} images",
                self.n
            ));
        }
        bad
    }
}

/// Number of bins for ECE, as in Guo et al. 2017.
pub const ECE_BINS: usize = 15;

/// Index of the largest value (the first on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &p) in row.iter().enumerate() {
        if p > row[best] {
            best = i;
        }
    }
    best
}

/// Metrics of `probs` (`n x k`, row-major, rows summing to 1) against labels.
pub fn compute(probs: &[f32], labels: &[u8], k: usize) -> Metrics {
    let n = labels.len();
    assert_eq!(probs.len(), n * k, "probabilities must be n x k");
    let mut confusion = vec![vec![0usize; k]; k];
    let (mut top2, mut log_loss) = (0usize, 0f64);
    let mut bins = vec![(0usize, 0f64, 0f64); ECE_BINS]; // (count, sum conf, sum correct)
    for (row, &y) in probs.chunks_exact(k).zip(labels) {
        let y = y as usize;
        let pred = argmax(row);
        confusion[y][pred] += 1;
        // Top-2: the true class is beaten by at most one other class.
        let beaten = row
            .iter()
            .enumerate()
            .filter(|&(j, &p)| j != y && p > row[y])
            .count();
        if beaten <= 1 {
            top2 += 1;
        }
        log_loss -= (row[y] as f64).max(1e-12).ln();
        let conf = row[pred] as f64;
        let b = ((conf * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        bins[b].0 += 1;
        bins[b].1 += conf;
        bins[b].2 += (pred == y) as u8 as f64;
    }
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let support: usize = confusion[c].iter().sum();
            let predicted: usize = (0..k).map(|r| confusion[r][c]).sum();
            let precision = if predicted > 0 {
                tp / predicted as f64
            } else {
                0.0
            };
            let recall = if support > 0 {
                tp / support as f64
            } else {
                0.0
            };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassMetrics {
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let present: Vec<&ClassMetrics> = per_class.iter().filter(|m| m.support > 0).collect();
    let macro_f1 = if present.is_empty() {
        0.0
    } else {
        present.iter().map(|m| m.f1).sum::<f64>() / present.len() as f64
    };
    let nf = n.max(1) as f64;
    let weighted_f1 = per_class
        .iter()
        .map(|m| m.f1 * m.support as f64)
        .sum::<f64>()
        / nf;
    let ece = bins
        .iter()
        .filter(|b| b.0 > 0)
        .map(|&(c, conf, acc)| (c as f64 / nf) * ((acc - conf) / c as f64).abs())
        .sum();
    let confusion_normalized = confusion
        .iter()
        .map(|row| {
            let s: usize = row.iter().sum();
            row.iter()
                .map(|&v| if s > 0 { v as f64 / s as f64 } else { 0.0 })
                .collect()
        })
        .collect();
    Metrics {
        n,
        accuracy: correct as f64 / nf,
        top2_accuracy: top2 as f64 / nf,
        macro_f1,
        weighted_f1,
        log_loss: log_loss / nf,
        ece,
        per_class,
        confusion,
        confusion_normalized,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn onehot(preds: &[usize], k: usize) -> Vec<f32> {
        preds
            .iter()
            .flat_map(|&p| (0..k).map(move |j| if j == p { 1.0 } else { 0.0 }))
            .collect()
    }

    #[test]
    fn matches_hand_computed_values() {
        // y_true = [0,0,0,1,1,2], y_pred = [0,0,1,1,2,2]. By hand (and
        // sklearn.metrics.classification_report):
        // class 0: P 2/2 = 1, R 2/3, F1 0.8
        // class 1: P 1/2, R 1/2, F1 0.5
        // class 2: P 1/2, R 1/1, F1 2/3
        // macro F1 = (0.8 + 0.5 + 0.6667)/3 = 0.6556; weighted = (3*0.8 + 2*0.5 + 0.6667)/6 = 0.6778
        let labels = [0u8, 0, 0, 1, 1, 2];
        let m = compute(&onehot(&[0, 0, 1, 1, 2, 2], 3), &labels, 3);
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let pc = &m.per_class;
        assert!((pc[0].precision - 1.0).abs() < 1e-12 && (pc[0].recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((pc[0].f1 - 0.8).abs() < 1e-12);
        assert!((pc[1].precision - 0.5).abs() < 1e-12 && (pc[1].recall - 0.5).abs() < 1e-12);
        assert!((pc[2].precision - 0.5).abs() < 1e-12 && (pc[2].recall - 1.0).abs() < 1e-12);
        assert!((m.macro_f1 - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert!((m.weighted_f1 - (3.0 * 0.8 + 2.0 * 0.5 + 2.0 / 3.0) / 6.0).abs() < 1e-12);
        assert_eq!(
            m.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        assert_eq!(m.confusion_normalized[1], vec![0.0, 0.5, 0.5]);
        // One-hot predictions: confidence 1 everywhere, so ECE = 1 - accuracy.
        assert!((m.ece - (1.0 - 4.0 / 6.0)).abs() < 1e-12);
    }

    #[test]
    fn top2_log_loss_and_ece_by_hand() {
        let probs = [
            0.7, 0.2, 0.1, // true 0: top-1 correct
            0.5, 0.3, 0.2, // true 1: second -> top-2 only
            0.6, 0.3, 0.1, // true 2: third -> miss
            0.1, 0.1, 0.8, // true 2: correct
        ];
        let labels = [0u8, 1, 2, 2];
        let m = compute(&probs, &labels, 3);
        assert!((m.accuracy - 0.5).abs() < 1e-12);
        assert!((m.top2_accuracy - 0.75).abs() < 1e-12);
        let ll = -(0.7f64.ln() + 0.3f64.ln() + 0.1f64.ln() + 0.8f64.ln()) / 4.0;
        assert!((m.log_loss - ll).abs() < 1e-6, "{} vs {ll}", m.log_loss);
        // Bins (width 1/15): 0.7 -> bin 10 (correct), 0.5 -> bin 7 (wrong),
        // 0.6 -> bin 9 (wrong), 0.8 -> bin 12 (correct).
        // ECE = 1/4 (|1-0.7| + |0-0.5| + |0-0.6| + |1-0.8|) = 0.4
        assert!((m.ece - 0.4).abs() < 1e-6, "{}", m.ece);
    }

    #[test]
    fn absent_class_gives_zeros_not_nan() {
        let m = compute(&onehot(&[0, 0], 3), &[0, 0], 3);
        assert_eq!(m.per_class[2].support, 0);
        assert_eq!(m.per_class[2].f1, 0.0);
        assert!(
            (m.macro_f1 - 1.0).abs() < 1e-12,
            "absent classes are left out of the macro mean"
        );
        assert!(m.confusion_normalized[2].iter().all(|&v| v == 0.0));
    }
}
