//! `fer sweep`: hyperparameter search over an experiment's space. A study
//! with ask/tell over an append-only journal: every decision is an event in
//! `trials.jsonl`, and after a crash `--resume` rebuilds the trials from it,
//! finishes the interrupted trial from its last checkpoint, and continues.

pub mod config;
pub mod journal;
pub mod launch;
pub mod pruner;
pub mod resume;
pub mod sampler;
pub mod space;
pub mod tpe;
pub mod worker;

use crate::layout::SweepDir;
use crate::metric::{Direction, EpochRecord};
use crate::train::{Control, Listener, TrainEvent};
use anyhow::{Context, Result};
use config::Experiment;
use journal::{Event, Journal, TrialRecord, TrialState, Worker};
use sampler::{observations, Params};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;
use worker::Next;

/// The files of a sweep folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub name: String,
    pub objective: String,
    pub direction: Direction,
    pub trials: Vec<TrialRecord>,
    /// Best complete trial per family.
    pub best_per_family: Vec<(String, usize, f64)>,
    pub best: Option<usize>,
    pub best_model: Option<PathBuf>,
}

fn family_of(exp: &Experiment, params: &Params) -> String {
    params
        .get(space::FAMILY)
        .and_then(|v| v.as_str())
        .map(String::from)
        .or_else(|| exp.model.as_ref().map(|m| m.family().to_string()))
        .unwrap_or_default()
}

/// Runs (or resumes) the sweep in `dir` as one worker.
pub fn run(
    exp: &Experiment,
    dir: &Path,
    resume: bool,
    tracker: &dyn crate::track::Tracker,
) -> Result<Summary> {
    if resume {
        crate::layout::check_resume(dir, crate::layout::Kind::Sweep)?;
    } else {
        create(exp, dir)?;
    }
    work(exp, dir, &Worker::here(None), tracker)
}

/// Makes a new sweep folder: its experiment, provenance and empty journal.
pub fn create(exp: &Experiment, dir: &Path) -> Result<()> {
    let sd = SweepDir::new(dir);
    crate::layout::check_new(dir, crate::layout::Kind::Sweep, "--sweep-dir")?;
    Journal::open(dir)?;
    std::fs::write(sd.config(), exp.to_yaml()?)
        .with_context(|| format!("writing {}", sd.config().display()))?;
    crate::provenance::Provenance::here().save(dir)?;
    // The journal last: its presence makes the folder a sweep.
    Journal::open(dir)?.transact(|_| Ok((vec![], ())))
}

