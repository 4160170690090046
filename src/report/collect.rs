//! The collect step of `fer report`: finds the finished runs (or the sweep)
//! in the input folder, reads them through `layout` into typed values, loads
//! the data set once, and measures everything the sections need (test
//! predictions, calibration bins, latency, robustness, Grad-CAM and error
//! tiles) into one `ReportData`. Latency and robustness are cached in the run
//! folder. Nothing here writes Markdown or charts.

use super::images::{normalise, Tile};
use super::ReportOptions;
use crate::artifact::Classifier;
use crate::config::RunConfig;
use crate::data::stats::DataStats;
use crate::data::{self, ImageSet, PIXELS};
use crate::eval::metrics::argmax;
use crate::eval::robust::{self, Robustness};
use crate::layout::{self, Kind, RunDir, SweepDir};
use crate::metric::Direction;
use crate::plot::ParamPoints;
use crate::provenance::Provenance;
use crate::sweep::config::{Experiment, Objective};
use crate::sweep::journal::{read_events, rebuild, TrialRecord, TrialState};
use crate::train::Outcome;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything the report says, measured once.
pub struct ReportData {
    /// The report's title.
    pub name: String,
    /// The input folder and the output folder, as given (for the commands).
    pub input: PathBuf,
    pub out: PathBuf,
    /// Robustness sample size asked for, and the test images there are.
    pub robustness_images: usize,
    pub test_images: usize,
    pub stats: DataStats,
    pub digest: String,
    pub runs: Vec<Run>,
    /// The runs that get a full section, as indices into `runs`.
    pub deep: Vec<usize>,
    /// The best model on validation's most confident test mistakes.
    pub errors: Option<ErrorGallery>,
    pub sweep: Option<SweepData>,
    /// The machine the report measures latency on.
    pub cpu: String,
    pub threads: i32,
    /// Hyperparameter importance of the sweep reported on and of the
    /// sweeps named with `--importance`, in that order.
    pub importance: Vec<crate::sweep::importance::SweepRankings>,
    /// The `--notes` file's Markdown.
    pub notes: Option<String>,
    /// Every model on the same test images (single crop): intervals and
    /// paired tests against the most accurate; None for a single run.
    pub paired: Option<Paired>,
    /// The `fer report` command that regenerates this report, every
    /// section-bearing option included.
    pub command: String,
    /// Recipes trained under several seeds: a repeated run's, or a sweep's
    /// re-run best trials.
    pub seed_sets: Vec<SeedSet>,
    /// The fully reported models on their own test split and on each
    /// `--other-data` set.
    pub across: Vec<super::across::AcrossRow>,
}

/// A finished run folder: what it wrote, and what the report measured of it
/// (the measurements stay empty where the report does not show them).
pub struct Run {
    pub dir: RunDir,
    pub label: String,
    pub out: Outcome,
    pub cfg: RunConfig,
    pub prov: Option<Provenance>,
    pub config_hash: String,
    /// The model has a network (baselines such as majority do not).
    pub has_net: bool,
    pub latency: Option<Latency>,
    /// An ensemble's members, each alone.
    pub members: Vec<Member>,
    /// Test reliability bins: mean confidence, accuracy, count.
    pub calibration: Vec<(f64, f64, usize)>,
    pub robustness: Option<Robustness>,
    /// Grad-CAM rows, one per true class, when the model has feature maps.
    pub gradcam: Option<Vec<(String, Vec<Tile>)>>,
    /// The model file this run folder was made from (`fer report` on model
    /// files): no training record, so no curves, training time or command.
    pub source: Option<PathBuf>,
    /// The model file holds int8 weights: its latency is an int8 figure.
    pub int8_file: bool,
}

impl Run {
    /// Mean accuracy retention over the robustness suite's cases, when measured.
    pub fn mean_retention(&self) -> Option<f64> {
        self.robustness
            .as_ref()
            .filter(|x| !x.rows.is_empty())
            .map(|x| x.rows.iter().map(|row| row.retention).sum::<f64>() / x.rows.len() as f64)
    }
}

/// The paired comparison of the report's runs on its test images.
pub struct Paired {
    pub images: usize,
    /// Per run, in `runs` order.
    pub intervals: Vec<crate::eval::stats::Intervals>,
    pub best: usize,
    pub versus: Vec<crate::eval::compare::Versus>,
}

/// Scores each run's single-crop predictions with intervals and compares
/// each with the most accurate (Holm over the comparisons, alpha 0.05).
fn paired(runs: &[Run], probs: &[Vec<f32>], labels: &[u8], k: usize) -> Option<Paired> {
    if runs.len() < 2 || labels.is_empty() {
        return None;
    }
    let preds: Vec<Vec<u8>> = probs.iter().map(|p| crate::eval::predicted(p, k)).collect();
    let intervals: Vec<_> = preds
        .iter()
        .map(|p| crate::eval::stats::headline(labels, p, k))
        .collect();
    let accuracy: Vec<f64> = intervals.iter().map(|i| i.accuracy.value).collect();
    let names: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    let (best, versus) =
        crate::eval::compare::versus_best(labels, &preds, &accuracy, &names, k, 0.05);
    Some(Paired {
        images: labels.len(),
        intervals,
        best,
        versus,
    })
}

