//! Helpers shared by the integration tests: the binary, fixture paths, ffmpeg,
//! and readers for the files facekp writes.

pub use std::path::{Path, PathBuf};
pub use std::process::{Command, Output};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_facekp"))
}

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// A file of the shipped weights folder (`weights/NAME`).
pub fn weights(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("weights").join(name)
}

pub fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared").join(rel)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs ffmpeg (quiet, overwriting) with `args`.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).output().expect("ffmpeg runs");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", stderr(&out));
}

/// The lines of a JSON Lines file, each parsed (a cut-off line fails the test).
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("complete JSON lines"))
        .collect()
}

/// Frames of a video as ffprobe counts them by decoding.
pub fn ffprobe_frames(path: &Path) -> u64 {
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

/// Runs `facekp` with `args`, failing the test unless it succeeds; its stderr.
pub fn run_ok(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    stderr(&out)
}

/// The shipped 68-point weights copied into `dir` with `field` removed from their
/// config; also the removed value (null when the config had none).
pub fn shipped68_without(field: &str, dir: &Path) -> (PathBuf, serde_json::Value) {
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(weights("face68.json")).unwrap()).unwrap();
    let removed = config.as_object_mut().unwrap().remove(field).unwrap_or_default();
    std::fs::write(dir.join("face68.json"), config.to_string()).unwrap();
    std::fs::copy(weights("face68.safetensors"), dir.join("face68.safetensors")).unwrap();
    (dir.join("face68.safetensors"), removed)
}
