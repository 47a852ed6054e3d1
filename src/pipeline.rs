//! The run-time pipeline: a source thread, a face thread (detect + track + infer)
//! and the sinks (overlay, keypoint file, video file, window) on the calling
//! thread, connected by bounded channels. Live cameras drop stale frames; files
//! keep every frame in order. Shutdown flows down the chain: the source stops
//! (end, `--max-frames`, Ctrl-C flag, or a closed window dropping the receiver),
//! each stage finishes its queue and returns, and the outputs are finalised.

use crate::detect::{DetectorConfig, HaarDetector};
use crate::face::{Face, StageTimes};
use crate::geometry::{frame_points_from_unit, Rect};
use crate::imageops;
use crate::model::Keypointer;
use crate::output::KeypointWriter;
use crate::render::{self, OverlayOptions, OverlayStats, VideoSink, WindowSink};
use crate::smooth::{OneEuroParams, PointsFilter};
use crate::source::{Frame, FrameSource, SourceSpec};
use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use opencv::core::Mat;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

/// A detection overlaps a track when their IoU is at least this.
pub const TRACK_MATCH_IOU: f32 = 0.3;
/// A tracked face is lost when the box predicted from its new points overlaps the
/// box it was cropped from by less than this (the points left the crop, or collapsed).
pub const TRACK_KEEP_IOU: f32 = 0.5;
/// A tracked face is lost when its size changes by more than this factor between
/// two frames (a face does not shrink or grow 15% in 1/30 s; points fitted to
/// clutter do).
pub const TRACK_MIN_SCALE_CHANGE: f32 = 0.85;
/// Two tracks on one face: the younger is dropped above this IoU.
pub const TRACK_DUPLICATE_IOU: f32 = 0.5;

/// A track the detector failed to confirm at this many consecutive detector runs
/// is dropped (the crop may hold a face-like pattern the CNN keeps fitting).
pub const TRACK_MAX_MISSED_DETECTIONS: u32 = 2;

struct Track {
    id: u64,
    /// Consecutive detector runs that did not find this face.
    missed_detections: u32,
    /// The box the next crop is taken from (predicted from the last raw points).
    next_box: Rect,
    /// One Euro filters of the track's points (fresh for a new track).
    filter: PointsFilter,
    last_timestamp_ms: f64,
}

/// A face to crop on this frame.
struct Candidate {
    crop_box: Rect,
    /// The track it continues, if any.
    track: Option<u64>,
    /// Found by the detector on this frame.
    detected: bool,
    missed_detections: u32,
}

/// The detect + track + infer stage: frames in, faces with keypoints out.
pub struct FaceStage {
    detector: HaarDetector,
    model: Keypointer,
    /// Run the detector every N frames (1 = every frame, no tracking between).
    detect_every: u64,
    frames: u64,
    tracks: Vec<Track>,
    next_id: u64,
    smoothing: Option<OneEuroParams>,
    pub detector_runs: u64,
}

impl FaceStage {
    /// `detect_every`: 1 detects on every frame; N > 1 follows faces by their
    /// keypoints and detects every N frames (and whenever no face is tracked).
    /// `smoothing`: One Euro filtering of each track's points, or raw points.
    pub fn new(detector: HaarDetector, model: Keypointer, detect_every: u32, smoothing: Option<OneEuroParams>) -> Self {
        Self {
            detector,
            model,
            detect_every: detect_every.max(1) as u64,
            frames: 0,
            tracks: Vec::new(),
            next_id: 0,
            smoothing,
            detector_runs: 0,
        }
    }

    pub fn model(&self) -> &Keypointer {
        &self.model
    }

    /// Finds the faces of one BGR (or gray) frame taken at `timestamp_ms`.
    pub fn process(&mut self, image: &Mat, timestamp_ms: f64) -> Result<(Vec<Face>, StageTimes)> {
        let mut times = StageTimes::default();
        let t0 = Instant::now();
        let gray = imageops::to_gray(image)?;
        let run_detector = self.detect_every == 1 || self.tracks.is_empty() || self.frames.is_multiple_of(self.detect_every);
        self.frames += 1;
        let mut candidates: Vec<Candidate> = Vec::new();
        if run_detector {
            self.detector_runs += 1;
            times.detector_ran = true;
            let detections = self.detector.detect(&gray)?;
            let mut claimed = vec![false; self.tracks.len()];
            for d in detections {
                let best = self
                    .tracks
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| !claimed[*k])
                    .map(|(k, t)| (k, t.next_box.iou(&d)))
                    .filter(|(_, iou)| *iou >= TRACK_MATCH_IOU)
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                let track = best.map(|(k, _)| {
                    claimed[k] = true;
                    self.tracks[k].id
                });
                candidates.push(Candidate { crop_box: d, track, detected: true, missed_detections: 0 });
            }
            // Tracks the detector did not see this time are followed by their points
            // for a while, unless detecting on every frame (the detector alone decides).
            if self.detect_every > 1 {
                for (k, t) in self.tracks.iter().enumerate() {
                    let missed = t.missed_detections + 1;
                    if !claimed[k] && missed <= TRACK_MAX_MISSED_DETECTIONS {
                        candidates.push(Candidate { crop_box: t.next_box, track: Some(t.id), detected: false, missed_detections: missed });
                    }
                }
            }
        } else {
            candidates.extend(self.tracks.iter().map(|t| Candidate {
                crop_box: t.next_box,
                track: Some(t.id),
                detected: false,
                missed_detections: t.missed_detections,
            }));
        }
        times.detect_ms = t0.elapsed().as_secs_f64() * 1000.0;

