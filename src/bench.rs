//! `fer bench ...`: throughput measured side by side, in the same run, with
//! the equivalent PyTorch/torchvision code run from the project's `.venv`.

use crate::data;
use crate::data::augment::{augment_batch, eval_batch, AugmentConfig};
use crate::data::DataConfig;
use crate::eval::latency::median;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct DataBenchOptions {
    pub data: DataConfig,
    /// Images per augmentation measurement.
    pub images: usize,
    /// Repeats of each load measurement (the median is reported).
    pub repeats: usize,
    /// Python with torch and torchvision (default: .venv/bin/python).
    pub python: Option<PathBuf>,
    /// Measure only the Rust side.
    pub no_python: bool,
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

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

/// The Python that runs the PyTorch side: `--python`, else the project's
/// `.venv`. Absolute but not canonical: resolving the venv's symlink would
/// leave the venv.
fn python(given: Option<&std::path::Path>) -> Result<PathBuf> {
    let py =
        std::env::current_dir()?.join(given.unwrap_or(std::path::Path::new(".venv/bin/python")));
    if !py.exists() {
        bail!(
            "{} not found: run `make setup` (or pass --python, or --no-python)",
            py.display()
        );
    }
    Ok(py)
}

/// Runs the torchvision side; its JSON maps measurement keys to numbers.
fn python_side(args: &DataBenchOptions, dir: &std::path::Path) -> Result<serde_json::Value> {
    let py = python(args.python.as_deref())?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_torchvision.py");
    let threads = rayon::current_num_threads();
    let mut cmd = std::process::Command::new(&py);
    crate::runtime::die_with_parent(&mut cmd, libc::SIGKILL);
    let out = cmd
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

/// Measures, writes `data.json` and `data.md` under runs/bench, and returns
/// the figures with their table.
pub fn data(args: &DataBenchOptions) -> Result<(DataBench, String)> {
    let mut cfg = args.data.clone();
    let threads = rayon::current_num_threads();
    let (format, _) = data::load::resolve_format(&cfg.dir, cfg.format)?;
    if format != data::DataFormat::Folders {
        bail!("fer bench data measures JPEG decoding: point --data at the Kaggle folder layout");
    }
    let cache_dir = crate::layout::bench_dir().join("cache");
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
    // What each webcam corruption adds per image, firing on every image.
    let mut corrupt_rows = Vec::new();
    for kind in crate::data::corrupt::Kind::ALL {
        let c = crate::data::corrupt::Chance {
            p: 1.0,
            range: kind.typical(),
        };
        let cfg = AugmentConfig {
            corrupt: crate::data::corrupt::CorruptConfig::only(kind, c),
            ..train_cfg.clone()
        };
        let rate = aug_rate(1, &cfg, true)?;
        corrupt_rows.push(Row {
            name: format!(
                "  + corrupt.{} {:?} on every image, 1 thread ({:+.1} us/img)",
                kind.key(),
                kind.typical(),
                1e6 / rate - 1e6 / aug1
            ),
            rust: rate,
            python: None,
            python_what: String::new(),
            unit: "img/s".into(),
        });
    }
    let aug_n = aug_rate(threads, &train_cfg, true)?;
    let eval_n = aug_rate(threads, &train_cfg.eval_only(), false)?;

    let py = if args.no_python {
        None
    } else {
        Some(python_side(args, &cfg.dir)?)
    };
    let pyv = |k: &str| py.as_ref().and_then(|p| p.get(k)).and_then(|v| v.as_f64());
    let rate = |secs: f64| n_total as f64 / secs;
    let mut rows = vec![
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
    ];
    rows.extend(corrupt_rows);
    rows.extend([
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
    ]);
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
    let dir = crate::layout::bench_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("data.json"), serde_json::to_vec_pretty(&bench)?)?;
    let table = render(&bench, n);
    std::fs::write(dir.join("data.md"), &table)?;
    Ok((bench, table))
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

#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    pub data: DataConfig,
    /// Families to measure, comma-separated.
    pub families: String,
    /// Arithmetic and layout per measurement, comma-separated: fp32, bf16,
    /// fp32-nhwc, bf16-nhwc (train.precision and train.channels_last).
    pub modes: Vec<TrainMode>,
    pub batch_size: usize,
    pub warmup: usize,
    /// Timed batches per measurement.
    pub batches: usize,
    pub python: Option<PathBuf>,
    pub no_python: bool,
}

/// One training set-up of `fer bench train`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainMode {
    pub precision: crate::config::train::Precision,
    pub channels_last: bool,
}

