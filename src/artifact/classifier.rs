//! The `Classifier`: a model file turned into probabilities, for one batch
//! or a whole image set, with ten-crop test-time augmentation and the file's
//! logit adjustment. Every set a model scores passes one check
//! (`predict_set_raw`): probabilities that are not finite are an error that
//! names the model, never metrics. Float networks run their convolutions
//! in NHWC (`Layout`): oneDNN then keeps activations in one layout through
//! the network instead of reordering them around every convolution.

use super::file::{ModelFile, ModelMeta};
use super::int8::{self, QuantMeta};
use crate::data::augment::{eval_batch, ten_crop, AugmentConfig};
use crate::data::{ImageSet, PIXELS};
use crate::models::{self, ModelConfig, Net};
use anyhow::{bail, Context, Result};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// A model ready to predict.
pub struct Classifier {
    /// The model file, when loaded from one (named in errors).
    pub file: Option<PathBuf>,
    pub meta: ModelMeta,
    pub vs: Option<nn::VarStore>,
    pub net: Option<Net>,
    pub device: Device,
    /// Set for int8 model files written by `fer quantize`.
    pub quant: Option<QuantMeta>,
    /// The layout the convolution kernels are held in.
    pub layout: Layout,
}

/// Memory layout of a network's convolution kernels, and so of the
/// activations oneDNN computes from them. Results agree to float rounding;
/// NHWC is the faster on the CPUs measured (docs/performance.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nchw" => Ok(Layout::Nchw),
            "nhwc" => Ok(Layout::Nhwc),
            _ => Err(format!("unknown layout '{s}'; expected nchw or nhwc")),
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Nchw => "nchw",
            Layout::Nhwc => "nhwc",
        })
    }
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("meta", &self.meta)
            .finish()
    }
}

impl Classifier {
    /// Loads a model file, or `model.safetensors` inside a run folder.
    pub fn load(path: &Path, device: Device) -> Result<Classifier> {
        let f = ModelFile::read(path)?;
        let file = f.path;
        let mut clf = Classifier::from_tensors(f.meta, f.tensors, f.quant, device)
            .with_context(|| format!("loading weights from {}", file.display()))?;
        clf.file = Some(file);
        Ok(clf)
    }

    /// A classifier from a model file's parts; `quant` makes it int8. The
    /// parts are checked as [`ModelFile::read`] checks a file's before
    /// anything is built.
    pub fn from_tensors(
        meta: ModelMeta,
        tensors: BTreeMap<String, Tensor>,
        quant: Option<QuantMeta>,
        device: Device,
    ) -> Result<Classifier> {
        meta.validate().map_err(anyhow::Error::msg)?;
        if let Some(q) = &quant {
            q.validate().map_err(anyhow::Error::msg)?;
        }
        ModelFile::check(&meta, &tensors).map_err(anyhow::Error::msg)?;
        let (vs, net) = if meta.model.is_network() {
            let vs = nn::VarStore::new(device);
            let build = || {
                models::build(
                    &vs.root(),
                    &meta.model,
                    meta.preprocess.size,
                    meta.classes.len(),
                )
            };
            let (net, tensors) = match &quant {
                None => (build()?, tensors),
                Some(q) => {
                    let (table, floats) = int8::int8_table(q, tensors)?;
                    let (net, unclaimed) = crate::models::layers::int8(table, build);
                    let net = net?;
                    if !unclaimed.is_empty() {
                        bail!(
                            "int8 layers {unclaimed:?} are not in a {} network",
                            meta.model.family()
                        );
                    }
                    (net, floats)
                }
            };
            crate::models::weights::copy_into(&vs, &tensors, "")?;
            (Some(vs), Some(net))
        } else {
            if quant.is_some() {
                bail!("a {} baseline cannot be quantized", meta.model.family());
            }
            (None, None)
        };
        let mut clf = Classifier {
            file: None,
            meta,
            vs,
            net,
            device,
            quant,
            layout: Layout::Nchw,
        };
        clf.set_layout(Layout::Nhwc);
        Ok(clf)
    }

    /// Whether the layout means anything here: not for a baseline, a
    /// network without convolutions, or an int8 file, whose own kernels
    /// take NCHW.
    pub fn has_layout(&self) -> bool {
        self.quant.is_none()
            && self
                .vs
                .as_ref()
                .is_some_and(|vs| vs.variables().values().any(|v| v.dim() == 4))
    }

    /// Moves the convolution kernels to `layout`; false (and nothing done)
    /// where [`Classifier::has_layout`] is false.
    pub fn set_layout(&mut self, layout: Layout) -> bool {
        if !self.has_layout() {
            return false;
        }
        let vs = self.vs.as_ref().expect("has_layout: weights");
        match layout {
            Layout::Nhwc => crate::models::to_channels_last(vs),
            Layout::Nchw => tch::no_grad(|| {
                for (_, mut v) in vs.variables() {
                    if v.dim() == 4 {
                        let t = v.contiguous();
                        v.set_data(&t);
                    }
                }
            }),
        }
        self.layout = layout;
        true
    }

