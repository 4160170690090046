//! Learning-rate schedules as pure functions of the step, plus the small
//! state machines for reduce-on-plateau and early stopping (pure: they
//! return decisions; the trainer does the IO).

use crate::config::train::ScheduleConfig;
use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// The learning rate at `step` (0-based) of `total` optimiser steps.
/// `plateau_lr` is the current reduce-on-plateau rate, used by that schedule.
pub fn lr_at(
    cfg: &ScheduleConfig,
    base: f64,
    step: usize,
    total: usize,
    steps_per_epoch: usize,
    plateau_lr: f64,
) -> f64 {
    let total = total.max(1) as f64;
    let s = step as f64;
    match cfg {
        ScheduleConfig::Constant => base,
        ScheduleConfig::Plateau { .. } => plateau_lr,
        ScheduleConfig::Cosine {
            warmup_epochs,
            min_lr_ratio,
        } => {
            let warm = warmup_epochs * steps_per_epoch as f64;
            if s < warm {
                base * (s + 1.0) / warm
            } else {
                let t = ((s - warm) / (total - warm).max(1.0)).min(1.0);
                let min = base * min_lr_ratio;
                min + (base - min) * 0.5 * (1.0 + (PI * t).cos())
            }
        }
        ScheduleConfig::Onecycle {
            pct_start,
            div_factor,
            final_div_factor,
        } => {
            // torch.optim.lr_scheduler.OneCycleLR, anneal_strategy="cos", two phases.
            let initial = base / div_factor;
            let min = initial / final_div_factor;
            let up_end = pct_start * total - 1.0;
            let cos = |start: f64, end: f64, pct: f64| {
                end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0)
            };
            if s <= up_end {
                cos(initial, base, s / up_end.max(1e-9))
            } else {
                let down = (total - 1.0) - up_end;
                cos(base, min, ((s - up_end) / down.max(1e-9)).min(1.0))
            }
        }
    }
}

/// Reduce-on-plateau state (PyTorch's `ReduceLROnPlateau`, mode min, rel threshold).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub lr: f64,
    pub best: f64,
    pub bad_epochs: usize,
}

impl Plateau {
    pub fn new(lr: f64) -> Plateau {
        Plateau {
            lr,
            // f64::MAX, not infinity: the state round-trips through JSON.
            best: f64::MAX,
            bad_epochs: 0,
        }
    }

    /// Feeds one epoch's validation loss; returns true if the lr was cut.
    pub fn observe(&mut self, cfg: &ScheduleConfig, val_loss: f64) -> bool {
        let ScheduleConfig::Plateau {
            factor,
            patience,
            threshold,
            min_lr,
        } = cfg
        else {
            return false;
        };
        if val_loss < self.best * (1.0 - threshold) {
            self.best = val_loss;
            self.bad_epochs = 0;
            return false;
        }
        self.bad_epochs += 1;
        if self.bad_epochs > *patience {
            let new = (self.lr * factor).max(*min_lr);
            self.bad_epochs = 0;
            let cut = new < self.lr;
            self.lr = new;
            return cut;
        }
        false
    }
}

/// Early stopping on validation loss: stop after `patience` epochs without
/// an improvement of at least `min_delta`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EarlyStop {
    pub best: f64,
    pub bad_epochs: usize,
}

impl Default for EarlyStop {
    fn default() -> Self {
        EarlyStop {
            best: f64::MAX,
            bad_epochs: 0,
        }
    }
}

impl EarlyStop {
    /// Returns true when training should stop.
    pub fn observe(&mut self, val_loss: f64, patience: usize, min_delta: f64) -> bool {
        if val_loss < self.best - min_delta {
            self.best = val_loss;
            self.bad_epochs = 0;
            false
        } else {
            self.bad_epochs += 1;
            self.bad_epochs >= patience
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onecycle_matches_pytorch_shape() {
        let cfg = ScheduleConfig::Onecycle {
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        };
        let total = 100;
        let lr = |s| lr_at(&cfg, 0.05, s, total, 10, 0.0);
        // torch OneCycleLR(max_lr=0.05, total_steps=100): step 0 = 0.002,
        // peak at step 29 = 0.05, last step = 0.002 / 1e4.
        assert!((lr(0) - 0.002).abs() < 1e-12);
        assert!((lr(29) - 0.05).abs() < 1e-12);
        assert!((lr(99) - 2e-7).abs() < 1e-12);
        assert!(lr(10) < lr(20) && lr(50) > lr(80));
    }

    #[test]
    fn cosine_warms_up_then_decays() {
        let cfg = ScheduleConfig::Cosine {
            warmup_epochs: 1.0,
            min_lr_ratio: 0.0,
        };
        let lr = |s| lr_at(&cfg, 0.1, s, 100, 10, 0.0);
        assert!((lr(0) - 0.01).abs() < 1e-12);
        assert!((lr(9) - 0.1).abs() < 1e-12);
        assert!((lr(10) - 0.1).abs() < 1e-12);
        assert!(lr(99) < 0.001);
    }

    #[test]
    fn plateau_cuts_after_patience() {
        let cfg = ScheduleConfig::Plateau {
            factor: 0.5,
            patience: 1,
            threshold: 0.0,
            min_lr: 0.01,
        };
        let mut p = Plateau::new(0.1);
        assert!(!p.observe(&cfg, 1.0));
        assert!(!p.observe(&cfg, 1.0)); // 1 bad epoch: within patience
        assert!(p.observe(&cfg, 1.0)); // 2 > patience: cut
        assert!((p.lr - 0.05).abs() < 1e-12);
        for _ in 0..10 {
            p.observe(&cfg, 1.0);
        }
        assert!((p.lr - 0.01).abs() < 1e-12, "floored at min_lr");
    }

    #[test]
    fn early_stop_waits_for_patience() {
        let mut e = EarlyStop::default();
        assert!(!e.observe(1.0, 2, 0.01));
        assert!(!e.observe(0.995, 2, 0.01)); // not enough improvement
        assert!(e.observe(1.2, 2, 0.01)); // diverging: stop
    }
}
