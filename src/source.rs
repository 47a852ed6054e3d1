//! Frame sources: a V4L2 camera, a video file (OpenCV's FFmpeg backend) or a folder
//! of images (jpg/png/bmp in name order). Frames are 8-bit BGR, frame pixels.

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::videoio::{self, VideoCapture};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Image extensions read from a folder (lower case).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];
/// Frame rate assumed for image folders and for videos that report none.
pub const FALLBACK_FPS: f64 = 30.0;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("video {path}: file not found")]
    VideoMissing { path: PathBuf },
    #[error("video {path}: is a folder (use --images for a folder of images)")]
    VideoIsDir { path: PathBuf },
    #[error("video {path}: the file is empty (0 bytes)")]
    VideoEmpty { path: PathBuf },
    #[error(
        "video {path}: cannot be opened or decoded (empty, truncated or not a video OpenCV's FFmpeg backend reads)"
    )]
    VideoUnreadable { path: PathBuf },
    #[error(
        "camera {index}: no such device (/dev/video{index} does not exist); `facekp cameras` lists the ones that open"
    )]
    CameraMissing { index: i32 },
    #[error("camera {index}: /dev/video{index} cannot be opened (in use by another program, no permission, or not a capture device)")]
    CameraBusy { index: i32 },
    #[error("camera {index}: stopped delivering frames")]
    CameraLost { index: i32 },
    #[error("images {path}: not a folder")]
    ImagesNotDir { path: PathBuf },
    #[error("images {path}: no readable jpg/png/bmp image in the folder")]
    ImagesEmpty { path: PathBuf },
    #[error("images {path}: {source}")]
    ImagesIo { path: PathBuf, source: std::io::Error },
    #[error("image {path}: file not found or not a decodable image")]
    StillUnreadable { path: PathBuf },
    #[error("frame source failed")]
    OpenCv(#[from] opencv::Error),
}

/// What to read frames from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    Camera {
        index: i32,
        width: Option<u32>,
        height: Option<u32>,
        fps: Option<f64>,
    },
    Video(PathBuf),
    /// A video played at its frame rate as a live camera would deliver it
    /// (`bench --live`: measures capture-to-display latency without a camera).
    PacedVideo(PathBuf),
    Images(PathBuf),
    /// One photo repeated `frames` times with fresh Gaussian noise (`bench --still`).
    Still {
        path: PathBuf,
        frames: u64,
        noise_sigma: f64,
    },
}

/// One captured frame with its provenance.
pub struct Frame {
    /// 0-based index in the source.
    pub seq: u64,
    /// Source timestamp (video position, or time since the first camera frame).
    pub timestamp_ms: f64,
    pub captured_at: Instant,
    /// Time spent reading and decoding this frame (set by the source thread when
    /// the source does not measure it itself).
    pub decode_ms: f64,
    pub image: Mat,
    /// An image folder's file name, relative to the folder (`None` for videos and
    /// cameras): keypoint records name their image instead of a timestamp.
    pub name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SourceInfo {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Number of frames when known (files).
    pub frame_count: Option<u64>,
    pub live: bool,
    pub description: String,
}

pub trait FrameSource: Send {
    fn info(&self) -> &SourceInfo;
    /// The next frame, `None` at the end.
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;
    /// Frames the source could not decode and skipped.
    fn skipped(&self) -> u64 {
        0
    }
    /// The names of the skipped files (image folders; empty for streams).
    fn skipped_names(&self) -> Vec<String> {
        Vec::new()
    }
}

pub fn open(spec: &SourceSpec) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(match spec {
        SourceSpec::Camera { index, width, height, fps } => {
            Box::new(CameraSource::open(*index, *width, *height, *fps)?)
        }
        SourceSpec::Video(path) => Box::new(VideoSource::open(path)?),
        SourceSpec::PacedVideo(path) => {
            let mut v = VideoSource::open(path)?;
            v.info.live = true;
            v.info.description = format!("{} paced at {:.2} fps as a live source", v.info.description, v.info.fps);
            v.paced_from = Some(Instant::now());
            Box::new(v)
        }
        SourceSpec::Images(path) => Box::new(ImageFolder::open(path)?),
        SourceSpec::Still { path, frames, noise_sigma } => Box::new(StillSource::open(path, *frames, *noise_sigma)?),
    })
}

