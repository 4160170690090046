//! Cross-validation folds: stratified by class and grouped by subject, as
//! scikit-learn's `StratifiedGroupKFold(shuffle=True)`, so no subject's
//! images sit in a fold's training and test parts at once. The subject of
//! an image comes from a regex on its path or a CSV naming it per file; the
//! same grouping names the test split's groups (`data.test_groups`).

use super::ImageSet;
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// `cv:` in a run config: K folds of the training images, grouped by
/// `group_by` (a regex on the image path, `train/<class>/<file>`, whose
/// first capture group, else whole match, names the subject) or by a
/// column of `groups` (a CSV with a `file` column).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CvConfig {
    pub folds: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<GroupsCsv>,
    /// Set in each fold's own config (1-based): the fold it tests on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<usize>,
}

/// `data.test_groups`: named groups within the test split (recording
/// sites, cameras, sessions), each scored apart beside the whole, as
/// FER-2013's PublicTest and PrivateTest halves are by default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestGroups {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<GroupsCsv>,
}

impl TestGroups {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.group_by, &self.groups) {
            (Some(_), Some(_)) => Err(
                "data.test_groups: give either group_by (a regex) or groups (a CSV), not both"
                    .into(),
            ),
            (None, None) => Err(
                "data.test_groups: give group_by (a regex on the image path) or groups (a CSV with a `file` column)"
                    .into(),
            ),
            (Some(re), None) => regex::Regex::new(re)
                .map(|_| ())
                .map_err(|e| format!("data.test_groups.group_by is not a regex: {e}")),
            (None, Some(_)) => Ok(()),
        }
    }

    /// Marks each image of `test` with its group (`Origin::Group`, the
    /// names sorted in `group_names`).
    pub fn apply(&self, test: &mut ImageSet) -> Result<()> {
        if test.is_empty() {
            return Ok(());
        }
        let of = groups_of(
            "data.test_groups",
            "group",
            self.group_by.as_deref(),
            self.groups.as_ref(),
            test,
        )?;
        let mut names = of.clone();
        names.sort();
        names.dedup();
        if names.len() > u16::MAX as usize {
            bail!(
                "data.test_groups: {} groups in the test split; a group is a few hundred images or more, not one",
                names.len()
            );
        }
        for (o, g) in test.origins.iter_mut().zip(&of) {
            let i = names.binary_search(g).expect("every group is named");
            *o = super::Origin::Group(i as u16);
        }
        test.group_names = names;
        Ok(())
    }
}

/// A CSV naming each image's subject: `file` (the image path as the data
/// set lists it, or its file name) and `column`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsCsv {
    pub path: PathBuf,
    pub column: String,
}

impl CvConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.folds < 2 {
            return Err(format!("cv.folds must be at least 2, got {}", self.folds));
        }
        if self.group_by.is_some() && self.groups.is_some() {
            return Err("cv: give either group_by (a regex) or groups (a CSV), not both".into());
        }
        if let Some(re) = &self.group_by {
            regex::Regex::new(re).map_err(|e| format!("cv.group_by is not a regex: {e}"))?;
        }
        if let Some(k) = self.fold {
            if !(1..=self.folds).contains(&k) {
                return Err(format!("cv.fold must be in 1..={}, got {k}", self.folds));
            }
        }
        Ok(())
    }

    /// The subject of each image of `set` (its index when ungrouped).
    pub fn groups_of(&self, set: &ImageSet) -> Result<Vec<String>> {
        if self.group_by.is_none() && self.groups.is_none() {
            return Ok((0..set.len()).map(|i| i.to_string()).collect());
        }
        groups_of(
            "cv",
            "subject",
            self.group_by.as_deref(),
            self.groups.as_ref(),
            set,
        )
    }
}

