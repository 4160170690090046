//! The epoch loop of one network, top to bottom: train an epoch, validate
//! it, let `policy` decide, checkpoint, tell the listeners, ask the control.
//! Then, when `train.swa` asked for one, the weight average.

use super::events::{emit, Control, Listener, Own, TrainEvent};
use super::policy::{self, EpochDecision};
use super::schedule::lr_at;
use super::{checkpoint, forward_train, optim, swa, Setup, SwaRecord, TrainerState};
use crate::artifact::{self, ModelMeta};
use crate::config::train::{Precision, SamplerKind};
use crate::config::RunConfig;
use crate::data::augment::AugmentConfig;
use crate::data::loader::{start_epoch, Batch, LoaderSpec, Order};
use crate::data::sampler::class_weights;
use crate::eval::{self, EvalReport};
use crate::layout::{unix_now, RunDir};
use crate::metric::EpochRecord;
use crate::models::{self, ModelConfig};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::time::Instant;
use tch::{nn, Device, Kind, Reduction, Tensor};

/// A network in training with everything its epochs need.
pub(super) struct Fit<'a> {
    cfg: &'a RunConfig,
    rd: &'a RunDir,
    env: &'a Setup,
    vs: nn::VarStore,
    net: models::Net,
    opt: optim::Optimizer,
    /// The variables that train once the backbone thaws.
    trainable: Vec<String>,
    spec: LoaderSpec,
    loss_weight: Option<Tensor>,
    steps_per_epoch: usize,
    /// The evaluation transform (the model file's).
    preprocess: AugmentConfig,
    /// The corrupted validation copy of `train.robust_val`.
    robust_val: Option<crate::data::ImageSet>,
}

