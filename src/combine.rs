//! Averaging trained models into one ensemble file. `fer train` does it
//! after an ensemble config's members; `fer ensemble` does it for model files
//! trained apart (sweep trials, earlier runs), so an ensemble can be tried
//! on validation without training anything again.

use crate::artifact::{self, Classifier, ModelMeta};
use crate::config::WeightsDtype;
use crate::models::{ensemble::EnsembleConfig, ModelConfig};
use crate::tensor_io;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

/// A float model file to average: one network, or an ensemble whose members
/// are taken one by one.
pub struct Part {
    pub path: PathBuf,
    pub meta: ModelMeta,
    pub tensors: BTreeMap<String, Tensor>,
}

impl Part {
    /// Reads a model file, or `model.safetensors` of a run folder.
    pub fn load(path: &Path) -> Result<Part> {
        let file = crate::layout::model_file_of(path);
        let loaded = tensor_io::load(&file)?;
        let meta = ModelMeta::from_metadata(&file, &loaded.metadata)?;
        if loaded
            .metadata
            .contains_key(crate::artifact::int8::META_KEY)
        {
            bail!(
                "{}: an int8 file; average the float files, then quantize the ensemble",
                file.display()
            );
        }
        if !meta.model.is_network() {
            bail!(
                "{}: a {} baseline has no weights to average (expected a network or an ensemble)",
                file.display(),
                meta.model.family()
            );
        }
        let mut tensors = loaded.tensors;
        tensors.remove("prior");
        Ok(Part {
            path: file,
            meta,
            tensors,
        })
    }

    /// The networks in this file with their weights, each keyed as if it
    /// stood alone.
    fn networks(&self) -> Vec<(ModelConfig, BTreeMap<String, Tensor>)> {
        let ModelConfig::Ensemble(e) = &self.meta.model else {
            let weights = self
                .tensors
                .iter()
                .map(|(k, t)| (k.clone(), t.shallow_clone()))
                .collect();
            return vec![(self.meta.model.clone(), weights)];
        };
        e.members
            .iter()
            .enumerate()
            .map(|(k, m)| {
                let prefix = format!("m{k}.");
                let weights = self
                    .tensors
                    .iter()
                    .filter_map(|(name, t)| {
                        let rest = name.strip_prefix(&prefix)?;
                        Some((rest.to_string(), t.shallow_clone()))
                    })
                    .collect();
                (m.clone(), weights)
            })
            .collect()
    }
}

/// One ensemble from `parts`, their networks in order under `m0.`, `m1.`,
/// ...: its metadata (without a validation accuracy) and its weights,
/// stored as `dtype`. The parts must agree on everything that makes their
/// probabilities comparable and their validation split the same.
pub fn combine(
    parts: &[Part],
    name: &str,
    seed: u64,
    dtype: WeightsDtype,
) -> Result<(ModelMeta, BTreeMap<String, Tensor>)> {
    let first = parts.first().context("no models to average")?;
    for p in &parts[1..] {
        let (a, b) = (&first.meta, &p.meta);
        let differ = |field: &str, x: String, y: String| -> Result<()> {
            if x != y {
                bail!(
                    "{} and {} differ in {field} ({x} against {y}): their probabilities cannot be averaged \
                     or their validation splits are not the same",
                    first.path.display(),
                    p.path.display()
                );
            }
            Ok(())
        };
        differ("classes", a.classes.join(","), b.classes.join(","))?;
        differ(
            "preprocessing",
            format!("{:?}", a.preprocess),
            format!("{:?}", b.preprocess),
        )?;
        differ("data digest", a.data_digest.clone(), b.data_digest.clone())?;
        differ(
            "validation split",
            format!("fraction {} seed {}", a.val_fraction, a.split_seed),
            format!("fraction {} seed {}", b.val_fraction, b.split_seed),
        )?;
    }
    let mut members = Vec::new();
    let mut weights = BTreeMap::new();
    for (k, (model, w)) in parts.iter().flat_map(Part::networks).enumerate() {
        for (name, t) in w {
            // Rounded here, so whatever evaluates these weights measures
            // them as the file stores them.
            let t = match dtype {
                WeightsDtype::F32 => t.to_kind(tch::Kind::Float),
                WeightsDtype::F16 => t.to_kind(tch::Kind::Half),
            };
            weights.insert(format!("m{k}.{name}"), t);
        }
        members.push(model);
    }
    if members.len() < 2 {
        bail!(
            "an ensemble needs at least 2 networks, {} holds {}",
            first.path.display(),
            members.len()
        );
    }
    let meta = ModelMeta {
        name: name.to_string(),
        model: ModelConfig::Ensemble(EnsembleConfig { members }),
        seed,
        params: parts.iter().map(|p| p.meta.params).sum(),
        macs: parts.iter().map(|p| p.meta.macs).sum(),
        val_accuracy: None,
        // Members' adjustments do not carry over to their average.
        logit_adjust: None,
        ..first.meta.clone()
    };
    Ok((meta, weights))
}

