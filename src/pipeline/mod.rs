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
//! - [`summary`]: what a run reports;
//! - [`timer`]: stage timing.

pub mod face_stage;
mod sinks;
pub mod stages;
pub mod summary;
pub mod timer;

pub use face_stage::FaceStage;
pub use stages::{DetectStage, STOP_GRACE};
pub use summary::{median, Counts, RunSummary, StageSamples, StopReason};

use crate::detect::{DetectorConfig, HaarDetector};
use crate::face::Face;
use crate::pose::CameraSpec;
use crate::render::OverlayOptions;
use crate::smooth::OneEuroParams;
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

pub struct RunOptions {
    pub source: SourceSpec,
    pub schedule: Schedule,
    pub smoothing: Option<OneEuroParams>,
    /// The camera head poses are solved for.
    pub camera: CameraSpec,
    /// Keep every frame's faces in the summary (for `bench --still` and `--compare`).
    pub record_faces: bool,
    pub show_window: bool,
    pub output: Option<PathBuf>,
    pub keypoints: Option<PathBuf>,
    pub max_frames: Option<u64>,
    pub progress: bool,
    pub overlay: OverlayOptions,
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
        let detect = DetectStage { detector: HaarDetector::new(cascade, detector)?, every };
        let stage = FaceStage::new(
            HaarDetector::new(cascade, detector)?,
            model,
            options.schedule.crops,
            options.smoothing,
            options.camera,
        );
        Ok(Self { source, detect, stage, options })
    }
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
    let Prepared { source, detect, stage, options } = prepared;
    let info = source.info().clone();
    // Outputs are created only now that every input has been checked.
    let mut sinks = Sinks::open(&options, &info, stage.model().config().scheme)?;
    let chain = Chain::spawn(source, detect, stage, options.max_frames, stop.clone())?;
    let started = Instant::now();
    let mut outcome = sink_loop(&chain, &mut sinks, options.record_faces, &stop, started);
    sinks.end_progress();
    let end = chain.shutdown();
    if let Some(e) = outcome.error.take() {
        return Err(e);
    }
    outcome.samples.detector_runs = end.detector_runs?;
    // A source failing mid-run (camera lost) still finalises what was produced.
    let outputs = sinks.finish()?;
    let source_stop = end.source?;
    let stop = if outcome.window_closed {
        StopReason::WindowClosed
    } else if stop.load(Ordering::SeqCst) {
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
