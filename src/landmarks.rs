//! The two keypoint schemes: iBUG 300-W 68 points and Kaggle's 15 points, with their
//! mirror permutations, regions (for colours and per-region error), contours and the
//! 68 -> 15 mapping of `../shared/datasets/README.md`. Pure data, no dependencies.

use crate::geometry::Point;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scheme {
    #[serde(rename = "68")]
    P68,
    #[serde(rename = "15")]
    P15,
}

/// A face region: used for colours in the overlay and per-region NME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    Jaw,
    Brows,
    Nose,
    Eyes,
    Mouth,
}

impl Region {
    pub const ALL: [Region; 5] = [Region::Jaw, Region::Brows, Region::Nose, Region::Eyes, Region::Mouth];

    pub fn name(self) -> &'static str {
        match self {
            Region::Jaw => "jaw",
            Region::Brows => "brows",
            Region::Nose => "nose",
            Region::Eyes => "eyes",
            Region::Mouth => "mouth",
        }
    }
}

/// Mirror of each 68-point index under a horizontal flip (datasets README).
const FLIP_68: [usize; 68] = [
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, // jaw
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17, // brows
    27, 28, 29, 30, 35, 34, 33, 32, 31, // nose
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, // eyes
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, // outer lips
    64, 63, 62, 61, 60, 67, 66, 65, // inner lips
];

/// Kaggle 15-point order: left/right are the subject's.
pub const NAMES_15: [&str; 15] = [
    "left_eye_center",
    "right_eye_center",
    "left_eye_inner_corner",
    "left_eye_outer_corner",
    "right_eye_inner_corner",
    "right_eye_outer_corner",
    "left_eyebrow_inner_end",
    "left_eyebrow_outer_end",
    "right_eyebrow_inner_end",
    "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner",
    "mouth_right_corner",
    "mouth_center_top_lip",
    "mouth_center_bottom_lip",
];

/// Mirror of each 15-point index: subject's left <-> right.
const FLIP_15: [usize; 15] = [1, 0, 4, 5, 2, 3, 8, 9, 6, 7, 10, 12, 11, 13, 14];

/// 68-point sources of each 15-point index; the eye centres (0, 1) are means.
const FROM_68_SINGLE: [(usize, usize); 13] = [
    (2, 42),
    (3, 45),
    (4, 39),
    (5, 36),
    (6, 22),
    (7, 26),
    (8, 21),
    (9, 17),
    (10, 30),
    (11, 54),
    (12, 48),
    (13, 51),
    (14, 57),
];

/// Polylines drawn as contours: (first, last, closed).
const CONTOURS_68: [(usize, usize, bool); 9] = [
    (0, 16, false),
    (17, 21, false),
    (22, 26, false),
    (27, 30, false),
    (31, 35, false),
    (36, 41, true),
    (42, 47, true),
    (48, 59, true),
    (60, 67, true),
];

impl Scheme {
    pub fn from_count(n: u32) -> Option<Scheme> {
        match n {
            68 => Some(Scheme::P68),
            15 => Some(Scheme::P15),
            _ => None,
        }
    }

    pub fn num_points(self) -> usize {
        match self {
            Scheme::P68 => 68,
            Scheme::P15 => 15,
        }
    }

    /// The network input size for this scheme's model.
    pub fn input_size(self) -> u32 {
        match self {
            Scheme::P68 => 224,
            Scheme::P15 => 96,
        }
    }

