//! Grad-CAM (Selvaraju et al. 2017): where a network looked for a class.
//! The gradient of the class score over the last spatial feature maps,
//! averaged per channel, weights those maps; the positive part, upsampled
//! to the input, is the saliency.

use crate::artifact::Classifier;
use crate::data::augment::eval_batch;
use tch::{Kind, Tensor};

pub struct Cams {
    /// Side of the model input (and of each map).
    pub side: usize,
    /// The preprocessed inputs, `n x side x side`.
    pub inputs: Vec<f32>,
    /// Saliency in [0, 1] per image, `n x side x side`.
    pub maps: Vec<f32>,
    /// The class each map explains.
    pub classes: Vec<usize>,
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    let t = t.to_kind(Kind::Float).contiguous();
    let n = t.numel();
    let mut v = vec![0f32; n];
    t.copy_data(&mut v, n);
    v
}

/// Grad-CAM of `indices` in `pixels` for `classes` (None: the predicted
/// class). None when the model has no spatial stage.
pub fn gradcam(
    clf: &Classifier,
    pixels: &[u8],
    indices: &[usize],
    classes: Option<&[usize]>,
) -> Option<Cams> {
    let net = clf.net.as_ref()?;
    let cfg = &clf.meta.preprocess;
    let s = cfg.size as i64;
    let mut buf = vec![0f32; indices.len() * cfg.out_len()];
    eval_batch(pixels, indices, cfg, &mut buf);
    let x = Tensor::from_slice(&buf)
        .view([indices.len() as i64, 1, s, s])
        .to_device(clf.device);
    let (features, logits) = net.module.cam(&x)?;
    let targets: Vec<i64> = match classes {
        Some(c) => c.iter().map(|&c| c as i64).collect(),
        None => to_vec(&logits.argmax(1, false).to_kind(Kind::Float))
            .iter()
            .map(|&v| v as i64)
            .collect(),
    };
    let idx = Tensor::from_slice(&targets)
        .to_device(clf.device)
        .unsqueeze(1);
    let score = logits.gather(1, &idx, false).sum(Kind::Float);
    let grads = Tensor::run_backward(&[score], &[&features], false, false);
    let weights = grads[0].mean_dim([2i64, 3].as_slice(), true, Kind::Float);
    let cam = (weights * &features)
        .sum_dim_intlist([1i64].as_slice(), true, Kind::Float)
        .relu()
        .upsample_bilinear2d([s, s], false, None, None)
        .detach();
    let max = cam.amax([1i64, 2, 3].as_slice(), true).clamp_min(1e-8);
    let cam = cam / max;
    Some(Cams {
        side: s as usize,
        inputs: buf,
        maps: to_vec(&cam.to_device(tch::Device::Cpu)),
        classes: targets.iter().map(|&c| c as usize).collect(),
    })
}
