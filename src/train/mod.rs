//! `facekp train`: reads data sets, measures the Haar crop prior, trains the CNN
//! with augmentation, checkpoints every epoch (one safetensors file, written
//! atomically) and writes the weights, the model config and a loss curve.

pub mod augment;
pub mod data;
pub mod eval;
pub mod optim;
pub mod plot;
pub mod prior;

use crate::detect::{DetectorConfig, HaarDetector};
use crate::fsutil;
use crate::geometry::{frame_points_from_unit, Point};
use crate::landmarks::Scheme;
use crate::model::{config_path_for, Heatmaps, ModelConfig, Net, TrainInfo};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

pub struct TrainOptions {
    pub scheme: Scheme,
    pub data_dirs: Vec<PathBuf>,
    /// How many times each data folder's faces enter every epoch (one per folder).
    pub repeat: Vec<usize>,
    pub out: PathBuf,
    pub epochs: usize,
    pub resume: bool,
    pub seed: u64,
    pub device: Device,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub cascade: PathBuf,
}

/// A network shape: the model config's architecture fields.
pub struct Architecture {
    pub channels: Vec<i64>,
    pub extra_convs: Vec<usize>,
    pub heatmaps: Heatmaps,
    pub crop_padding: f32,
}

/// The shipped architectures, sized for the CPU budget (3 ms at 224 px, 1 ms at 96 px).
pub fn architecture(scheme: Scheme) -> Architecture {
    match scheme {
        // Heatmaps at 28x28 (stride 8) from stages at 28, 14 and 7.
        Scheme::P68 => Architecture {
            channels: vec![12, 32, 48, 96, 128],
            extra_convs: vec![0, 0, 1, 1, 1],
            heatmaps: Heatmaps { stage: 2, width: 48 },
            crop_padding: 1.5,
        },
        // Heatmaps at 12x12 (stride 8) from stages at 12 and 6.
        Scheme::P15 => Architecture {
            channels: vec![16, 32, 48, 64],
            extra_convs: vec![0, 1, 1, 1],
            heatmaps: Heatmaps { stage: 2, width: 32 },
            crop_padding: 1.7,
        },
    }
}

pub const WEIGHT_DECAY: f64 = 1e-4;

/// Decay of the moving average of the weights that validation and the shipped model
/// use: a window of about 500 steps (5 epochs of the shipped data). Adam keeps
/// stepping by about the learning rate whatever the gradient, so the plain weights
/// wander: over the last 10 epochs of a 40-epoch 15-point run their ytf68
/// validation NME ranged from 0.0437 to 0.0470, while that of the average stayed
/// within 0.0447-0.0450 (and helen68 0.0433-0.0440 against 0.0432-0.0451).
pub const EMA_DECAY: f64 = 0.998;

/// An exponential moving average of every model variable (weights and batch-norm
/// statistics), swapped into the model to validate and to save.
struct WeightAverage {
    vars: Vec<(String, Tensor, Tensor)>,
}

impl WeightAverage {
    /// Starts from the model's current values, or from `saved` (`ema.NAME`) when given.
    fn new(vs: &nn::VarStore, saved: Option<&HashMap<String, Tensor>>) -> WeightAverage {
        let vars = vs
            .variables()
            .into_iter()
            .map(|(name, var)| {
                let start = saved.and_then(|s| s.get(&format!("ema.{name}"))).unwrap_or(&var);
                let average = tch::no_grad(|| start.to_device(var.device()).to_kind(var.kind()).copy());
                (name, var, average)
            })
            .collect();
        WeightAverage { vars }
    }

    /// Folds the model's current values into the average (after an optimizer step).
    /// The decay ramps up as `(1 + step) / (10 + step)` (TensorFlow's rule), so until
    /// it reaches [`EMA_DECAY`] the average spans about the last ninth of the steps.
    fn update(&mut self, step: i64) {
        let decay = EMA_DECAY.min((1 + step) as f64 / (10 + step) as f64);
        tch::no_grad(|| {
            for (_, var, average) in &mut self.vars {
                let _ = average.g_mul_scalar_(decay).g_add_(&(&*var * (1.0 - decay)));
            }
        });
    }

    /// Exchanges the model's values and the average (call again to undo).
    fn swap(&mut self) {
        tch::no_grad(|| {
            for (_, var, average) in &mut self.vars {
                let model = var.copy();
                var.copy_(average);
                average.copy_(&model);
            }
        });
    }

