//! ResNet18 (He et al. 2016) for 1-channel faces, with torchvision's
//! parameter names (`conv1`, `bn1`, `layer1.0.conv1`, ..., `fc`) so an
//! ImageNet `state_dict` saved as safetensors loads by name. The stem is an
//! option: ImageNet's 7x7/2 conv + max-pool (a 48px face ends at 2x2, fast),
//! or a 3x3/1 conv with or without max-pool (no early downsampling, about 4x
//! or 16x the compute). The base width (64 in torchvision) is an option too:
//! the stages are `width`, 2x, 4x and 8x it, so 32 quarters the compute.

use super::layers::{self, Conv2d};
use super::{conv_macs, out_side, Net};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::nn::{self, ModuleT};
use tch::Tensor;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stem {
    /// 7x7 stride-2 conv and 3x3 stride-2 max-pool, as on ImageNet.
    #[default]
    Imagenet,
    /// 3x3 stride-1 conv, no max-pool: no early downsampling.
    Small,
    /// 3x3 stride-1 conv, then the max-pool.
    SmallPool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResnetConfig {
    pub stem: Stem,
    /// Channels of the stem and the first stage; the later stages double it.
    pub width: i64,
    /// A torchvision ResNet18 `state_dict` saved as safetensors. conv1's RGB
    /// filters are averaged into one channel; `fc` is replaced.
    pub pretrained: Option<PathBuf>,
    /// Dropout before `fc`.
    pub dropout: f64,
}

impl Default for ResnetConfig {
    fn default() -> Self {
        Self {
            stem: Stem::default(),
            width: 64,
            pretrained: None,
            dropout: 0.0,
        }
    }
}

impl ResnetConfig {
    fn stages(&self) -> [i64; 4] {
        let w = self.width;
        [w, 2 * w, 4 * w, 8 * w]
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(8..=256).contains(&self.width) {
            return Err(format!(
                "model.width must be in 8..=256 (64 is torchvision's), got {}",
                self.width
            ));
        }
        if self.pretrained.is_some() && self.width != 64 {
            return Err(format!(
                "model.pretrained needs model.width 64 (the ImageNet shapes), got {}",
                self.width
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
pub fn variables(cfg: &ResnetConfig, classes: u64) -> Option<u64> {
    let k = match cfg.stem {
        Stem::Imagenet => 7,
        Stem::Small | Stem::SmallPool => 3,
    };
    let bn = |c: u64| 4 * c;
    let w = u64::try_from(cfg.width).ok()?;
    let mut n = w * k * k + bn(w);
    let mut cin = w;
    for (i, cout) in cfg.stages().map(|c| c as u64).into_iter().enumerate() {
        for b in 0..2 {
            n += cin * cout * 9 + bn(cout) + cout * cout * 9 + bn(cout);
            if (b == 0 && i > 0) || cin != cout {
                n += cin * cout + bn(cout);
            }
            cin = cout;
        }
    }
    n.checked_add(super::linear_variables(8 * w, classes)?)
}

#[derive(Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: nn::BatchNorm,
    conv2: Conv2d,
    bn2: nn::BatchNorm,
    downsample: Option<(Conv2d, nn::BatchNorm)>,
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train);
        let skip = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (y + skip).relu()
    }
}

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, padding: i64) -> Conv2d {
    let cfg = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ..Default::default()
    };
    layers::conv2d(p, cin, cout, k, cfg)
}

fn block(p: nn::Path, cin: i64, cout: i64, stride: i64) -> BasicBlock {
    let downsample = (stride != 1 || cin != cout).then(|| {
        (
            conv(&p / "downsample" / 0, cin, cout, 1, stride, 0),
            nn::batch_norm2d(&p / "downsample" / 1, cout, Default::default()),
        )
    });
    BasicBlock {
        conv1: conv(&p / "conv1", cin, cout, 3, stride, 1),
        bn1: nn::batch_norm2d(&p / "bn1", cout, Default::default()),
        conv2: conv(&p / "conv2", cout, cout, 3, 1, 1),
        bn2: nn::batch_norm2d(&p / "bn2", cout, Default::default()),
        downsample,
    }
}

pub fn build(p: &nn::Path, cfg: &ResnetConfig, input: i64, classes: i64) -> Net {
    let (k, s, pool) = match cfg.stem {
        Stem::Imagenet => (7, 2, true),
        Stem::Small => (3, 1, false),
        Stem::SmallPool => (3, 1, true),
    };
    let w = cfg.width;
    let mut seq = nn::seq_t()
        .add(conv(p / "conv1", 1, w, k, s, k / 2))
        .add(nn::batch_norm2d(p / "bn1", w, Default::default()))
        .add_fn(|x| x.relu());
    let mut side = out_side(input, k, s, k / 2);
    let mut macs = conv_macs(side, 1, w, k);
    if pool {
        seq = seq.add_fn(|x| x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false));
        side = out_side(side, 3, 2, 1);
    }
    let mut cin = w;
    for (i, &cout) in cfg.stages().iter().enumerate() {
        let lp = p / format!("layer{}", i + 1);
        for b in 0..2 {
            let stride = if b == 0 && i > 0 { 2 } else { 1 };
            let out = out_side(side, 3, stride, 1);
            macs += conv_macs(out, cin, cout, 3) + conv_macs(out, cout, cout, 3);
            if stride != 1 || cin != cout {
                macs += conv_macs(out, cin, cout, 1);
            }
            seq = seq.add(block(&lp / b, cin, cout, stride));
            side = out;
            cin = cout;
        }
    }
    let d = cfg.dropout;
    // Grad-CAM reads layer4's output; the head is pooling and the classifier.
    let head = nn::seq_t()
        .add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
        .add_fn_t(move |x, train| x.dropout(d, train))
        .add(layers::linear(p / "fc", 8 * w, classes));
    macs += (8 * w * classes) as u64;
    Net {
        module: Box::new(super::Staged {
            features: seq,
            head,
        }),
        macs,
    }
}

