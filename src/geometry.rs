//! Boxes, points and the transforms between the three spaces facekp uses.
//!
//! - **frame** space: pixels of the source image, origin top-left, x right, y down.
//! - **crop** space: pixels of the square network input (`input_size` wide), same axes.
//! - **unit** space: crop space divided by `input_size`, so a crop spans `[0, 1]²`;
//!   the network predicts points in unit space, so its outputs do not depend on the
//!   input size.
//!
//! The crop geometry lives here, in one place, for training and run time alike:
//! a detector box (Haar) predicts where the face's points are ([`CropPrior`]) and the
//! crop is a square around that prediction ([`crop_for_detection`]). Training samples
//! detector boxes from the measured distribution around the true points
//! ([`CropPrior::detection_for_points`]) and then crops with the same function.
//!
//! This module depends on nothing but `std` and `serde`, so it is testable alone.

use serde::{Deserialize, Serialize};

/// A point in some 2-D pixel space (which one is said by the name of the variable).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

impl Point {
    pub const fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }

    pub fn distance(self, other: Point) -> f32 {
        ((self.x - other.x).powi(2) + (self.y - other.y).powi(2)).sqrt()
    }

    /// This point turned by `angle_rad` about the origin: with y down, a positive
    /// angle turns clockwise as seen in the image ((1, 0) goes to (cos, sin)).
    pub fn turned(self, angle_rad: f32) -> Point {
        let (sin, cos) = angle_rad.sin_cos();
        Point::new(self.x * cos - self.y * sin, self.x * sin + self.y * cos)
    }
}

/// `angle` (radians) moved by whole turns to lie within half a turn of
/// `reference`: the same direction, reached the short way round from it.
pub fn within_half_turn(angle: f32, reference: f32) -> f32 {
    let tau = std::f32::consts::TAU;
    angle + tau * ((reference - angle) / tau).round()
}

/// The angle of the line from `a` to `b` in the image, radians: 0 for level, positive
/// when `b` lies lower (the line turned clockwise as seen).
pub fn line_angle(a: Point, b: Point) -> f32 {
    (b.y - a.y).atan2(b.x - a.x)
}

/// A face's detector-like box and its roll. `upright` is the box in the face's
/// upright frame, the frame turned by `-roll_rad` about its origin
/// ([`Point::turned`]), where the face's eye line is level: the box a detector
/// would give if the image were turned so. Roll 0 is a plain frame box.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaceBox {
    pub upright: Rect,
    pub roll_rad: f32,
}

impl FaceBox {
    /// A box found in the frame as it is (roll 0).
    pub fn level(box_in_frame: Rect) -> FaceBox {
        FaceBox { upright: box_in_frame, roll_rad: 0.0 }
    }

    /// The box of size `w` x `h` centred on `center_in_frame`, turned by `roll_rad`.
    pub fn around(center_in_frame: Point, w: f32, h: f32, roll_rad: f32) -> FaceBox {
        FaceBox { upright: Rect::from_center(center_in_frame.turned(-roll_rad), w, h), roll_rad }
    }

    pub fn center_in_frame(&self) -> Point {
        self.upright.center().turned(self.roll_rad)
    }

    /// The axis-aligned frame box around the turned box.
    pub fn bounds_in_frame(&self) -> Rect {
        let (bw, bh) = self.turned_bounds();
        Rect::from_center(self.center_in_frame(), bw, bh)
    }

    /// Width and height of the axis-aligned box around the turned box.
    pub fn turned_bounds(&self) -> (f32, f32) {
        let (sin, cos) = self.roll_rad.sin_cos();
        let (w, h) = (self.upright.w, self.upright.h);
        (w * cos.abs() + h * sin.abs(), w * sin.abs() + h * cos.abs())
    }

    /// `other`, its centre expressed in this box's upright frame (its own turn
    /// against this one's left aside: tracked rolls differ by a few degrees).
    fn in_my_frame(&self, other: &FaceBox) -> Rect {
        let c = other.center_in_frame().turned(-self.roll_rad);
        Rect::from_center(c, other.upright.w, other.upright.h)
    }

    /// Intersection over union, taken in this box's upright frame.
    pub fn iou(&self, other: &FaceBox) -> f32 {
        self.upright.iou(&self.in_my_frame(other))
    }

