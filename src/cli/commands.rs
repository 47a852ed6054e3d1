//! One function per command. Each checks its inputs in the order a user would fix
//! them, then hands off to the library.

use super::args::{BenchArgs, DeviceArgs, EvalArgs, ModelArgs, RunArgs, SourceArgs, TrackingArgs, TrainArgs};
use super::EXIT_INTERRUPTED;
use anyhow::{Context, Result};
use facekp::detect::{AngleSearch, DetectorConfig};
use facekp::encode::EncoderChoice;
use facekp::landmarks::Scheme;
use facekp::model::{self, Keypointer, ModelError};
use facekp::pipeline::{self, OnInterrupt, Pace, Progress, RunOptions, RunSummary, Schedule, StopReason};
use facekp::pose::CameraSpec;
use facekp::render::OverlayOptions;
use facekp::smooth::SmoothParams;
use facekp::source::SourceSpec;
use facekp::track::CropMode;
use facekp::{bench, eval, plot, train};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Width of the image the detector searches in `run` and `bench` (smallest face:
/// 24 px there, 48 px in a 640 px frame). `eval` and `train` search at 640 px.
const DEFAULT_RUN_DETECT_WIDTH: u32 = 320;
/// Noise of `bench --still`, grey levels.
const STILL_NOISE_SIGMA: f64 = 3.0;
const STILL_FRAMES: u64 = 300;
/// The sample video the demo falls back to when no camera opens.
const SAMPLE_VIDEO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hamilton_clip.mp4");

/// `facekp run`: the pipeline on a camera, video or image folder, with a window
/// and/or output files.
pub fn run(args: RunArgs) -> Result<u8> {
    let spec = source_spec(&args);
    let show_window = !args.headless && has_display();
    if !args.headless && !show_window {
        eprintln!("no display (DISPLAY is unset): running headless");
    }
    // Check the inputs in the order a user would fix them: source, model, cascade.
    let source = facekp::source::open(&spec)?;
    args.tracking.apply_threads()?;
    let model = load_model(&args.model, None)?;
    let options = RunOptions {
        schedule: args.tracking.schedule(&spec),
        smoothing: args.tracking.smoothing(),
        camera: args.tracking.camera(),
        record_faces: false,
        show_window,
        output: args.output,
        keypoints: args.keypoints,
        max_frames: args.max_frames,
        progress: if show_window { Progress::Off } else { Progress::Bar },
        overlay: OverlayOptions::default(),
        pace: if args.full_speed { Pace::FullSpeed } else { Pace::Timestamps },
        encoder: args.encoder,
        on_interrupt: OnInterrupt::Finalise,
        source: spec,
    };
    let detector = args.tracking.detector(&options.source);
    let prepared = pipeline::Prepared::new(source, options, detector, &args.tracking.cascade, model)?;
    let description = prepared.source.info().description.clone();
    eprintln!("source: {description}");
    let stop = interrupt_flag()?;
    let summary = pipeline::run(prepared, stop)?;
    print_run_summary(&summary, &description);
    Ok(if summary.stop == StopReason::Interrupted { EXIT_INTERRUPTED } else { 0 })
}

/// The source `run` reads: the one given, else camera 0 when it opens, else the
/// sample video.
fn source_spec(args: &RunArgs) -> SourceSpec {
    let camera = |index| SourceSpec::Camera { index, width: args.width, height: args.height, fps: args.fps };
    let SourceArgs { camera: index, video, images } = &args.source;
    match (*index, video.clone(), images.clone()) {
        (Some(index), _, _) => camera(index),
        (_, Some(path), _) => SourceSpec::Video(path),
        (_, _, Some(path)) => SourceSpec::Images(path),
        (None, None, None) if !facekp::source::list_cameras(1).is_empty() => {
            eprintln!("no source given: using camera 0");
            camera(0)
        }
        (None, None, None) => {
            eprintln!("no source given and no camera: using the sample video {SAMPLE_VIDEO}");
            SourceSpec::Video(PathBuf::from(SAMPLE_VIDEO))
        }
    }
}

fn print_run_summary(summary: &RunSummary, description: &str) {
    let dropped = match summary.dropped {
        0 => String::new(),
        n => format!(", {n} stale camera frames dropped"),
    };
    let paced = match summary.display_skipped {
        0 => String::new(),
        n => format!(", {n} frames not displayed to keep the video's pace (all are in the outputs)"),
    };
    eprintln!(
        "{} frames, {} faces ({} frames with a face) in {:.1} s: {:.1} fps{dropped}{paced}",
        summary.frames,
        summary.faces,
        summary.frames_with_faces,
        summary.secs,
        summary.fps(),
    );
    if !summary.skipped_names.is_empty() {
        eprintln!(
            "warning: {description}: {} files could not be decoded and were skipped: {}",
            summary.skipped_names.len(),
            summary.skipped_names.join(", ")
        );
    } else if summary.skipped > 0 {
        eprintln!(
            "warning: {description}: {} frames could not be decoded (truncated or corrupt input); every decodable frame was processed",
            summary.skipped
        );
    }
    if let Some(encoder) = summary.encoder.filter(|_| !summary.outputs.is_empty()) {
        eprintln!("annotated video encoded by {encoder}");
    }
    for p in &summary.outputs {
        eprintln!("wrote {}", p.display());
    }
}

/// `facekp bench`: speed, latency or steadiness figures from the pipeline's own
/// counters, and with `--compare` how far tracking is from detecting every frame.
pub fn bench(args: BenchArgs) -> Result<u8> {
    let scheme = args.model.scheme;
    args.tracking.apply_threads()?;
    if let Some(csv) = &args.rotation_sweep {
        return rotation_sweep(&args, csv);
    }
    if let Some(csv) = &args.scale_sweep {
        return scale_sweep(&args, csv);
    }
    if let Some(csv) = &args.motion_sweep {
        return motion_sweep(&args, csv);
    }
    if !args.false_faces.is_empty() {
        return false_faces(&args);
    }
    let spec = match (&args.video, &args.still) {
        (Some(v), _) if args.live => SourceSpec::PacedVideo(v.clone()),
        (Some(v), _) => SourceSpec::Video(v.clone()),
        (_, Some(p)) => SourceSpec::Still {
            path: p.clone(),
            frames: args.frames.unwrap_or(STILL_FRAMES),
            noise_sigma: STILL_NOISE_SIGMA,
        },
        _ => anyhow::bail!("give --video, --still or a sweep"),
    };
    let stop = interrupt_flag()?;
    let pass = BenchPass { args: &args, spec: &spec, stop: &stop };
    let still = args.still.is_some();
    let summary = pass.run(args.tracking.schedule(&spec), still || args.compare)?;
    let report = bench::report(&summary, scheme, if still { bench::Jitter::Measure } else { bench::Jitter::Skip });
    report.print_human(summary.frames);
    let agreement = if args.compare {
        let every = pass.run(Schedule::DETECT_EVERY_FRAME, true)?;
        let a = bench::agreement(&every.faces_per_frame, &summary.faces_per_frame, scheme);
        println!(
            "tracked vs detect-every-frame: {} of {} faces matched, mean difference {:.4} of the inter-ocular distance; {} of {} face runs of 10+ frames missed",
            a.faces_compared, a.faces_detected, a.mean_diff_iod, a.runs_missed, a.runs_10plus
        );
        Some(a)
    } else {
        None
    };
    if args.json {
        let mut value = serde_json::to_value(&report).context("report")?;
        if let Some(a) = agreement {
            value["agreement"] = serde_json::to_value(a).context("report")?;
        }
        println!("{value}");
    }
    Ok(if stop.load(Ordering::SeqCst) { EXIT_INTERRUPTED } else { 0 })
}

/// A sweep's data: an annotated CSV, its images and the model with that set's head.
struct SweepData {
    set: facekp::dataset::LoadedSet,
    model: Keypointer,
}

impl SweepData {
    fn load(args: &BenchArgs, flag: &str, csv: &Path) -> Result<SweepData> {
        if !csv.is_file() {
            anyhow::bail!("{flag} {}: file not found", csv.display());
        }
        let dir = csv.parent().unwrap_or(Path::new(".")).to_path_buf();
        let name = facekp::dataset::set_name(&dir);
        let weights = args.model.weights.clone().unwrap_or_else(|| default_weights(args.model.scheme));
        let cfg = model::ModelConfig::load(&model::config_path_for(&weights)).ok();
        let convention = cfg.filter(|c| c.conventions.contains(&name)).map(|_| name.clone());
        let model = load_model(&args.model, convention.as_deref())?;
        let set = facekp::dataset::load_set(&name, csv, &dir.join("images"))?;
        Ok(SweepData { set, model })
    }
}

/// Seeds the noise of the scale and motion sweeps when `--noise-seed` asks for it.
fn seed_sweep_noise(args: &BenchArgs) -> Result<()> {
    match args.noise_seed {
        Some(seed) => bench::scale::seed_noise(seed).context("--noise-seed"),
        None => Ok(()),
    }
}

/// The detector and face stage of a sweep, set up as `run` sets them up for a video.
fn sweep_stages(args: &BenchArgs, model: Keypointer) -> Result<(pipeline::DetectStage, pipeline::FaceStage, Schedule)> {
    let tracking = &args.tracking;
    let schedule = Schedule { detect_every: tracking.detect_every, crops: CropMode::Keypoints };
    let width = tracking.detect_width.unwrap_or(DEFAULT_RUN_DETECT_WIDTH);
    let config = DetectorConfig { max_width: width, angles: AngleSearch::Cycle };
    let detector = pipeline::scheduled_detector(&tracking.cascade, config, model.config())?;
    let upright = DetectorConfig { angles: AngleSearch::Upright, ..config };
    let face_detector = facekp::detect::HaarDetector::new(&tracking.cascade, upright)?;
    let stage =
        pipeline::FaceStage::new(face_detector, model, CropMode::Keypoints, tracking.smoothing(), tracking.camera());
    let detect = pipeline::DetectStage::new(detector, u64::from(tracking.detect_every));
    Ok((detect, stage, schedule))
}

/// `bench --rotation-sweep`: faces of an annotated CSV turned in the image plane.
fn rotation_sweep(args: &BenchArgs, csv: &Path) -> Result<u8> {
    let data = SweepData::load(args, "--rotation-sweep", csv)?;
    let (mut detect, mut stage, schedule) = sweep_stages(args, data.model)?;
    let faces = args.sweep_faces.map(|n| n as usize);
    let report = bench::sweep::rotation_sweep(&data.set, faces, &mut stage, &mut detect.detector, schedule)?;
    for b in &report.bands {
        let nme = b.nme.map_or("-".to_string(), |e| format!("{e:.4}"));
        println!("turned {:>5} deg: followed {:.3} of {} frames, NME {nme}", b.band, b.followed, b.frames);
    }
    for s in &report.stills {
        println!("photo turned {:+} deg: found {:.3} of {} faces", s.angle_deg, s.found, report.faces);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report).context("report")?);
    }
    Ok(0)
}

