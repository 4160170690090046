//! The model zoo. Each family is one file with a typed config and a builder
//! that names every sub-path (stable checkpoint keys), and reports its
//! multiply-accumulates per image. `ModelConfig` is the closed set of
//! families, parsed from YAML by its `kind` tag. `build` checks a config
//! (ranges, input size, class count, variable count) before it allocates:
//! configs also come from model files, which may say anything.

pub mod classical;
pub mod cnn;
pub mod ensemble;
pub mod layers;
pub mod logistic;
pub mod mlp;
pub mod resnet;
pub mod vit;
pub mod weights;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

/// Largest layer width (hidden size, channels, embedding dim) a config may ask for.
pub const MAX_WIDTH: i64 = 1 << 16;
/// Most layers, blocks or convolutions per block a config may ask for.
pub const MAX_DEPTH: usize = 64;
/// Most classes a network may have.
pub const MAX_CLASSES: usize = 1000;
/// Most variable elements `build` allocates (4 GiB of f32; ResNet18 has 11 M).
pub const MAX_VARIABLES: u64 = 1 << 30;

/// A model family and its settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelConfig {
    /// Always the most frequent training class.
    Majority,
    /// Random guesses drawn from the training class distribution.
    Random,
    Logistic(logistic::LogisticConfig),
    /// HOG features and a linear classifier fitted by linfa.
    Classical(classical::ClassicalConfig),
    Mlp(mlp::MlpConfig),
    Cnn(cnn::CnnConfig),
    Resnet18(resnet::ResnetConfig),
    Vit(vit::VitConfig),
    /// Averaged probabilities of member networks (`fer train` builds one
    /// from a run config's `ensemble` section).
    Ensemble(ensemble::EnsembleConfig),
}

impl ModelConfig {
    pub fn family(&self) -> &'static str {
        match self {
            ModelConfig::Majority => "majority",
            ModelConfig::Random => "random",
            ModelConfig::Logistic(_) => "logistic",
            ModelConfig::Classical(_) => "classical",
            ModelConfig::Mlp(_) => "mlp",
            ModelConfig::Cnn(_) => "cnn",
            ModelConfig::Resnet18(_) => "resnet18",
            ModelConfig::Vit(_) => "vit",
            ModelConfig::Ensemble(_) => "ensemble",
        }
    }

    /// Name prefix of the classification head (kept trainable while the
    /// backbone is frozen).
    pub fn head_prefix(&self) -> &'static str {
        match self {
            ModelConfig::Logistic(_) | ModelConfig::Classical(_) | ModelConfig::Resnet18(_) => {
                "fc."
            }
            _ => "head.",
        }
    }

    /// Whether this is a learned network (the baselines are not).
    pub fn is_network(&self) -> bool {
        !matches!(self, ModelConfig::Majority | ModelConfig::Random)
    }

    pub fn validate(&self, input: usize) -> Result<(), String> {
        match self {
            ModelConfig::Mlp(c) => c.validate(),
            ModelConfig::Classical(c) => c.validate(input),
            ModelConfig::Cnn(c) => c.validate(input),
            ModelConfig::Resnet18(c) => c.validate(),
            ModelConfig::Vit(c) => c.validate(input),
            ModelConfig::Ensemble(c) => c.validate(input),
            ModelConfig::Majority | ModelConfig::Random | ModelConfig::Logistic(_) => Ok(()),
        }
    }

    /// Elements of all the variables (weights and BatchNorm statistics) that
    /// `build` creates for this config: what a model file must hold. None on
    /// overflow; 0 for the baselines.
    pub fn variables(&self, input: usize, classes: usize) -> Option<u64> {
        let (input, classes) = (input as u64, classes as u64);
        match self {
            ModelConfig::Majority | ModelConfig::Random => Some(0),
            ModelConfig::Logistic(_) => logistic::variables(input, classes),
            ModelConfig::Classical(c) => classical::variables(c, input, classes),
            ModelConfig::Mlp(c) => mlp::variables(c, input, classes),
            ModelConfig::Cnn(c) => cnn::variables(c, classes),
            ModelConfig::Resnet18(c) => resnet::variables(c, classes),
            ModelConfig::Vit(c) => vit::variables(c, input, classes),
            ModelConfig::Ensemble(c) => c.members.iter().try_fold(0u64, |n, m| {
                n.checked_add(m.variables(input as usize, classes as usize)?)
            }),
        }
    }

    /// Everything `build` checks before it allocates: the config's ranges,
    /// the input side (1..=48) and class count, and at most
    /// [`MAX_VARIABLES`] variable elements. Returns that element count.
    pub fn check(&self, input: usize, classes: usize) -> Result<u64, String> {
        if !self.is_network() {
            return Err(format!("a {} baseline has no network", self.family()));
        }
        if !(1..=crate::data::SIDE).contains(&input) {
            return Err(format!(
                "input size {input}: expected 1..={}",
                crate::data::SIDE
            ));
        }
        if !(1..=MAX_CLASSES).contains(&classes) {
            return Err(format!("{classes} classes: expected 1..={MAX_CLASSES}"));
        }
        self.validate(input)?;
        match self.variables(input, classes) {
            Some(n) if n <= MAX_VARIABLES => Ok(n),
            n => Err(format!(
                "a {} of {} weights is over the limit of {MAX_VARIABLES}",
                self.family(),
                n.map_or("more than 2^64".to_string(), |n| n.to_string())
            )),
        }
    }
}

