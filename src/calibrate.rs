//! `fer calibrate`: fits a post-hoc logit adjustment (src/eval/adjust.rs) to
//! a trained model file on its own validation split and writes a copy of the
//! file that applies it. It is what `eval.logit_adjust` does at the end of
//! `fer train`, for a file that was trained without it. The test set is never
//! read.

use crate::artifact::{self, Classifier, DataUse, ModelData};
use crate::eval::adjust::{AdjustConfig, AdjustRecord};
use crate::eval::EvalReport;
use anyhow::{bail, Result};
use std::path::PathBuf;
use tch::Device;

/// What `fer calibrate` fits, on what, and where it writes.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// A model file written by fer, or a run folder.
    pub model: PathBuf,
    /// Where to write the adjusted model file.
    pub out: PathBuf,
    /// Overwrite an existing `out` (never the source model).
    pub replace: bool,
    /// Data set folder (default: the data config's default).
    pub data: Option<PathBuf>,
    /// Fit on ten-crop TTA probabilities.
    pub tta: bool,
    /// The metric alpha maximises and the alpha grid.
    pub adjust: AdjustConfig,
}

/// The fit, and the adjusted model's validation report.
pub struct Calibrated {
    pub fit: AdjustRecord,
    pub report: EvalReport,
    pub classes: Vec<String>,
}

/// Fits the adjustment on the model's validation split and writes the copy.
pub fn calibrate(args: &CalibrateOptions) -> Result<Calibrated> {
    let src = crate::layout::model_file_of(&args.model);
    crate::layout::check_out_file(&args.out, &[&src], "--out", args.replace)?;
    let cfg = &args.adjust;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("--min/--max/--step: {e}"))?;
    let mut clf = Classifier::load(&src, Device::Cpu)?;
    if clf.net.is_none() {
        bail!(
            "{}: a {} baseline has no scores to adjust",
            src.display(),
            clf.meta.model.family()
        );
    }
    let ModelData { loaded, split, .. } = clf
        .meta
        .load_data(args.data.as_deref(), DataUse::Validation)?;
    if split.val.is_empty() {
        bail!(
            "{}: this model was trained on all of train (data.val_fraction 0, a refit), so there is no validation split to fit on",
            src.display()
        );
    }
    let val = loaded.data.train.select(&split.val);
    let mut probs = clf.predict_set_raw(&val, args.tta, 256)?;
    let fit = crate::eval::adjust::fit(&probs, &val.labels, &clf.meta.prior, cfg, args.tta);
    let adjust = artifact::LogitAdjust::new(fit.alpha, &clf.meta.prior);
    adjust.apply(&mut probs);
    clf.meta.logit_adjust = Some(adjust);
    artifact::rewrite_meta(&src, &args.out, &clf.meta)?;
    let report = crate::eval::report(&probs, &val, &clf.meta.classes, "val", args.tta, 0.0)
        .with_intervals(&probs, &val);
    Ok(Calibrated {
        fit,
        report,
        classes: clf.meta.classes,
    })
}