/// One ensemble member, read from its own folder.
pub struct Member {
    pub seed: u64,
    /// Its folder's name inside the ensemble's run folder.
    pub dir: String,
    /// Its overrides, as Markdown, or `-`.
    pub set: String,
    pub out: Outcome,
}

/// Tiles of the most confident mistakes of run `run`, six to a row.
pub struct ErrorGallery {
    pub run: usize,
    pub rows: Vec<(String, Vec<Tile>)>,
}

/// A sweep's trials and the parts of its experiment the report shows.
pub struct SweepData {
    pub trials: Vec<TrialRecord>,
    pub objective: Objective,
    /// The sampler's name as the experiment file spells it.
    pub sampler: &'static str,
    /// With several objectives: all of them (the first is `objective`).
    pub objectives: Vec<crate::sweep::config::ObjectiveSpec>,
    /// Each trial was cross-validated: its value is a held-out mean.
    pub cv: bool,
}

/// One recipe under several seeds, as the report shows it.
#[derive(Clone, Debug)]
pub struct SeedSet {
    /// A repeated run's name, or `trial N` of a sweep.
    pub label: String,
    /// What the trainings differ in.
    pub unit: crate::config::Unit,
    /// The column heads, one per seed (`seed 0`, `trial 7`).
    pub heads: Vec<String>,
    /// Per figure: its name, its spread and each seed's value.
    pub rows: Vec<crate::train::repeat::SpreadRow>,
    /// Validation accuracy per epoch across the seeds.
    pub band: Vec<crate::train::repeat::BandPoint>,
}

/// The repeated runs among `runs` (their `seeds.json`) and a sweep's seed
/// groups, as the report shows them.
fn seed_sets(runs: &[&Run], sweep: Option<&SweepData>, input: &Path) -> Vec<SeedSet> {
    use crate::metric::MetricKey;
    use crate::train::repeat::{curve_band, curve_band_of, SeedsFile};
    let mut parents: Vec<PathBuf> = runs
        .iter()
        .filter_map(|r| r.dir.path().parent().map(Path::to_path_buf))
        .filter(|p| RunDir::new(p.clone()).seeds().exists())
        .collect();
    parents.dedup();
    let mut sets = Vec::new();
    for p in parents {
        let rd = RunDir::new(p);
        let Ok(f) = SeedsFile::read(&rd.seeds()) else {
            continue;
        };
        sets.push(SeedSet {
            label: f.name.clone(),
            unit: f.unit,
            heads: f.heads(),
            rows: f.rows(),
            band: curve_band(&rd, &f, MetricKey::ValAcc),
        });
    }
    if let Some(s) = sweep {
        let sd = SweepDir::new(input);
        for g in crate::sweep::seed_groups(&s.trials) {
            let Some(sp) = g.spread else { continue };
            let dirs: Vec<RunDir> = g.values.iter().map(|(n, _)| sd.trial(*n)).collect();
            sets.push(SeedSet {
                label: format!("trial {}", g.trial),
                unit: crate::config::Unit::Seed,
                heads: g.values.iter().map(|(n, _)| format!("trial {n}")).collect(),
                rows: vec![(
                    s.metric().to_string(),
                    sp,
                    g.values.iter().map(|(_, v)| Some(*v)).collect(),
                )],
                band: curve_band_of(&dirs, MetricKey::ValAcc),
            });
        }
    }
    sets
}

/// (x, y) points of a chart.
pub type Points = Vec<(f64, f64)>;

impl SweepData {
    /// The trials' value's name, as the charts and tables label it
    /// (`cv/acc` when each trial was cross-validated).
    pub fn metric(&self) -> String {
        crate::sweep::config::value_name(self.objective.metric.name(), self.cv)
    }

    pub fn maximize(&self) -> bool {
        self.objective.direction != Direction::Minimize
    }

    /// Per trial with a value, in journal order: the complete ones, the
    /// pruned ones (their last reported value) and the best so far.
    pub fn history(&self) -> (Points, Points, Points) {
        let (mut complete, mut pruned, mut best_line) = (Vec::new(), Vec::new(), Vec::new());
        let mut best: Option<f64> = None;
        for t in &self.trials {
            let Some(v) = t.value else { continue };
            let x = t.number as f64;
            match t.state {
                TrialState::Complete => {
                    complete.push((x, v));
                    if best.is_none_or(|b| self.objective.direction.better(v, b)) {
                        best = Some(v);
                    }
                }
                TrialState::Pruned => pruned.push((x, v)),
                _ => {}
            }
            if let Some(b) = best {
                best_line.push((x, b));
            }
        }
        (complete, pruned, best_line)
    }

