//! Landmark-driven tracking: which boxes to crop on a frame, and what to keep
//! afterwards. Frame pixels throughout.
//!
//! A face found by the detector becomes a track. On the next frames its crop comes
//! from its own keypoints: the box the detector would have given for them
//! ([`CropPrior::detection_for_points`], so the CNN sees the geometry it was trained
//! on), moved by the track's motion over a frame (constant velocity; with
//! smoothing, the points are the smoothed ones and the motion the filter's
//! estimate, see [`crate::smooth`]). The detector runs
//! every N frames to find new faces; a track is **lost** when
//! - the box predicted from its new points overlaps the box it was cropped from by
//!   less than [`TrackerParams::keep_iou`] (the points left the crop or collapsed:
//!   a scene cut, the face left the frame), or
//! - its size changes by more than a factor [`TrackerParams::max_scale_change`]
//!   between two frames (a face does not, points fitted to clutter do), or
//! - less than [`TrackerParams::min_visible`] of that box lies inside the frame
//!   (the face left the picture; the crop beyond the border is black padding), or
//! - [`TrackerParams::max_missed_detections`] detector runs in a row find no firm
//!   box ([`crate::detect::Evidence`]) overlapping it while the CNN is not sure of
//!   it (the heatmap spread of its last points is above
//!   [`TrackerParams::confirm_spread`]). Faint boxes only start new faces.
//!
//! A fresh detection is kept only when the points the CNN finds in it describe a
//! box that overlaps the detection by [`TrackerParams::keep_iou`] (measured on the
//! val images of ytf68 and helen68: this keeps all 421 true detections and drops 3
//! of 12 false ones; the rest look like faces to the geometry, and only a
//! face-presence score from the CNN could tell them apart). Faces nested inside
//! another face's box (Haar fires on a chin) are dropped.
//!
//! Each kept face also gets its head pose, solved from its raw points by the
//! caller's function and smoothed per track like the points, and the openness of
//! its (smoothed) points.
//!
//! This module knows neither OpenCV nor libtorch: it plans crops and judges points.

use crate::detect::{Detection, Search};
use crate::face::Face;
use crate::geometry::{CropPrior, FaceBox, Point, Rect};
use crate::pose::{HeadPose, Openness};
use crate::smooth::{FaceFilter, PoseFilter, SmoothParams};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerParams {
    /// A detection continues a track when their IoU is at least this.
    pub match_iou: f32,
    /// Points whose box overlaps the crop's box by less than this are not a face there.
    pub keep_iou: f32,
    /// Largest plausible size change of a tracked face between two frames.
    pub max_scale_change: f32,
    /// Two faces overlapping by more than this are one face: the younger goes.
    pub duplicate_iou: f32,
    /// A face whose box lies this much inside another face's box is not a face
    /// (faces do not nest; Haar often fires on the lower half of a face): it goes.
    pub nested_overlap: f32,
    /// Least part of a tracked face's box that must lie inside the frame.
    pub min_visible: f32,
    /// A track that neither a detector run nor the CNN confirmed this many times in
    /// a row is dropped.
    pub max_missed_detections: u32,
    /// A track whose last points have a heatmap spread of at most this is
    /// confirmed by the CNN itself, whether or not a detector run sees it: faces
    /// too small, turned or blurred for the cascade stay followed. The model's
    /// threshold for faces of the wide searches (`ModelConfig::max_turned_spread`);
    /// `None`: only the detector confirms.
    pub confirm_spread: Option<f32>,
}

impl Default for TrackerParams {
    fn default() -> Self {
        Self {
            match_iou: 0.3,
            keep_iou: 0.5,
            max_scale_change: 1.0 / 0.85,
            duplicate_iou: 0.5,
            nested_overlap: 0.6,
            min_visible: 0.5,
            max_missed_detections: 2,
            confirm_spread: None,
        }
    }
}

