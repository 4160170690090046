//! `fer sweep`: an experiment YAML to a sweep folder of trials, run by one
//! worker, by several local worker processes (`--workers`), or joined by
//! more from anywhere that shares the folder (`--join`); `--status` shows
//! where it stands.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Experiment YAML (e.g. experiments/quick.yaml); not with --join or --status.
    #[arg(required_unless_present_any = ["join", "status", "importance"])]
    pub experiment: Option<PathBuf>,
    /// Override any key of the composed experiment.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue a sweep after a crash: `--sweep-dir`, else the experiment's latest sweep.
    #[arg(long)]
    pub resume: bool,
    /// Sweep folder (default: runs/<experiment>/<timestamp>).
    #[arg(long)]
    pub sweep_dir: Option<PathBuf>,
    /// Worker processes on this machine; the threads (--threads, else all
    /// cores) are split between them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Add one worker to the running or interrupted sweep in this folder
    /// (from another shell, or another machine sharing the folder).
    #[arg(long, value_name = "SWEEP_DIR", conflicts_with_all = ["experiment", "status", "resume", "sweep_dir", "overrides"])]
    pub join: Option<PathBuf>,
    /// Print the sweep's trials by state and by worker, and what runs now.
    #[arg(long, value_name = "SWEEP_DIR", conflicts_with_all = ["experiment", "join", "resume", "sweep_dir", "overrides"])]
    pub status: Option<PathBuf>,
    /// Rank the sweep's parameters by importance for the objective (a random
    /// forest's permutation importance), per family when it has several.
    #[arg(long, value_name = "SWEEP_DIR", conflicts_with_all = ["experiment", "join", "status", "resume", "sweep_dir", "overrides"])]
    pub importance: Option<PathBuf>,
    /// With --importance: explain the objective at this epoch (default: the
    /// pruner's first rung, which every trial reached; without a pruner the
    /// final values of complete trials).
    #[arg(long, requires = "importance")]
    pub at_epoch: Option<usize>,
    /// Where the workers run: processes on this machine, or a Slurm job array.
    #[arg(long, value_enum, default_value_t = Launcher::Local)]
    pub launcher: Launcher,
    /// Slurm: array tasks, one worker each.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub array: u32,
    /// Slurm: partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm: time limit per task (e.g. 4:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Slurm: CPUs per task (its worker's threads).
    #[arg(long, default_value_t = 1)]
    pub cpus_per_task: u32,
    /// Slurm: GPUs per task (libtorch uses CUDA when it sees a GPU).
    #[arg(long)]
    pub gpus_per_task: Option<u32>,
    /// Slurm: another `#SBATCH` option, verbatim (e.g. --sbatch-arg=--mem=8G).
    #[arg(long = "sbatch-arg", value_name = "OPTION")]
    pub sbatch_args: Vec<String>,
    /// Slurm: wait until every array task has ended, then print the summary.
    #[arg(long)]
    pub wait: bool,
    /// This worker's name in the journal (default: host:pid).
    #[arg(long)]
    pub worker_name: Option<String>,
    /// MLflow server (default: the experiment's tracking.uri, else $MLFLOW_TRACKING_URI).
    #[arg(long)]
    pub tracking_uri: Option<String>,
    /// Data set folder, overriding `data.dir` (default: $FER2013_DIR where
    /// the experiment leaves `data.dir` at its default; with --join, always).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Launcher {
    Local,
    Slurm,
}

