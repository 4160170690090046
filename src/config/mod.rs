//! YAML config files parsed into typed structs. Errors name the file, line
//! and column, with serde's list of the allowed keys or values.

pub mod diff;
pub mod train;

use crate::models::ModelConfig;
use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Parses `text` (read from `path`) into `T`.
pub fn parse_yaml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("{}:{}:{}", path.display(), l.line(), l.column()))
            .unwrap_or_else(|| path.display().to_string());
        anyhow!("{at}: {e}")
    })
}

/// Reads and parses a YAML file into `T`.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    parse_yaml(path, &text)
}

/// A training run: what `fer train` reads and writes back, resolved, into
/// every run folder.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Names the folder under `runs/`.
    pub name: String,
    /// One seed feeds data order, augmentation, initialisation and dropout.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub data: crate::data::DataConfig,
    pub model: crate::models::ModelConfig,
    #[serde(default)]
    pub train: train::TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    /// The MLflow server for `fer train` (else `MLFLOW_TRACKING_URI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<TrackingConfig>,
    /// Train this config once per seed and ship the members' average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleRunConfig>,
    /// Train this config once per seed, each into `seed-<s>/` of the run
    /// folder, and give every figure's mean, spread and interval across
    /// them (what one seed cannot tell: how much of a result is luck).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    /// `repeat: n`: as `seeds`, with seeds `seed`, `seed + 1`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<usize>,
    /// Cross-validation: the training images in `folds` stratified folds
    /// grouped by subject, one training per fold into `fold-<k>/`, each
    /// tested on its held-out fold; every figure's mean and spread across
    /// the folds as across seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<crate::data::folds::CvConfig>,
}

/// What the trainings of a repeated run differ in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// The seed (`seeds`, `repeat`): folders `seed-<s>/`.
    #[default]
    Seed,
    /// The cross-validation fold (`cv`): folders `fold-<k>/`.
    Fold,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Seed => "seed",
            Unit::Fold => "fold",
        }
    }

    /// The folder of training `n` (a seed or a fold number).
    pub fn dir_name(self, n: u64) -> String {
        format!("{}-{n}", self.name())
    }

    /// What a training folder's name says: its unit and number
    /// (`fold-2` gives `(Fold, "2")`), for names [`Unit::dir_name`] makes.
    pub fn of_dir(name: &str) -> Option<(Unit, &str)> {
        let (unit, n) = name.split_once('-')?;
        match unit {
            "seed" => Some((Unit::Seed, n)),
            "fold" => Some((Unit::Fold, n)),
            _ => None,
        }
    }
}

/// An ensemble: `fer train` trains each member into its own folder of the
/// run, then writes one model file averaging their probabilities. Either
/// `seeds` (this config once per seed, into `member-<seed>/`) or `members`
/// (each a seed plus its own overrides, into `member-<k>/`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnsembleRunConfig {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberConfig>,
    /// How the shipped file stores the weights. Members keep float32 files;
    /// f16 halves the size for the 20 MB release limit.
    #[serde(skip_serializing_if = "is_default")]
    pub weights: WeightsDtype,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One member of `ensemble.members`: its seed and `key: value` overrides of
/// the config's `model.` and `train.` sections, as `--set` would apply them.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub seed: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub set: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Storage type of an ensemble's model file. Inference always runs in
/// float32: half-precision weights are widened when the file is loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsDtype {
    #[default]
    F32,
    F16,
}

/// A member to train: its folder name under the run and its resolved config.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub dir: String,
    pub seed: u64,
    pub cfg: RunConfig,
}

