//! A run's result: the `Outcome` written to `eval.json`, and the finishing
//! step that evaluates the saved model file on validation and test (fitting
//! a logit adjustment first when the config asks), draws the plots and
//! writes `eval.json` last.

use super::{Setup, SwaRecord, TrainerState};
use crate::artifact::{self, Classifier};
use crate::config::train::Select;
use crate::config::RunConfig;
use crate::eval::{self, EvalReport};
use crate::layout::{write_atomic, RunDir};
use crate::metric::{EpochRecord, MetricKey};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The result of a run, also written to `eval.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    pub name: String,
    pub family: String,
    pub params: u64,
    pub macs: u64,
    pub device: String,
    pub threads: usize,
    pub data_digest: String,
    pub best_epoch: Option<usize>,
    pub epochs_run: usize,
    pub stopped_early: bool,
    /// Absent in runs written before sweeps existed.
    #[serde(default)]
    pub pruned: bool,
    /// Absent in early runs; `metrics.jsonl` has it too.
    #[serde(default)]
    pub history: Vec<EpochRecord>,
    pub train_seconds: f64,
    pub train_img_per_s: f64,
    /// The weight average of `train.swa`, when the run had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swa: Option<SwaRecord>,
    /// The logit adjustment of `eval.logit_adjust`, when the run fitted one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_adjust: Option<crate::eval::adjust::AdjustRecord>,
    /// How the shipped epoch was chosen (`train.select`); absent in runs
    /// written before it was recorded, and for fits without epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<Select>,
    pub val: EvalReport,
    pub test: EvalReport,
}

impl Outcome {
    /// Which weights the model file holds, as a clause for a sentence.
    pub fn weights_clause(&self) -> String {
        let adjust = self.logit_adjust.as_ref().map_or(String::new(), |a| {
            format!(
                ", with a logit adjustment of alpha {:+.2} fitted on validation",
                a.alpha
            )
        });
        let weights = match (&self.swa, self.best_epoch) {
            (Some(s), b) if s.chosen => format!(
                ", the average of the weights of its last {} epochs (SWA; it beat {} on validation)",
                s.snapshots,
                b.map_or("every single epoch".into(), |b| format!("epoch {b}, the best single one,"))
            ),
            (_, Some(b)) if self.val.overall.n == 0 => {
                format!(", weights of its last epoch, {b} (a refit: no validation split)")
            }
            (_, Some(b)) if self.select == Some(Select::Last) => {
                format!(", weights of its last epoch, {b} (train.select: last; validation did not choose it)")
            }
            (_, Some(b)) => format!(", weights of epoch {b} (best on validation)"),
            (_, None) => String::new(),
        };
        weights + &adjust
    }

    /// The `eval.json` of a finished run folder; refused, naming the file
    /// and the field, when it does not parse or a figure is out of range.
    pub fn read(dir: &Path) -> Result<Outcome> {
        let path = RunDir(dir.to_path_buf()).eval();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let o: Outcome = serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not an eval.json written by fer", path.display()))?;
        let bad = o.out_of_range();
        if !bad.is_empty() {
            anyhow::bail!("{}: damaged: {}", path.display(), bad.join("; "));
        }
        Ok(o)
    }

    /// Every figure of the outcome that is out of its range, named.
    pub fn out_of_range(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for r in [&self.val, &self.test] {
            bad.extend(r.overall.out_of_range(&format!("{}.overall", r.split)));
            for (origin, m) in &r.by_origin {
                bad.extend(m.out_of_range(&format!("{}.by_origin.{origin}", r.split)));
            }
        }
        for h in &self.history {
            for (name, v) in [("train_acc", h.train_acc), ("val_acc", h.val_acc)] {
                if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                    bad.push(format!(
                        "history epoch {}: {name} is {v}, expected a fraction in [0, 1]",
                        h.epoch
                    ));
                }
            }
        }
        bad
    }
}

/// Evaluates the saved model file on val and test and writes `eval.json`.
pub(super) fn finish(
    cfg: &RunConfig,
    rd: &RunDir,
    env: &Setup,
    state: Option<&TrainerState>,
) -> Result<Outcome> {
    let (splits, device) = (&env.splits, env.device);
    let mut clf = Classifier::load(&rd.model(), device)?;
    let (val, logit_adjust) = match &cfg.eval.logit_adjust {
        Some(ac) if clf.net.is_some() => {
            let t = std::time::Instant::now();
            // Fitted on the raw probabilities, so finishing twice (a resumed
            // finished run) fits the same alpha rather than stacking two.
            let mut probs = clf.predict_set_raw(&splits.val, cfg.eval.tta, 256)?;
            let rec = adjust(
                &mut clf,
                &rd.model(),
                &probs,
                &splits.val.labels,
                ac,
                cfg.eval.tta,
            )?;
            if let Some(a) = &clf.meta.logit_adjust {
                a.apply(&mut probs);
            }
            let secs = t.elapsed().as_secs_f64();
            let val = eval::report(
                &probs,
                &splits.val,
                &clf.meta.classes,
                "val",
                cfg.eval.tta,
                secs,
            )
            .with_intervals(&probs, &splits.val);
            (val, Some(rec))
        }
        _ => (
            eval::evaluate_keeping(&clf, &splits.val, "val", cfg.eval.tta)?.0,
            None,
        ),
    };
    let (test, test_probs) = eval::evaluate_keeping(&clf, &splits.test, "test", cfg.eval.tta)?;
    // Per-image predictions for paired tests, before eval.json (which marks
    // the run finished).
    if !splits.test.is_empty() {
        eval::write_predictions(
            &rd.predictions(),
            &splits.test,
            &test_probs,
            &clf.meta.classes,
        )?;
    }
    let out = Outcome {
        name: cfg.name.clone(),
        family: clf.meta.model.family().to_string(),
        params: clf.meta.params,
        macs: clf.meta.macs,
        device: format!("{device:?}"),
        threads: env.threads,
        data_digest: env.digest.clone(),
        best_epoch: state.and_then(|s| s.best_epoch),
        epochs_run: state.map_or(0, |s| s.epochs_done),
        stopped_early: state.is_some_and(|s| s.stopped_early),
        pruned: state.is_some_and(|s| s.pruned),
        history: state.map_or_else(Vec::new, |s| s.history.clone()),
        train_seconds: state.map_or(0.0, |s| s.train_seconds),
        train_img_per_s: state.map_or(0.0, |s| s.images_seen as f64 / s.train_seconds.max(1e-9)),
        swa: state.and_then(|s| s.swa.clone()),
        logit_adjust,
        select: state.map(|_| cfg.train.select),
        val,
        test,
    };
    // Plots before eval.json: a tracker that sees eval.json sees a finished run.
    if let Err(e) = write_plots(rd, &out) {
        tracing::warn!("could not draw the run's plots: {e:#}");
    }
    write_atomic(&rd.eval(), serde_json::to_string_pretty(&out)?.as_bytes())?;
    Ok(out)
}

/// Fits a logit adjustment on validation probabilities `probs` (unadjusted)
/// and writes it into the model file at `path` and into `clf`. Alpha 0 (no
/// gain on validation) is stored too, so the file says it was tried.
pub fn adjust(
    clf: &mut Classifier,
    path: &Path,
    probs: &[f32],
    labels: &[u8],
    cfg: &crate::eval::adjust::AdjustConfig,
    tta: bool,
) -> Result<crate::eval::adjust::AdjustRecord> {
    let rec = crate::eval::adjust::fit(probs, labels, &clf.meta.prior, cfg, tta);
    eprintln!("{}", rec.summary());
    clf.meta.logit_adjust = Some(crate::eval::adjust::LogitAdjust::new(
        rec.alpha,
        &clf.meta.prior,
    ));
    artifact::rewrite_meta(path, path, &clf.meta)?;
    Ok(rec)
}

/// Learning curves and the test confusion matrix as PNGs in `plots/`.
fn write_plots(rd: &RunDir, out: &Outcome) -> Result<()> {
    let classes = &out.test.classes;
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    crate::plot::confusion(
        &rd.plots().join("confusion-test.png"),
        &format!("{}: test confusion (row-normalised)", out.name),
        &names,
        &out.test.overall.confusion,
    )?;
    if !out.history.is_empty() {
        let epochs: Vec<f64> = out.history.iter().map(|r| r.epoch as f64).collect();
        let col = |k: MetricKey| out.history.iter().map(|r| k.of(r)).collect::<Vec<f64>>();
        crate::plot::curves(
            &rd.curves_png(),
            &out.name,
            &epochs,
            &[
                ("train loss", col(MetricKey::TrainLoss)),
                ("val loss", col(MetricKey::ValLoss)),
            ],
            &[
                ("train acc", col(MetricKey::TrainAcc)),
                ("val acc", col(MetricKey::ValAcc)),
            ],
        )?;
    }
    Ok(())
}
