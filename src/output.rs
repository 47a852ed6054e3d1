//! Keypoint files: CSV (one row per face per frame) or JSON Lines (one object per
//! frame, with `"faces": []` when none was found). Coordinates are frame pixels;
//! head pose in degrees ([`crate::pose::angles`] has the conventions); openness as
//! aspect ratios, image-left eye first ([`crate::pose::openness`]). What a face
//! lacks (no pose solved; no openness from 15 points) is `null` in JSON and an
//! empty field in CSV. Records of an image folder name their image (the JSON field
//! `image`, the last CSV column `image`, so every other column keeps its place) and
//! have no timestamp (`null`, an empty CSV field).
//! Files are written under a temporary name and renamed when finished, so a
//! failed run leaves nothing half-written under the final name.

use crate::face::Face;
use crate::fsutil;
use crate::pose::{HeadPose, Openness};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{flag} {path}: unsupported extension (supported: {supported})")]
    Extension { flag: &'static str, path: PathBuf, supported: &'static str },
    #[error("{flag} {path}: folder {dir} does not exist")]
    NoDir { flag: &'static str, path: PathBuf, dir: PathBuf },
    #[error("{flag} {path}: is a folder")]
    IsDir { flag: &'static str, path: PathBuf },
    #[error("{flag} {path}: cannot write ({source})")]
    Io { flag: &'static str, path: PathBuf, source: std::io::Error },
}

/// Checks that `path` has one of `extensions` and its folder exists; returns the
/// lower-case extension.
pub fn check_output_path(
    flag: &'static str,
    path: &Path,
    extensions: &[&str],
    supported: &'static str,
) -> Result<String, OutputError> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
    if !extensions.contains(&ext.as_str()) {
        return Err(OutputError::Extension { flag, path: path.to_owned(), supported });
    }
    if path.is_dir() {
        return Err(OutputError::IsDir { flag, path: path.to_owned() });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(OutputError::NoDir { flag, path: path.to_owned(), dir });
    }
    Ok(ext)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeypointFormat {
    Csv,
    Jsonl,
}

/// What a record's frame is: a moment of a video or camera, or an image of a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Timed,
    Images,
}

/// Where a record's frame comes from.
#[derive(Debug, Clone, Copy)]
enum Stamp<'a> {
    Time(f64),
    Image(&'a str),
}

pub struct KeypointWriter {
    out: Option<BufWriter<File>>,
    format: KeypointFormat,
    kind: RecordKind,
    tmp: PathBuf,
    path: PathBuf,
    num_points: usize,
}

#[derive(Serialize)]
struct JsonFace {
    face: usize,
    track: u64,
    box_x: f32,
    box_y: f32,
    box_w: f32,
    box_h: f32,
    pose: Option<HeadPose>,
    eyes: Option<[f32; 2]>,
    mouth: Option<f32>,
    points: Vec<[f32; 2]>,
}

#[derive(Serialize)]
struct JsonFrame<'a> {
    frame: u64,
    timestamp_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    faces: Vec<JsonFace>,
}

/// `value` as one CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// Rounds to 2 decimals for compact files (sub-pixel precision is kept).
fn r2(v: f32) -> f32 {
    (v * 100.0).round() / 100.0
}

/// Rounds to 1 decimal: angles, in degrees.
fn r1(v: f32) -> f32 {
    (v * 10.0).round() / 10.0
}

/// Rounds to 3 decimals: aspect ratios.
fn r3(v: f32) -> f32 {
    (v * 1000.0).round() / 1000.0
}

/// The CSV columns after the box columns: pose, then openness.
pub const MEASURE_COLUMNS: &str = "yaw,pitch,roll,eye_l,eye_r,mouth";

/// A face's pose and openness as CSV fields (empty where it has none).
fn measure_fields(pose: Option<HeadPose>, openness: Option<Openness>) -> String {
    let pose = pose.map_or(",,".to_owned(), |p| format!("{},{},{}", r1(p.yaw), r1(p.pitch), r1(p.roll)));
    let open = openness.map_or(",,".to_owned(), |o| format!("{},{},{}", r3(o.eyes[0]), r3(o.eyes[1]), r3(o.mouth)));
    format!("{pose},{open}")
}

impl JsonFace {
    fn new(index: usize, f: &Face) -> JsonFace {
        let b = f.box_in_frame;
        JsonFace {
            face: index,
            track: f.track,
            box_x: r2(b.x),
            box_y: r2(b.y),
            box_w: r2(b.w),
            box_h: r2(b.h),
            pose: f.pose.map(|p| HeadPose { yaw: r1(p.yaw), pitch: r1(p.pitch), roll: r1(p.roll) }),
            eyes: f.openness.map(|o| o.eyes.map(r3)),
            mouth: f.openness.map(|o| r3(o.mouth)),
            points: f.points.iter().map(|p| [r2(p.x), r2(p.y)]).collect(),
        }
    }
}

