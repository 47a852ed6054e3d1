//! `facekp eval`: NME of a trained model on an annotated CSV, with the real Haar
//! detector's boxes (`haar`) or crops placed from the true points (`truth`).
//! NME follows `../shared/datasets/README.md`: mean point error over the
//! inter-ocular (outer eye corner) distance of the truth. Head pose and openness
//! are checked in [`pose`].

pub mod pose;

use crate::dataset;
use crate::detect::{Detection, DetectorConfig, HaarDetector};
use crate::face;
use crate::geometry::{FaceBox, Point, Rect};
use crate::imageops;
use crate::kaggle;
use crate::landmarks::{Region, Scheme};
use crate::model::Keypointer;
use anyhow::{bail, Context, Result};
use opencv::core::Mat;
use opencv::prelude::*;
use pose::{PoseReport, PoseSample, PoseTally};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// A face whose NME exceeds this counts as a failure.
pub const FAILURE_NME: f64 = 0.10;
/// How many of the worst faces the report names.
pub const WORST_SHOWN: usize = 5;

/// A detection is matched to a face when its IoU with the box of the true points is
/// at least this (the same rule `eval --boxes haar` uses).
pub const MATCH_IOU: f32 = 0.3;

/// The detection that matches `points`, if any: the highest IoU with the true
/// points' box (turned as the detection is), at least [`MATCH_IOU`].
pub fn match_detection(detections: &[Detection], points68: &[Point]) -> Option<Detection> {
    detections
        .iter()
        .map(|d| {
            let upright: Vec<Point> = points68.iter().map(|p| p.turned(-d.face_box.roll_rad)).collect();
            (d.face_box.upright.iou(&Rect::bounding(&upright)), *d)
        })
        .filter(|(iou, _)| *iou >= MATCH_IOU)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, d)| d)
}

/// Normalised mean error of one face.
pub fn nme(pred: &[Point], truth: &[Point], scheme: Scheme) -> f64 {
    let (a, b) = scheme.outer_eye_corners();
    let iod = truth[a].distance(truth[b]) as f64;
    let mean = pred.iter().zip(truth).map(|(p, t)| p.distance(*t) as f64).sum::<f64>() / truth.len() as f64;
    mean / iod.max(1e-6)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Boxes {
    /// The Haar detector's box that matches the face (IoU >= 0.3)
    Haar,
    /// A crop placed from the true points, as training does
    Truth,
}

pub struct EvalOptions {
    pub scheme: Scheme,
    pub csv: PathBuf,
    pub images: PathBuf,
    pub boxes: Boxes,
    pub cascade: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub faces: usize,
    pub detected: usize,
    pub nme: f64,
    pub median_nme: f64,
    pub failure_rate: f64,
    pub nme_by_region: Vec<(String, f64)>,
    /// Mean signed error (x, y) over the inter-ocular distance: a systematic shift
    /// of every point, such as a label convention the model misses.
    pub bias: (f64, f64),
    pub ms_per_face: f64,
    /// The faces with the largest NME, worst first: image and NME.
    pub worst: Vec<(String, f64)>,
    /// CNN passes per face (two with Haar boxes, as `run` gives a new detection).
    pub passes: u32,
    pub convention: String,
    /// The CNN's number format (`f32` or `bf16`).
    pub precision: String,
    /// On a Kaggle keypoints CSV: the competition's score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kaggle: Option<KaggleScore>,
    /// Head pose and eye openness against the annotations and the mirror image.
    pub pose: PoseReport,
    #[serde(skip)]
    pub errors: Vec<f64>,
}

/// The Kaggle competition's score of a Kaggle keypoints CSV.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct KaggleScore {
    /// Root mean square error over every present coordinate, pixels of the 96x96
    /// image.
    pub rmse_px: f64,
    /// Present coordinates (x and y count apart).
    pub coordinates: usize,
    /// Rows with both outer eye corners, over which NME (and the rest of the
    /// report) is taken.
    pub rows_with_nme: usize,
}