    /// The average as named tensors (`ema.NAME`) for a checkpoint.
    fn state(&self) -> Vec<(String, Tensor)> {
        self.vars.iter().map(|(name, _, average)| (format!("ema.{name}"), average.shallow_clone())).collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_nme: Vec<(String, f64)>,
    pub secs: f64,
}

/// Everything needed to continue a run, stored inside the checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    config: ModelConfig,
    epochs: usize,
    seed: u64,
    adam_step: i64,
    history: Vec<EpochRecord>,
    data: Vec<String>,
    train_faces: usize,
    /// Per data folder (absent in checkpoints from before `--repeat`: once each).
    #[serde(default)]
    repeat: Vec<usize>,
}

const STATE_TENSOR: &str = "checkpoint_state_json";

pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.with_extension("ckpt")
}

fn save_checkpoint(
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

fn load_checkpoint(path: &Path) -> Result<(CheckpointState, HashMap<String, Tensor>)> {
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
    Ok((state, tensors))
}

/// Writes the model's variables (only) as safetensors, atomically.
pub fn save_weights(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let named = vs.variables().into_iter().collect::<Vec<_>>();
    fsutil::with_atomic_path(path, |tmp| Tensor::write_safetensors(&named, tmp).map_err(|e| anyhow::anyhow!("{e}")))
        .with_context(|| format!("weights {}: cannot write", path.display()))
}

/// One face of the training pool.
struct Face<'a> {
    gray: &'a opencv::core::Mat,
    points: Vec<Point>,
    set: usize,
}

/// Cosine schedule with a linear warm-up, ending at 1% of the peak.
fn learning_rate(peak: f64, step: i64, warmup: i64, total: i64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    peak * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos()))
}

/// Brightness, contrast, gamma and noise, per sample, on `[B, 1, S, S]` in `[0, 1]`.
fn photometric(x: &Tensor) -> Tensor {
    let b = x.size()[0];
    let opts = (Kind::Float, x.device());
    let gamma = (Tensor::rand([b, 1, 1, 1], opts) * 0.8 - 0.4).exp();
    let contrast = Tensor::rand([b, 1, 1, 1], opts) * 0.8 + 0.6;
    let brightness = Tensor::rand([b, 1, 1, 1], opts) * 0.3 - 0.15;
    let noise_sigma = Tensor::rand([b, 1, 1, 1], opts) * 0.04;
    let x = x.clamp(1e-4, 1.0).pow(&gamma);
    let x = (x - 0.5) * contrast + 0.5 + brightness;
    (&x + x.randn_like() * noise_sigma).clamp(0.0, 1.0)
}

fn batch_tensor(pixels: &[&[u8]], size: u32, device: Device) -> Tensor {
    let s = size as i64;
    let flat: Vec<u8> = pixels.iter().flat_map(|p| p.iter().copied()).collect();
    Tensor::from_slice(&flat).view([pixels.len() as i64, 1, s, s]).to_device(device).to_kind(Kind::Float) / 255.0
}

/// NME of one validation set with the run-time crop for a typical detection.
fn validate(net: &Net, cfg: &ModelConfig, set: &data::LoadedSet, head: usize, device: Device) -> Result<f64> {
    let _guard = tch::no_grad_guard();
    let scheme = cfg.scheme;
    let mut errors = Vec::new();
    let faces: Vec<(usize, Vec<Point>)> =
        set.annotations.iter().enumerate().map(|(i, a)| (i, scheme.from_68(&a.points))).collect();
    // Found points are image positions; the labels carry their set's origin.
    let o = Vec::<f32>::try_from(net.label_origins().select(0, head as i64).to_device(Device::Cpu))?;
    let origin = Point::new(o[0], o[1]);
    for chunk in faces.chunks(64) {
        let mut crops = Vec::new();
        let mut pixels = Vec::new();
        for (i, pts) in chunk {
            let crop = augment::mean_crop(&cfg.crop, pts);
            pixels.push(augment::make_crop(&set.images[*i], &crop, pts, scheme)?.pixels);
            crops.push(crop);
        }
        let x = batch_tensor(&pixels.iter().map(|p| p.as_slice()).collect::<Vec<_>>(), cfg.input_size, device);
        let out = net.forward_heads(&x, false)?.select(1, head as i64).to_device(Device::Cpu).contiguous();
        let values = Vec::<f32>::try_from(out.flatten(0, -1))?;
        let n = scheme.num_points();
        for (k, (_, truth)) in chunk.iter().enumerate() {
            let unit: Vec<Point> =
                values[k * 2 * n..(k + 1) * 2 * n].chunks(2).map(|v| Point::new(v[0], v[1])).collect();
            let pred: Vec<Point> =
                frame_points_from_unit(&unit, &crops[k], cfg.input_size).into_iter().map(|p| p + origin).collect();
            errors.push(eval::nme(&pred, truth, scheme));
        }
    }
    Ok(errors.iter().sum::<f64>() / errors.len() as f64)
}

