//! The binary's command line: [`args`] defines it, [`commands`] runs each command
//! ([`batch`] runs `facekp batch`).

pub mod args;
mod batch;
mod commands;

use anyhow::Result;
use args::{Cli, Command};

/// Exit code after Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs the command `cli` names; returns the process exit code.
pub fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Run(args) => commands::run(args),
        Command::Bench(args) => commands::bench(args),
        Command::Cameras => commands::cameras(),
        Command::Train(args) => commands::train(args),
        Command::Eval(args) => commands::eval(args),
        Command::Batch(args) => batch::batch(args),
    }
}

/// Ends the process without the C++ static destructors of the linked libraries.
/// Every output is finished (and renamed into place) before this; what the
/// destructors would do is tear down libtorch's CUDA libraries, which on a CPU
/// machine pages in about 90 MB of their code just to exit, and, after a second
/// Ctrl-C, run while the pipeline threads still use those libraries.
pub fn exit_now(code: u8) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` takes no pointers and never returns.
    unsafe { libc::_exit(code.into()) }
}