impl RunConfig {
    /// The ensemble's members, resolved and checked; empty without an
    /// `ensemble` section.
    pub fn members(&self) -> Result<Vec<Member>> {
        let Some(e) = &self.ensemble else {
            return Ok(vec![]);
        };
        let fail = |m: String| anyhow!("invalid config: {m}");
        let base = RunConfig {
            ensemble: None,
            ..self.clone()
        };
        let members: Vec<Member> = match (e.seeds.is_empty(), e.members.is_empty()) {
            (false, true) => e
                .seeds
                .iter()
                .map(|&seed| Member {
                    dir: crate::layout::member_name(seed),
                    seed,
                    cfg: RunConfig {
                        seed,
                        ..base.clone()
                    },
                })
                .collect(),
            (true, false) => e
                .members
                .iter()
                .enumerate()
                .map(|(k, m)| {
                    let values: Vec<(String, serde_json::Value)> = m
                        .set
                        .iter()
                        .map(|(key, v)| (key.clone(), v.clone()))
                        .collect();
                    for (key, _) in &values {
                        // A whole `model` section makes a member of another family.
                        let section = key.split('.').next().unwrap_or_default();
                        if section != "model" && section != "train" {
                            return Err(fail(format!(
                                "ensemble.members[{k}].set: '{key}' is not a model or train key; \
                                 members share the data, its split and the evaluation"
                            )));
                        }
                    }
                    let cfg = apply_values(
                        RunConfig {
                            seed: m.seed,
                            ..base.clone()
                        },
                        &values,
                    )
                    .map_err(|e| fail(format!("ensemble.members[{k}].set: {e}")))?;
                    cfg.validate()
                        .map_err(|e| anyhow!("ensemble.members[{k}]: {e}"))?;
                    Ok(Member {
                        dir: crate::layout::member_name(k),
                        seed: m.seed,
                        cfg,
                    })
                })
                .collect::<Result<_>>()?,
            _ => {
                return Err(fail(
                    "ensemble needs exactly one of seeds (one config, several seeds) \
                     or members (each a seed and its own overrides)"
                        .into(),
                ))
            }
        };
        let same = (1..members.len()).find_map(|i| {
            let j = members[..i].iter().position(|b| b.cfg == members[i].cfg)?;
            Some((j, i))
        });
        if members.len() < 2 || same.is_some() {
            return Err(fail(match (e.seeds.is_empty(), same) {
                (false, _) => format!(
                    "ensemble.seeds must list at least 2 different seeds, got {:?}",
                    e.seeds
                ),
                (true, Some((j, i))) => {
                    format!("ensemble.members[{j}] and [{i}] would train the same model")
                }
                (true, None) => "ensemble.members must list at least 2 members".into(),
            }));
        }
        Ok(members)
    }
}

/// How the final evaluation is done.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Ten-crop plus flip test-time augmentation.
    pub tta: bool,
    /// Fit a post-hoc logit adjustment on validation after training and
    /// store it in the model file (src/eval/adjust.rs).
    pub logit_adjust: Option<AdjustConfig>,
}

