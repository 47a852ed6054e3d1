//! Integration tests: the real `facekp` binary with the shipped weights on real
//! videos and photos (fixtures in tests/data, copied from ../shared).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_facekp"))
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared").join(rel)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs ffmpeg (quiet, overwriting) with `args`.
fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).output().expect("ffmpeg runs");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", stderr(&out));
}

/// The lines of a JSON Lines file, each parsed (a cut-off line fails the test).
fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("complete JSON lines"))
        .collect()
}

/// Frames of a video as ffprobe counts them by decoding.
fn ffprobe_frames(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(out.status.success(), "ffprobe failed on {}: {}", path.display(), stderr(&out));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("ffprobe prints a frame count")
}

mod run {
    use super::*;
    use serde_json::Value;

    struct Point {
        x: f64,
        y: f64,
    }

    struct FaceRow {
        bx: f64,
        by: f64,
        bw: f64,
        bh: f64,
        points: Vec<Point>,
    }

    fn read_jsonl(path: &Path) -> Vec<(u64, Vec<FaceRow>)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("each line is JSON");
                let faces = v["faces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| FaceRow {
                        bx: f["box_x"].as_f64().unwrap(),
                        by: f["box_y"].as_f64().unwrap(),
                        bw: f["box_w"].as_f64().unwrap(),
                        bh: f["box_h"].as_f64().unwrap(),
                        points: f["points"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|p| Point { x: p[0].as_f64().unwrap(), y: p[1].as_f64().unwrap() })
                            .collect(),
                    })
                    .collect();
                (v["frame"].as_u64().unwrap(), faces)
            })
            .collect()
    }

    /// Runs the binary headless on hamilton_clip and checks both outputs.
    fn check_hamilton(model: &str, points: usize, eyes: (usize, usize)) {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("out.mp4");
        let keypoints = dir.path().join("out.jsonl");
        let out = bin()
            .args(["run", "--headless", "--model", model, "--video"])
            .arg(data("hamilton_clip.mp4"))
            .arg("--output")
            .arg(&video)
            .arg("--keypoints")
            .arg(&keypoints)
            .output()
            .unwrap();
        assert!(out.status.success(), "facekp run failed: {}", stderr(&out));
        assert!(stderr(&out).contains("device: cpu"), "prints the device: {}", stderr(&out));

        let rows = read_jsonl(&keypoints);
        let input_frames = ffprobe_frames(&data("hamilton_clip.mp4"));
        assert_eq!(rows.len() as u64, input_frames, "one JSONL line per frame");
        for (i, (frame, _)) in rows.iter().enumerate() {
            assert_eq!(*frame, i as u64, "frames in order");
        }
        let with_face = rows.iter().filter(|(_, f)| !f.is_empty()).count();
        assert!(with_face * 10 >= rows.len() * 8, "faces on most frames: {with_face} of {}", rows.len());

        let (mut inside, mut total, mut eyes_ok, mut faces) = (0, 0, 0, 0);
        for face in rows.iter().flat_map(|(_, f)| f) {
            assert_eq!(face.points.len(), points);
            faces += 1;
            // Points lie inside the face box, widened by half its size for the jaw and chin.
            let (mx, my) = (face.bw * 0.5, face.bh * 0.5);
            for p in &face.points {
                total += 1;
                inside += (p.x >= face.bx - mx
                    && p.x <= face.bx + face.bw + mx
                    && p.y >= face.by - my
                    && p.y <= face.by + face.bh + my) as usize;
            }
            // The subject's right eye (image left) is left of the subject's left eye.
            eyes_ok += (face.points[eyes.0].x < face.points[eyes.1].x) as usize;
        }
        assert!(inside * 100 >= total * 99, "{inside} of {total} points inside their box");
        assert!(eyes_ok * 100 >= faces * 98, "eyes ordered on {eyes_ok} of {faces} faces");
        assert_eq!(ffprobe_frames(&video), input_frames, "annotated video keeps every frame");
    }

    #[test]
    fn hamilton_68_point_model_writes_video_and_keypoints() {
        check_hamilton("68", 68, (36, 45));
    }

    #[test]
    fn hamilton_15_point_model_writes_video_and_keypoints() {
        // 15-point: right_eye_center (1) is on the image left of left_eye_center (0).
        check_hamilton("15", 15, (1, 0));
    }

    #[test]
    fn csv_keypoints_have_the_documented_header_and_a_row_per_face() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("k.csv");
        let out = bin()
            .args(["run", "--headless", "--max-frames", "20", "--video"])
            .arg(data("hamilton_clip.mp4"))
            .arg("--keypoints")
            .arg(&csv)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = std::fs::read_to_string(&csv).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(&header[..8], &["frame", "timestamp_ms", "face", "track", "box_x", "box_y", "box_w", "box_h"]);
        assert_eq!(header.len(), 8 + 2 * 68);
        let rows: Vec<Vec<f64>> = lines.map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
        assert!(rows.len() >= 15, "most of 20 frames have a face: {} rows", rows.len());
        assert!(rows.iter().all(|r| r.len() == header.len() && r[0] < 20.0));
        // Timestamps follow the video's 29.97 fps.
        let last = rows.last().unwrap();
        assert!((last[1] - last[0] * 1000.0 / 29.97).abs() < 1.0, "timestamp {} for frame {}", last[1], last[0]);
    }

    #[test]
    fn image_folder_group_photo_finds_several_faces() {
        let dir = tempfile::tempdir().unwrap();
        let imgs = dir.path().join("imgs");
        std::fs::create_dir(&imgs).unwrap();
        std::fs::copy(shared("samples/groups/2008_002470.jpg"), imgs.join("a.jpg")).unwrap();
        std::fs::copy(shared("samples/ibug68/einstein.jpg"), imgs.join("b.jpg")).unwrap();
        std::fs::write(imgs.join("notes.txt"), "not an image").unwrap();
        let keypoints = dir.path().join("k.jsonl");
        let out = bin()
            .args(["run", "--headless", "--images"])
            .arg(&imgs)
            .arg("--keypoints")
            .arg(&keypoints)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("skipping 1 files"), "{}", stderr(&out));
        let rows = read_jsonl(&keypoints);
        assert_eq!(rows.len(), 2);
        assert!(rows[0].1.len() >= 2, "group photo: {} faces", rows[0].1.len());
        assert_eq!(rows[1].1.len(), 1, "einstein: one face");
    }
}

mod accuracy {
    use super::*;
    use facekp::detect::{DetectorConfig, HaarDetector, DEFAULT_CASCADE};
    use facekp::geometry::{frame_points_from_unit, CropSquare, Point, Rect};
    use facekp::imageops;
    use facekp::landmarks::Scheme;
    use facekp::model::{Keypointer, Precision};
    use facekp::train::data::read_pts;
    use facekp::train::eval::nme;
    use facekp::train::prior::match_detection;

    fn weights(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(name)
    }

    /// The precisions this CPU runs: f32, and bf16 where it has AVX512-BF16 (as
    /// the CI machine does).
    fn precisions() -> Vec<Precision> {
        let mut all = vec![Precision::F32];
        if Precision::auto(tch::Device::Cpu) == Precision::Bf16 {
            all.push(Precision::Bf16);
        } else {
            eprintln!("this CPU has no AVX512-BF16: bf16 inference is not tested");
        }
        all
    }

