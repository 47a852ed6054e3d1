//! The head pose and openness part of `facekp eval`: where the annotations allow
//! checking them. Frame pixels of each image; angles in degrees, conventions of
//! [`crate::pose::angles`].
//!
//! - Roll against the eye line of the annotated points (the angle of the line from
//!   the image-left to the image-right eye centre, counter-clockwise positive): a
//!   3D roll and the eye line agree on faces that look at the camera and drift
//!   apart as yaw and pitch grow.
//! - The whole pose against the pose solved from the annotated points.
//! - Mirror symmetry: the CNN on the mirrored image should give the same pitch and
//!   the opposite yaw and roll.
//! - Eye aspect ratio of the CNN's points against the annotated one, overall and
//!   on the eyes the annotation shows closed.

use crate::geometry::Point;
use crate::landmarks::Scheme;
use crate::pose::{Openness, PoseSolver};
use serde::Serialize;

/// An annotated eye counts as closed below this eye aspect ratio.
pub const CLOSED_EAR: f32 = 0.15;

/// One face's points for the pose checks (frame pixels of its image).
pub struct PoseSample<'a> {
    pub truth: &'a [Point],
    pub found: &'a [Point],
    /// The CNN's points on the mirrored image, in that image's pixels.
    pub found_mirrored: Option<&'a [Point]>,
    pub frame_size: (u32, u32),
}