    pub fn flip_permutation(self) -> &'static [usize] {
        match self {
            Scheme::P68 => &FLIP_68,
            Scheme::P15 => &FLIP_15,
        }
    }

    /// Indices of the outer eye corners, the NME normaliser: image-left then image-right.
    pub fn outer_eye_corners(self) -> (usize, usize) {
        match self {
            Scheme::P68 => (36, 45),
            Scheme::P15 => (5, 3),
        }
    }

    /// Index of the nose tip.
    pub fn nose_tip(self) -> usize {
        match self {
            Scheme::P68 => 30,
            Scheme::P15 => 10,
        }
    }

    pub fn region(self, i: usize) -> Region {
        match self {
            Scheme::P68 => match i {
                0..=16 => Region::Jaw,
                17..=26 => Region::Brows,
                27..=35 => Region::Nose,
                36..=47 => Region::Eyes,
                _ => Region::Mouth,
            },
            Scheme::P15 => match i {
                0..=5 => Region::Eyes,
                6..=9 => Region::Brows,
                10 => Region::Nose,
                _ => Region::Mouth,
            },
        }
    }

    /// Point index pairs to join with lines when contours are shown.
    pub fn contour_segments(self) -> Vec<(usize, usize)> {
        match self {
            Scheme::P68 => {
                let mut segs = Vec::new();
                for &(a, b, closed) in &CONTOURS_68 {
                    segs.extend((a..b).map(|i| (i, i + 1)));
                    if closed {
                        segs.push((b, a));
                    }
                }
                segs
            }
            Scheme::P15 => vec![(6, 7), (8, 9), (2, 3), (4, 5), (11, 13), (13, 12), (12, 14), (14, 11)],
        }
    }

    /// Derives this scheme's points from 68 points (identity for 68).
    pub fn from_68(self, p: &[Point]) -> Vec<Point> {
        assert_eq!(p.len(), 68, "from_68 takes 68 points");
        match self {
            Scheme::P68 => p.to_vec(),
            Scheme::P15 => {
                let mean = |r: std::ops::Range<usize>| {
                    let n = r.len() as f32;
                    let (sx, sy) = r.fold((0.0, 0.0), |(sx, sy), i| (sx + p[i].x, sy + p[i].y));
                    Point::new(sx / n, sy / n)
                };
                let mut out = vec![Point::default(); 15];
                out[0] = mean(42..48);
                out[1] = mean(36..42);
                for &(dst, src) in &FROM_68_SINGLE {
                    out[dst] = p[src];
                }
                out
            }
        }
    }

    /// Mirrors point labels after a horizontal flip of the image.
    /// The eye centres of a face's points: (image-left eye, image-right eye).
    pub fn eye_centres(self, p: &[Point]) -> (Point, Point) {
        let mean = |r: std::ops::Range<usize>| {
            let n = r.len() as f32;
            let (sx, sy) = p[r].iter().fold((0.0, 0.0), |(x, y), q| (x + q.x, y + q.y));
            Point::new(sx / n, sy / n)
        };
        match self {
            Scheme::P68 => (mean(36..42), mean(42..48)),
            // Kaggle's left and right are the subject's: point 1 is on the image left.
            Scheme::P15 => (p[1], p[0]),
        }
    }

    /// A face's roll: the angle of its eye line in the image, radians (0 level,
    /// positive turned clockwise as seen; see [`crate::geometry::line_angle`]).
    pub fn roll(self, p: &[Point]) -> f32 {
        let (left, right) = self.eye_centres(p);
        crate::geometry::line_angle(left, right)
    }

    pub fn mirror_labels(self, p: &[Point]) -> Vec<Point> {
        self.flip_permutation().iter().map(|&j| p[j]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_permutations_are_involutions() {
        for s in [Scheme::P68, Scheme::P15] {
            let f = s.flip_permutation();
            assert_eq!(f.len(), s.num_points());
            for i in 0..f.len() {
                assert_eq!(f[f[i]], i, "{s:?} point {i}");
            }
        }
    }

    #[test]
    fn fifteen_from_68_follows_the_readme_mapping() {
        let p: Vec<Point> = (0..68).map(|i| Point::new(i as f32, 2.0 * i as f32)).collect();
        let q = Scheme::P15.from_68(&p);
        assert_eq!(q[0], Point::new(44.5, 89.0));
        assert_eq!(q[1], Point::new(38.5, 77.0));
        assert_eq!(q[3], p[45]);
        assert_eq!(q[5], p[36]);
        assert_eq!(q[10], p[30]);
        assert_eq!(q[14], p[57]);
    }

    #[test]
    fn mirroring_commutes_with_the_15_point_mapping() {
        // Flip x of 68 points and relabel, then map: same as map, flip x, relabel.
        let p: Vec<Point> = (0..68).map(|i| Point::new((i * 7 % 31) as f32, i as f32)).collect();
        let flip_x = |v: &[Point]| v.iter().map(|q| Point::new(-q.x, q.y)).collect::<Vec<_>>();
        let a = Scheme::P15.from_68(&Scheme::P68.mirror_labels(&flip_x(&p)));
        let b = Scheme::P15.mirror_labels(&flip_x(&Scheme::P15.from_68(&p)));
        for (x, y) in a.iter().zip(&b) {
            assert!(x.distance(*y) < 1e-5);
        }
    }
}
