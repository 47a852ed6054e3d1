//! `facekp train`: reads data sets, measures the Haar crop prior, trains the CNN
//! with augmentation, checkpoints every epoch (one safetensors file, written
//! atomically) and writes the weights, the model config and a loss curve.
//!
//! - [`augment`]: training crops and photometric changes;
//! - [`prior`]: where the Haar box sits relative to the true points;
//! - [`checkpoint`]: checkpoints and weight files;
//! - [`average`]: the moving average of the weights;
//! - [`loss`]: L1 or wing loss on the coordinates;
//! - [`optim`]: AdamW and the learning-rate schedule;
//! - [`sets`]: the data of a run (data set folders and Kaggle CSVs).

pub mod augment;
mod average;
mod checkpoint;
pub mod loss;
pub mod optim;
pub mod prior;
pub mod sets;

pub use checkpoint::{checkpoint_path, save_weights};

use crate::dataset;
use crate::detect::{DetectorConfig, HaarDetector, ProfileCascade, PROFILE_CASCADE};
use crate::eval::nme;
use crate::fsutil;
use crate::geometry::{frame_points_from_unit, CropPrior, Point};
use crate::landmarks::Scheme;
use crate::model::{config_path_for, read_checked_weights, Heatmaps, ModelConfig, Net, TrainInfo};
use crate::plot;
use crate::progress::progress_bar;
use anyhow::{bail, Context, Result};
use augment::LabelledFace;
use average::WeightAverage;
use checkpoint::{CheckpointState, Resumed};
pub use loss::Loss;
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};
use sets::{Pool, Sets, TrainSet};
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
    /// Continue from the checkpoint beside `out`, when there is one.
    pub resume: bool,
    /// Start from these weights and their config (fine-tuning) instead of fresh
    /// ones: heads of data sets the model does not know start as copies of its
    /// default head.
    pub init: Option<PathBuf>,
    /// A model config whose crop prior a run takes when its data cannot measure one
    /// (Kaggle CSVs only) and it has no `init`.
    pub prior_fallback: Option<PathBuf>,
    pub seed: u64,
    pub device: Device,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub loss: Loss,
    pub cascade: PathBuf,
    /// Stage widths and depths in place of the scheme's shipped architecture.
    pub shape: ShapeOverride,
}

/// Stage widths (`--channels`) and extra 3x3 convs per stage (`--extra-convs`) a
/// fresh run trains instead of [`architecture`]'s; `None` keeps the shipped value.
/// The number of stages stays the scheme's: the heatmap level and the strides
/// depend on it.
#[derive(Debug, Clone, Default)]
pub struct ShapeOverride {
    pub channels: Option<Vec<i64>>,
    pub extra_convs: Option<Vec<usize>>,
}

impl ShapeOverride {
    fn is_empty(&self) -> bool {
        self.channels.is_none() && self.extra_convs.is_none()
    }
}

/// A network shape: the model config's architecture fields.
pub struct Architecture {
    pub channels: Vec<i64>,
    pub extra_convs: Vec<usize>,
    pub heatmaps: Heatmaps,
    pub crop_padding: f32,
}

/// The network a fresh run of `opts` trains: the scheme's architecture with
/// `opts.shape` put in, each list one value per stage.
fn run_architecture(opts: &TrainOptions) -> Result<Architecture> {
    let mut arch = architecture(opts.scheme);
    let stages = arch.channels.len();
    let check = |flag: &str, given: usize| -> Result<()> {
        if given != stages {
            bail!("{flag}: the {}-point network has {stages} stages, {given} value(s) given", opts.scheme.num_points());
        }
        Ok(())
    };
    if let Some(channels) = &opts.shape.channels {
        check("--channels", channels.len())?;
        arch.channels = channels.clone();
    }
    if let Some(extra) = &opts.shape.extra_convs {
        check("--extra-convs", extra.len())?;
        arch.extra_convs = extra.clone();
    }
    Ok(arch)
}

