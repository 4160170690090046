//! `fer calibrate`: fits a post-hoc logit adjustment (src/eval/adjust.rs) to
//! a trained model file on its own validation split and writes a copy of the
//! file that applies it. It is what `eval.logit_adjust` does at the end of
//! `fer train`, for a file that was trained without it. The test set is never
//! read.

use crate::eval::adjust::{AdjustConfig, AdjustRecord};
use crate::model_file::{self, Classifier, ModelData};
use crate::train::config::Select;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use tch::Device;

#[derive(clap::Args, Debug)]
pub struct CalibrateArgs {
    /// A model file written by fer, or a run folder.
    pub model: PathBuf,
    /// Where to write the adjusted model file (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Data set folder (default: $FER2013_DIR, else data/fer2013).
    #[arg(long, env = "FER2013_DIR")]
    pub data: Option<PathBuf>,
    /// Fit on ten-crop TTA probabilities (use it when the model is evaluated
    /// with TTA).
    #[arg(long)]
    pub tta: bool,
    /// The validation metric alpha maximises.
    #[arg(long, value_enum, default_value = "val-acc")]
    pub select: SelectArg,
    /// The alpha grid: min, max and step.
    #[arg(long, default_value_t = -0.5, allow_hyphen_values = true)]
    pub min: f64,
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub max: f64,
    #[arg(long, default_value_t = 0.05)]
    pub step: f64,
    /// Print the fit as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SelectArg {
    ValAcc,
    ValLoss,
    ValF1Macro,
}

pub fn run(args: CalibrateArgs) -> Result<ExitCode> {
    if args.out.exists() {
        bail!(
            "{}: exists already; choose another --out (nothing was written)",
            args.out.display()
        );
    }
    let cfg = AdjustConfig {
        select: match args.select {
            SelectArg::ValAcc => Select::ValAcc,
            SelectArg::ValLoss => Select::ValLoss,
            SelectArg::ValF1Macro => Select::ValF1Macro,
        },
        min: args.min,
        max: args.max,
        step: args.step,
    };
    if !(cfg.step > 0.0 && cfg.step.is_finite()) {
        bail!("--step must be above 0, got {}", cfg.step);
    }
    if cfg.min.is_nan() || cfg.max.is_nan() || cfg.min > cfg.max {
        bail!("--min ({}) must be at most --max ({})", cfg.min, cfg.max);
    }
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("--min/--max/--step: {e}"))?;
    let src = model_file::file_of(&args.model);
    let mut clf = Classifier::load(&src, Device::Cpu)?;
    if clf.net.is_none() {
        bail!(
            "{}: a {} baseline has no scores to adjust",
            src.display(),
            clf.meta.model.family()
        );
    }
    let ModelData { loaded, split, dir } = clf.meta.load_data(args.data.as_deref())?;
    if loaded.data.digest != clf.meta.data_digest {
        bail!(
            "{}: data digest {} is not the model's {} (the validation split would differ)",
            dir.display(),
            loaded.data.digest,
            clf.meta.data_digest
        );
    }
    if split.val.is_empty() {
        bail!(
            "{}: this model was trained on all of train (data.val_fraction 0, a refit), so there is no validation split to fit on",
            src.display()
        );
    }
    let val = loaded.data.train.select(&split.val);
    let mut probs = clf.predict_set_raw(&val, args.tta, 256);
    let rec: AdjustRecord =
        crate::eval::adjust::fit(&probs, &val.labels, &clf.meta.prior, &cfg, args.tta);
    clf.meta.logit_adjust = Some(crate::eval::adjust::LogitAdjust::new(
        rec.alpha,
        &clf.meta.prior,
    ));
    model_file::rewrite_meta(&src, &args.out, &clf.meta)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rec)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>7}  {:>8}  {:>8}  {:>8}",
        "alpha", "val acc", "macro F1", "log loss"
    );
    for g in &rec.grid {
        let mark = if g.alpha == rec.alpha { "  <" } else { "" };
        println!(
            "{:>+7.2}  {:>7.2}%  {:>8.4}  {:>8.4}{mark}",
            g.alpha,
            100.0 * g.accuracy,
            g.macro_f1,
            g.log_loss
        );
    }
    println!("{}", rec.summary());
    if let Some(a) = &clf.meta.logit_adjust {
        a.apply(&mut probs);
    }
    let report = crate::eval::report(&probs, &val, "val", args.tta, 0.0);
    print!("{}", report.render(&clf.meta.classes));
    println!("wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
