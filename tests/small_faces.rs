//! Small faces in HD video: found by the tile search within 20 frames, and
//! followed.

use crate::util::*;

/// Hamilton's face (frame 190 of the fixture) shrunk to about 50 px wide and
/// placed in a noisy 1920x1080 frame for 30 frames: it is found by frame 19 and
/// followed on every frame after, where it was placed, with its outer eye corners
/// about 24 px apart. The 320 px whole-frame search sees this face 8 px wide, so
/// only the tiles can find it (before the tile levels, no frame had a face).
#[test]
fn a_small_face_in_a_1080p_video_is_found_within_20_frames() {
    let dir = tempfile::tempdir().unwrap();
    let video = small_face_video(dir.path());
    let keypoints = dir.path().join("k.jsonl");
    run_ok(&["run", "--headless", "--video", video.to_str().unwrap(), "--keypoints", keypoints.to_str().unwrap()]);
    let rows = jsonl(&keypoints);
    assert_eq!(rows.len(), 30);
    let faces: Vec<&Vec<serde_json::Value>> = rows.iter().map(|r| r["faces"].as_array().unwrap()).collect();
    let first = faces.iter().position(|f| !f.is_empty()).expect("the small face is found");
    assert!(first < 20, "found on frame {first}");
    for (n, f) in faces.iter().enumerate().skip(first) {
        assert_eq!(f.len(), 1, "frame {n}: {f:?}");
        let p = f[0]["points"].as_array().unwrap();
        let xy = |i: usize| (p[i][0].as_f64().unwrap(), p[i][1].as_f64().unwrap());
        let ((x36, y36), (x45, y45)) = (xy(36), xy(45));
        let iod = (x36 - x45).hypot(y36 - y45);
        assert!((20.0..30.0).contains(&iod), "frame {n}: outer eye corners {iod:.1} px apart");
        let (cx, cy) = ((x36 + x45) / 2.0, (y36 + y45) / 2.0);
        assert!((1300.0..1410.0).contains(&cx) && (640.0..750.0).contains(&cy), "frame {n}: eyes at {cx:.0},{cy:.0}");
    }
}

/// The 30-frame 1080p clip of the tests: Hamilton's face about 50 px wide at
/// 1300,640, on noise.
fn small_face_video(dir: &std::path::Path) -> std::path::PathBuf {
    let video = dir.join("small.mp4");
    ffmpeg(&[
        "-i",
        data("hamilton_clip.mp4").to_str().unwrap(),
        "-vf",
        "select=eq(n\\,190),crop=240:240:160:20,scale=110:110,pad=1920:1080:1300:640:0x606060,\
         loop=29:1:0,noise=alls=6:allf=t,format=yuv420p",
        "-frames:v",
        "30",
        "-r",
        "25",
        video.to_str().unwrap(),
    ]);
    video
}

/// `bench` reports the tile searches of HD video: their count and median time, on
/// the whole clip and on a run of 5 frames.
#[test]
fn bench_reports_the_tile_searches_of_hd_video() {
    let dir = tempfile::tempdir().unwrap();
    let video = small_face_video(dir.path());
    let report = |frames: &str| -> serde_json::Value {
        let out =
            bin().args(["bench", "--json", "--video", video.to_str().unwrap(), "--frames", frames]).output().unwrap();
        assert!(out.status.success(), "--frames {frames}: {}", stderr(&out));
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap()
    };
    let whole = report("30");
    // Frames 0, 10 and 20 search the whole frame; most others search a tile.
    let tiles = whole["tile_searches"].as_u64().unwrap();
    assert!((20..=27).contains(&tiles), "{whole}");
    assert!(whole["tile_ms"].as_f64().unwrap() > 0.0, "{whole}");
    let short = report("5");
    assert_eq!(short["tile_searches"].as_u64().unwrap(), 4, "{short}");
}
