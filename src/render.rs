//! The sinks that show frames: the overlay drawn into a BGR frame (OpenCV drawing),
//! the annotated video writer and the window (minifb). Frame pixels throughout;
//! the head's axes are drawn in parallel projection (x, y of each rotated axis).

use crate::face::{Face, StageTimes};
use crate::fsutil;
use crate::geometry::Point;
use crate::landmarks::{Region, Scheme};
use crate::output::{check_output_path, OutputError};
use crate::pose::HeadPose;
use opencv::core::{Mat, Point as CvPoint, Rect as CvRect, Scalar, Size};
use opencv::prelude::*;
use opencv::{imgproc, videoio};
use std::path::{Path, PathBuf};

/// Region colours, as RGB (the overlay test looks for these).
pub fn region_rgb(region: Region) -> [u8; 3] {
    match region {
        Region::Jaw => [255, 196, 0],
        Region::Brows => [255, 64, 64],
        Region::Nose => [0, 160, 255],
        Region::Eyes => [0, 255, 64],
        Region::Mouth => [255, 0, 255],
    }
}

pub const BOX_RGB: [u8; 3] = [255, 255, 255];

/// Colours of the head's axes: x (to the face's image-right), y (down the face),
/// z (out of the face, where the nose points).
pub const AXIS_RGB: [[u8; 3]; 3] = [[255, 40, 40], [40, 255, 40], [40, 120, 255]];

/// Length of the drawn head axes, as a fraction of the face box width.
const AXIS_LENGTH: f32 = 0.5;

fn bgr(rgb: [u8; 3]) -> Scalar {
    Scalar::new(rgb[2] as f64, rgb[1] as f64, rgb[0] as f64, 0.0)
}

fn cv_point(p: Point) -> CvPoint {
    CvPoint::new(p.x.round() as i32, p.y.round() as i32)
}

/// What the overlay shows; the window toggles these with keys.
#[derive(Debug, Clone, Copy)]
pub struct OverlayOptions {
    pub boxes: bool,
    pub contours: bool,
    pub stats: bool,
    /// The head's axes at the nose and the pose angles in the face label.
    pub pose: bool,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        Self { boxes: true, contours: true, stats: true, pose: true }
    }
}

/// Figures for the stats line.
#[derive(Debug, Clone, Copy, Default)]
pub struct OverlayStats {
    pub fps: f64,
    pub times: StageTimes,
}

/// Pen scale (frame side over 640 px) from which text is drawn without
/// antialiasing: from 1280 px up, its strokes are 2 px or thicker and look the
/// same, while OpenCV's antialiased text costs about four times as much (the stats
/// line of a 1080p frame, one thread: 4.3 against 1.0 ms).
const PLAIN_TEXT_SCALE: f64 = 2.0;

/// Line thickness, text scale and text line type for a frame: sized for 640 px,
/// larger frames draw larger.
#[derive(Debug, Clone, Copy)]
struct Pen {
    scale: f64,
    thick: i32,
    text_line: i32,
}

impl Pen {
    fn for_frame(frame: &Mat) -> Pen {
        let scale = (frame.cols().max(frame.rows()) as f64 / 640.0).max(0.5);
        let text_line = if scale < PLAIN_TEXT_SCALE { imgproc::LINE_AA } else { imgproc::LINE_8 };
        Pen { scale, thick: (scale.round() as i32).max(1), text_line }
    }

    fn text(
        &self,
        frame: &mut Mat,
        text: &str,
        at: CvPoint,
        size: f64,
        color: Scalar,
        thick: i32,
    ) -> opencv::Result<()> {
        let font_scale = size * self.scale;
        imgproc::put_text(
            frame,
            text,
            at,
            imgproc::FONT_HERSHEY_SIMPLEX,
            font_scale,
            color,
            thick,
            self.text_line,
            false,
        )
    }
}

