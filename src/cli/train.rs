//! `fer train`: a run config (or a run folder to resume) to a trained run folder.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Run config YAML (e.g. configs/cnn.yaml). Not needed with --resume.
    #[arg(required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Override any key: `--set train.epochs=2 --set model.dropout=0.3`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Resume the run in this folder from its last checkpoint.
    #[arg(long, value_name = "RUN")]
    pub resume: Option<PathBuf>,
    /// Run folder (default: runs/<name>/<timestamp>).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// MLflow server to log to (default: $MLFLOW_TRACKING_URI; none: local only).
    #[arg(long)]
    pub tracking_uri: Option<String>,
    /// Data set folder, overriding `data.dir` (default: $FER2013_DIR where
    /// the config leaves `data.dir` at its default; on --resume, always).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let (cfg, dir, resume, _lock) = match &args.resume {
        Some(run) => {
            let (cfg, lock) =
                crate::train::resume::prepare(run, &args.overrides, resume_data(&args).as_ref())?;
            (cfg, run.clone(), true, Some(lock))
        }
        None => {
            let (cfg, dir) = new_run(&args)?;
            (cfg, dir, false, None)
        }
    };
    eprintln!("run folder: {}", dir.display());
    let uri = args
        .tracking_uri
        .as_deref()
        .or(cfg.tracking.as_ref().and_then(|t| t.uri.as_deref()));
    let tracker = crate::mlflow::tracker(crate::mlflow::tracking_uri(uri));
    let mut track = crate::train::Track {
        tracker: &*tracker,
        dir: &dir,
    };
    let result = if cfg.is_repeated() {
        crate::train::repeat::run(&cfg, &dir, resume, &mut [&mut track]).map(Trained::Seeds)
    } else {
        crate::train::run_with(&cfg, &dir, resume, &mut [&mut track], None)
            .map(|o| Trained::One(Box::new(o)))
    };
    tracker.changed(&dir);
    let report = tracker.finish();
    if let Some(m) = &report.message {
        eprintln!("{m}");
    }
    match result? {
        Trained::Seeds(file) if args.json => {
            println!("{}", serde_json::to_string_pretty(&file)?)
        }
        Trained::Seeds(file) => print_seeds(&file, &dir),
        Trained::One(out) if args.json => println!("{}", serde_json::to_string_pretty(&out)?),
        Trained::One(out) => print_outcome(&out, &dir),
    }
    Ok(ExitCode::SUCCESS)
}

/// What `fer train` made: one model, or one per seed.
enum Trained {
    One(Box<crate::train::Outcome>),
    Seeds(crate::train::repeat::SeedsFile),
}

/// The config of a new run (with `--set` and `--data`) and its folder,
/// checked to be new. An ensemble's or a repeated run's folder may be
/// trained again: finished members or seeds with the same recipe are
/// reused and others refused (train::ensemble, train::repeat). Any other
/// existing run is left alone.
/// Where a resumed run's data now is: `--data`, else `$FER2013_DIR` (the
/// folder was resolved when the run began; this moves it).
fn resume_data(args: &TrainArgs) -> Option<PathBuf> {
    args.data
        .clone()
        .or_else(|| std::env::var_os("FER2013_DIR").map(PathBuf::from))
}

fn new_run(args: &TrainArgs) -> Result<(crate::config::RunConfig, PathBuf)> {
    let path = args.config.as_ref().expect("clap requires a config");
    let mut cfg = crate::config::RunConfig::load(path, &args.overrides)?;
    if let Some(d) = args.data.clone().or_else(|| cfg.data.fer2013_env()) {
        cfg.data.dir = d;
    }
    let dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| crate::layout::new_run_dir(&cfg.name));
    let saved = crate::layout::RunDir(dir.clone()).config();
    let same_kind = (cfg.ensemble.is_some() || cfg.is_repeated())
        && crate::config::RunConfig::load(&saved, &[]).is_ok_and(|c| {
            c.ensemble.is_some() == cfg.ensemble.is_some() && c.is_repeated() == cfg.is_repeated()
        });
    if !same_kind {
        crate::layout::check_new(&dir, crate::layout::Kind::Run, "--run-dir")?;
    }
    Ok((cfg, dir))
}

/// The figures across seeds: mean ± sd [interval], then each seed's.
fn print_seeds(file: &crate::train::repeat::SeedsFile, dir: &std::path::Path) {
    let seeds: Vec<String> = file.runs.iter().map(|r| r.seed.to_string()).collect();
    let unit = file.unit.name();
    println!(
        "{} over {} {unit}s ({}): mean ± standard deviation [95% t interval of the mean]\n",
        file.name,
        file.runs.len(),
        seeds.join(", ")
    );
    print!("{}", file.table());
    println!(
        "run folder: {} (one folder per {unit}; seeds.json)",
        dir.display()
    );
}

/// One run's sizes, speed, and validation and test figures.
fn print_outcome(out: &crate::train::Outcome, dir: &std::path::Path) {
    let classes = &out.test.classes;
    println!(
        "{} ({}): {} params, {} MACs, {:.0} s training at {:.0} img/s{}",
        out.name,
        out.family,
        out.params,
        crate::models::human(out.macs),
        out.train_seconds,
        out.train_img_per_s,
        out.weights_clause()
    );
    if out.val.overall.n > 0 {
        print!("{}", out.val.render(classes));
    }
    print!("{}", out.test.render(classes));
    println!("run folder: {}", dir.display());
}
