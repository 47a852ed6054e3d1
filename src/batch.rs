//! `facekp batch`: the inputs of a collection (videos, folders of videos, image
//! folders, `.txt` lists of paths), sorted into one list that `--shard I/N` splits
//! with no coordination; the outputs each input gets in the output folder; and
//! `summary.json`, merged under a lock so that many processes can share a folder.

use crate::fsutil;
use crate::source::IMAGE_EXTENSIONS;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Extensions of the files a folder input contributes as videos (lower case).
pub const VIDEO_EXTENSIONS: [&str; 14] =
    ["mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "mts", "m2ts", "wmv", "flv", "ogv"];
/// The summary file in the output folder.
pub const SUMMARY_FILE: &str = "summary.json";

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("input {path}: not found")]
    InputMissing { path: PathBuf },
    #[error("input {path}: {source}")]
    InputIo { path: PathBuf, source: std::io::Error },
    #[error("input {path}: no videos ({}) or images in the folder", VIDEO_EXTENSIONS.join(", "))]
    FolderEmpty { path: PathBuf },
    #[error("inputs {first} and {second} would both write {stem}.*: rename one")]
    StemClash { stem: String, first: PathBuf, second: PathBuf },
    #[error("--out-dir {path}: {source}")]
    OutDir { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Summary { path: PathBuf, source: std::io::Error },
}

/// One job of `--shard I/N`: the inputs whose index in the sorted list is I-1 modulo N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Whether the input at `position` (0-based, in the sorted list) is this shard's.
    pub fn takes(&self, position: usize) -> bool {
        position % self.count == self.index - 1
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected I/N with 1 <= I <= N, e.g. 1/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// The keypoint file format of `batch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeypointExt {
    Jsonl,
    Csv,
}

impl KeypointExt {
    pub fn extension(self) -> &'static str {
        match self {
            KeypointExt::Jsonl => "jsonl",
            KeypointExt::Csv => "csv",
        }
    }
}

/// What an input is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Video,
    Images,
}

/// One input of a batch and the stem of its outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInput {
    pub path: PathBuf,
    pub kind: InputKind,
    pub stem: String,
}

/// The files an input gets in the output folder.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub keypoints: PathBuf,
    pub video: Option<PathBuf>,
}

impl Outputs {
    /// `DIR/STEM.jsonl` (or `.csv`), and `DIR/STEM.mp4` when `annotate`.
    pub fn of(input: &BatchInput, dir: &Path, format: KeypointExt, annotate: Annotate) -> Outputs {
        let keypoints = dir.join(format!("{}.{}", input.stem, format.extension()));
        let video = (annotate == Annotate::Yes).then(|| dir.join(format!("{}.mp4", input.stem)));
        Outputs { keypoints, video }
    }

    /// Whether every output exists (each is renamed into place only when complete).
    pub fn exist(&self) -> bool {
        self.keypoints.is_file() && self.video.as_ref().is_none_or(|v| v.is_file())
    }

    /// Removes temporary files that a killed run left for these outputs.
    pub fn remove_stale_temps(&self) {
        fsutil::remove_stale_temps(&self.keypoints);
        if let Some(v) = &self.video {
            fsutil::remove_stale_temps(v);
        }
    }
}

/// Whether each input also gets its annotated video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Annotate {
    Yes,
    No,
}

/// Every input the arguments name, sorted by path, without duplicates; two inputs
/// whose outputs would have the same name are an error.
pub fn collect_inputs(args: &[PathBuf]) -> Result<Vec<BatchInput>, BatchError> {
    let mut inputs = Vec::new();
    for arg in args {
        if !arg.exists() {
            return Err(BatchError::InputMissing { path: arg.clone() });
        }
        add_input(arg, &mut inputs)?;
    }
    inputs.sort_by(|a, b| a.path.cmp(&b.path));
    inputs.dedup_by(|a, b| a.path == b.path);
    check_stems(&inputs)?;
    Ok(inputs)
}

