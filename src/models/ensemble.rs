//! An ensemble: member networks whose class probabilities are averaged.
//! Its output is the log of that average, so the softmax that every caller
//! applies to "logits" gives back the average exactly, and eval, TTA, serve,
//! bench and quantization need no special case.

use super::{ModelConfig, Net, Network};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleConfig {
    /// The members, built under `m0.`, `m1.`, ... in this order.
    pub members: Vec<ModelConfig>,
}

impl EnsembleConfig {
    pub fn validate(&self, input: usize) -> Result<(), String> {
        if self.members.len() < 2 {
            return Err(format!(
                "model.members: an ensemble needs at least 2 members, got {}",
                self.members.len()
            ));
        }
        for (k, m) in self.members.iter().enumerate() {
            if !m.is_network() || matches!(m, ModelConfig::Ensemble(_)) {
                return Err(format!(
                    "model.members[{k}]: a {} cannot be an ensemble member (expected a network: logistic, mlp, cnn, resnet18 or vit)",
                    m.family()
                ));
            }
            m.validate(input)
                .map_err(|e| format!("model.members[{k}]: {e}"))?;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Ensemble {
    members: Vec<Box<dyn Network>>,
}

impl nn::ModuleT for Ensemble {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let logp: Vec<Tensor> = self
            .members
            .iter()
            .map(|m| m.forward_t(x, train).log_softmax(-1, Kind::Float))
            .collect();
        // log(mean(p)) computed stably in log space.
        Tensor::stack(&logp, 0).logsumexp([0i64].as_slice(), false) - (logp.len() as f64).ln()
    }
}

impl Network for Ensemble {
    /// Grad-CAM explains the first member (the maps of different members
    /// have no common channels to weigh).
    fn cam(&self, x: &Tensor) -> Option<(Tensor, Tensor)> {
        self.members[0].cam(x)
    }
}

pub fn build(p: &nn::Path, cfg: &EnsembleConfig, input: i64, classes: i64) -> Net {
    let mut members = Vec::with_capacity(cfg.members.len());
    let mut macs = 0;
    for (k, m) in cfg.members.iter().enumerate() {
        let net = super::build_checked(&(p / format!("m{k}")), m, input as usize, classes as usize);
        macs += net.macs;
        members.push(net.module);
    }
    Net {
        module: Box::new(Ensemble { members }),
        macs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_of_the_output_is_the_mean_of_the_members_probabilities() {
        let cnn: ModelConfig =
            serde_saphyr::from_str("kind: cnn\nwidths: [4, 8]\nconvs: 1\n").unwrap();
        let mlp: ModelConfig = serde_saphyr::from_str("kind: mlp\nhidden: [16]\n").unwrap();
        let cfg = EnsembleConfig {
            members: vec![cnn.clone(), mlp.clone()],
        };
        cfg.validate(16).unwrap();
        tch::manual_seed(0);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let ens = build(&vs.root(), &cfg, 16, 7);
        // The members alone, under the same prefixes, given the same weights.
        let alone = nn::VarStore::new(tch::Device::Cpu);
        let a = super::super::build(&(alone.root() / "m0"), &cnn, 16, 7).unwrap();
        let b = super::super::build(&(alone.root() / "m1"), &mlp, 16, 7).unwrap();
        let weights = vs.variables().into_iter().collect();
        crate::models::weights::copy_into(&alone, &weights, "").unwrap();
        assert_eq!(ens.macs, a.macs + b.macs);
        let x = Tensor::randn([5, 1, 16, 16], (Kind::Float, tch::Device::Cpu));
        let got = ens.module.forward_t(&x, false).softmax(-1, Kind::Float);
        let want = (a.module.forward_t(&x, false).softmax(-1, Kind::Float)
            + b.module.forward_t(&x, false).softmax(-1, Kind::Float))
            / 2.0;
        let err = (got - want).abs().max().double_value(&[]);
        assert!(err < 1e-6, "max error {err}");

        let lonely = EnsembleConfig { members: vec![cnn] };
        assert!(lonely.validate(16).unwrap_err().contains("at least 2"));
        let nested = EnsembleConfig {
            members: vec![mlp, ModelConfig::Ensemble(cfg)],
        };
        assert!(nested.validate(16).unwrap_err().contains("members[1]"));
    }
}
