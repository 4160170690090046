//! Linear and convolution layers that can also run in int8.
//!
//! A network is built in one of three modes, set for the duration of
//! `models::build` by a scoped thread-local (so the family builders keep one
//! signature and name their layers as before):
//! - float: tch's own layers, as in training;
//! - calibrating: float, and each layer records the largest |input| it sees;
//! - int8: the layers of a quantized model file (`crate::quant`) multiply in
//!   int8 with libtorch's `_int_mm` (oneDNN) where the CPU has VNNI or AMX;
//!   elsewhere the same int8 values are multiplied in fp32 (see
//!   [`Kernel`]).
//!
//! Int8 arithmetic: weights are symmetric per output channel; a linear layer
//! quantizes its input per call (dynamic, as PyTorch's `quantize_dynamic`); a
//! convolution uses the input scale calibrated on training images (static),
//! and is computed as im2col (channels-last shifted views of the int8 input)
//! times the int8 weight matrix. Whenever the input requires grad (Grad-CAM)
//! the float path runs, with the dequantized weights, so gradients exist.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tch::{nn, Kind, Tensor};

/// How a quantized layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exec {
    /// Int8 matrix products.
    Int8,
    /// Float arithmetic on the dequantized int8 weights (stored as int8 only).
    Float,
}

/// The int8 form of one layer, as read from a quantized model file.
pub struct QLayer {
    /// Int8 weight values, in the layer's float weight shape.
    pub values: Tensor,
    /// Per-output-channel scale: weight = values x scale.
    pub scale: Tensor,
    /// Static input scale (convolutions).
    pub input_scale: Option<f64>,
    pub exec: Exec,
}

/// A layer seen while building in calibrating mode.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Layer path, e.g. `features.0.conv0`; its weight is `<name>.weight`.
    pub name: String,
    pub kind: LayerKind,
    /// Input features (linear) or input channels (convolution).
    pub inputs: i64,
    /// Largest |input| seen.
    pub max_abs: Arc<Mutex<f64>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    Linear,
    Conv,
}

enum Mode {
    Float,
    Calibrate(Vec<Observed>),
    Int8(BTreeMap<String, QLayer>),
}

thread_local! {
    static MODE: RefCell<Mode> = const { RefCell::new(Mode::Float) };
}

/// Resets the mode to float when dropped, also on panic.
struct Reset;
impl Drop for Reset {
    fn drop(&mut self) {
        MODE.with(|m| *m.borrow_mut() = Mode::Float);
    }
}

/// Runs `build` in `mode`; returns what it built and the mode as it ended.
fn scoped<R>(mode: Mode, build: impl FnOnce() -> R) -> (R, Mode) {
    MODE.with(|m| *m.borrow_mut() = mode);
    let _reset = Reset;
    let r = build();
    let end = MODE.with(|m| std::mem::replace(&mut *m.borrow_mut(), Mode::Float));
    (r, end)
}

/// Runs `build` with calibrating layers; returns what it built and the
/// layers, in build order.
pub fn calibrating<R>(build: impl FnOnce() -> R) -> (R, Vec<Observed>) {
    match scoped(Mode::Calibrate(Vec::new()), build) {
        (r, Mode::Calibrate(seen)) => (r, seen),
        (r, _) => (r, Vec::new()),
    }
}

/// Runs `build` with the int8 layers of `table` (by layer name); returns what
/// it built and the names of table entries no layer claimed.
pub fn int8<R>(table: BTreeMap<String, QLayer>, build: impl FnOnce() -> R) -> (R, Vec<String>) {
    match scoped(Mode::Int8(table), build) {
        (r, Mode::Int8(left)) => (r, left.into_keys().collect()),
        (r, _) => (r, Vec::new()),
    }
}

fn layer_name(p: &nn::Path) -> String {
    p.components().collect::<Vec<_>>().join(".")
}

