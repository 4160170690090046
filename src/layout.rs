//! The on-disk layout of `runs/` and `reports/`, and the only module that
//! spells a run-folder file name: run, trial, member and sweep folders, the
//! files inside them, new-folder naming, the latest sweep of an experiment,
//! and telling a run folder from a sweep folder. Everything else asks here.
//! It also holds the two file helpers every writer shares (atomic writes,
//! the clock), so that nothing below it needs another module.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The resolved config of a run or a sweep.
pub const CONFIG: &str = "config.yaml";
/// One JSON record per epoch, appended as the run goes.
pub const METRICS_JSONL: &str = "metrics.jsonl";
/// The same records as CSV, rewritten each epoch.
pub const METRICS_CSV: &str = "metrics.csv";
/// The finished run's outcome: validation and test reports, timings.
pub const EVAL: &str = "eval.json";
/// One row per test image of the final evaluation: true and predicted
/// class and every probability (`eval::write_predictions`).
pub const PREDICTIONS: &str = "predictions.csv";
/// The shipped weights with their metadata (`artifact::ModelMeta`).
pub const MODEL: &str = "model.safetensors";
/// Where the run came from (`provenance::Provenance`).
pub const PROVENANCE: &str = "provenance.json";
/// What `fer mlflow sync` has already uploaded of this folder.
pub const MLFLOW_STATE: &str = "mlflow.json";
/// The sweep's append-only journal of trial events.
pub const TRIALS: &str = "trials.jsonl";
pub const SUMMARY_MD: &str = "summary.md";
pub const SUMMARY_JSON: &str = "summary.json";
/// The best trial's model, copied to the sweep folder.
pub const BEST_MODEL: &str = "best-model.safetensors";
/// A cross-validated sweep's best recipe, without its folds.
pub const BEST_CONFIG: &str = "best-config.yaml";
/// The report's cached measurements, kept in the run folder.
/// A report folder's page, and how it begins (what marks a folder as one).
pub const REPORT_README: &str = "README.md";
pub const REPORT_TITLE: &str = "# Report: ";
/// The one-writer lock of a run or trial folder (see `lock`).
pub const LOCK: &str = ".lock";
/// A repeated run's seeds and each figure's spread across them.
pub const SEEDS: &str = "seeds.json";
pub const LATENCY: &str = "latency.json";
pub const ROBUSTNESS: &str = "robustness.json";
const CHECKPOINTS: &str = "checkpoints";
const PLOTS: &str = "plots";
const TRIALS_DIR: &str = "trials";
/// Folders inside a run or sweep folder whose PNG and Markdown files are
/// artifacts worth uploading.
pub const ARTIFACT_SUBDIRS: [&str; 2] = [PLOTS, "report"];

/// Root of all outputs: `$FER_RUNS_DIR`, else `runs` in the working folder.
pub fn runs_root() -> PathBuf {
    std::env::var_os("FER_RUNS_DIR").map_or_else(|| PathBuf::from("runs"), PathBuf::from)
}

/// Decoded-data cache.
pub fn cache_dir() -> PathBuf {
    runs_root().join("cache")
}

/// Outputs of `fer data ...`.
pub fn data_dir() -> PathBuf {
    runs_root().join("data")
}

/// The class-distribution chart of `fer data stats`.
pub fn class_chart() -> PathBuf {
    data_dir().join("class_distribution.png")
}

/// Outputs of `fer bench ...`.
pub fn bench_dir() -> PathBuf {
    runs_root().join("bench")
}

/// The local MLflow server's database, artifacts, log and pid file.
pub fn mlflow_dir() -> PathBuf {
    runs_root().join("mlflow")
}

/// `fer serve`'s prediction log for drift monitoring.
pub fn serve_predictions() -> PathBuf {
    runs_root().join("serve").join("predictions.jsonl")
}

/// `reports/<name>`: where `fer report` writes when no `--out` is given.
pub fn report_dir(name: &str) -> PathBuf {
    PathBuf::from("reports").join(name)
}

