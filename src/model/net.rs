//! The network: a plain stack of 3x3 conv + batch-norm + ReLU stages, each opened
//! by a stride-2 conv; a top-down path that merges the coarser stages into the
//! heatmap stage's resolution; one 1x1 heatmap conv per annotation convention.
//! Trainable ([`Net::new`]) or for inference ([`Net::fused`]: batch norms folded
//! into the convolutions, one head, channels-last on the CPU, the large
//! convolutions in bf16 on CPUs that have it).

use super::heatmap::{cell_moments, heatmap_moments, soft_argmax};
use super::{ModelConfig, Precision};
use crate::model::config::Heatmaps;
use std::collections::HashMap;
use tch::{nn, Device, Kind, TchError, Tensor};

/// Batch-norm epsilon (tch's default, used again when folding).
const BN_EPS: f64 = 1e-5;

/// Whether a conv of the shipped kind (`k`x`k`, `c_in` -> `c_out` channels,
/// `out_side`² output cells at batch 1) runs in bf16 under [`Precision::Bf16`]:
/// 3x3 convs of at least a million multiply-adds. oneDNN, which runs every CPU
/// bf16 conv, costs about 30 us a call whatever the size, so smaller convs and
/// every 1x1 conv are faster in libtorch's f32 path (one thread: 96->96 at 14x14
/// 550 us in f32 against 221 in bf16; 32->32 at 6x6 36 against 55). The stem has
/// one input channel, no depth for bf16 dot products, and stays f32.
pub(super) fn runs_in_bf16(c_in: i64, c_out: i64, k: i64, out_side: i64) -> bool {
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
    /// `b` are bf16 and the input is cast to bf16.
    bf16: bool,
    stride: i64,
    padding: i64,
}

impl ConvBn {
    /// Whether an f32 inference conv on the CPU should go to oneDNN rather than
    /// where libtorch sends it. libtorch runs a batch-1 conv whose input holds at
    /// most 20480 values on its im2col path; for stride-1 3x3 convs on more than
    /// 8192 input values oneDNN is faster in channels-last (one thread, AVX2: 96->96
    /// at 14x14 414 against 478 us, 32->32 at 24x24 161 against 208); below that,
    /// and for stride-2 and 1x1 convs, the im2col path is as fast or faster (32->32
    /// at 12x12 59 against 81).
    fn prefers_onednn(&self, x: &Tensor) -> bool {
        let numel = x.numel();
        self.bn.is_none()
            && x.device() == Device::Cpu
            && x.size()[0] == 1
            && self.w.size()[2] == 3
            && self.stride == 1
            && numel > 8192
            && numel <= 20480
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let (stride, padding) = ([self.stride; 2], [self.padding; 2]);
        if self.bf16 {
            return x.f_to_kind(Kind::BFloat16)?.f_conv2d(&self.w, self.b.as_ref(), stride, padding, [1, 1], 1);
        }
        let x = &x.f_to_kind(Kind::Float)?;
        if self.prefers_onednn(x) {
            return x.f_mkldnn_convolution(&self.w, self.b.as_ref(), padding, stride, [1, 1], 1);
        }
        let y = x.f_conv2d(&self.w, self.b.as_ref(), stride, padding, [1, 1], 1)?;
        Ok(match &self.bn {
            Some(bn) => y.apply_t(bn, train),
            None => y,
        })
    }
}

/// A trained model's tensors by name, to fold into an inference network.
struct Trained<'a> {
    vars: &'a HashMap<String, Tensor>,
    device: Device,
    precision: Precision,
}