    /// Calls `test` for each shipped model in each precision with the einstein
    /// photo, its true points in the model's scheme, and the face's crop placed from
    /// them as `eval --boxes truth` does (the Haar cascade misses his tilted face).
    fn on_einstein(
        mut test: impl FnMut(&str, Scheme, &Keypointer, &opencv::core::Mat, &[Point], &CropSquare, Vec<u8>),
    ) {
        let gray = imageops::read_gray(&data("einstein.jpg")).unwrap().unwrap();
        let truth68 = read_pts(&data("einstein.pts")).unwrap();
        for (file, scheme) in [("face68.safetensors", Scheme::P68), ("face15.safetensors", Scheme::P15)] {
            for precision in precisions() {
                let model = Keypointer::load(&weights(file), tch::Device::Cpu, precision, None).unwrap();
                let cfg = model.config();
                let truth = scheme.from_68(&truth68);
                let crop = cfg.crop.crop_for_detection(&cfg.crop.detection_for_points(&truth));
                let pixels = imageops::extract_crop(&gray, &crop, cfg.input_size).unwrap();
                test(&format!("{file} ({})", precision.name()), scheme, &model, &gray, &truth, &crop, pixels);
            }
        }
    }

    /// The shipped models on a human-annotated iBUG sample photo: NME within bounds.
    #[test]
    fn shipped_models_locate_einstein_keypoints() {
        on_einstein(|file, scheme, model, _, truth, crop, pixels| {
            let unit = model.infer(&[pixels]).unwrap().remove(0);
            // Image positions, plus the iBUG labels' origin (the default head's).
            let o = model.label_origin();
            let size = model.config().input_size;
            let pred: Vec<_> = frame_points_from_unit(&unit, crop, size).into_iter().map(|p| p + o).collect();
            let err = nme(&pred, truth, scheme);
            eprintln!("{file}: NME {err:.4} on einstein");
            assert!(err < 0.10, "{file}: NME {err:.4} on einstein");
        });
    }

    /// A face gets the same points alone and in a batch. In f32, at batch 1 the
    /// 68-point network runs some convs through oneDNN instead of libtorch's im2col
    /// path (`ConvBn::prefers_onednn`), in a batch libtorch chooses; the two agree
    /// to float rounding. In bf16, an f32 conv's path can differ in the last bit,
    /// which a following bf16 conv may round the other way: the points agree to
    /// 0.05 input pixels (on the val faces at most 0.014 px).
    #[test]
    fn a_face_alone_and_in_a_batch_gets_the_same_points() {
        on_einstein(|file, _, model, gray, _, _, face| {
            let cfg = model.config();
            let seated = cfg.crop.crop_for_detection(&Rect::new(300.0, 450.0, 60.0, 60.0));
            let other = imageops::extract_crop(gray, &seated, cfg.input_size).unwrap();
            let alone = model.infer(&[face.clone()]).unwrap().remove(0);
            let batch = model.infer(&[other, face]).unwrap().remove(1);
            let diff =
                alone.iter().zip(&batch).map(|(a, b)| (a.x - b.x).abs().max((a.y - b.y).abs())).fold(0f32, f32::max);
            let bound = match model.precision() {
                Precision::F32 => 1e-5,
                Precision::Bf16 => 0.05 / cfg.input_size as f32,
            };
            assert!(diff < bound, "{file}: points differ by {diff} (unit crop space) alone and in a batch");
        });
    }

    /// bf16 inference (the default on CPUs with AVX512-BF16) finds the points f32
    /// does, on the helen68 val photos with crops placed from the true points: on
    /// average within 0.1 input pixels and everywhere within 0.5 (measured: mean
    /// 0.028 and at most 0.18 px for the 68-point model at 224 px, 0.015 and 0.095
    /// for the 15-point model at 96 px). The models' own errors are a few pixels.
    #[test]
    fn bf16_inference_finds_the_f32_points() {
        if !precisions().contains(&Precision::Bf16) {
            return;
        }
        let dir = shared("datasets/helen68");
        let faces = facekp::train::data::read_csv(&dir.join("val.csv")).unwrap();
        assert!(faces.len() >= 60, "{} val faces", faces.len());
        for file in ["face68.safetensors", "face15.safetensors"] {
            let [f32, bf16] = [Precision::F32, Precision::Bf16]
                .map(|p| Keypointer::load(&weights(file), tch::Device::Cpu, p, None).unwrap());
            let cfg = f32.config();
            let (mut sum, mut worst, mut n) = (0f32, 0f32, 0);
            for face in &faces {
                let gray = imageops::read_gray(&dir.join("images").join(&face.image)).unwrap().unwrap();
                let truth = cfg.scheme.from_68(&face.points);
                let crop = cfg.crop.crop_for_detection(&cfg.crop.detection_for_points(&truth));
                let pixels = vec![imageops::extract_crop(&gray, &crop, cfg.input_size).unwrap()];
                let (a, b) = (f32.infer(&pixels).unwrap().remove(0), bf16.infer(&pixels).unwrap().remove(0));
                for (p, q) in a.iter().zip(&b) {
                    let d = p.distance(*q) * cfg.input_size as f32;
                    (sum, worst, n) = (sum + d, worst.max(d), n + 1);
                }
            }
            let mean = sum / n as f32;
            eprintln!("{file}: bf16 against f32 points, mean {mean:.4} px, largest {worst:.4} px");
            assert!(
                mean < 0.1 && worst < 0.5,
                "{file}: bf16 points differ from f32 by {mean:.4} px on average, {worst:.4} at most"
            );
        }
    }

    /// `facekp eval` on the val splits of ../shared/datasets with Haar boxes (as `run`
    /// finds faces): the shipped models reach the project's targets, NME at most
    /// 0.045 on ytf68 and 0.040 on helen68 (68 points) and 0.040 on ytf68 (15
    /// points), far below dlib's 68-point predictor measured the same way on ytf68
    /// (0.068, and 0.061 for the 15 derived points). The detector finds at least
    /// 90% of the faces and under 3% of them fail (NME > 0.1). No shift of every
    /// point remains: the mean signed error is within 0.005 of the inter-ocular
    /// distance in x and y (the models trained without a label origin were at
    /// -0.025 in x on ytf68).
    #[test]
    fn shipped_models_beat_dlib_and_reach_the_targets_on_the_val_splits() {
        for (points, set, max_nme) in [("68", "ytf68", 0.045), ("68", "helen68", 0.040), ("15", "ytf68", 0.040)] {
            let csv = shared(&format!("datasets/{set}/val.csv"));
            let out = bin().args(["eval", "--points", points, "--json", "--csv"]).arg(&csv).output().unwrap();
            assert!(out.status.success(), "eval {points} {set}: {}", stderr(&out));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
            let (faces, detected) = (report["faces"].as_f64().unwrap(), report["detected"].as_f64().unwrap());
            let (nme, failures) = (report["nme"].as_f64().unwrap(), report["failure_rate"].as_f64().unwrap());
            let bias = [report["bias"][0].as_f64().unwrap(), report["bias"][1].as_f64().unwrap()];
            eprintln!(
                "{points}-point on {set} ({}): NME {nme:.4}, {detected} of {faces} detected, failure rate {failures:.4}, bias {bias:?}",
                report["precision"]
            );
            assert!(nme <= max_nme, "{points}-point on {set}: NME {nme:.4}, target {max_nme}");
            assert!(detected >= 0.9 * faces, "{points}-point on {set}: {detected} of {faces} detected");
            assert!(failures < 0.03, "{points}-point on {set}: failure rate {failures:.4}");
            assert!(bias.iter().all(|b| b.abs() < 0.005), "{points}-point on {set}: every point shifted by {bias:?}");
        }
    }