/// One worker on the sweep in `dir` (made by [`create`]): takes over trials
/// whose worker is gone, starts new trials while the budget lasts, waits
/// while others run the last ones, then writes the summary.
pub fn work(
    exp: &Experiment,
    dir: &Path,
    me: &Worker,
    tracker: &dyn crate::track::Tracker,
) -> Result<Summary> {
    let sd = SweepDir::new(dir);
    let journal = Journal::open(dir)?;
    let space = exp.space()?;
    let search = &exp.search;
    let objective = search.objective.clone();
    let mut waiting = false;
    loop {
        let next = journal.transact(|events| {
            let trials = journal::rebuild(events);
            // An interrupted or stale trial is finished first, from its
            // checkpoint: none is lost or counted twice.
            if let Some(t) = worker::takeover(&sd, &trials, me, search.stale_after_seconds)? {
                return Ok(t);
            }
            let spent: f64 = trials.iter().map(|t| t.seconds).sum();
            let over_budget = search.max_minutes.is_some_and(|m| spent >= m * 60.0);
            let running = trials
                .iter()
                .any(|t| matches!(t.state, TrialState::Running | TrialState::Stale));
            if trials.len() >= search.n_trials || over_budget {
                if over_budget && !running {
                    eprintln!(
                        "sweep: wall-time budget of {} min of trials reached after {} trials",
                        search.max_minutes.unwrap_or_default(),
                        trials.len()
                    );
                }
                let next = if running { Next::Wait } else { Next::Done };
                return Ok((vec![], next));
            }
            let n = trials.len();
            let Ok(lock) = crate::lock::try_acquire(sd.trial(n).path())? else {
                // A process that has not written its start yet: look again.
                return Ok((vec![], Next::Wait));
            };
            // Running trials count as bad (a constant liar): parallel
            // workers are steered away from points already being tried.
            let obs = observations(&trials, |v| objective.direction.loss(v));
            let params = search.sampler.ask(&space, &obs, exp.seed, n);
            let seed = crate::data::augment::image_seed(exp.seed, 0x7121, n as u64);
            let start = Event::TrialStarted {
                trial: n,
                params: params.clone(),
                seed,
                time: crate::layout::unix_now(),
                worker: Some(me.clone()),
            };
            let next = Next::Run {
                number: n,
                params,
                seed,
                lock,
                taken_over: false,
            };
            Ok((vec![start], next))
        })?;
        match next {
            Next::Run {
                number,
                params,
                seed,
                lock,
                taken_over,
            } => {
                waiting = false;
                if taken_over {
                    eprintln!("sweep: resuming trial {number} from its checkpoint");
                }
                run_trial(exp, &sd, &journal, me, number, &params, seed, tracker)?;
                drop(lock);
                tracker.changed(dir);
            }
            Next::Wait => {
                if !waiting {
                    eprintln!("sweep: {me} waits for the trials other workers run");
                    waiting = true;
                }
                let poll = search.heartbeat_seconds.clamp(0.2, 5.0);
                std::thread::sleep(std::time::Duration::from_secs_f64(poll));
            }
            Next::Done => break,
        }
    }
    let summary = summarise(exp, &sd, journal.trials()?)?;
    tracker.changed(dir);
    Ok(summary)
}

#[allow(clippy::too_many_arguments)]
fn run_trial(
    exp: &Experiment,
    sd: &SweepDir,
    journal: &Journal,
    me: &Worker,
    n: usize,
    params: &Params,
    seed: u64,
    tracker: &dyn crate::track::Tracker,
) -> Result<()> {
    let t0 = Instant::now();
    let family = family_of(exp, params);
    let shown: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("sweep: trial {n} [{}] {}", family, shown.join(" "));
    let finish = |state, value, error: Option<String>, count| {
        append_owned(
            journal,
            me,
            n,
            Event::TrialFinished {
                trial: n,
                state,
                value,
                seconds: t0.elapsed().as_secs_f64(),
                error,
                family: Some(family.clone()),
                params_count: count,
            },
        )
    };
    let cfg = match exp.trial_config(params, n, seed) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sweep: trial {n} failed: {e:#}");
            return finish(TrialState::Failed, None, Some(format!("{e:#}")), None);
        }
    };
    let rd = sd.trial(n);
    let _beat = worker::Heartbeat::start(
        &rd,
        me,
        std::time::Duration::from_secs_f64(exp.search.heartbeat_seconds),
    )?;
    let resume = rd.last().exists();
    if resume {
        // Re-emit the epochs the checkpoint already holds (the kill may have
        // come between the checkpoint and the journal); rebuild deduplicates.
        for r in crate::metric::read_history(&rd) {
            append_owned(journal, me, n, intermediate(exp, n, &r))?;
        }
    }
    let mut track = crate::train::Track {
        tracker,
        dir: &sd.0,
    };
    let mut writer = JournalWriter {
        exp,
        journal,
        me,
        trial: n,
        failed: false,
    };
    let mut pruner = Pruning {
        exp,
        journal,
        trial: n,
        last_epoch: cfg.train.epochs,
    };
    let result = crate::train::run_with(
        &cfg,
        &rd.0,
        resume,
        &mut [&mut track, &mut writer],
        Some(&mut pruner),
    );
    match result {
        // Without its journal the sweep cannot go on: the error is the sweep's.
        Err(e) if writer.failed => Err(e),
        Ok(out) => {
            let (state, value) = settle(exp, &out);
            eprintln!(
                "sweep: trial {n} {} with {} = {}",
                if out.pruned { "pruned" } else { "complete" },
                exp.search.objective.metric.name(),
                value.map_or("-".into(), |v| format!("{v:.4}"))
            );
            finish(state, value, None, Some(out.params))
        }
        Err(e) => {
            eprintln!("sweep: trial {n} failed: {e:#}");
            finish(TrialState::Failed, None, Some(format!("{e:#}")), None)
        }
    }
}

