//! `facekp bench --motion-sweep CSV`: whether keypoints stay still on a still face
//! and stay on a moving one, on annotated val faces.
//!
//! Each face is scaled to an inter-ocular (outer eye corner) distance of
//! [`MOTION_IOD_PX`] in a [`FRAME_W`] x [`FRAME_H`] frame, with fresh Gaussian
//! noise of [`NOISE_SIGMA`] grey levels on every frame, and shown as one short
//! video per motion of [`MOTIONS`]: held still for [`HOLD_FRAMES`] frames, then
//! panned to the right or turned counter-clockwise (as seen) for [`MOVE_FRAMES`]
//! frames. The detector runs as in `run` on a video (every `detect_every` frames,
//! one turn of the image per run) and the face is followed in between.
//!
//! *NME still* is over the hold's frames after [`SETTLE_FRAMES`], *NME moving* over
//! every moving frame (the start of the motion included), each over the frames
//! the face is followed on (see [`super::sweep`]). *Jitter* is [`super::jitter`]
//! over the settled hold frames: the points' standard deviation over the frames,
//! over the inter-ocular distance.

use super::scale::with_noise;
use super::sweep::{follows, Placement, SweepFace};
use crate::dataset::LoadedSet;
use crate::detect::{AngleSearch, HaarDetector};
use crate::face::Face;
use crate::geometry::Point;
use crate::pipeline::face_stage::Found;
use crate::pipeline::{FaceStage, Schedule};
use anyhow::Result;
use serde::Serialize;

/// Inter-ocular distance of a face in the sweep's frames, pixels.
pub const MOTION_IOD_PX: f32 = 70.0;
pub const FRAME_W: i32 = 640;
pub const FRAME_H: i32 = 480;
/// Noise on every frame, grey levels (as `bench --still`).
pub const NOISE_SIGMA: f64 = 3.0;
/// Frames a face is held still before it moves.
pub const HOLD_FRAMES: usize = 30;
/// Frames of the hold left out of the still figures while the track settles.
pub const SETTLE_FRAMES: usize = 10;
/// Frames the face moves for.
pub const MOVE_FRAMES: usize = 40;
/// Frame interval of the sweep's videos, milliseconds (30 fps).
const FRAME_MS: f64 = 1000.0 / 30.0;

/// How a face moves after its hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Motion {
    /// To the right across the frame, this many pixels a frame.
    Pan { px_per_frame: f32 },
    /// Counter-clockwise as seen, about the face's centre, this many degrees a frame.
    Turn { deg_per_frame: f32 },
}

/// The motions of the sweep: pans at 60, 150 and 300 px/s at 30 fps, and a turn
/// of 30 degrees a second.
pub const MOTIONS: [Motion; 4] = [
    Motion::Pan { px_per_frame: 2.0 },
    Motion::Pan { px_per_frame: 5.0 },
    Motion::Pan { px_per_frame: 10.0 },
    Motion::Turn { deg_per_frame: 1.0 },
];

impl Motion {
    pub fn name(&self) -> String {
        match self {
            Motion::Pan { px_per_frame } => format!("pan {px_per_frame} px/frame"),
            Motion::Turn { deg_per_frame } => format!("turn {deg_per_frame} deg/frame"),
        }
    }

    /// Where the face is on frame `n` of its video: a pan is centred on the frame.
    fn placement(&self, n: usize) -> Placement {
        let moved = (n + 1).saturating_sub(HOLD_FRAMES) as f32;
        let (w, h) = (FRAME_W as f32, FRAME_H as f32);
        let (centre, angle_deg) = match *self {
            Motion::Pan { px_per_frame } => {
                let start = w / 2.0 - px_per_frame * MOVE_FRAMES as f32 / 2.0;
                (Point::new(start + px_per_frame * moved, h / 2.0), 0.0)
            }
            Motion::Turn { deg_per_frame } => (Point::new(w / 2.0, h / 2.0), deg_per_frame * moved),
        };
        Placement { frame_w: FRAME_W, frame_h: FRAME_H, centre, angle_deg }
    }
}

/// One motion's figures over the faces.
#[derive(Debug, Clone, Serialize)]
pub struct MotionFigures {
    pub motion: String,
    /// Part of the moving frames the face was followed on.
    pub followed: f64,
    /// Mean NME over the settled hold frames the face was followed on.
    pub nme_still: Option<f64>,
    /// Mean NME over the moving frames the face was followed on.
    pub nme_moving: Option<f64>,
    /// `nme_moving / nme_still`.
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MotionReport {
    pub faces: usize,
    /// NME over the settled hold frames of every video.
    pub nme_still: Option<f64>,
    /// Mean jitter over the holds, of the inter-ocular distance.
    pub jitter: Option<f64>,
    pub motions: Vec<MotionFigures>,
}

/// Frames, followed frames and their NME sum.
#[derive(Debug, Clone, Copy, Default)]
struct NmeSums {
    frames: usize,
    followed: usize,
    nme_sum: f64,
}

impl NmeSums {
    fn add(&mut self, nme: Option<f64>) {
        self.frames += 1;
        if let Some(e) = nme {
            self.followed += 1;
            self.nme_sum += e;
        }
    }