    /// The Haar detector finds the seated man in the einstein photo and not Einstein's
    /// tilted face: matching by IoU keeps the wrong face out of the evaluation.
    #[test]
    fn detections_are_matched_to_the_annotated_face_only() {
        let gray = imageops::read_gray(&data("einstein.jpg")).unwrap().unwrap();
        let truth68 = read_pts(&data("einstein.pts")).unwrap();
        let mut det = HaarDetector::new(Path::new(DEFAULT_CASCADE), DetectorConfig::default()).unwrap();
        let found = det.detect(&gray).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].y > 400.0, "the seated man, lower in the photo: {found:?}");
        assert_eq!(match_detection(&found, &truth68), None);
    }
}

mod window {
    use super::*;
    use std::time::{Duration, Instant};
    use x11rb::connection::Connection;

    /// Runs facekp with its window under Xvfb, screenshots the display and looks for
    /// the overlay's region colours over the face.
    /// Starts Xvfb on a free display (it prints the number: -displayfd 1).
    fn xvfb() -> (std::process::Child, String) {
        let mut xvfb = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", "800x600x24", "-nolisten", "tcp"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("Xvfb runs");
        let mut number = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(xvfb.stdout.take().unwrap()).read_line(&mut number).unwrap();
        (xvfb, format!(":{}", number.trim()))
    }

    #[test]
    fn window_shows_the_overlay_under_xvfb() {
        let (mut xvfb, display) = xvfb();
        let display = display.as_str();
        let dir = tempfile::tempdir().unwrap();
        let keypoints = dir.path().join("k.jsonl");
        let mut app = bin()
            .env("DISPLAY", display)
            .args(["run", "--video"])
            .arg(data("hamilton_clip.mp4"))
            .arg("--keypoints")
            .arg(&keypoints)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let shot = dir.path().join("shot.png");
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut best = 0usize;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(700));
            let grabbed = Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "x11grab", "-video_size", "800x600", "-i", display, "-frames:v", "1"])
                .arg(&shot)
                .status()
                .unwrap();
            assert!(grabbed.success(), "screenshot");
            let img = facekp::imageops::read_bgr(&shot).unwrap().unwrap();
            best = best.max(count_region_colours(&img));
            if best >= 3 || app.try_wait().unwrap().is_some() {
                break;
            }
        }
        let _ = app.kill();
        let status = app.wait().unwrap();
        let _ = xvfb.kill();
        let _ = xvfb.wait();
        assert!(best >= 3, "overlay colours of {best} regions seen in the window (exit {status:?})");
    }

    /// The top-level window whose name starts with `prefix`, if one is mapped.
    fn find_window(conn: &impl Connection, root: u32, prefix: &str) -> Option<u32> {
        use x11rb::protocol::xproto::{AtomEnum, ConnectionExt};
        let tree = conn.query_tree(root).ok()?.reply().ok()?;
        tree.children.into_iter().find(|&w| {
            conn.get_property(false, w, AtomEnum::WM_NAME, AtomEnum::STRING, 0, 256)
                .ok()
                .and_then(|c| c.reply().ok())
                .is_some_and(|p| p.value.starts_with(prefix.as_bytes()))
        })
    }

    /// Asks `window` to close the way a window manager's close button does: a
    /// WM_PROTOCOLS client message carrying WM_DELETE_WINDOW.
    fn send_close(conn: &impl Connection, window: u32) {
        use x11rb::protocol::xproto::{ClientMessageEvent, ConnectionExt, EventMask};
        let atom = |name: &[u8]| conn.intern_atom(false, name).unwrap().reply().unwrap().atom;
        let (protocols, delete) = (atom(b"WM_PROTOCOLS"), atom(b"WM_DELETE_WINDOW"));
        let event = ClientMessageEvent::new(32, window, protocols, [delete, x11rb::CURRENT_TIME, 0, 0, 0]);
        conn.send_event(false, window, EventMask::NO_EVENT, event).unwrap();
        conn.flush().unwrap();
    }

    /// Closing the window mid-video (as a window manager's close button does) stops
    /// the run with exit 0, and both outputs are finalised with every frame shown.
    #[test]
    fn closing_the_window_stops_the_run_with_complete_outputs() {
        let (mut xvfb, display) = xvfb();
        let dir = tempfile::tempdir().unwrap();
        // A video long enough (10 loops of the clip) that the run cannot end by itself
        // before the close arrives.
        let long = dir.path().join("long.mp4");
        ffmpeg(&[
            "-stream_loop",
            "9",
            "-i",
            data("hamilton_clip.mp4").to_str().unwrap(),
            "-c",
            "copy",
            long.to_str().unwrap(),
        ]);
        let (video, keypoints) = (dir.path().join("o.mp4"), dir.path().join("k.jsonl"));
        let mut app = bin()
            .env("DISPLAY", &display)
            .args(["run", "--video"])
            .arg(&long)
            .arg("--output")
            .arg(&video)
            .arg("--keypoints")
            .arg(&keypoints)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (conn, screen) = x11rb::connect(Some(&display)).expect("connects to Xvfb");
        let root = conn.setup().roots[screen].root;
        // Poll for the window (up to 900 times, 100 ms apart: a guard against a hang).
        let window = (0..900)
            .find_map(|_| {
                let found = find_window(&conn, root, "facekp");
                if found.is_none() {
                    assert!(app.try_wait().unwrap().is_none(), "facekp exited before its window appeared");
                    std::thread::sleep(Duration::from_millis(100));
                }
                found
            })
            .expect("a facekp window appears");
        // Let it show some frames, then close.
        std::thread::sleep(Duration::from_secs(1));
        send_close(&conn, window);
        let out = app.wait_with_output().unwrap();
        let _ = xvfb.kill();
        let _ = xvfb.wait();
        let log = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "exit 0 on window close: {log}");
        let rows = jsonl(&keypoints).len() as u64;
        assert!(rows > 0 && rows < 10 * 275, "stopped mid-video after {rows} frames: {log}");
        assert_eq!(ffprobe_frames(&video), rows, "the video has every processed frame");
    }

    /// How many of the five region colours appear (at least 5 pixels each) on the
    /// screen (the window is the only thing drawn on Xvfb's black root).
    fn count_region_colours(img: &opencv::core::Mat) -> usize {
        use facekp::landmarks::Region;
        use facekp::render::region_rgb;
        use opencv::core::Vec3b;
        use opencv::prelude::*;
        Region::ALL
            .iter()
            .filter(|&&r| {
                let rgb = region_rgb(r);
                let mut n = 0;
                for y in 0..img.rows() {
                    for x in 0..img.cols() {
                        let p = img.at_2d::<Vec3b>(y, x).unwrap();
                        if (p[2] as i32 - rgb[0] as i32).abs() < 24
                            && (p[1] as i32 - rgb[1] as i32).abs() < 24
                            && (p[0] as i32 - rgb[2] as i32).abs() < 24
                        {
                            n += 1;
                        }
                    }
                }
                n >= 5
            })
            .count()
    }
}

mod bad_input {
    use super::*;