impl KeypointWriter {
    /// A keypoint file for the frames of a video or camera.
    pub fn create(path: &Path, num_points: usize) -> Result<Self, OutputError> {
        Self::create_for(path, num_points, RecordKind::Timed)
    }

    /// A keypoint file for the frames of `kind` (image folders: see [`Self::write_image`]).
    pub fn create_for(path: &Path, num_points: usize, kind: RecordKind) -> Result<Self, OutputError> {
        const FLAG: &str = "--keypoints";
        let ext = check_output_path(FLAG, path, &["csv", "jsonl"], ".csv, .jsonl")?;
        let format = if ext == "csv" { KeypointFormat::Csv } else { KeypointFormat::Jsonl };
        let tmp = fsutil::temp_path(path);
        let file =
            File::create(&tmp).map_err(|source| OutputError::Io { flag: FLAG, path: path.to_owned(), source })?;
        fsutil::register_temp(&tmp);
        let mut w = Self { out: Some(BufWriter::new(file)), format, kind, tmp, path: path.to_owned(), num_points };
        if format == KeypointFormat::Csv {
            let mut header = format!("frame,timestamp_ms,face,track,box_x,box_y,box_w,box_h,{MEASURE_COLUMNS}");
            for i in 0..num_points {
                header.push_str(&format!(",x{i},y{i}"));
            }
            if kind == RecordKind::Images {
                header.push_str(",image");
            }
            w.write_line(&header)?;
        }
        Ok(w)
    }

    fn io_error(&self, source: std::io::Error) -> OutputError {
        OutputError::Io { flag: "--keypoints", path: self.path.clone(), source }
    }

    /// `out` is `None` only once the file is finished (or being dropped).
    fn closed(&self) -> OutputError {
        self.io_error(std::io::Error::other("the keypoint file is already finished"))
    }

    fn write_line(&mut self, line: &str) -> Result<(), OutputError> {
        let Some(out) = self.out.as_mut() else {
            return Err(self.closed());
        };
        writeln!(out, "{line}").map_err(|source| self.io_error(source))
    }

    /// Writes the faces of frame `frame` of a video or camera, taken at `timestamp_ms`.
    pub fn write_frame(&mut self, frame: u64, timestamp_ms: f64, faces: &[Face]) -> Result<(), OutputError> {
        self.write_record(frame, Stamp::Time(timestamp_ms), faces)
    }

    /// Writes the faces of image `name` (relative to its folder), the `frame`-th
    /// image decoded.
    pub fn write_image(&mut self, frame: u64, name: &str, faces: &[Face]) -> Result<(), OutputError> {
        self.write_record(frame, Stamp::Image(name), faces)
    }

    fn write_record(&mut self, frame: u64, stamp: Stamp, faces: &[Face]) -> Result<(), OutputError> {
        let (timestamp_ms, image) = match stamp {
            Stamp::Time(t) => (Some((t * 100.0).round() / 100.0), None),
            Stamp::Image(name) => (None, Some(name)),
        };
        match self.format {
            KeypointFormat::Csv => {
                let timestamp = match stamp {
                    Stamp::Time(t) => format!("{t:.2}"),
                    Stamp::Image(_) => String::new(),
                };
                let image_column = match (self.kind, image) {
                    (RecordKind::Images, Some(name)) => format!(",{}", csv_field(name)),
                    (RecordKind::Images, None) => ",".to_string(),
                    (RecordKind::Timed, _) => String::new(),
                };
                for (i, f) in faces.iter().enumerate() {
                    let b = f.box_in_frame;
                    let measures = measure_fields(f.pose, f.openness);
                    let (x, y, w, h) = (r2(b.x), r2(b.y), r2(b.w), r2(b.h));
                    let mut line = format!("{frame},{timestamp},{i},{},{x},{y},{w},{h},{measures}", f.track);
                    debug_assert_eq!(f.points.len(), self.num_points);
                    for p in &f.points {
                        line.push_str(&format!(",{},{}", r2(p.x), r2(p.y)));
                    }
                    line.push_str(&image_column);
                    self.write_line(&line)?;
                }
                Ok(())
            }
            KeypointFormat::Jsonl => {
                let record = JsonFrame {
                    frame,
                    timestamp_ms,
                    image,
                    faces: faces.iter().enumerate().map(|(i, f)| JsonFace::new(i, f)).collect(),
                };
                let line = serde_json::to_string(&record).map_err(|e| self.io_error(e.into()))?;
                self.write_line(&line)
            }
        }
    }

