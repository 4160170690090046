//! `fer demo`: the harness end to end in a few minutes. It owns the order of
//! the stages and what ties them together: a local MLflow server (reused when
//! one is up, else launched in the background so that its ~35 s start-up
//! overlaps the sweep), the demo sweep logged to it as trials run, and the
//! sweep's report. The command line adds the webcam page and the clean-up.

use crate::mlflow::server::{self, Starting};
use crate::track::{TrackReport, Tracker};
use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Where the demo logs.
#[derive(Clone, Debug)]
pub enum MlflowChoice {
    /// The local server of `fer mlflow up` (its folder and port): reused
    /// when it runs, else launched.
    Local { dir: PathBuf, port: u16 },
    /// A server that is already up.
    Uri(String),
}

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub experiment: PathBuf,
    pub overrides: Vec<String>,
    pub data: Option<PathBuf>,
    pub sweep_dir: PathBuf,
    pub report_dir: PathBuf,
    /// Test images in the report's robustness suite.
    pub robustness_images: usize,
    /// How long a launched server may take to answer.
    pub mlflow_wait: Duration,
}

/// What the demo made, and where to look.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Demo {
    pub sweep_dir: PathBuf,
    pub report: PathBuf,
    pub mlflow_uri: String,
    /// The sweep's parent run in the MLflow UI.
    pub sweep_url: Option<String>,
    /// The registered model version in the MLflow UI.
    pub model_url: Option<String>,
    pub trials: usize,
    pub best: Option<(usize, String, f64)>,
    /// The upload's closing line.
    pub tracking: Option<String>,
}

/// The tracking server the demo logs to.
pub struct Mlflow {
    pub uri: String,
    /// The server this demo launched (the caller stops it at the end).
    pub launched: Option<server::ServerInfo>,
    /// Launched and not answering yet.
    starting: Option<Starting>,
}

/// Reuses the local server, or launches it without waiting for it to answer.
pub fn mlflow(choice: &MlflowChoice, wait: Duration) -> Result<Mlflow> {
    match choice {
        MlflowChoice::Uri(u) => Ok(Mlflow {
            uri: u.clone(),
            launched: None,
            starting: None,
        }),
        MlflowChoice::Local { dir, port } => {
            let s = server::start(&server::UpArgs {
                dir,
                host: "127.0.0.1",
                port: *port,
                wait,
                basic_auth: false,
            })?;
            let launched = matches!(s, Starting::Launched(..)).then(|| s.info().clone());
            Ok(Mlflow {
                uri: s.info().uri.clone(),
                launched,
                starting: Some(s),
            })
        }
    }
}

/// The demo's experiment, its data checked: what must hold before a server
/// is started or a trial run.
pub struct Prepared {
    exp: crate::sweep::config::Experiment,
    /// Training and test images found, and whether they came from the cache.
    pub train_images: usize,
    pub test_images: usize,
    pub from_cache: bool,
}

/// Loads the experiment and the data set once (decoding it into the cache
/// on a first run), so that a missing data set is one clear error up front
/// rather than every trial failing.
pub fn prepare(o: &DemoOptions) -> Result<Prepared> {
    let mut exp = crate::sweep::config::Experiment::load(&o.experiment, &o.overrides)
        .with_context(|| {
            format!(
                "the demo experiment {} (run from the repository's root, or pass --experiment)",
                o.experiment.display()
            )
        })?;
    if let Some(d) = &o.data {
        exp.data.dir = d.clone();
    }
    let loaded = crate::data::load(&exp.data, &crate::layout::cache_dir())?;
    Ok(Prepared {
        train_images: loaded.data.train.len(),
        test_images: loaded.data.test.len(),
        from_cache: loaded.from_cache,
        exp,
    })
}

