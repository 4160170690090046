//! Data quality flags: near-blank images and exact duplicates (identical
//! pixels) within each split and across train and test.

use super::{ImageSet, PIXELS};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Pixel standard deviation of one image.
pub fn pixel_std(px: &[u8]) -> f64 {
    let n = px.len() as f64;
    let (s, s2) = px.iter().fold((0u64, 0u64), |(s, s2), &v| {
        (s + v as u64, s2 + (v as u64) * (v as u64))
    });
    let mean = s as f64 / n;
    (s2 as f64 / n - mean * mean).max(0.0).sqrt()
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DupCounts {
    /// Groups of two or more identical images.
    pub groups: usize,
    /// Images beyond the first of each group (what deduplication would drop).
    pub extra_copies: usize,
    /// Groups whose copies carry different labels.
    pub label_conflicts: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub blank_train: Vec<String>,
    pub blank_test: Vec<String>,
    pub dup_train: DupCounts,
    pub dup_test: DupCounts,
    /// Train images whose pixels equal some test image.
    pub train_in_test: usize,
    /// Of those, how many carry a different label than the test copy.
    pub train_in_test_label_conflicts: usize,
    /// Indices into train of the images that also appear in test.
    #[serde(skip)]
    pub train_in_test_indices: Vec<usize>,
}

fn groups(set: &ImageSet) -> HashMap<[u8; 32], Vec<usize>> {
    let mut map: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    for i in 0..set.len() {
        map.entry(*blake3::hash(set.image(i)).as_bytes())
            .or_default()
            .push(i);
    }
    map
}

fn dup_counts(set: &ImageSet, map: &HashMap<[u8; 32], Vec<usize>>) -> DupCounts {
    let mut d = DupCounts::default();
    for members in map.values().filter(|m| m.len() > 1) {
        d.groups += 1;
        d.extra_copies += members.len() - 1;
        let first = set.labels[members[0]];
        if members.iter().any(|&i| set.labels[i] != first) {
            d.label_conflicts += 1;
        }
    }
    d
}

/// Flags blank images (std below `blank_std`) and duplicates.
pub fn assess(train: &ImageSet, test: &ImageSet, blank_std: f64) -> Quality {
    debug_assert_eq!(train.pixels.len(), train.len() * PIXELS);
    let blanks = |s: &ImageSet| -> Vec<String> {
        (0..s.len())
            .filter(|&i| pixel_std(s.image(i)) < blank_std)
            .map(|i| s.sources[i].clone())
            .collect()
    };
    let g_train = groups(train);
    let g_test = groups(test);
    let mut q = Quality {
        blank_train: blanks(train),
        blank_test: blanks(test),
        dup_train: dup_counts(train, &g_train),
        dup_test: dup_counts(test, &g_test),
        ..Default::default()
    };
    for (h, members) in &g_train {
        if let Some(tm) = g_test.get(h) {
            let test_label = test.labels[tm[0]];
            for &i in members {
                q.train_in_test += 1;
                q.train_in_test_indices.push(i);
                if train.labels[i] != test_label {
                    q.train_in_test_label_conflicts += 1;
                }
            }
        }
    }
    q.train_in_test_indices.sort_unstable();
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Origin;

    fn set(images: &[(u8, u8)]) -> ImageSet {
        let mut s = ImageSet::default();
        for (k, &(fill, label)) in images.iter().enumerate() {
            let mut px = vec![fill; PIXELS];
            if fill > 0 {
                // Texture, so only fill-0 images are blank.
                for (i, p) in px.iter_mut().enumerate() {
                    *p = p.wrapping_add((i % 7) as u8 * 20);
                }
            }
            s.push(&px, label, Origin::Training, format!("img{k}"));
        }
        s
    }

    #[test]
    fn finds_blanks_and_duplicates() {
        let train = set(&[(0, 0), (10, 1), (10, 2), (10, 1), (30, 3)]);
        let test = set(&[(30, 4), (50, 5)]);
        let q = assess(&train, &test, 3.0);
        assert_eq!(q.blank_train, vec!["img0".to_string()]);
        assert!(q.blank_test.is_empty());
        assert_eq!(q.dup_train.groups, 1);
        assert_eq!(q.dup_train.extra_copies, 2);
        assert_eq!(q.dup_train.label_conflicts, 1);
        assert_eq!(q.train_in_test, 1);
        assert_eq!(q.train_in_test_label_conflicts, 1);
        assert_eq!(q.train_in_test_indices, vec![4]);
    }

    #[test]
    fn std_of_constant_is_zero() {
        assert_eq!(pixel_std(&[5; 100]), 0.0);
        assert!((pixel_std(&[0, 255]) - 127.5).abs() < 1e-9);
    }
}
