//! `facekp bench --false-faces FILE`: the faces `run --images` reports on annotated
//! photos, against the annotation.
//!
//! A FILE is a data set CSV (one annotated face per photo, its box the bounding box
//! of its points; images in `images/` beside it) or an XML file of face boxes in
//! dlib's imglab layout (`<image file=..><box top= left= width= height=/>`; images
//! beside it; every face of a photo annotated). Each photo is searched as
//! `run --images` searches it (every turn of the image) and the faces found are
//! sorted into:
//! - **found**: matched one to one to an annotated face, the bounding box of its
//!   points overlapping the annotated box by [`crate::eval::MATCH_IOU`] or more;
//! - **ghosts**: unmatched faces that touch an annotated face (its box grown
//!   [`GHOST_REACH`] times about its centre): a second face on a chin, mouth, ear
//!   or neck;
//! - **others**: unmatched faces elsewhere (on a data set photo, also real faces
//!   left unannotated).

use crate::dataset;
use crate::detect::{AngleSearch, HaarDetector};
use crate::eval::MATCH_IOU;
use crate::face::Face;
use crate::geometry::Rect;
use crate::imageops;
use crate::pipeline::face_stage::Found;
use crate::pipeline::FaceStage;
use crate::track::CropMode;
use anyhow::{bail, Context, Result};
use opencv::core::Mat;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How far around an annotated face's box an unmatched face counts as its ghost,
/// as a scale of the box about its centre (the neck and ears lie outside the
/// points' box).
pub const GHOST_REACH: f32 = 1.6;

/// One annotated photo: its gray image and its face boxes.
pub struct Photo {
    pub name: String,
    pub gray: Mat,
    pub faces: Vec<Rect>,
}

/// The figures of one annotation file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FalseFacesReport {
    pub file: String,
    pub photos: usize,
    pub annotated: usize,
    pub found: usize,
    pub ghosts: usize,
    pub others: usize,
    /// Photos with at least one ghost or other face, by name.
    pub photos_with_extra: Vec<String>,
}

/// How one photo's faces sort against its annotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sorted {
    pub found: usize,
    pub ghosts: usize,
    pub others: usize,
}

/// Reads an annotation file: a data set CSV or an imglab XML (by extension).
pub fn load_photos(file: &Path) -> Result<Vec<Photo>> {
    match file.extension().and_then(|e| e.to_str()) {
        Some("csv") => photos_of_csv(file),
        Some("xml") => photos_of_xml(file),
        _ => bail!("--false-faces {}: expected a data set .csv or an imglab .xml file", file.display()),
    }
}

fn photos_of_csv(csv: &Path) -> Result<Vec<Photo>> {
    let dir = csv.parent().unwrap_or(Path::new("."));
    let set = dataset::load_set(&dataset::set_name(dir), csv, &dir.join("images"))?;
    Ok(set
        .annotations
        .into_iter()
        .zip(set.images)
        .map(|(a, gray)| Photo { faces: vec![Rect::bounding(&a.points)], name: a.image, gray })
        .collect())
}

fn photos_of_xml(xml: &Path) -> Result<Vec<Photo>> {
    let text = std::fs::read_to_string(xml).with_context(|| format!("{}: cannot be read", xml.display()))?;
    let doc = roxmltree::Document::parse(&text).with_context(|| format!("{}: not XML", xml.display()))?;
    let dir = xml.parent().unwrap_or(Path::new("."));
    doc.descendants()
        .filter(|n| n.has_tag_name("image"))
        .map(|image| {
            let name =
                image.attribute("file").with_context(|| format!("{}: an <image> without file=", xml.display()))?;
            let faces = image
                .children()
                .filter(|n| n.has_tag_name("box"))
                .map(|b| xml_box(xml, name, b))
                .collect::<Result<Vec<_>>>()?;
            let path: PathBuf = dir.join(name);
            let gray = imageops::read_gray(&path)?
                .with_context(|| format!("{}: cannot be read as an image", path.display()))?;
            Ok(Photo { name: name.to_string(), gray, faces })
        })
        .collect()
}

