//! Fitting the classical baseline (`models::classical`): HOG features of the
//! training split (its evaluation crop, and its mirror images when the
//! config asks), standardised, then a multinomial logistic regression fitted
//! by linfa (L-BFGS). The fit is the run's one "epoch": it is validated and
//! recorded like any network's epoch, so sweeps, pruners, metrics files,
//! MLflow and reports need nothing new.

use super::events::{emit, Control, Listener, Own, TrainEvent};
use super::policy::EpochDecision;
use super::{Setup, TrainerState};
use crate::artifact::{self, ModelMeta};
use crate::config::RunConfig;
use crate::data::augment::{eval_batch, AugmentConfig};
use crate::data::ImageSet;
use crate::eval;
use crate::layout::{unix_now, RunDir};
use crate::metric::EpochRecord;
use crate::models::{self, classical::ClassicalConfig, ModelConfig};
use anyhow::{Context, Result};
use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use std::time::Instant;
use tch::{nn, Kind, Tensor};

/// HOG descriptors `[n, F]` of every image of `set` through the eval
/// transform, then of their mirror images when `flip`; and their labels.
pub fn features(
    set: &ImageSet,
    pre: &AugmentConfig,
    cfg: &ClassicalConfig,
    flip: bool,
) -> (Tensor, Vec<usize>) {
    let s = pre.size as i64;
    let idx: Vec<usize> = (0..set.len()).collect();
    let mut parts = Vec::new();
    let mut mirrored = Vec::new();
    tch::no_grad(|| {
        for chunk in idx.chunks(512) {
            let mut buf = vec![0f32; chunk.len() * pre.out_len()];
            eval_batch(&set.pixels, chunk, pre, &mut buf);
            let x = Tensor::from_slice(&buf).view([chunk.len() as i64, 1, s, s]);
            parts.push(models::classical::hog(&x, cfg));
            if flip {
                mirrored.push(models::classical::hog(&x.flip([3]), cfg));
            }
        }
    });
    let mut labels: Vec<usize> = set.labels.iter().map(|&l| l as usize).collect();
    if flip {
        labels.extend_from_within(..);
        parts.extend(mirrored);
    }
    (Tensor::cat(&parts, 0), labels)
}

/// The fitted linear layer `[classes, F]` and bias, from standardised
/// features `z` and their labels. A class absent from the data gets a bias
/// that keeps its probability near zero.
fn fit_logistic(
    z: &Tensor,
    labels: &[usize],
    cfg: &ClassicalConfig,
    classes: usize,
) -> Result<(Tensor, Tensor)> {
    let (n, f) = (z.size()[0] as usize, z.size()[1] as usize);
    // f64: in f32 the summed loss of tens of thousands of images leaves
    // L-BFGS's line search no room, and the fit stops at its start.
    let mut flat = vec![0f64; n * f];
    z.to_kind(Kind::Double)
        .contiguous()
        .copy_data(&mut flat, n * f);
    let x = Array2::from_shape_vec((n, f), flat).expect("n x F features");
    let y = Array1::from_vec(labels.to_vec());
    let fitted = MultiLogisticRegression::default()
        .alpha(cfg.alpha)
        .max_iterations(cfg.max_iterations)
        .fit(&Dataset::new(x, y))
        .context("fitting the logistic regression (linfa-logistic)")?;
    // params: F x (classes present), in the order of `classes()`.
    let params = fitted.params();
    let intercept = fitted.intercept();
    let mut w = vec![0f32; classes * f];
    let mut b = vec![-30f32; classes];
    for (j, &c) in fitted.classes().iter().enumerate() {
        for i in 0..f {
            w[c * f + i] = params[[i, j]] as f32;
        }
        b[c] = intercept[j] as f32;
    }
    Ok((
        Tensor::from_slice(&w).view([classes as i64, f as i64]),
        Tensor::from_slice(&b),
    ))
}

/// What a fit reached on its own (training) data.
struct Fitted {
    loss: f64,
    acc: f64,
    /// Training images, mirrors included.
    images: usize,
}

