//! What a run still lacks on one server, as pure functions of the folder's
//! contents (`RunSpec`) and of what `mlflow.json` says the server already
//! holds (`ServerState`). The network half (`sync.rs`) follows these plans
//! in order and records each step once the server has accepted it, so a
//! sync repeated after any failure sends only what is still missing.

use super::state::ServerState;
use crate::artifact::ModelMeta;
use crate::mlflow::client::Point;
use crate::provenance::Provenance;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything needed to create or update one run: the folder as read, in
/// plain data (`folder.rs` reads it).
pub(super) struct RunSpec {
    pub dir: PathBuf,
    pub experiment: String,
    pub name: String,
    pub parent: Option<String>,
    pub source: String,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    pub points: Vec<Point>,
    /// (path in the folder, path on the server).
    pub artifacts: Vec<(PathBuf, String)>,
    /// FINISHED / FAILED once known; None while running.
    pub status: Option<(String, i64)>,
    pub start_ms: i64,
    /// The folder's `provenance.json` (empty when it predates provenance).
    pub prov: Provenance,
    /// Damaged files whose part of the run was not sent, with what is wrong.
    pub problems: Vec<String>,
}

/// What an existing run lacks, in the order it is sent.
#[derive(Debug, PartialEq)]
pub(super) struct RunPlan<'a> {
    /// Params whose value the server does not have.
    pub params: Vec<(String, String)>,
    /// Tags that are new or changed.
    pub tags: Vec<(String, String)>,
    /// The training data as a `runs/log-inputs` dataset, once per run and
    /// only when the provenance knows the data's digest.
    pub dataset: Option<Value>,
    /// The metric points the server does not hold (by key and step), in order.
    pub points: Vec<Point>,
    /// The end status and time, when it changed.
    pub status: Option<(&'a str, i64)>,
}

pub(super) fn run_plan<'a>(spec: &'a RunSpec, s: &ServerState) -> RunPlan<'a> {
    let mut params = Vec::new();
    let mut tags: BTreeMap<String, String> = spec.tags.iter().cloned().collect();
    for (k, v) in &spec.params {
        match s.params.get(k) {
            None => params.push((k.clone(), v.clone())),
            Some(held) if held == v => {}
            // A param the server holds with another value cannot change
            // (MLflow refuses it, and the refusal would block the rest of
            // the run); the value now goes in a tag that may.
            Some(held) => {
                tracing::warn!(
                    "MLflow: param '{k}' is {held} on the server and {v} in the folder; params cannot change, so the new value is the tag fer.changed.{k}"
                );
                tags.insert(format!("fer.changed.{k}"), v.clone());
            }
        }
    }
    // The source and the parent are tags too; tags overwrite, so a change
    // is simply sent again.
    tags.insert("mlflow.source.name".into(), spec.source.clone());
    if let Some(p) = &spec.parent {
        tags.insert("mlflow.parentRunId".into(), p.clone());
    }
    let tags = tags
        .into_iter()
        .filter(|(k, v)| s.tags.get(k) != Some(v))
        .collect();
    RunPlan {
        params,
        tags,
        dataset: if s.inputs_done {
            None
        } else {
            dataset(&spec.prov)
        },
        points: spec
            .points
            .iter()
            .filter(|p| !s.points.contains(&(p.key.clone(), p.step)))
            .cloned()
            .collect(),
        status: spec
            .status
            .as_ref()
            .filter(|(status, _)| s.status.as_deref() != Some(status))
            .map(|(status, end)| (status.as_str(), *end)),
    }
}

/// The training data of a run, as MLflow's dataset input.
fn dataset(prov: &Provenance) -> Option<Value> {
    let d = prov.data_digest.as_ref()?;
    let source = json!({"uri": format!("file://{}", prov.data_dir.clone().unwrap_or_default())});
    let profile = json!({"digest_blake3": d, "split_sizes": prov.split_sizes});
    Some(json!({
        "tags": [{"key": "mlflow.data.context", "value": "training"}],
        "dataset": {"name": "fer2013", "digest": &d[..d.len().min(32)],
            "source_type": "local", "source": source.to_string(),
            "profile": profile.to_string()}}))
}

/// An artifact whose size and modification time (ns) are those recorded at
/// its upload is not read again.
pub(super) fn unchanged(sent: Option<&(u64, u128, String)>, size: u64, mtime_ns: u128) -> bool {
    sent.is_some_and(|(s, m, _)| *s == size && *m == mtime_ns)
}

