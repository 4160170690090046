//! YAML config files parsed into typed structs. Errors name the file, line
//! and column, with serde's list of the allowed keys or values.

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
