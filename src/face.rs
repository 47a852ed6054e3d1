//! What the pipeline produces per frame: faces with boxes, keypoints (frame
//! pixels), head pose and openness, plus the per-stage timings shown in the
//! overlay; and the step from detector-like boxes to keypoints that `run` and
//! `eval` share.

use crate::detect::Search;
use crate::geometry::{frame_points_from_unit, CropSquare, FaceBox, Point, Rect};
use crate::imageops;
use crate::model::{Inference, Keypointer};
use crate::pose::{HeadPose, Openness};
use anyhow::Result;
use opencv::core::Mat;

/// The CNN's fit of one face: its keypoints in frame pixels and its heatmap spread
/// ([`crate::model::Inference::spread`]: small where the network is sure of a face).
#[derive(Debug, Clone, PartialEq)]
pub struct FaceFit {
    pub points: Vec<Point>,
    pub spread: f32,
}

/// The fits of the faces in detector-like `boxes` of `gray`, as one CNN batch (each
/// box cropped the way training crops a detection, level for a rolled box).
pub fn faces_in_boxes(model: &Keypointer, gray: &Mat, boxes: &[FaceBox]) -> Result<Vec<FaceFit>> {
    let cfg = model.config();
    let crops: Vec<_> = boxes.iter().map(|b| cfg.crop.crop_for_face(b)).collect();
    let pixels =
        crops.iter().map(|c| imageops::extract_crop(gray, c, cfg.input_size)).collect::<opencv::Result<Vec<_>>>()?;
    let found = model.infer_scored(&pixels)?;
    let fit = |(f, c): (Inference, &CropSquare)| FaceFit {
        points: frame_points_from_unit(&f.points, c, cfg.input_size),
        spread: f.spread,
    };
    Ok(found.into_iter().zip(&crops).map(fit).collect())
}

/// The second pass for new detections: each face again, cropped from its first
/// `points` (the box the detector would give for them, turned by their roll: see
/// [`box_for_points`]), which centres the crop on the face rather than on the
/// detector's noisy box, and levels it.
pub fn refine(model: &Keypointer, gray: &Mat, points: &[Vec<Point>]) -> Result<Vec<FaceFit>> {
    let boxes: Vec<FaceBox> = points.iter().map(|p| box_for_points(model, p)).collect();
    faces_in_boxes(model, gray, &boxes)
}

/// The detector-like box a face's `points` call for: the prior's box around them,
/// turned by their roll (the eye line) so that the next crop is level.
pub fn box_for_points(model: &Keypointer, points: &[Point]) -> FaceBox {
    let cfg = model.config();
    cfg.crop.face_box_for_points(points, cfg.scheme.roll(points))
}

/// The largest heatmap spread (second pass) of a new face found by a wide search,
/// for a model whose config sets no `max_turned_spread`.
pub const TURNED_MAX_SPREAD: f32 = 0.12;

/// Whether a new face found by `search` with heatmap `spread` is one: within the
/// model's face threshold (`ModelConfig::max_spread`; none set: every face is) and,
/// found by a wide search, within its stricter threshold
/// (`ModelConfig::max_turned_spread`, else [`TURNED_MAX_SPREAD`]).
pub fn confident(model: &Keypointer, spread: f32, search: Search) -> bool {
    let cfg = model.config();
    let wide_max = cfg.max_turned_spread.unwrap_or(TURNED_MAX_SPREAD);
    let wide_ok = search == Search::Upright || spread <= wide_max;
    wide_ok && cfg.max_spread.is_none_or(|max| spread <= max)
}

/// One face in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// The detector box (or the box predicted from the last points when tracking).
    pub box_in_frame: Rect,
    /// Keypoints in frame pixels, in the model's scheme order.
    pub points: Vec<Point>,
    /// Track id, stable while the face is followed from frame to frame.
    pub track: u64,
    /// Head pose (smoothed per track like the points); `None` when none was solved.
    pub pose: Option<HeadPose>,
    /// Eye and mouth openness of the points; `None` for the 15-point scheme.
    pub openness: Option<Openness>,
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
    /// The frame's tile search ([`crate::detect::tiles`], HD frames between
    /// whole-frame searches), if it had one.
    pub tile_ms: Option<f64>,
}
