//! Experiment files: Hydra-style composition of config groups. An
//! experiment names a file from each group (`configs/<group>/<name>.yaml`)
//! or writes the group inline, then overrides dotted keys under `set:` and
//! declares the search `space`. Every part is parsed into typed structs that
//! deny unknown fields, so a typo is an error with file, line and column.

use super::pruner::PrunerConfig;
use super::sampler::SamplerConfig;
use super::space::{Space, SpaceFile, FAMILY};
use crate::config::train::{Select, TrainConfig};
pub use crate::config::TrackingConfig;
use crate::config::{apply_values, load_yaml, EvalConfig, RunConfig};
use crate::data::folds::CvConfig;
use crate::data::DataConfig;
use crate::metric::{Direction, MetricKey};
use crate::models::ModelConfig;
use anyhow::{anyhow, bail, Context, Result};
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// A group entry: the name of a file in `configs/<group>/`, or inline.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupRef<T> {
    Name(String),
    Inline(T),
}

impl<T: Default> Default for GroupRef<T> {
    fn default() -> Self {
        GroupRef::Inline(T::default())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for GroupRef<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = GroupRef<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a config name (a file in configs/<group>/) or an inline mapping")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(GroupRef::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                // Same deserializer underneath: errors keep their location.
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(GroupRef::Inline)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    pub metric: MetricKey,
    pub direction: Direction,
}

/// What a trial is measured by when a sweep has several objectives: a
/// validation metric (at the epoch the first objective picks), or a
/// property of the trained model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TrialMetric {
    Epoch(MetricKey),
    /// Trainable parameters.
    Params,
    /// Multiply-accumulates per image.
    Macs,
    /// Median batch-1 forward pass on this machine's CPU, in ms.
    LatencyMs,
}

impl TrialMetric {
    pub fn name(self) -> &'static str {
        match self {
            TrialMetric::Epoch(k) => k.name(),
            TrialMetric::Params => "params",
            TrialMetric::Macs => "macs",
            TrialMetric::LatencyMs => "latency_ms",
        }
    }
}

impl TryFrom<String> for TrialMetric {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Ok(match s.as_str() {
            "params" => TrialMetric::Params,
            "macs" => TrialMetric::Macs,
            "latency_ms" => TrialMetric::LatencyMs,
            _ => TrialMetric::Epoch(
                serde_json::from_value(serde_json::Value::String(s.clone())).map_err(|_| {
                    format!(
                        "unknown objective metric `{s}`: expected one of val/acc, val/loss, val/f1_macro, val/robust_acc, train/loss, train/acc, params, macs, latency_ms"
                    )
                })?,
            ),
        })
    }
}

impl From<TrialMetric> for String {
    fn from(m: TrialMetric) -> String {
        m.name().to_string()
    }
}

/// One of several objectives. `limit` states the rule for the one best
/// model: the best on the first objective among the Pareto-optimal trials
/// within every limit (at most `limit` when minimised, at least when
/// maximised), e.g. the most accurate model under 10 ms.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSpec {
    pub metric: TrialMetric,
    pub direction: Direction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<f64>,
}

impl ObjectiveSpec {
    /// Whether `v` is within this objective's limit (always, without one).
    pub fn within(&self, v: f64) -> bool {
        match (self.limit, self.direction) {
            (None, _) => true,
            (Some(l), Direction::Minimize) => v <= l,
            (Some(l), Direction::Maximize) => v >= l,
        }
    }
}

impl Default for Objective {
    fn default() -> Self {
        Objective {
            metric: MetricKey::ValAcc,
            direction: Direction::Maximize,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    pub sampler: SamplerConfig,
    pub pruner: PrunerConfig,
    pub n_trials: usize,
    /// Wall-time budget: no new trial starts after this many minutes of trials.
    pub max_minutes: Option<f64>,
    /// Per-trial epoch cap (over `train.epochs`).
    pub max_epochs: Option<usize>,
    pub objective: Objective,
    /// Several objectives at once (the first must be a validation metric;
    /// replaces `objective`): the sweep finds their Pareto front.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<ObjectiveSpec>,
    /// At the end, train the best configurations again under other seeds
    /// and name as best the one with the best mean (one seed's luck is not
    /// a winner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reseed: Option<Reseed>,
    /// A running trial's worker writes a heartbeat this often (seconds).
    pub heartbeat_seconds: f64,
    /// A running trial whose heartbeat is older than this (seconds) is
    /// marked stale and taken over by the next free worker.
    pub stale_after_seconds: f64,
}

/// `search.reseed`: once the search's trials have ended, the `top` best
/// complete trials are each trained again until every one has `seeds`
/// trainings (its own counts), each a trial of its own with a new seed,
/// never pruned, and started even past `max_minutes`. The best is then the
/// configuration with the best mean objective over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reseed {
    pub top: usize,
    pub seeds: usize,
}

impl SearchConfig {
    /// The objectives: `objectives`, or the single `objective`.
    pub fn all_objectives(&self) -> Vec<ObjectiveSpec> {
        if self.objectives.is_empty() {
            vec![ObjectiveSpec {
                metric: TrialMetric::Epoch(self.objective.metric),
                direction: self.objective.direction,
                limit: None,
            }]
        } else {
            self.objectives.clone()
        }
    }

