//! Stage timing: how long a stage took, in milliseconds, without `Instant`
//! arithmetic at every call site.

use std::time::Instant;

/// A stopwatch started when made.
#[derive(Debug, Clone, Copy)]
pub struct StageTimer(Instant);

impl StageTimer {
    pub fn start() -> Self {
        StageTimer(Instant::now())
    }

    /// Milliseconds since the start.
    pub fn ms(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1000.0
    }
}
