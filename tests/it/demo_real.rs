//! `fer demo` on the real data set: it launches its own MLflow server (in a
//! temp folder, on a free loopback port), runs the demo sweep logged to it,
//! and writes the report. The server is then read back over REST: the
//! experiment, the parent run with its nested trials and their metric
//! histories, the registered best model; and the report's sections.

use crate::common;

use fer::mlflow::client::Client;
use serde_json::Value;
use std::path::Path;

#[test]
fn demo_sweep_reaches_a_real_mlflow_and_writes_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let server_dir = tmp.path().join("mlflow");
    let sweep = tmp.path().join("sweep");
    let report = tmp.path().join("report");
    let port = fer::mlflow::server::free_port().unwrap();
    let mut c = common::fer();
    c.env("VIRTUAL_ENV", common::repo().join(".venv"))
        .current_dir(common::repo())
        .arg("demo")
        .arg("--mlflow-dir")
        .arg(&server_dir)
        .args(["--mlflow-port", &port.to_string()])
        .arg("--sweep-dir")
        .arg(&sweep)
        .arg("--out")
        .arg(&report)
        // The demo's own experiment, fewer trials: the stages are the same.
        .args(["--set", "search.n_trials=4", "--set", "search.max_epochs=2"])
        .args(["--robustness-images", "100", "--no-serve", "--json"]);
    let out = c.output().unwrap();
    // Stop the server the demo left running, whatever the asserts say.
    struct Down(std::path::PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = fer::mlflow::server::down(&self.0);
        }
    }
    let _down = Down(server_dir.clone());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fer demo failed:\n{stderr}");
    for stage in [
        "demo [1/5]",
        "demo [2/5]",
        "demo [3/5]",
        "demo [4/5]",
        "demo [5/5]",
    ] {
        assert!(
            stderr.contains(stage),
            "progress line {stage} in:\n{stderr}"
        );
    }
    let demo: Value = serde_json::from_slice(&out.stdout).unwrap();
    let uri = format!("http://127.0.0.1:{port}");
    assert_eq!(demo["mlflow_uri"], uri.as_str());
    assert!(
        demo["tracking"].as_str().unwrap().contains("is up to date"),
        "{demo}"
    );

    // The experiment, one parent run and a nested run per trial.
    let client = Client::new(&uri).unwrap();
    let exp = client
        .get("experiments/get-by-name", &[("experiment_name", "demo")])
        .unwrap();
    let exp_id = exp["experiment"]["experiment_id"].as_str().unwrap();
    let runs = client.search_runs(exp_id, "").unwrap();
    let tag = |r: &Value, k: &str| -> Option<String> {
        r["data"]["tags"]
            .as_array()?
            .iter()
            .find(|t| t["key"] == k)
            .and_then(|t| t["value"].as_str().map(String::from))
    };
    let parent = runs
        .iter()
        .find(|r| tag(r, "fer.kind").as_deref() == Some("sweep"))
        .expect("a parent run");
    let parent_id = parent["info"]["run_id"].as_str().unwrap();
    assert_eq!(
        demo["sweep_url"].as_str().unwrap(),
        format!("{uri}/#/experiments/{exp_id}/runs/{parent_id}")
    );
    let trials: Vec<&Value> = runs
        .iter()
        .filter(|r| tag(r, "mlflow.parentRunId").as_deref() == Some(parent_id))
        .collect();
    assert_eq!(trials.len(), 4, "one nested run per trial");
    let families: std::collections::BTreeSet<String> = trials
        .iter()
        .filter_map(|r| {
            r["data"]["params"]
                .as_array()?
                .iter()
                .find(|p| p["key"] == "model.kind")
                .and_then(|p| p["value"].as_str().map(String::from))
        })
        .collect();
    assert!(families.len() >= 2, "several families: {families:?}");
    for r in &trials {
        let id = r["info"]["run_id"].as_str().unwrap();
        let h = client.history(id, "val/acc").unwrap();
        assert!(!h.is_empty(), "trial {id} has a val/acc curve");
    }
    // Some trial ran both epochs: a curve, not a point.
    assert!(trials.iter().any(|r| {
        let id = r["info"]["run_id"].as_str().unwrap();
        client.history(id, "val/acc").unwrap().len() == 2
    }));

    // The best model is registered, and its URL names that version.
    let mv = client
        .get("model-versions/get", &[("name", "demo"), ("version", "1")])
        .unwrap();
    assert_eq!(mv["model_version"]["name"], "demo");
    assert_eq!(
        demo["model_url"].as_str().unwrap(),
        format!("{uri}/#/models/demo/versions/1")
    );

    // The report, with its sections and charts.
    let md = std::fs::read_to_string(report.join("README.md")).unwrap();
    for section in ["## 1.", "## 2.", "## 3.", "## 6."] {
        assert!(md.contains(section), "report section {section}");
    }
    assert!(md.contains("sweep"), "the report covers the sweep");
    let pngs = std::fs::read_dir(&report)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert!(pngs >= 4, "{pngs} charts");
}

/// Without the data set the demo stops before it starts anything: one clear
/// error naming the folder, no MLflow server, no sweep folder.
#[test]
fn demo_without_the_data_set_fails_before_starting_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-fer2013");
    let server_dir = tmp.path().join("mlflow");
    let sweep = tmp.path().join("sweep");
    let out = demo_no_serve(&server_dir, &sweep, &["--data", &missing.to_string_lossy()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&*missing.to_string_lossy()), "{stderr}");
    assert!(!stderr.contains("demo [1/5]"), "{stderr}");
    assert!(!server_dir.exists(), "no server was started");
    assert!(!sweep.exists(), "no sweep was created");
}

/// Another program on the MLflow port is named as such: the demo stops
/// before its sweep with the port in the error, and starts no server.
#[test]
fn demo_names_another_program_on_its_mlflow_port() {
    let tmp = tempfile::tempdir().unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    let server_dir = tmp.path().join("mlflow");
    let sweep = tmp.path().join("sweep");
    let out = demo_no_serve(&server_dir, &sweep, &["--mlflow-port", &port.to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port} is in use by another program")),
        "{stderr}"
    );
    assert!(!stderr.contains("MLflow: http"), "{stderr}");
    assert!(!sweep.exists(), "no sweep was run");
    drop(other);
}

/// `fer demo --no-serve` with its MLflow and sweep folders and `extra`.
fn demo_no_serve(server_dir: &Path, sweep: &Path, extra: &[&str]) -> std::process::Output {
    common::fer()
        .env("VIRTUAL_ENV", common::repo().join(".venv"))
        .current_dir(common::repo())
        .args(["demo", "--no-serve"])
        .args(extra)
        .arg("--mlflow-dir")
        .arg(server_dir)
        .arg("--sweep-dir")
        .arg(sweep)
        .output()
        .unwrap()
}
