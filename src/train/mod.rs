//! The trainer: reads top to bottom. Data, model, optimiser, then epochs of
//! (train, validate, decide, checkpoint). Checkpoints hold the weights, the
//! optimiser state and the trainer state, and every random source is keyed
//! by (seed, epoch), so `--resume` continues exactly where a killed run's
//! last completed epoch left off. Decisions are pure functions (`policy`);
//! the epoch loop (`fit`) emits events to listeners, which draw, log and
//! write the metrics files, and asks a control whether to stop (`events`).

mod checkpoint;
pub mod classical;
mod ensemble;
pub mod events;
mod fit;
mod init;
pub mod optim;
mod outcome;
pub mod policy;
pub mod repeat;
pub mod resume;
pub mod schedule;
pub mod swa;

pub use crate::metric::EpochRecord;
pub use events::{Control, Listener, Track, TrainEvent};
pub use outcome::{adjust, Outcome};

use crate::artifact::{self, ModelMeta};
use crate::config::train::Precision;
use crate::config::RunConfig;
use crate::data::split::stratified;
use crate::data::{self, FerData, ImageSet};
use crate::layout::{write_atomic, RunDir};
use crate::metric::MetricKey;
use anyhow::{Context, Result};
use schedule::{EarlyStop, Plateau};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

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

