//! What the pipeline produces per frame: faces with boxes, keypoints (frame
//! pixels), head pose and openness, plus the per-stage timings shown in the
//! overlay; and the step from detector-like boxes to keypoints that `run` and
//! `eval` share.

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

/// The largest heatmap spread (second pass) of a new face found in a turned copy
/// of the image. The turned searches fire on clutter more often than the upright
/// one: on the ytf68 and helen68 val photos, searched at every turn, this bound
/// rejected 182 of the 260 turned detections that matched no annotated face, and 3
/// of the 112 that did (whose faces the upright search finds as well).
pub const TURNED_MAX_SPREAD: f32 = 0.12;

/// The largest heatmap spread of a new face beside a surer one (a tracked face, or
/// a new one of smaller spread), whose box grown [`NEAR_FACE_REACH`] times about its
/// centre it touches. The cascade's ghosts on necks, chins and shoulders lie there:
/// on the val and group photos their spreads are 0.19-0.31, while 99% of the
/// annotated faces' are under 0.11. Alone, a face may reach the model's own
/// `max_spread`, which must also pass grainy and blurred real faces.
pub const NEAR_FACE_MAX_SPREAD: f32 = 0.15;
/// How far about a face's centre, in face-box sizes, a new face counts as beside it.
pub const NEAR_FACE_REACH: f32 = 1.6;

/// Whether new face `i` of `boxes` (frame boxes of one frame's faces) is beside a
/// surer face and less sure than [`NEAR_FACE_MAX_SPREAD`]. `spreads` holds each
/// new face's spread and `None` for tracked faces, which count as surest.
pub fn beside_surer_face(i: usize, boxes: &[Rect], spreads: &[Option<f32>]) -> bool {
    let Some(mine) = spreads[i].filter(|&s| s > NEAR_FACE_MAX_SPREAD) else {
        return false;
    };
    let reach = |b: &Rect| Rect::from_center(b.center(), b.w * NEAR_FACE_REACH, b.h * NEAR_FACE_REACH);
    let surer = |j: usize| spreads[j].is_none_or(|s| s < mine);
    (0..boxes.len()).any(|j| j != i && surer(j) && reach(&boxes[j]).intersection_area(&boxes[i]) > 0.0)
}

/// Whether a new face found in `detection` with heatmap `spread` is one: within the
/// model's face threshold (`ModelConfig::max_spread`; none set: every face is) and,
/// found in a turned copy of the image, within [`TURNED_MAX_SPREAD`].
pub fn confident(model: &Keypointer, spread: f32, detection: &FaceBox) -> bool {
    let turned_ok = detection.roll_rad == 0.0 || spread <= TURNED_MAX_SPREAD;
    turned_ok && model.config().max_spread.is_none_or(|max| spread <= max)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A portrait (tracked, or new and sure) with an unsure new face on its neck
    /// and a sure new face beside it, as in a group photo.
    #[test]
    fn an_unsure_face_beside_a_surer_one_is_a_ghost_and_a_sure_one_is_not() {
        let boxes = [
            Rect::new(100.0, 100.0, 100.0, 100.0),
            Rect::new(120.0, 215.0, 40.0, 40.0),
            Rect::new(215.0, 100.0, 90.0, 90.0),
        ];
        for portrait in [None, Some(0.09)] {
            let spreads = [portrait, Some(0.2), Some(0.1)];
            assert!(beside_surer_face(1, &boxes, &spreads));
            assert!(!beside_surer_face(2, &boxes, &spreads), "a sure neighbour stays");
            assert!(!beside_surer_face(0, &boxes, &spreads));
        }
        // Alone, an unsure face is left to the model's own threshold.
        assert!(!beside_surer_face(0, &boxes[1..2], &[Some(0.2)]));
        // Far from the portrait, it is not beside it.
        let far = [boxes[0], Rect::new(400.0, 400.0, 40.0, 40.0)];
        assert!(!beside_surer_face(1, &far, &[None, Some(0.2)]));
    }
}
