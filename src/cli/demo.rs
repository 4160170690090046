//! `fer demo`: the whole harness in a few minutes (see `crate::demo`), then
//! the webcam page until Ctrl-C; a server the demo launched is stopped on
//! the way out, also when it is interrupted.

use super::serve::ServeArgs;
use crate::demo::{DemoOptions, MlflowChoice};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The demo sweep's experiment.
    #[arg(long, default_value = "experiments/demo.yaml")]
    pub experiment: PathBuf,
    /// Override any key of the demo experiment (e.g. search.n_trials=4).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Sweep folder (default: runs/demo/<timestamp>).
    #[arg(long)]
    pub sweep_dir: Option<PathBuf>,
    /// Report folder (a report there is replaced).
    #[arg(long, default_value = "reports/demo")]
    pub out: PathBuf,
    /// Log to this MLflow server instead of the local one.
    #[arg(long)]
    pub tracking_uri: Option<String>,
    /// The local MLflow server's folder (reused when its server runs).
    #[arg(long)]
    pub mlflow_dir: Option<PathBuf>,
    /// The local MLflow server's port on 127.0.0.1.
    #[arg(long, default_value_t = 5000)]
    pub mlflow_port: u16,
    /// Seconds a launched MLflow server may take to answer.
    #[arg(long, default_value_t = 300)]
    pub mlflow_wait: u64,
    /// Test images in the report's robustness suite.
    #[arg(long, default_value_t = 300)]
    pub robustness_images: usize,
    /// Stop after the report (no webcam page); a launched MLflow server
    /// keeps running (`fer mlflow down` stops it).
    #[arg(long)]
    pub no_serve: bool,
    /// With --no-serve: what was made, as JSON on stdout.
    #[arg(long, requires = "no_serve")]
    pub json: bool,
    #[command(flatten, next_help_heading = "The webcam page")]
    pub serve: ServeArgs,
}

/// The process group of a launched MLflow server, for the signal handler.
static LAUNCHED_GROUP: AtomicI32 = AtomicI32::new(0);

/// Ctrl-C or SIGTERM before the page serves: stop the launched server's
/// group (kill is async-signal-safe) and leave.
extern "C" fn interrupted(sig: libc::c_int) {
    let group = LAUNCHED_GROUP.load(Ordering::SeqCst);
    // SAFETY: kill and _exit are async-signal-safe.
    unsafe {
        if group > 0 {
            libc::kill(-group, libc::SIGTERM);
        }
        libc::_exit(128 + sig);
    }
}

fn on_signals(handler: libc::sighandler_t) {
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn run(a: DemoArgs) -> Result<ExitCode> {
    let t0 = Instant::now();
    let total = if a.no_serve { 5 } else { 6 };
    let mut step = 0;
    let (bold, plain) = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("", "")
    };
    let mut stage = |what: &str| {
        step += 1;
        eprintln!(
            "{bold}demo [{step}/{total}] {:>4.0} s{plain}  {what}",
            t0.elapsed().as_secs_f64()
        );
    };
    let (o, choice) = options(&a);
    let prepared = crate::demo::prepare(&o)?;
    stage(&format!(
        "data: {} training and {} test images{}",
        prepared.train_images,
        prepared.test_images,
        if prepared.from_cache {
            " (from the cache)"
        } else {
            ", decoded and cached for the next run"
        }
    ));
    let m = crate::demo::mlflow(&choice, o.mlflow_wait)?;
    let launched = m.launched.clone();
    stage(&mlflow_stage(&m, a.tracking_uri.is_some()));
    if let Some(i) = &launched {
        LAUNCHED_GROUP.store(i.pid as i32, Ordering::SeqCst);
        on_signals(interrupted as *const () as libc::sighandler_t);
        // A SIGKILL runs no handler: the watchdog stops the server then.
        crate::mlflow::server::tie_to(std::process::id(), i)?;
    }
    let stop_launched = || {
        if let Some(i) = &launched {
            if crate::mlflow::server::down(&i.dir).unwrap_or(false) {
                eprintln!("demo: stopped the MLflow server it started");
            }
        }
    };
    let demo = match crate::demo::run(&o, prepared, m, &mut stage) {
        Ok(d) => d,
        Err(e) => {
            stop_launched();
            return Err(e);
        }
    };
    if let Some(msg) = &demo.tracking {
        eprintln!("{msg}");
    }
    if let Some((n, family, v)) = &demo.best {
        eprintln!(
            "demo: {} trials, best trial {n} ({family}) with val/acc {v:.3}",
            demo.trials
        );
    }
    let mlflow_line = demo
        .sweep_url
        .clone()
        .unwrap_or_else(|| demo.mlflow_uri.clone());
    if a.no_serve {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&demo)?);
        } else {
            println!("MLflow: {mlflow_line}");
            println!("report: {}", demo.report.display());
        }
        if launched.is_some() {
            eprintln!("demo: the MLflow server keeps running; `fer mlflow down` stops it");
        }
        return Ok(ExitCode::SUCCESS);
    }
    stage("serve: the webcam page with the release model");
    let served = serve(a.serve, &demo, &mlflow_line, t0);
    stop_launched();
    served?;
    Ok(ExitCode::SUCCESS)
}

/// What the library needs, and where it logs, from the arguments.
fn options(a: &DemoArgs) -> (DemoOptions, MlflowChoice) {
    let choice = match &a.tracking_uri {
        Some(u) => MlflowChoice::Uri(u.clone()),
        None => MlflowChoice::Local {
            dir: a
                .mlflow_dir
                .clone()
                .unwrap_or_else(crate::layout::mlflow_dir),
            port: a.mlflow_port,
        },
    };
    let o = DemoOptions {
        experiment: a.experiment.clone(),
        overrides: a.overrides.clone(),
        data: a.serve.data.clone(),
        sweep_dir: a
            .sweep_dir
            .clone()
            .unwrap_or_else(|| crate::layout::new_run_dir("demo")),
        report_dir: a.out.clone(),
        robustness_images: a.robustness_images,
        mlflow_wait: Duration::from_secs(a.mlflow_wait),
    };
    (o, choice)
}

/// The MLflow stage's line: launched, given, or reused.
fn mlflow_stage(m: &crate::demo::Mlflow, given: bool) -> String {
    match &m.launched {
        Some(i) => format!(
            "MLflow: starting a local server at {} (data in {}); the sweep starts meanwhile",
            i.uri,
            i.dir.display()
        ),
        None if given => format!("MLflow: logging to {}", m.uri),
        None => format!("MLflow: reusing the local server at {}", m.uri),
    }
}

/// The webcam page until Ctrl-C; prints the three places to look once it
/// listens.
fn serve(args: ServeArgs, demo: &crate::demo::Demo, mlflow_line: &str, t0: Instant) -> Result<()> {
    // The handler stays through the serve stage: until the page's server
    // listens for Ctrl-C it alone stops MLflow, and after that the page's
    // listener hands the signal on to it (signal handlers chain), so no
    // moment leaves MLflow behind.
    crate::serve::run(args.options(), |addr, model| {
        let secs = t0.elapsed().as_secs_f64();
        println!();
        println!("  MLflow (the sweep):  {mlflow_line}");
        if let Some(u) = &demo.model_url {
            println!("  registered model:    {u}");
        }
        println!("  report:              {}", demo.report.display());
        println!("  webcam page:         http://{addr}/   (model {model})");
        println!();
        eprintln!("demo: ready after {secs:.0} s; Ctrl-C stops the page and what the demo started");
    })
}