/// What the current mode gives a new layer: an observer or its int8 form.
fn hook(p: &nn::Path, kind: LayerKind, inputs: i64) -> (Option<Arc<Mutex<f64>>>, Option<QLayer>) {
    let name = layer_name(p);
    MODE.with(|m| match &mut *m.borrow_mut() {
        Mode::Float => (None, None),
        Mode::Calibrate(seen) => {
            let max_abs = Arc::new(Mutex::new(0.0));
            seen.push(Observed {
                name,
                kind,
                inputs,
                max_abs: max_abs.clone(),
            });
            (Some(max_abs), None)
        }
        Mode::Int8(table) => (None, table.remove(&name)),
    })
}

fn observe(obs: &Option<Arc<Mutex<f64>>>, x: &Tensor) {
    if let Some(o) = obs {
        let m = x.abs().max().double_value(&[]);
        let mut v = o.lock().expect("observer lock");
        *v = v.max(m);
    }
}

/// How int8 matrix products run on this CPU.
///
/// oneDNN's int8 GEMM behind `_int_mm` is fast only with VNNI (AVX-512 VNNI,
/// AVX-VNNI) or AMX; without them it falls back to a kernel about 50x slower
/// than fp32 (AMD EPYC, AVX2 only, 2 threads, 1024x576 by 576x128: 55 ms
/// against 1.1 ms). There the same int8 values are multiplied as fp32
/// numbers: exact while a dot product stays under 2^24, so the predictions
/// are those of the int8 model, at float speed. `FER_INT8_KERNEL=native` or
/// `=fp32` overrides the choice (for benchmarks and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// libtorch's `_int_mm` on int8 tensors.
    Native,
    /// fp32 matrix products on int8 values.
    Fp32,
}

impl Kernel {
    /// The kernel this process uses (read once).
    pub fn current() -> Kernel {
        static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *KERNEL.get_or_init(|| match std::env::var("FER_INT8_KERNEL").as_deref() {
            Ok("native") => Kernel::Native,
            Ok("fp32") => Kernel::Fp32,
            _ => Kernel::for_cpu(),
        })
    }

    /// What the CPU's flags call for.
    pub fn for_cpu() -> Kernel {
        use crate::cpu::flags;
        let vnni = ["avx512_vnni", "avx_vnni", "amx_int8"];
        if vnni.iter().any(|f| flags(&[f])) {
            Kernel::Native
        } else {
            Kernel::Fp32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Native => "int8 (_int_mm)",
            Kernel::Fp32 => "int8 values in fp32 (no VNNI)",
        }
    }

    /// Symmetric int8 values of `x` with `scale` (saturating), in the
    /// kernel's element type. Plain tensor ops: libtorch's quantized tensor
    /// types are deprecated.
    fn quantize(self, x: &Tensor, scale: f64) -> Tensor {
        let v = (x * (1.0 / scale)).round_().clamp_(-127, 127);
        match self {
            Kernel::Native => v.to_kind(Kind::Int8),
            Kernel::Fp32 => v,
        }
    }

    /// A stored int8 weight matrix in the kernel's element type.
    fn weights(self, w: Tensor) -> Tensor {
        match self {
            Kernel::Native => w,
            Kernel::Fp32 => w.to_kind(Kind::Float),
        }
    }

    /// `[M, K] x [K, N] -> [M, N]` float, rescaled per column.
    fn matmul(self, xq: &Tensor, w: &Tensor, x_scale: f64, w_scale: &Tensor) -> Tensor {
        let acc = match self {
            Kernel::Native => xq.internal_int_mm(w).to_kind(Kind::Float),
            Kernel::Fp32 => xq.mm(w),
        };
        acc * (w_scale * x_scale)
    }
}

#[derive(Debug)]
struct Int8Linear {
    /// `[in, out]` int8 values (see [`Kernel::weights`]).
    w: Tensor,
    kernel: Kernel,
    scale: Tensor,
}