    /// Runs facekp, expects a non-zero exit with one error line naming `needle`,
    /// no panic, and no file left in `dir`.
    fn expect_error(args: &[&str], needle: &str, dir: &Path) {
        let before = std::fs::read_dir(dir).unwrap().count();
        let out = bin().args(args).output().unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?} should fail");
        assert_ne!(out.status.code(), Some(101), "panicked: {err}");
        let errors: Vec<&str> =
            err.lines().filter(|l| l.starts_with("facekp: error:") || l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "one error line for {args:?}: {err}");
        assert!(errors[0].contains(needle), "{args:?}: {:?} lacks {needle:?}", errors[0]);
        assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), before, "nothing written for {args:?}");
    }

    #[test]
    fn bad_sources_weights_and_outputs_give_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let video = s(&data("hamilton_clip.mp4"));
        let out_mp4 = s(&d.join("o.mp4"));
        std::fs::create_dir(d.join("emptydir")).unwrap();
        std::fs::write(d.join("zero.mp4"), b"").unwrap();
        std::fs::write(d.join("text.mp4"), b"this is not a video\n").unwrap();
        std::fs::write(d.join("random.safetensors"), [7u8; 1000]).unwrap();
        let w68 = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/face68.safetensors");

        let missing = s(&d.join("missing.mp4"));
        expect_error(&["run", "--headless", "--video", &missing, "--output", &out_mp4], "file not found", d);
        expect_error(
            &["run", "--headless", "--video", &s(&d.join("emptydir")), "--output", &out_mp4],
            "is a folder",
            d,
        );
        expect_error(&["run", "--headless", "--video", &s(&d.join("zero.mp4")), "--output", &out_mp4], "empty", d);
        expect_error(
            &["run", "--headless", "--video", &s(&d.join("text.mp4")), "--output", &out_mp4],
            "cannot be opened",
            d,
        );
        expect_error(&["run", "--headless", "--images", &s(&d.join("emptydir"))], "no readable", d);
        expect_error(&["run", "--headless", "--camera", "57"], "camera 57: no such device", d);
        expect_error(
            &["run", "--headless", "--video", &video, "--weights", &s(&d.join("none.safetensors"))],
            "file not found",
            d,
        );
        expect_error(
            &["run", "--headless", "--video", &video, "--model", "15", "--weights", &s(&w68)],
            "68-point model",
            d,
        );
        expect_error(&["run", "--headless", "--video", &video, "--cascade", &s(&d.join("none.xml"))], "cascade", d);
        expect_error(
            &["run", "--headless", "--video", &video, "--output", &s(&d.join("no/dir/o.mp4"))],
            "does not exist",
            d,
        );
        expect_error(&["run", "--headless", "--video", &video, "--output", &s(&d.join("o.gif"))], ".mp4, .avi", d);
        // A folder nobody may write to (root ignores permission bits; /proc refuses new files).
        expect_error(
            &["run", "--headless", "--video", &video, "--output", "/proc/facekp-o.mp4"],
            "--output /proc/facekp-o.mp4: cannot write",
            d,
        );
        expect_error(
            &["run", "--headless", "--video", &video, "--keypoints", "/proc/facekp-k.jsonl"],
            "--keypoints /proc/facekp-k.jsonl: cannot write",
            d,
        );
        expect_error(&["run", "--headless", "--video", &video, "--keypoints", &s(&d.join("k.xml"))], ".csv, .jsonl", d);
        std::fs::write(
            d.join("bad.xml"),
            "<?xml version=\"1.0\"?><opencv_storage><cascade>nonsense</cascade></opencv_storage>",
        )
        .unwrap();
        expect_error(
            &["run", "--headless", "--video", &video, "--cascade", &s(&d.join("bad.xml"))],
            "not a valid OpenCV cascade",
            d,
        );
        expect_error(&["run", "--headless", "--video", &video, "--device", "cuda"], "cuda", d);
        expect_error(&["run", "--headless", "--video", &video, "--device", "tpu"], "auto, cpu or cuda", d);
        expect_error(
            &["run", "--headless", "--video", &video, "--precision", "f16"],
            "precision f16: expected auto, f32 or bf16",
            d,
        );
        if facekp::model::Precision::auto(tch::Device::Cpu) == facekp::model::Precision::F32 {
            expect_error(&["run", "--headless", "--video", &video, "--precision", "bf16"], "no native bf16", d);
        }
        expect_error(&["run", "--headless", "--video", &video, "--model", "33"], "68 or 15", d);
        expect_error(&["run", "--headless", "--video", &video, "--max-frames=-3"], "max-frames", d);
    }

    /// A camera whose device node exists but does not open (busy, no permission, or
    /// no driver behind it) gets its own message. Without a real camera, the test
    /// makes a V4L2 character device node (major 81) that no driver answers: opening
    /// it fails, down the same path as a camera held by another program. Needs root,
    /// as CI has.
    #[test]
    fn a_camera_that_exists_but_does_not_open_is_reported_as_such() {
        let index = 58;
        let node = format!("/dev/video{index}");
        assert!(!Path::new(&node).exists(), "{node} is free for this test");
        let made = Command::new("mknod").args([&node, "c", "81", &index.to_string()]).status().unwrap();
        assert!(made.success(), "mknod {node} (the test needs root, as CI runs)");
        let dir = tempfile::tempdir().unwrap();
        let result = std::panic::catch_unwind(|| {
            expect_error(
                &["run", "--headless", "--camera", &index.to_string()],
                &format!("camera {index}: {node} cannot be opened (in use by another program"),
                dir.path(),
            )
        });
        std::fs::remove_file(&node).unwrap();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    /// An image folder of only non-images is an error; mixed with images, the
    /// non-images are skipped with a warning count, and an image whose face is
    /// below the detector's minimum size simply has no face.
    #[test]
    fn image_folders_skip_non_images_and_tiny_faces() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let only = d.join("only");
        std::fs::create_dir(&only).unwrap();
        std::fs::write(only.join("notes.txt"), "not an image").unwrap();
        std::fs::write(only.join("broken.jpg"), [0u8, 1, 2, 3]).unwrap();
        expect_error(&["run", "--headless", "--images", only.to_str().unwrap()], "no readable", d);

        let mixed = d.join("mixed");
        std::fs::create_dir(&mixed).unwrap();
        std::fs::write(mixed.join("b.txt"), "not an image").unwrap();
        std::fs::write(mixed.join("c.jpg"), [0u8, 1, 2, 3]).unwrap();
        // Frame 190 of hamilton_clip as it is, and shrunk so that its face is about
        // 12 px wide.
        for (name, scale) in [("a.png", "640:360"), ("d.png", "96:54")] {
            let made = Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-i"])
                .arg(data("hamilton_clip.mp4"))
                .args(["-vf", &format!("select=eq(n\\,190),scale={scale}"), "-frames:v", "1"])
                .arg(mixed.join(name))
                .status()
                .unwrap();
            assert!(made.success());
        }
        let keypoints = d.join("k.jsonl");
        let out = bin()
            .args([
                "run",
                "--headless",
                "--images",
                mixed.to_str().unwrap(),
                "--keypoints",
                keypoints.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert!(err.contains("skipping 1 files that are not jpg/png/bmp"), "{err}");
        assert!(err.contains("c.jpg: not a decodable image, skipped"), "{err}");
        let rows: Vec<serde_json::Value> =
            std::fs::read_to_string(&keypoints).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let faces: Vec<usize> = rows.iter().map(|r| r["faces"].as_array().unwrap().len()).collect();
        assert_eq!(faces, [1, 0], "the face, and none in the tiny image: {err}");
    }

    #[test]
    fn corrupt_weights_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let w68 = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/face68");
        let video = data("hamilton_clip.mp4").to_string_lossy().into_owned();
        // Random bytes and a truncated copy, each with a valid config beside it.
        let bytes = std::fs::read(w68.with_extension("safetensors")).unwrap();
        for (name, content) in [("random", vec![7u8; 4096]), ("truncated", bytes[..bytes.len() / 2].to_vec())] {
            let sub = d.join(name);
            std::fs::create_dir(&sub).unwrap();
            std::fs::write(sub.join("m.safetensors"), &content).unwrap();
            std::fs::copy(w68.with_extension("json"), sub.join("m.json")).unwrap();
            let w = sub.join("m.safetensors").to_string_lossy().into_owned();
            expect_error(&["run", "--headless", "--video", &video, "--weights", &w], "m.safetensors", &sub);
        }
        // A config that does not describe these weights (another first-layer width).
        let sub = d.join("inconsistent");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("m.safetensors"), &bytes).unwrap();
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(w68.with_extension("json")).unwrap()).unwrap();
        config["channels"][0] = (config["channels"][0].as_i64().unwrap() + 4).into();
        std::fs::write(sub.join("m.json"), config.to_string()).unwrap();
        let w = sub.join("m.safetensors").to_string_lossy().into_owned();
        expect_error(&["run", "--headless", "--video", &video, "--weights", &w], "the model config needs", &sub);
        // Weights without their config.
        let sub = d.join("noconfig");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("m.safetensors"), &bytes).unwrap();
        let w = sub.join("m.safetensors").to_string_lossy().into_owned();
        expect_error(&["run", "--headless", "--video", &video, "--weights", &w], "model config", &sub);
    }
}