/// Weights and bias of a linear layer.
fn linear_variables(inputs: u64, outputs: u64) -> Option<u64> {
    inputs.checked_mul(outputs)?.checked_add(outputs)
}

/// A network: a module that can also show what it looks at.
pub trait Network: nn::ModuleT + Send {
    /// For Grad-CAM: the last spatial feature maps `[N, C, H, W]` (a leaf
    /// that requires grad) and the logits computed from them, in eval mode.
    /// None for models without a spatial stage (logistic, MLP).
    fn cam(&self, _x: &Tensor) -> Option<(Tensor, Tensor)> {
        None
    }
}

impl Network for nn::SequentialT {}
impl Network for nn::FuncT<'static> {}

/// A network in two stages, split where Grad-CAM reads the feature maps.
#[derive(Debug)]
pub struct Staged {
    pub features: nn::SequentialT,
    pub head: nn::SequentialT,
}

use tch::nn::ModuleT as _;

impl nn::ModuleT for Staged {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.head
            .forward_t(&self.features.forward_t(x, train), train)
    }
}

impl Network for Staged {
    fn cam(&self, x: &Tensor) -> Option<(Tensor, Tensor)> {
        let f = self
            .features
            .forward_t(x, false)
            .detach()
            .set_requires_grad(true);
        let logits = self.head.forward_t(&f, false);
        Some((f, logits))
    }
}

/// A built network: the module and its cost.
#[derive(Debug)]
pub struct Net {
    pub module: Box<dyn Network>,
    /// Multiply-accumulates for one image, forward pass.
    pub macs: u64,
}

/// Builds the network for `cfg` on `p`, for `input x input` one-channel
/// images and `classes` outputs, once [`ModelConfig::check`] passes (so
/// nothing is allocated for a config that cannot be built; baselines have
/// no network).
pub fn build(p: &nn::Path, cfg: &ModelConfig, input: usize, classes: usize) -> Result<Net> {
    if let Err(e) = cfg.check(input, classes) {
        bail!("cannot build this network: {e}");
    }
    Ok(build_checked(p, cfg, input, classes))
}

/// [`build`] for a config that passed [`ModelConfig::check`].
fn build_checked(p: &nn::Path, cfg: &ModelConfig, input: usize, classes: usize) -> Net {
    let input = input as i64;
    let classes = classes as i64;
    match cfg {
        ModelConfig::Majority | ModelConfig::Random => unreachable!("checked: a network"),
        ModelConfig::Logistic(c) => logistic::build(p, c, input, classes),
        ModelConfig::Classical(c) => classical::build(p, c, input, classes),
        ModelConfig::Mlp(c) => mlp::build(p, c, input, classes),
        ModelConfig::Cnn(c) => cnn::build(p, c, input, classes),
        ModelConfig::Resnet18(c) => resnet::build(p, c, input, classes),
        ModelConfig::Vit(c) => vit::build(p, c, input, classes),
        ModelConfig::Ensemble(c) => ensemble::build(p, c, input, classes),
    }
}