/// A fresh folder `runs/<name>/<YYYYmmdd-HHMMSS>` (with `-1`, `-2`, ... when
/// two start in the same second). Not created.
pub fn new_run_dir(name: &str) -> PathBuf {
    let stamp = utc_stamp(unix_now() as i64);
    let base = runs_root().join(name);
    let mut dir = base.join(&stamp);
    let mut i = 1;
    while dir.exists() {
        dir = base.join(format!("{stamp}-{i}"));
        i += 1;
    }
    dir
}

/// The sweep of experiment `name` under `runs/<name>/` to resume, and why
/// it: the one unfinished sweep (no `summary.json`), else the newest
/// finished one. Sweeps whose journal is empty (nothing ever ran) are
/// passed over; two or more unfinished sweeps are ambiguous and refused
/// with their list.
pub fn latest_sweep(name: &str) -> Result<(PathBuf, String)> {
    latest_sweep_in(&runs_root().join(name), name)
}

fn latest_sweep_in(base: &Path, name: &str) -> Result<(PathBuf, String)> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(base)
        .with_context(|| format!("no sweeps to resume in {}", base.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| kind_of(p) == Some(Kind::Sweep))
        .filter(|p| std::fs::metadata(p.join(TRIALS)).is_ok_and(|m| m.len() > 0))
        .collect();
    dirs.sort();
    let unfinished: Vec<&PathBuf> = dirs
        .iter()
        .filter(|d| !d.join(SUMMARY_JSON).exists())
        .collect();
    match unfinished.as_slice() {
        [one] => Ok((
            (*one).clone(),
            "the only unfinished sweep of this experiment".into(),
        )),
        [] => dirs
            .pop()
            .map(|d| {
                (
                    d,
                    "the newest sweep; every sweep of this experiment is finished".into(),
                )
            })
            .with_context(|| format!("no sweep that ran a trial in {}", base.display())),
        many => {
            let list: Vec<String> = many.iter().map(|d| format!("  {}", d.display())).collect();
            anyhow::bail!(
                "{} unfinished sweeps of {name}; say which with --sweep-dir:\n{}",
                many.len(),
                list.join("\n")
            )
        }
    }
}

/// `YYYYmmdd-HHMMSS` in UTC, without a date-time dependency.
fn utc_stamp(secs: i64) -> String {
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

/// What kind of output folder this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A sweep: a journal of trials, each trial a run folder under `trials/`.
    Sweep,
    /// One training run (finished or not; `RunDir::is_finished` tells).
    Run,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Sweep => "sweep",
            Kind::Run => "run",
        })
    }
}

/// Checks that `dir` may receive a new `want` (a run or a sweep): it is
/// absent or empty. Anything else is refused, naming what is there and what
/// to do instead, so that nothing finished is overwritten. `flag` is the
/// option that chose the folder (`--run-dir`, `--sweep-dir`).
pub fn check_new(dir: &Path, want: Kind, flag: &str) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // A lock file alone is what a process killed before its first write leaves.
    let empty = std::fs::read_dir(dir)
        .with_context(|| format!("{}: not a folder", dir.display()))?
        .filter_map(|e| e.ok())
        .all(|e| e.file_name() == LOCK);
    if empty {
        return Ok(());
    }
    match kind_of(dir) {
        Some(k) if k == want => anyhow::bail!(
            "{} already holds a {k}; pass --resume to continue it, or choose another {flag} (nothing was written)",
            dir.display()
        ),
        Some(k) => anyhow::bail!(
            "{} holds a {k}, not a {want}; choose another {flag} (nothing was written)",
            dir.display()
        ),
        None => anyhow::bail!(
            "{} is not empty and holds no fer {want}; choose a new or empty {flag} (nothing was written)",
            dir.display()
        ),
    }
}

/// Checks that `dir` holds a `want` to resume.
pub fn check_resume(dir: &Path, want: Kind) -> Result<()> {
    match kind_of(dir) {
        Some(k) if k == want => Ok(()),
        Some(k) => {
            let how = match k {
                Kind::Run => format!("fer train --resume {}", dir.display()),
                Kind::Sweep => format!(
                    "fer sweep EXPERIMENT --resume --sweep-dir {}",
                    dir.display()
                ),
            };
            anyhow::bail!(
                "{} holds a {k}, not a {want}; resume it with `{how}`",
                dir.display()
            )
        }
        None => anyhow::bail!("{}: no {want} to resume here", dir.display()),
    }
}

