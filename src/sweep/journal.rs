//! The sweep's storage: an append-only journal (`trials.jsonl`), one JSON
//! event per line, flushed and synced per event. Everything else (trial
//! states, the sampler's history, the summary) is rebuilt from it. Many
//! processes, on one machine or several sharing the folder, read and append
//! it under one [`FileMutex`] (safe on NFS); a transaction reads the journal
//! and appends its decision under that lock, so trial numbers stay unique.
//! A line cut short by a kill is ignored, and cut off by the next writer.

use super::sampler::Params;
use crate::lock::FileMutex;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    Running,
    Complete,
    Pruned,
    Failed,
    /// Failed-stale: its worker stopped (no heartbeat for `stale_after`);
    /// the next free worker takes it over from its checkpoint.
    Stale,
}

/// The process that runs (or ran) a trial.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Worker {
    /// `--worker-name`, else `host:pid`.
    pub name: String,
    pub host: String,
    pub pid: u32,
    /// The Slurm job and array task this worker runs in, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm: Option<String>,
}

impl Worker {
    /// This process, named `name` or `host:pid`.
    pub fn here(name: Option<String>) -> Worker {
        let host = crate::provenance::hostname();
        let pid = std::process::id();
        let slurm = std::env::var("SLURM_JOB_ID").ok().map(|j| {
            match (
                std::env::var("SLURM_ARRAY_JOB_ID"),
                std::env::var("SLURM_ARRAY_TASK_ID"),
            ) {
                (Ok(a), Ok(t)) => format!("{a}_{t}"),
                _ => j,
            }
        });
        Worker {
            name: name.unwrap_or_else(|| format!("{host}:{pid}")),
            host,
            pid,
            slurm,
        }
    }

    /// Whether this is the same process as `o` (names aside).
    pub fn same_process(&self, o: &Worker) -> bool {
        self.host == o.host && self.pid == o.pid
    }
}

impl std::fmt::Display for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {} on {})", self.name, self.pid, self.host)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A trial was asked for: its number, parameters and seed are fixed now.
    TrialStarted {
        trial: usize,
        params: Params,
        seed: u64,
        time: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        worker: Option<Worker>,
        /// A seed repeat of this trial (`search.reseed`): its parameters
        /// under another seed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repeat_of: Option<usize>,
    },
    /// A running trial's worker was found gone (`by` found it): no heartbeat
    /// for `stale_after` seconds and its folder no longer locked.
    TrialStale {
        trial: usize,
        worker: Option<Worker>,
        /// Seconds since its last heartbeat.
        silent: f64,
        by: Worker,
        time: f64,
    },
    /// `worker` took over a stale (or interrupted) trial, to finish it from
    /// its last checkpoint.
    TrialClaimed {
        trial: usize,
        worker: Worker,
        time: f64,
    },
    /// One epoch's objective value.
    Intermediate {
        trial: usize,
        epoch: usize,
        value: f64,
    },
    /// The trial ended; `value` is the objective (best epoch, or the last
    /// reported value when pruned).
    TrialFinished {
        trial: usize,
        state: TrialState,
        value: Option<f64>,
        seconds: f64,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        family: Option<String>,
        #[serde(default)]
        params_count: Option<u64>,
        /// Every objective's value, with several objectives.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        values: Option<Vec<f64>>,
    },
}

/// A trial rebuilt from the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub number: usize,
    pub params: Params,
    pub seed: u64,
    pub state: TrialState,
    pub value: Option<f64>,
    /// Objective per epoch, in order.
    pub intermediate: Vec<(usize, f64)>,
    pub seconds: f64,
    pub error: Option<String>,
    pub family: Option<String>,
    pub params_count: Option<u64>,
    /// Who runs it now (or ran it last); None in journals from before workers.
    #[serde(default)]
    pub worker: Option<Worker>,
    /// Unix time it was started or last claimed.
    #[serde(default)]
    pub since: f64,
    /// Times it was found stale and taken over.
    #[serde(default)]
    pub takeovers: usize,
    /// Every objective's value, with several objectives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f64>>,
    /// The trial this one repeats under another seed (`search.reseed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_of: Option<usize>,
}

