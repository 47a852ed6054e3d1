//! The keypoint CNNs (libtorch through `tch`): definition, weight loading and
//! batched inference.
//!
//! Input: gray crops, `input_size`² pixels of `u8`, row-major (from
//! [`crate::imageops::extract_crop`]). Output: points in **unit** crop space
//! (`[0, 1]²` spans the crop, see [`crate::geometry`]). This module never sees an
//! OpenCV type.
//!
//! The backbone is a plain stack of 3x3 conv + batch-norm + ReLU stages, each opened
//! by a stride-2 conv. The head is integral regression ([`Heatmaps`]): one heatmap per
//! point, each point the expectation of its map's softmax, with one output layer per
//! annotation convention the model was trained on (`ModelConfig::conventions`). For
//! inference the batch norms are folded into the convolutions ([`Net`]).

mod config;

pub use config::{Heatmaps, ModelConfig, TrainInfo};

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

/// Treats denormal floats as zero in this thread's SSE arithmetic and in every
/// thread it starts afterwards (a new thread inherits the creator's MXCSR), as
/// PyTorch's `set_flush_denormal(True)` does. Call it first thing in `main`, before
/// libtorch starts its thread pool. Denormals (below 1.2e-38) arise in the
/// convolutions' small products and are handled by a slow microcode path on x86:
/// with them flushed, the 68-point network with random weights ran at batch 1 in
/// 5.9 instead of 7.6 ms (median of 7 x 100 runs, AVX2 machine). No-op on other
/// architectures.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads and writes this thread's MXCSR register only; setting FTZ (bit
    // 15) and DAZ (bit 6) changes the results of denormal operands and results
    // to zero, nothing else.
    unsafe {
        let mut csr: u32 = 0;
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr as *mut u32, options(nostack));
        csr |= 0x8040;
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr as *const u32, options(nostack, readonly));
    }
}

pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} CNN threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

/// One convolution, optionally followed by batch norm. In an inference network the
/// batch norm is folded into the weights and bias ([`Net::fused`]).
#[derive(Debug)]
struct ConvBn {
    w: Tensor,
    b: Option<Tensor>,
    bn: Option<nn::BatchNorm>,
    stride: i64,
    padding: i64,
}

impl ConvBn {
    /// Whether an inference conv should bypass libtorch's choice for oneDNN.
    /// libtorch sends a batch-1 convolution whose input holds at most 20480 values
    /// to its im2col path; for the 68-point network's 3x3 convs on 96 channels at
    /// 14x14 and 128 at 7x7 oneDNN is faster (alone, 96->96 at 14x14: 240 against
    /// 364 us). In-process paired rounds of the whole 68-point network (30 inferences
    /// each, alternating): oneDNN faster in 26, 36 and 37 of 40 rounds, median 3.61
    /// -> 3.50, 5.01 -> 4.10 and 3.38 -> 3.12 ms. On smaller inputs (the 15-point
    /// network's 6x6x64) the im2col path wins, 9-11 of 40, so they keep it. So do
    /// convs on fewer than 64 channels, where it was mixed (with the 15-point
    /// network's 32- and 48-channel convs on oneDNN: faster in 27 and in 11 of 40
    /// rounds, two runs), and training.
    fn prefers_onednn(&self, x: &Tensor) -> bool {
        let size = x.size();
        let numel = x.numel();
        self.bn.is_none() && size[0] == 1 && self.w.size()[2] == 3 && size[1] >= 64 && numel > 4096 && numel <= 20480
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, tch::TchError> {
        if self.prefers_onednn(x) {
            return x.f_mkldnn_convolution(&self.w, self.b.as_ref(), [self.padding; 2], [self.stride; 2], [1, 1], 1);
        }
        let y = x.f_conv2d(&self.w, self.b.as_ref(), [self.stride; 2], [self.padding; 2], [1, 1], 1)?;
        Ok(match &self.bn {
            Some(bn) => y.apply_t(bn, train),
            None => y,
        })
    }
}

/// Where a network's tensors come from: fresh trainable variables, or a trained
/// model's tensors with the batch norms folded in.
enum Source<'a> {
    Train(&'a nn::Path<'a>),
    Fused { vars: &'a HashMap<String, Tensor>, device: Device },
}

impl Source<'_> {
    fn get(&self, name: &str) -> Tensor {
        match self {
            Source::Fused { vars, device } => vars[name].to_device(*device).to_kind(Kind::Float),
            Source::Train(_) => unreachable!("trainable tensors are made by nn"),
        }
    }

