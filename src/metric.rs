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
    /// Accuracy on the corrupted validation copy (`train.robust_val`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_robust_acc: Option<f64>,
    pub img_per_s: f64,
    pub epoch_seconds: f64,
    /// Unix time (s) at the end of the epoch.
    pub time: f64,
}

/// The epoch records of a run folder's `metrics.jsonl`, in order. A torn
/// last line (a kill mid-write) and a missing file read as fewer records;
/// any other line that is not a record is skipped with a warning naming the
/// file, the line and what is wrong (the history is a display: a report or
/// an upload goes on without that epoch).
pub fn read_history(rd: &crate::layout::RunDir) -> Vec<EpochRecord> {
    let path = rd.metrics_jsonl();
    let text = match std::fs::read(&path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => return Vec::new(),
    };
    parse_history(&path, &text)
        .into_iter()
        .filter_map(|r| r.map_err(|e| tracing::warn!("{e}")).ok())
        .collect()
}

/// Each line of a `metrics.jsonl` as a record or as what is wrong with it
/// (`file:line: ...`); a torn last line is no line.
fn parse_history(path: &std::path::Path, text: &str) -> Vec<Result<EpochRecord, String>> {
    let lines: Vec<&str> = text.lines().collect();
    let torn = !text.is_empty() && !text.ends_with('\n');
    lines
        .iter()
        .enumerate()
        .filter(|&(i, _)| !(torn && i + 1 == lines.len()))
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                format!(
                    "{}:{}: not an epoch record, skipped: {e}",
                    path.display(),
                    i + 1
                )
            })
        })
        .collect()
}

/// A per-epoch metric that every training run logs. Adding one is a field of
/// `EpochRecord`, a variant here and its arms below: the metrics files'
/// columns and the sweep objective read it through `of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetricKey {
    #[serde(rename = "val/acc")]
    ValAcc,
    #[serde(rename = "val/loss")]
    ValLoss,
    #[serde(rename = "val/f1_macro")]
    ValF1Macro,
    /// Only in runs with `train.robust_val`.
    #[serde(rename = "val/robust_acc")]
    ValRobustAcc,
    #[serde(rename = "train/loss")]
    TrainLoss,
    #[serde(rename = "train/acc")]
    TrainAcc,
    /// Logged, but no sweep objective: configs cannot name the next three.
    #[serde(rename = "lr", skip_deserializing)]
    Lr,
    #[serde(rename = "img_per_s", skip_deserializing)]
    ImgPerS,
    #[serde(rename = "epoch_seconds", skip_deserializing)]
    EpochSeconds,
}

impl MetricKey {
    /// Every key, in the order of the columns of `metrics.csv`.
    pub const ALL: [MetricKey; 9] = [
        MetricKey::Lr,
        MetricKey::TrainLoss,
        MetricKey::TrainAcc,
        MetricKey::ValLoss,
        MetricKey::ValAcc,
        MetricKey::ValF1Macro,
        MetricKey::ValRobustAcc,
        MetricKey::ImgPerS,
        MetricKey::EpochSeconds,
    ];