impl<'a> Fit<'a> {
    /// Builds the network, its optimiser and its loader; fills in `meta`'s
    /// parameter and MAC counts.
    pub fn new(
        cfg: &'a RunConfig,
        rd: &'a RunDir,
        env: &'a Setup,
        meta: &mut ModelMeta,
    ) -> Result<Fit<'a>> {
        let (vs, net) = build_network(cfg, env, meta)?;
        let trainable: Vec<String> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, _)| n)
            .collect();
        let opt = optim::Optimizer::new(cfg.train.optimizer.clone(), &vs);
        let tc = &cfg.train;
        let counts = env.splits.train.class_counts(env.classes.len());
        let loss_weight = (tc.class_weight_power != 0.0).then(|| {
            Tensor::from_slice(&class_weights(&counts, tc.class_weight_power)).to_device(env.device)
        });
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
        let full_batches = env.splits.train.len() / tc.batch_size;
        // Batches are full (drop_last): fewer images than one batch would
        // train nothing and still write a model file.
        if full_batches == 0 {
            anyhow::bail!(
                "the training split has {} images, fewer than one batch (train.batch_size {}): \
                 no optimiser step would be taken; lower train.batch_size or use more data",
                env.splits.train.len(),
                tc.batch_size
            );
        }
        let steps_per_epoch = tc
            .max_batches
            .map_or(full_batches, |m| m.min(full_batches))
            .max(1);
        Ok(Fit {
            cfg,
            rd,
            env,
            vs,
            net,
            opt,
            trainable,
            spec,
            loss_weight,
            steps_per_epoch,
            preprocess: meta.preprocess.clone(),
            robust_val: (cfg.train.robust_val && !env.splits.val.is_empty())
                .then(|| eval::robust::robust_val(&env.splits.val)),
        })
    }

    /// The state to continue from: the last checkpoint's when resuming
    /// (weights, optimiser and average restored), else a fresh one.
    pub fn start(&mut self, resume: bool) -> Result<(TrainerState, swa::Averager)> {
        if !resume {
            let fresh = TrainerState::new(self.cfg.train.optimizer.lr());
            return Ok((fresh, swa::Averager::default()));
        }
        let last = self.rd.last();
        let (st, avg) = checkpoint::load(&last, &self.vs, &mut self.opt)
            .with_context(|| format!("resuming from {}", last.display()))?;
        eprintln!("resuming after epoch {} (step {})", st.epochs_done, st.step);
        Ok((st, avg))
    }

    /// Runs the epochs left: until the schedule ends, early stopping stops
    /// it, or `control` does (a pruned run). The trainer's own listeners
    /// hear each event before `extra`.
    pub fn epochs(
        &mut self,
        state: &mut TrainerState,
        avg: &mut swa::Averager,
        extra: &mut [&mut dyn Listener],
        mut control: Option<&mut dyn Control>,
    ) -> Result<()> {
        let cfg = self.cfg;
        let mut own = Own::new(&cfg.train, self.rd, !self.env.splits.val.is_empty());
        let mut listeners = own.with(extra);
        while state.epochs_done < cfg.train.total_epochs() && !state.stopped_early {
            let swa_lr = policy::swa_lr(&cfg.train, state.epochs_done);
            let rec = self.train_epoch(state, swa_lr, &mut listeners)?;
            let decision = policy::end_of_epoch(
                &cfg.train,
                &mut state.plateau,
                &mut state.early,
                state.best_value,
                &rec,
                swa_lr.is_some(),
            );
            let validated = TrainEvent::Validated {
                record: &rec,
                decision: &decision,
            };
            emit(&mut listeners, &validated)?;
            self.checkpoint(state, avg, rec, &decision, swa_lr.is_some())?;
            let (record, history) = (state.history.last().expect("just saved"), &state.history);
            emit(&mut listeners, &TrainEvent::EpochEnd { record, history })?;
            if control.as_mut().is_some_and(|c| c.should_stop(record)) {
                state.pruned = true;
                break;
            }
        }
        Ok(())
    }

    /// One epoch's batches at the scheduled rate (or `swa_lr`), then
    /// validation: the epoch's record.
    fn train_epoch(
        &mut self,
        state: &mut TrainerState,
        swa_lr: Option<f64>,
        listeners: &mut [&mut dyn Listener],
    ) -> Result<EpochRecord> {
        let (cfg, epoch) = (self.cfg, state.epochs_done);
        let frozen = epoch < cfg.train.freeze_backbone_epochs;
        set_frozen(&self.vs, cfg.model.head_prefix(), frozen, &self.trainable);
        // Dropout draws from libtorch's generator: re-seed per epoch so a
        // resumed epoch replays exactly.
        seed_epoch(cfg.seed, epoch);
        let started = TrainEvent::EpochStarted {
            epoch: epoch + 1,
            epochs: cfg.train.total_epochs(),
            steps: self.steps_per_epoch,
        };
        emit(listeners, &started)?;
        let t0 = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0i64, 0i64);
        let mut lr = cfg.train.optimizer.lr();
        let train = self.env.splits.train.clone();
        for batch in start_epoch(train, &self.spec, epoch as u64, 0).take(self.steps_per_epoch) {
            lr = swa_lr.unwrap_or_else(|| self.scheduled_lr(state));
            let (loss, right) = self.step(&batch, lr, state, listeners)?;
            let b = batch.y.size()[0];
            loss_sum += loss * b as f64;
            correct += right;
            seen += b;
            state.step += 1;
            let step = TrainEvent::Step {
                loss: loss_sum / seen as f64,
                acc: correct as f64 / seen as f64,
                img_per_s: seen as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            };
            emit(listeners, &step)?;
        }
        let train_secs = t0.elapsed().as_secs_f64();
        emit(listeners, &TrainEvent::Trained)?;
        state.train_seconds += train_secs;
        state.images_seen += seen as u64;
        let val = self.validate();
        let val_robust_acc = self
            .robust_val
            .as_ref()
            .map(|set| self.evaluate_on(set, "val-corrupted").overall.accuracy);
        Ok(EpochRecord {
            epoch: epoch + 1,
            step: state.step,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            val_loss: val.overall.log_loss,
            val_acc: val.overall.accuracy,
            val_f1_macro: val.overall.macro_f1,
            val_robust_acc,
            img_per_s: seen as f64 / train_secs.max(1e-9),
            epoch_seconds: t0.elapsed().as_secs_f64(),
            time: unix_now(),
        })
    }

    /// The main schedule's rate at the state's step.
    fn scheduled_lr(&self, state: &TrainerState) -> f64 {
        let tc = &self.cfg.train;
        lr_at(
            &tc.schedule,
            tc.optimizer.lr(),
            state.step,
            self.steps_per_epoch * tc.epochs,
            self.steps_per_epoch,
            state.plateau.lr,
        )
    }

    /// One optimiser step at rate `lr`: the batch's mean loss and its correct
    /// predictions. A non-finite loss fails the run before the step.
    fn step(
        &mut self,
        batch: &Batch,
        lr: f64,
        state: &TrainerState,
        listeners: &mut [&mut dyn Listener],
    ) -> Result<(f64, i64)> {
        let (tc, device) = (&self.cfg.train, self.env.device);
        let x = batch.x.to_device(device);
        let y = batch.y.to_device(device);
        let logits = forward_train(&self.net, &x, device, tc.precision, tc.channels_last)?;
        let loss = logits.cross_entropy_loss(
            &y,
            self.loss_weight.as_ref(),
            Reduction::Mean,
            -100,
            tc.label_smoothing,
        );
        let lv = loss.double_value(&[]);
        if !lv.is_finite() {
            emit(listeners, &TrainEvent::Diverged)?;
            bail!(
                "training diverged: loss is {lv} at epoch {}, step {} (lr {lr:.3e}); \
                 lower train.optimizer.lr or set train.clip_grad_norm",
                state.epochs_done + 1,
                state.step
            );
        }
        self.opt.zero_grad();
        loss.backward();
        if let Some(max) = tc.clip_grad_norm {
            self.opt.clip_grad_norm(max);
        }
        self.opt.step(lr);
        let right = logits
            .argmax(-1, false)
            .eq_tensor(&y)
            .sum(Kind::Int64)
            .int64_value(&[]);
        Ok((lv, right))
    }

    /// Records an epoch and writes its checkpoints: `best` when it is the
    /// best so far, then `last`. `last` is written last: a kill before this
    /// point replays the epoch.
    fn checkpoint(
        &self,
        state: &mut TrainerState,
        avg: &mut swa::Averager,
        rec: EpochRecord,
        decision: &EpochDecision,
        averaging: bool,
    ) -> Result<()> {
        state.stopped_early |= decision.stop_early;
        state.history.push(rec);
        state.epochs_done += 1;
        if averaging {
            avg.update(&self.vs);
            state.swa_n = avg.n;
        }
        if let Some(v) = decision.new_best {
            state.best_value = Some(v);
            state.best_epoch = Some(state.epochs_done);
            checkpoint::save(&self.rd.best(), &self.vs, &self.opt, state, avg)?;
        }
        checkpoint::save(&self.rd.last(), &self.vs, &self.opt, state, avg)
    }

    /// Validation accuracy, loss and F1 of the network as it is now (centre crop).
    fn validate(&self) -> EvalReport {
        self.evaluate_on(&self.env.splits.val, "val")
    }

    /// The network as it is now on `set` (centre crop).
    fn evaluate_on(&self, set: &crate::data::ImageSet, split: &str) -> EvalReport {
        let t = Instant::now();
        let probs = artifact::predict_set(
            self.net.module.as_ref(),
            &self.preprocess,
            self.env.device,
            set,
            false,
            256,
        );
        eval::report(
            &probs,
            set,
            &self.env.classes,
            split,
            false,
            t.elapsed().as_secs_f64(),
        )
    }

    /// Evaluates the weight average, which stays in the live weights, and
    /// decides whether it beats the best epoch; checkpoints it with its record.
    pub fn average(&mut self, state: &mut TrainerState, avg: &swa::Averager) -> Result<()> {
        let rec = self.evaluate_average(avg)?;
        let chosen = policy::swa_chosen(self.cfg.train.select, &rec, state.best_value);
        eprintln!(
            "weight average of {} epochs: val loss {:.4} acc {:.4} F1 macro {:.4} ({} the best single epoch, {})",
            rec.snapshots, rec.val_loss, rec.val_acc, rec.val_f1_macro,
            if chosen { "beats" } else { "does not beat" },
            state.best_epoch.map_or("none".into(), |b| format!("epoch {b}"))
        );
        state.swa = Some(SwaRecord { chosen, ..rec });
        checkpoint::save(&self.rd.swa(), &self.vs, &self.opt, state, avg)
    }

    /// Loads the weight average into the network, recomputes its BatchNorm
    /// statistics over one augmented pass of the training split (a stream of
    /// its own, keyed after the last epoch) and evaluates it on validation.
    fn evaluate_average(&self, avg: &swa::Averager) -> Result<SwaRecord> {
        let (tc, device) = (&self.cfg.train, self.env.device);
        avg.copy_into(&self.vs)?;
        let key = tc.total_epochs();
        seed_epoch(self.cfg.seed, key);
        let t0 = Instant::now();
        let batches = start_epoch(self.env.splits.train.clone(), &self.spec, key as u64, 0)
            .take(self.steps_per_epoch)
            .map(|b| b.x.to_device(device));
        let bn_batches = swa::recalibrate_bn(&self.vs, batches, |x| {
            forward_train(&self.net, x, device, tc.precision, tc.channels_last).map(drop)
        })?;
        eprintln!(
            "weight average: BatchNorm statistics from {bn_batches} training batches in {:.0} s",
            t0.elapsed().as_secs_f64()
        );
        let val = self.validate();
        Ok(SwaRecord {
            snapshots: avg.n,
            bn_batches,
            val_loss: val.overall.log_loss,
            val_acc: val.overall.accuracy,
            val_f1_macro: val.overall.macro_f1,
            chosen: false,
        })
    }

    /// Loads the weights of the checkpoint at `path` into the network.
    pub fn load_weights(&self, path: &Path) -> Result<()> {
        checkpoint::load_weights(path, &self.vs)
    }

    /// The network's variables, for the model file.
    pub fn weights(&self) -> &nn::VarStore {
        &self.vs
    }
}