impl TrainerState {
    /// Before the first epoch, at the base rate `lr`.
    pub fn new(lr: f64) -> TrainerState {
        TrainerState {
            epochs_done: 0,
            step: 0,
            plateau: Plateau::new(lr),
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
        }
    }
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

impl SwaRecord {
    /// The average's value of a validation metric; it has no training
    /// metrics of its own (NaN).
    pub fn metric(&self, k: MetricKey) -> f64 {
        match k {
            MetricKey::ValLoss => self.val_loss,
            MetricKey::ValAcc => self.val_acc,
            MetricKey::ValF1Macro => self.val_f1_macro,
            _ => f64::NAN,
        }
    }
}

/// Splits, subsets and de-duplicates the loaded data as the config says.
pub struct Splits {
    pub train: Arc<ImageSet>,
    pub val: ImageSet,
    pub test: ImageSet,
}

pub fn make_splits(cfg: &RunConfig, data: &FerData) -> Result<Splits> {
    if let Some(cv) = &cfg.cv {
        return fold_splits(cfg, cv, data);
    }
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
    Ok(Splits {
        train: Arc::new(train),
        val: data.train.select(&train_idx.val),
        test: data.test.clone(),
    })
}

/// One cross-validation fold's splits: the training images' fold `k` is
/// the test split; validation is carved from the other folds by subject
/// too (a subject's frames in train and validation would make every epoch
/// look better than it is, and pick a late, overfitted one). A `test/`
/// folder is not used: every fold is tested on its own images.
fn fold_splits(
    cfg: &RunConfig,
    cv: &crate::data::folds::CvConfig,
    data: &FerData,
) -> Result<Splits> {
    let Some(k) = cv.fold else {
        anyhow::bail!(
            "{}: a cross-validated config is trained by `fer train` one fold at a time",
            cfg.name
        );
    };
    let groups = cv.groups_of(&data.train)?;
    let folds = crate::data::folds::stratified_group_folds(
        &data.train.labels,
        &groups,
        cv.folds,
        cfg.data.split_seed,
    )?;
    let (held, rest): (Vec<usize>, Vec<usize>) =
        (0..data.train.len()).partition(|&i| folds[i] == k - 1);
    let pool = data.train.select(&rest);
    let tv = grouped_val(
        &pool,
        &rest.iter().map(|&i| groups[i].clone()).collect::<Vec<_>>(),
        cfg,
    )?;
    let mut train = pool.select(&tv.train);
    if cfg.train.subset < 1.0 {
        let keep = stratified(&train.labels, cfg.train.subset, cfg.seed).val;
        train = train.select(&keep);
    }
    Ok(Splits {
        train: Arc::new(train),
        val: pool.select(&tv.val),
        test: data.train.select(&held),
    })
}

/// A validation split of `pool` that keeps each subject on one side: the
/// first of `round(1 / val_fraction)` stratified group folds (at most one
/// per subject), so about `val_fraction` of the images.
fn grouped_val(
    pool: &ImageSet,
    groups: &[String],
    cfg: &RunConfig,
) -> Result<crate::data::split::TrainVal> {
    let f = cfg.data.val_fraction;
    if f <= 0.0 {
        return Ok(stratified(&pool.labels, f, cfg.data.split_seed));
    }
    let subjects = groups
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if subjects < 2 {
        anyhow::bail!(
            "{}: the training folds of a fold hold {subjects} subject, too few to keep validation apart from training",
            cfg.name
        );
    }
    let k = ((1.0 / f).round() as usize).clamp(2, subjects);
    let folds =
        crate::data::folds::stratified_group_folds(&pool.labels, groups, k, cfg.data.split_seed)?;
    let (val, train) = (0..pool.len()).partition(|&i| folds[i] == 0);
    Ok(crate::data::split::TrainVal { train, val })
}

/// The training forward pass in the configured arithmetic and layout.
pub fn forward_train(
    net: &crate::models::Net,
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
    // `auto` is resolved here, so every caller trains as the trainer does.
    Ok(match crate::autocast::resolve(precision, device) {
        Precision::Fp32 => net.module.forward_t(&x, true),
        Precision::Bf16 | Precision::Auto => {
            let _bf16 = crate::autocast::Bf16::enter(device)?;
            // The loss and its softmax stay in float32.
            net.module.forward_t(&x, true).to_kind(Kind::Float)
        }
    })
}

pub use crate::models::{nhwc, to_channels_last};

/// Trains (or resumes) the run in `dir` and evaluates its best weights.
pub fn run(cfg: &RunConfig, dir: &Path, resume: bool) -> Result<Outcome> {
    run_with(cfg, dir, resume, &mut [], None)
}

/// As `run`, telling `listeners` every event after the trainer's own (the
/// progress bar, the log, the metrics files), and asking `control` after
/// each checkpointed epoch whether to stop there (a pruned run).
pub fn run_with(
    cfg: &RunConfig,
    dir: &Path,
    resume: bool,
    listeners: &mut [&mut dyn Listener],
    control: Option<&mut dyn Control>,
) -> Result<Outcome> {
    // One writer: a second process on this folder is refused here.
    let _lock = crate::lock::acquire(dir)?;
    if cfg.is_repeated() {
        anyhow::bail!(
            "{}: a config with seeds or repeat is trained by `fer train` (train::repeat), one seed at a time",
            cfg.name
        );
    }
    if cfg.ensemble.is_some() {
        if cfg.train.init.is_some() {
            anyhow::bail!(
                "{}: train.init starts one network from a model file; an ensemble's members \
                 each start from their own seed (leave train.init out)",
                cfg.name
            );
        }
        return ensemble::run(cfg, dir, resume, listeners, control);
    }
    let rd = RunDir(dir.to_path_buf());
    std::fs::create_dir_all(rd.checkpoints())
        .with_context(|| format!("creating {}", dir.display()))?;
    if !resume {
        // The resolved config goes first, before anything can fail.
        write_atomic(&rd.config(), cfg.to_yaml()?.as_bytes())?;
    }
    let env = Setup::new(cfg)?;
    if resume {
        resume::check_data(dir, &env.digest, &cfg.data.dir)?;
    }
    // Read and checked before anything trains; a resume has its weights.
    let init = match (&cfg.train.init, resume) {
        (Some(p), false) => Some(init::Init::read(cfg, &env, p)?),
        _ => None,
    };
    if !resume || !dir.join(crate::provenance::FILE).exists() {
        env.save_provenance(cfg, dir, init.as_ref().map(|i| i.record.clone()))?;
    }
    let mut meta = model_meta(cfg, &env);
    eprintln!(
        "{}: {} train / {} val / {} test images, data digest {}",
        cfg.name,
        env.splits.train.len(),
        env.splits.val.len(),
        env.splits.test.len(),
        &env.digest[..12]
    );
    if !cfg.model.is_network() {
        artifact::save(&rd.model(), &meta, None)?;
        return outcome::finish(cfg, &rd, &env, None);
    }
    if matches!(cfg.model, crate::models::ModelConfig::Classical(_)) {
        // Fitted in one go (a resume fits again: it takes minutes).
        let state = classical::run(cfg, &rd, &env, &mut meta, listeners, control)?;
        return outcome::finish(cfg, &rd, &env, Some(&state));
    }
    let mut fit = fit::Fit::new(cfg, &rd, &env, &mut meta)?;
    if let Some(init) = &init {
        init.apply(fit.weights())?;
    }
    let (mut state, mut avg) = fit.start(resume)?;
    fit.epochs(&mut state, &mut avg, listeners, control)?;
    if avg.n > 0 && !state.pruned {
        fit.average(&mut state, &avg)?;
    }
    let ship = policy::ship(state.swa.as_ref(), &state.history, state.best_epoch);
    if let policy::Ship::BestEpoch(_) = ship {
        // Else the average, already in the live weights, ships.
        fit.load_weights(&rd.best())?;
    }
    meta.val_accuracy = ship.val_accuracy(!env.splits.val.is_empty());
    artifact::save(&rd.model(), &meta, Some(fit.weights()))?;
    drop(fit);
    // finish() reads params and MACs back from the model file just saved.
    outcome::finish(cfg, &rd, &env, Some(&state))
}

/// Makes `dir` a finished run folder of an existing model file, for
/// reports and comparisons that read run folders: the config rebuilt from
/// the file's metadata (its model, classes, conversion and the validation
/// split its weights were selected on), a copy of the file, and `eval.json`
/// from evaluating it on that split and on the test split of `data_dir`
/// (ten-crop TTA with `tta`). Nothing is trained, so the folder has no
/// learning curves and its training time and speed are zero; no
/// provenance is written, since this process did not make the weights.
/// Refused when `data_dir` is not the data the file was trained on (its
/// validation split would hold other images).
pub fn adopt_model_file(file: &Path, data_dir: &Path, tta: bool, dir: &Path) -> Result<Outcome> {
    let meta = ModelMeta::read(file)?;
    let cfg = RunConfig {
        name: meta.name.clone(),
        seed: meta.seed,
        data: data::DataConfig {
            dir: data_dir.to_path_buf(),
            classes: Some(meta.classes.clone()),
            convert: meta.convert,
            test_groups: meta.test_groups.clone(),
            val_fraction: meta.val_fraction,
            split_seed: meta.split_seed,
            augment: meta.preprocess.clone(),
            ..Default::default()
        },
        model: meta.model.clone(),
        train: Default::default(),
        eval: crate::config::EvalConfig {
            tta,
            logit_adjust: None,
        },
        tracking: None,
        ensemble: None,
        seeds: Vec::new(),
        repeat: None,
        cv: meta.cv.clone(),
    };
    let env = Setup::new(&cfg)?;
    anyhow::ensure!(
        env.digest == meta.data_digest,
        "{}: trained on other data (digest {}) than {} holds ({}); its validation split would not be its own, so it is not scored there (pass --data with the data set it was trained on)",
        file.display(),
        &meta.data_digest[..12.min(meta.data_digest.len())],
        data_dir.display(),
        &env.digest[..12]
    );
    let rd = RunDir(dir.to_path_buf());
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&rd.config(), cfg.to_yaml()?.as_bytes())?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    write_atomic(&rd.model(), &bytes)?;
    outcome::finish(&cfg, &rd, &env, None)
}

