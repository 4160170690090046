//! The `train` config group: optimiser, schedule, loss and stopping.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// SGD with (Nesterov) momentum, PyTorch semantics.
    Sgd {
        lr: f64,
        #[serde(default = "default_momentum")]
        momentum: f64,
        #[serde(default = "yes")]
        nesterov: bool,
        #[serde(default = "default_wd")]
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay (Loshchilov & Hutter).
    Adamw {
        lr: f64,
        #[serde(default = "default_betas")]
        betas: [f64; 2],
        #[serde(default = "default_eps")]
        eps: f64,
        #[serde(default = "default_adamw_wd")]
        weight_decay: f64,
    },
}

fn default_momentum() -> f64 {
    0.9
}
fn yes() -> bool {
    true
}
fn default_wd() -> f64 {
    5e-4
}
fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn default_eps() -> f64 {
    1e-8
}
fn default_adamw_wd() -> f64 {
    0.05
}

impl OptimizerConfig {
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { lr, .. } | OptimizerConfig::Adamw { lr, .. } => *lr,
        }
    }
}

/// Learning-rate schedules. All but `plateau` are pure functions of the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleConfig {
    Constant,
    /// Linear warm-up, then cosine decay to `min_lr_ratio * lr`.
    Cosine {
        #[serde(default)]
        warmup_epochs: f64,
        #[serde(default)]
        min_lr_ratio: f64,
    },
    /// PyTorch's OneCycleLR (cosine annealing): from lr/div_factor up to lr
    /// over `pct_start` of training, then down to lr/(div_factor*final_div_factor).
    Onecycle {
        #[serde(default = "default_pct")]
        pct_start: f64,
        #[serde(default = "default_div")]
        div_factor: f64,
        #[serde(default = "default_final_div")]
        final_div_factor: f64,
    },
    /// Multiply the lr by `factor` when validation loss has not improved by
    /// `threshold` (relative) for `patience` epochs.
    Plateau {
        #[serde(default = "default_factor")]
        factor: f64,
        #[serde(default = "default_plateau_patience")]
        patience: usize,
        #[serde(default = "default_threshold")]
        threshold: f64,
        #[serde(default)]
        min_lr: f64,
    },
}

fn default_pct() -> f64 {
    0.3
}
fn default_div() -> f64 {
    25.0
}
fn default_final_div() -> f64 {
    1e4
}
fn default_factor() -> f64 {
    0.5
}
fn default_plateau_patience() -> usize {
    2
}
fn default_threshold() -> f64 {
    1e-4
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    #[default]
    Shuffle,
    /// Draw with replacement, weighted by `class_weights(power = sampler_power)`.
    Weighted,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Cuda,
    Mps,
}

/// Early stopping on validation loss.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EarlyStopping {
    /// Epochs without an improvement of at least `min_delta` before stopping.
    pub patience: usize,
    pub min_delta: f64,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping {
            patience: 5,
            min_delta: 1e-3,
        }
    }
}

/// Arithmetic of the training passes. Weights, gradients, the optimiser and
/// every evaluation stay in float32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    /// Autocast convolutions and matrix products to bfloat16: about twice the
    /// training throughput on CPUs with AVX-512 BF16 (docs/performance.md).
    Bf16,
    /// The faster of the two on the machine at hand (`autocast::resolve`).
    Auto,
}

/// Which validation metric picks the best checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    #[default]
    ValAcc,
    ValLoss,
    ValF1Macro,
    /// The last epoch (or the weight average), with no selection: for a
    /// final refit on train plus validation (`data.val_fraction: 0`), once
    /// the recipe and its length were chosen on validation.
    Last,
}

