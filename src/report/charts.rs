//! The report's PNGs, one function per section that has charts, drawn from
//! the collected `ReportData` into the output folder under the names the
//! sections link.

use super::collect::ReportData;
use super::images;
use super::run_png;
use super::sections::member_curves_png;
use crate::eval::robust;
use crate::metric::EpochRecord;
use crate::train::Outcome;
use anyhow::Result;
use std::path::Path;

/// Section 1: the class distribution.
pub fn data_set(d: &ReportData, out: &Path) -> Result<()> {
    d.stats.plot(&out.join("data-classes.png"))
}

/// Section 2: test accuracy and F1 per model.
pub fn comparison(d: &ReportData, out: &Path) -> Result<()> {
    let labels: Vec<&str> = d.runs.iter().map(|r| r.label.as_str()).collect();
    let col = |f: fn(&Outcome) -> f64| d.runs.iter().map(|r| f(&r.out) * 100.0).collect::<Vec<_>>();
    crate::plot::bars(
        &out.join("comparison.png"),
        "Test accuracy and F1 per model",
        "model",
        "percent",
        &labels,
        &[
            ("accuracy", col(|o| o.test.overall.accuracy)),
            ("weighted F1", col(|o| o.test.overall.weighted_f1)),
            ("macro F1", col(|o| o.test.overall.macro_f1)),
        ],
    )
}

/// Section 3, per deep run: learning curves (its members' too), confusion,
/// per-class scores and calibration.
pub fn per_model(d: &ReportData, out: &Path) -> Result<()> {
    for &i in &d.deep {
        let r = &d.runs[i];
        let o = &r.out;
        if !o.history.is_empty() {
            learning_curves(&out.join(run_png(&r.label, "curves")), &r.label, o)?;
        }
        for (k, m) in r.members.iter().enumerate() {
            if !m.out.history.is_empty() {
                learning_curves(
                    &out.join(member_curves_png(&r.label, &m.dir)),
                    &format!("member {k} (seed {})", m.seed),
                    &m.out,
                )?;
            }
        }
        let names: Vec<&str> = o.test.classes.iter().map(String::as_str).collect();
        crate::plot::confusion(
            &out.join(run_png(&r.label, "confusion")),
            &format!("{}: test confusion (row-normalised)", r.label),
            &names,
            &o.test.overall.confusion,
        )?;
        let pc = &o.test.overall.per_class;
        crate::plot::grouped_bars(
            &out.join(run_png(&r.label, "per-class")),
            &format!("{}: per-class precision, recall, F1 (test)", r.label),
            "score",
            &names,
            &[
                ("precision", pc.iter().map(|c| c.precision).collect()),
                ("recall", pc.iter().map(|c| c.recall).collect()),
                ("F1", pc.iter().map(|c| c.f1).collect()),
            ],
        )?;
        crate::plot::reliability(
            &out.join(run_png(&r.label, "calibration")),
            &format!("{}: calibration (ECE {:.3})", r.label, o.test.overall.ece),
            &r.calibration,
        )?;
    }
    Ok(())
}

/// Learning curves of one run, with its selected epoch marked.
fn learning_curves(path: &Path, label: &str, o: &Outcome) -> Result<()> {
    let h: &[EpochRecord] = &o.history;
    let ep: Vec<f64> = h.iter().map(|r| r.epoch as f64).collect();
    let c = |f: fn(&EpochRecord) -> f64| h.iter().map(f).collect::<Vec<f64>>();
    let mut losses = vec![("train loss", c(|r| r.train_loss))];
    let mut accs = vec![("train acc", c(|r| r.train_acc))];
    // A refit has no validation split: its validation series would be zeros.
    let validated = o.val.overall.n > 0;
    if validated {
        losses.push(("val loss", c(|r| r.val_loss)));
        accs.push(("val acc", c(|r| r.val_acc)));
    }
    crate::plot::curves_marked(
        path,
        &format!("{label}: learning curves"),
        &ep,
        &losses,
        &accs,
        o.best_epoch.map(|b| {
            (
                b as f64,
                if o.swa.as_ref().is_some_and(|s| s.chosen) {
                    "best single epoch (the weight average was chosen)"
                } else if !validated {
                    "last epoch (refit: no selection)"
                } else if o.stopped_early {
                    "selected epoch (stopped early)"
                } else {
                    "selected epoch"
                },
            )
        }),
    )
}

/// Section 4: accuracy retention per perturbation and severity.
pub fn robustness(d: &ReportData, out: &Path) -> Result<()> {
    for &i in &d.deep {
        let r = &d.runs[i];
        let Some(rob) = &r.robustness else { continue };
        let series: Vec<(String, Vec<f64>)> = robust::ALL
            .iter()
            .map(|p| {
                let mut v = vec![100.0];
                v.extend(
                    rob.rows
                        .iter()
                        .filter(|x| x.perturbation == *p)
                        .map(|x| x.retention * 100.0),
                );
                (p.name().to_string(), v)
            })
            .collect();
        let lo = series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .fold(100.0f64, f64::min);
        crate::plot::lines(
            &out.join(run_png(&r.label, "robustness")),
            &format!("{}: accuracy retention under perturbation", r.label),
            &["clean", "mild", "medium", "strong"],
            "retention (% of clean accuracy)",
            &series,
            ((lo - 5.0).clamp(0.0, 75.0), 105.0),
            Some((robust::TARGET_RETENTION * 100.0, "80% target")),
        )?;
    }
    Ok(())
}

