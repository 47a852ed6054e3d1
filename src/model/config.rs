//! The model config (JSON beside the weights): everything `run` needs to rebuild
//! the exact network and crop the way it was trained.

use super::ModelError;
use crate::geometry::CropPrior;
use crate::landmarks::Scheme;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Bound on a config's network size: weights files are at most 10 MB (2.5 M floats);
/// anything far larger is a corrupt or foreign config.
pub const MAX_PARAMETERS: i64 = 20_000_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub scheme: Scheme,
    /// Side of the square gray input, pixels.
    pub input_size: u32,
    /// Output channels of each stage; every stage starts with a stride-2 conv.
    pub channels: Vec<i64>,
    /// Stride-1 convs after the first conv of each stage.
    pub extra_convs: Vec<usize>,
    /// Width of the hidden fully connected layer (`HeadKind::Fc`).
    #[serde(default)]
    pub hidden: i64,
    /// How features become points.
    #[serde(default)]
    pub head: HeadKind,
    /// Annotation conventions (training data sets), one output head each.
    pub conventions: Vec<String>,
    /// The head `run` uses.
    pub default_convention: usize,
    /// Where the Haar box sits relative to the points, and the crop margin.
    pub crop: CropPrior,
    /// How the weights were made (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained: Option<TrainInfo>,
}

/// The network's head (see [`super::Net`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeadKind {
    /// Flatten the last feature map, a hidden layer of `hidden` units, linear outputs.
    #[default]
    Fc,
    /// Heatmaps at the resolution of stage `stage` from a top-down merge of the later
    /// stages (`width` channels), points by soft-argmax.
    Integral { stage: usize, width: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainInfo {
    pub data: Vec<String>,
    pub epochs: usize,
    pub train_faces: usize,
    pub seed: u64,
    pub train_secs: f64,
    pub final_val_nme: Vec<(String, f64)>,
}

impl ModelConfig {
    /// Spatial side of the last feature map.
    pub fn feature_side(&self) -> i64 {
        let mut side = self.input_size as i64;
        for _ in &self.channels {
            side = (side + 1) / 2;
        }
        side
    }

    /// Learnable parameters of the network this config describes (approximate:
    /// convolution and linear weights).
    pub fn parameter_count(&self) -> i64 {
        let mut c_in = 1i64;
        let mut n = 0i64;
        for (&c, &extra) in self.channels.iter().zip(&self.extra_convs) {
            n = n.saturating_add(9 * c_in * c).saturating_add(9 * c * c * extra as i64);
            c_in = c;
        }
        let points = self.scheme.num_points() as i64;
        let conventions = self.conventions.len() as i64;
        let head = match self.head {
            HeadKind::Fc => self
                .flat_features()
                .saturating_mul(self.hidden)
                .saturating_add(conventions * self.hidden * 2 * points),
            HeadKind::Integral { stage, width } => {
                let laterals: i64 = self.channels.iter().skip(stage).map(|c| c * width).sum();
                let merges = (self.channels.len().saturating_sub(stage)) as i64 * 9 * width * width;
                laterals.saturating_add(merges).saturating_add(conventions * width * points)
            }
        };
        n.saturating_add(head)
    }

    pub fn flat_features(&self) -> i64 {
        self.channels.last().copied().unwrap_or(0) * self.feature_side().pow(2)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.input_size != self.scheme.input_size() {
            return Err(format!(
                "input_size {} does not fit the {}-point model ({} expected)",
                self.input_size,
                self.scheme.num_points(),
                self.scheme.input_size()
            ));
        }
        if self.channels.is_empty() || self.channels.len() != self.extra_convs.len() {
            return Err("channels and extra_convs must be non-empty and of equal length".into());
        }
        if self.channels.iter().any(|&c| !(1..=4096).contains(&c)) {
            return Err("channel widths must be between 1 and 4096".into());
        }
        match self.head {
            HeadKind::Fc if !(1..=65536).contains(&self.hidden) => {
                return Err("hidden must be between 1 and 65536".into());
            }
            HeadKind::Integral { stage, width } if stage >= self.channels.len() || !(1..=4096).contains(&width) => {
                return Err("an integral head needs a stage below the number of stages and a width of 1 to 4096".into());
            }
            _ => {}
        }
        if self.extra_convs.iter().any(|&n| n > 16) {
            return Err("extra_convs must be at most 16 per stage".into());
        }
        if self.feature_side() < 1 {
            return Err("too many stages for the input size".into());
        }
        if self.parameter_count() > MAX_PARAMETERS {
            return Err(format!("{} parameters, more than the {MAX_PARAMETERS} a facekp model may have", self.parameter_count()));
        }
        if self.conventions.is_empty() || self.default_convention >= self.conventions.len() {
            return Err("conventions must be non-empty and default_convention one of them".into());
        }
        let c = &self.crop;
        let finite = [c.dx_mean, c.dx_std, c.dy_mean, c.dy_std, c.scale_mean, c.log_scale_std, c.crop_padding]
            .iter()
            .all(|v| v.is_finite());
        if !finite || c.scale_mean <= 0.0 || c.crop_padding <= 0.0 {
            return Err("crop prior values must be finite, scale_mean and crop_padding positive".into());
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<ModelConfig, ModelError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ModelError::ConfigMissing { path: path.to_owned() })
            }
            Err(e) => return Err(ModelError::ConfigInvalid { path: path.to_owned(), reason: e.to_string() }),
        };
        let cfg: ModelConfig = serde_json::from_str(&text)
            .map_err(|e| ModelError::ConfigInvalid { path: path.to_owned(), reason: format!("not a model config: {e}") })?;
        cfg.validate().map_err(|reason| ModelError::ConfigInvalid { path: path.to_owned(), reason })?;
        Ok(cfg)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::fsutil::write_atomic(path, serde_json::to_string_pretty(self)?.as_bytes())
    }
}