/// A trained trial's journal state and value: a pruned trial's last value,
/// a complete trial's best.
fn settle(exp: &Experiment, out: &crate::train::Outcome) -> (TrialState, Option<f64>) {
    if out.pruned {
        return (
            TrialState::Pruned,
            out.history.last().map(|r| objective_of(exp, r)),
        );
    }
    let dirn = exp.search.objective.direction;
    let values = out.history.iter().map(|r| objective_of(exp, r));
    let best = values.reduce(|a, b| if dirn.better(b, a) { b } else { a });
    (TrialState::Complete, best)
}

fn objective_of(exp: &Experiment, r: &EpochRecord) -> f64 {
    exp.search.objective.metric.of(r)
}

/// The journal event of a trial's objective value after an epoch.
fn intermediate(exp: &Experiment, trial: usize, r: &EpochRecord) -> Event {
    Event::Intermediate {
        trial,
        epoch: r.epoch,
        value: objective_of(exp, r),
    }
}

/// Appends `e` about trial `n` only while `me` owns the trial: a worker
/// that was taken for dead (a frozen process, a cut network) and wakes up
/// stops instead of running the trial a second time.
fn append_owned(journal: &Journal, me: &Worker, n: usize, e: Event) -> Result<()> {
    journal.transact(|events| {
        let trials = journal::rebuild(events);
        let owner = trials.iter().find(|t| t.number == n).and_then(|t| {
            // Journals from before workers name no owner.
            t.worker.clone()
        });
        if let Some(w) = owner.filter(|w| !w.same_process(me)) {
            anyhow::bail!("trial {n} was taken over by {w}; {me} stops its copy");
        }
        Ok((vec![e], ()))
    })
}

/// Writes each epoch's objective value of trial `trial` into the journal.
struct JournalWriter<'a> {
    exp: &'a Experiment,
    journal: &'a Journal,
    me: &'a Worker,
    trial: usize,
    /// An append failed: the run's error is the journal's.
    failed: bool,
}

impl Listener for JournalWriter<'_> {
    fn on(&mut self, ev: &TrainEvent) -> Result<()> {
        let TrainEvent::EpochEnd { record, .. } = ev else {
            return Ok(());
        };
        let event = intermediate(self.exp, self.trial, record);
        append_owned(self.journal, self.me, self.trial, event).map_err(|e| {
            self.failed = true;
            e.context("writing the sweep journal")
        })
    }
}

/// The experiment's pruner as the trainer's control: asked after each
/// epoch, once the journal holds the epoch's value.
struct Pruning<'a> {
    exp: &'a Experiment,
    journal: &'a Journal,
    trial: usize,
    /// The trial's last scheduled epoch, which always completes.
    last_epoch: usize,
}

impl Control for Pruning<'_> {
    fn should_stop(&mut self, r: &EpochRecord) -> bool {
        let trials = self.journal.trials().unwrap_or_default();
        let Some(me) = trials.iter().find(|t| t.number == self.trial) else {
            return false;
        };
        let search = &self.exp.search;
        let dir = search.objective.direction;
        let prune = search
            .pruner
            .should_prune(me, &trials, r.epoch, self.last_epoch, dir);
        if prune {
            eprintln!(
                "sweep: trial {} pruned at epoch {} ({} = {:.4})",
                self.trial,
                r.epoch,
                search.objective.metric.name(),
                objective_of(self.exp, r)
            );
        }
        prune
    }
}