/// Fits the standardisation and the logistic regression on `train` and
/// copies them into the network's variables in `vs`.
fn fit_into(
    vs: &nn::VarStore,
    cc: &ClassicalConfig,
    pre: &AugmentConfig,
    train: &ImageSet,
) -> Result<Fitted> {
    let (feats, labels) = features(train, pre, cc, cc.flip);
    let mean = feats.mean_dim([0i64].as_slice(), false, Kind::Float);
    let std = feats.std_dim([0i64].as_slice(), false, false);
    let scale = std.clamp_min(1e-6).reciprocal();
    let z = (&feats - &mean) * &scale;
    let (w, b) = fit_logistic(
        &z,
        &labels,
        cc,
        vs.variables()["fc.bias"].size()[0] as usize,
    )?;
    let vars = vs.variables();
    tch::no_grad(|| {
        vars["mean"].shallow_clone().copy_(&mean);
        vars["scale"].shallow_clone().copy_(&scale);
        vars["fc.weight"].shallow_clone().copy_(&w);
        vars["fc.bias"].shallow_clone().copy_(&b);
    });
    let (loss, acc) = tch::no_grad(|| {
        let logits = z.matmul(&w.tr()) + &b;
        let y = Tensor::from_slice(&labels.iter().map(|&l| l as i64).collect::<Vec<_>>());
        let loss = logits.cross_entropy_for_logits(&y).double_value(&[]);
        let acc = logits
            .argmax(-1, false)
            .eq_tensor(&y)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        (loss, acc)
    });
    Ok(Fitted {
        loss,
        acc,
        images: labels.len(),
    })
}

/// Fits the classical model of `cfg` and saves its model file. The state
/// holds its one epoch (the fit and its validation).
pub(super) fn run(
    cfg: &RunConfig,
    rd: &RunDir,
    env: &Setup,
    meta: &mut ModelMeta,
    extra: &mut [&mut dyn Listener],
    control: Option<&mut dyn Control>,
) -> Result<TrainerState> {
    let ModelConfig::Classical(cc) = &cfg.model else {
        unreachable!("called for the classical family only")
    };
    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(env.device);
    let net = models::build(
        &vs.root(),
        &cfg.model,
        cfg.data.augment.size,
        env.classes.len(),
    )?;
    meta.params = models::parameter_count(&vs);
    meta.macs = net.macs;
    eprintln!(
        "model classical: HOG ({} features) + logistic regression (linfa), {} parameters, {} MACs per image",
        cc.features(cfg.data.augment.size as i64),
        meta.params,
        models::human(net.macs),
    );
    let mut own = Own::new(&cfg.train, rd, !env.splits.val.is_empty());
    let mut listeners = own.with(extra);
    let started = TrainEvent::EpochStarted {
        epoch: 1,
        epochs: 1,
        steps: 1,
    };
    emit(&mut listeners, &started)?;

    let t0 = Instant::now();
    let pre = &meta.preprocess;
    let fit = fit_into(&vs, cc, pre, &env.splits.train)?;
    let fit_secs = t0.elapsed().as_secs_f64();
    emit(
        &mut listeners,
        &TrainEvent::Step {
            loss: fit.loss,
            acc: fit.acc,
            img_per_s: fit.images as f64 / fit_secs.max(1e-9),
        },
    )?;
    emit(&mut listeners, &TrainEvent::Trained)?;
    let val = &env.splits.val;
    let tv = Instant::now();
    let probs = artifact::predict_set(net.module.as_ref(), pre, env.device, val, false, 256);
    let v = eval::report(
        &probs,
        val,
        &env.classes,
        "val",
        false,
        tv.elapsed().as_secs_f64(),
    );
    let rec = EpochRecord {
        epoch: 1,
        step: 1,
        lr: 0.0,
        train_loss: fit.loss,
        train_acc: fit.acc,
        val_loss: v.overall.log_loss,
        val_acc: v.overall.accuracy,
        val_f1_macro: v.overall.macro_f1,
        val_robust_acc: None,
        img_per_s: fit.images as f64 / fit_secs.max(1e-9),
        epoch_seconds: t0.elapsed().as_secs_f64(),
        time: unix_now(),
    };
    let score = super::policy::score(cfg.train.select, |k| k.of(&rec));
    let decision = EpochDecision {
        lr_cut: None,
        stop_early: false,
        new_best: Some(score),
    };
    emit(
        &mut listeners,
        &TrainEvent::Validated {
            record: &rec,
            decision: &decision,
        },
    )?;
    let mut state = TrainerState::new(0.0);
    state.epochs_done = 1;
    state.step = 1;
    state.best_epoch = Some(1);
    state.best_value = Some(score);
    state.train_seconds = fit_secs;
    state.images_seen = fit.images as u64;
    state.history.push(rec);
    let (record, history) = (state.history.last().expect("pushed"), &state.history);
    emit(&mut listeners, &TrainEvent::EpochEnd { record, history })?;
    if let Some(c) = control {
        // One epoch: nothing is left to stop, but the sweep hears it.
        state.pruned = c.should_stop(record);
    }
    meta.val_accuracy = (!val.is_empty()).then_some(state.history[0].val_acc);
    artifact::save(&rd.model(), meta, Some(&vs))?;
    Ok(state)
}