/// Adds `path`: a folder's videos (or the folder, when it holds only images), the
/// entries of a `.txt` list, or a video file.
fn add_input(path: &Path, inputs: &mut Vec<BatchInput>) -> Result<(), BatchError> {
    if path.is_dir() {
        return add_folder(path, inputs);
    }
    let ext = lower_extension(path);
    if ext == "txt" && path.is_file() {
        return add_list(path, inputs);
    }
    inputs.push(BatchInput { path: path.to_owned(), kind: InputKind::Video, stem: stem_of(path) });
    Ok(())
}

fn add_folder(dir: &Path, inputs: &mut Vec<BatchInput>) -> Result<(), BatchError> {
    let io = |source| BatchError::InputIo { path: dir.to_owned(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    let videos: Vec<PathBuf> =
        files.iter().filter(|p| VIDEO_EXTENSIONS.contains(&lower_extension(p).as_str())).cloned().collect();
    if !videos.is_empty() {
        inputs.extend(videos.into_iter().map(|p| BatchInput { stem: stem_of(&p), path: p, kind: InputKind::Video }));
    } else if files.iter().any(|p| IMAGE_EXTENSIONS.contains(&lower_extension(p).as_str())) {
        inputs.push(BatchInput { path: dir.to_owned(), kind: InputKind::Images, stem: folder_name(dir) });
    } else {
        return Err(BatchError::FolderEmpty { path: dir.to_owned() });
    }
    Ok(())
}

/// A list: one path a line, relative to the list's folder; blank lines and lines
/// starting with `#` are skipped. An entry that does not exist fails at its turn,
/// as an unreadable video does, so the rest of the collection still runs.
fn add_list(list: &Path, inputs: &mut Vec<BatchInput>) -> Result<(), BatchError> {
    let text = std::fs::read_to_string(list).map_err(|source| BatchError::InputIo { path: list.to_owned(), source })?;
    let base = list.parent().unwrap_or(Path::new("."));
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let path = base.join(line);
        match path.is_dir() {
            true => add_folder(&path, inputs)?,
            false => inputs.push(BatchInput { stem: stem_of(&path), path, kind: InputKind::Video }),
        }
    }
    Ok(())
}

fn check_stems(inputs: &[BatchInput]) -> Result<(), BatchError> {
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    for input in inputs {
        if let Some(first) = seen.insert(&input.stem, &input.path) {
            return Err(BatchError::StemClash {
                stem: input.stem.clone(),
                first: first.to_owned(),
                second: input.path.clone(),
            });
        }
    }
    Ok(())
}

fn lower_extension(path: &Path) -> String {
    path.extension().map(|e| e.to_string_lossy().to_lowercase()).unwrap_or_default()
}

fn stem_of(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

fn folder_name(dir: &Path) -> String {
    let name = dir.file_name().map(|n| n.to_os_string());
    let name = name.or_else(|| dir.canonicalize().ok()?.file_name().map(|n| n.to_os_string()));
    name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "images".into())
}

/// How an input's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Done,
    /// Its outputs existed (a rerun); the record of the run that made them is kept.
    Skipped,
    Failed,
    /// Stopped by Ctrl-C or SIGTERM; its outputs were removed.
    Interrupted,
}

