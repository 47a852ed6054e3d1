//! Measures where OpenCV's profile cascade puts its box relative to the points of
//! the training faces (`profile_crop` in a model config), as `facekp train` does
//! for a new model: for the config of a model trained without it (the shipped
//! ones). Prints the prior as the config's JSON field.
//!
//! `cargo run --release --example profile_prior -- 68|15 DATA_DIR[,DATA_DIR...]`

use anyhow::{bail, Context};
use facekp::dataset::load_set;
use facekp::detect::{DetectorConfig, ProfileCascade, PROFILE_CASCADE};
use facekp::geometry::Point;
use facekp::landmarks::Scheme;
use facekp::train::{architecture, prior};
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (scheme, dirs) = match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("68"), Some(d)) => (Scheme::P68, d),
        (Some("15"), Some(d)) => (Scheme::P15, d),
        _ => bail!("usage: profile_prior 68|15 DATA_DIR[,DATA_DIR...]"),
    };
    let mut sets = Vec::new();
    for dir in dirs.split(',').map(Path::new) {
        let name = facekp::dataset::set_name(dir);
        sets.push(load_set(&name, &dir.join("train.csv"), &dir.join("images")).context(name)?);
    }
    let images: Vec<&opencv::core::Mat> = sets.iter().flat_map(|s| &s.images).collect();
    let points68: Vec<&[Point]> = sets.iter().flat_map(|s| s.annotations.iter().map(|a| a.points.as_slice())).collect();
    let points: Vec<Vec<Point>> = points68.iter().map(|p| scheme.from_68(p)).collect();
    let mut cascade = ProfileCascade::load(Path::new(PROFILE_CASCADE))?;
    let width = DetectorConfig::default().max_width;
    let padding = architecture(scheme).crop_padding;
    let faces = prior::PriorFaces { images: &images, points68: &points68, points: &points };
    let m = prior::measure_profile(&mut cascade, width, &faces, padding, || {})?;
    eprintln!("{} of {} faces matched", m.matched, m.faces);
    println!("\"profile_crop\": {}", serde_json::to_string_pretty(&m.prior)?);
    Ok(())
}
