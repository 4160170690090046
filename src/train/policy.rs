//! The trainer's decisions as pure functions of its records: the rate of
//! the weight-averaging epochs, what an epoch's end decides (a plateau cut,
//! early stopping, a new best on `train.select`), whether the weight average
//! beats the best epoch, and which weights the model file ships. No IO and
//! no tensors: the loop acts on the answers and prints nothing here.

use super::schedule::{EarlyStop, Plateau};
use super::SwaRecord;
use crate::config::train::{Select, TrainConfig};
use crate::metric::{Direction, EpochRecord, MetricKey};

/// The constant rate of epoch `epoch` (0-based) when it is past the main
/// schedule, in `train.swa`'s weight averaging; `None` on the main schedule.
pub fn swa_lr(tc: &TrainConfig, epoch: usize) -> Option<f64> {
    tc.swa.as_ref().filter(|_| epoch >= tc.epochs).map(|s| s.lr)
}

/// The metric `train.select` ranks by and which way is better; `None` for
/// `last`, which ranks nothing.
pub fn select_key(sel: Select) -> Option<(MetricKey, Direction)> {
    match sel {
        Select::ValAcc => Some((MetricKey::ValAcc, Direction::Maximize)),
        Select::ValLoss => Some((MetricKey::ValLoss, Direction::Minimize)),
        Select::ValF1Macro => Some((MetricKey::ValF1Macro, Direction::Maximize)),
        Select::Last => None,
    }
}

/// What `sel` ranks weights by, larger better (a loss is negated), from
/// `metric`'s value of its key; 0 under `last`. Checkpoints store it as
/// `best_value`.
pub fn score(sel: Select, metric: impl FnOnce(MetricKey) -> f64) -> f64 {
    match select_key(sel) {
        Some((k, Direction::Maximize)) => metric(k),
        Some((k, Direction::Minimize)) => -metric(k),
        None => 0.0,
    }
}

/// Whether `score` beats the best so far: strictly, or always under `last`
/// (the latest weights win).
pub fn improves(sel: Select, score: f64, best: Option<f64>) -> bool {
    sel == Select::Last || best.is_none_or(|b| score > b)
}

/// What the end of an epoch decided.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochDecision {
    /// Reduce-on-plateau cut the rate to this.
    pub lr_cut: Option<f64>,
    /// Early stopping: this epoch is the last.
    pub stop_early: bool,
    /// The epoch's score when it is the best so far (its weights are kept).
    pub new_best: Option<f64>,
}

/// Feeds an epoch's record to reduce-on-plateau and early stopping, and
/// ranks it against `best`. While `averaging` (weight-averaging epochs) the
/// rate is fixed: its jump from the main schedule's end must read neither as
/// a plateau nor as a reason to stop.
pub fn end_of_epoch(
    tc: &TrainConfig,
    plateau: &mut Plateau,
    early: &mut EarlyStop,
    best: Option<f64>,
    rec: &EpochRecord,
    averaging: bool,
) -> EpochDecision {
    let lr_cut = (!averaging && plateau.observe(&tc.schedule, rec.val_loss)).then_some(plateau.lr);
    let stop_early = !averaging
        && tc
            .early_stopping
            .as_ref()
            .is_some_and(|es| early.observe(rec.val_loss, es.patience, es.min_delta));
    let s = score(tc.select, |k| k.of(rec));
    EpochDecision {
        lr_cut,
        stop_early,
        new_best: improves(tc.select, s, best).then_some(s),
    }
}

/// Whether the weight average beats the best single epoch (`best`, its
/// score) on `sel`; under `last` it always does, being the last weights.
pub fn swa_chosen(sel: Select, swa: &SwaRecord, best: Option<f64>) -> bool {
    improves(sel, score(sel, |k| swa.metric(k)), best)
}

/// The weights a model file ships.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ship<'a> {
    /// The weight average, which beat every single epoch.
    Average(&'a SwaRecord),
    /// The best epoch's checkpoint, with its record when the history has it.
    BestEpoch(Option<&'a EpochRecord>),
}

/// The average when it was evaluated and chosen, else the best epoch.
pub fn ship<'a>(
    swa: Option<&'a SwaRecord>,
    history: &'a [EpochRecord],
    best_epoch: Option<usize>,
) -> Ship<'a> {
    match swa {
        Some(s) if s.chosen => Ship::Average(s),
        _ => Ship::BestEpoch(history.iter().find(|r| Some(r.epoch) == best_epoch)),
    }
}

