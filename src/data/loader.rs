//! The batch loader: a producer thread builds each batch (indices, parallel
//! augmentation, tensor) while the model trains on the previous one, through
//! a bounded channel, so training never waits on data and memory stays flat.

use super::augment::{augment_batch, eval_batch, AugmentConfig};
use super::sampler::weighted_indices;
use super::ImageSet;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::Tensor;

/// The order of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub enum Order {
    /// Every index once, in order (evaluation).
    Sequential,
    /// Every index once, shuffled by (seed, epoch).
    Shuffle,
    /// `len` draws with replacement, weighted by these per-class weights.
    Weighted(Vec<f32>),
}

/// A batch: inputs `[B, 1, S, S]` f32 and labels `[B]` i64.
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
    /// Dataset indices of the batch, in order (for error galleries).
    pub indices: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct LoaderSpec {
    pub batch_size: usize,
    /// `Some` augments (training), `None` uses the eval transform of `eval`.
    pub augment: Option<AugmentConfig>,
    pub eval: AugmentConfig,
    pub order: Order,
    pub seed: u64,
    pub drop_last: bool,
    /// Batches built ahead of the consumer.
    pub prefetch: usize,
}

/// The indices of one epoch, deterministic in (seed, epoch).
pub fn epoch_indices(set: &ImageSet, order: &Order, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    match order {
        Order::Sequential => (0..set.len()).collect(),
        Order::Shuffle => {
            let mut v: Vec<usize> = (0..set.len()).collect();
            v.shuffle(&mut rng);
            v
        }
        Order::Weighted(w) => weighted_indices(&set.labels, w, set.len(), &mut rng),
    }
}

/// An epoch of batches being produced in the background.
pub struct Epoch {
    rx: Receiver<Batch>,
    handle: Option<JoinHandle<()>>,
    pub batches: usize,
}

impl Iterator for Epoch {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        // Dropping the receiver makes the producer's next send fail; join so
        // no thread outlives the epoch.
        let (_tx, rx) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts producing epoch `epoch` of `set`. `skip_batches` resumes mid-epoch.
pub fn start_epoch(
    set: Arc<ImageSet>,
    spec: &LoaderSpec,
    epoch: u64,
    skip_batches: usize,
) -> Epoch {
    let indices = epoch_indices(&set, &spec.order, spec.seed, epoch);
    let bs = spec.batch_size.max(1);
    let mut chunks: Vec<(usize, Vec<usize>)> = indices
        .chunks(bs)
        .enumerate()
        .map(|(k, c)| (k * bs, c.to_vec()))
        .filter(|(_, c)| !spec.drop_last || c.len() == bs)
        .collect();
    chunks.drain(..skip_batches.min(chunks.len()));
    let batches = chunks.len();
    let (tx, rx) = sync_channel(spec.prefetch.max(1));
    let spec = spec.clone();
    let handle = std::thread::Builder::new()
        .name("fer-loader".into())
        .spawn(move || {
            for (first, idx) in chunks {
                let cfg = spec.augment.as_ref().unwrap_or(&spec.eval);
                let n = cfg.out_len();
                let mut buf = vec![0f32; idx.len() * n];
                match &spec.augment {
                    Some(a) => augment_batch(
                        &set.pixels,
                        &idx,
                        a,
                        spec.seed,
                        epoch,
                        first as u64,
                        &mut buf,
                    ),
                    None => eval_batch(&set.pixels, &idx, &spec.eval, &mut buf),
                }
                let s = cfg.size as i64;
                let x = Tensor::from_slice(&buf).view([idx.len() as i64, 1, s, s]);
                let labels: Vec<i64> = idx.iter().map(|&i| set.labels[i] as i64).collect();
                let y = Tensor::from_slice(&labels);
                if tx.send(Batch { x, y, indices: idx }).is_err() {
                    return;
                }
            }
        })
        .expect("spawning the loader thread");
    Epoch {
        rx,
        handle: Some(handle),
        batches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Origin, PIXELS};

    fn set(n: usize) -> Arc<ImageSet> {
        let mut s = ImageSet::default();
        for i in 0..n {
            s.push(
                &vec![(i * 7 % 256) as u8; PIXELS],
                (i % 7) as u8,
                Origin::Training,
                format!("{i}"),
            );
        }
        Arc::new(s)
    }

    fn spec() -> LoaderSpec {
        LoaderSpec {
            batch_size: 16,
            augment: Some(AugmentConfig::default()),
            eval: AugmentConfig::default(),
            order: Order::Shuffle,
            seed: 3,
            drop_last: false,
            prefetch: 2,
        }
    }

    #[test]
    fn epoch_covers_every_index_once_and_is_reproducible() {
        let s = set(100);
        let collect = |skip| -> Vec<Batch> { start_epoch(s.clone(), &spec(), 1, skip).collect() };
        let a = collect(0);
        assert_eq!(a.len(), 7);
        let mut all: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(a[6].x.size(), vec![4, 1, 44, 44]);
        // Resuming after two batches yields exactly the remaining batches.
        let b = collect(2);
        assert_eq!(b.len(), 5);
        for (x, y) in a[2..].iter().zip(&b) {
            assert_eq!(x.indices, y.indices);
            assert!(x.x.equal(&y.x));
        }
    }

    #[test]
    fn dropping_an_epoch_early_stops_the_producer() {
        let s = set(1000);
        let mut e = start_epoch(s, &spec(), 0, 0);
        assert!(e.next().is_some());
        drop(e); // must not hang
    }
}