/// `bench --scale-sweep`: faces of an annotated CSV, small, in HD frames.
fn scale_sweep(args: &BenchArgs, csv: &Path) -> Result<u8> {
    let data = SweepData::load(args, "--scale-sweep", csv)?;
    let (mut detect, mut stage, schedule) = sweep_stages(args, data.model)?;
    let faces = args.sweep_faces.map(|n| n as usize);
    seed_sweep_noise(args)?;
    let report = bench::scale::scale_sweep(&data.set, faces, &mut stage, &mut detect, schedule)?;
    for s in &report.sizes {
        println!("inter-ocular {:>3} px: found {:.3} of {} faces", s.iod_px, s.found, report.faces);
    }
    println!("fps {:.1} (detect and face stages one after the other)", report.fps);
    if args.json {
        println!("{}", serde_json::to_string(&report).context("report")?);
    }
    Ok(0)
}

/// `bench --motion-sweep`: faces of an annotated CSV held still, then panned or turned.
fn motion_sweep(args: &BenchArgs, csv: &Path) -> Result<u8> {
    let data = SweepData::load(args, "--motion-sweep", csv)?;
    let (mut detect, mut stage, schedule) = sweep_stages(args, data.model)?;
    let faces = args.sweep_faces.map(|n| n as usize);
    seed_sweep_noise(args)?;
    let report = bench::motion::motion_sweep(&data.set, faces, &mut stage, &mut detect.detector, schedule)?;
    let figure = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |e| format!("{e:.digits$}"));
    println!(
        "still: NME {}, jitter {} of the inter-ocular distance ({} faces)",
        figure(report.nme_still, 4),
        figure(report.jitter, 5),
        report.faces
    );
    for m in &report.motions {
        println!(
            "{:<18} NME still {}, moving {} ({}x), followed {:.3} of the moving frames",
            m.motion,
            figure(m.nme_still, 4),
            figure(m.nme_moving, 4),
            figure(m.ratio, 3),
            m.followed
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&report).context("report")?);
    }
    Ok(0)
}