impl Trained<'_> {
    /// The inference network's layout: channels-last on the CPU, where oneDNN and
    /// libtorch's im2col path both run 3x3 convs faster on it (the 68-point
    /// network's convs, one thread, AVX2: 3.6 against 4.6 ms in all); as trained
    /// elsewhere.
    fn layout(&self) -> Layout {
        if self.device == Device::Cpu {
            Layout::ChannelsLast
        } else {
            Layout::Nchw
        }
    }

    /// Tensor `name` on the inference device, as f32.
    fn get(&self, name: &str) -> Result<Tensor, TchError> {
        let t = self.vars.get(name).ok_or_else(|| TchError::Kind(format!("tensor {name} is missing")))?;
        t.f_to_device(self.device)?.f_to_kind(Kind::Float)
    }

    /// Conv `conv` with batch norm `bn` folded into its weights and bias.
    fn folded(&self, conv: &str, bn: &str) -> Result<(Tensor, Tensor), TchError> {
        let w = self.get(&format!("{conv}.weight"))?;
        let gamma = self.get(&format!("{bn}.weight"))?;
        let beta = self.get(&format!("{bn}.bias"))?;
        let mean = self.get(&format!("{bn}.running_mean"))?;
        let var = self.get(&format!("{bn}.running_var"))?;
        let scale = &gamma / (var + BN_EPS).f_sqrt()?;
        Ok((&w * scale.f_view([-1, 1, 1, 1])?, beta - mean * &scale))
    }
}

/// How a network's activations (`[N, C, H, W]` tensors) are laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Contiguous `[N, C, H, W]`: training's.
    Nchw,
    /// `[N, H, W, C]` in memory (channels-last strides), weights likewise.
    ChannelsLast,
}

impl Layout {
    /// `t` in this layout: the input image, or a conv's weights (a conv whose
    /// weights are channels-last puts out channels-last activations).
    fn arrange(self, t: Tensor) -> Result<Tensor, TchError> {
        match self {
            Layout::Nchw => Ok(t),
            Layout::ChannelsLast => channels_last(&t),
        }
    }
}

/// Where a network's tensors come from: fresh trainable variables, or a trained
/// model's tensors with the batch norms folded in.
enum Source<'a> {
    Train(&'a nn::Path<'a>),
    Fused(Trained<'a>),
}

/// The shape of one conv + batch norm: `k`x`k`, `c_in` -> `c_out` channels,
/// `out_side`² output cells for the config's input size.
#[derive(Debug, Clone, Copy)]
struct ConvShape {
    c_in: i64,
    c_out: i64,
    k: i64,
    stride: i64,
    out_side: i64,
}

impl Source<'_> {
    fn device(&self) -> Device {
        match self {
            Source::Train(p) => p.device(),
            Source::Fused(t) => t.device,
        }
    }

    fn layout(&self) -> Layout {
        match self {
            Source::Train(_) => Layout::Nchw,
            Source::Fused(t) => t.layout(),
        }
    }

    /// A bias-free conv (`{conv}.weight`) and its batch norm (`{bn}.*`).
    fn conv_bn(&self, conv: &str, bn: &str, s: ConvShape) -> Result<ConvBn, TchError> {
        let padding = s.k / 2;
        Ok(match self {
            Source::Train(p) => {
                let cfg = nn::ConvConfig { stride: s.stride, padding, bias: false, ..Default::default() };
                let c = nn::conv2d(*p / conv, s.c_in, s.c_out, s.k, cfg);
                let bn = nn::batch_norm2d(*p / bn, s.c_out, Default::default());
                ConvBn { w: c.ws, b: None, bn: Some(bn), bf16: false, stride: s.stride, padding }
            }
            Source::Fused(t) => {
                let (w, b) = t.folded(conv, bn)?;
                let bf16 = t.precision == Precision::Bf16 && runs_in_bf16(s.c_in, s.c_out, s.k, s.out_side);
                let (w, b) = if bf16 { (w.f_to_kind(Kind::BFloat16)?, b.f_to_kind(Kind::BFloat16)?) } else { (w, b) };
                ConvBn { w: t.layout().arrange(w)?, b: Some(b), bn: None, bf16, stride: s.stride, padding }
            }
        })
    }

    /// A convention's label origin (`{name}`, `[2]`), zero when fresh.
    fn origin(&self, name: &str) -> Result<Tensor, TchError> {
        match self {
            Source::Train(p) => Ok(p.var(name, &[2], nn::Init::Const(0.0))),
            Source::Fused(t) => t.get(name),
        }
    }

    /// A 1x1 conv with bias (`{name}.weight`, `{name}.bias`).
    fn conv1x1(&self, name: &str, c_in: i64, c_out: i64) -> Result<ConvBn, TchError> {
        let (w, b) = match self {
            Source::Train(p) => {
                let c = nn::conv2d(*p / name, c_in, c_out, 1, Default::default());
                (c.ws, c.bs)
            }
            Source::Fused(t) => {
                (t.layout().arrange(t.get(&format!("{name}.weight"))?)?, Some(t.get(&format!("{name}.bias"))?))
            }
        };
        Ok(ConvBn { w, b, bn: None, bf16: false, stride: 1, padding: 0 })
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
    layout: Layout,
}

