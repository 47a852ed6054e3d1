//! What the pipeline produces per frame: faces with boxes and keypoints, in frame
//! pixels, plus the per-stage timings shown in the overlay.

use crate::geometry::{Point, Rect};

/// One face in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// The detector box (or the box predicted from the last points when tracking).
    pub box_in_frame: Rect,
    /// Keypoints in frame pixels, in the model's scheme order.
    pub points: Vec<Point>,
    /// Track id, stable while the face is followed from frame to frame.
    pub track: u64,
}

/// Milliseconds spent per stage on one frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub decode_ms: f64,
    pub detect_ms: f64,
    pub infer_ms: f64,
    pub draw_ms: f64,
    /// Whether the Haar detector ran on this frame.
    pub detector_ran: bool,
}
