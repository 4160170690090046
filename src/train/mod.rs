// !!! HELPER: STOP. Before anything else read /tmp/w/common.md (how and where to work: your own git worktree, not /work/main). This line is not part of the code.
//! The trainer: reads top to bottom. Data, model, optimiser, then epochs of
//! (train, validate, decide, checkpoint). Checkpoints hold the weights, the
//! optimiser state and the trainer state, and every random source is keyed
//! by (seed, epoch), so `--resume` continues exactly where a killed run's
//! last completed epoch left off.

pub mod optim;
pub mod schedule;
pub mod swa;

use crate::artifact::{self, Classifier, ModelMeta};
use crate::config::train::{Precision, SamplerKind, Select};
use crate::config::RunConfig;
use crate::data::loader::{start_epoch, LoaderSpec, Order};
use crate::data::sampler::class_weights;
use crate::data::split::stratified;
use crate::data::{self, FerData, ImageSet, NUM_CLASSES};
use crate::eval::{self, EvalReport};
use crate::layout::RunDir;
pub use crate::metric::EpochRecord;
use crate::models::{self, ModelConfig};
use crate::tensor_io;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use schedule::{lr_at, EarlyStop, Plateau};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tch::nn;
use tch::{Device, Kind, Reduction, Tensor};

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Epochs completed.
    pub epochs_done: usize,
    pub step: usize,
    pub plateau: Plateau,
    pub early: EarlyStop,
    pub best_epoch: Option<usize>,
    pub best_value: Option<f64>,
    pub stopped_early: bool,
    /// Stopped by a sweep's pruner.
    #[serde(default)]
    pub pruned: bool,
    pub train_seconds: f64,
    pub images_seen: u64,
    pub history: Vec<EpochRecord>,
    /// Snapshots in the weight average so far (`train.swa`).
    #[serde(default)]
    pub swa_n: usize,
    /// The weight average, once evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swa: Option<SwaRecord>,
}

/// The weight average of `train.swa`, evaluated on validation like an epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwaRecord {
    /// Snapshots averaged (one per averaging epoch).
    pub snapshots: usize,
    /// Training batches of the BatchNorm pass.
    pub bn_batches: usize,
    pub val_loss: f64,
    pub val_acc: f64,
    pub val_f1_macro: f64,
    /// It beat the best single epoch on `train.select` and is the model file.
    pub chosen: bool,
}

/// The result of a run, also written to `eval.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub name: String,
    pub family: String,
    pub params: u64,
    pub macs: u64,
    pub device: String,
    pub threads: usize,
    pub data_digest: String,
    pub best_epoch: Option<usize>,
    pub epochs_run: usize,
    pub stopped_early: bool,
    /// Absent in runs written before sweeps existed.
    #[serde(default)]
    pub pruned: bool,
    /// Absent in early runs; `metrics.jsonl` has it too.
    #[serde(default)]
    pub history: Vec<EpochRecord>,
    pub train_seconds: f64,
    pub train_img_per_s: f64,
    /// The weight average of `train.swa`, when the run had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swa: Option<SwaRecord>,
    /// The logit adjustment of `eval.logit_adjust`, when the run fitted one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_adjust: Option<crate::eval::adjust::AdjustRecord>,
    pub val: EvalReport,
    pub test: EvalReport,
}

impl Outcome {
    /// Which weights the model file holds, as a clause for a sentence.
    pub fn weights_clause(&self) -> String {
        let adjust = self.logit_adjust.as_ref().map_or(String::new(), |a| {
            format!(
                ", with a logit adjustment of alpha {:+.2} fitted on validation",
                a.alpha
            )
        });
        let weights = match (&self.swa, self.best_epoch) {
            (Some(s), b) if s.chosen => format!(
                ", the average of the weights of its last {} epochs (SWA; it beat {} on validation)",
                s.snapshots,
                b.map_or("every single epoch".into(), |b| format!("epoch {b}, the best single one,"))
            ),
            (_, Some(b)) if self.val.overall.n == 0 => {
                format!(", weights of its last epoch, {b} (a refit: no validation split)")
            }
            (_, Some(b)) => format!(", weights of epoch {b} (best on validation)"),
            (_, None) => String::new(),
        };
        weights + &adjust
    }

