//! Hyperparameter importance of a sweep: a random forest (smartcore) fitted
//! to the trials (their parameters, in the sampler's internal coordinates,
//! against their objective values), then each parameter's permutation
//! importance on the forest's out-of-bag predictions (Breiman 2001): how
//! much the squared error grows when that parameter's column is shuffled.
//! Importances are clipped at zero (a shuffle that helps is noise) and
//! normalised to sum to one, as Optuna's evaluators report them.
//!
//! Its uncertainty: the whole estimate is refitted on bootstrap resamples
//! of the trials, and each importance gets the 5th and 95th percentiles of
//! its refits. Below [`MIN_TRIALS`] trials a ranking is marked too few to
//! rank: a forest on a dozen points hands all importance to one parameter
//! by chance, and a chart of 100% and 0% would read as a finding.
//!
//! Pruned trials have no final value; with ASHA most trials are pruned, so
//! the values compared are those every trial reached: the objective at a
//! given epoch (the first rung), or the final value of complete trials.

use super::journal::{TrialRecord, TrialState};
use super::pruner::{value_at, PrunerConfig};
use super::space::Space;
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;

/// One parameter's share of what explains the objective.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamImportance {
    pub name: String,
    pub importance: f64,
    /// 5th and 95th percentiles of the importance over bootstrap refits
    /// (a 90% interval), when they were computed.
    pub lo: Option<f64>,
    pub hi: Option<f64>,
}

/// Fewer finished trials than this are "too few to rank".
pub const MIN_TRIALS: usize = 30;
/// Bootstrap refits behind each interval.
pub const REFITS: usize = 20;

/// Which value of each trial is explained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Target {
    /// The objective after this epoch (trials that reached it, pruned or not).
    Epoch(usize),
    /// The final value of complete trials.
    Final,
}

impl Target {
    /// What the ranking explains, in words shared by `fer sweep
    /// --importance` and the report.
    pub fn describe(&self) -> String {
        match self {
            Target::Epoch(e) => format!("objective after epoch {e}"),
            Target::Final => "final objective of complete trials".into(),
        }
    }
}

/// Shuffles per parameter: the importance is their mean.
const REPEATS: usize = 30;

/// Permutation importances of the columns of `x` (rows: trials) for `y`,
/// named by `names`, in decreasing order.
pub fn permutation_importance(
    x: &[Vec<f64>],
    y: &[f64],
    names: &[String],
    seed: u64,
) -> Result<Vec<ParamImportance>> {
    let (n, d) = (x.len(), names.len());
    if n < 4 {
        bail!("{n} trials: at least 4 are needed to rank parameters");
    }
    if x.iter().any(|r| r.len() != d) || y.len() != n {
        bail!("each trial needs one value per parameter and an objective value");
    }
    let params = RandomForestRegressorParameters::default()
        .with_n_trees(200)
        .with_min_samples_leaf(1)
        .with_m(d.max(1))
        .with_keep_samples(true)
        .with_seed(seed);
    let xm =
        DenseMatrix::from_2d_vec(&x.to_vec()).map_err(|e| anyhow::anyhow!("trial matrix: {e}"))?;
    let y = y.to_vec();
    let forest = RandomForestRegressor::fit(&xm, &y, params)
        .map_err(|e| anyhow::anyhow!("fitting the random forest: {e}"))?;
    let mse = |rows: &Vec<Vec<f64>>| -> Result<f64> {
        let m = DenseMatrix::from_2d_vec(rows).map_err(|e| anyhow::anyhow!("{e}"))?;
        let p: Vec<f64> = forest
            .predict_oob(&m)
            .map_err(|e| anyhow::anyhow!("out-of-bag predictions: {e}"))?;
        Ok(p.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / n as f64)
    };
    let base = mse(&x.to_vec())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut raw = Vec::with_capacity(d);
    for j in 0..d {
        let mut grow = 0.0;
        for _ in 0..REPEATS {
            let mut col: Vec<f64> = x.iter().map(|r| r[j]).collect();
            col.shuffle(&mut rng);
            let shuffled: Vec<Vec<f64>> = x
                .iter()
                .zip(&col)
                .map(|(r, &v)| {
                    let mut r = r.clone();
                    r[j] = v;
                    r
                })
                .collect();
            grow += mse(&shuffled)? - base;
        }
        raw.push((grow / REPEATS as f64).max(0.0));
    }
    let total: f64 = raw.iter().sum();
    let mut out: Vec<ParamImportance> = names
        .iter()
        .zip(raw)
        .map(|(name, r)| ParamImportance {
            name: name.clone(),
            importance: if total > 0.0 { r / total } else { 0.0 },
            lo: None,
            hi: None,
        })
        .collect();
    out.sort_by(|a, b| b.importance.total_cmp(&a.importance));
    Ok(out)
}

