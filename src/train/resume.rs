//! `fer train --resume` continues the recipe the run recorded. The run's
//! config as it started is kept in `provenance.json`; a resume that would
//! train something else (an edited `config.yaml`, a `--set` of a recipe key,
//! other data) is refused with the differences listed. More epochs, other
//! threads or another tracking server are a real need: accepted with
//! `--set`, written into `config.yaml`, and recorded in the provenance.

use crate::config::diff::{self, Change};
use crate::config::RunConfig;
use crate::layout::RunDir;
use crate::lock::FolderLock;
use crate::provenance::{Provenance, Resumed};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Keys a resume may change, with `--set`.
pub const MAY_CHANGE: &[&str] = &["train.epochs", "train.threads", "tracking"];

/// Holds the run, loads its config with `overrides` (and `data` for
/// `data.dir`), checks it against the record, and records accepted changes.
/// The lock is held for the caller's training (a nested acquire).
pub fn prepare(
    dir: &Path,
    overrides: &[String],
    data: Option<&PathBuf>,
) -> Result<(RunConfig, FolderLock)> {
    crate::layout::check_resume(dir, crate::layout::Kind::Run)?;
    let rd = RunDir(dir.to_path_buf());
    let ctx = || format!("resuming {}", dir.display());
    let mut cfg = RunConfig::load(&rd.config(), overrides).with_context(ctx)?;
    if let Some(d) = data {
        cfg.data.dir = d.clone();
    }
    let prov = Provenance::load(dir);
    let recorded = match prov.as_ref().and_then(|p| p.config.clone()) {
        Some(v) => diff::as_read::<RunConfig>(v),
        // Runs from before the record: only `--set` can be compared.
        None => serde_json::to_value(RunConfig::load(&rd.config(), &[]).with_context(ctx)?)?,
    };
    // The data is compared by content once loaded (see `check_data`).
    let changes = diff::changes(&recorded, &cfg, overrides, &["data.dir"])?;
    let changes = diff::judge(&format!("resuming {}", dir.display()), changes, MAY_CHANGE)?;
    let done = crate::metric::read_history(&rd).len();
    if cfg.train.total_epochs() < done {
        anyhow::bail!(
            "resuming {}: {} epochs in all (train.epochs, with train.swa.epochs) is fewer than the {done} already trained",
            dir.display(),
            cfg.train.total_epochs()
        );
    }
    // Checked without the lock (reading only); recorded with it.
    let lock = crate::lock::acquire(dir)?;
    if !changes.is_empty() {
        record(dir, &cfg, prov.unwrap_or_default(), changes)?;
    }
    Ok((cfg, lock))
}

/// Writes the accepted changes into the run's config and provenance.
fn record(dir: &Path, cfg: &RunConfig, mut prov: Provenance, changes: Vec<Change>) -> Result<()> {
    for c in &changes {
        eprintln!("resume: {c}; recorded in provenance.json");
    }
    crate::layout::write_atomic(
        &RunDir(dir.to_path_buf()).config(),
        cfg.to_yaml()?.as_bytes(),
    )?;
    prov.config = Some(serde_json::to_value(cfg)?);
    prov.resumes.push(Resumed::now(changes));
    prov.save(dir)
}

/// Refuses to resume on data other than the run's (by content digest).
pub fn check_data(dir: &Path, digest: &str, data_dir: &Path) -> Result<()> {
    let Some(p) = Provenance::load(dir) else {
        return Ok(());
    };
    match p.data_digest {
        Some(was) if was != digest => anyhow::bail!(
            "resuming {}: the run was trained on data with digest {} ({}), but {} has digest {}; \
             resume with the same data (--data or $FER2013_DIR), or start a new run",
            dir.display(),
            &was[..was.len().min(12)],
            p.data_dir.as_deref().unwrap_or("its data.dir"),
            data_dir.display(),
            &digest[..digest.len().min(12)]
        ),
        _ => Ok(()),
    }
}