/// Threads, device, data digest and splits of a run: what both a single
/// run and an ensemble need before their first model.
struct Setup {
    threads: usize,
    device: Device,
    digest: String,
    /// The data set's class names in label order.
    classes: Vec<String>,
    splits: Splits,
}

impl Setup {
    fn new(cfg: &RunConfig) -> Result<Setup> {
        let threads = crate::runtime::init_threads(cfg.train.threads);
        let device = crate::runtime::pick_device(cfg.train.device)?;
        let loaded = data::load(&cfg.data, &crate::layout::cache_dir())?;
        let splits = make_splits(cfg, &loaded.data)?;
        check_splits(cfg, &splits, &cfg.data.dir)?;
        Ok(Setup {
            threads,
            device,
            digest: loaded.data.digest.clone(),
            classes: loaded.data.classes.clone(),
            splits,
        })
    }

    /// Where, on what and from which code a run was made (`provenance.json`).
    fn save_provenance(
        &self,
        cfg: &RunConfig,
        dir: &Path,
        init: Option<crate::provenance::InitRecord>,
    ) -> Result<()> {
        let mut prov = crate::provenance::Provenance::here();
        prov.init = init;
        prov.device = Some(format!("{:?}", self.device));
        prov.threads = Some(self.threads);
        prov.data_digest = Some(self.digest.clone());
        prov.data_dir = Some(
            std::fs::canonicalize(&cfg.data.dir)
                .unwrap_or_else(|_| cfg.data.dir.clone())
                .display()
                .to_string(),
        );
        let s = &self.splits;
        prov.split_sizes = Some([s.train.len(), s.val.len(), s.test.len()]);
        // The recipe as it started: what a resume is checked against.
        prov.config = Some(serde_json::to_value(cfg)?);
        prov.save(dir)
    }
}

/// Refuses splits a run cannot be trained or judged on: no training
/// images, an empty validation split that selection needs, or no test
/// images to report (an "acc 0.0000" of nothing is not a result).
fn check_splits(cfg: &RunConfig, s: &Splits, data: &Path) -> Result<()> {
    let why = if s.train.is_empty() {
        Some("the training split has no images")
    } else if s.val.is_empty() && cfg.data.val_fraction > 0.0 {
        Some("the validation split is empty (too few images for data.val_fraction)")
    } else if s.test.is_empty() {
        Some("the test split has no images (a run is evaluated on it)")
    } else {
        None
    };
    match why {
        Some(why) => anyhow::bail!("{}: {why}; nothing was trained", data.display()),
        None => Ok(()),
    }
}

/// The model file's metadata before training: sizes and the validation
/// accuracy are filled in once known.
fn model_meta(cfg: &RunConfig, env: &Setup) -> ModelMeta {
    ModelMeta {
        name: cfg.name.clone(),
        model: cfg.model.clone(),
        preprocess: cfg.data.augment.eval_only(),
        classes: env.classes.clone(),
        convert: cfg.data.convert.resolve(&env.classes),
        cv: cfg.cv.clone(),
        test_groups: cfg.data.test_groups.clone(),
        prior: artifact::prior(&env.splits.train.labels, env.classes.len()),
        seed: cfg.seed,
        data_digest: env.digest.clone(),
        params: 0,
        macs: 0,
        val_accuracy: None,
        val_fraction: cfg.data.val_fraction,
        split_seed: cfg.data.split_seed,
        logit_adjust: None,
    }
}
