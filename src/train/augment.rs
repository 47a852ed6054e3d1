//! Training crops: a detector box sampled from the measured prior around the true
//! points, then the run-time crop of that box (`CropPrior::crop_for_detection`),
//! rotated, mirrored, blurred; photometric changes happen on the batch tensor.

use crate::geometry::{unit_points_from_frame, CropPrior, CropSquare, Point};
use crate::imageops;
use crate::landmarks::Scheme;
use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;
use rand::Rng;
use rand_distr::{Distribution, Normal, StandardNormal};

/// Detector-box jitter, as a multiple of the measured standard deviations.
pub const BOX_JITTER: f32 = 1.25;
/// Rotation: normal with this standard deviation, clipped to ±MAX_ROTATION_DEG.
pub const ROTATION_STD_DEG: f32 = 10.0;
pub const MAX_ROTATION_DEG: f32 = 25.0;
pub const MIRROR_PROB: f64 = 0.5;
pub const BLUR_PROB: f64 = 0.25;

/// One training (or validation) crop: pixels and unit-space targets.
pub struct CropSample {
    pub pixels: Vec<u8>,
    pub targets: Vec<Point>,
}

/// The crop `run` would take for these points on a typical detection (validation).
pub fn mean_crop(prior: &CropPrior, points: &[Point]) -> CropSquare {
    prior.crop_for_detection(&prior.detection_for_points(points))
}

pub fn make_crop(gray: &Mat, crop: &CropSquare, points: &[Point], scheme: Scheme) -> opencv::Result<CropSample> {
    let size = scheme.input_size();
    let pixels = imageops::extract_crop(gray, crop, size)?;
    let mut targets = unit_points_from_frame(points, crop, size);
    if crop.mirror {
        targets = scheme.mirror_labels(&targets);
    }
    Ok(CropSample { pixels, targets })
}

/// A randomly augmented crop of one face.
pub fn random_crop<R: Rng>(
    rng: &mut R,
    gray: &Mat,
    points: &[Point],
    prior: &CropPrior,
    scheme: Scheme,
) -> opencv::Result<CropSample> {
    let mut z = || -> f32 { StandardNormal.sample(rng) };
    let (zx, zy, zs) = (z() * BOX_JITTER, z() * BOX_JITTER, z() * BOX_JITTER);
    let detection = prior.detection_for_points_jittered(points, zx, zy, zs);
    let mut crop = prior.crop_for_detection(&detection);
    let angle: f32 = Normal::new(0.0, ROTATION_STD_DEG).unwrap().sample(rng);
    crop.angle_rad = angle.clamp(-MAX_ROTATION_DEG, MAX_ROTATION_DEG).to_radians();
    crop.mirror = rng.gen_bool(MIRROR_PROB);
    let mut sample = make_crop(gray, &crop, points, scheme)?;
    if rng.gen_bool(BLUR_PROB) {
        let size = scheme.input_size() as i32;
        let sigma = rng.gen_range(0.5..1.8) * size as f64 / 96.0;
        let src = Mat::new_rows_cols_with_data(size, size, &sample.pixels)?;
        let mut dst = Mat::default();
        imgproc::gaussian_blur(&src, &mut dst, Size::new(0, 0), sigma, 0.0, opencv::core::BORDER_REFLECT)?;
        sample.pixels = dst.data_bytes()?.to_vec();
    }
    Ok(sample)
}
