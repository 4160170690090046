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

use crate::model_file::{Classifier, ModelMeta};
use crate::models::layers::{self, Exec, LayerKind, QLayer};
use anyhow::{bail, Context, Result};
use clap::Args;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tch::{nn, Device, Kind, Tensor};

/// Metadata key of the quantization record in a model file.
pub const META_KEY: &str = "fer.quant";

const SCALE_SUFFIX: &str = ".weight_scale";

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

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// A float model file written by fer, or a run folder.
    pub model: PathBuf,
    /// Where to write the int8 model file.
    #[arg(long)]
    pub out: PathBuf,
    /// Data set folder (default: $FER2013_DIR, else data/fer2013).
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
    /// Training images (never validation or test) that calibrate the
    /// convolutions' input ranges.
    #[arg(long, default_value_t = 1024)]
    pub calibration: usize,
    /// Convolutions with fewer input channels keep float arithmetic.
    #[arg(long, default_value_t = 64)]
    pub int8_min_channels: i64,
    /// Largest PublicTest accuracy drop, in points, for which the file is written.
    #[arg(long, default_value_t = 1.0)]
    pub max_drop: f64,
    /// Write the file even when the drop is larger.
    #[arg(long)]
    pub force: bool,
    /// Seconds timed per latency figure.
    #[arg(long, default_value_t = 1.0)]
    pub seconds: f64,
    #[arg(long)]
    pub json: bool,
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
}

pub fn run(args: QuantizeArgs) -> Result<ExitCode> {
    let file = crate::model_file::file_of(&args.model);
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
    let crate::model_file::ModelData {
        loaded, split: tv, ..
    } = meta.load_data(args.data.as_deref())?;
    let val = loaded.data.train.select(&tv.val);
    let test = &loaded.data.test;

    // Calibrate on a seeded sample of the training split.
    let seed = 0u64;
    let mut pick = tv.train.clone();
    pick.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    pick.truncate(args.calibration.max(1));
    let calib = loaded.data.train.select(&pick);
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
        .expect("a network builds")
    });
    crate::model_file::copy_into(&vs, &tensors, "")?;
    crate::model_file::predict_set(
        net.module.as_ref(),
        &meta.preprocess,
        Device::Cpu,
        &calib,
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
            LayerKind::Conv if o.inputs >= args.int8_min_channels && max_abs > 0.0 => {
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
    let mut qmeta = QuantMeta {
        scheme: "int8, symmetric per-output-channel weights; linear inputs dynamic per tensor; convolution inputs static per tensor (max |x| on the calibration images)".into(),
        calibration_images: calib.len(),
        calibration_seed: seed,
        layers: layer_meta,
        fp32_val_accuracy: None,
        int8_val_accuracy: None,
        fp32_test_accuracy: 0.0,
        int8_test_accuracy: 0.0,
    };
    let q = Classifier::from_tensors(
        meta.clone(),
        tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect(),
        Some(qmeta.clone()),
        Device::Cpu,
    )?;

    let side = |clf: &Classifier| {
        let v = crate::eval::evaluate(clf, &val, "val", false);
        let t = crate::eval::evaluate(clf, test, "test", false);
        let net = clf.net.as_ref().expect("a network");
        let s = meta.preprocess.size as i64;
        let lat = |b| crate::bench::forward_seconds(net.module.as_ref(), b, s, args.seconds) * 1e3;
        Side {
            file_bytes: 0,
            val_accuracy: (v.overall.n > 0).then_some(v.overall.accuracy),
            test_accuracy: t.overall.accuracy,
            test_weighted_f1: t.overall.weighted_f1,
            ms_batch1: lat(1),
            ms_batch32: lat(32),
        }
    };
    let mut fp_side = side(&fp);
    let mut q_side = side(&q);
    fp_side.file_bytes = std::fs::metadata(&file)?.len();
    qmeta.fp32_val_accuracy = fp_side.val_accuracy;
    qmeta.int8_val_accuracy = q_side.val_accuracy;
    qmeta.fp32_test_accuracy = fp_side.test_accuracy;
    qmeta.int8_test_accuracy = q_side.test_accuracy;
    let change = (q_side.test_accuracy - fp_side.test_accuracy) * 100.0;
    let ok = -change <= args.max_drop;
    if ok || args.force {
        write(&args.out, &meta, tensors, &qmeta)?;
        q_side.file_bytes = std::fs::metadata(&args.out)?.len();
    }
    let outcome = Outcome {
        model: meta.name.clone(),
        family: meta.model.family().into(),
        fp32: fp_side,
        int8: q_side,
        test_change_points: change,
        written: ok || args.force,
        out: args.out.clone(),
        int8_layers: qmeta.int8_layers(),
        layers: qmeta.layers.len(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    } else {
        print!("{}", render(&outcome));
    }
    if !ok && !args.force {
        eprintln!(
            "error: int8 loses {:.2} points of PublicTest accuracy (limit --max-drop {}); {} not written (--force writes it anyway)",
            -change,
            args.max_drop,
            args.out.display()
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn write(
    out: &Path,
    meta: &ModelMeta,
    tensors: BTreeMap<String, Tensor>,
    q: &QuantMeta,
) -> Result<()> {
    let extra = BTreeMap::from([(META_KEY.to_string(), serde_json::to_string(q)?)]);
    crate::model_file::save_tensors(out, meta, tensors, extra)
}

fn render(o: &Outcome) -> String {
    let mut s = format!(
        "{} ({}): {} of {} layers multiply in int8\n\n| | file | val acc | PublicTest acc | weighted F1 | batch 1 | batch 32 |\n|---|---:|---:|---:|---:|---:|---:|\n",
        o.model, o.family, o.int8_layers, o.layers
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
