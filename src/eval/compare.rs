//! `fer compare`: several models scored on the same test images, each with
//! its 95% intervals, and each compared with the most accurate one by paired
//! tests (exact McNemar for accuracy, paired bootstrap for F1), with Holm's
//! correction when there is more than one comparison.

use super::stats::{self, Figure, Interval, PairedDifference};
use crate::artifact::{Classifier, DataUse};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::PathBuf;

/// What `fer compare` reads.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Model files or run folders, at least two.
    pub models: Vec<PathBuf>,
    pub data: Option<PathBuf>,
    /// Ten-crop TTA for every model.
    pub tta: bool,
    /// Restrict to one test half (`PublicTest`, `PrivateTest`); all test
    /// images when None.
    pub half: Option<crate::data::Origin>,
    /// Significance level for the verdicts.
    pub alpha: f64,
}

/// One model's figures with their intervals.
#[derive(Debug, Serialize)]
pub struct ModelRow {
    pub model: String,
    pub name: String,
    pub accuracy: Interval,
    pub weighted_f1: Interval,
    pub macro_f1: Interval,
}

/// One model against the most accurate: its figure minus the best's.
#[derive(Debug, Serialize)]
pub struct Versus {
    pub model: usize,
    pub best: usize,
    /// Images only this model gets right, and only the best.
    pub only_this: u64,
    pub only_best: u64,
    pub accuracy: Interval,
    pub p_mcnemar: f64,
    /// Holm-adjusted over all comparisons with the best.
    pub p_holm: f64,
    pub weighted_f1: PairedDifference,
    pub macro_f1: PairedDifference,
    /// Per class: this model's F1 minus the best's.
    pub per_class_f1: Vec<PairedDifference>,
    /// The verdict at `alpha` after Holm's correction.
    pub verdict: String,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub images: usize,
    /// Which test images: `PublicTest`, `PrivateTest` or `test` (all).
    pub subset: String,
    pub tta: bool,
    pub classes: Vec<String>,
    pub alpha: f64,
    pub resamples: usize,
    pub models: Vec<ModelRow>,
    pub best: usize,
    pub versus: Vec<Versus>,
}

/// Scores every model on the same images and compares each with the best.
pub fn compare(o: &CompareOptions) -> Result<Comparison> {
    if o.models.len() < 2 {
        bail!("fer compare needs at least two models");
    }
    let mut preds: Vec<Vec<u8>> = Vec::new();
    let mut rows = Vec::new();
    let mut reference: Option<(Vec<String>, Vec<String>, Vec<u8>)> = None;
    for path in &o.models {
        let clf = Classifier::load(path, tch::Device::Cpu)?;
        let md = clf.meta.load_data(o.data.as_deref(), DataUse::Test)?;
        if let Some(n) = &md.note {
            eprintln!("{n}");
        }
        let mut set = md.loaded.data.test.clone();
        if let Some(h) = o.half {
            let idx: Vec<usize> = (0..set.len()).filter(|&i| set.origins[i] == h).collect();
            set = set.select(&idx);
        }
        if set.is_empty() {
            bail!(
                "{}: no {} images to compare on",
                md.dir.display(),
                o.half.map_or("test", |h| h.name())
            );
        }
        let classes = clf.meta.classes.clone();
        match &reference {
            None => reference = Some((classes.clone(), set.sources.clone(), set.labels.clone())),
            Some((c, sources, _)) => {
                if *c != classes {
                    bail!(
                        "{}: classes {classes:?} differ from {}'s {c:?}; a paired test needs the same classes",
                        path.display(),
                        o.models[0].display()
                    );
                }
                if *sources != set.sources {
                    bail!(
                        "{}: its test images differ from {}'s; a paired test needs the same images",
                        path.display(),
                        o.models[0].display()
                    );
                }
            }
        }
        let probs = clf
            .predict_set(&set, o.tta, 256)
            .with_context(|| format!("scoring {}", path.display()))?;
        let pred = super::predicted(&probs, classes.len());
        let iv = stats::headline(&set.labels, &pred, classes.len());
        rows.push(ModelRow {
            model: path.display().to_string(),
            name: clf.meta.name.clone(),
            accuracy: iv.accuracy,
            weighted_f1: iv.weighted_f1,
            macro_f1: iv.macro_f1,
        });
        preds.push(pred);
    }
    let (classes, _, truth) = reference.expect("two models were read");
    let labels: Vec<String> = rows.iter().map(|r| r.model.clone()).collect();
    let accuracy: Vec<f64> = rows.iter().map(|r| r.accuracy.value).collect();
    let (best, versus) = versus_best(&truth, &preds, &accuracy, &labels, classes.len(), o.alpha);
    Ok(Comparison {
        images: truth.len(),
        subset: o.half.map_or("test".into(), |h| h.name().to_string()),
        tta: o.tta,
        classes,
        alpha: o.alpha,
        resamples: stats::RESAMPLES,
        models: rows,
        best,
        versus,
    })
}

