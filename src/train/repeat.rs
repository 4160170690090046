//! A repeated run: the same recipe trained once per seed (`seeds:` or
//! `repeat:`, into `seed-<s>/`) or once per cross-validation fold (`cv:`,
//! into `fold-<k>/`), each trained, resumed from its checkpoint, or reused
//! once finished, and every figure's mean, standard deviation and
//! Student-t interval across them in `seeds.json`, rewritten after each.
//! The seed moves initialisation, data order, augmentation and dropout; the
//! validation split stays the same, so every seed selects its epoch on the
//! same images. A fold moves the test images (its held-out fold) too.

use super::{run_with, Control, Listener, Outcome};
use crate::config::{RunConfig, Unit};
use crate::eval::stats::{spread, Spread};
use crate::layout::{write_atomic, RunDir};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// `seeds.json`: the seeds, each finished training's figures, and each
/// figure's spread across them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedsFile {
    pub name: String,
    /// What the trainings differ in (files before folds existed: seeds).
    #[serde(default)]
    pub unit: Unit,
    /// The seeds, or the fold numbers (1-based).
    pub seeds: Vec<u64>,
    /// Finished trainings, in the order of `seeds`.
    pub runs: Vec<SeedRun>,
    /// Each figure across the finished trainings (from two on).
    pub spread: BTreeMap<String, Spread>,
    /// Every seed is trained.
    pub complete: bool,
}

/// One seed's training and its figures (`val/acc`, `test/acc`,
/// `test/f1_weighted`, `test/f1_macro`, `test/<half>/acc`, `test/f1/<class>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedRun {
    pub seed: u64,
    /// Its folder, relative to the repeated run's.
    pub dir: String,
    pub best_epoch: Option<usize>,
    pub epochs_run: usize,
    pub train_seconds: f64,
    pub figures: BTreeMap<String, f64>,
}

/// The figures that go across seeds, in the order they are shown.
pub fn figures_of(o: &Outcome) -> BTreeMap<String, f64> {
    let mut f = BTreeMap::new();
    if o.val.overall.n > 0 {
        f.insert("val/acc".into(), o.val.overall.accuracy);
        f.insert("val/f1_macro".into(), o.val.overall.macro_f1);
    }
    let t = &o.test.overall;
    f.insert("test/acc".into(), t.accuracy);
    f.insert("test/f1_weighted".into(), t.weighted_f1);
    f.insert("test/f1_macro".into(), t.macro_f1);
    for (origin, m) in &o.test.by_origin {
        f.insert(format!("test/{}/acc", origin.to_lowercase()), m.accuracy);
    }
    for (name, c) in o.test.classes.iter().zip(&t.per_class) {
        f.insert(format!("test/f1/{name}"), c.f1);
    }
    f
}

impl SeedsFile {
    fn new(cfg: &RunConfig, unit: Unit, seeds: Vec<u64>) -> SeedsFile {
        SeedsFile {
            name: cfg.name.clone(),
            unit,
            seeds,
            runs: vec![],
            spread: BTreeMap::new(),
            complete: false,
        }
    }

    /// Adds a finished training and recomputes the spreads.
    fn push(&mut self, run: SeedRun) {
        self.runs.retain(|r| r.seed != run.seed);
        self.runs.push(run);
        let order = |s: u64| self.seeds.iter().position(|&x| x == s);
        self.runs.sort_by_key(|r| order(r.seed));
        let keys: Vec<String> = self
            .runs
            .iter()
            .flat_map(|r| r.figures.keys().cloned())
            .collect();
        self.spread = keys
            .into_iter()
            .filter_map(|k| {
                let v: Option<Vec<f64>> = self
                    .runs
                    .iter()
                    .map(|r| r.figures.get(&k).copied())
                    .collect();
                Some((k.clone(), spread(&v?)?))
            })
            .collect();
        self.complete = self.runs.len() == self.seeds.len();
    }

    pub fn read(path: &Path) -> Result<SeedsFile> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a seeds.json written by fer", path.display()))
    }

    fn write(&self, rd: &RunDir) -> Result<()> {
        write_atomic(&rd.seeds(), &serde_json::to_vec_pretty(self)?)
    }

    /// The headline figures, a row each: mean ± standard deviation with the
    /// 95% interval of the mean, then every seed's value (percent).
    pub fn table(&self) -> String {
        spread_table(&self.heads(), &self.rows())
    }

    /// One column head per finished training (`seed 0`, `fold 2`).
    pub fn heads(&self) -> Vec<String> {
        self.runs
            .iter()
            .map(|r| format!("{} {}", self.unit.name(), r.seed))
            .collect()
    }

    /// The headline figures with their spread and each seed's value.
    pub fn rows(&self) -> Vec<SpreadRow> {
        self.headline()
            .into_iter()
            .map(|(k, sp)| {
                let each = self
                    .runs
                    .iter()
                    .map(|r| r.figures.get(k).copied())
                    .collect();
                (k.to_string(), *sp, each)
            })
            .collect()
    }

    /// The figures of the table: every one but per-class F1.
    fn headline(&self) -> Vec<(&str, &Spread)> {
        let mut rows: Vec<(&str, &Spread)> = self
            .spread
            .iter()
            .filter(|(k, _)| !k.starts_with("test/f1/"))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        // val first, then test; within each, accuracy first.
        rows.sort_by_key(|(k, _)| (!k.starts_with("val/"), !k.ends_with("/acc"), k.to_string()));
        rows
    }
}