    /// Each numeric parameter that at least two trials with a value set,
    /// against the objective; log scale when it spans over 20x.
    pub fn param_panels(&self) -> Vec<ParamPoints> {
        let mut keys: Vec<String> = self
            .trials
            .iter()
            .flat_map(|t| t.params.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        let mut panels = Vec::new();
        for k in &keys {
            let pts: Vec<(f64, f64)> = self
                .trials
                .iter()
                .filter_map(|t| Some((t.params.get(k)?.as_f64()?, t.value?)))
                .collect();
            if pts.len() < 2 {
                continue;
            }
            let (lo, hi) = crate::plot::span(pts.iter().map(|p| p.0));
            panels.push((k.clone(), lo > 0.0 && hi / lo > 20.0, pts));
        }
        panels
    }

    /// The complete trials with a value, best first (then by number).
    pub fn ranked(&self) -> Vec<&TrialRecord> {
        let maximize = self.maximize();
        let mut ranked: Vec<&TrialRecord> = self
            .trials
            .iter()
            .filter(|t| t.state == TrialState::Complete && t.value.is_some())
            .collect();
        ranked.sort_by(|a, b| {
            let (x, y) = (a.value.unwrap_or(0.0), b.value.unwrap_or(0.0));
            let o = if maximize {
                y.total_cmp(&x)
            } else {
                x.total_cmp(&y)
            };
            o.then(a.number.cmp(&b.number))
        });
        ranked
    }
}

#[derive(Serialize, Deserialize)]
pub struct Latency {
    pub batch1_ms_median: f64,
    pub batch1_ms_p95: f64,
    pub threads: usize,
    pub cpu: String,
    /// The same model quantized to int8 in memory (`quant::int8_classifier`),
    /// when it could be; `int8_measured` says it was tried (caches written
    /// before it have neither).
    #[serde(default)]
    pub int8_batch1_ms_median: Option<f64>,
    #[serde(default)]
    pub int8_measured: bool,
}

/// What the input folder holds.
pub struct Inputs {
    pub runs: Vec<Run>,
    pub sweep: Option<SweepData>,
}

fn load_run(dir: &RunDir, label: Option<String>) -> Result<Run> {
    let mut out = Outcome::read(dir.path())?;
    if out.history.is_empty() {
        out.history = crate::metric::read_history(dir);
    }
    let cfg: RunConfig = crate::config::load_yaml(&dir.config())?;
    let hash = blake3::hash(&std::fs::read(dir.config())?).to_hex()[..16].to_string();
    Ok(Run {
        dir: dir.clone(),
        label: label.unwrap_or_else(|| cfg.name.clone()),
        prov: Provenance::load(dir.path()),
        out,
        cfg,
        config_hash: hash,
        has_net: false,
        latency: None,
        members: Vec::new(),
        calibration: Vec::new(),
        robustness: None,
        gradcam: None,
        source: None,
        int8_file: false,
    })
}

/// The finished runs in `a.input`: a sweep's finished trials, the run
/// itself, every finished run folder up to three levels down, or model
/// files (one, or those in a folder that is not a run folder), each scored
/// once into a run folder of its own in the cache.
pub fn discover(a: &ReportOptions) -> Result<Inputs> {
    let input = a.input.as_path();
    if let Some(files) = model_files(input)? {
        let data = a
            .data
            .clone()
            .or_else(|| std::env::var_os("FER2013_DIR").map(PathBuf::from))
            .unwrap_or_else(|| crate::data::DataConfig::default().dir);
        let runs = files
            .iter()
            .map(|f| adopt(f, &data, a.tta))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Inputs { runs, sweep: None });
    }
    if !input.is_dir() {
        bail!("{}: no such folder", input.display());
    }
    if layout::kind_of(input) == Some(Kind::Sweep) {
        return discover_sweep(&SweepDir::new(input));
    }
    let run = RunDir::new(input);
    if run.is_finished() {
        return Ok(Inputs {
            runs: vec![load_run(&run, None)?],
            sweep: None,
        });
    }
    let mut dirs = Vec::new();
    fn walk(d: &Path, depth: usize, out: &mut Vec<RunDir>) {
        let run = RunDir::new(d);
        if run.is_finished() {
            out.push(run);
            return;
        }
        if depth == 0 {
            return;
        }
        if let Ok(rd) = std::fs::read_dir(d) {
            let mut subs: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            subs.sort();
            for s in subs {
                walk(&s, depth - 1, out);
            }
        }
    }
    walk(input, 3, &mut dirs);
    if dirs.is_empty() {
        bail!(
            "{}: no finished runs (folders with {} and {}) or sweep ({}) in it",
            input.display(),
            layout::EVAL,
            layout::CONFIG,
            layout::TRIALS
        );
    }
    let runs = dirs
        .iter()
        .map(|d| load_run(d, seed_label(d)?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Inputs { runs, sweep: None })
}

/// The model files `input` names: itself when it is a file, or the
/// `.safetensors` files directly in a folder that is neither a run folder
/// nor a sweep nor a folder of runs; None for those.
fn model_files(input: &Path) -> Result<Option<Vec<PathBuf>>> {
    if input.is_file() {
        return Ok(Some(vec![input.to_path_buf()]));
    }
    if !input.is_dir()
        || layout::kind_of(input) == Some(Kind::Sweep)
        || input.join(layout::CONFIG).exists()
    {
        return Ok(None);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("reading {}", input.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    Ok((!files.is_empty()).then_some(files))
}

/// A model file as a finished run: its evaluation is made once into
/// `cache/model-files/<stem>-<hash>/` (the hash covers the file's bytes,
/// the data folder and TTA) and read from there after; labelled by the
/// file's stem, which is unique in a folder where names may repeat (a
/// model and its int8 copy share one).
fn adopt(file: &Path, data: &Path, tta: bool) -> Result<Run> {
    crate::artifact::ModelMeta::read(file).with_context(|| {
        format!(
            "fer report reads run folders, sweeps and model files; {} is none of these",
            file.display()
        )
    })?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut h = blake3::Hasher::new();
    h.update(&bytes);
    h.update(&[tta as u8]);
    h.update(
        std::fs::canonicalize(data)
            .unwrap_or_else(|_| data.to_path_buf())
            .to_string_lossy()
            .as_bytes(),
    );
    let key = h.finalize().to_hex()[..16].to_string();
    let stem = file
        .file_stem()
        .map_or_else(|| "model".to_string(), |s| s.to_string_lossy().to_string());
    let dir = layout::cache_dir()
        .join("model-files")
        .join(format!("{stem}-{key}"));
    let rd = RunDir::new(&dir);
    if !rd.is_finished() {
        eprintln!(
            "report: scoring {} on its validation split and the test split{} (once: kept in {})",
            file.display(),
            if tta { " with TTA" } else { "" },
            dir.display()
        );
        crate::train::adopt_model_file(file, data, tta, &dir)?;
    }
    let mut run = load_run(&rd, Some(stem))?;
    run.source = Some(file.to_path_buf());
    run.config_hash = blake3::hash(&bytes).to_hex()[..16].to_string();
    Ok(run)
}

/// `<name> seed <s>` for one seed's training in a repeated run (its
/// siblings share its name), else None: the run's own name.
fn seed_label(d: &RunDir) -> Result<Option<String>> {
    let parent = d.path().parent().map(RunDir::new);
    let Some((unit, n)) = d
        .path()
        .file_name()
        .and_then(|n| crate::config::Unit::of_dir(n.to_str()?))
        .filter(|_| parent.as_ref().is_some_and(|p| p.seeds().exists()))
    else {
        return Ok(None);
    };
    let cfg: RunConfig = crate::config::load_yaml(&d.config())?;
    Ok(Some(format!("{} {} {n}", cfg.name, unit.name())))
}

/// A sweep's journal, its resolved experiment and its finished trials.
fn discover_sweep(sd: &SweepDir) -> Result<Inputs> {
    let trials = rebuild(&read_events(&sd.journal())?);
    let exp: Experiment = crate::config::load_yaml(&sd.config())?;
    let mut runs = Vec::new();
    for t in &trials {
        let d = sd.trial(t.number);
        let fam = t.family.clone().unwrap_or_default();
        if d.is_finished() {
            runs.push(load_run(&d, Some(format!("trial {} {fam}", t.number)))?);
        } else if d.seeds().exists() {
            // A cross-validated trial: each fold's model, on its own fold.
            for (name, f) in layout::child_runs(d.path()) {
                if f.is_finished() {
                    let label = format!("trial {} {fam} {}", t.number, name.replace('-', " "));
                    runs.push(load_run(&f, Some(label))?);
                }
            }
        }
    }
    let sampler = exp.search.sampler.name();
    Ok(Inputs {
        runs,
        sweep: Some(SweepData {
            trials,
            objectives: if exp.search.is_multi() {
                exp.search.objectives.clone()
            } else {
                Vec::new()
            },
            objective: exp.search.objective,
            sampler,
            cv: exp.cv.is_some(),
        }),
    })
}

/// Loads the data and the models, and measures what the sections show.
/// What the options name beyond the runs, read and checked before any
/// measuring: the other data sets' class maps and the robustness baseline.
pub struct Named {
    maps: Vec<Option<crate::data::classmap::ClassMap>>,
    baseline: Option<(PathBuf, Classifier)>,
}

impl Named {
    pub fn read(a: &ReportOptions) -> Result<Named> {
        Ok(Named {
            maps: super::across::maps_for(&a.other_data, &a.class_maps)?,
            baseline: match &a.robustness_baseline {
                Some(f) => Some((f.clone(), Classifier::load(f, tch::Device::Cpu)?)),
                None => None,
            },
        })
    }
}

pub fn collect(
    inputs: Inputs,
    a: &ReportOptions,
    named: Named,
    name: String,
    out: &Path,
) -> Result<ReportData> {
    let Inputs { mut runs, sweep } = inputs;
    let Named { maps, baseline } = named;
    // The data the runs were trained on.
    let mut dcfg = runs[0].cfg.data.clone();
    // The runs' own folder, unless moved: `--data`, or `$FER2013_DIR` for
    // runs trained where their folder is not on this machine.
    let env = || {
        std::env::var_os("FER2013_DIR")
            .map(PathBuf::from)
            .filter(|_| !dcfg.dir.exists())
    };
    if let Some(d) = a.data.clone().or_else(env) {
        dcfg.dir = d;
    }
    let loaded = data::load(&dcfg, &layout::cache_dir())?;
    let stats = data::stats::compute(&dcfg, &loaded.data, loaded.seconds, loaded.from_cache);
    let digest = loaded.data.digest.clone();
    let calib = calibration_sample(&loaded.data.train);
    let classes = loaded.data.classes.clone();
    let k = classes.len();
    if let Some((f, b)) = &baseline {
        anyhow::ensure!(
            b.meta.classes == classes,
            "--robustness-baseline {}: its classes {:?} are not the runs' {:?}",
            f.display(),
            b.meta.classes,
            classes
        );
    }
    let (sets, of) = test_sets(&runs, &loaded.data, &dcfg.dir)?;
    drop(loaded);

    let (clfs, probs) = score_runs(&mut runs, &sets, &of, &classes, &calib, &dcfg.dir)?;
    let (cpu, threads) = (crate::cpu::model(), tch::get_num_threads());
    let deep = match sweep.as_ref().filter(|s| s.cv) {
        // Cross-validated trials: the winner's folds, not the luckiest fold.
        Some(s) => folds_of_best(&runs, s),
        None => deep_runs(&runs, sweep.is_some()),
    };
    for &i in &deep {
        let r = &mut runs[i];
        if r.cfg.ensemble.is_some() {
            r.members = members(&r.dir, &r.cfg)?;
        }
        r.calibration = reliability_bins(&probs[i], &sets[of[i]].labels, k);
    }
    let suite = Suite {
        images: a.robustness_images,
        digest: &digest,
        baseline: baseline.as_ref(),
    };
    suite.attach(&mut runs, &deep, &clfs, &sets, &of)?;
    for &i in &deep {
        runs[i].gradcam = gradcam_rows(&clfs[i], &probs[i], &sets[of[i]], &classes);
    }
    let others: Vec<(PathBuf, Option<crate::data::classmap::ClassMap>)> =
        a.other_data.iter().cloned().zip(maps).collect();
    let mut across = Vec::new();
    if !others.is_empty() {
        for &i in &deep {
            across.extend(super::across::rows(
                &runs[i],
                &clfs[i],
                &probs[i],
                &sets[of[i]],
                &others,
            )?);
        }
    }
    let (importance, notes) = importance_and_notes(a, sweep.is_some())?;
    // Paired tests need the same images: not across folds.
    let paired = match of.iter().all(|&t| t == of[0]) {
        true => paired(&runs, &probs, &sets[of[0]].labels, k),
        false => None,
    };
    let errors = best_on_val(&runs).map(|b| ErrorGallery {
        run: b,
        rows: error_rows(&probs[b], &sets[of[b]], &classes),
    });
    // In a sweep, only the fully reported recipes' folds or seeds.
    let shown: Vec<&Run> = if sweep.is_some() {
        deep.iter().map(|&i| &runs[i]).collect()
    } else {
        runs.iter().collect()
    };
    let seed_sets = seed_sets(&shown, sweep.as_ref(), &a.input);
    Ok(ReportData {
        name,
        input: a.input.clone(),
        out: out.to_path_buf(),
        robustness_images: a.robustness_images,
        test_images: sets[of[0]].len(),
        stats,
        digest,
        runs,
        deep,
        errors,
        sweep,
        cpu,
        threads,
        importance,
        notes,
        paired,
        command: a.command(out),
        seed_sets,
        across,
    })
}

/// Each run's model loaded and scored on its test set once, with its
/// latency (cached in the run folder) and what kind of model it is.
fn score_runs(
    runs: &mut [Run],
    sets: &[ImageSet],
    of: &[usize],
    classes: &[String],
    calib: &ImageSet,
    data_dir: &Path,
) -> Result<(Vec<Classifier>, Vec<Vec<f32>>)> {
    let mut clfs = Vec::new();
    let mut probs = Vec::new();
    for (r, &t) in runs.iter_mut().zip(of) {
        let test = &sets[t];
        let clf = Classifier::load(&r.dir.model(), tch::Device::Cpu)?;
        anyhow::ensure!(
        clf.meta.classes == classes,
        "{}: the model's classes {:?} are not the data set's {:?} ({}); a report compares models on their own data (`fer eval --class-map` evaluates across data sets)",
        r.dir.model().display(),
        clf.meta.classes,
        classes,
        data_dir.display()
    );
        probs.push(clf.predict_set(test, false, 256)?);
        r.latency = latency(&r.dir, &clf, calib);
        r.has_net = clf.net.is_some();
        r.int8_file = clf.quant.is_some();
        clfs.push(clf);
    }
    Ok((clfs, probs))
}

/// The robustness suite of the fully reported runs, each against the
/// baseline model when one is named (its suite run once per test set).
struct Suite<'a> {
    images: usize,
    digest: &'a str,
    baseline: Option<&'a (PathBuf, Classifier)>,
}

impl Suite<'_> {
    fn attach(
        &self,
        runs: &mut [Run],
        deep: &[usize],
        clfs: &[Classifier],
        sets: &[ImageSet],
        of: &[usize],
    ) -> Result<()> {
        let mut base_of: std::collections::BTreeMap<usize, Robustness> = Default::default();
        for &i in deep {
            if runs[i].has_net {
                let mut rob =
                    robustness(&runs[i], &clfs[i], &sets[of[i]], self.images, self.digest)?;
                if let Some((file, base)) = self.baseline {
                    let br = match base_of.entry(of[i]) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            eprintln!(
                                "report: robustness suite for the baseline {}",
                                file.display()
                            );
                            e.insert(robust::run(base, &sets[of[i]], Some(self.images), 0)?)
                        }
                    };
                    rob = rob.with_baseline(br, &file.display().to_string())?;
                }
                runs[i].robustness = Some(rob);
            }
        }
        Ok(())
    }
}