    /// The `eval.json` of a finished run folder.
    pub fn read(dir: &Path) -> Result<Outcome> {
        let path = RunDir(dir.to_path_buf()).eval();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not an eval.json written by fer", dir.display()))
    }
}

/// Splits, subsets and de-duplicates the loaded data as the config says.
pub struct Splits {
    pub train: Arc<ImageSet>,
    pub val: ImageSet,
    pub test: ImageSet,
}

pub fn make_splits(cfg: &RunConfig, data: &FerData) -> Splits {
    let mut train_idx = stratified(
        &data.train.labels,
        cfg.data.val_fraction,
        cfg.data.split_seed,
    );
    if cfg.data.drop_test_duplicates {
        let q = data::quality::assess(&data.train, &data.test, cfg.data.blank_std);
        train_idx
            .train
            .retain(|i| q.train_in_test_indices.binary_search(i).is_err());
    }
    let mut train = data.train.select(&train_idx.train);
    if cfg.train.subset < 1.0 {
        let keep = stratified(&train.labels, cfg.train.subset, cfg.seed).val;
        train = train.select(&keep);
    }
    Splits {
        train: Arc::new(train),
        val: data.train.select(&train_idx.val),
        test: data.test.clone(),
    }
}

use crate::layout::write_atomic;

fn write_metrics(dir: &RunDir, history: &[EpochRecord]) -> Result<()> {
    let mut jsonl = String::new();
    let mut csv = String::from(
        "epoch,step,lr,train_loss,train_acc,val_loss,val_acc,val_f1_macro,img_per_s,epoch_seconds,time\n",
    );
    for r in history {
        jsonl += &serde_json::to_string(r)?;
        jsonl.push('\n');
        csv += &format!(
            "{},{},{},{},{},{},{},{},{},{},{}\n",
            r.epoch,
            r.step,
            r.lr,
            r.train_loss,
            r.train_acc,
            r.val_loss,
            r.val_acc,
            r.val_f1_macro,
            r.img_per_s,
            r.epoch_seconds,
            r.time
        );
    }
    write_atomic(&dir.metrics_jsonl(), jsonl.as_bytes())?;
    write_atomic(&dir.metrics_csv(), csv.as_bytes())
}

fn save_checkpoint(
    path: &Path,
    vs: &nn::VarStore,
    opt: &optim::Optimizer,
    state: &TrainerState,
    avg: &swa::Averager,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("model/{n}"), t))
        .collect();
    tensors.extend(
        opt.state_tensors()
            .into_iter()
            .map(|(n, t)| (format!("opt/{n}"), t)),
    );
    tensors.extend(
        avg.avg
            .iter()
            .map(|(n, t)| (format!("swa/{n}"), t.shallow_clone())),
    );
    let mut md = BTreeMap::new();
    md.insert("fer.trainer".to_string(), serde_json::to_string(state)?);
    md.insert("fer.opt_steps".to_string(), opt.steps.to_string());
    tensor_io::save(path, &tensors, &md)
}

/// The tensors named `<prefix><name>`, keyed by `<name>`.
fn with_prefix(tensors: &BTreeMap<String, Tensor>, prefix: &str) -> BTreeMap<String, Tensor> {
    tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix(prefix)
                .map(|n| (n.to_string(), t.shallow_clone()))
        })
        .collect()
}

fn load_checkpoint(
    path: &Path,
    vs: &nn::VarStore,
    opt: &mut optim::Optimizer,
) -> Result<(TrainerState, swa::Averager)> {
    let ck = tensor_io::load(path)?;
    crate::models::weights::copy_into(vs, &with_prefix(&ck.tensors, "model/"), "")?;
    let opt_state = with_prefix(&ck.tensors, "opt/");
    let steps: i64 = ck
        .metadata
        .get("fer.opt_steps")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    opt.load_state(&opt_state, steps);
    let state: TrainerState = serde_json::from_str(
        ck.metadata
            .get("fer.trainer")
            .context("checkpoint has no trainer state")?,
    )?;
    let avg = swa::Averager::restore(with_prefix(&ck.tensors, "swa/"), state.swa_n);
    Ok((state, avg))
}