/// Scores `model` on every face of `opts.csv`.
pub fn evaluate(model: &Keypointer, opts: &EvalOptions) -> Result<EvalReport> {
    let scheme = opts.scheme;
    if model.config().scheme != scheme {
        bail!("--points {}: the weights are a {}-point model", scheme.num_points(), model.config().scheme.num_points());
    }
    if kaggle::is_kaggle_csv(&opts.csv)? {
        return evaluate_kaggle(model, opts);
    }
    let annotations = dataset::read_csv(&opts.csv)?;
    if !opts.images.is_dir() {
        bail!("--images {}: not a folder", opts.images.display());
    }
    let mut detector = match opts.boxes {
        Boxes::Haar => Some(HaarDetector::new(&opts.cascade, DetectorConfig::default())?),
        Boxes::Truth => None,
    };
    let bar = crate::progress::progress_bar(annotations.len() as u64, "evaluating");
    let mut tally = Tally::new(scheme);
    for a in &annotations {
        bar.inc(1);
        let path = opts.images.join(&a.image);
        let gray = imageops::read_gray(&path)?.with_context(|| format!("image {}: cannot be read", path.display()))?;
        let truth = scheme.from_68(&a.points);
        let detection = match detector.as_mut() {
            Some(d) => match match_detection(&d.detect(&gray)?, &a.points) {
                Some(det) => det,
                None => continue,
            },
            None => Detection::firm(FaceBox::level(model.config().crop.detection_for_points(&truth))),
        };
        let timer = Instant::now();
        let found = fit_face(model, &gray, detection, opts.boxes)?;
        tally.infer_secs += timer.elapsed().as_secs_f64();
        let Some(found) = found else {
            continue;
        };
        // Found points are image positions; the labels carry their set's origin.
        let pred: Vec<Point> = found.iter().map(|&p| p + model.label_origin()).collect();
        tally.add(&a.image, &pred, &truth);
        let mirrored = fit_mirrored(model, &gray, detection, opts.boxes)?;
        let frame_size = (gray.cols() as u32, gray.rows() as u32);
        let sample = PoseSample { truth: &truth, found: &pred, found_mirrored: mirrored.as_deref(), frame_size };
        tally.pose.add(scheme, &sample)?;
    }
    bar.finish_and_clear();
    if tally.errors.is_empty() {
        bail!("--csv {}: no face was evaluated (no detection matched)", opts.csv.display());
    }
    Ok(tally.report(annotations.len(), opts.boxes, model))
}

/// Scores `model` on a Kaggle keypoints CSV: every row's crop placed from the
/// file's framing box ([`kaggle::framing_box`]) with two passes, as `run` treats a
/// new detection; RMSE over the present coordinates, NME over the rows with both
/// outer eye corners.
fn evaluate_kaggle(model: &Keypointer, opts: &EvalOptions) -> Result<EvalReport> {
    if opts.scheme != Scheme::P15 {
        bail!("--csv {}: a Kaggle keypoints CSV has 15 points: use --points 15", opts.csv.display());
    }
    let faces = kaggle::read_kaggle_csv(&opts.csv)?;
    let Some(framing) = kaggle::framing_box(&faces, &model.config().crop) else {
        bail!("--csv {}: no row has all 15 points, so the crops cannot be framed", opts.csv.display());
    };
    let mut tally = Tally::new(opts.scheme);
    let (mut squares, mut coordinates) = (0.0f64, 0usize);
    for (i, f) in faces.iter().enumerate() {
        let timer = Instant::now();
        let found = two_passes(model, &f.image, FaceBox::level(framing))?;
        tally.infer_secs += timer.elapsed().as_secs_f64();
        let pred: Vec<Point> = found.points.iter().map(|&p| p + model.label_origin()).collect();
        for (p, t) in pred.iter().zip(&f.points).filter_map(|(p, t)| t.map(|t| (p, t))) {
            squares += ((p.x - t.x) as f64).powi(2) + ((p.y - t.y) as f64).powi(2);
            coordinates += 2;
        }
        if let Some(truth) = f.complete_points() {
            tally.add(&format!("row {}", i + 1), &pred, &truth);
        } else if let (Some(a), Some(b)) = (f.points[3], f.points[5]) {
            tally.add_partial(&format!("row {}", i + 1), &pred, &f.points, a.distance(b) as f64);
        }
    }
    if tally.errors.is_empty() {
        bail!("--csv {}: no row has both outer eye corners, so NME is not defined", opts.csv.display());
    }
    let rows_with_nme = tally.errors.len();
    let mut report = tally.report(faces.len(), Boxes::Haar, model);
    report.detected = faces.len();
    report.kaggle =
        Some(KaggleScore { rmse_px: (squares / coordinates.max(1) as f64).sqrt(), coordinates, rows_with_nme });
    Ok(report)
}