/// Draws boxes, track ids, contours and points of `faces`, and the stats line, into `frame` (BGR).
pub fn draw_overlay(
    frame: &mut Mat,
    faces: &[Face],
    scheme: Scheme,
    options: &OverlayOptions,
    stats: Option<&OverlayStats>,
) -> opencv::Result<()> {
    let pen = Pen::for_frame(frame);
    for face in faces {
        if options.boxes {
            draw_box(frame, face, pen)?;
        }
        if let (true, Some(pose)) = (options.pose, face.pose) {
            draw_axes(frame, face.points[scheme.nose_tip()], &pose, face.box_in_frame.w, pen)?;
        }
        if let Some(text) = face_label(face, options) {
            draw_label(frame, face, &text, pen)?;
        }
        if options.contours {
            for (a, b) in scheme.contour_segments() {
                let color = bgr(region_rgb(scheme.region(a)));
                let (pa, pb) = (cv_point(face.points[a]), cv_point(face.points[b]));
                imgproc::line(frame, pa, pb, color, 1, imgproc::LINE_AA, 0)?;
            }
        }
        let radius = ((face.box_in_frame.w.max(1.0) / 90.0).round() as i32).clamp(1, 6);
        for (i, p) in face.points.iter().enumerate() {
            let color = bgr(region_rgb(scheme.region(i)));
            imgproc::circle(frame, cv_point(*p), radius, color, -1, imgproc::LINE_8, 0)?;
        }
    }
    match (options.stats, stats) {
        (true, Some(s)) => draw_stats(frame, faces.len(), s, pen),
        _ => Ok(()),
    }
}

/// A face's box.
fn draw_box(frame: &mut Mat, face: &Face, pen: Pen) -> opencv::Result<()> {
    let b = face.box_in_frame;
    let r = CvRect::new(b.x.round() as i32, b.y.round() as i32, b.w.round() as i32, b.h.round() as i32);
    imgproc::rectangle(frame, r, bgr(BOX_RGB), pen.thick, imgproc::LINE_8, 0)
}

/// The label above a face: its track id with the boxes, its pose angles with the pose.
fn face_label(face: &Face, options: &OverlayOptions) -> Option<String> {
    let id = options.boxes.then(|| format!("#{}", face.track));
    let angles = match (options.pose, face.pose) {
        (true, Some(p)) => Some(format!("yaw {:.0} pitch {:.0} roll {:.0}", p.yaw, p.pitch, p.roll)),
        _ => None,
    };
    match (id, angles) {
        (Some(id), Some(angles)) => Some(format!("{id} {angles}")),
        (id, angles) => id.or(angles),
    }
}

fn draw_label(frame: &mut Mat, face: &Face, text: &str, pen: Pen) -> opencv::Result<()> {
    let b = face.box_in_frame;
    let at = CvPoint::new(b.x.round() as i32, (b.y.round() as i32 - 4).max(10));
    pen.text(frame, text, at, 0.45, bgr(BOX_RGB), pen.thick)
}

/// The head's x, y and z axes from the nose tip, `AXIS_LENGTH` of the face width long.
fn draw_axes(frame: &mut Mat, nose: Point, pose: &HeadPose, face_width: f32, pen: Pen) -> opencv::Result<()> {
    let r = pose.rotation();
    let length = (AXIS_LENGTH * face_width) as f64;
    // z is drawn out of the face (the model's -z), where the nose points.
    let axes = [(0, 1.0), (1, 1.0), (2, -1.0)];
    for ((k, sign), rgb) in axes.into_iter().zip(AXIS_RGB) {
        let end = Point::new(nose.x + (sign * length * r[0][k]) as f32, nose.y + (sign * length * r[1][k]) as f32);
        imgproc::line(frame, cv_point(nose), cv_point(end), bgr(rgb), pen.thick + 1, imgproc::LINE_AA, 0)?;
    }
    Ok(())
}

