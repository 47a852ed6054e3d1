//! Training crops: a detector box sampled from the measured prior around the true
//! points, then the run-time crop of that box (`CropPrior::crop_for_detection`),
//! rotated, mirrored, blurred; photometric changes happen on the batch tensor.

use crate::geometry::{unit_points_from_frame, CropPrior, CropSquare, Point, Rect};
use crate::imageops;
use crate::landmarks::Scheme;
use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Kind, Tensor};

/// Detector-box jitter, as a multiple of the measured standard deviations.
pub const BOX_JITTER: f32 = 1.25;
/// Rotation: normal with this standard deviation, clipped to ±MAX_ROTATION_DEG.
/// Run-time crops are levelled by the eye line when tracked, but a new face is
/// cropped at its detector's angle: upright, or one of the turned searches 30°
/// apart, plus the cascade's own tolerance of about ±20°.
pub const ROTATION_STD_DEG: f32 = 13.0;
pub const MAX_ROTATION_DEG: f32 = 40.0;
pub const MIRROR_PROB: f64 = 0.5;
pub const BLUR_PROB: f64 = 0.25;

/// Where a face's crop comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Placement {
    /// A detector box the prior places around the face's points (photos of a data
    /// set folder: training samples it, validation takes its mean).
    AroundPoints,
    /// A fixed detector box, jittered by the prior's spread in training: the
    /// framing box of a Kaggle file, whose faces are framed by the data set.
    Detection(Rect),
}

/// One labelled face: its gray image, its points in the model's scheme (where
/// `present` is false the point is unlabelled and its value a placeholder), and
/// where its crop comes from.
pub struct LabelledFace {
    pub gray: Mat,
    pub points: Vec<Point>,
    pub present: Vec<bool>,
    pub placement: Placement,
}

impl LabelledFace {
    /// A face of a data set folder: every point labelled.
    pub fn complete(gray: Mat, points: Vec<Point>) -> LabelledFace {
        let present = vec![true; points.len()];
        LabelledFace { gray, points, present, placement: Placement::AroundPoints }
    }

    /// The crop `run` would take on a typical detection (validation).
    pub fn mean_crop(&self, prior: &CropPrior) -> CropSquare {
        match self.placement {
            Placement::AroundPoints => prior.crop_for_detection(&prior.detection_for_points(&self.points)),
            Placement::Detection(box_in_frame) => prior.crop_for_detection(&box_in_frame),
        }
    }
}

/// One training (or validation) crop: pixels and unit-space targets.
pub struct CropSample {
    pub pixels: Vec<u8>,
    pub targets: Vec<Point>,
    /// Which targets are labelled (mirrored with them).
    pub present: Vec<bool>,
    /// The linear part of the frame-to-unit map, row-major `[a, b, c, d]`: how a
    /// displacement in frame pixels (a label origin) moves in this crop's unit space.
    pub frame_to_unit: [f32; 4],
}

/// The crop of `face` with its targets in the crop's unit space.
pub fn make_crop(face: &LabelledFace, crop: &CropSquare, scheme: Scheme) -> opencv::Result<CropSample> {
    let size = scheme.input_size();
    let pixels = imageops::extract_crop(&face.gray, crop, size)?;
    let mut targets = unit_points_from_frame(&face.points, crop, size);
    let mut present = face.present.clone();
    if crop.mirror {
        targets = scheme.mirror_labels(&targets);
        present = scheme.flip_permutation().iter().map(|&j| face.present[j]).collect();
    }
    let m = crop.crop_from_frame(size);
    let unit = size as f32;
    Ok(CropSample { pixels, targets, present, frame_to_unit: [m.a / unit, m.b / unit, m.c / unit, m.d / unit] })
}