/// One figure across seeds: its name, its spread and each seed's value
/// (None where that seed has none).
pub type SpreadRow = (String, Spread, Vec<Option<f64>>);

/// The Markdown table of figures across seeds (the terminal's and the
/// report's): mean ± sd [95% interval], then each seed's value; fractions
/// in percent, losses as they are.
pub fn spread_table(heads: &[String], rows: &[SpreadRow]) -> String {
    let mut s = format!(
        "| figure | mean ± sd [95% interval] | {} |\n|---|---:|{}\n",
        heads.join(" | "),
        "---:|".repeat(heads.len())
    );
    for (k, sp, each) in rows {
        let fraction = !k.contains("loss");
        let show = |v: f64| {
            if fraction {
                format!("{:.2}", v * 100.0)
            } else {
                format!("{v:.4}")
            }
        };
        let cells: Vec<String> = each.iter().map(|v| v.map_or("-".into(), show)).collect();
        let spread = if fraction { sp.percent() } else { sp.plain() };
        let _ = writeln!(s, "| {k} | {spread} | {} |", cells.join(" | "));
    }
    s
}

/// Trains (or resumes, or reuses) every seed of the repeated config `cfg`
/// in `dir`, telling `listeners` every epoch, and writes `seeds.json`.
pub fn run(
    cfg: &RunConfig,
    dir: &Path,
    resume: bool,
    listeners: &mut [&mut dyn Listener],
) -> Result<SeedsFile> {
    Ok(run_first(cfg, dir, resume, listeners, &mut [], None)?.0)
}

/// As [`run`], with `first` listeners and a `control` for the first
/// training only (a sweep prunes a cross-validated trial on its first
/// fold, whose curve every trial shares). Returns whether the control
/// stopped it; the later trainings are then not started.
pub fn run_first(
    cfg: &RunConfig,
    dir: &Path,
    resume: bool,
    listeners: &mut [&mut dyn Listener],
    first: &mut [&mut dyn Listener],
    mut control: Option<&mut dyn Control>,
) -> Result<(SeedsFile, bool)> {
    let (unit, units) = cfg.repeat_units()?;
    if units.is_empty() {
        bail!(
            "{}: not a repeated config (no seeds, repeat or cv)",
            cfg.name
        );
    }
    let seeds: Vec<u64> = units.iter().map(|u| u.0).collect();
    let _lock = crate::lock::acquire(dir)?;
    let rd = RunDir(dir.to_path_buf());
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !resume {
        write_atomic(&rd.config(), cfg.to_yaml()?.as_bytes())?;
    }
    if !dir.join(crate::provenance::FILE).exists() {
        let mut prov = crate::provenance::Provenance::here();
        prov.config = Some(serde_json::to_value(cfg)?);
        prov.save(dir)?;
    }
    let mut file = SeedsFile::new(cfg, unit, seeds);
    // Written first: it marks the folder as a (repeated) run.
    file.write(&rd)?;
    let n = units.len();
    let what = unit.name();
    for (k, (seed, mcfg)) in units.into_iter().enumerate() {
        let mrd = RunDir(dir.join(unit.dir_name(seed)));
        let out = if mrd.is_finished() {
            check_same(&mcfg, &mrd, unit, seed)?;
            eprintln!(
                "{what} {}/{n} ({seed}): finished in {}, reused",
                k + 1,
                mrd.path().display()
            );
            Outcome::read(mrd.path())?
        } else {
            let started = mrd.last().exists();
            if started && resume {
                // `fer train --resume` has judged and recorded any change
                // to the recipe (train::resume): an unfinished seed follows.
                follow(&mcfg, &mrd)?;
            } else if started {
                check_same(&mcfg, &mrd, unit, seed)?;
            }
            eprintln!("{what} {}/{n} ({seed}) in {}", k + 1, mrd.path().display());
            if k == 0 {
                let mut all: Vec<&mut dyn Listener> = listeners
                    .iter_mut()
                    .map(|l| &mut **l as &mut dyn Listener)
                    .chain(first.iter_mut().map(|l| &mut **l as &mut dyn Listener))
                    .collect();
                run_with(&mcfg, mrd.path(), started, &mut all, control.take())?
            } else {
                run_with(&mcfg, mrd.path(), started, listeners, None)?
            }
        };
        let pruned = out.pruned;
        file.push(SeedRun {
            seed,
            dir: unit.dir_name(seed),
            best_epoch: out.best_epoch,
            epochs_run: out.epochs_run,
            train_seconds: out.train_seconds,
            figures: figures_of(&out),
        });
        file.write(&rd)?;
        if pruned {
            return Ok((file, true));
        }
    }
    Ok((file, false))
}

