//! A small Vision Transformer (Dosovitskiy et al. 2021, "An Image is Worth
//! 16x16 Words") for 48px faces. Attention runs on libtorch's fused
//! `scaled_dot_product_attention`. Configurable: patch size, width, depth,
//! heads, MLP ratio, dropout, pre- or post-norm, learned or fixed
//! sinusoidal position embeddings, CLS-token or mean pooling.

use super::layers::{self, Conv2d, Linear};
use super::Net;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    #[default]
    Cls,
    Mean,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PosEmbed {
    #[default]
    Learned,
    Sinusoidal,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VitConfig {
    pub patch: i64,
    pub dim: i64,
    pub depth: usize,
    pub heads: i64,
    pub mlp_ratio: f64,
    pub dropout: f64,
    pub attn_dropout: f64,
    pub pre_norm: bool,
    pub pos_embed: PosEmbed,
    pub pool: Pool,
}

impl Default for VitConfig {
    fn default() -> Self {
        VitConfig {
            patch: 4,
            dim: 128,
            depth: 4,
            heads: 4,
            mlp_ratio: 2.0,
            dropout: 0.1,
            attn_dropout: 0.0,
            pre_norm: true,
            pos_embed: PosEmbed::Learned,
            pool: Pool::Cls,
        }
    }
}

impl VitConfig {
    pub fn validate(&self, input: usize) -> Result<(), String> {
        if self.patch <= 0 || self.patch > input as i64 || input as i64 % self.patch != 0 {
            return Err(format!(
                "model.patch must divide the input size {input}, got {}",
                self.patch
            ));
        }
        if !(1..=super::MAX_WIDTH).contains(&self.dim) {
            return Err(format!(
                "model.dim must be in 1..={}, got {}",
                super::MAX_WIDTH,
                self.dim
            ));
        }
        if self.heads <= 0 || self.dim % self.heads != 0 {
            return Err(format!(
                "model.dim ({}) must be a multiple of model.heads ({})",
                self.dim, self.heads
            ));
        }
        if self.pos_embed == PosEmbed::Sinusoidal && self.dim % 2 != 0 {
            return Err(format!(
                "model.dim must be even for sinusoidal position embeddings, got {}",
                self.dim
            ));
        }
        if !(1..=super::MAX_DEPTH).contains(&self.depth) {
            return Err(format!(
                "model.depth must be in 1..={}, got {}",
                super::MAX_DEPTH,
                self.depth
            ));
        }
        // The MLP's hidden width, dim x mlp_ratio, rounded, must be a size.
        if !(self.mlp_ratio > 0.0 && self.mlp_ratio <= 64.0) || self.hidden() < 1 {
            return Err(format!(
                "model.mlp_ratio must be in (0, 64] and give at least one hidden unit, got {}",
                self.mlp_ratio
            ));
        }
        for (n, v) in [
            ("dropout", self.dropout),
            ("attn_dropout", self.attn_dropout),
        ] {
            if !(0.0..1.0).contains(&v) {
                return Err(format!("model.{n} must be in [0, 1), got {v}"));
            }
        }
        Ok(())
    }
}

impl VitConfig {
    /// Width of each block's MLP.
    fn hidden(&self) -> i64 {
        (self.dim as f64 * self.mlp_ratio).round() as i64
    }
}

/// Elements of the variables `build` creates (None on overflow).
pub fn variables(cfg: &VitConfig, input: u64, classes: u64) -> Option<u64> {
    let d = u64::try_from(cfg.dim).ok()?;
    let patch = u64::try_from(cfg.patch).ok().filter(|&p| p > 0)?;
    let hidden = u64::try_from(cfg.hidden()).ok()?;
    let lin = super::linear_variables;
    let grid = input / patch;
    let cls = u64::from(cfg.pool == Pool::Cls);
    let tokens = grid.checked_mul(grid)?.checked_add(cls)?;
    let pos = match cfg.pos_embed {
        PosEmbed::Learned => tokens.checked_mul(d)?,
        PosEmbed::Sinusoidal => 0,
    };
    // Two LayerNorms (weight and bias), qkv, proj, fc1, fc2.
    let block = [
        d.checked_mul(4)?,
        lin(d, d.checked_mul(3)?)?,
        lin(d, d)?,
        lin(d, hidden)?,
        lin(hidden, d)?,
    ]
    .into_iter()
    .try_fold(0u64, u64::checked_add)?;
    let norm = if cfg.pre_norm { d.checked_mul(2)? } else { 0 };
    [
        lin(patch.checked_mul(patch)?, d)?,
        d.checked_mul(cls)?,
        pos,
        block.checked_mul(cfg.depth as u64)?,
        norm,
        lin(d, classes)?,
    ]
    .into_iter()
    .try_fold(0u64, u64::checked_add)
}

#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    qkv: Linear,
    proj: Linear,
    norm2: nn::LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: i64,
    dropout: f64,
    attn_dropout: f64,
    pre_norm: bool,
}

