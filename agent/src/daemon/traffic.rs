//! The executor's `Traffic` on EC2: the `loadBalancer` drain and restore of
//! `hooks-builtin`, driven from the executor's worker thread, and the
//! restores the daemon runs outside commands (after a crash, or when a
//! drained deployment is abandoned).

use std::path::Path;
use std::time::Duration;

use hooks_builtin::journal::Phase;
use hooks_builtin::journal::Store;
use hooks_builtin::lifecycle::{Action, Step, Why};
use hooks_builtin::{Drainer, Failure, HostId, Outcome};
use tokio::runtime::Handle;

use crate::command::{Deployment, Traffic};
use crate::config::Config;
use crate::diagnostics::{Diagnostics, ErrorCode};
use crate::fsutil::{self, Durability};
use crate::layout::Layout;
use crate::spec::DeploymentSpec;

fn persist(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fsutil::write_atomic(path, bytes, 0o600, Durability::Synced)
}

/// The drainer of this host: its AWS clients, its journals, its sockets.
pub fn drainer(config: &Config, aws: &crate::aws::Context, host: HostId) -> Drainer {
    Drainer {
        clients: aws.load_balancing(config),
        store: Store::new(
            &Layout::new(&config.root_dir, &config.program_name).load_balancer_dir(),
            persist,
        ),
        host,
        poll_interval: Duration::from_millis(config.load_balancer_poll_ms),
        sockets: std::sync::Arc::new(crate::sockets::Kernel),
    }
}

pub struct LbTraffic {
    pub drainer: Drainer,
    pub handle: Handle,
}

impl LbTraffic {
    /// The `loadBalancer` steps of one agent, with its AWS context.
    pub fn new(
        config: &Config,
        aws: &crate::aws::Context,
        host: HostId,
        handle: Handle,
    ) -> LbTraffic {
        LbTraffic {
            drainer: drainer(config, aws, host),
            handle,
        }
    }

    /// Restore one group's journal outside a command.
    pub async fn finish(&self, group: &str, why: Why) {
        let t0 = std::time::Instant::now();
        let r = self.drainer.restore(group, why).await;
        count_restore(t0, &r);
        match r {
            Ok(Some(o)) => {
                tracing::info!(group, ?why, summary = %o.summary, timeline = %o.log, "loadBalancer restore")
            }
            Ok(None) => {}
            Err((f, log)) => {
                tracing::error!(group, ?why, error = %f.message, timeline = %log, "loadBalancer restore failed")
            }
        }
    }
}

/// A restore that had something to put back, counted with its duration.
fn count_restore(t0: std::time::Instant, r: &Result<Option<Outcome>, (Failure, String)>) {
    if !matches!(r, Ok(None)) {
        crate::metrics::get().load_balancer("restore", r.is_ok(), t0.elapsed());
    }
}

fn diagnostics(action: Action, f: Failure, log: String) -> Diagnostics {
    let code = if f.expected {
        ErrorCode::ScriptFailed
    } else {
        ErrorCode::UnknownError
    };
    let mut d = Diagnostics::error(code, action.script_name(), f.message);
    d.log = log;
    d
}

impl Traffic for LbTraffic {
    fn journal(&self, spec: &DeploymentSpec) -> Option<Phase> {
        match self.drainer.store.load(&spec.deployment_group_id) {
            Ok(Some(j)) if j.deployment_id == spec.deployment_id => Some(j.phase),
            _ => None,
        }
    }

    fn step(&self, d: &Deployment, step: Step<'_>) -> Result<Option<String>, Diagnostics> {
        let (deployment, group) = (&d.spec.deployment_id, &d.spec.deployment_group_id);
        match step {
            Step::Drain(lb) => {
                let t0 = std::time::Instant::now();
                let r = self
                    .handle
                    .block_on(self.drainer.drain(deployment, group, lb));
                crate::metrics::get().load_balancer("drain", r.is_ok(), t0.elapsed());
                match r {
                    Ok(o) => {
                        tracing::info!(deployment = %deployment, summary = %o.summary, timeline = %o.log, "loadBalancer drain");
                        Ok(Some(o.summary))
                    }
                    Err((f, log)) => Err(diagnostics(Action::Drain, f, log)),
                }
            }
            Step::MarkStopping => {
                if let Err(e) = self.drainer.stopping(group) {
                    tracing::error!(error = %e, "cannot update the drain journal");
                }
                Ok(None)
            }
            Step::Touch => {
                if let Err(e) = self.drainer.touch(group, deployment) {
                    tracing::warn!(deployment = %deployment, error = %e, "cannot re-arm abandonAfter in the drain journal");
                }
                Ok(None)
            }
            // Inside a command: its waits end with the command's hour.
            Step::Restore(why) => {
                let t0 = std::time::Instant::now();
                let r =
                    self.handle
                        .block_on(self.drainer.restore_by(group, why, Some(d.deadline())));
                count_restore(t0, &r);
                match r {
                    Ok(Some(o)) => {
                        tracing::info!(deployment = %deployment, ?why, summary = %o.summary, timeline = %o.log, "loadBalancer restore");
                        Ok(Some(o.summary))
                    }
                    Ok(None) => Ok(None),
                    Err((f, log)) => Err(diagnostics(Action::Restore, f, log)),
                }
            }
        }
    }
}