    /// Intersection over the smaller box, in this box's upright frame.
    pub fn overlap_of_smaller(&self, other: &FaceBox) -> f32 {
        self.upright.overlap_of_smaller(&self.in_my_frame(other))
    }

    /// The same box moved by `shift` frame pixels.
    pub fn moved(&self, shift: Point) -> FaceBox {
        let d = shift.turned(-self.roll_rad);
        let u = self.upright;
        FaceBox { upright: Rect::new(u.x + d.x, u.y + d.y, u.w, u.h), roll_rad: self.roll_rad }
    }
}

impl std::ops::Add for Point {
    type Output = Point;

    fn add(self, other: Point) -> Point {
        Point::new(self.x + other.x, self.y + other.y)
    }
}

/// An axis-aligned rectangle: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Rect {
    pub const fn new(x: f32, y: f32, w: f32, h: f32) -> Self {
        Self { x, y, w, h }
    }

    pub fn from_center(center: Point, w: f32, h: f32) -> Self {
        Self::new(center.x - w / 2.0, center.y - h / 2.0, w, h)
    }

    /// The tightest box around `points` (empty points give a zero box).
    pub fn bounding(points: &[Point]) -> Self {
        if points.is_empty() {
            return Self::default();
        }
        let (mut x0, mut y0) = (f32::INFINITY, f32::INFINITY);
        let (mut x1, mut y1) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for p in points {
            x0 = x0.min(p.x);
            y0 = y0.min(p.y);
            x1 = x1.max(p.x);
            y1 = y1.max(p.y);
        }
        Self::new(x0, y0, x1 - x0, y1 - y0)
    }

    pub fn center(&self) -> Point {
        Point::new(self.x + self.w / 2.0, self.y + self.h / 2.0)
    }

    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }

    pub fn contains(&self, p: Point) -> bool {
        p.x >= self.x && p.x <= self.x + self.w && p.y >= self.y && p.y <= self.y + self.h
    }

    /// Intersection over union, 0 for disjoint or empty boxes.
    pub fn iou(&self, other: &Rect) -> f32 {
        let inter = self.intersection_area(other);
        if inter <= 0.0 {
            return 0.0;
        }
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }

    /// Area of the overlap of two boxes (0 when disjoint).
    pub fn intersection_area(&self, other: &Rect) -> f32 {
        let ix = (self.x + self.w).min(other.x + other.w) - self.x.max(other.x);
        let iy = (self.y + self.h).min(other.y + other.h) - self.y.max(other.y);
        if ix <= 0.0 || iy <= 0.0 {
            0.0
        } else {
            ix * iy
        }
    }

    /// Intersection over the smaller box's area: 1 when one box lies inside the other.
    pub fn overlap_of_smaller(&self, other: &Rect) -> f32 {
        let smaller = self.area().min(other.area());
        if smaller <= 0.0 {
            return 0.0;
        }
        self.intersection_area(other) / smaller
    }

    pub fn scale(&self, factor: f32) -> Rect {
        Rect::new(self.x * factor, self.y * factor, self.w * factor, self.h * factor)
    }
}

/// The size of a point set: the mean of its bounding box's width and height.
/// This is the unit in which [`CropPrior`] measures detector boxes.
pub fn points_size(points: &[Point]) -> f32 {
    let b = Rect::bounding(points);
    (b.w + b.h) / 2.0
}

/// A 2-D affine map `p' = [a b; c d] p + [tx; ty]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub a: f32,
    pub b: f32,
    pub c: f32,
    pub d: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Affine {
    pub const IDENTITY: Affine = Affine { a: 1.0, b: 0.0, c: 0.0, d: 1.0, tx: 0.0, ty: 0.0 };

    pub fn apply(&self, p: Point) -> Point {
        Point::new(self.a * p.x + self.b * p.y + self.tx, self.c * p.x + self.d * p.y + self.ty)
    }

    /// `self` after `first`: `(self ∘ first)(p) = self(first(p))`.
    pub fn after(&self, first: &Affine) -> Affine {
        Affine {
            a: self.a * first.a + self.b * first.c,
            b: self.a * first.b + self.b * first.d,
            c: self.c * first.a + self.d * first.c,
            d: self.c * first.b + self.d * first.d,
            tx: self.a * first.tx + self.b * first.ty + self.tx,
            ty: self.c * first.tx + self.d * first.ty + self.ty,
        }
    }

    pub fn inverse(&self) -> Affine {
        let det = self.a * self.d - self.b * self.c;
        let (a, b, c, d) = (self.d / det, -self.b / det, -self.c / det, self.a / det);
        Affine { a, b, c, d, tx: -(a * self.tx + b * self.ty), ty: -(c * self.tx + d * self.ty) }
    }

    /// Row-major 2x3 matrix, as OpenCV's `warpAffine` takes it.
    pub fn to_rows(&self) -> [[f64; 3]; 2] {
        [[self.a as f64, self.b as f64, self.tx as f64], [self.c as f64, self.d as f64, self.ty as f64]]
    }
}