/// The parameter-importance tables (the sweep's own, then each
/// `--importance` folder) and the `--notes` text.
fn importance_and_notes(
    a: &ReportOptions,
    is_sweep: bool,
) -> Result<(Vec<crate::sweep::importance::SweepRankings>, Option<String>)> {
    let mut importance = Vec::new();
    if is_sweep {
        importance.push(crate::sweep::importance::of_sweep(&a.input, None)?);
    }
    for dir in &a.importance {
        importance.push(
            crate::sweep::importance::of_sweep(dir, None)
                .with_context(|| format!("--importance {}", dir.display()))?,
        );
    }
    let notes = a
        .notes
        .as_ref()
        .map(|p| {
            std::fs::read_to_string(p).with_context(|| format!("reading --notes {}", p.display()))
        })
        .transpose()?;
    Ok((importance, notes))
}

/// Each run's test images: the data set's test split, or for a
/// cross-validation fold its held-out fold; run `i` is scored on
/// `sets[of[i]]`. Refused where a run would have none.
fn test_sets(
    runs: &[Run],
    data: &data::FerData,
    dir: &Path,
) -> Result<(Vec<ImageSet>, Vec<usize>)> {
    let mut sets = vec![data.test.clone()];
    let mut of = Vec::with_capacity(runs.len());
    for r in runs {
        if r.cfg.cv.as_ref().is_some_and(|c| c.fold.is_some()) {
            sets.push(crate::train::make_splits(&r.cfg, data)?.test);
            of.push(sets.len() - 1);
        } else {
            of.push(0);
        }
        anyhow::ensure!(
            !sets[of[of.len() - 1]].is_empty(),
            "{}: no test images to report {} on (the data set has no test split); give it a test/ folder, data.test_fraction or data.test_list",
            dir.display(),
            r.label
        );
    }
    Ok((sets, of))
}

