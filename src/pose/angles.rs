//! Head pose angles and the rotation they stand for. Camera space: x to the image
//! right, y down, z away from the camera (OpenCV's); a rotation takes model space
//! ([`super::face3d`]) to camera space.
//!
//! The rotation is `Ry(-yaw) * Rx(-pitch) * Rz(-roll)` (right-handed rotations
//! about the camera's axes), so that, as seen in the image:
//! - roll is positive when the face is turned counter-clockwise,
//! - yaw is positive when the face turns toward the image's right side,
//! - pitch is positive when the face tilts up.
//!
//! Mirroring the image (x -> -x) turns a rotation `R` into `M R M`, `M =
//! diag(-1, 1, 1)`: yaw and roll change sign, pitch stays.

use serde::Serialize;

/// A 3x3 rotation, row-major.
pub type Rotation = [[f64; 3]; 3];

/// A head's orientation in degrees (conventions in the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct HeadPose {
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
}

/// The product `a b`.
pub(super) fn mul(a: &Rotation, b: &Rotation) -> Rotation {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

fn about_x(a: f64) -> Rotation {
    let (s, c) = a.sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}

fn about_y(a: f64) -> Rotation {
    let (s, c) = a.sin_cos();
    [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
}

fn about_z(a: f64) -> Rotation {
    let (s, c) = a.sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

impl HeadPose {
    /// The rotation from model space to camera space for this pose.
    pub fn rotation(&self) -> Rotation {
        let r = |deg: f32| -(deg as f64).to_radians();
        mul(&about_y(r(self.yaw)), &mul(&about_x(r(self.pitch)), &about_z(r(self.roll))))
    }

    /// The pose of a rotation from model space to camera space.
    pub fn from_rotation(m: &Rotation) -> HeadPose {
        let deg = |rad: f64| -(rad.to_degrees() as f32);
        HeadPose {
            yaw: deg(m[0][2].atan2(m[2][2])),
            pitch: deg((-m[1][2]).clamp(-1.0, 1.0).asin()),
            roll: deg(m[1][0].atan2(m[1][1])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: HeadPose, b: HeadPose) -> bool {
        (a.yaw - b.yaw).abs() < 1e-3 && (a.pitch - b.pitch).abs() < 1e-3 && (a.roll - b.roll).abs() < 1e-3
    }

    #[test]
    fn angles_survive_the_round_trip_through_a_rotation() {
        for (yaw, pitch, roll) in [(0.0, 0.0, 0.0), (30.0, -20.0, 10.0), (-60.0, 45.0, -80.0), (5.0, 85.0, 170.0)] {
            let p = HeadPose { yaw, pitch, roll };
            assert!(close(HeadPose::from_rotation(&p.rotation()), p), "{p:?}");
        }
    }

    #[test]
    fn the_signs_follow_what_the_image_shows() {
        // The nose points at the camera (-z in model space) and its tip is at -z.
        let nose = |p: HeadPose| {
            let r = p.rotation();
            [-r[0][2], -r[1][2], -r[2][2]]
        };
        assert!(nose(HeadPose { yaw: 20.0, ..Default::default() })[0] > 0.1, "yaw: nose to the image right");
        assert!(nose(HeadPose { pitch: 20.0, ..Default::default() })[1] < -0.1, "pitch: nose up (y down)");
        // Counter-clockwise in the image: the face's x axis points up-right (y < 0).
        let r = HeadPose { roll: 20.0, ..Default::default() }.rotation();
        assert!(r[1][0] < -0.1, "roll: x axis turns up");
    }

    #[test]
    fn mirroring_flips_yaw_and_roll_and_keeps_pitch() {
        let p = HeadPose { yaw: 25.0, pitch: -12.0, roll: 8.0 };
        let m = [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let q = HeadPose::from_rotation(&mul(&m, &mul(&p.rotation(), &m)));
        assert!(close(q, HeadPose { yaw: -25.0, pitch: -12.0, roll: -8.0 }), "{q:?}");
    }
}
