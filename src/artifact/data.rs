//! A model's data: the data set it is evaluated on and the train/validation
//! split its weights were selected on, with the one policy for data that is
//! not what the model was trained on (another copy or version, told by the
//! digest). Reading that data's validation split is refused, because the
//! split would hold other images than the model's; evaluating a test folder
//! of other data is allowed, with a note for the person at the terminal.
//! A folder with `test/` and no `train/` is such a test set: it is read
//! alone for test use, and refused for validation (there is no split).
//! The data is read in the model's classes and conversion; another data
//! set's classes are read as the model's through a class map.

use super::file::ModelMeta;
use crate::data::classmap::{ClassMap, Mapped};
use crate::data::load::Loaded;
use crate::data::split::TrainVal;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// What the caller will read of the model's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataUse {
    /// The validation split (or the training images): must be the model's data.
    Validation,
    /// The test folder only: other data is allowed, with a note.
    Test,
}

/// A model's data set, as [`ModelMeta::load_data`] found it.
pub struct ModelData {
    pub loaded: Loaded,
    /// The train/validation split the model was selected on.
    pub split: TrainVal,
    /// The folder it was read from, for messages.
    pub dir: PathBuf,
    /// Set when the data's digest differs from the model's (only for
    /// [`DataUse::Test`]; validation use is refused instead).
    pub note: Option<String>,
    /// What the class map did, when one was given.
    pub mapped: Option<Mapped>,
}

impl ModelMeta {
    /// The data set from `dir` (default: the data config's own default) and
    /// the train/validation split these weights were selected on, checked
    /// against the model's data digest for `purpose`.
    pub fn load_data(&self, dir: Option<&Path>, purpose: DataUse) -> Result<ModelData> {
        self.load_data_mapped(dir, purpose, None)
    }

    /// As [`ModelMeta::load_data`]; with `map`, the data is another data
    /// set read in its own classes and conversion, then relabelled into the
    /// model's classes (test use only).
    pub fn load_data_mapped(
        &self,
        dir: Option<&Path>,
        purpose: DataUse,
        map: Option<&ClassMap>,
    ) -> Result<ModelData> {
        let mut cfg = crate::data::DataConfig {
            val_fraction: self.val_fraction,
            split_seed: self.split_seed,
            classes: Some(self.classes.clone()),
            convert: self.convert,
            test_groups: self.test_groups.clone(),
            ..crate::data::DataConfig::default()
        };
        if let (Some(cv), DataUse::Validation) = (&self.cv, purpose) {
            bail!(
                "these weights are cross-validation fold {} of {}: their validation split was carved from the other folds' images, not from train/; evaluate them on a test split",
                cv.fold.unwrap_or(0),
                cv.folds
            );
        }
        if map.is_some() {
            if purpose == DataUse::Validation {
                bail!("a class map reads another data set, which holds no validation split of this model; use it with the test split");
            }
            cfg.classes = None;
            cfg.convert = crate::data::Convert::Auto;
            // Another data set's file names are not the model's groups.
            cfg.test_groups = None;
        }
        if let Some(d) = dir {
            cfg.dir = d.to_path_buf();
        }
        let test_only = crate::data::is_test_only(&cfg.dir);
        let mut loaded = match (test_only, purpose) {
            (false, _) => crate::data::load(&cfg, &crate::layout::cache_dir())?,
            (true, DataUse::Test) => {
                crate::data::load_test_folder(&cfg, &crate::layout::cache_dir())?
            }
            (true, DataUse::Validation) => bail!(
                "{}: no train/ folder, so no validation split (it is carved from train/ with the model's split seed); this folder has only test/, which `fer eval --split test` can evaluate",
                cfg.dir.display()
            ),
        };
        let mapped = match map {
            Some(m) => Some(m.apply(&mut loaded.data, &self.classes)?),
            None => None,
        };
        let mut note = digest_note(&self.data_digest, &loaded.data.digest, &cfg.dir, purpose)?;
        if test_only {
            // Its digest covers test/ alone, so it never matches: say why
            // rather than suggest other data.
            note = note.map(|n| format!("{n} (it covers test/ alone: there is no train/ here)"));
        }
        let split = crate::data::split::stratified(
            &loaded.data.train.labels,
            self.val_fraction,
            self.split_seed,
        );
        Ok(ModelData {
            loaded,
            split,
            dir: cfg.dir,
            note,
            mapped,
        })
    }
}

/// The digest policy: `Ok(None)` for the model's own data, a note for other
/// data used as a test set, an error for other data used for validation.
fn digest_note(model: &str, data: &str, dir: &Path, purpose: DataUse) -> Result<Option<String>> {
    if model == data {
        return Ok(None);
    }
    let short = |d: &str| d[..12.min(d.len())].to_string();
    match purpose {
        DataUse::Validation => bail!(
            "{}: data digest {} is not the model's {} (another copy or version of the data), so its validation split would hold other images; use the data the model was trained on",
            dir.display(),
            data,
            model
        ),
        DataUse::Test => Ok(Some(format!(
            "note: data digest {} differs from the model's training data {}",
            short(data),
            short(model)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_data_is_a_note_for_test_and_an_error_for_validation() {
        let dir = Path::new("d");
        assert_eq!(
            digest_note("abc", "abc", dir, DataUse::Validation).unwrap(),
            None
        );
        assert_eq!(digest_note("abc", "abc", dir, DataUse::Test).unwrap(), None);
        let note = digest_note("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", dir, DataUse::Test)
            .unwrap()
            .unwrap();
        assert!(note.contains("bbbbbbbbbbbb differs") && note.contains("aaaaaaaaaaaa"));
        let err = digest_note("aaaa", "bbbb", dir, DataUse::Validation).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("d: data digest bbbb is not the model's aaaa"));
    }
}
