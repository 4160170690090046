//! YAML config files parsed into typed structs. Errors name the file, line
//! and column, with serde's list of the allowed keys or values.

use crate::models::ModelConfig;
use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;
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
    pub train: crate::train::config::TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
    /// The MLflow server for `fer train` (else `MLFLOW_TRACKING_URI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<crate::sweep::config::TrackingConfig>,
    /// Train this config once per seed and ship the members' average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleRunConfig>,
}

/// A seed ensemble: `fer train` trains member `s` with `seed: s` into
/// `member-<s>/` of the run folder, then writes the averaged model file.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleRunConfig {
    pub seeds: Vec<u64>,
}

/// How the final evaluation is done.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Ten-crop plus flip test-time augmentation.
    pub tta: bool,
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
        if let Some(e) = &self.ensemble {
            let mut seeds = e.seeds.clone();
            seeds.sort_unstable();
            seeds.dedup();
            if seeds.len() < 2 || seeds.len() != e.seeds.len() {
                return Err(fail(format!(
                    "ensemble.seeds must list at least 2 different seeds, got {:?}",
                    e.seeds
                )));
            }
            if !self.model.is_network() || matches!(self.model, ModelConfig::Ensemble(_)) {
                return Err(fail(format!(
                    "ensemble.seeds needs a network to train, not a {}",
                    self.model.family()
                )));
            }
        }
        Ok(())
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
