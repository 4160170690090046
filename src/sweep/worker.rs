//! One worker's side of a shared sweep: the next thing to do, decided under
//! the journal lock (take over a trial whose worker is gone, start a new
//! trial, wait for the others, or stop), the heartbeat a running trial
//! writes, and `fer sweep --status`.
//!
//! A trial belongs to the worker named by its last start or claim in the
//! journal, and that worker holds the trial folder's lock while it runs it.
//! A running trial is taken over only when its folder lock is free and its
//! worker is gone: no heartbeat for `stale_after_seconds`, or (on the same
//! host) its process no longer exists. The takeover is two journal events
//! (`trial_stale`, `trial_claimed`) in one transaction, so exactly one
//! worker wins it, and it resumes from the trial's last checkpoint.

use super::journal::{Event, TrialRecord, TrialState, Worker};
use crate::layout::{RunDir, SweepDir};
use crate::lock::FolderLock;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The file a running trial's heartbeat rewrites, in its folder.
pub const HEARTBEAT: &str = "heartbeat.json";

/// What a worker does next.
pub enum Next {
    /// Run this trial (new, or taken over), holding its folder lock.
    Run {
        number: usize,
        params: super::sampler::Params,
        seed: u64,
        lock: FolderLock,
        taken_over: bool,
    },
    /// Other workers are running the last trials: wait (one may die).
    Wait,
    /// Every trial has ended.
    Done,
}

/// The contents of a heartbeat file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Beat {
    pub worker: Worker,
    /// Unix time of the beat.
    pub time: f64,
}

