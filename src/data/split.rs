//! The validation split: stratified by class and seeded, so every trial of a
//! sweep selects on the same held-out training images.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Indices into the training set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainVal {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// Holds out `round(fraction * n_c)` images of each class `c`, chosen by a
/// seeded shuffle. Both index lists come back sorted.
pub fn stratified(labels: &[u8], fraction: f64, seed: u64) -> TrainVal {
    let n_classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = Vec::with_capacity(labels.len());
    let mut val = Vec::new();
    for c in 0..n_classes {
        let mut idx: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == c)
            .collect();
        idx.shuffle(&mut rng);
        let n_val = (idx.len() as f64 * fraction).round() as usize;
        val.extend_from_slice(&idx[..n_val]);
        train.extend_from_slice(&idx[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    TrainVal { train, val }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<u8> {
        (0..1000)
            .map(|i| if i % 10 == 0 { 1 } else { (i % 3) as u8 * 2 })
            .collect()
    }

    #[test]
    fn same_seed_same_split_and_disjoint_cover() {
        let l = labels();
        let a = stratified(&l, 0.1, 7);
        assert_eq!(a, stratified(&l, 0.1, 7));
        assert_ne!(a.val, stratified(&l, 0.1, 8).val);
        let mut all: Vec<usize> = a.train.iter().chain(&a.val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..l.len()).collect::<Vec<_>>());
    }

    #[test]
    fn each_class_is_held_out_in_proportion() {
        let l = labels();
        let s = stratified(&l, 0.2, 1);
        for c in [0u8, 1, 2, 4] {
            let total = l.iter().filter(|&&x| x == c).count();
            let held = s.val.iter().filter(|&&i| l[i] == c).count();
            assert_eq!(held, (total as f64 * 0.2).round() as usize, "class {c}");
        }
    }
}
