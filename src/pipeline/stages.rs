//! The stage threads and the channels between them: source -> detect -> faces,
//! whose output the sinks read on the calling thread. Live sources keep only the
//! newest frame; files keep every frame, in order. Shutdown flows down the chain.

use super::face_stage::{FaceStage, Searched};
use super::summary::StopReason;
use super::timer::StageTimer;
use crate::detect::{HaarDetector, Tile};
use crate::face::{Face, StageTimes};
use crate::imageops;
use crate::model::Keypointer;
use crate::source::{Frame, FrameSource, SourceInfo};
use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use opencv::core::Mat;
use opencv::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Memory for frames queued before the face stage when reading files.
const FILE_QUEUE_BYTES: usize = 64 << 20;
/// At most this many frames queued before the face stage (files).
const FILE_QUEUE_FRAMES: usize = 16;
/// After a stop (Ctrl-C, closed window, error), how long the stages get to finish
/// their queues and return. A stage still blocked after it (a source stuck in a read
/// from a hung camera or pipe) is left behind, and the outputs are finalised with
/// what was produced.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// A frame with its faces, on its way to the sinks.
pub struct Annotated {
    pub frame: Frame,
    pub faces: Vec<Face>,
    pub times: StageTimes,
}

/// A frame with its gray copy and what the detector found on it.
struct Detected {
    frame: Frame,
    gray: Mat,
    searched: Searched,
    detect_ms: f64,
}

/// The detect stage: gray conversion of every frame, and the Haar detector on every
/// `every`-th frame it receives (and, on HD frames, one tile of the frame on each
/// other frame: [`crate::detect::tiles`], small faces at a finer resolution), a
/// frame ahead of the face stage so that detection and inference run at the same
/// time on the two cores.
pub struct DetectStage {
    pub detector: HaarDetector,
    pub every: u64,
    /// Tile searches since the start: the next tile is this one modulo their
    /// count, so the frames between whole-frame searches visit every tile in turn.
    tile_searches: usize,
}

impl DetectStage {
    pub fn new(detector: HaarDetector, every: u64) -> Self {
        Self { detector, every, tile_searches: 0 }
    }

    /// Starts the tile cycle again, for a new video.
    pub fn restart(&mut self) {
        self.tile_searches = 0;
    }

    /// The searches on frame `n`: the whole frame on every `every`-th frame, else
    /// the next of `tiles`.
    pub fn search(&mut self, gray: &Mat, n: u64, tiles: &[Tile]) -> Result<Searched> {
        if n.is_multiple_of(self.every) {
            return Ok(Searched { frame: Some(self.detector.detect(gray)?), tile: None });
        }
        if tiles.is_empty() {
            return Ok(Searched::default());
        }
        let tile = &tiles[self.tile_searches % tiles.len()];
        self.tile_searches += 1;
        Ok(Searched { frame: None, tile: Some(self.detector.detect_tile(gray, tile)?) })
    }
}

/// What the source thread shares with the rest of the pipeline.
struct SourceControl {
    stop: Arc<AtomicBool>,
    halt: Arc<AtomicBool>,
    max_frames: Option<u64>,
    dropped: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
}

impl SourceControl {
    /// Why the source should stop before reading frame `sent + 1`, if it should.
    fn stop_before(&self, sent: u64) -> Option<StopReason> {
        if self.stop.load(Ordering::SeqCst) {
            Some(StopReason::Interrupted)
        } else if self.halt.load(Ordering::SeqCst) {
            Some(StopReason::WindowClosed)
        } else if self.max_frames.is_some_and(|m| sent >= m) {
            Some(StopReason::MaxFrames)
        } else {
            None
        }
    }
}

/// How the source thread ended.
pub(super) struct SourceEnd {
    pub reason: StopReason,
    /// The files an image folder could not decode.
    pub skipped_names: Vec<String>,
}