/// What `fer ensemble` combines and where it writes.
#[derive(Clone, Debug)]
pub struct EnsembleOptions {
    /// Model files or run folders: networks or ensembles (whose members join
    /// one by one).
    pub models: Vec<PathBuf>,
    pub out: PathBuf,
    /// Overwrite an existing `out` (never a source).
    pub replace: bool,
    /// The ensemble's name in its metadata (default: the output file's stem).
    pub name: Option<String>,
    pub weights: WeightsDtype,
    /// Data set folder (default: the data config's default).
    pub data: Option<PathBuf>,
}

/// Each source's and the ensemble's validation accuracy (centre crop).
#[derive(Clone, Debug)]
pub struct EnsembleOutcome {
    /// `(family, validation accuracy, path)` per source.
    pub sources: Vec<(String, f64, PathBuf)>,
    pub val_accuracy: f64,
    pub out: PathBuf,
}

/// `fer ensemble`: writes the averaged file and measures each source's and
/// the ensemble's validation accuracy (centre crop) on the sources' shared
/// split. Nothing here reads the test set: evaluate the file with `fer eval`.
pub fn ensemble(args: &EnsembleOptions) -> Result<EnsembleOutcome> {
    let sources: Vec<PathBuf> = args
        .models
        .iter()
        .map(|p| crate::layout::model_file_of(p))
        .collect();
    let sources: Vec<&Path> = sources.iter().map(|p| p.as_path()).collect();
    crate::layout::check_out_file(&args.out, &sources, "--out", args.replace)?;
    let parts: Vec<Part> = args
        .models
        .iter()
        .map(|p| Part::load(p))
        .collect::<Result<_>>()?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.out
            .file_stem()
            .map_or("ensemble".into(), |s| s.to_string_lossy().into_owned())
    });
    let (meta, weights) = combine(&parts, &name, parts[0].meta.seed, args.weights)?;

    let crate::artifact::ModelData { loaded, split, .. } =
        meta.load_data(args.data.as_deref(), crate::artifact::DataUse::Validation)?;
    let val = loaded.data.train.select(&split.val);
    let mut sources = Vec::new();
    for p in &parts {
        let weights = p
            .tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect();
        let clf = Classifier::from_tensors(p.meta.clone(), weights, None, Device::Cpu)?;
        let acc = crate::eval::evaluate(&clf, &val, "val", false)?
            .overall
            .accuracy;
        sources.push((p.meta.model.family().to_string(), acc, p.path.clone()));
    }
    let acc = save(&args.out, meta, weights, &val, Device::Cpu)?;
    Ok(EnsembleOutcome {
        sources,
        val_accuracy: acc,
        out: args.out.clone(),
    })
}

/// Writes an ensemble's file with its validation accuracy (centre crop)
/// measured on the weights as stored, and returns that accuracy.
pub fn save(
    path: &Path,
    mut meta: ModelMeta,
    weights: BTreeMap<String, Tensor>,
    val: &crate::data::ImageSet,
    device: Device,
) -> Result<f64> {
    let stored = weights
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    let clf = Classifier::from_tensors(meta.clone(), stored, None, device)?;
    let acc = crate::eval::evaluate(&clf, val, "val", false)?
        .overall
        .accuracy;
    drop(clf);
    meta.val_accuracy = Some(acc);
    artifact::save_tensors(path, &meta, weights, BTreeMap::new())?;
    Ok(acc)
}
