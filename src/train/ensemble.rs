//! A seed ensemble: member `s` is the run config with `seed: s`, trained (or
//! resumed, or reused once finished) in `member-<s>/`; the members' weights
//! then go under `m0.`, `m1.`, ... of one `ensemble` model file, which is
//! evaluated like any other. Members select their own best epoch on the
//! shared validation split, so nothing here sees the test set.

use super::{outcome, run_with, Control, Listener, Outcome, Setup, TrainerState};
use crate::config::{Member, RunConfig};
use crate::layout::{write_atomic, RunDir};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Trains or reuses each member, then combines, evaluates and finishes the
/// ensemble. The listeners and the control follow every member's epochs; a
/// member stopped by the control ends the ensemble with its outcome.
pub(super) fn run(
    cfg: &RunConfig,
    dir: &Path,
    resume: bool,
    listeners: &mut [&mut dyn Listener],
    mut control: Option<&mut dyn Control>,
) -> Result<Outcome> {
    let rd = RunDir(dir.to_path_buf());
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if !resume {
        write_atomic(&rd.config(), cfg.to_yaml()?.as_bytes())?;
    }
    let dtype = cfg.ensemble.as_ref().map(|e| e.weights).unwrap_or_default();
    let mut parts = Vec::new();
    let (mut seconds, mut images, mut epochs) = (0.0, 0.0, 0);
    let members = cfg.members()?;
    let n = members.len();
    for (k, m) in members.iter().enumerate() {
        let mdir = dir.join(&m.dir);
        let out = if RunDir(mdir.clone()).eval().exists() {
            reuse(cfg, m, k, n, &mdir)?
        } else {
            eprintln!(
                "ensemble member {}/{n} (seed {}) in {}",
                k + 1,
                m.seed,
                mdir.display()
            );
            let resume = RunDir(mdir.clone()).last().exists();
            let control = control.as_mut().map(|c| &mut **c as &mut dyn Control);
            let out = run_with(&m.cfg, &mdir, resume, listeners, control)?;
            if out.pruned {
                return Ok(out);
            }
            out
        };
        seconds += out.train_seconds;
        images += out.train_seconds * out.train_img_per_s;
        epochs += out.epochs_run;
        parts.push(crate::combine::Part::load(&RunDir(mdir).model())?);
    }
    let (meta, weights) = crate::combine::combine(&parts, &cfg.name, cfg.seed, dtype)?;
    let env = Setup::new(cfg)?;
    env.save_provenance(cfg, dir, None)?;
    if meta.data_digest != env.digest {
        bail!(
            "ensemble members of {} were trained on other data (digest {}) than {} ({})",
            dir.display(),
            meta.data_digest,
            cfg.data.dir.display(),
            env.digest
        );
    }
    let val = crate::combine::save(&rd.model(), meta, weights, &env.splits.val, env.device)?;
    let state = TrainerState {
        epochs_done: epochs,
        train_seconds: seconds,
        images_seen: images as u64,
        ..TrainerState::new(cfg.train.optimizer.lr())
    };
    eprintln!("ensemble of {n}: val accuracy {val:.4} (members trained {seconds:.0} s in all)");
    outcome::finish(cfg, &rd, &env, Some(&state))
}

/// The outcome of member `k` of `n`, finished earlier in `mdir`, after
/// checking that it was trained with the member's config.
fn reuse(cfg: &RunConfig, m: &Member, k: usize, n: usize, mdir: &Path) -> Result<Outcome> {
    let mrd = RunDir(mdir.to_path_buf());
    let mut found = RunConfig::load(&mrd.config(), &[])?;
    // Where the data sat and where runs were logged may differ.
    found.data.dir.clone_from(&m.cfg.data.dir);
    found.tracking.clone_from(&m.cfg.tracking);
    if found != m.cfg {
        bail!(
            "{}: this member was trained with a different config than member {k} of {} (seed {})",
            mrd.config().display(),
            cfg.name,
            m.seed
        );
    }
    eprintln!(
        "ensemble member {}/{n} (seed {}): finished in {}, reused",
        k + 1,
        m.seed,
        mdir.display()
    );
    Outcome::read(mdir)
}