/// [`permutation_importance`] with 90% intervals from [`REFITS`] refits on
/// bootstrap resamples of the trials (each refit normalised on its own).
pub fn importance_with_intervals(
    x: &[Vec<f64>],
    y: &[f64],
    names: &[String],
    seed: u64,
) -> Result<Vec<ParamImportance>> {
    let mut point = permutation_importance(x, y, names, seed)?;
    let n = x.len();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xB007);
    let mut draws: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for r in 0..REFITS {
        let idx: Vec<usize> = (0..n)
            .map(|_| rand::Rng::random_range(&mut rng, 0..n))
            .collect();
        let bx: Vec<Vec<f64>> = idx.iter().map(|&i| x[i].clone()).collect();
        let by: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
        // A resample can be degenerate (too few distinct trials): skip it.
        let Ok(imp) = permutation_importance(&bx, &by, names, seed + 1 + r as u64) else {
            continue;
        };
        for p in imp {
            let j = names.iter().position(|m| *m == p.name).expect("same names");
            draws[j].push(p.importance);
        }
    }
    for p in &mut point {
        let j = names.iter().position(|m| *m == p.name).expect("same names");
        let d = &mut draws[j];
        if d.len() >= REFITS / 2 {
            d.sort_by(f64::total_cmp);
            let q = |f: f64| d[((d.len() - 1) as f64 * f).round() as usize];
            p.lo = Some(q(0.05));
            p.hi = Some(q(0.95));
        }
    }
    Ok(point)
}

impl Target {
    /// `at_epoch` when given, else the pruner's first rung (which every
    /// trial reached), else the final values.
    pub fn for_sweep(at_epoch: Option<usize>, pruner: &PrunerConfig) -> Target {
        at_epoch
            .or_else(|| pruner.first_rung())
            .map_or(Target::Final, Target::Epoch)
    }
}

/// The value of `t` that `target` asks for, if it has one.
fn value_of(t: &TrialRecord, target: Target) -> Option<f64> {
    match target {
        Target::Epoch(e) => value_at(t, e),
        Target::Final => (t.state == TrialState::Complete).then_some(t.value?),
    }
    .filter(|v| v.is_finite())
}

/// The importance of each parameter of `family` (None: the parameters
/// every trial shares, and the family itself when the space has several)
/// for the sweep's `trials`, with the number of trials used.
pub fn sweep_importance(
    space: &Space,
    trials: &[TrialRecord],
    family: Option<&str>,
    target: Target,
) -> Result<(Vec<ParamImportance>, usize)> {
    let mut dists = space.dists_for(family);
    if family.is_none() {
        if let Some(f) = space.family_dist() {
            dists.push((super::space::FAMILY.to_string(), f));
        }
    }
    let mut x = Vec::new();
    let mut y = Vec::new();
    for t in trials {
        if family.is_some() && t.family.as_deref() != family {
            continue;
        }
        let Some(v) = value_of(t, target) else {
            continue;
        };
        let row: Option<Vec<f64>> = dists
            .iter()
            .map(|(name, d)| t.params.get(name).and_then(|p| d.to_internal(p)))
            .collect();
        if let Some(row) = row {
            x.push(row);
            y.push(v);
        }
    }
    let names: Vec<String> = dists.into_iter().map(|(n, _)| n).collect();
    let n = x.len();
    Ok((importance_with_intervals(&x, &y, &names, 0)?, n))
}