pub struct VideoSource {
    capture: VideoCapture,
    info: SourceInfo,
    seq: u64,
    /// When set, frames are released at the video's frame rate from this instant.
    paced_from: Option<Instant>,
}

impl VideoSource {
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        if path.is_dir() {
            return Err(SourceError::VideoIsDir { path: path.to_owned() });
        }
        // Named pipes and devices are streams: only a regular file can be empty.
        if !path.exists() {
            return Err(SourceError::VideoMissing { path: path.to_owned() });
        }
        if path.is_file() && path.metadata().map(|m| m.len() == 0).unwrap_or(false) {
            return Err(SourceError::VideoEmpty { path: path.to_owned() });
        }
        let unreadable = || SourceError::VideoUnreadable { path: path.to_owned() };
        let capture = VideoCapture::from_file(path, videoio::CAP_FFMPEG).map_err(|_| unreadable())?;
        if !capture.is_opened()? {
            return Err(unreadable());
        }
        let width = capture.get(videoio::CAP_PROP_FRAME_WIDTH)? as u32;
        let height = capture.get(videoio::CAP_PROP_FRAME_HEIGHT)? as u32;
        if width == 0 || height == 0 {
            return Err(unreadable());
        }
        let fps = capture.get(videoio::CAP_PROP_FPS)?;
        let count = capture.get(videoio::CAP_PROP_FRAME_COUNT)?;
        Ok(Self {
            capture,
            info: SourceInfo {
                width,
                height,
                fps: if fps.is_finite() && fps > 0.0 { fps } else { FALLBACK_FPS },
                frame_count: (count.is_finite() && count > 0.0).then_some(count as u64),
                live: false,
                description: format!("video {}", path.display()),
            },
            seq: 0,
            paced_from: None,
        })
    }
}

