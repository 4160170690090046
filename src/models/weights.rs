//! Moving named weights between a model file's tensors and a network's
//! variables.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use tch::{nn, Tensor};

/// Copies `tensors` (by name, with an optional prefix) into `vs`.
pub fn copy_into(
    vs: &nn::VarStore,
    tensors: &BTreeMap<String, Tensor>,
    prefix: &str,
) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vs.variables() {
            let key = format!("{prefix}{name}");
            let src = tensors
                .get(&key)
                .with_context(|| format!("tensor '{key}' missing from the file"))?;
            if src.size() != var.size() {
                bail!(
                    "tensor '{key}': file has {:?}, the network its metadata describes expects {:?}",
                    src.size(),
                    var.size()
                );
            }
            if !src.is_floating_point() {
                bail!(
                    "tensor '{key}' is {:?}, expected floating-point weights",
                    src.kind()
                );
            }
            var.copy_(&src.to_kind(var.kind()).to_device(var.device()));
        }
        Ok(())
    })
}
