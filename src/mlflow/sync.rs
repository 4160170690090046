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
//!
//! Three parts: `folder` reads a folder into plain data, `plan` decides
//! (purely) what the server lacks, and this file makes the REST calls and
//! records each step in `state` once the server has accepted it.

mod folder;
mod plan;
mod state;

pub use folder::{flatten, run_points};
pub use state::{server_state, ServerState, State};

use super::client::{self, Client};
use crate::layout::{self, RunDir, SweepDir};
use plan::RunSpec;
use serde_json::{json, Value};
use state::Ledger;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The tag that identifies a run across retries and syncs.
pub const UID_TAG: &str = "fer.uid";

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

/// The lock one sync of `dir` holds, on `dir/.mlflow-sync.lock` (kept: a
/// lock file that is removed can be locked twice).
fn sync_lock(dir: &Path) -> Result<std::fs::File, SyncError> {
    let path = dir.join(".mlflow-sync.lock");
    let local = |e: std::io::Error| SyncError::Local(format!("locking {}: {e}", path.display()));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(local)?;
    f.lock().map_err(local)?;
    Ok(f)
}

/// Every sweep or run folder at or under `root`, four levels down at most
/// (not inside a sweep: its trials are synced with it), sorted, leaving out
/// the decoded-data cache and the local server's own folder.
pub fn find_roots(root: &Path) -> Vec<PathBuf> {
    let skip = [layout::cache_dir(), layout::mlflow_dir()];
    let skipped = |p: &Path| {
        p.strip_prefix(root).is_ok_and(|rel| {
            rel.components()
                .any(|c| skip.iter().any(|d| d.file_name() == Some(c.as_os_str())))
        })
    };
    layout::find_outputs(root, 4)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !skipped(p))
        .collect()
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
    /// What could not be sent because a file of the folder is damaged
    /// (named, with what is wrong): the rest was sent, the sync fails.
    pub problems: Vec<String>,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.problems.extend(o.problems);
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

impl Syncer {
    /// A syncer with a client configured from the environment.
    pub fn new(target: Target) -> Result<Syncer, client::Error> {
        Ok(Syncer::with_client(
            target.clone(),
            Client::new(&target.uri)?,
        ))
    }

    pub fn with_client(target: Target, client: Client) -> Syncer {
        Syncer {
            client,
            target,
            verified: BTreeSet::new(),
        }
    }

    /// Syncs a sweep (parent run and every trial) or a single run folder.
    pub fn sync(&mut self, dir: &Path) -> Result<Counts, SyncError> {
        // Processes sharing a sweep (its workers) sync it one at a time: the
        // first creates the parent run and writes its uid, the others then
        // find that run instead of creating a second parent. An OS lock, so
        // a worker killed mid-sync releases it.
        let _one = sync_lock(dir)?;
        match layout::kind_of(dir) {
            Some(layout::Kind::Sweep) => self.sync_sweep(&SweepDir::new(dir)),
            Some(layout::Kind::Run) => {
                let rd = RunDir::new(dir);
                let spec = folder::run_spec(&rd, self.target.experiment.as_deref(), None, None);
                let experiment = spec.experiment.clone();
                let (mut c, id) = self.sync_run(spec)?;
                if rd.eval().exists() && rd.model().exists() {
                    c += self.log_model(dir, &rd.model(), None)?;
                }
                // A repeated run's seeds and an ensemble's members: its
                // child runs, one per training.
                for (label, child) in folder::child_runs(&rd) {
                    let mut spec = folder::run_spec(&child, Some(&experiment), Some(&id), None);
                    spec.name = format!("{} {label}", spec.name);
                    c += self.sync_run(spec)?.0;
                }
                Ok(c)
            }
            None => Err(SyncError::Local(format!(
                "{} is neither a run folder ({} + {}) nor a sweep ({})",
                dir.display(),
                layout::CONFIG,
                layout::METRICS_JSONL,
                layout::TRIALS
            ))),
        }
    }

