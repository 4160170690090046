//! Evaluation: metrics from our own tested code, prediction with optional
//! ten-crop test-time augmentation, and reports per test half (PublicTest,
//! PrivateTest) plus their union.

pub mod adjust;
pub mod compare;
pub mod gradcam;
pub mod latency;
pub mod metrics;
pub mod robust;
pub mod stats;

use crate::artifact::Classifier;
use crate::data::ImageSet;
use anyhow::Result;
use metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalReport {
    pub split: String,
    /// The class names of `overall.per_class` and the confusion matrices, in
    /// label order (FER-2013's in files written before it was recorded).
    #[serde(default = "crate::data::fer2013::classes")]
    pub classes: Vec<String>,
    pub tta: bool,
    /// All images of the split.
    pub overall: Metrics,
    /// Per origin, when the split holds more than one (test halves).
    pub by_origin: BTreeMap<String, Metrics>,
    /// 95% bootstrap intervals of the headline figures: `all`, then each
    /// origin of `by_origin`. Set by [`EvalReport::with_intervals`] for the
    /// evaluations a user reads (not per epoch); absent from files written
    /// before they existed.
    #[serde(default)]
    pub intervals: BTreeMap<String, stats::Intervals>,
    pub seconds: f64,
    pub img_per_s: f64,
    /// The data set evaluated on, as `fer eval` records it (across data
    /// sets, with the class map's doings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataRecord>,
}

/// Which data set an evaluation read, and how its classes were mapped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    pub dir: String,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_map: Option<crate::data::classmap::Mapped>,
}

/// Evaluates `clf` on `set`; an error when its outputs are not finite.
pub fn evaluate(clf: &Classifier, set: &ImageSet, split: &str, tta: bool) -> Result<EvalReport> {
    Ok(evaluate_keeping(clf, set, split, tta)?.0)
}

/// As [`evaluate`], also returning the probabilities (`n x K`, row per
/// image of `set`) for per-image output and paired comparisons.
pub fn evaluate_keeping(
    clf: &Classifier,
    set: &ImageSet,
    split: &str,
    tta: bool,
) -> Result<(EvalReport, Vec<f32>)> {
    let t = Instant::now();
    let probs = clf.predict_set(set, tta, 256)?;
    let r = report(
        &probs,
        set,
        &clf.meta.classes,
        split,
        tta,
        t.elapsed().as_secs_f64(),
    );
    Ok((r.with_intervals(&probs, set), probs))
}

/// The predicted class of each row of `probs` (`n x k`).
pub fn predicted(probs: &[f32], k: usize) -> Vec<u8> {
    probs.chunks(k).map(|r| metrics::argmax(r) as u8).collect()
}

/// Metrics of precomputed probabilities (`n x K`, K = `classes.len()`) over `set`.
pub fn report(
    probs: &[f32],
    set: &ImageSet,
    classes: &[String],
    split: &str,
    tta: bool,
    seconds: f64,
) -> EvalReport {
    let k = classes.len();
    let overall = metrics::compute(probs, &set.labels, k);
    let mut by_origin = BTreeMap::new();
    if set.has_groups() {
        for o in set.origins_present() {
            let idx: Vec<usize> = (0..set.len()).filter(|&i| set.origins[i] == o).collect();
            let p: Vec<f32> = idx
                .iter()
                .flat_map(|&i| probs[i * k..(i + 1) * k].iter().copied())
                .collect();
            let l: Vec<u8> = idx.iter().map(|&i| set.labels[i]).collect();
            by_origin.insert(set.origin_name(o), metrics::compute(&p, &l, k));
        }
    }
    EvalReport {
        split: split.to_string(),
        classes: classes.to_vec(),
        tta,
        overall,
        by_origin,
        intervals: BTreeMap::new(),
        seconds,
        img_per_s: set.len() as f64 / seconds.max(1e-9),
        data: None,
    }
}

/// Per-image predictions as CSV: `image` (the file, or `file.csv:LINE`),
/// `origin` (the test half, or Training for validation images), `true`,
/// `predicted`, `correct`, then one probability column per class (`p_<class>`),
/// in the order of `set`. Written whole or not at all.
pub fn write_predictions(
    path: &std::path::Path,
    set: &ImageSet,
    probs: &[f32],
    classes: &[String],
) -> Result<()> {
    let k = classes.len();
    anyhow::ensure!(
        probs.len() == set.len() * k,
        "{} probabilities for {} images of {k} classes",
        probs.len(),
        set.len()
    );
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["image".to_string(), "origin".into(), "true".into()];
    header.extend(["predicted".into(), "correct".into()]);
    header.extend(classes.iter().map(|c| format!("p_{c}")));
    w.write_record(&header)?;
    for i in 0..set.len() {
        let row = &probs[i * k..(i + 1) * k];
        let p = metrics::argmax(row);
        let t = set.labels[i] as usize;
        let mut rec = vec![
            set.sources.get(i).cloned().unwrap_or_default(),
            set.origin_name(set.origins[i]),
            classes[t].clone(),
            classes[p].clone(),
            u8::from(p == t).to_string(),
        ];
        rec.extend(row.iter().map(|v| format!("{v:.6}")));
        w.write_record(&rec)?;
    }
    let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::layout::write_atomic(path, &bytes)
}

impl EvalReport {
    /// This report with the bootstrap intervals of `probs` (as passed to
    /// [`report`]): over all of `set`, and over each origin the report
    /// breaks out. Resampling costs tens of milliseconds, so only the
    /// evaluations a user reads carry them, not every epoch's validation.
    pub fn with_intervals(mut self, probs: &[f32], set: &ImageSet) -> EvalReport {
        if set.is_empty() {
            return self;
        }
        let k = probs.len() / set.len();
        let pred = predicted(probs, k);
        self.intervals
            .insert("all".to_string(), stats::headline(&set.labels, &pred, k));
        for o in self.by_origin.keys() {
            let idx: Vec<usize> = (0..set.len())
                .filter(|&i| set.origin_name(set.origins[i]) == *o)
                .collect();
            let l: Vec<u8> = idx.iter().map(|&i| set.labels[i]).collect();
            let p: Vec<u8> = idx.iter().map(|&i| pred[i]).collect();
            self.intervals.insert(o.clone(), stats::headline(&l, &p, k));
        }
        self
    }

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
        if !self.intervals.is_empty() {
            let r = self.intervals.values().next().map_or(0, |i| i.resamples);
            s += &format!("  95% intervals (class-stratified bootstrap, {r} resamples):\n");
            let order = std::iter::once("all").chain(self.by_origin.keys().map(|k| k.as_str()));
            for o in order {
                if let Some(i) = self.intervals.get(o) {
                    s += &format!(
                        "  {o:<12} acc {}  F1 weighted {}  macro {}\n",
                        i.accuracy.percent(),
                        i.weighted_f1.plain(),
                        i.macro_f1.plain()
                    );
                }
            }
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
