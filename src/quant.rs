//! `fer quantize`: post-training int8 quantization of a model file.
//!
//! Every linear and convolution weight is stored as int8 with one scale per
//! output channel (symmetric, zero point 0). At run time (see
//! `models::layers`) linear layers quantize their input per call (dynamic)
//! and multiply in int8; convolutions with at least `--int8-min-channels`
//! input channels use an input scale calibrated on training images (static:
//! the largest |input| seen, PyTorch's MinMax observer) and multiply in int8;
//! narrower convolutions (the 1-channel stems) keep float arithmetic on the
//! dequantized weights, because there im2col costs more than the int8 product
//! saves (measured in docs/performance.md). Batch norm, layer norm, the ViT's
//! embeddings and all biases stay fp32.
//!
//! The file is only written when PublicTest accuracy drops by at most
//! `--max-drop` points; the selection itself is not changed by the test set.

use crate::artifact::int8::{quantize_weight, LayerMeta, QuantMeta, META_KEY, SCALE_SUFFIX};
use crate::artifact::{Classifier, ModelMeta};
use crate::models::layers::{self, Exec, LayerKind};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

/// What `fer quantize` reads, how it calibrates, and where it writes.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    /// A float model file written by fer, or a run folder.
    pub model: PathBuf,
    /// Where to write the int8 model file.
    pub out: PathBuf,
    /// Data set folder (default: the data config's default).
    pub data: Option<PathBuf>,
    /// Training images (never validation or test) that calibrate the
    /// convolutions' input ranges.
    pub calibration: usize,
    /// Convolutions with fewer input channels keep float arithmetic.
    pub int8_min_channels: i64,
    /// Largest PublicTest accuracy drop, in points, for which the file is written.
    pub max_drop: f64,
    /// Write the file even when the drop is larger.
    pub force: bool,
    /// Seconds timed per latency figure.
    pub seconds: f64,
    /// Overwrite an existing `out` (never the model being quantized).
    pub replace: bool,
}

/// What `fer quantize` measured: one side of the comparison.
#[derive(Debug, Serialize)]
pub struct Side {
    pub file_bytes: u64,
    pub val_accuracy: Option<f64>,
    pub test_accuracy: f64,
    pub test_weighted_f1: f64,
    pub ms_batch1: f64,
    pub ms_batch32: f64,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub model: String,
    pub family: String,
    pub fp32: Side,
    pub int8: Side,
    /// PublicTest accuracy change, points (negative: int8 is worse).
    pub test_change_points: f64,
    pub written: bool,
    pub out: PathBuf,
    pub int8_layers: usize,
    pub layers: usize,
    /// How the int8 products ran here (`models::layers::Kernel`): latency
    /// gains need the native kernel.
    pub kernel: String,
}

/// Quantizes the model, measures both sides, and writes the int8 file when
/// PublicTest accuracy drops by at most `max_drop` points (or `force`).
pub fn quantize(args: &QuantizeOptions) -> Result<Outcome> {
    let file = crate::layout::model_file_of(&args.model);
    crate::layout::check_out_file(&args.out, &[&file], "--out", args.replace)?;
    let fp = Classifier::load(&file, Device::Cpu)?;
    if fp.quant.is_some() {
        bail!("{}: already an int8 model file", file.display());
    }
    if !fp.meta.model.is_network() {
        bail!(
            "{}: a {} baseline has no weights to quantize",
            file.display(),
            fp.meta.model.family()
        );
    }
    let meta = fp.meta.clone();
    let crate::artifact::ModelData {
        loaded, split: tv, ..
    } = meta.load_data(args.data.as_deref(), crate::artifact::DataUse::Validation)?;
    let val = loaded.data.train.select(&tv.val);
    let test = &loaded.data.test;

    // Calibrate on a seeded sample of the training split.
    let seed = 0u64;
    let mut pick = tv.train.clone();
    pick.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    pick.truncate(args.calibration.max(1));
    let calib = loaded.data.train.select(&pick);
    let (q, tensors, mut qmeta) = int8_classifier(&fp, &file, &calib, args.int8_min_channels)?;
    qmeta.calibration_seed = seed;

    let mut fp_side = measure(&fp, &val, test, args.seconds)?;
    let mut q_side = measure(&q, &val, test, args.seconds)?;
    fp_side.file_bytes = std::fs::metadata(&file)?.len();
    qmeta.fp32_val_accuracy = fp_side.val_accuracy;
    qmeta.int8_val_accuracy = q_side.val_accuracy;
    qmeta.fp32_test_accuracy = fp_side.test_accuracy;
    qmeta.int8_test_accuracy = q_side.test_accuracy;
    let change = (q_side.test_accuracy - fp_side.test_accuracy) * 100.0;
    let written = -change <= args.max_drop || args.force;
    if written {
        write(&args.out, &meta, tensors, &qmeta)?;
        q_side.file_bytes = std::fs::metadata(&args.out)?.len();
    }
    Ok(Outcome {
        model: meta.name.clone(),
        family: meta.model.family().into(),
        fp32: fp_side,
        int8: q_side,
        test_change_points: change,
        written,
        out: args.out.clone(),
        int8_layers: qmeta.int8_layers(),
        layers: qmeta.layers.len(),
        kernel: layers::Kernel::current().name().into(),
    })
}

