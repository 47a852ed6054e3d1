//! The command line (clap derive): commands, their flags and help texts, and the
//! value checks that can be made before anything is opened.

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Parser, Subcommand, ValueEnum};
use facekp::batch::{KeypointExt, Shard};
use facekp::encode::EncoderChoice;
use facekp::eval::Boxes;
use facekp::landmarks::Scheme;
use facekp::model::{DeviceChoice, PrecisionChoice};
use facekp::train::Loss;
use std::ffi::OsStr;
use std::marker::PhantomData;
use std::path::PathBuf;

/// Detector cadence when tracking (see `--detect-every`): new faces are picked up
/// within a third of a second at 30 fps, and the cascade (about 40 ms at 320 px on
/// one core) costs 4 ms per frame, spread over frames by the detect stage.
const DEFAULT_DETECT_EVERY: u32 = 10;
/// Thread pools on a 2-core machine: the pipeline already runs decode, detection,
/// the face stage and the sinks in their own threads, so the CNN gets one thread;
/// OpenCV gets two, because the Haar cascade is the longest single job and splits
/// its pyramid over both cores (docs/ARCHITECTURE.md).
const DEFAULT_CNN_THREADS: i32 = 1;
const DEFAULT_CV_THREADS: i32 = 2;
/// The highest frame rate a camera may be asked for.
const MAX_FPS: f64 = 1000.0;

#[derive(Parser)]
#[command(name = "facekp", version, about = "Real-time facial keypoints: Haar cascade + CNN (libtorch)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Find faces and their keypoints in a camera, video or image folder
    /// (no source: camera 0 if it opens, else the bundled sample video)
    Run(RunArgs),
    /// Measure speed (decode, detect/track, infer, draw; no window, no files), or
    /// keypoint steadiness on a still photo with fresh noise every frame
    Bench(BenchArgs),
    /// List camera indices that open, with their default mode
    Cameras,
    /// Train a keypoint CNN on data set folders (train.csv, val.csv, images/)
    Train(TrainArgs),
    /// Evaluate a model on an annotated CSV: NME, failure rate, per region, speed
    Eval(EvalArgs),
    /// Keypoints (and annotated videos) for many videos or image folders, one
    /// output per input in --out-dir; reruns skip finished ones
    Batch(BatchArgs),
}

#[derive(clap::Args)]
#[group(multiple = false)]
pub struct SourceArgs {
    /// Camera index (V4L2)
    #[arg(long)]
    pub camera: Option<i32>,
    /// Video file (anything OpenCV's FFmpeg backend decodes), named pipe or device
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// Folder of jpg/png/bmp images, read in name order
    #[arg(long)]
    pub images: Option<PathBuf>,
}

/// The CNN's device and number format, shared by `run`, `bench` and `eval`.
#[derive(clap::Args)]
pub struct DeviceArgs {
    /// Where the CNN runs: auto is CUDA when libtorch sees a GPU, else the CPU
    #[arg(long, default_value = "auto", value_parser = choice::<DeviceChoice>("device"))]
    pub device: DeviceChoice,
    /// CNN number format: auto is bf16 convolutions on a CPU with AVX512-BF16,
    /// else f32
    #[arg(long, default_value = "auto", value_parser = choice::<PrecisionChoice>("precision"))]
    pub precision: PrecisionChoice,
}

