//! Experiment tracking. The local run folder is always written and is the
//! source of truth; an MLflow server, when configured, is brought up to date
//! from it by a background thread, so training never waits on the network
//! and an outage loses nothing (`fer mlflow sync` or the automatic catch-up
//! uploads what is missing). Once the command's own work is done it waits
//! for the last uploads only while the server answers, and never longer
//! than `FER_MLFLOW_WAIT` (see `WAIT_VAR`).

pub mod client;
pub mod server;
pub mod sync;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
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
    /// The command's own work is done (at this instant); upload what is
    /// left, within the wait.
    Finish(Instant),
}

/// After its own work is done, a command waits for the last uploads only
/// while the server answers: it stops once nothing has answered for the
/// request timeout plus the probe (15 + 3 s by default), and in any case
/// after `FER_MLFLOW_WAIT` seconds (default 60). What did not reach the
/// server is left for `fer mlflow sync`.
pub const WAIT_VAR: &str = "FER_MLFLOW_WAIT";
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// The wait from `FER_MLFLOW_WAIT`.
pub fn wait_from_env() -> Result<Duration, String> {
    parse_wait(std::env::var(WAIT_VAR).ok().as_deref())
}

/// The wait a value of `FER_MLFLOW_WAIT` gives: unset or empty is the
/// default, 0 is no wait at all.
fn parse_wait(value: Option<&str>) -> Result<Duration, String> {
    match value.filter(|v| !v.trim().is_empty()) {
        None => Ok(DEFAULT_WAIT),
        Some(v) if v.trim().parse::<f64>() == Ok(0.0) => Ok(Duration::ZERO),
        Some(v) => client::parse_seconds(WAIT_VAR, v),
    }
}

/// Uploads from a background thread, so `changed` never blocks. Notifications
/// that pile up while a sync runs are merged. After a transient failure the
/// tracker is offline: each later epoch, and a timer every `RETRY_EVERY`,
/// first asks whether anything answers (3 s at most) and syncs only if so,
/// so the server catches up when it comes back. A permanent failure (bad
/// credentials, not an MLflow server) stops uploads for this process and is
/// reported once. `finish` waits only while the server answers (see
/// `WAIT_VAR`).
pub struct MlflowTracker {
    tx: mpsc::Sender<Msg>,
    done: mpsc::Receiver<TrackReport>,
    uri: String,
    /// The most `finish` waits.
    wait: Duration,
    /// `finish` stops once the server has been silent this long.
    silence: Duration,
    /// When the server last answered (none when tracking is off).
    heard: Option<client::Heard>,
    /// Every folder announced, for the message when the wait runs out.
    seen: Mutex<BTreeSet<PathBuf>>,
}

const RETRY_EVERY: Duration = Duration::from_secs(20);

impl MlflowTracker {
    /// The tracker for `target`, its timeouts and wait from the environment.
    pub fn start(target: Target) -> MlflowTracker {
        let uri = target.uri.clone();
        let setup = wait_from_env()
            .and_then(|wait| Ok((Syncer::new(target).map_err(|e| e.to_string())?, wait)));
        MlflowTracker::with(uri, setup)
    }

    /// The tracker around a ready `Syncer` and wait (or the reason tracking
    /// is off).
    fn with(uri: String, setup: Result<(Syncer, Duration), String>) -> MlflowTracker {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let (wait, silence, heard) = match &setup {
            Ok((s, wait)) => (
                *wait,
                s.client.retry.timeout + client::PROBE_TIMEOUT,
                Some(s.client.heard()),
            ),
            Err(_) => (DEFAULT_WAIT, DEFAULT_WAIT, None),
        };
        // Detached: `finish` returns on time even when a request hangs, and
        // the thread ends with the process (each step it records is saved
        // atomically, so cutting it short loses nothing).
        std::thread::Builder::new()
            .name("mlflow".into())
            .spawn(move || {
                let report = match setup {
                    Ok((syncer, wait)) => worker(syncer, rx, wait),
                    Err(e) => unused(&e, &rx),
                };
                let _ = done_tx.send(report);
            })
            .expect("spawning the MLflow thread");
        MlflowTracker {
            tx,
            done,
            uri,
            wait,
            silence,
            heard,
            seen: Mutex::new(BTreeSet::new()),
        }
    }
}