impl std::str::FromStr for TrainMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use crate::config::train::Precision;
        let (p, cl) = match s.strip_suffix("-nhwc") {
            Some(p) => (p, true),
            None => (s, false),
        };
        let precision = match p {
            "fp32" => Precision::Fp32,
            "bf16" => Precision::Bf16,
            // What `train.precision: auto` picks on this machine, measured
            // and named as that mode (the PyTorch side runs the same).
            "auto" => crate::autocast::resolve(Precision::Auto, tch::Device::Cpu),
            _ => {
                return Err(format!(
                "unknown mode '{s}'; expected fp32, bf16, auto, fp32-nhwc, bf16-nhwc or auto-nhwc"
            ))
            }
        };
        Ok(TrainMode {
            precision,
            channels_last: cl,
        })
    }
}

impl std::fmt::Display for TrainMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.precision {
            crate::config::train::Precision::Fp32 => "fp32",
            crate::config::train::Precision::Bf16 => "bf16",
            crate::config::train::Precision::Auto => "auto",
        };
        write!(f, "{p}{}", if self.channels_last { "-nhwc" } else { "" })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainBenchRow {
    pub family: String,
    pub mode: String,
    pub params: u64,
    pub gmacs: f64,
    pub rust_model_only: f64,
    pub rust_end_to_end: f64,
    pub torch_model_only: Option<f64>,
    pub torch_end_to_end: Option<f64>,
}

fn family_config(name: &str) -> Result<crate::models::ModelConfig> {
    use crate::models::ModelConfig as M;
    Ok(match name {
        "logistic" => M::Logistic(Default::default()),
        "mlp" => M::Mlp(Default::default()),
        "cnn" => M::Cnn(Default::default()),
        "resnet18" => M::Resnet18(Default::default()),
        "vit" => M::Vit(Default::default()),
        other => bail!("unknown family '{other}'; expected logistic, mlp, cnn, resnet18 or vit"),
    })
}

/// Training img/s of one family: `fixed` times a single prepared batch (the
/// kernels alone), otherwise batches come from the prefetching loader.
fn rust_train_rate(
    cfg: &crate::models::ModelConfig,
    set: &std::sync::Arc<crate::data::ImageSet>,
    args: &TrainBenchOptions,
    mode: TrainMode,
    fixed: bool,
) -> Result<(f64, u64, u64)> {
    use crate::config::train::OptimizerConfig;
    use crate::data::loader::{start_epoch, LoaderSpec, Order};
    use crate::train::optim::Optimizer;
    tch::manual_seed(0);
    let aug = AugmentConfig::default();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = crate::models::build(&vs.root(), cfg, aug.size, 7).expect("network");
    let params = crate::models::parameter_count(&vs);
    if mode.channels_last {
        crate::train::to_channels_last(&vs);
    }
    let mut opt = Optimizer::new(
        OptimizerConfig::Sgd {
            lr: 0.01,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
        },
        &vs,
    );
    let s = aug.size as i64;
    let bs = args.batch_size as i64;
    let xb = tch::Tensor::randn([bs, 1, s, s], (tch::Kind::Float, tch::Device::Cpu));
    let yb = tch::Tensor::randint(7, [bs], (tch::Kind::Int64, tch::Device::Cpu));
    let mut step = |x: &tch::Tensor, y: &tch::Tensor| -> Result<f64> {
        // The same forward as the trainer's, for this mode.
        let logits = crate::train::forward_train(
            &net,
            x,
            tch::Device::Cpu,
            mode.precision,
            mode.channels_last,
        )?;
        let loss =
            logits.cross_entropy_loss(y, None::<tch::Tensor>, tch::Reduction::Mean, -100, 0.1);
        opt.zero_grad();
        loss.backward();
        opt.step(0.01);
        Ok(loss.double_value(&[]))
    };
    let n = args.warmup + args.batches;
    let mut t = Instant::now();
    if fixed {
        for i in 0..n {
            if i == args.warmup {
                t = Instant::now();
            }
            step(&xb, &yb)?;
        }
    } else {
        let spec = LoaderSpec {
            batch_size: args.batch_size,
            augment: Some(aug.clone()),
            eval: aug.eval_only(),
            order: Order::Shuffle,
            seed: 0,
            drop_last: true,
            prefetch: 2,
        };
        let mut steps = 0;
        for (i, b) in start_epoch(set.clone(), &spec, 0, 0).take(n).enumerate() {
            if i == args.warmup {
                t = Instant::now();
            }
            step(&b.x, &b.y)?;
            steps += 1;
        }
        anyhow::ensure!(steps == n, "the loader gave {steps} batches, {n} needed");
    }
    Ok((
        (args.batches * args.batch_size) as f64 / t.elapsed().as_secs_f64(),
        params,
        net.macs,
    ))
}

