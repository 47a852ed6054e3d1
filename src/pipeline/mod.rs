//! The run-time pipeline: a source thread, a detect thread and a face thread
//! (track + infer), and the sinks (overlay, keypoint file, video file, window) on
//! the calling thread, connected by bounded channels. Live cameras drop stale
//! frames; files keep every frame in order. Shutdown flows down the chain: the
//! source stops (end, `--max-frames`, Ctrl-C flag, or a closed window dropping the
//! receiver), each stage finishes its queue and returns, and the outputs are
//! finalised.
//!
//! - [`face_stage`]: detect + track + infer on one frame;
//! - [`stages`]: the stage threads and their channels;
//! - [`sinks`]: the outputs of a run;
//! - [`pace`]: the player clock of a video shown in a window;
//! - [`summary`]: what a run reports;
//! - [`timer`]: stage timing.

pub mod face_stage;
pub mod pace;
mod sinks;
pub mod stages;
pub mod summary;
pub mod timer;

pub use face_stage::FaceStage;
pub use stages::{DetectStage, STOP_GRACE};
pub use summary::{median, Counts, RunSummary, StageSamples, StopReason};

use crate::detect::{AngleSearch, DetectorConfig, HaarDetector, ProfileSearch, PROFILE_CASCADE};
use crate::encode::EncoderChoice;
use crate::face::Face;
use crate::model::{Keypointer, ModelConfig};
use crate::pose::CameraSpec;
use crate::render::OverlayOptions;
use crate::smooth::SmoothParams;
use crate::source::{FrameSource, SourceSpec};
use crate::track::CropMode;
use anyhow::Result;
use crossbeam_channel::RecvTimeoutError;
use sinks::{Flow, Sinks};
use stages::Chain;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the sinks wait for a frame before polling the window and the stop flag.
const SINK_POLL: Duration = Duration::from_millis(50);

/// When the detector runs, and where followed faces are cropped in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Run the Haar detector on every N-th frame (1: every frame).
    pub detect_every: u32,
    pub crops: CropMode,
}

impl Schedule {
    /// The detector on every frame, every crop from its box.
    pub const DETECT_EVERY_FRAME: Schedule = Schedule { detect_every: 1, crops: CropMode::Detections };
}

/// How a window shows a video file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// At its frame rate, by its timestamps, as a player does.
    Timestamps,
    /// As fast as the frames are processed.
    FullSpeed,
}

/// The progress a headless run shows.
#[derive(Debug, Clone)]
pub enum Progress {
    Off,
    /// Its own bar of frames (files only).
    Bar,
    /// A bar shared with other runs (`batch`), advanced a step per frame.
    Shared(indicatif::ProgressBar),
}

/// What happens to the outputs of a run stopped by Ctrl-C or SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInterrupt {
    /// Finalise them with every processed frame (`run`).
    Finalise,
    /// Remove them: an output that exists is a whole video's (`batch`).
    Discard,
}

pub struct RunOptions {
    pub source: SourceSpec,
    pub schedule: Schedule,
    pub smoothing: Option<SmoothParams>,
    /// The camera head poses are solved for.
    pub camera: CameraSpec,
    /// Keep every frame's faces in the summary (for `bench --still` and `--compare`).
    pub record_faces: bool,
    pub show_window: bool,
    pub output: Option<PathBuf>,
    pub keypoints: Option<PathBuf>,
    pub max_frames: Option<u64>,
    pub progress: Progress,
    pub overlay: OverlayOptions,
    pub pace: Pace,
    pub encoder: EncoderChoice,
    pub on_interrupt: OnInterrupt,
}

/// Everything a run needs, opened and checked before any thread starts or any
/// output file exists, so bad input fails early with nothing written.
pub struct Prepared {
    pub source: Box<dyn FrameSource>,
    pub detect: DetectStage,
    pub stage: FaceStage,
    pub options: RunOptions,
}

impl Prepared {
    pub fn new(
        source: Box<dyn FrameSource>,
        options: RunOptions,
        detector: DetectorConfig,
        cascade: &Path,
        model: crate::model::Keypointer,
    ) -> Result<Self> {
        let every = options.schedule.detect_every.max(1) as u64;
        let detect = DetectStage::new(scheduled_detector(cascade, detector, model.config())?, every);
        // The face stage's own searches (no face followed, or one just lost) look for
        // upright faces on every frame they run; turned ones are the detect
        // stage's, one turn per scheduled run.
        let upright = HaarDetector::new(cascade, DetectorConfig { angles: AngleSearch::Upright, ..detector })?;
        let stage = FaceStage::new(upright, model, options.schedule.crops, options.smoothing, options.camera);
        Ok(Self { source, detect, stage, options })
    }
}

/// The detector of the scheduled runs (`config`'s angles; photos: all of them),
/// which also searches for profiles when `model` has a prior for their boxes.
pub fn scheduled_detector(cascade: &Path, config: DetectorConfig, model: &ModelConfig) -> Result<HaarDetector> {
    let mut detector = HaarDetector::new(cascade, config)?;
    if let Some(profile) = model.profile_crop {
        detector.search_profiles(ProfileSearch::load(Path::new(PROFILE_CASCADE), profile, model.crop)?);
    }
    Ok(detector)
}

