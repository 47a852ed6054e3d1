//! Face detection with OpenCV's Haar cascade (frontal face, default).
//!
//! Boxes are in frame pixels. The detector runs on a histogram-equalised gray copy
//! downscaled to at most `max_width` pixels wide, and maps its boxes back.

use crate::geometry::Rect;
use opencv::core::{Mat, Size, Vector};
use opencv::imgproc;
use opencv::objdetect::CascadeClassifier;
use opencv::prelude::*;
use std::path::{Path, PathBuf};

/// The cascade shipped in the repo (OpenCV's file, from Debian's opencv-data).
pub const DEFAULT_CASCADE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/haarcascades/haarcascade_frontalface_default.xml");
/// Image pyramid step of `detectMultiScale`.
pub const HAAR_SCALE_FACTOR: f64 = 1.1;
/// Neighbouring detections needed to keep a box.
pub const HAAR_MIN_NEIGHBORS: i32 = 5;
/// Smallest face searched, in pixels of the downscaled detection image.
pub const HAAR_MIN_FACE_PX: i32 = 24;
/// Width a tracked face is scaled to when [`HaarDetector::detect_near`] looks for it
/// (about three times the cascade's 24 px window).
pub const LOCAL_FACE_PX: f32 = 72.0;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("cascade {path}: file not found")]
    CascadeMissing { path: PathBuf },
    #[error("cascade {path}: not a valid OpenCV cascade XML")]
    CascadeInvalid { path: PathBuf },
    #[error("face detection failed")]
    OpenCv(#[from] opencv::Error),
}

/// Default for [`DetectorConfig::max_width`].
pub const DEFAULT_DETECT_WIDTH: u32 = 640;

#[derive(Debug, Clone, Copy)]
pub struct DetectorConfig {
    /// Frames wider than this are downscaled before detection.
    pub max_width: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self { max_width: DEFAULT_DETECT_WIDTH }
    }
}

pub struct HaarDetector {
    cascade: CascadeClassifier,
    config: DetectorConfig,
}

impl HaarDetector {
    pub fn new(path: &Path, config: DetectorConfig) -> Result<Self, DetectError> {
        if !path.is_file() {
            return Err(DetectError::CascadeMissing { path: path.to_owned() });
        }
        // OpenCV logs its own parse errors to stderr; an empty classifier means failure.
        let cascade =
            CascadeClassifier::new(path).map_err(|_| DetectError::CascadeInvalid { path: path.to_owned() })?;
        if cascade.empty()? {
            return Err(DetectError::CascadeInvalid { path: path.to_owned() });
        }
        Ok(Self { cascade, config })
    }

    /// Faces about the size of `around` near it (within a region twice its size),
    /// searched at a resolution where that face is [`LOCAL_FACE_PX`] wide rather than
    /// at the downscaled whole-frame resolution: the check that a tracked face the
    /// whole-frame search missed is still there. Frame pixels, largest first.
    pub fn detect_near(&mut self, gray: &Mat, around: &Rect) -> Result<Vec<Rect>, DetectError> {
        let frame = Rect::new(0.0, 0.0, gray.cols() as f32, gray.rows() as f32);
        let region = Rect::from_center(around.center(), 2.0 * around.w, 2.0 * around.h);
        let x0 = region.x.max(0.0).floor() as i32;
        let y0 = region.y.max(0.0).floor() as i32;
        let x1 = (region.x + region.w).min(frame.w).ceil() as i32;
        let y1 = (region.y + region.h).min(frame.h).ceil() as i32;
        if x1 - x0 < HAAR_MIN_FACE_PX || y1 - y0 < HAAR_MIN_FACE_PX || !around.w.is_finite() || around.w < 1.0 {
            return Ok(Vec::new());
        }
        let roi = Mat::roi(gray, opencv::core::Rect::new(x0, y0, x1 - x0, y1 - y0))?;
        let scale = (LOCAL_FACE_PX / around.w).min(1.0);
        let mut small = Mat::default();
        let size = Size::new(((x1 - x0) as f32 * scale).round() as i32, ((y1 - y0) as f32 * scale).round() as i32);
        imgproc::resize(&roi, &mut small, size, 0.0, 0.0, imgproc::INTER_AREA)?;
        let expected = around.w * scale;
        let min = ((expected * 0.6) as i32).max(HAAR_MIN_FACE_PX);
        let max = ((expected * 1.6) as i32).max(min + 1);
        let boxes = self.cascade_boxes(&small, Size::new(min, min), Size::new(max, max))?;
        Ok(boxes
            .into_iter()
            .map(|b| {
                let b = b.scale(1.0 / scale);
                Rect::new(b.x + x0 as f32, b.y + y0 as f32, b.w, b.h)
            })
            .collect())
    }

    /// Faces in an 8-bit gray frame, largest first, in frame pixels.
    pub fn detect(&mut self, gray: &Mat) -> Result<Vec<Rect>, DetectError> {
        let width = gray.cols().max(1) as f32;
        let scale = (self.config.max_width as f32 / width).min(1.0);
        let small = if scale < 1.0 {
            let mut small = Mat::default();
            let size =
                Size::new((gray.cols() as f32 * scale).round() as i32, (gray.rows() as f32 * scale).round() as i32);
            imgproc::resize(gray, &mut small, size, 0.0, 0.0, imgproc::INTER_AREA)?;
            small
        } else {
            gray.clone()
        };
        let boxes = self.cascade_boxes(&small, Size::new(HAAR_MIN_FACE_PX, HAAR_MIN_FACE_PX), Size::default())?;
        Ok(boxes.into_iter().map(|b| b.scale(1.0 / scale)).collect())
    }

    /// The cascade on a histogram-equalised copy of `gray`: boxes between `min` and
    /// `max` in size (`max` 0: no limit), largest first, in `gray`'s pixels.
    fn cascade_boxes(&mut self, gray: &Mat, min: Size, max: Size) -> Result<Vec<Rect>, DetectError> {
        let mut equalized = Mat::default();
        imgproc::equalize_hist(gray, &mut equalized)?;
        let mut found = Vector::<opencv::core::Rect>::new();
        self.cascade.detect_multi_scale(&equalized, &mut found, HAAR_SCALE_FACTOR, HAAR_MIN_NEIGHBORS, 0, min, max)?;
        let mut boxes: Vec<Rect> =
            found.iter().map(|r| Rect::new(r.x as f32, r.y as f32, r.width as f32, r.height as f32)).collect();
        boxes.sort_by(|a, b| b.area().total_cmp(&a.area()));
        Ok(boxes)
    }
}