/// The model to run, shared by `run` and `bench`.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Points of the model: 68 (224 px input) or 15 (96 px input)
    #[arg(long = "points", visible_alias = "model", value_name = "68|15", default_value = "68", value_parser = parse_scheme)]
    pub scheme: Scheme,
    /// Weights (default: the shipped model); its NAME.json must be beside it
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Detection, tracking, smoothing, head-pose camera and thread settings shared by
/// `run` and `bench`.
#[derive(clap::Args)]
pub struct TrackingArgs {
    /// Run the Haar detector every N frames to find new faces (and at once when a
    /// track is lost); in between, follow faces by their keypoints
    #[arg(long, default_value_t = DEFAULT_DETECT_EVERY, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub detect_every: u32,
    /// No tracking: run the detector on every frame and crop every face from its box
    #[arg(long)]
    pub no_track: bool,
    /// Frames wider than this are downscaled for the Haar detector; larger finds
    /// smaller faces, slower [default: 320 for cameras and videos, 640 for --images]
    #[arg(long, value_parser = clap::value_parser!(u32).range(64..=8192))]
    pub detect_width: Option<u32>,
    /// Smoothing: minimum cutoff (Hz) of the face's motion and shape filters; lower
    /// is steadier on a still or steadily moving face (steady motion never lags)
    #[arg(long, default_value_t = facekp::smooth::DEFAULT_MIN_CUTOFF_HZ, value_parser = positive_frequency, allow_negative_numbers = true)]
    pub smooth_min_cutoff: f32,
    /// Smoothing: how soon a change of motion or expression opens the filters;
    /// higher follows starts, stops and blinks sooner, with more jitter
    #[arg(long, default_value_t = facekp::smooth::DEFAULT_BETA, value_parser = non_negative, allow_negative_numbers = true)]
    pub smooth_beta: f32,
    /// Raw keypoints and head poses, no smoothing (crops then follow the raw points)
    #[arg(long)]
    pub no_smooth: bool,
    /// Head pose camera: focal length in pixels of the frame [default: the frame width]
    #[arg(long, value_name = "PIXELS", value_parser = positive_length, allow_negative_numbers = true)]
    pub focal_length: Option<f32>,
    /// Head pose camera: principal point in frame pixels [default: the frame centre]
    #[arg(long, value_name = "X,Y", value_parser = pixel_position, allow_negative_numbers = true)]
    pub principal_point: Option<facekp::geometry::Point>,
    /// Haar cascade file (OpenCV XML)
    #[arg(long, default_value = facekp::detect::DEFAULT_CASCADE)]
    pub cascade: PathBuf,
    /// libtorch threads for the CNN (intra-op)
    #[arg(long, default_value_t = DEFAULT_CNN_THREADS, value_parser = clap::value_parser!(i32).range(1..=256))]
    pub cnn_threads: i32,
    /// OpenCV threads (Haar detector, warps, drawing)
    #[arg(long, default_value_t = DEFAULT_CV_THREADS, value_parser = clap::value_parser!(i32).range(1..=256))]
    pub cv_threads: i32,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// No window (the default when there is no display)
    #[arg(long)]
    pub headless: bool,
    /// In a window, process a video as fast as possible instead of playing it at
    /// its frame rate (headless runs always run at full speed)
    #[arg(long)]
    pub full_speed: bool,
    /// Annotated video (.mp4 or .avi), same size and fps as the input
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Encoder of an .mp4 --output: ffmpeg (x264 veryfast, in a child process),
    /// opencv (OpenCV's writer, x264's slower default preset); auto is ffmpeg when
    /// it is installed
    #[arg(long, default_value = "auto", value_parser = choice::<EncoderChoice>("encoder"))]
    pub encoder: EncoderChoice,
    /// Keypoint file: .csv (a row per face) or .jsonl (an object per frame)
    #[arg(long)]
    pub keypoints: Option<PathBuf>,
    /// Stop after this many frames
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_frames: Option<u64>,
    /// Camera: requested width
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16384))]
    pub width: Option<u32>,
    /// Camera: requested height
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=16384))]
    pub height: Option<u32>,
    /// Camera: requested frame rate
    #[arg(long, value_parser = frame_rate)]
    pub fps: Option<f64>,
    #[command(flatten)]
    pub tracking: TrackingArgs,
}