    fn mean(&self) -> Option<f64> {
        (self.followed > 0).then(|| self.nme_sum / self.followed as f64)
    }

    fn merged(self, other: NmeSums) -> NmeSums {
        NmeSums {
            frames: self.frames + other.frames,
            followed: self.followed + other.followed,
            nme_sum: self.nme_sum + other.nme_sum,
        }
    }
}

/// Sums of one motion while the sweep runs.
#[derive(Debug, Clone, Copy, Default)]
struct MotionSums {
    still: NmeSums,
    moving: NmeSums,
}

impl MotionSums {
    fn figures(&self, motion: &Motion) -> MotionFigures {
        let (nme_still, nme_moving) = (self.still.mean(), self.moving.mean());
        MotionFigures {
            motion: motion.name(),
            followed: self.moving.followed as f64 / self.moving.frames.max(1) as f64,
            nme_still,
            nme_moving,
            ratio: nme_still.zip(nme_moving).map(|(s, m)| m / s),
        }
    }
}

/// Runs the sweep on the first `max_faces` faces of `set` (all for `None`): one
/// video per face and motion through `stage`, with `detector` on `schedule`.
pub fn motion_sweep(
    set: &LoadedSet,
    max_faces: Option<usize>,
    stage: &mut FaceStage,
    detector: &mut HaarDetector,
    schedule: Schedule,
) -> Result<MotionReport> {
    let n = max_faces.unwrap_or(set.annotations.len()).min(set.annotations.len());
    let scheme = stage.model().config().scheme;
    let mut sums = [MotionSums::default(); MOTIONS.len()];
    let mut jitters = Vec::new();
    let bar = crate::progress::progress_bar((n * MOTIONS.len()) as u64, "motion sweep");
    for k in 0..n {
        let face = SweepFace::new(&set.images[k], &set.annotations[k].points, scheme, MOTION_IOD_PX);
        for (motion, sums) in MOTIONS.iter().zip(sums.iter_mut()) {
            let video = Video { face: &face, motion: *motion, schedule };
            jitters.extend(video.run(stage, detector, sums)?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let still = sums.iter().fold(NmeSums::default(), |all, s| all.merged(s.still));
    Ok(MotionReport {
        faces: n,
        nme_still: still.mean(),
        jitter: (!jitters.is_empty()).then(|| jitters.iter().sum::<f64>() / jitters.len() as f64),
        motions: MOTIONS.iter().zip(&sums).map(|(m, s)| s.figures(m)).collect(),
    })
}

/// One face's video for one motion.
struct Video<'a> {
    face: &'a SweepFace<'a>,
    motion: Motion,
    schedule: Schedule,
}

impl Video<'_> {
    /// Runs the video frame by frame into `sums`; returns the jitter of its hold.
    fn run(&self, stage: &mut FaceStage, detector: &mut HaarDetector, sums: &mut MotionSums) -> Result<Option<f64>> {
        stage.restart(self.schedule.crops);
        detector.set_angles(AngleSearch::Cycle);
        let mut settled: Vec<Vec<Face>> = Vec::new();
        for n in 0..HOLD_FRAMES + MOVE_FRAMES {
            let (clean, truth) = self.face.placed(&self.motion.placement(n))?;
            let gray = with_noise(&clean, NOISE_SIGMA)?;
            let detections = match n.is_multiple_of(self.schedule.detect_every.max(1) as usize) {
                true => Some(detector.detect(&gray)?),
                false => None,
            };
            let found = Found { frame: detections.as_deref(), tile: &[] };
            let faces = stage.process(&gray, found, n as f64 * FRAME_MS)?.faces;
            let nme = follows(&faces, &truth, stage, self.face.scheme, MOTION_IOD_PX);
            match n {
                n if n < SETTLE_FRAMES => {}
                n if n < HOLD_FRAMES => {
                    sums.still.add(nme);
                    settled.push(faces);
                }
                _ => sums.moving.add(nme),
            }
        }
        Ok(super::jitter(&settled, self.face.scheme))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pan_holds_then_moves_across_the_middle_of_the_frame() {
        let pan = Motion::Pan { px_per_frame: 10.0 };
        let x: Vec<f32> = (0..HOLD_FRAMES + MOVE_FRAMES).map(|n| pan.placement(n).centre.x).collect();
        assert!(x[..HOLD_FRAMES].iter().all(|&v| v == x[0]));
        assert_eq!(x[HOLD_FRAMES] - x[HOLD_FRAMES - 1], 10.0);
        let (first, last) = (x[0], x[HOLD_FRAMES + MOVE_FRAMES - 1]);
        assert!((first + last - FRAME_W as f32).abs() < 1e-3, "centred: {first} .. {last}");
        let turn = Motion::Turn { deg_per_frame: 1.0 };
        assert_eq!(turn.placement(HOLD_FRAMES - 1).angle_deg, 0.0);
        assert_eq!(turn.placement(HOLD_FRAMES + MOVE_FRAMES - 1).angle_deg, MOVE_FRAMES as f32);
    }
}
