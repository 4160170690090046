//! Reads a run or sweep folder into the plain data of a sync (`RunSpec`):
//! its params, tags, metric points, artifacts and status. Run files go
//! through their typed readers (`metric::read_history`, `train::Outcome`,
//! `sweep::journal`, `sweep::Summary`, `Provenance`) and every path through
//! `layout`; nothing here talks to the server.

use super::plan::RunSpec;
use super::SyncError;
use crate::layout::{self, RunDir, SweepDir};
use crate::metric::EpochRecord;
use crate::mlflow::client::{self, Point};
use crate::provenance::Provenance;
use crate::sweep::journal::{self, TrialRecord, TrialState};
use crate::train::repeat::SeedsFile;
use crate::train::Outcome;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A config file as a generic document. Its params are every key the file
/// holds, as written: a walk over the document keeps them identical for any
/// config a run folder may hold (old schemas, a sweep's search space), where
/// the typed config would add defaults or refuse old keys. The few fields
/// read besides (name, model kind, objective) come from the same document.
pub(super) fn config_doc(path: &Path) -> Value {
    config_checked(path).0
}

/// The config document, and what is wrong with the file when it cannot be
/// read as a YAML mapping (a missing file is no problem: nothing to send).
fn config_checked(path: &Path) -> (Value, Option<String>) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Value::Null, None),
        Err(e) => return (Value::Null, Some(format!("{}: {e}", path.display()))),
    };
    match serde_saphyr::from_str::<Value>(&text) {
        Ok(v) if v.is_object() => (v, None),
        Ok(_) => (
            Value::Null,
            Some(format!(
                "{}: not a YAML mapping; the run's params were not sent",
                path.display()
            )),
        ),
        Err(e) => (
            Value::Null,
            Some(format!(
                "{}: not YAML ({e}); the run's params were not sent",
                path.display()
            )),
        ),
    }
}

