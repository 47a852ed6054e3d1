//! The Kaggle "Facial Keypoints Detection" CSV: a header of 30 coordinate columns
//! in Kaggle's order (`left_eye_center_x, left_eye_center_y, ...,
//! mouth_center_bottom_lip_y`, the 15-point scheme of [`crate::landmarks::NAMES_15`])
//! and `Image`, then one row per face: the coordinates in pixels of a 96x96 gray
//! image (empty where the point is missing) and the image itself as 9216
//! space-separated gray values, row-major.
//!
//! The images are faces framed by the data set, not photos to search: facekp
//! places every crop from one **framing box**, the mean detection box that
//! [`CropPrior::detection_for_points`] gives for the rows with all 15 points. The
//! network then sees the framing it sees at run time, without using any row's own
//! points to place its crop.

use crate::dataset::{DataError, LoadedSet};
use crate::geometry::{CropPrior, CropSquare, Point, Rect};
use crate::imageops;
use crate::landmarks::{Scheme, NAMES_15};
use opencv::core::{Mat, CV_8UC1};
use opencv::prelude::*;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// The convention (output head) a model trained on a Kaggle CSV learns for it.
pub const CONVENTION: &str = "kaggle";
/// Side of a Kaggle image, pixels.
pub const SIDE: u32 = 96;
const PIXELS: usize = (SIDE * SIDE) as usize;
const POINTS: usize = NAMES_15.len();

/// One row: a 96x96 gray face and its 15 points, `None` where missing.
pub struct KaggleFace {
    pub image: Mat,
    pub points: Vec<Option<Point>>,
}

impl KaggleFace {
    /// The points when all 15 are present.
    pub fn complete_points(&self) -> Option<Vec<Point>> {
        self.points.iter().copied().collect()
    }
}

/// The header of a Kaggle CSV.
pub fn header() -> String {
    let mut columns: Vec<String> = NAMES_15.iter().flat_map(|n| [format!("{n}_x"), format!("{n}_y")]).collect();
    columns.push("Image".into());
    columns.join(",")
}

/// Whether `path` starts with the Kaggle header (the other CSV layout starts `image,x0`).
pub fn is_kaggle_csv(path: &Path) -> Result<bool, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    let mut first = String::new();
    BufReader::new(file).read_line(&mut first).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    Ok(first.trim_end().trim_start_matches('\u{feff}') == header())
}

/// Reads every row of a Kaggle CSV; a bad row is an error naming its number
/// (1 for the first row after the header).
pub fn read_kaggle_csv(path: &Path) -> Result<Vec<KaggleFace>, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(BufReader::new(file));
    let bad = |row: usize, reason: String| DataError::Row { path: path.to_owned(), row, reason };
    let headers = rdr.headers().map_err(|e| bad(0, e.to_string()))?;
    if headers.iter().collect::<Vec<_>>().join(",") != header() {
        return Err(DataError::Invalid {
            path: path.to_owned(),
            reason: "not a Kaggle keypoints CSV (30 coordinate columns in Kaggle's order, then Image)".into(),
        });
    }
    let mut faces = Vec::new();
    for (i, record) in rdr.records().enumerate() {
        let row = i + 1;
        let record = record.map_err(|e| bad(row, e.to_string()))?;
        faces.push(parse_row(&record).map_err(|reason| bad(row, reason))?);
    }
    if faces.is_empty() {
        return Err(DataError::Invalid { path: path.to_owned(), reason: "no rows".into() });
    }
    Ok(faces)
}

fn parse_row(record: &csv::StringRecord) -> Result<KaggleFace, String> {
    if record.len() != 2 * POINTS + 1 {
        return Err(format!("{} columns, expected {}", record.len(), 2 * POINTS + 1));
    }
    let points = (0..POINTS).map(|k| parse_point(k, &record[2 * k], &record[2 * k + 1])).collect::<Result<_, _>>()?;
    let image = parse_image(&record[2 * POINTS])?;
    Ok(KaggleFace { image, points })
}

/// Point `k` from its x and y fields: both empty (missing) or both coordinates
/// inside the image.
fn parse_point(k: usize, x: &str, y: &str) -> Result<Option<Point>, String> {
    let name = NAMES_15[k];
    let coordinate = |axis: &str, field: &str| -> Result<f32, String> {
        let v: f32 = field.trim().parse().map_err(|_| format!("{name}_{axis} is not a number: {field:?}"))?;
        if !(v.is_finite() && (-0.5..=SIDE as f32 - 0.5).contains(&v)) {
            return Err(format!("{name}_{axis} {v} is outside the {SIDE}x{SIDE} image"));
        }
        Ok(v)
    };
    match (x.trim().is_empty(), y.trim().is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(Point::new(coordinate("x", x)?, coordinate("y", y)?))),
        _ => Err(format!("{name}: one coordinate without the other")),
    }
}