pub fn train(opts: &TrainOptions) -> Result<()> {
    let scheme = opts.scheme;
    let started = Instant::now();
    if let Some(parent) = opts.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!("--out {}: folder {} does not exist", opts.out.display(), parent.display());
        }
    }
    if opts.out.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!("--out {}: the weights file must end in .safetensors", opts.out.display());
    }

    if opts.repeat.len() != opts.data_dirs.len() {
        bail!(
            "--repeat: {} value(s) for {} --data folder(s); give one per folder",
            opts.repeat.len(),
            opts.data_dirs.len()
        );
    }
    // Data: every DIR's train.csv (and val.csv when present).
    let mut train_sets = Vec::new();
    let mut val_sets = Vec::new();
    for dir in &opts.data_dirs {
        let name = data::set_name(dir);
        let images = dir.join("images");
        let csv = dir.join("train.csv");
        if !csv.is_file() {
            bail!("--data {}: no train.csv in this folder", dir.display());
        }
        eprintln!("loading {name}: {}", csv.display());
        train_sets.push(data::load_set(&name, &csv, &images)?);
        let val = dir.join("val.csv");
        if val.is_file() {
            val_sets.push(data::load_set(&name, &val, &images)?);
        }
    }
    let conventions: Vec<String> = train_sets.iter().map(|s| s.name.clone()).collect();
    let faces: Vec<Face> = train_sets
        .iter()
        .enumerate()
        .flat_map(|(k, set)| {
            set.images.iter().zip(&set.annotations).map(move |(gray, a)| Face {
                gray,
                points: scheme.from_68(&a.points),
                set: k,
            })
        })
        .collect();
    eprintln!(
        "training faces: {} ({})",
        faces.len(),
        train_sets.iter().map(|s| format!("{} {}", s.name, s.annotations.len())).collect::<Vec<_>>().join(", ")
    );

    // An epoch: every face of folder k, repeat[k] times (each time its own random crop).
    let pool: Vec<usize> =
        faces.iter().enumerate().flat_map(|(i, f)| std::iter::repeat(i).take(opts.repeat[f.set])).collect();
    if pool.len() < opts.batch_size {
        bail!("--batch-size {}: larger than the {} training crops of an epoch", opts.batch_size, pool.len());
    }
    let batches_per_epoch = pool.len() / opts.batch_size;
    eprintln!(
        "an epoch: {} crops ({}), {batches_per_epoch} batches of {}",
        pool.len(),
        train_sets.iter().zip(&opts.repeat).map(|(s, r)| format!("{} x{r}", s.name)).collect::<Vec<_>>().join(", "),
        opts.batch_size
    );

    let ckpt_path = checkpoint_path(&opts.out);
    // A run killed mid-write leaves only temporary files (the final names are
    // renamed into place whole); clear them.
    for p in [&ckpt_path, &opts.out, &config_path_for(&opts.out), &opts.out.with_extension("loss.png")] {
        fsutil::remove_stale_temps(p);
    }
    let resumed = if opts.resume && ckpt_path.is_file() {
        let (state, tensors) = load_checkpoint(&ckpt_path)?;
        if state.config.scheme != scheme {
            bail!("checkpoint {}: it is for the {}-point model", ckpt_path.display(), state.config.scheme.num_points());
        }
        let saved_repeat = if state.repeat.is_empty() { vec![1; opts.repeat.len()] } else { state.repeat.clone() };
        if saved_repeat != opts.repeat {
            bail!(
                "checkpoint {}: trained with --repeat {:?}, now given {:?}",
                ckpt_path.display(),
                saved_repeat,
                opts.repeat
            );
        }
        eprintln!("resuming {} after epoch {}", ckpt_path.display(), state.history.len());
        Some((state, tensors))
    } else {
        if opts.resume {
            eprintln!("no checkpoint at {}: starting from scratch", ckpt_path.display());
        }
        None
    };

    let config = match &resumed {
        Some((state, _)) => state.config.clone(),
        None => {
            let arch = architecture(scheme);
            let mut detector = HaarDetector::new(&opts.cascade, DetectorConfig::default())?;
            let bar = progress_bar(faces.len() as u64, "measuring Haar boxes");
            let images: Vec<&opencv::core::Mat> = faces.iter().map(|f| f.gray).collect();
            let points68: Vec<&[Point]> =
                train_sets.iter().flat_map(|s| s.annotations.iter().map(|a| a.points.as_slice())).collect();
            let pts: Vec<Vec<Point>> = faces.iter().map(|f| f.points.clone()).collect();
            let m = prior::measure(&mut detector, &images, &points68, &pts, arch.crop_padding, || bar.inc(1))?;
            bar.finish_and_clear();
            let p = &m.prior;
            eprintln!(
                "Haar box vs {}-point box ({} of {} faces matched): centre dx {:+.3}±{:.3}, dy {:+.3}±{:.3} (point-box sizes), scale {:.3} (log-sd {:.3})",
                scheme.num_points(), m.matched, m.faces, p.dx_mean, p.dx_std, p.dy_mean, p.dy_std, p.scale_mean, p.log_scale_std
            );
            ModelConfig {
                scheme,
                input_size: scheme.input_size(),
                channels: arch.channels,
                extra_convs: arch.extra_convs,
                heatmaps: arch.heatmaps,
                default_convention: conventions.iter().position(|c| c == "helen68").unwrap_or(0),
                conventions: conventions.clone(),
                crop: m.prior,
                max_spread: None,
                trained: None,
            }
        }
    };
    if config.conventions != conventions {
        bail!("checkpoint {}: trained on {:?}, now given {:?}", ckpt_path.display(), config.conventions, conventions);
    }

    let mut vs = nn::VarStore::new(opts.device);
    let net = Net::new(&vs.root(), &config);
    let mut opt = optim::AdamW::new(&vs, WEIGHT_DECAY);
    let mut history = Vec::new();
    if let Some((state, tensors)) = &resumed {
        let model: HashMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix("model.").map(|n| (n.to_string(), t.shallow_clone())))
            .collect();
        tch::no_grad(|| -> Result<()> {
            for (name, mut var) in vs.variables() {
                let src = model.get(&name).with_context(|| format!("checkpoint: tensor {name} missing"))?;
                var.f_copy_(src)?;
            }
            Ok(())
        })?;
        opt.restore(tensors, state.adam_step);
        history = state.history.clone();
    }
    vs.set_kind(Kind::Float);
    let mut average = WeightAverage::new(&vs, resumed.as_ref().map(|(_, tensors)| tensors));

    let total_steps = (batches_per_epoch * opts.epochs) as i64;
    let warmup = batches_per_epoch as i64;
    let n_out = 2 * scheme.num_points() as i64;
    for epoch in history.len()..opts.epochs {
        let epoch_start = Instant::now();
        let mut rng = StdRng::seed_from_u64(opts.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
        tch::manual_seed((opts.seed as i64).wrapping_add(epoch as i64));
        let mut order = pool.clone();
        order.shuffle(&mut rng);
        let bar = progress_bar(batches_per_epoch as u64, &format!("epoch {}/{}", epoch + 1, opts.epochs));
        let (mut loss_sum, mut loss_n) = (0.0, 0usize);
        for batch in order.chunks_exact(opts.batch_size) {
            let mut pixels = Vec::with_capacity(batch.len());
            let mut targets = Vec::with_capacity(batch.len() * n_out as usize);
            let mut sets = Vec::with_capacity(batch.len());
            let mut frame_to_unit = Vec::with_capacity(batch.len() * 4);
            for &i in batch {
                let f = &faces[i];
                let s = augment::random_crop(&mut rng, f.gray, &f.points, &config.crop, scheme)?;
                targets.extend(s.targets.iter().flat_map(|p| [p.x, p.y]));
                pixels.push(s.pixels);
                sets.push(f.set as i64);
                frame_to_unit.extend(s.frame_to_unit);
            }
            let x = photometric(&batch_tensor(
                &pixels.iter().map(|p| p.as_slice()).collect::<Vec<_>>(),
                config.input_size,
                opts.device,
            ));
            let b = batch.len() as i64;
            let y = Tensor::from_slice(&targets).view([b, n_out]).to_device(opts.device);
            let sets = Tensor::from_slice(&sets).to_device(opts.device);
            let index = sets.view([b, 1, 1]).expand([b, 1, n_out], false);
            let pred = net.forward_heads(&x, true)?.gather(1, &index, false).squeeze_dim(1);
            // Labels = image positions + the set's label origin, carried into each
            // crop's unit space (mirrored and rotated with it).
            let origin = net.label_origins().index_select(0, &sets).unsqueeze(-1);
            let to_unit = Tensor::from_slice(&frame_to_unit).view([b, 2, 2]).to_device(opts.device);
            let offset = to_unit.matmul(&origin).view([b, 1, 2]);
            let pred = (pred.view([b, n_out / 2, 2]) + offset).view([b, n_out]);
            let loss = (pred - y).abs().mean(Kind::Float);
            opt.zero_grad();
            loss.backward();
            opt.step(learning_rate(opts.learning_rate, opt.step, warmup, total_steps));
            average.update(opt.step);
            let l = f64::try_from(&loss)?;
            if !l.is_finite() {
                bail!("training diverged at epoch {} (loss {l})", epoch + 1);
            }
            loss_sum += l;
            loss_n += 1;
            bar.set_message(format!("loss {:.4}", loss_sum / loss_n as f64));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let mut val_nme = Vec::new();
        average.swap();
        for set in &val_sets {
            let head = config.conventions.iter().position(|c| *c == set.name).unwrap_or(config.default_convention);
            val_nme.push((set.name.clone(), validate(&net, &config, set, head, opts.device)?));
        }
        average.swap();
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / loss_n.max(1) as f64,
            val_nme,
            secs: epoch_start.elapsed().as_secs_f64(),
        };
        eprintln!(
            "epoch {:>3}/{}: loss {:.4}  val NME {}  ({:.0} s)",
            record.epoch,
            opts.epochs,
            record.train_loss,
            record.val_nme.iter().map(|(n, v)| format!("{n} {v:.4}")).collect::<Vec<_>>().join(", "),
            record.secs
        );
        history.push(record);
        let state = CheckpointState {
            config: config.clone(),
            epochs: opts.epochs,
            seed: opts.seed,
            adam_step: opt.step,
            history: history.clone(),
            data: opts.data_dirs.iter().map(|d| d.display().to_string()).collect(),
            train_faces: faces.len(),
            repeat: opts.repeat.clone(),
        };
        save_checkpoint(&ckpt_path, &vs, &opt, &average, &state)?;
        plot::loss_curve(&opts.out.with_extension("loss.png"), &history)?;
    }

    let mut final_config = config.clone();
    final_config.trained = Some(TrainInfo {
        data: opts.data_dirs.iter().map(|d| data::set_name(d)).collect(),
        epochs: opts.epochs,
        train_faces: faces.len(),
        repeat: opts.repeat.clone(),
        seed: opts.seed,
        train_secs: history.iter().map(|h| h.secs).sum(),
        final_val_nme: history.last().map(|h| h.val_nme.clone()).unwrap_or_default(),
    });
    // The shipped weights are the moving average (the one validated above).
    average.swap();
    save_weights(&vs, &opts.out)?;
    final_config
        .save(&config_path_for(&opts.out))
        .with_context(|| format!("{}: cannot write", config_path_for(&opts.out).display()))?;
    plot::loss_curve(&opts.out.with_extension("loss.png"), &history)?;
    eprintln!(
        "wrote {} and {} ({:.1} min this session, {:.1} min of epochs in all)",
        opts.out.display(),
        config_path_for(&opts.out).display(),
        started.elapsed().as_secs_f64() / 60.0,
        history.iter().map(|h| h.secs).sum::<f64>() / 60.0
    );
    Ok(())
}

