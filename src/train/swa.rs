//! Stochastic weight averaging: the running mean of the weights at the end of
//! each averaging epoch (`AveragedModel`), and the BatchNorm pass that gives
//! the average statistics of its own (`update_bn`, cumulative average).

use anyhow::Result;
use std::collections::BTreeMap;
use tch::{nn, Tensor};

/// The momentum of every BatchNorm in `fer`'s models (tch's default).
const BN_MOMENTUM: f64 = 0.1;

fn is_bn_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// The running mean of a network's variables over `n` snapshots.
#[derive(Debug, Default)]
pub struct Averager {
    pub n: usize,
    pub avg: BTreeMap<String, Tensor>,
}

impl Averager {
    /// Restores an average from its checkpointed tensors.
    pub fn restore(avg: BTreeMap<String, Tensor>, n: usize) -> Averager {
        Averager { n, avg }
    }

    /// Adds the current weights of `vs` as one more snapshot.
    pub fn update(&mut self, vs: &nn::VarStore) {
        tch::no_grad(|| {
            let k = (self.n + 1) as f64;
            for (name, t) in vs.variables() {
                match self.avg.get_mut(&name) {
                    // avg += (w - avg) / (n + 1): no large sums in float32.
                    Some(a) => {
                        let _ = a.g_add_(&((&t - &*a) / k));
                    }
                    None => {
                        self.avg.insert(name, t.detach().copy());
                    }
                }
            }
        });
        self.n += 1;
    }

    /// Writes the average into `vs` (BatchNorm statistics included, which
    /// `recalibrate_bn` then replaces).
    pub fn copy_into(&self, vs: &nn::VarStore) -> Result<()> {
        crate::models::weights::copy_into(vs, &self.avg, "")
    }
}

/// Recomputes every BatchNorm's running mean and variance in `vs` as the
/// average of its per-batch statistics over `batches`, each passed through
/// `forward` in training mode. A BatchNorm with momentum m moves its running
/// value r to (1-m) r + m s, so each batch's statistic s is read back from
/// the change. Returns the batches seen; with none, nothing changes.
pub fn recalibrate_bn(
    vs: &nn::VarStore,
    batches: impl IntoIterator<Item = Tensor>,
    mut forward: impl FnMut(&Tensor) -> Result<()>,
) -> Result<usize> {
    let stats: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(n, _)| is_bn_stat(n))
        .collect();
    if stats.is_empty() {
        return Ok(0);
    }
    tch::no_grad(|| {
        let mut sums: Vec<Tensor> = stats.iter().map(|(_, t)| t.zeros_like()).collect();
        let mut n = 0usize;
        for x in batches {
            let before: Vec<Tensor> = stats.iter().map(|(_, t)| t.copy()).collect();
            forward(&x)?;
            for (((_, t), b), s) in stats.iter().zip(&before).zip(sums.iter_mut()) {
                let batch_stat = (t - b * (1.0 - BN_MOMENTUM)) / BN_MOMENTUM;
                let _ = s.g_add_(&batch_stat);
            }
            n += 1;
        }
        if n > 0 {
            for ((_, t), s) in stats.iter().zip(&sums) {
                t.shallow_clone().copy_(&(s / n as f64));
            }
        }
        Ok(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn averaging_three_snapshots_gives_their_mean() {
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(vs.root() / "fc", 3, 2, Default::default());
        let mut avg = Averager::default();
        let w0 = lin.ws.copy();
        avg.update(&vs);
        tch::no_grad(|| {
            let mut w = lin.ws.shallow_clone();
            let _ = w.g_add_(&Tensor::ones_like(&w));
        });
        avg.update(&vs);
        avg.update(&vs);
        // (w0 + 2 (w0 + 1)) / 3 = w0 + 2/3
        let want = &w0 + 2.0 / 3.0;
        let d = (&avg.avg["fc.weight"] - want).abs().max().double_value(&[]);
        assert!(d < 1e-6, "off by {d}");
        assert_eq!(avg.n, 3);
    }

    /// Per-channel mean and unbiased variance of each batch, averaged.
    fn mean_of_batch_stats(batches: &[Tensor]) -> (Tensor, Tensor) {
        let zero = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let (m, v) = batches.iter().fold((zero.copy(), zero), |(m, v), b| {
            let c = b.transpose(0, 1).reshape([2, -1]);
            (
                m + c.mean_dim(1, false, Kind::Float),
                v + c.var_dim(1, true, false),
            )
        });
        let k = batches.len() as f64;
        (m / k, v / k)
    }

    #[test]
    fn recalibrated_statistics_are_the_mean_of_the_batch_statistics() {
        let vs = nn::VarStore::new(Device::Cpu);
        let bn = nn::batch_norm2d(vs.root() / "bn", 2, Default::default());
        tch::manual_seed(7);
        let batches: Vec<Tensor> = (0..5)
            .map(|i| Tensor::randn([4, 2, 3, 3], (Kind::Float, Device::Cpu)) * (1 + i) + i)
            .collect();
        let (mean, var) = mean_of_batch_stats(&batches);
        // Twice: the running values before a pass must not leak into it.
        for _ in 0..2 {
            let n = recalibrate_bn(&vs, batches.iter().map(|b| b.shallow_clone()), |x| {
                let _ = x.apply_t(&bn, true);
                Ok(())
            })
            .unwrap();
            assert_eq!(n, 5);
            let dm = (&bn.running_mean - &mean).abs().max().double_value(&[]);
            let dv = (&bn.running_var - &var).abs().max().double_value(&[]);
            assert!(dm < 1e-4 && dv < 1e-3, "mean off by {dm}, var by {dv}");
        }
        // A plain pass with momentum 0.1 would not get there.
        let _ = batches[0].apply_t(&bn, true);
        let dm = (&bn.running_mean - &mean).abs().max().double_value(&[]);
        assert!(dm > 1e-2, "the check above cannot tell: {dm}");
    }
}
