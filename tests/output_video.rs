//! The annotated video: the input's frame count and frame rate, and about the
//! file size of `ffmpeg -preset veryfast` on the same input.

use crate::util::*;

/// ffprobe's `r_frame_rate` of a video (e.g. "25/1").
fn frame_rate(path: &Path) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=r_frame_rate", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn annotated_videos_keep_frame_count_and_rate_at_about_ffmpegs_size() {
    let dir = tempfile::tempdir().unwrap();
    for input in [data("hamilton_clip.mp4"), shared("videos/pedestrians_1080p.mp4")] {
        let out = dir.path().join("out.mp4");
        let run = bin().args(["run", "--headless", "--video"]).arg(&input).arg("--output").arg(&out).output().unwrap();
        assert!(run.status.success(), "{}", stderr(&run));
        assert!(stderr(&run).contains("encoded by ffmpeg (x264 veryfast)"), "{}", stderr(&run));
        assert_eq!(ffprobe_frames(&out), ffprobe_frames(&input), "{}", input.display());
        assert_eq!(frame_rate(&out), frame_rate(&input), "{}", input.display());
        let reference = dir.path().join("ref.mp4");
        ffmpeg(&[
            "-i",
            input.to_str().unwrap(),
            "-an",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            reference.to_str().unwrap(),
        ]);
        let (size, want) = (std::fs::metadata(&out).unwrap().len(), std::fs::metadata(&reference).unwrap().len());
        assert!(size as f64 <= 1.5 * want as f64, "{}: {size} bytes, ffmpeg veryfast {want}", input.display());
    }
}

/// OpenCV's writer, chosen with `--encoder opencv`, also keeps every frame.
#[test]
fn the_opencv_encoder_keeps_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let run = bin()
        .args(["run", "--headless", "--encoder", "opencv", "--max-frames", "40", "--video"])
        .arg(data("hamilton_clip.mp4"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("encoded by OpenCV's writer"), "{}", stderr(&run));
    assert_eq!(ffprobe_frames(&out), 40);
}