/// The shipped architectures, sized for the CPU budget (3 ms at 224 px, 1 ms at 96 px).
pub fn architecture(scheme: Scheme) -> Architecture {
    match scheme {
        // Heatmaps at 28x28 (stride 8) from stages at 28, 14 and 7; the second
        // 3x3 conv at 14x14 widens the context the jaw points see.
        Scheme::P68 => Architecture {
            channels: vec![12, 32, 56, 96, 128],
            extra_convs: vec![0, 0, 1, 2, 1],
            heatmaps: Heatmaps { stage: 2, width: 48 },
            crop_padding: 1.5,
        },
        // Heatmaps at 12x12 (stride 8) from stages at 12 and 6; the second
        // 3x3 conv at 12x12 widens the context as it does for 68 points.
        Scheme::P15 => Architecture {
            channels: vec![16, 32, 64, 96],
            extra_convs: vec![0, 1, 2, 1],
            heatmaps: Heatmaps { stage: 2, width: 32 },
            crop_padding: 1.7,
        },
    }
}

pub const WEIGHT_DECAY: f64 = 1e-4;

/// One epoch's figures, kept in the checkpoint and the loss curve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_nme: Vec<(String, f64)>,
    pub secs: f64,
}

/// The network being trained, with its optimizer and weight average.
struct Trainee {
    vs: nn::VarStore,
    net: Net,
    opt: optim::AdamW,
    average: WeightAverage,
}

/// Trains a model as `opts` says, resuming from its checkpoint when asked.
pub fn train(opts: &TrainOptions) -> Result<()> {
    let started = Instant::now();
    check_options(opts)?;
    let arch = run_architecture(opts)?;
    let mut sets = Sets::load(&opts.data_dirs, opts.scheme)?;
    check_pool_size(opts, &sets)?;
    let ckpt_path = checkpoint_path(&opts.out);
    // A run killed mid-write leaves only temporary files (the final names are
    // renamed into place whole); clear them.
    for p in [&ckpt_path, &opts.out, &config_path_for(&opts.out), &opts.out.with_extension("loss.png")] {
        fsutil::remove_stale_temps(p);
    }
    let resumed = resume(opts, &arch, &ckpt_path)?;
    let start = match &resumed {
        Some(r) => Start { config: r.state.config.clone(), tensors: None },
        None => start_config(opts, arch, &sets)?,
    };
    let config = start.config;
    if config.conventions != sets.conventions() {
        bail!(
            "checkpoint {}: trained on {:?}, now given {:?}",
            ckpt_path.display(),
            config.conventions,
            sets.conventions()
        );
    }
    sets.frame_kaggle_faces(&config.crop)?;
    let pool = Pool::new(&sets, &opts.repeat, opts.batch_size);
    let mut trainee = Trainee::new(opts.device, &config, resumed.as_ref(), start.tensors.as_ref())?;
    let mut history = resumed.map(|r| r.state.history).unwrap_or_default();
    for epoch in history.len()..opts.epochs {
        let record = run_epoch(opts, &config, &pool, &mut trainee, epoch, &sets.val)?;
        history.push(record);
        let state = CheckpointState {
            config: config.clone(),
            epochs: opts.epochs,
            seed: opts.seed,
            adam_step: trainee.opt.step,
            history: history.clone(),
            data: opts.data_dirs.iter().map(|d| d.display().to_string()).collect(),
            train_faces: pool.faces.len(),
            repeat: opts.repeat.clone(),
            loss: opts.loss,
        };
        checkpoint::save_checkpoint(&ckpt_path, &trainee.vs, &trainee.opt, &trainee.average, &state)?;
        plot::loss_curve(&opts.out.with_extension("loss.png"), &history)?;
    }
    write_outputs(opts, config, trainee, &history, pool.faces.len())?;
    eprintln!(
        "wrote {} and {} ({:.1} min this run, {:.1} min of epochs in all)",
        opts.out.display(),
        config_path_for(&opts.out).display(),
        started.elapsed().as_secs_f64() / 60.0,
        history.iter().map(|h| h.secs).sum::<f64>() / 60.0
    );
    Ok(())
}