/// Refuses to write the file `out` over finished work: over any of
/// `sources` (the files the command reads) always, over any other existing
/// file unless `replace` (the command's `--replace`). `flag` names the
/// option that chose `out`.
pub fn check_out_file(out: &Path, sources: &[&Path], flag: &str, replace: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if out.is_dir() {
        anyhow::bail!(
            "{}: is a folder; {flag} takes a file name (nothing was written)",
            out.display()
        );
    }
    let canon = std::fs::canonicalize(out).ok();
    if sources
        .iter()
        .any(|s| canon.is_some() && std::fs::canonicalize(s).ok() == canon)
    {
        anyhow::bail!(
            "{}: is a file this command reads; choose another {flag} (nothing was written)",
            out.display()
        );
    }
    if !replace {
        anyhow::bail!(
            "{}: exists already; choose another {flag}, or pass --replace to overwrite it (nothing was written)",
            out.display()
        );
    }
    Ok(())
}

/// Refuses a report folder that holds anything but an earlier report
/// (which is rewritten: a report is derived and can always be made again).
pub fn check_report_out(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        anyhow::bail!(
            "{}: is a file, not a report folder (nothing was written)",
            out.display()
        );
    }
    if let Some(k) = kind_of(out) {
        anyhow::bail!(
            "{}: holds a {k}; choose another --out for the report (nothing was written)",
            out.display()
        );
    }
    let empty = std::fs::read_dir(out)
        .with_context(|| format!("{}: not a folder", out.display()))?
        .next()
        .is_none();
    let readme = std::fs::read_to_string(out.join(REPORT_README)).unwrap_or_default();
    if empty || readme.starts_with(REPORT_TITLE) {
        return Ok(());
    }
    anyhow::bail!(
        "{}: is not empty and holds no fer report; choose a new or empty --out (nothing was written)",
        out.display()
    )
}

/// The one definition of a run or sweep folder: a sweep has a journal; a run
/// has its resolved config and either a metrics log or a checkpoint folder
/// (a run killed before its first epoch has only the latter).
pub fn kind_of(dir: &Path) -> Option<Kind> {
    if dir.join(TRIALS).exists() {
        Some(Kind::Sweep)
    } else if dir.join(CONFIG).exists()
        && (dir.join(METRICS_JSONL).exists()
            || dir.join(CHECKPOINTS).is_dir()
            || dir.join(SEEDS).exists()
            || !child_runs(dir).is_empty())
    {
        Some(Kind::Run)
    } else {
        None
    }
}