fn parse_image(field: &str) -> Result<Mat, String> {
    let mut bytes = Vec::with_capacity(PIXELS);
    for (i, v) in field.split_ascii_whitespace().enumerate() {
        let gray: u8 = v.parse().map_err(|_| format!("Image value {} is not a gray level 0-255: {v:?}", i + 1))?;
        bytes.push(gray);
    }
    if bytes.len() != PIXELS {
        return Err(format!("Image has {} values, expected {PIXELS} ({SIDE}x{SIDE})", bytes.len()));
    }
    let flat = Mat::from_slice(&bytes).map_err(|e| e.to_string())?;
    let image = flat.reshape(1, SIDE as i32).map_err(|e| e.to_string())?;
    let owned = image.try_clone().map_err(|e| e.to_string())?;
    debug_assert_eq!(owned.typ(), CV_8UC1);
    Ok(owned)
}

/// The framing box of a Kaggle file: the mean of the detection boxes `prior`
/// gives for the rows with all 15 points. `None` when no row has them all.
pub fn framing_box(faces: &[KaggleFace], prior: &CropPrior) -> Option<Rect> {
    let complete: Vec<Vec<Point>> = faces.iter().filter_map(|f| f.complete_points()).collect();
    mean_detection(&complete, prior)
}

/// The mean (centre and width) of the detection boxes `prior` gives for each
/// face's `points`; `None` for no faces.
pub fn mean_detection(faces: &[Vec<Point>], prior: &CropPrior) -> Option<Rect> {
    if faces.is_empty() {
        return None;
    }
    let boxes: Vec<Rect> = faces.iter().map(|p| prior.detection_for_points(p)).collect();
    let n = boxes.len() as f32;
    let mean = |f: fn(&Rect) -> f32| boxes.iter().map(f).sum::<f32>() / n;
    let (cx, cy, w) = (mean(|b| b.center().x), mean(|b| b.center().y), mean(|b| b.w));
    Some(Rect::from_center(Point::new(cx, cy), w, w))
}

/// Where a generated Kaggle face sits in its 96 px image, as in Kaggle's images:
/// eye centres about 36 px apart and 41 px above the bottom lip, the image centre a
/// quarter of the way from the eyes' midpoint to the bottom lip.
const FRAMED_EYE_DISTANCE: f32 = 36.0;
const FRAMED_EYES_TO_LIP: f32 = 41.0;
const FRAMED_CENTRE_ALONG: f32 = 0.25;

/// Kaggle-format faces of an annotated set: each face cropped upright to 96x96 gray
/// around its 15 derived points, framed as Kaggle frames its faces (points that fall
/// outside the image are missing, as in Kaggle's rows), with the points of every
/// `sparse_every`-th face cut down to the four of most Kaggle rows (eye centres,
/// nose tip, bottom lip). For tests and for scoring on this format.
pub fn faces_from_set(set: &LoadedSet, sparse_every: usize) -> opencv::Result<Vec<KaggleFace>> {
    const SPARSE_KEPT: [usize; 4] = [0, 1, 10, 14];
    let mut faces = Vec::with_capacity(set.annotations.len());
    for (i, (gray, a)) in set.images.iter().zip(&set.annotations).enumerate() {
        let points = Scheme::P15.from_68(&a.points);
        let crop = kaggle_framing(&points);
        let pixels = imageops::extract_crop(gray, &crop, SIDE)?;
        let image = Mat::from_slice(&pixels)?.reshape(1, SIDE as i32)?.try_clone()?;
        let to_crop = crop.crop_from_frame(SIDE);
        let sparse = sparse_every > 0 && i % sparse_every == sparse_every - 1;
        let inside = |p: &Point| (-0.5..=SIDE as f32 - 0.5).contains(&p.x) && (-0.5..=SIDE as f32 - 0.5).contains(&p.y);
        let points = points
            .iter()
            .enumerate()
            .map(|(k, p)| Some(to_crop.apply(*p)).filter(|q| inside(q) && (!sparse || SPARSE_KEPT.contains(&k))))
            .collect();
        faces.push(KaggleFace { image, points });
    }
    Ok(faces)
}