/// Where a followed face is cropped on the frames after its first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropMode {
    /// From its own last keypoints, moved by its motion (tracking): the
    /// detector only has to find new faces.
    Keypoints,
    /// From the detector box that matches it (the detector runs on every frame);
    /// tracks only carry ids and filters.
    Detections,
}

/// Where a candidate crop came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A detector box that continues no track, and the search whose threshold its
    /// face must meet.
    Fresh(Search),
    /// An existing track, cropped from its own points (tracking).
    Tracked,
    /// An existing track, cropped from the detector box that matched it (no tracking).
    Redetected,
}

impl Origin {
    /// A new face, not a track's.
    pub fn is_fresh(self) -> bool {
        matches!(self, Origin::Fresh(_))
    }
}

/// A box to crop on this frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Detector-like box the crop is made from (`CropPrior::crop_for_face`): a
    /// rolled face's box is turned with it, so that its crop is level.
    pub face_box: FaceBox,
    /// Index into the tracker's tracks for `Tracked` and `Redetected`.
    pub track: Option<usize>,
    pub origin: Origin,
}

impl Candidate {
    /// A new face's crop, from a detection that continues no track.
    pub fn fresh(detection: Detection) -> Candidate {
        Candidate { face_box: detection.face_box, track: None, origin: Origin::Fresh(detection.search()) }
    }
}

/// A candidate the CNN found a plausible face in: its points (frame pixels), the
/// roll its box and next crop are turned by (the points' eye line; for a tracked
/// face, at most a step from its crop's roll: `pipeline::face_stage`) and the
/// heatmap spread of the fit ([`crate::face::FaceFit::spread`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    pub candidate: Candidate,
    pub points: Vec<Point>,
    pub roll_rad: f32,
    pub spread: f32,
}

struct Track {
    id: u64,
    /// The detector-like box of the last points (smoothed when smoothing is on),
    /// turned by the roll of the raw points.
    last_box: FaceBox,
    /// Motion of the face's centre over a frame, pixels per frame: the filter's
    /// estimate when smoothing, else the last motion of the raw points' box.
    velocity: Point,
    missed_detections: u32,
    /// The CNN was sure of a face in the last crop ([`TrackerParams::confirm_spread`]).
    sure: bool,
    filter: FaceFilter,
    pose_filter: PoseFilter,
    last_timestamp_ms: f64,
}

/// The points and pose a track reports for a frame.
struct Followed {
    points: Vec<Point>,
    pose: Option<HeadPose>,
}

impl Track {
    /// Takes the frame's raw points (`fitted`, with their box `raw_box`) and raw
    /// `pose`, and returns what the face reports.
    ///
    /// Smoothed, the next crop is placed from the smoothed points and moved by the
    /// filter's velocity: one motion estimate for both, and a crop steadier than
    /// the raw points makes the CNN's next points steadier too (on a still frame
    /// with noise, settled jitter about 0.0009 of the inter-ocular distance,
    /// against 0.002 with crops from the raw points). A track's first points come from a detector's
    /// box, not from a tracked crop, and differ from the tracked ones by about 1%
    /// of the inter-ocular distance: they are reported raw and the filters start
    /// on the next frame. Raw, the crop is the raw box moved by its last motion.
    fn follow(
        &mut self,
        fitted: Fitted,
        raw_box: FaceBox,
        timestamp_ms: f64,
        smoothing: Option<&SmoothParams>,
        pose: Option<HeadPose>,
        prior: &CropPrior,
    ) -> Followed {
        let dt_secs = ((timestamp_ms - self.last_timestamp_ms) / 1000.0) as f32;
        self.last_timestamp_ms = timestamp_ms;
        match smoothing {
            Some(params) if !fitted.candidate.origin.is_fresh() => {
                let pose = pose.map(|p| self.pose_filter.filter(p, dt_secs, params));
                let points = self.filter.filter(&fitted.points, raw_box.upright.w, dt_secs, params);
                let v = self.filter.velocity_px_per_sec();
                self.velocity = Point::new(v.x * dt_secs, v.y * dt_secs);
                self.last_box = prior.face_box_for_points(&points, fitted.roll_rad);
                Followed { points, pose }
            }
            _ => {
                let (a, b) = (self.last_box.center_in_frame(), raw_box.center_in_frame());
                self.velocity = Point::new(b.x - a.x, b.y - a.y);
                self.last_box = raw_box;
                Followed { points: fitted.points, pose }
            }
        }
    }