/// The stats line at the top left: white on a black outline.
fn draw_stats(frame: &mut Mat, faces: usize, s: &OverlayStats, pen: Pen) -> opencv::Result<()> {
    let t = &s.times;
    let detect = match (t.detector_ran, t.tile_ms) {
        (true, _) => format!("detect {:.1} ms", t.detect_ms),
        (false, Some(tile)) => format!("tile {tile:.1} ms"),
        (false, None) => "tracked".to_string(),
    };
    let text =
        format!("faces {faces}  {:.1} fps  {detect}  infer {:.1} ms  draw {:.1} ms", s.fps, t.infer_ms, t.draw_ms);
    let at = CvPoint::new(8, (18.0 * pen.scale) as i32);
    pen.text(frame, &text, at, 0.5, Scalar::all(0.0), pen.thick + 2)?;
    pen.text(frame, &text, at, 0.5, Scalar::all(255.0), pen.thick)
}

/// Annotated video output: written under a temporary name, renamed by [`VideoSink::finish`].
pub struct VideoSink {
    writer: videoio::VideoWriter,
    size: Size,
    tmp: PathBuf,
    path: PathBuf,
    finished: bool,
    resized: Mat,
}

impl VideoSink {
    pub const SUPPORTED: &'static str = ".mp4, .avi";

    pub fn create(path: &Path, width: u32, height: u32, fps: f64) -> Result<Self, OutputError> {
        const FLAG: &str = "--output";
        let ext = check_output_path(FLAG, path, &["mp4", "avi"], Self::SUPPORTED)?;
        let io = |reason: String| OutputError::Io {
            flag: FLAG,
            path: path.to_owned(),
            source: std::io::Error::other(reason),
        };
        let tmp = fsutil::temp_path(path);
        // Probe writability first: VideoWriter reports no reason on failure.
        std::fs::File::create(&tmp).map_err(|source| OutputError::Io { flag: FLAG, path: path.to_owned(), source })?;
        let _ = std::fs::remove_file(&tmp);
        let size = Size::new(width as i32, height as i32);
        // H.264 plays everywhere; MPEG-4 part 2 is the fallback when OpenCV's FFmpeg lacks an H.264 encoder.
        let codecs: &[[char; 4]] =
            if ext == "mp4" { &[['a', 'v', 'c', '1'], ['m', 'p', '4', 'v']] } else { &[['M', 'J', 'P', 'G']] };
        for c in codecs {
            let fourcc = videoio::VideoWriter::fourcc(c[0], c[1], c[2], c[3]).map_err(|e| io(e.to_string()))?;
            let writer = videoio::VideoWriter::new_with_backend(&tmp, videoio::CAP_FFMPEG, fourcc, fps, size, true);
            if let Ok(w) = writer {
                if w.is_opened().unwrap_or(false) {
                    fsutil::register_temp(&tmp);
                    return Ok(Self {
                        writer: w,
                        size,
                        tmp,
                        path: path.to_owned(),
                        finished: false,
                        resized: Mat::default(),
                    });
                }
            }
            let _ = std::fs::remove_file(&tmp);
        }
        Err(io("OpenCV's FFmpeg backend cannot open a video writer for it".into()))
    }

    /// Appends a BGR frame (resized when its size differs from the video's).
    pub fn write(&mut self, frame: &Mat) -> opencv::Result<()> {
        if frame.size()? == self.size {
            self.writer.write(frame)
        } else {
            imgproc::resize(frame, &mut self.resized, self.size, 0.0, 0.0, imgproc::INTER_AREA)?;
            self.writer.write(&self.resized)
        }
    }

    /// The final name of the video.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finalises the container and moves it to its final name.
    pub fn finish(mut self) -> Result<PathBuf, OutputError> {
        self.finished = true;
        self.writer.release().map_err(|e| OutputError::Io {
            flag: "--output",
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        std::fs::rename(&self.tmp, &self.path).map_err(|source| OutputError::Io {
            flag: "--output",
            path: self.path.clone(),
            source,
        })?;
        fsutil::forget_temp(&self.tmp);
        Ok(self.path.clone())
    }
}

impl Drop for VideoSink {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.writer.release();
            let _ = std::fs::remove_file(&self.tmp);
            fsutil::forget_temp(&self.tmp);
        }
    }
}

