//! Data set reading: the shared CSV layout (`image,x0,y0,...,x67,y67`, frame pixels
//! of the image) and iBUG `.pts` files, plus loading a set's images as gray.

use crate::geometry::Point;
use crate::imageops;
use opencv::core::Mat;
use std::path::{Path, PathBuf};

pub const POINTS_68: usize = 68;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: line {line}: {reason}")]
    Parse { path: PathBuf, line: u64, reason: String },
    #[error("{path}: row {row}: {reason}")]
    Row { path: PathBuf, row: usize, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("image {path}: cannot be read or decoded")]
    Image { path: PathBuf },
    #[error("image {path}: {source}")]
    OpenCv { path: PathBuf, source: opencv::Error },
}

/// One annotated face: an image file name and its 68 points in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    pub image: String,
    pub points: Vec<Point>,
}

/// Parses the data set CSV layout from any reader (`path` names it in errors).
pub fn parse_csv<R: std::io::Read>(reader: R, path: &Path) -> Result<Vec<Annotation>, DataError> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
    let parse_err = |line: u64, reason: String| DataError::Parse { path: path.to_owned(), line, reason };
    let headers = rdr.headers().map_err(|e| parse_err(1, e.to_string()))?.clone();
    if headers.len() != 1 + 2 * POINTS_68 || headers.get(0) != Some("image") {
        return Err(parse_err(
            1,
            format!(
                "header must be image,x0,y0,...,x67,y67 ({} columns), found {} columns",
                1 + 2 * POINTS_68,
                headers.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for (i, record) in rdr.records().enumerate() {
        let line = i as u64 + 2;
        let record = record.map_err(|e| parse_err(line, e.to_string()))?;
        if record.len() != 1 + 2 * POINTS_68 {
            return Err(parse_err(line, format!("{} columns, expected {}", record.len(), 1 + 2 * POINTS_68)));
        }
        let image = record[0].to_string();
        if image.is_empty() {
            return Err(parse_err(line, "empty image name".into()));
        }
        let mut values = Vec::with_capacity(2 * POINTS_68);
        for (col, field) in record.iter().skip(1).enumerate() {
            let v: f32 = field
                .trim()
                .parse()
                .map_err(|_| parse_err(line, format!("column {} is not a number: {field:?}", col + 1)))?;
            if !v.is_finite() {
                return Err(parse_err(line, format!("column {} is not finite", col + 1)));
            }
            values.push(v);
        }
        let points = values.chunks(2).map(|xy| Point::new(xy[0], xy[1])).collect();
        out.push(Annotation { image, points });
    }
    Ok(out)
}

pub fn read_csv(path: &Path) -> Result<Vec<Annotation>, DataError> {
    let file = std::fs::File::open(path).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    let rows = parse_csv(std::io::BufReader::new(file), path)?;
    if rows.is_empty() {
        return Err(DataError::Invalid { path: path.to_owned(), reason: "no faces in the file".into() });
    }
    Ok(rows)
}

/// Parses an iBUG `.pts` file: `version: 1`, `n_points: N`, `{`, N lines `x y`, `}`.
pub fn parse_pts(text: &str, path: &Path) -> Result<Vec<Point>, DataError> {
    let err = |line: usize, reason: &str| DataError::Parse {
        path: path.to_owned(),
        line: line as u64,
        reason: reason.into(),
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty());
    let mut n_points = None;
    for (no, l) in lines.by_ref() {
        if l == "{" {
            break;
        }
        if let Some(v) = l.strip_prefix("n_points:") {
            n_points = Some(v.trim().parse::<usize>().map_err(|_| err(no, "n_points is not a count"))?);
        } else if !l.starts_with("version:") {
            return Err(err(no, "expected version:, n_points: or {"));
        }
    }
    let n = n_points.ok_or_else(|| err(0, "no n_points header"))?;
    if n == 0 || n > 10_000 {
        return Err(err(0, "n_points out of range"));
    }
    let mut points = Vec::with_capacity(n);
    for (no, l) in lines.by_ref() {
        if l == "}" {
            if points.len() != n {
                return Err(err(no, "fewer points than n_points"));
            }
            return Ok(points);
        }
        let mut it = l.split_whitespace();
        let (Some(x), Some(y), None) = (it.next(), it.next(), it.next()) else {
            return Err(err(no, "a point line must be `x y`"));
        };
        let (x, y): (f32, f32) = match (x.parse(), y.parse()) {
            (Ok(x), Ok(y)) if f32::is_finite(x) && f32::is_finite(y) => (x, y),
            _ => return Err(err(no, "a coordinate is not a finite number")),
        };
        if points.len() == n {
            return Err(err(no, "more points than n_points"));
        }
        points.push(Point::new(x, y));
    }
    Err(err(0, "missing closing }"))
}

pub fn read_pts(path: &Path) -> Result<Vec<Point>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_owned(), source })?;
    parse_pts(&text, path)
}