    /// A bias-free `k`x`k` conv (`{conv}.weight`) and its batch norm (`{bn}.*`).
    fn conv_bn(&self, conv: &str, bn: &str, c_in: i64, c_out: i64, k: i64, stride: i64) -> ConvBn {
        let padding = k / 2;
        match self {
            Source::Train(p) => {
                let cfg = nn::ConvConfig { stride, padding, bias: false, ..Default::default() };
                let c = nn::conv2d(*p / conv, c_in, c_out, k, cfg);
                let bn = nn::batch_norm2d(*p / bn, c_out, Default::default());
                ConvBn { w: c.ws, b: None, bn: Some(bn), stride, padding }
            }
            Source::Fused { .. } => {
                let w = self.get(&format!("{conv}.weight"));
                let gamma = self.get(&format!("{bn}.weight"));
                let beta = self.get(&format!("{bn}.bias"));
                let mean = self.get(&format!("{bn}.running_mean"));
                let var = self.get(&format!("{bn}.running_var"));
                let scale = &gamma / (var + BN_EPS).sqrt();
                let w = &w * scale.view([-1, 1, 1, 1]);
                let b = beta - mean * &scale;
                ConvBn { w, b: Some(b), bn: None, stride, padding }
            }
        }
    }

    /// A convention's label origin (`{name}`, `[2]`), zero when fresh.
    fn origin(&self, name: &str) -> Tensor {
        match self {
            Source::Train(p) => p.var(name, &[2], nn::Init::Const(0.0)),
            Source::Fused { .. } => self.get(name),
        }
    }

    /// A 1x1 conv with bias (`{name}.weight`, `{name}.bias`).
    fn conv1x1(&self, name: &str, c_in: i64, c_out: i64) -> ConvBn {
        let (w, b) = match self {
            Source::Train(p) => {
                let c = nn::conv2d(*p / name, c_in, c_out, 1, Default::default());
                (c.ws, c.bs)
            }
            Source::Fused { .. } => (self.get(&format!("{name}.weight")), Some(self.get(&format!("{name}.bias")))),
        };
        ConvBn { w, b, bn: None, stride: 1, padding: 0 }
    }
}

/// The network, trainable ([`Net::new`], batch norm in training mode) or for
/// inference ([`Net::fused`], batch norms folded, one convention head).
///
/// # Shapes
/// - input: `[B, 1, S, S]` float, pixel values in `[0, 1]`
/// - output of [`Net::forward_heads`]: `[B, H, 2N]`, unit-space `x0, y0, x1, ...` for
///   each of the `H` convention heads
#[derive(Debug)]
pub struct Net {
    /// Backbone stages; each opens with a stride-2 conv.
    stages: Vec<Vec<ConvBn>>,
    /// The first stage merged into the heatmaps.
    heatmap_stage: usize,
    /// 1x1 laterals and 3x3 merge convs of the top-down path, one each per stage
    /// from `heatmap_stage` on: coarser levels are upsampled (nearest) and added.
    laterals: Vec<ConvBn>,
    merges: Vec<ConvBn>,
    /// One 1x1 conv per convention: a heatmap per point.
    outs: Vec<ConvBn>,
    /// Per convention, where its labels sit relative to the image, in frame pixels
    /// (`[2]`: x, y): see [`Net::label_origins`].
    origins: Vec<Tensor>,
    points: i64,
}

/// Per-sample standardisation, part of the model so every caller agrees on it.
fn standardize(x: &Tensor) -> Tensor {
    let mean = x.mean_dim(&[1i64, 2, 3][..], true, Kind::Float);
    let std = x.std_dim(&[1i64, 2, 3][..], false, true);
    (x - mean) / (std + 1e-2)
}

impl Net {
    /// A trainable network with fresh variables under `vs`.
    pub fn new(vs: &nn::Path, cfg: &ModelConfig) -> Net {
        Net::build(&Source::Train(vs), cfg, &(0..cfg.conventions.len()).collect::<Vec<_>>())
    }

    /// The inference network of trained tensors `vars` (by name), with convention
    /// head `head` only.
    fn fused(cfg: &ModelConfig, vars: &HashMap<String, Tensor>, head: usize, device: Device) -> Net {
        Net::build(&Source::Fused { vars, device }, cfg, &[head])
    }

    fn build(src: &Source, cfg: &ModelConfig, heads: &[usize]) -> Net {
        let mut stages = Vec::new();
        let mut c_in = 1;
        let mut k = 0;
        for (stage, &c_out) in cfg.channels.iter().enumerate() {
            let mut convs = Vec::new();
            for j in 0..=cfg.extra_convs[stage] {
                let stride = if j == 0 { 2 } else { 1 };
                convs.push(src.conv_bn(&format!("conv{k}"), &format!("bn{k}"), c_in, c_out, 3, stride));
                c_in = c_out;
                k += 1;
            }
            stages.push(convs);
        }
        let points = cfg.scheme.num_points() as i64;
        let Heatmaps { stage, width } = cfg.heatmaps;
        let levels = stage..cfg.channels.len();
        Net {
            stages,
            heatmap_stage: stage,
            laterals: levels
                .clone()
                .map(|s| src.conv_bn(&format!("lat{s}"), &format!("latbn{s}"), cfg.channels[s], width, 1, 1))
                .collect(),
            merges: levels.map(|s| src.conv_bn(&format!("merge{s}"), &format!("mergebn{s}"), width, width, 3, 1)).collect(),
            outs: heads.iter().map(|h| src.conv1x1(&format!("out{h}"), width, points)).collect(),
            origins: heads.iter().map(|h| src.origin(&format!("origin{h}"))).collect(),
            points,
        }
    }

