//! The `facekp` binary: parse the command line, run one command, print an error
//! once as one line, and exit with its code (see `cli`).

mod cli;

use clap::Parser;

fn main() {
    facekp::model::flush_denormals();
    let args = cli::args::Cli::parse();
    // OpenCV's own warnings (e.g. a camera index that does not open) would repeat
    // what our one-line errors say; failures still come back as errors.
    let _ = opencv::core::set_log_level(opencv::core::LogLevel::LOG_LEVEL_SILENT);
    // Likewise FFmpeg's (read by OpenCV's FFmpeg backend; -8 is AV_LOG_QUIET).
    if std::env::var_os("OPENCV_FFMPEG_LOGLEVEL").is_none() {
        std::env::set_var("OPENCV_FFMPEG_LOGLEVEL", "-8");
    }
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("facekp: error: {err:#}");
            1
        }
    };
    cli::exit_now(code)
}