/// The first and second pass of a new detection, as `run` gives it.
fn two_passes(model: &Keypointer, gray: &Mat, detection: FaceBox) -> Result<face::FaceFit> {
    let first = face::faces_in_boxes(model, gray, &[detection])?;
    let second = face::refine(model, gray, &first.into_iter().map(|f| f.points).collect::<Vec<_>>())?;
    second.into_iter().next().context("the CNN returned no face for a crop")
}

/// The points `model` finds in `detection` of `gray`. With Haar boxes, as `run`
/// treats a new detection: a second pass cropped from the first points, and
/// `None` when the model is not sure of a face there.
fn fit_face(model: &Keypointer, gray: &Mat, detection: Detection, boxes: Boxes) -> Result<Option<Vec<Point>>> {
    if boxes == Boxes::Truth {
        return Ok(face::faces_in_boxes(model, gray, &[detection.face_box])?.into_iter().next().map(|f| f.points));
    }
    let search = detection.search();
    let fit = two_passes(model, gray, detection.face_box)?;
    Ok(face::confident(model, fit.spread, search).then_some(fit.points))
}

/// The points `model` finds on the mirror image of `gray` in the mirror image of
/// `detection` (that image's pixels, with the label origin as for the original),
/// held to the same search's threshold.
fn fit_mirrored(model: &Keypointer, gray: &Mat, detection: Detection, boxes: Boxes) -> Result<Option<Vec<Point>>> {
    let evidence = detection.evidence;
    let detection = detection.face_box.bounds_in_frame();
    let mut mirror = Mat::default();
    opencv::core::flip(gray, &mut mirror, 1)?;
    // Pixel u maps to width - 1 - u, so a box's left edge x goes to width - 1 - (x + w).
    let right = gray.cols() as f32 - 1.0 - (detection.x + detection.w);
    let box_in_mirror = Rect::new(right, detection.y, detection.w, detection.h);
    let in_mirror = Detection { face_box: FaceBox::level(box_in_mirror), evidence };
    let found = fit_face(model, &mirror, in_mirror, boxes)?;
    Ok(found.map(|f| f.iter().map(|&p| p + model.label_origin()).collect()))
}

/// The errors of the faces scored so far.
struct Tally {
    scheme: Scheme,
    errors: Vec<f64>,
    images: Vec<String>,
    /// Per [`Region::ALL`]: the sum of point errors over the inter-ocular distance,
    /// and the number of points.
    region_sums: Vec<(f64, usize)>,
    /// Sum over faces of the mean signed error (x, y) over the inter-ocular distance.
    bias: (f64, f64),
    infer_secs: f64,
    pose: PoseTally,
}

impl Tally {
    fn new(scheme: Scheme) -> Tally {
        let region_sums = vec![(0.0, 0); Region::ALL.len()];
        Tally {
            scheme,
            errors: Vec::new(),
            images: Vec::new(),
            region_sums,
            bias: (0.0, 0.0),
            infer_secs: 0.0,
            pose: PoseTally::new(scheme),
        }
    }

    /// Scores the points `pred` of the face in `image` against `truth`.
    fn add(&mut self, image: &str, pred: &[Point], truth: &[Point]) {
        let (ea, eb) = self.scheme.outer_eye_corners();
        let iod = truth[ea].distance(truth[eb]) as f64;
        let present: Vec<Option<Point>> = truth.iter().copied().map(Some).collect();
        self.add_partial(image, pred, &present, iod);
    }