/// The summary of the sweep in `dir`, from its journal (written to its files).
pub fn summary(exp: &Experiment, dir: &Path) -> Result<Summary> {
    summarise(exp, &SweepDir::new(dir), Journal::open(dir)?.trials()?)
}

fn summarise(exp: &Experiment, sd: &SweepDir, trials: Vec<TrialRecord>) -> Result<Summary> {
    let dir = exp.search.objective.direction;
    let better = |a: &TrialRecord, b: &TrialRecord| {
        dir.better(a.value.unwrap_or(f64::NAN), b.value.unwrap_or(f64::NAN))
    };
    let complete: Vec<&TrialRecord> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.value.is_some())
        .collect();
    let best = complete
        .iter()
        .copied()
        .reduce(|a, b| if better(b, a) { b } else { a })
        .map(|t| t.number);
    let mut fams: Vec<String> = complete.iter().filter_map(|t| t.family.clone()).collect();
    fams.sort();
    fams.dedup();
    let best_per_family = fams
        .iter()
        .filter_map(|f| {
            complete
                .iter()
                .copied()
                .filter(|t| t.family.as_deref() == Some(f.as_str()))
                .reduce(|a, b| if better(b, a) { b } else { a })
                .map(|t| (f.clone(), t.number, t.value.unwrap_or(f64::NAN)))
        })
        .collect();
    let best_model = match best {
        Some(n) => {
            let src = sd.trial(n).model();
            let bytes =
                std::fs::read(&src).with_context(|| format!("exporting {}", src.display()))?;
            crate::layout::write_atomic(&sd.best_model(), &bytes)?;
            Some(sd.best_model())
        }
        None => None,
    };
    let s = Summary {
        name: exp.name.clone(),
        objective: exp.search.objective.metric.name().to_string(),
        direction: dir,
        trials,
        best_per_family,
        best,
        best_model,
    };
    crate::layout::write_atomic(&sd.summary_json(), &serde_json::to_vec_pretty(&s)?)?;
    crate::layout::write_atomic(&sd.summary_md(), s.render().as_bytes())?;
    Ok(s)
}

impl Summary {
    pub fn render(&self) -> String {
        let mut s = format!(
            "# Sweep `{}`\n\nObjective: {} ({:?}).\n\n| trial | family | state | {} | epochs | params | seconds | parameters |\n|---:|---|---|---:|---:|---:|---:|---|\n",
            self.name, self.objective, self.direction, self.objective
        );
        for t in &self.trials {
            let p: Vec<String> = t
                .params
                .iter()
                .filter(|(k, _)| k.as_str() != space::FAMILY)
                .map(|(k, v)| match v.as_f64() {
                    Some(x) if v.is_f64() => format!("{k}={x:.4}"),
                    _ => format!("{k}={v}"),
                })
                .collect();
            let _ = writeln!(
                s,
                "| {} | {} | {:?} | {} | {} | {} | {:.0} | {} |",
                t.number,
                t.family.as_deref().unwrap_or("-"),
                t.state,
                t.value.map_or("-".into(), |v| format!("{v:.4}")),
                t.intermediate.len(),
                t.params_count.map_or("-".into(), |c| c.to_string()),
                t.seconds,
                p.join(" ")
            );
        }
        s += "\nBest per family:\n\n";
        for (f, n, v) in &self.best_per_family {
            let _ = writeln!(s, "- {f}: trial {n}, {} = {v:.4}", self.objective);
        }
        match self.best {
            Some(n) => {
                let _ = writeln!(
                    s,
                    "\nBest overall: trial {n}; model exported to `{}`.",
                    self.best_model
                        .as_ref()
                        .map_or(String::new(), |p| p.display().to_string())
                );
            }
            None => s += "\nNo trial completed.\n",
        }
        s
    }

    /// True when every trial failed (the sweep's exit code is then non-zero).
    pub fn all_failed(&self) -> bool {
        !self.trials.is_empty() && self.trials.iter().all(|t| t.state == TrialState::Failed)
    }
}
