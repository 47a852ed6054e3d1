//! The sinks of a run, on the calling thread: the overlay drawn into each frame,
//! the keypoint file, the annotated video (encoded on its own thread) and the
//! window (paced by the video's timestamps unless `--full-speed`). Opened only
//! after every input was checked, and finished (renamed into place) at the end.

use super::pace::{Display, Pacer};
use super::stages::Annotated;
use super::timer::StageTimer;
use super::{Pace, Progress, RunOptions};
use crate::encode::VideoEncoder;
use crate::landmarks::Scheme;
use crate::output::{KeypointWriter, RecordKind};
use crate::progress::progress_bar;
use crate::render::{self, OverlayOptions, OverlayStats, WindowInput, WindowSink};
use crate::source::{SourceInfo, SourceSpec};
use anyhow::{anyhow, Result};
use indicatif::ProgressBar;
use opencv::core::{Mat, Size};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a paused window is polled for keys.
const PAUSE_POLL: Duration = Duration::from_millis(15);
/// How far the right arrow jumps ahead in a paced video.
const SEEK_STEP: Duration = Duration::from_secs(5);

/// Whether the run goes on after a sink step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    /// The window was closed (or Esc / q pressed).
    Quit,
}

/// The progress bar a run advances: its own, or one shared over several runs.
enum Bar {
    Own(ProgressBar),
    Shared(ProgressBar),
}

pub(super) struct Sinks {
    scheme: Scheme,
    keypoints: Option<KeypointWriter>,
    video: Option<VideoEncoder>,
    window: Option<WindowSink>,
    /// The window's player clock (a video file shown at its pace).
    pacer: Option<Pacer>,
    bar: Option<Bar>,
    overlay: OverlayOptions,
    stats: OverlayStats,
    last_shown: Option<Instant>,
}

impl Sinks {
    /// Creates the outputs `options` asks for, for frames of `info`.
    pub fn open(options: &RunOptions, info: &SourceInfo, scheme: Scheme) -> Result<Sinks> {
        let kind = match options.source {
            SourceSpec::Images(_) => RecordKind::Images,
            _ => RecordKind::Timed,
        };
        let keypoints = match &options.keypoints {
            Some(p) => Some(KeypointWriter::create_for(p, scheme.num_points(), kind)?),
            None => None,
        };
        let size = Size::new(info.width as i32, info.height as i32);
        let video = match &options.output {
            Some(p) => Some(VideoEncoder::create(p, size, info.fps, options.encoder)?),
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
        let bar = match &options.progress {
            Progress::Off => None,
            Progress::Bar if info.live => None,
            Progress::Bar => Some(Bar::Own(progress_bar(total.unwrap_or(0), "frames"))),
            Progress::Shared(bar) => Some(Bar::Shared(bar.clone())),
        };
        let paced =
            window.is_some() && options.pace == Pace::Timestamps && matches!(options.source, SourceSpec::Video(_));
        let pacer = paced.then(|| Pacer::new(info.fps));
        let overlay = options.overlay;
        let stats = OverlayStats::default();
        Ok(Sinks { scheme, keypoints, video, window, pacer, bar, overlay, stats, last_shown: None })
    }

    /// The annotated video's encoder, for the run's report.
    pub fn encoder_name(&self) -> Option<&'static str> {
        self.video.as_ref().map(|v| v.name)
    }

    /// Displays the window skipped to keep the video's pace.
    pub fn display_skipped(&self) -> u64 {
        self.pacer.as_ref().map_or(0, |p| p.skipped)
    }

    /// The time the last frame took to draw.
    pub fn draw_ms(&self) -> f64 {
        self.stats.times.draw_ms
    }

