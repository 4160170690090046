//! The self-describing model file: weights in safetensors, with the model
//! config, class names, preprocessing and provenance in its metadata, so a
//! file alone is enough to evaluate or serve it. Also the `Classifier` that
//! turns such a file into probabilities.

use crate::data::augment::{eval_batch, ten_crop, AugmentConfig};
use crate::data::{ImageSet, CLASSES, NUM_CLASSES, PIXELS};
use crate::models::{self, ModelConfig, Net};
use crate::tensor_io;
use anyhow::{bail, Context, Result};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::nn::{self, ModuleT};

use tch::{Device, Kind, Tensor};

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
    pub logit_adjust: Option<crate::eval::adjust::LogitAdjust>,
}

/// A model ready to predict.
pub struct Classifier {
    pub meta: ModelMeta,
    pub vs: Option<nn::VarStore>,
    pub net: Option<Net>,
    pub device: Device,
    /// Set for int8 model files written by `fer quantize`.
    pub quant: Option<crate::quant::QuantMeta>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("meta", &self.meta)
            .finish()
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

/// The model file a path names: itself, or `model.safetensors` in a run folder.
pub fn file_of(path: &Path) -> std::path::PathBuf {
    if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    }
}

/// Copies `tensors` (by name, with an optional prefix) into `vs`.
pub fn copy_into(
    vs: &nn::VarStore,
    tensors: &BTreeMap<String, Tensor>,
    prefix: &str,
) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vs.variables() {
            let key = format!("{prefix}{name}");
            let src = tensors
                .get(&key)
                .with_context(|| format!("tensor '{key}' missing from the file"))?;
            if src.size() != var.size() {
                bail!(
                    "tensor '{key}': file has {:?}, model expects {:?}",
                    src.size(),
                    var.size()
                );
            }
            var.copy_(&src.to_kind(var.kind()).to_device(var.device()));
        }
        Ok(())
    })
}

/// Picks the device: CUDA, then MPS, then CPU, unless forced.
pub fn pick_device(choice: crate::train::config::DeviceChoice) -> Result<Device> {
    use crate::train::config::DeviceChoice as D;
    Ok(match choice {
        D::Cpu => Device::Cpu,
        D::Cuda => {
            if !tch::Cuda::is_available() {
                bail!("train.device is cuda but no CUDA device is available");
            }
            Device::Cuda(0)
        }
        D::Mps => {
            if !tch::utils::has_mps() {
                bail!("train.device is mps but MPS is not available");
            }
            Device::Mps
        }
        D::Auto => {
            if tch::Cuda::is_available() {
                Device::Cuda(0)
            } else if tch::utils::has_mps() {
                Device::Mps
            } else {
                Device::Cpu
            }
        }
    })
}

/// A model's data set, as [`ModelMeta::load_data`] found it.
pub struct ModelData {
    pub loaded: crate::data::load::Loaded,
    /// The train/validation split the model was selected on.
    pub split: crate::data::split::TrainVal,
    /// The folder it was read from, for messages.
    pub dir: PathBuf,
}

impl ModelMeta {
    /// The metadata of a model file, without building the network.
    pub fn read(path: &Path) -> Result<ModelMeta> {
        ModelMeta::from_metadata(path, &tensor_io::load(path)?.metadata)
    }

    /// The data set from `dir` (default: the data config's own default) and
    /// the train/validation split these weights were selected on.
    pub fn load_data(&self, dir: Option<&Path>) -> Result<ModelData> {
        let mut cfg = crate::data::DataConfig {
            val_fraction: self.val_fraction,
            split_seed: self.split_seed,
            ..crate::data::DataConfig::default()
        };
        if let Some(d) = dir {
            cfg.dir = d.to_path_buf();
        }
        let loaded = crate::data::load(&cfg, &crate::paths::cache_dir())?;
        let split = crate::data::split::stratified(
            &loaded.data.train.labels,
            self.val_fraction,
            self.split_seed,
        );
        Ok(ModelData {
            loaded,
            split,
            dir: cfg.dir,
        })
    }

    /// `fer.meta` from the metadata of the file at `path`, already loaded.
    pub fn from_metadata(path: &Path, metadata: &BTreeMap<String, String>) -> Result<ModelMeta> {
        let meta = metadata
            .get("fer.meta")
            .with_context(|| format!("{}: no fer.meta", path.display()))?;
        serde_json::from_str(meta).with_context(|| format!("{}: reading fer.meta", path.display()))
    }
}

impl Classifier {
    /// Loads a model file, or `model.safetensors` inside a run folder.
    pub fn load(path: &Path, device: Device) -> Result<Classifier> {
        let file = file_of(path);
        if !file.exists() {
            bail!(
                "{}: no model file (expected a .safetensors written by fer, or a run folder holding model.safetensors)",
                file.display()
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
        let quant = match loaded.metadata.get(crate::quant::META_KEY) {
            Some(q) => Some(serde_json::from_str(q).with_context(|| {
                format!("{}: reading {}", file.display(), crate::quant::META_KEY)
            })?),
            None => None,
        };
        Classifier::from_tensors(meta, loaded.tensors, quant, device)
            .with_context(|| format!("loading weights from {}", file.display()))
    }

    /// A classifier from a model file's parts; `quant` makes it int8.
    pub fn from_tensors(
        meta: ModelMeta,
        tensors: BTreeMap<String, Tensor>,
        quant: Option<crate::quant::QuantMeta>,
        device: Device,
    ) -> Result<Classifier> {
        let (vs, net) = if meta.model.is_network() {
            let vs = nn::VarStore::new(device);
            let build = || {
                models::build(
                    &vs.root(),
                    &meta.model,
                    meta.preprocess.size,
                    meta.classes.len(),
                )
                .expect("a network config builds a network")
            };
            let (net, tensors) = match &quant {
                None => (build(), tensors),
                Some(q) => {
                    let (table, floats) = crate::quant::int8_table(q, tensors)?;
                    let (net, unclaimed) = crate::models::layers::int8(table, build);
                    if !unclaimed.is_empty() {
                        bail!(
                            "int8 layers {unclaimed:?} are not in a {} network",
                            meta.model.family()
                        );
                    }
                    (net, floats)
                }
            };
            copy_into(&vs, &tensors, "")?;
            (Some(vs), Some(net))
        } else {
            if quant.is_some() {
                bail!("a {} baseline cannot be quantized", meta.model.family());
            }
            (None, None)
        };
        Ok(Classifier {
            meta,
            vs,
            net,
            device,
            quant,
        })
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
    pub fn predict_set(&self, set: &ImageSet, tta: bool, batch: usize) -> Vec<f32> {
        let mut p = self.predict_set_raw(set, tta, batch);
        if let Some(adj) = &self.meta.logit_adjust {
            adj.apply(&mut p);
        }
        p
    }

    /// Like [`Classifier::predict_set`], without the logit adjustment: what
    /// a new adjustment is fitted on.
    pub fn predict_set_raw(&self, set: &ImageSet, tta: bool, batch: usize) -> Vec<f32> {
        match &self.net {
            Some(net) => predict_set(
                net.module.as_ref(),
                &self.meta.preprocess,
                self.device,
                set,
                tta,
                batch,
            ),
            None => self.baseline_probs(set.len()),
        }
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
                let dist = WeightedIndex::new(&self.meta.prior).expect("prior has mass");
                let mut out = vec![0f32; n * k];
                for row in out.chunks_exact_mut(k) {
                    row[dist.sample(&mut rng)] = 1.0;
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