/// The group of each image of `set`, by the regex `group_by` on its path
/// (capture group 1, else the whole match) or by its row in the `groups`
/// CSV; `key` names the config section and `what` the group in errors.
pub fn groups_of(
    key: &str,
    what: &str,
    group_by: Option<&str>,
    groups: Option<&GroupsCsv>,
    set: &ImageSet,
) -> Result<Vec<String>> {
    if let Some(re) = group_by {
        let re = regex::Regex::new(re).with_context(|| format!("{key}.group_by"))?;
        return set
            .sources
            .iter()
            .map(|s| {
                let c = re.captures(s).with_context(|| {
                    format!(
                        "{key}.group_by '{re}' does not match the image {s}, so it has no {what}"
                    )
                })?;
                Ok(c.get(1).or(c.get(0)).map_or("", |m| m.as_str()).to_string())
            })
            .collect();
    }
    let Some(g) = groups else {
        bail!("{key}: give group_by (a regex on the image path) or groups (a CSV)");
    };
    let table = read_groups(&g.path, &g.column, key)?;
    set.sources
        .iter()
        .map(|s| {
            let name = s.rsplit('/').next().unwrap_or(s);
            table
                .get(s.as_str())
                .or_else(|| table.get(name))
                .cloned()
                .with_context(|| {
                    format!(
                        "{}: no row for the image {s}, so it has no {what}",
                        g.path.display()
                    )
                })
        })
        .collect()
}

/// `file -> subject` from a CSV with a `file` column and `column`.
fn read_groups(path: &Path, column: &str, key: &str) -> Result<HashMap<String, String>> {
    let mut rdr = csv::Reader::from_path(path)
        .with_context(|| format!("reading {key}.groups {}", path.display()))?;
    let head = rdr
        .headers()
        .with_context(|| format!("{}:1: cannot read the header", path.display()))?
        .clone();
    let col = |want: &str| head.iter().position(|h| h.trim() == want);
    let (Some(cf), Some(cg)) = (col("file"), col(column)) else {
        bail!(
            "{}:1: header is '{}'; expected a `file` column and a `{column}` column ({key}.groups.column)",
            path.display(),
            head.iter().collect::<Vec<_>>().join(",")
        );
    };
    let mut out = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.with_context(|| format!("reading {}", path.display()))?;
        let line = rec.position().map_or(0, |p| p.line());
        let (Some(f), Some(g)) = (rec.get(cf), rec.get(cg)) else {
            bail!(
                "{}:{line}: missing the file or {column} field",
                path.display()
            );
        };
        out.insert(f.trim().to_string(), g.trim().to_string());
    }
    Ok(out)
}