/// Property tests: parsers and loaders take arbitrary input without panicking;
/// crops at and beyond image borders are always well-formed.
mod fuzz {
    use super::*;
    use facekp::geometry::{frame_points_from_unit, unit_points_from_frame, CropPrior, Point, Rect};
    use facekp::imageops;
    use facekp::model::{Keypointer, ModelConfig, Precision};
    use facekp::train::data::{parse_csv, parse_pts};
    use opencv::core::{Mat, Scalar, CV_8UC1};
    use proptest::prelude::*;

    fn weights68() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/face68.safetensors")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn csv_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = parse_csv(bytes.as_slice(), Path::new("fuzz.csv"));
        }

        #[test]
        fn csv_parser_never_panics_on_near_valid_rows(cells in proptest::collection::vec("[-0-9.eE+a-z]{0,6}", 0..140)) {
            let mut text = String::from("image");
            for i in 0..68 { text.push_str(&format!(",x{i},y{i}")); }
            text.push_str("\na.jpg,");
            text.push_str(&cells.join(","));
            let _ = parse_csv(text.as_bytes(), Path::new("fuzz.csv"));
        }

        #[test]
        fn pts_parser_never_panics(text in "(version: 1\n)?(n_points: [0-9]{1,3}\n)?(\\{\n)?([-0-9. ]{0,12}\n){0,8}(\\}\n)?") {
            let _ = parse_pts(&text, Path::new("fuzz.pts"));
        }

        #[test]
        fn model_config_loading_never_panics(text in ".{0,400}") {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("m.json");
            std::fs::write(&p, &text).unwrap();
            let _ = ModelConfig::load(&p);
        }

        #[test]
        fn model_config_with_changed_numbers_is_validated(
            channel in -5i64..5000, extra in 0usize..20, width in -5i64..5000, stage in 0usize..5, scale in -2.0f32..3.0
        ) {
            let text = std::fs::read_to_string(weights68().with_extension("json")).unwrap();
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            v["channels"][stage] = channel.into();
            v["extra_convs"][stage] = extra.into();
            v["heatmaps"]["width"] = width.into();
            v["heatmaps"]["stage"] = stage.into();
            v["crop"]["scale_mean"] = serde_json::json!(scale);
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("m.json");
            std::fs::write(&p, v.to_string()).unwrap();
            std::fs::copy(weights68(), dir.path().join("m.safetensors")).unwrap();
            // Either a clear error or a loadable model; never a panic.
            let _ = Keypointer::load(&dir.path().join("m.safetensors"), tch::Device::Cpu, Precision::auto(tch::Device::Cpu), None);
        }

        #[test]
        fn truncated_or_corrupted_weights_are_errors(cut in 0.0f64..1.0, flip in any::<u8>(), at in 0.0f64..1.0) {
            let bytes = std::fs::read(weights68()).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::copy(weights68().with_extension("json"), dir.path().join("m.json")).unwrap();
            let mut cut_bytes = bytes[..(bytes.len() as f64 * cut) as usize].to_vec();
            let w = dir.path().join("m.safetensors");
            std::fs::write(&w, &cut_bytes).unwrap();
            prop_assert!(Keypointer::load(&w, tch::Device::Cpu, Precision::auto(tch::Device::Cpu), None).is_err());
            // A flipped byte in the header is an error or still loads; never a panic.
            cut_bytes = bytes.clone();
            let i = ((cut_bytes.len().min(4096) - 1) as f64 * at) as usize;
            cut_bytes[i] ^= flip;
            std::fs::write(&w, &cut_bytes).unwrap();
            let _ = Keypointer::load(&w, tch::Device::Cpu, Precision::auto(tch::Device::Cpu), None);
        }

        #[test]
        fn crops_at_image_borders_are_padded_and_invertible(
            w in 8i32..200, h in 8i32..200, x in -300.0f32..400.0, y in -300.0f32..400.0, size in 4.0f32..400.0
        ) {
            let img = Mat::new_rows_cols_with_default(h, w, CV_8UC1, Scalar::all(128.0)).unwrap();
            let prior = CropPrior { dx_mean: 0.0, dx_std: 0.1, dy_mean: -0.18, dy_std: 0.04, scale_mean: 1.19, log_scale_std: 0.08, crop_padding: 1.5 };
            let crop = prior.crop_for_detection(&Rect::new(x, y, size, size));
            let pixels = imageops::extract_crop(&img, &crop, 96).unwrap();
            prop_assert_eq!(pixels.len(), 96 * 96);
            let p = [Point::new(x, y), Point::new(x + size, y + size)];
            let back = frame_points_from_unit(&unit_points_from_frame(&p, &crop, 96), &crop, 96);
            for (a, b) in p.iter().zip(&back) {
                prop_assert!(a.distance(*b) < 1e-2 * size.max(1.0));
            }
        }
    }
}

/// Hard but valid input, and stopping mid-run (issue: robustness).
mod robustness {
    use super::*;
    use serde_json::Value;
    use std::time::Duration;

    fn run_ok(args: &[&str]) -> String {
        let out = bin().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stderr(&out)
    }

