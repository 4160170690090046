//! Starting a run from a model file's weights (`train.init`, fine-tuning):
//! the file is read and checked against the run before anything trains, and
//! pinned in the run's provenance by its BLAKE3 hash, with whether its
//! training saw this run's validation images.

use super::Setup;
use crate::artifact::ModelFile;
use crate::config::RunConfig;
use crate::models::ModelConfig;
use crate::provenance::InitRecord;
use anyhow::Result;
use std::path::Path;
use tch::nn;

/// A checked model file to start from.
pub struct Init {
    file: ModelFile,
    pub record: InitRecord,
}

impl Init {
    /// Reads `path` and checks it fits `cfg`'s network and data: an fp32
    /// file of the same family, classes and input size. Shapes are checked
    /// as the weights are copied ([`Init::apply`]).
    pub(super) fn read(cfg: &RunConfig, env: &Setup, path: &Path) -> Result<Init> {
        let at = |why: String| anyhow::anyhow!("train.init: {}: {why}", path.display());
        if !cfg.model.is_network() || matches!(cfg.model, ModelConfig::Classical(_)) {
            return Err(at(format!(
                "model.kind {} is not trained by gradient steps, so it has no weights to start from",
                cfg.model.family()
            )));
        }
        let (file, bytes) = ModelFile::read_with_bytes(path).map_err(|e| at(format!("{e:#}")))?;
        let meta = &file.meta;
        if file.quant.is_some() {
            return Err(at(
                "an int8 model file (fer quantize); start from the fp32 file it was made from"
                    .into(),
            ));
        }
        if meta.model.family() != cfg.model.family() {
            return Err(at(format!(
                "holds a {} network, this run's model is a {}",
                meta.model.family(),
                cfg.model.family()
            )));
        }
        if meta.classes != env.classes {
            return Err(at(format!(
                "its classes {:?} are not this data's {:?}",
                meta.classes, env.classes
            )));
        }
        if meta.preprocess.size != cfg.data.augment.size {
            return Err(at(format!(
                "its input is {} px, this run's data.augment.size is {}",
                meta.preprocess.size, cfg.data.augment.size
            )));
        }
        let has_val = !env.splits.val.is_empty();
        // Same data, a validation split here, and the file trained on a
        // different carving of train (a refit has none): its weights have
        // seen images this run is judged on.
        let sees_val = has_val
            && meta.data_digest == env.digest
            && (meta.val_fraction == 0.0
                || meta.val_fraction != cfg.data.val_fraction
                || meta.split_seed != cfg.data.split_seed
                || meta.cv != cfg.cv);
        if sees_val {
            eprintln!(
                "warning: train.init {} was trained on a split of this data other than this run's \
                 (val_fraction {}, split_seed {}): it has seen validation images, so this run's \
                 validation figures are optimistic",
                path.display(),
                meta.val_fraction,
                meta.split_seed
            );
        }
        let record = InitRecord {
            path: path.display().to_string(),
            blake3: blake3::hash(&bytes).to_hex().to_string(),
            name: meta.name.clone(),
            sees_val,
        };
        Ok(Init { file, record })
    }

    /// Copies the file's weights (and batch-norm statistics) into `vs`.
    pub(super) fn apply(&self, vs: &nn::VarStore) -> Result<()> {
        crate::models::weights::copy_into(vs, &self.file.tensors, "").map_err(|e| {
            anyhow::anyhow!(
                "train.init: {}: {e:#}; the file's network is not this run's model",
                self.record.path
            )
        })?;
        eprintln!(
            "train.init: started from {} ({}, blake3 {})",
            self.record.path,
            self.file.meta.name,
            &self.record.blake3[..16]
        );
        Ok(())
    }
}