/// One input's line of `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputRecord {
    pub input: PathBuf,
    pub status: Status,
    pub frames: u64,
    pub faces: u64,
    pub frames_with_faces: u64,
    /// Frames that did not decode (truncated or corrupt input, broken images).
    pub undecodable: u64,
    pub fps: f64,
    pub secs: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl InputRecord {
    /// A record of `status` with no figures.
    pub fn bare(input: &Path, status: Status, error: Option<String>) -> Self {
        Self {
            input: input.to_owned(),
            status,
            frames: 0,
            faces: 0,
            frames_with_faces: 0,
            undecodable: 0,
            fps: 0.0,
            secs: 0.0,
            error,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SummaryFile {
    inputs: Vec<InputRecord>,
}

/// Merges `records` into `DIR/summary.json` under an exclusive lock (processes of
/// other shards may be writing it too): a record replaces the one of the same
/// input, except that a skipped input keeps the record of the run that made its
/// outputs. Written atomically. Returns the file's path.
pub fn merge_summary(dir: &Path, records: &[InputRecord]) -> Result<PathBuf, BatchError> {
    let path = dir.join(SUMMARY_FILE);
    let err = |source| BatchError::Summary { path: path.clone(), source };
    let lock = std::fs::File::create(dir.join(".summary.lock")).map_err(err)?;
    let _held = FileLock::exclusive(&lock).map_err(err)?;
    let old: SummaryFile = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
        Err(_) => SummaryFile::default(),
    };
    let mut by_input: BTreeMap<PathBuf, InputRecord> = old.inputs.into_iter().map(|r| (r.input.clone(), r)).collect();
    for r in records {
        if r.status == Status::Skipped && by_input.contains_key(&r.input) {
            continue;
        }
        by_input.insert(r.input.clone(), r.clone());
    }
    let merged = SummaryFile { inputs: by_input.into_values().collect() };
    let text = serde_json::to_string_pretty(&merged).map_err(|e| err(e.into()))?;
    fsutil::write_atomic(&path, format!("{text}\n").as_bytes()).map_err(err)?;
    Ok(path)
}

/// An exclusive `flock` on a file, released when dropped.
struct FileLock<'a>(&'a std::fs::File);

impl<'a> FileLock<'a> {
    fn exclusive(file: &'a std::fs::File) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        // SAFETY: flock takes a file descriptor that `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(FileLock(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        // SAFETY: as above; unlocking cannot fail in a way worth handling.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_sorted_list_without_overlap() {
        let shards: Vec<Shard> = ["1/3", "2/3", "3/3"].iter().map(|s| s.parse().unwrap()).collect();
        for position in 0..10 {
            assert_eq!(shards.iter().filter(|s| s.takes(position)).count(), 1, "position {position}");
        }
        assert!(shards[1].takes(1) && shards[1].takes(4) && !shards[1].takes(0));
        for bad in ["0/2", "3/2", "1", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn folders_lists_and_clashing_stems() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let videos = d.join("videos");
        let photos = d.join("photos");
        std::fs::create_dir_all(&videos).unwrap();
        std::fs::create_dir_all(&photos).unwrap();
        for name in ["b.mp4", "a.MKV", "notes.txt"] {
            std::fs::write(videos.join(name), "x").unwrap();
        }
        std::fs::write(photos.join("p.jpg"), "x").unwrap();
        std::fs::write(d.join("list.txt"), "# a comment\nvideos/b.mp4\n\nphotos\nmissing.mp4\n").unwrap();
        let inputs = collect_inputs(&[videos.clone(), d.join("list.txt")]).unwrap();
        let names: Vec<(&str, InputKind)> = inputs.iter().map(|i| (i.stem.as_str(), i.kind)).collect();
        assert_eq!(
            names,
            [
                ("missing", InputKind::Video),
                ("photos", InputKind::Images),
                ("a", InputKind::Video),
                ("b", InputKind::Video)
            ]
        );
        std::fs::write(d.join("b.mov"), "x").unwrap();
        let err = collect_inputs(&[videos, d.join("b.mov")]).unwrap_err().to_string();
        assert!(err.contains("would both write b.*"), "{err}");
        let err = collect_inputs(&[d.join("nothing")]).unwrap_err().to_string();
        assert!(err.ends_with("nothing: not found"), "{err}");
    }

    #[test]
    fn summaries_merge_and_skips_keep_the_record_of_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let done = InputRecord { frames: 10, ..InputRecord::bare(Path::new("a.mp4"), Status::Done, None) };
        merge_summary(dir.path(), &[done]).unwrap();
        let skipped = InputRecord::bare(Path::new("a.mp4"), Status::Skipped, None);
        let failed = InputRecord::bare(Path::new("b.mp4"), Status::Failed, Some("bad".into()));
        let path = merge_summary(dir.path(), &[skipped, failed]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(v["inputs"][0]["status"], "done");
        assert_eq!(v["inputs"][0]["frames"], 10);
        assert_eq!(v["inputs"][1]["status"], "failed");
        assert_eq!(v["inputs"][1]["error"], "bad");
    }
}