/// The seeded network of `cfg`, with its ImageNet initialisation and
/// layout; prints its size and fills in `meta`'s counts.
fn build_network(
    cfg: &RunConfig,
    env: &Setup,
    meta: &mut ModelMeta,
) -> Result<(nn::VarStore, models::Net)> {
    let device = env.device;
    tch::manual_seed(cfg.seed as i64);
    let vs = nn::VarStore::new(device);
    let net = models::build(
        &vs.root(),
        &cfg.model,
        cfg.data.augment.size,
        env.classes.len(),
    )
    .expect("a network");
    meta.params = models::parameter_count(&vs);
    meta.macs = net.macs;
    eprintln!(
        "model {}: {} parameters, {} MACs per image, device {device:?}, {} threads",
        cfg.model.family(),
        meta.params,
        models::human(net.macs),
        env.threads
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
        super::to_channels_last(&vs);
    }
    if cfg.train.precision == Precision::Auto {
        eprintln!(
            "train.precision auto: {} on this machine",
            match crate::autocast::resolve(cfg.train.precision, device) {
                Precision::Bf16 => "bf16",
                _ => "fp32",
            }
        );
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
    Ok((vs, net))
}

/// Seeds libtorch's generator (dropout) for one epoch of a run.
fn seed_epoch(seed: u64, epoch: usize) {
    tch::manual_seed(
        (seed as i64)
            .wrapping_mul(1_000_003)
            .wrapping_add(epoch as i64),
    );
}

/// Sets trainability: with `frozen`, only the head trains.
fn set_frozen(vs: &nn::VarStore, head: &str, frozen: bool, trainable: &[String]) {
    for (name, t) in vs.variables() {
        if trainable.contains(&name) {
            let _ = t.set_requires_grad(!frozen || name.starts_with(head));
        }
    }
}