/// The runs that get a full section: every run, or in a sweep the best
/// trial of each family (by validation accuracy).
pub fn deep_runs(runs: &[Run], sweep: bool) -> Vec<usize> {
    if sweep {
        let mut best: Vec<(String, usize)> = Vec::new();
        for (i, r) in runs.iter().enumerate() {
            match best.iter_mut().find(|b| b.0 == r.out.family) {
                Some(b) if runs[b.1].out.val.overall.accuracy >= r.out.val.overall.accuracy => {}
                Some(b) => b.1 = i,
                None => best.push((r.out.family.clone(), i)),
            }
        }
        best.into_iter().map(|b| b.1).collect()
    } else {
        // Baselines without a network (majority, random) are in the table;
        // their confusion matrices say nothing new.
        (0..runs.len()).filter(|&i| runs[i].has_net).collect()
    }
}

/// The fold runs of a cross-validated sweep's best complete trial (by its
/// cross-validated value).
fn folds_of_best(runs: &[Run], s: &SweepData) -> Vec<usize> {
    let dir = s.objective.direction;
    let Some(best) = s
        .trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| t.value.map(|v| (t.number, v)))
        .reduce(|a, b| if dir.better(b.1, a.1) { b } else { a })
    else {
        return Vec::new();
    };
    let trial = format!("{:03}", best.0);
    (0..runs.len())
        .filter(|&i| {
            let parent = runs[i].dir.path().parent();
            parent.and_then(|p| p.file_name()) == Some(std::ffi::OsStr::new(&trial))
        })
        .collect()
}

