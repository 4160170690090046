//! Evaluation: metrics from our own tested code, prediction with optional
//! ten-crop test-time augmentation, and reports per test half (PublicTest,
//! PrivateTest) plus their union.

pub mod adjust;
pub mod gradcam;
pub mod latency;
pub mod metrics;
pub mod robust;

use crate::artifact::Classifier;
use crate::data::{ImageSet, Origin};
use anyhow::Result;
use metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub split: String,
    pub tta: bool,
    /// All images of the split.
    pub overall: Metrics,
    /// Per origin, when the split holds more than one (test halves).
    pub by_origin: BTreeMap<String, Metrics>,
    pub seconds: f64,
    pub img_per_s: f64,
}

/// Evaluates `clf` on `set`; an error when its outputs are not finite.
pub fn evaluate(clf: &Classifier, set: &ImageSet, split: &str, tta: bool) -> Result<EvalReport> {
    let t = Instant::now();
    let probs = clf.predict_set(set, tta, 256)?;
    Ok(report(&probs, set, split, tta, t.elapsed().as_secs_f64()))
}

/// Metrics of precomputed probabilities (`n x K`) over `set`.
pub fn report(probs: &[f32], set: &ImageSet, split: &str, tta: bool, seconds: f64) -> EvalReport {
    // An empty split (a refit's validation) still has K classes.
    let k = if set.is_empty() {
        crate::data::NUM_CLASSES
    } else {
        probs.len() / set.len()
    };
    let overall = metrics::compute(probs, &set.labels, k);
    let mut by_origin = BTreeMap::new();
    let origins = set.origins_present();
    if origins
        .iter()
        .any(|&o| o == Origin::PublicTest || o == Origin::PrivateTest)
    {
        for o in origins {
            let idx: Vec<usize> = (0..set.len()).filter(|&i| set.origins[i] == o).collect();
            let p: Vec<f32> = idx
                .iter()
                .flat_map(|&i| probs[i * k..(i + 1) * k].iter().copied())
                .collect();
            let l: Vec<u8> = idx.iter().map(|&i| set.labels[i]).collect();
            by_origin.insert(o.name().to_string(), metrics::compute(&p, &l, k));
        }
    }
    EvalReport {
        split: split.to_string(),
        tta,
        overall,
        by_origin,
        seconds,
        img_per_s: set.len() as f64 / seconds.max(1e-9),
    }
}

impl EvalReport {
    /// A short table: overall, then each half.
    pub fn render(&self, classes: &[String]) -> String {
        let mut s = format!(
            "{} ({} images{})\n",
            self.split,
            self.overall.n,
            if self.tta { ", ten-crop TTA" } else { "" }
        );
        let row = |name: &str, m: &Metrics| {
            format!(
                "  {name:<12} acc {:.4}  top2 {:.4}  F1 weighted {:.4}  macro {:.4}  log loss {:.4}  ECE {:.4}\n",
                m.accuracy, m.top2_accuracy, m.weighted_f1, m.macro_f1, m.log_loss, m.ece
            )
        };
        s += &row("all", &self.overall);
        for (o, m) in &self.by_origin {
            s += &row(o, m);
        }
        s += "  per class:   ";
        for (c, m) in classes.iter().zip(&self.overall.per_class) {
            s += &format!("{c} F1 {:.3}  ", m.f1);
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use crate::artifact::tests::{four_images, overflowing_model};
    use crate::artifact::Classifier;

    #[test]
    fn scores_that_are_not_finite_are_not_evaluated() {
        let dir = tempfile::tempdir().unwrap();
        let (f, _, _) = overflowing_model(dir.path());
        let clf = Classifier::load(&f, tch::Device::Cpu).unwrap();
        let err = super::evaluate(&clf, &four_images(), "test", true).unwrap_err();
        assert!(err.to_string().contains("not finite"), "{err}");
    }
}
