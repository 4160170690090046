//! Command-line interface: arguments are parsed and validated here, then
//! handed to the library as real objects.

use crate::data::{self, DataConfig};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "fer",
    version,
    about = "Facial emotion recognition research harness for FER-2013"
)]
pub struct Cli {
    /// Threads for decoding, augmentation and libtorch (default: all cores).
    #[arg(long, global = true, env = "FER_THREADS")]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Data set commands.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a model from a run config (or resume a run).
    Train(TrainArgs),
    /// Evaluate a model file or run folder.
    Eval(EvalArgs),
    /// Hyperparameter sweep over an experiment's search space.
    Sweep(SweepArgs),
    /// Post-training int8 quantization of a model file.
    Quantize(crate::quant::QuantizeArgs),
    /// Fit a post-hoc logit adjustment on validation into a copy of a model file.
    Calibrate(crate::calibrate::CalibrateArgs),
    /// Average trained models (files or run folders) into one ensemble file.
    Ensemble(crate::combine::EnsembleArgs),
    /// Benchmarks, compared side by side with PyTorch/torchvision in one run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Live emotions from the browser's webcam (and an HTTP API).
    Serve(crate::serve::ServeArgs),
    /// A Markdown report (with PNGs) of a run, a folder of runs, or a sweep.
    Report(ReportArgs),
    /// A local MLflow server, and uploads of run folders to any server.
    #[command(subcommand)]
    Mlflow(MlflowCommand),
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A run folder, a folder of run folders (e.g. runs/zoo), or a sweep folder.
    pub input: PathBuf,
    /// Output folder (default: reports/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Data set folder, overriding the runs' data.dir.
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
    /// Test images in the robustness suite (a seeded sample).
    #[arg(long, default_value_t = 1000)]
    pub robustness_images: usize,
}

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

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Counts per split and class, imbalance, blank and duplicate images, digest.
    Stats(StatsArgs),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Load/decode (uncached and cached) and augmentation throughput.
    Data(crate::bench::DataBenchArgs),
    /// Training img/s per family against an equivalent PyTorch loop.
    Train(crate::bench::TrainBenchArgs),
    /// Serving latency per stage (p50/p95) and FPS on a 640x480 face frame.
    Serve(crate::serve::bench::ServeBenchArgs),
    /// Inference latency, throughput and GFLOP/s per model and batch size.
    Infer(crate::bench::InferBenchArgs),
}

/// Where the data is and how to read it; shared by every data-using command.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Data set folder (Kaggle layout) or challenge CSV.
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
    /// A data config YAML (the `data` group), e.g. configs/data/fer2013.yaml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Decode from the files even if a cache exists.
    #[arg(long)]
    pub no_cache: bool,
}

impl DataArgs {
    /// The data config: file (or defaults), then command-line overrides.
    pub fn resolve(&self) -> Result<DataConfig> {
        let mut cfg = match &self.config {
            Some(p) => crate::config::load_yaml::<DataConfig>(p)?,
            None => DataConfig::default(),
        };
        if let Some(d) = &self.data {
            cfg.dir = d.clone();
        }
        if self.no_cache {
            cfg.cache = false;
        }
        cfg.validate()
            .map_err(anyhow::Error::msg)
            .with_context(|| match &self.config {
                Some(p) => format!("in {}", p.display()),
                None => "in the default data config".into(),
            })?;
        Ok(cfg)
    }
}

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
    /// Data set folder, overriding `data.dir`.
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

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

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A model file (.safetensors written by fer) or a run folder.
    pub model: PathBuf,
    /// Data set folder (default: $FER2013_DIR, else data/fer2013).
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
    /// `test` (each half and the union) or `val` (the model's own split).
    #[arg(long, default_value = "test", value_parser = ["test", "val"])]
    pub split: String,
    /// Ten-crop plus flip test-time augmentation.
    #[arg(long)]
    pub tta: bool,
    /// Also run the robustness suite (accuracy under graded perturbations).
    #[arg(long)]
    pub robustness: bool,
    /// Robustness on the first N images of the split only.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Where to write the class-distribution chart.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// Sets the thread counts of rayon and libtorch once, before any work.