/// Writes the recipe a resumed repeated run now has into an unfinished
/// seed's folder, saying so when it changed.
fn follow(want: &RunConfig, mrd: &RunDir) -> Result<()> {
    if differs(want, mrd)? {
        eprintln!(
            "{}: resumed with the run's accepted changes",
            mrd.path().display()
        );
        write_atomic(&mrd.config(), want.to_yaml()?.as_bytes())?;
    }
    Ok(())
}

/// Refuses a seed's folder trained (or started) with another recipe than
/// this seed's: its figures would not belong in the spread.
fn check_same(want: &RunConfig, mrd: &RunDir, unit: Unit, seed: u64) -> Result<()> {
    if differs(want, mrd)? {
        bail!(
            "{}: this training differs from {} {seed} of {}; move it away or start a new run folder",
            mrd.config().display(),
            unit.name(),
            want.name
        );
    }
    Ok(())
}

/// Whether the recipe in a seed's folder differs from `want`, apart from
/// where the data sat and where runs were logged.
fn differs(want: &RunConfig, mrd: &RunDir) -> Result<bool> {
    let mut found = RunConfig::load(&mrd.config(), &[])?;
    found.data.dir.clone_from(&want.data.dir);
    found.tracking.clone_from(&want.tracking);
    Ok(&found != want)
}

/// One epoch of a learning curve across seeds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BandPoint {
    pub epoch: usize,
    pub mean: f64,
    /// Sample standard deviation across the seeds (0 with one seed).
    pub std: f64,
    /// Seeds that reached this epoch.
    pub n: usize,
}

/// The mean and standard deviation of `key` at each epoch over the seeds of
/// the repeated run in `rd` that reached it (read from their
/// `metrics.jsonl`, so a run still training shows its epochs so far).
pub fn curve_band(rd: &RunDir, f: &SeedsFile, key: crate::metric::MetricKey) -> Vec<BandPoint> {
    let dirs: Vec<RunDir> = f
        .seeds
        .iter()
        .map(|&s| RunDir(rd.path().join(f.unit.dir_name(s))))
        .collect();
    curve_band_of(&dirs, key)
}

/// As [`curve_band`], over any run folders of one recipe (a sweep's trial
/// and its seed repeats).
pub fn curve_band_of(dirs: &[RunDir], key: crate::metric::MetricKey) -> Vec<BandPoint> {
    let histories: Vec<Vec<super::EpochRecord>> =
        dirs.iter().map(crate::metric::read_history).collect();
    let last = histories.iter().map(|h| h.len()).max().unwrap_or(0);
    (1..=last)
        .filter_map(|epoch| {
            let v: Vec<f64> = histories
                .iter()
                .filter_map(|h| h.iter().find(|r| r.epoch == epoch))
                .filter_map(|r| key.get(r))
                .filter(|v| v.is_finite())
                .collect();
            if v.is_empty() {
                return None;
            }
            let n = v.len();
            let mean = v.iter().sum::<f64>() / n as f64;
            let std = spread(&v).map_or(0.0, |s| s.std);
            Some(BandPoint {
                epoch,
                mean,
                std,
                n,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, acc: f64) -> SeedRun {
        SeedRun {
            seed,
            dir: Unit::Seed.dir_name(seed),
            best_epoch: Some(1),
            epochs_run: 1,
            train_seconds: 1.0,
            figures: [
                ("val/acc".to_string(), acc),
                ("test/acc".to_string(), acc - 0.01),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn the_spread_follows_the_finished_seeds() {
        let cfg: RunConfig = crate::config::parse_yaml(
            Path::new("r.yaml"),
            "name: r\nrepeat: 3\nmodel: {kind: majority}\n",
        )
        .unwrap();
        let mut f = SeedsFile::new(&cfg, Unit::Seed, cfg.repeat_seeds().unwrap());
        assert_eq!(f.seeds, vec![0, 1, 2]);
        f.push(run(1, 0.60));
        assert!(f.spread.is_empty() && !f.complete, "one seed has no spread");
        f.push(run(0, 0.70));
        f.push(run(2, 0.68));
        assert!(f.complete);
        assert_eq!(f.runs.iter().map(|r| r.seed).collect::<Vec<_>>(), [0, 1, 2]);
        let s = f.spread["val/acc"];
        assert_eq!(s.n, 3);
        assert!((s.mean - 0.66).abs() < 1e-12, "{s:?}");
        assert!(
            s.lo < 0.60 && s.hi > 0.70,
            "3 seeds give a wide interval: {s:?}"
        );
        let table = f.table();
        assert!(table.starts_with("| figure |"), "{table}");
        // val before test, each row with every seed's value.
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert!(rows[0].starts_with("| val/acc | 66.00% ± 5.29"), "{table}");
        assert!(rows[0].ends_with("| 70.00 | 60.00 | 68.00 |"), "{table}");
        assert!(rows[1].starts_with("| test/acc |"), "{table}");
    }
}
