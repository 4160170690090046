//! Multinomial logistic regression on standardised pixels: one linear layer.
//!
//! Chosen over `linfa-logistic` so the baseline shares the trainer, the
//! metrics, the model file and `fer serve` with every other family; the
//! objective (softmax cross-entropy, L2 through weight decay) is the same.
//! Inputs are already standardised by the data pipeline's normalisation.

use super::Net;
use serde::{Deserialize, Serialize};
use tch::nn;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogisticConfig {}

/// Elements of the variables `build` creates (None on overflow).
pub fn variables(input: u64, classes: u64) -> Option<u64> {
    super::linear_variables(input.checked_mul(input)?, classes)
}

pub fn build(p: &nn::Path, _cfg: &LogisticConfig, input: i64, classes: i64) -> Net {
    let d = input * input;
    let fc = super::layers::linear(p / "fc", d, classes);
    Net {
        module: Box::new(nn::func_t(move |x, _train| x.flatten(1, -1).apply(&fc))),
        macs: (d * classes) as u64,
    }
}