/// One group's ranking: all trials (`family` None), or one family's.
#[derive(Clone, Debug, Serialize)]
pub struct Ranking {
    pub family: Option<String>,
    pub target: Target,
    pub trials: usize,
    pub importance: Vec<ParamImportance>,
}

impl Ranking {
    /// Fewer trials than [`MIN_TRIALS`]: the ranking is not a finding.
    pub fn too_few(&self) -> bool {
        self.trials < MIN_TRIALS
    }

    /// What a reader is told in place of a ranking, when it is too few.
    pub fn too_few_note(&self) -> String {
        format!(
            "too few trials to rank ({} < {MIN_TRIALS}): with this many, a forest gives most of the importance to one parameter by chance; the 90% intervals below show how little is known",
            self.trials
        )
    }

    /// The ranking as text, a bar per parameter.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} ({} trials, {}):\n",
            self.family.as_deref().unwrap_or("all trials"),
            self.trials,
            self.target.describe()
        );
        if self.too_few() {
            s += &format!("  {}\n", self.too_few_note());
        }
        for p in &self.importance {
            let iv = match (p.lo, p.hi) {
                (Some(lo), Some(hi)) => format!("[{:>5.1}, {:>5.1}]", 100.0 * lo, 100.0 * hi),
                _ => String::new(),
            };
            s += &format!(
                "  {:<32} {:>5.1}% {iv:<16} {}\n",
                p.name,
                100.0 * p.importance,
                "#".repeat((p.importance * 40.0).round() as usize)
            );
        }
        s
    }
}

/// The sweep ranked as a whole and per family (when its space has
/// families); a group that cannot be ranked (too few trials) is an error
/// message instead, naming it.
pub fn rankings(
    space: &Space,
    trials: &[TrialRecord],
    target: Target,
) -> (Vec<Ranking>, Vec<String>) {
    let mut groups: Vec<Option<String>> = vec![None];
    groups.extend(space.families.iter().map(|(f, _)| Some(f.clone())));
    let (mut ranked, mut errors) = (Vec::new(), Vec::new());
    for family in groups {
        match sweep_importance(space, trials, family.as_deref(), target) {
            Ok((importance, n)) => ranked.push(Ranking {
                family,
                target,
                trials: n,
                importance,
            }),
            Err(e) => errors.push(format!(
                "importance{}: {e:#}",
                family.map_or(String::new(), |f| format!(" ({f})"))
            )),
        }
    }
    (ranked, errors)
}

/// A sweep folder's rankings (`rankings` at `Target::for_sweep`).
#[derive(Clone, Debug, Serialize)]
pub struct SweepRankings {
    /// The experiment's name.
    pub name: String,
    pub dir: std::path::PathBuf,
    pub target: Target,
    pub rankings: Vec<Ranking>,
    /// Groups that could not be ranked, each a message naming it.
    pub errors: Vec<String>,
}