/// The int8 version of `fp`, calibrated on `calib` (`file` names the model
/// in errors): the classifier, its tensors as the file stores them, and the
/// quantization record (accuracies not yet measured; calibration seed 0).
pub fn int8_classifier(
    fp: &Classifier,
    file: &Path,
    calib: &crate::data::ImageSet,
    int8_min_channels: i64,
) -> Result<(Classifier, BTreeMap<String, Tensor>, QuantMeta)> {
    let (tensors, layer_meta) = quantize_layers(fp, file, calib, int8_min_channels)?;
    let qmeta = QuantMeta {
        scheme: "int8, symmetric per-output-channel weights; linear inputs dynamic per tensor; convolution inputs static per tensor (max |x| on the calibration images)".into(),
        calibration_images: calib.len(),
        calibration_seed: 0,
        layers: layer_meta,
        fp32_val_accuracy: None,
        int8_val_accuracy: None,
        fp32_test_accuracy: 0.0,
        int8_test_accuracy: 0.0,
    };
    let q = Classifier::from_tensors(
        fp.meta.clone(),
        tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect(),
        Some(qmeta.clone()),
        Device::Cpu,
    )?;
    Ok((q, tensors, qmeta))
}

/// Observes every layer's inputs on `calib`, then stores each weight as int8
/// with its scales: the file's tensors and the per-layer record.
fn quantize_layers(
    fp: &Classifier,
    file: &Path,
    calib: &crate::data::ImageSet,
    int8_min_channels: i64,
) -> Result<(BTreeMap<String, Tensor>, Vec<LayerMeta>)> {
    let meta = &fp.meta;
    // The float weights, by name, from the model already loaded.
    let mut tensors: BTreeMap<String, Tensor> = fp
        .vs
        .as_ref()
        .expect("a network has weights")
        .variables()
        .into_iter()
        .collect();
    let vs = nn::VarStore::new(Device::Cpu);
    let (net, seen) = layers::calibrating(|| {
        crate::models::build(
            &vs.root(),
            &meta.model,
            meta.preprocess.size,
            meta.classes.len(),
        )
    });
    let net = net?;
    crate::models::weights::copy_into(&vs, &tensors, "")?;
    crate::artifact::predict_set(
        net.module.as_ref(),
        &meta.preprocess,
        Device::Cpu,
        calib,
        false,
        128,
    );

    let mut layer_meta = Vec::new();
    for o in &seen {
        let wname = format!("{}.weight", o.name);
        let w = tensors
            .get(&wname)
            .with_context(|| format!("{}: no tensor '{wname}'", file.display()))?;
        let (values, scale) = quantize_weight(w);
        let max_abs = *o.max_abs.lock().expect("observer lock");
        let (exec, input_scale) = match o.kind {
            LayerKind::Linear => (Exec::Int8, None),
            LayerKind::Conv if o.inputs >= int8_min_channels && max_abs > 0.0 => {
                (Exec::Int8, Some(max_abs / 127.0))
            }
            LayerKind::Conv => (Exec::Float, None),
        };
        tensors.insert(wname, values);
        tensors.insert(format!("{}{SCALE_SUFFIX}", o.name), scale);
        layer_meta.push(LayerMeta {
            name: o.name.clone(),
            kind: o.kind,
            exec,
            input_scale,
        });
    }
    Ok((tensors, layer_meta))
}

/// One side of the comparison: accuracies without TTA and forward latency.
fn measure(
    clf: &Classifier,
    val: &crate::data::ImageSet,
    test: &crate::data::ImageSet,
    seconds: f64,
) -> Result<Side> {
    let v = crate::eval::evaluate(clf, val, "val", false)?;
    let t = crate::eval::evaluate(clf, test, "test", false)?;
    let net = clf.net.as_ref().expect("a network");
    let s = clf.meta.preprocess.size as i64;
    let lat = |b| crate::eval::latency::forward_seconds(net.module.as_ref(), b, s, seconds) * 1e3;
    Ok(Side {
        file_bytes: 0,
        val_accuracy: (v.overall.n > 0).then_some(v.overall.accuracy),
        test_accuracy: t.overall.accuracy,
        test_weighted_f1: t.overall.weighted_f1,
        ms_batch1: lat(1),
        ms_batch32: lat(32),
    })
}

fn write(
    out: &Path,
    meta: &ModelMeta,
    tensors: BTreeMap<String, Tensor>,
    q: &QuantMeta,
) -> Result<()> {
    let extra = BTreeMap::from([(META_KEY.to_string(), serde_json::to_string(q)?)]);
    crate::artifact::save_tensors(out, meta, tensors, extra)
}

impl Outcome {
    /// The comparison table printed by `fer quantize`.
    pub fn render(&self) -> String {
        let o = self;
        let mut s = format!(
        "{} ({}): {} of {} layers multiply in int8; kernel here: {}\n\n| | file | val acc | PublicTest acc | weighted F1 | batch 1 | batch 32 |\n|---|---:|---:|---:|---:|---:|---:|\n",
        o.model, o.family, o.int8_layers, o.layers, o.kernel
    );
        for (name, x) in [("fp32", &o.fp32), ("int8", &o.int8)] {
            s += &format!(
                "| {name} | {:.2} MB | {} | {:.2}% | {:.3} | {:.3} ms | {:.2} ms |\n",
                x.file_bytes as f64 / 1e6,
                x.val_accuracy
                    .map_or("none (refit)".into(), |a| format!("{:.2}%", a * 100.0)),
                x.test_accuracy * 100.0,
                x.test_weighted_f1,
                x.ms_batch1,
                x.ms_batch32
            );
        }
        s += &format!(
        "\nPublicTest change {:+.2} points; latency x{:.2} at batch 1, x{:.2} at batch 32 (int8 / fp32).\n",
        o.test_change_points,
        o.int8.ms_batch1 / o.fp32.ms_batch1,
        o.int8.ms_batch32 / o.fp32.ms_batch32
    );
        if o.written {
            s += &format!("wrote {}\n", o.out.display());
        }
        s
    }
}
