// !!! HELPER: STOP. Before anything else read /tmp/w/common.md (how and where to work: your own git worktree, not /work/main). This line is not part of the code.
//! Brings an MLflow server up to date with local run folders.
//!
//! The run folder is the source of truth. Each folder keeps, in
//! `mlflow.json`, what each server already holds: the run id, how many
//! metric points went up, which params, and the size, time and hash of each
//! uploaded artifact. A sync sends only what is missing, so it can run after
//! every epoch, after an outage, or from `fer mlflow sync` much later, and
//! the server ends with every param, metric point and artifact once.
//! Runs are found again by a client-generated tag before any create, so a
//! create whose answer was lost is never repeated.

use super::client::{self, Client, Point};
use crate::provenance::Provenance;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "mlflow.json";
/// The tag that identifies a run across retries and syncs.
pub const UID_TAG: &str = "fer.uid";

/// What one server holds of one run folder.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerState {
    pub experiment_id: Option<String>,
    pub run_id: Option<String>,
    pub artifact_uri: Option<String>,
    /// Params already logged (key → value).
    pub params: BTreeMap<String, String>,
    /// Tags already set (key → value); tags overwrite, so only changes go.
    pub tags: BTreeMap<String, String>,
    pub inputs_done: bool,
    /// Points of `points()` already accepted, in order.
    pub metrics_sent: usize,
    /// Uploaded artifacts: relative path → (size, mtime ns, blake3).
    pub artifacts: BTreeMap<String, (u64, u128, String)>,
    pub status: Option<String>,
    pub model_id: Option<String>,
    pub model_artifact_uri: Option<String>,
    pub model_ready: bool,
    pub registered: Option<(String, String)>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// Client-generated id, fixed before the first create.
    pub uid: String,
    pub servers: BTreeMap<String, ServerState>,
}

impl State {
    fn load(dir: &Path) -> State {
        let mut s: State = std::fs::read(dir.join(STATE_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if s.uid.is_empty() {
            s.uid = new_uid();
        }
        s
    }
    fn save(&self, dir: &Path) -> Result<(), SyncError> {
        let bytes = serde_json::to_vec_pretty(self).expect("state serialises");
        crate::layout::write_atomic(&dir.join(STATE_FILE), &bytes)
            .map_err(|e| SyncError::Local(format!("{e:#}")))
    }
}

fn new_uid() -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..16)
        .map(|_| format!("{:02x}", r.random::<u8>()))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Server(#[from] client::Error),
    #[error("{0}")]
    Local(String),
}

impl SyncError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SyncError::Server(e) if e.is_transient())
    }
}

/// What kind of folder this is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Sweep,
    Run,
}

pub fn kind_of(dir: &Path) -> Option<Kind> {
    if dir.join("trials.jsonl").exists() {
        Some(Kind::Sweep)
    } else if dir.join("config.yaml").exists() && dir.join("metrics.jsonl").exists()
        || dir.join("checkpoints").is_dir()
    {
        Some(Kind::Run)
    } else {
        None
    }
}

/// Every sweep or run folder at or under `root` (not inside a sweep: its
/// trials are synced with it).
pub fn find_roots(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>, depth: usize) {
        if kind_of(d).is_some() {
            out.push(d.to_path_buf());
            return;
        }
        if depth == 0 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(d) else { return };
        let mut subs: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "cache" && n != "mlflow"))
            .collect();
        subs.sort();
        for s in subs {
            walk(&s, out, depth - 1);
        }
    }
    walk(root, &mut out, 4);
    out
}

/// Where and under which names to log.
#[derive(Clone, Debug)]
pub struct Target {
    pub uri: String,
    /// Overrides the experiment name from the config (MLFLOW_EXPERIMENT_NAME).
    pub experiment: Option<String>,
    /// Registered-model name for the best model; default: the experiment name.
    pub register_as: Option<String>,
}

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub runs_created: usize,
    pub params: usize,
    pub points: usize,
    pub artifacts: usize,
    pub models: usize,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.runs_created += o.runs_created;
        self.params += o.params;
        self.points += o.points;
        self.artifacts += o.artifacts;
        self.models += o.models;
    }
}

