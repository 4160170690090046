//! The model file's format: safetensors weights with the model config, class
//! names, preprocessing, validation split and provenance in the metadata
//! (`fer.meta`), an optional logit adjustment, and for int8 files the
//! quantization record (`int8`). A file alone is enough to evaluate or serve.
//!
//! A file is checked whole when read, before any network is built from it:
//! every metadata field against its range and the other fields, then the
//! tensors against the metadata (`ModelFile::check`). Whatever its bytes, a
//! file gives a model or an error naming the file and the field or tensor.

use super::int8::{self, QuantMeta};
use crate::data::augment::AugmentConfig;
use crate::data::Convert;
use crate::models::ModelConfig;
use crate::tensor_io;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Kind, Tensor};

pub const FORMAT: &str = "fer-model/1";

/// What a model file says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub name: String,
    pub model: ModelConfig,
    /// The evaluation transform (crop size and normalisation).
    pub preprocess: AugmentConfig,
    /// Class names in label order: the outputs' meaning.
    pub classes: Vec<String>,
    /// How images that are not 48x48 grey become the model's input (files
    /// from before it existed: `auto`, which is `strict` for FER-2013).
    #[serde(default)]
    pub convert: Convert,
    /// The cross-validation fold these weights were trained for: its
    /// validation split is carved from the other folds, not from train.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<crate::data::folds::CvConfig>,
    /// The test split's named groups, scored apart (`data.test_groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_groups: Option<crate::data::folds::TestGroups>,
    /// Training-split class frequencies (the baselines' predictions).
    pub prior: Vec<f32>,
    pub seed: u64,
    pub data_digest: String,
    pub params: u64,
    pub macs: u64,
    /// Validation metrics of these weights, when known.
    #[serde(default)]
    pub val_accuracy: Option<f64>,
    /// The validation split these weights were selected on.
    pub val_fraction: f64,
    pub split_seed: u64,
    /// Post-hoc logit adjustment fitted on validation (`eval.logit_adjust`,
    /// `fer calibrate`); applied to every prediction of this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_adjust: Option<LogitAdjust>,
}

/// The adjustment a model file applies: `bias_c = alpha * ln prior_c`, added to
/// the log-probabilities before renormalising.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogitAdjust {
    pub alpha: f64,
    pub bias: Vec<f32>,
}

impl LogitAdjust {
    pub fn new(alpha: f64, prior: &[f32]) -> LogitAdjust {
        LogitAdjust {
            alpha,
            // A class absent from training would give ln 0; floor it.
            bias: prior
                .iter()
                .map(|&p| (alpha * (p as f64).max(1e-6).ln()) as f32)
                .collect(),
        }
    }

    /// Rewrites `probs` (`n x k`, rows summing to 1) in place.
    pub fn apply(&self, probs: &mut [f32]) {
        let k = self.bias.len();
        let scale: Vec<f64> = self.bias.iter().map(|&b| (b as f64).exp()).collect();
        for row in probs.chunks_exact_mut(k) {
            let total: f64 = row.iter().zip(&scale).map(|(&p, s)| p as f64 * s).sum();
            if total > 0.0 {
                for (p, s) in row.iter_mut().zip(&scale) {
                    *p = (*p as f64 * s / total) as f32;
                }
            }
        }
    }
}

/// Writes the model file.
pub fn save(path: &Path, meta: &ModelMeta, vs: Option<&nn::VarStore>) -> Result<()> {
    let tensors = match vs {
        Some(vs) => vs.variables().into_iter().collect(),
        None => BTreeMap::new(),
    };
    save_tensors(path, meta, tensors, BTreeMap::new())
}

/// Writes a model file from named weights (plus the prior), with `extra`
/// metadata beside `fer.format` and `fer.meta`.
pub fn save_tensors(
    path: &Path,
    meta: &ModelMeta,
    weights: BTreeMap<String, Tensor>,
    extra: BTreeMap<String, String>,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = weights.into_iter().collect();
    tensors.push(("prior".into(), Tensor::from_slice(&meta.prior)));
    let mut md = extra;
    md.insert("fer.format".into(), FORMAT.into());
    md.insert("fer.meta".into(), serde_json::to_string(meta)?);
    tensor_io::save(path, &tensors, &md)
}

/// Copies the model file `src` to `dst` with `meta` as its `fer.meta`; the
/// tensors and any other metadata (int8 tables) are kept as they are.
pub fn rewrite_meta(src: &Path, dst: &Path, meta: &ModelMeta) -> Result<()> {
    let loaded = tensor_io::load(src)?;
    let mut md = loaded.metadata;
    md.insert("fer.meta".into(), serde_json::to_string(meta)?);
    let tensors: Vec<(String, Tensor)> = loaded.tensors.into_iter().collect();
    tensor_io::save(dst, &tensors, &md)
}

