//! A multilayer perceptron on flattened pixels: Linear, optional BatchNorm,
//! ReLU and dropout per hidden layer, then a linear head.

use super::{layers, Net};
use serde::{Deserialize, Serialize};
use tch::nn;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlpConfig {
    pub hidden: Vec<i64>,
    pub dropout: f64,
    pub batch_norm: bool,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            hidden: vec![1024, 512],
            dropout: 0.3,
            batch_norm: true,
        }
    }
}

impl MlpConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.hidden.len() > super::MAX_DEPTH
            || self
                .hidden
                .iter()
                .any(|&h| !(1..=super::MAX_WIDTH).contains(&h))
        {
            return Err(format!(
                "model.hidden must be at most {} sizes in 1..={}, got {:?}",
                super::MAX_DEPTH,
                super::MAX_WIDTH,
                self.hidden
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "model.dropout must be in [0, 1), got {}",
                self.dropout
            ));
        }
        Ok(())
    }
}

/// Elements of the variables `build` creates (None on overflow).
pub fn variables(cfg: &MlpConfig, input: u64, classes: u64) -> Option<u64> {
    let mut d = input.checked_mul(input)?;
    let mut n = 0u64;
    for &h in &cfg.hidden {
        let h = u64::try_from(h).ok()?;
        let bn = if cfg.batch_norm { h.checked_mul(4)? } else { 0 };
        n = n
            .checked_add(super::linear_variables(d, h)?)?
            .checked_add(bn)?;
        d = h;
    }
    n.checked_add(super::linear_variables(d, classes)?)
}

pub fn build(p: &nn::Path, cfg: &MlpConfig, input: i64, classes: i64) -> Net {
    let mut seq = nn::seq_t().add_fn(|x| x.flatten(1, -1));
    let mut d = input * input;
    let mut macs = 0u64;
    for (i, &h) in cfg.hidden.iter().enumerate() {
        let l = p / format!("hidden{i}");
        seq = seq.add(layers::linear(&l / "fc", d, h));
        if cfg.batch_norm {
            seq = seq.add(nn::batch_norm1d(&l / "bn", h, Default::default()));
        }
        seq = seq.add_fn(|x| x.relu());
        let drop = cfg.dropout;
        seq = seq.add_fn_t(move |x, train| x.dropout(drop, train));
        macs += (d * h) as u64;
        d = h;
    }
    seq = seq.add(layers::linear(p / "head", d, classes));
    macs += (d * classes) as u64;
    Net {
        module: Box::new(seq),
        macs,
    }
}