#[derive(clap::Args)]
pub struct BatchArgs {
    /// Videos, folders (their videos in name order; a folder of images is one
    /// input) and .txt lists of paths (one a line, relative to the list's folder)
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Folder for the outputs: STEM.jsonl (or .csv), STEM.mp4, summary.json
    /// (created when missing)
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Keypoint file format
    #[arg(long, default_value = "jsonl", value_parser = choice::<KeypointExt>("format"))]
    pub format: KeypointExt,
    /// Also write the annotated video STEM.mp4
    #[arg(long)]
    pub annotate: bool,
    /// Redo inputs whose outputs exist
    #[arg(long)]
    pub force: bool,
    /// Process only the inputs whose index in the sorted list is I-1 modulo N (for
    /// N jobs of a cluster scheduler), e.g. 1/4
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Encoder of the annotated videos (see `run --encoder`)
    #[arg(long, default_value = "auto", value_parser = choice::<EncoderChoice>("encoder"))]
    pub encoder: EncoderChoice,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tracking: TrackingArgs,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Video to process
    #[arg(
        long,
        conflicts_with_all = ["still", "rotation_sweep", "scale_sweep", "motion_sweep", "false_faces"],
        required_unless_present_any = ["still", "rotation_sweep", "scale_sweep", "motion_sweep", "false_faces"]
    )]
    pub video: Option<PathBuf>,
    /// Photo repeated every frame with Gaussian noise (sigma 3 grey levels)
    #[arg(long)]
    pub still: Option<PathBuf>,
    /// Rotation sweep on the faces of an annotated CSV (a data set's val.csv): each
    /// face turned 1 degree a frame to 90 as a video, and as photos turned by ±30,
    /// ±45 and ±60 degrees; reports how often it is followed and found
    #[arg(long, value_name = "CSV", conflicts_with = "still")]
    pub rotation_sweep: Option<PathBuf>,
    /// Scale sweep on the faces of an annotated CSV: each face pasted into a
    /// 1920x1080 frame at inter-ocular distances from 96 down to 16 px, 30 noisy
    /// frames each; reports the sizes at which new faces are found, and fps
    #[arg(long, value_name = "CSV", conflicts_with_all = ["still", "rotation_sweep"])]
    pub scale_sweep: Option<PathBuf>,
    /// Motion sweep on the faces of an annotated CSV: each face in a 640x480 frame
    /// (inter-ocular distance 70 px, noise sigma 3) held still for 30 frames, then
    /// panned 2, 5 or 10 px a frame or turned 1 degree a frame; reports NME still
    /// and moving, and the jitter while still
    #[arg(long, value_name = "CSV", conflicts_with_all = ["still", "rotation_sweep", "scale_sweep"])]
    pub motion_sweep: Option<PathBuf>,
    /// Faces found on annotated photos, searched as `run --images` searches them:
    /// data set CSVs (one face annotated per photo) or imglab XML files of face
    /// boxes (every face annotated), comma separated; reports faces found, ghosts
    /// (a second face on an annotated one) and other extra faces
    #[arg(long, value_name = "FILE", value_delimiter = ',', conflicts_with_all = ["still", "rotation_sweep", "scale_sweep", "motion_sweep"])]
    pub false_faces: Vec<PathBuf>,
    /// Faces of a sweep (default: all of the CSV)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub sweep_faces: Option<u64>,
    /// Seed of the noise of the scale and motion sweeps (default: OpenCV's own
    /// fixed start); other seeds show how much a figure moves with the noise alone
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..), allow_negative_numbers = true)]
    pub noise_seed: Option<i32>,
    /// Frames to process (default: the whole video; 300 for --still)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub frames: Option<u64>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Play the video at its frame rate as a live camera (stale frames dropped)
    /// and report capture-to-display latency
    #[arg(long, requires = "video")]
    pub live: bool,
    /// Also run the video detecting on every frame and report how far tracked
    /// keypoints are from those, and any face run of 10+ frames the tracker misses
    #[arg(long, requires = "video")]
    pub compare: bool,
    /// Print the figures as one JSON object on the last line
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tracking: TrackingArgs,
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Points of the model: 68 (224 px input) or 15 (96 px input)
    #[arg(long, value_name = "68|15", value_parser = parse_scheme)]
    pub points: Scheme,
    /// Data set folders (train.csv, val.csv, images/) or Kaggle keypoints CSVs
    /// (--points 15), comma separated
    #[arg(long, value_delimiter = ',', required = true)]
    pub data: Vec<PathBuf>,
    /// Times each --data folder's faces enter every epoch, comma separated, one
    /// per folder (default: 1 each)
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: Vec<u32>,
    /// Weights file to write (NAME.safetensors; NAME.json and NAME.loss.png beside it)
    #[arg(long)]
    pub out: PathBuf,
    /// Epochs of the whole run (a resumed run continues up to this many)
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub epochs: u32,
    /// Continue from NAME.ckpt (written after every epoch)
    #[arg(long)]
    pub resume: bool,
    /// Fine-tune: start from these weights (e.g. the shipped ones) instead of
    /// fresh ones; a data set the model has no head for gets a copy of its default
    /// head
    #[arg(long, value_name = "WEIGHTS")]
    pub init: Option<PathBuf>,
    /// Random seed of the augmentation, shuffling and initial weights
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to train: auto is CUDA when libtorch sees a GPU, else the CPU
    #[arg(long, default_value = "auto", value_parser = choice::<DeviceChoice>("device"))]
    pub device: DeviceChoice,
    /// Crops per optimizer step
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(2..=4096))]
    pub batch_size: u32,
    /// Peak learning rate of the cosine schedule
    #[arg(long, default_value_t = 2e-3, value_parser = positive_rate, allow_negative_numbers = true)]
    pub lr: f64,
    /// Loss on the coordinates: l1, or wing (steeper on small errors)
    #[arg(long, default_value = "l1", value_parser = choice::<Loss>("loss"))]
    pub loss: Loss,
    /// Haar cascade file, to measure the crop prior
    #[arg(long, default_value = facekp::detect::DEFAULT_CASCADE)]
    pub cascade: PathBuf,
    /// Channels of each network stage, comma separated (default: the shipped
    /// network's, 12,32,56,96,128 for 68 points and 16,32,64,96 for 15)
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(4..=512))]
    pub channels: Option<Vec<u32>>,
    /// Extra 3x3 convs in each network stage, comma separated (default: the
    /// shipped network's, 0,0,1,2,1 for 68 points and 0,1,2,1 for 15)
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(0..=4))]
    pub extra_convs: Option<Vec<u32>>,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Points of the model: 68 (224 px input) or 15 (96 px input)
    #[arg(long, value_name = "68|15", value_parser = parse_scheme)]
    pub points: Scheme,
    /// Data set CSV (image,x0,y0,...,x67,y67)
    #[arg(long)]
    pub csv: PathBuf,
    /// Image folder (default: images/ beside the CSV)
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Weights (default: the shipped model for --points)
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Where each face's crop comes from
    #[arg(long, value_enum, default_value = "haar")]
    pub boxes: Boxes,
    /// Annotation convention (output head), e.g. ytf68 or helen68 (default: the
    /// CSV folder's name when the model has that head, else the model's default)
    #[arg(long)]
    pub convention: Option<String>,
    /// Write the cumulative error distribution as PNG
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print the figures as one JSON object on the last line
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Haar cascade file (OpenCV XML)
    #[arg(long, default_value = facekp::detect::DEFAULT_CASCADE)]
    pub cascade: PathBuf,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    s.parse()
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse::<u32>().ok().and_then(Scheme::from_count).ok_or_else(|| format!("{s:?} is not a model: use 68 or 15"))
}

