//! `facekp bench --scale-sweep CSV`: how small a new face in an HD frame can be and
//! still be found.
//!
//! Each val face is pasted into a [`FRAME_W`] x [`FRAME_H`] frame, on a blurred
//! enlargement of its own photo, at each inter-ocular (outer eye corner) distance
//! of [`SCALE_IODS_PX`], and held for [`HOLD_FRAMES`] frames with fresh Gaussian
//! noise of sigma [`NOISE_SIGMA`] on each, through the detect stage (whole-frame
//! searches every `detect_every` frames, tiles in between) and the face stage, as
//! `run` processes a video. A size counts as found when the face is followed (see
//! [`super::sweep`]) on each of the last [`FOUND_FRAMES`] frames.

use super::sweep::{follows, Labels};
use crate::dataset::LoadedSet;
use crate::geometry::{Affine, Point, Rect};
use crate::imageops;
use crate::landmarks::Scheme;
use crate::pipeline::{DetectStage, FaceStage, Schedule};
use anyhow::Result;
use opencv::core::{Mat, Scalar, Size, CV_8UC1};
use opencv::prelude::*;
use serde::Serialize;
use std::time::Instant;

pub const FRAME_W: i32 = 1920;
pub const FRAME_H: i32 = 1080;
/// The face sizes, inter-ocular distance in pixels.
pub const SCALE_IODS_PX: [f32; 6] = [96.0, 64.0, 48.0, 32.0, 24.0, 16.0];
pub const HOLD_FRAMES: usize = 30;
pub const FOUND_FRAMES: usize = 10;
pub const NOISE_SIGMA: f64 = 2.0;
/// Blur of the enlarged background photo, pixels.
const BACKGROUND_BLUR_SIGMA: f64 = 12.0;
const FRAME_MS: f64 = 1000.0 / 30.0;

/// One face size: the part of the faces found at it.
#[derive(Debug, Clone, Serialize)]
pub struct SizeReport {
    pub iod_px: f32,
    pub found: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub faces: usize,
    pub sizes: Vec<SizeReport>,
    /// Frames per second of the detect and face stages run one after the other
    /// (the pipeline runs them side by side).
    pub fps: f64,
}