/// The side of stage `stage`'s outputs (and of the heatmaps, at the heatmap
/// stage) for inputs of side `input`: stages `0..=stage` each halve it (3x3
/// stride-2 convs with padding 1: `ceil(n / 2)`).
fn stage_side(input: i64, stage: usize) -> i64 {
    (0..=stage).fold(input, |n, _| (n + 1) / 2)
}

/// `t` (`[N, C, H, W]`) with channels-last strides: `[N, H, W, C]` in memory.
fn channels_last(t: &Tensor) -> Result<Tensor, TchError> {
    t.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_permute([0, 3, 1, 2])
}

/// Per-sample standardisation, part of the model so every caller agrees on it.
/// Inference does the same on the crop's bytes (`model::standardize_into`).
pub(super) fn standardize(x: &Tensor) -> Tensor {
    let mean = x.mean_dim(&[1i64, 2, 3][..], true, Kind::Float);
    let std = x.std_dim(&[1i64, 2, 3][..], false, true);
    (x - mean) / (std + 1e-2)
}

impl Net {
    /// A trainable network with fresh variables under `vs`.
    pub fn new(vs: &nn::Path, cfg: &ModelConfig) -> Result<Net, TchError> {
        Net::build(&Source::Train(vs), cfg, &(0..cfg.conventions.len()).collect::<Vec<_>>())
    }

    /// The inference network of trained tensors `vars` (by name), with convention
    /// head `head` only.
    pub(super) fn fused(
        cfg: &ModelConfig,
        vars: &HashMap<String, Tensor>,
        head: usize,
        device: Device,
        precision: Precision,
    ) -> Result<Net, TchError> {
        Net::build(&Source::Fused(Trained { vars, device, precision }), cfg, &[head])
    }

    fn build(src: &Source, cfg: &ModelConfig, heads: &[usize]) -> Result<Net, TchError> {
        let side = |stage| stage_side(cfg.input_size as i64, stage);
        let points = cfg.scheme.num_points() as i64;
        let Heatmaps { stage, width } = cfg.heatmaps;
        let levels = stage..cfg.channels.len();
        let lateral = |s: usize| ConvShape { c_in: cfg.channels[s], c_out: width, k: 1, stride: 1, out_side: side(s) };
        let merge = |s: usize| ConvShape { c_in: width, c_out: width, k: 3, stride: 1, out_side: side(s) };
        Ok(Net {
            stages: Net::backbone(src, cfg)?,
            heatmap_stage: stage,
            laterals: levels
                .clone()
                .map(|s| src.conv_bn(&format!("lat{s}"), &format!("latbn{s}"), lateral(s)))
                .collect::<Result<_, _>>()?,
            merges: levels
                .map(|s| src.conv_bn(&format!("merge{s}"), &format!("mergebn{s}"), merge(s)))
                .collect::<Result<_, _>>()?,
            outs: heads.iter().map(|h| src.conv1x1(&format!("out{h}"), width, points)).collect::<Result<_, _>>()?,
            origins: heads.iter().map(|h| src.origin(&format!("origin{h}"))).collect::<Result<_, _>>()?,
            points,
            moments: cell_moments(side(stage), src.device()),
            layout: src.layout(),
        })
    }

