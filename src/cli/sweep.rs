//! `fer sweep`: an experiment YAML to a sweep folder of trials.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Experiment YAML (e.g. experiments/quick.yaml).
    pub experiment: PathBuf,
    /// Override any key of the composed experiment.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Continue a sweep after a crash: `--sweep-dir`, else the experiment's latest sweep.
    #[arg(long)]
    pub resume: bool,
    /// Sweep folder (default: runs/<experiment>/<timestamp>).
    #[arg(long)]
    pub sweep_dir: Option<PathBuf>,
    /// MLflow server (default: the experiment's tracking.uri, else $MLFLOW_TRACKING_URI).
    #[arg(long)]
    pub tracking_uri: Option<String>,
    /// Data set folder, overriding `data.dir`.
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: SweepArgs) -> Result<ExitCode> {
    let mut exp = crate::sweep::config::Experiment::load(&args.experiment, &args.overrides)?;
    if let Some(d) = &args.data {
        exp.data.dir = d.clone();
    }
    let dir = match (&args.sweep_dir, args.resume) {
        (Some(d), _) => d.clone(),
        (None, false) => crate::layout::new_run_dir(&exp.name),
        (None, true) => crate::layout::latest_sweep(&exp.name)?,
    };
    if args.resume {
        exp = crate::sweep::resume::prepare(&dir, exp, &args.overrides)?;
    }
    eprintln!("sweep folder: {}", dir.display());
    let uri =
        crate::mlflow::tracking_uri(args.tracking_uri.as_deref().or(exp.tracking.uri.as_deref()));
    let tracker = crate::mlflow::tracker(uri);
    let result = crate::sweep::run(&exp, &dir, args.resume, tracker.as_ref());
    tracker.changed(&dir);
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
