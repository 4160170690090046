//! Metric keys: one typed definition used by the trainer's records, the
//! sweep objective and (later) the tracker and the report.

use serde::{Deserialize, Serialize};

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
    pub fn of(self, r: &crate::train::EpochRecord) -> f64 {
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