    /// The key's name in configs and trackers (`val/acc`).
    pub fn name(self) -> &'static str {
        match self {
            MetricKey::ValAcc => "val/acc",
            MetricKey::ValLoss => "val/loss",
            MetricKey::ValF1Macro => "val/f1_macro",
            MetricKey::ValRobustAcc => "val/robust_acc",
            MetricKey::TrainLoss => "train/loss",
            MetricKey::TrainAcc => "train/acc",
            MetricKey::Lr => "lr",
            MetricKey::ImgPerS => "img_per_s",
            MetricKey::EpochSeconds => "epoch_seconds",
        }
    }

    /// The key's column in `metrics.csv`, its field in `EpochRecord` (`val_acc`).
    pub fn column(self) -> &'static str {
        match self {
            MetricKey::ValAcc => "val_acc",
            MetricKey::ValLoss => "val_loss",
            MetricKey::ValF1Macro => "val_f1_macro",
            MetricKey::ValRobustAcc => "val_robust_acc",
            MetricKey::TrainLoss => "train_loss",
            MetricKey::TrainAcc => "train_acc",
            MetricKey::Lr => "lr",
            MetricKey::ImgPerS => "img_per_s",
            MetricKey::EpochSeconds => "epoch_seconds",
        }
    }

    /// The value of this metric in an epoch record; NaN where the run does
    /// not measure it (`val/robust_acc` without `train.robust_val`).
    pub fn of(self, r: &EpochRecord) -> f64 {
        self.get(r).unwrap_or(f64::NAN)
    }

    /// The value of this metric in an epoch record, if the run measures it.
    pub fn get(self, r: &EpochRecord) -> Option<f64> {
        Some(match self {
            MetricKey::ValRobustAcc => return r.val_robust_acc,
            MetricKey::ValAcc => r.val_acc,
            MetricKey::ValLoss => r.val_loss,
            MetricKey::ValF1Macro => r.val_f1_macro,
            MetricKey::TrainLoss => r.train_loss,
            MetricKey::TrainAcc => r.train_acc,
            MetricKey::Lr => r.lr,
            MetricKey::ImgPerS => r.img_per_s,
            MetricKey::EpochSeconds => r.epoch_seconds,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    fn record() -> EpochRecord {
        EpochRecord {
            epoch: 3,
            step: 30,
            lr: 0.01,
            train_loss: 1.25,
            train_acc: 0.5,
            val_loss: 1.5,
            val_acc: 0.45,
            val_f1_macro: 0.4,
            val_robust_acc: Some(0.35),
            img_per_s: 900.0,
            epoch_seconds: 12.5,
            time: 1.7e9,
        }
    }

    #[test]
    fn every_key_reads_the_record_field_its_column_names() {
        let r = record();
        let json = serde_json::to_value(&r).unwrap();
        for k in MetricKey::ALL {
            assert_eq!(json[k.column()].as_f64(), Some(k.of(&r)), "{k:?}");
        }
        // Every f64 field but the timestamp is a key.
        let fields = json.as_object().unwrap();
        let metrics = fields.values().filter(|v| v.is_f64()).count() - 1;
        assert_eq!(metrics, MetricKey::ALL.len());
    }

    #[test]
    fn keys_are_named_as_trackers_and_configs_spell_them() {
        for k in MetricKey::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
        let parsed: MetricKey = serde_json::from_str("\"val/f1_macro\"").unwrap();
        assert_eq!(parsed, MetricKey::ValF1Macro);
        let err = serde_json::from_str::<MetricKey>("\"lr\"").unwrap_err();
        assert!(err.to_string().contains("train/acc"), "{err}");
    }

    fn any_record() -> impl Strategy<Value = EpochRecord> {
        // Whole numbers and halves: they survive JSON exactly.
        let v = || (-4000i32..4000).prop_map(|x| x as f64 / 2.0);
        (
            (0usize..100, 0usize..10_000, v(), v()),
            (v(), v(), v(), v()),
            (v(), v(), v()),
        )
            .prop_map(
                |(
                    (epoch, step, lr, train_loss),
                    (train_acc, val_loss, val_acc, val_f1_macro),
                    (img_per_s, epoch_seconds, time),
                )| {
                    EpochRecord {
                        epoch,
                        step,
                        lr,
                        train_loss,
                        train_acc,
                        val_loss,
                        val_acc,
                        val_f1_macro,
                        val_robust_acc: (val_acc > 0.0).then_some(val_acc / 2.0),
                        img_per_s,
                        epoch_seconds,
                        time,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every intact line is read back, in order; every damaged line is
        /// reported with its line number; a torn last line is neither.
        #[test]
        fn intact_lines_are_read_and_damaged_ones_named(
            rows in prop::collection::vec((any_record(), prop::option::of("[^\n]{0,20}")), 1..20),
            torn in any::<bool>(),
        ) {
            let mut text = String::new();
            let (mut want, mut bad) = (Vec::new(), Vec::new());
            for (i, (r, garbage)) in rows.iter().enumerate() {
                let line = serde_json::to_string(r).unwrap();
                match garbage {
                    // Half a record and some noise: never a record.
                    Some(g) => {
                        text += &format!("{}{g}\n", &line[..line.len() / 2]);
                        bad.push(i + 1);
                    }
                    None => {
                        text += &format!("{line}\n");
                        want.push(r.clone());
                    }
                }
            }
            if torn {
                text += "{\"epoch\": 9, \"st";
            }
            let parsed = parse_history(Path::new("m.jsonl"), &text);
            let got: Vec<EpochRecord> = parsed.iter().filter_map(|r| r.clone().ok()).collect();
            prop_assert_eq!(got, want);
            let named: Vec<String> = parsed.into_iter().filter_map(|r| r.err()).collect();
            prop_assert_eq!(named.len(), bad.len());
            for (msg, line) in named.iter().zip(&bad) {
                let at = format!("m.jsonl:{line}: not an epoch record");
                prop_assert!(msg.starts_with(&at), "{}", msg);
            }
        }

        #[test]
        fn any_text_is_records_or_named_lines(text in "\\PC{0,200}") {
            for r in parse_history(Path::new("m.jsonl"), &text) {
                if let Err(msg) = r {
                    prop_assert!(msg.starts_with("m.jsonl:"), "{}", msg);
                }
            }
        }
    }
}
