//! What a drain or restore did, in order, with times: the `log` of its
//! diagnostics and the audit trail beside the journal.

use std::time::{Duration, Instant};

use crate::aws::AwsError;

pub struct Timeline {
    t0: Instant,
    lines: Vec<String>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline {
            t0: Instant::now(),
            lines: Vec::new(),
        }
    }
}

impl Timeline {
    pub fn note(&mut self, step: &str, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(step, detail = %detail, "load balancer");
        self.lines.push(format!(
            "[{:>7.2}s] {step}: {detail}",
            self.t0.elapsed().as_secs_f64()
        ));
    }

    pub fn elapsed(&self) -> Duration {
        self.t0.elapsed()
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Why a drain or restore did not succeed. `message` is one line naming the
/// step and the resource; the timeline goes to the diagnostics' log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// An AWS error or a timeout (script-failed class) rather than a bug or
    /// a local I/O error.
    pub expected: bool,
}

impl Failure {
    /// A failure the deployment's configuration or AWS's state explains.
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            expected: true,
        }
    }

    /// A failure of the agent or its environment (I/O, no answer).
    pub fn unexpected(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            expected: false,
        }
    }
}

impl From<AwsError> for Failure {
    fn from(e: AwsError) -> Self {
        Failure::new(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::unexpected(format!("drain journal: {e}"))
    }
}
