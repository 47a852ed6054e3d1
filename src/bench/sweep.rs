//! `facekp bench --rotation-sweep CSV`: how well faces are found and followed as
//! they turn in the image plane, on annotated val faces.
//!
//! Each face is scaled so that its inter-ocular (outer eye corner) distance is
//! [`SWEEP_IOD_PX`] and centred in a [`SWEEP_FRAME_PX`]-pixel square frame. It is
//! held upright for [`HOLD_FRAMES`] frames, turned counter-clockwise (as seen) 1
//! degree a frame to 90, and held there again, as a video: the detector runs as in
//! `run` on a video (every `detect_every` frames, one turn of the image per run)
//! and faces are followed in between. The same faces are also shown as single
//! photos already turned by [`STILL_ANGLES_DEG`], searched as `run --images`
//! searches (every turn of the image). A frame counts as followed when a face's
//! points lie, on average, within [`FOLLOW_DISTANCE_IOD`] inter-ocular distances
//! of the truth and its NME is under [`crate::eval::FAILURE_NME`].

use crate::dataset::LoadedSet;
use crate::detect::{AngleSearch, HaarDetector};
use crate::eval::{nme, FAILURE_NME};
use crate::face::Face;
use crate::geometry::{Affine, Point, Rect};
use crate::imageops;
use crate::landmarks::Scheme;
use crate::pipeline::face_stage::Found;
use crate::pipeline::{FaceStage, Schedule};
use crate::track::CropMode;
use anyhow::Result;
use serde::Serialize;

/// Inter-ocular distance of a face in the sweep's frames, pixels.
pub const SWEEP_IOD_PX: f32 = 80.0;
/// Side of the sweep's square frames, pixels.
pub const SWEEP_FRAME_PX: i32 = 480;
/// Frames a face is held upright before the turn, and at 90 degrees after it.
pub const HOLD_FRAMES: usize = 15;
/// The turn, degrees (one a frame).
pub const TURN_DEG: usize = 90;
/// The turns of the single photos, degrees (positive: counter-clockwise as seen).
pub const STILL_ANGLES_DEG: [f32; 6] = [-60.0, -45.0, -30.0, 30.0, 45.0, 60.0];
/// A face is on the truth when its points lie this close on average, in
/// inter-ocular distances.
pub const FOLLOW_DISTANCE_IOD: f64 = 0.5;
/// Frame interval of the sweep's video, milliseconds (30 fps).
const FRAME_MS: f64 = 1000.0 / 30.0;

/// One band of turn angles: how many of its frames had the face followed, and the
/// NME of those.
#[derive(Debug, Clone, Serialize)]
pub struct BandReport {
    /// The band's angles, degrees: "0", "1-30", "31-60" or "61-90".
    pub band: &'static str,
    pub frames: usize,
    pub followed: f64,
    /// Mean NME over the followed frames (none followed: `None`).
    pub nme: Option<f64>,
}

/// The photos turned by one angle: the part of them whose face was found.
#[derive(Debug, Clone, Serialize)]
pub struct StillReport {
    pub angle_deg: f32,
    pub found: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub faces: usize,
    pub bands: Vec<BandReport>,
    pub stills: Vec<StillReport>,
}

const BANDS: [(&str, usize, usize); 4] = [("0", 0, 0), ("1-30", 1, 30), ("31-60", 31, 60), ("61-90", 61, 90)];

/// Sums of one band while the sweep runs.
#[derive(Debug, Clone, Copy, Default)]
struct BandSums {
    frames: usize,
    followed: usize,
    nme_sum: f64,
}

