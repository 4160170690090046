//! Class-imbalance tools: loss weights per class and a weighted sampler that
//! draws each epoch's indices with probability inversely related to class size.

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::Rng;

/// Per-class loss weights `(n / (k * n_c))^power`: `power = 1` is
/// scikit-learn's "balanced", `0` gives all ones, `0.5` is a softer middle.
/// Classes with no samples get weight 0.
pub fn class_weights(counts: &[usize], power: f64) -> Vec<f32> {
    let n: usize = counts.iter().sum();
    let k = counts.iter().filter(|&&c| c > 0).count().max(1);
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                ((n as f64 / (k as f64 * c as f64)).powf(power)) as f32
            }
        })
        .collect()
}

/// Draws `n` indices with replacement, each sample weighted by its class's
/// weight, so the expected class mix follows `weights * counts`.
pub fn weighted_indices(
    labels: &[u8],
    class_weight: &[f32],
    n: usize,
    rng: &mut impl Rng,
) -> Vec<usize> {
    let w: Vec<f32> = labels.iter().map(|&l| class_weight[l as usize]).collect();
    let dist = WeightedIndex::new(&w).expect("class weights must be positive for a present class");
    (0..n).map(|_| dist.sample(rng)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn balanced_weights_match_sklearn() {
        // sklearn compute_class_weight("balanced") for counts [10, 30, 60]: n/(k*c).
        let w = class_weights(&[10, 30, 60], 1.0);
        let want = [100.0 / 30.0, 100.0 / 90.0, 100.0 / 180.0];
        for (a, b) in w.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{w:?}");
        }
        assert_eq!(class_weights(&[10, 0, 5], 0.0), vec![1.0, 0.0, 1.0]);
    }

    #[test]
    fn weighted_sampler_balances_classes() {
        let labels: Vec<u8> = (0..1000).map(|i| if i < 900 { 0 } else { 1 }).collect();
        let w = class_weights(&[900, 100], 1.0);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let idx = weighted_indices(&labels, &w, 20_000, &mut rng);
        let minority = idx.iter().filter(|&&i| labels[i] == 1).count() as f64 / idx.len() as f64;
        assert!((minority - 0.5).abs() < 0.02, "minority share {minority}");
    }
}
