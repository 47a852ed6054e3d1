//! The run-time pipeline: a source thread, a face thread (detect + track + infer)
//! and the sinks (overlay, keypoint file, video file, window) on the calling
//! thread, connected by bounded channels. Live cameras drop stale frames; files
//! keep every frame in order. Shutdown flows down the chain: the source stops
//! (end, `--max-frames`, Ctrl-C flag, or a closed window dropping the receiver),
//! each stage finishes its queue and returns, and the outputs are finalised.

use crate::detect::{DetectorConfig, HaarDetector};
use crate::face::{self, Face, StageTimes};
use crate::geometry::{Point, Rect};
use crate::imageops;
use crate::model::Keypointer;
use crate::output::KeypointWriter;
use crate::render::{self, OverlayOptions, OverlayStats, VideoSink, WindowSink};
use crate::smooth::OneEuroParams;
use crate::source::{Frame, FrameSource, SourceSpec};
use crate::track::{Candidate, Origin, Tracker, TrackerParams};
use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use opencv::core::Mat;
use opencv::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

/// The detect + track + infer stage: gray frames (with the detect stage's boxes on
/// the frames it ran) in, faces with keypoints out.
pub struct FaceStage {
    /// Runs at once when a track is lost or no face is followed (the detect stage
    /// keeps the schedule).
    detector: HaarDetector,
    model: Keypointer,
    tracker: Tracker,
    /// Detector runs of this stage (track lost, or no face followed).
    pub detector_runs: u64,
}

/// The crops of some candidates and the points the CNN found in them.
struct Inferred {
    kept: Vec<(Candidate, Vec<Point>)>,
    /// A tracked face was judged lost.
    lost: bool,
}

impl FaceStage {
    /// `tracking`: follow faces by their keypoints between detector runs; when
    /// false, every crop is a detector box. `smoothing`: One Euro filtering of each
    /// track's points, or raw points.
    pub fn new(detector: HaarDetector, model: Keypointer, tracking: bool, smoothing: Option<OneEuroParams>) -> Self {
        let tracker = Tracker::new(model.config().crop, TrackerParams::default(), smoothing, tracking);
        Self { detector, model, tracker, detector_runs: 0 }
    }

    pub fn model(&self) -> &Keypointer {
        &self.model
    }

    /// Crops `candidates` from `gray`, runs them through the CNN as one batch and
    /// keeps the plausible ones. Fresh detections get a second pass cropped from
    /// their first points ([`face::refine`]) and are kept only when the network is
    /// sure of a face there ([`face::confident`]).
    fn infer(&self, gray: &Mat, candidates: Vec<Candidate>) -> Result<Inferred> {
        let boxes: Vec<Rect> = candidates.iter().map(|c| c.box_in_frame).collect();
        let found = face::faces_in_boxes(&self.model, gray, &boxes)?;
        let mut kept = Vec::new();
        let mut lost = false;
        for (c, (p, _)) in candidates.into_iter().zip(found) {
            if self.tracker.plausible(&c, &p, (gray.cols() as u32, gray.rows() as u32)) {
                kept.push((c, p));
            } else {
                lost |= c.origin != Origin::Fresh;
            }
        }
        let fresh: Vec<usize> = (0..kept.len()).filter(|&i| kept[i].0.origin == Origin::Fresh).collect();
        let first: Vec<Vec<Point>> = fresh.iter().map(|&i| kept[i].1.clone()).collect();
        let mut consistency = vec![0.0f32; kept.len()];
        let mut is_face = vec![true; kept.len()];
        let prior = &self.model.config().crop;
        for ((i, (p, spread)), f) in fresh.into_iter().zip(face::refine(&self.model, gray, &first)?).zip(&first) {
            consistency[i] = prior.detection_for_points(&p).iou(&prior.detection_for_points(f));
            is_face[i] = face::confident(&self.model, spread);
            kept[i].1 = p;
        }
        // Where two fresh faces overlap, the tracker keeps the first: the one whose
        // second pass moved least (a real face; a false detection drifts).
        let mut scored: Vec<_> =
            kept.into_iter().zip(consistency).zip(is_face).filter(|(_, f)| *f).map(|(k, _)| k).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        kept = scored.into_iter().map(|(k, _)| k).collect();
        Ok(Inferred { kept, lost })
    }