/// A parser for a closed set of values that names the flag and the choices in its
/// message ("precision f16: expected auto, f32 or bf16") and lists them in `--help`.
#[derive(Clone)]
struct Choice<E> {
    what: &'static str,
    values: PhantomData<E>,
}

fn choice<E>(what: &'static str) -> Choice<E> {
    Choice { what, values: PhantomData }
}

impl<E: ValueEnum> Choice<E> {
    fn names() -> Vec<String> {
        E::value_variants().iter().filter_map(|v| v.to_possible_value()).map(|p| p.get_name().to_string()).collect()
    }

    fn parse(&self, s: &str) -> Result<E, String> {
        E::from_str(s, false).map_err(|_| {
            let names = Self::names();
            let (last, rest) = names.split_last().map_or(("", &[][..]), |(l, r)| (l.as_str(), r));
            format!("{} {s}: expected {} or {last}", self.what, rest.join(", "))
        })
    }
}

impl<E: ValueEnum + Clone + Send + Sync + 'static> TypedValueParser for Choice<E> {
    type Value = E;

    fn parse_ref(&self, cmd: &clap::Command, _arg: Option<&clap::Arg>, value: &OsStr) -> Result<E, clap::Error> {
        self.parse(&value.to_string_lossy())
            .map_err(|message| clap::Error::raw(ErrorKind::InvalidValue, message + "\n").with_cmd(cmd))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(E::value_variants().iter().filter_map(|v| v.to_possible_value())))
    }
}