/// Runs the sweep on the first `max_faces` faces of `set` (all for `None`): the
/// video through `stage` with `detector` on `schedule`, then the photos.
pub fn rotation_sweep(
    set: &LoadedSet,
    max_faces: Option<usize>,
    stage: &mut FaceStage,
    detector: &mut HaarDetector,
    schedule: Schedule,
) -> Result<SweepReport> {
    let n = max_faces.unwrap_or(set.annotations.len()).min(set.annotations.len());
    let mut bands = [BandSums::default(); BANDS.len()];
    let mut stills = vec![0usize; STILL_ANGLES_DEG.len()];
    let bar = crate::progress::progress_bar(n as u64, "rotation sweep");
    for k in 0..n {
        let scheme = stage.model().config().scheme;
        let face = SweepFace::new(&set.images[k], &set.annotations[k].points, scheme, SWEEP_IOD_PX);
        sweep_video(&face, stage, detector, schedule, &mut bands)?;
        for (a, found) in STILL_ANGLES_DEG.iter().zip(stills.iter_mut()) {
            *found += usize::from(found_in_photo(&face, *a, stage, detector)?);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let bands = BANDS.iter().zip(bands).map(|((name, _, _), b)| b.report(name)).collect();
    let stills = STILL_ANGLES_DEG
        .iter()
        .zip(stills)
        .map(|(&angle_deg, found)| StillReport { angle_deg, found: found as f64 / n.max(1) as f64 })
        .collect();
    Ok(SweepReport { faces: n, bands, stills })
}

impl BandSums {
    fn report(self, band: &'static str) -> BandReport {
        let nme = (self.followed > 0).then(|| self.nme_sum / self.followed as f64);
        BandReport { band, frames: self.frames, followed: self.followed as f64 / self.frames.max(1) as f64, nme }
    }
}

/// The turn of frame `n` of a face's sweep video, degrees.
fn video_angle(n: usize) -> usize {
    n.saturating_sub(HOLD_FRAMES - 1).min(TURN_DEG)
}

/// One face's sweep video, frame by frame, into `bands`.
fn sweep_video(
    face: &SweepFace,
    stage: &mut FaceStage,
    detector: &mut HaarDetector,
    schedule: Schedule,
    bands: &mut [BandSums],
) -> Result<()> {
    stage.restart(schedule.crops);
    detector.set_angles(AngleSearch::Cycle);
    for n in 0..HOLD_FRAMES + TURN_DEG + HOLD_FRAMES {
        let angle = video_angle(n);
        let (gray, truth) = face.turned(angle as f32)?;
        let detections = match n.is_multiple_of(schedule.detect_every.max(1) as usize) {
            true => Some(detector.detect(&gray)?),
            false => None,
        };
        let found = Found { frame: detections.as_deref(), tile: &[] };
        let faces = stage.process(&gray, found, n as f64 * FRAME_MS)?.faces;
        let band = BANDS.iter().position(|&(_, lo, hi)| (lo..=hi).contains(&angle)).unwrap_or(0);
        bands[band].frames += 1;
        if let Some(e) = best_follow(&faces, &truth, stage, face.scheme) {
            bands[band].followed += 1;
            bands[band].nme_sum += e;
        }
    }
    Ok(())
}

/// Whether the face, shown as one photo turned by `angle_deg`, is found.
fn found_in_photo(
    face: &SweepFace,
    angle_deg: f32,
    stage: &mut FaceStage,
    detector: &mut HaarDetector,
) -> Result<bool> {
    stage.restart(CropMode::Detections);
    detector.set_angles(AngleSearch::All);
    let (gray, truth) = face.turned(angle_deg)?;
    let detections = detector.detect(&gray)?;
    let faces = stage.process(&gray, Found { frame: Some(&detections), tile: &[] }, 0.0)?.faces;
    Ok(best_follow(&faces, &truth, stage, face.scheme).is_some())
}

/// The NME of the face of `faces` that follows `truth` (see the module doc), the
/// best when several do.
fn best_follow(faces: &[Face], truth: &Labels, stage: &FaceStage, scheme: Scheme) -> Option<f64> {
    follows(faces, truth, stage, scheme, SWEEP_IOD_PX)
}

/// The NME of the face of `faces` whose points lie within [`FOLLOW_DISTANCE_IOD`]
/// inter-ocular distances (`iod_px`) of `truth` on average and whose NME is under
/// [`FAILURE_NME`], the best when several do.
pub(super) fn follows(faces: &[Face], truth: &Labels, stage: &FaceStage, scheme: Scheme, iod_px: f32) -> Option<f64> {
    let origin = truth.origin_of(stage.model().label_origin());
    faces
        .iter()
        .filter_map(|f| {
            let pred: Vec<Point> = f.points.iter().map(|&p| p + origin).collect();
            let mean_distance =
                pred.iter().zip(&truth.points).map(|(p, t)| p.distance(*t) as f64).sum::<f64>() / pred.len() as f64;
            let e = nme(&pred, &truth.points, scheme);
            (mean_distance <= FOLLOW_DISTANCE_IOD * iod_px as f64 && e < FAILURE_NME).then_some(e)
        })
        .min_by(f64::total_cmp)
}

/// A face's labels in one sweep frame, and the frame's map from the photo.
pub(super) struct Labels {
    pub points: Vec<Point>,
    pub photo_to_frame: Affine,
}

impl Labels {
    /// The model's label origin (photo pixels) as it shows in this frame.
    fn origin_of(&self, origin: Point) -> Point {
        let m = &self.photo_to_frame;
        Point::new(m.a * origin.x + m.b * origin.y, m.c * origin.x + m.d * origin.y)
    }
}

/// A val face ready to be shown turned and moved: its photo, its points and the
/// scale that gives it a chosen inter-ocular distance.
pub(super) struct SweepFace<'a> {
    photo: &'a opencv::core::Mat,
    points: Vec<Point>,
    pub scheme: Scheme,
    centre: Point,
    scale: f32,
}

/// Where a [`SweepFace`] is shown: the frame's size, where the face's centre lands
/// and how far it is turned counter-clockwise (as seen), degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Placement {
    pub frame_w: i32,
    pub frame_h: i32,
    pub centre: Point,
    pub angle_deg: f32,
}

