//! The keypoint CNNs (libtorch through `tch`): definition, weight loading and
//! batched inference.
//!
//! Input: gray crops, `input_size`² pixels of `u8`, row-major (from
//! [`crate::imageops::extract_crop`]). Output: points in **unit** crop space
//! (`[0, 1]²` spans the crop, see [`crate::geometry`]). This module never sees an
//! OpenCV type.
//!
//! The network is a plain stack of 3x3 conv + batch-norm + ReLU stages, each opened
//! by a stride-2 conv, then two fully connected layers; the last one has one head
//! per annotation convention it was trained on (`ModelConfig::conventions`). For
//! inference the batch norms are folded into the convolutions ([`FusedNet`]).

mod config;

pub use config::{ModelConfig, TrainInfo};

use crate::geometry::Point;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{nn, Device, Kind, Tensor};

/// Batch-norm epsilon (tch's default, used again when folding).
const BN_EPS: f64 = 1e-5;

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
    #[error("device {0}: {1}")]
    Device(String, String),
    #[error("inference failed: {0}")]
    Torch(#[from] tch::TchError),
}

/// Picks the device: `auto` is CUDA when libtorch sees a GPU, else the CPU.
pub fn resolve_device(name: &str) -> Result<Device, ModelError> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available()),
        "cuda" => {
            if tch::Cuda::is_available() {
                Ok(Device::Cuda(0))
            } else {
                Err(ModelError::Device(
                    "cuda".into(),
                    "no CUDA GPU is visible to libtorch (use --device cpu or auto)".into(),
                ))
            }
        }
        other => Err(ModelError::Device(other.into(), "expected auto, cpu or cuda".into())),
    }
}

pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} CNN threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

/// The trainable network (batch norm in training mode).
///
/// # Shapes
/// - input: `[B, 1, S, S]` float, pixel values in `[0, 1]`
/// - output of [`Net::forward_heads`]: `[B, H, 2N]`, unit-space `x0, y0, x1, ...` for
///   each of the `H` convention heads
#[derive(Debug)]
pub struct Net {
    convs: Vec<(nn::Conv2D, nn::BatchNorm, i64)>,
    fc: nn::Linear,
    heads: Vec<nn::Linear>,
}

/// Per-sample standardisation, part of the model so every caller agrees on it.
fn standardize(x: &Tensor) -> Tensor {
    let mean = x.mean_dim(&[1i64, 2, 3][..], true, Kind::Float);
    let std = x.std_dim(&[1i64, 2, 3][..], false, true);
    (x - mean) / (std + 1e-2)
}

impl Net {
    pub fn new(vs: &nn::Path, cfg: &ModelConfig) -> Net {
        let mut convs = Vec::new();
        let mut c_in = 1;
        let mut k = 0;
        for (stage, &c_out) in cfg.channels.iter().enumerate() {
            for j in 0..=cfg.extra_convs[stage] {
                let stride = if j == 0 { 2 } else { 1 };
                let conv_cfg = nn::ConvConfig { stride, padding: 1, bias: false, ..Default::default() };
                let conv = nn::conv2d(vs / format!("conv{k}"), c_in, c_out, 3, conv_cfg);
                let bn = nn::batch_norm2d(vs / format!("bn{k}"), c_out, Default::default());
                convs.push((conv, bn, stride));
                c_in = c_out;
                k += 1;
            }
        }
        let fc = nn::linear(vs / "fc", cfg.flat_features(), cfg.hidden, Default::default());
        let n_out = 2 * cfg.scheme.num_points() as i64;
        let heads = (0..cfg.conventions.len())
            .map(|h| nn::linear(vs / format!("head{h}"), cfg.hidden, n_out, Default::default()))
            .collect();
        Net { convs, fc, heads }
    }

    pub fn forward_heads(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = standardize(x);
        for (conv, bn, _) in &self.convs {
            x = x.apply(conv).apply_t(bn, train).relu();
        }
        let f = x.flatten(1, -1).apply(&self.fc).relu();
        let outs: Vec<Tensor> = self.heads.iter().map(|h| f.apply(h)).collect();
        Tensor::stack(&outs, 1)
    }
}

/// The inference network: batch norms folded into the convolutions, one head.
#[derive(Debug)]
pub struct FusedNet {
    convs: Vec<(Tensor, Tensor, i64)>,
    fc: (Tensor, Tensor),
    head: (Tensor, Tensor),
}

