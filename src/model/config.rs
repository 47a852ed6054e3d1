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
    /// Where and how wide the heatmaps are.
    pub heatmaps: Heatmaps,
    /// Annotation conventions (training data sets), one output head each.
    pub conventions: Vec<String>,
    /// The head `run` uses.
    pub default_convention: usize,
    /// Where the Haar box sits relative to the points, and the crop margin.
    pub crop: CropPrior,
    /// Where OpenCV's profile cascade puts its box relative to the points, for a
    /// face it finds in the image as it is (mirrored for the mirror image's finds).
    /// Absent: `run` does not search for profiles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_crop: Option<CropPrior>,
    /// Optional face threshold: a new detection whose second-pass heatmap spread
    /// ([`super::Inference::spread`]) exceeds this is dropped, which rejects the
    /// cascade's ghosts on necks, chins and clutter. `train` does not set it: it is
    /// chosen per model with `bench --false-faces` and `eval` (docs/MODEL.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_spread: Option<f32>,
    /// Optional stricter threshold for a new detection of a wide search (a turned
    /// copy of the image, an HD tile, a faint or profile box), where the cascade
    /// fires on clutter more often; also the spread within which a followed face is
    /// confirmed by the CNN alone (`crate::track::TrackerParams::confirm_spread`).
    /// Absent: [`crate::face::TURNED_MAX_SPREAD`] for new faces, and no
    /// confirmation by the CNN. Chosen per model, as `max_spread` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_turned_spread: Option<f32>,
    /// How the weights were made (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained: Option<TrainInfo>,
}

/// The heatmap head (see [`super::Net`]): the stages from `stage` on are merged
/// top-down into `width` channels at stage `stage`'s resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heatmaps {
    pub stage: usize,
    pub width: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainInfo {
    pub data: Vec<String>,
    pub epochs: usize,
    pub train_faces: usize,
    /// Times each data set's faces entered an epoch (absent: once each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repeat: Vec<usize>,
    /// The training loss (absent: L1, the only one before `--loss`).
    #[serde(default)]
    pub loss: crate::train::Loss,
    pub seed: u64,
    pub train_secs: f64,
    pub final_val_nme: Vec<(String, f64)>,
}

impl ModelConfig {
    /// Learnable parameters of the network this config describes (approximate:
    /// convolution weights).
    pub fn parameter_count(&self) -> i64 {
        let mut c_in = 1i64;
        let mut n = 0i64;
        for (&c, &extra) in self.channels.iter().zip(&self.extra_convs) {
            n = n.saturating_add(9 * c_in * c).saturating_add(9 * c * c * extra as i64);
            c_in = c;
        }
        let Heatmaps { stage, width } = self.heatmaps;
        let laterals = self.channels.iter().skip(stage).fold(0i64, |n, c| n.saturating_add(c.saturating_mul(width)));
        let merges = (self.channels.len().saturating_sub(stage) as i64).saturating_mul(9 * width * width);
        let outs = (self.conventions.len() as i64).saturating_mul(width * self.scheme.num_points() as i64);
        n.saturating_add(laterals).saturating_add(merges).saturating_add(outs)
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
        if self.heatmaps.stage >= self.channels.len() || !(1..=4096).contains(&self.heatmaps.width) {
            return Err("heatmaps need a stage below the number of stages and a width of 1 to 4096".into());
        }
        if self.channels.len() > 8 || self.extra_convs.iter().any(|&n| n > 16) {
            return Err("at most 8 stages of at most 17 convs each".into());
        }
        if self.parameter_count() > MAX_PARAMETERS {
            return Err(format!(
                "{} parameters, more than the {MAX_PARAMETERS} a facekp model may have",
                self.parameter_count()
            ));
        }
        for (name, max) in [("max_spread", self.max_spread), ("max_turned_spread", self.max_turned_spread)] {
            if max.is_some_and(|m| !(m.is_finite() && m > 0.0)) {
                return Err(format!("{name} must be a positive number"));
            }
        }
        if self.conventions.is_empty() || self.default_convention >= self.conventions.len() {
            return Err("conventions must be non-empty and default_convention one of them".into());
        }
        check_prior("crop", &self.crop)?;
        self.profile_crop.as_ref().map_or(Ok(()), |p| check_prior("profile_crop", p))
    }

    pub fn load(path: &Path) -> Result<ModelConfig, ModelError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ModelError::ConfigMissing { path: path.to_owned() })
            }
            Err(e) => return Err(ModelError::ConfigInvalid { path: path.to_owned(), reason: e.to_string() }),
        };
        let cfg: ModelConfig = serde_json::from_str(&text).map_err(|e| ModelError::ConfigInvalid {
            path: path.to_owned(),
            reason: format!("not a model config: {e}"),
        })?;
        cfg.validate().map_err(|reason| ModelError::ConfigInvalid { path: path.to_owned(), reason })?;
        Ok(cfg)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        crate::fsutil::write_atomic(path, serde_json::to_string_pretty(self)?.as_bytes())
    }
}

/// Whether crop prior `c` (the config's field `name`) can place a crop.
fn check_prior(name: &str, c: &CropPrior) -> Result<(), String> {
    let finite = [c.dx_mean, c.dx_std, c.dy_mean, c.dy_std, c.scale_mean, c.log_scale_std, c.crop_padding]
        .iter()
        .all(|v| v.is_finite());
    if !finite || c.scale_mean <= 0.0 || c.crop_padding <= 0.0 {
        return Err(format!("{name}: values must be finite, scale_mean and crop_padding positive"));
    }
    Ok(())
}
