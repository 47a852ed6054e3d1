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
//! inference the batch norms are folded into the convolutions ([`Net`]), and on CPUs
//! with native bf16 arithmetic the larger convolutions run in bf16 ([`Precision`]).

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
    #[error("precision {0}: {1}")]
    Precision(String, String),
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
/// 5.9 instead of 7.6 ms (median of 7 x 100 runs, an earlier machine). No-op on other
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

/// The number format of an inference network's convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bfloat16 weights and activations (f32 accumulation) for the convolutions
    /// where oneDNN's bf16 kernels beat f32 ([`runs_in_bf16`]); the rest,
    /// the heatmap softmax and the moments stay f32.
    Bf16,
}

impl Precision {
    /// `auto`: bf16 on a CPU that multiplies bf16 natively (AVX512-BF16, as on AMD
    /// Zen 4 and Intel Sapphire Rapids), where it takes the 68-point network from
    /// about 3.2 to 2.2 ms at batch 1 on one thread with the same NME to 4
    /// decimals (README, "Models"); f32 elsewhere and on CUDA. `f32` or `bf16`
    /// force one.
    pub fn resolve(name: &str, device: Device) -> Result<Precision, ModelError> {
        let bad = |why: &str| Err(ModelError::Precision(name.into(), why.into()));
        match name {
            "auto" => Ok(Precision::auto(device)),
            "f32" => Ok(Precision::F32),
            "bf16" if device != Device::Cpu => bad("bf16 is for CPU inference; use f32 or auto on cuda"),
            "bf16" if !cpu_has_native_bf16() => {
                bad("this CPU has no native bf16 arithmetic (AVX512-BF16); use f32 or auto")
            }
            "bf16" => Ok(Precision::Bf16),
            _ => bad("expected auto, f32 or bf16"),
        }
    }