    /// The parent run, each trial as its child, then the best model, logged
    /// from the best trial's run and registered.
    fn sync_sweep(&mut self, sd: &SweepDir) -> Result<Counts, SyncError> {
        let sweep = folder::sweep_folder(sd, self.target.experiment.as_deref())?;
        let (mut counts, parent_id) = self.sync_run(sweep.parent)?;
        let mut child_ids = BTreeMap::new();
        for t in &sweep.trials {
            let rd = sd.trial(t.number);
            if !rd.config().exists() {
                continue;
            }
            let spec = folder::run_spec(&rd, Some(&sweep.experiment), Some(&parent_id), Some(t));
            let trial_name = spec.name.clone();
            let (c, id) = self.sync_run(spec)?;
            counts += c;
            // A cross-validated trial's folds: its children.
            for (label, child) in folder::child_runs(&rd) {
                let mut spec = folder::run_spec(&child, Some(&sweep.experiment), Some(&id), None);
                spec.name = format!("{trial_name} {label}");
                spec.source = "fer sweep".into();
                counts += self.sync_run(spec)?.0;
            }
            child_ids.insert(t.number, id);
        }
        if let Some(b) = sweep.best {
            let model = sd.best_model();
            if model.exists() {
                let source = child_ids.get(&b).cloned();
                counts += self.log_model(sd.path(), &model, source)?;
            }
        }
        Ok(counts)
    }

    /// Creates (or finds) the run and sends what it lacks. Returns the counts
    /// and the run id.
    fn sync_run(&mut self, spec: RunSpec) -> Result<(Counts, String), SyncError> {
        let mut l = Ledger::load(&spec.dir, &self.client.uri);
        let mut counts = Counts::default();
        self.forget_if_gone(&mut l, &spec.dir)?;
        if l.s.run_id.is_none() {
            counts.runs_created += self.find_or_create_run(&mut l, &spec)?;
        }
        let run_id = l.s.run_id.clone().expect("set above");
        counts.problems.extend(spec.problems.iter().cloned());
        self.reconcile_points(&mut l, &spec, &run_id)?;
        let plan = plan::run_plan(&spec, &l.s);
        if !plan.params.is_empty() || !plan.tags.is_empty() {
            self.client
                .log_batch(&run_id, &[], &plan.params, &plan.tags)?;
            counts.params += plan.params.len();
            l.s.params.extend(plan.params);
            l.s.tags.extend(plan.tags);
            l.commit()?;
        }
        if let Some(dataset) = plan.dataset {
            self.client.post(
                "runs/log-inputs",
                json!({"run_id": run_id, "datasets": [dataset]}),
            )?;
            l.s.inputs_done = true;
            l.commit()?;
        }
        // A batch resent after a lost answer is deduplicated by the server,
        // so each point is stored once.
        for chunk in plan.points.chunks(client::MAX_METRICS) {
            self.client.log_batch(&run_id, chunk, &[], &[])?;
            l.s.points
                .extend(chunk.iter().map(|p| (p.key.clone(), p.step)));
            counts.points += chunk.len();
            l.commit()?;
        }
        counts.artifacts += self.send_artifacts(&mut l, &spec.artifacts)?;
        if let Some((status, end)) = plan.status {
            self.client.post(
                "runs/update",
                json!({"run_id": run_id, "status": status, "end_time": end}),
            )?;
            l.s.status = Some(status.to_string());
            l.commit()?;
        }
        Ok((counts, run_id))
    }

    /// Learns from the server which points it holds, when the ledger does
    /// not know (a run found again after `mlflow.json` was lost, or a ledger
    /// from before points were recorded by key and step): what is sent is
    /// then what the server lacks, not what a counter believes.
    fn reconcile_points(
        &mut self,
        l: &mut Ledger,
        spec: &RunSpec,
        run_id: &str,
    ) -> Result<(), SyncError> {
        if !l.s.points.is_empty() || !(l.s.metrics_sent > 0 || l.s.found) {
            return Ok(());
        }
        let keys: BTreeSet<&str> = spec.points.iter().map(|p| p.key.as_str()).collect();
        for key in keys {
            let v = self.client.get(
                "metrics/get-history",
                &[
                    ("run_id", run_id),
                    ("metric_key", key),
                    ("max_results", "25000"),
                ],
            )?;
            for m in v["metrics"].as_array().into_iter().flatten() {
                l.s.points
                    .insert((key.to_string(), m["step"].as_i64().unwrap_or(0)));
            }
        }
        l.s.metrics_sent = 0;
        l.s.found = false;
        l.commit()
    }

