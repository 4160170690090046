//! The int8 part of a model file written by `fer quantize`: per-output-channel
//! symmetric int8 weights with their scales, and the record (`fer.quant`) of
//! which layers multiply in int8. See `crate::quant` for how a file is made.

use crate::models::layers::{Exec, LayerKind, QLayer};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Metadata key of the quantization record in a model file.
pub const META_KEY: &str = "fer.quant";

pub const SCALE_SUFFIX: &str = ".weight_scale";

/// How a model file was quantized, stored in its metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantMeta {
    pub scheme: String,
    pub calibration_images: usize,
    pub calibration_seed: u64,
    pub layers: Vec<LayerMeta>,
    /// Accuracies measured by `fer quantize` (no test-time augmentation);
    /// no validation accuracy for a refit, which has no validation split.
    pub fp32_val_accuracy: Option<f64>,
    pub int8_val_accuracy: Option<f64>,
    pub fp32_test_accuracy: f64,
    pub int8_test_accuracy: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// Layer path; its weight is `<name>.weight`.
    pub name: String,
    pub kind: LayerKind,
    pub exec: Exec,
    /// Static input scale (convolutions that run in int8).
    pub input_scale: Option<f64>,
}

impl QuantMeta {
    pub fn int8_layers(&self) -> usize {
        self.layers.iter().filter(|l| l.exec == Exec::Int8).count()
    }

    /// One line for `fer eval` and `fer serve`.
    pub fn summary(&self) -> String {
        format!(
            "int8: {} of {} layers multiply in int8 (the rest keep float arithmetic on int8-stored weights); calibrated on {} training images",
            self.int8_layers(),
            self.layers.len(),
            self.calibration_images
        )
    }
}

/// Splits a quantized file's tensors into the int8 layers and the float
/// tensors the var store needs (int8 weights dequantized).
pub fn int8_table(
    q: &QuantMeta,
    mut tensors: BTreeMap<String, Tensor>,
) -> Result<(BTreeMap<String, QLayer>, BTreeMap<String, Tensor>)> {
    let mut table = BTreeMap::new();
    for l in &q.layers {
        let wname = format!("{}.weight", l.name);
        let values = tensors
            .get(&wname)
            .with_context(|| format!("int8 weight '{wname}' missing from the file"))?
            .shallow_clone();
        let scale = tensors
            .remove(&format!("{}{SCALE_SUFFIX}", l.name))
            .with_context(|| format!("scale of '{wname}' missing from the file"))?;
        if values.kind() != Kind::Int8 {
            bail!("'{wname}' is {:?}, expected int8", values.kind());
        }
        if scale.size() != [values.size()[0]] {
            bail!(
                "'{}{SCALE_SUFFIX}' has shape {:?}, expected [{}]",
                l.name,
                scale.size(),
                values.size()[0]
            );
        }
        tensors.insert(wname, dequantize(&values, &scale));
        table.insert(
            l.name.clone(),
            QLayer {
                values,
                scale,
                input_scale: l.input_scale,
                exec: l.exec,
            },
        );
    }
    Ok((table, tensors))
}

fn channel_shape(w: &Tensor) -> Vec<i64> {
    std::iter::once(w.size()[0])
        .chain(std::iter::repeat_n(1, w.dim() - 1))
        .collect()
}

fn dequantize(values: &Tensor, scale: &Tensor) -> Tensor {
    values.to_kind(Kind::Float) * scale.reshape(channel_shape(values))
}

/// Symmetric per-output-channel int8: `(values, scale)`.
pub fn quantize_weight(w: &Tensor) -> (Tensor, Tensor) {
    let out = w.size()[0];
    let scale = (w.reshape([out, -1]).abs().amax([1], false) / 127.0).clamp_min(1e-12);
    let values = (w / scale.reshape(channel_shape(w)))
        .round()
        .clamp(-127, 127)
        .to_kind(Kind::Int8);
    (values, scale)
}