/// A linear layer (see the module docs for its modes).
#[derive(Debug)]
pub struct Linear {
    fp: nn::Linear,
    int8: Option<Int8Linear>,
    observer: Option<Arc<Mutex<f64>>>,
}

pub fn linear(p: nn::Path, inputs: i64, outputs: i64) -> Linear {
    let (observer, q) = hook(&p, LayerKind::Linear, inputs);
    let fp = nn::linear(&p, inputs, outputs, Default::default());
    // An int8 form of another shape stays unused: the float weight's shape
    // check (`weights::copy_into`) then refuses the file.
    let int8 = q
        .filter(|q| q.exec == Exec::Int8 && q.values.size() == [outputs, inputs])
        .map(|q| {
            let kernel = Kernel::current();
            Int8Linear {
                w: kernel.weights(q.values.tr().contiguous()),
                kernel,
                scale: q.scale,
            }
        });
    Linear { fp, int8, observer }
}

impl nn::Module for Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        observe(&self.observer, x);
        match &self.int8 {
            Some(q) if !x.requires_grad() => {
                let mut shape = x.size();
                let k = *shape.last().expect("linear input has a feature dim");
                let x2 = x.reshape([-1, k]);
                // Dynamic: the scale of this very input.
                let s = (x2.abs().max().double_value(&[]) / 127.0).max(f64::MIN_POSITIVE);
                let mut y = q
                    .kernel
                    .matmul(&q.kernel.quantize(&x2, s), &q.w, s, &q.scale);
                if let Some(b) = &self.fp.bs {
                    y += b;
                }
                *shape.last_mut().expect("non-empty") = q.w.size()[1];
                y.reshape(shape)
            }
            _ => x.apply(&self.fp),
        }
    }
}

#[derive(Debug)]
struct Int8Conv {
    /// Native: `[k*k*in, out]` int8, rows in (dy, dx, channel) order (the
    /// im2col product). Fp32: the int8 values as float in the weight's own
    /// `[out, in, k, k]` shape, for libtorch's float convolution.
    w: Tensor,
    kernel: Kernel,
    scale: Tensor,
    input_scale: f64,
}

/// A 2-D convolution (square kernel, no groups or dilation).
#[derive(Debug)]
pub struct Conv2d {
    fp: nn::Conv2D,
    k: i64,
    stride: i64,
    padding: i64,
    int8: Option<Int8Conv>,
    observer: Option<Arc<Mutex<f64>>>,
}

pub fn conv2d(p: nn::Path, inputs: i64, outputs: i64, k: i64, cfg: nn::ConvConfig) -> Conv2d {
    assert!(
        cfg.groups == 1 && cfg.dilation == 1,
        "int8-capable convolutions have no groups or dilation"
    );
    let (observer, q) = hook(&p, LayerKind::Conv, inputs);
    let fp = nn::conv2d(&p, inputs, outputs, k, cfg);
    // As in `linear`; an int8 convolution also needs its input scale.
    let int8 = q.and_then(|q| match q.input_scale {
        Some(input_scale) if q.exec == Exec::Int8 && q.values.size() == [outputs, inputs, k, k] => {
            Some(Int8Conv::new(
                q.values,
                q.scale,
                input_scale,
                k,
                Kernel::current(),
            ))
        }
        _ => None,
    });
    Conv2d {
        fp,
        k,
        stride: cfg.stride,
        padding: cfg.padding,
        int8,
        observer,
    }
}

impl Int8Conv {
    fn new(values: Tensor, scale: Tensor, input_scale: f64, k: i64, kernel: Kernel) -> Self {
        let (outputs, inputs) = (values.size()[0], values.size()[1]);
        let w = match kernel {
            Kernel::Native => values
                .permute([2, 3, 1, 0])
                .reshape([k * k * inputs, outputs])
                .contiguous(),
            Kernel::Fp32 => kernel.weights(values),
        };
        Int8Conv {
            w,
            kernel,
            scale,
            input_scale,
        }
    }
}