/// Writes the heartbeat of a running trial every `every` until dropped.
pub struct Heartbeat {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    /// Beats once now (so the trial is never without one), then in a thread.
    pub fn start(trial: &RunDir, me: &Worker, every: Duration) -> Result<Heartbeat> {
        let path = trial.path().join(HEARTBEAT);
        let beat = {
            let me = me.clone();
            move || {
                let b = Beat {
                    worker: me.clone(),
                    time: crate::layout::unix_now(),
                };
                crate::layout::write_atomic(&path, &serde_json::to_vec(&b).expect("serialises"))
            }
        };
        std::fs::create_dir_all(trial.path())?;
        beat()?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (m, cv) = &*flag;
            let mut stopped = m.lock().unwrap_or_else(|e| e.into_inner());
            while !*stopped {
                let (s, timeout) = cv
                    .wait_timeout(stopped, every)
                    .unwrap_or_else(|e| e.into_inner());
                stopped = s;
                if timeout.timed_out() && !*stopped {
                    if let Err(e) = beat() {
                        eprintln!("sweep: heartbeat not written: {e:#}");
                    }
                }
            }
        });
        Ok(Heartbeat {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let (m, cv) = &*self.stop;
        *m.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The time of a trial's last heartbeat, if it wrote one.
pub fn last_beat(trial: &Path) -> Option<f64> {
    let bytes = std::fs::read(trial.join(HEARTBEAT)).ok()?;
    serde_json::from_slice::<Beat>(&bytes).ok().map(|b| b.time)
}

/// Whether process `pid` exists on this host.
pub fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // Signal 0 checks existence only; EPERM means it exists as another user.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Why a trial's worker counts as gone, if it does. `silent`: seconds since
/// its last heartbeat (or its start). The caller holds the trial's folder
/// lock, so no live process on a host sharing working locks runs it.
pub fn gone(t: &TrialRecord, me: &Worker, silent: f64, stale_after: f64) -> Option<String> {
    if t.state == TrialState::Stale {
        return Some("marked stale".into());
    }
    match &t.worker {
        // Journals from before workers: a running trial whose folder is
        // unlocked was interrupted.
        None => Some("interrupted".into()),
        Some(w) if w.host == me.host && !alive(w.pid) => {
            Some(format!("{w} has exited (heartbeat {silent:.0} s ago)"))
        }
        Some(w) if silent > stale_after => Some(format!(
            "no heartbeat from {w} for {silent:.0} s (stale after {stale_after:.0} s)"
        )),
        Some(_) => None,
    }
}

/// Takes over the first running or stale trial whose worker is gone.
/// Returns the events to append and what to run.
pub fn takeover(
    sd: &SweepDir,
    trials: &[TrialRecord],
    me: &Worker,
    stale_after: f64,
) -> Result<Option<(Vec<Event>, Next)>> {
    let now = crate::layout::unix_now();
    for t in trials
        .iter()
        .filter(|t| matches!(t.state, TrialState::Running | TrialState::Stale))
    {
        let rd = sd.trial(t.number);
        let Ok(lock) = crate::lock::try_acquire(rd.path())? else {
            continue;
        };
        let silent = now - last_beat(rd.path()).unwrap_or(t.since);
        let Some(why) = gone(t, me, silent, stale_after) else {
            continue;
        };
        eprintln!("sweep: trial {} taken over by {me}: {why}", t.number);
        let mut events = Vec::new();
        if t.state == TrialState::Running {
            events.push(Event::TrialStale {
                trial: t.number,
                worker: t.worker.clone(),
                silent,
                by: me.clone(),
                time: now,
            });
        }
        events.push(Event::TrialClaimed {
            trial: t.number,
            worker: me.clone(),
            time: now,
        });
        return Ok(Some((
            events,
            Next::Run {
                number: t.number,
                params: t.params.clone(),
                seed: t.seed,
                lock,
                taken_over: true,
            },
        )));
    }
    Ok(None)
}

/// `fer sweep --status`: trials by state and by worker, what runs now.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub dir: PathBuf,
    pub n_trials: usize,
    pub by_state: Vec<(TrialState, usize)>,
    pub workers: Vec<WorkerRow>,
    pub running: Vec<RunningRow>,
    /// Slurm jobs submitted for this sweep (`slurm/jobs.txt`).
    pub slurm_jobs: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkerRow {
    pub worker: Worker,
    pub complete: usize,
    pub pruned: usize,
    pub failed: usize,
    pub running: usize,
    pub takeovers: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunningRow {
    pub trial: usize,
    pub state: TrialState,
    pub worker: Option<Worker>,
    pub epochs: usize,
    /// Seconds since its last heartbeat.
    pub silent: Option<f64>,
}

pub fn status(dir: &Path, n_trials: usize, slurm_jobs: Vec<String>) -> Result<Status> {
    let sd = SweepDir::new(dir);
    let trials = super::journal::Journal::open(dir)?.trials()?;
    let states = [
        TrialState::Complete,
        TrialState::Pruned,
        TrialState::Failed,
        TrialState::Running,
        TrialState::Stale,
    ];
    let by_state = states
        .iter()
        .map(|s| (*s, trials.iter().filter(|t| t.state == *s).count()))
        .collect();
    let mut workers: Vec<WorkerRow> = Vec::new();
    for t in &trials {
        let w = t.worker.clone().unwrap_or_default();
        let i = match workers.iter().position(|r| r.worker == w) {
            Some(i) => i,
            None => {
                workers.push(WorkerRow {
                    worker: w,
                    complete: 0,
                    pruned: 0,
                    failed: 0,
                    running: 0,
                    takeovers: 0,
                });
                workers.len() - 1
            }
        };
        let r = &mut workers[i];
        match t.state {
            TrialState::Complete => r.complete += 1,
            TrialState::Pruned => r.pruned += 1,
            TrialState::Failed => r.failed += 1,
            TrialState::Running | TrialState::Stale => r.running += 1,
        }
        r.takeovers += t.takeovers;
    }
    let now = crate::layout::unix_now();
    let running = trials
        .iter()
        .filter(|t| matches!(t.state, TrialState::Running | TrialState::Stale))
        .map(|t| RunningRow {
            trial: t.number,
            state: t.state,
            worker: t.worker.clone(),
            epochs: t.intermediate.len(),
            silent: last_beat(sd.trial(t.number).path()).map(|b| now - b),
        })
        .collect();
    Ok(Status {
        dir: dir.to_path_buf(),
        n_trials,
        by_state,
        workers,
        running,
        slurm_jobs,
    })
}

impl Status {
    pub fn render(&self) -> String {
        let total: usize = self.by_state.iter().map(|p| p.1).sum();
        let states: Vec<String> = self
            .by_state
            .iter()
            .map(|(s, n)| format!("{} {n}", format!("{s:?}").to_lowercase()))
            .collect();
        let mut s = format!(
            "sweep {}: {total} of {} trials started; {}\n",
            self.dir.display(),
            self.n_trials,
            states.join(", ")
        );
        if !self.slurm_jobs.is_empty() {
            let _ = writeln!(s, "Slurm jobs: {}", self.slurm_jobs.join(", "));
        }
        s += "\n| worker | host | pid | slurm | complete | pruned | failed | running | taken over |\n|---|---|---:|---|---:|---:|---:|---:|---:|\n";
        for r in &self.workers {
            let w = &r.worker;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                if w.name.is_empty() { "-" } else { &w.name },
                if w.host.is_empty() { "-" } else { &w.host },
                w.pid,
                w.slurm.as_deref().unwrap_or("-"),
                r.complete,
                r.pruned,
                r.failed,
                r.running,
                r.takeovers
            );
        }
        for r in &self.running {
            let _ = writeln!(
                s,
                "\ntrial {} {}: {} epochs so far, by {}, last heartbeat {}",
                r.trial,
                format!("{:?}", r.state).to_lowercase(),
                r.epochs,
                r.worker
                    .as_ref()
                    .map_or("an unnamed worker".to_string(), |w| w.to_string()),
                r.silent
                    .map_or("none".to_string(), |s| format!("{s:.0} s ago"))
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(worker: Option<Worker>) -> TrialRecord {
        let mut t = TrialRecord::finished(3, Default::default(), TrialState::Running, None);
        t.worker = worker;
        t
    }

    #[test]
    fn a_worker_is_gone_when_silent_too_long_or_its_process_exited() {
        let me = Worker::here(None);
        let elsewhere = Worker {
            name: "w2".into(),
            host: "node-b".into(),
            pid: 4242,
            slurm: None,
        };
        // On another host only the heartbeat tells.
        assert_eq!(
            gone(&running(Some(elsewhere.clone())), &me, 59.0, 60.0),
            None
        );
        let why = gone(&running(Some(elsewhere)), &me, 61.0, 60.0).unwrap();
        assert!(
            why.contains("no heartbeat from w2") && why.contains("61 s"),
            "{why}"
        );
        // On this host a live process is not gone, whatever its heartbeat.
        let live = Worker {
            pid: std::process::id(),
            ..me.clone()
        };
        assert_eq!(gone(&running(Some(live)), &me, 1.0, 60.0), None);
        // An exited one is, at once.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Worker { pid, ..me.clone() };
        assert!(gone(&running(Some(dead)), &me, 1.0, 60.0)
            .unwrap()
            .contains("has exited"));
        // A trial from a journal before workers, unlocked: interrupted.
        assert!(gone(&running(None), &me, 0.0, 60.0).is_some());
    }

    #[test]
    fn a_heartbeat_beats_at_once_then_regularly_and_stops_when_dropped() {
        let t = tempfile::tempdir().unwrap();
        let rd = RunDir(t.path().join("trial"));
        let me = Worker::here(Some("w1".into()));
        let hb = Heartbeat::start(&rd, &me, Duration::from_millis(50)).unwrap();
        let first = last_beat(rd.path()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let later = last_beat(rd.path()).unwrap();
        assert!(later > first + 0.1, "{first} -> {later}");
        drop(hb);
        let stopped = last_beat(rd.path()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(last_beat(rd.path()).unwrap(), stopped);
    }
}