/// The fold (0-based) of each image: stratified by `labels`, whole groups
/// to a fold, shuffled by `seed`. scikit-learn's greedy rule: groups in
/// order of how uneven their classes are (most first), each to the fold
/// that keeps the per-class spread across folds smallest, ties to the
/// fold with fewest images. Refused with fewer groups than folds.
pub fn stratified_group_folds(
    labels: &[u8],
    groups: &[String],
    k: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let n_classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        by_group.entry(g.as_str()).or_default().push(i);
    }
    if by_group.len() < k {
        bail!(
            "{} subject group(s) for {k} folds; each fold needs a subject of its own",
            by_group.len()
        );
    }
    let mut order: Vec<(&str, Vec<usize>)> = by_group.into_iter().collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let counts = |idx: &[usize]| {
        let mut c = vec![0f64; n_classes];
        for &i in idx {
            c[labels[i] as usize] += 1.0;
        }
        c
    };
    let std = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    // Stable: equal spreads keep the shuffled order.
    order.sort_by(|a, b| std(&counts(&b.1)).total_cmp(&std(&counts(&a.1))));
    let total = counts(&(0..labels.len()).collect::<Vec<_>>());
    let mut per_fold = vec![vec![0f64; n_classes]; k];
    let mut sizes = vec![0usize; k];
    let mut fold_of = vec![0usize; labels.len()];
    for (_, idx) in &order {
        let gc = counts(idx);
        let mut best: Option<(f64, usize, usize)> = None;
        for (f, &size) in sizes.iter().enumerate() {
            // Mean over classes of the spread across folds of each class's
            // share, were the group placed in fold f.
            let mut spread = 0.0;
            for c in 0..n_classes {
                if total[c] == 0.0 {
                    continue;
                }
                let shares: Vec<f64> = (0..k)
                    .map(|j| (per_fold[j][c] + if j == f { gc[c] } else { 0.0 }) / total[c])
                    .collect();
                spread += std(&shares);
            }
            spread /= n_classes.max(1) as f64;
            let better = match best {
                None => true,
                Some((s, best_size, _)) => {
                    spread < s - 1e-12 || (spread <= s + 1e-12 && size < best_size)
                }
            };
            if better {
                best = Some((spread, size, f));
            }
        }
        let f = best.map_or(0, |b| b.2);
        for c in 0..n_classes {
            per_fold[f][c] += gc[c];
        }
        sizes[f] += idx.len();
        for &i in idx {
            fold_of[i] = f;
        }
    }
    Ok(fold_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_group_is_split_and_classes_spread_over_the_folds() {
        // 30 subjects of 4 to 9 images, labels by a fixed pattern.
        let mut labels = Vec::new();
        let mut groups = Vec::new();
        for s in 0..30 {
            for j in 0..(4 + s % 6) {
                labels.push(((s * 7 + j * 3) % 4) as u8);
                groups.push(format!("S{s:03}"));
            }
        }
        let folds = stratified_group_folds(&labels, &groups, 3, 0).unwrap();
        for s in 0..30 {
            let g = format!("S{s:03}");
            let f: Vec<usize> = (0..labels.len())
                .filter(|&i| groups[i] == g)
                .map(|i| folds[i])
                .collect();
            assert!(f.iter().all(|&x| x == f[0]), "{g} split over folds {f:?}");
        }
        for c in 0..4u8 {
            let per: Vec<usize> = (0..3)
                .map(|k| {
                    (0..labels.len())
                        .filter(|&i| labels[i] == c && folds[i] == k)
                        .count()
                })
                .collect();
            let n: usize = per.iter().sum();
            for p in &per {
                // Each fold holds roughly a third of each class.
                assert!(
                    (*p as f64 - n as f64 / 3.0).abs() <= n as f64 * 0.2,
                    "class {c}: {per:?}"
                );
            }
        }
        assert_eq!(
            folds,
            stratified_group_folds(&labels, &groups, 3, 0).unwrap()
        );
        let err = stratified_group_folds(&labels[..4], &groups[..4], 3, 0).unwrap_err();
        assert!(
            err.to_string().contains("1 subject group(s) for 3 folds"),
            "{err}"
        );
    }

    #[test]
    fn subjects_come_from_a_regex_or_a_csv_and_a_miss_is_named() {
        let mut set = ImageSet::default();
        for s in ["train/joy/S01_a.png", "train/calm/S02_b.png"] {
            set.push(
                &[0; super::super::PIXELS],
                0,
                super::super::Origin::Unknown,
                s.into(),
            );
        }
        let cv = CvConfig {
            folds: 2,
            group_by: Some(r"/(S\d+)_".into()),
            ..CvConfig::default()
        };
        assert_eq!(cv.groups_of(&set).unwrap(), vec!["S01", "S02"]);
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("subjects.csv");
        std::fs::write(&csv, "file,subject\nS01_a.png,p1\n").unwrap();
        let cv = CvConfig {
            folds: 2,
            groups: Some(GroupsCsv {
                path: csv,
                column: "subject".into(),
            }),
            ..CvConfig::default()
        };
        let err = cv.groups_of(&set).unwrap_err().to_string();
        assert!(
            err.contains("no row for the image train/calm/S02_b.png"),
            "{err}"
        );
    }
}
