//! Search spaces in YAML: float (uniform or log-uniform), int (with step,
//! optionally log) and categorical parameters, keyed by dotted config paths,
//! plus a conditional `model` entry: one sub-space per model family.
//!
//! ```yaml
//! space:
//!   train.optimizer.lr: {float: [0.005, 0.1], log: true}
//!   train.batch_size: {int: [32, 128], step: 32}
//!   model:
//!     cnn: {dropout: {float: [0.2, 0.6]}}
//!     mlp: {}
//! ```

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One parameter's distribution. Exactly one of `float`, `int`, `choice`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub float: Option<[f64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int: Option<[i64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<Vec<serde_json::Value>>,
    /// Sample in log space (float and int).
    #[serde(default)]
    pub log: bool,
    /// Grid step for int.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
}

/// A validated distribution.
#[derive(Clone, Debug, PartialEq)]
pub enum Dist {
    Float {
        low: f64,
        high: f64,
        log: bool,
    },
    Int {
        low: i64,
        high: i64,
        step: i64,
        log: bool,
    },
    Choice(Vec<serde_json::Value>),
}

impl ParamSpec {
    pub fn dist(&self, name: &str) -> Result<Dist, String> {
        let set =
            self.float.is_some() as u8 + self.int.is_some() as u8 + self.choice.is_some() as u8;
        if set != 1 {
            return Err(format!(
                "space.{name}: give exactly one of `float: [low, high]`, `int: [low, high]` or `choice: [...]`"
            ));
        }
        if let Some([low, high]) = self.float {
            if low >= high || !low.is_finite() || !high.is_finite() {
                return Err(format!(
                    "space.{name}: empty range [{low}, {high}]; need low < high"
                ));
            }
            if self.log && low <= 0.0 {
                return Err(format!("space.{name}: log scale needs low > 0, got {low}"));
            }
            return Ok(Dist::Float {
                low,
                high,
                log: self.log,
            });
        }
        if let Some([low, high]) = self.int {
            let step = self.step.unwrap_or(1);
            if low >= high || step <= 0 || (high - low) < step {
                return Err(format!(
                    "space.{name}: empty range [{low}, {high}] with step {step}; need low < high and step <= high - low"
                ));
            }
            if self.log && (low <= 0 || step != 1) {
                return Err(format!("space.{name}: log scale needs low > 0 and step 1"));
            }
            return Ok(Dist::Int {
                low,
                high,
                step,
                log: self.log,
            });
        }
        let c = self.choice.clone().unwrap_or_default();
        if c.is_empty() {
            return Err(format!("space.{name}: `choice` is empty"));
        }
        if self.log || self.step.is_some() {
            return Err(format!(
                "space.{name}: `log` and `step` apply to float and int only"
            ));
        }
        Ok(Dist::Choice(c))
    }
}

impl Dist {
    pub fn sample(&self, rng: &mut impl Rng) -> serde_json::Value {
        match self {
            Dist::Float { low, high, log } => {
                let v = if *log {
                    rng.random_range(low.ln()..=high.ln()).exp()
                } else {
                    rng.random_range(*low..=*high)
                };
                serde_json::json!(v)
            }
            Dist::Int {
                low,
                high,
                step,
                log,
            } => {
                let v = if *log {
                    let x = rng
                        .random_range((*low as f64).ln()..=((*high as f64) + 0.999).ln())
                        .exp();
                    (x.floor() as i64).clamp(*low, *high)
                } else {
                    low + step * rng.random_range(0..=(high - low) / step)
                };
                serde_json::json!(v)
            }
            Dist::Choice(c) => c[rng.random_range(0..c.len())].clone(),
        }
    }

    /// Internal numeric representation for density estimation: floats and
    /// ints in (log) value space; choices by index.
    pub fn to_internal(&self, v: &serde_json::Value) -> Option<f64> {
        match self {
            Dist::Float { log, .. } => v.as_f64().map(|x| if *log { x.ln() } else { x }),
            Dist::Int { log, .. } => v.as_f64().map(|x| if *log { x.ln() } else { x }),
            Dist::Choice(c) => c.iter().position(|x| x == v).map(|i| i as f64),
        }
    }

    /// Inverse of `to_internal`, rounding ints to their grid.
    pub fn from_internal(&self, x: f64) -> serde_json::Value {
        match self {
            Dist::Float { low, high, log } => {
                let v = if *log { x.exp() } else { x };
                serde_json::json!(v.clamp(*low, *high))
            }
            Dist::Int {
                low,
                high,
                step,
                log,
            } => {
                let v = if *log { x.exp() } else { x };
                let k = ((v - *low as f64) / *step as f64).round() as i64;
                serde_json::json!((low + k * step).clamp(*low, *high))
            }
            Dist::Choice(c) => c[(x as usize).min(c.len() - 1)].clone(),
        }
    }

    /// Internal bounds (for the Parzen estimator's prior and clipping).
    pub fn internal_bounds(&self) -> (f64, f64) {
        match self {
            Dist::Float { low, high, log } => {
                if *log {
                    (low.ln(), high.ln())
                } else {
                    (*low, *high)
                }
            }
            Dist::Int {
                low,
                high,
                step,
                log,
            } => {
                if *log {
                    (
                        (*low as f64 - 0.5).max(1e-9).ln(),
                        (*high as f64 + 0.5).ln(),
                    )
                } else {
                    (
                        *low as f64 - 0.5 * *step as f64,
                        *high as f64 + 0.5 * *step as f64,
                    )
                }
            }
            Dist::Choice(c) => (0.0, c.len() as f64),
        }
    }
}