impl FrameSource for VideoSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn skipped(&self) -> u64 {
        // Container frame counts are estimates for some formats: only a clear
        // shortfall (more than 1%, at least 2 frames) counts as undecodable frames.
        match self.info.frame_count {
            Some(n) if n > self.seq + 1 && (n - self.seq) * 100 > n => n - self.seq,
            _ => 0,
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if let Some(start) = self.paced_from {
            let due = start + std::time::Duration::from_secs_f64(self.seq as f64 / self.info.fps);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let decode_started = Instant::now();
        let mut image = Mat::default();
        // A read error mid-file (corrupt data) ends the video like its end does;
        // the frames the header promised but never came are counted as skipped.
        if !self.capture.read(&mut image).unwrap_or(false) || image.empty() {
            return Ok(None);
        }
        let pos_ms = self.capture.get(videoio::CAP_PROP_POS_MSEC).unwrap_or(0.0);
        let fallback = self.seq as f64 * 1000.0 / self.info.fps;
        // Some containers report no timestamps (0 after the first frame): derive from fps.
        let timestamp_ms = if pos_ms.is_finite() && (pos_ms > 0.0 || self.seq == 0) { pos_ms } else { fallback };
        let captured_at = Instant::now();
        let decode_ms = captured_at.duration_since(decode_started).as_secs_f64() * 1000.0;
        let frame = Frame { seq: self.seq, timestamp_ms, captured_at, decode_ms, image, name: None };
        self.seq += 1;
        Ok(Some(frame))
    }
}

pub struct CameraSource {
    capture: VideoCapture,
    index: i32,
    info: SourceInfo,
    seq: u64,
    started: Instant,
}

impl CameraSource {
    pub fn open(index: i32, width: Option<u32>, height: Option<u32>, fps: Option<f64>) -> Result<Self, SourceError> {
        let unavailable = || {
            if Path::new(&format!("/dev/video{index}")).exists() {
                SourceError::CameraBusy { index }
            } else {
                SourceError::CameraMissing { index }
            }
        };
        let capture = VideoCapture::new(index, videoio::CAP_V4L2).map_err(|_| unavailable())?;
        if !capture.is_opened().unwrap_or(false) {
            return Err(unavailable());
        }
        let mut capture = capture;
        if let Some(w) = width {
            capture.set(videoio::CAP_PROP_FRAME_WIDTH, w as f64)?;
        }
        if let Some(h) = height {
            capture.set(videoio::CAP_PROP_FRAME_HEIGHT, h as f64)?;
        }
        if let Some(f) = fps {
            capture.set(videoio::CAP_PROP_FPS, f)?;
        }
        let granted_w = capture.get(videoio::CAP_PROP_FRAME_WIDTH)? as u32;
        let granted_h = capture.get(videoio::CAP_PROP_FRAME_HEIGHT)? as u32;
        let granted_fps = capture.get(videoio::CAP_PROP_FPS)?;
        let differs = width.is_some_and(|w| w != granted_w)
            || height.is_some_and(|h| h != granted_h)
            || fps.is_some_and(|f| (f - granted_fps).abs() > 0.5);
        if differs {
            eprintln!(
                "camera {index}: asked for {}x{} at {} fps, granted {granted_w}x{granted_h} at {granted_fps:.1} fps",
                width.map_or("-".into(), |w| w.to_string()),
                height.map_or("-".into(), |h| h.to_string()),
                fps.map_or("-".into(), |f| f.to_string()),
            );
        }
        Ok(Self {
            capture,
            index,
            info: SourceInfo {
                width: granted_w,
                height: granted_h,
                fps: if granted_fps > 0.0 { granted_fps } else { FALLBACK_FPS },
                frame_count: None,
                live: true,
                description: format!("camera {index} ({granted_w}x{granted_h} at {granted_fps:.1} fps)"),
            },
            seq: 0,
            started: Instant::now(),
        })
    }
}

impl FrameSource for CameraSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let mut image = Mat::default();
        let ok = self.capture.read(&mut image).unwrap_or(false);
        if !ok || image.empty() {
            return Err(SourceError::CameraLost { index: self.index });
        }
        let captured_at = Instant::now();
        let frame = Frame {
            seq: self.seq,
            timestamp_ms: captured_at.duration_since(self.started).as_secs_f64() * 1000.0,
            captured_at,
            decode_ms: 0.0,
            image,
            name: None,
        };
        self.seq += 1;
        Ok(Some(frame))
    }
}

/// Camera indices that open, with their default mode: (index, width, height, fps).
/// A camera that opens, with its default mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraMode {
    pub index: i32,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

pub fn list_cameras(max_index: i32) -> Vec<CameraMode> {
    (0..max_index)
        .filter_map(|i| {
            let cap = VideoCapture::new(i, videoio::CAP_V4L2).ok()?;
            if !cap.is_opened().ok()? {
                return None;
            }
            let width = cap.get(videoio::CAP_PROP_FRAME_WIDTH).ok()? as u32;
            let height = cap.get(videoio::CAP_PROP_FRAME_HEIGHT).ok()? as u32;
            let fps = cap.get(videoio::CAP_PROP_FPS).ok()?;
            Some(CameraMode { index: i, width, height, fps })
        })
        .collect()
}

pub struct ImageFolder {
    files: Vec<PathBuf>,
    next: usize,
    seq: u64,
    /// Names of the files that did not decode, in name order.
    skipped: Vec<String>,
    info: SourceInfo,
}

/// The image files of a folder by extension, in name order.
pub fn image_files(dir: &Path) -> Result<(Vec<PathBuf>, usize), SourceError> {
    if !dir.is_dir() {
        return Err(SourceError::ImagesNotDir { path: dir.to_owned() });
    }
    let entries = std::fs::read_dir(dir).map_err(|source| SourceError::ImagesIo { path: dir.to_owned(), source })?;
    let mut files = Vec::new();
    let mut others = 0;
    for entry in entries {
        let path = entry.map_err(|source| SourceError::ImagesIo { path: dir.to_owned(), source })?.path();
        if !path.is_file() {
            continue;
        }
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default();
        if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            files.push(path);
        } else {
            others += 1;
        }
    }
    files.sort();
    Ok((files, others))
}