/// The upright 96 px crop that frames a face as Kaggle does, from its 15 points.
fn kaggle_framing(points: &[Point]) -> CropSquare {
    let (left, right, lip) = (points[0], points[1], points[14]);
    let mid = Point::new((left.x + right.x) / 2.0, (left.y + right.y) / 2.0);
    let side = SIDE as f32 * (left.distance(right) / FRAMED_EYE_DISTANCE).max(mid.distance(lip) / FRAMED_EYES_TO_LIP);
    let centre =
        Point::new(mid.x + FRAMED_CENTRE_ALONG * (lip.x - mid.x), mid.y + FRAMED_CENTRE_ALONG * (lip.y - mid.y));
    CropSquare::upright(centre, side)
}

/// Writes `faces` as a Kaggle CSV (coordinates with 4 decimals, missing points empty).
pub fn write_kaggle_csv(out: &mut impl Write, faces: &[KaggleFace]) -> std::io::Result<()> {
    writeln!(out, "{}", header())?;
    for f in faces {
        let mut fields: Vec<String> = Vec::with_capacity(2 * POINTS + 1);
        for p in &f.points {
            match p {
                Some(p) => fields.extend([format!("{:.4}", p.x), format!("{:.4}", p.y)]),
                None => fields.extend([String::new(), String::new()]),
            }
        }
        let bytes = f.image.data_bytes().map_err(std::io::Error::other)?;
        fields.push(bytes.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" "));
        writeln!(out, "{}", fields.join(","))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(points: &[Option<(f32, f32)>], pixels: &str) -> String {
        let mut fields = Vec::new();
        for p in points {
            match p {
                Some((x, y)) => fields.extend([x.to_string(), y.to_string()]),
                None => fields.extend([String::new(), String::new()]),
            }
        }
        fields.push(pixels.to_string());
        fields.join(",")
    }

    fn parse(text: &str) -> Result<Vec<KaggleFace>, DataError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.csv");
        std::fs::write(&path, text).unwrap();
        read_kaggle_csv(&path)
    }

    #[test]
    fn rows_parse_with_missing_points_and_bad_rows_name_their_number() {
        let pixels = vec!["7"; PIXELS].join(" ");
        let mut points = vec![Some((30.5, 40.0)); POINTS];
        points[3] = None;
        let good = row(&points, &pixels);
        let faces = parse(&format!("{}\n{good}\n{good}\n", header())).unwrap();
        assert_eq!(faces.len(), 2);
        assert_eq!(faces[0].points[3], None);
        assert_eq!(faces[0].points[0], Some(Point::new(30.5, 40.0)));
        assert_eq!(faces[0].image.rows(), 96);
        assert_eq!(*faces[1].image.at_2d::<u8>(95, 95).unwrap(), 7);
        let short = row(&points, &vec!["7"; PIXELS - 1].join(" "));
        let err = parse(&format!("{}\n{good}\n{short}\n", header())).err().unwrap().to_string();
        assert!(err.contains("row 2: Image has 9215 values, expected 9216"), "{err}");
        let mut outside = points.clone();
        outside[10] = Some((120.0, 40.0));
        let err = parse(&format!("{}\n{}\n", header(), row(&outside, &pixels))).err().unwrap().to_string();
        assert!(err.contains("row 1: nose_tip_x 120 is outside the 96x96 image"), "{err}");
        let text = format!("{}\n{}\n", header(), good.replacen("30.5", "abc", 1));
        let err = parse(&text).err().unwrap().to_string();
        assert!(err.contains("row 1: left_eye_center_x is not a number: \"abc\""), "{err}");
        let err = parse(&format!("{}\n{}\n", header(), good.replace(" 7 ", " 300 "))).err().unwrap().to_string();
        assert!(err.contains("is not a gray level"), "{err}");
        let err = parse("image,x0,y0\n").err().unwrap().to_string();
        assert!(err.contains("not a Kaggle keypoints CSV"), "{err}");
    }

    #[test]
    fn written_files_read_back() {
        let pixels: Vec<u8> = (0..PIXELS).map(|i| (i % 251) as u8).collect();
        let image = Mat::from_slice(&pixels).unwrap().reshape(1, 96).unwrap().try_clone().unwrap();
        let mut points: Vec<Option<Point>> = (0..POINTS).map(|k| Some(Point::new(k as f32 * 5.0, 50.0))).collect();
        points[7] = None;
        let mut bytes = Vec::new();
        write_kaggle_csv(&mut bytes, &[KaggleFace { image, points: points.clone() }]).unwrap();
        let back = parse(&String::from_utf8(bytes).unwrap()).unwrap();
        assert_eq!(back[0].points, points);
        assert_eq!(back[0].image.data_bytes().unwrap(), pixels.as_slice());
    }
}