    /// Finds the faces of one 8-bit gray frame taken at `timestamp_ms`;
    /// `detections` are the detector's boxes when it ran on this frame.
    pub fn process(
        &mut self,
        gray: &Mat,
        detections: Option<&[Rect]>,
        timestamp_ms: f64,
    ) -> Result<(Vec<Face>, StageTimes)> {
        let mut times = StageTimes::default();
        // A tracked face the whole-frame search missed (small, or blurred by the
        // downscale) gets a closer look before it counts as missed.
        let t = Instant::now();
        let mut confirmed;
        let detections = match detections {
            Some(found) => {
                confirmed = found.to_vec();
                for predicted in self.tracker.unconfirmed(found) {
                    confirmed.extend(self.detector.detect_near(gray, &predicted)?);
                }
                Some(confirmed.as_slice())
            }
            None => None,
        };
        times.detect_ms = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        let plan = self.tracker.plan(detections);
        let Inferred { mut kept, lost } = self.infer(gray, plan)?;
        times.infer_ms = t.elapsed().as_secs_f64() * 1000.0;
        if detections.is_none() && (lost || kept.is_empty()) {
            // A track was lost between detector runs, or no face is followed: look
            // for faces at once rather than at the next scheduled run.
            let t = Instant::now();
            let found = self.detector.detect(gray)?;
            self.detector_runs += 1;
            times.detector_ran = true;
            times.detect_ms += t.elapsed().as_secs_f64() * 1000.0;
            let t = Instant::now();
            let prior = self.tracker.prior();
            let match_iou = self.tracker.params().match_iou;
            let fresh: Vec<Candidate> = found
                .into_iter()
                .filter(|d| kept.iter().all(|(_, p)| prior.detection_for_points(p).iou(d) < match_iou))
                .map(|d| Candidate { box_in_frame: d, track: None, origin: Origin::Fresh })
                .collect();
            kept.extend(self.infer(gray, fresh)?.kept);
            times.infer_ms += t.elapsed().as_secs_f64() * 1000.0;
        }
        let faces = self.tracker.update(kept, timestamp_ms);
        Ok((faces, times))
    }
}

/// Memory for frames queued before the face stage when reading files.
const FILE_QUEUE_BYTES: usize = 64 << 20;
/// At most this many frames queued before the face stage (files).
const FILE_QUEUE_FRAMES: usize = 16;
/// After a stop (Ctrl-C, closed window, error), how long the stages get to finish
/// their queues and return. A stage still blocked after it (a source stuck in a read
/// from a hung camera or pipe) is left behind, and the outputs are finalised with
/// what was produced.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The source had no more frames.
    End,
    MaxFrames,
    WindowClosed,
    Interrupted,
}

pub struct RunOptions {
    pub source: SourceSpec,
    /// Run the Haar detector on every N-th frame (1: every frame).
    pub detect_every: u32,
    /// Follow faces by their keypoints between detector runs (else every crop is
    /// a detector box).
    pub tracking: bool,
    pub smoothing: Option<OneEuroParams>,
    /// Keep every frame's faces in the summary (for `bench --still`).
    pub record_faces: bool,
    pub show_window: bool,
    pub output: Option<PathBuf>,
    pub keypoints: Option<PathBuf>,
    pub max_frames: Option<u64>,
    pub progress: bool,
    pub overlay: OverlayOptions,
}

/// Per-frame figures of a run, for `bench` and the closing summary.
#[derive(Debug, Clone, Default)]
pub struct StageSamples {
    pub decode_ms: Vec<f64>,
    /// Haar cascade time of the frames the detector ran on.
    pub detect_ms: Vec<f64>,
    /// Crop + CNN time divided by the faces of the frame (frames with faces only).
    pub infer_ms_per_face: Vec<f64>,
    pub draw_ms: Vec<f64>,
    /// Capture (or decode) to shown/written, per frame.
    pub latency_ms: Vec<f64>,
    /// When each frame left the sinks, seconds since the run started.
    pub done_secs: Vec<f64>,
    pub detector_runs: u64,
}

/// The median of `v` (0 for none).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub samples: StageSamples,
    /// Every frame's faces when `RunOptions::record_faces`.
    pub faces_per_frame: Vec<Vec<Face>>,
    pub frames: u64,
    pub faces: u64,
    pub frames_with_faces: u64,
    pub dropped: u64,
    pub skipped: u64,
    pub secs: f64,
    pub stop: StopReason,
    pub outputs: Vec<PathBuf>,
}

