//! Head pose (yaw, pitch, roll) and eye and mouth openness of a face, from its
//! keypoints (frame pixels, pixel centres at whole numbers as OpenCV counts them).
//!
//! The pose is the rotation that best projects the 3D mean face ([`face3d`]) onto
//! the points through a pinhole camera (OpenCV's `solvePnP`: SQPnP for 68 points;
//! EPnP refined by Gauss-Newton, [`refine`], for 15). The camera's focal length is
//! the frame width and its principal point the frame centre unless given
//! ([`CameraSpec`]). Only the points that stay put on a head are used: the brows,
//! the nose, the eyes, the mouth corners and the upper lip of the 68-point scheme
//! (the jaw contour slides along the cheek as the head turns, the lower lip moves
//! with the jaw); all 15 points of the 15-point scheme. Angle conventions are
//! in [`angles`]; openness in [`openness`].

pub mod angles;
pub mod face3d;
pub mod openness;
mod refine;

pub use angles::HeadPose;
pub use openness::Openness;

use crate::geometry::Point;
use crate::landmarks::Scheme;
use opencv::core::{Mat, Point2f, Point3f, Vector};
use opencv::prelude::*;

/// Camera settings the user may give for a calibrated camera (frame pixels).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CameraSpec {
    /// Focal length in pixels; the frame width when not given.
    pub focal_px: Option<f32>,
    /// Principal point; the frame centre when not given.
    pub principal_point: Option<Point>,
}

/// A pinhole camera in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    pub focal_px: f64,
    pub center: [f64; 2],
}

impl CameraSpec {
    /// The camera for frames of `frame_size` (width, height) pixels.
    pub fn intrinsics(&self, frame_size: (u32, u32)) -> Intrinsics {
        let (w, h) = (frame_size.0 as f64, frame_size.1 as f64);
        let center = match self.principal_point {
            Some(p) => [p.x as f64, p.y as f64],
            None => [(w - 1.0) / 2.0, (h - 1.0) / 2.0],
        };
        Intrinsics { focal_px: self.focal_px.map_or(w, |f| f as f64), center }
    }
}

impl Intrinsics {
    fn matrix(&self) -> opencv::Result<Mat> {
        let [cx, cy] = self.center;
        Mat::from_slice_2d(&[[self.focal_px, 0.0, cx], [0.0, self.focal_px, cy], [0.0, 0.0, 1.0]])
    }

    /// Where the camera-space point `p` appears in the frame.
    pub fn project(&self, p: [f64; 3]) -> Point {
        let [cx, cy] = self.center;
        Point::new((cx + self.focal_px * p[0] / p[2]) as f32, (cy + self.focal_px * p[1] / p[2]) as f32)
    }
}

/// Indices of the 68-point scheme the pose is solved from (see the module docs).
const POSE_POINTS_68: std::ops::RangeInclusive<usize> = 17..=54;
const POSE_INNER_LIP_68: std::ops::RangeInclusive<usize> = 60..=64;

/// The 3D mean face in `scheme`'s order (model space, [`face3d`]).
pub fn mean_face(scheme: Scheme) -> Vec<[f32; 3]> {
    let xy: Vec<Point> = face3d::MEAN_FACE_68.iter().map(|v| Point::new(v[0], v[1])).collect();
    let z: Vec<Point> = face3d::MEAN_FACE_68.iter().map(|v| Point::new(v[2], 0.0)).collect();
    // The 68 -> 15 mapping picks and averages points: it applies to each coordinate.
    let (xy, z) = (scheme.from_68(&xy), scheme.from_68(&z));
    xy.iter().zip(&z).map(|(a, b)| [a.x, a.y, b.x]).collect()
}

/// The point indices of `scheme` the pose is solved from.
pub fn pose_points(scheme: Scheme) -> Vec<usize> {
    match scheme {
        Scheme::P68 => POSE_POINTS_68.chain(POSE_INNER_LIP_68).collect(),
        Scheme::P15 => (0..15).collect(),
    }
}

