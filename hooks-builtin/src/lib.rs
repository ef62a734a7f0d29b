//! Built-in actions the agent runs in place of user scripts: the native
//! `loadBalancer` drain and restore.
//!
//! - `lifecycle` decides *when* each step runs around the deployment's host
//!   commands (docs/loadbalancer.md 3.1), and how a restore goes; pure.
//! - `select` decides *what* a drain selects and a restore puts back, over
//!   the plain values `aws` returns; pure.
//! - `Drainer` carries the steps out against Auto Scaling, Classic ELB and
//!   ELBv2 (`discover`, `drain`, `restore`), with a journal written before
//!   every change so a restart can always finish the job.
//!
//! ```
//! use appspec::events::HostCommand;
//! use hooks_builtin::journal::{OnFailure, Phase};
//! use hooks_builtin::lifecycle::*;
//!
//! let events: Vec<String> = ["ApplicationStop", "DownloadBundle", "Install", "ValidateService"]
//!     .map(String::from)
//!     .to_vec();
//! let stop = HostCommand::parse("ApplicationStop");
//! // The deployment's first command drains, before its scripts.
//! assert_eq!(drain_attempt(&stop, &events, false), Some(Attempt::First));
//! assert!(must_run(&stop, &events, None), "never acknowledged as a no-op");
//!
//! // After ValidateService passes, the instance goes back, gated on health.
//! let validate = HostCommand::parse("ValidateService");
//! let ours = Some(Phase::Stopping);
//! assert_eq!(
//!     after_command(&validate, true, ours),
//!     vec![Step::Touch, Step::Restore(Why::Validated)]
//! );
//! assert!(matches!(
//!     restore_plan(Phase::Stopping, OnFailure::KeepDrained, Why::Validated),
//!     RestorePlan::PutBack { gate: true, .. }
//! ));
//!
//! // A failure once the application may be down: onFailure decides.
//! assert_eq!(
//!     restore_plan(Phase::Stopping, OnFailure::KeepDrained, Why::Failed),
//!     RestorePlan::KeepDrained { rearm: false }
//! );
//! ```

#![deny(missing_docs)]

use std::future::Future;
use std::time::Duration;

pub mod aws;
pub mod breadcrumb;
mod discover;
mod drain;
pub mod gate;
pub mod idle;
pub mod journal;
pub mod lifecycle;
pub mod preview;
mod restore;
pub mod select;
#[cfg(test)]
mod test_support;
mod timeline;

pub use lifecycle::{
    drain_event, forces_command, has_service_traffic_control, placement, Action, Placement,
    Refusal, Why,
};
pub use timeline::Failure;

/// This host as the load balancers know it.
#[derive(Clone, Debug)]
pub struct HostId {
    /// The EC2 instance id.
    pub instance_id: String,
    /// Where the load balancer reaches it (the private IPv4 address); the
    /// health gate probes here.
    pub address: String,
}

/// A finished drain or restore: a summary line and the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// One line, for the command's report.
    pub summary: String,
    /// The timeline of every step, for the log.
    pub log: String,
}

/// Carries the `loadBalancer` steps out on one host.
pub struct Drainer {
    /// The AWS clients.
    pub clients: aws::Clients,
    /// The journals.
    pub store: journal::Store,
    /// This host.
    pub host: HostId,
    /// Describe-call cadence while waiting (5 s in production).
    pub poll_interval: Duration,
    /// The host's socket tables, for `drainUntil: idle`.
    pub sockets: std::sync::Arc<dyn idle::Sockets>,
}

impl Drainer {
    fn save(&self, j: &journal::Journal) -> std::io::Result<()> {
        self.store.save(j)
    }

    /// +-20 % so a fleet's hosts do not poll in step.
    fn jittered(&self, d: Duration) -> Duration {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let f = 0.8 + f64::from(nanos % 1000) / 2500.0;
        d.mul_f64(f)
    }

    /// Call `check` until it returns `Some`, or `budget` has passed (`None`).
    async fn poll<T, F, Fut>(&self, budget: Duration, mut check: F) -> Result<Option<T>, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, aws::AwsError>>,
    {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(v) = check().await? {
                return Ok(Some(v));
            }
            if t0.elapsed() >= budget {
                return Ok(None);
            }
            let left = budget.saturating_sub(t0.elapsed());
            tokio::time::sleep(self.jittered(self.poll_interval).min(left)).await;
        }
    }

    /// The stop scripts are about to run: from here a crash leaves the
    /// application possibly down, and `onFailure` decides.
    pub fn stopping(&self, group_id: &str) -> std::io::Result<bool> {
        self.set(group_id, |j| {
            if j.phase == journal::Phase::Drained {
                j.phase = journal::Phase::Stopping;
            }
        })
    }

    /// A command of `deployment_id` arrived: re-arm `abandonAfter`.
    pub fn touch(&self, group_id: &str, deployment_id: &str) -> std::io::Result<bool> {
        match self.store.load(group_id)? {
            Some(mut j) if j.deployment_id == deployment_id => {
                j.abandon_at = journal::now() + u64::from(j.abandon_after);
                self.save(&j)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn set(&self, group_id: &str, f: impl FnOnce(&mut journal::Journal)) -> std::io::Result<bool> {
        match self.store.load(group_id)? {
            Some(mut j) => {
                f(&mut j);
                self.save(&j)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Groups whose drained deployment went quiet past `abandonAfter`.
    pub fn abandoned(&self) -> Vec<String> {
        let now = journal::now();
        self.store
            .pending()
            .into_iter()
            .filter(|g| matches!(self.store.load(g), Ok(Some(j)) if j.abandon_at <= now))
            .collect()
    }

    /// The deployment a group's journal belongs to, if any.
    pub fn journal_of(&self, group_id: &str) -> Option<String> {
        self.store
            .load(group_id)
            .ok()
            .flatten()
            .map(|j| j.deployment_id)
    }
}
