//! `facekp batch`: shards, failures, reruns, interruption, and GNU parallel.

use crate::util::*;
use std::time::Duration;

/// `frames` frames of hamilton_clip from `start_secs`, as H.264 in `out`.
fn clip(out: &Path, start_secs: f64, frames: u32) {
    let h = data("hamilton_clip.mp4");
    let (start, frames) = (start_secs.to_string(), frames.to_string());
    ffmpeg(&[
        "-ss",
        &start,
        "-i",
        h.to_str().unwrap(),
        "-frames:v",
        &frames,
        "-c:v",
        "libx264",
        "-an",
        out.to_str().unwrap(),
    ]);
}

/// A folder of three short clips (a, c, d) and, when `broken`, b.mp4, which is
/// not a video.
fn collection(dir: &Path, broken: bool) -> PathBuf {
    let videos = dir.join("videos");
    std::fs::create_dir(&videos).unwrap();
    clip(&videos.join("a.mp4"), 0.0, 12);
    clip(&videos.join("c.mp4"), 6.2, 15);
    clip(&videos.join("d.mp4"), 3.0, 10);
    if broken {
        std::fs::write(videos.join("b.mp4"), [7u8; 4096]).unwrap();
    }
    videos
}

fn batch(args: &[&Path], extra: &[&str]) -> Output {
    bin().arg("batch").args(args).args(extra).output().unwrap()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    n.sort();
    n
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap()
}