impl RunConfig {
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| anyhow!("invalid config: {m}");
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(fail(format!(
                "name '{}' must be non-empty letters, digits, '-', '_' or '.'",
                self.name
            )));
        }
        self.data.validate().map_err(fail)?;
        self.model.validate(self.data.augment.size).map_err(fail)?;
        self.train.validate().map_err(fail)?;
        if let Some(a) = &self.eval.logit_adjust {
            a.validate().map_err(fail)?;
        }
        if self.data.val_fraction == 0.0 {
            // A refit on all of train: nothing may read the (empty) validation split.
            let t = &self.train;
            let reader = if t.select != train::Select::Last {
                Some("train.select (set it to last)")
            } else if t.early_stopping.is_some() {
                Some("train.early_stopping")
            } else if matches!(t.schedule, train::ScheduleConfig::Plateau { .. }) {
                Some("train.schedule: plateau")
            } else if self.eval.logit_adjust.is_some() {
                Some("eval.logit_adjust")
            } else {
                None
            };
            if let Some(r) = reader {
                return Err(fail(format!(
                    "data.val_fraction is 0, so there is no validation split for {r} to read"
                )));
            }
        }
        self.repeat_seeds()?;
        if let Some(cv) = &self.cv {
            cv.validate().map_err(fail)?;
            if !self.seeds.is_empty() || self.repeat.is_some() || self.ensemble.is_some() {
                return Err(fail(
                    "cv cannot be combined with seeds, repeat or ensemble: it already trains one model per fold".into(),
                ));
            }
        }
        if self.ensemble.is_some() {
            if !self.model.is_network() || matches!(self.model, ModelConfig::Ensemble(_)) {
                return Err(fail(format!(
                    "an ensemble needs a network to train, not a {}",
                    self.model.family()
                )));
            }
            self.members()?;
        }
        Ok(())
    }

    /// The seeds of a repeated config (`seeds`, or `repeat` counted from
    /// `seed`), checked; empty for a single training.
    pub fn repeat_seeds(&self) -> Result<Vec<u64>> {
        let fail = |m: String| anyhow!("invalid config: {m}");
        let seeds: Vec<u64> = match (self.seeds.is_empty(), self.repeat) {
            (true, None) => return Ok(vec![]),
            (false, Some(_)) => {
                return Err(fail(
                    "give either seeds (a list) or repeat (a count), not both".into(),
                ))
            }
            (false, None) => self.seeds.clone(),
            (true, Some(n)) => (0..n as u64).map(|i| self.seed.wrapping_add(i)).collect(),
        };
        let mut distinct = seeds.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 2 || distinct.len() != seeds.len() {
            return Err(fail(format!(
                "{} must name at least 2 different seeds, got {seeds:?}",
                if self.seeds.is_empty() {
                    "repeat"
                } else {
                    "seeds"
                }
            )));
        }
        if self.ensemble.is_some() {
            return Err(fail(
                "seeds/repeat and ensemble cannot be combined: an ensemble already trains one member per seed".into(),
            ));
        }
        Ok(seeds)
    }

    /// Whether the config asks for several trainings of one recipe: seeds
    /// (`seeds` or `repeat`) or cross-validation folds (`cv`, not one fold).
    pub fn is_repeated(&self) -> bool {
        !self.seeds.is_empty()
            || self.repeat.is_some()
            || self.cv.as_ref().is_some_and(|c| c.fold.is_none())
    }

    /// The trainings of a repeated config: what varies (seed or fold), and
    /// each one's number (the seed, or the 1-based fold) and config.
    pub fn repeat_units(&self) -> Result<(Unit, Vec<(u64, RunConfig)>)> {
        if let Some(cv) = self.cv.as_ref().filter(|c| c.fold.is_none()) {
            let units = (1..=cv.folds)
                .map(|k| {
                    let mut c = self.clone();
                    c.cv = Some(crate::data::folds::CvConfig {
                        fold: Some(k),
                        ..cv.clone()
                    });
                    (k as u64, c)
                })
                .collect();
            return Ok((Unit::Fold, units));
        }
        let seeds = self.repeat_seeds()?;
        Ok((
            Unit::Seed,
            seeds.into_iter().map(|s| (s, self.with_seed(s))).collect(),
        ))
    }

    /// One training of a repeated config: this config with `seed` and
    /// without the repetition.
    pub fn with_seed(&self, seed: u64) -> RunConfig {
        RunConfig {
            seed,
            seeds: vec![],
            repeat: None,
            ..self.clone()
        }
    }

    /// Loads a run config file, applies `--set key=value` overrides, and
    /// validates the result.
    pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig> {
        let cfg: RunConfig = load_yaml(path)?;
        let cfg = apply_overrides(cfg, overrides)
            .with_context(|| format!("applying --set to {}", path.display()))?;
        cfg.validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(cfg)
    }

    pub fn to_yaml(&self) -> Result<String> {
        serde_saphyr::to_string(self).map_err(|e| anyhow!("serialising the config: {e}"))
    }
}

/// Applies `a.b.c=value` overrides to a typed config: the value is parsed as
/// YAML, set at the path, and the whole config re-checked against its types,
/// so an unknown key or a wrong type is an error naming the key.
pub fn apply_overrides<T>(cfg: T, overrides: &[String]) -> Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut values = Vec::new();
    for o in overrides {
        let (key, raw) = o
            .split_once('=')
            .ok_or_else(|| anyhow!("--set '{o}': expected key=value"))?;
        let value: serde_json::Value = serde_saphyr::from_str(raw)
            .map_err(|e| anyhow!("--set {key}: cannot parse '{raw}': {e}"))?;
        values.push((key.to_string(), value));
    }
    apply_values(cfg, &values).map_err(|e| anyhow!("--set {e}"))
}