/// Measures, writes `train.json` and `train.md` under runs/bench, and returns
/// the rows with their table.
pub fn train(args: &TrainBenchOptions) -> Result<(Vec<TrainBenchRow>, String)> {
    let cfg = args.data.clone();
    let fer = data::load(&cfg, &crate::layout::cache_dir())?.data;
    // Enough images for every timed batch to be a fresh one.
    let n = fer
        .train
        .len()
        .min(args.batch_size * (args.warmup + args.batches + 1));
    let set = std::sync::Arc::new(fer.train.select(&(0..n).collect::<Vec<_>>()));
    let families: Vec<&str> = args.families.split(',').map(str::trim).collect();
    let mut rows = Vec::new();
    for f in &families {
        let mc = family_config(f)?;
        for &mode in &args.modes {
            let (fixed, params, macs) = rust_train_rate(&mc, &set, args, mode, true)?;
            let (e2e, _, _) = rust_train_rate(&mc, &set, args, mode, false)?;
            eprintln!("{f} {mode}: {fixed:.0} img/s (model only), {e2e:.0} img/s (with data)");
            rows.push(TrainBenchRow {
                family: f.to_string(),
                mode: mode.to_string(),
                params,
                gmacs: macs as f64 / 1e9,
                rust_model_only: fixed,
                rust_end_to_end: e2e,
                torch_model_only: None,
                torch_end_to_end: None,
            });
        }
    }
    let modes: Vec<String> = args.modes.iter().map(|m| m.to_string()).collect();
    let mut versions = None;
    if !args.no_python {
        let py = python(args.python.as_deref())?;
        let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts");
        let mut cmd = std::process::Command::new(&py);
        crate::runtime::die_with_parent(&mut cmd, libc::SIGKILL);
        let out = cmd
            .current_dir(&scripts)
            .arg("bench_train_torch.py")
            .args([
                "--data",
                &std::fs::canonicalize(&cfg.dir)?.display().to_string(),
            ])
            .args(["--families", &families.join(",")])
            .args(["--modes", &modes.join(",")])
            .args(["--batch-size", &args.batch_size.to_string()])
            .args(["--warmup", &args.warmup.to_string()])
            .args(["--batches", &args.batches.to_string()])
            .args(["--threads", &rayon::current_num_threads().to_string()])
            .output()
            .with_context(|| format!("running {} bench_train_torch.py", py.display()))?;
        if !out.status.success() {
            bail!(
                "bench_train_torch.py failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        versions = v["versions"].as_str().map(String::from);
        for r in &mut rows {
            r.torch_model_only = v[&r.mode][&r.family]["model_only"].as_f64();
            r.torch_end_to_end = v[&r.mode][&r.family]["end_to_end"].as_f64();
        }
    }
    let mut s = format!(
        "fer bench train: batch {}, {} timed batches after {} warm-up, {} threads, SGD Nesterov, \
         label smoothing 0.1, 44x44 input\nPyTorch side: {}\n\n\
         | family | mode | params | GMACs/img | fer model only | PyTorch model only | ratio | fer with data | PyTorch with DataLoader | ratio |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        args.batch_size,
        args.batches,
        args.warmup,
        rayon::current_num_threads(),
        versions.as_deref().unwrap_or("not run")
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.0}"));
    let ratio = |a: f64, b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.2}x", a / b));
    for r in &rows {
        s += &format!(
            "| {} | {} | {} | {:.3} | {:.0} | {} | {} | {:.0} | {} | {} |\n",
            r.family,
            r.mode,
            r.params,
            r.gmacs,
            r.rust_model_only,
            fmt(r.torch_model_only),
            ratio(r.rust_model_only, r.torch_model_only),
            r.rust_end_to_end,
            fmt(r.torch_end_to_end),
            ratio(r.rust_end_to_end, r.torch_end_to_end)
        );
    }
    let dir = crate::layout::bench_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("train.json"), serde_json::to_vec_pretty(&rows)?)?;
    std::fs::write(dir.join("train.md"), &s)?;
    Ok((rows, s))
}

