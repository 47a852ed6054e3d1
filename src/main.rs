//! The `facekp` command line: parse, validate, call a command, print errors once.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use facekp::detect::DetectorConfig;
use facekp::landmarks::Scheme;
use facekp::model::{self, Keypointer};
use facekp::pipeline::{self, RunOptions, StopReason};
use facekp::render::OverlayOptions;
use facekp::smooth::OneEuroParams;
use facekp::source::SourceSpec;
use facekp::train::{self, eval};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Exit code after Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;
/// Detector cadence when tracking (see `--detect-every`): new faces are picked up
/// within a third of a second at 30 fps, and the cascade (about 40 ms at 320 px on
/// one core) costs 4 ms per frame, spread over frames by the detect stage.
const DEFAULT_DETECT_EVERY: u32 = 10;
/// Width of the image the detector searches in `run` and `bench` (smallest face:
/// 24 px there, 48 px in a 640 px frame). `eval` and `train` search at 640 px.
const DEFAULT_RUN_DETECT_WIDTH: u32 = 320;
/// Thread pools on a 2-core machine: the pipeline already runs decode, detection,
/// the face stage and the sinks in their own threads, so the CNN gets one thread;
/// OpenCV gets two, because the Haar cascade is the longest single job and splits
/// its pyramid over both cores (measured: see README "Speed and steadiness").
const DEFAULT_CNN_THREADS: i32 = 1;
const DEFAULT_CV_THREADS: i32 = 2;
/// Noise of `bench --still`, grey levels.
const STILL_NOISE_SIGMA: f64 = 3.0;
const STILL_FRAMES: u64 = 300;
/// The sample video the demo falls back to when no camera opens.
const SAMPLE_VIDEO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hamilton_clip.mp4");

#[derive(Parser)]
#[command(name = "facekp", version, about = "Real-time facial keypoints: Haar cascade + CNN (libtorch)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
#[group(multiple = false)]
struct SourceArgs {
    /// Camera index (V4L2)
    #[arg(long)]
    camera: Option<i32>,
    /// Video file (anything OpenCV's FFmpeg backend decodes)
    #[arg(long)]
    video: Option<PathBuf>,
    /// Folder of jpg/png/bmp images, read in name order
    #[arg(long)]
    images: Option<PathBuf>,
}

/// The model to run, shared by `run` and `bench`.
#[derive(clap::Args)]
struct ModelArgs {
    /// Model: 68 points (224 px input) or 15 points (96 px input)
    #[arg(long = "model", default_value = "68", value_parser = parse_scheme)]
    scheme: Scheme,
    /// Weights (default: the shipped model); its NAME.json must be beside it
    #[arg(long)]
    weights: Option<PathBuf>,
    /// auto (CUDA when libtorch sees a GPU, else CPU), cpu or cuda
    #[arg(long, default_value = "auto")]
    device: String,
    /// CNN number format: auto (bf16 convolutions on a CPU with AVX512-BF16, else
    /// f32), f32 or bf16
    #[arg(long, default_value = "auto")]
    precision: String,
}

/// Detection, tracking and smoothing settings shared by `run` and `bench`.
#[derive(clap::Args)]
struct TrackingArgs {
    /// Run the Haar detector every N frames to find new faces (and at once when a
    /// track is lost); in between, follow faces by their keypoints
    #[arg(long, default_value_t = DEFAULT_DETECT_EVERY, value_parser = clap::value_parser!(u32).range(1..=1000))]
    detect_every: u32,
    /// No tracking: run the detector on every frame and crop every face from its box
    #[arg(long)]
    no_track: bool,
    /// Frames wider than this are downscaled for the Haar detector; larger finds
    /// smaller faces, slower [default: 320 for cameras and videos, 640 for --images]
    #[arg(long, value_parser = clap::value_parser!(u32).range(64..=8192))]
    detect_width: Option<u32>,
    /// One Euro filter: minimum cutoff (Hz); lower is steadier
    #[arg(long, default_value_t = facekp::smooth::DEFAULT_MIN_CUTOFF_HZ)]
    smooth_min_cutoff: f32,
    /// One Euro filter: speed coefficient; higher lags less on fast motion
    #[arg(long, default_value_t = facekp::smooth::DEFAULT_BETA)]
    smooth_beta: f32,
    /// Raw keypoints, no smoothing
    #[arg(long)]
    no_smooth: bool,
    #[arg(long, default_value = facekp::detect::DEFAULT_CASCADE)]
    cascade: PathBuf,
    /// libtorch threads for the CNN (intra-op)
    #[arg(long, default_value_t = DEFAULT_CNN_THREADS, value_parser = clap::value_parser!(i32).range(1..=256))]
    cnn_threads: i32,
    /// OpenCV threads (Haar detector, warps, drawing)
    #[arg(long, default_value_t = DEFAULT_CV_THREADS, value_parser = clap::value_parser!(i32).range(1..=256))]
    cv_threads: i32,
}

