//! Training: a tiny real data set, checkpoints every epoch, resume, and a kill at
//! any moment leaving a checkpoint that still resumes.

use crate::util::*;
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
    train_with(set.as_os_str(), out, epochs, resume, &[])
}

/// `facekp train --points 15 --batch-size 8` on `data` (folders, comma separated)
/// with `extra` arguments.
fn train_with(data: &std::ffi::OsStr, out: &Path, epochs: &str, resume: bool, extra: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.args(["train", "--points", "15", "--epochs", epochs, "--batch-size", "8", "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra);
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
    // The profile cascade's prior was measured on the photos too: its box is
    // larger than the 15 points' box (1.73x on the shipped model's faces).
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
    assert!(config["profile_crop"]["scale_mean"].as_f64().is_some_and(|s| s > 1.2), "{config}");
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
        let extra: &[&str] = if repeat.is_empty() { &[] } else { &["--repeat", repeat] };
        train_with(data.as_ref(), &out, epochs, resume, extra)
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
    // ... and with the loss it was trained with.
    let other_loss = train_with(data.as_ref(), &out, "2", true, &["--repeat", "1,3", "--loss", "wing"]);
    assert!(!other_loss.status.success());
    let err = stderr(&other_loss);
    assert!(err.contains("trained with --loss l1, now given wing") && !err.contains("panicked"), "{err}");
    assert_eq!(config["trained"]["loss"], "l1");
    let count = train("2", "1", false);
    assert!(!count.status.success());
    assert!(stderr(&count).contains("--repeat: 1 value(s) for 2 --data folder(s)"), "{}", stderr(&count));
    // Without --repeat every folder counts once.
    let plain = train("", "1", false);
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert!(stderr(&plain).contains("an epoch: 32 crops (seta x1, setb x1)"), "{}", stderr(&plain));
}

/// `--channels` and `--extra-convs` train another network shape, which the
/// config records and `eval` rebuilds; a resume keeps it, and a wrong count or a
/// fine-tune given a shape is refused before any data is read.
#[test]
fn other_stage_widths_train_a_network_that_eval_loads_and_a_resume_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let set = tiny_set(dir.path(), 24);
    let out = dir.path().join("m.safetensors");
    let train = |shape: &[&str], epochs: &str, resume: bool| train_with(set.as_os_str(), &out, epochs, resume, shape);
    let narrow = ["--channels", "8,16,24,32", "--extra-convs", "0,0,1,0"];
    let first = train(&narrow, "1", false);
    assert!(first.status.success(), "{}", stderr(&first));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("json")).unwrap()).unwrap();
    assert_eq!(config["channels"], serde_json::json!([8, 16, 24, 32]));
    assert_eq!(config["extra_convs"], serde_json::json!([0, 0, 1, 0]));
    let eval = bin()
        .args(["eval", "--points", "15", "--boxes", "truth", "--weights"])
        .arg(&out)
        .arg("--csv")
        .arg(set.join("val.csv"))
        .output()
        .unwrap();
    assert!(eval.status.success(), "{}", stderr(&eval));
    let report = String::from_utf8_lossy(&eval.stdout);
    assert!(report.contains("NME"), "{report}");

    let resumed = train(&narrow, "2", true);
    assert!(resumed.status.success() && stderr(&resumed).contains("after epoch 1"), "{}", stderr(&resumed));
    let default_shape = train(&[], "3", true);
    assert!(!default_shape.status.success());
    let err = stderr(&default_shape);
    assert!(
        err.contains("trained with --channels [8, 16, 24, 32] --extra-convs [0, 0, 1, 0], now given [16, 32, 64, 96]")
            && !err.contains("panicked"),
        "{err}"
    );

    let count = train(&["--channels", "8,16"], "1", false);
    assert!(!count.status.success());
    let err = stderr(&count);
    assert!(err.contains("--channels: the 15-point network has 4 stages, 2 value(s) given"), "{err}");
    assert!(!err.contains("training faces"), "refused after reading the data: {err}");
    let shipped = weights("face15.safetensors");
    let init = ["--channels", "8,16,24,32", "--init", shipped.to_str().unwrap()];
    let fine_tune = train_with(set.as_os_str(), &dir.path().join("f.safetensors"), "1", false, &init);
    assert!(!fine_tune.status.success());
    assert!(
        stderr(&fine_tune).contains("a fine-tune (--init) keeps the network of its weights"),
        "{}",
        stderr(&fine_tune)
    );
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

/// Turned heads enter an epoch more often. On real labels, the faces the pose of
/// the labels turns past 30 degrees are the ones whose nose tip sits far off the
/// middle of the jaw, and a mirrored face keeps its emphasis.
#[test]
fn turned_faces_are_the_ones_whose_nose_sits_off_the_middle_of_the_jaw() {
    use facekp::geometry::Point;
    use facekp::landmarks::Scheme;
    use facekp::pose::{CameraSpec, PoseSolver};
    use facekp::train::sets::Emphasis;
    use opencv::prelude::*;

    let dir = shared("datasets/ytf68");
    let set = facekp::dataset::load_set("ytf68", &dir.join("val.csv"), &dir.join("images")).unwrap();
    let solver = PoseSolver::new(Scheme::P68, CameraSpec::default());
    // Where the nose tip sits between the jaw's ends along the eye line: 0.5 on a
    // frontal face, towards 0 or 1 as the head turns.
    let nose_at = |p: &[Point]| {
        let (dx, dy) = (p[45].x - p[36].x, p[45].y - p[36].y);
        let along = |q: Point| (q.x * dx + q.y * dy) / (dx * dx + dy * dy).sqrt();
        (along(p[30]) - along(p[0])) / (along(p[16]) - along(p[0]))
    };
    let (mut turned, mut other) = (Vec::new(), Vec::new());
    for (gray, a) in set.images.iter().zip(&set.annotations) {
        let size = (gray.cols() as u32, gray.rows() as u32);
        let emphasis = Emphasis::of(&a.points, size, &solver).unwrap();
        let mirrored: Vec<Point> = Scheme::P68
            .mirror_labels(&a.points)
            .iter()
            .map(|q| Point { x: size.0 as f32 - 1.0 - q.x, y: q.y })
            .collect();
        assert_eq!(Emphasis::of(&mirrored, size, &solver).unwrap(), emphasis, "{} mirrored", a.image);
        match emphasis {
            Emphasis::Turned => turned.push((nose_at(&a.points) - 0.5).abs()),
            Emphasis::None => other.push((nose_at(&a.points) - 0.5).abs()),
            Emphasis::ClosedEye => {}
        }
    }
    let median = |v: &mut Vec<f32>| {
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    // 32 of the 366 val faces are turned; their nose tips sit 0.27 or more off the
    // middle, the median face's 0.1.
    assert!(turned.len() >= 20 && other.len() > 200, "{} turned, {} other", turned.len(), other.len());
    let (t, o) = (median(&mut turned), median(&mut other));
    assert!(turned[0] > 0.2 && t > 0.3 && o < 0.15, "turned: min {}, median {t}; other: median {o}", turned[0]);
}
