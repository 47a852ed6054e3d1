//! The annotated video, encoded on its own thread so the sinks never wait for the
//! encoder. `.mp4` goes to an `ffmpeg` child process fed raw BGR frames on its
//! stdin, encoding H.264 with x264's `veryfast` preset (OpenCV 4.6's writer cannot
//! set the preset, and its default, `medium`, is several times slower at 1080p);
//! without `ffmpeg` on the PATH, and for `.avi` (MJPEG), OpenCV's writer does it.
//! Either writes under a temporary name and renames it when complete; a video that
//! is dropped unfinished is removed. Frame pixels, 8-bit BGR.

use crate::fsutil;
use crate::output::{check_output_path, OutputError};
use crate::render::VideoSink;
use crossbeam_channel::{bounded, Sender};
use opencv::core::{Mat, Size};
use opencv::imgproc;
use opencv::prelude::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;

const FLAG: &str = "--output";
/// The x264 preset of the `ffmpeg` encoder: as fast as `ffmpeg -preset veryfast`
/// on the same input.
pub const X264_PRESET: &str = "veryfast";
/// x264's quality setting (its default is 23). The overlay's thin lines and the
/// stats line, which changes every frame, cost bits: at 23 the annotated
/// hamilton_clip is 1.6 times the size of the plain transcode, at 26 within 1.5
/// (docs/BENCHMARKS.md).
pub const X264_CRF: &str = "26";
/// Frames queued for the encoder thread (a few frames of slack; 24 MB at 1080p).
const ENCODE_QUEUE: usize = 4;

/// Which encoder writes an `.mp4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EncoderChoice {
    /// `ffmpeg` when it is on the PATH, else OpenCV's writer.
    #[default]
    Auto,
    /// An `ffmpeg` child process (x264 `veryfast`); an error when it cannot start.
    Ffmpeg,
    /// OpenCV's FFmpeg writer (x264's default preset).
    #[value(name = "opencv")]
    OpenCv,
}

/// What the encoder thread is sent.
enum Message {
    Frame(Mat),
    /// Finalise the video and rename it into place.
    Finish,
}

/// The annotated video, encoded on its own thread.
pub struct VideoEncoder {
    tx: Option<Sender<Message>>,
    thread: Option<JoinHandle<Result<PathBuf, OutputError>>>,
    path: PathBuf,
    /// Which writer was chosen, for the run's report.
    pub name: &'static str,
}

impl VideoEncoder {
    /// Opens the writer for `path` (checked first: extension, folder) and starts
    /// the encoder thread.
    pub fn create(path: &Path, size: Size, fps: f64, choice: EncoderChoice) -> Result<Self, OutputError> {
        let ext = check_output_path(FLAG, path, &["mp4", "avi"], VideoSink::SUPPORTED)?;
        let writer: Box<dyn FrameWriter> = match (ext.as_str(), choice) {
            ("mp4", EncoderChoice::Ffmpeg) => Box::new(FfmpegWriter::spawn(path, size, fps)?),
            ("mp4", EncoderChoice::Auto) if ffmpeg_available() => Box::new(FfmpegWriter::spawn(path, size, fps)?),
            _ => Box::new(VideoSink::create(path, size.width as u32, size.height as u32, fps)?),
        };
        let name = writer.name();
        let (tx, rx) = bounded::<Message>(ENCODE_QUEUE);
        let abandoned = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("encode".into())
            .spawn(move || {
                let mut writer = writer;
                for message in rx {
                    match message {
                        Message::Frame(frame) => writer.write(&frame)?,
                        Message::Finish => return writer.finish(),
                    }
                }
                // The sender went away without `Finish`: the writer's drop removes the file.
                Err(OutputError::Io { flag: FLAG, path: abandoned, source: std::io::Error::other("abandoned") })
            })
            .map_err(|source| OutputError::Io { flag: FLAG, path: path.to_owned(), source })?;
        Ok(Self { tx: Some(tx), thread: Some(thread), path: path.to_owned(), name })
    }

    /// Queues a frame (it waits only when the encoder is [`ENCODE_QUEUE`] frames behind).
    pub fn write(&mut self, frame: Mat) -> Result<(), OutputError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(Message::Frame(frame)).is_ok());
        if sent {
            return Ok(());
        }
        // The thread ended early: its error says why.
        self.tx = None;
        Err(self.join().err().unwrap_or_else(|| self.failed("the encoder stopped")))
    }

    /// Encodes the queued frames, finalises the file and renames it into place.
    pub fn finish(mut self) -> Result<PathBuf, OutputError> {
        if let Some(tx) = self.tx.take() {
            // A failed send means the thread already ended; join reports why.
            let _ = tx.send(Message::Finish);
        }
        self.join()
    }

    fn join(&mut self) -> Result<PathBuf, OutputError> {
        let Some(thread) = self.thread.take() else {
            return Err(self.failed("the encoder already finished"));
        };
        thread.join().unwrap_or_else(|_| Err(self.failed("the encoder thread panicked")))
    }

    fn failed(&self, reason: &str) -> OutputError {
        OutputError::Io { flag: FLAG, path: self.path.clone(), source: std::io::Error::other(reason.to_string()) }
    }
}

