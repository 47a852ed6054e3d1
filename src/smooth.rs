//! The One Euro filter (Casiez, Roussel, Vogel, CHI 2012): a low-pass filter whose
//! cutoff rises with speed, so still points stop jittering and moving points do
//! not lag. One filter per coordinate of every keypoint of a track.
//!
//! Points are filtered in face units: frame pixels divided by the face box width
//! when the track started (fixed for the track, so box-size noise does not leak
//! into the points), so the settings do not depend on image size or face size.

use crate::geometry::Point;
use crate::pose::HeadPose;

/// Default minimum cutoff frequency, Hz: lower is steadier when still.
pub const DEFAULT_MIN_CUTOFF_HZ: f32 = 1.0;
/// Default speed coefficient: higher follows fast motion with less lag.
pub const DEFAULT_BETA: f32 = 5.0;
/// Cutoff for the derivative estimate, Hz (the paper's default).
pub const DERIVATIVE_CUTOFF_HZ: f32 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneEuroParams {
    pub min_cutoff_hz: f32,
    pub beta: f32,
}

impl Default for OneEuroParams {
    fn default() -> Self {
        Self { min_cutoff_hz: DEFAULT_MIN_CUTOFF_HZ, beta: DEFAULT_BETA }
    }
}

fn alpha(cutoff_hz: f32, dt_secs: f32) -> f32 {
    let tau = 1.0 / (2.0 * std::f32::consts::PI * cutoff_hz);
    1.0 / (1.0 + tau / dt_secs)
}

/// One scalar One Euro filter.
#[derive(Debug, Clone, Copy, Default)]
pub struct OneEuro {
    value: Option<f32>,
    derivative: f32,
}

impl OneEuro {
    pub fn filter(&mut self, x: f32, dt_secs: f32, p: &OneEuroParams) -> f32 {
        let Some(prev) = self.value else {
            self.value = Some(x);
            return x;
        };
        let dt = dt_secs.max(1e-4);
        let dx = (x - prev) / dt;
        let a_d = alpha(DERIVATIVE_CUTOFF_HZ, dt);
        self.derivative += a_d * (dx - self.derivative);
        let cutoff = p.min_cutoff_hz + p.beta * self.derivative.abs();
        let out = prev + alpha(cutoff, dt) * (x - prev);
        self.value = Some(out);
        out
    }
}

/// Filters for every point of one face.
#[derive(Debug, Clone, Default)]
pub struct PointsFilter {
    filters: Vec<(OneEuro, OneEuro)>,
    scale: Option<f32>,
}

impl PointsFilter {
    /// Smooths `points` (frame pixels), `dt_secs` after the last call. The first
    /// call fixes the face unit to `face_width` pixels.
    pub fn filter(&mut self, points: &[Point], face_width: f32, dt_secs: f32, p: &OneEuroParams) -> Vec<Point> {
        if self.filters.len() != points.len() {
            self.filters = vec![Default::default(); points.len()];
        }
        let s = *self.scale.get_or_insert(face_width.max(1.0));
        points
            .iter()
            .zip(&mut self.filters)
            .map(|(q, (fx, fy))| Point::new(fx.filter(q.x / s, dt_secs, p) * s, fy.filter(q.y / s, dt_secs, p) * s))
            .collect()
    }
}

/// Filters for the three angles of one head's pose. The angles are filtered in
/// radians, which a turning head covers at about the rate its points cover face
/// units, so the points' settings suit them too.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoseFilter {
    yaw: OneEuro,
    pitch: OneEuro,
    roll: OneEuro,
}

impl PoseFilter {
    /// Smooths `pose` (degrees), `dt_secs` after the last call.
    pub fn filter(&mut self, pose: HeadPose, dt_secs: f32, p: &OneEuroParams) -> HeadPose {
        let angle = |f: &mut OneEuro, deg: f32| f.filter(deg.to_radians(), dt_secs, p).to_degrees();
        HeadPose {
            yaw: angle(&mut self.yaw, pose.yaw),
            pitch: angle(&mut self.pitch, pose.pitch),
            roll: angle(&mut self.roll, pose.roll),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_on_a_still_value_is_reduced() {
        let p = OneEuroParams::default();
        let mut f = OneEuro::default();
        let noise = [0.01f32, -0.012, 0.008, -0.009, 0.011, -0.01, 0.009, -0.011];
        let out: Vec<f32> = (0..400).map(|i| f.filter(0.5 + noise[i % 8], 1.0 / 30.0, &p)).collect();
        let tail = &out[200..];
        let spread = tail.iter().cloned().fold(f32::MIN, f32::max) - tail.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread < 0.023 / 3.0, "spread {spread}");
    }

    #[test]
    fn a_moving_value_is_followed_with_little_lag() {
        let p = OneEuroParams::default();
        let mut f = OneEuro::default();
        let mut last = 0.0;
        for i in 0..60 {
            // 0.5 face widths per second.
            last = f.filter(i as f32 * 0.5 / 30.0, 1.0 / 30.0, &p);
        }
        let truth = 59.0 * 0.5 / 30.0;
        assert!((truth - last).abs() < 0.02, "lag {}", truth - last);
    }

    #[test]
    fn units_make_the_filter_size_independent() {
        let p = OneEuroParams::default();
        let pts = |s: f32, i: usize| vec![Point::new(s * (1.0 + 0.01 * (i % 3) as f32), s)];
        let (mut small, mut large) = (PointsFilter::default(), PointsFilter::default());
        for i in 0..50 {
            let a = small.filter(&pts(50.0, i), 50.0, 1.0 / 30.0, &p);
            let b = large.filter(&pts(500.0, i), 500.0, 1.0 / 30.0, &p);
            assert!((a[0].x * 10.0 - b[0].x).abs() < 1e-2);
        }
    }
}
