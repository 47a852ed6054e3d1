//! Smoothing of each track's keypoints and head pose, in face units: frame pixels
//! divided by the face box width when the filter started (fixed for the track, so
//! box-size noise does not leak into the points), so the settings do not depend on
//! image size or face size.
//!
//! A face's points are split into its rigid motion and its shape ([`FaceFilter`]):
//! a similarity (centre, scale, turn) fitted to all the points, whose noise is
//! low because it averages them, and the points in the face's own frame. The
//! motion goes through [`Steady`] filters, which predict with constant velocity, so
//! a face that moves steadily is followed without lag and smoothed as much as a
//! still one; the shape (expressions: blinks, speech) goes through One Euro filters
//! (Casiez, Roussel, Vogel, CHI 2012), whose cutoff rises with the speed of each
//! shape coordinate. The tracker places each next crop from the smoothed points,
//! moved by the filter's velocity, so one motion estimate serves both.

use crate::geometry::{within_half_turn, Point};
use crate::pose::HeadPose;

/// Default minimum cutoff frequency, Hz: lower is steadier on a still face (or
/// one moving steadily).
pub const DEFAULT_MIN_CUTOFF_HZ: f32 = 1.0;
/// Default rate coefficient: higher follows changes of motion and expression
/// sooner, with more jitter.
pub const DEFAULT_BETA: f32 = 5.0;
/// Cutoff for the derivative and prediction-error estimates, Hz (One Euro's
/// default).
pub const DERIVATIVE_CUTOFF_HZ: f32 = 1.0;
/// How much more readily a change of the rigid motion opens its filter than a
/// change of shape opens the shape's: the motion's prediction error averages all
/// points, so it is far less noisy. On the helen68 val motion sweep, 4 keeps NME at
/// 10 px a frame within 2% of NME still (2: 5%).
pub const MOTION_BETA_FACTOR: f32 = 4.0;

/// The smoothing settings: see [`DEFAULT_MIN_CUTOFF_HZ`] and [`DEFAULT_BETA`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SmoothParams {
    pub min_cutoff_hz: f32,
    pub beta: f32,
}

impl Default for SmoothParams {
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
    pub fn filter(&mut self, x: f32, dt_secs: f32, p: &SmoothParams) -> f32 {
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

/// A scalar filter that predicts with constant velocity (an alpha-beta filter)
/// and whose gains rise with its prediction error, as One Euro's cutoff rises
/// with speed: a steady motion is followed without lag and smoothed as much as a
/// still value; a change of motion opens the filter until it is followed again.
#[derive(Debug, Clone, Copy, Default)]
pub struct Steady {
    state: Option<SteadyState>,
}

#[derive(Debug, Clone, Copy)]
struct SteadyState {
    value: f32,
    /// Units per second.
    velocity: f32,
    /// Smoothed absolute prediction error, units per second.
    error_rate: f32,
}

impl Steady {
    /// Smooths `x`, `dt_secs` after the last call; `p.beta` scales how much the
    /// prediction error (units per second) raises the cutoff.
    pub fn filter(&mut self, x: f32, dt_secs: f32, p: &SmoothParams) -> f32 {
        let Some(s) = &mut self.state else {
            self.state = Some(SteadyState { value: x, velocity: 0.0, error_rate: 0.0 });
            return x;
        };
        let dt = dt_secs.max(1e-4);
        let predicted = s.value + s.velocity * dt;
        let error = x - predicted;
        s.error_rate += alpha(DERIVATIVE_CUTOFF_HZ, dt) * (error.abs() / dt - s.error_rate);
        let a = alpha(p.min_cutoff_hz + p.beta * s.error_rate, dt);
        // Benedict-Bordner: the velocity gain that best damps a change of motion
        // for a given position gain.
        let b = a * a / (2.0 - a);
        s.value = predicted + a * error;
        s.velocity += b * error / dt;
        s.value
    }

    /// The last smoothed value (`None` before the first).
    pub fn value(&self) -> Option<f32> {
        self.state.map(|s| s.value)
    }

    /// The velocity estimate, units per second (0 before the second value).
    pub fn velocity(&self) -> f32 {
        self.state.map_or(0.0, |s| s.velocity)
    }
}

/// A face's rigid motion against a reference shape, and its shape in the
/// reference's frame.
struct Rigid {
    log_scale: f32,
    /// Radians, from image x toward image y.
    angle_rad: f32,
    shape: Vec<Point>,
}

/// The similarity that maps `reference` closest to `centred` (both centred on
/// their centroid; least squares), and `centred` mapped back by it. Degenerate
/// points (all on their centroid) are taken as they are.
fn fit_similarity(centred: &[Point], reference: &[Point]) -> Rigid {
    let (mut dot, mut cross, mut norm) = (0.0f32, 0.0f32, 0.0f32);
    for (d, q) in centred.iter().zip(reference) {
        dot += q.x * d.x + q.y * d.y;
        cross += q.x * d.y - q.y * d.x;
        norm += q.x * q.x + q.y * q.y;
    }
    if norm < 1e-12 || dot.hypot(cross) < 1e-12 {
        return Rigid { log_scale: 0.0, angle_rad: 0.0, shape: centred.to_vec() };
    }
    let scale = dot.hypot(cross) / norm;
    let angle_rad = cross.atan2(dot);
    let shape = centred.iter().map(|d| Point::new(d.x / scale, d.y / scale).turned(-angle_rad)).collect();
    Rigid { log_scale: scale.ln(), angle_rad, shape }
}

/// The smoothing of one face's points: its rigid motion and its shape, each
/// filtered on its own (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct FaceFilter {
    /// Frame pixels per face unit: the face box width on the first call.
    unit_px: f32,
    /// The smoothed shape: points in face units, centred, in the first call's
    /// scale and turn. It is also the reference each new frame's motion is fitted to.
    shape: Vec<Point>,
    shape_filters: Vec<(OneEuro, OneEuro)>,
    centre: (Steady, Steady),
    log_scale: Steady,
    angle: Steady,
}

impl FaceFilter {
    /// Smooths `points` (frame pixels), `dt_secs` after the last call. The first
    /// call fixes the face unit to `face_width` pixels and returns the points.
    pub fn filter(&mut self, points: &[Point], face_width: f32, dt_secs: f32, p: &SmoothParams) -> Vec<Point> {
        if self.shape.len() != points.len() {
            *self = FaceFilter::start(points, face_width);
        }
        let unit = self.unit_px;
        let (c, centred) = centred(points, unit);
        let rigid = fit_similarity(&centred, &self.shape);
        let motion_p = SmoothParams { beta: p.beta * MOTION_BETA_FACTOR, ..*p };
        let cx = self.centre.0.filter(c.x, dt_secs, &motion_p);
        let cy = self.centre.1.filter(c.y, dt_secs, &motion_p);
        let scale = self.log_scale.filter(rigid.log_scale, dt_secs, &motion_p).exp();
        // Unwrapped against the last angle, so a face turning past half a turn
        // keeps a continuous angle.
        let angle = self.angle.value().map_or(rigid.angle_rad, |last| within_half_turn(rigid.angle_rad, last));
        let turn = self.angle.filter(angle, dt_secs, &motion_p);
        for ((q, m), (fx, fy)) in self.shape.iter_mut().zip(&rigid.shape).zip(&mut self.shape_filters) {
            *q = Point::new(fx.filter(m.x, dt_secs, p), fy.filter(m.y, dt_secs, p));
        }
        let to_frame = |q: &Point| {
            let d = q.turned(turn);
            Point::new((cx + scale * d.x) * unit, (cy + scale * d.y) * unit)
        };
        self.shape.iter().map(to_frame).collect()
    }