/// A square region of the frame that becomes the network input, possibly rotated
/// (a rolled face is cropped level; training also turns crops at random) and
/// mirrored (augmentation only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropSquare {
    pub center: Point,
    pub side: f32,
    pub angle_rad: f32,
    pub mirror: bool,
}

impl CropSquare {
    pub fn upright(center: Point, side: f32) -> Self {
        Self { center, side, angle_rad: 0.0, mirror: false }
    }

    /// The map from frame pixels to crop pixels of an `input_size` wide crop.
    /// Rotating by `angle_rad` turns the image content counter-clockwise in the crop;
    /// `mirror` flips the crop horizontally (the caller swaps left/right point labels).
    pub fn crop_from_frame(&self, input_size: u32) -> Affine {
        let s = input_size as f32 / self.side;
        let (sin, cos) = self.angle_rad.sin_cos();
        let fx = if self.mirror { -1.0 } else { 1.0 };
        // p_crop = S * F * R * (p - center) + size/2
        let (a, b, c, d) = (fx * s * cos, fx * s * sin, -s * sin, s * cos);
        let half = input_size as f32 / 2.0;
        Affine {
            a,
            b,
            c,
            d,
            tx: half - (a * self.center.x + b * self.center.y),
            ty: half - (c * self.center.x + d * self.center.y),
        }
    }

    pub fn frame_from_crop(&self, input_size: u32) -> Affine {
        self.crop_from_frame(input_size).inverse()
    }

    /// The axis-aligned bounding box in the frame.
    #[cfg(test)]
    pub fn bounding_box(&self) -> Rect {
        let r = self.side / 2.0 * (self.angle_rad.cos().abs() + self.angle_rad.sin().abs());
        Rect::from_center(self.center, 2.0 * r, 2.0 * r)
    }
}

/// Where the Haar detector puts its box relative to a face's points, measured on
/// the training images (`facekp train` measures it and stores it in the model config).
///
/// With `c`, `s` the centre and [`points_size`] of the true points and `d` the detector
/// box: `d.center = c + s * (dx, dy)` and `d.w = s * scale`, each a normal variable with
/// the given mean and standard deviation (`scale` is log-normal: `log_scale_std`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CropPrior {
    pub dx_mean: f32,
    pub dx_std: f32,
    pub dy_mean: f32,
    pub dy_std: f32,
    pub scale_mean: f32,
    pub log_scale_std: f32,
    /// Crop side over the predicted point size: the margin around the face.
    pub crop_padding: f32,
}

impl CropPrior {
    /// The detector box the prior predicts for `points` (its mean), e.g. to re-crop
    /// a tracked face from its last keypoints exactly as a fresh detection would.
    pub fn detection_for_points(&self, points: &[Point]) -> Rect {
        self.detection_for_points_jittered(points, 0.0, 0.0, 0.0)
    }

    /// As [`Self::detection_for_points`], moved by `z_dx`, `z_dy`, `z_scale` standard
    /// deviations: training samples these from a normal distribution.
    pub fn detection_for_points_jittered(&self, points: &[Point], z_dx: f32, z_dy: f32, z_scale: f32) -> Rect {
        let b = Rect::bounding(points);
        let s = (b.w + b.h) / 2.0;
        let c = b.center();
        let center =
            Point::new(c.x + s * (self.dx_mean + z_dx * self.dx_std), c.y + s * (self.dy_mean + z_dy * self.dy_std));
        let w = s * self.scale_mean * (z_scale * self.log_scale_std).exp();
        Rect::from_center(center, w, w)
    }

