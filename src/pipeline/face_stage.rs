//! The face stage's work on one frame: detect (when due), track, crop, run the CNN,
//! keep the plausible faces and solve their head poses. Frame pixels throughout.

use super::timer::StageTimer;
use crate::detect::{Detection, HaarDetector, Search};
use crate::face::{self, Face, StageTimes};
use crate::geometry::{within_half_turn, FaceBox, Point, Rect};
use crate::model::Keypointer;
use crate::pose::{CameraSpec, PoseSolver};
use crate::smooth::SmoothParams;
use crate::track::{Candidate, CropMode, Fitted, Origin, Tracker, TrackerParams};
use anyhow::Result;
use opencv::core::Mat;
use opencv::prelude::*;

/// The detect + track + infer stage: gray frames (with the detect stage's boxes on
/// the frames it ran) in, faces with keypoints out.
pub struct FaceStage {
    /// Runs at once when a track is lost or no face is followed (the detect stage
    /// keeps the schedule).
    detector: HaarDetector,
    model: Keypointer,
    tracker: Tracker,
    smoothing: Option<SmoothParams>,
    solver: PoseSolver,
    /// Detector runs of this stage (track lost, or no face followed).
    pub detector_runs: u64,
}

/// What the detector found on one frame: `frame` when it searched the whole frame,
/// `tile` when it searched one tile of it (HD frames, small faces).
#[derive(Debug, Clone, Copy, Default)]
pub struct Found<'a> {
    pub frame: Option<&'a [Detection]>,
    pub tile: &'a [Detection],
}

/// What one frame's searches found, owned (see [`Found`]).
#[derive(Debug, Clone, Default)]
pub struct Searched {
    pub frame: Option<Vec<Detection>>,
    /// The boxes of the frame's tile search, if it searched a tile.
    pub tile: Option<Vec<Detection>>,
}

impl Searched {
    pub fn found(&self) -> Found<'_> {
        Found { frame: self.frame.as_deref(), tile: self.tile.as_deref().unwrap_or_default() }
    }
}

/// The faces of one frame and the time each step took.
pub struct ProcessedFrame {
    pub faces: Vec<Face>,
    pub times: StageTimes,
}

/// The crops of some candidates and the points the CNN found in them.
struct Inferred {
    kept: Vec<Fitted>,
    /// A tracked face was judged lost.
    lost: bool,
}

impl FaceStage {
    /// `crops`: where followed faces are cropped between detector runs;
    /// `smoothing`: One Euro filtering of each track's points and pose, or raw ones;
    /// `camera`: the camera the head poses are solved for.
    pub fn new(
        detector: HaarDetector,
        model: Keypointer,
        crops: CropMode,
        smoothing: Option<SmoothParams>,
        camera: CameraSpec,
    ) -> Self {
        let tracker = Tracker::new(model.config().crop, tracker_params(&model), smoothing, crops);
        let solver = PoseSolver::new(model.config().scheme, camera);
        Self { detector, model, tracker, smoothing, solver, detector_runs: 0 }
    }

    /// Forgets every track, as for a new video, cropping followed faces by `crops`.
    pub fn restart(&mut self, crops: CropMode) {
        self.tracker = Tracker::new(self.model.config().crop, tracker_params(&self.model), self.smoothing, crops);
    }

    pub fn model(&self) -> &Keypointer {
        &self.model
    }

    /// The model back, for another run.
    pub fn into_model(self) -> Keypointer {
        self.model
    }

    /// Finds the faces of one 8-bit gray frame taken at `timestamp_ms`; the
    /// detector's boxes when it searched it: `found.frame` for the whole frame,
    /// `found.tile` for one tile of it (new faces only).
    pub fn process(&mut self, gray: &Mat, found: Found, timestamp_ms: f64) -> Result<ProcessedFrame> {
        let detections = found.frame;
        let mut times = StageTimes::default();
        let timer = StageTimer::start();
        let confirmed = match detections {
            Some(found) => Some(self.look_closer(gray, found)?),
            None => None,
        };
        times.detect_ms = timer.ms();
        let timer = StageTimer::start();
        let mut plan = self.tracker.plan(confirmed.as_deref());
        let known: Vec<FaceBox> = plan.iter().map(|c| c.face_box).collect();
        let tile_faces: Vec<Detection> = found
            .tile
            .iter()
            .filter(|t| known.iter().all(|k| k.iou(&t.face_box) < self.tracker.params().match_iou))
            .copied()
            .collect();
        plan.extend(self.tracker.new_faces(&tile_faces));
        let Inferred { mut kept, lost } = self.infer(gray, plan)?;
        times.infer_ms = timer.ms();
        if confirmed.is_none() && (lost || kept.is_empty()) {
            // A track was lost between detector runs, or no face is followed: look
            // for faces at once rather than at the next scheduled run.
            let fresh = self.search_now(gray, &kept, &mut times)?;
            kept.extend(fresh);
        }
        let frame_size = (gray.cols() as u32, gray.rows() as u32);
        let solver = &self.solver;
        // A pose OpenCV fails to solve is left out of the face, like an unsolvable one.
        let pose_of = |points: &[Point]| solver.solve(points, frame_size).ok().flatten();
        let faces = self.tracker.update_with_pose(kept, timestamp_ms, &pose_of);
        Ok(ProcessedFrame { faces, times })
    }