/// Every sweep or run folder at or under `root`, at most `depth` levels down
/// (not inside a sweep or run: its trials and members belong to it), sorted.
pub fn find_outputs(root: &Path, depth: usize) -> Vec<(PathBuf, Kind)> {
    fn walk(d: &Path, out: &mut Vec<(PathBuf, Kind)>, depth: usize) {
        if let Some(k) = kind_of(d) {
            out.push((d.to_path_buf(), k));
            return;
        }
        if depth == 0 {
            return;
        }
        let Ok(rd) = std::fs::read_dir(d) else {
            return;
        };
        let mut subs: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        for s in subs {
            walk(&s, out, depth - 1);
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out, depth);
    out
}

/// A run folder: what `fer train` writes, and what a trial or an ensemble
/// member is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new(dir: impl Into<PathBuf>) -> RunDir {
        RunDir(dir.into())
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn config(&self) -> PathBuf {
        self.0.join(CONFIG)
    }
    pub fn metrics_jsonl(&self) -> PathBuf {
        self.0.join(METRICS_JSONL)
    }
    pub fn metrics_csv(&self) -> PathBuf {
        self.0.join(METRICS_CSV)
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.0.join(CHECKPOINTS)
    }
    pub fn last(&self) -> PathBuf {
        self.checkpoints().join("last.safetensors")
    }
    pub fn best(&self) -> PathBuf {
        self.checkpoints().join("best.safetensors")
    }
    /// The weight average with its recomputed BatchNorm statistics.
    pub fn swa(&self) -> PathBuf {
        self.checkpoints().join("swa.safetensors")
    }
    pub fn model(&self) -> PathBuf {
        self.0.join(MODEL)
    }
    pub fn eval(&self) -> PathBuf {
        self.0.join(EVAL)
    }
    pub fn predictions(&self) -> PathBuf {
        self.0.join(PREDICTIONS)
    }
    pub fn plots(&self) -> PathBuf {
        self.0.join(PLOTS)
    }
    pub fn curves_png(&self) -> PathBuf {
        self.plots().join("curves.png")
    }
    /// The report's cached latency measurement.
    pub fn latency(&self) -> PathBuf {
        self.0.join(LATENCY)
    }
    /// The report's cached robustness measurement.
    pub fn robustness(&self) -> PathBuf {
        self.0.join(ROBUSTNESS)
    }
    /// Member `tag` of an ensemble run (`member-<seed>` or `member-<k>`).
    pub fn member(&self, tag: &str) -> RunDir {
        RunDir(self.0.join(tag))
    }
    /// A repeated run's `seeds.json`.
    pub fn seeds(&self) -> PathBuf {
        self.0.join(SEEDS)
    }
    /// Finished: its outcome is written (the last file a run writes).
    pub fn is_finished(&self) -> bool {
        self.eval().exists() && self.config().exists()
    }
}

/// The trainings inside a run folder, as `(name, folder)`: a repeated
/// run's `seed-<s>/` or `fold-<k>/` and an ensemble's `member-<tag>/` that hold a run
/// config, sorted by name.
pub fn child_runs(dir: &Path) -> Vec<(String, RunDir)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<(String, RunDir)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let child = ["seed-", "fold-", "member-"]
                .iter()
                .any(|p| name.starts_with(p))
                && e.path().join(CONFIG).exists();
            child.then(|| (name, RunDir(e.path())))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The folder name of an ensemble member.
pub fn member_name(tag: impl std::fmt::Display) -> String {
    format!("member-{tag}")
}

/// A sweep folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepDir(pub PathBuf);

