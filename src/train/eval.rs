//! `facekp eval`: NME of a trained model on an annotated CSV, with the real Haar
//! detector's boxes (`haar`) or crops placed from the true points (`truth`).
//! NME follows `../shared/datasets/README.md`: mean point error over the
//! inter-ocular (outer eye corner) distance of the truth.

use super::data;
use super::prior::match_detection;
use crate::detect::{DetectorConfig, HaarDetector};
use crate::face;
use crate::geometry::Point;
use crate::imageops;
use crate::landmarks::{Region, Scheme};
use crate::model::Keypointer;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// A face whose NME exceeds this counts as a failure.
pub const FAILURE_NME: f64 = 0.10;
/// How many of the worst faces the report names.
pub const WORST_SHOWN: usize = 5;

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
    #[serde(skip)]
    pub errors: Vec<f64>,
}

pub fn evaluate(model: &Keypointer, opts: &EvalOptions) -> Result<EvalReport> {
    let scheme = opts.scheme;
    let cfg = model.config();
    if cfg.scheme != scheme {
        bail!("--points {}: the weights are a {}-point model", scheme.num_points(), cfg.scheme.num_points());
    }
    let annotations = data::read_csv(&opts.csv)?;
    if !opts.images.is_dir() {
        bail!("--images {}: not a folder", opts.images.display());
    }
    let mut detector = match opts.boxes {
        Boxes::Haar => Some(HaarDetector::new(&opts.cascade, DetectorConfig::default())?),
        Boxes::Truth => None,
    };
    let bar = super::progress_bar(annotations.len() as u64, "evaluating");
    let mut errors = Vec::new();
    let mut images = Vec::new();
    let mut region_sums = vec![(0.0f64, 0usize); Region::ALL.len()];
    let mut bias = (0.0f64, 0.0f64);
    let mut infer_secs = 0.0;
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
            None => cfg.crop.detection_for_points(&truth),
        };
        let t = Instant::now();
        let (mut pred, mut spread) = face::faces_in_boxes(model, &gray, &[detection])?.remove(0);
        if opts.boxes == Boxes::Haar {
            // As `run` treats a new detection: a second pass, and the face threshold.
            (pred, spread) = face::refine(model, &gray, &[pred])?.remove(0);
        }
        infer_secs += t.elapsed().as_secs_f64();
        if opts.boxes == Boxes::Haar && !face::confident(model, spread) {
            continue;
        }
        // Found points are image positions; the labels carry their set's origin.
        let origin = model.label_origin();
        let pred: Vec<Point> = pred.iter().map(|&p| p + origin).collect();
        errors.push(nme(&pred, &truth, scheme));
        images.push(a.image.as_str());
        let (ea, eb) = scheme.outer_eye_corners();
        let iod = truth[ea].distance(truth[eb]) as f64;
        for (i, (p, t)) in pred.iter().zip(&truth).enumerate() {
            let r = Region::ALL.iter().position(|&r| r == scheme.region(i)).unwrap_or(0);
            region_sums[r].0 += p.distance(*t) as f64 / iod;
            region_sums[r].1 += 1;
            bias.0 += (p.x - t.x) as f64 / iod / truth.len() as f64;
            bias.1 += (p.y - t.y) as f64 / iod / truth.len() as f64;
        }
    }
    bar.finish_and_clear();
    if errors.is_empty() {
        bail!("--csv {}: no face was evaluated (no detection matched)", opts.csv.display());
    }
    let mut sorted = errors.clone();
    sorted.sort_by(f64::total_cmp);
    let n = errors.len() as f64;
    let mut worst: Vec<(String, f64)> = images.iter().map(|i| i.to_string()).zip(errors.iter().copied()).collect();
    worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    worst.truncate(WORST_SHOWN);
    Ok(EvalReport {
        faces: annotations.len(),
        detected: errors.len(),
        nme: errors.iter().sum::<f64>() / n,
        median_nme: sorted[sorted.len() / 2],
        failure_rate: errors.iter().filter(|&&e| e > FAILURE_NME).count() as f64 / n,
        nme_by_region: Region::ALL
            .iter()
            .zip(&region_sums)
            .filter(|(_, s)| s.1 > 0)
            .map(|(r, s)| (r.name().to_string(), s.0 / s.1 as f64))
            .collect(),
        bias: (bias.0 / n, bias.1 / n),
        ms_per_face: infer_secs * 1000.0 / n,
        worst,
        passes: if opts.boxes == Boxes::Haar { 2 } else { 1 },
        convention: model.convention().to_string(),
        precision: model.precision().name().to_string(),
        errors,
    })
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
    }
}
