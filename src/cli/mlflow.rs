//! `fer mlflow up|down|sync`: the local server and uploads of run folders.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum MlflowCommand {
    /// Start a local MLflow server from .venv (sqlite + artifact proxy under
    /// runs/mlflow) and wait until it answers /health.
    Up(MlflowUpArgs),
    /// Stop the server started by `fer mlflow up`.
    Down(MlflowDirArgs),
    /// Upload what a server lacks of run or sweep folders (all under RUNS_DIR).
    Sync(MlflowSyncArgs),
}

#[derive(Args, Debug)]
pub struct MlflowDirArgs {
    /// Server folder (default: runs/mlflow).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MlflowUpArgs {
    #[command(flatten)]
    pub dir: MlflowDirArgs,
    /// Interface to bind; anything but loopback exposes an unauthenticated server.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: a free one).
    #[arg(long, default_value_t = 5000)]
    pub port: u16,
    /// Seconds to wait for /health (start-up takes 35 s or more on 2 cores).
    #[arg(long, default_value_t = 300)]
    pub wait: u64,
    /// MLflow's basic-auth app (admin password from MLFLOW_AUTH_ADMIN_PASSWORD).
    #[arg(long)]
    pub basic_auth: bool,
}

#[derive(Args, Debug)]
pub struct MlflowSyncArgs {
    /// Run folders, sweep folders, or folders holding them (e.g. runs/).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// Tracking server (default: $MLFLOW_TRACKING_URI).
    #[arg(long)]
    pub tracking_uri: Option<String>,
    /// Experiment name (default: $MLFLOW_EXPERIMENT_NAME, else the config's name).
    #[arg(long)]
    pub experiment: Option<String>,
}

pub fn run(cmd: MlflowCommand) -> Result<ExitCode> {
    use crate::mlflow::{server, sync};
    let dir_of = |d: &MlflowDirArgs| d.dir.clone().unwrap_or_else(crate::layout::mlflow_dir);
    match cmd {
        MlflowCommand::Up(a) => {
            let port = if a.port == 0 {
                server::free_port()?
            } else {
                a.port
            };
            let info = server::up(&server::UpArgs {
                dir: &dir_of(&a.dir),
                host: &a.host,
                port,
                wait: std::time::Duration::from_secs(a.wait),
                basic_auth: a.basic_auth,
            })?;
            println!("{}", info.uri);
            Ok(ExitCode::SUCCESS)
        }
        MlflowCommand::Down(a) => {
            let dir = dir_of(&a);
            if server::down(&dir)? {
                eprintln!("mlflow: stopped the server of {}", dir.display());
            } else {
                eprintln!("mlflow: no server running for {}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        MlflowCommand::Sync(a) => {
            let uri = crate::mlflow::tracking_uri(a.tracking_uri.as_deref())
                .context("no tracking server: pass --tracking-uri or set MLFLOW_TRACKING_URI")?;
            let mut syncer = sync::Syncer::new(sync::Target {
                uri: uri.clone(),
                experiment: a.experiment.clone(),
                register_as: None,
            })?;
            let mut total = sync::Counts::default();
            let mut roots = Vec::new();
            for d in &a.dirs {
                if !d.is_dir() {
                    bail!("{}: no such folder", d.display());
                }
                let found = sync::find_roots(d);
                if found.is_empty() {
                    use crate::layout::{CONFIG, METRICS_JSONL, TRIALS};
                    bail!(
                        "{}: no run folders ({CONFIG} + {METRICS_JSONL}) or sweeps ({TRIALS}) in it",
                        d.display()
                    );
                }
                roots.extend(found);
            }
            for r in &roots {
                let c = syncer
                    .sync(r)
                    .with_context(|| format!("syncing {} to {uri}", r.display()))?;
                eprintln!(
                    "{}: {} runs created, {} params, {} metric points, {} artifacts, {} models",
                    r.display(),
                    c.runs_created,
                    c.params,
                    c.points,
                    c.artifacts,
                    c.models
                );
                total += c;
            }
            println!(
                "synced {} folders to {uri}: {} runs created, {} params, {} metric points, {} artifacts, {} models uploaded",
                roots.len(),
                total.runs_created,
                total.params,
                total.points,
                total.artifacts,
                total.models
            );
            // The rest went; what a damaged file held did not: say so and fail.
            if !total.problems.is_empty() {
                for p in &total.problems {
                    eprintln!("not synced: {p}");
                }
                eprintln!(
                    "{} damaged file(s): repair or remove them and sync again",
                    total.problems.len()
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
