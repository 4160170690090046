//! Samplers behind one seam: `ask` proposes a trial's parameters from the
//! space and the finished trials. Random is tiny; TPE delegates its first
//! `n_startup` trials to random and keeps its density code in `tpe.rs`.
//! Every proposal draws from an RNG keyed by (sweep seed, trial number), so
//! a resumed sweep proposes what an uninterrupted one would have.

use super::journal::{TrialRecord, TrialState};
use super::space::{Dist, Space, FAMILY};
use super::tpe;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Params = BTreeMap<String, serde_json::Value>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerConfig {
    Random,
    /// Tree-structured Parzen Estimator (Bergstra et al. 2011), univariate,
    /// in Optuna's style.
    Tpe {
        #[serde(default = "default_startup")]
        n_startup: usize,
        #[serde(default = "default_candidates")]
        n_ei_candidates: usize,
    },
}

impl SamplerConfig {
    /// The `kind` this sampler has in an experiment file.
    pub fn name(&self) -> &'static str {
        match self {
            SamplerConfig::Random => "random",
            SamplerConfig::Tpe { .. } => "tpe",
        }
    }
}

fn default_startup() -> usize {
    10
}
fn default_candidates() -> usize {
    24
}

/// One finished trial as the sampler sees it: its params and a loss
/// (smaller is better), or `None` when pruned.
pub struct Observation<'a> {
    pub params: &'a Params,
    pub loss: Option<f64>,
}

/// Observations from the journal's trials. Running (and stale) trials count
/// as pruned, Optuna's "constant liar": TPE treats them as bad, so workers
/// running in parallel do not all propose the same promising point. Failed
/// ones are left out.
pub fn observations(trials: &[TrialRecord], loss: impl Fn(f64) -> f64) -> Vec<Observation<'_>> {
    trials
        .iter()
        .filter_map(|t| match t.state {
            TrialState::Complete => t.value.map(|v| Observation {
                params: &t.params,
                loss: Some(loss(v)),
            }),
            TrialState::Pruned | TrialState::Running | TrialState::Stale => Some(Observation {
                params: &t.params,
                loss: None,
            }),
            _ => None,
        })
        .collect()
}

/// Observations with several objectives: each complete trial's loss is its
/// place in the NSGA-II order of all complete trials (`pareto::order_keys`),
/// so TPE's good group is the best fronts (MOTPE's split); the rest as in
/// [`observations`].
pub fn observations_multi<'a>(
    trials: &'a [TrialRecord],
    dirs: &[crate::metric::Direction],
) -> Vec<Observation<'a>> {
    let scored: Vec<(&TrialRecord, Vec<f64>)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| {
            let v = t.values.as_ref().filter(|v| v.len() == dirs.len())?;
            Some((t, v.iter().zip(dirs).map(|(x, d)| d.loss(*x)).collect()))
        })
        .collect();
    let points: Vec<Vec<f64>> = scored.iter().map(|p| p.1.clone()).collect();
    let keys = super::pareto::order_keys(&points);
    let mut out: Vec<Observation> = scored
        .iter()
        .zip(keys)
        .map(|((t, _), k)| Observation {
            params: &t.params,
            loss: Some(k),
        })
        .collect();
    out.extend(
        trials
            .iter()
            .filter(|t| {
                matches!(
                    t.state,
                    TrialState::Pruned | TrialState::Running | TrialState::Stale
                )
            })
            .map(|t| Observation {
                params: &t.params,
                loss: None,
            }),
    );
    out
}

impl SamplerConfig {
    pub fn ask(&self, space: &Space, history: &[Observation], seed: u64, trial: usize) -> Params {
        let mut rng =
            ChaCha8Rng::seed_from_u64(crate::data::augment::image_seed(seed, 0x5a3e, trial as u64));
        let complete = history.iter().filter(|o| o.loss.is_some()).count();
        let use_tpe =
            matches!(self, SamplerConfig::Tpe { n_startup, .. } if complete >= *n_startup);
        let n_cand = match self {
            SamplerConfig::Tpe {
                n_ei_candidates, ..
            } => *n_ei_candidates,
            SamplerConfig::Random => 1,
        };
        let suggest = |name: &str, d: &Dist, family: Option<&str>, rng: &mut ChaCha8Rng| {
            if use_tpe {
                let obs: Vec<(f64, Option<f64>)> = history
                    .iter()
                    .filter(|o| {
                        family.is_none_or(|f| {
                            o.params.get(FAMILY).and_then(|v| v.as_str()) == Some(f)
                        })
                    })
                    .filter_map(|o| {
                        o.params
                            .get(name)
                            .and_then(|v| d.to_internal(v))
                            .map(|x| (x, o.loss))
                    })
                    .collect();
                tpe::suggest(d, &obs, n_cand, rng)
            } else {
                d.sample(rng)
            }
        };
        let mut params = Params::new();
        let family = space.family_dist().map(|d| {
            let v = suggest(FAMILY, &d, None, &mut rng);
            params.insert(FAMILY.to_string(), v.clone());
            v.as_str().unwrap_or_default().to_string()
        });
        for (name, d) in &space.params {
            let v = suggest(name, d, None, &mut rng);
            params.insert(name.clone(), v);
        }
        if let Some(f) = &family {
            if let Some((_, ps)) = space.families.iter().find(|(n, _)| n == f) {
                for (name, d) in ps {
                    let v = suggest(name, d, Some(f), &mut rng);
                    params.insert(name.clone(), v);
                }
            }
        }
        params
    }
}
