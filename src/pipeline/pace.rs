//! Player pace for a video file shown in a window: each frame is due at the
//! wall-clock instant its timestamp says, counted from the first frame shown.
//! A frame that comes early is shown when due; one that comes more than a frame
//! interval late has its display skipped (never its keypoints or its frame in the
//! annotated video), unless nothing was shown for [`DISPLAY_AT_LEAST_EVERY`], so
//! the window keeps moving when processing is slower than the video.

use std::time::{Duration, Instant};

/// The longest the window goes without a new frame while processing lags.
pub const DISPLAY_AT_LEAST_EVERY: Duration = Duration::from_millis(100);
/// A frame due further ahead than this (a timestamp jump in a stream) restarts
/// the clock instead of freezing the window.
const LONGEST_WAIT: Duration = Duration::from_secs(1);

/// What to do with a frame's display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Show it now.
    Now,
    /// Show it at this instant.
    At(Instant),
    /// Skip its display: it is late.
    Skip,
}

/// The player clock of one video.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// The instant the frame with this timestamp (ms) was due.
    anchor: Option<(Instant, f64)>,
    interval: Duration,
    last_shown: Option<Instant>,
    /// Displays skipped so far.
    pub skipped: u64,
}

impl Pacer {
    /// A clock for a video of `fps` frames per second.
    pub fn new(fps: f64) -> Self {
        let interval = Duration::from_secs_f64(1.0 / fps.clamp(1.0, 1000.0));
        Self { anchor: None, interval, last_shown: None, skipped: 0 }
    }

    /// When to show the frame with `timestamp_ms`, at `now`.
    pub fn plan(&mut self, timestamp_ms: f64, now: Instant) -> Display {
        let Some((start, start_ms)) = self.anchor else {
            return self.restart(timestamp_ms, now);
        };
        let offset = Duration::from_secs_f64(((timestamp_ms - start_ms) / 1000.0).max(0.0));
        let due = start + offset;
        if due > now + LONGEST_WAIT {
            return self.restart(timestamp_ms, now);
        }
        if due > now {
            self.last_shown = Some(due);
            return Display::At(due);
        }
        let late = now.duration_since(due);
        let stale = self.last_shown.is_some_and(|t| now.duration_since(t) < DISPLAY_AT_LEAST_EVERY);
        if late > self.interval && stale {
            self.skipped += 1;
            return Display::Skip;
        }
        self.last_shown = Some(now);
        Display::Now
    }

    /// Starts the clock again at the next frame (after a pause or a step).
    pub fn restart_next(&mut self) {
        self.anchor = None;
    }

    /// Moves the clock `by` ahead: the frames until then are processed as fast as
    /// they come, their displays skipped (a seek forward).
    pub fn jump(&mut self, by: Duration) {
        if let Some((start, ms)) = self.anchor {
            self.anchor = Some((start.checked_sub(by).unwrap_or(start), ms));
        }
    }

    fn restart(&mut self, timestamp_ms: f64, now: Instant) -> Display {
        self.anchor = Some((now, timestamp_ms));
        self.last_shown = Some(now);
        Display::Now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Frames that come early wait for their timestamps, measured from the first.
    #[test]
    fn early_frames_wait_for_their_timestamps() {
        let t0 = Instant::now();
        let mut p = Pacer::new(25.0);
        assert_eq!(p.plan(1000.0, t0), Display::Now);
        assert_eq!(p.plan(1040.0, t0 + MS(5)), Display::At(t0 + MS(40)));
        assert_eq!(p.plan(1080.0, t0 + MS(41)), Display::At(t0 + MS(80)));
        assert_eq!(p.skipped, 0);
    }

    /// Late frames are skipped, but the window still gets a frame every 100 ms;
    /// a pause restarts the clock so nothing is skipped after it.
    #[test]
    fn late_frames_are_skipped_but_the_window_keeps_moving() {
        let t0 = Instant::now();
        let mut p = Pacer::new(100.0);
        assert_eq!(p.plan(0.0, t0), Display::Now);
        // Processing at 50 fps for a 100 fps video: every frame is late.
        let shown: Vec<bool> = (1..=20u64).map(|i| p.plan(i as f64 * 10.0, t0 + MS(20 * i)) != Display::Skip).collect();
        assert_eq!(shown.iter().filter(|&&s| s).count(), 4, "{shown:?}");
        assert_eq!(p.skipped, 16);
        // A frame less than an interval late is still shown.
        let mut q = Pacer::new(25.0);
        q.plan(0.0, t0);
        assert_eq!(q.plan(40.0, t0 + MS(60)), Display::Now);
        p.restart_next();
        assert_eq!(p.plan(210.0, t0 + MS(5000)), Display::Now);
        assert_eq!(p.plan(220.0, t0 + MS(5001)), Display::At(t0 + MS(5010)));
    }

    /// A seek forward makes the next frames late (skipped) until the clock is
    /// reached; a timestamp far ahead restarts the clock instead of a long wait.
    #[test]
    fn jumps_and_timestamp_gaps() {
        let t0 = Instant::now();
        let mut p = Pacer::new(25.0);
        p.plan(0.0, t0);
        p.jump(Duration::from_secs(5));
        assert_eq!(p.plan(40.0, t0 + MS(1)), Display::Skip);
        assert_eq!(p.plan(80.0, t0 + MS(150)), Display::Now, "a late frame shows after a display gap");
        assert_eq!(p.plan(60_000.0, t0 + MS(151)), Display::Now, "a gap restarts the clock");
        assert_eq!(p.plan(60_040.0, t0 + MS(152)), Display::At(t0 + MS(191)));
    }
}
