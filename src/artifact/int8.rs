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
    /// Each layer named once, with a finite positive input scale where it
    /// has one (and one for every convolution that runs in int8), and
    /// accuracies in [0, 1]; an error names the field (`fer.quant.layers[3]`).
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, l) in self.layers.iter().enumerate() {
            let at = format!("{META_KEY}.layers[{i}]");
            if l.name.is_empty() || !seen.insert(l.name.as_str()) {
                return Err(format!("{at}.name: {:?} is empty or named twice", l.name));
            }
            match l.input_scale {
                Some(s) if !(s.is_finite() && s > 0.0) => {
                    return Err(format!(
                        "{at}.input_scale: {s}; expected a finite scale > 0"
                    ))
                }
                None if l.kind == LayerKind::Conv && l.exec == Exec::Int8 => {
                    return Err(format!(
                        "{at}.input_scale: missing; a convolution that runs in int8 needs its calibrated input scale"
                    ))
                }
                _ => {}
            }
        }
        for (name, a) in [
            ("fp32_val_accuracy", self.fp32_val_accuracy),
            ("int8_val_accuracy", self.int8_val_accuracy),
            ("fp32_test_accuracy", Some(self.fp32_test_accuracy)),
            ("int8_test_accuracy", Some(self.int8_test_accuracy)),
        ] {
            if let Some(a) = a.filter(|a| !(0.0..=1.0).contains(a)) {
                return Err(format!(
                    "{META_KEY}.{name}: {a}; expected an accuracy in [0, 1]"
                ));
            }
        }
        Ok(())
    }

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
        let rank = match l.kind {
            LayerKind::Linear => 2,
            LayerKind::Conv => 4,
        };
        if values.dim() != rank {
            bail!(
                "'{wname}' has shape {:?}, expected {rank} dimensions for a {:?} layer",
                values.size(),
                l.kind
            );
        }
        let out = values.size()[0];
        if scale.size() != [out] || scale.kind() != Kind::Float {
            bail!(
                "'{}{SCALE_SUFFIX}' is {:?} {:?}, expected Float [{out}]",
                l.name,
                scale.kind(),
                scale.size()
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