/// Section 5: grad-CAM grids and the error gallery.
pub fn interpretability(d: &ReportData, out: &Path) -> Result<()> {
    for &i in &d.deep {
        let r = &d.runs[i];
        let Some(rows) = &r.gradcam else { continue };
        images::grid(
            &out.join(run_png(&r.label, "gradcam")),
            &format!("{}: Grad-CAM, 3 right then 3 wrong per class", r.label),
            rows,
            6,
            2,
        )?;
    }
    if let Some(e) = &d.errors {
        images::grid(
            &out.join("errors.png"),
            &format!(
                "{}: most confident mistakes (true→predicted, probability)",
                d.runs[e.run].label
            ),
            &e.rows,
            6,
            2,
        )?;
    }
    Ok(())
}

/// Section 2, continued: the learning curves on one clock and accuracy
/// against each cost with the Pareto front.
pub fn tradeoffs(d: &ReportData, out: &Path) -> Result<()> {
    use super::tradeoffs::{compared, positions, wallclock, Cost};
    if compared(&d.runs).len() < 2 {
        return Ok(());
    }
    let curves = wallclock(&d.runs);
    if curves.len() > 1 {
        crate::plot::xy_lines(
            &out.join("wallclock.png"),
            "Validation accuracy against training time",
            "training time (hours)",
            "validation accuracy (%)",
            &curves,
        )?;
    }
    for cost in Cost::ALL {
        let pos = positions(&d.runs, cost);
        let points: Vec<(String, f64, f64)> = pos.iter().map(|p| (p.0.clone(), p.1, p.2)).collect();
        let front: Vec<bool> = pos.iter().map(|p| p.3.is_empty()).collect();
        if points.is_empty() {
            continue;
        }
        crate::plot::tradeoff(
            &out.join(cost.file()),
            &format!("Test accuracy against {}", cost.name()),
            cost.axis(),
            "test accuracy (%)",
            &points,
            &front,
        )?;
    }
    Ok(())
}

/// Section 6: the sweep's optimisation history and parameters against the objective.
pub fn sweep(d: &ReportData, out: &Path) -> Result<()> {
    importance(d, out)?;
    let Some(s) = &d.sweep else { return Ok(()) };
    let metric = &s.metric();
    let (complete, pruned, best_line) = s.history();
    crate::plot::history(
        &out.join("sweep-history.png"),
        &format!("Optimisation history ({} sampler)", s.sampler),
        metric,
        &complete,
        &pruned,
        &best_line,
    )?;
    if s.objectives.len() > 1 {
        crate::sweep::front_chart(&out.join("sweep-pareto.png"), &s.objectives, &s.trials)?;
    }
    let panels = s.param_panels();
    if !panels.is_empty() {
        crate::plot::param_scatter(
            &out.join("sweep-params.png"),
            "Parameters against the objective",
            metric,
            &panels,
        )?;
    }
    Ok(())
}

/// Section 6: one bar chart per importance ranking.
pub fn importance(d: &ReportData, out: &Path) -> Result<()> {
    for s in &d.importance {
        for r in &s.rankings {
            let bars: Vec<crate::plot::Bar> = r
                .importance
                .iter()
                .map(|p| {
                    let iv = p.lo.zip(p.hi).map(|(lo, hi)| (lo * 100.0, hi * 100.0));
                    (p.name.clone(), p.importance * 100.0, iv)
                })
                .collect();
            let note = r.too_few().then(|| {
                format!(
                    "too few trials to rank ({} < {})",
                    r.trials,
                    crate::sweep::importance::MIN_TRIALS
                )
            });
            crate::plot::hbars(
                &out.join(super::importance_png(&s.name, r.family.as_deref())),
                &format!(
                    "{}{}: hyperparameter importance ({} trials)",
                    s.name,
                    r.family
                        .as_deref()
                        .map_or(String::new(), |f| format!(" ({f})")),
                    r.trials
                ),
                "share of the explained objective (%), with 90% bootstrap intervals",
                &bars,
                note.as_deref(),
            )?;
        }
    }
    Ok(())
}

/// `seeds.png`: each seed set's validation accuracy per epoch, its mean
/// over a band of one standard deviation.
pub fn seeds(d: &ReportData, out: &Path) -> Result<()> {
    let series: Vec<crate::plot::Band> = d
        .seed_sets
        .iter()
        .filter(|s| !s.band.is_empty())
        .map(|s| {
            let pts = s
                .band
                .iter()
                .map(|b| (b.epoch as f64, b.mean, b.mean - b.std, b.mean + b.std))
                .collect();
            let unit = s.unit.name();
            (format!("{} ({} {unit}s)", s.label, s.heads.len()), pts)
        })
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    let folds = d
        .seed_sets
        .iter()
        .all(|s| s.unit == crate::config::Unit::Fold);
    crate::plot::bands(
        &out.join("seeds.png"),
        if folds {
            "Validation accuracy across folds"
        } else {
            "Validation accuracy across seeds"
        },
        "val accuracy",
        &series,
    )
}