    /// Flushes and moves the file to its final name.
    pub fn finish(mut self) -> Result<PathBuf, OutputError> {
        let Some(out) = self.out.take() else {
            return Err(self.closed());
        };
        let io = |source| OutputError::Io { flag: "--keypoints", path: self.path.clone(), source };
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.path).map_err(io)?;
        fsutil::forget_temp(&self.tmp);
        Ok(self.path.clone())
    }
}

impl Drop for KeypointWriter {
    fn drop(&mut self) {
        // Not finished: an error stopped the run; leave nothing half-written.
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
            fsutil::forget_temp(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{Point, Rect};

    fn face() -> Face {
        Face {
            box_in_frame: Rect::new(1.0, 2.0, 30.0, 30.0),
            points: vec![Point::new(5.5, 6.25); 15],
            track: 3,
            pose: Some(HeadPose { yaw: 12.34, pitch: -5.0, roll: 0.26 }),
            openness: None,
        }
    }

    #[test]
    fn csv_has_header_and_one_row_per_face() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.csv");
        let mut w = KeypointWriter::create(&path, 15).unwrap();
        w.write_frame(0, 0.0, &[face(), face()]).unwrap();
        w.write_frame(1, 33.37, &[]).unwrap();
        assert!(!path.exists(), "final name appears only when finished");
        w.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with(
            "frame,timestamp_ms,face,track,box_x,box_y,box_w,box_h,yaw,pitch,roll,eye_l,eye_r,mouth,x0,y0,"
        ));
        assert!(lines[0].ends_with(",x14,y14"));
        assert!(lines[2].starts_with("0,0.00,1,3,1,2,30,30,12.3,-5,0.3,,,,5.5,6.25"), "{}", lines[2]);
    }

    #[test]
    fn jsonl_writes_every_frame_even_without_faces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.jsonl");
        let mut w = KeypointWriter::create(&path, 15).unwrap();
        w.write_frame(0, 0.0, &[]).unwrap();
        w.write_frame(1, 33.4, &[face()]).unwrap();
        w.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["faces"].as_array().unwrap().len(), 0);
        assert_eq!(rows[1]["frame"], 1);
        assert_eq!(rows[1]["faces"][0]["points"].as_array().unwrap().len(), 15);
        assert_eq!(rows[1]["faces"][0]["box_w"], 30.0);
        assert_eq!(rows[1]["faces"][0]["pose"]["yaw"], 12.3);
        assert!(rows[1]["faces"][0]["eyes"].is_null() && rows[1]["faces"][0]["mouth"].is_null());
    }

    /// Image-folder records carry their image's name and no timestamp; the CSV's
    /// other columns keep their places, and a name with a comma is quoted.
    #[test]
    fn image_records_name_their_image() {
        let dir = tempfile::tempdir().unwrap();
        let (csv, jsonl) = (dir.path().join("k.csv"), dir.path().join("k.jsonl"));
        for path in [&csv, &jsonl] {
            let mut w = KeypointWriter::create_for(path, 15, RecordKind::Images).unwrap();
            w.write_image(0, "a,b.jpg", &[face()]).unwrap();
            w.write_image(1, "c.png", &[]).unwrap();
            w.finish().unwrap();
        }
        let text = std::fs::read_to_string(&csv).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("frame,timestamp_ms,face,track,box_x") && lines[0].ends_with(",x14,y14,image"));
        assert!(
            lines[1].starts_with("0,,0,3,1,2,30,30,12.3,-5,0.3,,,,5.5,6.25") && lines[1].ends_with(",\"a,b.jpg\""),
            "{}",
            lines[1]
        );
        let text = std::fs::read_to_string(&jsonl).unwrap();
        let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows[0]["image"], "a,b.jpg");
        assert!(rows[0]["timestamp_ms"].is_null());
        assert_eq!(rows[1]["image"], "c.png");
        assert_eq!(rows[1]["faces"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn unfinished_writers_leave_nothing_and_bad_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.jsonl");
        {
            let mut w = KeypointWriter::create(&path, 15).unwrap();
            w.write_frame(0, 0.0, &[]).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let err = KeypointWriter::create(&dir.path().join("k.txt"), 15).err().unwrap().to_string();
        assert!(err.contains(".csv, .jsonl"), "{err}");
        let err = KeypointWriter::create(&dir.path().join("missing/k.csv"), 15).err().unwrap().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