impl Tracker for MlflowTracker {
    fn changed(&self, dir: &Path) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(dir.to_path_buf());
        }
        let _ = self.tx.send(Msg::Changed(dir.to_path_buf()));
    }
    fn finish(self: Box<Self>) -> TrackReport {
        let at = Instant::now();
        let _ = self.tx.send(Msg::Finish(at));
        let give_up = at + self.wait;
        let why = loop {
            // Silence counts from the last answer, or from now if that was
            // before the run ended.
            let heard = self
                .heard
                .as_ref()
                .and_then(|h| h.last())
                .map_or(at, |h| h.max(at));
            let silent_until = heard + self.silence;
            let until = give_up.min(silent_until);
            let now = Instant::now();
            if now >= until {
                break if until == give_up {
                    format!(
                        "still uploading after the {} allowed ({WAIT_VAR})",
                        client::seconds(self.wait)
                    )
                } else {
                    format!("no answer for {}", client::seconds(self.silence))
                };
            }
            match self.done.recv_timeout(until - now) {
                Ok(report) => return report,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break "the upload thread failed".to_string()
                }
            }
        };
        let dirs = self.seen.lock().map(|s| sync_dirs(&s)).unwrap_or_default();
        TrackReport {
            message: Some(not_everything(&self.uri, &why, &dirs)),
            complete: false,
        }
    }
}

/// The closing line when something did not reach the server.
fn not_everything(uri: &str, why: &str, dirs: &str) -> String {
    format!(
        "MLflow: not everything reached {uri} ({why}). Nothing is lost; upload it later with `fer mlflow sync {dirs}`"
    )
}

fn sync_dirs(seen: &BTreeSet<PathBuf>) -> String {
    let dirs: Vec<String> = seen.iter().map(|d| d.display().to_string()).collect();
    dirs.join(" ")
}

/// Tracking is off for this process (bad settings): drain the channel so
/// senders never block, then say why.
fn unused(e: &str, rx: &mpsc::Receiver<Msg>) -> TrackReport {
    eprintln!("MLflow: {e}; tracking only in the run folders");
    while let Ok(m) = rx.recv() {
        if matches!(m, Msg::Finish(_)) {
            break;
        }
    }
    TrackReport {
        message: Some(format!("MLflow not used: {e}")),
        complete: false,
    }
}