/// Packs a BGR frame into minifb's 0RGB `u32` buffer.
pub fn bgr_to_argb(frame: &Mat, buffer: &mut Vec<u32>) -> opencv::Result<()> {
    let bytes = frame.data_bytes()?;
    buffer.clear();
    buffer.extend(bytes.chunks_exact(3).map(|p| ((p[2] as u32) << 16) | ((p[1] as u32) << 8) | p[0] as u32));
    Ok(())
}

/// What the user asked for in the window since the last frame.
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowInput {
    pub quit: bool,
    /// Show the next frame, then pause (`.`).
    pub step: bool,
    /// Jump ahead in a video played at its pace (right arrow).
    pub seek: bool,
}

/// The display window (minifb, X11). Keys: Esc/q quit, space pause, `.` one
/// frame, right arrow 5 s ahead, b boxes, c contours, s stats, p head pose.
pub struct WindowSink {
    window: minifb::Window,
    buffer: Vec<u32>,
    pub paused: bool,
}

impl WindowSink {
    pub fn open(title: &str, width: u32, height: u32) -> Result<Self, minifb::Error> {
        let options = minifb::WindowOptions {
            resize: true,
            scale_mode: minifb::ScaleMode::AspectRatioStretch,
            ..Default::default()
        };
        let window = minifb::Window::new(title, width as usize, height as usize, options)?;
        Ok(Self { window, buffer: Vec::new(), paused: false })
    }

    /// Shows a BGR frame and applies key presses to `overlay`.
    pub fn show(&mut self, frame: &Mat, overlay: &mut OverlayOptions) -> Result<WindowInput, String> {
        bgr_to_argb(frame, &mut self.buffer).map_err(|e| e.to_string())?;
        self.window
            .update_with_buffer(&self.buffer, frame.cols() as usize, frame.rows() as usize)
            .map_err(|e| e.to_string())?;
        Ok(self.handle_keys(overlay))
    }

    /// Polls the window without a new frame (while paused).
    pub fn poll(&mut self, overlay: &mut OverlayOptions) -> WindowInput {
        self.window.update();
        self.handle_keys(overlay)
    }

