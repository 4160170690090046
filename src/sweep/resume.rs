//! `fer sweep --resume` continues the experiment the sweep recorded in its
//! folder. The experiment given now (the file as it is, with `--set`) is
//! compared with that record: more trials, more minutes or another tracking
//! server are accepted with `--set` and recorded; any other difference, or
//! data whose content differs from the trials', is refused with the list.

use super::config::Experiment;
use crate::config::diff;
use crate::layout::SweepDir;
use crate::provenance::{Provenance, Resumed};
use anyhow::Result;
use std::path::Path;

/// Keys a resume may change, with `--set`.
pub const MAY_CHANGE: &[&str] = &["search.n_trials", "search.max_minutes", "tracking"];

/// Refuses a sweep whose `config.yaml` no longer says what the sweep
/// recorded when it started (or was last resumed): its trials would train
/// different recipes under one name. Sweeps from before the record pass.
pub fn check_recorded(dir: &Path, what: &str) -> Result<()> {
    let Some(recorded) = Provenance::load(dir).and_then(|p| p.config) else {
        return Ok(());
    };
    let recorded = diff::as_read::<Experiment>(recorded);
    let file: Experiment = crate::config::load_yaml(&SweepDir::new(dir).config())?;
    let changes = diff::changes(&recorded, &file, &[], &["data.dir"])?;
    if !changes.is_empty() {
        let list: Vec<String> = changes.iter().map(|c| format!("  {c}")).collect();
        anyhow::bail!(
            "{what}: {} was edited after the sweep started, so its trials would not be one experiment:\n{}\n\
             restore it (the record is in provenance.json), or start a new sweep",
            SweepDir::new(dir).config().display(),
            list.join("\n")
        );
    }
    Ok(())
}

/// The experiment to continue in `dir`, given the one composed now.
pub fn prepare(dir: &Path, now: Experiment, overrides: &[String]) -> Result<Experiment> {
    crate::layout::check_resume(dir, crate::layout::Kind::Sweep)?;
    check_recorded(dir, &format!("resuming {}", dir.display()))?;
    let sd = SweepDir::new(dir);
    let mut saved: Experiment = crate::config::load_yaml(&sd.config())?;
    saved.data.dir = now.data.dir.clone();
    let what = format!("resuming {}", dir.display());
    let changes = diff::changes(&saved, &now, overrides, &["data.dir"])?;
    let changes = diff::judge(&what, changes, MAY_CHANGE)?;
    check_data(dir, &now)?;
    if changes.is_empty() {
        return Ok(saved);
    }
    for c in &changes {
        eprintln!("resume: {c}; recorded in the sweep's provenance.json");
    }
    crate::layout::write_atomic(&sd.config(), now.to_yaml()?.as_bytes())?;
    let mut prov = Provenance::load(dir).unwrap_or_default();
    if prov.config.is_some() {
        prov.config = Some(serde_json::to_value(&now)?);
    }
    prov.resumes.push(Resumed::now(changes));
    prov.save(dir)?;
    Ok(now)
}

/// Refuses data whose content differs from what the trials were trained on.
pub fn check_data(dir: &Path, exp: &Experiment) -> Result<()> {
    let journal = super::journal::Journal::open(dir)?;
    let recorded = journal
        .trials()?
        .iter()
        .filter_map(|t| Provenance::load(SweepDir::new(dir).trial(t.number).path()))
        .find_map(|p| p.data_digest);
    let Some(was) = recorded else {
        return Ok(());
    };
    let loaded = crate::data::load(&exp.data, &crate::layout::cache_dir())?;
    if loaded.data.digest != was {
        anyhow::bail!(
            "resuming {}: its trials were trained on data with digest {}, but {} has digest {}; \
             resume with the same data (--data or $FER2013_DIR), or start a new sweep",
            dir.display(),
            &was[..was.len().min(12)],
            exp.data.dir.display(),
            &loaded.data.digest[..loaded.data.digest.len().min(12)]
        );
    }
    Ok(())
}
