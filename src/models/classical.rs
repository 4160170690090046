//! The classical baseline: hand-crafted HOG features, standardised, and a
//! linear softmax classifier (multinomial logistic regression). The
//! weights are fitted by linfa (`crate::train::classical`); inference is
//! this module, in tch, so the model file, `fer eval`, `serve`, `predict`
//! and the report treat it like any network.
//!
//! HOG (Dalal & Triggs 2005) over LBP histograms: a face's expression is
//! the shape of brows, eyes and mouth, which oriented gradients describe
//! directly, and HOG is a handful of tensor operations (gradients,
//! soft orientation binning, cell sums, L2-Hys block normalisation), so
//! training and inference share one implementation.

use super::Net;
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClassicalConfig {
    /// HOG cell side in pixels.
    pub cell: i64,
    /// Unsigned orientation bins over 0-180 degrees.
    pub orientations: i64,
    /// Block side in cells (blocks overlap with a stride of one cell).
    pub block: i64,
    /// L2 penalty of the logistic regression (linfa's `alpha`: the penalty
    /// on the summed loss, so about 1/C of scikit-learn).
    pub alpha: f64,
    /// L-BFGS iterations at most.
    pub max_iterations: u64,
    /// Also fit on the mirrored training images (twice the data).
    pub flip: bool,
}

impl Default for ClassicalConfig {
    fn default() -> Self {
        ClassicalConfig {
            cell: 6,
            orientations: 9,
            block: 2,
            alpha: 1.0,
            max_iterations: 200,
            flip: true,
        }
    }
}

impl ClassicalConfig {
    pub fn validate(&self, input: usize) -> Result<(), String> {
        let input = input as i64;
        if !(2..=input).contains(&self.cell) {
            return Err(format!(
                "model.cell must be in 2..={input} (the input side), got {}",
                self.cell
            ));
        }
        if !(2..=36).contains(&self.orientations) {
            return Err(format!(
                "model.orientations must be in 2..=36, got {}",
                self.orientations
            ));
        }
        if self.block < 1 || self.block > input / self.cell {
            return Err(format!(
                "model.block must be in 1..={} cells (input {input}, cell {}), got {}",
                input / self.cell,
                self.cell,
                self.block
            ));
        }
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return Err(format!("model.alpha must be >= 0, got {}", self.alpha));
        }
        if self.max_iterations == 0 {
            return Err("model.max_iterations must be at least 1".into());
        }
        Ok(())
    }

    /// Length of the HOG vector of an `input x input` image.
    pub fn features(&self, input: i64) -> i64 {
        let cells = input / self.cell;
        let blocks = (cells - self.block + 1).max(0);
        blocks * blocks * self.block * self.block * self.orientations
    }
}

/// Elements of the variables `build` creates (None on overflow).
pub fn variables(cfg: &ClassicalConfig, input: u64, classes: u64) -> Option<u64> {
    let f = u64::try_from(cfg.features(input as i64)).ok()?;
    (2 * f).checked_add(super::linear_variables(f, classes)?)
}