/// `fer bench infer`: inference latency and throughput per model and batch
/// size, and the GFLOP/s reached against the machine's fp32 peak.
#[derive(Debug, Clone)]
pub struct InferBenchOptions {
    /// Model files, run folders, or folders of run folders (e.g. runs/zoo).
    pub models: Vec<PathBuf>,
    /// Batch sizes.
    pub batches: Vec<usize>,
    /// Minimum seconds timed per (model, batch).
    pub seconds: f64,
    /// Kernel layouts to time each float network in, side by side.
    pub layouts: Vec<crate::artifact::Layout>,
}

#[derive(Debug, Serialize)]
pub struct InferRow {
    pub model: String,
    pub family: String,
    /// `fp32`, or `int8` for files written by `fer quantize`.
    pub precision: String,
    /// `nchw` or `nhwc`; `-` where it has no meaning (no convolutions, int8).
    pub layout: String,
    pub params: u64,
    pub macs: u64,
    pub batch: usize,
    pub ms_per_batch: f64,
    pub ms_per_image: f64,
    pub img_per_s: f64,
    pub gflops: f64,
}

/// fp32 peak of this machine: threads x clock x 32 FLOP per cycle with AVX2
/// and FMA (two 8-wide fused multiply-adds per cycle), 16 without FMA.
pub fn peak_gflops(threads: usize) -> (f64, String) {
    let mhz = crate::cpu::info("cpu MHz")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    let fma = crate::cpu::flags(&["fma", "avx2"]);
    let per_cycle = if fma { 32.0 } else { 16.0 };
    let peak = threads as f64 * mhz / 1000.0 * per_cycle;
    (
        peak,
        format!(
            "{threads} threads x {:.2} GHz x {per_cycle} FLOP/cycle ({})",
            mhz / 1000.0,
            if fma { "AVX2 + FMA" } else { "no FMA" }
        ),
    )
}

/// GFLOP/s of a large fp32 matrix product: what libtorch can reach here.
pub fn sgemm_gflops(seconds: f64) -> f64 {
    let n = 2048i64;
    let a = tch::Tensor::randn([n, n], (tch::Kind::Float, tch::Device::Cpu));
    let b = tch::Tensor::randn([n, n], (tch::Kind::Float, tch::Device::Cpu));
    let _ = a.mm(&b);
    let mut times = Vec::new();
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < seconds || times.len() < 3 {
        let t0 = Instant::now();
        let _ = a.mm(&b);
        times.push(t0.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / median(times) / 1e9
}

fn model_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        let file = crate::layout::model_file_of(p);
        if file.is_file() {
            out.push(file);
        } else if let Ok(rd) = std::fs::read_dir(p) {
            let mut subs: Vec<PathBuf> = rd
                .flatten()
                .map(|e| crate::layout::RunDir(e.path()).model())
                .filter(|m| m.is_file())
                .collect();
            subs.sort();
            out.extend(subs);
        }
    }
    out
}

