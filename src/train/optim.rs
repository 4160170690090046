//! SGD (Nesterov) and AdamW written over tensors, so their state is named
//! tensors that checkpoints save and a resumed run restores exactly
//! (libtorch's C++ optimisers expose no state to tch). Weight decay skips
//! 1-D parameters (biases, norms), the usual practice.

use crate::config::train::OptimizerConfig;
use std::collections::BTreeMap;
use tch::Tensor;

pub struct Optimizer {
    cfg: OptimizerConfig,
    /// Parameters by name, sorted: a stable order for state and clipping.
    params: Vec<(String, Tensor)>,
    /// Per-parameter state: SGD `[momentum]`, AdamW `[m, v, step]`.
    state: BTreeMap<String, Vec<Tensor>>,
    pub steps: i64,
}

impl Optimizer {
    pub fn new(cfg: OptimizerConfig, vars: &tch::nn::VarStore) -> Optimizer {
        let mut params: Vec<(String, Tensor)> = vars
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Optimizer {
            cfg,
            params,
            state: BTreeMap::new(),
            steps: 0,
        }
    }

    pub fn zero_grad(&mut self) {
        for (_, p) in &mut self.params {
            p.zero_grad();
        }
    }

    /// Scales gradients so their global L2 norm is at most `max`; returns
    /// the norm before clipping.
    pub fn clip_grad_norm(&mut self, max: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|(_, p)| p.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norm = tch::no_grad(|| {
            Tensor::stack(&grads.iter().map(|g| g.norm()).collect::<Vec<_>>(), 0)
                .norm()
                .double_value(&[])
        });
        if norm > max {
            let scale = max / (norm + 1e-6);
            tch::no_grad(|| {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(scale);
                }
            });
        }
        norm
    }

    /// One update with learning rate `lr`. Frozen parameters (no gradient)
    /// are skipped.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        tch::no_grad(|| {
            for (name, p) in &mut self.params {
                if !p.requires_grad() {
                    continue;
                }
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let decay = p.dim() > 1;
                // In-place, fused where libtorch allows (addcmul_ with a 0-dim
                // factor, lerp_), so each step makes as few passes over the
                // parameters as PyTorch's foreach implementation.
                let scalar = |v: f64| Tensor::from(v as f32).to_device(p.device());
                match self.cfg {
                    OptimizerConfig::Sgd {
                        momentum,
                        nesterov,
                        weight_decay,
                        ..
                    } => {
                        let mut g = g;
                        if decay && weight_decay > 0.0 {
                            let _ = g.addcmul_(&*p, &scalar(weight_decay));
                        }
                        if momentum > 0.0 {
                            // PyTorch: the buffer starts as the first gradient.
                            match self.state.get_mut(name.as_str()) {
                                Some(st) => {
                                    let _ = st[0].g_mul_scalar_(momentum);
                                    let _ = st[0].g_add_(&g);
                                    if nesterov {
                                        let _ = g.addcmul_(&st[0], &scalar(momentum));
                                    } else {
                                        g = st[0].shallow_clone();
                                    }
                                }
                                None => {
                                    let b = g.detach().copy();
                                    if nesterov {
                                        let _ = g.addcmul_(&b, &scalar(momentum));
                                    } else {
                                        g = b.shallow_clone();
                                    }
                                    self.state.insert(name.clone(), vec![b]);
                                }
                            }
                        }
                        let _ = p.addcmul_(&g, &scalar(-lr));
                    }
                    OptimizerConfig::Adamw {
                        betas: [b1, b2],
                        eps,
                        weight_decay,
                        ..
                    } => {
                        if decay && weight_decay > 0.0 {
                            let _ = p.g_mul_scalar_(1.0 - lr * weight_decay);
                        }
                        // State: m, v, and this parameter's own step count (a
                        // frozen-then-unfrozen parameter starts its bias correction late).
                        let st = self.state.entry(name.clone()).or_insert_with(|| {
                            vec![g.zeros_like(), g.zeros_like(), Tensor::from(0f64)]
                        });
                        let _ = st[2].g_add_scalar_(1.0);
                        let t = st[2].double_value(&[]) as i32;
                        let _ = st[0].lerp_(&g, 1.0 - b1);
                        let _ = st[1].g_mul_scalar_(b2);
                        let _ = st[1].addcmul_(&g, &(&g * (1.0 - b2)));
                        let bc1 = 1.0 - b1.powi(t);
                        let bc2 = 1.0 - b2.powi(t);
                        // p -= lr/bc1 * m / (sqrt(v/bc2) + eps), as one addcdiv_.
                        let mut denom = st[1].sqrt();
                        let _ = denom.g_mul_scalar_(1.0 / bc2.sqrt());
                        let _ = denom.g_add_scalar_(eps);
                        let _ = denom.g_mul_scalar_(-bc1 / lr);
                        let _ = p.addcdiv_(&st[0], &denom);
                    }
                }
            }
        });
    }

    /// State tensors named `<param>/<i>`, for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.state
            .iter()
            .flat_map(|(name, v)| {
                v.iter()
                    .enumerate()
                    .map(move |(i, t)| (format!("{name}/{i}"), t.shallow_clone()))
            })
            .collect()
    }

    /// Restores state saved by `state_tensors`.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, steps: i64) {
        self.state.clear();
        let device = self.device();
        for (key, t) in tensors {
            if let Some((name, i)) = key.rsplit_once('/') {
                let i: usize = i.parse().unwrap_or(0);
                let v = self.state.entry(name.to_string()).or_default();
                if v.len() <= i {
                    v.resize_with(i + 1, Tensor::new);
                }
                v[i] = if t.dim() == 0 {
                    t.copy()
                } else {
                    t.to_device(device).copy()
                };
            }
        }
        self.steps = steps;
    }

    fn device(&self) -> tch::Device {
        self.params
            .first()
            .map_or(tch::Device::Cpu, |(_, p)| p.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    /// One parameter, fixed gradients; compare with PyTorch's update rules
    /// written out by hand.
    fn run(cfg: OptimizerConfig, grads: &[[f32; 2]], wd_param_dim2: bool) -> Vec<f32> {
        let vs = nn::VarStore::new(Device::Cpu);
        let shape: &[i64] = if wd_param_dim2 { &[1, 2] } else { &[2] };
        let p = vs
            .root()
            .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]).view(shape));
        let mut opt = Optimizer::new(cfg, &vs);
        for g in grads {
            opt.zero_grad();
            let target = Tensor::from_slice(g).view(shape);
            // loss = sum(p * g) has gradient g.
            (&p * &target).sum(Kind::Float).backward();
            opt.step(0.1);
        }
        Vec::<f32>::try_from(p.flatten(0, -1)).unwrap()
    }

    #[test]
    fn sgd_nesterov_matches_pytorch_by_hand() {
        let cfg = OptimizerConfig::Sgd {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.01,
        };
        let out = run(cfg, &[[1.0, 1.0], [0.5, -1.0]], true);
        // torch.optim.SGD(lr=.1, momentum=.9, nesterov=True, weight_decay=.01), first coordinate:
        // step 1: d = 1 + .01*1 = 1.01; buf = 1.01; d = 1.01 + .9*1.01 = 1.919; p = 1 - .1919 = .8081
        // step 2: d = .5 + .01*.8081 = .508081; buf = .9*1.01 + .508081 = 1.417081;
        //         d = .508081 + .9*1.417081 = 1.783454; p = .8081 - .1783454 = .6297546
        assert!((out[0] - 0.629_754_6).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn adamw_matches_pytorch_by_hand() {
        let cfg = OptimizerConfig::Adamw {
            lr: 0.1,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let out = run(cfg, &[[1.0, 1.0]], true);
        // torch.optim.AdamW step 1: p *= 1 - .1*.1 -> .99; m = .1, v = .001;
        // mhat = 1, vhat = 1; p -= .1 * 1/(1 + 1e-8) -> .89
        assert!((out[0] - 0.89).abs() < 1e-6, "{out:?}");
        // 1-D parameters get no weight decay: 1 - .1 = .9
        let cfg = OptimizerConfig::Adamw {
            lr: 0.1,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.1,
        };
        assert!((run(cfg, &[[1.0, 1.0]], false)[0] - 0.9).abs() < 1e-6);
    }
}
