//! Small file-system helpers: atomic writes (temp file in the same folder + rename),
//! so a crash never leaves a half-written file under the final name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Temporary files being written right now, so an immediate exit (a second
/// Ctrl-C) can remove them: see [`remove_pending_temps`].
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Notes that `tmp` is being written (until [`forget_temp`]).
pub fn register_temp(tmp: &Path) {
    if let Ok(mut pending) = PENDING.lock() {
        pending.push(tmp.to_owned());
    }
}

/// `tmp` was renamed into place or removed.
pub fn forget_temp(tmp: &Path) {
    if let Ok(mut pending) = PENDING.lock() {
        pending.retain(|p| p != tmp);
    }
}

/// Removes every registered temporary file; for a process about to exit at once.
/// Never blocks: if another thread holds the list, the files are left.
pub fn remove_pending_temps() {
    if let Ok(pending) = PENDING.try_lock() {
        for p in pending.iter() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The temporary name used while `path` is being written: hidden, in the same
/// folder, with the same extension (writers pick their format by extension).
pub fn temp_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    path.with_file_name(format!(".{stem}.tmp{}{ext}", std::process::id()))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Runs `write` on a temporary path, then renames it to `path` (removing the
/// temporary file on failure).
pub fn with_atomic_path<E>(path: &Path, write: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E>
where
    E: From<std::io::Error>,
{
    let tmp = temp_path(path);
    match write(&tmp) {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            E::from(e)
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Removes temporary files a crashed writer of `path` left behind (see [`temp_path`]).
pub fn remove_stale_temps(path: &Path) {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{stem}.tmp");
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