/// The rankings of the sweep recorded in `dir` (its journal and the
/// experiment it saved), explaining the objective at `at_epoch` or the
/// pruner's first rung.
pub fn of_sweep(dir: &std::path::Path, at_epoch: Option<usize>) -> Result<SweepRankings> {
    let exp = super::config::Experiment::saved(dir)?;
    let target = Target::for_sweep(at_epoch, &exp.search.pruner);
    let journal = crate::layout::SweepDir::new(dir).journal();
    let trials = super::journal::rebuild(&super::journal::read_events(&journal)?);
    let (rankings, errors) = rankings(&exp.space()?, &trials, target);
    Ok(SweepRankings {
        name: exp.name.clone(),
        dir: dir.to_path_buf(),
        target,
        rankings,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// One parameter alone matters (the objective is a function of `lr`
    /// only): it takes almost all the importance.
    #[test]
    fn the_one_parameter_that_matters_takes_the_importance() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let names: Vec<String> = ["dropout", "lr", "width"].map(String::from).to_vec();
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..30 {
            let row = vec![
                rng.random_range(0.0..0.5),
                rng.random_range(-7.0..-2.0),
                rng.random_range(0.0..3.0f64).floor(),
            ];
            // A peak at ln(lr) = -4.5.
            y.push(0.6 - 0.05 * (row[1] + 4.5f64).powi(2));
            x.push(row);
        }
        let imp = permutation_importance(&x, &y, &names, 0).unwrap();
        assert_eq!(imp[0].name, "lr", "{imp:?}");
        assert!(imp[0].importance > 0.8, "{imp:?}");
        let sum: f64 = imp.iter().map(|p| p.importance).sum();
        assert!((sum - 1.0).abs() < 1e-9);
        // Too few trials is an error, not a ranking.
        assert!(permutation_importance(&x[..3], &y[..3], &names, 0).is_err());
    }

    /// Twelve parameters, one of which matters (plus noise): at 12 trials
    /// the ranking is too few to read and its intervals are wide; at 200
    /// the parameter that matters is first, its interval above every other.
    #[test]
    fn intervals_are_wide_at_twelve_trials_and_rank_at_two_hundred() {
        let names: Vec<String> = (0..12).map(|j| format!("p{j}")).collect();
        let sample = |n: usize| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for _ in 0..n {
                let row: Vec<f64> = (0..12).map(|_| rng.random_range(0.0..1.0)).collect();
                let noise: f64 = rng.random_range(-0.02..0.02);
                y.push(0.6 - 0.3 * (row[4] - 0.3).powi(2) + noise);
                x.push(row);
            }
            (x, y)
        };
        let (x, y) = sample(12);
        let few = importance_with_intervals(&x, &y, &names, 0).unwrap();
        let widest = few
            .iter()
            .filter_map(|p| Some(p.hi? - p.lo?))
            .fold(0.0f64, f64::max);
        assert!(widest > 0.3, "12 trials: intervals {few:?}");
        let r = Ranking {
            family: None,
            target: Target::Final,
            trials: 12,
            importance: few,
        };
        assert!(r.too_few() && r.render().contains("too few trials to rank"));

        let (x, y) = sample(200);
        let many = importance_with_intervals(&x, &y, &names, 0).unwrap();
        assert_eq!(many[0].name, "p4", "{many:?}");
        let lo = many[0].lo.unwrap();
        assert!(
            many[1..].iter().all(|p| p.hi.unwrap() < lo),
            "200 trials: p4's interval clears the rest: {many:?}"
        );
    }

    #[test]
    fn a_sweep_is_read_at_the_epoch_every_trial_reached() {
        use serde_json::json;
        let f: super::super::space::SpaceFile = serde_saphyr::from_str(
            "train.optimizer.lr: {float: [1.0e-4, 1.0e-1], log: true}\nmodel.dropout: {float: [0.0, 0.5]}\n",
        )
        .unwrap();
        let space = Space::from_file(&f, &["cnn"]).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let trials: Vec<TrialRecord> = (0..24)
            .map(|i| {
                let lr: f64 = (rng.random_range(-9.2..-2.3f64)).exp();
                let dropout: f64 = rng.random_range(0.0..0.5);
                let v = 0.5 - 0.02 * (lr.ln() + 5.0).powi(2);
                let mut params = super::super::sampler::Params::new();
                params.insert("train.optimizer.lr".into(), json!(lr));
                params.insert("model.dropout".into(), json!(dropout));
                // Half the trials pruned after epoch 1: no final value.
                let state = if i % 2 == 0 {
                    TrialState::Pruned
                } else {
                    TrialState::Complete
                };
                let mut t = TrialRecord::finished(i, params, state, Some(v));
                t.intermediate = vec![(1, v)];
                t
            })
            .collect();
        let (imp, n) = sweep_importance(&space, &trials, None, Target::Epoch(1)).unwrap();
        assert_eq!(n, 24);
        assert_eq!(imp[0].name, "train.optimizer.lr", "{imp:?}");
        let (_, n) = sweep_importance(&space, &trials, None, Target::Final).unwrap();
        assert_eq!(n, 12, "only complete trials have a final value");
    }
}