/// Keep libtorch's freed activation buffers in the heap instead of handing
/// them back to the kernel. glibc's default (mmap above a moving threshold,
/// trim the top at 128 KiB) turns every training step's 1-16 MB tensors into
/// fresh page faults; measured in `docs/performance.md`, this costs about 10%
/// of CNN training speed on 2 cores. The cost is that the process keeps its
/// peak heap until exit, which is what a trainer or a server wants anyway.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any
    // other thread exists, and glibc rejects values it cannot honour.
    unsafe {
        // 32 MiB is the largest threshold glibc accepts on 64-bit; setting it
        // also turns off the dynamic threshold.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

pub fn init_threads(threads: Option<usize>) -> usize {
    let n = threads
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    tch::set_num_threads(n as i32);
    n
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

pub fn run() -> Result<ExitCode> {
    tune_allocator();
    let cli = Cli::parse();
    init_logging();
    init_threads(cli.threads);
    match cli.command {
        Command::Data(DataCommand::Stats(args)) => data_stats(args),
        Command::Train(args) => train(args),
        Command::Mlflow(cmd) => mlflow(cmd),
        Command::Serve(a) => crate::serve::run(a).map(|()| ExitCode::SUCCESS),
        Command::Report(a) => {
            let path = crate::report::generate(&crate::report::ReportArgs {
                input: a.input,
                out: a.out,
                data: a.data,
                robustness_images: a.robustness_images,
            })?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(args) => eval(args),
        Command::Sweep(args) => sweep(args),
        Command::Quantize(args) => crate::quant::run(args),
        Command::Ensemble(args) => crate::combine::run(args),
        Command::Calibrate(args) => crate::calibrate::run(args),
        Command::Bench(BenchCommand::Data(args)) => crate::bench::data(args),
        Command::Bench(BenchCommand::Train(args)) => crate::bench::train(args),
        Command::Bench(BenchCommand::Infer(args)) => crate::bench::infer(args),
        Command::Bench(BenchCommand::Serve(args)) => {
            crate::serve::bench::run(args).map(|()| ExitCode::SUCCESS)
        }
    }
}

fn new_run_dir(name: &str) -> PathBuf {
    let stamp = chrono_like_stamp();
    let base = crate::paths::runs_root().join(name);
    let mut dir = base.join(&stamp);
    let mut i = 1;
    while dir.exists() {
        dir = base.join(format!("{stamp}-{i}"));
        i += 1;
    }
    dir
}

/// `YYYYmmdd-HHMMSS` in UTC, without a date-time dependency.
fn chrono_like_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn train(args: TrainArgs) -> Result<ExitCode> {
    let (cfg, dir, resume) = match &args.resume {
        Some(run) => {
            let rd = crate::train::RunDir(run.clone());
            let mut cfg = crate::config::RunConfig::load(&rd.config(), &args.overrides)
                .with_context(|| format!("resuming {}", run.display()))?;
            if let Some(d) = &args.data {
                cfg.data.dir = d.clone();
            }
            (cfg, run.clone(), true)
        }
        None => {
            let path = args.config.as_ref().expect("clap requires a config");
            let mut cfg = crate::config::RunConfig::load(path, &args.overrides)?;
            if let Some(d) = &args.data {
                cfg.data.dir = d.clone();
            }
            let dir = args
                .run_dir
                .clone()
                .unwrap_or_else(|| new_run_dir(&cfg.name));
            (cfg, dir, false)
        }
    };
    eprintln!("run folder: {}", dir.display());
    let uri = args
        .tracking_uri
        .as_deref()
        .or(cfg.tracking.as_ref().and_then(|t| t.uri.as_deref()));
    let tracker = crate::mlflow::tracker(crate::mlflow::tracking_uri(uri));
    let result = crate::train::run_with(&cfg, &dir, resume, &mut |_| {
        tracker.changed(&dir);
        false
    });
    tracker.changed(&dir);
    let report = tracker.finish();
    if let Some(m) = &report.message {
        eprintln!("{m}");
    }
    let out = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        let classes = crate::model_file::class_names();
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
            print!("{}", out.val.render(&classes));
        }
        print!("{}", out.test.render(&classes));
        println!("run folder: {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn mlflow(cmd: MlflowCommand) -> Result<ExitCode> {
    use crate::mlflow::{server, sync};
    let dir_of = |d: &MlflowDirArgs| d.dir.clone().unwrap_or_else(crate::paths::mlflow_dir);
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
                    bail!(
                        "{}: no run folders (config.yaml + metrics.jsonl) or sweeps (trials.jsonl) in it",
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
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn sweep(args: SweepArgs) -> Result<ExitCode> {
    let mut exp = crate::sweep::config::Experiment::load(&args.experiment, &args.overrides)?;
    if let Some(d) = &args.data {
        exp.data.dir = d.clone();
    }
    let dir = match (&args.sweep_dir, args.resume) {
        (Some(d), _) => d.clone(),
        (None, false) => new_run_dir(&exp.name),
        (None, true) => {
            // The newest sweep of this experiment.
            let base = crate::paths::runs_root().join(&exp.name);
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
                .with_context(|| format!("no sweeps to resume in {}", base.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("trials.jsonl").exists())
                .collect();
            dirs.sort();
            dirs.pop()
                .with_context(|| format!("no sweep with a trials.jsonl in {}", base.display()))?
        }
    };
    if args.resume {
        // The sweep folder's own resolved config is the one to continue.
        let saved = crate::sweep::SweepDir(dir.clone()).config();
        let mut saved_exp: crate::sweep::config::Experiment = crate::config::load_yaml(&saved)?;
        saved_exp.data.dir = exp.data.dir.clone();
        exp = saved_exp;
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    Ok(if summary.all_failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn eval(args: EvalArgs) -> Result<ExitCode> {
    let clf = crate::model_file::Classifier::load(&args.model, tch::Device::Cpu)?;
    let crate::model_file::ModelData {
        loaded, split: tv, ..
    } = clf.meta.load_data(args.data.as_deref())?;
    if loaded.data.digest != clf.meta.data_digest {
        eprintln!(
            "note: data digest {} differs from the model's training data {}",
            loaded.data.short_digest(),
            &clf.meta.data_digest[..12.min(clf.meta.data_digest.len())]
        );
    }
    let set = if args.split == "val" {
        if tv.val.is_empty() {
            bail!(
                "{}: this model was trained on all of train (data.val_fraction 0, a refit), so it has no validation split; use --split test",
                args.model.display()
            );
        }
        loaded.data.train.select(&tv.val)
    } else {
        loaded.data.test.clone()
    };
    let report = crate::eval::evaluate(&clf, &set, &args.split, args.tta);
    let robustness = args
        .robustness
        .then(|| crate::eval::robust::run(&clf, &set, args.limit, 0));
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(r) = &robustness {
            v["robustness"] = serde_json::to_value(r)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} ({}): {} params, {} MACs",
            clf.meta.name,
            clf.meta.model.family(),
            clf.meta.params,
            crate::models::human(clf.meta.macs)
        );
        if let Some(q) = &clf.quant {
            println!("{}", q.summary());
        }
        print!("{}", report.render(&clf.meta.classes));
        if let Some(r) = &robustness {
            println!("\nrobustness ({} images)", r.images);
            print!("{}", r.markdown());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn data_stats(args: StatsArgs) -> Result<ExitCode> {
    let cfg = args.data.resolve()?;
    let loaded = data::load(&cfg, &crate::paths::cache_dir())?;
    let stats = data::stats::compute(&cfg, &loaded.data, loaded.seconds, loaded.from_cache);
    let plot = args
        .plot
        .unwrap_or_else(|| crate::paths::data_dir().join("class_distribution.png"));
    stats.plot(&plot)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", stats.render());
        println!("chart:      {}", plot.display());
    }
    Ok(ExitCode::SUCCESS)
}
