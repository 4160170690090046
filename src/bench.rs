//! `fer bench ...`: throughput measured side by side, in the same run, with
//! the equivalent PyTorch/torchvision code run from the project's `.venv`.

use crate::cli::DataArgs;
use crate::data::augment::{augment_batch, eval_batch, AugmentConfig};
use crate::data::{self, PIXELS};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct DataBenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Images per augmentation measurement.
    #[arg(long, default_value_t = 20_000)]
    pub images: usize,
    /// Repeats of each load measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Python with torch and torchvision (default: .venv/bin/python).
    #[arg(long, env = "FER_PYTHON")]
    pub python: Option<PathBuf>,
    /// Measure only the Rust side.
    #[arg(long)]
    pub no_python: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One row: a Rust figure, its Python counterpart, and the unit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub rust: f64,
    pub python: Option<f64>,
    pub python_what: String,
    pub unit: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataBench {
    pub images_total: usize,
    pub threads: usize,
    pub rows: Vec<Row>,
    pub torch_version: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

/// Runs the torchvision side; its JSON maps measurement keys to numbers.
fn python_side(args: &DataBenchArgs, dir: &std::path::Path) -> Result<serde_json::Value> {
    let py = args
        .python
        .clone()
        .unwrap_or_else(|| PathBuf::from(".venv/bin/python"));
    if !py.exists() {
        bail!(
            "{} not found: run `make setup` (or pass --python, or --no-python)",
            py.display()
        );
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_torchvision.py");
    let threads = rayon::current_num_threads();
    let out = std::process::Command::new(&py)
        .arg(&script)
        .args(["--data", &dir.display().to_string()])
        .args(["--images", &args.images.to_string()])
        .args(["--workers", &threads.to_string()])
        .args(["--repeats", &args.repeats.to_string()])
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing the torchvision benchmark's JSON")
}

pub fn data(args: DataBenchArgs) -> Result<ExitCode> {
    let mut cfg = args.data.resolve()?;
    let threads = rayon::current_num_threads();
    let (format, _) = data::load::resolve_format(&cfg.dir, cfg.format)?;
    if format != data::DataFormat::Folders {
        bail!("fer bench data measures JPEG decoding: point --data at the Kaggle folder layout");
    }
    let cache_dir = crate::paths::bench_dir().join("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let reps = args.repeats.max(1);

    cfg.cache = false;
    let mut decode = Vec::new();
    let mut loaded = None;
    for _ in 0..reps {
        let (l, s) = time(|| data::load(&cfg, &cache_dir));
        decode.push(s);
        loaded = Some(l?);
    }
    let fer = loaded.expect("at least one repeat").data;
    let n_total = fer.train.len() + fer.test.len();

    cfg.cache = true;
    data::load(&cfg, &cache_dir)?; // writes the cache
    let mut cached = Vec::new();
    for _ in 0..reps {
        let (l, s) = time(|| data::load(&cfg, &cache_dir));
        anyhow::ensure!(l?.from_cache, "the cache was not used");
        cached.push(s);
    }

    // Augmentation over the first `images` training faces, batches of 64.
    let n = args.images.min(fer.train.len());
    let idx: Vec<usize> = (0..n).collect();
    let train_cfg = AugmentConfig::default();
    let aug_rate = |pool_threads: usize, cfg: &AugmentConfig, train: bool| -> Result<f64> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(pool_threads)
            .build()?;
        let mut out = vec![0f32; 64 * cfg.out_len()];
        let mut rates = Vec::new();
        for _ in 0..reps {
            let (_, s) = time(|| {
                pool.install(|| {
                    for (b, chunk) in idx.chunks(64).enumerate() {
                        let o = &mut out[..chunk.len() * cfg.out_len()];
                        if train {
                            augment_batch(&fer.train.pixels, chunk, cfg, 0, 0, (b * 64) as u64, o);
                        } else {
                            eval_batch(&fer.train.pixels, chunk, cfg, o);
                        }
                    }
                })
            });
            rates.push(n as f64 / s);
        }
        Ok(median(rates))
    };
    let aug1 = aug_rate(1, &train_cfg, true)?;
    let aug_n = aug_rate(threads, &train_cfg, true)?;
    let eval_n = aug_rate(threads, &train_cfg.eval_only(), false)?;
    debug_assert_eq!(fer.train.pixels.len(), fer.train.len() * PIXELS);

    let py = if args.no_python {
        None
    } else {
        Some(python_side(&args, &cfg.dir)?)
    };
    let pyv = |k: &str| py.as_ref().and_then(|p| p.get(k)).and_then(|v| v.as_f64());
    let rate = |secs: f64| n_total as f64 / secs;
    let rows = vec![
        Row {
            name: "load: decode every JPEG (no cache)".into(),
            rust: rate(median(decode)),
            python: pyv("decode_seconds").map(rate),
            python_what: "PIL.Image.open + np.asarray per file".into(),
            unit: "img/s".into(),
        },
        Row {
            name: "load: cached".into(),
            rust: rate(median(cached)),
            python: pyv("npy_load_seconds").map(rate),
            python_what: "np.load of a cached .npy".into(),
            unit: "img/s".into(),
        },
        Row {
            name: "train augmentation, 1 thread".into(),
            rust: aug1,
            python: pyv("aug_1_thread"),
            python_what: "torchvision.transforms.v2 per sample".into(),
            unit: "img/s".into(),
        },
        Row {
            name: format!("train augmentation, {threads} threads"),
            rust: aug_n,
            python: pyv("aug_workers"),
            python_what: format!("DataLoader, {threads} workers, batch 64"),
            unit: "img/s".into(),
        },
        Row {
            name: format!("eval transform, {threads} threads"),
            rust: eval_n,
            python: pyv("eval_workers"),
            python_what: format!("DataLoader, {threads} workers, batch 64"),
            unit: "img/s".into(),
        },
    ];
    let bench = DataBench {
        images_total: n_total,
        threads,
        rows,
        torch_version: py
            .as_ref()
            .and_then(|p| p.get("versions"))
            .and_then(|v| v.as_str())
            .map(String::from),
    };
    let dir = crate::paths::bench_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("data.json"), serde_json::to_vec_pretty(&bench)?)?;
    let table = render(&bench, n);
    std::fs::write(dir.join("data.md"), &table)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&bench)?);
    } else {
        print!("{table}");
    }
    Ok(ExitCode::SUCCESS)
}

fn render(b: &DataBench, n_aug: usize) -> String {
    let mut s = format!(
        "fer bench data: {} images, {} threads; augmentation over {n_aug} train faces \
         (pad-2 crop 44, flip, rotation 10, brightness/contrast 0.2, erasing 0.5, normalise)\n\
         python side: {}\n\n\
         | measurement | fer (Rust) | PyTorch side | fer / PyTorch |\n|---|---:|---:|---:|\n",
        b.images_total,
        b.threads,
        b.torch_version.as_deref().unwrap_or("not run")
    );
    for r in &b.rows {
        let (py, ratio) = match r.python {
            Some(p) => (
                format!("{:.0} {} ({})", p, r.unit, r.python_what),
                format!("{:.1}x", r.rust / p),
            ),
            None => ("-".into(), "-".into()),
        };
        s.push_str(&format!(
            "| {} | {:.0} {} | {} | {} |\n",
            r.name, r.rust, r.unit, py, ratio
        ));
    }
    s
}
