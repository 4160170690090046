//! Experiment tracking. The local run folder is always written and is the
//! source of truth; an MLflow server, when configured, is brought up to date
//! from it by a background thread, so training never waits on the network
//! and an outage loses nothing (`fer mlflow sync` or the automatic catch-up
//! uploads what is missing).

pub mod client;
pub mod server;
pub mod sync;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use sync::{Counts, Syncer, Target};

/// The tracking URI to use: the config's, else `MLFLOW_TRACKING_URI`.
pub fn tracking_uri(config: Option<&str>) -> Option<String> {
    config
        .map(String::from)
        .or_else(|| std::env::var("MLFLOW_TRACKING_URI").ok())
        .filter(|s| !s.trim().is_empty())
}

pub use crate::track::{LocalOnly, TrackReport, Tracker};

/// The tracker for `uri`, or the local store alone.
pub fn tracker(uri: Option<String>) -> Box<dyn Tracker> {
    match uri {
        None => Box::new(LocalOnly),
        Some(uri) => Box::new(MlflowTracker::start(Target {
            uri,
            experiment: None,
            register_as: None,
        })),
    }
}

enum Msg {
    Changed(PathBuf),
    Finish,
}

/// Uploads from a background thread. Notifications that pile up while a
/// sync runs are merged; after a transient failure the folders are retried
/// every `RETRY_EVERY`, so the server catches up when it comes back. A
/// permanent failure (bad credentials, not an MLflow server) stops uploads
/// for this process and is reported once.
pub struct MlflowTracker {
    tx: mpsc::Sender<Msg>,
    handle: std::thread::JoinHandle<TrackReport>,
}

const RETRY_EVERY: Duration = Duration::from_secs(20);

impl MlflowTracker {
    pub fn start(target: Target) -> MlflowTracker {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("mlflow".into())
            .spawn(move || worker(target, rx))
            .expect("spawning the MLflow thread");
        MlflowTracker { tx, handle }
    }
}

impl Tracker for MlflowTracker {
    fn changed(&self, dir: &Path) {
        let _ = self.tx.send(Msg::Changed(dir.to_path_buf()));
    }
    fn finish(self: Box<Self>) -> TrackReport {
        let _ = self.tx.send(Msg::Finish);
        self.handle.join().unwrap_or_else(|_| TrackReport {
            message: Some("MLflow: the upload thread panicked; run `fer mlflow sync`".into()),
            complete: false,
        })
    }
}

fn worker(target: Target, rx: mpsc::Receiver<Msg>) -> TrackReport {
    let uri = target.uri.clone();
    let mut syncer = match Syncer::new(target) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("MLflow: {e}; tracking only in the run folders");
            // Drain so senders never block, then report.
            while let Ok(m) = rx.recv() {
                if matches!(m, Msg::Finish) {
                    break;
                }
            }
            return TrackReport {
                message: Some(format!("MLflow not used: {e}")),
                complete: false,
            };
        }
    };
    let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut offline_since: Option<Instant> = None;
    let mut fatal: Option<String> = None;
    let mut total = Counts::default();
    let mut finishing = false;
    loop {
        let msg = if pending.is_empty() || offline_since.is_some() {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Msg::Finish),
            }
        } else {
            rx.try_recv().ok()
        };
        match msg {
            Some(Msg::Changed(d)) => {
                seen.insert(d.clone());
                pending.insert(d);
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Msg::Changed(d) => {
                            seen.insert(d.clone());
                            pending.insert(d);
                        }
                        Msg::Finish => finishing = true,
                    }
                }
            }
            Some(Msg::Finish) => finishing = true,
            None => {}
        }
        if finishing {
            // Everything once more: the last epoch, the summary, the model.
            pending.extend(seen.iter().cloned());
        }
        if fatal.is_none() {
            while let Some(d) = pending.first().cloned() {
                match syncer.sync(&d) {
                    Ok(c) => {
                        total += c;
                        pending.remove(&d);
                        if offline_since.take().is_some() {
                            eprintln!("MLflow: {uri} is back; caught up");
                        }
                    }
                    Err(e) if e.is_transient() => {
                        if offline_since.is_none() {
                            eprintln!(
                                "MLflow: {e}. Training goes on; everything stays in the run folders and is uploaded when the server is back."
                            );
                            offline_since = Some(Instant::now());
                        }
                        break;
                    }
                    Err(e) => {
                        let hint = match &e {
                            sync::SyncError::Server(s) => s.hint(),
                            _ => "",
                        };
                        eprintln!(
                            "MLflow: {e}{hint}. Uploads stop for this run; the run folders keep everything."
                        );
                        fatal = Some(format!("{e}{hint}"));
                        break;
                    }
                }
            }
        }
        if finishing {
            let dirs: Vec<String> = seen.iter().map(|d| d.display().to_string()).collect();
            let complete = fatal.is_none() && pending.is_empty();
            let message = if complete {
                format!(
                    "MLflow: {uri} is up to date ({} runs created, {} params, {} metric points, {} artifacts, {} models)",
                    total.runs_created, total.params, total.points, total.artifacts, total.models
                )
            } else {
                format!(
                    "MLflow: not everything reached {uri} ({}). Nothing is lost; upload it later with `fer mlflow sync {}`",
                    fatal.as_deref().unwrap_or("server unreachable"),
                    dirs.join(" ")
                )
            };
            return TrackReport {
                message: Some(message),
                complete,
            };
        }
    }
}