impl TrackingArgs {
    /// Detector cadence and whether to track: `--no-track` detects on every frame,
    /// and so does an image folder (its photos are unrelated to each other).
    fn schedule(&self, spec: &SourceSpec) -> (u32, bool) {
        if self.no_track || matches!(spec, SourceSpec::Images(_)) {
            (1, false)
        } else {
            (self.detect_every, true)
        }
    }

    /// The detector settings for `spec`: photos are searched at the width `eval`
    /// uses; live and video frames at a smaller one, for speed.
    fn detector(&self, spec: &SourceSpec) -> DetectorConfig {
        let default = match spec {
            SourceSpec::Images(_) => DetectorConfig::default().max_width,
            _ => DEFAULT_RUN_DETECT_WIDTH,
        };
        DetectorConfig { max_width: self.detect_width.unwrap_or(default) }
    }

    /// Sets the thread pools of libtorch and OpenCV.
    fn apply_threads(&self) -> Result<()> {
        tch::set_num_threads(self.cnn_threads);
        opencv::core::set_num_threads(self.cv_threads).context("setting OpenCV's thread count")?;
        Ok(())
    }

    fn smoothing(&self) -> Result<Option<OneEuroParams>> {
        if self.no_smooth {
            return Ok(None);
        }
        if !(self.smooth_min_cutoff.is_finite() && self.smooth_min_cutoff > 0.0) {
            bail!("--smooth-min-cutoff {}: must be a positive frequency", self.smooth_min_cutoff);
        }
        if !(self.smooth_beta.is_finite() && self.smooth_beta >= 0.0) {
            bail!("--smooth-beta {}: must be zero or positive", self.smooth_beta);
        }
        Ok(Some(OneEuroParams { min_cutoff_hz: self.smooth_min_cutoff, beta: self.smooth_beta }))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Find faces and their keypoints in a camera, video or image folder
    /// (no source: camera 0 if it opens, else the bundled sample video)
    Run {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        model: ModelArgs,
        /// No window (the default when there is no display)
        #[arg(long)]
        headless: bool,
        /// Annotated video (.mp4 or .avi), same size and fps as the input
        #[arg(long)]
        output: Option<PathBuf>,
        /// Keypoint file: .csv (a row per face) or .jsonl (an object per frame)
        #[arg(long)]
        keypoints: Option<PathBuf>,
        /// Stop after this many frames
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_frames: Option<u64>,
        /// Camera: requested width
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16384))]
        width: Option<u32>,
        /// Camera: requested height
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16384))]
        height: Option<u32>,
        /// Camera: requested frame rate
        #[arg(long)]
        fps: Option<f64>,
        #[command(flatten)]
        tracking: TrackingArgs,
    },
    /// Measure speed (decode, detect/track, infer, draw; no window, no files), or
    /// keypoint steadiness on a still photo with fresh noise every frame
    Bench {
        /// Video to process
        #[arg(long, conflicts_with = "still", required_unless_present = "still")]
        video: Option<PathBuf>,
        /// Photo repeated every frame with Gaussian noise (sigma 3 grey levels)
        #[arg(long)]
        still: Option<PathBuf>,
        /// Frames to process (default: the whole video; 300 for --still)
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        frames: Option<u64>,
        #[command(flatten)]
        model: ModelArgs,
        /// Play the video at its frame rate as a live camera (stale frames dropped)
        /// and report capture-to-display latency
        #[arg(long, requires = "video")]
        live: bool,
        /// Also run the video detecting on every frame and report how far tracked
        /// keypoints are from those, and any face run of 10+ frames the tracker misses
        #[arg(long, requires = "video")]
        compare: bool,
        /// Print the figures as one JSON object on the last line
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tracking: TrackingArgs,
    },
    /// List camera indices that open, with their default mode
    Cameras,
    /// Train a keypoint CNN on data set folders (train.csv, val.csv, images/)
    Train {
        /// Points of the model: 68 (224 px input) or 15 (96 px input)
        #[arg(long, value_parser = parse_scheme)]
        points: Scheme,
        /// Data set folders, comma separated
        #[arg(long, value_delimiter = ',', required = true)]
        data: Vec<PathBuf>,
        /// Times each --data folder's faces enter every epoch, comma separated, one
        /// per folder (default: 1 each)
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=100))]
        repeat: Vec<u32>,
        /// Weights file to write (NAME.safetensors; NAME.json and NAME.loss.png beside it)
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=10000))]
        epochs: u32,
        /// Continue from NAME.ckpt (written after every epoch)
        #[arg(long)]
        resume: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value = "auto")]
        device: String,
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(2..=4096))]
        batch_size: u32,
        #[arg(long, default_value_t = 2e-3)]
        lr: f64,
        #[arg(long, default_value = facekp::detect::DEFAULT_CASCADE)]
        cascade: PathBuf,
    },
    /// Evaluate a model on an annotated CSV: NME, failure rate, per region, speed
    Eval {
        #[arg(long, value_parser = parse_scheme)]
        points: Scheme,
        /// Data set CSV (image,x0,y0,...,x67,y67)
        #[arg(long)]
        csv: PathBuf,
        /// Image folder (default: images/ beside the CSV)
        #[arg(long)]
        images: Option<PathBuf>,
        /// Weights (default: the shipped model for --points)
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "haar")]
        boxes: eval::Boxes,
        /// Annotation convention (output head), e.g. ytf68 or helen68 (default: the
        /// CSV folder's name when the model has that head, else the model's default)
        #[arg(long)]
        convention: Option<String>,
        /// Write the cumulative error distribution as PNG
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Print the figures as one JSON object on the last line
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "auto")]
        device: String,
        /// CNN number format: auto, f32 or bf16 (as for `run`)
        #[arg(long, default_value = "auto")]
        precision: String,
        #[arg(long, default_value = facekp::detect::DEFAULT_CASCADE)]
        cascade: PathBuf,
    },
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse::<u32>().ok().and_then(Scheme::from_count).ok_or_else(|| format!("{s:?} is not a model: use 68 or 15"))
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

