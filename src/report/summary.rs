//! `summary.json` beside a report's README: one row per model with the
//! comparison table's values, for scripts and for checking a report
//! against the model files it describes.

use super::collect::ReportData;
use crate::data::fer2013;
use serde::Serialize;

/// Its name in the report folder.
pub const FILE: &str = "summary.json";

/// One model of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    pub label: String,
    pub family: String,
    /// The run folder and its model file, as the report read them.
    pub run_dir: String,
    pub model_file: String,
    /// Validation accuracy as the run evaluated it (with test-time
    /// augmentation when `tta`; None for a refit without a validation split).
    pub val_acc: Option<f64>,
    /// The validation accuracy the weights were selected with (single
    /// crop, per epoch), which the model file records.
    pub selection_val_acc: Option<f64>,
    /// The run's evaluation averaged over test-time augmentation.
    pub tta: bool,
    pub test_acc: f64,
    /// Accuracy on the PublicTest half, when the test split names its halves.
    pub public_test_acc: Option<f64>,
    pub weighted_f1: f64,
    pub macro_f1: f64,
    /// Test F1 of the two hardest classes.
    pub disgust_f1: f64,
    pub fear_f1: f64,
    pub params: u64,
    pub macs: u64,
    pub epochs: usize,
    pub train_seconds: f64,
    pub train_img_per_s: f64,
    /// Median batch-1 forward pass (fp32), when the report measured it.
    pub latency_ms: Option<f64>,
    /// The same, quantized to int8 in memory, when it could be.
    pub int8_latency_ms: Option<f64>,
    /// Mean retention over the robustness suite's cases, when measured.
    pub robustness_retention: Option<f64>,
    /// The run's own test figures with 95% bootstrap intervals, when its
    /// evaluation recorded them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_intervals: Option<crate::eval::stats::Intervals>,
    /// The report's paired comparison (single crop, the same images for
    /// every model), when it has two models or more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paired: Option<PairedRow>,
}

/// One model in the report's paired comparison.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PairedRow {
    /// Single-crop test figures with their intervals.
    pub single_crop: crate::eval::stats::Intervals,
    /// Against the most accurate (None for the most accurate itself).
    pub versus_best: Option<VersusBest>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VersusBest {
    pub best: String,
    /// This model's accuracy minus the best's, with its paired interval.
    pub accuracy_difference: crate::eval::stats::Interval,
    pub p_mcnemar: f64,
    pub p_holm: f64,
    pub verdict: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub report: String,
    /// The machine the latencies were measured on.
    pub cpu: String,
    pub threads: i32,
    pub data_digest: String,
    pub models: Vec<Row>,
    /// Recipes trained under several seeds, when the report has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<SeedSetRow>,
    /// The fully reported models on their own test split and on other
    /// data sets, when the report was asked for others.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub across: Vec<super::across::AcrossRow>,
}

/// Test F1 of `class`, if the outcome has it.
pub(super) fn class_f1(o: &crate::train::Outcome, class: &str) -> Option<f64> {
    o.test
        .classes
        .iter()
        .position(|c| c == class)
        .and_then(|i| o.test.overall.per_class.get(i))
        .map(|m| m.f1)
}

fn row(d: &ReportData, i: usize) -> Row {
    let r = &d.runs[i];
    let o = &r.out;
    let paired = d.paired.as_ref().map(|p| PairedRow {
        single_crop: p.intervals[i].clone(),
        versus_best: p.versus.iter().find(|v| v.model == i).map(|v| VersusBest {
            best: d.runs[p.best].label.clone(),
            accuracy_difference: v.accuracy,
            p_mcnemar: v.p_mcnemar,
            p_holm: v.p_holm,
            verdict: v.verdict.clone(),
        }),
    });
    Row {
        label: r.label.clone(),
        family: o.family.clone(),
        run_dir: r.dir.0.display().to_string(),
        model_file: r
            .source
            .clone()
            .unwrap_or_else(|| r.dir.model())
            .display()
            .to_string(),
        val_acc: (o.val.overall.n > 0).then_some(o.val.overall.accuracy),
        // A model file records the figure its weights were chosen by.
        selection_val_acc: match &r.source {
            Some(f) => crate::artifact::ModelMeta::read(f)
                .ok()
                .and_then(|m| m.val_accuracy),
            None => crate::train::policy::ship(o.swa.as_ref(), &o.history, o.best_epoch)
                .val_accuracy(o.val.overall.n > 0),
        },
        tta: r.cfg.eval.tta,
        test_acc: o.test.overall.accuracy,
        public_test_acc: o.test.by_origin.get("PublicTest").map(|m| m.accuracy),
        weighted_f1: o.test.overall.weighted_f1,
        macro_f1: o.test.overall.macro_f1,
        disgust_f1: class_f1(o, fer2013::HARD[0]).unwrap_or(f64::NAN),
        fear_f1: class_f1(o, fer2013::HARD[1]).unwrap_or(f64::NAN),
        params: o.params,
        macs: o.macs,
        epochs: o.epochs_run,
        train_seconds: o.train_seconds,
        train_img_per_s: o.train_img_per_s,
        latency_ms: r
            .latency
            .as_ref()
            .filter(|_| !r.int8_file)
            .map(|l| l.batch1_ms_median),
        int8_latency_ms: r.latency.as_ref().and_then(|l| match r.int8_file {
            true => Some(l.batch1_ms_median),
            false => l.int8_batch1_ms_median,
        }),
        robustness_retention: r.mean_retention(),
        test_intervals: o.test.intervals.get("all").cloned(),
        paired,
    }
}

/// The summary of a collected report.
pub fn summary(d: &ReportData) -> Summary {
    Summary {
        report: d.name.clone(),
        cpu: d.cpu.clone(),
        threads: d.threads,
        data_digest: d.digest.clone(),
        models: (0..d.runs.len()).map(|i| row(d, i)).collect(),
        seeds: d
            .seed_sets
            .iter()
            .map(|set| SeedSetRow {
                label: set.label.clone(),
                seeds: set.heads.clone(),
                figures: set
                    .rows
                    .iter()
                    .map(|(k, sp, each)| SeedFigure {
                        figure: k.clone(),
                        spread: *sp,
                        each: each.clone(),
                    })
                    .collect(),
            })
            .collect(),
        across: d.across.clone(),
    }
}

/// A recipe trained under several seeds (the report's "Across seeds").
#[derive(Clone, Debug, Serialize)]
pub struct SeedSetRow {
    pub label: String,
    /// One head per seed (`seed 0`, or a sweep's `trial 7`).
    pub seeds: Vec<String>,
    pub figures: Vec<SeedFigure>,
}

/// One figure across seeds: its spread and each seed's value.
#[derive(Clone, Debug, Serialize)]
pub struct SeedFigure {
    pub figure: String,
    pub spread: crate::eval::stats::Spread,
    pub each: Vec<Option<f64>>,
}