/// A randomly augmented crop of one face.
pub fn random_crop<R: Rng>(
    rng: &mut R,
    face: &LabelledFace,
    prior: &CropPrior,
    scheme: Scheme,
) -> opencv::Result<CropSample> {
    let mut z = || -> f32 { StandardNormal.sample(rng) };
    let (zx, zy, zs) = (z() * BOX_JITTER, z() * BOX_JITTER, z() * BOX_JITTER);
    let detection = match face.placement {
        Placement::AroundPoints => prior.detection_for_points_jittered(&face.points, zx, zy, zs),
        Placement::Detection(box_in_frame) => prior.jitter_detection(&box_in_frame, zx, zy, zs),
    };
    let mut crop = prior.crop_for_detection(&detection);
    let angle = z() * ROTATION_STD_DEG;
    crop.angle_rad = angle.clamp(-MAX_ROTATION_DEG, MAX_ROTATION_DEG).to_radians();
    crop.mirror = rng.gen_bool(MIRROR_PROB);
    let mut sample = make_crop(face, &crop, scheme)?;
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

/// Brightness, contrast, gamma and noise, per sample, on `[B, 1, S, S]` in `[0, 1]`.
pub fn photometric(x: &Tensor) -> Tensor {
    let b = x.size()[0];
    let opts = (Kind::Float, x.device());
    let gamma = (Tensor::rand([b, 1, 1, 1], opts) * 0.8 - 0.4).exp();
    let contrast = Tensor::rand([b, 1, 1, 1], opts) * 0.8 + 0.6;
    let brightness = Tensor::rand([b, 1, 1, 1], opts) * 0.3 - 0.15;
    let noise_sigma = Tensor::rand([b, 1, 1, 1], opts) * 0.04;
    let x = x.clamp(1e-4, 1.0).pow(&gamma);
    let x = (x - 0.5) * contrast + 0.5 + brightness;
    (&x + x.randn_like() * noise_sigma).clamp(0.0, 1.0)
}

/// A batch `[B, 1, S, S]` of `size`² gray crops, as floats in `[0, 1]`.
pub fn batch_tensor(pixels: &[&[u8]], size: u32, device: Device) -> Tensor {
    let s = size as i64;
    let flat: Vec<u8> = pixels.iter().flat_map(|p| p.iter().copied()).collect();
    Tensor::from_slice(&flat).view([pixels.len() as i64, 1, s, s]).to_device(device).to_kind(Kind::Float) / 255.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use opencv::core::{Scalar, CV_8UC1};

    /// A crop of a frame with one bright pixel, for `points` labelled `origin` px away
    /// from that pixel: the target minus the origin carried into the crop
    /// (`frame_to_unit`) is where the bright pixel is in the crop, mirrored,
    /// rotated or not. This is what lets training learn a data set's label origin
    /// instead of averaging it away over mirrored crops.
    #[test]
    fn targets_minus_the_carried_origin_land_on_the_image_content() {
        let mut frame = Mat::new_rows_cols_with_default(120, 160, CV_8UC1, Scalar::all(0.0)).unwrap();
        let dot = Point::new(70.0, 52.0);
        *frame.at_2d_mut::<u8>(dot.y as i32, dot.x as i32).unwrap() = 255;
        let origin = Point::new(1.0, 1.0);
        // 15 points (one scheme), all on the dot's label.
        let labels = vec![Point::new(dot.x + origin.x, dot.y + origin.y); 15];
        let size = Scheme::P15.input_size();
        for (angle, mirror) in [(0.0f32, false), (0.0, true), (0.3, false), (-0.2, true)] {
            // One crop pixel per frame pixel, so the dot stays one bright pixel.
            let crop = CropSquare { center: Point::new(66.0, 50.0), side: size as f32, angle_rad: angle, mirror };
            let face = LabelledFace::complete(frame.clone(), labels.clone());
            let sample = make_crop(&face, &crop, Scheme::P15).unwrap();
            let brightest = (0..sample.pixels.len()).max_by_key(|&i| sample.pixels[i]).unwrap();
            let seen = Point::new(
                (brightest % size as usize) as f32 / size as f32,
                (brightest / size as usize) as f32 / size as f32,
            );
            let [a, b, c, d] = sample.frame_to_unit;
            let carried = Point::new(a * origin.x + b * origin.y, c * origin.x + d * origin.y);
            let t = sample.targets[0];
            let content = Point::new(t.x - carried.x, t.y - carried.y);
            // Within one crop pixel (the rotated dot lands between pixels).
            assert!(
                content.distance(seen) * size as f32 <= 1.0,
                "angle {angle} mirror {mirror}: {content:?} vs {seen:?}"
            );
            // The raw target sits 1 px right of the content in a plain crop and 1 px
            // left of it in a mirrored one: a head trained without the origin learns
            // the mean of the two, 0, and misses the labels by 1 px.
            if angle == 0.0 {
                let expected = if mirror { -1.0 } else { 1.0 };
                assert!(((t.x - seen.x) * size as f32 - expected).abs() < 0.5, "mirror {mirror}: {t:?} vs {seen:?}");
            }
        }
    }
}
