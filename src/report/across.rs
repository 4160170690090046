//! The report's "Across data sets": each fully reported model scored on its
//! own test split and on every data set named with `--other-data`, read
//! into the model's classes through its `--class-map` (as `fer eval
//! --class-map` reads it).

use super::collect::Run;
use crate::artifact::{Classifier, DataUse};
use crate::data::classmap::{ClassMap, Mapped};
use crate::data::ImageSet;
use crate::eval::stats::Intervals;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

/// One model on one data set.
#[derive(Clone, Debug, Serialize)]
pub struct AcrossRow {
    pub model: String,
    /// The data set's folder; the model's own for the first row of a model.
    pub data: String,
    /// The model's own test split (not another data set).
    pub own: bool,
    pub images: usize,
    /// Single-crop figures with their 95% bootstrap intervals.
    pub figures: Intervals,
    /// What the class map kept and dropped, when one was applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_map: Option<Mapped>,
}

/// The class map of each `--other-data` folder: none given, one for all,
/// or one each in the same order.
pub fn maps_for(data: &[PathBuf], maps: &[String]) -> Result<Vec<Option<ClassMap>>> {
    let parse = |m: &String| ClassMap::parse(m).map(Some);
    match (data.len(), maps.len()) {
        (_, 0) => Ok(vec![None; data.len()]),
        (0, _) => bail!("--class-map goes with --other-data: give the other data set's folder"),
        (_, 1) => data.iter().map(|_| parse(&maps[0])).collect(),
        (d, m) if d == m => maps.iter().map(parse).collect(),
        (d, m) => bail!(
            "{m} --class-map for {d} --other-data: give one map for all of them, or one per data set in the same order"
        ),
    }
}

/// Scores run `run` (its model `clf`, its own test predictions `probs` on
/// `own`) on its own test split, then on each of `others`.
pub fn rows(
    run: &Run,
    clf: &Classifier,
    probs: &[f32],
    own: &ImageSet,
    others: &[(PathBuf, Option<ClassMap>)],
) -> Result<Vec<AcrossRow>> {
    let classes = &clf.meta.classes;
    let headline = |probs: &[f32], set: &ImageSet| {
        let pred = crate::eval::predicted(probs, classes.len());
        crate::eval::stats::headline(&set.labels, &pred, classes.len())
    };
    let mut out = vec![AcrossRow {
        model: run.label.clone(),
        data: run.cfg.data.dir.display().to_string(),
        own: true,
        images: own.len(),
        figures: headline(probs, own),
        class_map: None,
    }];
    for (dir, map) in others {
        let md = clf
            .meta
            .load_data_mapped(Some(dir), DataUse::Test, map.as_ref())
            .with_context(|| format!("--other-data {} for {}", dir.display(), run.label))?;
        let set = &md.loaded.data.test;
        if set.is_empty() {
            bail!(
                "--other-data {}: no test images to score {} on (give it a test/ folder)",
                dir.display(),
                run.label
            );
        }
        let p = clf.predict_set(set, false, 256)?;
        out.push(AcrossRow {
            model: run.label.clone(),
            data: dir.display().to_string(),
            own: false,
            images: set.len(),
            figures: headline(&p, set),
            class_map: md.mapped,
        });
    }
    Ok(out)
}

/// The subsection, when the report was asked for other data sets.
pub fn section(rows: &[AcrossRow]) -> String {
    let mut md = String::new();
    if !rows.iter().any(|r| !r.own) {
        return md;
    }
    let _ = writeln!(
        md,
        "### Across data sets\n\nEach model in full on its own test split, then on each other data set, read into the model's classes (single crop, 95% bootstrap intervals). The data sets hold different faces, so the rows are not paired: a gap says how far the model carries, not which data set is harder.\n\n| model | data set | test images | accuracy | weighted F1 | macro F1 |\n|---|---|---:|---:|---:|---:|"
    );
    for r in rows {
        let own = if r.own { " (its own)" } else { "" };
        let _ = writeln!(
            md,
            "| {} | `{}`{own} | {} | {} | {} | {} |",
            r.model,
            r.data,
            r.images,
            r.figures.accuracy.percent(),
            r.figures.weighted_f1.plain(),
            r.figures.macro_f1.plain()
        );
    }
    let mut maps: Vec<(&str, String)> = rows
        .iter()
        .filter_map(|r| Some((r.data.as_str(), r.class_map.as_ref()?.summary())))
        .collect();
    maps.dedup();
    if !maps.is_empty() {
        md += "\n";
        for (data, summary) in maps {
            let _ = writeln!(md, "- `{data}`: {summary} (train and test images counted)");
        }
    }
    md += "\n";
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_maps_pair_with_data_sets_one_for_all_or_one_each() {
        let d = |n: usize| {
            (0..n)
                .map(|i| PathBuf::from(format!("d{i}")))
                .collect::<Vec<_>>()
        };
        let m = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(maps_for(&d(2), &[]).unwrap(), vec![None, None]);
        let all = maps_for(&d(2), &m(&["joy=happy"])).unwrap();
        assert!(all.iter().all(|x| x.as_ref().unwrap().pairs[0].0 == "joy"));
        let each = maps_for(&d(2), &m(&["joy=happy", "calm=-"])).unwrap();
        assert_eq!(each[1].as_ref().unwrap().pairs[0], ("calm".into(), None));
        let e = maps_for(&d(3), &m(&["a=b", "c=d"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 --class-map for 3 --other-data"), "{e}");
        let e = maps_for(&d(0), &m(&["a=b"])).unwrap_err().to_string();
        assert!(e.contains("--other-data"), "{e}");
        let e = maps_for(&d(1), &m(&["happy"])).unwrap_err().to_string();
        assert!(e.contains("not a pair"), "{e}");
    }
}
