//! The keypoint CNNs (libtorch through `tch`): the inference API ([`Keypointer`]).
//!
//! Input: gray crops, `input_size`² pixels of `u8`, row-major (from
//! [`crate::imageops::extract_crop`]). Output: points in **unit** crop space
//! (`[0, 1]²` spans the crop, see [`crate::geometry`]). This module never sees an
//! OpenCV type.
//!
//! - [`device`]: where and in which number format the network runs;
//! - [`net`]: the network ([`Net`]), trainable or folded for inference;
//! - [`heatmap`]: the integral-regression head's maths (soft-argmax, spread);
//! - [`weights`]: weight files and their checks;
//! - [`config`]: the model config saved beside the weights.

mod config;
pub mod device;
mod heatmap;
mod net;
mod weights;

pub use config::{Heatmaps, ModelConfig, TrainInfo};
pub use device::{device_name, flush_denormals, DeviceChoice, Precision, PrecisionChoice};
pub use net::Net;
pub use weights::{config_path_for, read_checked_weights};

use crate::geometry::Point;
use heatmap::Moments;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("weights {path}: file not found")]
    WeightsMissing { path: PathBuf },
    #[error("model config {path}: file not found (it is written beside the weights by `facekp train`)")]
    ConfigMissing { path: PathBuf },
    #[error("model config {path}: {reason}")]
    ConfigInvalid { path: PathBuf, reason: String },
    #[error("weights {path}: not a readable safetensors file ({source})")]
    WeightsUnreadable { path: PathBuf, source: tch::TchError },
    #[error("weights {path}: {reason}")]
    WeightsMismatch { path: PathBuf, reason: String },
    #[error("weights {path}: this is a {found}-point model, but a {wanted}-point model was asked for")]
    WrongScheme { path: PathBuf, found: usize, wanted: usize },
    #[error("device {name}: {reason}")]
    Device { name: &'static str, reason: &'static str },
    #[error("precision {name}: {reason}")]
    Precision { name: &'static str, reason: &'static str },
    #[error("inference failed: {0}")]
    Torch(#[from] tch::TchError),
}

/// A loaded model ready for batched inference.
pub struct Keypointer {
    config: ModelConfig,
    net: Net,
    device: Device,
    precision: Precision,
    convention: usize,
    label_origin: Point,
}

impl Keypointer {
    /// Loads `weights` and its config (`NAME.json` beside it) to run on `device` in
    /// `precision`. `convention` names the output head (a data set's annotation
    /// convention); `None` takes the config's default.
    pub fn load(
        weights: &Path,
        device: Device,
        precision: Precision,
        convention: Option<&str>,
    ) -> Result<Keypointer, ModelError> {
        if !weights.is_file() {
            return Err(ModelError::WeightsMissing { path: weights.to_owned() });
        }
        let config = ModelConfig::load(&config_path_for(weights))?;
        let tensors = read_checked_weights(weights, &config)?;
        let head = match convention {
            None => config.default_convention,
            Some(name) => {
                config.conventions.iter().position(|c| c == name).ok_or_else(|| ModelError::ConfigInvalid {
                    path: config_path_for(weights),
                    reason: format!("no convention {name:?}; the model has {:?}", config.conventions),
                })?
            }
        };
        let net = Net::fused(&config, &tensors, head, device, precision)?;
        let origin = Vec::<f32>::try_from(net.label_origins().to_device(Device::Cpu).flatten(0, -1))?;
        let label_origin = Point::new(origin[0], origin[1]);
        Ok(Keypointer { config, net, device, precision, convention: head, label_origin })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn convention(&self) -> &str {
        &self.config.conventions[self.convention]
    }

    /// The label origin of the chosen convention ([`Net::label_origins`]), frame
    /// pixels: add it to found points to compare them with that data set's labels.
    /// The points themselves are image positions (what `run` draws and writes).
    pub fn label_origin(&self) -> Point {
        self.label_origin
    }

    /// Runs the network on a batch of crops (each `input_size`² gray bytes) and
    /// returns each crop's points in unit space. An empty batch costs nothing.
    pub fn infer(&self, crops: &[Vec<u8>]) -> Result<Vec<Vec<Point>>, ModelError> {
        Ok(self.infer_scored(crops)?.into_iter().map(|i| i.points).collect())
    }

    /// As [`Keypointer::infer`], with each crop's heatmap spread.
    pub fn infer_scored(&self, crops: &[Vec<u8>]) -> Result<Vec<Inference>, ModelError> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.config.input_size as i64;
        let mut inputs = Vec::with_capacity(crops.len() * (s * s) as usize);
        for c in crops {
            if c.len() != (s * s) as usize {
                return Err(ModelError::Torch(tch::TchError::Shape(format!(
                    "crop of {} bytes, expected {}",
                    c.len(),
                    s * s
                ))));
            }
            standardize_into(c, &mut inputs);
        }
        let _guard = tch::no_grad_guard();
        let x = Tensor::from_slice(&inputs).view([crops.len() as i64, 1, s, s]).to_device(self.device);
        let moments = self.net.forward_moments(&x, false)?.select(1, 0).to_device(Device::Cpu).contiguous();
        let values = Vec::<f32>::try_from(moments.flatten(0, -1))?;
        Ok(values.chunks(4 * self.config.scheme.num_points()).map(|m| Moments(m).inference()).collect())
    }
}

/// One crop's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// Points in unit crop space.
    pub points: Vec<Point>,
    /// Mean standard deviation of the points' heatmap distributions, unit crop
    /// space: small on a face, large where the network finds no face to be sure of.
    pub spread: f32,
}

/// `net::standardize` of one crop of gray bytes (as `byte / 255`), appended to `out`:
/// inference does it here in one pass over the bytes, not as seven tensor ops
/// (conversion, scaling and standardisation).
fn standardize_into(crop: &[u8], out: &mut Vec<f32>) {
    let n = crop.len() as f64;
    let (sum, sum_sq) = crop.iter().fold((0u64, 0u64), |(s, q), &v| (s + v as u64, q + (v as u64) * (v as u64)));
    let mean = sum as f64 / n;
    let var = (sum_sq as f64 / n - mean * mean).max(0.0);
    // In units of 1/255, as the network's inputs are.
    let scale = 1.0 / (var.sqrt() + 1e-2 * 255.0);
    out.extend(crop.iter().map(|&v| ((v as f64 - mean) * scale) as f32));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageops;
    use tch::Kind;

    /// Inference standardises the bytes in Rust; training standardises tensors. The
    /// two must agree, or the shipped weights see other inputs than they were
    /// trained on.
    #[test]
    fn standardizing_bytes_matches_the_tensor_standardization_training_uses() {
        let gray = imageops::read_gray(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/einstein.jpg"))
            .unwrap()
            .unwrap();
        let crop = crate::geometry::CropSquare::upright(Point::new(250.0, 200.0), 260.0);
        let bytes = imageops::extract_crop(&gray, &crop, 224).unwrap();
        let mut ours = Vec::new();
        standardize_into(&bytes, &mut ours);
        let x = Tensor::from_slice(&bytes).view([1, 1, 224, 224]).to_kind(Kind::Float) / 255.0;
        let theirs = Vec::<f32>::try_from(net::standardize(&x).flatten(0, -1)).unwrap();
        assert_eq!(ours.len(), theirs.len());
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}");
        // A flat crop has no contrast to scale: zeros, not a division by zero.
        let mut flat = Vec::new();
        standardize_into(&[77; 96 * 96], &mut flat);
        assert!(flat.iter().all(|&v| v == 0.0));
    }
}