    #[test]
    fn odd_gray_tiny_and_4k_videos_are_processed_frame_by_frame() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let hamilton = data("hamilton_clip.mp4");
        let h = hamilton.to_str().unwrap();
        let cases = [
            ("odd.mkv", "scale=320:239", "yuv420p", "ffv1"),
            ("gray.mkv", "scale=640:360", "gray", "ffv1"),
            ("tiny.mkv", "scale=64:48", "yuv420p", "ffv1"),
            ("uhd.mp4", "scale=3840:2160", "yuv420p", "libx264"),
        ];
        for (name, scale, pix, codec) in cases {
            let video = d.join(name);
            let v = video.to_str().unwrap();
            // From 6.2 s on, the performer's face is large and frontal.
            ffmpeg(&["-ss", "6.2", "-i", h, "-frames:v", "8", "-vf", scale, "-pix_fmt", pix, "-c:v", codec, "-an", v]);
            let keypoints = d.join(format!("{name}.jsonl"));
            let output = d.join(format!("{name}.out.mp4"));
            run_ok(&[
                "run",
                "--headless",
                "--video",
                v,
                "--keypoints",
                keypoints.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
            ]);
            let rows = jsonl(&keypoints);
            assert_eq!(rows.len(), 8, "{name}: every frame has a line");
            assert_eq!(ffprobe_frames(&output), 8, "{name}: every frame in the annotated video");
            if name != "tiny.mkv" {
                let faces: usize = rows.iter().map(|r| r["faces"].as_array().unwrap().len()).sum();
                assert!(faces >= 2, "{name}: faces found ({faces})");
            }
        }
    }

    #[test]
    fn truncated_video_processes_every_decodable_frame_and_warns() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.mp4");
        ffmpeg(&[
            "-i",
            data("hamilton_clip.mp4").to_str().unwrap(),
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            full.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&full).unwrap();
        let cut = dir.path().join("cut.mp4");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let keypoints = dir.path().join("k.jsonl");
        let err = run_ok(&[
            "run",
            "--headless",
            "--video",
            cut.to_str().unwrap(),
            "--keypoints",
            keypoints.to_str().unwrap(),
        ]);
        let rows = jsonl(&keypoints);
        assert!(rows.len() > 50 && rows.len() < 275, "{} frames decoded from half a file", rows.len());
        assert!(err.contains("could not be decoded"), "warns about the missing frames: {err}");
    }

    /// A face followed out of the frame's left edge: a still frame of hamilton_clip
    /// panned 10 px per frame, so the face really leaves. The detector runs once;
    /// the tracker crops past the border (padded with black, never an OpenCV ROI
    /// error), and drops the face once most of it is outside.
    #[test]
    fn faces_leaving_the_frame_are_cropped_with_padding() {
        let dir = tempfile::tempdir().unwrap();
        let pan = dir.path().join("pan.mkv");
        ffmpeg(&[
            "-i",
            data("hamilton_clip.mp4").to_str().unwrap(),
            "-vf",
            "select=eq(n\\,190),loop=29:1:0,setpts=N/30/TB,crop=300:300:'150+n*10':20",
            "-frames:v",
            "30",
            "-c:v",
            "ffv1",
            pan.to_str().unwrap(),
        ]);
        let keypoints = dir.path().join("k.jsonl");
        run_ok(&[
            "run",
            "--headless",
            "--detect-every",
            "100",
            "--video",
            pan.to_str().unwrap(),
            "--keypoints",
            keypoints.to_str().unwrap(),
        ]);
        let rows = jsonl(&keypoints);
        assert_eq!(rows.len(), 30);
        let faces: Vec<&Value> = rows.iter().flat_map(|r| r["faces"].as_array().unwrap()).collect();
        assert!(faces.iter().all(|f| f["points"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p[0].as_f64().unwrap().is_finite())));
        let outside = faces.iter().filter(|f| f["box_x"].as_f64().unwrap() < 0.0).count();
        assert!(outside >= 3, "faces with their box past the left edge: {outside}");
        // The face is gone from frame 22 on (its centre 80+ px left of the frame).
        let late: usize = rows[22..].iter().map(|r| r["faces"].as_array().unwrap().len()).sum();
        assert_eq!(late, 0, "faces kept after the face left the frame");
    }

    /// A still face under fresh noise every frame (frame 190 of hamilton_clip): one
    /// track follows it from its first detection to the end. The whole-frame search
    /// at 320 px misses this face on many frames; the closer look around the track
    /// (`HaarDetector::detect_near`) keeps it.
    #[test]
    fn a_still_face_keeps_one_track() {
        let dir = tempfile::tempdir().unwrap();
        let still = dir.path().join("still.mp4");
        ffmpeg(&[
            "-i",
            data("hamilton_clip.mp4").to_str().unwrap(),
            "-vf",
            "select=eq(n\\,190),loop=149:1:0,setpts=N/30/TB,noise=alls=8:allf=t",
            "-frames:v",
            "150",
            "-c:v",
            "libx264",
            "-crf",
            "12",
            still.to_str().unwrap(),
        ]);
        let keypoints = dir.path().join("k.jsonl");
        run_ok(&["run", "--headless", "--video", still.to_str().unwrap(), "--keypoints", keypoints.to_str().unwrap()]);
        let rows = jsonl(&keypoints);
        assert_eq!(rows.len(), 150);
        let tracks: Vec<Vec<u64>> = rows
            .iter()
            .map(|r| r["faces"].as_array().unwrap().iter().map(|f| f["track"].as_u64().unwrap()).collect())
            .collect();
        let first = tracks.iter().position(|t| !t.is_empty()).expect("the face is found");
        let id = tracks[first][0];
        let followed = tracks[first..].iter().filter(|t| t.contains(&id)).count();
        assert_eq!(followed, 150 - first, "track {id} from frame {first}: {tracks:?}");
    }

    #[test]
    fn thirty_six_faces_in_one_frame_and_a_video_without_faces() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let imgs = d.join("imgs");
        std::fs::create_dir(&imgs).unwrap();
        // 36 copies of a frontal face from hamilton_clip in a 6x6 grid.
        ffmpeg(&[
            "-i",
            data("hamilton_clip.mp4").to_str().unwrap(),
            "-vf",
            "select=eq(n\\,190),crop=240:240:160:20,scale=150:150,loop=35:1:0,tile=6x6",
            "-frames:v",
            "1",
            imgs.join("1_grid.png").to_str().unwrap(),
        ]);
        let keypoints = d.join("k.jsonl");
        run_ok(&["run", "--headless", "--images", imgs.to_str().unwrap(), "--keypoints", keypoints.to_str().unwrap()]);
        let rows = jsonl(&keypoints);
        assert_eq!(rows.len(), 1);
        assert!(
            rows[0]["faces"].as_array().unwrap().len() >= 30,
            "grid: {} faces",
            rows[0]["faces"].as_array().unwrap().len()
        );
        // A whole video without a face: every frame still gets its (empty) line.
        let empty = d.join("empty.mp4");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "color=c=0x405060:size=320x240:rate=25:duration=1",
            "-vf",
            "noise=alls=40:allf=t",
            "-pix_fmt",
            "yuv420p",
            empty.to_str().unwrap(),
        ]);
        run_ok(&["run", "--headless", "--video", empty.to_str().unwrap(), "--keypoints", keypoints.to_str().unwrap()]);
        let rows = jsonl(&keypoints);
        assert_eq!(rows.len(), 25);
        assert!(rows.iter().all(|r| r["faces"].as_array().unwrap().is_empty()));
    }

    #[test]
    fn variable_frame_rate_keeps_timestamps_ordered() {
        let dir = tempfile::tempdir().unwrap();
        let vfr = dir.path().join("vfr.mkv");
        // Frame times with gaps: 0, 1, 2, 4, 5, 7, ... * 40 ms.
        ffmpeg(&[
            "-i",
            data("hamilton_clip.mp4").to_str().unwrap(),
            "-frames:v",
            "40",
            "-vf",
            "setpts='(N+floor(N/3))*0.04/TB'",
            "-fps_mode",
            "vfr",
            "-c:v",
            "ffv1",
            "-an",
            vfr.to_str().unwrap(),
        ]);
        let keypoints = dir.path().join("k.jsonl");
        run_ok(&["run", "--headless", "--video", vfr.to_str().unwrap(), "--keypoints", keypoints.to_str().unwrap()]);
        let rows = jsonl(&keypoints);
        assert_eq!(rows.len(), 40);
        let ts: Vec<f64> = rows.iter().map(|r| r["timestamp_ms"].as_f64().unwrap()).collect();
        assert!(ts.windows(2).all(|w| w[1] > w[0]), "timestamps increase: {ts:?}");
        assert!((ts[39] - ts[0]) > 39.0 * 40.0, "gaps kept: {ts:?}");
    }

    /// A raw H.264 stream carries no timestamps (ffprobe: `N/A` for every frame):
    /// every frame is processed and gets a timestamp from its number and the
    /// stream's frame rate, evenly spaced and increasing.
    #[test]
    fn a_stream_without_timestamps_gets_them_from_the_frame_rate() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.h264");
        // passthrough: the first 30 frames as they are (no duplicates added for a constant rate).
        ffmpeg(&[
            "-i",
            data("hamilton_clip.mp4").to_str().unwrap(),
            "-fps_mode",
            "passthrough",
            "-frames:v",
            "30",
            "-c:v",
            "libx264",
            "-f",
            "h264",
            raw.to_str().unwrap(),
        ]);
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "frame=pts_time", "-of", "csv=p=0"])
            .arg(&raw)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&probe.stdout).to_string();
        // One line per frame (side data may add empty ones).
        let pts: Vec<&str> = out.lines().map(|l| l.trim().trim_end_matches(',')).filter(|l| !l.is_empty()).collect();
        assert!(pts.len() == 30 && pts.iter().all(|&p| p == "N/A"), "the stream has no timestamps: {pts:?}");
        let keypoints = dir.path().join("k.jsonl");
        run_ok(&["run", "--headless", "--video", raw.to_str().unwrap(), "--keypoints", keypoints.to_str().unwrap()]);
        let rows = jsonl(&keypoints);
        assert_eq!(rows.len(), 30);
        let ts: Vec<f64> = rows.iter().map(|r| r["timestamp_ms"].as_f64().unwrap()).collect();
        let step = ts[1] - ts[0];
        assert!(step > 10.0 && step < 100.0, "a frame interval of a plausible frame rate: {ts:?}");
        assert!(ts.windows(2).all(|w| ((w[1] - w[0]) - step).abs() < 0.5), "evenly spaced: {ts:?}");
        assert!(
            rows.iter().filter(|r| !r["faces"].as_array().unwrap().is_empty()).count() >= 5,
            "faces found in the stream"
        );
    }

    /// Stops a run with `signal` once it has written some frames, then checks the
    /// exit code and that both outputs are complete up to the stop.
    fn stop_with(signal: &str) {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("long.mp4");
        ffmpeg(&[
            "-stream_loop",
            "3",
            "-i",
            data("hamilton_clip.mp4").to_str().unwrap(),
            "-c",
            "copy",
            long.to_str().unwrap(),
        ]);
        let video = dir.path().join("o.mp4");
        let keypoints = dir.path().join("k.jsonl");
        // Wait until the pipeline runs (it prints the source), then let it work a while.
        let (mut child, lines, mut log) = spawn_run(&long, &video, &keypoints);
        std::thread::sleep(Duration::from_secs(3));
        self::signal(&child, signal);
        for line in lines {
            log.push_str(&line.unwrap());
            log.push('\n');
        }
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "{signal}: exit 130: {log}");
        let rows = jsonl(&keypoints);
        assert!(!rows.is_empty() && rows.len() < 4 * 275, "{signal}: stopped mid-run after {} frames", rows.len());
        assert_eq!(ffprobe_frames(&video), rows.len() as u64, "{signal}: the video has every processed frame");
    }

    fn rss_kib(pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
    }

    /// 10,000 frames headless with --keypoints: resident memory after warm-up stays
    /// within 10% of its level at the end of warm-up. The run stops at frame 10,000
    /// of 10,175: at the end of a file (and only then) resident memory rises by about
    /// 60 MB in the last second before exit, which is not growth over frames.
    #[test]
    fn memory_stays_flat_over_ten_thousand_frames() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("long.mp4");
        ffmpeg(&[
            "-stream_loop",
            "36",
            "-i",
            data("hamilton_clip.mp4").to_str().unwrap(),
            "-c",
            "copy",
            long.to_str().unwrap(),
        ]);
        let keypoints = dir.path().join("k.jsonl");
        let mut child = bin()
            .args(["run", "--headless", "--model", "15", "--max-frames", "10000", "--video", long.to_str().unwrap()])
            .arg("--keypoints")
            .arg(&keypoints)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut samples = Vec::new();
        while child.try_wait().unwrap().is_none() {
            if let Some(kib) = rss_kib(child.id()) {
                samples.push(kib);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert!(child.wait().unwrap().success());
        let lines = std::fs::read_to_string(&keypoints).unwrap().lines().count();
        assert!(lines >= 10_000, "{lines} frames");
        assert!(samples.len() >= 20, "{} memory samples", samples.len());
        let warm = samples[samples.len() / 5];
        let peak = *samples[samples.len() / 5..].iter().max().unwrap();
        eprintln!("RSS after warm-up {warm} KiB, peak after {peak} KiB over {lines} frames");
        assert!(
            peak * 10 <= warm * 11,
            "RSS grew from {warm} KiB to {peak} KiB; samples every 250 ms (MiB): {:?}",
            samples.iter().map(|k| k / 1024).collect::<Vec<_>>()
        );
    }

    /// A named pipe fed part of a stream and then held open without more data: the
    /// source blocks in a read, like a hung camera. Returns the pipe and a sender
    /// that releases the writer (dropping it ends the stream).
    fn stalled_pipe(dir: &Path) -> (PathBuf, std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>) {
        let ts = dir.join("clip.ts");
        ffmpeg(&[
            "-stream_loop",
            "2",
            "-i",
            data("hamilton_clip.mp4").to_str().unwrap(),
            "-c",
            "copy",
            "-f",
            "mpegts",
            ts.to_str().unwrap(),
        ]);
        let fifo = dir.join("stream.ts");
        assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let bytes = std::fs::read(&ts).unwrap();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (written_tx, written_rx) = std::sync::mpsc::channel::<()>();
        let path = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            // Two thirds of the stream (two of three loops): enough for the decoder's
            // probe and a few hundred frames.
            if f.write_all(&bytes[..bytes.len() * 2 / 3]).is_ok() {
                let _ = written_tx.send(());
            }
            let _ = release_rx.recv();
        });
        (fifo, release_tx, written_rx)
    }

    /// Starts a headless run on `video` with both outputs; returns the child and its
    /// stderr lines (after the "source:" line).
    fn spawn_run(
        video: &Path,
        out: &Path,
        keypoints: &Path,
    ) -> (std::process::Child, std::io::Lines<std::io::BufReader<std::process::ChildStderr>>, String) {
        let mut child = bin()
            .args(["run", "--headless", "--video"])
            .arg(video)
            .arg("--output")
            .arg(out)
            .arg("--keypoints")
            .arg(keypoints)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            log.push_str(&line);
            log.push('\n');
            if line.starts_with("source:") {
                break;
            }
        }
        (child, lines, log)
    }

    fn signal(child: &std::process::Child, signal: &str) {
        assert!(Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap().success());
    }

    /// Runs on a stalled pipe, waits until the source is stuck, then sends Ctrl-C
    /// `interrupts` times (300 ms apart). Returns the exit status and stderr.
    fn interrupt_stuck_run(dir: &Path, interrupts: usize) -> (std::process::ExitStatus, String) {
        let (fifo, release, written) = stalled_pipe(dir);
        let (mut child, lines, mut log) = spawn_run(&fifo, &dir.join("o.mp4"), &dir.join("k.jsonl"));
        written.recv_timeout(Duration::from_secs(60)).expect("the run reads the pipe");
        // Let it process what it was given, so the source waits for more.
        std::thread::sleep(Duration::from_secs(5));
        for i in 0..interrupts {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            signal(&child, "-INT");
        }
        for line in lines {
            log.push_str(&line.unwrap());
            log.push('\n');
        }
        let status = child.wait().unwrap();
        drop(release);
        (status, log)
    }

    /// Ctrl-C while the source is stuck in a read: the run still ends, with both
    /// outputs finalised and holding every processed frame, and exit code 130.
    #[test]
    fn ctrl_c_with_a_stuck_source_still_finalises_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let (status, log) = interrupt_stuck_run(dir.path(), 1);
        assert_eq!(status.code(), Some(130), "{log}");
        assert!(log.contains("did not stop"), "the source was stuck in a read: {log}");
        let rows = jsonl(&dir.path().join("k.jsonl"));
        assert!(rows.len() > 100, "{} frames processed: {log}", rows.len());
        assert_eq!(ffprobe_frames(&dir.path().join("o.mp4")), rows.len() as u64, "the video has every processed frame");
    }

    /// A second Ctrl-C exits at once, before the outputs could be finalised, and
    /// leaves neither a half-written output nor a temporary file behind.
    #[test]
    fn a_second_ctrl_c_exits_at_once_and_leaves_nothing_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let (status, log) = interrupt_stuck_run(dir.path(), 2);
        assert_eq!(status.code(), Some(130), "{log}");
        assert!(!log.contains("did not stop"), "exited before the stop grace ran out: {log}");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["clip.ts", "stream.ts"], "no output and no temporary file");
    }

    #[test]
    fn ctrl_c_finalises_outputs_and_exits_130() {
        stop_with("-INT");
    }

    #[test]
    fn sigterm_finalises_outputs_and_exits_130() {
        stop_with("-TERM");
    }
}