/// A data set split in memory: gray images and their 68-point annotations.
pub struct LoadedSet {
    /// The set's name (its folder name), which is also its annotation convention.
    pub name: String,
    pub images: Vec<Mat>,
    pub annotations: Vec<Annotation>,
}

/// Loads `csv` and the gray images it names from `images_dir`.
pub fn load_set(name: &str, csv: &Path, images_dir: &Path) -> Result<LoadedSet, DataError> {
    let annotations = read_csv(csv)?;
    let mut images = Vec::with_capacity(annotations.len());
    for a in &annotations {
        let path = images_dir.join(&a.image);
        let img = imageops::read_gray(&path)
            .map_err(|source| DataError::OpenCv { path: path.clone(), source })?
            .ok_or(DataError::Image { path })?;
        images.push(img);
    }
    Ok(LoadedSet { name: name.to_string(), images, annotations })
}

/// The name of a data set folder (`../shared/datasets/ytf68/` -> `ytf68`).
pub fn set_name(dir: &Path) -> String {
    dir.canonicalize()
        .unwrap_or_else(|_| dir.to_owned())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> String {
        let mut h = String::from("image");
        for i in 0..68 {
            h.push_str(&format!(",x{i},y{i}"));
        }
        h
    }

    #[test]
    fn csv_rows_parse_into_68_points() {
        let mut text = header();
        text.push_str("\na.jpg");
        for i in 0..68 {
            text.push_str(&format!(",{},{}.5", i, i));
        }
        let rows = parse_csv(text.as_bytes(), Path::new("t.csv")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].image, "a.jpg");
        assert_eq!(rows[0].points[67], Point::new(67.0, 67.5));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let text = format!("{}\na.jpg,1,2\n", header());
        let err = parse_csv(text.as_bytes(), Path::new("t.csv")).unwrap_err().to_string();
        assert!(err.contains("t.csv") && err.contains("line 2"), "{err}");
        let err = parse_csv("image,x0\n".as_bytes(), Path::new("t.csv")).unwrap_err().to_string();
        assert!(err.contains("header"), "{err}");
    }

    #[test]
    fn pts_files_from_shared_samples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let pts = read_pts(&dir.join("einstein.pts")).unwrap();
        assert_eq!(pts.len(), 68);
        assert!(pts.iter().all(|p| p.x > 0.0 && p.y > 0.0));
    }

    #[test]
    fn pts_rejects_wrong_counts() {
        let p = Path::new("x.pts");
        assert!(parse_pts("version: 1\nn_points: 2\n{\n1 2\n}\n", p).is_err());
        assert!(parse_pts("version: 1\nn_points: 1\n{\n1 2\n3 4\n}\n", p).is_err());
        assert_eq!(parse_pts("version: 1\nn_points: 1\n{\n1 2\n}\n", p).unwrap(), vec![Point::new(1.0, 2.0)]);
    }
}