/// Stochastic weight averaging (Izmailov et al. 2018; PyTorch's
/// `torch.optim.swa_utils`): after the main schedule's `train.epochs`,
/// `epochs` more at the constant rate `lr`, averaging the weights at the end
/// of each; the average's BatchNorm statistics are then recomputed over one
/// pass of the training data, and it competes with the best single epoch on
/// the `select` metric for the model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwaConfig {
    pub epochs: usize,
    pub lr: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub label_smoothing: f64,
    /// Loss weights `(n / (k n_c))^power`: 0 = unweighted, 1 = balanced.
    pub class_weight_power: f64,
    pub sampler: SamplerKind,
    pub sampler_power: f64,
    /// Clip the global gradient norm to this value.
    pub clip_grad_norm: Option<f64>,
    pub early_stopping: Option<EarlyStopping>,
    pub select: Select,
    /// Train only the head for this many epochs (transfer learning), then all.
    pub freeze_backbone_epochs: usize,
    pub device: DeviceChoice,
    /// libtorch and rayon threads (default: all cores).
    pub threads: Option<usize>,
    /// Use this fraction of the training split (stratified; for smoke runs).
    pub subset: f64,
    /// Stop each epoch after this many batches (smoke runs).
    pub max_batches: Option<usize>,
    /// Batches prepared ahead of the model.
    pub prefetch: usize,
    pub precision: Precision,
    /// Keep convolution weights and inputs in NHWC layout, which oneDNN
    /// runs faster on CPU; numerically the same network.
    pub channels_last: bool,
    /// Absent: no weight averaging (and configs written before it parse alike).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swa: Option<SwaConfig>,
    /// Also measure `val/robust_acc` each epoch: accuracy on a fixed,
    /// seeded, corrupted copy of the validation split at medium severity
    /// (`eval::robust::robust_val`), a second pass over validation.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub robust_val: bool,
    /// Start from the weights of this fer model file (fine-tuning) instead
    /// of the seeded random initialisation; the network must be the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<std::path::PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 8,
            batch_size: 64,
            optimizer: OptimizerConfig::Sgd {
                lr: 0.05,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 5e-4,
            },
            schedule: ScheduleConfig::Onecycle {
                pct_start: 0.3,
                div_factor: 25.0,
                final_div_factor: 1e4,
            },
            label_smoothing: 0.1,
            class_weight_power: 0.0,
            sampler: SamplerKind::Shuffle,
            sampler_power: 0.5,
            clip_grad_norm: None,
            early_stopping: None,
            select: Select::ValAcc,
            freeze_backbone_epochs: 0,
            device: DeviceChoice::Auto,
            threads: None,
            subset: 1.0,
            max_batches: None,
            prefetch: 2,
            precision: Precision::Fp32,
            channels_last: false,
            swa: None,
            robust_val: false,
            init: None,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err("train.epochs and train.batch_size must be at least 1".into());
        }
        let lr = self.optimizer.lr();
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(format!("train.optimizer.lr must be > 0, got {lr}"));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(format!(
                "train.label_smoothing must be in [0, 1), got {}",
                self.label_smoothing
            ));
        }
        if self.init.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(
                "train.init: an empty path (name a fer model file, or leave init out)".into(),
            );
        }
        if !(self.subset > 0.0 && self.subset <= 1.0) {
            return Err(format!(
                "train.subset must be in (0, 1], got {}",
                self.subset
            ));
        }
        if let Some(c) = self.clip_grad_norm {
            if c <= 0.0 {
                return Err(format!("train.clip_grad_norm must be > 0, got {c}"));
            }
        }
        if let Some(swa) = &self.swa {
            if swa.epochs == 0 {
                return Err("train.swa.epochs must be at least 1 (or leave swa out)".into());
            }
            if !(swa.lr > 0.0 && swa.lr.is_finite()) {
                return Err(format!("train.swa.lr must be > 0, got {}", swa.lr));
            }
        }
        Ok(())
    }

    /// Epochs in all: the main schedule's, then weight averaging's.
    pub fn total_epochs(&self) -> usize {
        self.epochs + self.swa.as_ref().map_or(0, |s| s.epochs)
    }
}