impl Ship<'_> {
    /// The validation accuracy the model file claims. An epoch of a refit
    /// (`has_val` false: no validation split) claims none.
    pub fn val_accuracy(self, has_val: bool) -> Option<f64> {
        match self {
            Ship::Average(s) => Some(s.val_acc),
            Ship::BestEpoch(r) => r.map(|r| r.val_acc).filter(|_| has_val),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::train::{EarlyStopping, ScheduleConfig, SwaConfig};

    fn rec(epoch: usize, val_loss: f64, val_acc: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            step: epoch * 10,
            lr: 0.1,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss,
            val_acc,
            val_f1_macro: val_acc / 2.0,
            val_robust_acc: None,
            img_per_s: 100.0,
            epoch_seconds: 1.0,
            time: 0.0,
        }
    }

    fn swa(val_loss: f64, val_acc: f64, chosen: bool) -> SwaRecord {
        SwaRecord {
            snapshots: 3,
            bn_batches: 5,
            val_loss,
            val_acc,
            val_f1_macro: val_acc / 2.0,
            chosen,
        }
    }

    #[test]
    fn swa_rate_applies_only_past_the_main_schedule() {
        let mut tc = TrainConfig {
            epochs: 3,
            ..TrainConfig::default()
        };
        assert_eq!(swa_lr(&tc, 5), None, "no averaging configured");
        tc.swa = Some(SwaConfig {
            epochs: 2,
            lr: 0.01,
        });
        assert_eq!(swa_lr(&tc, 2), None);
        assert_eq!(swa_lr(&tc, 3), Some(0.01));
        assert_eq!(swa_lr(&tc, 4), Some(0.01));
    }

    #[test]
    fn scores_are_larger_better_and_a_loss_is_negated() {
        let r = rec(1, 0.8, 0.6);
        assert_eq!(score(Select::ValAcc, |k| k.of(&r)), 0.6);
        assert_eq!(score(Select::ValLoss, |k| k.of(&r)), -0.8);
        assert_eq!(score(Select::ValF1Macro, |k| k.of(&r)), 0.3);
        assert_eq!(score(Select::Last, |_| panic!("last reads no metric")), 0.0);
    }

    #[test]
    fn improvement_is_strict_except_under_last() {
        assert!(improves(Select::ValAcc, 0.5, None));
        assert!(improves(Select::ValAcc, 0.6, Some(0.5)));
        assert!(
            !improves(Select::ValAcc, 0.5, Some(0.5)),
            "a tie keeps the earlier"
        );
        assert!(!improves(Select::ValLoss, -0.9, Some(-0.8)));
        assert!(improves(Select::Last, 0.0, Some(0.0)));
        assert!(!improves(Select::ValAcc, f64::NAN, Some(0.1)));
    }

    /// Reduce-on-plateau and early stopping that act on the first bad epoch.
    fn impatient(select: Select) -> TrainConfig {
        TrainConfig {
            schedule: ScheduleConfig::Plateau {
                factor: 0.5,
                patience: 0,
                threshold: 0.0,
                min_lr: 0.0,
            },
            early_stopping: Some(EarlyStopping {
                patience: 1,
                min_delta: 0.0,
            }),
            select,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn an_epoch_end_cuts_stops_and_ranks() {
        let tc = impatient(Select::ValLoss);
        let (mut p, mut e) = (Plateau::new(0.1), EarlyStop::default());
        let d = end_of_epoch(&tc, &mut p, &mut e, None, &rec(1, 1.0, 0.5), false);
        assert_eq!(
            d,
            EpochDecision {
                lr_cut: None,
                stop_early: false,
                new_best: Some(-1.0)
            }
        );
        let d = end_of_epoch(&tc, &mut p, &mut e, Some(-1.0), &rec(2, 1.0, 0.5), false);
        assert_eq!(
            d,
            EpochDecision {
                lr_cut: Some(0.05),
                stop_early: true,
                new_best: None
            }
        );
    }

    #[test]
    fn averaging_epochs_neither_cut_nor_stop_but_still_rank() {
        let tc = impatient(Select::ValAcc);
        let (mut p, mut e) = (Plateau::new(0.1), EarlyStop::default());
        end_of_epoch(&tc, &mut p, &mut e, None, &rec(1, 1.0, 0.5), false);
        let (p0, e0) = (p.clone(), e.clone());
        let d = end_of_epoch(&tc, &mut p, &mut e, Some(0.5), &rec(2, 2.0, 0.7), true);
        assert_eq!(
            d,
            EpochDecision {
                lr_cut: None,
                stop_early: false,
                new_best: Some(0.7)
            }
        );
        assert_eq!((p, e), (p0, e0), "the state machines saw nothing");
    }

    #[test]
    fn the_average_is_chosen_only_when_it_beats_the_best_epoch() {
        assert!(swa_chosen(Select::ValAcc, &swa(1.0, 0.7, false), Some(0.6)));
        assert!(!swa_chosen(
            Select::ValAcc,
            &swa(1.0, 0.6, false),
            Some(0.6)
        ));
        assert!(swa_chosen(
            Select::ValLoss,
            &swa(0.7, 0.1, false),
            Some(-0.8)
        ));
        assert!(!swa_chosen(
            Select::ValF1Macro,
            &swa(0.7, 0.5, false),
            Some(0.3)
        ));
        assert!(swa_chosen(Select::Last, &swa(9.0, 0.0, false), Some(0.0)));
    }

    #[test]
    fn the_model_file_ships_the_chosen_average_or_the_best_epoch() {
        let history = [rec(1, 1.0, 0.5), rec(2, 0.9, 0.6), rec(3, 0.95, 0.55)];
        let chosen = swa(0.8, 0.65, true);
        assert_eq!(
            ship(Some(&chosen), &history, Some(2)),
            Ship::Average(&chosen)
        );
        assert_eq!(
            ship(Some(&chosen), &history, Some(2)).val_accuracy(false),
            Some(0.65)
        );
        let beaten = swa(0.8, 0.55, false);
        let best = ship(Some(&beaten), &history, Some(2));
        assert_eq!(best, Ship::BestEpoch(Some(&history[1])));
        assert_eq!(best.val_accuracy(true), Some(0.6));
        assert_eq!(
            best.val_accuracy(false),
            None,
            "a refit claims no validation score"
        );
        assert_eq!(ship(None, &history, None), Ship::BestEpoch(None));
        assert_eq!(ship(None, &history, None).val_accuracy(true), None);
    }
}