pub fn infer(args: &InferBenchOptions) -> Result<InferBench> {
    let files = model_files(&args.models);
    if files.is_empty() {
        bail!(
            "no model files in {:?} (expected .safetensors files, run folders, or folders of runs)",
            args.models
        );
    }
    let threads = tch::get_num_threads() as usize;
    let mut rows = Vec::new();
    for f in &files {
        let mut clf = crate::artifact::Classifier::load(f, tch::Device::Cpu)?;
        if clf.net.is_none() {
            continue;
        }
        // One pass where the layout has no meaning, else one per layout.
        let layouts: Vec<Option<crate::artifact::Layout>> = if clf.has_layout() {
            args.layouts.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        for layout in layouts {
            if let Some(l) = layout {
                clf.set_layout(l);
            }
            let net = clf.net.as_ref().expect("a network");
            let s = clf.meta.preprocess.size as i64;
            for &b in &args.batches {
                let med =
                    crate::eval::latency::forward_seconds(net.module.as_ref(), b, s, args.seconds);
                let ips = b as f64 / med;
                rows.push(InferRow {
                    model: clf.meta.name.clone(),
                    family: clf.meta.model.family().to_string(),
                    precision: if clf.quant.is_some() { "int8" } else { "fp32" }.into(),
                    layout: layout.map_or("-".into(), |l| l.to_string()),
                    params: clf.meta.params,
                    macs: clf.meta.macs,
                    batch: b,
                    ms_per_batch: med * 1000.0,
                    ms_per_image: med * 1000.0 / b as f64,
                    img_per_s: ips,
                    gflops: 2.0 * clf.meta.macs as f64 * ips / 1e9,
                });
            }
        }
    }
    let (nominal, how) = peak_gflops(threads);
    let sgemm = sgemm_gflops(args.seconds);
    Ok(InferBench {
        threads,
        peak_gflops: nominal,
        peak: how,
        sgemm_gflops: sgemm,
        rows,
    })
}

/// What `fer bench infer` measured.
#[derive(Debug, Serialize)]
pub struct InferBench {
    pub threads: usize,
    pub peak_gflops: f64,
    pub peak: String,
    pub sgemm_gflops: f64,
    pub rows: Vec<InferRow>,
}

impl InferBench {
    /// The table `fer bench infer` prints.
    pub fn render(&self) -> String {
        let (threads, nominal, how, sgemm) = (
            self.threads,
            self.peak_gflops,
            &self.peak,
            self.sgemm_gflops,
        );
        let mut s = format!(
            "fer bench infer: CPU, {threads} threads; GFLOP/s counts int8 multiply-adds as 2 operations like fp32 ones. Nominal peak {nominal:.0} GFLOP/s = {how}; a 2048x2048 matrix product (libtorch sgemm) reaches {sgemm:.0} GFLOP/s, the practical ceiling used for \"% of sgemm\" (above the nominal peak, the cores run faster than the base clock /proc/cpuinfo reports).\n\n"
        );
        s += "| model | precision | layout | params | MACs/img | batch | ms/batch | ms/image | img/s | GFLOP/s | % of sgemm |\n";
        s += "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for r in &self.rows {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.0} | {:.1} | {:.1}% |\n",
                r.model,
                r.precision,
                r.layout,
                r.params,
                crate::models::human(r.macs),
                r.batch,
                r.ms_per_batch,
                r.ms_per_image,
                r.img_per_s,
                r.gflops,
                r.gflops / sgemm.max(1e-9) * 100.0
            );
        }
        s
    }
}
