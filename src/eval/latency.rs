//! Forward-pass timing of a network on one random input: what `fer bench
//! infer`, `fer quantize` and the report's latency column all measure, so
//! their figures are the same measurement.

use std::time::Instant;

/// Seconds of timed forward passes (softmax included) over one random
/// `batch x 1 x side x side` input after 3 warm-ups, sorted: at least `runs`
/// of them, for at least `seconds` in all.
pub fn forward_times(
    module: &dyn tch::nn::ModuleT,
    batch: usize,
    side: i64,
    seconds: f64,
    runs: usize,
) -> Vec<f64> {
    let x = tch::Tensor::randn(
        [batch as i64, 1, side, side],
        (tch::Kind::Float, tch::Device::Cpu),
    );
    let run = || {
        tch::no_grad(|| {
            let _ = module.forward_t(&x, false).softmax(-1, tch::Kind::Float);
        })
    };
    for _ in 0..3 {
        run();
    }
    let mut times = Vec::new();
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < seconds || times.len() < runs.max(1) {
        let t0 = Instant::now();
        run();
        times.push(t0.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times
}

/// Median seconds of one forward pass (see `forward_times`).
pub fn forward_seconds(
    module: &dyn tch::nn::ModuleT,
    batch: usize,
    side: i64,
    seconds: f64,
) -> f64 {
    median(forward_times(module, batch, side, seconds, 5))
}

/// The middle value (the upper one of an even count): the figure every timing
/// here reports.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