impl TrialRecord {
    /// A finished trial (for tests and synthetic studies).
    pub fn finished(
        number: usize,
        params: Params,
        state: TrialState,
        value: Option<f64>,
    ) -> TrialRecord {
        TrialRecord {
            number,
            params,
            seed: 0,
            state,
            value,
            intermediate: vec![],
            seconds: 0.0,
            error: None,
            family: None,
            params_count: None,
            worker: None,
            since: 0.0,
            takeovers: 0,
            values: None,
            repeat_of: None,
        }
    }
}

/// How long a journal lock may be held before it counts as abandoned: a
/// transaction holds it for milliseconds.
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a writer waits for the lock before it fails naming the holder.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

pub struct Journal {
    path: PathBuf,
    mutex: FileMutex,
}

impl Journal {
    pub fn open(dir: &Path) -> Result<Journal> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = crate::layout::SweepDir::new(dir).journal();
        let mutex = FileMutex::for_file(&path, LOCK_GRACE);
        Ok(Journal { path, mutex })
    }

    pub fn append(&self, e: &Event) -> Result<()> {
        self.transact(|_| Ok((vec![e.clone()], ())))
    }

    /// Reads the journal and appends what `decide` returns, with no other
    /// writer in between: the unit every decision shared by workers (a new
    /// trial's number, a takeover) is made in.
    pub fn transact<T>(
        &self,
        decide: impl FnOnce(&[Event]) -> Result<(Vec<Event>, T)>,
    ) -> Result<T> {
        let _held = self.mutex.lock(LOCK_WAIT)?;
        let ctx = || format!("writing {}", self.path.display());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&self.path)
            .with_context(ctx)?;
        let mut text = String::new();
        f.read_to_string(&mut text)
            .with_context(|| format!("reading {}", self.path.display()))?;
        // A line a killed writer cut short is dropped before anything is
        // appended after it (no writer can be mid-line: we hold the lock).
        if !text.is_empty() && !text.ends_with('\n') {
            let keep = text.rfind('\n').map_or(0, |i| i + 1);
            f.set_len(keep as u64).with_context(ctx)?;
            text.truncate(keep);
        }
        let events = parse(&self.path, &text)?;
        let (new, out) = decide(&events)?;
        if !new.is_empty() {
            let mut lines = String::new();
            for e in &new {
                lines += &serde_json::to_string(e)?;
                lines.push('\n');
            }
            f.seek(std::io::SeekFrom::End(0)).with_context(ctx)?;
            f.write_all(lines.as_bytes()).with_context(ctx)?;
            f.sync_data().with_context(ctx)?;
        }
        Ok(out)
    }

    pub fn events(&self) -> Result<Vec<Event>> {
        read_events(&self.path)
    }

    pub fn trials(&self) -> Result<Vec<TrialRecord>> {
        Ok(rebuild(&self.events()?))
    }
}

/// Parses the journal; a malformed line other than a cut-off last one is an error.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<Vec<Event>> {
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(e) => out.push(e),
            Err(_) if i + 1 == lines.len() && !complete => {}
            Err(e) => anyhow::bail!("{}:{}: bad journal line: {e}", path.display(), i + 1),
        }
    }
    Ok(out)
}