impl ImageFolder {
    pub fn open(dir: &Path) -> Result<Self, SourceError> {
        let (files, others) = image_files(dir)?;
        if others > 0 {
            eprintln!("warning: images {}: skipping {others} files that are not jpg/png/bmp", dir.display());
        }
        // The first decodable image sets the frame size.
        let first = files
            .iter()
            .find_map(|f| crate::imageops::read_bgr(f).ok().flatten())
            .ok_or_else(|| SourceError::ImagesEmpty { path: dir.to_owned() })?;
        Ok(Self {
            info: SourceInfo {
                width: first.cols() as u32,
                height: first.rows() as u32,
                fps: FALLBACK_FPS,
                frame_count: Some(files.len() as u64),
                live: false,
                description: format!("images {} ({} files)", dir.display(), files.len()),
            },
            files,
            next: 0,
            seq: 0,
            skipped: Vec::new(),
        })
    }
}

impl FrameSource for ImageFolder {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        while self.next < self.files.len() {
            let path = &self.files[self.next];
            self.next += 1;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            match crate::imageops::read_bgr(path)? {
                Some(image) => {
                    // The timestamp only paces the tracker's filters; records carry the name.
                    let frame = Frame {
                        seq: self.seq,
                        timestamp_ms: self.seq as f64 * 1000.0 / self.info.fps,
                        captured_at: Instant::now(),
                        decode_ms: 0.0,
                        image,
                        name: Some(name),
                    };
                    self.seq += 1;
                    return Ok(Some(frame));
                }
                None => {
                    eprintln!("warning: {}: not a decodable image, skipped", path.display());
                    self.skipped.push(name);
                }
            }
        }
        Ok(None)
    }

    fn skipped(&self) -> u64 {
        self.skipped.len() as u64
    }

    fn skipped_names(&self) -> Vec<String> {
        self.skipped.clone()
    }
}

/// A photo repeated as a video at [`FALLBACK_FPS`], each frame with fresh
/// Gaussian pixel noise: a steadiness test for still faces.
pub struct StillSource {
    image: Mat,
    frames: u64,
    noise_sigma: f64,
    seq: u64,
    info: SourceInfo,
}

impl StillSource {
    pub fn open(path: &Path, frames: u64, noise_sigma: f64) -> Result<Self, SourceError> {
        let image = crate::imageops::read_bgr(path)
            .ok()
            .flatten()
            .ok_or_else(|| SourceError::StillUnreadable { path: path.to_owned() })?;
        opencv::core::set_rng_seed(12345)?;
        Ok(Self {
            info: SourceInfo {
                width: image.cols() as u32,
                height: image.rows() as u32,
                fps: FALLBACK_FPS,
                frame_count: Some(frames),
                live: false,
                description: format!("still {} x {frames} frames, noise sigma {noise_sigma}", path.display()),
            },
            image,
            frames,
            noise_sigma,
            seq: 0,
        })
    }
}

impl FrameSource for StillSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.seq >= self.frames {
            return Ok(None);
        }
        let mut noise = Mat::new_rows_cols_with_default(
            self.image.rows(),
            self.image.cols(),
            opencv::core::CV_16SC3,
            opencv::core::Scalar::all(0.0),
        )?;
        opencv::core::randn(&mut noise, &opencv::core::Scalar::all(0.0), &opencv::core::Scalar::all(self.noise_sigma))?;
        let mut image = Mat::default();
        opencv::core::add(&self.image, &noise, &mut image, &opencv::core::no_array(), opencv::core::CV_8UC3)?;
        let frame = Frame {
            seq: self.seq,
            timestamp_ms: self.seq as f64 * 1000.0 / FALLBACK_FPS,
            captured_at: Instant::now(),
            decode_ms: 0.0,
            image,
            name: None,
        };
        self.seq += 1;
        Ok(Some(frame))
    }
}