    /// A run the server no longer has (a fresh database) is started over.
    fn forget_if_gone(&mut self, l: &mut Ledger, dir: &Path) -> Result<(), SyncError> {
        let Some(id) = l.s.run_id.clone() else {
            return Ok(());
        };
        if self.verified.contains(&id) {
            return Ok(());
        }
        match self.client.get("runs/get", &[("run_id", &id)]) {
            Ok(_) => {
                self.verified.insert(id);
            }
            Err(e) if e.code() == Some("RESOURCE_DOES_NOT_EXIST") => {
                tracing::warn!(
                    "MLflow run {id} of {} is gone from {}; uploading it again",
                    dir.display(),
                    self.client.uri
                );
                l.s = ServerState::default();
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Finds the run by its uid tag, else creates it; records its ids.
    /// Returns the number of runs created (0 or 1).
    fn find_or_create_run(&mut self, l: &mut Ledger, spec: &RunSpec) -> Result<usize, SyncError> {
        // Fix the uid on disk before the create can happen.
        l.save_uid()?;
        let exp = self.client.experiment(&spec.experiment)?;
        let filter = format!("tags.`{UID_TAG}` = '{}'", l.state.uid);
        let mut found = self.client.search_runs(&exp, &filter)?;
        if found.is_empty() {
            // A run synced before its ledger was lost, under a uid that was
            // random then: the same name and start time is the same folder.
            let name = spec.name.replace('\'', "\\'");
            let filter = format!(
                "attributes.run_name = '{name}' and attributes.start_time = {}",
                spec.start_ms
            );
            found = self.client.search_runs(&exp, &filter)?;
            if let Some(r) = found.first() {
                let id = self.client.id_of(&r["info"], "run_id", "runs/search")?;
                tracing::warn!(
                    "MLflow: {} had no record of its run on {}; found run {id} by its name and start time and adopted it",
                    spec.dir.display(),
                    self.client.uri
                );
                let tag = [(UID_TAG.to_string(), l.state.uid.clone())];
                self.client.log_batch(&id, &[], &[], &tag)?;
            }
        }
        let (run, created) = match found.first() {
            Some(r) => {
                l.s.found = true;
                (r.clone(), 0)
            }
            None => (self.create_run(&exp, &l.state.uid, spec)?, 1),
        };
        let id = self.client.id_of(&run["info"], "run_id", "runs/create")?;
        l.s.experiment_id = Some(exp);
        l.s.artifact_uri = run["info"]["artifact_uri"].as_str().map(String::from);
        l.s.run_id = Some(id.clone());
        self.verified.insert(id);
        l.commit()?;
        Ok(created)
    }

    fn create_run(&self, exp: &str, uid: &str, spec: &RunSpec) -> Result<Value, SyncError> {
        let mut tags = vec![
            json!({"key": UID_TAG, "value": uid}),
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
        Ok(v["run"].clone())
    }

    /// Uploads the artifacts that changed since their last upload. Returns
    /// how many went up.
    fn send_artifacts(
        &self,
        l: &mut Ledger,
        artifacts: &[(PathBuf, String)],
    ) -> Result<usize, SyncError> {
        let Some(root) = l.s.artifact_uri.clone() else {
            return Ok(0);
        };
        let mut sent = 0;
        for (path, rel) in artifacts {
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let mt = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            if plan::unchanged(l.s.artifacts.get(rel), meta.len(), mt) {
                continue;
            }
            let bytes = std::fs::read(path)
                .map_err(|e| SyncError::Local(format!("reading {}: {e}", path.display())))?;
            let hash = blake3::hash(&bytes).to_hex().to_string();
            if plan::same_bytes(l.s.artifacts.get(rel), &hash) {
                // The server has these bytes: only the new size and time
                // are noted, and written with the next save.
                l.s.artifacts.insert(rel.clone(), (meta.len(), mt, hash));
                continue;
            }
            self.client.put_artifact(&root, rel, bytes)?;
            sent += 1;
            l.s.artifacts.insert(rel.clone(), (meta.len(), mt, hash));
            l.commit()?;
        }
        Ok(sent)
    }

    /// Logs `model` as an MLflow 3 logged model of the folder's run (or of
    /// `source_run`), and registers it as a new version.
    fn log_model(
        &mut self,
        dir: &Path,
        model: &Path,
        source_run: Option<String>,
    ) -> Result<Counts, SyncError> {
        let mut l = Ledger::load(dir, &self.client.uri);
        let Some(todo) = plan::model_plan(&l.s) else {
            return Ok(Counts::default());
        };
        let run_id = source_run.unwrap_or_else(|| l.s.run_id.clone().expect("planned"));
        let config = folder::config_doc(&dir.join(layout::CONFIG));
        let name =
            self.target.register_as.clone().unwrap_or_else(|| {
                folder::experiment_name(self.target.experiment.as_deref(), &config)
            });
        let mut counts = Counts::default();
        if todo.create {
            self.find_or_create_model(&mut l, model, &name, &run_id)?;
        }
        if todo.upload {
            self.upload_model(&mut l, model, &run_id)?;
            counts.models += 1;
        }
        if todo.register {
            self.register_model(&mut l, name, &run_id)?;
        }
        Ok(counts)
    }

    /// Finds the logged model by the folder's uid tag, else creates it, and
    /// links it to the run as an output.
    fn find_or_create_model(
        &self,
        l: &mut Ledger,
        model: &Path,
        name: &str,
        run_id: &str,
    ) -> Result<(), SyncError> {
        let exp = l.s.experiment_id.clone().expect("planned");
        let meta = crate::artifact::ModelMeta::read(model).ok();
        let params = plan::model_params(meta.as_ref());
        // Looked up by tag first, as runs are: a lost answer must not
        // leave a second model behind.
        let found = self.client.post(
            "logged-models/search",
            json!({"experiment_ids": [exp], "filter": format!("tags.`{UID_TAG}` = '{}'", l.state.uid)}),
        );
        let existing = found?["models"].as_array().and_then(|a| a.first().cloned());
        let was_there = existing.is_some();
        let info = match existing {
            Some(m) => m["info"].clone(),
            None => {
                let v = self.client.post(
                    "logged-models",
                    json!({"experiment_id": exp, "name": name, "source_run_id": run_id,
                       "model_type": "fer-model/1", "params": params,
                       "tags": [{"key": UID_TAG, "value": l.state.uid}]}),
                )?;
                v["model"]["info"].clone()
            }
        };
        let id = self.client.id_of(&info, "model_id", "logged-models")?;
        // A model found again (its ledger lost) may be linked already: the
        // server refuses the same link twice.
        let linked = was_there && {
            let run = self.client.get("runs/get", &[("run_id", run_id)])?;
            run["run"]["outputs"]["model_outputs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["model_id"] == id.as_str())
        };
        if !linked {
            self.client.post(
                "runs/outputs",
                json!({"run_id": run_id, "models": [{"model_id": id, "step": 0}]}),
            )?;
        }
        l.s.model_id = Some(id);
        l.s.model_artifact_uri = info["artifact_uri"].as_str().map(String::from);
        l.commit()
    }

    /// Uploads `MLmodel` and the weights, then marks the model ready.
    fn upload_model(&self, l: &mut Ledger, model: &Path, run_id: &str) -> Result<(), SyncError> {
        let id = l.s.model_id.clone().expect("set above");
        let root = l.s.model_artifact_uri.clone().unwrap_or_default();
        let bytes = std::fs::read(model)
            .map_err(|e| SyncError::Local(format!("reading {}: {e}", model.display())))?;
        let mlmodel = plan::mlmodel(&id, run_id, layout::MODEL, layout::unix_now());
        self.client
            .put_artifact(&root, "MLmodel", mlmodel.into_bytes())?;
        self.client.put_artifact(&root, layout::MODEL, bytes)?;
        self.client.patch(
            &format!("logged-models/{id}"),
            json!({"model_id": id, "status": "LOGGED_MODEL_READY"}),
        )?;
        l.s.model_ready = true;
        l.commit()
    }

    /// Registers the logged model as a version of `name` (created when
    /// missing), unless a lost answer already left that version behind.
    fn register_model(&self, l: &mut Ledger, name: String, run_id: &str) -> Result<(), SyncError> {
        let id = l.s.model_id.clone().expect("set above");
        match self
            .client
            .post("registered-models/create", json!({"name": name}))
        {
            Ok(_) => {}
            Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => {}
            Err(e) => return Err(e.into()),
        }
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
        l.s.registered = Some((name, version));
        l.commit()
    }
}