/// Folds events into trials, ordered by number. A trial started but never
/// finished stays `Running` (it was interrupted).
pub fn rebuild(events: &[Event]) -> Vec<TrialRecord> {
    let mut trials: Vec<TrialRecord> = Vec::new();
    for e in events {
        match e {
            Event::TrialStarted {
                trial,
                params,
                seed,
                time,
                worker,
                repeat_of,
            } => {
                if trials.iter().all(|t| t.number != *trial) {
                    trials.push(TrialRecord {
                        number: *trial,
                        params: params.clone(),
                        seed: *seed,
                        state: TrialState::Running,
                        value: None,
                        intermediate: vec![],
                        seconds: 0.0,
                        error: None,
                        family: None,
                        params_count: None,
                        worker: worker.clone(),
                        since: *time,
                        takeovers: 0,
                        values: None,
                        repeat_of: *repeat_of,
                    });
                }
            }
            Event::TrialStale { trial, .. } => {
                if let Some(t) = trials.iter_mut().find(|t| t.number == *trial) {
                    if t.state == TrialState::Running {
                        t.state = TrialState::Stale;
                    }
                }
            }
            Event::TrialClaimed {
                trial,
                worker,
                time,
            } => {
                if let Some(t) = trials.iter_mut().find(|t| t.number == *trial) {
                    if matches!(t.state, TrialState::Running | TrialState::Stale) {
                        if t.state == TrialState::Stale {
                            t.takeovers += 1;
                        }
                        t.state = TrialState::Running;
                        t.worker = Some(worker.clone());
                        t.since = *time;
                    }
                }
            }
            Event::Intermediate {
                trial,
                epoch,
                value,
            } => {
                if let Some(t) = trials.iter_mut().find(|t| t.number == *trial) {
                    // A resumed trial re-reports replayed epochs: keep one per epoch.
                    t.intermediate.retain(|(e, _)| e != epoch);
                    t.intermediate.push((*epoch, *value));
                    t.intermediate.sort_by_key(|p| p.0);
                }
            }
            Event::TrialFinished {
                trial,
                state,
                value,
                seconds,
                error,
                family,
                params_count,
                values,
            } => {
                if let Some(t) = trials.iter_mut().find(|t| t.number == *trial) {
                    t.values = values.clone();
                    t.state = *state;
                    t.value = *value;
                    t.seconds = *seconds;
                    t.error = error.clone();
                    t.family = family.clone();
                    t.params_count = *params_count;
                }
            }
        }
    }
    trials.sort_by_key(|t| t.number);
    trials
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rebuild_survives_a_cut_line_and_replayed_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let p: Params = [("x".to_string(), serde_json::json!(1.0))].into();
        j.append(&Event::TrialStarted {
            trial: 0,
            params: p.clone(),
            seed: 5,
            time: 0.0,
            worker: None,
            repeat_of: None,
        })
        .unwrap();
        j.append(&Event::Intermediate {
            trial: 0,
            epoch: 1,
            value: 0.3,
        })
        .unwrap();
        j.append(&Event::TrialFinished {
            trial: 0,
            state: TrialState::Complete,
            value: Some(0.3),
            seconds: 1.0,
            error: None,
            family: None,
            params_count: None,
            values: None,
        })
        .unwrap();
        j.append(&Event::TrialStarted {
            trial: 1,
            params: p,
            seed: 6,
            time: 0.0,
            worker: None,
            repeat_of: None,
        })
        .unwrap();
        j.append(&Event::Intermediate {
            trial: 1,
            epoch: 1,
            value: 0.2,
        })
        .unwrap();
        j.append(&Event::Intermediate {
            trial: 1,
            epoch: 1,
            value: 0.2,
        })
        .unwrap();
        // A kill mid-write leaves half a line.
        let path = dir.path().join("trials.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"event\":\"intermed").unwrap();
        drop(f);
        let t = rebuild(&read_events(&path).unwrap());
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].state, TrialState::Complete);
        assert_eq!(t[1].state, TrialState::Running);
        assert_eq!(t[1].intermediate, vec![(1, 0.2)]);
        // Reopening repairs the file so new events append cleanly.
        let j = Journal::open(dir.path()).unwrap();
        j.append(&Event::Intermediate {
            trial: 1,
            epoch: 2,
            value: 0.1,
        })
        .unwrap();
        assert_eq!(j.trials().unwrap()[1].intermediate.len(), 2);
    }

    /// The body of one appending process in the stress test below (run by
    /// it as a child process of this test binary; ignored otherwise).
    #[test]
    #[ignore]
    fn stress_child() {
        let dir = std::env::var("FER_JOURNAL_STRESS_DIR").expect("run by the stress test");
        let me: usize = std::env::var("FER_JOURNAL_STRESS_ID")
            .unwrap()
            .parse()
            .unwrap();
        let j = Journal::open(Path::new(&dir)).unwrap();
        for k in 0..300 {
            // Long lines make a torn write likely if the lock did not hold.
            j.append(&Event::TrialFinished {
                trial: me,
                state: TrialState::Complete,
                value: Some(k as f64),
                seconds: 0.0,
                error: Some("x".repeat(3000 + 97 * me)),
                family: None,
                params_count: None,
                values: None,
            })
            .unwrap();
        }
    }

    #[test]
    fn eight_processes_appending_at_once_lose_and_tear_no_line() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..8)
            .map(|i| {
                std::process::Command::new(&exe)
                    .args([
                        "--ignored",
                        "--exact",
                        "sweep::journal::tests::stress_child",
                    ])
                    .env("FER_JOURNAL_STRESS_DIR", dir.path())
                    .env("FER_JOURNAL_STRESS_ID", i.to_string())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success());
        }
        let events = read_events(&dir.path().join("trials.jsonl")).unwrap();
        assert_eq!(events.len(), 8 * 300);
        for i in 0..8 {
            let mine: Vec<f64> = events
                .iter()
                .filter_map(|e| match e {
                    Event::TrialFinished {
                        trial,
                        value,
                        error,
                        ..
                    } if *trial == i => {
                        assert_eq!(error.as_ref().unwrap().len(), 3000 + 97 * i);
                        *value
                    }
                    _ => None,
                })
                .collect();
            // Every event once, in each writer's own order.
            assert_eq!(
                mine,
                (0..300).map(f64::from).collect::<Vec<_>>(),
                "writer {i}"
            );
        }
    }

    fn event() -> impl Strategy<Value = Event> {
        let trial = 0usize..6;
        let state = prop::sample::select(vec![
            TrialState::Running,
            TrialState::Complete,
            TrialState::Pruned,
            TrialState::Failed,
        ]);
        prop_oneof![
            (trial.clone(), any::<u64>()).prop_map(|(trial, seed)| Event::TrialStarted {
                trial,
                params: [("x".to_string(), serde_json::json!(trial))].into(),
                seed,
                time: 0.0,
                worker: None,
                repeat_of: None,
            }),
            (trial.clone(), 0usize..5, -999i32..999).prop_map(|(trial, epoch, value)| {
                Event::Intermediate {
                    trial,
                    epoch,
                    // Whole numbers: they survive JSON exactly.
                    value: value.into(),
                }
            }),
            (trial, state, prop::option::of(-999i32..999)).prop_map(|(trial, state, value)| {
                Event::TrialFinished {
                    trial,
                    state,
                    value: value.map(f64::from),
                    seconds: 1.0,
                    error: None,
                    family: None,
                    params_count: None,
                    values: None,
                }
            }),
        ]
    }

    fn journal_text(events: &[Event]) -> String {
        events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect()
    }

    /// A journal either reads (and rebuilds) or fails naming its file.
    fn reads_or_names_the_file(path: &Path) -> Result<(), TestCaseError> {
        match read_events(path) {
            Ok(read) => {
                rebuild(&read);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                prop_assert!(msg.contains(&path.display().to_string()), "{}", msg);
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Events in any order (finishes before starts, repeats, unknown
        /// trials) fold into one record per started trial, by number, with
        /// one value per epoch in epoch order.
        #[test]
        fn any_event_order_rebuilds_consistent_trials(events in prop::collection::vec(event(), 0..40)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("trials.jsonl");
            std::fs::write(&path, journal_text(&events)).unwrap();
            let read = read_events(&path).unwrap();
            prop_assert_eq!(&read, &events);
            let trials = rebuild(&read);
            let started: std::collections::BTreeSet<usize> = events
                .iter()
                .filter_map(|e| match e {
                    Event::TrialStarted { trial, .. } => Some(*trial),
                    _ => None,
                })
                .collect();
            let numbers: Vec<usize> = trials.iter().map(|t| t.number).collect();
            prop_assert_eq!(numbers, started.into_iter().collect::<Vec<_>>());
            for t in &trials {
                prop_assert!(t.intermediate.windows(2).all(|w| w[0].0 < w[1].0));
            }
        }

        /// A journal with bytes flipped or cut reads as events or as an
        /// error naming the file and line, never a panic.
        #[test]
        fn mutated_journals_read_or_name_the_bad_line(
            events in prop::collection::vec(event(), 1..12),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
            cut in prop::option::of(any::<prop::sample::Index>()),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("trials.jsonl");
            let mut bytes = journal_text(&events).into_bytes();
            for (i, v) in flips {
                let i = i.index(bytes.len());
                bytes[i] = v;
            }
            if let Some(c) = cut {
                bytes.truncate(c.index(bytes.len()));
            }
            std::fs::write(&path, &bytes).unwrap();
            reads_or_names_the_file(&path)?;
        }

        #[test]
        fn random_bytes_read_or_name_the_bad_line(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("trials.jsonl");
            std::fs::write(&path, &bytes).unwrap();
            reads_or_names_the_file(&path)?;
        }
    }
}
