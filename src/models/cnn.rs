//! EmotionNet: the project's own VGG-style CNN. Each block is `convs` x
//! (3x3 conv, BatchNorm, ReLU), then 2x2 max-pool and dropout; the head is
//! global average pooling, dropout and a linear layer. Width and depth come
//! from `widths` (one entry per block). The default (32-64-128-256, two
//! convs per block, 1.17M parameters) is the calibration network of
//! `../shared/docs/training-calibration.md`.

use super::{conv_macs, layers, Net};
use serde::{Deserialize, Serialize};
use tch::nn;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CnnConfig {
    /// Output channels of each block; the number of entries is the depth.
    pub widths: Vec<i64>,
    /// Convolutions per block.
    pub convs: usize,
    /// Dropout after each block's pooling.
    pub block_dropout: f64,
    /// Dropout before the linear head.
    pub dropout: f64,
}

impl Default for CnnConfig {
    fn default() -> Self {
        CnnConfig {
            widths: vec![32, 64, 128, 256],
            convs: 2,
            block_dropout: 0.0,
            dropout: 0.4,
        }
    }
}

impl CnnConfig {
    pub fn validate(&self, input: usize) -> Result<(), String> {
        if self.widths.is_empty()
            || self.widths.len() > MAX_BLOCKS
            || self
                .widths
                .iter()
                .any(|&w| !(1..=super::MAX_WIDTH).contains(&w))
        {
            return Err(format!(
                "model.widths must be 1 to {MAX_BLOCKS} sizes in 1..={}, got {:?}",
                super::MAX_WIDTH,
                self.widths
            ));
        }
        if !(1..=super::MAX_DEPTH).contains(&self.convs) {
            return Err(format!(
                "model.convs must be in 1..={}, got {}",
                super::MAX_DEPTH,
                self.convs
            ));
        }
        if input >> self.widths.len() == 0 {
            return Err(format!(
                "model.widths has {} blocks: {input}px input pools below 1px",
                self.widths.len()
            ));
        }
        for (n, v) in [
            ("block_dropout", self.block_dropout),
            ("dropout", self.dropout),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("model.{n} must be in [0, 1), got {v}"));
            }
        }
        Ok(())
    }
}

/// Blocks at most: each halves the side, and inputs are at most 48px.
const MAX_BLOCKS: usize = 16;

/// Elements of the variables `build` creates (None on overflow).
pub fn variables(cfg: &CnnConfig, classes: u64) -> Option<u64> {
    let (mut cin, mut n) = (1u64, 0u64);
    for &w in &cfg.widths {
        let w = u64::try_from(w).ok()?;
        for _ in 0..cfg.convs {
            // A 3x3 convolution without bias, then BatchNorm (4 per channel).
            n = n.checked_add(
                cin.checked_mul(w)?
                    .checked_mul(9)?
                    .checked_add(w.checked_mul(4)?)?,
            )?;
            cin = w;
        }
    }
    n.checked_add(super::linear_variables(cin, classes)?)
}

pub fn build(p: &nn::Path, cfg: &CnnConfig, input: i64, classes: i64) -> Net {
    // Features end at the last block's ReLU (6x6 for 48x48 input with four
    // blocks), where Grad-CAM reads; pooling onwards is the head.
    let mut features = nn::seq_t();
    let mut head = nn::seq_t();
    let (mut cin, mut side, mut macs) = (1i64, input, 0u64);
    let conv_cfg = nn::ConvConfig {
        padding: 1,
        bias: false,
        ..Default::default()
    };
    let last = cfg.widths.len() - 1;
    for (b, &w) in cfg.widths.iter().enumerate() {
        let bp = p / "features" / b;
        for c in 0..cfg.convs {
            features = features
                .add(layers::conv2d(
                    &bp / format!("conv{c}"),
                    cin,
                    w,
                    3,
                    conv_cfg,
                ))
                .add(nn::batch_norm2d(
                    &bp / format!("bn{c}"),
                    w,
                    Default::default(),
                ))
                .add_fn(|x| x.relu());
            macs += conv_macs(side, cin, w, 3);
            cin = w;
        }
        let stage = if b == last { &mut head } else { &mut features };
        let mut s = std::mem::replace(stage, nn::seq_t()).add_fn(|x| x.max_pool2d_default(2));
        side /= 2;
        if cfg.block_dropout > 0.0 {
            let d = cfg.block_dropout;
            s = s.add_fn_t(move |x, train| x.dropout(d, train));
        }
        *stage = s;
    }
    let d = cfg.dropout;
    head = head
        .add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
        .add_fn_t(move |x, train| x.dropout(d, train))
        .add(layers::linear(p / "head", cin, classes));
    macs += (cin * classes) as u64;
    Net {
        module: Box::new(super::Staged { features, head }),
        macs,
    }
}