/// The search space as written: dotted paths, and optionally `model`, a
/// map from family name to that family's own sub-space.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpaceFile(pub BTreeMap<String, serde_json::Value>);

/// A validated space: flat parameters, and per-family conditional ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Space {
    pub params: Vec<(String, Dist)>,
    /// Family name -> its parameters (paths relative to `model.`).
    pub families: Vec<(String, Vec<(String, Dist)>)>,
}

/// The name under which a family choice is recorded in trial params.
pub const FAMILY: &str = "model";

impl Space {
    pub fn from_file(f: &SpaceFile, known_families: &[&str]) -> Result<Space, String> {
        let mut space = Space::default();
        for (key, v) in &f.0 {
            if key == FAMILY {
                let fams = v.as_object().ok_or_else(|| {
                    "space.model: expected a map from model family to its parameters, e.g. `model: {cnn: {dropout: {float: [0.2, 0.5]}}, mlp: {}}`".to_string()
                })?;
                if fams.is_empty() {
                    return Err("space.model: no families given".into());
                }
                for (fam, sub) in fams {
                    if !known_families.contains(&fam.as_str()) {
                        return Err(format!(
                            "space.model: unknown model family '{fam}'; expected one of: {}",
                            known_families.join(", ")
                        ));
                    }
                    let mut ps = Vec::new();
                    if let Some(obj) = sub.as_object() {
                        for (k, spec) in obj {
                            let name = format!("model.{k}");
                            ps.push((name.clone(), parse_spec(&format!("model.{fam}.{k}"), spec)?));
                        }
                    } else if !sub.is_null() {
                        return Err(format!(
                            "space.model.{fam}: expected a map of parameters (or {{}})"
                        ));
                    }
                    space.families.push((fam.clone(), ps));
                }
            } else {
                space.params.push((key.clone(), parse_spec(key, v)?));
            }
        }
        Ok(space)
    }

    /// Every distribution a trial of `family` uses, by parameter name.
    pub fn dists_for(&self, family: Option<&str>) -> Vec<(String, Dist)> {
        let mut out = self.params.clone();
        if let Some(f) = family {
            if let Some((_, ps)) = self.families.iter().find(|(n, _)| n == f) {
                out.extend(ps.iter().cloned());
            }
        }
        out
    }

    /// The categorical over families, if the space has one.
    pub fn family_dist(&self) -> Option<Dist> {
        (!self.families.is_empty()).then(|| {
            Dist::Choice(
                self.families
                    .iter()
                    .map(|(n, _)| serde_json::json!(n))
                    .collect(),
            )
        })
    }
}

fn parse_spec(name: &str, v: &serde_json::Value) -> Result<Dist, String> {
    let spec: ParamSpec =
        serde_json::from_value(v.clone()).map_err(|e| format!("space.{name}: {e}"))?;
    spec.dist(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn space(yaml: &str) -> Result<Space, String> {
        let f: SpaceFile = serde_saphyr::from_str(yaml).unwrap();
        Space::from_file(&f, &["mlp", "cnn", "resnet18", "vit"])
    }

    #[test]
    fn samples_respect_bounds_steps_and_log() {
        let s = space(
            "lr: {float: [0.001, 0.1], log: true}\nbs: {int: [32, 128], step: 32}\nopt: {choice: [sgd, adamw]}\n",
        )
        .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut small = 0;
        for _ in 0..2000 {
            for (name, d) in &s.params {
                let v = d.sample(&mut rng);
                match name.as_str() {
                    "lr" => {
                        let x = v.as_f64().unwrap();
                        assert!((0.001..=0.1).contains(&x));
                        small += (x < 0.01) as usize;
                    }
                    "bs" => assert!([32, 64, 96, 128].contains(&v.as_i64().unwrap())),
                    _ => assert!(v == "sgd" || v == "adamw"),
                }
            }
        }
        // Log-uniform: half the mass lies below the geometric midpoint 0.01.
        assert!((small as f64 / 2000.0 - 0.5).abs() < 0.05, "{small}");
        let d = &s.params.iter().find(|(n, _)| n == "lr").unwrap().1;
        let v = serde_json::json!(0.01);
        assert!(
            (d.from_internal(d.to_internal(&v).unwrap())
                .as_f64()
                .unwrap()
                - 0.01)
                .abs()
                < 1e-12
        );
    }

    #[test]
    fn conditional_families() {
        let s = space("model:\n  cnn: {dropout: {float: [0.1, 0.5]}}\n  mlp: {}\n").unwrap();
        assert_eq!(s.families.len(), 2);
        assert_eq!(s.dists_for(Some("cnn")).len(), 1);
        assert_eq!(s.dists_for(Some("mlp")).len(), 0);
        assert!(s.family_dist().is_some());
    }

    #[test]
    fn bad_spaces_name_the_parameter() {
        let e = space("lr: {float: [0.1, 0.1]}\n").unwrap_err();
        assert!(e.contains("space.lr") && e.contains("empty range"), "{e}");
        let e = space("bs: {int: [64, 32]}\n").unwrap_err();
        assert!(e.contains("space.bs") && e.contains("empty range"), "{e}");
        let e = space("lr: {float: [0.0, 0.1], log: true}\n").unwrap_err();
        assert!(e.contains("log scale"), "{e}");
        let e = space("lr: {uniform: [0, 1]}\n").unwrap_err();
        assert!(e.contains("space.lr") && e.contains("uniform"), "{e}");
        let e = space("model: {transformer: {}}\n").unwrap_err();
        assert!(e.contains("transformer") && e.contains("resnet18"), "{e}");
        let e = space("opt: {choice: []}\n").unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }
}