pub fn run(args: SweepArgs, threads: Option<usize>) -> Result<ExitCode> {
    if let Some(dir) = &args.status {
        let exp = crate::sweep::config::Experiment::saved(dir)?;
        let status = crate::sweep::worker::status(
            dir,
            exp.search.n_trials,
            crate::sweep::launch::jobs(dir),
        )?;
        super::print_json_or(args.json, &status, crate::sweep::worker::Status::render)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = &args.importance {
        return importance(dir, args.at_epoch, args.json);
    }
    if let Some(dir) = &args.join {
        crate::sweep::resume::check_recorded(dir, &format!("joining {}", dir.display()))?;
        let mut exp = crate::sweep::config::Experiment::saved(dir)?;
        let env = || std::env::var_os("FER2013_DIR").map(PathBuf::from);
        if let Some(d) = args.data.clone().or_else(env) {
            exp.data.dir = d;
        }
        crate::sweep::resume::check_data(dir, &exp)?;
        let me = crate::sweep::journal::Worker::here(args.worker_name.clone());
        eprintln!("sweep folder: {} (joined as {me})", dir.display());
        return finish(&args, &exp, dir, |exp, dir, tracker| {
            crate::sweep::work(exp, dir, &me, tracker)
        });
    }
    let path = args.experiment.as_ref().expect("clap requires it");
    let mut exp = crate::sweep::config::Experiment::load(path, &args.overrides)?;
    if let Some(d) = args.data.clone().or_else(|| exp.data.fer2013_env()) {
        exp.data.dir = d;
    }
    let dir = match (&args.sweep_dir, args.resume) {
        (Some(d), _) => d.clone(),
        (None, false) => crate::layout::new_run_dir(&exp.name),
        (None, true) => {
            let (dir, why) = crate::layout::latest_sweep(&exp.name)?;
            eprintln!(
                "sweep: resuming {} ({why}; --sweep-dir picks another)",
                dir.display()
            );
            dir
        }
    };
    if args.resume {
        exp = crate::sweep::resume::prepare(&dir, exp, &args.overrides)?;
    }
    // A Slurm launch's options are checked before the folder exists, so a
    // refused one writes nothing.
    let slurm_script = match args.launcher {
        Launcher::Slurm => Some(slurm_script(&args, &exp, &dir)?),
        _ => None,
    };
    if !args.resume {
        crate::sweep::create(&exp, &dir)?;
    }
    eprintln!("sweep folder: {}", dir.display());
    if let Some(script) = slurm_script {
        return slurm(&args, &exp, &dir, &script);
    }
    if args.workers > 1 {
        return local_workers(&args, &exp, &dir, threads);
    }
    let me = crate::sweep::journal::Worker::here(args.worker_name.clone());
    finish(&args, &exp, &dir, |exp, dir, tracker| {
        crate::sweep::work(exp, dir, &me, tracker)
    })
}

/// `--importance`: each parameter's share, overall and per family.
fn importance(dir: &Path, at_epoch: Option<usize>, json: bool) -> Result<ExitCode> {
    use crate::sweep::importance::{of_sweep, Ranking};
    let r = of_sweep(dir, at_epoch)?;
    for e in &r.errors {
        eprintln!("{e}");
    }
    super::print_json_or(json, &r.rankings, |r| {
        r.iter().map(Ranking::render).collect()
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `body` with the MLflow tracker, prints the summary, and says
/// whether any trial succeeded.
fn finish(
    args: &SweepArgs,
    exp: &crate::sweep::config::Experiment,
    dir: &Path,
    body: impl FnOnce(
        &crate::sweep::config::Experiment,
        &Path,
        &dyn crate::track::Tracker,
    ) -> Result<crate::sweep::Summary>,
) -> Result<ExitCode> {
    let uri =
        crate::mlflow::tracking_uri(args.tracking_uri.as_deref().or(exp.tracking.uri.as_deref()));
    let tracker = crate::mlflow::tracker(uri);
    let result = body(exp, dir, tracker.as_ref());
    tracker.changed(dir);
    let report = tracker.finish();
    if let Some(m) = &report.message {
        eprintln!("{m}");
    }
    let summary = result?;
    super::print_json_or(args.json, &summary, crate::sweep::Summary::render)?;
    Ok(if summary.all_failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--workers N`: N `fer sweep --join` processes on this machine, each with
/// its share of the threads; this process waits for them, then summarises.
fn local_workers(
    args: &SweepArgs,
    exp: &crate::sweep::config::Experiment,
    dir: &Path,
    threads: Option<usize>,
) -> Result<ExitCode> {
    let n = args.workers as usize;
    let total = threads
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |c| c.get()));
    let each = (total / n).max(1);
    eprintln!("sweep: {n} workers with {each} threads each");
    let exe = std::env::current_exe().context("finding this program to start workers")?;
    let mut children = Vec::new();
    for i in 1..=n {
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("--threads")
            .arg(each.to_string())
            .arg("sweep")
            .arg("--join")
            .arg(dir)
            .arg("--worker-name")
            .arg(format!("w{i}"))
            .arg("--data")
            .arg(&exp.data.dir)
            .stdin(std::process::Stdio::null())
            // Each worker prints its own summary; this process prints one.
            .stdout(std::process::Stdio::null());
        if let Some(u) = &args.tracking_uri {
            cmd.arg("--tracking-uri").arg(u);
        }
        // A worker ends with this process, however it ends (TERM, INT,
        // KILL): its trial's lock is released and a resume takes it over.
        crate::runtime::die_with_parent(&mut cmd, libc::SIGTERM);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting worker w{i} ({})", exe.display()))?;
        children.push((i, child));
    }
    let mut failed = Vec::new();
    for (i, mut c) in children {
        let status = c
            .wait()
            .with_context(|| format!("waiting for worker w{i}"))?;
        if !status.success() {
            failed.push(format!("w{i} ended with {status}"));
        }
    }
    // A worker that died mid-sweep is fine if the others finished its
    // trials (they take over what it ran); otherwise the sweep is unfinished.
    let trials = crate::sweep::journal::Journal::open(dir)?.trials()?;
    let ended = !trials.iter().any(|t| {
        matches!(
            t.state,
            crate::sweep::journal::TrialState::Running | crate::sweep::journal::TrialState::Stale
        )
    });
    let spent: f64 = trials.iter().map(|t| t.seconds).sum();
    let complete = ended
        && (trials.len() >= exp.search.n_trials
            || exp.search.max_minutes.is_some_and(|m| spent >= m * 60.0));
    if !failed.is_empty() {
        eprintln!(
            "sweep: worker {}{}",
            failed.join(", worker "),
            if complete {
                "; the other workers finished its trials"
            } else {
                ""
            }
        );
    }
    if !complete {
        bail!(
            "the sweep in {} is unfinished ({} of {} trials, some not ended); `fer sweep --join {}` continues it",
            dir.display(),
            trials.len(),
            exp.search.n_trials,
            dir.display()
        );
    }
    // The workers synced MLflow as they went; this is the last word.
    finish(args, exp, dir, |exp, dir, _| {
        crate::sweep::summary(exp, dir)
    })
}

/// `--launcher slurm`: the sbatch script, submitted; with `--wait` the
/// summary once the array has ended.
/// The sbatch script of a Slurm launch, its options checked.
fn slurm_script(
    args: &SweepArgs,
    exp: &crate::sweep::config::Experiment,
    dir: &Path,
) -> Result<String> {
    use crate::sweep::launch;
    let uri = args
        .tracking_uri
        .clone()
        .or_else(|| exp.tracking.uri.clone())
        .or_else(|| std::env::var("MLFLOW_TRACKING_URI").ok());
    let o = launch::SlurmOptions {
        array: args.array,
        partition: args.partition.clone(),
        time: args.time.clone(),
        cpus_per_task: args.cpus_per_task,
        gpus_per_task: args.gpus_per_task,
        extra: args.sbatch_args.clone(),
        tracking_uri: uri,
    };
    let exe = std::env::current_exe().context("finding this program for the sbatch script")?;
    launch::script(&exp.name, dir, &exe, &exp.data.dir, &o)
}

fn slurm(
    args: &SweepArgs,
    exp: &crate::sweep::config::Experiment,
    dir: &Path,
    script: &str,
) -> Result<ExitCode> {
    use crate::sweep::launch;
    let id = match launch::submit(dir, script, args.wait) {
        Ok(id) => id,
        Err(e) => {
            // Refused by sbatch: a folder this command made, with no trial
            // in it, goes again, so that no empty sweep is left to resume.
            let empty = crate::sweep::journal::Journal::open(dir)
                .and_then(|j| j.trials())
                .is_ok_and(|t| t.is_empty());
            if !args.resume && empty && std::fs::remove_dir_all(dir).is_ok() {
                eprintln!("sweep: removed {} (nothing was launched)", dir.display());
            }
            return Err(e);
        }
    };
    eprintln!(
        "sweep: Slurm job {id} ({} array tasks); script {}; follow with `fer sweep --status {}`",
        args.array,
        launch::slurm_dir(dir).join("sweep.sbatch").display(),
        dir.display()
    );
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    finish(args, exp, dir, |exp, dir, _| {
        crate::sweep::summary(exp, dir)
    })
}