struct Annotated {
    frame: Frame,
    faces: Vec<Face>,
    times: StageTimes,
}

/// A frame with its gray copy and, on the frames the detector ran, its boxes.
struct Detected {
    frame: Frame,
    gray: Mat,
    detections: Option<Vec<Rect>>,
    detect_ms: f64,
}

/// The detect stage: gray conversion of every frame, and the Haar detector on every
/// `every`-th frame it receives, a frame ahead of the face stage so that detection
/// and inference run at the same time on the two cores.
pub struct DetectStage {
    detector: HaarDetector,
    every: u64,
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
        cascade: &std::path::Path,
        model: Keypointer,
    ) -> Result<Self> {
        let detect =
            DetectStage { detector: HaarDetector::new(cascade, detector)?, every: options.detect_every.max(1) as u64 };
        let stage = FaceStage::new(HaarDetector::new(cascade, detector)?, model, options.tracking, options.smoothing);
        Ok(Self { source, detect, stage, options })
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

/// Reads frames until the end, `max_frames`, `stop` (Ctrl-C) or `halt` (the sinks
/// are done). A live source gets `drain`, a second receiver of its own channel,
/// to throw away a frame still waiting when a newer one arrives.
fn source_thread(
    mut source: Box<dyn FrameSource>,
    tx: Sender<Frame>,
    drain: Option<Receiver<Frame>>,
    ctl: SourceControl,
) -> Result<StopReason> {
    let SourceControl { stop, halt, max_frames, dropped, skipped } = ctl;
    let mut sent = 0u64;
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(StopReason::Interrupted);
        }
        if halt.load(Ordering::SeqCst) {
            return Ok(StopReason::WindowClosed);
        }
        if max_frames.is_some_and(|m| sent >= m) {
            return Ok(StopReason::MaxFrames);
        }
        let t = Instant::now();
        let Some(mut frame) = source.next_frame()? else {
            skipped.store(source.skipped(), Ordering::SeqCst);
            return Ok(StopReason::End);
        };
        if frame.decode_ms == 0.0 {
            frame.decode_ms = t.elapsed().as_secs_f64() * 1000.0;
        }
        sent += 1;
        if let Some(drain) = &drain {
            // Keep only the newest frame: replace a frame still waiting.
            let mut frame = frame;
            loop {
                match tx.try_send(frame) {
                    Ok(()) => break,
                    Err(TrySendError::Full(f)) => {
                        if drain.try_recv().is_ok() {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        frame = f;
                    }
                    Err(TrySendError::Disconnected(_)) => return Ok(StopReason::WindowClosed),
                }
            }
        } else if tx.send(frame).is_err() {
            return Ok(StopReason::WindowClosed);
        }
    }
}

fn detect_thread(mut stage: DetectStage, rx: Receiver<Frame>, tx: Sender<Detected>) -> Result<u64> {
    let mut runs = 0u64;
    for (n, frame) in rx.iter().enumerate() {
        let t = Instant::now();
        let gray = imageops::to_gray(&frame.image)?;
        let detections = if (n as u64).is_multiple_of(stage.every) {
            runs += 1;
            Some(stage.detector.detect(&gray)?)
        } else {
            None
        };
        let detect_ms = t.elapsed().as_secs_f64() * 1000.0;
        if tx.send(Detected { frame, gray, detections, detect_ms }).is_err() {
            break;
        }
    }
    Ok(runs)
}

fn face_thread(mut stage: FaceStage, rx: Receiver<Detected>, tx: Sender<Annotated>) -> Result<u64> {
    let _guard = tch::no_grad_guard();
    // OpenMP thread counts are per calling thread: re-apply the process setting here.
    tch::set_num_threads(tch::get_num_threads());
    for d in rx {
        let (faces, mut times) = stage.process(&d.gray, d.detections.as_deref(), d.frame.timestamp_ms)?;
        times.decode_ms = d.frame.decode_ms;
        times.detector_ran |= d.detections.is_some();
        times.detect_ms += if d.detections.is_some() { d.detect_ms } else { 0.0 };
        if tx.send(Annotated { frame: d.frame, faces, times }).is_err() {
            break;
        }
    }
    Ok(stage.detector_runs)
}

