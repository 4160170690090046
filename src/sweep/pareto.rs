//! Several objectives at once: Pareto dominance, non-dominated sorting and
//! crowding distance (NSGA-II, Deb et al. 2002), over loss vectors where
//! every coordinate is minimised (`Direction::loss` turns maxima into
//! minima). TPE uses them to order trials when it splits good from bad
//! (MOTPE's split by non-domination rank, with crowding distance instead of
//! Optuna's hypervolume contribution inside the boundary front).

/// Whether `a` is at least as good as `b` everywhere and better somewhere.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x <= y) && a.iter().zip(b).any(|(x, y)| x < y)
}

/// Each point's front: 0 for the non-dominated ones, 1 for those dominated
/// only by front 0, and so on.
pub fn ranks(points: &[Vec<f64>]) -> Vec<usize> {
    let n = points.len();
    let mut rank = vec![usize::MAX; n];
    let mut left: Vec<usize> = (0..n).collect();
    let mut r = 0;
    while !left.is_empty() {
        let front: Vec<usize> = left
            .iter()
            .copied()
            .filter(|&i| {
                !left
                    .iter()
                    .any(|&j| j != i && dominates(&points[j], &points[i]))
            })
            .collect();
        for &i in &front {
            rank[i] = r;
        }
        left.retain(|i| !front.contains(i));
        r += 1;
    }
    rank
}

/// Indices of the non-dominated points, in input order.
pub fn front(points: &[Vec<f64>]) -> Vec<usize> {
    ranks(points)
        .iter()
        .enumerate()
        .filter(|(_, &r)| r == 0)
        .map(|(i, _)| i)
        .collect()
}

/// Crowding distance of each point within its set (infinite at the ends of
/// every coordinate): how much room it has, larger is lonelier.
#[allow(clippy::needless_range_loop)] // k indexes a coordinate of every point
pub fn crowding(points: &[Vec<f64>]) -> Vec<f64> {
    let n = points.len();
    let mut d = vec![0.0; n];
    let dims = points.first().map_or(0, Vec::len);
    for k in 0..dims {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| points[a][k].total_cmp(&points[b][k]));
        let (lo, hi) = (points[idx[0]][k], points[idx[n - 1]][k]);
        d[idx[0]] = f64::INFINITY;
        d[idx[n - 1]] = f64::INFINITY;
        if hi > lo {
            for w in 1..n.saturating_sub(1) {
                d[idx[w]] += (points[idx[w + 1]][k] - points[idx[w - 1]][k]) / (hi - lo);
            }
        }
    }
    d
}

/// One number per point that orders points as NSGA-II does (rank first,
/// then the more crowded last): smaller is better. What TPE sorts by.
pub fn order_keys(points: &[Vec<f64>]) -> Vec<f64> {
    let rank = ranks(points);
    let mut key = vec![0.0; points.len()];
    let max = rank.iter().copied().max().unwrap_or(0);
    for r in 0..=max {
        let members: Vec<usize> = (0..points.len()).filter(|&i| rank[i] == r).collect();
        let pts: Vec<Vec<f64>> = members.iter().map(|&i| points[i].clone()).collect();
        for (&i, c) in members.iter().zip(crowding(&pts)) {
            // In [r, r + 0.5]: a lonelier point comes first within its front.
            key[i] = r as f64 + 0.5 / (1.0 + c);
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fronts_and_order_on_a_known_set() {
        let p = vec![
            vec![1.0, 5.0], // front 0
            vec![2.0, 3.0], // front 0
            vec![4.0, 1.0], // front 0
            vec![3.0, 4.0], // dominated by [2, 3]
            vec![5.0, 5.0], // dominated by everything above
            vec![2.0, 3.0], // a tie is not domination: front 0
        ];
        assert_eq!(ranks(&p), vec![0, 0, 0, 1, 2, 0]);
        assert_eq!(front(&p), vec![0, 1, 2, 5]);
        let k = order_keys(&p);
        // The ends of front 0 first, every front before the next.
        assert!(k[0] < k[1] && k[2] < k[1], "{k:?}");
        assert!(k[1] < k[3] && k[3] < k[4], "{k:?}");
    }

    /// ZDT1 in five variables (Zitzler, Deb, Thiele 2000): f1 = x1,
    /// f2 = g (1 - sqrt(x1 / g)), g = 1 + 9 mean(x2..x5). Its Pareto front is
    /// f2 = 1 - sqrt(f1), where x2..x5 = 0. Returns the mean distance above
    /// that front of the front a sampler found in `budget` trials, and the
    /// front's size.
    fn zdt1(
        sampler: &crate::sweep::sampler::SamplerConfig,
        seed: u64,
        budget: usize,
    ) -> (f64, usize) {
        use crate::metric::Direction;
        use crate::sweep::journal::{TrialRecord, TrialState};
        use crate::sweep::space::{Space, SpaceFile};
        let f: SpaceFile = serde_saphyr::from_str(
            "x1: {float: [0.0, 1.0]}\nx2: {float: [0.0, 1.0]}\nx3: {float: [0.0, 1.0]}\nx4: {float: [0.0, 1.0]}\nx5: {float: [0.0, 1.0]}\n",
        )
        .unwrap();
        let space = Space::from_file(&f, &[]).unwrap();
        let dirs = [Direction::Minimize, Direction::Minimize];
        let mut trials: Vec<TrialRecord> = Vec::new();
        for n in 0..budget {
            let obs = crate::sweep::sampler::observations_multi(&trials, &dirs);
            let p = sampler.ask(&space, &obs, seed, n);
            let x = |k: &str| p[k].as_f64().unwrap();
            let g = 1.0 + 9.0 * (x("x2") + x("x3") + x("x4") + x("x5")) / 4.0;
            let f1 = x("x1");
            let f2 = g * (1.0 - (f1 / g).sqrt());
            let mut t = TrialRecord::finished(n, p, TrialState::Complete, Some(f1));
            t.values = Some(vec![f1, f2]);
            trials.push(t);
        }
        let points: Vec<Vec<f64>> = trials.iter().map(|t| t.values.clone().unwrap()).collect();
        let fr = front(&points);
        let gap: f64 = fr
            .iter()
            .map(|&i| points[i][1] - (1.0 - points[i][0].sqrt()))
            .sum::<f64>()
            / fr.len() as f64;
        (gap, fr.len())
    }

    #[test]
    fn motpe_finds_the_known_front_of_zdt1_closer_than_random() {
        use crate::sweep::sampler::SamplerConfig;
        let tpe = SamplerConfig::Tpe {
            n_startup: 10,
            n_ei_candidates: 24,
        };
        let (seeds, budget) = (10, 200);
        let mean = |s: &SamplerConfig| {
            let r: Vec<(f64, usize)> = (0..seeds).map(|seed| zdt1(s, seed, budget)).collect();
            (
                r.iter().map(|p| p.0).sum::<f64>() / seeds as f64,
                r.iter().map(|p| p.1).sum::<usize>() as f64 / seeds as f64,
            )
        };
        let (t_gap, t_size) = mean(&tpe);
        let (r_gap, r_size) = mean(&SamplerConfig::Random);
        eprintln!(
            "ZDT1, {budget} trials, mean over {seeds} seeds: distance above the true front TPE {t_gap:.3} ({t_size:.1} points), random {r_gap:.3} ({r_size:.1} points)"
        );
        assert!(t_gap < 0.6 * r_gap, "TPE {t_gap} vs random {r_gap}");
        assert!(t_gap < 0.5, "TPE's front is near the true one: {t_gap}");
        assert!(t_size >= 4.0, "a front, not a point: {t_size}");
    }
}
