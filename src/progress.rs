//! Progress bars for long headless work (training epochs, evaluation, files).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `prefix`, with the position and an ETA.
pub fn progress_bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