/// Where the mean face's points appear (frame pixels, `scheme`'s order) for a head
/// at `pose` whose model origin is at `translation` (camera space, model units).
pub fn project_mean_face(scheme: Scheme, pose: HeadPose, translation: [f64; 3], camera: &Intrinsics) -> Vec<Point> {
    let r = pose.rotation();
    let place = |v: &[f32; 3]| {
        let m = |i: usize| (0..3).map(|k| r[i][k] * v[k] as f64).sum::<f64>() + translation[i];
        [m(0), m(1), m(2)]
    };
    mean_face(scheme).iter().map(|v| camera.project(place(v))).collect()
}

/// How a scheme's pose is solved (docs/MODEL.md, head pose, has the measurements).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    /// SQPnP, the global minimum of the object-space error: steadier yaw than the
    /// reprojection minimum on the 68-point turn test, and within budget there.
    Sqpnp,
    /// EPnP refined by Gauss-Newton on the reprojection error: SQPnP's accuracy
    /// on the 15-point scheme in a third of its time (SQPnP alone is over budget).
    EpnpRefined,
}

/// Solves head poses for one scheme and camera.
pub struct PoseSolver {
    method: Method,
    used: Vec<usize>,
    model: Vector<Point3f>,
    /// `model` in f64, for the refinement.
    model64: Vec<[f64; 3]>,
    camera: CameraSpec,
}

impl PoseSolver {
    pub fn new(scheme: Scheme, camera: CameraSpec) -> PoseSolver {
        let used = pose_points(scheme);
        let face = mean_face(scheme);
        let model = used.iter().map(|&i| Point3f::new(face[i][0], face[i][1], face[i][2])).collect();
        let model64 = used.iter().map(|&i| face[i].map(f64::from)).collect();
        let method = match scheme {
            Scheme::P68 => Method::Sqpnp,
            Scheme::P15 => Method::EpnpRefined,
        };
        PoseSolver { method, used, model, model64, camera }
    }

    /// The head pose of a face's `points` (frame pixels, the scheme's order) in a
    /// frame of `frame_size` (width, height) pixels; `None` when the points are not
    /// finite or no pose puts the face in front of the camera.
    pub fn solve(&self, points: &[Point], frame_size: (u32, u32)) -> opencv::Result<Option<HeadPose>> {
        let image: Vec<[f64; 2]> = self.used.iter().map(|&i| [points[i].x as f64, points[i].y as f64]).collect();
        if image.iter().flatten().any(|v| !v.is_finite()) {
            return Ok(None);
        }
        let camera = self.camera.intrinsics(frame_size);
        let Some(mut placed) = self.opencv_pnp(&image, &camera)? else {
            return Ok(None);
        };
        if self.method == Method::EpnpRefined {
            placed = refine::refine(&self.model64, &image, &camera, placed);
        }
        if placed.translation[2] <= 0.0 {
            return Ok(None);
        }
        Ok(Some(HeadPose::from_rotation(&placed.rotation)))
    }

    /// OpenCV's placement of the mean face on `image` (SQPnP or EPnP, as
    /// [`Method`] says); `None` when it finds none.
    fn opencv_pnp(&self, image: &[[f64; 2]], camera: &Intrinsics) -> opencv::Result<Option<refine::Placement>> {
        let image: Vector<Point2f> = image.iter().map(|p| Point2f::new(p[0] as f32, p[1] as f32)).collect();
        let (mut rvec, mut tvec) = (Mat::default(), Mat::default());
        let no_distortion = Mat::default();
        let solved = opencv::calib3d::solve_pnp(
            &self.model,
            &image,
            &camera.matrix()?,
            &no_distortion,
            &mut rvec,
            &mut tvec,
            false,
            match self.method {
                Method::Sqpnp => opencv::calib3d::SOLVEPNP_SQPNP,
                Method::EpnpRefined => opencv::calib3d::SOLVEPNP_EPNP,
            },
        )?;
        if !solved {
            return Ok(None);
        }
        Ok(Some(refine::Placement { rotation: refine::exp_rotation(vec3(&rvec)?), translation: vec3(&tvec)? }))
    }
}

/// The three values of a 3 x 1 f64 `Mat` (OpenCV's rotation and translation vectors).
fn vec3(m: &Mat) -> opencv::Result<[f64; 3]> {
    Ok([*m.at::<f64>(0)?, *m.at::<f64>(1)?, *m.at::<f64>(2)?])
}