    /// `detection` moved by `z_dx`, `z_dy`, `z_scale` standard deviations of the
    /// prior, as [`Self::detection_for_points_jittered`] moves the box it predicts.
    pub fn jitter_detection(&self, detection: &Rect, z_dx: f32, z_dy: f32, z_scale: f32) -> Rect {
        let s = detection.w / self.scale_mean;
        let c = detection.center();
        let center = Point::new(c.x + s * z_dx * self.dx_std, c.y + s * z_dy * self.dy_std);
        let w = detection.w * (z_scale * self.log_scale_std).exp();
        Rect::from_center(center, w, w)
    }

    /// The network's crop for a detector box: the square around where the prior
    /// expects the points, `crop_padding` times their expected size.
    pub fn crop_for_detection(&self, detection: &Rect) -> CropSquare {
        let s = detection.w / self.scale_mean;
        let dc = detection.center();
        let center = Point::new(dc.x - s * self.dx_mean, dc.y - s * self.dy_mean);
        CropSquare::upright(center, s * self.crop_padding)
    }

    /// The same prior for the mirror image: a box that sits left of the points
    /// there sits right of them here.
    pub fn mirrored(&self) -> CropPrior {
        CropPrior { dx_mean: -self.dx_mean, ..*self }
    }

    /// The box `other`'s detector is expected to give for the face this prior's
    /// detector boxed as `detection`: through the points' centre and size this
    /// prior predicts.
    pub fn converted(&self, detection: &Rect, other: &CropPrior) -> Rect {
        let s = detection.w / self.scale_mean;
        let dc = detection.center();
        let points = Point::new(dc.x - s * self.dx_mean, dc.y - s * self.dy_mean);
        let center = Point::new(points.x + s * other.dx_mean, points.y + s * other.dy_mean);
        Rect::from_center(center, s * other.scale_mean, s * other.scale_mean)
    }

    /// The detector-like box for `points` of a face with roll `roll_rad`: the
    /// prior's box around the points turned upright.
    pub fn face_box_for_points(&self, points: &[Point], roll_rad: f32) -> FaceBox {
        let upright: Vec<Point> = points.iter().map(|p| p.turned(-roll_rad)).collect();
        FaceBox { upright: self.detection_for_points(&upright), roll_rad }
    }

    /// The network's crop for a face box: [`Self::crop_for_detection`] in the
    /// face's upright frame, turned back into the frame, so that the face is level
    /// in the crop. Roll 0 gives the plain crop.
    pub fn crop_for_face(&self, face: &FaceBox) -> CropSquare {
        let upright = self.crop_for_detection(&face.upright);
        CropSquare {
            center: upright.center.turned(face.roll_rad),
            side: upright.side,
            angle_rad: face.roll_rad,
            mirror: false,
        }
    }
}

/// Maps network outputs (unit space) of one crop to frame pixels.
pub fn frame_points_from_unit(unit: &[Point], crop: &CropSquare, input_size: u32) -> Vec<Point> {
    let m = crop.frame_from_crop(input_size);
    let size = input_size as f32;
    unit.iter().map(|p| m.apply(Point::new(p.x * size, p.y * size))).collect()
}