impl Drop for VideoEncoder {
    /// Unfinished: the thread sees the channel close and drops (removes) the file.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A video file being written, frame by frame, on the encoder thread.
trait FrameWriter: Send {
    fn name(&self) -> &'static str;
    fn write(&mut self, frame: &Mat) -> Result<(), OutputError>;
    fn finish(self: Box<Self>) -> Result<PathBuf, OutputError>;
}

impl FrameWriter for VideoSink {
    fn name(&self) -> &'static str {
        "OpenCV's writer"
    }

    fn write(&mut self, frame: &Mat) -> Result<(), OutputError> {
        VideoSink::write(self, frame).map_err(|e| OutputError::Io {
            flag: FLAG,
            path: self.path().to_owned(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    fn finish(self: Box<Self>) -> Result<PathBuf, OutputError> {
        VideoSink::finish(*self)
    }
}

/// Whether an `ffmpeg` program runs.
pub fn ffmpeg_available() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An `ffmpeg` child encoding the raw BGR frames written to its stdin.
struct FfmpegWriter {
    child: Child,
    stdin: Option<ChildStdin>,
    size: Size,
    resized: Mat,
    tmp: PathBuf,
    path: PathBuf,
    finished: bool,
}

impl FfmpegWriter {
    fn spawn(path: &Path, size: Size, fps: f64) -> Result<Self, OutputError> {
        let tmp = fsutil::temp_path(path);
        let io = |source| OutputError::Io { flag: FLAG, path: path.to_owned(), source };
        // Probe writability first, so a bad folder is one clear error.
        std::fs::File::create(&tmp).map_err(io)?;
        fsutil::register_temp(&tmp);
        let mut command = ffmpeg_command(&tmp, size, fps);
        // Its own process group: a Ctrl-C in the terminal reaches facekp, which
        // then finishes the video with every processed frame, not ffmpeg.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            fsutil::forget_temp(&tmp);
            io(std::io::Error::other(format!("cannot start ffmpeg ({e})")))
        })?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin, size, resized: Mat::default(), tmp, path: path.to_owned(), finished: false })
    }

    fn error(&self, reason: String) -> OutputError {
        OutputError::Io { flag: FLAG, path: self.path.clone(), source: std::io::Error::other(reason) }
    }

    /// Writes a frame's bytes (resized when its size differs) to ffmpeg's stdin.
    fn send(&mut self, frame: &Mat) -> Result<(), String> {
        let cv = |e: opencv::Error| e.to_string();
        let frame = if frame.size().map_err(cv)? == self.size && frame.is_continuous() {
            frame
        } else {
            imgproc::resize(frame, &mut self.resized, self.size, 0.0, 0.0, imgproc::INTER_AREA).map_err(cv)?;
            &self.resized
        };
        let bytes = frame.data_bytes().map_err(cv)?;
        match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(bytes).map_err(|e| e.to_string()),
            None => Err("ffmpeg's input is closed".to_string()),
        }
    }

    /// Waits for ffmpeg to exit; its last error line when it failed.
    fn wait(&mut self) -> Result<(), String> {
        self.stdin = None;
        let status = self.child.wait().map_err(|e| format!("ffmpeg: {e}"))?;
        if status.success() {
            return Ok(());
        }
        let mut log = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut log);
        }
        let last = log.lines().last().unwrap_or("no message").trim().to_string();
        Err(format!("ffmpeg failed ({status}): {last}"))
    }
}

/// `ffmpeg` reading raw BGR frames of `size` at `fps` from stdin and writing H.264
/// (x264 [`X264_PRESET`] at [`X264_CRF`], yuv420p, playable everywhere) to `out`.
fn ffmpeg_command(out: &Path, size: Size, fps: f64) -> Command {
    let mut command = Command::new("ffmpeg");
    command
        .args(["-hide_banner", "-loglevel", "error", "-nostats", "-y"])
        .args(["-f", "rawvideo", "-pix_fmt", "bgr24", "-s", &format!("{}x{}", size.width, size.height)])
        .args(["-r", &format!("{fps}"), "-i", "-", "-an"])
        // yuv420p needs even sizes: an odd last row or column is cut, as OpenCV's writer does.
        .args(["-vf", "crop=trunc(iw/2)*2:trunc(ih/2)*2"])
        .args(["-c:v", "libx264", "-preset", X264_PRESET, "-crf", X264_CRF, "-pix_fmt", "yuv420p", "-f", "mp4"])
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

impl FrameWriter for FfmpegWriter {
    fn name(&self) -> &'static str {
        "ffmpeg (x264 veryfast)"
    }

    fn write(&mut self, frame: &Mat) -> Result<(), OutputError> {
        let written = self.send(frame);
        // A broken pipe means ffmpeg ended: its own message says why.
        written.map_err(|reason| {
            let reason = self.wait().err().unwrap_or(reason);
            self.error(reason)
        })
    }

    fn finish(mut self: Box<Self>) -> Result<PathBuf, OutputError> {
        self.finished = true;
        let waited = self.wait();
        let result = waited
            .map_err(|reason| self.error(reason))
            .and_then(|()| std::fs::rename(&self.tmp, &self.path).map_err(|e| self.error(e.to_string())));
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        fsutil::forget_temp(&self.tmp);
        result.map(|()| self.path.clone())
    }
}

impl Drop for FfmpegWriter {
    fn drop(&mut self) {
        if !self.finished {
            self.stdin = None;
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_file(&self.tmp);
            fsutil::forget_temp(&self.tmp);
        }
    }
}