impl Block {
    fn new(p: nn::Path, cfg: &VitConfig) -> Block {
        let d = cfg.dim;
        let hidden = cfg.hidden();
        Block {
            norm1: nn::layer_norm(&p / "norm1", vec![d], Default::default()),
            qkv: layers::linear(&p / "attn" / "qkv", d, 3 * d),
            proj: layers::linear(&p / "attn" / "proj", d, d),
            norm2: nn::layer_norm(&p / "norm2", vec![d], Default::default()),
            fc1: layers::linear(&p / "mlp" / "fc1", d, hidden),
            fc2: layers::linear(&p / "mlp" / "fc2", hidden, d),
            heads: cfg.heads,
            dropout: cfg.dropout,
            attn_dropout: cfg.attn_dropout,
            pre_norm: cfg.pre_norm,
        }
    }

    fn attention(&self, x: &Tensor, train: bool) -> Tensor {
        let (b, t, d) = x.size3().expect("tokens are [B, T, D]");
        let qkv = x
            .apply(&self.qkv)
            .reshape([b, t, 3, self.heads, d / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let p = if train { self.attn_dropout } else { 0.0 };
        Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, p, false, None, false)
            .transpose(1, 2)
            .reshape([b, t, d])
            .apply(&self.proj)
            .dropout(self.dropout, train)
    }

    fn mlp(&self, x: &Tensor, train: bool) -> Tensor {
        x.apply(&self.fc1)
            .gelu("none")
            .dropout(self.dropout, train)
            .apply(&self.fc2)
            .dropout(self.dropout, train)
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        if self.pre_norm {
            let x = x + self.attention(&self.norm1.forward(x), train);
            &x + self.mlp(&self.norm2.forward(&x), train)
        } else {
            let x = self.norm1.forward(&(x + self.attention(x, train)));
            self.norm2.forward(&(&x + self.mlp(&x, train)))
        }
    }
}

#[derive(Debug)]
struct Vit {
    patch_embed: Conv2d,
    cls_token: Option<Tensor>,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: Option<nn::LayerNorm>,
    head: Linear,
    pool: Pool,
    dropout: f64,
}

impl Vit {
    /// Norm, pooling and the classifier, from the last block's tokens.
    fn head_of(&self, t: &Tensor) -> Tensor {
        let t = match &self.norm {
            Some(n) => n.forward(t),
            None => t.shallow_clone(),
        };
        let pooled = match self.pool {
            Pool::Cls => t.select(1, 0),
            Pool::Mean => t.mean_dim([1i64].as_slice(), false, Kind::Float),
        };
        pooled.apply(&self.head)
    }