    /// Where the face should be on the next frame.
    fn predicted_box(&self) -> FaceBox {
        self.last_box.moved(self.velocity)
    }
}

/// The tracks of one video and the rules above.
pub struct Tracker {
    params: TrackerParams,
    prior: CropPrior,
    smoothing: Option<SmoothParams>,
    crops: CropMode,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    /// `crops`: where followed faces are cropped; `smoothing`: One Euro filtering
    /// of each track's points, or raw points.
    pub fn new(prior: CropPrior, params: TrackerParams, smoothing: Option<SmoothParams>, crops: CropMode) -> Self {
        Self { params, prior, smoothing, crops, tracks: Vec::new(), next_id: 0 }
    }

    pub fn prior(&self) -> &CropPrior {
        &self.prior
    }

    pub fn params(&self) -> &TrackerParams {
        &self.params
    }

    #[cfg(test)]
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    /// The crops of a frame: every live track (tracking), plus the detections that
    /// continue no track, when the detector ran (`detections`). Tracks the detector
    /// ran past without a firm box on them too often are dropped here.
    pub fn plan(&mut self, detections: Option<&[Detection]>) -> Vec<Candidate> {
        let mut candidates = Vec::new();
        let Some(detections) = detections else {
            if self.crops == CropMode::Keypoints {
                candidates.extend((0..self.tracks.len()).map(|k| Candidate {
                    face_box: self.tracks[k].predicted_box(),
                    track: Some(k),
                    origin: Origin::Tracked,
                }));
            }
            return candidates;
        };
        let (firm, faint): (Vec<Detection>, Vec<Detection>) = detections.iter().partition(|d| d.confirms());
        let (matched, fresh) = self.match_detections(&firm);
        candidates.extend(fresh.into_iter().map(Candidate::fresh));
        candidates.extend(self.new_faces(&faint));
        for (k, t) in self.tracks.iter_mut().enumerate() {
            match matched[k] {
                Some(d) => {
                    t.missed_detections = 0;
                    let (face_box, origin) = if self.crops == CropMode::Keypoints {
                        (t.predicted_box(), Origin::Tracked)
                    } else {
                        (d.face_box, Origin::Redetected)
                    };
                    candidates.push(Candidate { face_box, track: Some(k), origin });
                }
                None => {
                    // A face the CNN is sure of needs no detector to confirm it.
                    t.missed_detections = if t.sure { 0 } else { t.missed_detections + 1 };
                    if self.crops == CropMode::Keypoints && t.missed_detections < self.params.max_missed_detections {
                        candidates.push(Candidate {
                            face_box: t.predicted_box(),
                            track: Some(k),
                            origin: Origin::Tracked,
                        });
                    }
                }
            }
        }
        candidates
    }

    /// Fresh candidates for the `detections` that continue no track: the faint
    /// boxes of a whole-frame search, or the boxes of a tile search (part of the
    /// frame). Tracks are not judged by them.
    pub fn new_faces(&self, detections: &[Detection]) -> Vec<Candidate> {
        let (_, fresh) = self.match_detections(detections);
        fresh.into_iter().map(Candidate::fresh).collect()
    }