/// Trainable parameters of a var store.
pub fn parameter_count(vs: &nn::VarStore) -> u64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as u64)
        .sum()
}

/// A count in engineering units: 16.1 k, 94.0 M, 1.2 G.
pub fn human(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} G", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} M", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} k", n / 1e3)
    } else {
        format!("{n}")
    }
}

/// MACs of a `k x k` convolution producing `out_hw x out_hw x cout`.
pub fn conv_macs(out_hw: i64, cin: i64, cout: i64, k: i64) -> u64 {
    (out_hw * out_hw * cin * cout * k * k) as u64
}

/// Output side of a convolution or pool.
pub fn out_side(input: i64, k: i64, stride: i64, pad: i64) -> i64 {
    (input + 2 * pad - k) / stride + 1
}

/// The same 4-d tensor with NHWC strides (PyTorch's channels_last): a
/// permuted contiguous copy, viewed back in NCHW order.
pub fn nhwc(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Moves every 4-d parameter (the convolution kernels) to NHWC strides, so
/// oneDNN keeps activations in that layout through the network. Optimiser
/// state made from these tensors inherits the layout; files stay contiguous.
pub fn to_channels_last(vs: &nn::VarStore) {
    tch::no_grad(|| {
        for (_, mut v) in vs.variables() {
            if v.dim() == 4 {
                let t = nhwc(&v);
                v.set_data(&t);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    fn built(cfg: &ModelConfig, input: usize) -> (nn::VarStore, Net) {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build(&vs.root(), cfg, input, 7).unwrap();
        (vs, net)
    }

    fn out_shape(net: &Net, input: i64) -> Vec<i64> {
        let x = Tensor::randn([3, 1, input, input], (Kind::Float, Device::Cpu));
        net.module.forward_t(&x, false).size()
    }

    #[test]
    fn parameter_counts_and_shapes() {
        // By hand: CNN convs 9504 + 55296 + 221184 + 884736, BN 2*(32+32+64+64+128+128+256+256),
        // head 256*7+7. MLP: 2304*1024+1024 + 2*1024 + 1024*512+512 + 2*512 + 512*7+7.
        // ResNet18: torchvision's 11,689,512 minus 2/3 of conv1 (6272) and the
        // 1000-class head (513,000) plus a 7-class head (3591).
        let cases: Vec<(ModelConfig, usize, u64)> = vec![
            (ModelConfig::Logistic(Default::default()), 48, 2304 * 7 + 7),
            (ModelConfig::Mlp(Default::default()), 48, 2_891_783),
            (ModelConfig::Cnn(Default::default()), 44, 1_174_439),
            (ModelConfig::Resnet18(Default::default()), 48, 11_173_831),
        ];
        for (cfg, input, params) in cases {
            let (vs, net) = built(&cfg, input);
            assert_eq!(parameter_count(&vs), params, "{}", cfg.family());
            assert_eq!(
                out_shape(&net, input as i64),
                vec![3, 7],
                "{}",
                cfg.family()
            );
            assert!(net.macs > 0);
        }
    }

    #[test]
    fn vit_variants_build_and_count() {
        let base = vit::VitConfig::default();
        let (vs, net) = built(&ModelConfig::Vit(base.clone()), 44);
        // patch embed 16*128+128, cls 128, pos 122*128, 4 blocks of
        // (2 LN 512, qkv 128*384+384, proj 128*128+128, fc1 128*256+256, fc2 256*128+128),
        // final LN 256, head 128*7+7.
        let block =
            512 + (128 * 384 + 384) + (128 * 128 + 128) + (128 * 256 + 256) + (256 * 128 + 128);
        let want = (16 * 128 + 128) + 128 + 122 * 128 + 4 * block + 256 + (128 * 7 + 7);
        assert_eq!(parameter_count(&vs), want as u64);
        assert_eq!(out_shape(&net, 44), vec![3, 7]);
        let mean_post = vit::VitConfig {
            pool: vit::Pool::Mean,
            pre_norm: false,
            pos_embed: vit::PosEmbed::Sinusoidal,
            patch: 6,
            ..base
        };
        let (_, net) = built(&ModelConfig::Vit(mean_post), 48);
        assert_eq!(out_shape(&net, 48), vec![3, 7]);
    }

    #[test]
    fn resnet_stems_and_cnn_depths() {
        for stem in [
            resnet::Stem::Imagenet,
            resnet::Stem::Small,
            resnet::Stem::SmallPool,
        ] {
            let cfg = ModelConfig::Resnet18(resnet::ResnetConfig {
                stem,
                ..Default::default()
            });
            let (_, net) = built(&cfg, 48);
            assert_eq!(out_shape(&net, 48), vec![3, 7]);
        }
        // No early downsampling costs far more compute.
        let macs = |stem| {
            built(
                &ModelConfig::Resnet18(resnet::ResnetConfig {
                    stem,
                    ..Default::default()
                }),
                48,
            )
            .1
            .macs
        };
        assert!(macs(resnet::Stem::Small) > 10 * macs(resnet::Stem::Imagenet));
        let cfg = ModelConfig::Cnn(cnn::CnnConfig {
            widths: vec![16, 32, 64],
            convs: 1,
            ..Default::default()
        });
        let (_, net) = built(&cfg, 48);
        assert_eq!(out_shape(&net, 48), vec![3, 7]);
        assert!(cnn::CnnConfig {
            widths: vec![8; 7],
            ..Default::default()
        }
        .validate(44)
        .is_err());
    }

    /// Elements of every variable of a var store: what a model file holds.
    fn elements(vs: &nn::VarStore) -> u64 {
        vs.variables().values().map(|t| t.numel() as u64).sum()
    }

    #[test]
    fn resnet_variables_are_counted_exactly() {
        for (stem, width) in [
            (resnet::Stem::Imagenet, 64),
            (resnet::Stem::Small, 64),
            (resnet::Stem::SmallPool, 64),
            (resnet::Stem::SmallPool, 24),
        ] {
            let cfg = ModelConfig::Resnet18(resnet::ResnetConfig {
                stem,
                width,
                ..Default::default()
            });
            let (vs, net) = built(&cfg, 48);
            assert_eq!(cfg.variables(48, 7), Some(elements(&vs)), "{stem:?}");
            assert_eq!(out_shape(&net, 48), vec![3, 7]);
        }
        // Half the width: about a quarter of the weights.
        let half = ModelConfig::Resnet18(resnet::ResnetConfig {
            width: 32,
            ..Default::default()
        });
        let full = ModelConfig::Resnet18(Default::default());
        let (h, f) = (
            half.variables(48, 7).unwrap(),
            full.variables(48, 7).unwrap(),
        );
        assert!(4 * h < f + f / 10 && 4 * h > f - f / 10, "{h} vs {f}");
        assert!(ModelConfig::Resnet18(resnet::ResnetConfig {
            width: 32,
            pretrained: Some("w.safetensors".into()),
            ..Default::default()
        })
        .validate(48)
        .unwrap_err()
        .contains("model.width 64"));
    }

    #[test]
    fn check_refuses_what_cannot_be_built_before_allocating() {
        let cnn = ModelConfig::Cnn(Default::default());
        assert!(cnn.check(0, 7).unwrap_err().contains("input size 0"));
        assert!(cnn.check(49, 7).unwrap_err().contains("input size 49"));
        assert!(cnn.check(44, 0).unwrap_err().contains("0 classes"));
        assert!(ModelConfig::Majority.check(44, 7).is_err());
        // In range one by one, too many weights together.
        let wide = ModelConfig::Cnn(cnn::CnnConfig {
            widths: vec![MAX_WIDTH; 4],
            ..Default::default()
        });
        let err = wide.check(44, 7).unwrap_err();
        assert!(err.contains("over the limit"), "{err}");
        let vs = nn::VarStore::new(Device::Cpu);
        assert!(build(&vs.root(), &wide, 44, 7).is_err());
        assert!(vs.variables().is_empty(), "nothing was allocated");
        // A NaN ratio passed the old `<= 0.0` test.
        let nan = ModelConfig::Vit(vit::VitConfig {
            mlp_ratio: f64::NAN,
            ..Default::default()
        });
        assert!(nan.check(44, 7).unwrap_err().contains("mlp_ratio"));
    }

    /// Small valid configs of every family but ResNet18 (fixed, above), with
    /// an input side each can take.
    fn small_config() -> impl Strategy<Value = (ModelConfig, usize)> {
        let drop = prop::sample::select(vec![0.0, 0.3]);
        let mlp = (
            prop::collection::vec(1i64..16, 0..3),
            any::<bool>(),
            drop.clone(),
            1usize..=12,
        )
            .prop_map(|(hidden, batch_norm, dropout, input)| {
                let c = mlp::MlpConfig {
                    hidden,
                    dropout,
                    batch_norm,
                };
                (ModelConfig::Mlp(c), input)
            });
        let cnn = (
            prop::collection::vec(1i64..8, 1..=3),
            1usize..=2,
            drop.clone(),
            0usize..8,
        )
            .prop_map(|(widths, convs, dropout, extra)| {
                let input = (1 << widths.len()) + extra;
                let c = cnn::CnnConfig {
                    widths,
                    convs,
                    block_dropout: dropout,
                    dropout,
                };
                (ModelConfig::Cnn(c), input)
            });
        let vit = (
            (1i64..=4, 1i64..=3, 1i64..=3, 1i64..=3),
            (1usize..=2, prop::sample::select(vec![0.5, 1.0, 2.0])),
            (any::<bool>(), any::<bool>(), any::<bool>()),
        )
            .prop_map(
                |((patch, grid, heads, per), (depth, mlp_ratio), (mean, sin, pre))| {
                    let c = vit::VitConfig {
                        patch,
                        dim: heads * per * 2,
                        depth,
                        heads,
                        mlp_ratio,
                        pre_norm: pre,
                        pos_embed: if sin {
                            vit::PosEmbed::Sinusoidal
                        } else {
                            vit::PosEmbed::Learned
                        },
                        pool: if mean {
                            vit::Pool::Mean
                        } else {
                            vit::Pool::Cls
                        },
                        ..Default::default()
                    };
                    (ModelConfig::Vit(c), (patch * grid) as usize)
                },
            );
        let logistic = (1usize..=12).prop_map(|i| (ModelConfig::Logistic(Default::default()), i));
        let single = prop_oneof![mlp, cnn, vit, logistic];
        prop_oneof![
            3 => single.clone(),
            1 => (single, 1usize..=4).prop_map(|((m, input), n)| {
                // A second member that takes any input: an MLP of n units.
                let other = ModelConfig::Mlp(mlp::MlpConfig {
                    hidden: vec![n as i64],
                    ..Default::default()
                });
                let e = ensemble::EnsembleConfig {
                    members: vec![m, other],
                };
                (ModelConfig::Ensemble(e), input)
            }),
        ]
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// What `check` passes builds, runs and has the variables `variables`
        /// counts: the count a model file's tensors are held to.
        #[test]
        fn checked_configs_build_run_and_are_counted_exactly(
            (cfg, input) in small_config(),
            classes in 1usize..=9,
        ) {
            let n = cfg.check(input, classes).map_err(TestCaseError::fail)?;
            let vs = nn::VarStore::new(Device::Cpu);
            let net = build(&vs.root(), &cfg, input, classes).unwrap();
            prop_assert_eq!(n, elements(&vs));
            let x = Tensor::randn([2, 1, input as i64, input as i64], (Kind::Float, Device::Cpu));
            prop_assert_eq!(net.module.forward_t(&x, false).size(), vec![2, classes as i64]);
        }
    }

    #[test]
    fn checkpoint_names_are_stable_torchvision_style() {
        let (vs, _) = built(&ModelConfig::Resnet18(Default::default()), 48);
        let names = vs.variables();
        for n in [
            "conv1.weight",
            "bn1.running_mean",
            "layer2.0.downsample.0.weight",
            "layer4.1.bn2.bias",
            "fc.weight",
        ] {
            assert!(names.contains_key(n), "{n} missing");
        }
    }
}
