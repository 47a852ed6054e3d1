//! What the pipeline produces per frame: faces with boxes, keypoints (frame
//! pixels), head pose and openness, plus the per-stage timings shown in the
//! overlay; and the step from detector-like boxes to keypoints that `run` and
//! `eval` share.

use crate::geometry::{frame_points_from_unit, CropSquare, Point, Rect};
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
/// box cropped the way training crops a detection).
pub fn faces_in_boxes(model: &Keypointer, gray: &Mat, boxes: &[Rect]) -> Result<Vec<FaceFit>> {
    let cfg = model.config();
    let crops: Vec<_> = boxes.iter().map(|b| cfg.crop.crop_for_detection(b)).collect();
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
/// `points` (the box the detector would give for them), which centres the crop on
/// the face rather than on the detector's noisy box.
pub fn refine(model: &Keypointer, gray: &Mat, points: &[Vec<Point>]) -> Result<Vec<FaceFit>> {
    let boxes: Vec<Rect> = points.iter().map(|p| model.config().crop.detection_for_points(p)).collect();
    faces_in_boxes(model, gray, &boxes)
}

/// Whether a face's heatmap `spread` is within the model's face threshold
/// (`ModelConfig::max_spread`; none set: every face is).
pub fn confident(model: &Keypointer, spread: f32) -> bool {
    model.config().max_spread.is_none_or(|max| spread <= max)
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
}
