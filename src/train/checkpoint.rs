//! Checkpoints: the model, its moving average, the optimizer's moments and the
//! training state in one safetensors file, written after every epoch under a
//! temporary name and renamed, so a crash never leaves a corrupt one.

use super::average::WeightAverage;
use super::optim;
use super::EpochRecord;
use crate::fsutil;
use crate::model::ModelConfig;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{nn, Tensor};

/// A checkpoint read back: its training state and every tensor by name
/// (`model.*`, `ema.*`, the optimizer's).
pub(super) struct Resumed {
    pub state: CheckpointState,
    pub tensors: HashMap<String, Tensor>,
}

impl Resumed {
    /// Copies the checkpoint's model variables into `vs` and its moments into `opt`.
    pub fn restore(&self, vs: &nn::VarStore, opt: &mut optim::AdamW) -> Result<()> {
        copy_into(vs, |name| self.tensors.get(&format!("model.{name}")))?;
        opt.restore(&self.tensors, self.state.adam_step);
        Ok(())
    }
}

/// Copies into every variable of `vs` the tensor `source` gives for its name.
pub(super) fn copy_into<'a>(vs: &nn::VarStore, source: impl Fn(&str) -> Option<&'a Tensor>) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        for (name, mut var) in vs.variables() {
            let src = source(&name).with_context(|| format!("tensor {name} missing from the starting weights"))?;
            var.f_copy_(src)?;
        }
        Ok(())
    })
}

/// Everything needed to continue a run, stored inside the checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CheckpointState {
    pub config: ModelConfig,
    pub epochs: usize,
    pub seed: u64,
    pub adam_step: i64,
    pub history: Vec<EpochRecord>,
    pub data: Vec<String>,
    pub train_faces: usize,
    /// Per data folder (absent in checkpoints from before `--repeat`: once each).
    #[serde(default)]
    pub repeat: Vec<usize>,
    /// Absent in checkpoints from before `--loss`: L1.
    #[serde(default)]
    pub loss: super::Loss,
}

const STATE_TENSOR: &str = "checkpoint_state_json";

pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.with_extension("ckpt")
}

pub(super) fn save_checkpoint(
    path: &Path,
    vs: &nn::VarStore,
    opt: &optim::AdamW,
    average: &WeightAverage,
    state: &CheckpointState,
) -> Result<()> {
    let json = serde_json::to_vec(state)?;
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(n, t)| (format!("model.{n}"), t)).collect();
    named.extend(opt.state());
    named.extend(average.state());
    named.push((STATE_TENSOR.to_string(), Tensor::from_slice(&json)));
    fsutil::with_atomic_path(path, |tmp| Tensor::write_safetensors(&named, tmp).map_err(|e| anyhow::anyhow!("{e}")))
        .with_context(|| format!("checkpoint {}: cannot write", path.display()))
}

pub(super) fn load_checkpoint(path: &Path) -> Result<Resumed> {
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .with_context(|| format!("checkpoint {}: not a readable checkpoint", path.display()))?
        .into_iter()
        .collect();
    let json = tensors
        .get(STATE_TENSOR)
        .with_context(|| format!("checkpoint {}: no training state inside", path.display()))?;
    let bytes = Vec::<u8>::try_from(json)?;
    let state: CheckpointState = serde_json::from_slice(&bytes)
        .with_context(|| format!("checkpoint {}: training state unreadable", path.display()))?;
    Ok(Resumed { state, tensors })
}

/// Writes the model's variables (only) as safetensors, atomically.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let named = vs.variables().into_iter().collect::<Vec<_>>();
    fsutil::with_atomic_path(path, |tmp| Tensor::write_safetensors(&named, tmp).map_err(|e| anyhow::anyhow!("{e}")))
        .with_context(|| format!("weights {}: cannot write", path.display()))
}