/// Loads `weights` (default: the shipped model for `scheme`), checking it is a
/// `scheme` model, on `device` in `precision`, with the output head `convention`
/// (default: the model's).
fn load_model(
    weights: Option<PathBuf>,
    scheme: Scheme,
    device: &str,
    precision: &str,
    convention: Option<&str>,
) -> Result<Keypointer> {
    let device = model::resolve_device(device)?;
    let precision = model::Precision::resolve(precision, device)?;
    eprintln!("device: {}, {}", model::device_name(device), precision.name());
    let weights = weights.unwrap_or_else(|| default_weights(scheme));
    let model = Keypointer::load(&weights, device, precision, convention)?;
    if model.config().scheme != scheme {
        return Err(model::ModelError::WrongScheme {
            path: weights,
            found: model.config().scheme.num_points(),
            wanted: scheme.num_points(),
        }
        .into());
    }
    Ok(model)
}

/// Installs the Ctrl-C / SIGTERM handler: the first stops the pipeline cleanly,
/// the second exits at once.
fn install_interrupt(stop: Arc<AtomicBool>) -> Result<()> {
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            facekp::fsutil::remove_pending_temps();
            exit_now(EXIT_INTERRUPTED);
        }
        eprintln!("\nstopping (press Ctrl-C again to quit at once)");
    })
    .context("installing the Ctrl-C handler")
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Run { source, model, headless, output, keypoints, max_frames, width, height, fps, tracking } => {
            let spec = match (source.camera, source.video, source.images) {
                (Some(index), _, _) => SourceSpec::Camera { index, width, height, fps },
                (_, Some(path), _) => SourceSpec::Video(path),
                (_, _, Some(path)) => SourceSpec::Images(path),
                (None, None, None) => {
                    if !facekp::source::list_cameras(1).is_empty() {
                        eprintln!("no source given: using camera 0");
                        SourceSpec::Camera { index: 0, width, height, fps }
                    } else {
                        eprintln!("no source given and no camera: using the sample video {SAMPLE_VIDEO}");
                        SourceSpec::Video(PathBuf::from(SAMPLE_VIDEO))
                    }
                }
            };
            if let Some(f) = fps {
                if !(f.is_finite() && f > 0.0 && f <= 1000.0) {
                    bail!("--fps {f}: must be a frame rate between 0 and 1000");
                }
            }
            let show_window = !headless && has_display();
            if !headless && !show_window {
                eprintln!("no display (DISPLAY is unset): running headless");
            }
            // Check the inputs in the order a user would fix them: source, model, cascade.
            let source = facekp::source::open(&spec)?;
            let smoothing = tracking.smoothing()?;
            tracking.apply_threads()?;
            let model = load_model(model.weights, model.scheme, &model.device, &model.precision, None)?;
            let (detect_every, track) = tracking.schedule(&spec);
            let options = RunOptions {
                source: spec,
                detect_every,
                tracking: track,
                smoothing,
                record_faces: false,
                show_window,
                output,
                keypoints,
                max_frames,
                progress: !show_window,
                overlay: OverlayOptions::default(),
            };
            let detector = tracking.detector(&options.source);
            let prepared = pipeline::Prepared::new(source, options, detector, &tracking.cascade, model)?;
            let info_description = prepared.source.info().description.clone();
            eprintln!("source: {info_description}");
            let stop = Arc::new(AtomicBool::new(false));
            install_interrupt(stop.clone())?;
            let summary = pipeline::run(prepared, stop)?;
            eprintln!(
                "{} frames, {} faces ({} frames with a face) in {:.1} s: {:.1} fps{}",
                summary.frames,
                summary.faces,
                summary.frames_with_faces,
                summary.secs,
                summary.frames as f64 / summary.secs.max(1e-9),
                if summary.dropped > 0 {
                    format!(", {} stale camera frames dropped", summary.dropped)
                } else {
                    String::new()
                },
            );
            if summary.skipped > 0 {
                eprintln!(
                    "warning: {}: {} frames could not be decoded (truncated or corrupt input); every decodable frame was processed",
                    info_description, summary.skipped
                );
            }
            for p in &summary.outputs {
                eprintln!("wrote {}", p.display());
            }
            Ok(if summary.stop == StopReason::Interrupted { EXIT_INTERRUPTED } else { 0 })
        }
        Command::Bench { video, still, frames, model, live, compare, json, tracking } => {
            let scheme = model.scheme;
            tracking.apply_threads()?;
            let spec = match (&video, &still) {
                (Some(v), _) if live => SourceSpec::PacedVideo(v.clone()),
                (Some(v), _) => SourceSpec::Video(v.clone()),
                (_, Some(p)) => SourceSpec::Still {
                    path: p.clone(),
                    frames: frames.unwrap_or(STILL_FRAMES),
                    noise_sigma: STILL_NOISE_SIGMA,
                },
                _ => bail!("give --video or --still"),
            };
            let smoothing = tracking.smoothing()?;
            let stop = Arc::new(AtomicBool::new(false));
            install_interrupt(stop.clone())?;
            let bench_pass = |(detect_every, track): (u32, bool), record_faces: bool| -> Result<pipeline::RunSummary> {
                let source = facekp::source::open(&spec)?;
                let model = load_model(model.weights.clone(), scheme, &model.device, &model.precision, None)?;
                let options = RunOptions {
                    source: spec.clone(),
                    detect_every,
                    tracking: track,
                    smoothing,
                    record_faces,
                    show_window: false,
                    output: None,
                    keypoints: None,
                    max_frames: frames,
                    progress: false,
                    overlay: OverlayOptions::default(),
                };
                let detector = tracking.detector(&spec);
                let prepared = pipeline::Prepared::new(source, options, detector, &tracking.cascade, model)?;
                eprintln!("source: {}", prepared.source.info().description);
                pipeline::run(prepared, stop.clone())
            };
            let summary = bench_pass(tracking.schedule(&spec), still.is_some() || compare)?;
            let report = facekp::bench::report(&summary, scheme, still.is_some());
            report.print_human(summary.frames);
            let agreement = if compare {
                let every = bench_pass((1, false), true)?;
                let a = facekp::bench::agreement(&every.faces_per_frame, &summary.faces_per_frame, scheme);
                println!(
                    "tracked vs detect-every-frame: {} of {} faces matched, mean difference {:.4} of the inter-ocular distance; {} of {} face runs of 10+ frames missed",
                    a.faces_compared, a.faces_detected, a.mean_diff_iod, a.runs_missed, a.runs_10plus
                );
                Some(a)
            } else {
                None
            };
            if json {
                let mut value = serde_json::to_value(&report).context("report")?;
                if let Some(a) = agreement {
                    value["agreement"] = serde_json::to_value(a).context("report")?;
                }
                println!("{value}");
            }
            Ok(if stop.load(Ordering::SeqCst) { EXIT_INTERRUPTED } else { 0 })
        }
        Command::Cameras => {
            let cams = facekp::source::list_cameras(16);
            if cams.is_empty() {
                println!("no camera opens (V4L2 indices 0-15)");
            }
            for (i, w, h, f) in cams {
                println!("camera {i}: {w}x{h} at {f:.1} fps");
            }
            Ok(0)
        }
        Command::Train { points, data, repeat, out, epochs, resume, seed, device, batch_size, lr, cascade } => {
            let device = model::resolve_device(&device)?;
            eprintln!("device: {}", model::device_name(device));
            train::train(&train::TrainOptions {
                scheme: points,
                repeat: if repeat.is_empty() {
                    vec![1; data.len()]
                } else {
                    repeat.into_iter().map(|r| r as usize).collect()
                },
                data_dirs: data,
                out,
                epochs: epochs as usize,
                resume,
                seed,
                device,
                batch_size: batch_size as usize,
                learning_rate: lr,
                cascade,
            })?;
            Ok(0)
        }
        Command::Eval { points, csv, images, weights, boxes, convention, plot, json, device, precision, cascade } => {
            if !csv.is_file() {
                bail!("--csv {}: file not found", csv.display());
            }
            let images = images.unwrap_or_else(|| csv.parent().unwrap_or(Path::new(".")).join("images"));
            let weights = weights.unwrap_or_else(|| default_weights(points));
            // The output head: --convention, else the one named like the data set's
            // folder (ytf68/val.csv -> ytf68) when the model learned it, else the default.
            let convention = convention.or_else(|| {
                let set = facekp::train::data::set_name(csv.parent().unwrap_or(Path::new(".")));
                let cfg = model::ModelConfig::load(&model::config_path_for(&weights)).ok();
                cfg.filter(|c| c.conventions.contains(&set)).map(|_| set)
            });
            let model = load_model(Some(weights), points, &device, &precision, convention.as_deref())?;
            let report = eval::evaluate(
                &model,
                &eval::EvalOptions { scheme: points, csv: csv.clone(), images, boxes, cascade },
            )?;
            report.print_human();
            if let Some(plot) = plot {
                let title = format!("CED {} ({}-point, {:?} boxes)", csv.display(), points.num_points(), boxes);
                train::plot::ced_curve(&plot, &title, &[("facekp".to_string(), report.errors.clone())])?;
            }
            if json {
                println!("{}", serde_json::to_string(&report).context("report")?);
            }
            Ok(0)
        }
    }
}

fn main() {
    facekp::model::flush_denormals();
    let cli = Cli::parse();
    // OpenCV's own warnings (e.g. a camera index that does not open) would repeat
    // what our one-line errors say; failures still come back as errors.
    let _ = opencv::core::set_log_level(opencv::core::LogLevel::LOG_LEVEL_SILENT);
    // Likewise FFmpeg's (read by OpenCV's FFmpeg backend; -8 is AV_LOG_QUIET).
    if std::env::var_os("OPENCV_FFMPEG_LOGLEVEL").is_none() {
        std::env::set_var("OPENCV_FFMPEG_LOGLEVEL", "-8");
    }
    let code = match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("facekp: error: {err:#}");
            1
        }
    };
    exit_now(code)
}

/// Ends the process without the C++ static destructors of the linked libraries.
/// Every output is finished (and renamed into place) before this; what the
/// destructors would do is tear down libtorch's CUDA libraries, which on a CPU
/// machine pages in about 90 MB of their code just to exit (measured: RSS 500 MB
/// during a run, 590 MB in its last 100 ms), and, after a second Ctrl-C, run
/// while the pipeline threads still use those libraries.
fn exit_now(code: u8) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` takes no pointers and never returns.
    unsafe { libc::_exit(code.into()) }
}