    /// Class probabilities `[B, K]` for normalised inputs `[B, 1, S, S]`,
    /// with the file's logit adjustment.
    pub fn probs(&self, x: &Tensor) -> Tensor {
        let net = self.net.as_ref().expect("probs() needs a network");
        let p = net_probs(net.module.as_ref(), x, self.device);
        match &self.meta.logit_adjust {
            None => p,
            Some(adj) => {
                let bias = Tensor::from_slice(&adj.bias);
                (p.clamp_min(1e-30).log() + bias).softmax(-1, Kind::Float)
            }
        }
    }

    /// Probabilities for every image of `set` (`n x K`, row-major), with the
    /// file's logit adjustment.
    pub fn predict_set(&self, set: &ImageSet, tta: bool, batch: usize) -> Result<Vec<f32>> {
        let mut p = self.predict_set_raw(set, tta, batch)?;
        if let Some(adj) = &self.meta.logit_adjust {
            adj.apply(&mut p);
        }
        Ok(p)
    }

    /// Like [`Classifier::predict_set`], without the logit adjustment: what
    /// a new adjustment is fitted on. Refuses outputs that are not finite.
    pub fn predict_set_raw(&self, set: &ImageSet, tta: bool, batch: usize) -> Result<Vec<f32>> {
        let p = match &self.net {
            Some(net) => predict_set(
                net.module.as_ref(),
                &self.meta.preprocess,
                self.device,
                set,
                tta,
                batch,
            ),
            None => self.baseline_probs(set.len()),
        };
        self.check_finite(&p)?;
        Ok(p)
    }

    /// The one check on scores: a NaN or infinity in the probabilities
    /// (from NaN or overflowing logits) would still give an argmax and
    /// plausible-looking metrics, so it is an error naming the model.
    fn check_finite(&self, probs: &[f32]) -> Result<()> {
        let k = self.meta.classes.len().max(1);
        let bad = probs
            .chunks(k)
            .filter(|row| row.iter().any(|p| !p.is_finite()))
            .count();
        if bad > 0 {
            let model = match &self.file {
                Some(f) => f.display().to_string(),
                None => format!("model '{}'", self.meta.name),
            };
            bail!(
                "{model}: the network's outputs are not finite (NaN or infinity) for {bad} of {} images; \
                 its weights are corrupt or overflow, so it cannot be scored",
                probs.len() / k
            );
        }
        Ok(())
    }

    fn baseline_probs(&self, n: usize) -> Vec<f32> {
        let k = self.meta.classes.len();
        match self.meta.model {
            ModelConfig::Majority => {
                // The prior: its argmax is the majority class.
                (0..n)
                    .flat_map(|_| self.meta.prior.iter().copied())
                    .collect()
            }
            _ => {
                // Stratified random guesses, seeded: a one-hot draw from the prior.
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.meta.seed);
                let mut out = vec![0f32; n * k];
                // A validated prior always has mass; without, the rows stay
                // zero (and score zero) rather than panic.
                if let Ok(dist) = WeightedIndex::new(&self.meta.prior) {
                    for row in out.chunks_exact_mut(k) {
                        row[dist.sample(&mut rng)] = 1.0;
                    }
                }
                out
            }
        }
    }
}

/// Softmax of a network's logits, on the CPU.
pub fn net_probs(module: &dyn ModuleT, x: &Tensor, device: Device) -> Tensor {
    tch::no_grad(|| {
        module
            .forward_t(&x.to_device(device), false)
            .softmax(-1, Kind::Float)
            .to_device(Device::Cpu)
    })
}

/// Probabilities of `module` for every image of `set` (`n x K`), with the
/// eval transform `cfg`, optionally averaged over ten crops.
pub fn predict_set(
    module: &dyn ModuleT,
    cfg: &AugmentConfig,
    device: Device,
    set: &ImageSet,
    tta: bool,
    batch: usize,
) -> Vec<f32> {
    let n = set.len();
    let s = cfg.size as i64;
    let mut out: Vec<f32> = Vec::new();
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let b = chunk.len() as i64;
        let p = if tta {
            let per = 10 * cfg.out_len();
            let mut buf = vec![0f32; chunk.len() * per];
            for (j, &i) in chunk.iter().enumerate() {
                ten_crop(
                    &set.pixels[i * PIXELS..(i + 1) * PIXELS],
                    cfg,
                    &mut buf[j * per..(j + 1) * per],
                );
            }
            let x = Tensor::from_slice(&buf).view([b * 10, 1, s, s]);
            let p = net_probs(module, &x, device);
            let k = p.size()[1];
            p.view([b, 10, k])
                .mean_dim([1i64].as_slice(), false, Kind::Float)
        } else {
            let mut buf = vec![0f32; chunk.len() * cfg.out_len()];
            eval_batch(&set.pixels, chunk, cfg, &mut buf);
            net_probs(module, &Tensor::from_slice(&buf).view([b, 1, s, s]), device)
        };
        let p = p.contiguous();
        let len = p.numel();
        let mut v = vec![0f32; len];
        p.copy_data(&mut v, len);
        out.extend_from_slice(&v);
    }
    out
}