/// HOG descriptors `[N, features]` of images `[N, 1, H, W]`.
pub fn hog(x: &Tensor, cfg: &ClassicalConfig) -> Tensor {
    let x = x.to_kind(Kind::Float);
    let opts = (Kind::Float, x.device());
    // Central differences, the border replicated (as skimage does).
    let padded = x.pad([1, 1, 1, 1], "replicate", None::<f64>);
    let h = x.size()[2];
    let w = x.size()[3];
    let gx = padded.narrow(2, 1, h).narrow(3, 2, w) - padded.narrow(2, 1, h).narrow(3, 0, w);
    let gy = padded.narrow(2, 2, h).narrow(3, 1, w) - padded.narrow(2, 0, h).narrow(3, 1, w);
    let mag = (&gx * &gx + &gy * &gy).sqrt();
    // Unsigned orientation in [0, pi), spread linearly over the two
    // nearest bin centres.
    let n = cfg.orientations;
    let pi = std::f64::consts::PI;
    let angle = gy.atan2(&gx).remainder(pi);
    let pos = angle * (n as f64 / pi) - 0.5;
    let lo = pos.floor();
    let frac = &pos - &lo;
    let lo = (lo + n as f64).remainder(n as f64);
    let hi = (&lo + 1.0).remainder(n as f64);
    let bins = Tensor::arange(n, opts).view([1, n, 1, 1]);
    let w_lo: Tensor = (&frac * -1.0 + 1.0) * &mag;
    let w_hi: Tensor = &frac * &mag;
    let votes: Tensor = lo.eq_tensor(&bins).to_kind(Kind::Float) * w_lo
        + hi.eq_tensor(&bins).to_kind(Kind::Float) * w_hi;
    // Sum over each cell: [N, n, cells_y, cells_x].
    let c = cfg.cell;
    let cells = votes.avg_pool2d([c, c], [c, c], [0, 0], false, true, None::<i64>) * (c * c) as f64;
    // Overlapping blocks of b x b cells, L2-Hys normalised.
    let b = cfg.block;
    let blocks = cells.unfold(2, b, 1).unfold(3, b, 1); // [N, n, by, bx, b, b]
    let size = blocks.size();
    let v = blocks
        .permute([0, 2, 3, 1, 4, 5])
        .reshape([size[0], size[2] * size[3], n * b * b]);
    let eps = 1e-5;
    let l2 =
        |t: &Tensor| t / (t.square().sum_dim_intlist(-1, true, Kind::Float) + eps * eps).sqrt();
    let v = l2(&l2(&v).clamp_max(0.2));
    v.reshape([size[0], -1])
}

pub fn build(p: &nn::Path, cfg: &ClassicalConfig, input: i64, classes: i64) -> Net {
    let f = cfg.features(input);
    // The standardisation is fitted statistics: buffers, as BatchNorm's.
    let mean = p.zeros_no_train("mean", &[f]);
    let scale = p.ones_no_train("scale", &[f]);
    let fc = super::layers::linear(p / "fc", f, classes);
    let hog_cfg = cfg.clone();
    let macs = {
        // Gradients, binning and pooling are a few dozen operations per
        // pixel; the classifier is the rest.
        let pixels = (input * input) as u64;
        pixels * (4 * cfg.orientations as u64 + 16) + (f * classes) as u64
    };
    Net {
        module: Box::new(nn::func_t(move |x, _train| {
            ((hog(x, &hog_cfg) - &mean) * &scale).apply(&fc)
        })),
        macs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn hog_has_the_documented_length_and_unit_blocks() {
        let cfg = ClassicalConfig::default();
        let x = Tensor::rand([2, 1, 44, 44], (Kind::Float, Device::Cpu));
        let h = hog(&x, &cfg);
        // 44 px / 6 = 7 cells, 6x6 blocks of 2x2 cells x 9 bins.
        assert_eq!(h.size(), vec![2, cfg.features(44)]);
        assert_eq!(cfg.features(44), 6 * 6 * 2 * 2 * 9);
        // L2-Hys: every block has unit norm (up to eps).
        let blocks = h.reshape([2, 36, 36]);
        let norms = blocks
            .square()
            .sum_dim_intlist(-1, false, Kind::Float)
            .sqrt();
        assert!((norms - 1.0).abs().max().double_value(&[]) < 1e-3);
    }

    #[test]
    fn hog_sees_the_orientation_of_edges() {
        let cfg = ClassicalConfig {
            cell: 8,
            block: 1,
            ..Default::default()
        };
        // Vertical stripes: horizontal gradients (0 degrees, bin 0 or 8);
        // horizontal stripes: vertical gradients (90 degrees, bin 4).
        let ramp = Tensor::arange(48, (Kind::Float, Device::Cpu)).remainder(8.0);
        let vertical = ramp.view([1, 1, 1, 48]).expand([1, 1, 48, 48], false);
        let horizontal = ramp.view([1, 1, 48, 1]).expand([1, 1, 48, 48], false);
        let dominant = |img: &Tensor| {
            let h = hog(img, &cfg)
                .reshape([36, 9])
                .sum_dim_intlist(0, false, Kind::Float);
            h.argmax(0, false).int64_value(&[])
        };
        assert!([0, 8].contains(&dominant(&vertical)));
        assert_eq!(dominant(&horizontal), 4);
        assert!(cfg.validate(48).is_ok());
        assert!(ClassicalConfig {
            block: 9,
            ..cfg.clone()
        }
        .validate(48)
        .is_err());
    }
}