        let t1 = Instant::now();
        let cfg = self.model.config();
        let crops: Vec<_> = candidates.iter().map(|c| cfg.crop.crop_for_detection(&c.crop_box)).collect();
        let pixels = crops
            .iter()
            .map(|c| imageops::extract_crop(&gray, c, cfg.input_size))
            .collect::<opencv::Result<Vec<_>>>()?;
        let units = self.model.infer(&pixels)?;
        times.infer_ms = t1.elapsed().as_secs_f64() * 1000.0;

        let mut faces: Vec<Face> = Vec::new();
        let mut tracks: Vec<Track> = Vec::new();
        let mut old: Vec<Option<Track>> = std::mem::take(&mut self.tracks).into_iter().map(Some).collect();
        for ((c, crop), unit) in candidates.into_iter().zip(&crops).zip(&units) {
            let b = c.crop_box;
            let points = frame_points_from_unit(unit, crop, cfg.input_size);
            let next_box = cfg.crop.detection_for_points(&points);
            let scale_change = next_box.w / b.w.max(1.0);
            let implausible = !(TRACK_MIN_SCALE_CHANGE..=1.0 / TRACK_MIN_SCALE_CHANGE).contains(&scale_change);
            if !c.detected && (next_box.iou(&b) < TRACK_KEEP_IOU || implausible) {
                continue; // lost: the points no longer describe a face in this crop
            }
            if tracks.iter().any(|t| t.next_box.iou(&next_box) > TRACK_DUPLICATE_IOU) {
                continue; // a second candidate on a face already kept
            }
            let previous = c.track.and_then(|id| old.iter_mut().find(|t| t.as_ref().is_some_and(|t| t.id == id))).and_then(Option::take);
            let mut track = previous.unwrap_or_else(|| {
                self.next_id += 1;
                Track {
                    id: self.next_id,
                    missed_detections: 0,
                    next_box,
                    filter: PointsFilter::default(),
                    last_timestamp_ms: timestamp_ms,
                }
            });
            track.missed_detections = c.missed_detections;
            let points = match &self.smoothing {
                Some(params) => {
                    let dt_secs = ((timestamp_ms - track.last_timestamp_ms) / 1000.0) as f32;
                    track.filter.filter(&points, b.w, dt_secs, params)
                }
                None => points,
            };
            track.next_box = next_box;
            track.last_timestamp_ms = timestamp_ms;
            faces.push(Face { box_in_frame: b, points, track: track.id });
            tracks.push(track);
        }
        self.tracks = tracks;
        Ok((faces, times))
    }
}

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
    pub detect_every: u32,
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

/// Everything a run needs, opened and checked before any thread starts or any
/// output file exists, so bad input fails early with nothing written.
pub struct Prepared {
    pub source: Box<dyn FrameSource>,
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
        let detector = HaarDetector::new(cascade, detector)?;
        let stage = FaceStage::new(detector, model, options.detect_every, options.smoothing);
        Ok(Self { source, stage, options })
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
fn source_thread(mut source: Box<dyn FrameSource>, tx: Sender<Frame>, drain: Option<Receiver<Frame>>, ctl: SourceControl) -> Result<StopReason> {
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

fn face_thread(mut stage: FaceStage, rx: Receiver<Frame>, tx: Sender<Annotated>) -> Result<u64> {
    let _guard = tch::no_grad_guard();
    // OpenMP thread counts are per calling thread: re-apply the process setting here.
    tch::set_num_threads(tch::get_num_threads());
    for frame in rx {
        let (faces, mut times) = stage.process(&frame.image, frame.timestamp_ms)?;
        times.decode_ms = frame.decode_ms;
        if tx.send(Annotated { frame, faces, times }).is_err() {
            break;
        }
    }
    Ok(stage.detector_runs)
}

fn join<T>(handle: thread::JoinHandle<Result<T>>, name: &str) -> Result<T> {
    handle.join().map_err(|_| anyhow!("{name} thread panicked"))?.with_context(|| format!("{name} stage"))
}

/// Runs the pipeline to the end of the source, the frame limit, a closed window or `stop`.
pub fn run(prepared: Prepared, stop: Arc<AtomicBool>) -> Result<RunSummary> {
    let Prepared { source, stage, options } = prepared;
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
        Some(WindowSink::open(&format!("facekp - {}", info.description), info.width, info.height).map_err(|e| anyhow!("window: {e}"))?)
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

    let capacity = if info.live { 1 } else { 4 };
    let (frame_tx, frame_rx) = bounded::<Frame>(capacity);
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
    let faces_handle = thread::Builder::new().name("faces".into()).spawn(move || face_thread(stage, frame_rx, ann_tx))?;

    let started = Instant::now();
    let mut overlay = options.overlay;
    let mut stats = OverlayStats::default();
    let mut last_shown: Option<Instant> = None;
    let (mut frames, mut faces_total, mut frames_with_faces) = (0u64, 0u64, 0u64);
    let mut window_closed = false;
    let mut sink_error = None;
    let mut samples = StageSamples::default();
    let mut faces_per_frame = Vec::new();
    for mut item in ann_rx.iter() {
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
        samples.detect_ms.push(item.times.detect_ms);
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
    let face_result = join(faces_handle, "faces");
    let source_result = join(src, "source");
    if let Some(e) = sink_error {
        return Err(e);
    }
    samples.detector_runs = face_result?;
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