/// Sets each dotted `key` to its value and re-checks the types after each.
pub fn apply_values<T>(cfg: T, values: &[(String, serde_json::Value)]) -> Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    if values.is_empty() {
        return Ok(cfg);
    }
    let mut tree = serde_json::to_value(&cfg)?;
    for (key, value) in values {
        let mut node = &mut tree;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let obj = node
                .as_object_mut()
                .ok_or_else(|| anyhow!("{key}: '{}' is not a section", parts[..i].join(".")))?;
            if i + 1 == parts.len() {
                obj.insert(part.to_string(), value.clone());
                break;
            }
            node = obj
                .entry(part.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
        }
        // Check each override on its own, so the error names it.
        let shown = match value {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        serde_json::from_value::<T>(tree.clone()).map_err(|e| anyhow!("{key}={shown}: {e}"))?;
    }
    Ok(serde_json::from_value(tree)?)
}

/// The tracking group: the MLflow server for this experiment (none: local
/// folders only, unless `MLFLOW_TRACKING_URI` is set). See docs/tracking.md.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingConfig {
    pub uri: Option<String>,
}

/// `eval.logit_adjust`: fit alpha on validation at the end of training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdjustConfig {
    /// The validation metric alpha maximises.
    pub select: train::Select,
    /// The grid `min, min + step, ..., max`.
    pub min: f64,
    pub max: f64,
    pub step: f64,
}

impl Default for AdjustConfig {
    fn default() -> Self {
        AdjustConfig {
            select: train::Select::ValAcc,
            min: -0.5,
            max: 1.0,
            step: 0.05,
        }
    }
}