/// `bench --false-faces`: faces found on annotated photos, as `run --images` finds them.
fn false_faces(args: &BenchArgs) -> Result<u8> {
    let tracking = &args.tracking;
    let width = tracking.detect_width.unwrap_or(DetectorConfig::default().max_width);
    let config = DetectorConfig { max_width: width, angles: AngleSearch::All };
    let model = load_model(&args.model, None)?;
    let mut detector = pipeline::scheduled_detector(&tracking.cascade, config, model.config())?;
    let upright = DetectorConfig { angles: AngleSearch::Upright, ..config };
    let face_detector = facekp::detect::HaarDetector::new(&tracking.cascade, upright)?;
    let mut stage =
        pipeline::FaceStage::new(face_detector, model, CropMode::Detections, tracking.smoothing(), tracking.camera());
    let mut reports = Vec::new();
    for file in &args.false_faces {
        let r = bench::ghosts::false_faces(file, &mut stage, &mut detector)?;
        println!(
            "{}: {} photos, {} annotated faces: found {}, ghosts {}, other faces {} (on {} photos)",
            r.file,
            r.photos,
            r.annotated,
            r.found,
            r.ghosts,
            r.others,
            r.photos_with_extra.len()
        );
        reports.push(r);
    }
    if args.json {
        println!("{}", serde_json::to_string(&reports).context("report")?);
    }
    Ok(0)
}