    /// Each convention's label origin `[H, 2]`, in frame pixels: the offset of its
    /// labels from the image content in OpenCV's pixel coordinates (pixel centres at
    /// integers), e.g. (1, 1) for labels counted from 1. The heads predict where the
    /// points are in the image; a label is that plus the origin. Training learns it
    /// because mirrored crops reverse an offset fixed in the frame while the face
    /// mirrors with the crop; without it the heads learned the mean of +x and -x, 0,
    /// and missed their labels by about -1.1 px in x on both data sets. Only rotated
    /// crops tell a y origin from the content, so the heads may carry part of it.
    pub fn label_origins(&self) -> Tensor {
        Tensor::stack(&self.origins, 0)
    }

    pub fn forward_heads(&self, x: &Tensor, train: bool) -> Result<Tensor, tch::TchError> {
        Ok(self.forward_scored(x, train)?.0)
    }

    /// As [`Net::forward_heads`], plus each face's heatmap spread `[B, H]` (see
    /// [`soft_argmax`]).
    pub fn forward_scored(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor), tch::TchError> {
        let mut x = standardize(x);
        let mut features = Vec::with_capacity(self.stages.len());
        for convs in &self.stages {
            for conv in convs {
                x = conv.forward(&x, train)?.relu();
            }
            features.push(x.shallow_clone());
        }
        let mut y: Option<Tensor> = None;
        for (level, (lat, merge)) in self.laterals.iter().zip(&self.merges).enumerate().rev() {
            let f = &features[self.heatmap_stage + level];
            let mut z = lat.forward(f, train)?;
            if let Some(coarse) = y {
                let size = f.size();
                z = z + coarse.f_upsample_nearest2d([size[2], size[3]], None, None)?;
            }
            y = Some(merge.forward(&z.relu(), train)?.relu());
        }
        let y = y.expect("the top-down path has at least one level");
        let outs = self.outs.iter().map(|o| o.forward(&y, train)).collect::<Result<Vec<_>, _>>()?;
        soft_argmax(&Tensor::f_stack(&outs, 1)?, self.points)
    }
}

/// `[B, H, N, R, R]` heatmap logits -> points `[B, H, 2N]`: each point's expected
/// cell centre under the softmax of its map, in unit space (`(j + 0.5) / R`); and
/// spread `[B, H]`: the mean over points of the distribution's standard deviation
/// (unit space), small where the network is sure of a face.
fn soft_argmax(logits: &Tensor, points: i64) -> Result<(Tensor, Tensor), tch::TchError> {
    let size = logits.size();
    let (b, h, r) = (size[0], size[1], size[3]);
    let p = logits.f_view([b, h, points, r * r])?.f_softmax(-1, Kind::Float)?;
    let opts = (Kind::Float, logits.device());
    let centres = (Tensor::f_arange(r, opts)? + 0.5) / r as f64;
    let gx = centres.repeat([r]); // column of each cell, row-major
    let gy = centres.repeat_interleave_self_int(r, None, None);
    let x = p.f_matmul(&gx)?;
    let y = p.f_matmul(&gy)?;
    let var = (p.f_matmul(&(&gx * &gx))? - &x * &x) + (p.f_matmul(&(&gy * &gy))? - &y * &y);
    let spread = var.f_clamp_min(0.0)?.f_sqrt()?.f_mean_dim(-1, false, Kind::Float)?;
    Ok((Tensor::f_stack(&[x, y], -1)?.f_view([b, h, 2 * points])?, spread))
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
    net: Net,
    device: Device,
    convention: usize,
    label_origin: Point,
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
        let net = Net::fused(&config, &tensors, head, device);
        let origin = Vec::<f32>::try_from(net.label_origins().to_device(Device::Cpu).flatten(0, -1))?;
        let label_origin = Point::new(origin[0], origin[1]);
        Ok(Keypointer { config, net, device, convention: head, label_origin })
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
        let (y, spread) = self.net.forward_scored(&x, false)?;
        let y = y.select(1, 0).to_device(Device::Cpu).contiguous();
        let values: Vec<f32> = Vec::<f32>::try_from(y.flatten(0, -1))?;
        let spreads = Vec::<f32>::try_from(spread.select(1, 0).to_device(Device::Cpu).contiguous())?;
        let n = self.config.scheme.num_points();
        Ok(values
            .chunks(2 * n)
            .zip(spreads)
            .map(|(v, spread)| Inference { points: v.chunks(2).map(|xy| Point::new(xy[0], xy[1])).collect(), spread })
            .collect())
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