impl AdjustConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.select == train::Select::Last {
            return Err(
                "eval.logit_adjust.select must be val_acc, val_loss or val_f1_macro, not last"
                    .into(),
            );
        }
        if !(self.min.is_finite() && self.max.is_finite() && self.min <= self.max) {
            return Err(format!(
                "eval.logit_adjust: min ({}) must be finite and at most max ({})",
                self.min, self.max
            ));
        }
        if !(self.step > 0.0 && self.step.is_finite()) {
            return Err(format!(
                "eval.logit_adjust.step must be above 0, got {}",
                self.step
            ));
        }
        let n = ((self.max - self.min) / self.step).round() + 1.0;
        if n > 1001.0 {
            return Err(format!(
                "eval.logit_adjust: the grid from {} to {} by {} has {n} points; at most 1001",
                self.min, self.max, self.step
            ));
        }
        Ok(())
    }

    /// The grid's points, rounded so that 0 and the ends come out exact.
    pub fn grid(&self) -> Vec<f64> {
        let n = ((self.max - self.min) / self.step + 1e-9).floor() as usize + 1;
        (0..n)
            .map(|i| ((self.min + i as f64 * self.step) * 1e6).round() / 1e6)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataConfig;

    fn parse(text: &str) -> Result<DataConfig> {
        parse_yaml(Path::new("cfg.yaml"), text)
    }

    #[test]
    fn typo_in_a_key_names_line_and_choices() {
        let err = parse("val_fraction: 0.1\nsplit_sed: 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cfg.yaml:2:"), "{err}");
        assert!(
            err.contains("split_sed") && err.contains("split_seed"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_and_bad_enum_value_are_errors() {
        let err = parse("val_fraction: lots\n").unwrap_err().to_string();
        assert!(err.contains("cfg.yaml:1:"), "{err}");
        let err = parse("on_bad_input: ignore\n").unwrap_err().to_string();
        assert!(err.contains("skip") && err.contains("error"), "{err}");
        let err = parse("augment:\n  crop: zoom\n").unwrap_err().to_string();
        assert!(
            err.contains("cfg.yaml:2:") && err.contains("resized"),
            "{err}"
        );
    }

    fn ensemble(section: &str) -> Result<Vec<Member>> {
        let text = format!(
            "name: e\nmodel: {{kind: cnn, widths: [8, 16]}}\ntrain: {{epochs: 2}}\nensemble:\n{section}"
        );
        let cfg: RunConfig = parse_yaml(Path::new("e.yaml"), &text)?;
        cfg.validate()?;
        cfg.members()
    }

    #[test]
    fn ensemble_members_resolve_their_overrides_and_folders() {
        let m = ensemble("  seeds: [4, 2]\n").unwrap();
        let dirs: Vec<(&str, u64)> = m.iter().map(|m| (m.dir.as_str(), m.cfg.seed)).collect();
        assert_eq!(dirs, [("member-4", 4), ("member-2", 2)]);

        let m = ensemble(
            "  members:\n    - {seed: 0}\n    - {seed: 0, set: {model.widths: [4, 8], train.epochs: 5}}\n",
        )
        .unwrap();
        assert_eq!((m[1].dir.as_str(), m[1].cfg.train.epochs), ("member-1", 5));
        assert_eq!(m[0].cfg.train.epochs, 2);
        match (&m[0].cfg.model, &m[1].cfg.model) {
            (ModelConfig::Cnn(a), ModelConfig::Cnn(b)) => {
                assert_eq!(
                    (a.widths.clone(), b.widths.clone()),
                    (vec![8, 16], vec![4, 8])
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(m.iter().all(|m| m.cfg.ensemble.is_none()));

        // A whole model section gives a member of another family.
        let m = ensemble(
            "  members:\n    - {seed: 0}\n    - {seed: 0, set: {model: {kind: resnet18, stem: imagenet}}}\n",
        )
        .unwrap();
        assert_eq!(m[1].cfg.model.family(), "resnet18");
        let e = ensemble("  members:\n    - {seed: 0}\n    - {seed: 0, set: {model: {kind: resnet18, widths: [4]}}}\n")
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("ensemble.members[1].set"),
            "{e:#}"
        );
    }

    #[test]
    fn bad_ensemble_sections_are_refused_with_the_reason() {
        let err = |section: &str| format!("{:#}", ensemble(section).unwrap_err());
        let e = err("  seeds: [1, 1]\n");
        assert!(e.contains("at least 2 different seeds"), "{e}");
        let e = err("  seeds: [1, 2]\n  members: [{seed: 3}, {seed: 4}]\n");
        assert!(e.contains("exactly one of seeds"), "{e}");
        let e = err("  members: [{seed: 3}, {seed: 3, set: {train.epochs: 2}}]\n");
        assert!(
            e.contains("members[0] and [1] would train the same model"),
            "{e}"
        );
        let e = err("  members: [{seed: 3}, {seed: 4, set: {name: x}}]\n");
        assert!(e.contains("members[1].set: 'name'"), "{e}");
        let e = err("  members: [{seed: 3}, {seed: 4, set: {train.epochs: many}}]\n");
        assert!(
            e.contains("members[1].set") && e.contains("train.epochs"),
            "{e}"
        );
        let e = err("  members: [{seed: 3}]\n");
        assert!(e.contains("at least 2 members"), "{e}");
        let e = err("  seeds: [1, 2]\n  weights: f8\n");
        assert!(e.contains("e.yaml:") && e.contains("f16"), "{e}");
    }

    #[test]
    fn repeated_configs_name_their_seeds_or_say_what_is_wrong() {
        let cfg = |extra: &str| -> Result<RunConfig> {
            let c: RunConfig = parse_yaml(
                Path::new("r.yaml"),
                &format!("name: r\nseed: 5\nmodel: {{kind: mlp}}\n{extra}"),
            )?;
            c.validate()?;
            Ok(c)
        };
        assert_eq!(
            cfg("repeat: 3\n").unwrap().repeat_seeds().unwrap(),
            [5, 6, 7]
        );
        assert_eq!(
            cfg("seeds: [9, 1]\n").unwrap().repeat_seeds().unwrap(),
            [9, 1]
        );
        assert!(cfg("").unwrap().repeat_seeds().unwrap().is_empty());
        let one = cfg("repeat: 3\n").unwrap().with_seed(6);
        assert_eq!((one.seed, one.repeat, one.seeds.len()), (6, None, 0));
        let err = |extra: &str| format!("{:#}", cfg(extra).unwrap_err());
        assert!(err("repeat: 1\n").contains("repeat must name at least 2 different seeds"));
        assert!(err("seeds: [1, 1]\n").contains("seeds must name at least 2 different"));
        assert!(err("seeds: [1, 2]\nrepeat: 2\n").contains("not both"));
        assert!(err("repeat: 2\nensemble: {seeds: [1, 2]}\n").contains("cannot be combined"));
        let e = err("repeat: three\n");
        assert!(e.contains("r.yaml:") && e.contains("repeat"), "{e}");
    }

    #[test]
    fn shipped_data_config_parses_and_validates() {
        let cfg: DataConfig = load_yaml(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/configs/data/fer2013.yaml"
        )))
        .unwrap();
        cfg.validate().unwrap();
    }
}
