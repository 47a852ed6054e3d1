//! How open the eyes and mouth are, from 68 points (frame pixels; ratios have no
//! unit). The 15-point scheme has no eyelids or inner lips, so it has none.
//!
//! - Eye aspect ratio (Soukupová and Čech, 2016), per eye:
//!   `(|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|)` with `p1..p6` the eye's six points
//!   (36-41 for the image-left eye, 42-47 for the image-right one). About 0.3 for
//!   an open eye, near 0 for a closed one.
//! - Mouth aspect ratio, the same form on the inner lip contour:
//!   `(|p61 - p67| + |p62 - p66| + |p63 - p65|) / (3 |p60 - p64|)`: the mean gap
//!   between the lips over the mouth's width, 0 for a closed mouth.

use crate::geometry::Point;
use serde::Serialize;

/// Eye and mouth aspect ratios of one face.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Openness {
    /// Image-left eye (the subject's right), then image-right eye.
    pub eyes: [f32; 2],
    pub mouth: f32,
}

/// First point of the image-left and image-right eye in the 68-point scheme.
const EYE_STARTS: [usize; 2] = [36, 42];

/// Eye aspect ratio of the six points starting at `first`.
fn eye_aspect_ratio(p: &[Point], first: usize) -> f32 {
    let q = |k: usize| p[first + k];
    let lids = q(1).distance(q(5)) + q(2).distance(q(4));
    lids / (2.0 * q(0).distance(q(3))).max(1e-6)
}

fn mouth_aspect_ratio(p: &[Point]) -> f32 {
    let gaps = p[61].distance(p[67]) + p[62].distance(p[66]) + p[63].distance(p[65]);
    gaps / (3.0 * p[60].distance(p[64])).max(1e-6)
}

impl Openness {
    /// The ratios of a face's points; `None` unless they are the 68-point scheme.
    pub fn from_points(points: &[Point]) -> Option<Openness> {
        (points.len() == 68).then(|| Openness {
            eyes: EYE_STARTS.map(|first| eye_aspect_ratio(points, first)),
            mouth: mouth_aspect_ratio(points),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 68 points with eyes 30 px wide and `eye_open_px` tall, mouth `mouth_open_px` open.
    fn face(eye_open_px: f32, mouth_open_px: f32) -> Vec<Point> {
        let mut p = vec![Point::default(); 68];
        for (e, x0) in [(36, 100.0), (42, 160.0)] {
            let h = eye_open_px / 2.0;
            let eye = [(0.0, 0.0), (10.0, -h), (20.0, -h), (30.0, 0.0), (20.0, h), (10.0, h)];
            for (k, (dx, dy)) in eye.iter().enumerate() {
                p[e + k] = Point::new(x0 + dx, 100.0 + dy);
            }
        }
        let h = mouth_open_px / 2.0;
        let inner = [(0.0, 0.0), (15.0, -h), (30.0, -h), (45.0, -h), (60.0, 0.0), (45.0, h), (30.0, h), (15.0, h)];
        for (k, (dx, dy)) in inner.iter().enumerate() {
            p[60 + k] = Point::new(110.0 + dx, 200.0 + dy);
        }
        p
    }

    #[test]
    fn ratios_follow_the_opening() {
        let open = Openness::from_points(&face(9.0, 30.0)).unwrap();
        assert!((open.eyes[0] - 0.3).abs() < 1e-5 && (open.eyes[1] - 0.3).abs() < 1e-5, "{open:?}");
        assert!((open.mouth - 0.5).abs() < 1e-5, "{open:?}");
        let shut = Openness::from_points(&face(0.0, 0.0)).unwrap();
        assert_eq!((shut.eyes, shut.mouth), ([0.0, 0.0], 0.0));
        assert!(Openness::from_points(&face(9.0, 0.0)[..15]).is_none());
    }
}