    pub fn is_multi(&self) -> bool {
        self.objectives.len() > 1
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            sampler: SamplerConfig::Tpe {
                n_startup: 10,
                n_ei_candidates: 24,
            },
            pruner: PrunerConfig::None,
            n_trials: 10,
            max_minutes: None,
            max_epochs: None,
            objective: Objective::default(),
            objectives: Vec::new(),
            reseed: None,
            heartbeat_seconds: 5.0,
            stale_after_seconds: 60.0,
        }
    }
}

/// An experiment file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    pub name: String,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub data: GroupRef<DataConfig>,
    #[serde(default)]
    pub model: Option<GroupRef<ModelConfig>>,
    #[serde(default)]
    pub train: GroupRef<TrainConfig>,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub search: GroupRef<SearchConfig>,
    #[serde(default)]
    pub tracking: GroupRef<TrackingConfig>,
    #[serde(default)]
    pub space: SpaceFile,
    /// Dotted-key overrides of every trial's run config (`data.*`, `model.*`,
    /// `train.*`, `eval.*`), applied before the sampled parameters.
    #[serde(default)]
    pub set: BTreeMap<String, serde_json::Value>,
    /// Cross-validation: every trial trains one model per fold and scores
    /// on the folds it held out.
    #[serde(default)]
    pub cv: Option<CvConfig>,
}

/// The resolved experiment, written to the sweep folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    pub seed: u64,
    pub data: DataConfig,
    /// The model when the space does not choose a family.
    pub model: Option<ModelConfig>,
    /// Each family's base config, when the space chooses among families.
    #[serde(default)]
    pub family_models: BTreeMap<String, ModelConfig>,
    pub train: TrainConfig,
    pub eval: EvalConfig,
    pub search: SearchConfig,
    pub tracking: TrackingConfig,
    pub space: SpaceFile,
    #[serde(default)]
    pub set: BTreeMap<String, serde_json::Value>,
    /// Each trial cross-validated: its value is the mean over the folds of
    /// the objective measured on each fold's held-out images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<CvConfig>,
}

pub const FAMILIES: [&str; 7] = [
    "majority", "random", "logistic", "mlp", "cnn", "resnet18", "vit",
];

/// A trial value's name: `metric`, or `cv/<figure>` for a cross-validated
/// sweep (the value is then measured on held-out folds, not validation).
pub fn value_name(metric: &str, cv: bool) -> String {
    match metric.strip_prefix("val/") {
        Some(rest) if cv => format!("cv/{rest}"),
        _ => metric.to_string(),
    }
}

/// The `configs/` folder: the nearest one above the experiment file, else `./configs`.
pub fn configs_root(file: &Path) -> PathBuf {
    let start = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    for dir in start.ancestors().skip(1) {
        let c = dir.join("configs");
        if c.is_dir() {
            return c;
        }
    }
    PathBuf::from("configs")
}