/// The training forward pass in the configured arithmetic and layout.
pub fn forward_train(
    net: &models::Net,
    x: &Tensor,
    device: Device,
    precision: Precision,
    channels_last: bool,
) -> Result<Tensor> {
    let x = if channels_last {
        nhwc(x)
    } else {
        x.shallow_clone()
    };
    Ok(match precision {
        Precision::Fp32 => net.module.forward_t(&x, true),
        Precision::Bf16 => {
            let _bf16 = crate::autocast::Bf16::enter(device)?;
            // The loss and its softmax stay in float32.
            net.module.forward_t(&x, true).to_kind(Kind::Float)
        }
    })
}

/// The same 4-d tensor with NHWC strides (PyTorch's channels_last): a
/// permuted contiguous copy, viewed back in NCHW order.
fn nhwc(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Moves every 4-d parameter (the convolution kernels) to NHWC strides, so
/// oneDNN keeps activations in that layout through the network. Optimiser
/// state made from these tensors inherits the layout; files stay contiguous.
pub fn to_channels_last(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            if v.dim() == 4 {
                let t = nhwc(&v);
                v.set_data(&t);
            }
        }
    });
}

fn select_value(sel: Select, acc: f64, loss: f64, f1_macro: f64) -> f64 {
    // Larger is better for every selector (loss is negated).
    match sel {
        Select::ValAcc => acc,
        Select::ValLoss => -loss,
        Select::ValF1Macro => f1_macro,
        // Every epoch "improves" (see `improved` in the loop).
        Select::Last => 0.0,
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Sets trainability: with `frozen`, only the head trains.
fn set_frozen(vs: &nn::VarStore, head: &str, frozen: bool, trainable: &[String]) {
    for (name, t) in vs.variables() {
        if trainable.contains(&name) {
            let _ = t.set_requires_grad(!frozen || name.starts_with(head));
        }
    }
}

/// Trains (or resumes) the run in `dir` and evaluates its best weights.
pub fn run(cfg: &RunConfig, dir: &Path, resume: bool) -> Result<Outcome> {
    run_with(cfg, dir, resume, &mut |_| false)
}

/// As `run`, calling `after_epoch` with each epoch's record once it is
/// checkpointed; returning true stops training there (a pruned trial).
pub fn run_with(
    cfg: &RunConfig,
    dir: &Path,
    resume: bool,
    after_epoch: &mut dyn FnMut(&EpochRecord) -> bool,
) -> Result<Outcome> {
    if cfg.ensemble.is_some() {
        return run_ensemble(cfg, dir, resume, after_epoch);
    }
    let rd = RunDir(dir.to_path_buf());
    std::fs::create_dir_all(rd.checkpoints())
        .with_context(|| format!("creating {}", dir.display()))?;
    if !resume {
        // The resolved config goes first, before anything can fail.
        write_atomic(&rd.config(), cfg.to_yaml()?.as_bytes())?;
    }
    let (threads, device, digest, splits) = setup(cfg)?;
    if !resume || !dir.join(crate::provenance::FILE).exists() {
        save_provenance(cfg, dir, device, threads, &digest, &splits)?;
    }
    let k = NUM_CLASSES;
    let counts = splits.train.class_counts();
    let mut meta = ModelMeta {
        name: cfg.name.clone(),
        model: cfg.model.clone(),
        preprocess: cfg.data.augment.eval_only(),
        classes: artifact::class_names(),
        prior: artifact::prior(&splits.train.labels),
        seed: cfg.seed,
        data_digest: digest.clone(),
        params: 0,
        macs: 0,
        val_accuracy: None,
        val_fraction: cfg.data.val_fraction,
        split_seed: cfg.data.split_seed,
        logit_adjust: None,
    };
    eprintln!(
        "{}: {} train / {} val / {} test images, data digest {}",
        cfg.name,
        splits.train.len(),
        splits.val.len(),
        splits.test.len(),
        &digest[..12]
    );

    if !cfg.model.is_network() {
        artifact::save(&rd.model(), &meta, None)?;
        return finish(cfg, &rd, device, threads, None, &splits, &digest);
    }

    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(device);
    let net = models::build(&vs.root(), &cfg.model, cfg.data.augment.size, k).expect("a network");
    meta.params = models::parameter_count(&vs);
    meta.macs = net.macs;
    eprintln!(
        "model {}: {} parameters, {} MACs per image, device {device:?}, {threads} threads",
        cfg.model.family(),
        meta.params,
        models::human(net.macs)
    );
    if let ModelConfig::Resnet18(r) = &cfg.model {
        if let Some(p) = &r.pretrained {
            let rep = models::resnet::load_pretrained(&vs, p)?;
            eprintln!(
                "ImageNet init from {}: {} loaded, {} averaged (RGB -> gray), {} skipped",
                p.display(),
                rep.loaded.len(),
                rep.averaged.len(),
                rep.skipped.len()
            );
        }
    }
    if cfg.train.channels_last {
        to_channels_last(&vs);
    }
    if cfg.train.precision == Precision::Bf16
        && device == Device::Cpu
        && !crate::autocast::cpu_has_bf16()
    {
        eprintln!(
            "warning: train.precision is bf16 but this CPU has no native bfloat16 \
             (AVX-512 BF16 or AMX); oneDNN emulates it, which is slower than fp32"
        );
    }
    let trainable: Vec<String> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, _)| n)
        .collect();
    let mut opt = optim::Optimizer::new(cfg.train.optimizer.clone(), &vs);
    let tc = &cfg.train;
    let base_lr = tc.optimizer.lr();
    let (mut state, mut avg) = if resume {
        let (st, avg) = load_checkpoint(&rd.last(), &vs, &mut opt)
            .with_context(|| format!("resuming from {}", rd.last().display()))?;
        eprintln!("resuming after epoch {} (step {})", st.epochs_done, st.step);
        (st, avg)
    } else {
        let st = TrainerState {
            epochs_done: 0,
            step: 0,
            plateau: Plateau::new(base_lr),
            early: EarlyStop::default(),
            best_epoch: None,
            best_value: None,
            stopped_early: false,
            pruned: false,
            train_seconds: 0.0,
            images_seen: 0,
            history: vec![],
            swa_n: 0,
            swa: None,
        };
        (st, swa::Averager::default())
    };

    let weights = class_weights(&counts, tc.class_weight_power);
    let loss_weight =
        (tc.class_weight_power != 0.0).then(|| Tensor::from_slice(&weights).to_device(device));
    let spec = LoaderSpec {
        batch_size: tc.batch_size,
        augment: Some(cfg.data.augment.clone()),
        eval: cfg.data.augment.eval_only(),
        order: match tc.sampler {
            SamplerKind::Shuffle => Order::Shuffle,
            SamplerKind::Weighted => Order::Weighted(class_weights(&counts, tc.sampler_power)),
        },
        seed: cfg.seed,
        drop_last: true,
        prefetch: tc.prefetch,
    };
    let full_batches = splits.train.len() / tc.batch_size;
    let steps_per_epoch = tc
        .max_batches
        .map_or(full_batches, |m| m.min(full_batches))
        .max(1);
    let total_steps = steps_per_epoch * tc.epochs;
    let all_epochs = tc.total_epochs();

    while state.epochs_done < all_epochs && !state.stopped_early {
        // Past the main schedule: weight averaging at its constant rate.
        let swa_lr = tc
            .swa
            .as_ref()
            .filter(|_| state.epochs_done >= tc.epochs)
            .map(|s| s.lr);
        let epoch = state.epochs_done;
        set_frozen(
            &vs,
            cfg.model.head_prefix(),
            epoch < tc.freeze_backbone_epochs,
            &trainable,
        );
        // Dropout draws from libtorch's generator: re-seed per epoch so a
        // resumed epoch replays exactly.
        seed_epoch(cfg.seed, epoch);
        let bar = ProgressBar::new(steps_per_epoch as u64).with_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("epoch {}/{all_epochs}", epoch + 1));
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0i64, 0i64);
        let mut lr = base_lr;
        for batch in start_epoch(splits.train.clone(), &spec, epoch as u64, 0).take(steps_per_epoch)
        {
            lr = swa_lr.unwrap_or_else(|| {
                lr_at(
                    &tc.schedule,
                    base_lr,
                    state.step,
                    total_steps,
                    steps_per_epoch,
                    state.plateau.lr,
                )
            });
            let x = batch.x.to_device(device);
            let y = batch.y.to_device(device);
            let logits = forward_train(&net, &x, device, tc.precision, tc.channels_last)?;
            let loss = logits.cross_entropy_loss(
                &y,
                loss_weight.as_ref(),
                Reduction::Mean,
                -100,
                tc.label_smoothing,
            );
            let lv = loss.double_value(&[]);
            if !lv.is_finite() {
                bar.abandon();
                bail!(
                    "training diverged: loss is {lv} at epoch {}, step {} (lr {lr:.3e}); \
                     lower train.optimizer.lr or set train.clip_grad_norm",
                    epoch + 1,
                    state.step
                );
            }
            opt.zero_grad();
            loss.backward();
            if let Some(max) = tc.clip_grad_norm {
                opt.clip_grad_norm(max);
            }
            opt.step(lr);
            let b = y.size()[0];
            loss_sum += lv * b as f64;
            correct += logits
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[]);
            seen += b;
            state.step += 1;
            let rate = seen as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} acc {:.3} {:.0} img/s",
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
                rate
            ));
        }
        let train_secs = t0.elapsed().as_secs_f64();
        bar.finish_and_clear();
        state.train_seconds += train_secs;
        state.images_seen += seen as u64;

        let val = validate(&net, &meta.preprocess, device, &splits.val);
        let rec = EpochRecord {
            epoch: epoch + 1,
            step: state.step,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            val_loss: val.overall.log_loss,
            val_acc: val.overall.accuracy,
            val_f1_macro: val.overall.macro_f1,
            img_per_s: seen as f64 / train_secs.max(1e-9),
            epoch_seconds: t0.elapsed().as_secs_f64(),
            time: now(),
        };
        let val_part = if splits.val.is_empty() {
            "no validation split".to_string()
        } else {
            format!(
                "val loss {:.4} acc {:.4} F1 macro {:.4}",
                rec.val_loss, rec.val_acc, rec.val_f1_macro
            )
        };
        eprintln!(
            "epoch {:>2}/{}: train loss {:.4} acc {:.4} | {val_part} | {:.0} img/s, {:.0} s",
            rec.epoch, all_epochs, rec.train_loss, rec.train_acc, rec.img_per_s, rec.epoch_seconds
        );
        // The averaging epochs' rate is fixed, and its jump from the end of
        // the main schedule must not read as a plateau or a reason to stop.
        if swa_lr.is_none() && state.plateau.observe(&tc.schedule, rec.val_loss) {
            eprintln!("reduce-on-plateau: lr now {:.3e}", state.plateau.lr);
        }
        if let Some(es) = tc.early_stopping.as_ref().filter(|_| swa_lr.is_none()) {
            if state.early.observe(rec.val_loss, es.patience, es.min_delta) {
                eprintln!(
                    "early stopping: val loss has not improved by {} for {} epochs",
                    es.min_delta, es.patience
                );
                state.stopped_early = true;
            }
        }
        let v = select_value(tc.select, rec.val_acc, rec.val_loss, rec.val_f1_macro);
        let improved = tc.select == Select::Last || state.best_value.is_none_or(|b| v > b);
        state.history.push(rec);
        state.epochs_done = epoch + 1;
        if swa_lr.is_some() {
            avg.update(&vs);
            state.swa_n = avg.n;
        }
        if improved {
            state.best_value = Some(v);
            state.best_epoch = Some(epoch + 1);
            save_checkpoint(&rd.best(), &vs, &opt, &state, &avg)?;
        }
        // `last` is written last: a kill before this point replays the epoch.
        save_checkpoint(&rd.last(), &vs, &opt, &state, &avg)?;
        write_metrics(&rd, &state.history)?;
        if after_epoch(state.history.last().expect("just pushed")) {
            state.pruned = true;
            break;
        }
    }

    let swa_chosen = if avg.n > 0 && !state.pruned {
        let rec = evaluate_average(
            cfg,
            &avg,
            &vs,
            &net,
            &spec,
            steps_per_epoch,
            &splits,
            &meta.preprocess,
            device,
        )?;
        let v = select_value(tc.select, rec.val_acc, rec.val_loss, rec.val_f1_macro);
        let chosen = tc.select == Select::Last || state.best_value.is_none_or(|b| v > b);
        eprintln!(
            "weight average of {} epochs: val loss {:.4} acc {:.4} F1 macro {:.4} ({} the best single epoch, {})",
            rec.snapshots, rec.val_loss, rec.val_acc, rec.val_f1_macro,
            if chosen { "beats" } else { "does not beat" },
            state.best_epoch.map_or("none".into(), |b| format!("epoch {b}"))
        );
        let acc = rec.val_acc;
        state.swa = Some(SwaRecord { chosen, ..rec });
        save_checkpoint(&rd.swa(), &vs, &opt, &state, &avg)?;
        chosen.then_some(acc)
    } else {
        None
    };
    if let Some(acc) = swa_chosen {
        // The average, already in `vs`, becomes the model file.
        meta.val_accuracy = Some(acc);
    } else {
        // The best epoch's weights become the model file.
        let best = tensor_io::load(&rd.best())?;
        let model = with_prefix(&best.tensors, "model/");
        crate::models::weights::copy_into(&vs, &model, "")?;
        let best_rec = state
            .history
            .iter()
            .find(|r| Some(r.epoch) == state.best_epoch)
            .cloned();
        // No validation split (a refit): no validation accuracy to claim.
        meta.val_accuracy = best_rec
            .map(|r| r.val_acc)
            .filter(|_| !splits.val.is_empty());
    }
    artifact::save(&rd.model(), &meta, Some(&vs))?;
    drop(net);
    // finish() reads params and MACs back from the model file just saved.
    finish(cfg, &rd, device, threads, Some(&state), &splits, &digest)
}