/// One headless pass of `bench` over its source.
struct BenchPass<'a> {
    args: &'a BenchArgs,
    spec: &'a SourceSpec,
    stop: &'a Arc<AtomicBool>,
}

impl BenchPass<'_> {
    /// Runs the pipeline with `schedule`, keeping every frame's faces when
    /// `record_faces` (for jitter and agreement).
    fn run(&self, schedule: Schedule, record_faces: bool) -> Result<RunSummary> {
        let tracking = &self.args.tracking;
        let source = facekp::source::open(self.spec)?;
        let model = load_model(&self.args.model, None)?;
        let options = RunOptions {
            source: self.spec.clone(),
            schedule,
            smoothing: tracking.smoothing(),
            camera: tracking.camera(),
            record_faces,
            show_window: false,
            output: None,
            keypoints: None,
            max_frames: self.args.frames,
            progress: Progress::Off,
            overlay: OverlayOptions::default(),
            pace: Pace::FullSpeed,
            encoder: EncoderChoice::Auto,
            on_interrupt: OnInterrupt::Finalise,
        };
        let detector = tracking.detector(self.spec);
        let prepared = pipeline::Prepared::new(source, options, detector, &tracking.cascade, model)?;
        eprintln!("source: {}", prepared.source.info().description);
        pipeline::run(prepared, self.stop.clone())
    }
}

/// `facekp cameras`: the camera indices that open, with their default mode.
pub fn cameras() -> Result<u8> {
    let cams = facekp::source::list_cameras(16);
    if cams.is_empty() {
        println!("no camera opens (V4L2 indices 0-15)");
    }
    for c in cams {
        println!("camera {}: {}x{} at {:.1} fps", c.index, c.width, c.height, c.fps);
    }
    Ok(0)
}

/// `facekp train`.
pub fn train(args: TrainArgs) -> Result<u8> {
    let device = args.device.resolve()?;
    eprintln!("device: {}", model::device_name(device));
    let repeat = match args.repeat.is_empty() {
        true => vec![1; args.data.len()],
        false => args.repeat.into_iter().map(|r| r as usize).collect(),
    };
    train::train(&train::TrainOptions {
        scheme: args.points,
        repeat,
        data_dirs: args.data,
        out: args.out,
        epochs: args.epochs as usize,
        resume: args.resume,
        init: args.init,
        prior_fallback: Some(default_weights(args.points)),
        seed: args.seed,
        device,
        batch_size: args.batch_size as usize,
        learning_rate: args.lr,
        loss: args.loss,
        cascade: args.cascade,
        shape: train::ShapeOverride {
            channels: args.channels.map(|c| c.into_iter().map(i64::from).collect()),
            extra_convs: args.extra_convs.map(|e| e.into_iter().map(|n| n as usize).collect()),
        },
    })?;
    Ok(0)
}

