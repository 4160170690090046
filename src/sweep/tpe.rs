//! The Tree-structured Parzen Estimator's density code (univariate, as in
//! Optuna's default): split finished trials into the best `gamma(n)` and the
//! rest, fit a Parzen estimator to each (truncated Gaussians at the
//! observations plus a wide prior), draw candidates from the good one and
//! keep the one maximising l(x) / g(x). Pruned trials count as bad.

use super::space::Dist;
use rand::Rng;

/// Optuna's default split size: min(ceil(0.1 n), 25).
pub fn gamma(n: usize) -> usize {
    ((0.1 * n as f64).ceil() as usize).min(25)
}

/// `obs`: (internal value, loss or None if pruned). Proposes a value.
pub fn suggest(
    d: &Dist,
    obs: &[(f64, Option<f64>)],
    n_candidates: usize,
    rng: &mut impl Rng,
) -> serde_json::Value {
    let mut complete: Vec<(f64, f64)> =
        obs.iter().filter_map(|&(x, l)| l.map(|l| (x, l))).collect();
    if complete.is_empty() {
        return d.sample(rng);
    }
    complete.sort_by(|a, b| a.1.total_cmp(&b.1));
    let n_good = gamma(complete.len()).max(1);
    let good: Vec<f64> = complete[..n_good].iter().map(|p| p.0).collect();
    let mut bad: Vec<f64> = complete[n_good..].iter().map(|p| p.0).collect();
    bad.extend(obs.iter().filter(|o| o.1.is_none()).map(|o| o.0));
    match d {
        Dist::Choice(c) => {
            let k = c.len();
            let l = categorical(&good, k);
            let g = categorical(&bad, k);
            let best = (0..n_candidates.max(1))
                .map(|_| sample_categorical(&l, rng))
                .max_by(|&a, &b| (l[a].ln() - g[a].ln()).total_cmp(&(l[b].ln() - g[b].ln())))
                .unwrap_or(0);
            c[best].clone()
        }
        _ => {
            let (lo, hi) = d.internal_bounds();
            let l = Parzen::fit(&good, lo, hi);
            let g = Parzen::fit(&bad, lo, hi);
            let best = (0..n_candidates.max(1))
                .map(|_| l.sample(rng))
                .max_by(|&a, &b| {
                    (l.log_pdf(a) - g.log_pdf(a)).total_cmp(&(l.log_pdf(b) - g.log_pdf(b)))
                })
                .unwrap_or((lo + hi) / 2.0);
            d.from_internal(best)
        }
    }
}

/// Category weights: counts plus a uniform prior of total weight 1.
fn categorical(xs: &[f64], k: usize) -> Vec<f64> {
    let mut w = vec![1.0 / k as f64; k];
    for &x in xs {
        w[(x as usize).min(k - 1)] += 1.0;
    }
    let s: f64 = w.iter().sum();
    w.iter().map(|v| v / s).collect()
}

fn sample_categorical(w: &[f64], rng: &mut impl Rng) -> usize {
    let mut u = rng.random::<f64>();
    for (i, &p) in w.iter().enumerate() {
        if u < p {
            return i;
        }
        u -= p;
    }
    w.len() - 1
}

/// A mixture of Gaussians truncated to [lo, hi], equal weights.
struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Parzen {
    fn fit(xs: &[f64], lo: f64, hi: f64) -> Parzen {
        // The prior: one wide component in the middle.
        let mut mus: Vec<f64> = xs.to_vec();
        mus.push((lo + hi) / 2.0);
        let mut order: Vec<usize> = (0..mus.len()).collect();
        order.sort_by(|&a, &b| mus[a].total_cmp(&mus[b]));
        let range = hi - lo;
        let min_s = range / (100f64).min(1.0 + mus.len() as f64);
        let mut sigmas = vec![range; mus.len()];
        for (r, &i) in order.iter().enumerate() {
            if i == mus.len() - 1 {
                continue; // the prior keeps sigma = range
            }
            let left = if r == 0 {
                mus[i] - lo
            } else {
                mus[i] - mus[order[r - 1]]
            };
            let right = if r + 1 == order.len() {
                hi - mus[i]
            } else {
                mus[order[r + 1]] - mus[i]
            };
            sigmas[i] = left.max(right).clamp(min_s, range);
        }
        Parzen {
            mus,
            sigmas,
            lo,
            hi,
        }
    }

    fn sample(&self, rng: &mut impl Rng) -> f64 {
        let i = rng.random_range(0..self.mus.len());
        for _ in 0..100 {
            let z: f64 = {
                // Box-Muller.
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            };
            let x = self.mus[i] + self.sigmas[i] * z;
            if (self.lo..=self.hi).contains(&x) {
                return x;
            }
        }
        self.mus[i].clamp(self.lo, self.hi)
    }

    fn log_pdf(&self, x: f64) -> f64 {
        let n = self.mus.len() as f64;
        let mut p = 0.0;
        for (&m, &s) in self.mus.iter().zip(&self.sigmas) {
            let z = phi((self.hi - m) / s) - phi((self.lo - m) / s);
            let d = (x - m) / s;
            p += (-0.5 * d * d).exp() / (s * (2.0 * std::f64::consts::PI).sqrt() * z.max(1e-12));
        }
        (p / n).max(1e-300).ln()
    }
}

