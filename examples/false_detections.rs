//! How well the face threshold (`max_spread` in the model config) tells the Haar
//! cascade's false detections from faces, on an annotated CSV: each detection is
//! labelled a face when its IoU with the box of the true points is at least 0.3,
//! goes through the two CNN passes `run` gives a new detection, and is kept or
//! rejected by the threshold. Prints a line per detection (image, IoU, spread,
//! evidence, kept) and a summary.
//!
//! `cargo run --release --example false_detections -- WEIGHTS CSV [DETECT_WIDTH]`

use anyhow::Context;
use facekp::dataset::read_csv;
use facekp::detect::{DetectorConfig, HaarDetector, DEFAULT_CASCADE};
use facekp::eval::MATCH_IOU;
use facekp::face;
use facekp::geometry::Rect;
use facekp::imageops;
use facekp::model::{Keypointer, Precision};
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (weights, csv) = match (args.get(1), args.get(2)) {
        (Some(w), Some(c)) => (Path::new(w), Path::new(c)),
        _ => anyhow::bail!("usage: false_detections WEIGHTS CSV [DETECT_WIDTH]"),
    };
    let width = args.get(3).map(|w| w.parse()).transpose().context("DETECT_WIDTH")?.unwrap_or(640);
    let model = Keypointer::load(weights, tch::Device::Cpu, Precision::auto(tch::Device::Cpu), None)?;
    let mut detector = HaarDetector::new(
        Path::new(DEFAULT_CASCADE),
        DetectorConfig { max_width: width, ..DetectorConfig::default() },
    )?;
    let images = csv.parent().unwrap_or(Path::new(".")).join("images");
    let (mut faces, mut faces_kept, mut others, mut others_kept) = (0, 0, 0, 0);
    for a in read_csv(csv)? {
        let path = images.join(&a.image);
        let gray = imageops::read_gray(&path)?.with_context(|| format!("{}: cannot be read", path.display()))?;
        let truth = Rect::bounding(&a.points);
        for det in detector.detect(&gray)? {
            let first = face::faces_in_boxes(&model, &gray, &[det.face_box])?.remove(0);
            let spread = face::refine(&model, &gray, &[first.points])?.remove(0).spread;
            let kept = face::confident(&model, spread, det.search());
            let iou = det.face_box.upright.iou(&truth);
            println!("{} {iou:.3} {spread:.4} {:?} {kept}", a.image, det.evidence);
            if iou >= MATCH_IOU {
                faces += 1;
                faces_kept += kept as usize;
            } else {
                others += 1;
                others_kept += kept as usize;
            }
        }
    }
    println!(
        "faces kept {faces_kept} of {faces}; other detections kept {others_kept} of {others} (threshold {:?})",
        model.config().max_spread
    );
    Ok(())
}