    /// What `auto` resolves to on `device`.
    pub fn auto(device: Device) -> Precision {
        if device == Device::Cpu && cpu_has_native_bf16() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Whether the CPU has AVX512-BF16 (bf16 dot products). Without it oneDNN
/// emulates bf16 or libtorch falls back to slow kernels.
fn cpu_has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// Whether a conv of the shipped kind (`k`x`k`, `c_in` -> `c_out` channels,
/// `out_side`² output cells at batch 1) runs in bf16 under [`Precision::Bf16`].
/// oneDNN (which runs every CPU bf16 conv) costs about 30 us a call whatever the
/// size, so only 3x3 convs of at least a million multiply-adds gain; libtorch's
/// f32 path is faster below that and for every 1x1 conv (batch 1, one thread,
/// PyTorch per-layer timings, us: 3x3 32->32 channels at 6x6 36 in f32 against 55
/// in bf16, at 12x12 79 against 69, 96->96 at 14x14 550 against 221; 1x1 96->48 at
/// 14x14 33 against 63). The stem (one input channel) has no channel depth for
/// bf16 dot products and stays f32 (1->16 at 96x96: 62 against 84). The
/// threshold: the 15-point network's median time over its f32 median, in-process
/// paired rounds on one thread, was 0.72-0.77 at 1M (4 runs), 0.80 at 0.5M (1),
/// 0.77-0.83 at 2M (4), 0.82-0.85 at 3M (3), and 0.78-0.80 with every 3x3 conv
/// after the stem in bf16 (3).
fn runs_in_bf16(c_in: i64, c_out: i64, k: i64, out_side: i64) -> bool {
    k == 3 && c_in > 1 && out_side * out_side * c_in * c_out * k * k >= 1_000_000
}

/// One convolution, optionally followed by batch norm. In an inference network the
/// batch norm is folded into the weights and bias ([`Net::fused`]).
#[derive(Debug)]
struct ConvBn {
    w: Tensor,
    b: Option<Tensor>,
    bn: Option<nn::BatchNorm>,
    /// Under [`Precision::Bf16`], for the convs [`runs_in_bf16`] picks: `w` and
    /// `b` are bf16, `w` channels-last (oneDNN's fast layout; its outputs are
    /// channels-last too), and the input is cast to bf16.
    bf16: bool,
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
        if self.bf16 {
            return x.f_to_kind(Kind::BFloat16)?.f_conv2d(
                &self.w,
                self.b.as_ref(),
                [self.stride; 2],
                [self.padding; 2],
                [1, 1],
                1,
            );
        }
        let x = &x.f_to_kind(Kind::Float)?;
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
    Fused { vars: &'a HashMap<String, Tensor>, device: Device, precision: Precision },
}

impl Source<'_> {
    fn device(&self) -> Device {
        match self {
            Source::Train(p) => p.device(),
            Source::Fused { device, .. } => *device,
        }
    }

    fn get(&self, name: &str) -> Tensor {
        match self {
            Source::Fused { vars, device, .. } => vars[name].to_device(*device).to_kind(Kind::Float),
            Source::Train(_) => unreachable!("trainable tensors are made by nn"),
        }
    }

    /// A bias-free `k`x`k` conv (`{conv}.weight`) and its batch norm (`{bn}.*`),
    /// with `out_side`² output cells for the config's input size.
    #[allow(clippy::too_many_arguments)]
    fn conv_bn(&self, conv: &str, bn: &str, c_in: i64, c_out: i64, k: i64, stride: i64, out_side: i64) -> ConvBn {
        let padding = k / 2;
        match self {
            Source::Train(p) => {
                let cfg = nn::ConvConfig { stride, padding, bias: false, ..Default::default() };
                let c = nn::conv2d(*p / conv, c_in, c_out, k, cfg);
                let bn = nn::batch_norm2d(*p / bn, c_out, Default::default());
                ConvBn { w: c.ws, b: None, bn: Some(bn), bf16: false, stride, padding }
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
                let bf16 = matches!(self, Source::Fused { precision: Precision::Bf16, .. })
                    && runs_in_bf16(c_in, c_out, k, out_side);
                let (w, b) =
                    if bf16 { (channels_last(&w.to_kind(Kind::BFloat16)), b.to_kind(Kind::BFloat16)) } else { (w, b) };
                ConvBn { w, b: Some(b), bn: None, bf16, stride, padding }
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
        ConvBn { w, b, bn: None, bf16: false, stride: 1, padding: 0 }
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
    /// [`cell_moments`] for the heatmap size of `ModelConfig::input_size`, `[4, R²]`.
    moments: Tensor,
}

/// The side of stage `stage`'s outputs (and of the heatmaps, at the heatmap
/// stage) for inputs of side `input`: stages `0..=stage` each halve it (3x3
/// stride-2 convs with padding 1: `ceil(n / 2)`).
fn stage_side(input: i64, stage: usize) -> i64 {
    (0..=stage).fold(input, |n, _| (n + 1) / 2)
}

/// `t` (`[N, C, H, W]`) with channels-last strides: `[N, H, W, C]` in memory.
fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Per-sample standardisation, part of the model so every caller agrees on it.
fn standardize(x: &Tensor) -> Tensor {
    let mean = x.mean_dim(&[1i64, 2, 3][..], true, Kind::Float);
    let std = x.std_dim(&[1i64, 2, 3][..], false, true);
    (x - mean) / (std + 1e-2)
}

/// [`standardize`] of one crop of gray bytes (as `byte / 255`), appended to `out`:
/// inference does it here in one pass over the bytes, not as seven tensor ops
/// (conversion, scaling and [`standardize`]).
fn standardize_into(crop: &[u8], out: &mut Vec<f32>) {
    let n = crop.len() as f64;
    let (sum, sum_sq) = crop.iter().fold((0u64, 0u64), |(s, q), &v| (s + v as u64, q + (v as u64) * (v as u64)));
    let mean = sum as f64 / n;
    let var = (sum_sq as f64 / n - mean * mean).max(0.0);
    // In units of 1/255, as the network's inputs are.
    let scale = 1.0 / (var.sqrt() + 1e-2 * 255.0);
    out.extend(crop.iter().map(|&v| ((v as f64 - mean) * scale) as f32));
}

impl Net {
    /// A trainable network with fresh variables under `vs`.
    pub fn new(vs: &nn::Path, cfg: &ModelConfig) -> Net {
        Net::build(&Source::Train(vs), cfg, &(0..cfg.conventions.len()).collect::<Vec<_>>())
    }

    /// The inference network of trained tensors `vars` (by name), with convention
    /// head `head` only.
    fn fused(
        cfg: &ModelConfig,
        vars: &HashMap<String, Tensor>,
        head: usize,
        device: Device,
        precision: Precision,
    ) -> Net {
        Net::build(&Source::Fused { vars, device, precision }, cfg, &[head])
    }

    fn build(src: &Source, cfg: &ModelConfig, heads: &[usize]) -> Net {
        let mut stages = Vec::new();
        let mut c_in = 1;
        let mut k = 0;
        let side = |stage| stage_side(cfg.input_size as i64, stage);
        for (stage, &c_out) in cfg.channels.iter().enumerate() {
            let mut convs = Vec::new();
            for j in 0..=cfg.extra_convs[stage] {
                let stride = if j == 0 { 2 } else { 1 };
                convs.push(src.conv_bn(&format!("conv{k}"), &format!("bn{k}"), c_in, c_out, 3, stride, side(stage)));
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
                .map(|s| src.conv_bn(&format!("lat{s}"), &format!("latbn{s}"), cfg.channels[s], width, 1, 1, side(s)))
                .collect(),
            merges: levels
                .map(|s| src.conv_bn(&format!("merge{s}"), &format!("mergebn{s}"), width, width, 3, 1, side(s)))
                .collect(),
            outs: heads.iter().map(|h| src.conv1x1(&format!("out{h}"), width, points)).collect(),
            origins: heads.iter().map(|h| src.origin(&format!("origin{h}"))).collect(),
            points,
            moments: cell_moments(side(stage), src.device()),
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
        soft_argmax(&self.forward_moments(&standardize(x), train)?)
    }

    /// The heatmaps' moments `[B, H, N, 4]` (see [`heatmap_moments`]) for an input
    /// already standardised ([`standardize`]).
    fn forward_moments(&self, x: &Tensor, train: bool) -> Result<Tensor, tch::TchError> {
        let mut x = x.shallow_clone();
        let mut features = Vec::with_capacity(self.stages.len());
        for convs in &self.stages {
            for conv in convs {
                x = conv.forward(&x, train)?.relu();
            }
            features.push(x.shallow_clone());
        }
        let mut y: Option<Tensor> = None;
        for (level, (lat, merge)) in self.laterals.iter().zip(&self.merges).enumerate().rev() {
            let z = lat.forward(&features[self.heatmap_stage + level], train)?;
            let z = match y {
                Some(coarse) => add_upsampled(&z, &coarse)?,
                None => z,
            };
            y = Some(merge.forward(&z.relu(), train)?.relu());
        }
        let y = y.expect("the top-down path has at least one level");
        let logits = match self.outs.as_slice() {
            [one] => one.forward(&y, train)?.f_unsqueeze(1)?,
            outs => Tensor::f_stack(&outs.iter().map(|o| o.forward(&y, train)).collect::<Result<Vec<_>, _>>()?, 1)?,
        };
        let r = logits.size()[3];
        if self.moments.size()[1] == r * r {
            heatmap_moments(&logits, self.points, &self.moments)
        } else {
            heatmap_moments(&logits, self.points, &cell_moments(r, logits.device()))
        }
    }
}

/// `fine + upsample_nearest(coarse)` to `fine`'s size. When `fine` is exactly
/// twice `coarse` (224 and 96 px inputs at every level) the add broadcasts each
/// coarse cell over its 2x2 block instead of materialising the upsampled tensor:
/// the same values, in one op (at 28x28 x 48 channels, 65 against 142 us on 2
/// threads, 76 against 74 on one, a PyTorch microbenchmark).
fn add_upsampled(fine: &Tensor, coarse: &Tensor) -> Result<Tensor, tch::TchError> {
    let (f, c) = (fine.size(), coarse.size());
    let (b, ch, h, w) = (f[0], f[1], f[2], f[3]);
    if h == 2 * c[2] && w == 2 * c[3] {
        let blocks = fine.f_reshape([b, ch, c[2], 2, c[3], 2])? + coarse.f_reshape([b, ch, c[2], 1, c[3], 1])?;
        return blocks.f_reshape([b, ch, h, w]);
    }
    Ok(fine + coarse.f_upsample_nearest2d([h, w], None, None)?)
}

/// `[4, R²]`: for each heatmap cell (row-major) its centre `x, y` in unit space
/// (`(j + 0.5) / R`) and their squares, so one matrix product with a softmax gives
/// the four moments [`heatmap_moments`] takes. Stored cells-last so the product
/// is `linear` (`p · Mᵀ`): at 68 x 784 cells, 13-18 us against 45-67 us for
/// `p · M` with `M` as `[R², 4]` (PyTorch microbenchmark, 1 and 2 threads).
fn cell_moments(r: i64, device: Device) -> Tensor {
    let centres = (Tensor::arange(r, (Kind::Float, device)) + 0.5) / r as f64;
    let gx = centres.repeat([r]);
    let gy = centres.repeat_interleave_self_int(r, None, None);
    Tensor::stack(&[&gx, &gy, &(&gx * &gx), &(&gy * &gy)], 0)
}

/// `[B, H, N, R, R]` heatmap logits -> `[B, H, N, 4]`: under the softmax of each
/// point's map, the expected cell centre `E[x], E[y]` (unit space) and
/// `E[x²], E[y²]`. `moments` is [`cell_moments`] for this `R`.
fn heatmap_moments(logits: &Tensor, points: i64, moments: &Tensor) -> Result<Tensor, tch::TchError> {
    let size = logits.size();
    let (b, h, r) = (size[0], size[1], size[3]);
    let p = logits.f_reshape([b, h, points, r * r])?.f_softmax(-1, Kind::Float)?;
    p.f_linear::<Tensor>(moments, None)
}

/// Heatmap moments `[B, H, N, 4]` -> points `[B, H, 2N]`: each point's expected
/// cell centre, in unit space; and spread `[B, H]`: the mean over points of the
/// distribution's standard deviation (unit space), small where the network is sure
/// of a face. [`Moments`] is the same for one face, in plain numbers.
fn soft_argmax(m: &Tensor) -> Result<(Tensor, Tensor), tch::TchError> {
    let size = m.size();
    let xy = m.f_narrow(-1, 0, 2)?;
    let var = (m.f_narrow(-1, 2, 2)? - &xy * &xy).f_sum_dim_intlist(-1, false, Kind::Float)?;
    let spread = var.f_clamp_min(0.0)?.f_sqrt()?.f_mean_dim(-1, false, Kind::Float)?;
    Ok((xy.f_reshape([size[0], size[1], 2 * size[2]])?, spread))
}

/// One face's heatmap moments, `E[x], E[y], E[x²], E[y²]` per point: inference
/// reads its points and spread from these in Rust, which for the few hundred
/// numbers of a face is cheaper than running [`soft_argmax`]'s small tensor ops
/// (same formulas).
struct Moments<'a>(&'a [f32]);

impl Moments<'_> {
    fn inference(&self) -> Inference {
        let per_point = self.0.chunks(4);
        let points = per_point.clone().map(|m| Point::new(m[0], m[1])).collect::<Vec<_>>();
        let spread = per_point.map(|m| (m[2] - m[0] * m[0] + m[3] - m[1] * m[1]).max(0.0).sqrt()).sum::<f32>()
            / points.len() as f32;
        Inference { points, spread }
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
        let net = Net::fused(&config, &tensors, head, device, precision);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageops;
    use std::path::Path;

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
        let theirs = Vec::<f32>::try_from(standardize(&x).flatten(0, -1)).unwrap();
        assert_eq!(ours.len(), theirs.len());
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "largest difference {worst}");
        // A flat crop has no contrast to scale: zeros, not a division by zero.
        let mut flat = Vec::new();
        standardize_into(&[77; 96 * 96], &mut flat);
        assert!(flat.iter().all(|&v| v == 0.0));
    }

    /// A heatmap whose mass sits on one cell gives that cell's centre and no
    /// spread; mass split between two cells gives their midpoint and half their
    /// distance as the spread. Training's tensor formulas ([`soft_argmax`]) and
    /// inference's plain ones ([`Moments`]) both.
    #[test]
    fn soft_argmax_finds_the_mass_of_each_heatmap() {
        let r = 12;
        let mut logits = vec![-1e4f32; 2 * r * r];
        logits[3 * r + 7] = 0.0; // point 0: row 3, column 7
        logits[r * r + 5 * r + 2] = 0.0; // point 1: row 5, columns 2 and 4
        logits[r * r + 5 * r + 4] = 0.0;
        let t = Tensor::from_slice(&logits).view([1, 1, 2, r as i64, r as i64]);
        let m = heatmap_moments(&t, 2, &cell_moments(r as i64, Device::Cpu)).unwrap();
        let (xy, spread) = soft_argmax(&m).unwrap();
        let xy = Vec::<f32>::try_from(xy.flatten(0, -1)).unwrap();
        let spread = f32::try_from(spread.flatten(0, -1)).unwrap();
        let plain = Moments(&Vec::<f32>::try_from(m.flatten(0, -1)).unwrap()).inference();
        let unit = |cell: f32| (cell + 0.5) / r as f32;
        let expected = [unit(7.0), unit(3.0), unit(3.0), unit(5.0)];
        let plain_xy: Vec<f32> = plain.points.iter().flat_map(|p| [p.x, p.y]).collect();
        for (got, want) in xy.iter().zip(expected).chain(plain_xy.iter().zip(expected)) {
            assert!((got - want).abs() < 1e-6, "{xy:?} / {plain_xy:?} vs {expected:?}");
        }
        // Point 0: 0; point 1: one cell (1/r) in x; the mean of the two.
        for s in [spread, plain.spread] {
            assert!((s - 0.5 / r as f32).abs() < 1e-5, "spread {s}");
        }
    }

    /// On diffuse heatmaps (every cell weighted), the plain formulas give what the
    /// tensor ones do.
    #[test]
    fn inference_reads_the_same_points_and_spread_as_training() {
        tch::manual_seed(7);
        let (points, r) = (68, 28);
        let logits = Tensor::randn([1, 1, points, r, r], (Kind::Float, Device::Cpu)) * 3.0;
        let m = heatmap_moments(&logits, points, &cell_moments(r, Device::Cpu)).unwrap();
        let (xy, spread) = soft_argmax(&m).unwrap();
        let xy = Vec::<f32>::try_from(xy.flatten(0, -1)).unwrap();
        let plain = Moments(&Vec::<f32>::try_from(m.flatten(0, -1)).unwrap()).inference();
        let plain_xy: Vec<f32> = plain.points.iter().flat_map(|p| [p.x, p.y]).collect();
        assert_eq!(xy, plain_xy);
        let spread = f32::try_from(spread.flatten(0, -1)).unwrap();
        assert!(spread > 0.05 && (spread - plain.spread).abs() < 1e-6, "{spread} vs {}", plain.spread);
    }

    /// `--precision` names: `auto` follows the CPU, bf16 is refused where it
    /// would be slow or untested (CUDA, CPUs without AVX512-BF16).
    #[test]
    fn precision_names_resolve_or_are_refused() {
        assert_eq!(Precision::resolve("auto", Device::Cpu).unwrap(), Precision::auto(Device::Cpu));
        assert_eq!(Precision::resolve("f32", Device::Cpu).unwrap(), Precision::F32);
        assert_eq!(Precision::resolve("auto", Device::Cuda(0)).unwrap(), Precision::F32);
        let err = Precision::resolve("bf16", Device::Cuda(0)).unwrap_err().to_string();
        assert!(err.contains("for CPU inference"), "{err}");
        match Precision::resolve("bf16", Device::Cpu) {
            Ok(p) => assert!(p == Precision::Bf16 && cpu_has_native_bf16()),
            Err(e) => assert!(!cpu_has_native_bf16() && e.to_string().contains("AVX512-BF16"), "{e}"),
        }
        let err = Precision::resolve("fp16", Device::Cpu).unwrap_err().to_string();
        assert_eq!(err, "precision fp16: expected auto, f32 or bf16");
    }

    /// The bf16 rule picks the large 3x3 convs of the shipped networks and leaves
    /// the stem, the 1x1 convs and the small 3x3 ones in f32.
    #[test]
    fn only_large_3x3_convs_run_in_bf16() {
        assert!(runs_in_bf16(96, 96, 3, 14)); // 68-point stage 3
        assert!(runs_in_bf16(48, 48, 3, 7)); // 68-point coarsest merge, 1.02M
        assert!(!runs_in_bf16(48, 64, 3, 6)); // 15-point stage 3 opening, 0.995M
        assert!(!runs_in_bf16(32, 32, 3, 6)); // 15-point coarsest merge
        assert!(!runs_in_bf16(1, 12, 3, 112)); // stem
        assert!(!runs_in_bf16(48, 48, 1, 28)); // lateral
    }

    /// The broadcast add equals adding the nearest-upsampled coarse map, and
    /// sizes that are not exactly twice the coarse one still upsample.
    #[test]
    fn adding_a_coarse_map_matches_nearest_upsampling() {
        tch::manual_seed(3);
        let coarse = Tensor::randn([2, 3, 4, 4], (Kind::Float, Device::Cpu));
        for side in [8, 7] {
            let fine = Tensor::randn([2, 3, side, side], (Kind::Float, Device::Cpu));
            let want = &fine + coarse.upsample_nearest2d([side, side], None, None);
            let got = add_upsampled(&fine, &coarse).unwrap();
            assert_eq!(got.size(), want.size());
            assert!(got.allclose(&want, 0.0, 0.0, false), "side {side}");
        }
    }
}
