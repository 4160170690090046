//! Pruners: decide after each epoch whether a trial should stop early,
//! from the intermediate values of the other trials (Optuna's semantics).

use super::journal::{TrialRecord, TrialState};
use crate::metric::Direction;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PrunerConfig {
    #[default]
    None,
    /// Prune when the trial's best value so far is worse than the median of
    /// the other trials' values at the same epoch.
    Median {
        #[serde(default = "default_startup")]
        n_startup_trials: usize,
        #[serde(default = "one")]
        n_warmup_epochs: usize,
    },
    /// Asynchronous successive halving: rungs at `min_epochs * eta^k`; at a
    /// rung a trial continues only if it is in the top 1/eta of the trials
    /// that reached that rung.
    Asha {
        #[serde(default = "one")]
        min_epochs: usize,
        #[serde(default = "default_eta")]
        eta: usize,
    },
}

fn default_startup() -> usize {
    5
}
fn one() -> usize {
    1
}
fn default_eta() -> usize {
    3
}

/// A trial's objective after `epoch`, if it reported one.
pub(super) fn value_at(t: &TrialRecord, epoch: usize) -> Option<f64> {
    t.intermediate
        .iter()
        .find(|(e, _)| *e == epoch)
        .map(|p| p.1)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl PrunerConfig {
    /// The first epoch at which it compares trials, which every trial
    /// reaches (None without a pruner).
    pub fn first_rung(&self) -> Option<usize> {
        match self {
            PrunerConfig::None => None,
            PrunerConfig::Median {
                n_warmup_epochs, ..
            } => Some((*n_warmup_epochs).max(1)),
            PrunerConfig::Asha { min_epochs, .. } => Some(*min_epochs),
        }
    }

    /// Whether `current` (its values up to `epoch`) should stop now. A trial
    /// at its `last_epoch` has finished its schedule: it completes, as in
    /// Optuna, even when that epoch is a rung it would fail.
    pub fn should_prune(
        &self,
        current: &TrialRecord,
        others: &[TrialRecord],
        epoch: usize,
        last_epoch: usize,
        dir: Direction,
    ) -> bool {
        if epoch >= last_epoch {
            return false;
        }
        let Some(now) = value_at(current, epoch) else {
            return false;
        };
        match *self {
            PrunerConfig::None => false,
            PrunerConfig::Median {
                n_startup_trials,
                n_warmup_epochs,
            } => {
                let done: Vec<&TrialRecord> = others
                    .iter()
                    .filter(|t| {
                        t.number != current.number
                            && !matches!(t.state, TrialState::Running | TrialState::Stale)
                    })
                    .collect();
                if done.len() < n_startup_trials || epoch <= n_warmup_epochs {
                    return false;
                }
                let best = current
                    .intermediate
                    .iter()
                    .filter(|(e, _)| *e <= epoch)
                    .map(|p| p.1)
                    .reduce(|a, b| if dir.better(a, b) { a } else { b })
                    .unwrap_or(now);
                match median(done.iter().filter_map(|t| value_at(t, epoch)).collect()) {
                    Some(m) => dir.better(m, best),
                    None => false,
                }
            }
            PrunerConfig::Asha { min_epochs, eta } => {
                // Is `epoch` a rung?
                let mut rung = min_epochs.max(1);
                while rung < epoch {
                    rung *= eta.max(2);
                }
                if rung != epoch {
                    return false;
                }
                let mut at_rung: Vec<f64> = others
                    .iter()
                    .filter(|t| t.number != current.number)
                    .filter_map(|t| value_at(t, epoch))
                    .collect();
                at_rung.push(now);
                let k = at_rung.len() / eta.max(2);
                if k == 0 {
                    // Too few trials at this rung to judge: ASHA promotes.
                    return false;
                }
                at_rung.sort_by(|a, b| {
                    if dir.better(*a, *b) {
                        std::cmp::Ordering::Less
                    } else {
                        std::cmp::Ordering::Greater
                    }
                });
                let cutoff = at_rung[k - 1];
                dir.better(cutoff, now)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(n: usize, values: &[f64], state: TrialState) -> TrialRecord {
        let mut t = TrialRecord::finished(n, Default::default(), state, values.last().copied());
        t.intermediate = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i + 1, v))
            .collect();
        t
    }

    #[test]
    fn median_prunes_below_the_median_after_warmup() {
        let others: Vec<TrialRecord> = (0..5)
            .map(|i| {
                trial(
                    i,
                    &[0.3 + 0.01 * i as f64, 0.4 + 0.01 * i as f64],
                    TrialState::Complete,
                )
            })
            .collect();
        let p = PrunerConfig::Median {
            n_startup_trials: 5,
            n_warmup_epochs: 1,
        };
        let bad = trial(9, &[0.1, 0.2], TrialState::Running);
        let good = trial(9, &[0.1, 0.5], TrialState::Running);
        assert!(
            !p.should_prune(&bad, &others, 1, 99, Direction::Maximize),
            "warm-up epoch"
        );
        assert!(p.should_prune(&bad, &others, 2, 99, Direction::Maximize));
        assert!(!p.should_prune(&good, &others, 2, 99, Direction::Maximize));
        // Fewer finished trials than n_startup_trials: never prune.
        assert!(!p.should_prune(&bad, &others[..3], 2, 99, Direction::Maximize));
    }

    #[test]
    fn asha_keeps_the_top_third_at_rungs() {
        let p = PrunerConfig::Asha {
            min_epochs: 1,
            eta: 3,
        };
        let others: Vec<TrialRecord> = [0.5, 0.4, 0.3, 0.2, 0.6]
            .iter()
            .enumerate()
            .map(|(i, &v)| trial(i, &[v], TrialState::Complete))
            .collect();
        // 6 trials at rung 1 -> keep the top 2 (0.6, 0.5).
        assert!(p.should_prune(
            &trial(9, &[0.45], TrialState::Running),
            &others,
            1,
            99,
            Direction::Maximize
        ));
        assert!(!p.should_prune(
            &trial(9, &[0.55], TrialState::Running),
            &others,
            1,
            99,
            Direction::Maximize
        ));
        // Epoch 2 is not a rung (rungs 1, 3, 9).
        assert!(!p.should_prune(
            &trial(9, &[0.55, 0.0], TrialState::Running),
            &others,
            2,
            99,
            Direction::Maximize
        ));
        // Minimising flips the order.
        assert!(!p.should_prune(
            &trial(9, &[0.25], TrialState::Running),
            &others,
            1,
            99,
            Direction::Minimize
        ));
        // The rung that would prune it is the trial's last epoch: it completes.
        assert!(!p.should_prune(
            &trial(9, &[0.45], TrialState::Running),
            &others,
            1,
            1,
            Direction::Maximize
        ));
    }
}
