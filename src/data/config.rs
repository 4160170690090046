//! The `data` config group: where the data set is, how it is read, and how
//! the validation split is carved. Parsed from YAML with unknown keys denied.

use super::augment::AugmentConfig;
use super::issues::BadInputPolicy;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Data set layout on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// Folders if `train/` exists, else `fer2013.csv` (or the one CSV given).
    #[default]
    Auto,
    /// Kaggle `msambare/fer2013`: `train/<class>/*.jpg`, `test/<class>/*.jpg`.
    Folders,
    /// The challenge CSV: `emotion,pixels,Usage`.
    Csv,
}

/// What a load does with an image that is not 48x48 8-bit grey.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Convert {
    /// `strict` for FER-2013 (every face of it is 48x48 grey, so another
    /// size is a damaged file), `resize` for any other data set.
    #[default]
    Auto,
    /// Flag it (`wrong_size`, `not_grayscale`) under `on_bad_input`.
    Strict,
    /// Convert it: to grey (ITU-R 601 luma), the centre square of its
    /// shorter side, resized to 48x48 with a triangle (area-like) filter.
    Resize,
}

impl Convert {
    /// The policy for a data set with `classes`: `auto` resolved.
    pub fn resolve(self, classes: &[String]) -> Convert {
        match self {
            Convert::Auto if super::fer2013::is_fer(classes) => Convert::Strict,
            Convert::Auto => Convert::Resize,
            other => other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Convert::Auto => "auto",
            Convert::Strict => "strict",
            Convert::Resize => "resize",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Data set folder (or CSV file). `--data` overrides it; `$FER2013_DIR`
    /// stands in for the default folder only (see [`DataConfig::fer2013_env`]).
    pub dir: PathBuf,
    pub format: DataFormat,
    /// Class names in label order. Unset: FER-2013's order when the class
    /// folders are its seven, else the folder names sorted. Set: these
    /// folders only (others are skipped with a warning); a CSV's integer
    /// labels index this list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Images that are not 48x48 grey: flagged or converted.
    pub convert: Convert,
    /// With no `test/` folder, hold out this fraction of the images as the
    /// test split (stratified, seeded by `split_seed`); 0 leaves it empty.
    pub test_fraction: f64,
    /// With no `test/` folder, the images named in this file (one path a
    /// line as the data set lists them, `train/<class>/<file>`; `#`
    /// comments) are the test split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_list: Option<PathBuf>,
    /// Named groups within the test split, each scored apart (FER-2013's
    /// halves are its groups by default, from the file names).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_groups: Option<super::folds::TestGroups>,
    /// Fraction of train held out, stratified by class, for model selection.
    pub val_fraction: f64,
    /// Seed of the validation split (independent of the training seed, so a
    /// sweep compares trials on the same validation images).
    pub split_seed: u64,
    pub on_bad_input: BadInputPolicy,
    /// Cache decoded pixels under `runs/cache/`.
    pub cache: bool,
    /// Images whose pixel standard deviation is below this are flagged blank.
    pub blank_std: f64,
    /// Drop train images whose pixels exactly equal a test image's, so the
    /// test score is not inflated by leaked faces. Off by default to keep the
    /// standard split comparable with published numbers.
    pub drop_test_duplicates: bool,
    pub augment: AugmentConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dir: PathBuf::from("data/fer2013"),
            format: DataFormat::Auto,
            classes: None,
            convert: Convert::Auto,
            test_fraction: 0.0,
            test_list: None,
            test_groups: None,
            val_fraction: 0.1,
            split_seed: 0,
            on_bad_input: BadInputPolicy::Skip,
            cache: true,
            blank_std: 3.0,
            drop_test_duplicates: false,
            augment: AugmentConfig::default(),
        }
    }
}

impl DataConfig {
    /// The folder `$FER2013_DIR` gives a config: only one that leaves `dir`
    /// at the default names FER-2013 by it. A config naming its own data
    /// set keeps it, so an exported variable never trains a recipe on
    /// FER-2013 that was written for other data.
    pub fn fer2013_env(&self) -> Option<PathBuf> {
        let default = self.dir == DataConfig::default().dir;
        default
            .then(|| std::env::var_os("FER2013_DIR"))
            .flatten()
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }

    /// Checks values that types cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(g) = &self.test_groups {
            g.validate()?;
        }
        if !(0.0..0.9).contains(&self.val_fraction) {
            return Err(format!(
                "data.val_fraction must be in [0, 0.9), got {}",
                self.val_fraction
            ));
        }
        if !(0.0..0.9).contains(&self.test_fraction) {
            return Err(format!(
                "data.test_fraction must be in [0, 0.9), got {}",
                self.test_fraction
            ));
        }
        if self.test_list.is_some() && self.test_fraction > 0.0 {
            return Err("data: give either test_fraction or test_list, not both".into());
        }
        if let Some(classes) = &self.classes {
            check_class_names(classes).map_err(|e| format!("data.classes: {e}"))?;
        }
        if self.blank_std < 0.0 {
            return Err(format!(
                "data.blank_std must be >= 0, got {}",
                self.blank_std
            ));
        }
        self.augment.validate()
    }
}

/// Class names usable as folder names and report columns: at least two,
/// none empty or with a path separator, no two equal but for case.
pub fn check_class_names(classes: &[String]) -> Result<(), String> {
    if classes.len() < 2 {
        return Err(format!(
            "{} class(es) {classes:?}; expected at least two",
            classes.len()
        ));
    }
    if classes.len() > 255 {
        return Err(format!(
            "{} classes; at most 255 are supported",
            classes.len()
        ));
    }
    for (i, c) in classes.iter().enumerate() {
        if c.trim().is_empty() || c.contains(['/', '\\', ',', '=']) || c.trim() != c {
            return Err(format!(
                "class name {c:?} must be non-empty, without surrounding spaces, '/', '\\', ',' or '='"
            ));
        }
        if classes[..i].iter().any(|d| d.eq_ignore_ascii_case(c)) {
            return Err(format!("class {c:?} is listed twice"));
        }
    }
    Ok(())
}