/// Median and 95th percentile of absolute differences, degrees or ratios.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Spread {
    pub median: f64,
    pub p95: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().map(|x| x.abs()).collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Spread { median: at(0.5), p95: at(0.95) }
    }
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct PoseReport {
    pub faces: usize,
    /// CNN roll minus the annotated eye line.
    pub roll_vs_eye_line: Spread,
    /// CNN pose minus the pose of the annotated points.
    pub yaw_vs_truth: Spread,
    pub pitch_vs_truth: Spread,
    pub roll_vs_truth: Spread,
    /// Faces with a pose on the mirrored image too.
    pub mirrored: usize,
    /// `yaw + yaw'`, `pitch - pitch'` and `roll + roll'` (' on the mirrored image).
    pub mirror_yaw: Spread,
    pub mirror_pitch: Spread,
    pub mirror_roll: Spread,
    /// Eye aspect ratios (68 points only).
    pub eyes: Option<EyeReport>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct EyeReport {
    pub eyes: usize,
    /// CNN minus annotated eye aspect ratio, all eyes.
    pub ear_error: Spread,
    /// Eyes annotated closed (EAR < [`CLOSED_EAR`]).
    pub closed: usize,
    /// Median annotated and CNN eye aspect ratio of the closed eyes.
    pub closed_truth_median: f64,
    pub closed_found_median: f64,
    /// Median CNN eye aspect ratio of the open eyes.
    pub open_found_median: f64,
}

/// The differences collected over the faces, reduced by [`PoseTally::report`].
pub struct PoseTally {
    solver: PoseSolver,
    faces: usize,
    diffs: [Vec<f64>; 7],
    /// (annotated, CNN) eye aspect ratios.
    ears: Vec<(f32, f32)>,
}

/// The eye line's angle: image-left to image-right eye centre, counter-clockwise
/// positive (y grows downward).
fn eye_line_deg(scheme: Scheme, points: &[Point]) -> f64 {
    let p15 = match scheme {
        Scheme::P68 => Scheme::P15.from_68(points),
        Scheme::P15 => points.to_vec(),
    };
    // 15-point order: 0 is the subject's left eye (image right), 1 the right.
    let (left, right) = (p15[1], p15[0]);
    (-((right.y - left.y) as f64)).atan2((right.x - left.x) as f64).to_degrees()
}

impl PoseTally {
    pub fn new(scheme: Scheme) -> PoseTally {
        let solver = PoseSolver::new(scheme, Default::default());
        PoseTally { solver, faces: 0, diffs: Default::default(), ears: Vec::new() }
    }

    /// Scores one face; faces without a solved pose are left out.
    pub fn add(&mut self, scheme: Scheme, s: &PoseSample) -> opencv::Result<()> {
        let solve = |p: &[Point]| self.solver.solve(p, s.frame_size);
        let (Some(found), Some(truth)) = (solve(s.found)?, solve(s.truth)?) else {
            return Ok(());
        };
        let mirrored = match s.found_mirrored {
            Some(m) => solve(m)?,
            None => None,
        };
        self.faces += 1;
        let d = &mut self.diffs;
        d[0].push(found.roll as f64 - eye_line_deg(scheme, s.truth));
        d[1].push((found.yaw - truth.yaw) as f64);
        d[2].push((found.pitch - truth.pitch) as f64);
        d[3].push((found.roll - truth.roll) as f64);
        if let Some(m) = mirrored {
            d[4].push((found.yaw + m.yaw) as f64);
            d[5].push((found.pitch - m.pitch) as f64);
            d[6].push((found.roll + m.roll) as f64);
        }
        if let (Some(t), Some(f)) = (Openness::from_points(s.truth), Openness::from_points(s.found)) {
            self.ears.extend(t.eyes.into_iter().zip(f.eyes));
        }
        Ok(())
    }

    pub fn report(&self) -> PoseReport {
        let d = &self.diffs;
        PoseReport {
            faces: self.faces,
            roll_vs_eye_line: Spread::of(&d[0]),
            yaw_vs_truth: Spread::of(&d[1]),
            pitch_vs_truth: Spread::of(&d[2]),
            roll_vs_truth: Spread::of(&d[3]),
            mirrored: d[4].len(),
            mirror_yaw: Spread::of(&d[4]),
            mirror_pitch: Spread::of(&d[5]),
            mirror_roll: Spread::of(&d[6]),
            eyes: (!self.ears.is_empty()).then(|| eye_report(&self.ears)),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn eye_report(ears: &[(f32, f32)]) -> EyeReport {
    let closed: Vec<&(f32, f32)> = ears.iter().filter(|(t, _)| *t < CLOSED_EAR).collect();
    let errors: Vec<f64> = ears.iter().map(|(t, f)| (f - t) as f64).collect();
    EyeReport {
        eyes: ears.len(),
        ear_error: Spread::of(&errors),
        closed: closed.len(),
        closed_truth_median: median(closed.iter().map(|(t, _)| *t as f64).collect()),
        closed_found_median: median(closed.iter().map(|(_, f)| *f as f64).collect()),
        open_found_median: median(ears.iter().filter(|(t, _)| *t >= CLOSED_EAR).map(|(_, f)| *f as f64).collect()),
    }
}

impl PoseReport {
    pub fn print_human(&self) {
        let s = |x: &Spread| format!("median {:.2}, p95 {:.2}", x.median, x.p95);
        println!("head pose    {} faces (degrees, |difference|)", self.faces);
        println!("  roll vs eye line of the truth   {}", s(&self.roll_vs_eye_line));
        println!(
            "  yaw, pitch, roll vs pose of the truth   {}; {}; {}",
            s(&self.yaw_vs_truth),
            s(&self.pitch_vs_truth),
            s(&self.roll_vs_truth)
        );
        println!(
            "  mirrored image ({} faces): |yaw + yaw'| {}; |pitch - pitch'| {}; |roll + roll'| {}",
            self.mirrored,
            s(&self.mirror_yaw),
            s(&self.mirror_pitch),
            s(&self.mirror_roll)
        );
        if let Some(e) = &self.eyes {
            println!("eye aspect ratio  {} eyes, |CNN - truth| {}", e.eyes, s(&e.ear_error));
            println!(
                "  {} annotated closed (< {CLOSED_EAR}): truth median {:.3}, CNN median {:.3}; open eyes: CNN median {:.3}",
                e.closed, e.closed_truth_median, e.closed_found_median, e.open_found_median
            );
        }
    }
}