/// What a run that does not resume starts from: a config, and with `--init` the
/// tensors to start the network from.
struct Start {
    config: ModelConfig,
    tensors: Option<HashMap<String, Tensor>>,
}

/// Refuses an `--out` that cannot be written and a `--repeat` that does not fit
/// `--data`, before any data is read.
fn check_options(opts: &TrainOptions) -> Result<()> {
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
    if opts.init.is_some() && !opts.shape.is_empty() {
        bail!("--channels/--extra-convs: a fine-tune (--init) keeps the network of its weights");
    }
    Ok(())
}

/// Refuses a `--batch-size` larger than an epoch, before the prior is measured.
fn check_pool_size(opts: &TrainOptions, sets: &Sets) -> Result<()> {
    let counts: Vec<String> = sets.train.iter().map(describe_set).collect();
    eprintln!("training faces: {} ({})", sets.train.iter().map(|s| s.faces.len()).sum::<usize>(), counts.join(", "));
    let crops = Pool::crops(sets, &opts.repeat);
    if crops < opts.batch_size {
        bail!("--batch-size {}: larger than the {crops} training crops of an epoch", opts.batch_size);
    }
    let mix: Vec<String> = sets.train.iter().zip(&opts.repeat).map(|(s, r)| format!("{} x{r}", s.name)).collect();
    let batches = crops / opts.batch_size;
    eprintln!("an epoch: {crops} crops ({}), {batches} batches of {}", mix.join(", "), opts.batch_size);
    Ok(())
}

/// A training set's name and faces, with how many closed-eye and turned faces it
/// has (they enter an epoch more often).
fn describe_set(set: &TrainSet) -> String {
    let count = |e: sets::Emphasis| set.emphasis.iter().filter(|&&x| x == e).count();
    let (closed, turned) = (count(sets::Emphasis::ClosedEye), count(sets::Emphasis::Turned));
    match set.kind {
        sets::SetKind::Folder => format!("{} {}: {closed} closed-eye, {turned} turned", set.name, set.faces.len()),
        sets::SetKind::Kaggle => format!("{} {}", set.name, set.faces.len()),
    }
}

