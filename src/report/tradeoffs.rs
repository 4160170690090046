//! What the report's trade-off views compare: each model's accuracy against
//! a cost (batch-1 latency, training time), and where it sits relative to
//! the Pareto front of the models reported (higher accuracy, lower cost).
//! Pure functions of the collected runs, shared by the section's text and
//! its charts. The front describes the models; nothing is selected by it.

use super::collect::Run;

/// A cost axis of the trade-off charts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cost {
    /// Batch-1 forward pass of the model as stored (fp32, or an int8
    /// file's int8), ms.
    Latency,
    /// Training time of the run, hours.
    Training,
}

impl Cost {
    pub const ALL: [Cost; 2] = [Cost::Latency, Cost::Training];

    pub fn of(self, r: &Run) -> Option<f64> {
        match self {
            Cost::Latency => r.latency.as_ref().map(|l| l.batch1_ms_median),
            Cost::Training => Some(r.out.train_seconds / 3600.0),
        }
        .filter(|v| v.is_finite() && *v > 0.0)
    }

    pub fn axis(self) -> &'static str {
        match self {
            Cost::Latency => "batch-1 latency as stored (ms, log scale)",
            Cost::Training => "training time (hours, log scale)",
        }
    }

    pub fn file(self) -> &'static str {
        match self {
            Cost::Latency => "tradeoff-latency.png",
            Cost::Training => "tradeoff-training.png",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cost::Latency => "latency",
            Cost::Training => "training time",
        }
    }
}

/// The runs the trade-offs compare: those with a network (the floors have
/// no cost worth plotting), as indices into `runs`.
pub fn compared(runs: &[Run]) -> Vec<usize> {
    (0..runs.len()).filter(|&i| runs[i].has_net).collect()
}

/// For each of `points` (accuracy, cost): the indices of the points that
/// dominate it (at least as accurate and at most as costly, better in one).
/// An empty list means the point is on the Pareto front.
pub fn dominated_by(points: &[(f64, f64)]) -> Vec<Vec<usize>> {
    points
        .iter()
        .map(|&(a, c)| {
            (0..points.len())
                .filter(|&j| {
                    let (aj, cj) = points[j];
                    aj >= a && cj <= c && (aj > a || cj < c)
                })
                .collect()
        })
        .collect()
}

/// (label, cost, test accuracy %) of the compared runs that have the cost,
/// with whether each is on the front and who dominates it (labels).
pub fn positions(runs: &[Run], cost: Cost) -> Vec<(String, f64, f64, Vec<String>)> {
    let pts: Vec<(usize, f64, f64)> = compared(runs)
        .into_iter()
        .filter_map(|i| {
            let c = cost.of(&runs[i])?;
            Some((i, runs[i].out.test.overall.accuracy * 100.0, c))
        })
        .collect();
    let dom = dominated_by(&pts.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>());
    pts.iter()
        .zip(dom)
        .map(|(&(i, acc, c), d)| {
            let by = d.iter().map(|&j| runs[pts[j].0].label.clone()).collect();
            (runs[i].label.clone(), c, acc, by)
        })
        .collect()
}

/// Validation accuracy (%) against cumulative training hours, per compared
/// run with a validation split and a history: the learning curves on one
/// wall-clock axis (each epoch's own seconds, so pauses between resumed
/// sessions do not count).
pub fn wallclock(runs: &[Run]) -> Vec<(String, Vec<(f64, f64)>)> {
    compared(runs)
        .into_iter()
        .map(|i| &runs[i])
        .filter(|r| r.out.val.overall.n > 0 && r.out.history.len() > 1)
        .map(|r| {
            let mut t = 0.0;
            let pts = r
                .out
                .history
                .iter()
                .map(|e| {
                    t += e.epoch_seconds / 3600.0;
                    (t, e.val_acc * 100.0)
                })
                .collect();
            (r.label.clone(), pts)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_front_is_the_points_nothing_beats_on_both() {
        // (accuracy, cost)
        let pts = [
            (70.0, 5.0),
            (60.0, 1.0),
            (55.0, 2.0),
            (70.0, 9.0),
            (40.0, 0.1),
        ];
        let d = dominated_by(&pts);
        assert!(d[0].is_empty() && d[1].is_empty() && d[4].is_empty());
        // Slower and less accurate than the 60% model.
        assert_eq!(d[2], vec![1]);
        // As accurate as the first but slower: dominated by it alone.
        assert_eq!(d[3], vec![0]);
    }
}