/// Two shards over a folder with a broken file: every good video's keypoints
/// exactly once, with a line per frame; the broken one is reported by the shard
/// that has it, which exits non-zero; a rerun skips what is done.
#[test]
fn two_shards_cover_every_good_video_once_and_a_rerun_skips() {
    let dir = tempfile::tempdir().unwrap();
    let videos = collection(dir.path(), true);
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    // Sorted: a, b, c, d. Shard 1/2 takes a and c; 2/2 takes b and d.
    let first = batch(&[&videos], &["--out-dir", o, "--shard", "1/2"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let second = batch(&[&videos], &["--out-dir", o, "--shard", "2/2"]);
    let log = stderr(&second);
    assert_eq!(second.status.code(), Some(1), "a failed input makes the exit code non-zero: {log}");
    assert!(log.contains("failed:\n  video ") && log.contains("b.mp4: cannot be opened"), "{log}");
    assert!(log.contains("done ") && log.contains("d.mp4"), "the other video still ran: {log}");
    assert_eq!(names(&out), [".summary.lock", "a.jsonl", "c.jsonl", "d.jsonl", "summary.json"]);
    for (stem, frames) in [("a", 12), ("c", 15), ("d", 10)] {
        let rows = jsonl(&out.join(format!("{stem}.jsonl")));
        assert_eq!(rows.len(), frames, "{stem}: a line per frame");
        assert!(rows.iter().enumerate().all(|(i, r)| r["frame"] == i as u64), "{stem}: frames in order");
    }
    let s = summary(&out);
    let status: Vec<(&str, &str)> = s["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["input"].as_str().unwrap().rsplit('/').next().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(status, [("a.mp4", "done"), ("b.mp4", "failed"), ("c.mp4", "done"), ("d.mp4", "done")]);
    assert_eq!(s["inputs"][2]["frames"], 15);
    let modified = std::fs::metadata(out.join("a.jsonl")).unwrap().modified().unwrap();
    let rerun = batch(&[&videos], &["--out-dir", o, "--shard", "1/2"]);
    assert_eq!(rerun.status.code(), Some(0), "{}", stderr(&rerun));
    assert!(stderr(&rerun).contains("skipping 2 of 2 inputs: their outputs exist"), "{}", stderr(&rerun));
    assert_eq!(std::fs::metadata(out.join("a.jsonl")).unwrap().modified().unwrap(), modified, "not redone");
    assert_eq!(summary(&out)["inputs"][0]["status"], "done", "a skip keeps the record of the run");
}

/// SIGTERM in the middle of a video: exit 130, the finished video's outputs are
/// there, the interrupted one's are not (nor any temporary file); a rerun skips
/// the finished one and completes the other.
#[test]
fn an_interrupted_batch_leaves_no_partial_output_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let videos = dir.path().join("videos");
    std::fs::create_dir(&videos).unwrap();
    clip(&videos.join("a.mp4"), 6.2, 10);
    let h = data("hamilton_clip.mp4");
    let long = videos.join("b.mp4");
    ffmpeg(&["-stream_loop", "3", "-i", h.to_str().unwrap(), "-c", "copy", long.to_str().unwrap()]);
    let out = dir.path().join("out");
    let args = |cmd: &mut Command| {
        cmd.arg("batch").arg(&videos).arg("--out-dir").arg(&out).arg("--annotate");
    };
    let mut cmd = bin();
    args(&mut cmd);
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        log += &line;
        log.push('\n');
        if line.starts_with("[2/2]") {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    for line in lines {
        log += &line.unwrap();
        log.push('\n');
    }
    assert_eq!(child.wait().unwrap().code(), Some(130), "{log}");
    assert!(log.contains("interrupted") && log.contains("b.mp4"), "{log}");
    assert_eq!(names(&out), [".summary.lock", "a.jsonl", "a.mp4", "summary.json"], "{log}");
    assert_eq!(summary(&out)["inputs"][1]["status"], "interrupted");
    let mut cmd = bin();
    args(&mut cmd);
    let rerun = cmd.output().unwrap();
    let log = stderr(&rerun);
    assert_eq!(rerun.status.code(), Some(0), "{log}");
    assert!(log.contains("skipping 1 of 2 inputs"), "{log}");
    let frames = ffprobe_frames(&long);
    assert_eq!(jsonl(&out.join("b.jsonl")).len() as u64, frames);
    assert_eq!(ffprobe_frames(&out.join("b.mp4")), frames);
    assert_eq!(summary(&out)["inputs"][1]["status"], "done");
}

/// The docs' GNU parallel recipes (2 jobs: one per shard, and one per file)
/// give the keypoint files of a single batch run, byte for byte.
#[test]
fn gnu_parallel_matches_a_single_batch_run_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let videos = collection(dir.path(), false);
    let single = dir.path().join("single");
    let one = batch(&[&videos], &["--out-dir", single.to_str().unwrap()]);
    assert!(one.status.success(), "{}", stderr(&one));
    let facekp = env!("CARGO_BIN_EXE_facekp");
    let (shards, files) = (dir.path().join("shards"), dir.path().join("files"));
    let recipes = [
        format!(
            "parallel -j2 {facekp} batch {} --out-dir {} --shard {{}}/2 ::: 1 2",
            videos.display(),
            shards.display()
        ),
        format!("parallel -j2 {facekp} batch {{}} --out-dir {} ::: {}/*.mp4", files.display(), videos.display()),
    ];
    for (recipe, out) in recipes.iter().zip([&shards, &files]) {
        let run =
            Command::new("sh").args(["-c", recipe]).output().expect("GNU parallel runs (apt-get install parallel)");
        assert!(run.status.success(), "{recipe}: {}", stderr(&run));
        for stem in ["a", "c", "d"] {
            let name = format!("{stem}.jsonl");
            let (want, got) = (std::fs::read(single.join(&name)).unwrap(), std::fs::read(out.join(&name)).unwrap());
            assert!(want == got, "{recipe}: {name} differs from the single run's");
        }
        assert_eq!(summary(out)["inputs"].as_array().unwrap().len(), 3, "{recipe}: one summary of every input");
    }
}

/// Clashing stems and a bad shard are refused before any work, naming the problem.
#[test]
fn clashing_stems_and_bad_shards_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("x")).unwrap();
    std::fs::create_dir_all(d.join("y")).unwrap();
    std::fs::copy(data("hamilton_clip.mp4"), d.join("x/talk.mp4")).unwrap();
    std::fs::copy(data("hamilton_clip.mp4"), d.join("y/talk.mkv")).unwrap();
    let out = d.join("out");
    let run = batch(&[&d.join("x"), &d.join("y")], &["--out-dir", out.to_str().unwrap()]);
    let log = stderr(&run);
    assert_eq!(run.status.code(), Some(1), "{log}");
    assert!(log.contains("would both write talk.*: rename one") && log.lines().count() == 1, "{log}");
    assert!(!out.exists(), "nothing written");
    let run = batch(&[&d.join("x")], &["--out-dir", out.to_str().unwrap(), "--shard", "3/2"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("expected I/N with 1 <= I <= N"), "{}", stderr(&run));
}