/// One `<box top= left= width= height=/>` of image `name` in `xml`.
fn xml_box(xml: &Path, name: &str, b: roxmltree::Node) -> Result<Rect> {
    let value = |key: &str| -> Result<f32> {
        b.attribute(key)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{}: a box of {name} has no number {key}=", xml.display()))
    };
    Ok(Rect::new(value("left")?, value("top")?, value("width")?, value("height")?))
}

/// Sorts the `faces` found on a photo against its annotated boxes `truth`.
pub fn sort_faces(faces: &[Face], truth: &[Rect]) -> Sorted {
    let boxes: Vec<Rect> = faces.iter().map(|f| Rect::bounding(&f.points)).collect();
    let mut taken = vec![false; truth.len()];
    let mut unmatched = Vec::new();
    for b in &boxes {
        let best = (0..truth.len())
            .filter(|&k| !taken[k])
            .map(|k| (k, truth[k].iou(b)))
            .filter(|&(_, iou)| iou >= MATCH_IOU)
            .max_by(|x, y| x.1.total_cmp(&y.1));
        match best {
            Some((k, _)) => taken[k] = true,
            None => unmatched.push(b),
        }
    }
    let reach = |t: &Rect| Rect::from_center(t.center(), t.w * GHOST_REACH, t.h * GHOST_REACH);
    let touches = |b: &Rect| truth.iter().any(|t| reach(t).intersection_area(b) > 0.0);
    let ghosts = unmatched.iter().filter(|b| touches(b)).count();
    Sorted { found: taken.iter().filter(|&&t| t).count(), ghosts, others: unmatched.len() - ghosts }
}

/// The faces `run --images` reports on one photo.
pub fn faces_in_photo(gray: &Mat, stage: &mut FaceStage, detector: &mut HaarDetector) -> Result<Vec<Face>> {
    stage.restart(CropMode::Detections);
    detector.set_angles(AngleSearch::All);
    let detections = detector.detect(gray)?;
    Ok(stage.process(gray, Found { frame: Some(&detections), tile: &[] }, 0.0)?.faces)
}

/// Searches every photo of `file` and sorts its faces.
pub fn false_faces(file: &Path, stage: &mut FaceStage, detector: &mut HaarDetector) -> Result<FalseFacesReport> {
    let photos = load_photos(file)?;
    let mut report = FalseFacesReport { file: file.display().to_string(), photos: photos.len(), ..Default::default() };
    let bar = crate::progress::progress_bar(photos.len() as u64, "false faces");
    for photo in &photos {
        let faces = faces_in_photo(&photo.gray, stage, detector)?;
        let s = sort_faces(&faces, &photo.faces);
        report.annotated += photo.faces.len();
        report.found += s.found;
        report.ghosts += s.ghosts;
        report.others += s.others;
        if s.ghosts + s.others > 0 {
            report.photos_with_extra.push(photo.name.clone());
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Point;

    fn face_at(b: Rect) -> Face {
        let points = vec![Point::new(b.x, b.y), Point::new(b.x + b.w, b.y + b.h)];
        Face { box_in_frame: b, points, track: 1, pose: None, openness: None }
    }

    #[test]
    fn faces_sort_into_found_ghosts_and_others() {
        let truth = [Rect::new(100.0, 100.0, 100.0, 100.0), Rect::new(400.0, 100.0, 100.0, 100.0)];
        let faces = [
            face_at(Rect::new(105.0, 102.0, 95.0, 100.0)),
            // The same face again, smaller and lower: a chin ghost.
            face_at(Rect::new(130.0, 170.0, 40.0, 40.0)),
            // Far from both.
            face_at(Rect::new(250.0, 400.0, 60.0, 60.0)),
        ];
        assert_eq!(sort_faces(&faces, &truth), Sorted { found: 1, ghosts: 1, others: 1 });
    }

    #[test]
    fn one_face_matches_one_annotation() {
        let truth = [Rect::new(100.0, 100.0, 100.0, 100.0)];
        let faces = [face_at(Rect::new(100.0, 100.0, 100.0, 100.0)), face_at(Rect::new(104.0, 104.0, 100.0, 100.0))];
        assert_eq!(sort_faces(&faces, &truth), Sorted { found: 1, ghosts: 1, others: 0 });
    }
}