/// The model with a network and the best validation accuracy (the first
/// of equals).
pub fn best_on_val(runs: &[Run]) -> Option<usize> {
    (0..runs.len())
        .filter(|&i| runs[i].has_net)
        .max_by(|&a, &b| {
            runs[a]
                .out
                .val
                .overall
                .accuracy
                .total_cmp(&runs[b].out.val.overall.accuracy)
                .then(b.cmp(&a))
        })
}

/// An ensemble's members, each read from its folder, with its overrides.
fn members(dir: &RunDir, cfg: &RunConfig) -> Result<Vec<Member>> {
    let members = cfg.members()?;
    let sets: Vec<String> = match &cfg.ensemble {
        Some(e) if !e.members.is_empty() => e
            .members
            .iter()
            .map(|m| {
                let s: Vec<String> = m.set.iter().map(|(k, v)| format!("`{k}: {v}`")).collect();
                if s.is_empty() {
                    "-".into()
                } else {
                    s.join(", ")
                }
            })
            .collect(),
        _ => vec!["-".into(); members.len()],
    };
    members
        .into_iter()
        .zip(sets)
        .map(|(m, set)| {
            let run = load_run(&dir.member(&m.dir), None)?;
            Ok(Member {
                seed: m.seed,
                dir: m.dir,
                set,
                out: run.out,
            })
        })
        .collect()
}