impl<'a> SweepFace<'a> {
    /// Face `points68` of `photo`, scaled to an inter-ocular distance of `iod_px`.
    pub fn new(photo: &'a opencv::core::Mat, points68: &[Point], scheme: Scheme, iod_px: f32) -> SweepFace<'a> {
        let points = scheme.from_68(points68);
        let (a, b) = scheme.outer_eye_corners();
        let scale = iod_px / points[a].distance(points[b]).max(1.0);
        SweepFace { photo, centre: Rect::bounding(&points).center(), points, scheme, scale }
    }

    /// The rotation sweep's frame with the face turned by `angle_deg`, and its labels.
    fn turned(&self, angle_deg: f32) -> opencv::Result<(opencv::core::Mat, Labels)> {
        let half = SWEEP_FRAME_PX as f32 / 2.0;
        let centre = Point::new(half, half);
        self.placed(&Placement { frame_w: SWEEP_FRAME_PX, frame_h: SWEEP_FRAME_PX, centre, angle_deg })
    }

    /// The frame with the face placed by `at`, and its labels there.
    pub fn placed(&self, at: &Placement) -> opencv::Result<(opencv::core::Mat, Labels)> {
        let (sin, cos) = (-at.angle_deg.to_radians()).sin_cos();
        let (a, b, c, d) = (self.scale * cos, -self.scale * sin, self.scale * sin, self.scale * cos);
        let tx = at.centre.x - (a * self.centre.x + b * self.centre.y);
        let ty = at.centre.y - (c * self.centre.x + d * self.centre.y);
        let m = Affine { a, b, c, d, tx, ty };
        let gray = imageops::warp_gray(self.photo, &m, at.frame_w, at.frame_h)?;
        let points = self.points.iter().map(|p| m.apply(*p)).collect();
        Ok((gray, Labels { points, photo_to_frame: m }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_video_holds_turns_and_holds() {
        let angles: Vec<usize> = (0..HOLD_FRAMES + TURN_DEG + HOLD_FRAMES).map(video_angle).collect();
        assert!(angles[..HOLD_FRAMES].iter().all(|&a| a == 0));
        assert_eq!(angles[HOLD_FRAMES], 1);
        assert_eq!(angles[HOLD_FRAMES + TURN_DEG - 1], 90);
        assert!(angles[HOLD_FRAMES + TURN_DEG - 1..].iter().all(|&a| a == 90));
    }
}