/// Runs the sweep (logged to `m`) and the report, telling `stage` what
/// starts.
pub fn run(o: &DemoOptions, p: Prepared, m: Mlflow, stage: &mut dyn FnMut(&str)) -> Result<Demo> {
    let (exp, uri) = (&p.exp, m.uri.as_str());
    let search = &exp.search;
    let pruner = match search.pruner {
        crate::sweep::pruner::PrunerConfig::None => "no pruning",
        crate::sweep::pruner::PrunerConfig::Median { .. } => "median pruning",
        crate::sweep::pruner::PrunerConfig::Asha { .. } => "ASHA pruning",
    };
    stage(&format!(
        "sweep: {} ({} trials, {} sampler, {pruner}) into {}",
        o.experiment.display(),
        search.n_trials,
        search.sampler.name(),
        o.sweep_dir.display()
    ));
    crate::sweep::create(exp, &o.sweep_dir)?;
    let tracker = Box::new(Gate::new(uri, m.starting, o.mlflow_wait));
    let me = crate::sweep::journal::Worker::here(Some("demo".into()));
    let result = crate::sweep::work(exp, &o.sweep_dir, &me, tracker.as_ref());
    tracker.changed(&o.sweep_dir);
    stage("MLflow: uploading the last runs and registering the best model");
    let report = tracker.finish();
    let summary = result?;
    anyhow::ensure!(
        !summary.all_failed(),
        "every trial of the demo sweep failed; see {}",
        o.sweep_dir.display()
    );
    stage(&format!("report: {}", o.report_dir.display()));
    let report_path = crate::report::generate(&crate::report::ReportOptions {
        input: o.sweep_dir.clone(),
        out: Some(o.report_dir.clone()),
        data: o.data.clone(),
        robustness_images: o.robustness_images,
        robustness_baseline: None,
        importance: Vec::new(),
        notes: None,
        other_data: Vec::new(),
        class_maps: Vec::new(),
        tta: false,
    })?;
    let (sweep_url, model_url) = urls(uri, &o.sweep_dir);
    let best = summary.best.and_then(|n| {
        let t = summary.trials.iter().find(|t| t.number == n)?;
        Some((n, t.family.clone().unwrap_or_default(), t.value?))
    });
    Ok(Demo {
        sweep_dir: o.sweep_dir.clone(),
        report: report_path,
        mlflow_uri: uri.to_string(),
        sweep_url,
        model_url,
        trials: summary.trials.len(),
        best,
        tracking: report.message,
    })
}

/// The MLflow UI's pages of the sweep's parent run and its registered model,
/// from what the sync recorded in the folder.
fn urls(uri: &str, sweep_dir: &Path) -> (Option<String>, Option<String>) {
    let Some(s) = crate::mlflow::sync::server_state(sweep_dir, uri) else {
        return (None, None);
    };
    let base = uri.trim_end_matches('/');
    let run = match (&s.experiment_id, &s.run_id) {
        (Some(e), Some(r)) => Some(format!("{base}/#/experiments/{e}/runs/{r}")),
        _ => None,
    };
    let model = s
        .registered
        .as_ref()
        .map(|(name, v)| format!("{base}/#/models/{name}/versions/{v}"));
    (run, model)
}

/// A tracker that holds back uploads until a launched server answers, then
/// hands every folder seen so far to a real MLflow tracker. Without it the
/// first trial's uploads would meet a server still starting and put the
/// tracker offline (with a warning) for 20 s.
struct Gate {
    uri: String,
    /// Set once by the waiting thread: the server answers, or why not.
    ready: Arc<OnceLock<Result<(), String>>>,
    waiter: Mutex<Option<std::thread::JoinHandle<()>>>,
    inner: Mutex<Option<Box<dyn Tracker>>>,
    pending: Mutex<BTreeSet<PathBuf>>,
}

impl Gate {
    fn new(uri: &str, waiting: Option<Starting>, wait: Duration) -> Gate {
        let ready = Arc::new(OnceLock::new());
        let waiter = match waiting {
            None => {
                let _ = ready.set(Ok(()));
                None
            }
            Some(s) => {
                let r = ready.clone();
                Some(std::thread::spawn(move || {
                    let _ = r.set(s.wait(wait).map(|_| ()).map_err(|e| format!("{e:#}")));
                }))
            }
        };
        Gate {
            uri: uri.to_string(),
            ready,
            waiter: Mutex::new(waiter),
            inner: Mutex::new(None),
            pending: Mutex::new(BTreeSet::new()),
        }
    }

    /// Hands what is pending to the real tracker once the server answers.
    fn flush(&self) {
        if !matches!(self.ready.get(), Some(Ok(()))) {
            return;
        }
        let mut inner = self.inner.lock().expect("tracker lock");
        let t = inner.get_or_insert_with(|| crate::mlflow::tracker(Some(self.uri.clone())));
        let dirs = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
        for d in dirs {
            t.changed(&d);
        }
    }
}

impl Tracker for Gate {
    fn changed(&self, dir: &Path) {
        self.pending
            .lock()
            .expect("pending lock")
            .insert(dir.to_path_buf());
        self.flush();
    }

    fn finish(self: Box<Self>) -> TrackReport {
        if let Some(h) = self.waiter.lock().expect("waiter lock").take() {
            let _ = h.join();
        }
        if let Some(Err(e)) = self.ready.get() {
            return TrackReport {
                message: Some(format!(
                    "MLflow: the server did not start ({e}); everything stays in the run folders"
                )),
                complete: false,
            };
        }
        self.flush();
        match self.inner.lock().expect("tracker lock").take() {
            Some(t) => t.finish(),
            None => TrackReport {
                message: None,
                complete: true,
            },
        }
    }
}