/// Batch-1 CPU latency of a model, measured once and kept in the run folder.
fn latency(dir: &RunDir, clf: &Classifier, calib: &ImageSet) -> Option<Latency> {
    let path = dir.latency();
    let cached: Option<Latency> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if cached.as_ref().is_some_and(|l| l.int8_measured) {
        return cached;
    }
    let net = clf.net.as_ref()?;
    let s = clf.meta.preprocess.size as i64;
    let median = |module: &dyn tch::nn::ModuleT| {
        let t = crate::eval::latency::forward_times(module, 1, s, 0.0, 50);
        (t[t.len() / 2] * 1000.0, t[t.len() * 95 / 100] * 1000.0)
    };
    let (fp_median, fp_p95) = cached.as_ref().map_or_else(
        || median(net.module.as_ref()),
        |l| (l.batch1_ms_median, l.batch1_ms_p95),
    );
    // A model that does not quantize (already int8, no weights) has no int8 figure.
    let int8 = (clf.quant.is_none())
        .then(|| crate::quant::int8_classifier(clf, &dir.model(), calib, 64).ok())
        .flatten()
        .and_then(|(q, _, _)| Some(median(q.net.as_ref()?.module.as_ref()).0));
    let l = Latency {
        batch1_ms_median: fp_median,
        batch1_ms_p95: fp_p95,
        threads: tch::get_num_threads() as usize,
        cpu: crate::cpu::model(),
        int8_batch1_ms_median: int8,
        int8_measured: true,
    };
    let _ = layout::write_atomic(&path, &serde_json::to_vec_pretty(&l).ok()?);
    Some(l)
}

/// A seeded sample of training images that calibrates int8 convolutions
/// for the latency figure (the arithmetic's speed, not its accuracy).
fn calibration_sample(train: &ImageSet) -> ImageSet {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut idx: Vec<usize> = (0..train.len()).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    idx.truncate(256);
    train.select(&idx)
}

/// The robustness suite for a run, computed once per (images, seed, data).
fn robustness(
    run: &Run,
    clf: &Classifier,
    test: &ImageSet,
    images: usize,
    digest: &str,
) -> Result<Robustness> {
    #[derive(Serialize, Deserialize)]
    struct Cached {
        digest: String,
        r: Robustness,
    }
    let path = run.dir.robustness();
    if let Some(c) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Cached>(&b).ok())
    {
        // A cache from an older, smaller suite is measured again.
        let whole = c.r.rows.len() == robust::ALL.len() * 3;
        if c.digest == digest && c.r.images == images.min(test.len()) && c.r.seed == 0 && whole {
            return Ok(c.r);
        }
    }
    eprintln!(
        "report: robustness suite for {} ({images} images)",
        run.label
    );
    let r = robust::run(clf, test, Some(images), 0)?;
    let c = Cached {
        digest: digest.to_string(),
        r,
    };
    if let Ok(b) = serde_json::to_vec_pretty(&c) {
        let _ = layout::write_atomic(&path, &b);
    }
    Ok(c.r)
}