    fn handle_keys(&mut self, overlay: &mut OverlayOptions) -> WindowInput {
        use minifb::{Key, KeyRepeat};
        let pressed = |k| self.window.is_key_pressed(k, KeyRepeat::No);
        if pressed(Key::Space) {
            self.paused = !self.paused;
        }
        if pressed(Key::B) {
            overlay.boxes = !overlay.boxes;
        }
        if pressed(Key::C) {
            overlay.contours = !overlay.contours;
        }
        if pressed(Key::S) {
            overlay.stats = !overlay.stats;
        }
        if pressed(Key::P) {
            overlay.pose = !overlay.pose;
        }
        let step = pressed(Key::Period);
        if step {
            self.paused = true;
        }
        let seek = pressed(Key::Right);
        let quit = !self.window.is_open() || self.window.is_key_down(Key::Escape) || self.window.is_key_down(Key::Q);
        WindowInput { quit, step, seek }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{Point, Rect};
    use opencv::core::{Vec3b, CV_8UC3};

    #[test]
    fn overlay_draws_points_in_region_colours_and_the_box() {
        let mut frame = Mat::new_rows_cols_with_default(200, 200, CV_8UC3, Scalar::all(0.0)).unwrap();
        let points: Vec<Point> = (0..15).map(|i| Point::new(40.0 + 8.0 * i as f32, 100.0)).collect();
        let face = Face {
            box_in_frame: Rect::new(20.0, 20.0, 160.0, 160.0),
            points: points.clone(),
            track: 1,
            pose: None,
            openness: None,
        };
        let options = OverlayOptions { boxes: true, contours: false, stats: false, pose: true };
        draw_overlay(&mut frame, &[face], Scheme::P15, &options, None).unwrap();
        for (i, p) in points.iter().enumerate() {
            let px = *frame.at_2d::<Vec3b>(p.y as i32, p.x as i32).unwrap();
            let rgb = region_rgb(Scheme::P15.region(i));
            assert_eq!([px[2], px[1], px[0]], rgb, "point {i}");
        }
        let edge = *frame.at_2d::<Vec3b>(100, 20).unwrap();
        assert_eq!([edge[2], edge[1], edge[0]], BOX_RGB);
        // Far from any face nothing is drawn.
        assert_eq!(*frame.at_2d::<Vec3b>(5, 195).unwrap(), Vec3b::from([0, 0, 0]));
    }

    #[test]
    fn the_head_axes_follow_the_pose_and_the_key_option() {
        let blank = || Mat::new_rows_cols_with_default(200, 200, CV_8UC3, Scalar::all(0.0)).unwrap();
        let points: Vec<Point> = (0..15).map(|_| Point::new(100.0, 100.0)).collect();
        let pose = HeadPose { yaw: 0.0, pitch: 0.0, roll: 90.0 };
        let face = Face {
            box_in_frame: Rect::new(40.0, 40.0, 120.0, 120.0),
            points,
            track: 1,
            pose: Some(pose),
            openness: None,
        };
        let rgb = |m: &Mat, x: i32, y: i32| {
            let p = *m.at_2d::<Vec3b>(y, x).unwrap();
            [p[2], p[1], p[0]]
        };
        let options = OverlayOptions { boxes: false, contours: false, stats: false, pose: true };
        let mut frame = blank();
        draw_overlay(&mut frame, std::slice::from_ref(&face), Scheme::P15, &options, None).unwrap();
        // Turned 90 degrees counter-clockwise: the face's x axis points up, its y axis right.
        assert_eq!(rgb(&frame, 100, 70), AXIS_RGB[0]);
        assert_eq!(rgb(&frame, 130, 100), AXIS_RGB[1]);
        let mut frame = blank();
        draw_overlay(&mut frame, &[face], Scheme::P15, &OverlayOptions { pose: false, ..options }, None).unwrap();
        assert_eq!(rgb(&frame, 100, 70), [0, 0, 0]);
    }

    #[test]
    fn text_is_antialiased_on_small_frames_only() {
        let stats = OverlayStats { fps: 24.5, times: StageTimes::default() };
        let options = OverlayOptions { boxes: false, contours: false, stats: true, pose: false };
        let stats_line_levels = |w: i32, h: i32| {
            let mut frame = Mat::new_rows_cols_with_default(h, w, CV_8UC3, Scalar::all(90.0)).unwrap();
            draw_overlay(&mut frame, &[], Scheme::P68, &options, Some(&stats)).unwrap();
            let mut levels = std::collections::BTreeSet::new();
            for y in 0..h / 10 {
                for x in 0..w / 2 {
                    levels.insert(frame.at_2d::<Vec3b>(y, x).unwrap()[0]);
                }
            }
            levels
        };
        // Black outline, white text, the gray frame: nothing between on 1080p.
        assert_eq!(stats_line_levels(1920, 1080).into_iter().collect::<Vec<_>>(), vec![0, 90, 255]);
        assert!(stats_line_levels(640, 360).len() > 10, "no blended edges at 640 px");
    }

    #[test]
    fn argb_packing_keeps_channel_order() {
        let frame = Mat::new_rows_cols_with_default(1, 2, CV_8UC3, Scalar::new(1.0, 2.0, 3.0, 0.0)).unwrap();
        let mut buf = Vec::new();
        bgr_to_argb(&frame, &mut buf).unwrap();
        assert_eq!(buf, vec![0x030201, 0x030201]);
    }
}