/// A file touched but not changed (same blake3 as uploaded) is not sent
/// again; only its new size and time are recorded.
pub(super) fn same_bytes(sent: Option<&(u64, u128, String)>, hash: &str) -> bool {
    sent.is_some_and(|(_, _, h)| h == hash)
}

/// The steps of logging a folder's model that are still to do.
#[derive(Debug, PartialEq)]
pub(super) struct ModelPlan {
    /// Find (by uid tag) or create the logged model, and link it to the run.
    pub create: bool,
    /// Upload `MLmodel` and the weights, then mark the model ready.
    pub upload: bool,
    /// Register it as a new version of the registered model.
    pub register: bool,
}

/// None while the folder has no run on the server (the model hangs off it).
pub(super) fn model_plan(s: &ServerState) -> Option<ModelPlan> {
    (s.experiment_id.is_some() && s.run_id.is_some()).then(|| ModelPlan {
        create: s.model_id.is_none(),
        upload: !s.model_ready,
        register: s.registered.is_none(),
    })
}

/// The logged model's params: what the model file says of itself.
pub(super) fn model_params(meta: Option<&ModelMeta>) -> Vec<Value> {
    let mut params = vec![];
    if let Some(m) = meta {
        params.push(json!({"key": "family", "value": m.model.family()}));
        params.push(json!({"key": "params", "value": m.params.to_string()}));
        params.push(json!({"key": "macs", "value": m.macs.to_string()}));
    }
    params
}