/// Each model against the most accurate (by `accuracy`, one per model) on
/// the same images: paired differences, McNemar's exact p, Holm's
/// adjustment over the comparisons, and a verdict at `alpha` naming models
/// by `labels`.
pub fn versus_best(
    truth: &[u8],
    preds: &[Vec<u8>],
    accuracy: &[f64],
    labels: &[String],
    k: usize,
    alpha: f64,
) -> (usize, Vec<Versus>) {
    let best = (0..preds.len())
        .max_by(|&a, &b| accuracy[a].total_cmp(&accuracy[b]))
        .expect("at least one model");
    let mut figures = vec![Figure::WeightedF1, Figure::MacroF1, Figure::Accuracy];
    figures.extend((0..k).map(Figure::ClassF1));
    let mut versus: Vec<Versus> = (0..preds.len())
        .filter(|&m| m != best)
        .map(|m| {
            let (only_this, only_best) = stats::discordant(truth, &preds[m], &preds[best]);
            let d = stats::paired(
                truth,
                &preds[m],
                &preds[best],
                k,
                &figures,
                stats::RESAMPLES,
                stats::SEED,
            );
            Versus {
                model: m,
                best,
                only_this,
                only_best,
                accuracy: d[2].difference,
                p_mcnemar: stats::mcnemar_exact(only_this, only_best),
                p_holm: f64::NAN,
                weighted_f1: d[0],
                macro_f1: d[1],
                per_class_f1: d[3..].to_vec(),
                verdict: String::new(),
            }
        })
        .collect();
    let p: Vec<f64> = versus.iter().map(|v| v.p_mcnemar).collect();
    for (v, adj) in versus.iter_mut().zip(stats::holm(&p)) {
        v.p_holm = adj;
        v.verdict = if adj < alpha {
            format!(
                "{} beats {} (p {} < {alpha})",
                labels[best],
                labels[v.model],
                p_text(adj)
            )
        } else {
            format!("no significant difference (p {} >= {alpha})", p_text(adj))
        };
    }
    (best, versus)
}

/// A p-value as people read them: 3 significant digits, `< 1e-6` below.
pub fn p_text(p: f64) -> String {
    if p < 1e-6 {
        "< 1e-6".into()
    } else if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.1e}")
    }
}

fn points(iv: &Interval) -> String {
    format!(
        "{:+.2} [{:+.2}, {:+.2}]",
        iv.value * 100.0,
        iv.lo * 100.0,
        iv.hi * 100.0
    )
}

impl Comparison {
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} {} images{}, the same images for every model; 95% intervals from {} class-stratified bootstrap resamples\n\n",
            self.images,
            self.subset,
            if self.tta { ", ten-crop TTA" } else { "" },
            self.resamples
        );
        s += "| model | accuracy | weighted F1 | macro F1 |\n|---|---:|---:|---:|\n";
        for (i, r) in self.models.iter().enumerate() {
            s += &format!(
                "| {}{} | {} | {} | {} |\n",
                r.model,
                if i == self.best { " (best)" } else { "" },
                r.accuracy.percent(),
                r.weighted_f1.plain(),
                r.macro_f1.plain()
            );
        }
        s += &format!(
            "\nAgainst {} (paired; accuracy difference in points, McNemar's exact test{}):\n\n",
            self.models[self.best].model,
            if self.versus.len() > 1 {
                ", Holm-adjusted over the comparisons"
            } else {
                ""
            }
        );
        s += "| model | accuracy difference | only it right / only best right | p (McNemar) | p (Holm) | weighted F1 difference | macro F1 difference | verdict |\n|---|---:|---:|---:|---:|---:|---:|---|\n";
        for v in &self.versus {
            s += &format!(
                "| {} | {} | {} / {} | {} | {} | {} (p {}) | {} (p {}) | {} |\n",
                self.models[v.model].model,
                points(&v.accuracy),
                v.only_this,
                v.only_best,
                p_text(v.p_mcnemar),
                p_text(v.p_holm),
                points(&v.weighted_f1.difference),
                p_text(v.weighted_f1.p_bootstrap),
                points(&v.macro_f1.difference),
                p_text(v.macro_f1.p_bootstrap),
                v.verdict
            );
        }
        for v in &self.versus {
            s += &format!(
                "\nPer-class F1, {} minus {} (points, paired bootstrap):",
                self.models[v.model].model, self.models[self.best].model
            );
            for (c, d) in self.classes.iter().zip(&v.per_class_f1) {
                s += &format!(" {c} {}", points(&d.difference));
            }
            s.push('\n');
        }
        s
    }
}