/// `facekp eval`: scores a model on an annotated CSV.
pub fn eval(args: EvalArgs) -> Result<u8> {
    let csv = args.csv;
    if !csv.is_file() {
        anyhow::bail!("--csv {}: file not found", csv.display());
    }
    let csv_dir = csv.parent().unwrap_or(Path::new(".")).to_path_buf();
    let images = args.images.unwrap_or_else(|| csv_dir.join("images"));
    let weights = args.weights.unwrap_or_else(|| default_weights(args.points));
    // The output head: --convention, else the one named like the data set's
    // folder (ytf68/val.csv -> ytf68; a Kaggle CSV: kaggle) when the model learned
    // it, else the default.
    let set = match facekp::kaggle::is_kaggle_csv(&csv)? {
        true => facekp::kaggle::CONVENTION.to_string(),
        false => facekp::dataset::set_name(&csv_dir),
    };
    let convention = args.convention.or_else(|| {
        let cfg = model::ModelConfig::load(&model::config_path_for(&weights)).ok();
        cfg.filter(|c| c.conventions.contains(&set)).map(|_| set)
    });
    let model_args = ModelArgs { scheme: args.points, weights: Some(weights), device: args.device };
    let model = load_model(&model_args, convention.as_deref())?;
    let options =
        eval::EvalOptions { scheme: args.points, csv: csv.clone(), images, boxes: args.boxes, cascade: args.cascade };
    let report = eval::evaluate(&model, &options)?;
    report.print_human();
    if let Some(plot) = args.plot {
        let title = format!("CED {} ({}-point, {:?} boxes)", csv.display(), args.points.num_points(), args.boxes);
        plot::ced_curve(&plot, &title, &[("facekp".to_string(), report.errors.clone())])?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report).context("report")?);
    }
    Ok(0)
}

impl TrackingArgs {
    /// Detector cadence and crops: `--no-track` detects on every frame, and so does
    /// an image folder (its photos are unrelated to each other).
    pub(super) fn schedule(&self, spec: &SourceSpec) -> Schedule {
        if self.no_track || matches!(spec, SourceSpec::Images(_)) {
            Schedule::DETECT_EVERY_FRAME
        } else {
            Schedule { detect_every: self.detect_every, crops: CropMode::Keypoints }
        }
    }

    /// The detector settings for `spec`: photos are searched at the width `eval`
    /// uses and at every turn of the image; live and video frames at a smaller
    /// width, for speed, one turn per detector run (upright every run without
    /// tracking, which detects every frame).
    pub(super) fn detector(&self, spec: &SourceSpec) -> DetectorConfig {
        let (width, angles) = match spec {
            SourceSpec::Images(_) => (DetectorConfig::default().max_width, AngleSearch::All),
            _ if self.no_track => (DEFAULT_RUN_DETECT_WIDTH, AngleSearch::Upright),
            _ => (DEFAULT_RUN_DETECT_WIDTH, AngleSearch::Cycle),
        };
        DetectorConfig { max_width: self.detect_width.unwrap_or(width), angles }
    }

    /// Sets the thread pools of libtorch and OpenCV.
    pub(super) fn apply_threads(&self) -> Result<()> {
        tch::set_num_threads(self.cnn_threads);
        opencv::core::set_num_threads(self.cv_threads).context("setting OpenCV's thread count")?;
        Ok(())
    }

    /// The camera head poses are solved for.
    pub(super) fn camera(&self) -> CameraSpec {
        CameraSpec { focal_px: self.focal_length, principal_point: self.principal_point }
    }

    pub(super) fn smoothing(&self) -> Option<SmoothParams> {
        (!self.no_smooth).then_some(SmoothParams { min_cutoff_hz: self.smooth_min_cutoff, beta: self.smooth_beta })
    }
}

/// The shipped weights for a scheme.
fn default_weights(scheme: Scheme) -> PathBuf {
    let name = match scheme {
        Scheme::P68 => "face68.safetensors",
        Scheme::P15 => "face15.safetensors",
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights").join(name)
}

fn has_display() -> bool {
    std::env::var_os("DISPLAY").is_some_and(|d| !d.is_empty())
}

/// Loads the model `args` name (default weights: the shipped model for its
/// scheme), checking it is a model of that scheme, with the output head
/// `convention` (default: the model's).
pub(super) fn load_model(args: &ModelArgs, convention: Option<&str>) -> Result<Keypointer> {
    let DeviceArgs { device, precision } = args.device;
    let device = device.resolve()?;
    let precision = precision.resolve(device)?;
    eprintln!("device: {}, {}", model::device_name(device), precision.name());
    let weights = args.weights.clone().unwrap_or_else(|| default_weights(args.scheme));
    let model = Keypointer::load(&weights, device, precision, convention)?;
    let found = model.config().scheme;
    if found != args.scheme {
        let (found, wanted) = (found.num_points(), args.scheme.num_points());
        return Err(ModelError::WrongScheme { path: weights, found, wanted }.into());
    }
    Ok(model)
}

/// The flag Ctrl-C and SIGTERM set: the first stops the pipeline cleanly, the
/// second exits at once.
pub(super) fn interrupt_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            facekp::fsutil::remove_pending_temps();
            super::exit_now(EXIT_INTERRUPTED);
        }
        eprintln!("\nstopping (press Ctrl-C again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;
    Ok(stop)
}