/// Reads frames until the end, `max_frames`, `stop` (Ctrl-C) or `halt` (the sinks
/// are done). A live source gets `drain`, a second receiver of its own channel,
/// to throw away a frame still waiting when a newer one arrives.
fn source_thread(
    mut source: Box<dyn FrameSource>,
    tx: Sender<Frame>,
    drain: Option<Receiver<Frame>>,
    ctl: SourceControl,
) -> Result<SourceEnd> {
    let mut sent = 0u64;
    let end = |reason, source: &dyn FrameSource| SourceEnd { reason, skipped_names: source.skipped_names() };
    loop {
        if let Some(reason) = ctl.stop_before(sent) {
            return Ok(end(reason, source.as_ref()));
        }
        let timer = StageTimer::start();
        let Some(mut frame) = source.next_frame()? else {
            ctl.skipped.store(source.skipped(), Ordering::SeqCst);
            return Ok(end(StopReason::End, source.as_ref()));
        };
        if frame.decode_ms == 0.0 {
            frame.decode_ms = timer.ms();
        }
        sent += 1;
        let delivered = match &drain {
            Some(drain) => send_newest(&tx, drain, frame, &ctl.dropped),
            None => tx.send(frame).is_ok(),
        };
        if !delivered {
            return Ok(end(StopReason::WindowClosed, source.as_ref()));
        }
    }
}

