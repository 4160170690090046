//! What the training loop tells the world, and who listens. The loop emits
//! `TrainEvent`s; the progress bar, the epoch's log lines, the metrics files
//! and a tracker are `Listener`s here (a sweep adds its journal). Stopping a
//! run from outside (a sweep's pruner) is a `Control`, asked after each
//! epoch; no listener decides anything.

use super::policy::EpochDecision;
use crate::config::train::TrainConfig;
use crate::layout::{write_atomic, RunDir};
use crate::metric::{EpochRecord, MetricKey};
use crate::track::Tracker;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;

/// One moment of a run, in the order the loop emits them.
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// Epoch `epoch` (1-based) of `epochs` starts its `steps` batches.
    EpochStarted {
        epoch: usize,
        epochs: usize,
        steps: usize,
    },
    /// One optimiser step: the epoch's running loss, accuracy and rate.
    Step { loss: f64, acc: f64, img_per_s: f64 },
    /// The loss went non-finite: the run fails next.
    Diverged,
    /// The epoch's batches are done; validation follows.
    Trained,
    /// The epoch is validated and decided, before its checkpoint.
    Validated {
        record: &'a EpochRecord,
        decision: &'a EpochDecision,
    },
    /// The epoch is checkpointed: `history` is every epoch so far, `record`
    /// its last.
    EpochEnd {
        record: &'a EpochRecord,
        history: &'a [EpochRecord],
    },
}

/// Told every event of a run; an error ends the run with it.
pub trait Listener {
    fn on(&mut self, ev: &TrainEvent) -> Result<()>;
}

/// Asked after each checkpointed epoch, once the listeners have it: true
/// stops the run there, as pruned (its best weights still ship).
pub trait Control {
    fn should_stop(&mut self, r: &EpochRecord) -> bool;
}

/// Tells each listener in turn; the first error stops the run.
pub(super) fn emit(listeners: &mut [&mut dyn Listener], ev: &TrainEvent) -> Result<()> {
    listeners.iter_mut().try_for_each(|l| l.on(ev))
}

/// The trainer's own listeners (progress bar, epoch log, metrics files),
/// which hear each event before any other: the same for every way a run
/// trains (the epoch loop, the classical fit).
pub struct Own<'a> {
    progress: Progress,
    log: Log<'a>,
    files: MetricsFiles<'a>,
}

impl<'a> Own<'a> {
    pub fn new(train: &'a TrainConfig, rd: &'a RunDir, has_val: bool) -> Own<'a> {
        Own {
            progress: Progress::default(),
            log: Log { train, has_val },
            files: MetricsFiles(rd),
        }
    }

    /// These, then `extra`, in the order they hear each event.
    pub fn with<'s>(&'s mut self, extra: &'s mut [&mut dyn Listener]) -> Vec<&'s mut dyn Listener> {
        let mut all: Vec<&mut dyn Listener> =
            vec![&mut self.progress, &mut self.log, &mut self.files];
        all.extend(extra.iter_mut().map(|l| &mut **l as &mut dyn Listener));
        all
    }
}

/// The epoch's progress bar on stderr.
#[derive(Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Listener for Progress {
    fn on(&mut self, ev: &TrainEvent) -> Result<()> {
        match *ev {
            TrainEvent::EpochStarted {
                epoch,
                epochs,
                steps,
            } => {
                let bar = ProgressBar::new(steps as u64).with_style(
                    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_prefix(format!("epoch {epoch}/{epochs}"));
                self.bar = Some(bar);
            }
            TrainEvent::Step {
                loss,
                acc,
                img_per_s,
            } => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                    bar.set_message(format!("loss {loss:.4} acc {acc:.3} {img_per_s:.0} img/s"));
                }
            }
            TrainEvent::Diverged => {
                if let Some(bar) = self.bar.take() {
                    bar.abandon();
                }
            }
            TrainEvent::Trained => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
            TrainEvent::Validated { .. } | TrainEvent::EpochEnd { .. } => {}
        }
        Ok(())
    }
}

/// The epoch's lines on stderr: its record, then what reduce-on-plateau and
/// early stopping decided.
pub struct Log<'a> {
    pub train: &'a TrainConfig,
    /// A refit has no validation split to report.
    pub has_val: bool,
}

impl Listener for Log<'_> {
    fn on(&mut self, ev: &TrainEvent) -> Result<()> {
        let TrainEvent::Validated {
            record: r,
            decision,
        } = ev
        else {
            return Ok(());
        };
        let val_part = if self.has_val {
            format!(
                "val loss {:.4} acc {:.4} F1 macro {:.4}",
                r.val_loss, r.val_acc, r.val_f1_macro
            )
        } else {
            "no validation split".to_string()
        };
        eprintln!(
            "epoch {:>2}/{}: train loss {:.4} acc {:.4} | {val_part} | {:.0} img/s, {:.0} s",
            r.epoch,
            self.train.total_epochs(),
            r.train_loss,
            r.train_acc,
            r.img_per_s,
            r.epoch_seconds
        );
        if let Some(lr) = decision.lr_cut {
            eprintln!("reduce-on-plateau: lr now {lr:.3e}");
        }
        if let Some(es) = self
            .train
            .early_stopping
            .as_ref()
            .filter(|_| decision.stop_early)
        {
            eprintln!(
                "early stopping: val loss has not improved by {} for {} epochs",
                es.min_delta, es.patience
            );
        }
        Ok(())
    }
}

/// `metrics.jsonl` and `metrics.csv`, rewritten whole after each epoch.
pub struct MetricsFiles<'a>(pub &'a RunDir);

impl Listener for MetricsFiles<'_> {
    fn on(&mut self, ev: &TrainEvent) -> Result<()> {
        if let TrainEvent::EpochEnd { history, .. } = ev {
            write_metrics(self.0, history)?;
        }
        Ok(())
    }
}

fn write_metrics(dir: &RunDir, history: &[EpochRecord]) -> Result<()> {
    let mut jsonl = String::new();
    // `val_robust_acc` is a column only in runs that measure it.
    let keys: Vec<MetricKey> = MetricKey::ALL
        .into_iter()
        .filter(|&k| k != MetricKey::ValRobustAcc || history.iter().any(|r| k.get(r).is_some()))
        .collect();
    let columns: Vec<&str> = keys.iter().map(|k| k.column()).collect();
    let mut csv = format!("epoch,step,{},time\n", columns.join(","));
    for r in history {
        jsonl += &serde_json::to_string(r)?;
        jsonl.push('\n');
        csv += &format!("{},{}", r.epoch, r.step);
        for &k in &keys {
            csv += &format!(",{}", k.get(r).map_or(String::new(), |v| v.to_string()));
        }
        csv += &format!(",{}\n", r.time);
    }
    write_atomic(&dir.metrics_jsonl(), jsonl.as_bytes())?;
    write_atomic(&dir.metrics_csv(), csv.as_bytes())
}

/// Tells a tracker that `dir` changed after each epoch.
pub struct Track<'a> {
    pub tracker: &'a dyn Tracker,
    /// The folder the tracker follows (a sweep tracks the sweep's folder).
    pub dir: &'a Path,
}

impl Listener for Track<'_> {
    fn on(&mut self, ev: &TrainEvent) -> Result<()> {
        if let TrainEvent::EpochEnd { .. } = ev {
            self.tracker.changed(self.dir);
        }
        Ok(())
    }
}