fn worker(mut syncer: Syncer, rx: mpsc::Receiver<Msg>, wait: Duration) -> TrackReport {
    let uri = syncer.client.uri.clone();
    let mut pending: BTreeSet<PathBuf> = BTreeSet::new();
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    // The transient error that put the tracker offline.
    let mut offline: Option<String> = None;
    let mut fatal: Option<String> = None;
    let mut total = Counts::default();
    let mut finishing = false;
    loop {
        let msg = if pending.is_empty() || offline.is_some() {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(m) => Some(m),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Msg::Finish(Instant::now())),
            }
        } else {
            rx.try_recv().ok()
        };
        for m in msg
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match m {
                Msg::Changed(d) => {
                    seen.insert(d.clone());
                    pending.insert(d);
                }
                Msg::Finish(at) => {
                    finishing = true;
                    // A little before the caller stops waiting, so that the
                    // report is this thread's own.
                    let margin = Duration::from_millis(250).min(wait / 2);
                    syncer.client.set_deadline(Some(at + wait - margin));
                }
            }
        }
        if finishing {
            // Everything once more: the last epoch, the summary, the model.
            pending.extend(seen.iter().cloned());
        }
        // Offline, a full sync would wait out a silent server's timeout
        // again: a short check comes first.
        let try_now = fatal.is_none()
            && !pending.is_empty()
            && (offline.is_none() || syncer.client.answers());
        if try_now {
            while let Some(d) = pending.first().cloned() {
                match syncer.sync(&d) {
                    Ok(c) => {
                        total += c;
                        pending.remove(&d);
                        if offline.take().is_some() {
                            eprintln!("MLflow: {uri} is back; caught up");
                        }
                    }
                    Err(e) if e.is_transient() => {
                        if offline.is_none() && !finishing {
                            eprintln!(
                                "MLflow: {e}. Training goes on; everything stays in the run folders and is uploaded when the server is back."
                            );
                        }
                        offline = Some(e.to_string());
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
            let mut problems = total.problems.clone();
            problems.sort();
            problems.dedup();
            let complete = fatal.is_none() && pending.is_empty() && problems.is_empty();
            let message = if complete {
                format!(
                    "MLflow: {uri} is up to date ({} runs created, {} params, {} metric points, {} artifacts, {} models)",
                    total.runs_created, total.params, total.points, total.artifacts, total.models
                )
            } else {
                let why = fatal
                    .or(offline)
                    .or_else(|| (!problems.is_empty()).then(|| problems.join("; ")))
                    .unwrap_or_else(|| "server unreachable".into());
                not_everything(&uri, &why, &sync_dirs(&seen))
            };
            return TrackReport {
                message: Some(message),
                complete,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::client::{Client, RetryPolicy};
    use super::*;

    /// A run folder as the tracker sees it, and a tracker for `uri` whose
    /// requests time out after `timeout` and whose finish waits `wait`.
    fn setup(uri: &str, timeout: Duration, wait: Duration) -> (tempfile::TempDir, MlflowTracker) {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(crate::layout::CONFIG), "name: t\n").unwrap();
        std::fs::write(tmp.path().join(crate::layout::METRICS_JSONL), "").unwrap();
        let policy = RetryPolicy {
            timeout,
            ..RetryPolicy::default()
        };
        let target = Target {
            uri: uri.into(),
            experiment: None,
            register_as: None,
        };
        let syncer = Syncer::with_client(target, Client::with_policy(uri, None, policy).unwrap());
        (tmp, MlflowTracker::with(uri.into(), Ok((syncer, wait))))
    }

    #[test]
    fn finish_waits_no_longer_than_the_wait_even_mid_request() {
        let uri = client::tests::silent_server();
        // The request in flight would wait 30 s for its answer; the silence
        // window is that plus the 3 s probe, the wait 0.8 s.
        let (tmp, t) = setup(&uri, Duration::from_secs(30), Duration::from_millis(800));
        t.changed(tmp.path());
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        let r = Box::new(t).finish();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_millis(1300),
            "{took:?}"
        );
        assert!(!r.complete);
        let m = r.message.unwrap();
        assert!(
            m.contains(&format!("not everything reached {uri} (still uploading after the 0.8 s allowed ({WAIT_VAR}))")),
            "{m}"
        );
        assert!(
            m.ends_with(&format!("`fer mlflow sync {}`", tmp.path().display())),
            "{m}"
        );
    }

    #[test]
    fn finish_stops_waiting_once_nothing_has_answered_for_the_silence_window() {
        let uri = client::tests::silent_server();
        // A request (an upload, say) that may take 30 s is in flight; the
        // wait is 60 s; the window is cut to 0.8 s here.
        let (tmp, mut t) = setup(&uri, Duration::from_secs(30), Duration::from_secs(60));
        t.silence = Duration::from_millis(800);
        t.changed(tmp.path());
        let t0 = Instant::now();
        let r = Box::new(t).finish();
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(700) && took < Duration::from_millis(1300),
            "{took:?}"
        );
        let m = r.message.unwrap();
        assert!(m.contains("(no answer for 0.8 s)"), "{m}");
        assert!(m.contains("fer mlflow sync"), "{m}");
    }

    #[test]
    fn finish_gives_up_on_a_silent_server_before_the_wait() {
        let uri = client::tests::silent_server();
        // Silence window 1 s + 3 s probe = 4 s; the wait is 60 s.
        let (tmp, t) = setup(&uri, Duration::from_secs(1), Duration::from_secs(60));
        // The worker is mid-request when the run ends.
        t.changed(tmp.path());
        let t0 = Instant::now();
        let r = Box::new(t).finish();
        let took = t0.elapsed();
        // Its request times out at 1 s; the probe then gets no answer
        // either (1 s more), and the worker reports by itself, within the
        // silence window.
        assert!(took < Duration::from_millis(3500), "{took:?}");
        let m = r.message.unwrap();
        assert!(
            m.contains("no answer to experiments/get-by-name within 1 s"),
            "{m}"
        );
    }

    #[test]
    fn once_the_server_was_silent_finish_only_checks_it_briefly() {
        let uri = client::tests::silent_server();
        let (tmp, t) = setup(&uri, Duration::from_millis(300), Duration::from_secs(20));
        t.changed(tmp.path());
        // The first request times out: the tracker is offline.
        std::thread::sleep(Duration::from_millis(700));
        let t0 = Instant::now();
        let r = Box::new(t).finish();
        // One 0.3 s check, not another full sync nor the 20 s wait.
        assert!(
            t0.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t0.elapsed()
        );
        assert!(!r.complete);
        let m = r.message.unwrap();
        assert!(
            m.contains("no answer to experiments/get-by-name within 0.3 s"),
            "{m}"
        );
        assert!(m.contains("fer mlflow sync"), "{m}");
    }

    #[test]
    fn the_wait_is_read_as_seconds_and_a_bad_value_is_named() {
        assert_eq!(parse_wait(None), Ok(DEFAULT_WAIT));
        assert_eq!(parse_wait(Some(" ")), Ok(DEFAULT_WAIT));
        assert_eq!(parse_wait(Some("0")), Ok(Duration::ZERO));
        assert_eq!(parse_wait(Some("7.5")), Ok(Duration::from_millis(7500)));
        assert_eq!(
            parse_wait(Some("soon")).unwrap_err(),
            format!("{WAIT_VAR}='soon': expected a number of seconds above 0")
        );
        assert!(parse_wait(Some("-1")).is_err());
    }
}
