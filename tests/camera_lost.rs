//! A camera that stops delivering frames mid-run (simulated: real frames of
//! hamilton_clip, then the error a camera read gives): the run ends with that error,
//! and both outputs are finalised with every frame processed before it.

use crate::util::*;
use facekp::detect::{DetectorConfig, DEFAULT_CASCADE};
use facekp::model::{Keypointer, Precision};
use facekp::pipeline::{self, RunOptions, Schedule};
use facekp::pose::CameraSpec;
use facekp::render::OverlayOptions;
use facekp::source::{Frame, FrameSource, SourceError, SourceInfo, SourceSpec, VideoSource};
use facekp::track::CropMode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

struct FailingCamera {
    video: VideoSource,
    info: SourceInfo,
    frames_before_failure: u64,
    sent: u64,
}

impl FrameSource for FailingCamera {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.sent == self.frames_before_failure {
            return Err(SourceError::CameraLost { index: 0 });
        }
        self.sent += 1;
        self.video.next_frame()
    }
}

#[test]
fn a_camera_that_stops_mid_run_ends_the_run_with_complete_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let video = VideoSource::open(&data("hamilton_clip.mp4")).unwrap();
    let mut info = video.info().clone();
    info.live = true;
    info.frame_count = None;
    let source = FailingCamera { video, info, frames_before_failure: 40, sent: 0 };
    let keypoints = dir.path().join("k.jsonl");
    let output = dir.path().join("o.mp4");
    let options = RunOptions {
        source: SourceSpec::Camera { index: 0, width: None, height: None, fps: None },
        schedule: Schedule { detect_every: 10, crops: CropMode::Keypoints },
        smoothing: None,
        camera: CameraSpec::default(),
        record_faces: false,
        show_window: false,
        output: Some(output.clone()),
        keypoints: Some(keypoints.clone()),
        max_frames: None,
        progress: pipeline::Progress::Off,
        overlay: OverlayOptions::default(),
        pace: pipeline::Pace::FullSpeed,
        encoder: facekp::encode::EncoderChoice::Auto,
        on_interrupt: pipeline::OnInterrupt::Finalise,
    };
    let weights = weights("face68.safetensors");
    let model = Keypointer::load(&weights, tch::Device::Cpu, Precision::auto(tch::Device::Cpu), None).unwrap();
    let prepared = pipeline::Prepared::new(
        Box::new(source),
        options,
        DetectorConfig::default(),
        Path::new(DEFAULT_CASCADE),
        model,
    )
    .unwrap();
    let err = pipeline::run(prepared, Arc::new(AtomicBool::new(false))).expect_err("a lost camera is an error");
    assert!(format!("{err:#}").contains("camera 0: stopped delivering frames"), "{err:#}");
    // A live source may drop stale frames, so up to 40 were processed; every one is in both files.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&keypoints)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("complete JSON lines"))
        .collect();
    assert!(!lines.is_empty() && lines.len() <= 40, "{} frames", lines.len());
    assert_eq!(ffprobe_frames(&output), lines.len() as u64, "the video holds every processed frame");
}
