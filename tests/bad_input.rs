use crate::util::*;

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
    let w68 = weights("face68.safetensors");

    let missing = s(&d.join("missing.mp4"));
    expect_error(&["run", "--headless", "--video", &missing, "--output", &out_mp4], "file not found", d);
    expect_error(&["run", "--headless", "--video", &s(&d.join("emptydir")), "--output", &out_mp4], "is a folder", d);
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
        .args(["run", "--headless", "--images", mixed.to_str().unwrap(), "--keypoints", keypoints.to_str().unwrap()])
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
    let w68 = weights("face68");
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
    // The shipped weights with an edited copy of their config.
    let edited = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| {
        let sub = d.join(name);
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("m.safetensors"), &bytes).unwrap();
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(w68.with_extension("json")).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(sub.join("m.json"), config.to_string()).unwrap();
        sub
    };
    // A config that does not describe these weights (another first-layer width).
    let sub = edited("inconsistent", &|c| c["channels"][0] = (c["channels"][0].as_i64().unwrap() + 4).into());
    let w = sub.join("m.safetensors").to_string_lossy().into_owned();
    expect_error(&["run", "--headless", "--video", &video, "--weights", &w], "the model config needs", &sub);
    // A face threshold that is not a positive number.
    let sub = edited("threshold", &|c| c["max_turned_spread"] = (-0.1).into());
    let w = sub.join("m.safetensors").to_string_lossy().into_owned();
    expect_error(&["run", "--headless", "--video", &video, "--weights", &w], "max_turned_spread must be", &sub);
    // Weights without their config.
    let sub = d.join("noconfig");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("m.safetensors"), &bytes).unwrap();
    let w = sub.join("m.safetensors").to_string_lossy().into_owned();
    expect_error(&["run", "--headless", "--video", &video, "--weights", &w], "model config", &sub);
}