fn join<T>(handle: thread::JoinHandle<Result<T>>, name: &str) -> Result<T> {
    handle.join().map_err(|_| anyhow!("{name} thread panicked"))?.with_context(|| format!("{name} stage"))
}

/// Joins a stage that finishes by `deadline`; `None` leaves a stuck one behind.
fn join_by<T>(handle: thread::JoinHandle<Result<T>>, name: &str, deadline: Instant) -> Option<Result<T>> {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(std::time::Duration::from_millis(5));
    }
    Some(join(handle, name))
}

/// Runs the pipeline to the end of the source, the frame limit, a closed window or `stop`.
pub fn run(prepared: Prepared, stop: Arc<AtomicBool>) -> Result<RunSummary> {
    let Prepared { source, detect, stage, options } = prepared;
    let info = source.info().clone();
    let scheme = stage.model().config().scheme;
    // Outputs are created only now that every input has been checked.
    let mut keypoints = match &options.keypoints {
        Some(p) => Some(KeypointWriter::create(p, scheme.num_points())?),
        None => None,
    };
    let mut video = match &options.output {
        Some(p) => Some(VideoSink::create(p, info.width, info.height, info.fps)?),
        None => None,
    };
    let mut window = if options.show_window {
        Some(
            WindowSink::open(&format!("facekp - {}", info.description), info.width, info.height)
                .map_err(|e| anyhow!("window: {e}"))?,
        )
    } else {
        None
    };
    let total = match (info.frame_count, options.max_frames) {
        (Some(n), Some(m)) => Some(n.min(m)),
        (n, m) => n.or(m),
    };
    let bar = if options.progress && !info.live {
        let bar = crate::train::progress_bar(total.unwrap_or(0), "frames");
        Some(bar)
    } else {
        None
    };

    // Live: one frame in flight per stage (stale ones are dropped at the source).
    // Files: a queue before the face stage long enough to keep it busy while the
    // detect stage runs the Haar cascade (tens of ms), within a memory budget.
    let frame_bytes = (info.width as usize * info.height as usize * 4).max(1);
    let queue = if info.live { 1 } else { (FILE_QUEUE_BYTES / frame_bytes).clamp(2, FILE_QUEUE_FRAMES) };
    let capacity = if info.live { 1 } else { 4 };
    let (frame_tx, frame_rx) = bounded::<Frame>(capacity);
    let (det_tx, det_rx) = bounded::<Detected>(queue);
    let (ann_tx, ann_rx) = bounded::<Annotated>(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    let skipped = Arc::new(AtomicU64::new(0));
    let halt = Arc::new(AtomicBool::new(false));
    let src = {
        let ctl = SourceControl {
            stop: stop.clone(),
            halt: halt.clone(),
            max_frames: options.max_frames,
            dropped: dropped.clone(),
            skipped: skipped.clone(),
        };
        let drain = info.live.then(|| frame_rx.clone());
        thread::Builder::new().name("source".into()).spawn(move || source_thread(source, frame_tx, drain, ctl))?
    };
    let detect_handle =
        thread::Builder::new().name("detect".into()).spawn(move || detect_thread(detect, frame_rx, det_tx))?;
    let faces_handle = thread::Builder::new().name("faces".into()).spawn(move || face_thread(stage, det_rx, ann_tx))?;

    let started = Instant::now();
    let mut overlay = options.overlay;
    let mut stats = OverlayStats::default();
    let mut last_shown: Option<Instant> = None;
    let (mut frames, mut faces_total, mut frames_with_faces) = (0u64, 0u64, 0u64);
    let mut window_closed = false;
    let mut sink_error = None;
    let mut samples = StageSamples::default();
    let mut faces_per_frame = Vec::new();
    let poll = std::time::Duration::from_millis(50);
    let mut idle_since_stop: Option<Instant> = None;
    loop {
        let mut item = match ann_rx.recv_timeout(poll) {
            Ok(item) => item,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(w) = window.as_mut() {
                    if w.poll(&mut overlay).quit {
                        window_closed = true;
                        break;
                    }
                }
                // Stopped, and nothing came for a while: the chain is stuck upstream.
                if stop.load(Ordering::SeqCst)
                    && idle_since_stop.get_or_insert_with(Instant::now).elapsed() >= STOP_GRACE
                {
                    break;
                }
                continue;
            }
        };
        idle_since_stop = None;
        let t = Instant::now();
        // The draw time shown is the previous frame's (this one is being drawn).
        stats.times = StageTimes { draw_ms: stats.times.draw_ms, ..item.times };
        if let Err(e) = render::draw_overlay(&mut item.frame.image, &item.faces, scheme, &overlay, Some(&stats)) {
            sink_error = Some(anyhow::Error::from(e).context("overlay"));
            break;
        }
        stats.times.draw_ms = t.elapsed().as_secs_f64() * 1000.0;
        if let Some(k) = keypoints.as_mut() {
            if let Err(e) = k.write_frame(item.frame.seq, item.frame.timestamp_ms, &item.faces) {
                sink_error = Some(e.into());
                break;
            }
        }
        if let Some(v) = video.as_mut() {
            if let Err(e) = v.write(&item.frame.image) {
                sink_error = Some(anyhow::Error::from(e).context("--output: writing a frame"));
                break;
            }
        }
        let now = Instant::now();
        samples.decode_ms.push(item.times.decode_ms);
        if item.times.detector_ran {
            samples.detect_ms.push(item.times.detect_ms);
        }
        if !item.faces.is_empty() {
            samples.infer_ms_per_face.push(item.times.infer_ms / item.faces.len() as f64);
        }
        samples.draw_ms.push(stats.times.draw_ms);
        samples.latency_ms.push(now.duration_since(item.frame.captured_at).as_secs_f64() * 1000.0);
        samples.done_secs.push(now.duration_since(started).as_secs_f64());
        frames += 1;
        faces_total += item.faces.len() as u64;
        frames_with_faces += (!item.faces.is_empty()) as u64;
        if let Some(prev) = last_shown {
            let inst = 1.0 / now.duration_since(prev).as_secs_f64().max(1e-6);
            stats.fps = if stats.fps == 0.0 { inst } else { 0.9 * stats.fps + 0.1 * inst };
        }
        last_shown = Some(now);
        if let Some(b) = &bar {
            b.inc(1);
        }
        if options.record_faces {
            faces_per_frame.push(item.faces.clone());
        }
        if let Some(w) = window.as_mut() {
            let mut input = w.show(&item.frame.image, &mut overlay).map_err(|e| anyhow!("window: {e}"))?;
            while w.paused && !input.quit && !stop.load(Ordering::SeqCst) {
                thread::sleep(std::time::Duration::from_millis(15));
                input = w.poll(&mut overlay);
            }
            if input.quit {
                window_closed = true;
                break;
            }
        }
    }
    // Closing the receiver stops the face thread, whose end stops a file source;
    // `halt` stops a live one (which also holds a receiver, to drop stale frames).
    halt.store(true, Ordering::SeqCst);
    drop(ann_rx);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let deadline = Instant::now() + STOP_GRACE;
    let face_result = join_by(faces_handle, "faces", deadline);
    let detect_result = join_by(detect_handle, "detect", deadline);
    let source_result = join_by(src, "source", deadline).unwrap_or_else(|| {
        eprintln!("warning: the source did not stop within {} s (a stuck read); left it behind", STOP_GRACE.as_secs());
        Ok(StopReason::Interrupted)
    });
    if let Some(e) = sink_error {
        return Err(e);
    }
    samples.detector_runs = face_result.unwrap_or(Ok(0))? + detect_result.unwrap_or(Ok(0))?;
    // A source failing mid-run (camera lost) still finalises what was produced.
    let mut outputs = Vec::new();
    let mut finish = |outputs: &mut Vec<PathBuf>| -> Result<()> {
        if let Some(k) = keypoints.take() {
            outputs.push(k.finish()?);
        }
        if let Some(v) = video.take() {
            outputs.push(v.finish()?);
        }
        Ok(())
    };
    let stop_reason = match source_result {
        Ok(reason) => reason,
        Err(e) => {
            finish(&mut outputs)?;
            return Err(e);
        }
    };
    finish(&mut outputs)?;
    let stop_reason = if window_closed {
        StopReason::WindowClosed
    } else if stop.load(Ordering::SeqCst) {
        StopReason::Interrupted
    } else {
        stop_reason
    };
    Ok(RunSummary {
        samples,
        faces_per_frame,
        frames,
        faces: faces_total,
        frames_with_faces,
        dropped: dropped.load(Ordering::Relaxed),
        skipped: skipped.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
        stop: stop_reason,
        outputs,
    })
}
