//! Checkpoints: the weights (`model/`), the optimiser state (`opt/`), the
//! running weight average (`swa/`) and the trainer state as metadata, in one
//! safetensors file, so a resumed run continues exactly.

use super::{optim, swa, TrainerState};
use crate::tensor_io;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn, Tensor};

/// Writes a checkpoint of the network, the optimiser, the weight average
/// and the trainer state to `path`.
pub(super) fn save(
    path: &Path,
    vs: &nn::VarStore,
    opt: &optim::Optimizer,
    state: &TrainerState,
    avg: &swa::Averager,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("model/{n}"), t))
        .collect();
    tensors.extend(
        opt.state_tensors()
            .into_iter()
            .map(|(n, t)| (format!("opt/{n}"), t)),
    );
    tensors.extend(
        avg.avg
            .iter()
            .map(|(n, t)| (format!("swa/{n}"), t.shallow_clone())),
    );
    let mut md = BTreeMap::new();
    md.insert("fer.trainer".to_string(), serde_json::to_string(state)?);
    md.insert("fer.opt_steps".to_string(), opt.steps.to_string());
    tensor_io::save(path, &tensors, &md)
}

/// The tensors named `<prefix><name>`, keyed by `<name>`.
fn with_prefix(tensors: &BTreeMap<String, Tensor>, prefix: &str) -> BTreeMap<String, Tensor> {
    tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix(prefix)
                .map(|n| (n.to_string(), t.shallow_clone()))
        })
        .collect()
}

/// Restores the network and the optimiser from the checkpoint at `path`;
/// returns the trainer state and the weight average it held.
pub(super) fn load(
    path: &Path,
    vs: &nn::VarStore,
    opt: &mut optim::Optimizer,
) -> Result<(TrainerState, swa::Averager)> {
    let ck = tensor_io::load(path)?;
    crate::models::weights::copy_into(vs, &with_prefix(&ck.tensors, "model/"), "")?;
    let opt_state = with_prefix(&ck.tensors, "opt/");
    let steps: i64 = ck
        .metadata
        .get("fer.opt_steps")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    opt.load_state(&opt_state, steps);
    let state: TrainerState = serde_json::from_str(
        ck.metadata
            .get("fer.trainer")
            .context("checkpoint has no trainer state")?,
    )?;
    let avg = swa::Averager::restore(with_prefix(&ck.tensors, "swa/"), state.swa_n);
    Ok((state, avg))
}

/// Copies the network weights of the checkpoint at `path` into `vs`.
pub(super) fn load_weights(path: &Path, vs: &nn::VarStore) -> Result<()> {
    let ck = tensor_io::load(path)?;
    crate::models::weights::copy_into(vs, &with_prefix(&ck.tensors, "model/"), "")
}