/// Standard normal CDF via erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
fn phi(x: f64) -> f64 {
    0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    if x >= 0.0 {
        y
    } else {
        -y
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::journal::{TrialRecord, TrialState};
    use crate::sweep::sampler::{observations, SamplerConfig};
    use crate::sweep::space::{Space, SpaceFile};

    #[test]
    fn erf_matches_known_values() {
        assert!((erf(0.5) - 0.520_499_877_8).abs() < 2e-7);
        assert!((phi(1.96) - 0.975).abs() < 1e-3);
    }

    /// Trials until a synthetic objective gets within `target` of its
    /// minimum (capped at `budget`), and the best value after `budget` trials.
    fn trials_to_reach(
        sampler: &SamplerConfig,
        seed: u64,
        budget: usize,
        target: f64,
    ) -> (usize, f64) {
        // A bowl in three floats (one on a log scale) plus a categorical.
        let f: SpaceFile = serde_saphyr::from_str(
            "x: {float: [-5.0, 5.0]}\ny: {float: [-5.0, 5.0]}\nlr: {float: [1.0e-5, 1.0], log: true}\nopt: {choice: [a, b, c, d]}\n",
        )
        .unwrap();
        let space = Space::from_file(&f, &[]).unwrap();
        let objective = |p: &super::super::sampler::Params| {
            let x = p["x"].as_f64().unwrap();
            let y = p["y"].as_f64().unwrap();
            let lr = p["lr"].as_f64().unwrap();
            let opt = if p["opt"] == "c" { 0.0 } else { 1.0 };
            (x - 1.3).powi(2) + (y + 0.7).powi(2) + (lr.log10() + 2.0).powi(2) + opt
        };
        let mut trials: Vec<TrialRecord> = Vec::new();
        let (mut reached, mut best) = (budget, f64::MAX);
        for n in 0..budget {
            let obs = observations(&trials, |v| v);
            let params = sampler.ask(&space, &obs, seed, n);
            let v = objective(&params);
            trials.push(TrialRecord::finished(
                n,
                params,
                TrialState::Complete,
                Some(v),
            ));
            best = best.min(v);
            if v <= target && reached == budget {
                reached = n + 1;
            }
        }
        (reached, best)
    }

    #[test]
    fn tpe_reaches_a_target_in_fewer_trials_than_random() {
        let tpe = SamplerConfig::Tpe {
            n_startup: 10,
            n_ei_candidates: 24,
        };
        // Over 20 seeds: the mean number of trials to get within 1.0 of the
        // minimum (not reaching it within 100 trials counts as 100), and the
        // mean best value after 100 trials.
        let (budget, seeds, target) = (100, 20, 1.0);
        let run = |s: &SamplerConfig| {
            let r: Vec<(usize, f64)> = (0..seeds)
                .map(|seed| trials_to_reach(s, seed, budget, target))
                .collect();
            let n = seeds as f64;
            (
                r.iter().map(|p| p.0 as f64).sum::<f64>() / n,
                r.iter().map(|p| p.1).sum::<f64>() / n,
            )
        };
        let (t_n, t_best) = run(&tpe);
        let (r_n, r_best) = run(&SamplerConfig::Random);
        eprintln!(
            "trials to reach loss <= {target} (cap {budget}): TPE {t_n:.1}, random {r_n:.1}; \
             best after {budget}: TPE {t_best:.3}, random {r_best:.3} (means over {seeds} seeds)"
        );
        assert!(
            t_best < 0.7 * r_best,
            "best after {budget}: TPE {t_best} vs random {r_best}"
        );
        assert!(t_n < r_n, "trials to reach: TPE {t_n} vs random {r_n}");
    }
}