    /// The backbone's stages: convs `conv{k}` / `bn{k}`, numbered through.
    fn backbone(src: &Source, cfg: &ModelConfig) -> Result<Vec<Vec<ConvBn>>, TchError> {
        let mut stages = Vec::new();
        let (mut c_in, mut k) = (1, 0);
        for (stage, &c_out) in cfg.channels.iter().enumerate() {
            let mut convs = Vec::new();
            for j in 0..=cfg.extra_convs[stage] {
                let stride = if j == 0 { 2 } else { 1 };
                let out_side = stage_side(cfg.input_size as i64, stage);
                let shape = ConvShape { c_in, c_out, k: 3, stride, out_side };
                convs.push(src.conv_bn(&format!("conv{k}"), &format!("bn{k}"), shape)?);
                c_in = c_out;
                k += 1;
            }
            stages.push(convs);
        }
        Ok(stages)
    }

    /// Each convention's label origin `[H, 2]`, in frame pixels: the offset of its
    /// labels from the image content in OpenCV's pixel coordinates (pixel centres at
    /// integers), e.g. (1, 1) for labels counted from 1. The heads predict where the
    /// points are in the image; a label is that plus the origin. Training learns it
    /// because mirrored crops reverse an offset fixed in the frame while the face
    /// mirrors with the crop: without it the heads would learn the mean of +x and
    /// -x, 0. Only rotated crops tell a y origin from the content, so the heads may
    /// carry part of it.
    pub fn label_origins(&self) -> Tensor {
        Tensor::stack(&self.origins, 0)
    }

    pub fn forward_heads(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        Ok(self.forward_scored(x, train)?.0)
    }

    /// As [`Net::forward_heads`], plus each face's heatmap spread `[B, H]` (see
    /// [`soft_argmax`]).
    pub fn forward_scored(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor), TchError> {
        soft_argmax(&self.forward_moments(&standardize(x), train)?)
    }