    /// Tokens after the first `upto` blocks (all of them with `usize::MAX`).
    fn tokens(&self, x: &Tensor, train: bool, upto: usize) -> Tensor {
        let b = x.size()[0];
        let mut t = x.apply(&self.patch_embed).flatten(2, -1).transpose(1, 2);
        if let Some(cls) = &self.cls_token {
            t = Tensor::cat(&[cls.expand([b, -1, -1], false), t], 1);
        }
        t = (t + &self.pos_embed).dropout(self.dropout, train);
        for blk in self.blocks.iter().take(upto) {
            t = blk.forward_t(&t, train);
        }
        t
    }
}

impl ModuleT for Vit {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.head_of(&self.tokens(x, train, usize::MAX))
    }
}

impl super::Network for Vit {
    /// Grad-CAM on the last block: its input patch tokens, laid out on the
    /// patch grid, are the feature maps. (After the last block a CLS-pooled
    /// model no longer depends on the patch tokens, so the gradient there
    /// would be zero.)
    fn cam(&self, x: &Tensor) -> Option<(Tensor, Tensor)> {
        let last = self.blocks.len().checked_sub(1)?;
        let t = self.tokens(x, false, last).detach();
        let (n, tokens, d) = t.size3().ok()?;
        let skip = i64::from(self.cls_token.is_some());
        let side = ((tokens - skip) as f64).sqrt().round() as i64;
        let grid = t
            .narrow(1, skip, tokens - skip)
            .transpose(1, 2)
            .reshape([n, d, side, side])
            .detach()
            .set_requires_grad(true);
        let patches = grid.flatten(2, -1).transpose(1, 2);
        let t = if skip == 1 {
            Tensor::cat(&[t.narrow(1, 0, 1), patches], 1)
        } else {
            patches
        };
        let logits = self.head_of(&self.blocks[last].forward_t(&t, false));
        Some((grid, logits))
    }
}

/// Fixed 1-D sinusoidal embeddings over token positions (Vaswani et al.).
fn sinusoidal(tokens: i64, dim: i64) -> Tensor {
    let pos = Tensor::arange(tokens, (Kind::Float, tch::Device::Cpu)).unsqueeze(1);
    let i = Tensor::arange_start_step(0, dim, 2, (Kind::Float, tch::Device::Cpu));
    let freq = (i * (-(10000f64.ln()) / dim as f64)).exp().unsqueeze(0);
    let angles = pos * freq;
    Tensor::stack(&[angles.sin(), angles.cos()], 2)
        .reshape([tokens, dim])
        .unsqueeze(0)
}

pub fn build(p: &nn::Path, cfg: &VitConfig, input: i64, classes: i64) -> Net {
    let d = cfg.dim;
    let grid = input / cfg.patch;
    let patches = grid * grid;
    let conv = nn::ConvConfig {
        stride: cfg.patch,
        ..Default::default()
    };
    let patch_embed = layers::conv2d(p / "patch_embed" / "proj", 1, d, cfg.patch, conv);
    let cls_token = (cfg.pool == Pool::Cls).then(|| {
        p.var(
            "cls_token",
            &[1, 1, d],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )
    });
    let tokens = patches + cls_token.is_some() as i64;
    let pos_embed = match cfg.pos_embed {
        PosEmbed::Learned => p.var(
            "pos_embed",
            &[1, tokens, d],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        ),
        PosEmbed::Sinusoidal => sinusoidal(tokens, d).to_device(p.device()),
    };
    let blocks = (0..cfg.depth)
        .map(|i| Block::new(p / "blocks" / i, cfg))
        .collect();
    let norm = cfg
        .pre_norm
        .then(|| nn::layer_norm(p / "norm", vec![d], Default::default()));
    let head = layers::linear(p / "head", d, classes);
    let hidden = cfg.hidden();
    let per_block =
        tokens * d * 3 * d + 2 * tokens * tokens * d + tokens * d * d + 2 * tokens * d * hidden;
    let macs = (patches * d * cfg.patch * cfg.patch) as u64
        + cfg.depth as u64 * per_block as u64
        + (d * classes) as u64;
    Net {
        module: Box::new(Vit {
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            norm,
            head,
            pool: cfg.pool,
            dropout: cfg.dropout,
        }),
        macs,
    }
}
