//! A video shown in a window plays at its own frame rate; displays that fall
//! behind are skipped, never keypoint lines or frames of the annotated video.

use crate::util::*;
use crate::window::xvfb;
use std::time::Instant;

/// Runs `facekp run` with a window on a fresh Xvfb display; returns the output
/// and the wall-clock seconds it took.
fn run_in_window(args: &[&std::ffi::OsStr]) -> (Output, f64) {
    let (mut xvfb, display) = xvfb();
    let started = Instant::now();
    let out = bin().env("DISPLAY", &display).arg("run").args(args).output().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let _ = xvfb.kill();
    let _ = xvfb.wait();
    (out, secs)
}

/// hamilton_clip is 275 frames at 29.97 fps: 9.2 s. In a window it takes at
/// least most of that (a bound on pace, not on speed: headless it runs at about
/// 170 fps), and the keypoint file still has every frame.
#[test]
fn a_window_plays_the_clip_in_about_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let keypoints = dir.path().join("k.jsonl");
    let video = data("hamilton_clip.mp4");
    let (out, secs) =
        run_in_window(&["--video".as_ref(), video.as_os_str(), "--keypoints".as_ref(), keypoints.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let duration = 275.0 / 29.97;
    assert!(secs >= 0.8 * duration, "played in {secs:.1} s, the clip lasts {duration:.1} s");
    assert_eq!(jsonl(&keypoints).len(), 275);
}

/// The clip retimed to 600 fps (0.46 s) cannot be processed that fast: displays
/// are skipped, and both outputs still have every frame, in order.
#[test]
fn skipped_displays_keep_every_frame_in_the_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let fast = dir.path().join("fast.mp4");
    let h = data("hamilton_clip.mp4");
    ffmpeg(&[
        "-i",
        h.to_str().unwrap(),
        "-vf",
        "setpts=N/600/TB",
        "-r",
        "600",
        "-c:v",
        "libx264",
        "-an",
        fast.to_str().unwrap(),
    ]);
    let (keypoints, video) = (dir.path().join("k.jsonl"), dir.path().join("o.mp4"));
    let args = [
        "--video".as_ref(),
        fast.as_os_str(),
        "--keypoints".as_ref(),
        keypoints.as_os_str(),
        "--output".as_ref(),
        video.as_os_str(),
    ];
    let (out, _) = run_in_window(&args);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("frames not displayed to keep the video's pace"), "{log}");
    let rows = jsonl(&keypoints);
    assert_eq!(rows.len(), 275, "{log}");
    assert!(rows.iter().enumerate().all(|(i, r)| r["frame"] == i as u64));
    assert_eq!(ffprobe_frames(&video), 275);
}

/// `--full-speed` does not pace: no display is skipped to keep a pace.
#[test]
fn full_speed_does_not_pace() {
    let dir = tempfile::tempdir().unwrap();
    let fast = dir.path().join("fast.mp4");
    let h = data("hamilton_clip.mp4");
    ffmpeg(&[
        "-i",
        h.to_str().unwrap(),
        "-frames:v",
        "60",
        "-vf",
        "setpts=N/600/TB",
        "-r",
        "600",
        "-c:v",
        "libx264",
        "-an",
        fast.to_str().unwrap(),
    ]);
    let (out, _) = run_in_window(&["--full-speed".as_ref(), "--video".as_ref(), fast.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("not displayed"), "{}", stderr(&out));
}
