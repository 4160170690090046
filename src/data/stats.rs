//! `fer data stats`: counts per split and class, imbalance, quality flags and
//! the digest, as text or JSON, plus a class-distribution chart.

use super::quality::{assess, Quality};
use super::split::stratified;
use super::{DataConfig, FerData, IssueKind, Origin, CLASSES, NUM_CLASSES};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SplitCounts {
    pub split: String,
    pub counts: Vec<usize>,
    pub total: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataStats {
    pub dir: String,
    pub digest: String,
    pub classes: Vec<String>,
    /// train (all), train (after the split), val, test, and each test origin.
    pub splits: Vec<SplitCounts>,
    /// Largest over smallest class count in train.
    pub imbalance_ratio: f64,
    pub val_fraction: f64,
    pub split_seed: u64,
    pub issues: Vec<(IssueKind, usize)>,
    pub quality: Quality,
    pub load_seconds: f64,
    pub from_cache: bool,
}

fn counts(name: &str, c: [usize; NUM_CLASSES]) -> SplitCounts {
    SplitCounts {
        split: name.to_string(),
        counts: c.to_vec(),
        total: c.iter().sum(),
    }
}

pub fn compute(cfg: &DataConfig, data: &FerData, load_seconds: f64, from_cache: bool) -> DataStats {
    let tv = stratified(&data.train.labels, cfg.val_fraction, cfg.split_seed);
    let sub = |idx: &[usize]| {
        let mut c = [0usize; NUM_CLASSES];
        for &i in idx {
            c[data.train.labels[i] as usize] += 1;
        }
        c
    };
    let mut splits = vec![
        counts("train (all)", data.train.class_counts()),
        counts("train", sub(&tv.train)),
        counts("val", sub(&tv.val)),
        counts("test", data.test.class_counts()),
    ];
    for origin in data.test.origins_present() {
        if origin != Origin::Unknown {
            splits.push(counts(
                &format!("test: {}", origin.name()),
                data.test.with_origin(origin).class_counts(),
            ));
        }
    }
    let tc = data.train.class_counts();
    let max = *tc.iter().max().unwrap_or(&0) as f64;
    let min = *tc.iter().filter(|&&c| c > 0).min().unwrap_or(&1) as f64;
    DataStats {
        dir: cfg.dir.display().to_string(),
        digest: data.digest.clone(),
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        splits,
        imbalance_ratio: max / min,
        val_fraction: cfg.val_fraction,
        split_seed: cfg.split_seed,
        issues: data.report.counts(),
        quality: assess(&data.train, &data.test, cfg.blank_std),
        load_seconds,
        from_cache,
    }
}

impl DataStats {
    /// The human-readable summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "data set   {}", self.dir);
        let _ = writeln!(s, "digest     {}", self.digest);
        let _ = writeln!(
            s,
            "loaded in  {:.2} s ({})",
            self.load_seconds,
            if self.from_cache { "cache" } else { "decoded" }
        );
        let _ = writeln!(s);
        let _ = write!(s, "{:<20}", "split");
        for c in &self.classes {
            let _ = write!(s, "{c:>9}");
        }
        let _ = writeln!(s, "{:>9}", "total");
        for sp in &self.splits {
            let _ = write!(s, "{:<20}", sp.split);
            for c in &sp.counts {
                let _ = write!(s, "{c:>9}");
            }
            let _ = writeln!(s, "{:>9}", sp.total);
        }
        let _ = writeln!(
            s,
            "\nvalidation: {:.0}% of train, stratified, split_seed {}",
            self.val_fraction * 100.0,
            self.split_seed
        );
        let _ = writeln!(
            s,
            "imbalance:  largest/smallest train class = {:.1}x",
            self.imbalance_ratio
        );
        let q = &self.quality;
        let _ = writeln!(
            s,
            "blank:      {} train, {} test (pixel std below threshold)",
            q.blank_train.len(),
            q.blank_test.len()
        );
        let _ = writeln!(
            s,
            "duplicates: train {} groups ({} extra copies, {} with conflicting labels); \
             test {} groups ({} extra, {} conflicting)",
            q.dup_train.groups,
            q.dup_train.extra_copies,
            q.dup_train.label_conflicts,
            q.dup_test.groups,
            q.dup_test.extra_copies,
            q.dup_test.label_conflicts
        );
        let _ = writeln!(
            s,
            "            {} train images also in test ({} with a different label)",
            q.train_in_test, q.train_in_test_label_conflicts
        );
        if self.issues.is_empty() {
            let _ = writeln!(s, "bad input:  none");
        } else {
            let list: Vec<String> = self
                .issues
                .iter()
                .map(|(k, n)| format!("{n} {}", k.describe()))
                .collect();
            let _ = writeln!(s, "bad input:  {}", list.join(", "));
        }
        s
    }

    /// Writes the class-distribution chart (train, val, test).
    pub fn plot(&self, path: &Path) -> anyhow::Result<()> {
        let pick = |name: &str| {
            self.splits
                .iter()
                .find(|s| s.split == name)
                .map(|s| s.counts.iter().map(|&c| c as f64).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let cats: Vec<&str> = self.classes.iter().map(|s| s.as_str()).collect();
        crate::plot::grouped_bars(
            path,
            "FER-2013 class distribution",
            "images",
            &cats,
            &[
                ("train", pick("train")),
                ("val", pick("val")),
                ("test", pick("test")),
            ],
        )
    }
}
