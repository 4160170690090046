//! `fer data stats`: counts per split and class, imbalance, quality flags and
//! the digest, as text or JSON, plus a class-distribution chart.

use super::quality::{assess, Quality};
use super::split::stratified;
use super::{DataConfig, FerData, IssueKind, Origin};
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
    /// Pixel mean and standard deviation in [0, 1] over the training split
    /// (validation images left out): the data set's `augment.mean`/`std`.
    pub pixel_mean: f64,
    pub pixel_std: f64,
    pub issues: Vec<(IssueKind, usize)>,
    pub quality: Quality,
    pub load_seconds: f64,
    pub from_cache: bool,
}

fn counts(name: &str, c: Vec<usize>) -> SplitCounts {
    SplitCounts {
        split: name.to_string(),
        total: c.iter().sum(),
        counts: c,
    }
}

pub fn compute(cfg: &DataConfig, data: &FerData, load_seconds: f64, from_cache: bool) -> DataStats {
    let tv = stratified(&data.train.labels, cfg.val_fraction, cfg.split_seed);
    let k = data.classes.len();
    let sub = |idx: &[usize]| {
        let mut c = vec![0usize; k];
        for &i in idx {
            c[data.train.labels[i] as usize] += 1;
        }
        c
    };
    let mut splits = vec![
        counts("train (all)", data.train.class_counts(k)),
        counts("train", sub(&tv.train)),
        counts("val", sub(&tv.val)),
        counts("test", data.test.class_counts(k)),
    ];
    for origin in data.test.origins_present() {
        if origin != Origin::Unknown {
            splits.push(counts(
                &format!("test: {}", data.test.origin_name(origin)),
                data.test.with_origin(origin).class_counts(k),
            ));
        }
    }
    let tc = data.train.class_counts(k);
    let max = *tc.iter().max().unwrap_or(&0) as f64;
    let min = *tc.iter().filter(|&&c| c > 0).min().unwrap_or(&1) as f64;
    let (pixel_mean, pixel_std) = pixel_stats(data, &tv.train);
    DataStats {
        dir: cfg.dir.display().to_string(),
        digest: data.digest.clone(),
        classes: data.classes.clone(),
        splits,
        imbalance_ratio: max / min,
        val_fraction: cfg.val_fraction,
        split_seed: cfg.split_seed,
        pixel_mean,
        pixel_std,
        issues: data.report.counts(),
        quality: assess(&data.train, &data.test, cfg.blank_std),
        load_seconds,
        from_cache,
    }
}

/// Mean and standard deviation of the training images `idx`, in [0, 1],
/// from a 256-bin histogram (exact for 8-bit pixels, in any order).
pub fn pixel_stats(data: &FerData, idx: &[usize]) -> (f64, f64) {
    let mut hist = [0u64; 256];
    for &i in idx {
        for &p in data.train.image(i) {
            hist[p as usize] += 1;
        }
    }
    let n: u64 = hist.iter().sum();
    if n == 0 {
        return (0.5, 0.25);
    }
    let mean = hist
        .iter()
        .enumerate()
        .map(|(v, &c)| v as f64 * c as f64)
        .sum::<f64>()
        / n as f64;
    let var = hist
        .iter()
        .enumerate()
        .map(|(v, &c)| (v as f64 - mean).powi(2) * c as f64)
        .sum::<f64>()
        / n as f64;
    (mean / 255.0, var.sqrt() / 255.0)
}

impl DataStats {
    /// A data config for this data set: where it is, its classes, and the
    /// normalisation of its training split, over the defaults of `base`.
    pub fn data_config(&self, base: &DataConfig) -> String {
        let mut cfg = base.clone();
        cfg.classes = Some(self.classes.clone());
        // Rounded as a person would write them; four digits are well inside
        // what the network notices.
        cfg.augment.mean = (self.pixel_mean * 1e4).round() as f32 / 1e4;
        cfg.augment.std = (self.pixel_std * 1e4).round() as f32 / 1e4;
        format!(
            "# Data group written by `fer data stats --write-config` from {}\n\
             # (digest {}): its classes in label order and the pixel mean and\n\
             # std of its training split. Use it as `data: <this file>` in an\n\
             # experiment, or with `--config`.\n{}",
            self.dir,
            &self.digest[..self.digest.len().min(12)],
            serde_saphyr::to_string(&cfg).unwrap_or_default()
        )
    }

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
        let _ = writeln!(
            s,
            "normalise:  mean {:.4}, std {:.4} (training-split pixels in [0, 1]; data.augment.mean/std)",
            self.pixel_mean, self.pixel_std
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
            "class distribution",
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
