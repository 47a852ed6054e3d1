//! The sinks of a run, on the calling thread: the overlay drawn into each frame,
//! the keypoint file, the annotated video and the window. Opened only after every
//! input was checked, and finished (renamed into place) at the end.

use super::stages::Annotated;
use super::timer::StageTimer;
use super::RunOptions;
use crate::landmarks::Scheme;
use crate::output::KeypointWriter;
use crate::progress::progress_bar;
use crate::render::{self, OverlayOptions, OverlayStats, VideoSink, WindowSink};
use crate::source::SourceInfo;
use anyhow::{anyhow, Result};
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a paused window is polled for keys.
const PAUSE_POLL: Duration = Duration::from_millis(15);

/// Whether the run goes on after a sink step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    /// The window was closed (or Esc / q pressed).
    Quit,
}

pub(super) struct Sinks {
    scheme: Scheme,
    keypoints: Option<KeypointWriter>,
    video: Option<VideoSink>,
    window: Option<WindowSink>,
    bar: Option<ProgressBar>,
    overlay: OverlayOptions,
    stats: OverlayStats,
    last_shown: Option<Instant>,
}

impl Sinks {
    /// Creates the outputs `options` asks for, for frames of `info`.
    pub fn open(options: &RunOptions, info: &SourceInfo, scheme: Scheme) -> Result<Sinks> {
        let keypoints = match &options.keypoints {
            Some(p) => Some(KeypointWriter::create(p, scheme.num_points())?),
            None => None,
        };
        let video = match &options.output {
            Some(p) => Some(VideoSink::create(p, info.width, info.height, info.fps)?),
            None => None,
        };
        let window = match options.show_window {
            true => Some(
                WindowSink::open(&format!("facekp - {}", info.description), info.width, info.height)
                    .map_err(|e| anyhow!("window: {e}"))?,
            ),
            false => None,
        };
        let total = match (info.frame_count, options.max_frames) {
            (Some(n), Some(m)) => Some(n.min(m)),
            (n, m) => n.or(m),
        };
        let bar = (options.progress && !info.live).then(|| progress_bar(total.unwrap_or(0), "frames"));
        let overlay = options.overlay;
        let stats = OverlayStats::default();
        Ok(Sinks { scheme, keypoints, video, window, bar, overlay, stats, last_shown: None })
    }

    /// The time the last frame took to draw.
    pub fn draw_ms(&self) -> f64 {
        self.stats.times.draw_ms
    }

    /// Draws the overlay into `item`'s frame and writes it to the files.
    pub fn write(&mut self, item: &mut Annotated) -> Result<()> {
        let timer = StageTimer::start();
        // The draw time shown is the previous frame's (this one is being drawn).
        self.stats.times = crate::face::StageTimes { draw_ms: self.stats.times.draw_ms, ..item.times };
        render::draw_overlay(&mut item.frame.image, &item.faces, self.scheme, &self.overlay, Some(&self.stats))
            .map_err(|e| anyhow::Error::from(e).context("overlay"))?;
        self.stats.times.draw_ms = timer.ms();
        if let Some(k) = self.keypoints.as_mut() {
            k.write_frame(item.frame.seq, item.frame.timestamp_ms, &item.faces)?;
        }
        if let Some(v) = self.video.as_mut() {
            v.write(&item.frame.image).map_err(|e| anyhow::Error::from(e).context("--output: writing a frame"))?;
        }
        self.count_shown();
        Ok(())
    }

    /// Updates the frame rate of the stats line and the progress bar.
    fn count_shown(&mut self) {
        let now = Instant::now();
        if let Some(prev) = self.last_shown {
            let inst = 1.0 / now.duration_since(prev).as_secs_f64().max(1e-6);
            self.stats.fps = if self.stats.fps == 0.0 { inst } else { 0.9 * self.stats.fps + 0.1 * inst };
        }
        self.last_shown = Some(now);
        if let Some(b) = &self.bar {
            b.inc(1);
        }
    }

    /// Shows `item`'s frame in the window, if there is one; while the window is
    /// paused, waits here (until unpaused, closed or `stop`).
    pub fn show(&mut self, item: &Annotated, stop: &AtomicBool) -> Result<Flow> {
        let Some(w) = self.window.as_mut() else {
            return Ok(Flow::Continue);
        };
        let mut input = w.show(&item.frame.image, &mut self.overlay).map_err(|e| anyhow!("window: {e}"))?;
        while w.paused && !input.quit && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(PAUSE_POLL);
            input = w.poll(&mut self.overlay);
        }
        Ok(if input.quit { Flow::Quit } else { Flow::Continue })
    }

    /// Handles window keys while no frame arrives.
    pub fn poll(&mut self) -> Flow {
        let quit = self.window.as_mut().is_some_and(|w| w.poll(&mut self.overlay).quit);
        if quit {
            Flow::Quit
        } else {
            Flow::Continue
        }
    }

    /// Clears the progress bar.
    pub fn end_progress(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    /// Finishes the keypoint file and the video, returning their paths.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        let mut outputs = Vec::new();
        if let Some(k) = self.keypoints.take() {
            outputs.push(k.finish()?);
        }
        if let Some(v) = self.video.take() {
            outputs.push(v.finish()?);
        }
        Ok(outputs)
    }
}
