//! `fer sweep`: hyperparameter search over an experiment's space. A study
//! with ask/tell over an append-only journal: every decision is an event in
//! `trials.jsonl`, and after a crash `--resume` rebuilds the trials from it,
//! finishes the interrupted trial from its last checkpoint, and continues.

pub mod config;
pub mod importance;
pub mod journal;
pub mod launch;
pub mod pareto;
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
    /// With several objectives: the objectives, the Pareto-optimal complete
    /// trials (exported to `pareto/`), and the rule `best` was chosen by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<config::ObjectiveSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pareto: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_rule: Option<String>,
    /// With `search.reseed`: each re-run configuration and its spread.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seed_groups: Vec<SeedGroup>,
    /// A cross-validated sweep's best configuration without its folds (no
    /// one fold's model is the configuration's): train it on all the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_config: Option<PathBuf>,
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
    // The experiment as started: what `--join` and `--resume` check the
    // folder's config.yaml against.
    let mut prov = crate::provenance::Provenance::here();
    prov.config = Some(serde_json::to_value(exp)?);
    prov.save(dir)?;
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
            let running = trials.iter().any(is_active);
            let searched = trials.iter().filter(|t| t.repeat_of.is_none()).count();
            let search_over = searched >= search.n_trials || over_budget;
            let repeat = repeat_due(search, &trials, search_over);
            if search_over && repeat.is_none() {
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
            let params = match repeat {
                Some(src) => trials
                    .iter()
                    .find(|t| t.number == src)
                    .map(|t| t.params.clone())
                    .unwrap_or_default(),
                None => ask(exp, &space, &trials, n),
            };
            let seed = crate::data::augment::image_seed(exp.seed, 0x7121, n as u64);
            if let Some(src) = repeat {
                eprintln!("sweep: trial {n} repeats trial {src} under seed {seed}");
            }
            let start = Event::TrialStarted {
                trial: n,
                params: params.clone(),
                seed,
                time: crate::layout::unix_now(),
                worker: Some(me.clone()),
                repeat_of: repeat,
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
    let finish = |state, value, error: Option<String>, count, values| {
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
                values,
            },
        )
    };
    let cfg = match exp.trial_config(params, n, seed) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sweep: trial {n} failed: {e:#}");
            return finish(TrialState::Failed, None, Some(format!("{e:#}")), None, None);
        }
    };
    let rd = sd.trial(n);
    let _beat = worker::Heartbeat::start(
        &rd,
        me,
        std::time::Duration::from_secs_f64(exp.search.heartbeat_seconds),
    )?;
    // A cross-validated trial's curve, the one pruned on, is its first fold's.
    let cv = cfg.cv.is_some();
    let first = if cv {
        crate::layout::RunDir::new(rd.path().join(crate::config::Unit::Fold.dir_name(1)))
    } else {
        rd.clone()
    };
    let resume = if cv {
        rd.seeds().exists()
    } else {
        rd.last().exists()
    };
    if first.last().exists() {
        // Re-emit the epochs the checkpoint already holds (the kill may have
        // come between the checkpoint and the journal); rebuild deduplicates.
        for r in crate::metric::read_history(&first) {
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
    // A seed repeat confirms a finished ranking: it always runs to its end.
    let repeat = journal
        .trials()?
        .iter()
        .any(|t| t.number == n && t.repeat_of.is_some());
    let control: Option<&mut dyn Control> = if repeat { None } else { Some(&mut pruner) };
    let result = if cv {
        train_folds(exp, n, &cfg, &rd, resume, &mut track, &mut writer, control)
    } else {
        train_once(
            exp,
            n,
            &cfg,
            &rd,
            resume,
            &mut [&mut track, &mut writer],
            control,
        )
    };
    match result {
        // Without its journal the sweep cannot go on: the error is the sweep's.
        Err(e) if writer.failed => Err(e),
        Ok(t) => finish(t.state, t.value, None, Some(t.params), t.values),
        Err(e) => {
            eprintln!("sweep: trial {n} failed: {e:#}");
            finish(TrialState::Failed, None, Some(format!("{e:#}")), None, None)
        }
    }
}

/// What a trained trial tells the journal.
struct Trained {
    state: TrialState,
    value: Option<f64>,
    params: u64,
    /// Every objective's value, with several objectives.
    values: Option<Vec<f64>>,
}

/// Trains trial `n` once in `rd`.
fn train_once(
    exp: &Experiment,
    n: usize,
    cfg: &crate::config::RunConfig,
    rd: &crate::layout::RunDir,
    resume: bool,
    listeners: &mut [&mut dyn Listener],
    control: Option<&mut dyn Control>,
) -> Result<Trained> {
    let out = crate::train::run_with(cfg, rd.path(), resume, listeners, control)?;
    let (state, value) = settle(exp, &out);
    let what = if out.pruned { "pruned" } else { "complete" };
    say_value(
        n,
        &format!("{what} with {}", exp.search.objective.metric.name()),
        value,
    );
    let values = if exp.search.is_multi() && state == TrialState::Complete {
        let v = measure_objectives(exp, &out, rd)?;
        eprintln!("sweep: trial {n} objectives {v:?}");
        Some(v)
    } else {
        None
    };
    Ok(Trained {
        state,
        value,
        params: out.params,
        values,
    })
}

/// Trains cross-validated trial `n` once per fold in `rd`: the journal
/// hears the first fold's epochs and the pruner judges them; the value is
/// the mean over the folds of the objective on each held-out fold.
#[allow(clippy::too_many_arguments)]
fn train_folds(
    exp: &Experiment,
    n: usize,
    cfg: &crate::config::RunConfig,
    rd: &crate::layout::RunDir,
    resume: bool,
    track: &mut dyn Listener,
    writer: &mut dyn Listener,
    control: Option<&mut dyn Control>,
) -> Result<Trained> {
    let (file, pruned) = crate::train::repeat::run_first(
        cfg,
        rd.path(),
        resume,
        &mut [track],
        &mut [writer],
        control,
    )?;
    let first =
        crate::train::Outcome::read(&rd.path().join(crate::config::Unit::Fold.dir_name(1)))?;
    let (state, value) = if pruned {
        settle(exp, &first)
    } else {
        let key = exp
            .held_out_key()
            .context("validated: cv has a held-out key")?;
        (TrialState::Complete, file.spread.get(key).map(|s| s.mean))
    };
    let what = if pruned {
        format!(
            "pruned on its first fold with {}",
            exp.search.objective.metric.name()
        )
    } else {
        format!(
            "complete with {} (mean of {} folds)",
            exp.value_name(),
            file.runs.len()
        )
    };
    say_value(n, &what, value);
    Ok(Trained {
        state,
        value,
        params: first.params,
        values: None,
    })
}

/// The line a trained trial ends with: how it ended, and its value.
fn say_value(n: usize, what: &str, value: Option<f64>) {
    eprintln!(
        "sweep: trial {n} {what} = {}",
        value.map_or("-".into(), |v| format!("{v:.4}"))
    );
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

/// Every objective of a complete trial: validation metrics at the epoch the
/// first objective picks, then what the trained model costs.
fn measure_objectives(
    exp: &Experiment,
    out: &crate::train::Outcome,
    rd: &crate::layout::RunDir,
) -> Result<Vec<f64>> {
    use config::TrialMetric;
    let dirn = exp.search.objective.direction;
    let best = out
        .history
        .iter()
        .reduce(|a, b| {
            if dirn.better(objective_of(exp, b), objective_of(exp, a)) {
                b
            } else {
                a
            }
        })
        .context("a complete trial without epochs")?;
    let mut latency = None;
    exp.search
        .all_objectives()
        .iter()
        .map(|o| {
            Ok(match o.metric {
                TrialMetric::Epoch(k) => k.of(best),
                TrialMetric::Params => out.params as f64,
                TrialMetric::Macs => out.macs as f64,
                TrialMetric::LatencyMs => match latency {
                    Some(l) => l,
                    None => {
                        let l = batch1_latency_ms(&rd.model())?;
                        latency = Some(l);
                        l
                    }
                },
            })
        })
        .collect()
}

/// Median batch-1 forward pass of a model file on the CPU, as `fer bench
/// infer` measures it (one second of passes).
fn batch1_latency_ms(model: &Path) -> Result<f64> {
    let clf = crate::artifact::Classifier::load(model, tch::Device::Cpu)?;
    let net = clf
        .net
        .as_ref()
        .context("latency_ms needs a network model")?;
    let side = clf.meta.preprocess.size as i64;
    Ok(crate::eval::latency::forward_seconds(net.module.as_ref(), 1, side, 1.0) * 1e3)
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

/// The `top` best complete trials of the search (seed repeats left out),
/// best first; ties go to the earlier trial.
pub fn top_trials(top: usize, trials: &[TrialRecord], dir: Direction) -> Vec<usize> {
    let mut done: Vec<(&TrialRecord, f64)> = trials
        .iter()
        .filter(|t| t.repeat_of.is_none() && t.state == TrialState::Complete)
        .filter_map(|t| t.value.filter(|v| v.is_finite()).map(|v| (t, v)))
        .collect();
    done.sort_by(|a, b| {
        dir.loss(a.1)
            .total_cmp(&dir.loss(b.1))
            .then(a.0.number.cmp(&b.0.number))
    });
    done.into_iter().take(top).map(|(t, _)| t.number).collect()
}

/// The sampler's parameters for new trial `n`. Running trials count as bad
/// (a constant liar): parallel workers are steered away from points
/// already being tried.
fn ask(exp: &Experiment, space: &space::Space, trials: &[TrialRecord], n: usize) -> Params {
    let search = &exp.search;
    let obs = if search.is_multi() {
        let dirs: Vec<_> = search.objectives.iter().map(|o| o.direction).collect();
        sampler::observations_multi(trials, &dirs)
    } else {
        observations(trials, |v| search.objective.direction.loss(v))
    };
    search.sampler.ask(space, &obs, exp.seed, n)
}

fn is_active(t: &TrialRecord) -> bool {
    matches!(t.state, TrialState::Running | TrialState::Stale)
}

/// The trial to repeat under a new seed now (`search.reseed`): only once
/// the search is over and every searched trial has ended, so that the
/// ranking the repeats follow is final.
fn repeat_due(
    search: &config::SearchConfig,
    trials: &[TrialRecord],
    search_over: bool,
) -> Option<usize> {
    let r = search.reseed.as_ref()?;
    let searching = trials.iter().any(|t| t.repeat_of.is_none() && is_active(t));
    if !search_over || searching {
        return None;
    }
    next_repeat(r, trials, search.objective.direction)
}

/// The trial whose next seed repeat is due, best first; None once every
/// one of the top trials has its seeds started.
pub fn next_repeat(r: &config::Reseed, trials: &[TrialRecord], dir: Direction) -> Option<usize> {
    top_trials(r.top, trials, dir).into_iter().find(|&src| {
        let started = trials.iter().filter(|t| t.repeat_of == Some(src)).count();
        started + 1 < r.seeds
    })
}

/// A configuration trained under several seeds: the searched trial and its
/// repeats, with the objective's spread across those that completed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedGroup {
    /// The searched trial.
    pub trial: usize,
    /// Its trials in all (itself first, then its repeats).
    pub members: Vec<usize>,
    /// The objective of each complete member, in `members` order.
    pub values: Vec<(usize, f64)>,
    /// Across the complete members (from two on).
    pub spread: Option<crate::eval::stats::Spread>,
}

/// The seed groups of the trials: one per searched trial that has repeats.
pub fn seed_groups(trials: &[TrialRecord]) -> Vec<SeedGroup> {
    let mut sources: Vec<usize> = trials.iter().filter_map(|t| t.repeat_of).collect();
    sources.sort_unstable();
    sources.dedup();
    sources
        .into_iter()
        .map(|src| {
            let members: Vec<usize> = std::iter::once(src)
                .chain(
                    trials
                        .iter()
                        .filter(|t| t.repeat_of == Some(src))
                        .map(|t| t.number),
                )
                .collect();
            let values: Vec<(usize, f64)> = members
                .iter()
                .filter_map(|&m| trials.iter().find(|t| t.number == m))
                .filter(|t| t.state == TrialState::Complete)
                .filter_map(|t| t.value.map(|v| (t.number, v)))
                .collect();
            let v: Vec<f64> = values.iter().map(|x| x.1).collect();
            SeedGroup {
                trial: src,
                members,
                values,
                spread: crate::eval::stats::spread(&v),
            }
        })
        .collect()
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
    let mut best = complete
        .iter()
        .copied()
        .reduce(|a, b| if better(b, a) { b } else { a })
        .map(|t| t.number);
    let (mut pareto, mut best_rule) = (Vec::new(), None);
    if exp.search.is_multi() {
        let (front, chosen, rule) = pareto_best(&exp.search.objectives, &trials);
        export_front(sd, &front)?;
        let chart = sd.path().join("pareto.png");
        if let Err(e) = front_chart(&chart, &exp.search.objectives, &trials) {
            eprintln!("sweep: the Pareto chart was not drawn: {e:#}");
        }
        pareto = front;
        best = chosen;
        best_rule = Some(rule);
    }
    let groups = seed_groups(&trials);
    if exp.search.reseed.is_some() {
        // The configuration with the best mean over its seeds; its model is
        // the seed that did best on the objective (validation, never test).
        let winner = groups
            .iter()
            .filter_map(|g| g.spread.map(|s| (g, s)))
            .reduce(|a, b| if dir.better(b.1.mean, a.1.mean) { b } else { a });
        if let Some((g, sp)) = winner {
            let (pick, _) = g
                .values
                .iter()
                .copied()
                .reduce(|a, b| if dir.better(b.1, a.1) { b } else { a })
                .expect("a spread has values");
            let name = exp.value_name();
            best = Some(pick);
            best_rule = Some(format!(
                "the configuration with the best mean {name} over its seeds: trial {} and its repeats ({} seeds, {name} {:.4} ± {:.4}); its model is its best seed's, trial {pick}",
                g.trial, sp.n, sp.mean, sp.std
            ));
        }
    }
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
    let (best_model, best_config) = match best {
        Some(n) if exp.cv.is_some() => (None, Some(refit_config(exp, sd, n)?)),
        Some(n) => {
            let src = sd.trial(n).model();
            let bytes =
                std::fs::read(&src).with_context(|| format!("exporting {}", src.display()))?;
            crate::layout::write_atomic(&sd.best_model(), &bytes)?;
            (Some(sd.best_model()), None)
        }
        None => (None, None),
    };
    if let (Some(cv), None) = (&exp.cv, &best_rule) {
        best_rule = Some(format!(
            "each trial's {} is the mean over its {} folds of {} on the images each fold held out",
            exp.value_name(),
            cv.folds,
            exp.search.objective.metric.name()
        ));
    }
    let s = Summary {
        name: exp.name.clone(),
        objective: exp.value_name(),
        direction: dir,
        trials,
        best_per_family,
        best,
        best_model,
        objectives: if exp.search.is_multi() {
            exp.search.objectives.clone()
        } else {
            Vec::new()
        },
        pareto,
        best_rule,
        seed_groups: groups,
        best_config,
    };
    crate::layout::write_atomic(&sd.summary_json(), &serde_json::to_vec_pretty(&s)?)?;
    crate::layout::write_atomic(&sd.summary_md(), s.render().as_bytes())?;
    Ok(s)
}

/// Writes trial `n`'s configuration without its folds to the sweep's
/// `best-config.yaml`: the recipe the cross-validation chose, to train on
/// all the training data (scikit-learn's `refit`).
fn refit_config(exp: &Experiment, sd: &SweepDir, n: usize) -> Result<PathBuf> {
    let mut cfg: crate::config::RunConfig = crate::config::load_yaml(&sd.trial(n).config())?;
    cfg.cv = None;
    cfg.name = format!("{}-best", exp.name);
    let path = sd.best_config();
    crate::layout::write_atomic(&path, cfg.to_yaml()?.as_bytes())?;
    Ok(path)
}

/// The Pareto-optimal complete trials, the one best by the stated rule, and
/// the rule as a sentence.
pub fn pareto_best(
    objectives: &[config::ObjectiveSpec],
    trials: &[TrialRecord],
) -> (Vec<usize>, Option<usize>, String) {
    let scored: Vec<(&TrialRecord, &Vec<f64>)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| {
            t.values
                .as_ref()
                .filter(|v| v.len() == objectives.len())
                .map(|v| (t, v))
        })
        .collect();
    let losses: Vec<Vec<f64>> = scored
        .iter()
        .map(|(_, v)| {
            v.iter()
                .zip(objectives)
                .map(|(x, o)| o.direction.loss(*x))
                .collect()
        })
        .collect();
    let front: Vec<usize> = pareto::front(&losses);
    let first = &objectives[0];
    let pick = |idx: &mut dyn Iterator<Item = usize>| {
        idx.reduce(|a, b| {
            if first.direction.better(scored[b].1[0], scored[a].1[0]) {
                b
            } else {
                a
            }
        })
    };
    let limits: Vec<String> = objectives
        .iter()
        .filter_map(|o| {
            o.limit.map(|l| {
                let op = if o.direction == Direction::Minimize {
                    "<="
                } else {
                    ">="
                };
                format!("{} {op} {l}", o.metric.name())
            })
        })
        .collect();
    let within = pick(&mut front.iter().copied().filter(|&i| {
        objectives
            .iter()
            .zip(scored[i].1)
            .all(|(o, v)| o.within(*v))
    }));
    let (chosen, rule) = match (within, limits.is_empty()) {
        (Some(i), true) => (
            Some(i),
            format!(
                "the Pareto-optimal trial with the best {}",
                first.metric.name()
            ),
        ),
        (Some(i), false) => (
            Some(i),
            format!(
                "the Pareto-optimal trial with the best {} among those with {}",
                first.metric.name(),
                limits.join(" and ")
            ),
        ),
        (None, _) => (
            pick(&mut front.iter().copied()),
            format!(
                "no Pareto-optimal trial has {}: the one with the best {} instead",
                limits.join(" and "),
                first.metric.name()
            ),
        ),
    };
    let numbers = front.iter().map(|&i| scored[i].0.number).collect();
    (numbers, chosen.map(|i| scored[i].0.number), rule)
}

/// Copies every Pareto-optimal trial's model to `pareto/trial-NNN.safetensors`
/// (files of trials no longer on the front are removed).
fn export_front(sd: &SweepDir, front: &[usize]) -> Result<()> {
    let dir = sd.path().join("pareto");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = |n: usize| format!("trial-{n:03}.safetensors");
    for e in std::fs::read_dir(&dir)?.flatten() {
        let keep = front
            .iter()
            .any(|&n| e.file_name().to_string_lossy() == name(n));
        if !keep && e.file_name().to_string_lossy().ends_with(".safetensors") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    for &n in front {
        let src = sd.trial(n).model();
        let bytes = std::fs::read(&src).with_context(|| format!("exporting {}", src.display()))?;
        crate::layout::write_atomic(&dir.join(name(n)), &bytes)?;
    }
    Ok(())
}

/// A chart of every complete trial on the first two objectives, the Pareto
/// front joined by a line (the sweep's `pareto.png`, the report's chart).
pub fn front_chart(
    path: &Path,
    objectives: &[config::ObjectiveSpec],
    trials: &[TrialRecord],
) -> Result<()> {
    let (front, _, _) = pareto_best(objectives, trials);
    let point = |t: &TrialRecord| t.values.as_ref().map(|v| (v[1], v[0]));
    let all: Vec<(f64, f64)> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(point)
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let mut on: Vec<(f64, f64)> = trials
        .iter()
        .filter(|t| front.contains(&t.number))
        .filter_map(point)
        .collect();
    on.sort_by(|a, b| a.0.total_cmp(&b.0));
    crate::plot::pareto(
        path,
        "Pareto front",
        objectives[1].metric.name(),
        objectives[0].metric.name(),
        &all,
        &on,
    )
}

/// The Markdown table of the front's trials and their objective values
/// (the sweep summary's and the report's).
pub fn front_table(
    objectives: &[config::ObjectiveSpec],
    trials: &[TrialRecord],
    front: &[usize],
) -> String {
    let names: Vec<&str> = objectives.iter().map(|o| o.metric.name()).collect();
    let mut s = format!(
        "| trial | {} |\n|---:|{}\n",
        names.join(" | "),
        "---:|".repeat(names.len())
    );
    for n in front {
        if let Some(t) = trials.iter().find(|t| t.number == *n) {
            let v: Vec<String> = t
                .values
                .iter()
                .flatten()
                .map(|x| format!("{x:.4}"))
                .collect();
            let _ = writeln!(s, "| {n} | {} |", v.join(" | "));
        }
    }
    s
}

/// The Markdown table of the seed groups (the sweep summary's and the
/// report's): one row per configuration, best mean first.
pub fn seed_table(groups: &[SeedGroup]) -> String {
    let mut s = String::from(
        "| trial | seeds (trials) | mean ± sd [95% interval] | each |\n|---:|---|---|---|\n",
    );
    for g in groups {
        let each: Vec<String> = g.values.iter().map(|(_, v)| format!("{v:.4}")).collect();
        let members: Vec<String> = g.members.iter().map(|m| m.to_string()).collect();
        let _ = writeln!(
            s,
            "| {} | {} ({}) | {} | {} |",
            g.trial,
            g.values.len(),
            members.join(", "),
            g.spread.map_or("-".into(), |sp| sp.plain()),
            each.join(", ")
        );
    }
    s
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
        if !self.objectives.is_empty() {
            let _ = write!(
                s,
                "\nPareto front ({}), exported to `pareto/`:\n\n{}",
                self.objectives
                    .iter()
                    .map(|o| format!("{} {:?}", o.metric.name(), o.direction).to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", "),
                front_table(&self.objectives, &self.trials, &self.pareto)
            );
            if let Some(r) = &self.best_rule {
                let _ = writeln!(s, "\nBest: {r}.");
            }
        }
        if !self.seed_groups.is_empty() {
            let _ = write!(
                s,
                "\nAcross seeds ({} mean ± standard deviation [95% t interval of the mean]):\n\n{}",
                self.objective,
                seed_table(&self.seed_groups)
            );
            if let (Some(r), true) = (&self.best_rule, self.objectives.is_empty()) {
                let _ = writeln!(s, "\nBest: {r}.");
            }
        }
        s += "\nBest per family:\n\n";
        for (f, n, v) in &self.best_per_family {
            let _ = writeln!(s, "- {f}: trial {n}, {} = {v:.4}", self.objective);
        }
        match self.best {
            Some(n) if self.best_config.is_some() => {
                if let Some(r) = &self.best_rule {
                    let _ = writeln!(s, "\nCross-validated: {r}.");
                }
                let path = self.best_config.as_ref().expect("checked").display();
                let _ = writeln!(
                    s,
                    "\nBest overall: trial {n}; its recipe without folds is in `{path}`: `fer train {path}` trains it on all the training data."
                );
            }
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
