//! Metric keys and the epoch record they read: one typed definition used by
//! the trainer, the metrics files, the sweep objective, the tracker and the
//! report. A new per-epoch metric is a field of `EpochRecord` and a
//! `MetricKey` variant; everything else reads it through `MetricKey::of`.

use serde::{Deserialize, Serialize};

/// One epoch's record: the row of `metrics.jsonl` / `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub val_f1_macro: f64,
    pub img_per_s: f64,
    pub epoch_seconds: f64,
    /// Unix time (s) at the end of the epoch.
    pub time: f64,
}

/// The epoch records of a run folder's `metrics.jsonl`, in order. A torn
/// last line (a kill mid-write) and a missing file read as fewer records.
pub fn read_history(rd: &crate::layout::RunDir) -> Vec<EpochRecord> {
    std::fs::read_to_string(rd.metrics_jsonl())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A per-epoch metric that every training run logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetricKey {
    #[serde(rename = "val/acc")]
    ValAcc,
    #[serde(rename = "val/loss")]
    ValLoss,
    #[serde(rename = "val/f1_macro")]
    ValF1Macro,
    #[serde(rename = "train/loss")]
    TrainLoss,
    #[serde(rename = "train/acc")]
    TrainAcc,
}

impl MetricKey {
    pub fn name(self) -> &'static str {
        match self {
            MetricKey::ValAcc => "val/acc",
            MetricKey::ValLoss => "val/loss",
            MetricKey::ValF1Macro => "val/f1_macro",
            MetricKey::TrainLoss => "train/loss",
            MetricKey::TrainAcc => "train/acc",
        }
    }

    /// The value of this metric in an epoch record.
    pub fn of(self, r: &EpochRecord) -> f64 {
        match self {
            MetricKey::ValAcc => r.val_acc,
            MetricKey::ValLoss => r.val_loss,
            MetricKey::ValF1Macro => r.val_f1_macro,
            MetricKey::TrainLoss => r.train_loss,
            MetricKey::TrainAcc => r.train_acc,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Maximize,
    Minimize,
}

impl Direction {
    /// True when `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }

    /// Maps a value so that smaller is better (samplers minimise).
    pub fn loss(self, v: f64) -> f64 {
        match self {
            Direction::Maximize => -v,
            Direction::Minimize => v,
        }
    }
}