/// The `MLmodel` file of a logged model whose weights are `model_file`.
pub(super) fn mlmodel(id: &str, run_id: &str, model_file: &str, created: f64) -> String {
    format!(
        "artifact_path: model\nmodel_id: {id}\nrun_id: {run_id}\nflavors:\n  fer:\n    format: fer-model/1\n    file: {model_file}\n    fer_version: {}\nmlflow_version: 3.17.2\nutc_time_created: '{created}'\n",
        env!("CARGO_PKG_VERSION"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(key: &str, step: i64) -> Point {
        Point {
            key: key.into(),
            value: step as f64,
            timestamp_ms: 1000 * step,
            step,
        }
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn spec() -> RunSpec {
        RunSpec {
            dir: PathBuf::from("runs/x/1"),
            experiment: "x".into(),
            name: "x".into(),
            parent: None,
            source: "fer train".into(),
            params: kv(&[("a", "1"), ("b", "3"), ("c", "4")]),
            tags: kv(&[("fer.host", "h")]),
            points: (1..=10).map(|s| pt("val/acc", s)).collect(),
            artifacts: vec![],
            status: None,
            start_ms: 0,
            prov: Provenance::default(),
            problems: Vec::new(),
        }
    }

    /// The state after a complete sync of `spec`.
    fn synced(spec: &RunSpec) -> ServerState {
        let mut s = ServerState::default();
        let p = run_plan(spec, &s);
        s.params.extend(p.params);
        s.tags.extend(p.tags);
        s.points = p.points.iter().map(|x| (x.key.clone(), x.step)).collect();
        s.inputs_done = p.dataset.is_some();
        s.status = p.status.map(|(st, _)| st.to_string());
        s
    }

    #[test]
    fn points_the_server_lacks_are_planned_wherever_they_are() {
        let spec = spec();
        let mut s = ServerState::default();
        assert_eq!(run_plan(&spec, &s).points, spec.points);
        let held = |pts: &[Point]| pts.iter().map(|p| (p.key.clone(), p.step)).collect();
        s.points = held(&spec.points[..6]);
        assert_eq!(run_plan(&spec, &s).points, spec.points[6..]);
        // A point in the middle that never went (a damaged line, repaired
        // later) is planned although everything after it went.
        s.points = held(&spec.points);
        let middle = &spec.points[3];
        s.points.remove(&(middle.key.clone(), middle.step));
        assert_eq!(run_plan(&spec, &s).points, std::slice::from_ref(middle));
        s.points = held(&spec.points);
        assert!(run_plan(&spec, &s).points.is_empty());
    }

    #[test]
    fn params_already_logged_are_not_sent_again() {
        let spec = spec();
        let mut s = ServerState::default();
        s.params.insert("a".into(), "1".into());
        s.params.insert("b".into(), "2".into());
        // b is held as 2: a param cannot change, so 3 goes as a tag.
        let plan = run_plan(&spec, &s);
        assert_eq!(plan.params, kv(&[("c", "4")]));
        assert!(plan
            .tags
            .contains(&("fer.changed.b".to_string(), "3".to_string())));
        assert!(run_plan(&spec, &synced(&spec)).params.is_empty());
    }

    #[test]
    fn tags_carry_source_and_parent_and_only_changes_go() {
        let mut spec = spec();
        spec.parent = Some("p1".into());
        let s = ServerState::default();
        assert_eq!(
            run_plan(&spec, &s).tags,
            kv(&[
                ("fer.host", "h"),
                ("mlflow.parentRunId", "p1"),
                ("mlflow.source.name", "fer train"),
            ])
        );
        let mut s = synced(&spec);
        assert!(run_plan(&spec, &s).tags.is_empty());
        s.tags.insert("fer.host".into(), "other".into());
        assert_eq!(run_plan(&spec, &s).tags, kv(&[("fer.host", "h")]));
    }

    #[test]
    fn the_dataset_goes_once_and_only_with_a_digest() {
        let mut spec = spec();
        let mut s = ServerState::default();
        assert_eq!(run_plan(&spec, &s).dataset, None, "no digest, no dataset");
        spec.prov.data_digest = Some("d".repeat(64));
        spec.prov.data_dir = Some("/data/fer2013".into());
        spec.prov.split_sizes = Some([1, 2, 3]);
        let d = run_plan(&spec, &s)
            .dataset
            .expect("a digest gives a dataset");
        assert_eq!(d["dataset"]["digest"], "d".repeat(32));
        assert_eq!(d["dataset"]["source"], r#"{"uri":"file:///data/fer2013"}"#);
        assert_eq!(
            d["dataset"]["profile"],
            json!({"digest_blake3": "d".repeat(64), "split_sizes": [1, 2, 3]}).to_string()
        );
        s.inputs_done = true;
        assert_eq!(run_plan(&spec, &s).dataset, None);
    }

    #[test]
    fn the_status_goes_when_it_changes() {
        let mut spec = spec();
        let mut s = ServerState::default();
        assert_eq!(run_plan(&spec, &s).status, None, "running: no status");
        spec.status = Some(("FINISHED".into(), 42));
        assert_eq!(run_plan(&spec, &s).status, Some(("FINISHED", 42)));
        s.status = Some("FINISHED".into());
        assert_eq!(run_plan(&spec, &s).status, None);
        s.status = Some("FAILED".into());
        assert_eq!(run_plan(&spec, &s).status, Some(("FINISHED", 42)));
    }

    #[test]
    fn an_artifact_is_read_again_only_when_its_size_or_time_changed() {
        let sent = (10u64, 5u128, "h1".to_string());
        assert!(!unchanged(None, 10, 5), "never uploaded");
        assert!(unchanged(Some(&sent), 10, 5));
        assert!(!unchanged(Some(&sent), 11, 5));
        assert!(!unchanged(Some(&sent), 10, 6));
        // Touched but the same bytes: not uploaded again.
        assert!(same_bytes(Some(&sent), "h1"));
        assert!(!same_bytes(Some(&sent), "h2"));
        assert!(!same_bytes(None, "h1"));
    }

    #[test]
    fn the_model_steps_left_follow_the_state() {
        let mut s = ServerState::default();
        assert_eq!(model_plan(&s), None, "no run to hang it on");
        s.experiment_id = Some("1".into());
        s.run_id = Some("r".into());
        let all = ModelPlan {
            create: true,
            upload: true,
            register: true,
        };
        assert_eq!(model_plan(&s), Some(all));
        s.model_id = Some("m".into());
        s.model_ready = true;
        assert_eq!(
            model_plan(&s),
            Some(ModelPlan {
                create: false,
                upload: false,
                register: true,
            })
        );
        s.registered = Some(("x".into(), "1".into()));
        assert_eq!(
            model_plan(&s),
            Some(ModelPlan {
                create: false,
                upload: false,
                register: false,
            })
        );
    }

    #[test]
    fn mlmodel_names_the_model_and_its_file() {
        let m = mlmodel("m-1", "r-1", "w.safetensors", 1.5);
        assert!(m.starts_with("artifact_path: model\nmodel_id: m-1\nrun_id: r-1\n"));
        assert!(m.contains("    file: w.safetensors\n"));
        assert!(m.ends_with("mlflow_version: 3.17.2\nutc_time_created: '1.5'\n"));
        assert!(model_params(None).is_empty());
    }
}