/// Training: a tiny real data set, checkpoints every epoch, resume, and a kill at
/// any moment leaving a checkpoint that still resumes.
mod training {
    use super::*;
    use std::time::Duration;

    /// A data set folder with the first `n` faces of ytf68's val split.
    fn tiny_set(dir: &Path, n: usize) -> PathBuf {
        tiny_set_named(dir, "tiny68", n)
    }

    fn tiny_set_named(dir: &Path, name: &str, n: usize) -> PathBuf {
        let src = shared("datasets/ytf68");
        let set = dir.join(name);
        std::fs::create_dir_all(set.join("images")).unwrap();
        let text = std::fs::read_to_string(src.join("val.csv")).unwrap();
        let lines: Vec<&str> = text.lines().take(n + 1).collect();
        for l in &lines[1..] {
            let name = l.split(',').next().unwrap();
            std::fs::copy(src.join("images").join(name), set.join("images").join(name)).unwrap();
        }
        std::fs::write(set.join("train.csv"), lines.join("\n") + "\n").unwrap();
        std::fs::write(set.join("val.csv"), lines[..11].join("\n") + "\n").unwrap();
        set
    }

    fn train(set: &Path, out: &Path, epochs: &str, resume: bool) -> Output {
        let mut cmd = bin();
        cmd.args(["train", "--points", "15", "--epochs", epochs, "--batch-size", "8", "--data"])
            .arg(set)
            .arg("--out")
            .arg(out);
        if resume {
            cmd.arg("--resume");
        }
        cmd.output().unwrap()
    }