impl SweepDir {
    pub fn new(dir: impl Into<PathBuf>) -> SweepDir {
        SweepDir(dir.into())
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn config(&self) -> PathBuf {
        self.0.join(CONFIG)
    }
    pub fn journal(&self) -> PathBuf {
        self.0.join(TRIALS)
    }
    /// Trial `n`'s run folder, `trials/NNN`.
    pub fn trial(&self, n: usize) -> RunDir {
        RunDir(self.0.join(TRIALS_DIR).join(format!("{n:03}")))
    }
    pub fn summary_md(&self) -> PathBuf {
        self.0.join(SUMMARY_MD)
    }
    pub fn summary_json(&self) -> PathBuf {
        self.0.join(SUMMARY_JSON)
    }
    pub fn best_config(&self) -> PathBuf {
        self.0.join(BEST_CONFIG)
    }

    pub fn best_model(&self) -> PathBuf {
        self.0.join(BEST_MODEL)
    }
}

/// A model path given as a file or as a run folder (its `model.safetensors`).
pub fn model_file_of(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join(MODEL)
    } else {
        path.to_path_buf()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path`, so a reader (or a kill) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_picks_the_unfinished_sweep_and_refuses_to_guess() {
        let tmp = tempfile::tempdir().unwrap();
        let sweep = |name: &str, trials: &str, finished: bool| {
            let d = tmp.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(CONFIG), "name: e\n").unwrap();
            std::fs::write(d.join(TRIALS), trials).unwrap();
            if finished {
                std::fs::write(d.join(SUMMARY_JSON), "{}").unwrap();
            }
            d
        };
        let old = sweep("20261201-000000", "{}\n", false);
        // Newer, but finished, and a folder a refused launch left empty.
        sweep("20261202-000000", "{}\n", true);
        sweep("20261203-000000", "", false);
        let (d, why) = latest_sweep_in(tmp.path(), "e").unwrap();
        assert_eq!(d, old);
        assert!(why.contains("only unfinished"), "{why}");
        let other = sweep("20261204-000000", "{}\n", false);
        let err = latest_sweep_in(tmp.path(), "e").unwrap_err().to_string();
        assert!(
            err.contains("2 unfinished sweeps of e; say which with --sweep-dir"),
            "{err}"
        );
        assert!(err.contains(&other.display().to_string()), "{err}");
        std::fs::write(old.join(SUMMARY_JSON), "{}").unwrap();
        std::fs::write(other.join(SUMMARY_JSON), "{}").unwrap();
        let (d, why) = latest_sweep_in(tmp.path(), "e").unwrap();
        assert_eq!(d, other, "the newest finished sweep, not the empty one");
        assert!(why.contains("every sweep"), "{why}");
    }

    #[test]
    fn stamp_is_utc_civil_time() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        // 2026-12-01 22:40:40 UTC.
        assert_eq!(utc_stamp(1_796_164_840), "20261201-224040");
    }

    #[test]
    fn kinds_are_told_apart_by_their_files() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        assert_eq!(kind_of(d), None);
        std::fs::write(d.join(CONFIG), "").unwrap();
        assert_eq!(kind_of(d), None, "a config alone is not a run");
        std::fs::create_dir(d.join(CHECKPOINTS)).unwrap();
        assert_eq!(kind_of(d), Some(Kind::Run));
        assert!(!RunDir::new(d).is_finished());
        std::fs::write(d.join(EVAL), "{}").unwrap();
        assert!(RunDir::new(d).is_finished());
        std::fs::write(d.join(TRIALS), "").unwrap();
        assert_eq!(kind_of(d), Some(Kind::Sweep));
    }

    #[test]
    fn a_new_run_or_sweep_needs_a_new_or_empty_folder() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("x");
        check_new(&d, Kind::Run, "--run-dir").unwrap();
        std::fs::create_dir(&d).unwrap();
        check_new(&d, Kind::Sweep, "--sweep-dir").unwrap();
        std::fs::write(d.join("notes.txt"), "").unwrap();
        let e = check_new(&d, Kind::Run, "--run-dir")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not empty and holds no fer run"), "{e}");
        let run = RunDir::new(t.path().join("r"));
        std::fs::create_dir_all(run.checkpoints()).unwrap();
        std::fs::write(run.config(), "").unwrap();
        let e = check_new(run.path(), Kind::Run, "--run-dir")
            .unwrap_err()
            .to_string();
        assert!(e.contains("already holds a run; pass --resume"), "{e}");
        let e = check_new(run.path(), Kind::Sweep, "--sweep-dir")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("holds a run, not a sweep; choose another --sweep-dir"),
            "{e}"
        );
        check_resume(run.path(), Kind::Run).unwrap();
        let e = check_resume(run.path(), Kind::Sweep)
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds a run, not a sweep"), "{e}");
        let e = check_resume(&d, Kind::Run).unwrap_err().to_string();
        assert!(e.contains("no run to resume here"), "{e}");
    }

    #[test]
    fn outputs_are_found_in_order_and_not_inside_each_other() {
        let t = tempfile::tempdir().unwrap();
        let sweep = SweepDir::new(t.path().join("exp/b"));
        std::fs::create_dir_all(sweep.trial(0).checkpoints()).unwrap();
        std::fs::write(sweep.journal(), "").unwrap();
        std::fs::write(sweep.trial(0).config(), "").unwrap();
        let run = RunDir::new(t.path().join("exp/a"));
        std::fs::create_dir_all(run.checkpoints()).unwrap();
        std::fs::write(run.config(), "").unwrap();
        let found = find_outputs(t.path(), 3);
        assert_eq!(
            found,
            [(run.0.clone(), Kind::Run), (sweep.0.clone(), Kind::Sweep)]
        );
    }
}
