//! Measures where the Haar detector puts its box relative to the true points on
//! training images, as the distribution training samples crops from
//! ([`crate::geometry::CropPrior`]).

use crate::detect::{DetectError, Detection, HaarDetector, ProfileCascade, Side};
use crate::eval::match_detection;
use crate::geometry::{points_size, CropPrior, FaceBox, Point, Rect};
use opencv::core::Mat;

/// One matched detection, in units of the points' size.
#[derive(Debug, Clone, Copy)]
pub struct Offset {
    pub dx: f32,
    pub dy: f32,
    pub log_scale: f32,
}

pub fn offset_of(detection: &Rect, points: &[Point]) -> Offset {
    let b = Rect::bounding(points);
    let s = points_size(points);
    let (c, d) = (b.center(), detection.center());
    Offset { dx: (d.x - c.x) / s, dy: (d.y - c.y) / s, log_scale: (detection.w / s).ln() }
}

/// Mean and standard deviation after discarding values beyond 3 robust sigmas
/// (a wrong match should not widen the distribution).
pub fn robust_mean_std(values: &[f32]) -> (f32, f32) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    let mut dev: Vec<f32> = sorted.iter().map(|v| (v - median).abs()).collect();
    dev.sort_by(f32::total_cmp);
    let sigma = 1.4826 * dev[dev.len() / 2];
    let kept: Vec<f32> = sorted.into_iter().filter(|v| (v - median).abs() <= 3.0 * sigma.max(1e-6)).collect();
    let n = kept.len() as f32;
    let mean = kept.iter().sum::<f32>() / n;
    let var = kept.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
    (mean, var.sqrt())
}

pub struct PriorMeasurement {
    pub prior: CropPrior,
    pub faces: usize,
    pub matched: usize,
}

/// Runs the detector on every image and fits the prior to the matched firm boxes
/// (the cascade's usual output, which the shipped priors were measured on).
/// `points` are the model's points (68 or 15) of each face, `points68` all 68
/// (for matching).
pub fn measure(
    detector: &mut HaarDetector,
    images: &[&Mat],
    points68: &[&[Point]],
    points: &[Vec<Point>],
    crop_padding: f32,
    mut progress: impl FnMut(),
) -> Result<PriorMeasurement, DetectError> {
    let mut offsets = Vec::new();
    for ((img, p68), p) in images.iter().zip(points68).zip(points) {
        let firm: Vec<Detection> = detector.detect(img)?.into_iter().filter(|d| d.confirms()).collect();
        if let Some(d) = match_detection(&firm, p68) {
            offsets.push(offset_of(&d.face_box.upright, p));
        }
        progress();
    }
    fit(&offsets, images.len(), crop_padding)
}

/// As [`measure`], for the profile cascade's boxes (at `max_width`, as `run`
/// searches photos) on each image as it is and on its mirror: the prior of a face
/// found as it is, to which the mirror's finds add their offsets mirrored.
pub fn measure_profile(
    profile: &mut ProfileCascade,
    max_width: u32,
    images: &[&Mat],
    points68: &[&[Point]],
    points: &[Vec<Point>],
    crop_padding: f32,
    mut progress: impl FnMut(),
) -> Result<PriorMeasurement, DetectError> {
    let mut offsets = Vec::new();
    for ((img, p68), p) in images.iter().zip(points68).zip(points) {
        for side in [Side::AsIs, Side::Mirrored] {
            let boxes: Vec<Detection> =
                profile.boxes(img, max_width, side)?.into_iter().map(|r| Detection::firm(FaceBox::level(r))).collect();
            if let Some(d) = match_detection(&boxes, p68) {
                let o = offset_of(&d.face_box.upright, p);
                offsets.push(if side == Side::Mirrored { Offset { dx: -o.dx, ..o } } else { o });
            }
        }
        progress();
    }
    fit(&offsets, images.len(), crop_padding)
}

/// The prior of the boxes matched on `faces` faces, at their `offsets`.
fn fit(offsets: &[Offset], faces: usize, crop_padding: f32) -> Result<PriorMeasurement, DetectError> {
    if offsets.len() < 10 {
        return Err(DetectError::OpenCv(opencv::Error::new(
            opencv::core::StsError,
            format!("the detector matched only {} of {} training faces", offsets.len(), faces),
        )));
    }
    let (dx_mean, dx_std) = robust_mean_std(&offsets.iter().map(|o| o.dx).collect::<Vec<_>>());
    let (dy_mean, dy_std) = robust_mean_std(&offsets.iter().map(|o| o.dy).collect::<Vec<_>>());
    let (ls_mean, ls_std) = robust_mean_std(&offsets.iter().map(|o| o.log_scale).collect::<Vec<_>>());
    Ok(PriorMeasurement {
        prior: CropPrior {
            dx_mean,
            dx_std,
            dy_mean,
            dy_std,
            scale_mean: ls_mean.exp(),
            log_scale_std: ls_std,
            crop_padding,
        },
        faces,
        matched: offsets.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_stats_ignore_outliers() {
        let mut v: Vec<f32> = (0..100).map(|i| (i % 10) as f32 * 0.1).collect();
        v.push(1000.0);
        let (m, s) = robust_mean_std(&v);
        assert!((m - 0.45).abs() < 1e-4, "{m}");
        assert!(s < 0.3, "{s}");
    }
}