/// Per confidence bin (15 equal-width): mean confidence, accuracy, count.
fn reliability_bins(probs: &[f32], labels: &[u8], k: usize) -> Vec<(f64, f64, usize)> {
    let nb = crate::eval::metrics::ECE_BINS;
    let mut acc = vec![(0f64, 0f64, 0usize); nb];
    for (row, &y) in probs.chunks_exact(k).zip(labels) {
        let k = argmax(row);
        let c = row[k] as f64;
        let b = ((c * nb as f64) as usize).min(nb - 1);
        acc[b].0 += c;
        acc[b].1 += f64::from(u8::from(k == y as usize));
        acc[b].2 += 1;
    }
    acc.into_iter()
        .map(|(c, a, n)| {
            if n > 0 {
                (c / n as f64, a / n as f64, n)
            } else {
                (0.0, 0.0, 0)
            }
        })
        .collect()
}

/// Per true class, the test images of its three most confident correct
/// answers then its three most confident mistakes (fewer where there are
/// fewer): the class and how many it has, and the image indices in order.
fn gradcam_picks(p: &[f32], test: &ImageSet, k: usize) -> (Vec<(usize, usize)>, Vec<usize>) {
    let pred: Vec<usize> = p.chunks_exact(k).map(argmax).collect();
    let conf = |j: usize| p[j * k + pred[j]];
    let mut pick = Vec::new();
    let mut rows_meta = Vec::new();
    for c in 0..k {
        let mut right: Vec<usize> = (0..test.len())
            .filter(|&j| test.labels[j] as usize == c && pred[j] == c)
            .collect();
        let mut wrong: Vec<usize> = (0..test.len())
            .filter(|&j| test.labels[j] as usize == c && pred[j] != c)
            .collect();
        right.sort_by(|&a, &b| conf(b).total_cmp(&conf(a)).then(a.cmp(&b)));
        wrong.sort_by(|&a, &b| conf(b).total_cmp(&conf(a)).then(a.cmp(&b)));
        let row: Vec<usize> = right
            .iter()
            .take(3)
            .chain(wrong.iter().take(3))
            .copied()
            .collect();
        rows_meta.push((c, row.len()));
        pick.extend(row);
    }
    (rows_meta, pick)
}

/// Grad-CAM tiles of the picked test images, one row per true class; `None`
/// for a model without spatial feature maps.
fn gradcam_rows(
    clf: &Classifier,
    p: &[f32],
    test: &ImageSet,
    classes: &[String],
) -> Option<Vec<(String, Vec<Tile>)>> {
    let nk = classes.len();
    let (rows_meta, pick) = gradcam_picks(p, test, nk);
    let cams = crate::eval::gradcam::gradcam(clf, &test.pixels, &pick, None)?;
    let side = cams.side;
    let mut rows = Vec::new();
    let mut k = 0;
    for (c, n) in rows_meta {
        let mut tiles = Vec::new();
        for _ in 0..n {
            let j = pick[k];
            let cls = cams.classes[k];
            tiles.push(Tile {
                side,
                gray: normalise(&cams.inputs[k * side * side..(k + 1) * side * side]),
                heat: Some(cams.maps[k * side * side..(k + 1) * side * side].to_vec()),
                caption: format!("{} {:.2}", classes[cls], p[j * nk + cls]),
                ok: cls == c,
            });
            k += 1;
        }
        rows.push((classes[c].clone(), tiles));
    }
    Some(rows)
}

/// The 18 most confident test mistakes, six to a row labelled `#first-last`.
fn error_rows(p: &[f32], test: &ImageSet, classes: &[String]) -> Vec<(String, Vec<Tile>)> {
    let nk = classes.len();
    // Three letters name a class on a tile, as long as they tell them apart.
    let short = |c: &str| c.chars().take(3).collect::<String>();
    let mut mistakes: Vec<(usize, usize, f32)> = (0..test.len())
        .filter_map(|j| {
            let row = &p[j * nk..(j + 1) * nk];
            let k = argmax(row);
            (k != test.labels[j] as usize).then_some((j, k, row[k]))
        })
        .collect();
    mistakes.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    let mut tiles: Vec<Tile> = mistakes
        .iter()
        .take(18)
        .map(|&(j, k, c)| Tile {
            side: crate::data::SIDE,
            gray: test.pixels[j * PIXELS..(j + 1) * PIXELS]
                .iter()
                .map(|&v| v as f32 / 255.0)
                .collect(),
            heat: None,
            caption: format!(
                "{}→{} {:.2}",
                short(&classes[test.labels[j] as usize]),
                short(&classes[k]),
                c
            ),
            ok: false,
        })
        .collect();
    let mut rows: Vec<(String, Vec<Tile>)> = Vec::new();
    while !tiles.is_empty() {
        let rest = tiles.split_off(tiles.len().min(6));
        let first = rows.len() * 6 + 1;
        rows.push((format!("#{first}-{}", first + tiles.len() - 1), tiles));
        tiles = rest;
    }
    rows
}
