//! A trained model as a thing on disk and in memory: the file format
//! (`file`, `int8`), the `Classifier` that predicts with it (`classifier`),
//! and the model's data with its validation split (`data`). Below the
//! trainer and the evaluators, above the model families.

pub mod classifier;
pub mod data;
pub mod file;
pub mod int8;
#[cfg(test)]
pub(crate) mod tests;

pub use classifier::{net_probs, predict_set, Classifier, Layout};
pub use data::{DataUse, ModelData};
pub use file::{
    prior, rewrite_meta, save, save_tensors, LogitAdjust, ModelFile, ModelMeta, FORMAT,
};