    /// The detector's `found` boxes plus, for each tracked face they missed (small,
    /// or blurred by the downscale), what a closer search around its track finds.
    fn look_closer(&mut self, gray: &Mat, found: &[Detection]) -> Result<Vec<Detection>> {
        let mut confirmed = found.to_vec();
        for predicted in self.tracker.unconfirmed(found) {
            confirmed.extend(self.detector.detect_near(gray, &predicted)?.into_iter().map(Detection::firm));
        }
        Ok(confirmed)
    }

    /// Runs the detector on the whole frame now and fits the faces it finds that
    /// no `kept` face already covers.
    fn search_now(&mut self, gray: &Mat, kept: &[Fitted], times: &mut StageTimes) -> Result<Vec<Fitted>> {
        let timer = StageTimer::start();
        let found = self.detector.detect(gray)?;
        self.detector_runs += 1;
        times.detector_ran = true;
        times.detect_ms += timer.ms();
        let timer = StageTimer::start();
        let prior = self.tracker.prior();
        let match_iou = self.tracker.params().match_iou;
        let fresh: Vec<Candidate> = found
            .into_iter()
            .filter(|d| {
                kept.iter().all(|f| prior.face_box_for_points(&f.points, f.roll_rad).iou(&d.face_box) < match_iou)
            })
            .map(Candidate::fresh)
            .collect();
        let inferred = self.infer(gray, fresh)?;
        times.infer_ms += timer.ms();
        Ok(inferred.kept)
    }

    /// Crops `candidates` from `gray`, runs them through the CNN as one batch and
    /// keeps the plausible ones. Fresh detections get a second pass cropped from
    /// their first points ([`face::refine`]) and are kept only when the network is
    /// sure of a face there ([`face::confident`]).
    fn infer(&self, gray: &Mat, candidates: Vec<Candidate>) -> Result<Inferred> {
        let boxes: Vec<FaceBox> = candidates.iter().map(|c| c.face_box).collect();
        let found = face::faces_in_boxes(&self.model, gray, &boxes)?;
        let frame_size = (gray.cols() as u32, gray.rows() as u32);
        let mut kept = Vec::new();
        let mut lost = false;
        for (c, fit) in candidates.into_iter().zip(found) {
            if self.tracker.plausible(&c, &fit.points, frame_size) {
                kept.push(self.fitted(c, fit.points, fit.spread));
            } else {
                lost |= !c.origin.is_fresh();
            }
        }
        Ok(Inferred { kept: self.refine_fresh(gray, kept)?, lost })
    }

    /// The second pass for the fresh faces of `kept`: their points from a crop
    /// placed on their first points, the unconfident ones dropped. Where two fresh
    /// faces overlap, the tracker keeps the first, so they are ordered by how
    /// little the second pass moved them (a real face stays; a false detection
    /// drifts).
    fn refine_fresh(&self, gray: &Mat, mut kept: Vec<Fitted>) -> Result<Vec<Fitted>> {
        let fresh: Vec<usize> = (0..kept.len()).filter(|&i| kept[i].candidate.origin.is_fresh()).collect();
        let first: Vec<Vec<Point>> = fresh.iter().map(|&i| kept[i].points.clone()).collect();
        let mut consistency = vec![0.0f32; kept.len()];
        let prior = &self.model.config().crop;
        for ((&i, fit), f) in fresh.iter().zip(face::refine(&self.model, gray, &first)?).zip(&first) {
            consistency[i] = prior.detection_for_points(&fit.points).iou(&prior.detection_for_points(f));
            kept[i] = self.fitted(kept[i].candidate, fit.points, fit.spread);
        }
        let boxes: Vec<Rect> = kept.iter().map(|k| prior.detection_for_points(&k.points)).collect();
        let mut is_face = vec![true; kept.len()];
        for &i in &fresh {
            let search =
                if beside_a_surer_face(i, &kept, &boxes) { Search::Wide } else { search_of(&kept[i].candidate) };
            is_face[i] = face::confident(&self.model, kept[i].spread, search);
        }
        let mut scored: Vec<_> =
            kept.into_iter().zip(consistency).zip(is_face).filter(|(_, f)| *f).map(|(k, _)| k).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(scored.into_iter().map(|(k, _)| k).collect())
    }

    /// A plausible candidate with its points, the roll its next crop is turned by
    /// and the fit's heatmap spread.
    fn fitted(&self, candidate: Candidate, points: Vec<Point>, spread: f32) -> Fitted {
        let roll_rad = self.model.config().scheme.roll(&points);
        let roll_rad = match candidate.origin {
            Origin::Tracked => step_towards(candidate.face_box.roll_rad, roll_rad, MAX_ROLL_STEP_RAD),
            _ => roll_rad,
        };
        Fitted { candidate, points, roll_rad, spread }
    }
}