/// Seeds libtorch's generator (dropout) for one epoch of a run.
fn seed_epoch(seed: u64, epoch: usize) {
    tch::manual_seed(
        (seed as i64)
            .wrapping_mul(1_000_003)
            .wrapping_add(epoch as i64),
    );
}

/// Validation accuracy, loss and F1 of `net` as it is now (centre crop).
fn validate(
    net: &models::Net,
    preprocess: &crate::data::augment::AugmentConfig,
    device: Device,
    val: &ImageSet,
) -> EvalReport {
    let t = Instant::now();
    let probs = artifact::predict_set(net.module.as_ref(), preprocess, device, val, false, 256);
    eval::report(&probs, val, "val", false, t.elapsed().as_secs_f64())
}

/// Loads the weight average into `vs`, recomputes its BatchNorm statistics
/// over one augmented pass of the training split (a stream of its own,
/// keyed after the last epoch) and evaluates it on validation.
#[allow(clippy::too_many_arguments)]
fn evaluate_average(
    cfg: &RunConfig,
    avg: &swa::Averager,
    vs: &nn::VarStore,
    net: &models::Net,
    spec: &LoaderSpec,
    steps_per_epoch: usize,
    splits: &Splits,
    preprocess: &crate::data::augment::AugmentConfig,
    device: Device,
) -> Result<SwaRecord> {
    let tc = &cfg.train;
    avg.copy_into(vs)?;
    let key = tc.total_epochs();
    seed_epoch(cfg.seed, key);
    let t0 = Instant::now();
    let batches = start_epoch(splits.train.clone(), spec, key as u64, 0)
        .take(steps_per_epoch)
        .map(|b| b.x.to_device(device));
    let bn_batches = swa::recalibrate_bn(vs, batches, |x| {
        forward_train(net, x, device, tc.precision, tc.channels_last).map(drop)
    })?;
    eprintln!(
        "weight average: BatchNorm statistics from {bn_batches} training batches in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    let val = validate(net, preprocess, device, &splits.val);
    Ok(SwaRecord {
        snapshots: avg.n,
        bn_batches,
        val_loss: val.overall.log_loss,
        val_acc: val.overall.accuracy,
        val_f1_macro: val.overall.macro_f1,
        chosen: false,
    })
}

/// Threads, device, data digest and splits of a run: what both a single
/// run and an ensemble need before their first model.
fn setup(cfg: &RunConfig) -> Result<(usize, Device, String, Splits)> {
    let threads = crate::runtime::init_threads(cfg.train.threads);
    let device = crate::runtime::pick_device(cfg.train.device)?;
    let loaded = data::load(&cfg.data, &crate::layout::cache_dir())?;
    let splits = make_splits(cfg, &loaded.data);
    Ok((threads, device, loaded.data.digest.clone(), splits))
}

/// Where, on what and from which code a run was made (`provenance.json`).
fn save_provenance(
    cfg: &RunConfig,
    dir: &Path,
    device: Device,
    threads: usize,
    digest: &str,
    splits: &Splits,
) -> Result<()> {
    let mut prov = crate::provenance::Provenance::here();
    prov.device = Some(format!("{device:?}"));
    prov.threads = Some(threads);
    prov.data_digest = Some(digest.to_string());
    prov.data_dir = Some(
        std::fs::canonicalize(&cfg.data.dir)
            .unwrap_or_else(|_| cfg.data.dir.clone())
            .display()
            .to_string(),
    );
    prov.split_sizes = Some([splits.train.len(), splits.val.len(), splits.test.len()]);
    prov.save(dir)
}

/// A seed ensemble: member `s` is this config with `seed: s`, trained (or
/// resumed, or reused once finished) in `member-<s>/`; the members' weights
/// then go under `m0.`, `m1.`, ... of one `ensemble` model file, which is
/// evaluated like any other. Members select their own best epoch on the
/// shared validation split, so nothing here sees the test set.
fn run_ensemble(
    cfg: &RunConfig,
    dir: &Path,
    resume: bool,
    after_epoch: &mut dyn FnMut(&EpochRecord) -> bool,
) -> Result<Outcome> {
    let rd = RunDir(dir.to_path_buf());
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !resume {
        write_atomic(&rd.config(), cfg.to_yaml()?.as_bytes())?;
    }
    let dtype = cfg.ensemble.as_ref().map(|e| e.weights).unwrap_or_default();
    let mut parts = Vec::new();
    let (mut seconds, mut images, mut epochs) = (0.0, 0.0, 0);
    let members = cfg.members()?;
    let n = members.len();
    for (k, m) in members.iter().enumerate() {
        let (seed, member) = (m.seed, &m.cfg);
        let mdir = dir.join(&m.dir);
        let mrd = RunDir(mdir.clone());
        let out: Outcome = if mrd.eval().exists() {
            let mut found = crate::config::RunConfig::load(&mrd.config(), &[])?;
            // Where the data sat and where runs were logged may differ.
            found.data.dir.clone_from(&member.data.dir);
            found.tracking.clone_from(&member.tracking);
            if found != *member {
                bail!(
                    "{}: this member was trained with a different config than member {k} of {} (seed {seed})",
                    mrd.config().display(),
                    cfg.name
                );
            }
            eprintln!(
                "ensemble member {}/{n} (seed {seed}): finished in {}, reused",
                k + 1,
                mdir.display()
            );
            Outcome::read(&mdir)?
        } else {
            eprintln!(
                "ensemble member {}/{n} (seed {seed}) in {}",
                k + 1,
                mdir.display()
            );
            let out = run_with(member, &mdir, mrd.last().exists(), after_epoch)?;
            if out.pruned {
                return Ok(out);
            }
            out
        };
        seconds += out.train_seconds;
        images += out.train_seconds * out.train_img_per_s;
        epochs += out.epochs_run;
        parts.push(crate::combine::Part::load(&mrd.model())?);
    }
    let (meta, weights) = crate::combine::combine(&parts, &cfg.name, cfg.seed, dtype)?;
    let (threads, device, digest, splits) = setup(cfg)?;
    save_provenance(cfg, dir, device, threads, &digest, &splits)?;
    if meta.data_digest != digest {
        bail!(
            "ensemble members of {} were trained on other data (digest {}) than {} ({digest})",
            dir.display(),
            meta.data_digest,
            cfg.data.dir.display()
        );
    }
    let val = crate::combine::save(&rd.model(), meta, weights, &splits.val, device)?;
    let state = TrainerState {
        epochs_done: epochs,
        step: 0,
        plateau: Plateau::new(cfg.train.optimizer.lr()),
        early: EarlyStop::default(),
        best_epoch: None,
        best_value: None,
        stopped_early: false,
        pruned: false,
        train_seconds: seconds,
        images_seen: images as u64,
        history: vec![],
        swa_n: 0,
        swa: None,
    };
    eprintln!("ensemble of {n}: val accuracy {val:.4} (members trained {seconds:.0} s in all)");
    finish(cfg, &rd, device, threads, Some(&state), &splits, &digest)
}

/// Evaluates the saved model file on val and test and writes `eval.json`.
fn finish(
    cfg: &RunConfig,
    rd: &RunDir,
    device: Device,
    threads: usize,
    state: Option<&TrainerState>,
    splits: &Splits,
    digest: &str,
) -> Result<Outcome> {
    let mut clf = Classifier::load(&rd.model(), device)?;
    let (val, logit_adjust) = match &cfg.eval.logit_adjust {
        Some(ac) if clf.net.is_some() => {
            let t = std::time::Instant::now();
            // Fitted on the raw probabilities, so finishing twice (a resumed
            // finished run) fits the same alpha rather than stacking two.
            let mut probs = clf.predict_set_raw(&splits.val, cfg.eval.tta, 256);
            let rec = adjust(
                &mut clf,
                &rd.model(),
                &probs,
                &splits.val.labels,
                ac,
                cfg.eval.tta,
            )?;
            if let Some(a) = &clf.meta.logit_adjust {
                a.apply(&mut probs);
            }
            let secs = t.elapsed().as_secs_f64();
            let val = eval::report(&probs, &splits.val, "val", cfg.eval.tta, secs);
            (val, Some(rec))
        }
        _ => (eval::evaluate(&clf, &splits.val, "val", cfg.eval.tta), None),
    };
    let test = eval::evaluate(&clf, &splits.test, "test", cfg.eval.tta);
    let out = Outcome {
        name: cfg.name.clone(),
        family: clf.meta.model.family().to_string(),
        params: clf.meta.params,
        macs: clf.meta.macs,
        device: format!("{device:?}"),
        threads,
        data_digest: digest.to_string(),
        best_epoch: state.and_then(|s| s.best_epoch),
        epochs_run: state.map_or(0, |s| s.epochs_done),
        stopped_early: state.is_some_and(|s| s.stopped_early),
        pruned: state.is_some_and(|s| s.pruned),
        history: state.map_or_else(Vec::new, |s| s.history.clone()),
        train_seconds: state.map_or(0.0, |s| s.train_seconds),
        train_img_per_s: state.map_or(0.0, |s| s.images_seen as f64 / s.train_seconds.max(1e-9)),
        swa: state.and_then(|s| s.swa.clone()),
        logit_adjust,
        val,
        test,
    };
    // Plots before eval.json: a tracker that sees eval.json sees a finished run.
    if let Err(e) = write_plots(rd, &out) {
        tracing::warn!("could not draw the run's plots: {e:#}");
    }
    write_atomic(&rd.eval(), serde_json::to_string_pretty(&out)?.as_bytes())?;
    Ok(out)
}

/// Fits a logit adjustment on validation probabilities `probs` (unadjusted)
/// and writes it into the model file at `path` and into `clf`. Alpha 0 (no
/// gain on validation) is stored too, so the file says it was tried.
pub fn adjust(
    clf: &mut Classifier,
    path: &Path,
    probs: &[f32],
    labels: &[u8],
    cfg: &crate::eval::adjust::AdjustConfig,
    tta: bool,
) -> Result<crate::eval::adjust::AdjustRecord> {
    let rec = crate::eval::adjust::fit(probs, labels, &clf.meta.prior, cfg, tta);
    eprintln!("{}", rec.summary());
    clf.meta.logit_adjust = Some(crate::eval::adjust::LogitAdjust::new(
        rec.alpha,
        &clf.meta.prior,
    ));
    artifact::rewrite_meta(path, path, &clf.meta)?;
    Ok(rec)
}

/// Learning curves and the test confusion matrix as PNGs in `plots/`.
fn write_plots(rd: &RunDir, out: &Outcome) -> Result<()> {
    let classes = artifact::class_names();
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    crate::plot::confusion(
        &rd.plots().join("confusion-test.png"),
        &format!("{}: test confusion (row-normalised)", out.name),
        &names,
        &out.test.overall.confusion,
    )?;
    if !out.history.is_empty() {
        let epochs: Vec<f64> = out.history.iter().map(|r| r.epoch as f64).collect();
        let col = |f: fn(&EpochRecord) -> f64| out.history.iter().map(f).collect::<Vec<f64>>();
        crate::plot::curves(
            &rd.curves_png(),
            &out.name,
            &epochs,
            &[
                ("train loss", col(|r| r.train_loss)),
                ("val loss", col(|r| r.val_loss)),
            ],
            &[
                ("train acc", col(|r| r.train_acc)),
                ("val acc", col(|r| r.val_acc)),
            ],
        )?;
    }
    Ok(())
}