fn parse_float(s: &str) -> Result<f64, String> {
    s.parse::<f64>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("{s:?} is not a number"))
}

/// `s` as a number that satisfies `ok`, else the error "`s`: `rule`".
fn checked(s: &str, ok: impl Fn(f64) -> bool, rule: &str) -> Result<f64, String> {
    let f = parse_float(s)?;
    if ok(f) {
        Ok(f)
    } else {
        Err(format!("{s}: {rule}"))
    }
}

fn frame_rate(s: &str) -> Result<f64, String> {
    checked(s, |f| f > 0.0 && f <= MAX_FPS, &format!("must be a frame rate between 0 and {MAX_FPS}"))
}

fn positive_frequency(s: &str) -> Result<f32, String> {
    checked(s, |f| f > 0.0, "must be a positive frequency").map(|f| f as f32)
}

fn positive_length(s: &str) -> Result<f32, String> {
    checked(s, |f| f > 0.0, "must be a positive number of pixels").map(|f| f as f32)
}

/// `X,Y` in pixels.
fn pixel_position(s: &str) -> Result<facekp::geometry::Point, String> {
    let Some((x, y)) = s.split_once(',') else {
        return Err(format!("{s}: must be X,Y (two numbers)"));
    };
    Ok(facekp::geometry::Point::new(parse_float(x.trim())? as f32, parse_float(y.trim())? as f32))
}

fn non_negative(s: &str) -> Result<f32, String> {
    checked(s, |f| f >= 0.0, "must be zero or positive").map(|f| f as f32)
}

fn positive_rate(s: &str) -> Result<f64, String> {
    checked(s, |f| f > 0.0, "must be positive")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Closed sets name the flag and every choice; bad numbers name the rule.
    #[test]
    fn value_checks_say_what_is_wrong() {
        let err = choice::<PrecisionChoice>("precision").parse("fp16").unwrap_err();
        assert_eq!(err, "precision fp16: expected auto, f32 or bf16");
        let err = choice::<DeviceChoice>("device").parse("tpu").unwrap_err();
        assert_eq!(err, "device tpu: expected auto, cpu or cuda");
        assert_eq!(choice::<DeviceChoice>("device").parse("cpu").unwrap(), DeviceChoice::Cpu);
        assert!(frame_rate("0").is_err() && frame_rate("1001").is_err() && frame_rate("nan").is_err());
        assert_eq!(frame_rate("29.97").unwrap(), 29.97);
        assert!(positive_frequency("0").is_err() && non_negative("-1").is_err());
        assert_eq!(non_negative("0").unwrap(), 0.0);
    }

    /// `--model` stays an alias of `--points` on `run` and `bench`.
    #[test]
    fn model_is_an_alias_of_points() {
        for flag in ["--points", "--model"] {
            let cli = Cli::try_parse_from(["facekp", "run", flag, "15"]).unwrap();
            let Command::Run(args) = cli.command else { panic!("not run") };
            assert_eq!(args.model.scheme, Scheme::P15);
        }
    }
}