/// What the sink loop gathered.
#[derive(Default)]
struct SinkOutcome {
    samples: StageSamples,
    counts: Counts,
    faces_per_frame: Vec<Vec<Face>>,
    window_closed: bool,
    error: Option<anyhow::Error>,
}

/// Runs the pipeline to the end of the source, the frame limit, a closed window or `stop`.
pub fn run(prepared: Prepared, stop: Arc<AtomicBool>) -> Result<RunSummary> {
    run_keeping_model(prepared, stop).summary
}

/// A run's result, and the model back for the next run (`None` when the face
/// stage did not return: it panicked or was left behind).
pub struct Finished {
    pub summary: Result<RunSummary>,
    pub model: Option<Keypointer>,
}

/// [`run`], handing the model back so that many runs load it once (`batch`).
pub fn run_keeping_model(prepared: Prepared, stop: Arc<AtomicBool>) -> Finished {
    let Prepared { source, detect, stage, options } = prepared;
    let info = source.info().clone();
    // Outputs are created only now that every input has been checked.
    let mut sinks = match Sinks::open(&options, &info, stage.model().config().scheme) {
        Ok(sinks) => sinks,
        Err(e) => return Finished { summary: Err(e), model: Some(stage.into_model()) },
    };
    let chain = match Chain::spawn(source, detect, stage, options.max_frames, stop.clone()) {
        Ok(chain) => chain,
        Err(e) => return Finished { summary: Err(e), model: None },
    };
    let started = Instant::now();
    let outcome = sink_loop(&chain, &mut sinks, options.record_faces, &stop, started);
    sinks.end_progress();
    let mut end = chain.shutdown();
    let model = end.model.take();
    let summary = summarise(outcome, end, sinks, &options, &stop, started);
    Finished { summary, model }
}

/// Finalises the outputs (or discards them, for an interrupted `batch` video) and
/// sums the run up.
fn summarise(
    mut outcome: SinkOutcome,
    end: stages::ChainEnd,
    sinks: Sinks,
    options: &RunOptions,
    stop: &AtomicBool,
    started: Instant,
) -> Result<RunSummary> {
    if let Some(e) = outcome.error.take() {
        return Err(e);
    }
    outcome.samples.detector_runs = end.detector_runs?;
    let interrupted = stop.load(Ordering::SeqCst);
    let display_skipped = sinks.display_skipped();
    let encoder = sinks.encoder_name();
    // A source failing mid-run (camera lost) still finalises what was produced.
    let outputs = match (interrupted, options.on_interrupt) {
        (true, OnInterrupt::Discard) => Vec::new(),
        _ => sinks.finish()?,
    };
    let source_stop = end.source?;
    let stop = if outcome.window_closed {
        StopReason::WindowClosed
    } else if interrupted {
        StopReason::Interrupted
    } else {
        source_stop
    };
    let SinkOutcome { samples, counts, faces_per_frame, .. } = outcome;
    Ok(RunSummary {
        samples,
        faces_per_frame,
        frames: counts.frames,
        faces: counts.faces,
        frames_with_faces: counts.frames_with_faces,
        dropped: end.dropped,
        skipped: end.skipped,
        skipped_names: end.skipped_names,
        display_skipped,
        encoder,
        secs: started.elapsed().as_secs_f64(),
        stop,
        outputs,
    })
}

/// Takes every annotated frame through the sinks until the chain ends, the window
/// closes, a sink fails, or, after `stop`, nothing arrives for [`STOP_GRACE`]
/// (the chain is stuck upstream).
fn sink_loop(chain: &Chain, sinks: &mut Sinks, record_faces: bool, stop: &AtomicBool, started: Instant) -> SinkOutcome {
    let mut outcome = SinkOutcome::default();
    let mut idle_since_stop: Option<Instant> = None;
    loop {
        let mut item = match chain.annotated.recv_timeout(SINK_POLL) {
            Ok(item) => item,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                if sinks.poll() == Flow::Quit {
                    outcome.window_closed = true;
                    break;
                }
                if stop.load(Ordering::SeqCst)
                    && idle_since_stop.get_or_insert_with(Instant::now).elapsed() >= STOP_GRACE
                {
                    break;
                }
                continue;
            }
        };
        idle_since_stop = None;
        if let Err(e) = sinks.write(&mut item) {
            outcome.error = Some(e);
            break;
        }
        outcome.samples.record(&item, sinks.draw_ms(), Instant::now(), started);
        outcome.counts.add(&item.faces);
        let flow = sinks.show(&item, stop);
        if let Err(e) = sinks.encode(std::mem::take(&mut item.frame.image)) {
            outcome.error = Some(e);
            break;
        }
        if record_faces {
            outcome.faces_per_frame.push(item.faces);
        }
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Quit) => {
                outcome.window_closed = true;
                break;
            }
            Err(e) => {
                outcome.error = Some(e);
                break;
            }
        }
    }
    outcome
}