impl FusedNet {
    /// Folds the batch norms of a trained [`Net`]'s variables (`vars`, by name).
    fn fold(cfg: &ModelConfig, vars: &HashMap<String, Tensor>, head: usize, device: Device) -> FusedNet {
        let get = |name: &str| vars[name].to_device(device).to_kind(Kind::Float);
        let mut convs = Vec::new();
        let mut k = 0;
        for (stage, _) in cfg.channels.iter().enumerate() {
            for j in 0..=cfg.extra_convs[stage] {
                let w = get(&format!("conv{k}.weight"));
                let gamma = get(&format!("bn{k}.weight"));
                let beta = get(&format!("bn{k}.bias"));
                let mean = get(&format!("bn{k}.running_mean"));
                let var = get(&format!("bn{k}.running_var"));
                let scale = &gamma / (var + BN_EPS).sqrt();
                let w = &w * scale.view([-1, 1, 1, 1]);
                let b = beta - mean * &scale;
                convs.push((w, b, if j == 0 { 2 } else { 1 }));
                k += 1;
            }
        }
        FusedNet {
            convs,
            fc: (get("fc.weight"), get("fc.bias")),
            head: (get(&format!("head{head}.weight")), get(&format!("head{head}.bias"))),
        }
    }

    /// # Shapes
    /// `[B, 1, S, S]` in `[0, 1]` -> `[B, 2N]` unit-space coordinates.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor, tch::TchError> {
        let mut x = standardize(x);
        for (w, b, stride) in &self.convs {
            x = x.f_conv2d(w, Some(b), [*stride, *stride], [1, 1], [1, 1], 1)?.relu();
        }
        let f = x.flatten(1, -1).f_linear(&self.fc.0, Some(&self.fc.1))?.relu();
        f.f_linear(&self.head.0, Some(&self.head.1))
    }
}

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
    let _ = Net::new(&vs.root(), cfg);
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
                    reason: format!(
                        "tensor {name} has shape {:?}, the model config needs {:?}",
                        t.size(),
                        var.size()
                    ),
                })
            }
            Some(t) if t.f_isfinite().and_then(|f| f.f_all()).map(|a| !bool::try_from(a).unwrap_or(false)).unwrap_or(true) => {
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

/// A loaded model ready for batched inference.
pub struct Keypointer {
    config: ModelConfig,
    net: FusedNet,
    device: Device,
    convention: usize,
}

impl Keypointer {
    /// Loads `weights` and its config (`NAME.json` beside it). `convention` names the
    /// output head (a data set's annotation convention); `None` takes the config's default.
    pub fn load(weights: &Path, device: Device, convention: Option<&str>) -> Result<Keypointer, ModelError> {
        if !weights.is_file() {
            return Err(ModelError::WeightsMissing { path: weights.to_owned() });
        }
        let config = ModelConfig::load(&config_path_for(weights))?;
        let tensors = read_checked_weights(weights, &config)?;
        let head = match convention {
            None => config.default_convention,
            Some(name) => config.conventions.iter().position(|c| c == name).ok_or_else(|| ModelError::ConfigInvalid {
                path: config_path_for(weights),
                reason: format!("no convention {name:?}; the model has {:?}", config.conventions),
            })?,
        };
        let net = FusedNet::fold(&config, &tensors, head, device);
        Ok(Keypointer { config, net, device, convention: head })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn convention(&self) -> &str {
        &self.config.conventions[self.convention]
    }

    /// Runs the network on a batch of crops (each `input_size`² gray bytes) and
    /// returns each crop's points in unit space. An empty batch costs nothing.
    pub fn infer(&self, crops: &[Vec<u8>]) -> Result<Vec<Vec<Point>>, ModelError> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let s = self.config.input_size as i64;
        let mut flat = Vec::with_capacity(crops.len() * (s * s) as usize);
        for c in crops {
            if c.len() != (s * s) as usize {
                return Err(ModelError::Torch(tch::TchError::Shape(format!(
                    "crop of {} bytes, expected {}",
                    c.len(),
                    s * s
                ))));
            }
            flat.extend_from_slice(c);
        }
        let _guard = tch::no_grad_guard();
        let x = Tensor::from_slice(&flat)
            .view([crops.len() as i64, 1, s, s])
            .to_device(self.device)
            .to_kind(Kind::Float)
            / 255.0;
        let y = self.net.forward(&x)?.to_device(Device::Cpu).contiguous();
        let values: Vec<f32> = Vec::<f32>::try_from(y.flatten(0, -1))?;
        let n = self.config.scheme.num_points();
        Ok(values
            .chunks(2 * n)
            .map(|v| v.chunks(2).map(|xy| Point::new(xy[0], xy[1])).collect())
            .collect())
    }
}