impl Conv2d {
    fn forward_int8(&self, x: &Tensor, q: &Int8Conv) -> Tensor {
        if q.kernel == Kernel::Fp32 {
            // The same sums as the im2col product below, by the float
            // convolution (faster than any im2col of ours).
            let xq = q.kernel.quantize(x, q.input_scale);
            let s = [self.stride, self.stride];
            let p = [self.padding, self.padding];
            let y = xq.conv2d(&q.w, None::<Tensor>, s, p, [1, 1], 1);
            let mut y = y * (&q.scale * q.input_scale).view([1, -1, 1, 1]);
            if let Some(bias) = &self.fp.bs {
                y += bias.view([1, -1, 1, 1]);
            }
            return y;
        }
        let (b, c, h, w) = x.size4().expect("convolution input is [B, C, H, W]");
        let (k, s, p) = (self.k, self.stride, self.padding);
        let ho = (h + 2 * p - k) / s + 1;
        let wo = (w + 2 * p - k) / s + 1;
        // Channels-last int8, zero-padded (zero is exact in symmetric int8).
        let xq = q.kernel.quantize(x, q.input_scale).permute([0, 2, 3, 1]);
        let xq = if p > 0 {
            xq.constant_pad_nd([0, 0, p, p, p, p])
        } else {
            xq
        };
        let mut views = Vec::with_capacity((k * k) as usize);
        for dy in 0..k {
            for dx in 0..k {
                views.push(xq.slice(1, dy, dy + s * (ho - 1) + 1, s).slice(
                    2,
                    dx,
                    dx + s * (wo - 1) + 1,
                    s,
                ));
            }
        }
        let cols = Tensor::cat(&views, 3).reshape([b * ho * wo, k * k * c]);
        let mut y = q.kernel.matmul(&cols, &q.w, q.input_scale, &q.scale);
        if let Some(bias) = &self.fp.bs {
            y += bias;
        }
        y.reshape([b, ho, wo, -1])
            .permute([0, 3, 1, 2])
            .contiguous()
    }
}

