//! What a run reports: per-frame stage figures for `bench`, and the totals of the
//! closing summary.

use super::stages::Annotated;
use crate::face::Face;
use std::path::PathBuf;
use std::time::Instant;

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The source had no more frames.
    End,
    MaxFrames,
    WindowClosed,
    Interrupted,
}

/// Per-frame figures of a run, for `bench` and the closing summary.
#[derive(Debug, Clone, Default)]
pub struct StageSamples {
    pub decode_ms: Vec<f64>,
    /// Haar cascade time, per frame; `None` where the detector did not run.
    pub detect_ms: Vec<Option<f64>>,
    /// Tile search time (HD video between detector runs), per frame; `None`
    /// where no tile was searched.
    pub tile_ms: Vec<Option<f64>>,
    /// Crop + CNN time divided by the faces of the frame (frames with faces only).
    pub infer_ms_per_face: Vec<f64>,
    pub draw_ms: Vec<f64>,
    /// Capture (or decode) to shown/written, per frame.
    pub latency_ms: Vec<f64>,
    /// When each frame left the sinks, seconds since the run started.
    pub done_secs: Vec<f64>,
    pub detector_runs: u64,
}

impl StageSamples {
    /// Adds the figures of a frame that left the sinks at `now`, having been drawn
    /// in `draw_ms`, in a run that started at `started`.
    pub(super) fn record(&mut self, item: &Annotated, draw_ms: f64, now: Instant, started: Instant) {
        self.decode_ms.push(item.times.decode_ms);
        self.detect_ms.push(item.times.detector_ran.then_some(item.times.detect_ms));
        self.tile_ms.push(item.times.tile_ms);
        if !item.faces.is_empty() {
            self.infer_ms_per_face.push(item.times.infer_ms / item.faces.len() as f64);
        }
        self.draw_ms.push(draw_ms);
        self.latency_ms.push(now.duration_since(item.frame.captured_at).as_secs_f64() * 1000.0);
        self.done_secs.push(now.duration_since(started).as_secs_f64());
    }
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

/// Frame and face counts of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub frames: u64,
    pub faces: u64,
    pub frames_with_faces: u64,
}

impl Counts {
    pub(super) fn add(&mut self, faces: &[Face]) {
        self.frames += 1;
        self.faces += faces.len() as u64;
        self.frames_with_faces += u64::from(!faces.is_empty());
    }
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub samples: StageSamples,
    /// Every frame's faces when `RunOptions::record_faces`.
    pub faces_per_frame: Vec<Vec<Face>>,
    pub frames: u64,
    pub faces: u64,
    pub frames_with_faces: u64,
    /// Stale frames a live source dropped because a newer one arrived.
    pub dropped: u64,
    /// Frames of a file that could not be decoded.
    pub skipped: u64,
    /// The files an image folder skipped (could not decode), by name.
    pub skipped_names: Vec<String>,
    /// Frames a window did not show, to keep a video's pace (every one is in the
    /// keypoint file and the annotated video).
    pub display_skipped: u64,
    /// The encoder of the annotated video, when there is one.
    pub encoder: Option<&'static str>,
    pub secs: f64,
    pub stop: StopReason,
    pub outputs: Vec<PathBuf>,
}

impl RunSummary {
    /// Frames per second over the whole run.
    pub fn fps(&self) -> f64 {
        self.frames as f64 / self.secs.max(1e-9)
    }
}