pub fn progress_bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn the_weight_average_follows_the_weights_and_swaps_back() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut w = vs.root().zeros("w", &[2]);
        let mut average = WeightAverage::new(&vs, None);
        // The weight moves (1, 2, 3, ...): the average is the recursion, with the
        // decay's ramp, started from the weight's value when the average was made (0).
        let mut expected = 0.0f64;
        for step in 1..=50i64 {
            tch::no_grad(|| {
                let _ = w.fill_(step as f64);
            });
            average.update(step);
            let decay = EMA_DECAY.min((1 + step) as f64 / (10 + step) as f64);
            expected = decay * expected + (1.0 - decay) * step as f64;
        }
        assert!(expected > 30.0 && expected < 49.0, "lags behind the weight: {expected}");
        average.swap();
        for v in values(&w) {
            assert!((v as f64 - expected).abs() < 1e-3, "{v} vs {expected}");
        }
        average.swap();
        assert_eq!(values(&w), [50.0, 50.0]);
        // The checkpoint's copy restores the average.
        let saved: HashMap<String, Tensor> = average.state().into_iter().collect();
        let mut restored = WeightAverage::new(&vs, Some(&saved));
        restored.swap();
        for v in values(&w) {
            assert!((v as f64 - expected).abs() < 1e-3);
        }
    }
}