impl nn::Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Tensor {
        observe(&self.observer, x);
        match &self.int8 {
            Some(q) if !x.requires_grad() => self.forward_int8(x, q),
            _ => x.apply(&self.fp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::int8::quantize_weight as quantize;
    use tch::Device;

    #[test]
    fn int8_layers_match_float_within_quantization_error() {
        tch::manual_seed(0);
        for (k, stride, padding, cin) in [(3, 1, 1, 8), (7, 2, 3, 1), (1, 2, 0, 16), (4, 4, 0, 1)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = nn::ConvConfig {
                stride,
                padding,
                ..Default::default()
            };
            let fp = conv2d(vs.root() / "c", cin, 12, k, cfg);
            let x = Tensor::randn([3, cin, 13, 13], (Kind::Float, Device::Cpu)).relu();
            let want = tch::no_grad(|| x.apply(&fp));
            let (values, scale) = quantize(&fp.fp.ws);
            let max = x.abs().max().double_value(&[]);
            let mut table = BTreeMap::new();
            table.insert(
                "c".to_string(),
                QLayer {
                    values,
                    scale,
                    input_scale: Some(max / 127.0),
                    exec: Exec::Int8,
                },
            );
            let vs2 = nn::VarStore::new(Device::Cpu);
            let (q, left) = int8(table, || conv2d(vs2.root() / "c", cin, 12, k, cfg));
            assert!(left.is_empty());
            tch::no_grad(|| {
                let mut q = q;
                q.fp.ws.copy_(&fp.fp.ws);
                q.fp.bs.as_mut().unwrap().copy_(fp.fp.bs.as_ref().unwrap());
                let got = x.apply(&q);
                assert_eq!(got.size(), want.size(), "k {k} stride {stride}");
                let err = (&got - &want).abs().max().double_value(&[]);
                let range = want.abs().max().double_value(&[]);
                // Two 7-bit roundings: well under 3% of the output range.
                assert!(err < 0.03 * range, "k {k}: error {err} of {range}");
                assert!(err > 0.0, "the int8 path ran");
            });
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let fp = linear(vs.root() / "l", 40, 9);
        let x = Tensor::randn([2, 5, 40], (Kind::Float, Device::Cpu));
        let want = tch::no_grad(|| x.apply(&fp));
        let (values, scale) = quantize(&fp.fp.ws);
        let mut table = BTreeMap::new();
        table.insert(
            "l".to_string(),
            QLayer {
                values,
                scale,
                input_scale: None,
                exec: Exec::Int8,
            },
        );
        let vs2 = nn::VarStore::new(Device::Cpu);
        let (mut q, _) = int8(table, || linear(vs2.root() / "l", 40, 9));
        tch::no_grad(|| {
            q.fp.ws.copy_(&fp.fp.ws);
            q.fp.bs.as_mut().unwrap().copy_(fp.fp.bs.as_ref().unwrap());
        });
        let got = tch::no_grad(|| x.apply(&q));
        assert_eq!(got.size(), vec![2, 5, 9]);
        let err = (&got - &want).abs().max().double_value(&[]);
        assert!(err > 0.0 && err < 0.03 * want.abs().max().double_value(&[]));
        // With grad the float path runs: the same weights, the same output.
        let xg = x.set_requires_grad(true);
        let diff = (xg.apply(&q) - xg.apply(&fp)).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "float path under grad: {diff}");
    }

    #[test]
    fn both_int8_kernels_compute_the_same_products() {
        tch::manual_seed(1);
        let x = Tensor::randn([37, 288], (Kind::Float, Device::Cpu));
        let w = Tensor::randint_low(-127, 128, [288, 20], (Kind::Int8, Device::Cpu));
        let w_scale = Tensor::rand([20], (Kind::Float, Device::Cpu)) * 0.01;
        let s = x.abs().max().double_value(&[]) / 127.0;
        let [native, fp32] = [Kernel::Native, Kernel::Fp32].map(|k| {
            let xq = k.quantize(&x, s);
            k.matmul(&xq, &k.weights(w.shallow_clone()), s, &w_scale)
        });
        assert_eq!(native.size(), vec![37, 20]);
        // Integer sums this small are exact in fp32: only the final rescale
        // may round differently.
        let diff = (&native - &fp32).abs().max().double_value(&[]);
        let range = native.abs().max().double_value(&[]);
        assert!(range > 0.0 && diff <= 1e-6 * range, "{diff} of {range}");
    }

    #[test]
    fn both_int8_kernels_convolve_alike() {
        tch::manual_seed(2);
        for (k, stride, padding, cin) in [(3, 1, 1, 32), (3, 2, 1, 16), (1, 1, 0, 24)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = nn::ConvConfig {
                stride,
                padding,
                ..Default::default()
            };
            let conv = conv2d(vs.root() / "c", cin, 10, k, cfg);
            let x = Tensor::randn([2, cin, 11, 11], (Kind::Float, Device::Cpu)).relu();
            let (values, scale) = quantize(&conv.fp.ws);
            let s = x.abs().max().double_value(&[]) / 127.0;
            let [native, fp32] = [Kernel::Native, Kernel::Fp32].map(|kernel| {
                let q = Int8Conv::new(values.shallow_clone(), scale.shallow_clone(), s, k, kernel);
                tch::no_grad(|| conv.forward_int8(&x, &q))
            });
            assert_eq!(native.size(), fp32.size(), "k {k} stride {stride}");
            let diff = (&native - &fp32).abs().max().double_value(&[]);
            let range = native.abs().max().double_value(&[]);
            assert!(
                range > 0.0 && diff <= 1e-5 * range,
                "k {k}: {diff} of {range}"
            );
        }
    }
}