    /// Each track's matching detection (greedy by IoU with its predicted box, at
    /// least [`TrackerParams::match_iou`]), and the detections that match no track.
    fn match_detections(&self, detections: &[Detection]) -> (Vec<Option<Detection>>, Vec<Detection>) {
        let mut matched: Vec<Option<Detection>> = vec![None; self.tracks.len()];
        let mut fresh = Vec::new();
        for d in detections {
            let best = (0..self.tracks.len())
                .filter(|&k| matched[k].is_none())
                .map(|k| (k, self.tracks[k].predicted_box().iou(&d.face_box)))
                .filter(|&(_, iou)| iou >= self.params.match_iou)
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((k, _)) => matched[k] = Some(*d),
                None => fresh.push(*d),
            }
        }
        (matched, fresh)
    }

    /// Where the tracks that neither a firm box of `detections` nor the CNN confirms
    /// should be (tracking only): the faces a whole-frame detector run missed, to
    /// look for again closely before counting a miss.
    pub fn unconfirmed(&self, detections: &[Detection]) -> Vec<FaceBox> {
        if self.crops != CropMode::Keypoints {
            return Vec::new();
        }
        let firm: Vec<Detection> = detections.iter().filter(|d| d.confirms()).copied().collect();
        let (matched, _) = self.match_detections(&firm);
        let missed = self.tracks.iter().zip(matched).filter(|(t, m)| m.is_none() && !t.sure);
        missed.map(|(t, _)| t.predicted_box()).collect()
    }

    /// Whether `points` (frame pixels, found in the crop of `candidate` on a frame
    /// of `frame_size` pixels) are a face there: see the module documentation.
    pub fn plausible(&self, candidate: &Candidate, points: &[Point], frame_size: (u32, u32)) -> bool {
        let b = candidate.face_box;
        let found = self.prior.face_box_for_points(points, b.roll_rad);
        if !(found.upright.w.is_finite() && found.upright.iou(&b.upright) >= self.params.keep_iou) {
            return false;
        }
        if candidate.origin == Origin::Tracked {
            let scale = found.upright.w / b.upright.w.max(1.0);
            let frame = Rect::new(0.0, 0.0, frame_size.0 as f32, frame_size.1 as f32);
            let bounds = found.bounds_in_frame();
            let visible = bounds.intersection_area(&frame) / bounds.area().max(1e-6);
            let p = &self.params;
            return (1.0 / p.max_scale_change..=p.max_scale_change).contains(&scale) && visible >= p.min_visible;
        }
        true
    }

    /// [`Tracker::update_with_pose`] without head poses.
    pub fn update(&mut self, kept: Vec<Fitted>, timestamp_ms: f64) -> Vec<Face> {
        self.update_with_pose(kept, timestamp_ms, &|_| None)
    }

    /// Ends the frame: `kept` are the candidates judged plausible with their final
    /// points, fresh ones in order of preference. Tracks without a kept candidate are
    /// lost; duplicates of an older (or preferred) face are dropped, as are faces
    /// nested in one; fresh faces become new tracks. Returns the frame's faces, points
    /// and `pose_of` their raw points smoothed when smoothing is on.
    pub fn update_with_pose(
        &mut self,
        mut kept: Vec<Fitted>,
        timestamp_ms: f64,
        pose_of: &dyn Fn(&[Point]) -> Option<HeadPose>,
    ) -> Vec<Face> {
        let mut old: Vec<Option<Track>> = std::mem::take(&mut self.tracks).into_iter().map(Some).collect();
        // Older tracks first, so a duplicate is always the younger face.
        let age = |f: &Fitted| f.candidate.track.map(|k| old[k].as_ref().map_or(u64::MAX, |t| t.id));
        kept.sort_by_key(|f| age(f).unwrap_or(u64::MAX));
        let mut faces = Vec::new();
        for fitted in kept {
            let raw_box = self.prior.face_box_for_points(&fitted.points, fitted.roll_rad);
            if self.is_duplicate(&raw_box) {
                continue;
            }
            let mut track = match fitted.candidate.track.and_then(|k| old[k].take()) {
                Some(t) => t,
                None => self.new_track(raw_box, timestamp_ms),
            };
            let pose = pose_of(&fitted.points);
            track.sure = self.params.confirm_spread.is_some_and(|max| fitted.spread <= max);
            let smoothing = self.smoothing.as_ref();
            let Followed { points, pose } = track.follow(fitted, raw_box, timestamp_ms, smoothing, pose, &self.prior);
            let box_in_frame = self.prior.detection_for_points(&points);
            let openness = Openness::from_points(&points);
            faces.push(Face { box_in_frame, points, track: track.id, pose, openness });
            self.tracks.push(track);
        }
        faces
    }

    /// Whether a face with box `b` is one this frame already kept, or nests in one.
    fn is_duplicate(&self, b: &FaceBox) -> bool {
        let p = &self.params;
        self.tracks
            .iter()
            .any(|t| t.last_box.iou(b) > p.duplicate_iou || t.last_box.overlap_of_smaller(b) > p.nested_overlap)
    }

    fn new_track(&mut self, last_box: FaceBox, timestamp_ms: f64) -> Track {
        self.next_id += 1;
        Track {
            id: self.next_id,
            last_box,
            velocity: Point::default(),
            missed_detections: 0,
            sure: false,
            filter: FaceFilter::default(),
            pose_filter: PoseFilter::default(),
            last_timestamp_ms: timestamp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Evidence;

    fn prior() -> CropPrior {
        CropPrior {
            dx_mean: 0.0,
            dx_std: 0.1,
            dy_mean: -0.2,
            dy_std: 0.04,
            scale_mean: 1.2,
            log_scale_std: 0.08,
            crop_padding: 1.5,
        }
    }

    /// A 5-point "face" whose detector-like box is `b` under `prior()`.
    fn points_for_box(b: Rect) -> Vec<Point> {
        let s = b.w / 1.2;
        let c = Point::new(b.center().x, b.center().y + 0.2 * s);
        [(-0.5, -0.5), (0.5, -0.5), (0.0, 0.0), (-0.5, 0.5), (0.5, 0.5)]
            .iter()
            .map(|(dx, dy)| Point::new(c.x + dx * s, c.y + dy * s))
            .collect()
    }

    const FRAME: (u32, u32) = (640, 480);

    fn tracker(crops: CropMode) -> Tracker {
        Tracker::new(prior(), TrackerParams::default(), None, crops)
    }

    /// Firm detector boxes of level faces.
    fn level(boxes: &[Rect]) -> Vec<Detection> {
        boxes.iter().map(|b| Detection::firm(FaceBox::level(*b))).collect()
    }

    /// A candidate fitted with `points` of a level face.
    fn fitted(candidate: Candidate, points: Vec<Point>) -> Fitted {
        Fitted { candidate, points, roll_rad: 0.0, spread: 0.05 }
    }

    /// Runs one frame where the CNN finds exactly `truth` in every crop that holds it.
    fn frame(t: &mut Tracker, detections: Option<&[Rect]>, truth: Rect, ms: f64) -> Vec<Face> {
        let plan = t.plan(detections.map(level).as_deref());
        let kept = plan
            .into_iter()
            .filter_map(|c| {
                let pts = points_for_box(truth);
                t.plausible(&c, &pts, FRAME).then(|| fitted(c, pts))
            })
            .collect();
        t.update(kept, ms)
    }

    #[test]
    fn the_points_box_of_the_test_face_is_its_detection() {
        let b = Rect::new(100.0, 50.0, 120.0, 120.0);
        let found = prior().detection_for_points(&points_for_box(b));
        assert!(found.iou(&b) > 0.999, "{found:?}");
    }

    #[test]
    fn a_moving_face_keeps_its_id_and_the_crop_leads_by_its_velocity() {
        let mut t = tracker(CropMode::Keypoints);
        let at = |x: f32| Rect::new(x, 50.0, 120.0, 120.0);
        let faces = frame(&mut t, Some(&[at(100.0)]), at(100.0), 0.0);
        assert_eq!(faces.len(), 1);
        let id = faces[0].track;
        for (i, x) in [110.0, 120.0, 130.0].iter().enumerate() {
            let faces = frame(&mut t, None, at(*x), 33.0 * (i + 1) as f64);
            assert_eq!(faces.len(), 1);
            assert_eq!(faces[0].track, id);
        }
        // After moving 10 px per frame, the next crop is expected at 140.
        let plan = t.plan(None);
        assert!((plan[0].face_box.upright.x - 140.0).abs() < 1e-3, "{:?}", plan[0]);
    }

    #[test]
    fn points_that_leave_the_crop_lose_the_track() {
        let mut t = tracker(CropMode::Keypoints);
        let b = Rect::new(100.0, 50.0, 120.0, 120.0);
        frame(&mut t, Some(&[b]), b, 0.0);
        // A scene cut: the CNN's points now describe a box far from the crop.
        let faces = frame(&mut t, None, Rect::new(300.0, 200.0, 60.0, 60.0), 33.0);
        assert!(faces.is_empty());
        assert_eq!(t.track_count(), 0);
    }

    #[test]
    fn a_face_that_shrinks_implausibly_fast_is_lost() {
        let mut t = tracker(CropMode::Keypoints);
        let b = Rect::new(100.0, 50.0, 120.0, 120.0);
        frame(&mut t, Some(&[b]), b, 0.0);
        // 25% smaller in one frame but centred in the crop (IoU 0.56 > keep_iou).
        let faces = frame(&mut t, None, Rect::new(115.0, 65.0, 90.0, 90.0), 33.0);
        assert!(faces.is_empty());
    }

    #[test]
    fn a_detection_whose_points_describe_another_box_is_rejected() {
        let mut t = tracker(CropMode::Keypoints);
        let det = Rect::new(100.0, 100.0, 200.0, 200.0);
        // The CNN puts a small face in the top-left corner of the box: not this face.
        let faces = frame(&mut t, Some(&[det]), Rect::new(100.0, 100.0, 80.0, 80.0), 0.0);
        assert!(faces.is_empty());
    }

    #[test]
    fn duplicates_keep_the_older_track_and_unconfirmed_tracks_expire() {
        let mut t = tracker(CropMode::Keypoints);
        let b = Rect::new(100.0, 50.0, 120.0, 120.0);
        let first = frame(&mut t, Some(&[b]), b, 0.0)[0].track;
        // A second detection that matches no track, whose points land on the same
        // face as the track's: one face, the older track.
        let far = Rect::new(400.0, 50.0, 120.0, 120.0);
        let plan = t.plan(Some(&level(&[far])));
        assert_eq!(plan.len(), 2);
        let kept = plan.into_iter().map(|c| fitted(c, points_for_box(b))).collect();
        let faces = t.update(kept, 33.0);
        assert_eq!(faces.len(), 1);
        assert_eq!(faces[0].track, first);
        // The detector confirms the face, then never sees it again: dropped at the limit.
        assert_eq!(frame(&mut t, Some(&[b]), b, 50.0)[0].track, first);
        let elsewhere = [Rect::new(500.0, 400.0, 40.0, 40.0)];
        let mut alive = Vec::new();
        for i in 0..TrackerParams::default().max_missed_detections {
            let faces = frame(&mut t, Some(&elsewhere), b, 66.0 + 33.0 * i as f64);
            alive.push(faces.iter().any(|f| f.track == first));
        }
        assert_eq!(alive.last(), Some(&false), "dropped after the last missed run: {alive:?}");
        assert!(alive[..alive.len() - 1].iter().all(|a| *a), "followed until then: {alive:?}");
    }

    /// With a confirming spread, a track whose fits are that sure outlives any
    /// number of detector runs that miss it and needs no closer look; one whose
    /// fits are not expires as without it.
    #[test]
    fn a_track_the_cnn_is_sure_of_needs_no_detector() {
        let params = TrackerParams { confirm_spread: Some(0.15), ..TrackerParams::default() };
        let b = Rect::new(100.0, 50.0, 120.0, 120.0);
        for (spread, outlives) in [(0.05, true), (0.3, false)] {
            let mut t = Tracker::new(prior(), params, None, CropMode::Keypoints);
            let mut alive = Vec::new();
            for i in 0..6 {
                let detections = if i == 0 { level(&[b]) } else { Vec::new() };
                let plan = t.plan(Some(&detections));
                let kept = plan.into_iter().map(|c| Fitted { spread, ..fitted(c, points_for_box(b)) }).collect();
                alive.push(!t.update(kept, 33.0 * i as f64).is_empty());
                if i == 0 {
                    assert_eq!(t.unconfirmed(&[]).is_empty(), outlives, "closer look, spread {spread}");
                }
            }
            assert_eq!(alive.iter().all(|a| *a), outlives, "spread {spread}: {alive:?}");
        }
        // Without tracking, crops are the detections alone, however sure the CNN was.
        let mut t = Tracker::new(prior(), params, None, CropMode::Detections);
        let plan = t.plan(Some(&level(&[b])));
        t.update(plan.into_iter().map(|c| fitted(c, points_for_box(b))).collect(), 0.0);
        assert!(t.plan(Some(&[])).is_empty());
    }

    /// A faint box on a track neither confirms it nor starts a second face; one
    /// elsewhere is a new face held to the wide search's threshold.
    #[test]
    fn faint_boxes_only_find_new_faces() {
        let mut t = tracker(CropMode::Keypoints);
        let b = Rect::new(100.0, 50.0, 120.0, 120.0);
        frame(&mut t, Some(&[b]), b, 0.0);
        let far = Rect::new(400.0, 50.0, 120.0, 120.0);
        let faint: Vec<Detection> =
            level(&[b, far]).into_iter().map(|d| Detection { evidence: Evidence::Faint, ..d }).collect();
        assert_eq!(t.unconfirmed(&faint).len(), 1, "a faint box does not confirm the track");
        let plan = t.plan(Some(&faint));
        let origins: Vec<Origin> = plan.iter().map(|c| c.origin).collect();
        assert_eq!(origins, vec![Origin::Fresh(Search::Wide), Origin::Tracked], "{plan:?}");
        assert!(plan[0].face_box.upright.iou(&far) > 0.99);
        let kept = plan.into_iter().filter(|c| c.track.is_some()).map(|c| fitted(c, points_for_box(b))).collect();
        assert_eq!(t.update(kept, 33.0).len(), 1);
        // That run counted as a miss: the track goes one run before the limit.
        let alive: Vec<bool> = (1..TrackerParams::default().max_missed_detections)
            .map(|i| !frame(&mut t, Some(&[]), b, 33.0 * (i + 1) as f64).is_empty())
            .collect();
        assert_eq!(alive.last(), Some(&false), "{alive:?}");
        assert!(alive[..alive.len() - 1].iter().all(|a| *a), "{alive:?}");
    }

    #[test]
    fn tracks_no_detection_matches_are_listed_for_a_closer_look() {
        let mut t = tracker(CropMode::Keypoints);
        let a = Rect::new(100.0, 50.0, 120.0, 120.0);
        let b = Rect::new(400.0, 50.0, 120.0, 120.0);
        let plan = t.plan(Some(&level(&[a, b])));
        let kept = plan.into_iter().map(|c| fitted(c, points_for_box(c.face_box.upright))).collect();
        assert_eq!(t.update(kept, 0.0).len(), 2);
        let missed = t.unconfirmed(&level(&[a]));
        assert_eq!(missed.len(), 1);
        assert!(missed[0].upright.iou(&b) > 0.99, "{missed:?}");
        assert!(t.unconfirmed(&level(&[a, b])).is_empty());
        assert!(tracker(CropMode::Detections).unconfirmed(&[]).is_empty());
    }

    #[test]
    fn without_tracking_crops_are_the_detections_and_ids_carry_over() {
        let mut t = tracker(CropMode::Detections);
        let b = Rect::new(100.0, 50.0, 120.0, 120.0);
        let id = frame(&mut t, Some(&[b]), b, 0.0)[0].track;
        assert!(t.plan(None).is_empty(), "no crops without a detection");
        let moved = Rect::new(110.0, 50.0, 120.0, 120.0);
        let plan = t.plan(Some(&level(&[moved])));
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].origin, Origin::Redetected);
        assert_eq!(plan[0].face_box, FaceBox::level(moved));
        let faces = t.update(vec![fitted(plan[0], points_for_box(moved))], 33.0);
        assert_eq!(faces[0].track, id);
    }

    #[test]
    fn a_face_nested_in_an_older_face_is_dropped() {
        let mut t = tracker(CropMode::Keypoints);
        let b = Rect::new(100.0, 50.0, 120.0, 120.0);
        let first = frame(&mut t, Some(&[b]), b, 0.0)[0].track;
        // Haar fires on the lower half of the face; the CNN fits a small face there.
        let chin = Rect::new(130.0, 120.0, 60.0, 60.0);
        let plan = t.plan(Some(&level(&[chin])));
        let kept =
            plan.into_iter().map(|c| fitted(c, points_for_box(if c.origin.is_fresh() { chin } else { b }))).collect();
        let faces = t.update(kept, 33.0);
        assert_eq!(faces.iter().map(|f| f.track).collect::<Vec<_>>(), vec![first]);
    }

    #[test]
    fn a_face_leaving_the_frame_is_followed_past_the_border_then_lost() {
        let mut t = tracker(CropMode::Keypoints);
        let at = |x: f32| Rect::new(x, 50.0, 120.0, 120.0);
        let id = frame(&mut t, Some(&[at(40.0)]), at(40.0), 0.0)[0].track;
        // Moving left 30 px per frame; at -50 a third of the box is outside: followed.
        for (i, x) in [10.0, -20.0, -50.0].iter().enumerate() {
            let faces = frame(&mut t, None, at(*x), 33.0 * (i + 1) as f64);
            assert_eq!(faces.iter().map(|f| f.track).collect::<Vec<_>>(), vec![id], "at x {x}");
        }
        // Two thirds outside: lost.
        assert!(frame(&mut t, None, at(-80.0), 132.0).is_empty());
    }

    /// A face that rolls 5 degrees a frame is followed with one id, and each next
    /// crop is turned by the roll of the last points.
    #[test]
    fn a_rolling_face_is_followed_and_cropped_level() {
        let mut t = tracker(CropMode::Keypoints);
        let b = Rect::new(100.0, 50.0, 120.0, 120.0);
        let id = frame(&mut t, Some(&[b]), b, 0.0)[0].track;
        let centre = b.center();
        for step in 1..=18 {
            let roll = (5.0 * step as f32).to_radians();
            let plan = t.plan(None);
            assert_eq!(plan.len(), 1);
            let previous = (5.0 * (step - 1) as f32).to_radians();
            assert!((plan[0].face_box.roll_rad - previous).abs() < 1e-5, "step {step}: {:?}", plan[0]);
            let turned: Vec<Point> = points_for_box(b)
                .iter()
                .map(|p| Point::new(p.x - centre.x, p.y - centre.y).turned(roll) + centre)
                .collect();
            assert!(t.plausible(&plan[0], &turned, FRAME), "step {step}");
            let faces = t.update(
                vec![Fitted { candidate: plan[0], points: turned, roll_rad: roll, spread: 0.05 }],
                33.0 * step as f64,
            );
            assert_eq!(faces.iter().map(|f| f.track).collect::<Vec<_>>(), vec![id], "step {step}");
        }
    }
}