impl ModelMeta {
    /// The metadata of a model file, without building the network.
    pub fn read(path: &Path) -> Result<ModelMeta> {
        ModelMeta::from_metadata(path, &tensor_io::load(path)?.metadata)
    }

    /// `fer.meta` from the metadata of the file at `path`, already loaded,
    /// checked with [`ModelMeta::validate`].
    pub fn from_metadata(path: &Path, metadata: &BTreeMap<String, String>) -> Result<ModelMeta> {
        let meta = metadata
            .get("fer.meta")
            .with_context(|| format!("{}: no fer.meta", path.display()))?;
        // The field a value is refused at, named: serde_json alone says
        // "number out of range at line 1 column 434".
        let de = &mut serde_json::Deserializer::from_str(meta);
        let meta: ModelMeta = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let at = if at == "." {
                String::new()
            } else {
                format!(" at fer.meta.{at}")
            };
            anyhow::anyhow!("{}: reading fer.meta{at}: {}", path.display(), e.inner())
        })?;
        meta.validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(meta)
    }

    /// Checks every field against its range and against the other fields,
    /// so that whatever is built from the metadata can be built; an error
    /// names the field (`fer.meta.prior: ...`).
    pub fn validate(&self) -> Result<(), String> {
        let k = self.classes.len();
        self.preprocess
            .validate()
            .map_err(|e| e.replace("data.augment.", "fer.meta.preprocess."))?;
        let (mean, std) = (self.preprocess.mean, self.preprocess.std);
        if !(mean.is_finite() && std.is_finite()) {
            return Err(format!(
                "fer.meta.preprocess: mean {mean} and std {std} must be finite"
            ));
        }
        crate::data::config::check_class_names(&self.classes)
            .map_err(|e| format!("fer.meta.classes: {e}"))?;
        if self.prior.len() != k {
            return Err(format!(
                "fer.meta.prior: {} values, expected one per class ({k})",
                self.prior.len()
            ));
        }
        let sum: f64 = self.prior.iter().map(|&p| p as f64).sum();
        if self.prior.iter().any(|p| !(0.0..=1.0).contains(p)) || (sum - 1.0).abs() > 1e-3 {
            return Err(format!(
                "fer.meta.prior: {:?}; expected class frequencies in [0, 1] that sum to 1",
                self.prior
            ));
        }
        if self.model.is_network() {
            self.model.check(self.preprocess.size, k).map_err(|e| {
                match e.strip_prefix("model.") {
                    Some(rest) => format!("fer.meta.model.{rest}"),
                    None => format!("fer.meta.model: {e}"),
                }
            })?;
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(format!(
                "fer.meta.val_fraction: {}; expected a fraction in [0, 1)",
                self.val_fraction
            ));
        }
        if let Some(a) = self.val_accuracy.filter(|a| !(0.0..=1.0).contains(a)) {
            return Err(format!(
                "fer.meta.val_accuracy: {a}; expected an accuracy in [0, 1]"
            ));
        }
        if self.data_digest.len() != 64 || !self.data_digest.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(format!(
                "fer.meta.data_digest: {:?}; expected 64 hexadecimal digits (a blake3 digest)",
                self.data_digest
            ));
        }
        if let Some(adj) = &self.logit_adjust {
            adj.validate(&self.prior)?;
        }
        Ok(())
    }
}

impl LogitAdjust {
    /// An alpha that gives a finite bias with `prior`, and that bias, one
    /// value per class.
    fn validate(&self, prior: &[f32]) -> Result<(), String> {
        let want = LogitAdjust::new(self.alpha, prior).bias;
        if !self.alpha.is_finite() || want.iter().any(|b| !b.is_finite()) {
            return Err(format!(
                "fer.meta.logit_adjust.alpha: {}; expected a number whose bias alpha x ln(prior) is finite",
                self.alpha
            ));
        }
        if self.bias.len() != want.len() {
            return Err(format!(
                "fer.meta.logit_adjust.bias: {} values, expected one per class ({})",
                self.bias.len(),
                want.len()
            ));
        }
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * b.abs().max(1.0);
        if !self
            .bias
            .iter()
            .zip(&want)
            .all(|(&a, &b)| a.is_finite() && close(a, b))
        {
            return Err(format!(
                "fer.meta.logit_adjust.bias: {:?}; expected alpha x ln(prior) = {want:?}",
                self.bias
            ));
        }
        Ok(())
    }
}