/// Maps frame points into unit space of one crop (training targets).
pub fn unit_points_from_frame(frame: &[Point], crop: &CropSquare, input_size: u32) -> Vec<Point> {
    let m = crop.crop_from_frame(input_size);
    let size = input_size as f32;
    frame
        .iter()
        .map(|p| {
            let q = m.apply(*p);
            Point::new(q.x / size, q.y / size)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Point, b: Point, tol: f32) -> bool {
        a.distance(b) <= tol
    }

    fn prior() -> CropPrior {
        CropPrior {
            dx_mean: 0.01,
            dx_std: 0.03,
            dy_mean: -0.1,
            dy_std: 0.04,
            scale_mean: 1.05,
            log_scale_std: 0.06,
            crop_padding: 1.4,
        }
    }

    /// A box converted from one prior to another is the other prior's box for the
    /// same points, and a mirrored prior boxes mirrored points as the mirror of the
    /// box.
    #[test]
    fn priors_convert_boxes_and_mirror() {
        let frontal = prior();
        let profile = CropPrior { dx_mean: 0.13, dy_mean: -0.22, scale_mean: 1.29, ..prior() };
        let face = [Point::new(10.0, 20.0), Point::new(50.0, 20.0), Point::new(30.0, 45.0), Point::new(36.0, 60.0)];
        let found = profile.detection_for_points(&face);
        let converted = profile.converted(&found, &frontal);
        let expected = frontal.detection_for_points(&face);
        assert!(close(converted.center(), expected.center(), 1e-3) && (converted.w - expected.w).abs() < 1e-3);
        let mirrored: Vec<Point> = face.iter().map(|p| Point::new(-p.x, p.y)).collect();
        let in_mirror = profile.mirrored().detection_for_points(&mirrored);
        let mirror_of_found = Rect::new(-(found.x + found.w), found.y, found.w, found.h);
        assert!(close(in_mirror.center(), mirror_of_found.center(), 1e-3), "{in_mirror:?} {mirror_of_found:?}");
    }

    /// A face turned by any roll, borders included: its rolled box and crop put the
    /// face level in the crop, in the same place as the upright face's crop puts
    /// the upright face, and crop <-> frame maps are inverse to each other.
    #[test]
    fn a_rolled_face_is_cropped_level_and_maps_back() {
        let prior = prior();
        // An upright "face": eyes level, mouth below; near the frame's corner so the
        // crop runs past the border.
        let face = [Point::new(10.0, 20.0), Point::new(50.0, 20.0), Point::new(30.0, 45.0), Point::new(30.0, 60.0)];
        let pivot = Point::new(30.0, 40.0);
        let upright_crop = prior.crop_for_detection(&prior.detection_for_points(&face));
        let upright_unit = unit_points_from_frame(&face, &upright_crop, 96);
        for deg in [-179.0f32, -120.0, -90.0, -45.0, -10.0, 0.0, 30.0, 60.0, 90.0, 135.0, 180.0] {
            let roll = deg.to_radians();
            let turned: Vec<Point> =
                face.iter().map(|p| Point::new(p.x - pivot.x, p.y - pivot.y).turned(roll) + pivot).collect();
            assert!((line_angle(turned[0], turned[1]) - roll).sin().abs() < 1e-5, "{deg}: eye line");
            let b = prior.face_box_for_points(&turned, roll);
            let crop = prior.crop_for_face(&b);
            let unit = unit_points_from_frame(&turned, &crop, 96);
            for (u, w) in unit.iter().zip(&upright_unit) {
                assert!(close(*u, *w, 1e-3), "{deg}: {u:?} vs {w:?}");
            }
            let back = frame_points_from_unit(&unit, &crop, 96);
            for (p, q) in back.iter().zip(&turned) {
                assert!(close(*p, *q, 1e-3), "{deg}: {p:?} vs {q:?}");
            }
            // The box moved in the frame moves its centre by as much.
            let moved = b.moved(Point::new(7.0, -3.0));
            assert!(close(moved.center_in_frame(), b.center_in_frame() + Point::new(7.0, -3.0), 1e-3));
            assert!((b.iou(&moved) - b.upright.iou(&moved.upright)).abs() < 1e-4);
        }
    }

    #[test]
    fn bounds_of_a_rolled_box_hold_its_corners() {
        let b = FaceBox::around(Point::new(100.0, 80.0), 40.0, 40.0, 30f32.to_radians());
        let r = b.bounds_in_frame();
        for (dx, dy) in [(-20.0, -20.0), (20.0, -20.0), (-20.0, 20.0), (20.0, 20.0)] {
            let corner = (b.upright.center() + Point::new(dx, dy)).turned(b.roll_rad);
            let inside = Rect::new(r.x - 1e-3, r.y - 1e-3, r.w + 2e-3, r.h + 2e-3);
            assert!(inside.contains(corner), "{corner:?} outside {r:?}");
        }
        assert!((r.w - 40.0 * (30f32.to_radians().cos() + 30f32.to_radians().sin())).abs() < 1e-3);
    }

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = Rect::new(0.0, 0.0, 10.0, 10.0);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&Rect::new(20.0, 0.0, 10.0, 10.0)), 0.0);
        let half = a.iou(&Rect::new(5.0, 0.0, 10.0, 10.0));
        assert!((half - 50.0 / 150.0).abs() < 1e-6);
        let inner = Rect::new(2.0, 2.0, 4.0, 4.0);
        assert_eq!(a.overlap_of_smaller(&inner), 1.0);
        assert_eq!(inner.overlap_of_smaller(&a), 1.0);
        assert!((a.overlap_of_smaller(&Rect::new(5.0, 0.0, 20.0, 20.0)) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn crop_transform_round_trips_and_maps_corners() {
        for &(angle, mirror) in &[(0.0, false), (0.4, false), (-0.3, true)] {
            let crop = CropSquare { center: Point::new(100.0, 80.0), side: 50.0, angle_rad: angle, mirror };
            let m = crop.crop_from_frame(224);
            let inv = crop.frame_from_crop(224);
            for p in [Point::new(0.0, 0.0), Point::new(100.0, 80.0), Point::new(123.0, 57.5)] {
                assert!(close(inv.apply(m.apply(p)), p, 1e-3));
            }
            assert!(close(m.apply(crop.center), Point::new(112.0, 112.0), 1e-3));
        }
        let upright = CropSquare::upright(Point::new(100.0, 80.0), 50.0);
        let m = upright.crop_from_frame(100);
        assert!(close(m.apply(Point::new(75.0, 55.0)), Point::new(0.0, 0.0), 1e-4));
        assert!(close(m.apply(Point::new(125.0, 105.0)), Point::new(100.0, 100.0), 1e-4));
    }

    #[test]
    fn mirror_swaps_left_and_right() {
        let crop = CropSquare { center: Point::new(50.0, 50.0), side: 100.0, angle_rad: 0.0, mirror: true };
        let m = crop.crop_from_frame(100);
        assert!(close(m.apply(Point::new(10.0, 30.0)), Point::new(90.0, 30.0), 1e-4));
    }

    #[test]
    fn crops_at_image_borders_extend_outside_the_frame_and_still_invert() {
        // A face in the top-left corner: the crop starts at negative frame coordinates,
        // and the maths must not clamp (the pixels there are padded by the warp).
        let p = prior();
        let det = Rect::new(-20.0, -30.0, 60.0, 60.0);
        let crop = p.crop_for_detection(&det);
        let m = crop.crop_from_frame(96);
        let origin_in_frame = crop.frame_from_crop(96).apply(Point::new(0.0, 0.0));
        assert!(origin_in_frame.x < 0.0 && origin_in_frame.y < 0.0);
        let unit = unit_points_from_frame(&[Point::new(0.0, 0.0)], &crop, 96);
        let back = frame_points_from_unit(&unit, &crop, 96);
        assert!(close(back[0], Point::new(0.0, 0.0), 1e-3));
        assert!(m.apply(Point::new(0.0, 0.0)).x > 0.0);
    }

    #[test]
    fn prior_detection_and_crop_are_consistent() {
        let p = prior();
        let pts = [Point::new(10.0, 20.0), Point::new(110.0, 20.0), Point::new(60.0, 140.0)];
        let det = p.detection_for_points(&pts);
        let crop = p.crop_for_detection(&det);
        // The crop is centred on the points' box and `crop_padding` times their size.
        let b = Rect::bounding(&pts);
        assert!(close(crop.center, b.center(), 1e-3));
        assert!((crop.side - 1.4 * points_size(&pts)).abs() < 1e-3);
        // Every point lies inside the crop.
        for u in unit_points_from_frame(&pts, &crop, 224) {
            assert!((0.0..=1.0).contains(&u.x) && (0.0..=1.0).contains(&u.y));
        }
    }

    #[test]
    fn bounding_box_of_a_rotated_crop_contains_its_corners() {
        let crop = CropSquare { center: Point::new(0.0, 0.0), side: 10.0, angle_rad: 0.5, mirror: false };
        let bb = crop.bounding_box();
        let inv = crop.frame_from_crop(10);
        for c in [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0), (10.0, 10.0)] {
            let p = inv.apply(Point::new(c.0, c.1));
            assert!(p.x >= bb.x - 1e-3 && p.x <= bb.x + bb.w + 1e-3);
            assert!(p.y >= bb.y - 1e-3 && p.y <= bb.y + bb.h + 1e-3);
        }
    }
}