/// Runs the sweep on the first `max_faces` faces of `set` (all for `None`).
pub fn scale_sweep(
    set: &LoadedSet,
    max_faces: Option<usize>,
    stage: &mut FaceStage,
    detect: &mut DetectStage,
    schedule: Schedule,
) -> Result<ScaleReport> {
    let n = max_faces.unwrap_or(set.annotations.len()).min(set.annotations.len());
    let scheme = stage.model().config().scheme;
    let mut found = [0usize; SCALE_IODS_PX.len()];
    let (mut frames, mut busy_secs) = (0usize, 0.0f64);
    let bar = crate::progress::progress_bar((n * SCALE_IODS_PX.len()) as u64, "scale sweep");
    for k in 0..n {
        let background = background(&set.images[k])?;
        for (s, iod) in SCALE_IODS_PX.iter().enumerate() {
            let scene = Scene::new(&set.images[k], &set.annotations[k].points, scheme, *iod, k)?;
            let run = hold(&scene, &background, stage, detect, schedule)?;
            found[s] += usize::from(run.found);
            frames += HOLD_FRAMES;
            busy_secs += run.busy_secs;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let sizes = SCALE_IODS_PX
        .iter()
        .zip(found)
        .map(|(&iod_px, f)| SizeReport { iod_px, found: f as f64 / n.max(1) as f64 })
        .collect();
    Ok(ScaleReport { faces: n, sizes, fps: frames as f64 / busy_secs.max(1e-9) })
}

/// What holding one face at one size gave.
struct Held {
    found: bool,
    busy_secs: f64,
}

/// One face at one size for [`HOLD_FRAMES`] frames, a new video for the stages.
fn hold(
    scene: &Scene,
    background: &Mat,
    stage: &mut FaceStage,
    detect: &mut DetectStage,
    schedule: Schedule,
) -> Result<Held> {
    stage.restart(schedule.crops);
    detect.restart();
    let frame = scene.paste_on(background)?;
    let frame_tiles = detect.detector.tiles(FRAME_W, FRAME_H);
    let (mut followed_last, mut busy_secs) = (0usize, 0.0f64);
    for n in 0..HOLD_FRAMES {
        let noisy = with_noise(&frame, NOISE_SIGMA)?;
        let start = Instant::now();
        let searched = detect.search(&noisy, n as u64, &frame_tiles)?;
        let faces = stage.process(&noisy, searched.found(), n as f64 * FRAME_MS)?.faces;
        busy_secs += start.elapsed().as_secs_f64();
        let followed = follows(&faces, &scene.labels, stage, scene.scheme, scene.iod_px).is_some();
        followed_last += usize::from(followed && n >= HOLD_FRAMES - FOUND_FRAMES);
    }
    Ok(Held { found: followed_last == FOUND_FRAMES, busy_secs })
}

/// The photo enlarged to the frame and blurred: a background that looks like the
/// face's own scene without its details.
fn background(photo: &Mat) -> opencv::Result<Mat> {
    let mut big = Mat::default();
    opencv::imgproc::resize(photo, &mut big, Size::new(FRAME_W, FRAME_H), 0.0, 0.0, opencv::imgproc::INTER_LINEAR)?;
    let mut blurred = Mat::default();
    let border = opencv::core::BORDER_REFLECT;
    opencv::imgproc::gaussian_blur(&big, &mut blurred, Size::new(0, 0), BACKGROUND_BLUR_SIGMA, 0.0, border)?;
    let mut turned = Mat::default();
    opencv::core::rotate(&blurred, &mut turned, opencv::core::ROTATE_180)?;
    Ok(turned)
}

/// Starts the noise of [`with_noise`] on this thread from `seed`, so that a
/// sweep's figures can be had again, or measured over other noise.
pub fn seed_noise(seed: i32) -> opencv::Result<()> {
    opencv::core::set_rng_seed(seed)
}

/// `frame` with fresh Gaussian noise of `sigma` grey levels, from OpenCV's random
/// numbers on this thread ([`seed_noise`]).
pub(super) fn with_noise(frame: &Mat, sigma: f64) -> opencv::Result<Mat> {
    let mut noise =
        Mat::new_rows_cols_with_default(frame.rows(), frame.cols(), opencv::core::CV_16SC1, Scalar::all(0.0))?;
    opencv::core::randn(&mut noise, &Scalar::all(0.0), &Scalar::all(sigma))?;
    let mut wide = Mat::default();
    frame.convert_to(&mut wide, opencv::core::CV_16SC1, 1.0, 0.0)?;
    let mut sum = Mat::default();
    opencv::core::add(&wide, &noise, &mut sum, &opencv::core::no_array(), -1)?;
    let mut out = Mat::default();
    sum.convert_to(&mut out, CV_8UC1, 1.0, 0.0)?;
    Ok(out)
}

/// One face at one size: where it is pasted and its labels in the frame.
struct Scene<'a> {
    photo: &'a Mat,
    /// Photo pixels -> frame pixels.
    to_frame: Affine,
    /// The photo's part around the face (photo pixels), pasted whole.
    patch: Rect,
    labels: Labels,
    scheme: Scheme,
    iod_px: f32,
}

impl<'a> Scene<'a> {
    /// Face `k` of a set scaled to inter-ocular distance `iod_px`, its centre at a
    /// place of the frame that depends on `k` (so faces land in different tiles).
    fn new(photo: &'a Mat, points68: &[Point], scheme: Scheme, iod_px: f32, k: usize) -> opencv::Result<Scene<'a>> {
        let points = scheme.from_68(points68);
        let (a, b) = scheme.outer_eye_corners();
        let scale = iod_px / points[a].distance(points[b]).max(1.0);
        let face = Rect::bounding(&points);
        let side = 2.0 * face.w.max(face.h);
        let patch = Rect::from_center(face.center(), side, side);
        let place = Point::new(
            FRAME_W as f32 * (0.2 + 0.6 * ((k * 37) % 11) as f32 / 10.0),
            FRAME_H as f32 * (0.25 + 0.5 * ((k * 17) % 7) as f32 / 6.0),
        );
        let c = face.center();
        let to_frame =
            Affine { a: scale, b: 0.0, c: 0.0, d: scale, tx: place.x - scale * c.x, ty: place.y - scale * c.y };
        let labels = Labels { points: points.iter().map(|p| to_frame.apply(*p)).collect(), photo_to_frame: to_frame };
        Ok(Scene { photo, to_frame, patch, labels, scheme, iod_px })
    }

    /// The frame: `background` with the face's patch pasted on it at its place.
    fn paste_on(&self, background: &Mat) -> opencv::Result<Mat> {
        let warped = imageops::warp_gray(self.photo, &self.to_frame, FRAME_W, FRAME_H)?;
        let on_frame = Rect::from_center(
            self.to_frame.apply(self.patch.center()),
            self.patch.w * self.to_frame.a,
            self.patch.h * self.to_frame.a,
        );
        let (x0, y0) = (on_frame.x.max(0.0) as i32, on_frame.y.max(0.0) as i32);
        let x1 = ((on_frame.x + on_frame.w) as i32).min(FRAME_W);
        let y1 = ((on_frame.y + on_frame.h) as i32).min(FRAME_H);
        let mut frame = background.try_clone()?;
        if x1 > x0 && y1 > y0 {
            let r = opencv::core::Rect::new(x0, y0, x1 - x0, y1 - y0);
            let src = Mat::roi(&warped, r)?;
            let mut dst = Mat::roi_mut(&mut frame, r)?;
            src.copy_to(&mut dst)?;
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep seeded again gets the same noisy frames, and another seed other ones,
    /// on a real photo.
    #[test]
    fn a_noise_seed_repeats_the_noise_and_another_seed_changes_it() {
        let photo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/einstein.jpg");
        let frame = crate::imageops::read_gray(&photo).unwrap().unwrap();
        let noisy = |seed| {
            seed_noise(seed).unwrap();
            let (a, b) = (with_noise(&frame, NOISE_SIGMA).unwrap(), with_noise(&frame, NOISE_SIGMA).unwrap());
            (a.data_bytes().unwrap().to_vec(), b.data_bytes().unwrap().to_vec())
        };
        let (first, second) = noisy(7);
        assert_ne!(first, second, "each frame gets fresh noise");
        assert_eq!(noisy(7), (first.clone(), second), "the same seed, the same noise");
        assert_ne!(noisy(8).0, first, "another seed, other noise");
        let changed = first.iter().zip(frame.data_bytes().unwrap()).filter(|(a, b)| a != b).count();
        assert!(changed > first.len() / 2, "noise of sigma {NOISE_SIGMA} changes most pixels: {changed}");
    }
}