    /// Draws the overlay into `item`'s frame and writes its keypoints.
    pub fn write(&mut self, item: &mut Annotated) -> Result<()> {
        let timer = StageTimer::start();
        // The draw time shown is the previous frame's (this one is being drawn).
        self.stats.times = crate::face::StageTimes { draw_ms: self.stats.times.draw_ms, ..item.times };
        render::draw_overlay(&mut item.frame.image, &item.faces, self.scheme, &self.overlay, Some(&self.stats))
            .map_err(|e| anyhow::Error::from(e).context("overlay"))?;
        self.stats.times.draw_ms = timer.ms();
        if let Some(k) = self.keypoints.as_mut() {
            match &item.frame.name {
                Some(name) => k.write_image(item.frame.seq, name, &item.faces)?,
                None => k.write_frame(item.frame.seq, item.frame.timestamp_ms, &item.faces)?,
            }
        }
        self.count_shown();
        Ok(())
    }

    /// Hands an annotated frame to the video encoder (after it was shown).
    pub fn encode(&mut self, image: Mat) -> Result<()> {
        match self.video.as_mut() {
            Some(v) => Ok(v.write(image)?),
            None => Ok(()),
        }
    }

    /// Updates the frame rate of the stats line and the progress bar.
    fn count_shown(&mut self) {
        let now = Instant::now();
        if let Some(prev) = self.last_shown {
            let inst = 1.0 / now.duration_since(prev).as_secs_f64().max(1e-6);
            self.stats.fps = if self.stats.fps == 0.0 { inst } else { 0.9 * self.stats.fps + 0.1 * inst };
        }
        self.last_shown = Some(now);
        if let Some(Bar::Own(b) | Bar::Shared(b)) = &self.bar {
            b.inc(1);
        }
    }

    /// Shows `item`'s frame in the window, if there is one: when its timestamp is
    /// due (a paced video; a late frame's display is skipped). While the window is
    /// paused, waits here (until unpaused, stepped, closed or `stop`).
    pub fn show(&mut self, item: &Annotated, stop: &AtomicBool) -> Result<Flow> {
        let Some(w) = self.window.as_mut() else {
            return Ok(Flow::Continue);
        };
        match self.pacer.as_mut().map(|p| p.plan(item.frame.timestamp_ms, Instant::now())) {
            Some(Display::Skip) => {
                let input = w.poll(&mut self.overlay);
                return Ok(self.follow(input, stop));
            }
            Some(Display::At(due)) => std::thread::sleep(due.saturating_duration_since(Instant::now())),
            Some(Display::Now) | None => {}
        }
        let input = w.show(&item.frame.image, &mut self.overlay).map_err(|e| anyhow!("window: {e}"))?;
        Ok(self.follow(input, stop))
    }

    /// Acts on the window's keys: a seek moves the clock ahead; a pause waits
    /// here, and the clock restarts at the next frame.
    fn follow(&mut self, mut input: WindowInput, stop: &AtomicBool) -> Flow {
        let Some(w) = self.window.as_mut() else {
            return Flow::Continue;
        };
        if let (true, Some(p)) = (input.seek, self.pacer.as_mut()) {
            p.jump(SEEK_STEP);
        }
        if w.paused {
            while w.paused && !input.quit && !input.step && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(PAUSE_POLL);
                input = w.poll(&mut self.overlay);
            }
            if let Some(p) = self.pacer.as_mut() {
                p.restart_next();
            }
        }
        if input.quit {
            Flow::Quit
        } else {
            Flow::Continue
        }
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

    /// Clears the run's own progress bar (a shared one goes on).
    pub fn end_progress(&mut self) {
        if let Some(Bar::Own(b)) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    /// Finishes the keypoint file and the video, returning their paths.
    /// The video goes first: it takes longest to finish and is likelier to fail.
    pub fn finish(mut self) -> Result<Vec<PathBuf>> {
        let video = self.video.take().map(VideoEncoder::finish).transpose()?;
        let keypoints = self.keypoints.take().map(KeypointWriter::finish).transpose()?;
        Ok(keypoints.into_iter().chain(video).collect())
    }
}