/// Training-split class frequencies over `k` classes.
pub fn prior(labels: &[u8], k: usize) -> Vec<f32> {
    let mut c = vec![0usize; k];
    for &l in labels {
        c[l as usize] += 1;
    }
    let n = labels.len().max(1) as f32;
    c.iter().map(|&v| v as f32 / n).collect()
}

/// A model file read from disk: its metadata, int8 record and tensors.
pub struct ModelFile {
    pub path: PathBuf,
    pub meta: ModelMeta,
    pub quant: Option<QuantMeta>,
    pub tensors: BTreeMap<String, Tensor>,
}

impl ModelFile {
    /// Reads a model file, or `model.safetensors` inside a run folder,
    /// checking its format, its metadata and its tensors against the
    /// metadata ([`ModelFile::check`]).
    pub fn read(path: &Path) -> Result<ModelFile> {
        Ok(ModelFile::read_with_bytes(path)?.0)
    }

    /// [`ModelFile::read`], also giving the file's bytes, so that a caller
    /// that pins the file by its hash does not read it twice.
    pub fn read_with_bytes(path: &Path) -> Result<(ModelFile, Vec<u8>)> {
        let file = crate::layout::model_file_of(path);
        if !file.exists() {
            bail!(
                "{}: no model file (expected a .safetensors written by fer, or a run folder holding {})",
                file.display(),
                crate::layout::MODEL
            );
        }
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        let loaded = tensor_io::parse(&file, &bytes)?;
        match loaded.metadata.get("fer.format").map(String::as_str) {
            Some(FORMAT) => {}
            other => bail!(
                "{}: not a fer model file (format {:?}, expected {FORMAT})",
                file.display(),
                other
            ),
        }
        let meta = ModelMeta::from_metadata(&file, &loaded.metadata)?;
        let quant = match loaded.metadata.get(int8::META_KEY) {
            Some(q) => {
                let q: QuantMeta = serde_json::from_str(q)
                    .with_context(|| format!("{}: reading {}", file.display(), int8::META_KEY))?;
                q.validate()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                Some(q)
            }
            None => None,
        };
        ModelFile::check(&meta, &loaded.tensors)
            .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let model = ModelFile {
            path: file,
            meta,
            quant,
            tensors: loaded.tensors,
        };
        Ok((model, bytes))
    }

    /// The tensors against valid metadata, before a network is built from
    /// them: at least as many elements as the network's variables (so
    /// building allocates no more than the file holds), the prior as in
    /// `fer.meta`, and finite values. Names and shapes are checked as the
    /// weights are copied in (`models::weights::copy_into`); int8 tensors
    /// by `int8::int8_table`.
    pub fn check(meta: &ModelMeta, tensors: &BTreeMap<String, Tensor>) -> Result<(), String> {
        let k = meta.classes.len();
        if meta.model.is_network() {
            let need = meta
                .model
                .variables(meta.preprocess.size, k)
                .unwrap_or(u64::MAX);
            let have: u64 = tensors.values().map(|t| t.numel() as u64).sum();
            if need > have {
                return Err(format!(
                    "fer.meta.model: a {} for {}px input and {k} classes has {need} weights, \
                     the file's tensors only {have}: the metadata does not describe these tensors",
                    meta.model.family(),
                    meta.preprocess.size
                ));
            }
        }
        if let Some(p) = tensors.get("prior") {
            let stored = (p.size() == [k as i64] && p.kind() == Kind::Float).then(|| {
                let mut v = vec![0f32; k];
                p.copy_data(&mut v, k);
                v
            });
            if stored.as_deref() != Some(meta.prior.as_slice()) {
                return Err(format!(
                    "tensor 'prior' ({:?} {:?}) is not fer.meta.prior ({k} values {:?})",
                    p.kind(),
                    p.size(),
                    meta.prior
                ));
            }
        }
        for (name, t) in tensors.iter().filter(|(_, t)| t.is_floating_point()) {
            // Counted in Rust on a copy: libtorch's isfinite took 0.3 s for
            // the release model's 2.3 M weights here, the copy 2 ms.
            let values = Vec::<f32>::try_from(&t.to_kind(Kind::Float).flatten(0, -1))
                .map_err(|e| format!("tensor '{name}': {e}"))?;
            let bad = values.iter().filter(|v| !v.is_finite()).count();
            if bad > 0 {
                return Err(format!(
                    "tensor '{name}' holds {bad} values that are NaN or infinite"
                ));
            }
        }
        Ok(())
    }
}