pub struct Syncer {
    pub client: Client,
    pub target: Target,
    /// Runs confirmed to exist on the server in this process.
    verified: BTreeSet<String>,
}

fn yaml_value(path: &Path) -> Value {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_saphyr::from_str::<Value>(&t).ok())
        .unwrap_or(Value::Null)
}

/// Flattens nested maps into dotted keys; lists and scalars become strings.
pub fn flatten(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(x, &key, out);
            }
        }
        Value::Null => {}
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

fn clean_params(raw: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut seen = BTreeMap::new();
    for (k, v) in raw {
        if !client::valid_key(&k) {
            tracing::warn!("MLflow: param '{k}' has characters the server rejects; skipped");
            continue;
        }
        let v: String = v.chars().take(client::MAX_PARAM_VALUE).collect();
        seen.insert(k, v);
    }
    seen.into_iter().collect()
}

fn ms(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

fn mtime_s(path: &Path) -> f64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The metric points of a run folder, in a fixed order: every epoch, then
/// the final evaluation once it exists.
pub fn run_points(dir: &Path) -> Vec<Point> {
    let mut pts = Vec::new();
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    for line in text.lines() {
        let Ok(r) = serde_json::from_str::<crate::metric::EpochRecord>(line) else {
            continue;
        };
        let (t, step) = (ms(r.time), r.epoch as i64);
        for (k, v) in [
            ("train/loss", r.train_loss),
            ("train/acc", r.train_acc),
            ("val/loss", r.val_loss),
            ("val/acc", r.val_acc),
            ("val/f1_macro", r.val_f1_macro),
            ("lr", r.lr),
            ("img_per_s", r.img_per_s),
            ("epoch_seconds", r.epoch_seconds),
        ] {
            pts.push(Point {
                key: k.into(),
                value: v,
                timestamp_ms: t,
                step,
            });
        }
    }
    let eval = dir.join("eval.json");
    if let Some(v) = std::fs::read(&eval)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    {
        let t = ms(mtime_s(&eval));
        let step = v["epochs_run"].as_i64().unwrap_or(0);
        let mut push = |k: String, x: &Value| {
            if let Some(value) = client::number(x) {
                pts.push(Point {
                    key: k,
                    value,
                    timestamp_ms: t,
                    step,
                });
            }
        };
        for split in ["val", "test"] {
            let m = &v[split]["overall"];
            for (k, f) in [
                ("acc", "accuracy"),
                ("f1_weighted", "weighted_f1"),
                ("f1_macro", "macro_f1"),
                ("top2_acc", "top2_accuracy"),
                ("log_loss", "log_loss"),
                ("ece", "ece"),
            ] {
                push(format!("final/{split}/{k}"), &m[f]);
            }
            if split == "test" {
                let names = crate::data::CLASSES;
                for (i, c) in m["per_class"].as_array().into_iter().flatten().enumerate() {
                    if let Some(name) = names.get(i) {
                        push(format!("final/test/f1/{name}"), &c["f1"]);
                    }
                }
                if let Some(halves) = v["test"]["by_origin"].as_object() {
                    for (o, hm) in halves {
                        push(format!("final/test/{o}/acc"), &hm["accuracy"]);
                        push(format!("final/test/{o}/f1_weighted"), &hm["weighted_f1"]);
                    }
                }
            }
        }
        // Absent unless the run averaged weights (train.swa).
        for k in ["val_acc", "val_loss", "val_f1_macro"] {
            push(format!("swa/{k}"), &v["swa"][k]);
        }
        // Absent unless the run fitted eval.logit_adjust.
        push("logit_adjust/alpha".into(), &v["logit_adjust"]["alpha"]);
        push(
            "logit_adjust/crossfit_correct".into(),
            &v["logit_adjust"]["crossfit_correct"],
        );
        push("train_img_per_s".into(), &v["train_img_per_s"]);
        push("train_seconds".into(), &v["train_seconds"]);
    }
    pts
}

/// Artifacts of a run folder: (path in the folder, path on the server).
fn run_artifacts(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for f in [
        "config.yaml",
        "provenance.json",
        "metrics.csv",
        "metrics.jsonl",
        "eval.json",
        "model.safetensors",
    ] {
        out.push((dir.join(f), f.to_string()));
    }
    extra_artifacts(dir, &mut out);
    out.retain(|(p, _)| p.is_file());
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn sweep_artifacts(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<_> = [
        "config.yaml",
        "provenance.json",
        "trials.jsonl",
        "summary.md",
        "summary.json",
    ]
    .iter()
    .map(|f| (dir.join(f), f.to_string()))
    .filter(|(p, _)| p.is_file())
    .collect();
    extra_artifacts(dir, &mut out);
    out
}

/// `plots/*.png`, and a report written into the folder with
/// `fer report DIR --out DIR/report` (its README.md and PNGs).
fn extra_artifacts(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for sub in ["plots", "report"] {
        let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        let mut files: Vec<(PathBuf, String)> = rd
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| {
                (
                    e.path(),
                    format!("{sub}/{}", e.file_name().to_string_lossy()),
                )
            })
            .filter(|(_, rel)| rel.ends_with(".png") || rel.ends_with(".md"))
            .collect();
        files.sort();
        out.extend(files);
    }
}

/// Everything needed to create or update one run.
struct RunSpec {
    dir: PathBuf,
    experiment: String,
    name: String,
    parent: Option<String>,
    source: String,
    params: Vec<(String, String)>,
    tags: Vec<(String, String)>,
    points: Vec<Point>,
    artifacts: Vec<(PathBuf, String)>,
    /// FINISHED / FAILED once known; None while running.
    status: Option<(String, i64)>,
    start_ms: i64,
    /// The folder's `provenance.json` (empty when it predates provenance).
    prov: Provenance,
}

/// When the run started: its provenance, else its config's time.
fn start_ms(dir: &Path, prov: &Provenance) -> i64 {
    ms(if prov.started > 0.0 {
        prov.started
    } else {
        mtime_s(&dir.join("config.yaml"))
    })
}

impl Syncer {
    pub fn new(target: Target) -> Result<Syncer, client::Error> {
        Ok(Syncer {
            client: Client::new(&target.uri)?,
            target,
            verified: BTreeSet::new(),
        })
    }

    /// Syncs a sweep (parent run and every trial) or a single run folder.
    pub fn sync(&mut self, dir: &Path) -> Result<Counts, SyncError> {
        match kind_of(dir) {
            Some(Kind::Sweep) => self.sync_sweep(dir),
            Some(Kind::Run) => {
                let spec = self.run_spec(dir, None, None, None)?;
                let (c, _) = self.sync_run(spec)?;
                let mut c = c;
                if dir.join("eval.json").exists() && dir.join("model.safetensors").exists() {
                    c += self.log_model(dir, &dir.join("model.safetensors"), None)?;
                }
                Ok(c)
            }
            None => Err(SyncError::Local(format!(
                "{} is neither a run folder (config.yaml + metrics.jsonl) nor a sweep (trials.jsonl)",
                dir.display()
            ))),
        }
    }

    fn experiment_name(&self, config: &Value) -> String {
        self.target
            .experiment
            .clone()
            .or_else(|| {
                std::env::var("MLFLOW_EXPERIMENT_NAME")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| config["name"].as_str().map(String::from))
            .unwrap_or_else(|| "fer".into())
    }

    fn common_tags(&self, prov: &Provenance, config_path: &Path) -> Vec<(String, String)> {
        let cfg_bytes = std::fs::read(config_path).unwrap_or_default();
        let mut tags = vec![
            ("mlflow.source.type".to_string(), "LOCAL".to_string()),
            (
                "fer.config_hash".into(),
                blake3::hash(&cfg_bytes).to_hex()[..16].to_string(),
            ),
        ];
        let mut add = |k: &str, v: &str| {
            if !v.is_empty() {
                tags.push((k.to_string(), v.to_string()));
            }
        };
        add("mlflow.user", &prov.user);
        add("mlflow.source.git.commit", &prov.git_commit);
        add("fer.git_commit", &prov.git_commit);
        add("fer.version", &prov.fer_version);
        add("fer.host", &prov.host);
        add("fer.command", &prov.command);
        add("fer.device", prov.device.as_deref().unwrap_or(""));
        add("fer.data_digest", prov.data_digest.as_deref().unwrap_or(""));
        tags
    }

    fn run_spec(
        &self,
        dir: &Path,
        parent: Option<&str>,
        trial: Option<&crate::sweep::journal::TrialRecord>,
        experiment: Option<&str>,
    ) -> Result<RunSpec, SyncError> {
        let config = yaml_value(&dir.join("config.yaml"));
        let mut raw = Vec::new();
        flatten(&config, "", &mut raw);
        let prov = Provenance::load(dir).unwrap_or_default();
        let mut tags = self.common_tags(&prov, &dir.join("config.yaml"));
        let mut status = None;
        let eval = dir.join("eval.json");
        let name;
        if let Some(t) = trial {
            for (k, v) in &t.params {
                let v = v
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string());
                raw.push((format!("search.{k}"), v));
            }
            // Known from the config from the start (the journal says it only at the end).
            let family = config["model"]["kind"]
                .as_str()
                .map(String::from)
                .or_else(|| t.family.clone())
                .unwrap_or_default();
            name = format!("trial-{:03} {family}", t.number);
            tags.push(("fer.trial".into(), t.number.to_string()));
            tags.push(("fer.state".into(), format!("{:?}", t.state).to_lowercase()));
            use crate::sweep::journal::TrialState as S;
            let end = ms(mtime_s(&dir.join("metrics.jsonl")).max(mtime_s(&eval)));
            status = match t.state {
                S::Complete | S::Pruned => Some(("FINISHED".to_string(), end)),
                S::Failed => {
                    if let Some(e) = &t.error {
                        tags.push(("mlflow.note.content".into(), format!("Failed: {e}")));
                    }
                    Some(("FAILED".to_string(), end))
                }
                S::Running => None,
            };
        } else {
            name = config["name"].as_str().unwrap_or("run").to_string();
            if eval.exists() {
                status = Some(("FINISHED".to_string(), ms(mtime_s(&eval))));
            }
        }
        Ok(RunSpec {
            dir: dir.to_path_buf(),
            experiment: experiment
                .map(String::from)
                .unwrap_or_else(|| self.experiment_name(&config)),
            name,
            parent: parent.map(String::from),
            source: if trial.is_some() {
                "fer sweep"
            } else {
                "fer train"
            }
            .into(),
            params: clean_params(raw),
            tags,
            points: run_points(dir),
            artifacts: run_artifacts(dir),
            status,
            start_ms: start_ms(dir, &prov),
            prov,
        })
    }

    fn sync_sweep(&mut self, dir: &Path) -> Result<Counts, SyncError> {
        use crate::sweep::journal::{read_events, rebuild, Event};
        let config = yaml_value(&dir.join("config.yaml"));
        let experiment = self.experiment_name(&config);
        let events = read_events(&dir.join("trials.jsonl"))
            .map_err(|e| SyncError::Local(format!("{e:#}")))?;
        let trials = rebuild(&events);
        let started: BTreeMap<usize, f64> = events
            .iter()
            .filter_map(|e| match e {
                Event::TrialStarted { trial, time, .. } => Some((*trial, *time)),
                _ => None,
            })
            .collect();
        let summary = dir.join("summary.json");
        let done = summary.exists();

        // The parent: the search config as params, the objective per trial.
        let mut raw = Vec::new();
        flatten(&config, "", &mut raw);
        let objective = config["search"]["objective"]["metric"]
            .as_str()
            .unwrap_or("objective")
            .to_string();
        let maximize = config["search"]["objective"]["direction"] != "minimize";
        let mut points = Vec::new();
        let mut best: Option<f64> = None;
        let finished: Vec<_> = trials
            .iter()
            .filter(|t| t.state != crate::sweep::journal::TrialState::Running)
            .collect();
        for t in &finished {
            let time = ms(started.get(&t.number).copied().unwrap_or(0.0) + t.seconds);
            let step = t.number as i64;
            if let Some(v) = t.value {
                best = Some(match best {
                    Some(b) if (maximize && b >= v) || (!maximize && b <= v) => b,
                    _ => v,
                });
                points.push(Point {
                    key: format!("trial/{objective}"),
                    value: v,
                    timestamp_ms: time,
                    step,
                });
            }
            if let Some(b) = best {
                points.push(Point {
                    key: format!("best/{objective}"),
                    value: b,
                    timestamp_ms: time,
                    step,
                });
            }
        }
        let prov = Provenance::load(dir).unwrap_or_default();
        let mut tags = self.common_tags(&prov, &dir.join("config.yaml"));
        tags.push(("fer.kind".into(), "sweep".into()));
        let parent = RunSpec {
            dir: dir.to_path_buf(),
            experiment: experiment.clone(),
            name: format!("sweep {}", config["name"].as_str().unwrap_or("")),
            parent: None,
            source: "fer sweep".into(),
            params: clean_params(raw),
            tags,
            points,
            artifacts: sweep_artifacts(dir),
            status: done.then(|| ("FINISHED".to_string(), ms(mtime_s(&summary)))),
            start_ms: start_ms(dir, &prov),
            prov,
        };
        let (mut counts, parent_id) = self.sync_run(parent)?;

        let mut child_ids = BTreeMap::new();
        for t in &trials {
            let tdir = dir.join("trials").join(format!("{:03}", t.number));
            if !tdir.join("config.yaml").exists() {
                continue;
            }
            let spec = self.run_spec(&tdir, Some(&parent_id), Some(t), Some(&experiment))?;
            let (c, id) = self.sync_run(spec)?;
            counts += c;
            child_ids.insert(t.number, id);
        }
        // The best model, logged from the best trial's run and registered.
        if done {
            let s: Value = std::fs::read(&summary)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            if let Some(b) = s["best"].as_u64() {
                let model = dir.join("best-model.safetensors");
                if model.exists() {
                    let source = child_ids.get(&(b as usize)).cloned();
                    counts += self.log_model(dir, &model, source)?;
                }
            }
        }
        Ok(counts)
    }

    /// Creates (or finds) the run and sends what it lacks. Returns the counts
    /// and the run id.
    fn sync_run(&mut self, spec: RunSpec) -> Result<(Counts, String), SyncError> {
        let uri = self.client.uri.clone();
        let mut state = State::load(&spec.dir);
        let mut counts = Counts::default();
        let mut s = state.servers.get(&uri).cloned().unwrap_or_default();

        // A run the server no longer has (a fresh database): start over.
        if let Some(id) = s.run_id.clone() {
            if !self.verified.contains(&id) {
                match self.client.get("runs/get", &[("run_id", &id)]) {
                    Ok(_) => {
                        self.verified.insert(id);
                    }
                    Err(e) if e.code() == Some("RESOURCE_DOES_NOT_EXIST") => {
                        tracing::warn!(
                            "MLflow run {id} of {} is gone from {uri}; uploading it again",
                            spec.dir.display()
                        );
                        s = ServerState::default();
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if s.run_id.is_none() {
            // Fix the uid on disk before the create can happen.
            state.save(&spec.dir)?;
            let exp = self.client.experiment(&spec.experiment)?;
            let filter = format!("tags.`{UID_TAG}` = '{}'", state.uid);
            let found = self.client.search_runs(&exp, &filter)?;
            let run = match found.first() {
                Some(r) => r.clone(),
                None => {
                    let mut tags = vec![
                        json!({"key": UID_TAG, "value": state.uid}),
                        json!({"key": "mlflow.source.name", "value": spec.source}),
                    ];
                    if let Some(p) = &spec.parent {
                        tags.push(json!({"key": "mlflow.parentRunId", "value": p}));
                    }
                    let user = spec
                        .tags
                        .iter()
                        .find(|(k, _)| k == "mlflow.user")
                        .map_or_else(crate::provenance::user, |(_, v)| v.clone());
                    let v = self.client.post(
                        "runs/create",
                        json!({"experiment_id": exp, "run_name": spec.name,
                               "start_time": spec.start_ms, "user_id": user, "tags": tags}),
                    )?;
                    counts.runs_created += 1;
                    v["run"].clone()
                }
            };
            let id = self.client.id_of(&run["info"], "run_id", "runs/create")?;
            s.experiment_id = Some(exp);
            s.artifact_uri = run["info"]["artifact_uri"].as_str().map(String::from);
            s.run_id = Some(id.clone());
            self.verified.insert(id);
            state.servers.insert(uri.clone(), s.clone());
            state.save(&spec.dir)?;
        }
        let run_id = s.run_id.clone().expect("set above");
        let save = |state: &mut State, s: &ServerState| {
            state.servers.insert(uri.clone(), s.clone());
            state.save(&spec.dir)
        };

        // Tags overwrite, so they go every time something else does.
        let new_params: Vec<(String, String)> = spec
            .params
            .iter()
            .filter(|(k, v)| s.params.get(k) != Some(v))
            .cloned()
            .collect();
        let mut tags: BTreeMap<String, String> = spec.tags.iter().cloned().collect();
        tags.insert("mlflow.source.name".into(), spec.source.clone());
        if let Some(p) = &spec.parent {
            tags.insert("mlflow.parentRunId".into(), p.clone());
        }
        let new_tags: Vec<(String, String)> = tags
            .into_iter()
            .filter(|(k, v)| s.tags.get(k) != Some(v))
            .collect();
        if !new_params.is_empty() || !new_tags.is_empty() {
            self.client
                .log_batch(&run_id, &[], &new_params, &new_tags)?;
            counts.params += new_params.len();
            s.params.extend(new_params);
            s.tags.extend(new_tags);
            save(&mut state, &s)?;
        }

        if !s.inputs_done {
            let prov = &spec.prov;
            if let Some(d) = &prov.data_digest {
                let source =
                    json!({"uri": format!("file://{}", prov.data_dir.clone().unwrap_or_default())});
                let profile = json!({"digest_blake3": d, "split_sizes": prov.split_sizes});
                self.client.post(
                    "runs/log-inputs",
                    json!({"run_id": run_id, "datasets": [{
                        "tags": [{"key": "mlflow.data.context", "value": "training"}],
                        "dataset": {"name": "fer2013", "digest": &d[..d.len().min(32)],
                            "source_type": "local", "source": source.to_string(),
                            "profile": profile.to_string()}}]}),
                )?;
                s.inputs_done = true;
                save(&mut state, &s)?;
            }
        }

        // Metric points in order; a batch resent after a lost answer is
        // deduplicated by the server, so each point is stored once.
        let todo = spec.points.len().saturating_sub(s.metrics_sent);
        if todo > 0 {
            for chunk in spec.points[s.metrics_sent..].chunks(client::MAX_METRICS) {
                self.client.log_batch(&run_id, chunk, &[], &[])?;
                s.metrics_sent += chunk.len();
                counts.points += chunk.len();
                save(&mut state, &s)?;
            }
        }

        if let Some(root) = s.artifact_uri.clone() {
            for (path, rel) in &spec.artifacts {
                let Ok(meta) = std::fs::metadata(path) else {
                    continue;
                };
                let mt = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                if let Some((size, m, _)) = s.artifacts.get(rel) {
                    if *size == meta.len() && *m == mt {
                        continue;
                    }
                }
                let bytes = std::fs::read(path)
                    .map_err(|e| SyncError::Local(format!("reading {}: {e}", path.display())))?;
                let hash = blake3::hash(&bytes).to_hex().to_string();
                if s.artifacts.get(rel).is_some_and(|(_, _, h)| *h == hash) {
                    s.artifacts.insert(rel.clone(), (meta.len(), mt, hash));
                    continue;
                }
                self.client.put_artifact(&root, rel, bytes)?;
                counts.artifacts += 1;
                s.artifacts.insert(rel.clone(), (meta.len(), mt, hash));
                save(&mut state, &s)?;
            }
        }

        if let Some((status, end)) = &spec.status {
            if s.status.as_deref() != Some(status) {
                self.client.post(
                    "runs/update",
                    json!({"run_id": run_id, "status": status, "end_time": end}),
                )?;
                s.status = Some(status.clone());
                save(&mut state, &s)?;
            }
        }
        Ok((counts, run_id))
    }

    /// Logs `model` as an MLflow 3 logged model of the folder's run (or of
    /// `source_run`), and registers it as a new version.
    fn log_model(
        &mut self,
        dir: &Path,
        model: &Path,
        source_run: Option<String>,
    ) -> Result<Counts, SyncError> {
        let uri = self.client.uri.clone();
        let mut state = State::load(dir);
        let Some(mut s) = state.servers.get(&uri).cloned() else {
            return Ok(Counts::default());
        };
        let (Some(exp), Some(own_run)) = (s.experiment_id.clone(), s.run_id.clone()) else {
            return Ok(Counts::default());
        };
        let run_id = source_run.unwrap_or(own_run);
        let mut counts = Counts::default();
        let config = yaml_value(&dir.join("config.yaml"));
        let name = self
            .target
            .register_as
            .clone()
            .unwrap_or_else(|| self.experiment_name(&config));
        let save = |state: &mut State, s: &ServerState| {
            state.servers.insert(uri.clone(), s.clone());
            state.save(dir)
        };
        if s.model_id.is_none() {
            let meta = crate::artifact::ModelMeta::read(model).ok();
            let mut params = vec![];
            if let Some(m) = &meta {
                params.push(json!({"key": "family", "value": m.model.family()}));
                params.push(json!({"key": "params", "value": m.params.to_string()}));
                params.push(json!({"key": "macs", "value": m.macs.to_string()}));
            }
            // Looked up by tag first, as runs are: a lost answer must not
            // leave a second model behind.
            let found = self.client.post(
                "logged-models/search",
                json!({"experiment_ids": [exp], "filter": format!("tags.`{UID_TAG}` = '{}'", state.uid)}),
            );
            let existing = found?["models"].as_array().and_then(|a| a.first().cloned());
            let info = match existing {
                Some(m) => m["info"].clone(),
                None => {
                    let v = self.client.post(
                        "logged-models",
                        json!({"experiment_id": exp, "name": name, "source_run_id": run_id,
                           "model_type": "fer-model/1", "params": params,
                           "tags": [{"key": UID_TAG, "value": state.uid}]}),
                    )?;
                    v["model"]["info"].clone()
                }
            };
            let id = self.client.id_of(&info, "model_id", "logged-models")?;
            self.client.post(
                "runs/outputs",
                json!({"run_id": run_id, "models": [{"model_id": id, "step": 0}]}),
            )?;
            s.model_id = Some(id);
            s.model_artifact_uri = info["artifact_uri"].as_str().map(String::from);
            save(&mut state, &s)?;
        }
        let id = s.model_id.clone().expect("set above");
        if !s.model_ready {
            let root = s.model_artifact_uri.clone().unwrap_or_default();
            let bytes = std::fs::read(model)
                .map_err(|e| SyncError::Local(format!("reading {}: {e}", model.display())))?;
            let mlmodel = format!(
                "artifact_path: model\nmodel_id: {id}\nrun_id: {run_id}\nflavors:\n  fer:\n    format: fer-model/1\n    file: model.safetensors\n    fer_version: {}\nmlflow_version: 3.17.2\nutc_time_created: '{}'\n",
                env!("CARGO_PKG_VERSION"),
                crate::layout::unix_now()
            );
            self.client
                .put_artifact(&root, "MLmodel", mlmodel.into_bytes())?;
            self.client
                .put_artifact(&root, "model.safetensors", bytes)?;
            self.client.patch(
                &format!("logged-models/{id}"),
                json!({"model_id": id, "status": "LOGGED_MODEL_READY"}),
            )?;
            s.model_ready = true;
            counts.models += 1;
            save(&mut state, &s)?;
        }
        if s.registered.is_none() {
            match self
                .client
                .post("registered-models/create", json!({"name": name}))
            {
                Ok(_) => {}
                Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => {}
                Err(e) => return Err(e.into()),
            }
            // A version for this model may exist if an answer was lost.
            let filter = format!(
                "name = '{}' and run_id = '{run_id}'",
                name.replace('\'', "\\'")
            );
            let existing = self
                .client
                .get("model-versions/search", &[("filter", &filter)])?;
            let source = format!("models:/{id}");
            let found = existing["model_versions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["source"] == source.as_str())
                .and_then(|v| v["version"].as_str().map(String::from));
            let version = match found {
                Some(v) => v,
                None => {
                    let v = self.client.post(
                        "model-versions/create",
                        json!({"name": name, "source": source, "run_id": run_id, "model_id": id}),
                    )?;
                    self.client
                        .id_of(&v["model_version"], "version", "model-versions/create")?
                }
            };
            s.registered = Some((name, version));
            save(&mut state, &s)?;
        }
        Ok(counts)
    }
}