/// The checkpoint to continue from, checked against `opts`, when `--resume` finds one.
fn resume(opts: &TrainOptions, arch: &Architecture, ckpt_path: &Path) -> Result<Option<Resumed>> {
    if !(opts.resume && ckpt_path.is_file()) {
        if opts.resume {
            eprintln!("no checkpoint at {}: starting from scratch", ckpt_path.display());
        }
        return Ok(None);
    }
    let resumed = checkpoint::load_checkpoint(ckpt_path)?;
    let state = &resumed.state;
    if state.config.scheme != opts.scheme {
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
    if state.loss != opts.loss {
        bail!("checkpoint {}: trained with --loss {}, now given {}", ckpt_path.display(), state.loss, opts.loss);
    }
    check_resumed_shape(opts, arch, &state.config, ckpt_path)?;
    eprintln!("resuming {} after epoch {}", ckpt_path.display(), state.history.len());
    Ok(Some(resumed))
}

/// Refuses a resume whose network differs from the checkpoint's (a fine-tune's
/// network is its `--init` weights', whatever the scheme's default).
fn check_resumed_shape(opts: &TrainOptions, arch: &Architecture, saved: &ModelConfig, ckpt_path: &Path) -> Result<()> {
    if opts.init.is_some() {
        return Ok(());
    }
    if (&arch.channels, &arch.extra_convs) != (&saved.channels, &saved.extra_convs) {
        bail!(
            "checkpoint {}: trained with --channels {:?} --extra-convs {:?}, now given {:?} {:?}",
            ckpt_path.display(),
            saved.channels,
            saved.extra_convs,
            arch.channels,
            arch.extra_convs
        );
    }
    Ok(())
}

/// The config of a run that does not resume: from `--init` (fine-tuning), or the
/// network `arch` with the Haar prior measured on the training photos (or,
/// for Kaggle CSVs alone, taken from `prior_fallback`).
fn start_config(opts: &TrainOptions, arch: Architecture, sets: &Sets) -> Result<Start> {
    if let Some(init) = &opts.init {
        return init_from(init, opts.scheme, sets);
    }
    let scheme = opts.scheme;
    let (prior, profile_crop) = match (sets.can_measure_prior(), &opts.prior_fallback) {
        (true, _) => measure_priors(opts, sets, arch.crop_padding)?,
        (false, Some(fallback)) => {
            eprintln!("crop prior: from {} (framed faces cannot show where Haar puts its box)", fallback.display());
            let base = ModelConfig::load(&config_path_for(fallback))?;
            (base.crop, base.profile_crop)
        }
        (false, None) => bail!("--data: framed faces alone cannot measure the Haar crop prior; give --init WEIGHTS"),
    };
    let conventions = sets.conventions();
    let config = ModelConfig {
        scheme,
        input_size: scheme.input_size(),
        channels: arch.channels,
        extra_convs: arch.extra_convs,
        heatmaps: arch.heatmaps,
        default_convention: conventions.iter().position(|c| c == "helen68").unwrap_or(0),
        conventions,
        crop: prior,
        profile_crop,
        max_spread: None,
        max_turned_spread: None,
        trained: None,
    };
    Ok(Start { config, tensors: None })
}

/// Where the Haar boxes sit around the points of the training photos: the
/// frontal cascade's, and the profile cascade's at the width `run` searches photos.
fn measure_priors(opts: &TrainOptions, sets: &Sets, crop_padding: f32) -> Result<(CropPrior, Option<CropPrior>)> {
    let folders: Vec<&TrainSet> = sets.train.iter().filter(|s| s.kind == sets::SetKind::Folder).collect();
    let faces: Vec<&LabelledFace> = folders.iter().flat_map(|s| &s.faces).collect();
    let images: Vec<&opencv::core::Mat> = faces.iter().map(|f| &f.gray).collect();
    let points68: Vec<&[Point]> = folders.iter().flat_map(|s| s.points68.iter().map(|p| p.as_slice())).collect();
    let pts: Vec<Vec<Point>> = faces.iter().map(|f| f.points.clone()).collect();
    let config = DetectorConfig::default();
    let mut detector = HaarDetector::new(&opts.cascade, config)?;
    let bar = progress_bar(faces.len() as u64, "measuring Haar boxes");
    let prior_faces = prior::PriorFaces { images: &images, points68: &points68, points: &pts };
    let frontal = prior::measure(&mut detector, &prior_faces, crop_padding, || bar.inc(1))?;
    bar.finish_and_clear();
    report_prior("Haar box", opts.scheme, &frontal);
    let mut cascade = ProfileCascade::load(Path::new(PROFILE_CASCADE))?;
    let bar = progress_bar(faces.len() as u64, "measuring profile boxes");
    let width = config.max_width;
    let profile = prior::measure_profile(&mut cascade, width, &prior_faces, crop_padding, || bar.inc(1));
    bar.finish_and_clear();
    // A data set without turned faces may give the profile cascade too few.
    let profile = profile.ok().inspect(|m| report_prior("profile box", opts.scheme, m));
    Ok((frontal.prior, profile.map(|m| m.prior)))
}

/// Prints a measured prior.
fn report_prior(what: &str, scheme: Scheme, m: &prior::PriorMeasurement) {
    let p = &m.prior;
    eprintln!(
        "{what} vs {}-point box ({} of {} faces matched): centre dx {:+.3}±{:.3}, dy {:+.3}±{:.3} (point-box sizes), scale {:.3} (log-sd {:.3})",
        scheme.num_points(), m.matched, m.faces, p.dx_mean, p.dx_std, p.dy_mean, p.dy_std, p.scale_mean, p.log_scale_std
    );
}

/// Fine-tuning: the config and tensors of `init`, with one head per data set of
/// this run, each the init's head of that name or a copy of its default head.
fn init_from(init: &Path, scheme: Scheme, sets: &Sets) -> Result<Start> {
    let base = ModelConfig::load(&config_path_for(init))?;
    if base.scheme != scheme {
        bail!("--init {}: a {}-point model, not {}", init.display(), base.scheme.num_points(), scheme.num_points());
    }
    let tensors = read_checked_weights(init, &base)?;
    let conventions = sets.conventions();
    let mut start: HashMap<String, Tensor> = tensors
        .iter()
        .filter(|(name, _)| !name.starts_with("out") && !name.starts_with("origin"))
        .map(|(name, t)| (name.clone(), t.shallow_clone()))
        .collect();
    for (k, convention) in conventions.iter().enumerate() {
        let j = base.conventions.iter().position(|c| c == convention).unwrap_or(base.default_convention);
        eprintln!("head {convention}: from {}'s {} head", init.display(), base.conventions[j]);
        for (to, from) in [("weight", "weight"), ("bias", "bias")] {
            if let Some(t) = tensors.get(&format!("out{j}.{from}")) {
                start.insert(format!("out{k}.{to}"), t.shallow_clone());
            }
        }
        if let Some(t) = tensors.get(&format!("origin{j}")) {
            start.insert(format!("origin{k}"), t.shallow_clone());
        }
    }
    let default_convention = conventions.iter().position(|c| c == "helen68").unwrap_or(0);
    let config = ModelConfig { conventions, default_convention, trained: None, ..base };
    Ok(Start { config, tensors: Some(start) })
}

impl Trainee {
    /// The network of `config` on `device`: restored from `resumed`, else started
    /// from `init` tensors (fine-tuning), else fresh.
    fn new(
        device: Device,
        config: &ModelConfig,
        resumed: Option<&Resumed>,
        init: Option<&HashMap<String, Tensor>>,
    ) -> Result<Trainee> {
        let mut vs = nn::VarStore::new(device);
        let net = Net::new(&vs.root(), config)?;
        let mut opt = optim::AdamW::new(&vs, WEIGHT_DECAY);
        match (resumed, init) {
            (Some(r), _) => r.restore(&vs, &mut opt)?,
            (None, Some(tensors)) => checkpoint::copy_into(&vs, |name| tensors.get(name))?,
            (None, None) => {}
        }
        vs.set_kind(Kind::Float);
        let average = WeightAverage::new(&vs, resumed.map(|r| &r.tensors));
        Ok(Trainee { vs, net, opt, average })
    }

    /// One optimizer step on a batch of crops; returns the loss.
    fn step(&mut self, batch: &Batch, loss: Loss, lr: f64) -> Result<f64> {
        let net = &self.net;
        let b = batch.sets.size()[0];
        let n_out = batch.targets.size()[1];
        let index = batch.sets.view([b, 1, 1]).expand([b, 1, n_out], false);
        let pred = net.forward_heads(&batch.x, true)?.gather(1, &index, false).squeeze_dim(1);
        // Labels = image positions + the set's label origin, carried into each
        // crop's unit space (mirrored and rotated with it).
        let origin = net.label_origins().index_select(0, &batch.sets).unsqueeze(-1);
        let offset = batch.frame_to_unit.matmul(&origin).view([b, 1, 2]);
        let pred = (pred.view([b, n_out / 2, 2]) + offset).view([b, n_out]);
        // Mean over the labelled coordinates (a Kaggle row lacks some points).
        let loss = loss.mean(&pred, &batch.targets, &batch.mask);
        self.opt.zero_grad();
        loss.backward();
        self.opt.step(lr);
        self.average.update(self.opt.step);
        Ok(f64::try_from(&loss)?)
    }
}

/// One training batch on the device.
struct Batch {
    /// `[B, 1, S, S]` augmented crops.
    x: Tensor,
    /// `[B, 2N]` unit-space labels.
    targets: Tensor,
    /// `[B, 2N]` 1 for a labelled coordinate, 0 for a missing one.
    mask: Tensor,
    /// `[B]` data set (head) of each crop.
    sets: Tensor,
    /// `[B, 2, 2]` linear part of each crop's frame-to-unit map.
    frame_to_unit: Tensor,
}

impl Batch {
    /// Random augmented crops of the faces `indices` of `pool`.
    fn sample(rng: &mut StdRng, pool: &Pool, indices: &[usize], config: &ModelConfig, device: Device) -> Result<Batch> {
        let (mut pixels, mut targets, mut mask, mut sets, mut frame_to_unit) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for &i in indices {
            let (face, set) = pool.faces[i];
            let s = augment::random_crop(rng, face, &config.crop, config.scheme)?;
            targets.extend(s.targets.iter().flat_map(|p| [p.x, p.y]));
            mask.extend(s.present.iter().flat_map(|&p| [f32::from(u8::from(p)); 2]));
            pixels.push(s.pixels);
            sets.push(set as i64);
            frame_to_unit.extend(s.frame_to_unit);
        }
        let b = indices.len() as i64;
        let crops: Vec<&[u8]> = pixels.iter().map(|p| p.as_slice()).collect();
        Ok(Batch {
            x: augment::photometric(&augment::batch_tensor(&crops, config.input_size, device)),
            targets: Tensor::from_slice(&targets).view([b, -1]).to_device(device),
            mask: Tensor::from_slice(&mask).view([b, -1]).to_device(device),
            sets: Tensor::from_slice(&sets).to_device(device),
            frame_to_unit: Tensor::from_slice(&frame_to_unit).view([b, 2, 2]).to_device(device),
        })
    }
}

/// Trains one epoch (0-based `epoch`) and validates the weight average on `val`.
fn run_epoch(
    opts: &TrainOptions,
    config: &ModelConfig,
    pool: &Pool,
    trainee: &mut Trainee,
    epoch: usize,
    val: &[TrainSet],
) -> Result<EpochRecord> {
    let epoch_start = Instant::now();
    let mut rng = StdRng::seed_from_u64(opts.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64));
    tch::manual_seed((opts.seed as i64).wrapping_add(epoch as i64));
    let mut order = pool.order.clone();
    order.shuffle(&mut rng);
    let total_steps = (pool.batches * opts.epochs) as i64;
    let warmup = pool.batches as i64;
    let bar = progress_bar(pool.batches as u64, &format!("epoch {}/{}", epoch + 1, opts.epochs));
    let (mut loss_sum, mut loss_n) = (0.0, 0usize);
    for indices in order.chunks_exact(opts.batch_size) {
        let batch = Batch::sample(&mut rng, pool, indices, config, opts.device)?;
        let lr = optim::learning_rate(opts.learning_rate, trainee.opt.step, warmup, total_steps);
        let loss = trainee.step(&batch, opts.loss, lr)?;
        if !loss.is_finite() {
            bail!("training diverged at epoch {} (loss {loss})", epoch + 1);
        }
        loss_sum += loss;
        loss_n += 1;
        bar.set_message(format!("loss {:.4}", loss_sum / loss_n as f64));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let val_nme = validate_average(trainee, config, val, opts.device)?;
    let record = EpochRecord {
        epoch: epoch + 1,
        train_loss: loss_sum / loss_n.max(1) as f64,
        val_nme,
        secs: epoch_start.elapsed().as_secs_f64(),
    };
    let nmes: Vec<String> = record.val_nme.iter().map(|(n, v)| format!("{n} {v:.4}")).collect();
    eprintln!(
        "epoch {:>3}/{}: loss {:.4}  val NME {}  ({:.0} s)",
        record.epoch,
        opts.epochs,
        record.train_loss,
        nmes.join(", "),
        record.secs
    );
    Ok(record)
}

/// The validation NME of the weight average on each set, with its own head.
fn validate_average(
    trainee: &mut Trainee,
    config: &ModelConfig,
    val: &[TrainSet],
    device: Device,
) -> Result<Vec<(String, f64)>> {
    trainee.average.swap();
    let mut nmes = Vec::new();
    for set in val {
        let head = config.conventions.iter().position(|c| *c == set.name).unwrap_or(config.default_convention);
        match validate(&trainee.net, config, set, head, device) {
            Ok(Some(nme)) => nmes.push((set.name.clone(), nme)),
            Ok(None) => {}
            Err(e) => {
                trainee.average.swap();
                return Err(e);
            }
        }
    }
    trainee.average.swap();
    Ok(nmes)
}

/// Writes the shipped weights (the moving average, the one validated), the model
/// config with the training record, and the final loss curve.
fn write_outputs(
    opts: &TrainOptions,
    config: ModelConfig,
    mut trainee: Trainee,
    history: &[EpochRecord],
    train_faces: usize,
) -> Result<()> {
    let mut final_config = config;
    final_config.trained = Some(TrainInfo {
        data: opts.data_dirs.iter().map(|d| dataset::set_name(d)).collect(),
        epochs: opts.epochs,
        train_faces,
        repeat: opts.repeat.clone(),
        loss: opts.loss,
        seed: opts.seed,
        train_secs: history.iter().map(|h| h.secs).sum(),
        final_val_nme: history.last().map(|h| h.val_nme.clone()).unwrap_or_default(),
    });
    trainee.average.swap();
    save_weights(&trainee.vs, &opts.out)?;
    let config_path = config_path_for(&opts.out);
    final_config.save(&config_path).with_context(|| format!("{}: cannot write", config_path.display()))?;
    plot::loss_curve(&opts.out.with_extension("loss.png"), history)
}

/// NME of one validation set with the run-time crop for a typical detection, over
/// the faces whose outer eye corners are labelled (and their labelled points).
fn validate(net: &Net, cfg: &ModelConfig, set: &TrainSet, head: usize, device: Device) -> Result<Option<f64>> {
    let _guard = tch::no_grad_guard();
    let scheme = cfg.scheme;
    let (a, b) = scheme.outer_eye_corners();
    let scored: Vec<&LabelledFace> = set.faces.iter().filter(|f| f.present[a] && f.present[b]).collect();
    // Found points are image positions; the labels carry their set's origin.
    let o = Vec::<f32>::try_from(net.label_origins().select(0, head as i64).to_device(Device::Cpu))?;
    let origin = Point::new(o[0], o[1]);
    let mut errors = Vec::new();
    for chunk in scored.chunks(64) {
        let crops: Vec<_> = chunk.iter().map(|f| f.mean_crop(&cfg.crop)).collect();
        let pixels = chunk
            .iter()
            .zip(&crops)
            .map(|(f, c)| Ok(augment::make_crop(f, c, scheme)?.pixels))
            .collect::<Result<Vec<_>>>()?;
        let x = augment::batch_tensor(&pixels.iter().map(|p| p.as_slice()).collect::<Vec<_>>(), cfg.input_size, device);
        let out = net.forward_heads(&x, false)?.select(1, head as i64).to_device(Device::Cpu).contiguous();
        let values = Vec::<f32>::try_from(out.flatten(0, -1))?;
        let n = scheme.num_points();
        for (k, face) in chunk.iter().enumerate() {
            let unit: Vec<Point> =
                values[k * 2 * n..(k + 1) * 2 * n].chunks(2).map(|v| Point::new(v[0], v[1])).collect();
            let pred: Vec<Point> =
                frame_points_from_unit(&unit, &crops[k], cfg.input_size).into_iter().map(|p| p + origin).collect();
            errors.push(masked_nme(&pred, face, scheme));
        }
    }
    Ok((!errors.is_empty()).then(|| errors.iter().sum::<f64>() / errors.len() as f64))
}

/// [`nme`] over the labelled points of `face`.
fn masked_nme(pred: &[Point], face: &LabelledFace, scheme: Scheme) -> f64 {
    if face.present.iter().all(|&p| p) {
        return nme(pred, &face.points, scheme);
    }
    let (a, b) = scheme.outer_eye_corners();
    let iod = face.points[a].distance(face.points[b]) as f64;
    let labelled: Vec<f64> = pred
        .iter()
        .zip(&face.points)
        .zip(&face.present)
        .filter(|(_, &p)| p)
        .map(|((p, t), _)| p.distance(*t) as f64)
        .collect();
    labelled.iter().sum::<f64>() / labelled.len() as f64 / iod.max(1e-6)
}
