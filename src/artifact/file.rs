//! The model file's format: safetensors weights with the model config, class
//! names, preprocessing, validation split and provenance in the metadata
//! (`fer.meta`), an optional logit adjustment, and for int8 files the
//! quantization record (`int8`). A file alone is enough to evaluate or serve.

use super::int8::{self, QuantMeta};
use crate::data::augment::AugmentConfig;
use crate::data::{CLASSES, NUM_CLASSES};
use crate::models::ModelConfig;
use crate::tensor_io;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Tensor};

pub const FORMAT: &str = "fer-model/1";

/// What a model file says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub name: String,
    pub model: ModelConfig,
    /// The evaluation transform (crop size and normalisation).
    pub preprocess: AugmentConfig,
    pub classes: Vec<String>,
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

    /// `fer.meta` from the metadata of the file at `path`, already loaded.
    pub fn from_metadata(path: &Path, metadata: &BTreeMap<String, String>) -> Result<ModelMeta> {
        let meta = metadata
            .get("fer.meta")
            .with_context(|| format!("{}: no fer.meta", path.display()))?;
        serde_json::from_str(meta).with_context(|| format!("{}: reading fer.meta", path.display()))
    }
}

/// Training-split class frequencies.
pub fn prior(labels: &[u8]) -> Vec<f32> {
    let mut c = [0usize; NUM_CLASSES];
    for &l in labels {
        c[l as usize] += 1;
    }
    let n = labels.len().max(1) as f32;
    c.iter().map(|&v| v as f32 / n).collect()
}

/// The class names in label order.
pub fn class_names() -> Vec<String> {
    CLASSES.iter().map(|s| s.to_string()).collect()
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
    /// checking its format.
    pub fn read(path: &Path) -> Result<ModelFile> {
        let file = crate::layout::model_file_of(path);
        if !file.exists() {
            bail!(
                "{}: no model file (expected a .safetensors written by fer, or a run folder holding {})",
                file.display(),
                crate::layout::MODEL
            );
        }
        let loaded = tensor_io::load(&file)?;
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
            Some(q) => Some(
                serde_json::from_str(q)
                    .with_context(|| format!("{}: reading {}", file.display(), int8::META_KEY))?,
            ),
            None => None,
        };
        Ok(ModelFile {
            path: file,
            meta,
            quant,
            tensors: loaded.tensors,
        })
    }
}
