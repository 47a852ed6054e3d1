//! Weight files: `NAME.safetensors` with its config `NAME.json` beside it, read
//! and checked against the network the config describes.

use super::net::Net;
use super::{ModelConfig, ModelError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Tensor};

/// The model config path for a weights path: `NAME.safetensors` -> `NAME.json`.
pub fn config_path_for(weights: &Path) -> PathBuf {
    weights.with_extension("json")
}

/// Reads a weights file, checking every tensor `cfg` needs is there with its shape.
pub fn read_checked_weights(weights: &Path, cfg: &ModelConfig) -> Result<HashMap<String, Tensor>, ModelError> {
    if !weights.is_file() {
        return Err(ModelError::WeightsMissing { path: weights.to_owned() });
    }
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(weights)
        .map_err(|source| ModelError::WeightsUnreadable { path: weights.to_owned(), source })?
        .into_iter()
        .collect();
    let vs = nn::VarStore::new(Device::Cpu);
    Net::new(&vs.root(), cfg)
        .map_err(|e| ModelError::ConfigInvalid { path: config_path_for(weights), reason: e.to_string() })?;
    for (name, var) in vs.variables() {
        match tensors.get(&name) {
            None => {
                return Err(ModelError::WeightsMismatch {
                    path: weights.to_owned(),
                    reason: format!("tensor {name} is missing: the weights do not match the model config"),
                })
            }
            Some(t) if t.size() != var.size() => {
                return Err(ModelError::WeightsMismatch {
                    path: weights.to_owned(),
                    reason: format!("tensor {name} has shape {:?}, the model config needs {:?}", t.size(), var.size()),
                })
            }
            Some(t)
                if t.f_isfinite()
                    .and_then(|f| f.f_all())
                    .map(|a| !bool::try_from(a).unwrap_or(false))
                    .unwrap_or(true) =>
            {
                return Err(ModelError::WeightsMismatch {
                    path: weights.to_owned(),
                    reason: format!("tensor {name} holds NaN or infinite values"),
                })
            }
            Some(_) => {}
        }
    }
    Ok(tensors)
}