/// The experiment to log under: the target's, else `MLFLOW_EXPERIMENT_NAME`,
/// else the config's name, else `fer`.
pub(super) fn experiment_name(target: Option<&str>, config: &Value) -> String {
    target
        .map(String::from)
        .or_else(|| {
            std::env::var("MLFLOW_EXPERIMENT_NAME")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .or_else(|| config["name"].as_str().map(String::from))
        .unwrap_or_else(|| "fer".into())
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

/// MLflow params never change once logged, while a resume may change a few
/// keys (`fer train --resume --set train.epochs=N`, a sweep's `n_trials`).
/// The rule: a param keeps the value the run started with, and resume `i`
/// (from 1, in `provenance.json`) logs each key it changed as the param
/// `resume<i>.<key>` with the new value. Every server then holds the same
/// params whatever the order of syncs and resumes.
fn as_started(raw: &mut Vec<(String, String)>, prov: &Provenance) {
    let mut first: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let mut added = Vec::new();
    for (i, r) in prov.resumes.iter().enumerate() {
        for c in &r.changes {
            first.entry(c.key.clone()).or_insert_with(|| c.was.clone());
            flatten(&c.now, &format!("resume{}.{}", i + 1, c.key), &mut added);
        }
    }
    for (key, was) in &first {
        let inside = format!("{key}.");
        raw.retain(|(k, _)| k != key && !k.starts_with(&inside));
        flatten(was, key, raw);
    }
    raw.extend(added);
}

/// Params the server accepts: valid keys, values cut to its limit, each key
/// once (the last value wins), sorted.
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

pub(super) fn ms(t: f64) -> i64 {
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
pub fn run_points(rd: &RunDir) -> Vec<Point> {
    run_points_checked(rd).0
}

/// The points, and what is wrong with `eval.json` when it exists but
/// cannot be read or holds figures out of range.
fn run_points_checked(rd: &RunDir) -> (Vec<Point>, Option<String>) {
    let mut pts = epoch_points(&crate::metric::read_history(rd));
    if rd.seeds().exists() {
        return match SeedsFile::read(&rd.seeds()) {
            Ok(f) => (seed_points(rd, &f, ms(mtime_s(&rd.seeds()))), None),
            Err(e) => (
                pts,
                Some(format!("{e:#}; the figures across seeds were not sent")),
            ),
        };
    }
    if !rd.eval().exists() {
        return (pts, None);
    }
    match Outcome::read(rd.path()) {
        Ok(o) => {
            pts.extend(final_points(&o, ms(mtime_s(&rd.eval()))));
            (pts, None)
        }
        Err(e) => (
            pts,
            Some(format!(
                "{e:#}; the run's final metrics and end status were not sent"
            )),
        ),
    }
}

/// Eight points per epoch, at the epoch's end.
pub(super) fn epoch_points(history: &[EpochRecord]) -> Vec<Point> {
    let mut pts = Vec::new();
    for r in history {
        let (t, step) = (ms(r.time), r.epoch as i64);
        // Every per-epoch key, in the order the sync has always sent them.
        use crate::metric::MetricKey as K;
        for k in [
            K::TrainLoss,
            K::TrainAcc,
            K::ValLoss,
            K::ValAcc,
            K::ValF1Macro,
            K::Lr,
            K::ImgPerS,
            K::EpochSeconds,
            K::ValRobustAcc,
        ] {
            // A metric the run does not measure sends no point.
            if let Some(v) = k.get(r) {
                pts.push(point(k.name().into(), v, t, step));
            }
        }
    }
    pts
}

/// The outcome's figures at time `t` (the outcome file's), stepped at the
/// last epoch: per split, per class and test half, the weight average's and
/// the logit adjustment's when the run had them, and the training speed.
pub(super) fn final_points(o: &Outcome, t: i64) -> Vec<Point> {
    let step = o.epochs_run as i64;
    let mut pts = Vec::new();
    let mut push = |k: String, value: f64| pts.push(point(k, value, t, step));
    for (split, r) in [("val", &o.val), ("test", &o.test)] {
        let m = &r.overall;
        for (k, v) in [
            ("acc", m.accuracy),
            ("f1_weighted", m.weighted_f1),
            ("f1_macro", m.macro_f1),
            ("top2_acc", m.top2_accuracy),
            ("log_loss", m.log_loss),
            ("ece", m.ece),
        ] {
            push(format!("final/{split}/{k}"), v);
        }
        // 95% bootstrap intervals, where the evaluation recorded them.
        for (origin, iv) in &r.intervals {
            let at = match origin.as_str() {
                "all" => format!("final/{split}"),
                o => format!("final/{split}/{o}"),
            };
            for (k, x) in [
                ("acc", iv.accuracy),
                ("f1_weighted", iv.weighted_f1),
                ("f1_macro", iv.macro_f1),
            ] {
                push(format!("{at}/{k}_ci_lo"), x.lo);
                push(format!("{at}/{k}_ci_hi"), x.hi);
            }
        }
        if split == "test" {
            for (c, name) in m.per_class.iter().zip(&r.classes) {
                push(format!("final/test/f1/{name}"), c.f1);
            }
            for (origin, hm) in &r.by_origin {
                push(format!("final/test/{origin}/acc"), hm.accuracy);
                push(format!("final/test/{origin}/f1_weighted"), hm.weighted_f1);
            }
        }
    }
    if let Some(s) = &o.swa {
        push("swa/val_acc".into(), s.val_acc);
        push("swa/val_loss".into(), s.val_loss);
        push("swa/val_f1_macro".into(), s.val_f1_macro);
    }
    if let Some(a) = &o.logit_adjust {
        push("logit_adjust/alpha".into(), a.alpha);
        push(
            "logit_adjust/crossfit_correct".into(),
            a.crossfit_correct as f64,
        );
    }
    push("train_img_per_s".into(), o.train_img_per_s);
    push("train_seconds".into(), o.train_seconds);
    pts
}

/// A repeated run's points: each figure's mean, standard deviation and 95%
/// interval across seeds (`seeds/test/acc_mean`, `_std`, `_ci_lo`,
/// `_ci_hi`), and the validation curves' mean and standard deviation per
/// epoch (`seeds/val/acc_mean`, `seeds/val/acc_std`, `seeds/val/loss_...`).
pub(super) fn seed_points(rd: &RunDir, f: &SeedsFile, t: i64) -> Vec<Point> {
    let mut pts = Vec::new();
    for (k, sp) in &f.spread {
        for (suffix, v) in [
            ("mean", sp.mean),
            ("std", sp.std),
            ("ci_lo", sp.lo),
            ("ci_hi", sp.hi),
        ] {
            pts.push(point(format!("seeds/{k}_{suffix}"), v, t, 0));
        }
    }
    use crate::metric::MetricKey as K;
    for key in [K::ValAcc, K::ValLoss] {
        for b in crate::train::repeat::curve_band(rd, f, key) {
            let step = b.epoch as i64;
            pts.push(point(format!("seeds/{}_mean", key.name()), b.mean, t, step));
            pts.push(point(format!("seeds/{}_std", key.name()), b.std, t, step));
        }
    }
    pts
}

/// The trainings inside a run folder, as `(run name suffix, folder)`: a
/// repeated run's seeds and an ensemble's members, the run's children on
/// the server.
pub(super) fn child_runs(rd: &RunDir) -> Vec<(String, RunDir)> {
    layout::child_runs(rd.path())
        .into_iter()
        .map(|(name, child)| {
            let label = match crate::config::Unit::of_dir(&name) {
                Some((unit, n)) => format!("{} {n}", unit.name()),
                None => name,
            };
            (label, child)
        })
        .collect()
}

/// The sweep's points, one step per finished trial: its objective value and
/// the best so far.
pub(super) fn sweep_points(
    trials: &[TrialRecord],
    started: &BTreeMap<usize, f64>,
    objective: &str,
    maximize: bool,
) -> Vec<Point> {
    let mut points = Vec::new();
    let mut best: Option<f64> = None;
    for t in trials.iter().filter(|t| t.state != TrialState::Running) {
        let time = ms(started.get(&t.number).copied().unwrap_or(0.0) + t.seconds);
        let step = t.number as i64;
        if let Some(v) = t.value {
            best = Some(match best {
                Some(b) if (maximize && b >= v) || (!maximize && b <= v) => b,
                _ => v,
            });
            points.push(point(format!("trial/{objective}"), v, time, step));
        }
        if let Some(b) = best {
            points.push(point(format!("best/{objective}"), b, time, step));
        }
    }
    points
}

fn point(key: String, value: f64, timestamp_ms: i64, step: i64) -> Point {
    Point {
        key,
        value,
        timestamp_ms,
        step,
    }
}

/// Artifacts of a run folder: (path in the folder, path on the server),
/// sorted by the latter.
fn run_artifacts(rd: &RunDir) -> Vec<(PathBuf, String)> {
    let mut out = named_files(
        rd.path(),
        &[
            layout::CONFIG,
            layout::PROVENANCE,
            layout::METRICS_CSV,
            layout::METRICS_JSONL,
            layout::EVAL,
            layout::PREDICTIONS,
            layout::MODEL,
            layout::SEEDS,
        ],
    );
    extra_artifacts(rd.path(), &mut out);
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// Artifacts of a sweep folder, in a fixed order (not sorted).
fn sweep_artifacts(sd: &SweepDir) -> Vec<(PathBuf, String)> {
    let mut out = named_files(
        sd.path(),
        &[
            layout::CONFIG,
            layout::PROVENANCE,
            layout::TRIALS,
            layout::SUMMARY_MD,
            layout::SUMMARY_JSON,
        ],
    );
    extra_artifacts(sd.path(), &mut out);
    out
}

/// The files of `names` that exist in `dir`, each under its own name.
fn named_files(dir: &Path, names: &[&str]) -> Vec<(PathBuf, String)> {
    names
        .iter()
        .map(|f| (dir.join(f), f.to_string()))
        .filter(|(p, _)| p.is_file())
        .collect()
}

/// `plots/*.png`, and a report written into the folder with
/// `fer report DIR --out DIR/report` (its README.md and PNGs).
fn extra_artifacts(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for sub in layout::ARTIFACT_SUBDIRS {
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

/// Tags every run gets: where it came from (from its provenance, not from
/// the machine doing the upload) and which config it ran.
pub(super) fn common_tags(prov: &Provenance, config: &[u8]) -> Vec<(String, String)> {
    let mut tags = vec![
        ("mlflow.source.type".to_string(), "LOCAL".to_string()),
        (
            "fer.config_hash".into(),
            blake3::hash(config).to_hex()[..16].to_string(),
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
    if let Some(init) = &prov.init {
        // The model file a fine-tuned run started from (`train.init`).
        add("fer.init.path", &init.path);
        add("fer.init.blake3", &init.blake3);
        add("fer.init.sees_val", &init.sees_val.to_string());
    }
    tags
}

/// The provenance of `dir` and the tags it gives with the config at `config`.
fn provenance_tags(dir: &Path, config: &Path) -> (Provenance, Vec<(String, String)>) {
    let prov = Provenance::load(dir).unwrap_or_default();
    let tags = common_tags(&prov, &std::fs::read(config).unwrap_or_default());
    (prov, tags)
}

/// When the run started: its provenance, else its config's time.
fn start_ms(config: &Path, prov: &Provenance) -> i64 {
    ms(if prov.started > 0.0 {
        prov.started
    } else {
        mtime_s(config)
    })
}

/// A run folder, or a sweep's trial `trial` under the parent run `parent`.
/// `experiment` overrides the experiment name (see `experiment_name`).
pub(super) fn run_spec(
    rd: &RunDir,
    experiment: Option<&str>,
    parent: Option<&str>,
    trial: Option<&TrialRecord>,
) -> RunSpec {
    let (config, config_problem) = config_checked(&rd.config());
    let (points, eval_problem) = run_points_checked(rd);
    let problems: Vec<String> = config_problem
        .into_iter()
        .chain(eval_problem.clone())
        .collect();
    let mut raw = Vec::new();
    flatten(&config, "", &mut raw);
    let (prov, mut tags) = provenance_tags(rd.path(), &rd.config());
    as_started(&mut raw, &prov);
    let (name, status) = match trial {
        Some(t) => {
            raw.extend(search_params(t));
            trial_identity(rd, t, &config, &mut tags)
        }
        None => {
            let name = config["name"].as_str().unwrap_or("run").to_string();
            let eval = rd.eval();
            let repeated_done = SeedsFile::read(&rd.seeds()).is_ok_and(|f| f.complete);
            let status = if repeated_done {
                Some(("FINISHED".to_string(), ms(mtime_s(&rd.seeds()))))
            } else {
                (eval.exists() && eval_problem.is_none())
                    .then(|| ("FINISHED".to_string(), ms(mtime_s(&eval))))
            };
            (name, status)
        }
    };
    RunSpec {
        dir: rd.path().to_path_buf(),
        experiment: experiment_name(experiment, &config),
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
        points,
        artifacts: run_artifacts(rd),
        status,
        start_ms: start_ms(&rd.config(), &prov),
        prov,
        problems,
    }
}

/// A trial's sampled values, as `search.<name>` params.
fn search_params(t: &TrialRecord) -> Vec<(String, String)> {
    t.params
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string());
            (format!("search.{k}"), v)
        })
        .collect()
}

/// A trial's run name and end status, and the tags of its journal record.
fn trial_identity(
    rd: &RunDir,
    t: &TrialRecord,
    config: &Value,
    tags: &mut Vec<(String, String)>,
) -> (String, Option<(String, i64)>) {
    // Known from the config from the start (the journal says it only at the end).
    let family = config["model"]["kind"]
        .as_str()
        .map(String::from)
        .or_else(|| t.family.clone())
        .unwrap_or_default();
    tags.push(("fer.trial".into(), t.number.to_string()));
    tags.push(("fer.state".into(), format!("{:?}", t.state).to_lowercase()));
    let end = ms(mtime_s(&rd.metrics_jsonl()).max(mtime_s(&rd.eval())));
    let status = match t.state {
        TrialState::Complete | TrialState::Pruned => Some(("FINISHED".to_string(), end)),
        TrialState::Failed => {
            if let Some(e) = &t.error {
                tags.push(("mlflow.note.content".into(), format!("Failed: {e}")));
            }
            Some(("FAILED".to_string(), end))
        }
        TrialState::Running | TrialState::Stale => None,
    };
    (format!("trial-{:03} {family}", t.number), status)
}

/// A sweep folder as read: its parent run, its trials, and the experiment
/// they all go to.
pub(super) struct SweepFolder {
    pub experiment: String,
    pub parent: RunSpec,
    pub trials: Vec<TrialRecord>,
    /// The best trial, named by the summary the sweep writes at its end.
    pub best: Option<usize>,
}

/// The sweep's parent run: the search config as params, the objective per
/// trial as points.
pub(super) fn sweep_folder(
    sd: &SweepDir,
    experiment: Option<&str>,
) -> Result<SweepFolder, SyncError> {
    let (config, config_problem) = config_checked(&sd.config());
    let experiment = experiment_name(experiment, &config);
    let events =
        journal::read_events(&sd.journal()).map_err(|e| SyncError::Local(format!("{e:#}")))?;
    let trials = journal::rebuild(&events);
    let started: BTreeMap<usize, f64> = events
        .iter()
        .filter_map(|e| match e {
            journal::Event::TrialStarted { trial, time, .. } => Some((*trial, *time)),
            _ => None,
        })
        .collect();
    let summary = sd.summary_json();
    let done = summary.exists();
    let mut raw = Vec::new();
    flatten(&config, "", &mut raw);
    let objective = crate::sweep::config::value_name(
        config["search"]["objective"]["metric"]
            .as_str()
            .unwrap_or("objective"),
        !config["cv"].is_null(),
    );
    let maximize = config["search"]["objective"]["direction"] != "minimize";
    let (prov, mut tags) = provenance_tags(sd.path(), &sd.config());
    as_started(&mut raw, &prov);
    tags.push(("fer.kind".into(), "sweep".into()));
    let parent = RunSpec {
        dir: sd.path().to_path_buf(),
        experiment: experiment.clone(),
        name: format!("sweep {}", config["name"].as_str().unwrap_or("")),
        parent: None,
        source: "fer sweep".into(),
        params: clean_params(raw),
        tags,
        points: sweep_points(&trials, &started, &objective, maximize),
        artifacts: sweep_artifacts(sd),
        status: done.then(|| ("FINISHED".to_string(), ms(mtime_s(&summary)))),
        start_ms: start_ms(&sd.config(), &prov),
        prov,
        problems: config_problem.into_iter().collect(),
    };
    Ok(SweepFolder {
        experiment,
        parent,
        trials,
        best: best_trial(&summary),
    })
}

/// The best trial named by a sweep's `summary.json` (None when unreadable).
fn best_trial(summary: &Path) -> Option<usize> {
    let bytes = std::fs::read(summary).ok()?;
    serde_json::from_slice::<crate::sweep::Summary>(&bytes)
        .ok()?
        .best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::train::Select;
    use crate::eval::adjust::{AdjustRecord, GridPoint};
    use crate::eval::{metrics, EvalReport};
    use crate::train::SwaRecord;

    fn record(epoch: usize) -> EpochRecord {
        EpochRecord {
            epoch,
            step: 10 * epoch,
            lr: 0.1,
            train_loss: 1.0,
            train_acc: 0.5,
            val_loss: 1.1,
            val_acc: 0.4,
            val_f1_macro: 0.3,
            val_robust_acc: None,
            img_per_s: 100.0,
            epoch_seconds: 2.0,
            time: 1_000.0 + epoch as f64,
        }
    }

    fn report(split: &str, halves: bool) -> EvalReport {
        let k = crate::data::fer2013::CLASSES.len();
        let probs: Vec<f32> = (0..2 * k)
            .map(|i| if i % (k + 1) == 0 { 0.4 } else { 0.1 })
            .collect();
        let m = metrics::compute(&probs, &[0, 1], k);
        let by_origin = if halves {
            ["PrivateTest", "PublicTest"]
                .map(|o| (o.to_string(), m.clone()))
                .into()
        } else {
            BTreeMap::new()
        };
        EvalReport {
            split: split.into(),
            classes: crate::data::fer2013::classes(),
            tta: false,
            overall: m,
            by_origin,
            intervals: BTreeMap::new(),
            seconds: 1.0,
            img_per_s: 2.0,
            data: None,
        }
    }

    fn adjust() -> AdjustRecord {
        let g = GridPoint {
            alpha: 0.0,
            accuracy: 0.5,
            macro_f1: 0.4,
            log_loss: 1.0,
        };
        AdjustRecord {
            select: Select::ValAcc,
            tta: false,
            alpha: 0.15,
            before: g.clone(),
            after: g,
            crossfit_correct: 2035,
            unadjusted_correct: 2038,
            crossfit_alphas: [0.1, 0.2],
            n: 10,
            grid: vec![],
        }
    }

    fn outcome() -> Outcome {
        Outcome {
            name: "x".into(),
            family: "cnn".into(),
            params: 1,
            macs: 1,
            device: "cpu".into(),
            threads: 1,
            data_digest: String::new(),
            best_epoch: Some(2),
            epochs_run: 3,
            stopped_early: false,
            pruned: false,
            history: vec![record(1)],
            train_seconds: 9.5,
            train_img_per_s: 120.0,
            swa: Some(SwaRecord {
                snapshots: 2,
                bn_batches: 1,
                val_loss: 1.0,
                val_acc: 0.5,
                val_f1_macro: 0.4,
                chosen: true,
            }),
            logit_adjust: Some(adjust()),
            select: None,
            val: report("val", false),
            test: report("test", true),
        }
    }

    fn keys(pts: &[Point]) -> Vec<&str> {
        pts.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn a_fine_tuned_run_is_tagged_with_the_file_it_started_from() {
        let mut prov = Provenance {
            data_digest: Some("d".repeat(64)),
            ..Default::default()
        };
        let plain = common_tags(&prov, b"x");
        assert!(plain.iter().all(|(k, _)| !k.starts_with("fer.init")));
        prov.init = Some(crate::provenance::InitRecord {
            path: "models/fer-release.safetensors".into(),
            blake3: "b".repeat(64),
            name: "release-v9".into(),
            sees_val: true,
        });
        let tags = common_tags(&prov, b"x");
        let get = |k: &str| tags.iter().find(|(t, _)| t == k).map(|(_, v)| v.as_str());
        assert_eq!(get("fer.init.path"), Some("models/fer-release.safetensors"));
        assert_eq!(get("fer.init.blake3"), Some("b".repeat(64).as_str()));
        assert_eq!(get("fer.init.sees_val"), Some("true"));
        assert_eq!(tags.len(), plain.len() + 3);
    }

    #[test]
    fn each_epoch_gives_eight_points_at_its_end() {
        let pts = epoch_points(&[record(1), record(2)]);
        assert_eq!(pts.len(), 16);
        assert_eq!(
            keys(&pts[..8]),
            [
                "train/loss",
                "train/acc",
                "val/loss",
                "val/acc",
                "val/f1_macro",
                "lr",
                "img_per_s",
                "epoch_seconds"
            ]
        );
        assert!(pts[8..]
            .iter()
            .all(|p| p.step == 2 && p.timestamp_ms == 1_002_000));
    }

    #[test]
    fn the_outcome_gives_the_final_points() {
        let o = outcome();
        let pts = final_points(&o, 7);
        assert!(pts.iter().all(|p| p.step == 3 && p.timestamp_ms == 7));
        let k = keys(&pts);
        assert_eq!(
            k[..12],
            [
                "final/val/acc",
                "final/val/f1_weighted",
                "final/val/f1_macro",
                "final/val/top2_acc",
                "final/val/log_loss",
                "final/val/ece",
                "final/test/acc",
                "final/test/f1_weighted",
                "final/test/f1_macro",
                "final/test/top2_acc",
                "final/test/log_loss",
                "final/test/ece",
            ]
        );
        assert_eq!(k[12], "final/test/f1/angry");
        assert_eq!(
            k[19..],
            [
                "final/test/PrivateTest/acc",
                "final/test/PrivateTest/f1_weighted",
                "final/test/PublicTest/acc",
                "final/test/PublicTest/f1_weighted",
                "swa/val_acc",
                "swa/val_loss",
                "swa/val_f1_macro",
                "logit_adjust/alpha",
                "logit_adjust/crossfit_correct",
                "train_img_per_s",
                "train_seconds",
            ]
        );
        assert_eq!(pts[0].value, o.val.overall.accuracy);
        assert_eq!(pts.last().unwrap().value, 9.5);
        assert_eq!(pts[pts.len() - 3].value, 2035.0);
        // No weight average, no adjustment: no points for them.
        let plain = Outcome {
            swa: None,
            logit_adjust: None,
            select: None,
            ..outcome()
        };
        assert_eq!(final_points(&plain, 7).len(), pts.len() - 5);
    }

    #[test]
    fn a_run_folder_gives_its_epochs_then_its_outcome() {
        let t = tempfile::tempdir().unwrap();
        let rd = RunDir::new(t.path());
        let lines: Vec<String> = [record(1), record(2)]
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        // A torn last line (a kill mid-write) is no point.
        std::fs::write(rd.metrics_jsonl(), lines.join("\n") + "\n{\"epoch\": 3, ").unwrap();
        assert_eq!(run_points(&rd), epoch_points(&[record(1), record(2)]));
        std::fs::write(rd.eval(), serde_json::to_vec_pretty(&outcome()).unwrap()).unwrap();
        let pts = run_points(&rd);
        let t_eval = ms(mtime_s(&rd.eval()));
        assert_eq!(pts[..16], epoch_points(&[record(1), record(2)]));
        assert_eq!(pts[16..], final_points(&outcome(), t_eval));
    }

    #[test]
    fn the_sweep_logs_each_finished_trial_and_the_best_so_far() {
        use crate::sweep::journal::TrialState::*;
        let trials = [
            TrialRecord::finished(0, Default::default(), Complete, Some(0.5)),
            TrialRecord::finished(1, Default::default(), Running, None),
            TrialRecord::finished(2, Default::default(), Failed, None),
            TrialRecord::finished(3, Default::default(), Pruned, Some(0.7)),
            TrialRecord::finished(4, Default::default(), Complete, Some(0.6)),
        ];
        let started = BTreeMap::from([(0, 10.0), (3, 20.0)]);
        let got = |maximize| -> Vec<(String, f64, i64, i64)> {
            sweep_points(&trials, &started, "val/acc", maximize)
                .into_iter()
                .map(|p| (p.key, p.value, p.step, p.timestamp_ms))
                .collect()
        };
        let row = |k: &str, v, step, t| (k.to_string(), v, step, t);
        assert_eq!(
            got(true),
            [
                row("trial/val/acc", 0.5, 0, 10_000),
                row("best/val/acc", 0.5, 0, 10_000),
                row("best/val/acc", 0.5, 2, 0),
                row("trial/val/acc", 0.7, 3, 20_000),
                row("best/val/acc", 0.7, 3, 20_000),
                row("trial/val/acc", 0.6, 4, 0),
                row("best/val/acc", 0.7, 4, 0),
            ]
        );
        let min = got(false);
        assert_eq!(min[4], row("best/val/acc", 0.5, 3, 20_000));
    }

    #[test]
    fn params_are_the_flattened_config_cleaned() {
        let doc: Value = serde_saphyr::from_str(
            "name: x\nmodel:\n  kind: cnn\n  widths: [1, 2]\nseed: 3\nnote: null\n",
        )
        .unwrap();
        let mut raw = Vec::new();
        flatten(&doc, "", &mut raw);
        raw.push(("bad key!".into(), "v".into()));
        raw.push(("seed".into(), "x".repeat(client::MAX_PARAM_VALUE + 5)));
        let p = clean_params(raw);
        assert_eq!(
            p.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["model.kind", "model.widths", "name", "seed"]
        );
        assert_eq!(p[1].1, "[1,2]");
        assert_eq!(p[3].1.len(), client::MAX_PARAM_VALUE, "the last value, cut");
    }
}
