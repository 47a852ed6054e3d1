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

/// The training faces a prior is measured on: each image, its 68 points (for
/// matching) and the model's points (68 or 15).
pub struct PriorFaces<'a> {
    pub images: &'a [&'a Mat],
    pub points68: &'a [&'a [Point]],
    pub points: &'a [Vec<Point>],
}

/// Runs the detector on every image and fits the prior to the matched firm boxes
/// (the cascade's usual output, which the shipped priors were measured on).
pub fn measure(
    detector: &mut HaarDetector,
    faces: &PriorFaces,
    crop_padding: f32,
    progress: impl FnMut(),
) -> Result<PriorMeasurement, DetectError> {
    let offsets = offsets_of(faces, progress, |img, p68, p| {
        let firm: Vec<Detection> = detector.detect(img)?.into_iter().filter(|d| d.confirms()).collect();
        Ok(match_detection(&firm, p68).map(|d| offset_of(&d.face_box.upright, p)).into_iter().collect())
    })?;
    fit(&offsets, faces.images.len(), crop_padding)
}

/// As [`measure`], for the profile cascade's boxes (at `max_width`, as `run`
/// searches photos) on each image as it is and on its mirror: the prior of a face
/// found as it is, to which the mirror's finds add their offsets mirrored.
pub fn measure_profile(
    profile: &mut ProfileCascade,
    max_width: u32,
    faces: &PriorFaces,
    crop_padding: f32,
    progress: impl FnMut(),
) -> Result<PriorMeasurement, DetectError> {
    let offsets = offsets_of(faces, progress, |img, p68, p| {
        let mut found = Vec::new();
        for side in [Side::AsIs, Side::Mirrored] {
            let boxes: Vec<Detection> =
                profile.boxes(img, max_width, side)?.into_iter().map(|r| Detection::firm(FaceBox::level(r))).collect();
            if let Some(d) = match_detection(&boxes, p68) {
                let o = offset_of(&d.face_box.upright, p);
                found.push(if side == Side::Mirrored { Offset { dx: -o.dx, ..o } } else { o });
            }
        }
        Ok(found)
    })?;
    fit(&offsets, faces.images.len(), crop_padding)
}

/// The offsets `matched` finds for each face (its image, 68 points and the
/// model's points), calling `progress` after each.
fn offsets_of(
    faces: &PriorFaces,
    mut progress: impl FnMut(),
    mut matched: impl FnMut(&Mat, &[Point], &[Point]) -> Result<Vec<Offset>, DetectError>,
) -> Result<Vec<Offset>, DetectError> {
    let mut offsets = Vec::new();
    for ((img, p68), p) in faces.images.iter().zip(faces.points68).zip(faces.points) {
        offsets.extend(matched(img, p68, p)?);
        progress();
    }
    Ok(offsets)
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