    /// The heatmaps' moments `[B, H, N, 4]` (see [`heatmap_moments`]) for an input
    /// already standardised ([`standardize`]).
    pub(super) fn forward_moments(&self, x: &Tensor, train: bool) -> Result<Tensor, TchError> {
        let mut x = self.layout.arrange(x.shallow_clone())?;
        let mut features = Vec::with_capacity(self.stages.len());
        for convs in &self.stages {
            for conv in convs {
                x = conv.forward(&x, train)?.relu();
            }
            features.push(x.shallow_clone());
        }
        let y = self.top_down(&features, train)?;
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

    /// The top-down path over the backbone's `features`: from the coarsest level
    /// down to the heatmap stage, each level's lateral plus the coarser result,
    /// then its merge conv.
    fn top_down(&self, features: &[Tensor], train: bool) -> Result<Tensor, TchError> {
        let mut y: Option<Tensor> = None;
        for (level, (lat, merge)) in self.laterals.iter().zip(&self.merges).enumerate().rev() {
            let z = lat.forward(&features[self.heatmap_stage + level], train)?;
            let z = match y {
                Some(coarse) => add_upsampled(&z, &coarse, self.layout)?,
                None => z,
            };
            y = Some(merge.forward(&z.relu(), train)?.relu());
        }
        y.ok_or_else(|| TchError::Shape("the model config has no heatmap level".into()))
    }
}

/// `fine + upsample_nearest(coarse)` to `fine`'s size, both in `layout`. When
/// `fine` is exactly twice `coarse` (224 and 96 px inputs at every level) the add
/// broadcasts each coarse cell over its 2x2 block instead of materialising the
/// upsampled tensor: the same values in one op, half the time on two threads.
fn add_upsampled(fine: &Tensor, coarse: &Tensor, layout: Layout) -> Result<Tensor, TchError> {
    let (f, c) = (fine.size(), coarse.size());
    let (b, ch, h, w) = (f[0], f[1], f[2], f[3]);
    if h != 2 * c[2] || w != 2 * c[3] {
        return Ok(fine + coarse.f_upsample_nearest2d([h, w], None, None)?);
    }
    match layout {
        Layout::Nchw => {
            let blocks = fine.f_reshape([b, ch, c[2], 2, c[3], 2])? + coarse.f_reshape([b, ch, c[2], 1, c[3], 1])?;
            blocks.f_reshape([b, ch, h, w])
        }
        Layout::ChannelsLast => {
            // The same blocks over the `[N, H, W, C]` memory both tensors have.
            let fine = fine.f_permute([0, 2, 3, 1])?.f_reshape([b, c[2], 2, c[3], 2, ch])?;
            let coarse = coarse.f_permute([0, 2, 3, 1])?.f_reshape([b, c[2], 1, c[3], 1, ch])?;
            (fine + coarse).f_reshape([b, h, w, ch])?.f_permute([0, 3, 1, 2])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The inference network (batch norms folded, channels-last on the CPU) puts
    /// the points of the trained network (batch norm layers, `[N, C, H, W]`) on a
    /// real face, for both shipped models.
    #[test]
    fn the_channels_last_inference_network_finds_the_trained_networks_points() {
        let _guard = tch::no_grad_guard();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let gray = crate::imageops::read_gray(&root.join("tests/data/einstein.jpg")).unwrap().unwrap();
        for name in ["face68", "face15"] {
            let weights = root.join(format!("weights/{name}.safetensors"));
            let cfg = ModelConfig::load(&crate::model::config_path_for(&weights)).unwrap();
            let tensors = crate::model::read_checked_weights(&weights, &cfg).unwrap();
            let vs = nn::VarStore::new(Device::Cpu);
            let trained = Net::new(&vs.root(), &cfg).unwrap();
            for (var_name, mut var) in vs.variables() {
                var.copy_(&tensors[&var_name]);
            }
            let head = cfg.default_convention;
            let fused = Net::fused(&cfg, &tensors, head, Device::Cpu, Precision::F32).unwrap();
            assert_eq!(fused.layout, Layout::ChannelsLast);
            let s = cfg.input_size as i64;
            for n in 1..=3 {
                let pixels: Vec<u8> = (0..n)
                    .flat_map(|i| {
                        let crop = cfg.crop.crop_for_detection(&crate::geometry::Rect::new(
                            150.0 + 20.0 * i as f32,
                            100.0,
                            200.0,
                            200.0,
                        ));
                        crate::imageops::extract_crop(&gray, &crop, cfg.input_size).unwrap()
                    })
                    .collect();
                let x = Tensor::from_slice(&pixels).to_kind(Kind::Float).view([n, 1, s, s]) / 255.0;
                let want = trained.forward_heads(&x, false).unwrap().select(1, head as i64);
                let got = fused.forward_heads(&x, false).unwrap().select(1, 0);
                let diff = f64::try_from((got - &want).abs().max()).unwrap();
                assert!(diff < 1e-4, "{name}: batch {n}: points differ by {diff} (unit crop space)");
                let spread = f64::try_from(want.std(false)).unwrap();
                assert!(spread > 0.1, "{name}: the points should spread over the face, std {spread}");
            }
        }
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
            for layout in [Layout::Nchw, Layout::ChannelsLast] {
                let (f, c) = (layout.arrange(fine.copy()).unwrap(), layout.arrange(coarse.copy()).unwrap());
                let got = add_upsampled(&f, &c, layout).unwrap();
                assert_eq!(got.size(), want.size());
                assert!(got.allclose(&want, 0.0, 0.0, false), "side {side}, {layout:?}");
            }
        }
    }
}