/// Sends `frame`, replacing a frame still waiting in the channel (counted in
/// `dropped`). False when the receiver is gone.
fn send_newest(tx: &Sender<Frame>, drain: &Receiver<Frame>, mut frame: Frame, dropped: &AtomicU64) -> bool {
    loop {
        match tx.try_send(frame) {
            Ok(()) => return true,
            Err(TrySendError::Full(f)) => {
                if drain.try_recv().is_ok() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
                frame = f;
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
    }
}

fn detect_thread(mut stage: DetectStage, rx: Receiver<Frame>, tx: Sender<Detected>) -> Result<u64> {
    let mut runs = 0u64;
    let mut tiles = Vec::new();
    for (n, frame) in rx.iter().enumerate() {
        let timer = StageTimer::start();
        let gray = imageops::to_gray(&frame.image)?;
        if n == 0 {
            tiles = stage.detector.tiles(gray.cols(), gray.rows());
        }
        let searched = stage.search(&gray, n as u64, &tiles)?;
        runs += u64::from(searched.frame.is_some());
        let detect_ms = timer.ms();
        if tx.send(Detected { frame, gray, searched, detect_ms }).is_err() {
            break;
        }
    }
    Ok(runs)
}

/// How the face thread ended: its detector runs or its error, and its stage (with
/// the model, for another run).
struct FaceEnd {
    runs: Result<u64>,
    stage: FaceStage,
}

fn face_thread(mut stage: FaceStage, rx: Receiver<Detected>, tx: Sender<Annotated>) -> FaceEnd {
    let _guard = tch::no_grad_guard();
    // OpenMP thread counts are per calling thread: re-apply the process setting here.
    tch::set_num_threads(tch::get_num_threads());
    for d in rx {
        let processed = match stage.process(&d.gray, d.searched.found(), d.frame.timestamp_ms) {
            Ok(p) => p,
            Err(e) => return FaceEnd { runs: Err(e), stage },
        };
        let mut times = processed.times;
        times.decode_ms = d.frame.decode_ms;
        times.detector_ran |= d.searched.frame.is_some();
        times.detect_ms += if d.searched.frame.is_some() { d.detect_ms } else { 0.0 };
        times.tile_ms = d.searched.tile.is_some().then_some(d.detect_ms);
        if tx.send(Annotated { frame: d.frame, faces: processed.faces, times }).is_err() {
            break;
        }
    }
    FaceEnd { runs: Ok(stage.detector_runs), stage }
}

/// The running stage threads, and the receiving end of their chain.
pub(super) struct Chain {
    pub annotated: Receiver<Annotated>,
    source: JoinHandle<Result<SourceEnd>>,
    detect: JoinHandle<Result<u64>>,
    faces: JoinHandle<FaceEnd>,
    halt: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
}

/// How the stages ended.
pub(super) struct ChainEnd {
    /// The source's stop reason, or its error (a camera lost mid-run).
    pub source: Result<StopReason>,
    /// Detector runs of the detect and face stages, or the first stage error.
    pub detector_runs: Result<u64>,
    pub dropped: u64,
    pub skipped: u64,
    pub skipped_names: Vec<String>,
    /// The model back, unless the face thread panicked or was left behind.
    pub model: Option<Keypointer>,
}

/// Channel sizes. Live: one frame in flight per stage (stale ones are dropped at
/// the source). Files: a queue before the face stage long enough to keep it busy
/// while the detect stage runs the Haar cascade (tens of ms), within a memory budget.
fn queue_sizes(info: &SourceInfo) -> (usize, usize) {
    if info.live {
        return (1, 1);
    }
    let frame_bytes = (info.width as usize * info.height as usize * 4).max(1);
    (4, (FILE_QUEUE_BYTES / frame_bytes).clamp(2, FILE_QUEUE_FRAMES))
}

impl Chain {
    /// Starts the source, detect and face threads.
    pub fn spawn(
        source: Box<dyn FrameSource>,
        detect: DetectStage,
        stage: FaceStage,
        max_frames: Option<u64>,
        stop: Arc<AtomicBool>,
    ) -> Result<Chain> {
        let info = source.info().clone();
        let (capacity, detected_queue) = queue_sizes(&info);
        let (frame_tx, frame_rx) = bounded::<Frame>(capacity);
        let (det_tx, det_rx) = bounded::<Detected>(detected_queue);
        let (ann_tx, annotated) = bounded::<Annotated>(capacity);
        let halt = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let skipped = Arc::new(AtomicU64::new(0));
        let ctl =
            SourceControl { stop, halt: halt.clone(), max_frames, dropped: dropped.clone(), skipped: skipped.clone() };
        let drain = info.live.then(|| frame_rx.clone());
        let spawn = |name: &str| thread::Builder::new().name(name.into());
        let source = spawn("source").spawn(move || source_thread(source, frame_tx, drain, ctl))?;
        let detect = spawn("detect").spawn(move || detect_thread(detect, frame_rx, det_tx))?;
        let faces = spawn("faces").spawn(move || face_thread(stage, det_rx, ann_tx))?;
        Ok(Chain { annotated, source, detect, faces, halt, dropped, skipped })
    }

    /// Stops the chain and joins its threads, giving them [`STOP_GRACE`].
    /// Closing the receiver stops the face thread, whose end stops a file source;
    /// `halt` stops a live one (which also holds a receiver, to drop stale frames).
    pub fn shutdown(self) -> ChainEnd {
        self.halt.store(true, Ordering::SeqCst);
        drop(self.annotated);
        let deadline = Instant::now() + STOP_GRACE;
        let (faces, model) = match wait_by(self.faces, deadline).map(|h| h.join()) {
            Some(Ok(end)) => (end.runs.context("faces stage"), Some(end.stage.into_model())),
            Some(Err(_)) => (Err(anyhow!("faces thread panicked")), None),
            None => (Ok(0), None),
        };
        let detect = join_by(self.detect, "detect", deadline).unwrap_or(Ok(0));
        let source = join_by(self.source, "source", deadline).unwrap_or_else(|| {
            eprintln!(
                "warning: the source did not stop within {} s (a stuck read); left it behind",
                STOP_GRACE.as_secs()
            );
            Ok(SourceEnd { reason: StopReason::Interrupted, skipped_names: Vec::new() })
        });
        let (source, skipped_names) = match source {
            Ok(end) => (Ok(end.reason), end.skipped_names),
            Err(e) => (Err(e), Vec::new()),
        };
        ChainEnd {
            source,
            detector_runs: faces.and_then(|f| Ok(f + detect?)),
            dropped: self.dropped.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            skipped_names,
            model,
        }
    }
}

fn join<T>(handle: JoinHandle<Result<T>>, name: &str) -> Result<T> {
    handle.join().map_err(|_| anyhow!("{name} thread panicked"))?.with_context(|| format!("{name} stage"))
}

/// Joins a stage that finishes by `deadline`; `None` leaves a stuck one behind.
fn join_by<T>(handle: JoinHandle<Result<T>>, name: &str, deadline: Instant) -> Option<Result<T>> {
    wait_by(handle, deadline).map(|h| join(h, name))
}

/// The handle of a thread that finished by `deadline`; `None` if it did not.
fn wait_by<T>(handle: JoinHandle<T>, deadline: Instant) -> Option<JoinHandle<T>> {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
    Some(handle)
}