    fn start(points: &[Point], face_width: f32) -> FaceFilter {
        let unit_px = face_width.max(1.0);
        let (_, shape) = centred(points, unit_px);
        FaceFilter { unit_px, shape, shape_filters: vec![Default::default(); points.len()], ..Default::default() }
    }

    /// The velocity of the points' centre, frame pixels per second.
    pub fn velocity_px_per_sec(&self) -> Point {
        Point::new(self.centre.0.velocity() * self.unit_px, self.centre.1.velocity() * self.unit_px)
    }
}

/// `points` (frame pixels) in face units of `unit_px`: their centroid, and the
/// points less it.
fn centred(points: &[Point], unit_px: f32) -> (Point, Vec<Point>) {
    let n = points.len().max(1) as f32;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(sx, sy), p| (sx + p.x, sy + p.y));
    let c = Point::new(sx / n / unit_px, sy / n / unit_px);
    (c, points.iter().map(|q| Point::new(q.x / unit_px - c.x, q.y / unit_px - c.y)).collect())
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
    pub fn filter(&mut self, pose: HeadPose, dt_secs: f32, p: &SmoothParams) -> HeadPose {
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
        let p = SmoothParams::default();
        let mut f = OneEuro::default();
        let noise = [0.01f32, -0.012, 0.008, -0.009, 0.011, -0.01, 0.009, -0.011];
        let out: Vec<f32> = (0..400).map(|i| f.filter(0.5 + noise[i % 8], 1.0 / 30.0, &p)).collect();
        let tail = &out[200..];
        let spread = tail.iter().cloned().fold(f32::MIN, f32::max) - tail.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread < 0.023 / 3.0, "spread {spread}");
    }

    #[test]
    fn a_moving_value_is_followed_with_little_lag() {
        let p = SmoothParams::default();
        let mut f = OneEuro::default();
        let mut last = 0.0;
        for i in 0..60 {
            // 0.5 face widths per second.
            last = f.filter(i as f32 * 0.5 / 30.0, 1.0 / 30.0, &p);
        }
        let truth = 59.0 * 0.5 / 30.0;
        assert!((truth - last).abs() < 0.02, "lag {}", truth - last);
    }

    const DT: f32 = 1.0 / 30.0;

    /// A 68-point face about 100 px wide, its centroid on `centre`, turned by
    /// `angle_rad` about it.
    fn face(centre: Point, angle_rad: f32) -> Vec<Point> {
        let shape: Vec<Point> =
            (0..68).map(|i| Point::new(45.0 * (0.37 * i as f32).cos(), 55.0 * (0.61 * i as f32).sin())).collect();
        let (c, _) = centred(&shape, 1.0);
        let at = |p: &Point| {
            let q = Point::new(p.x - c.x, p.y - c.y).turned(angle_rad);
            Point::new(centre.x + q.x, centre.y + q.y)
        };
        shape.iter().map(at).collect()
    }

    /// Mean distance between matching points.
    fn mean_distance(a: &[Point], b: &[Point]) -> f32 {
        a.iter().zip(b).map(|(p, q)| p.distance(*q)).sum::<f32>() / a.len() as f32
    }

    /// `points` with Gaussian noise of `sigma_px` on each coordinate.
    fn noisy(points: &[Point], sigma_px: f32, rng: &mut impl rand::Rng) -> Vec<Point> {
        let normal = rand_distr::Normal::new(0.0f32, sigma_px).unwrap();
        points.iter().map(|p| Point::new(p.x + rng.sample(normal), p.y + rng.sample(normal))).collect()
    }

    /// A scalar moving at a constant 1.5 units a second (5 px a frame on a face
    /// 100 px wide) is followed with no lag once the filter has caught the motion,
    /// where One Euro with the same settings trails it.
    #[test]
    fn a_constant_velocity_is_followed_without_steady_state_lag() {
        let p = SmoothParams::default();
        let (mut steady, mut one_euro) = (Steady::default(), OneEuro::default());
        let truth = |i: usize| 1.5 * i as f32 * DT;
        let mut lags = Vec::new();
        for i in 0..120 {
            let out = steady.filter(truth(i), DT, &p);
            let lagging = one_euro.filter(truth(i), DT, &p);
            lags.push((truth(i) - out, truth(i) - lagging));
        }
        let (lag, one_euro_lag) = lags[119];
        assert!(lag.abs() < 1e-4, "lag {lag} units");
        assert!(one_euro_lag > 0.01, "One Euro lags {one_euro_lag} units");
        assert!((steady.velocity() - 1.5).abs() < 1e-3, "velocity {}", steady.velocity());
    }

    /// A whole face panned at 5 px a frame and turned 1 degree a frame: after a
    /// second its smoothed points lie on the true ones (under 0.01 px off).
    #[test]
    fn a_face_moving_and_turning_steadily_has_no_lag() {
        let (p, mut f) = (SmoothParams::default(), FaceFilter::default());
        let truth = |i: usize| face(Point::new(100.0 + 5.0 * i as f32, 200.0), (i as f32).to_radians());
        let mut off = Vec::new();
        for i in 0..60 {
            off.push(mean_distance(&f.filter(&truth(i), 100.0, DT, &p), &truth(i)));
        }
        assert!(off[30..].iter().all(|&d| d < 0.01), "off by {:?} px", &off[30..]);
        let v = f.velocity_px_per_sec();
        assert!((v.x - 150.0).abs() < 0.5 && v.y.abs() < 0.5, "velocity {v:?} px/s");
    }

    /// White noise of 0.5 px on every coordinate (0.005 of the face width, the
    /// CNN's own jitter on a still face under camera noise) is cut to under 0.4 of
    /// itself (measured: 0.35), on a still face and as much on one panned at 5 px a
    /// frame.
    #[test]
    fn white_noise_is_reduced_on_still_and_moving_faces() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
        for speed_px in [0.0, 5.0] {
            let (p, mut f) = (SmoothParams::default(), FaceFilter::default());
            let truth = |i: usize| face(Point::new(100.0 + speed_px * i as f32, 200.0), 0.0);
            let (mut raw, mut out) = (0.0, 0.0);
            for i in 0..300 {
                let measured = noisy(&truth(i), 0.5, &mut rng);
                let smoothed = f.filter(&measured, 100.0, DT, &p);
                if i >= 60 {
                    raw += mean_distance(&measured, &truth(i));
                    out += mean_distance(&smoothed, &truth(i));
                }
            }
            let ratio = out / raw;
            assert!(ratio < 0.4, "{speed_px} px a frame: noise cut to {ratio:.3} of itself");
        }
    }

    /// The same face at 50 and 500 px is smoothed alike, 10 times larger.
    #[test]
    fn units_make_the_filter_size_independent() {
        let p = SmoothParams::default();
        let pts = |scale: f32, i: usize| {
            let wobble = 1.0 + 0.01 * (i % 3) as f32;
            face(Point::new(200.0, 200.0), 0.0)
                .iter()
                .map(|q| Point::new(q.x * scale * wobble, q.y * scale))
                .collect::<Vec<_>>()
        };
        let (mut small, mut large) = (FaceFilter::default(), FaceFilter::default());
        for i in 0..50 {
            let a = small.filter(&pts(0.5, i), 50.0, DT, &p);
            let b: Vec<Point> = large.filter(&pts(5.0, i), 500.0, DT, &p);
            let a10: Vec<Point> = a.iter().map(|q| Point::new(q.x * 10.0, q.y * 10.0)).collect();
            assert!(mean_distance(&a10, &b) < 0.01, "frame {i}: {} px apart", mean_distance(&a10, &b));
        }
    }
}