    /// As [`Tally::add`] for a face whose `truth` lacks some points, with its
    /// inter-ocular distance `iod`: NME, regions and bias over the present points.
    fn add_partial(&mut self, image: &str, pred: &[Point], truth: &[Option<Point>], iod: f64) {
        let present: Vec<(usize, Point, Point)> =
            pred.iter().zip(truth).enumerate().filter_map(|(i, (p, t))| t.map(|t| (i, *p, t))).collect();
        let n = present.len() as f64;
        let mean = present.iter().map(|(_, p, t)| p.distance(*t) as f64).sum::<f64>() / n;
        self.errors.push(mean / iod.max(1e-6));
        self.images.push(image.to_string());
        for (i, p, t) in present {
            let r = Region::ALL.iter().position(|&r| r == self.scheme.region(i)).unwrap_or(0);
            self.region_sums[r].0 += p.distance(t) as f64 / iod;
            self.region_sums[r].1 += 1;
            self.bias.0 += (p.x - t.x) as f64 / iod / n;
            self.bias.1 += (p.y - t.y) as f64 / iod / n;
        }
    }

    /// The report over `faces` annotated faces (the scored ones and the rest).
    fn report(self, faces: usize, boxes: Boxes, model: &Keypointer) -> EvalReport {
        let errors = self.errors;
        let n = errors.len() as f64;
        let mut worst: Vec<(String, f64)> = self.images.into_iter().zip(errors.iter().copied()).collect();
        worst.sort_by(|a, b| b.1.total_cmp(&a.1));
        worst.truncate(WORST_SHOWN);
        let nme_by_region = Region::ALL
            .iter()
            .zip(&self.region_sums)
            .filter(|(_, s)| s.1 > 0)
            .map(|(r, s)| (r.name().to_string(), s.0 / s.1 as f64))
            .collect();
        let mut sorted = errors.clone();
        sorted.sort_by(f64::total_cmp);
        EvalReport {
            faces,
            detected: errors.len(),
            nme: errors.iter().sum::<f64>() / n,
            median_nme: sorted[sorted.len() / 2],
            failure_rate: errors.iter().filter(|&&e| e > FAILURE_NME).count() as f64 / n,
            nme_by_region,
            bias: (self.bias.0 / n, self.bias.1 / n),
            ms_per_face: self.infer_secs * 1000.0 / n,
            worst,
            passes: if boxes == Boxes::Haar { 2 } else { 1 },
            convention: model.convention().to_string(),
            precision: model.precision().name().to_string(),
            kaggle: None,
            pose: self.pose.report(),
            errors,
        }
    }
}

impl EvalReport {
    pub fn print_human(&self) {
        println!("faces        {}", self.faces);
        println!(
            "detected     {} ({:.1}%)  not detected {}",
            self.detected,
            100.0 * self.detected as f64 / self.faces as f64,
            self.faces - self.detected
        );
        println!("NME          {:.4}", self.nme);
        println!("median NME   {:.4}", self.median_nme);
        println!("failure rate {:.2}% (NME > {FAILURE_NME})", 100.0 * self.failure_rate);
        for (r, v) in &self.nme_by_region {
            println!("  {r:<10} {v:.4}");
        }
        println!("bias x, y    {:+.4} {:+.4} (mean signed error)", self.bias.0, self.bias.1);
        let worst: Vec<String> = self.worst.iter().map(|(image, e)| format!("{image} {e:.3}")).collect();
        println!("worst faces  {}", worst.join(", "));
        println!("ms per face  {:.2} (crop + CNN at batch 1, {} pass(es))", self.ms_per_face, self.passes);
        println!("convention   {}", self.convention);
        println!("precision    {}", self.precision);
        if let Some(k) = &self.kaggle {
            println!(
                "Kaggle RMSE  {:.3} px of the 96 px image, over {} coordinates (NME over the {} rows with both outer eye corners)",
                k.rmse_px, k.coordinates, k.rows_with_nme
            );
        }
        self.pose.print_human();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_takes_the_best_overlap_above_the_threshold() {
        let pts = [Point::new(10.0, 10.0), Point::new(50.0, 50.0)];
        let far = Rect::new(200.0, 200.0, 40.0, 40.0);
        let near = Rect::new(12.0, 12.0, 40.0, 40.0);
        let exact = Rect::new(10.0, 10.0, 40.0, 40.0);
        let level = |r: Rect| Detection::firm(FaceBox::level(r));
        assert_eq!(match_detection(&[level(far)], &pts), None);
        assert_eq!(match_detection(&[level(far), level(near), level(exact)], &pts), Some(level(exact)));
    }
}