/// The tracker's rules for `model`: a track is confirmed by the CNN when its fit is
/// as sure as a new face of a wide search must be, if the model sets that
/// threshold (0.08 for the shipped 68-point model, whose val faces have spreads of
/// median 0.058 and 99th percentile 0.070: docs/MODEL.md).
fn tracker_params(model: &Keypointer) -> TrackerParams {
    TrackerParams { confirm_spread: model.config().max_turned_spread, ..TrackerParams::default() }
}

/// Most a tracked face's crop turns from one frame to the next, radians. The
/// eye line of a small or blurred face's points can be off by 20 degrees and
/// more; each next crop is turned by it, and unbounded, such errors feed on
/// themselves until the track spins. A head tilting half a turn a second turns 6
/// degrees a frame at 30 fps.
const MAX_ROLL_STEP_RAD: f32 = 10f32.to_radians();

/// `from` turned towards `to` (radians) by at most `max_step`, the short way round.
fn step_towards(from: f32, to: f32, max_step: f32) -> f32 {
    from + (within_half_turn(to, from) - from).clamp(-max_step, max_step)
}

/// How far around a face's box (a factor on its size) the cascade's false boxes
/// cluster: on its hair, ears, chin and neck.
const NEIGHBOURHOOD: f32 = 1.6;
/// How much larger than a new face a face must be for the new one to count as a
/// part of its neighbourhood rather than a face beside it.
const NEIGHBOUR_SIZE_RATIO: f32 = 2.0;

/// Whether face `i` of `kept` (boxes `boxes`) lies in the neighbourhood of a face
/// at least [`NEIGHBOUR_SIZE_RATIO`] times its size that the CNN is surer of:
/// where the cascade fires on hair and chins, so that a new face there must pass
/// the wide searches' threshold.
fn beside_a_surer_face(i: usize, kept: &[Fitted], boxes: &[Rect]) -> bool {
    (0..kept.len()).any(|j| {
        let around = Rect::from_center(boxes[j].center(), boxes[j].w * NEIGHBOURHOOD, boxes[j].h * NEIGHBOURHOOD);
        j != i
            && boxes[j].w >= NEIGHBOUR_SIZE_RATIO * boxes[i].w
            && kept[j].spread < kept[i].spread
            && around.intersection_area(&boxes[i]) > 0.0
    })
}

/// The search a candidate's face must pass as a new face (a track's crop: upright,
/// though only fresh ones are judged).
fn search_of(candidate: &Candidate) -> Search {
    match candidate.origin {
        Origin::Fresh(search) => search,
        _ => Search::Upright,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh face fitted to box `b` with `spread`.
    fn fitted(b: Rect, spread: f32) -> Fitted {
        let candidate = Candidate::fresh(Detection::firm(FaceBox::level(b)));
        Fitted { candidate, points: Vec::new(), roll_rad: 0.0, spread }
    }

    /// A tracked face's crop follows its points' roll by at most the step, the
    /// short way round across ±180 degrees.
    #[test]
    fn a_crop_turns_towards_the_points_roll_by_at_most_a_step() {
        let deg = |d: f32| d.to_radians();
        let step = |from: f32, to: f32| step_towards(deg(from), deg(to), MAX_ROLL_STEP_RAD).to_degrees();
        assert!((step(5.0, 9.0) - 9.0).abs() < 1e-4);
        assert!((step(5.0, 40.0) - 15.0).abs() < 1e-3);
        assert!((step(5.0, -40.0) + 5.0).abs() < 1e-3);
        assert!((step(175.0, -175.0) - 185.0).abs() < 1e-3);
    }

    /// A small, less sure face touching the neighbourhood of a large face is
    /// beside it; one as sure, one of a similar size or one far away is not.
    #[test]
    fn a_small_face_by_a_large_surer_one_is_in_its_neighbourhood() {
        let face = Rect::new(100.0, 100.0, 160.0, 160.0);
        let curl = Rect::new(30.0, 150.0, 40.0, 40.0);
        let far = Rect::new(400.0, 150.0, 40.0, 40.0);
        let neighbour = Rect::new(280.0, 100.0, 150.0, 150.0);
        let boxes = [face, curl, far, neighbour];
        let kept = [fitted(face, 0.06), fitted(curl, 0.12), fitted(far, 0.12), fitted(neighbour, 0.12)];
        let beside: Vec<bool> = (0..4).map(|i| beside_a_surer_face(i, &kept, &boxes)).collect();
        assert_eq!(beside, [false, true, false, false]);
        let sure_curl = [fitted(face, 0.06), fitted(curl, 0.05)];
        assert!(!beside_a_surer_face(1, &sure_curl, &boxes[..2]));
    }
}