fn resolve<T: DeserializeOwned>(root: &Path, group: &str, r: GroupRef<T>) -> Result<T> {
    match r {
        GroupRef::Inline(t) => Ok(t),
        GroupRef::Name(name) => {
            let path = root.join(group).join(format!("{name}.yaml"));
            if !path.is_file() {
                let mut avail: Vec<String> = std::fs::read_dir(root.join(group))
                    .map(|rd| {
                        rd.filter_map(|e| e.ok())
                            .filter_map(|e| {
                                e.file_name()
                                    .to_str()?
                                    .strip_suffix(".yaml")
                                    .map(String::from)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                avail.sort();
                bail!(
                    "{group}: '{name}' is not a config in {} (available: {})",
                    root.join(group).display(),
                    avail.join(", ")
                );
            }
            load_yaml(&path)
        }
    }
}

impl Experiment {
    /// The experiment a sweep folder recorded, validated.
    pub fn saved(dir: &Path) -> Result<Experiment> {
        crate::layout::check_resume(dir, crate::layout::Kind::Sweep)?;
        let exp: Experiment = load_yaml(&crate::layout::SweepDir::new(dir).config())?;
        exp.validate()
            .with_context(|| format!("the experiment recorded in {}", dir.display()))?;
        Ok(exp)
    }

    /// Loads, composes and validates an experiment file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Experiment> {
        let file: ExperimentFile = load_yaml(path)?;
        let root = configs_root(path);
        let ctx = |e: anyhow::Error| e.context(format!("in experiment {}", path.display()));
        let space = Space::from_file(&file.space, &FAMILIES)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let mut family_models = BTreeMap::new();
        for (fam, _) in &space.families {
            let m: ModelConfig =
                resolve(&root, "model", GroupRef::Name(fam.clone())).map_err(ctx)?;
            family_models.insert(fam.clone(), m);
        }
        let model = match file.model {
            Some(r) => Some(resolve(&root, "model", r).map_err(ctx)?),
            None => None,
        };
        if model.is_none() && space.families.is_empty() {
            bail!(
                "{}: give a `model` (e.g. `model: cnn`) or a family choice under `space.model`",
                path.display()
            );
        }
        let mut exp = Experiment {
            name: file.name,
            seed: file.seed,
            data: resolve(&root, "data", file.data).map_err(ctx)?,
            model,
            family_models,
            train: resolve(&root, "train", file.train).map_err(ctx)?,
            eval: file.eval,
            search: resolve(&root, "search", file.search).map_err(ctx)?,
            tracking: resolve(&root, "tracking", file.tracking).map_err(ctx)?,
            space: file.space,
            set: file.set,
            cv: file.cv,
        };
        if !overrides.is_empty() {
            exp = crate::config::apply_overrides(exp, overrides)
                .with_context(|| format!("applying --set to {}", path.display()))?;
        }
        exp.validate()
            .with_context(|| format!("in experiment {}", path.display()))?;
        // The first of several objectives also acts as the single one:
        // checkpoint selection and the per-trial value follow it.
        if let Some(ObjectiveSpec {
            metric: TrialMetric::Epoch(metric),
            direction,
            ..
        }) = exp.search.objectives.first()
        {
            exp.search.objective = Objective {
                metric: *metric,
                direction: *direction,
            };
        }
        Ok(exp)
    }

    /// With `cv`, the figure of `seeds.json` a trial's value is the mean
    /// of: the objective measured on each fold's held-out images.
    pub fn held_out_key(&self) -> Option<&'static str> {
        match self.search.objective.metric {
            MetricKey::ValAcc => Some("test/acc"),
            MetricKey::ValF1Macro => Some("test/f1_macro"),
            _ => None,
        }
    }

    /// The name of a trial's value: the objective's, or with `cv` its
    /// cross-validated counterpart (`cv/acc`, the mean held-out accuracy).
    pub fn value_name(&self) -> String {
        value_name(self.search.objective.metric.name(), self.cv.is_some())
    }

    pub fn space(&self) -> Result<Space> {
        Space::from_file(&self.space, &FAMILIES).map_err(anyhow::Error::msg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.search.n_trials == 0 {
            bail!("search.n_trials must be at least 1");
        }
        if !self.search.objectives.is_empty() {
            let o = &self.search.objectives;
            if o.len() < 2 {
                bail!(
                    "search.objectives: list two or more (one objective goes in search.objective)"
                );
            }
            if !matches!(o[0].metric, TrialMetric::Epoch(_)) {
                bail!(
                    "search.objectives: the first objective must be a validation metric (val/acc, val/loss or val/f1_macro), got {}",
                    o[0].metric.name()
                );
            }
            if self.search.pruner != PrunerConfig::None {
                bail!("search.pruner: pruning needs a single objective; with search.objectives use `pruner: {{kind: none}}`");
            }
        }
        if let Some(cv) = &self.cv {
            cv.validate().map_err(|e| anyhow!(e))?;
            if cv.fold.is_some() {
                bail!("cv.fold is set by the sweep in each fold's own config; remove it");
            }
            if self.search.is_multi() {
                bail!("cv: a cross-validated sweep has a single objective (search.objective), not search.objectives");
            }
            if self.held_out_key().is_none() {
                bail!(
                    "cv: a cross-validated trial is scored on its held-out folds, where only accuracy and macro F1 are measured: use search.objective val/acc or val/f1_macro, got {}",
                    self.search.objective.metric.name()
                );
            }
        }
        if let Some(r) = &self.search.reseed {
            if r.top == 0 || r.seeds < 2 {
                bail!(
                    "search.reseed: top must be at least 1 and seeds at least 2 (trainings per configuration, the first included), got top {} and seeds {}",
                    r.top,
                    r.seeds
                );
            }
            if self.search.is_multi() {
                bail!("search.reseed: re-running the best trials needs a single objective (search.objective)");
            }
        }
        let (beat, stale) = (
            self.search.heartbeat_seconds,
            self.search.stale_after_seconds,
        );
        if !(beat > 0.0 && beat.is_finite()) {
            bail!("search.heartbeat_seconds must be a positive number of seconds, got {beat}");
        }
        if !(stale >= 3.0 * beat && stale.is_finite()) {
            bail!(
                "search.stale_after_seconds must be at least three heartbeats ({}), got {stale}: \
                 a worker that is only slow would be declared dead",
                3.0 * beat
            );
        }
        let space = self.space()?;
        // Every family and every parameter path must make a valid config.
        // Keys and types only: a value that fails validation (say a ViT
        // patch that does not divide the input) fails that trial, not the sweep.
        let probe = |params: super::sampler::Params| -> Result<()> {
            self.compose_trial(&params, 0, 0).map(|_| ())
        };
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let fams: Vec<Option<String>> = if space.families.is_empty() {
            vec![None]
        } else {
            space
                .families
                .iter()
                .map(|(f, _)| Some(f.clone()))
                .collect()
        };
        for fam in fams {
            let mut p = super::sampler::Params::new();
            if let Some(f) = &fam {
                p.insert(FAMILY.into(), serde_json::json!(f));
            }
            for (name, d) in space.dists_for(fam.as_deref()) {
                p.insert(name, d.sample(&mut rng));
            }
            probe(p).with_context(|| match &fam {
                Some(f) => format!("checking the search space for family {f}"),
                None => "checking the search space".into(),
            })?;
        }
        Ok(())
    }

    /// The run config of one trial: base groups, the trial's family, `set:`
    /// overrides, then the sampled parameters, type-checked.
    pub fn trial_config(
        &self,
        params: &super::sampler::Params,
        trial: usize,
        seed: u64,
    ) -> Result<RunConfig> {
        let cfg = self.compose_trial(params, trial, seed)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn compose_trial(
        &self,
        params: &super::sampler::Params,
        trial: usize,
        seed: u64,
    ) -> Result<RunConfig> {
        let model = match params.get(FAMILY).and_then(|v| v.as_str()) {
            Some(f) => self
                .family_models
                .get(f)
                .cloned()
                .ok_or_else(|| anyhow!("family '{f}' is not in the space"))?,
            None => self.model.clone().context("no model configured")?,
        };
        let mut train = self.train.clone();
        if let Some(cap) = self.search.max_epochs {
            train.epochs = train.epochs.min(cap);
        }
        // Select checkpoints on the objective when it is a validation metric.
        train.select = match self.search.objective.metric {
            MetricKey::ValLoss => Select::ValLoss,
            MetricKey::ValF1Macro => Select::ValF1Macro,
            _ => Select::ValAcc,
        };
        // An objective on corrupted validation needs it measured; the
        // checkpoint is still picked on clean val/acc.
        let robust = MetricKey::ValRobustAcc;
        if self.search.objective.metric == robust
            || self
                .search
                .objectives
                .iter()
                .any(|o| o.metric == TrialMetric::Epoch(robust))
        {
            train.robust_val = true;
        }
        let cfg = RunConfig {
            name: format!("{}-trial{trial}", self.name),
            seed,
            data: self.data.clone(),
            model,
            train,
            eval: self.eval.clone(),
            // The sweep's tracker logs the trials; a trial has none of its own.
            tracking: None,
            ensemble: None,
            seeds: vec![],
            repeat: None,
            cv: self.cv.clone(),
        };
        let mut values: Vec<(String, serde_json::Value)> = self.set.clone().into_iter().collect();
        values.extend(
            params
                .iter()
                .filter(|(k, _)| k.as_str() != FAMILY)
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        apply_values(cfg, &values)
    }

    pub fn to_yaml(&self) -> Result<String> {
        serde_saphyr::to_string(self).map_err(|e| anyhow!("serialising the experiment: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An experiment file in a temp folder with the repository's `configs/`
    /// beside it, as `experiments/` sits in the repository.
    fn write_exp(body: &str) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        std::os::unix::fs::symlink(configs, t.path().join("configs")).unwrap();
        std::fs::create_dir(t.path().join("experiments")).unwrap();
        let path = t.path().join("experiments/e.yaml");
        std::fs::write(&path, body).unwrap();
        (t, path)
    }

    fn err(body: &str, overrides: &[&str]) -> String {
        let (_t, p) = write_exp(body);
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        format!("{:#}", Experiment::load(&p, &o).unwrap_err())
    }

    const SWEEP: &str = "name: e\nseed: 3\ndata: fer2013\ntrain: smoke\nsearch: tpe-asha\n\
        set: {train.epochs: 5}\n\
        space:\n  train.optimizer.lr: {float: [0.01, 0.1], log: true}\n  \
        model:\n    cnn: {convs: {int: [1, 2]}}\n    mlp: {}\n";

    #[test]
    fn groups_compose_from_the_configs_folder_and_set_overrides_them() {
        let (_t, p) = write_exp(SWEEP);
        let exp = Experiment::load(&p, &["search.max_epochs=3".into()]).unwrap();
        assert_eq!(exp.train.subset, 0.02, "train: smoke was read");
        assert_eq!(exp.search.n_trials, 30, "search: tpe-asha was read");
        assert_eq!(exp.search.max_epochs, Some(3), "--set applies last");
        assert_eq!(
            exp.family_models.keys().collect::<Vec<_>>(),
            ["cnn", "mlp"],
            "each family of the space gets its configs/model file"
        );
        // A trial: the family's model, the cap (3) on the train group's
        // epochs, then `set:` (5: an explicit value wins over the cap), the
        // sampled values, and selection on the objective.
        let mut params = crate::sweep::sampler::Params::new();
        params.insert(FAMILY.into(), serde_json::json!("cnn"));
        params.insert("train.optimizer.lr".into(), serde_json::json!(0.02));
        params.insert("model.convs".into(), serde_json::json!(2));
        let cfg = exp.trial_config(&params, 4, 99).unwrap();
        assert_eq!(cfg.name, "e-trial4");
        assert_eq!(cfg.seed, 99);
        assert_eq!(cfg.model.family(), "cnn");
        assert_eq!(cfg.train.epochs, 5);
        assert_eq!(cfg.train.select, Select::ValAcc);
        assert!(cfg.tracking.is_none(), "trials are tracked by the sweep");
        let v = serde_json::to_value(&cfg).unwrap();
        assert_eq!(v["train"]["optimizer"]["lr"], 0.02);
        assert_eq!(v["model"]["convs"], 2);
    }

    #[test]
    fn a_missing_group_file_names_the_choices() {
        let e = err(&SWEEP.replace("search: tpe-asha", "search: tpe-ashx"), &[]);
        assert!(e.contains("search: 'tpe-ashx' is not a config in"), "{e}");
        assert!(e.contains("available: random, tpe, tpe-asha"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_an_error_at_its_line() {
        let e = err(&SWEEP.replace("seed: 3", "seed: 3\nsede: 4"), &[]);
        assert!(e.contains("e.yaml:3:"), "{e}");
        assert!(e.contains("sede"), "{e}");
    }

    #[test]
    fn an_experiment_needs_a_model_or_a_family_choice() {
        let e = err(
            "name: e\nspace:\n  train.optimizer.lr: {float: [0.01, 0.1]}\n",
            &[],
        );
        assert!(e.contains("give a `model`"), "{e}");
    }

    #[test]
    fn a_space_path_that_makes_no_valid_config_fails_at_load() {
        let e = err(
            &SWEEP.replace("train.optimizer.lr", "train.optimiser.lr"),
            &[],
        );
        assert!(e.contains("checking the search space"), "{e}");
    }

    #[test]
    fn zero_trials_is_refused() {
        let e = err(SWEEP, &["search.n_trials=0"]);
        assert!(e.contains("search.n_trials must be at least 1"), "{e}");
    }

    #[test]
    fn max_epochs_caps_the_train_groups_epochs() {
        let (_t, p) = write_exp(&SWEEP.replace("set: {train.epochs: 5}", "set: {}"));
        let exp = Experiment::load(&p, &["search.max_epochs=1".into()]).unwrap();
        let mut params = crate::sweep::sampler::Params::new();
        params.insert(FAMILY.into(), serde_json::json!("mlp"));
        params.insert("train.optimizer.lr".into(), serde_json::json!(0.05));
        let cfg = exp.trial_config(&params, 0, 1).unwrap();
        assert_eq!(
            cfg.train.epochs, 1,
            "max_epochs caps the train group's 2 epochs"
        );
    }
}