/// What loading ImageNet weights did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PretrainedLoad {
    pub loaded: Vec<String>,
    /// Loaded after averaging RGB filters into one channel.
    pub averaged: Vec<String>,
    /// Not loaded: the head, or a shape that differs (e.g. a 3x3 stem).
    pub skipped: Vec<String>,
}

/// Copies a torchvision ResNet18 `state_dict` (safetensors) into `vs`.
pub fn load_pretrained(vs: &nn::VarStore, path: &Path) -> Result<PretrainedLoad> {
    let src: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .with_context(|| format!("reading ImageNet weights {}", path.display()))?
        .into_iter()
        .collect();
    let mut report = PretrainedLoad::default();
    let mut names: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| -> Result<()> {
        for (name, mut dst) in names {
            let Some(s) = src.get(&name) else {
                report
                    .skipped
                    .push(format!("{name} (absent from the file)"));
                continue;
            };
            if name.starts_with("fc.") {
                report.skipped.push(format!("{name} (head replaced)"));
                continue;
            }
            let s = s.to_kind(dst.kind()).to_device(dst.device());
            if s.size() == dst.size() {
                dst.copy_(&s);
                report.loaded.push(name);
            } else if name == "conv1.weight" && s.size().len() == 4 && s.size()[1] == 3 {
                let avg = s.mean_dim([1i64].as_slice(), true, s.kind());
                if avg.size() == dst.size() {
                    dst.copy_(&avg);
                    report.averaged.push(name);
                } else {
                    report.skipped.push(format!(
                        "{name} (stem {:?} vs {:?})",
                        avg.size(),
                        dst.size()
                    ));
                }
            } else {
                report
                    .skipped
                    .push(format!("{name} (shape {:?} vs {:?})", s.size(), dst.size()));
            }
        }
        Ok(())
    })?;
    anyhow::ensure!(
        !report.loaded.is_empty(),
        "{}: no tensor matched a torchvision ResNet18 name",
        path.display()
    );
    Ok(report)
}