    #[test]
    fn train_checkpoints_resumes_and_writes_a_loadable_model() {
        let dir = tempfile::tempdir().unwrap();
        let set = tiny_set(dir.path(), 48);
        let out = dir.path().join("m.safetensors");
        let first = train(&set, &out, "2", false);
        assert!(first.status.success(), "{}", stderr(&first));
        assert!(dir.path().join("m.ckpt").is_file() && out.is_file() && out.with_extension("json").is_file());
        assert!(out.with_extension("loss.png").is_file());
        let more = train(&set, &out, "3", true);
        assert!(more.status.success(), "{}", stderr(&more));
        let log = stderr(&more);
        assert!(log.contains("resuming") && log.contains("after epoch 2"), "{log}");
        assert!(log.contains("epoch   3/3") && !log.contains("epoch   1/3"), "{log}");
        // The model it wrote runs.
        let keypoints = dir.path().join("k.jsonl");
        let run = bin()
            .args(["run", "--headless", "--model", "15", "--max-frames", "3", "--weights"])
            .arg(&out)
            .arg("--video")
            .arg(data("hamilton_clip.mp4"))
            .arg("--keypoints")
            .arg(&keypoints)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", stderr(&run));
    }

    #[test]
    fn repeat_sets_each_folders_share_of_an_epoch_and_holds_across_resume() {
        let dir = tempfile::tempdir().unwrap();
        let a = tiny_set_named(dir.path(), "seta", 16);
        let b = tiny_set_named(dir.path(), "setb", 16);
        let out = dir.path().join("m.safetensors");
        let data = format!("{},{}", a.display(), b.display());
        let train = |repeat: &str, epochs: &str, resume: bool| {
            let mut cmd = bin();
            cmd.args(["train", "--points", "15", "--batch-size", "8", "--epochs", epochs, "--data", &data, "--out"])
                .arg(&out);
            if !repeat.is_empty() {
                cmd.args(["--repeat", repeat]);
            }
            if resume {
                cmd.arg("--resume");
            }
            cmd.output().unwrap()
        };
        let first = train("1,3", "1", false);
        let log = stderr(&first);
        assert!(first.status.success(), "{log}");
        assert!(log.contains("an epoch: 64 crops (seta x1, setb x3), 8 batches of 8"), "{log}");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
        assert_eq!(config["trained"]["repeat"], serde_json::json!([1, 3]));

        // A resumed run must sample as the checkpoint did; one value per folder.
        let changed = train("1,2", "2", true);
        assert!(!changed.status.success());
        let err = stderr(&changed);
        assert!(err.contains("trained with --repeat [1, 3], now given [1, 2]") && !err.contains("panicked"), "{err}");
        let count = train("2", "1", false);
        assert!(!count.status.success());
        assert!(stderr(&count).contains("--repeat: 1 value(s) for 2 --data folder(s)"), "{}", stderr(&count));
        // Without --repeat every folder counts once.
        let plain = train("", "1", false);
        assert!(plain.status.success(), "{}", stderr(&plain));
        assert!(stderr(&plain).contains("an epoch: 32 crops (seta x1, setb x1)"), "{}", stderr(&plain));
    }

    #[test]
    fn a_killed_training_run_resumes_from_its_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let set = tiny_set(dir.path(), 48);
        let out = dir.path().join("m.safetensors");
        let ckpt = dir.path().join("m.ckpt");
        let mut child = bin()
            .args(["train", "--points", "15", "--epochs", "50", "--batch-size", "8", "--data"])
            .arg(&set)
            .arg("--out")
            .arg(&out)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill it hard (no chance to clean up) a moment after its first checkpoint.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !ckpt.is_file() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(700));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(ckpt.is_file(), "a checkpoint was written");
        let resumed = train(&set, &out, "3", true);
        let log = stderr(&resumed);
        assert!(resumed.status.success(), "{log}");
        assert!(log.contains("resuming"), "{log}");
        // The killed run's temporary files are cleaned up by the next run.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

/// A camera that stops delivering frames mid-run (simulated: real frames of
/// hamilton_clip, then the error a camera read gives): the run ends with that error,
/// and both outputs are finalised with every frame processed before it.
mod camera_lost {
    use super::*;
    use facekp::detect::{DetectorConfig, DEFAULT_CASCADE};
    use facekp::model::{Keypointer, Precision};
    use facekp::pipeline::{self, RunOptions};
    use facekp::render::OverlayOptions;
    use facekp::source::{Frame, FrameSource, SourceError, SourceInfo, SourceSpec, VideoSource};
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
            detect_every: 10,
            tracking: true,
            smoothing: None,
            record_faces: false,
            show_window: false,
            output: Some(output.clone()),
            keypoints: Some(keypoints.clone()),
            max_frames: None,
            progress: false,
            overlay: OverlayOptions::default(),
        };
        let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/face68.safetensors");
        let model = Keypointer::load(&weights, tch::Device::Cpu, Precision::auto(tch::Device::Cpu), None).unwrap();
        let prepared = pipeline::Prepared::new(
            Box::new(source),
            options,
            DetectorConfig::default(),
            Path::new(DEFAULT_CASCADE),
            model,
        )
        .unwrap();
        let err = pipeline::run(prepared, Arc::new(AtomicBool::new(false))).err().expect("a lost camera is an error");
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
}
