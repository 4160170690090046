//! SGD (Nesterov) and AdamW written over tensors, so their state is named
//! tensors that checkpoints save and a resumed run restores exactly
//! (libtorch's C++ optimisers expose no state to tch). Weight decay skips
//! 1-D parameters (biases, norms), the usual practice.

use super::config::OptimizerConfig;
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
                match self.cfg {
                    OptimizerConfig::Sgd {
                        momentum,
                        nesterov,
                        weight_decay,
                        ..
                    } => {
                        let g = if decay && weight_decay > 0.0 {
                            &g + &*p * weight_decay
                        } else {
                            g
                        };
                        let update = if momentum > 0.0 {
                            // PyTorch: the buffer starts as the first gradient.
                            let buf = match self.state.get_mut(name.as_str()) {
                                Some(st) => {
                                    let _ = st[0].g_mul_scalar_(momentum);
                                    let _ = st[0].g_add_(&g);
                                    st[0].shallow_clone()
                                }
                                None => {
                                    let b = g.detach().copy();
                                    self.state.insert(name.clone(), vec![b.shallow_clone()]);
                                    b
                                }
                            };
                            if nesterov {
                                &g + &buf * momentum
                            } else {
                                buf
                            }
                        } else {
                            g
                        };
                        let _ = p.g_add_(&(update * -lr));
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
                        let _ = st[0].g_mul_scalar_(b1);
                        let _ = st[0].g_add_(&(&g * (1.0 - b1)));
                        let _ = st[1].g_mul_scalar_(b2);
                        let _ = st[1].g_add_(&(&g * &g * (1.0 - b2)));
                        let bc1 = 1.0 - b1.powi(t);
                        let bc2 = 1.0 - b2.powi(t);
                        let denom = (&st[1] / bc2).sqrt() + eps;
                        let _ = p.g_add_(&(&st[0] / denom * (-lr / bc1)));
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
