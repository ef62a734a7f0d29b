//! The drain journals outside commands: a deployment whose command a crash
//! interrupted is reported failed at start, and its journal finished; one
//! that went quiet past `abandonAfter` is put back.

use std::sync::Arc;
use std::time::Duration;

use hooks_builtin::lifecycle::Why;

use super::Agent;
use crate::diagnostics::{Diagnostics, ErrorCode};

impl Agent {
    /// Report commands a crash interrupted; returns their deployments.
    pub(super) async fn recover(&self) -> Vec<String> {
        let mut crashed = Vec::new();
        for (deployment, command) in self.tracker.interrupted() {
            crashed.push(deployment.clone());
            tracing::warn!(deployment = %deployment, command = %command, "a command was interrupted by an agent restart; reporting it failed");
            let d = Diagnostics::error(
                ErrorCode::FailedAfterRestart,
                "",
                "Failed: Failing in-progress lifecycle event after an agent restart.",
            );
            if self.report(&command, false, &d).await {
                self.tracker.end(&deployment);
            }
        }
        crashed
    }

    /// Journals outside commands. A deployment whose command a crash
    /// interrupted was just reported failed and sends nothing more: its
    /// journal is finished now. Others (a graceful restart between two
    /// commands) wait for their next command, or for `abandonAfter`.
    pub(super) async fn watch_journals(self: Arc<Self>, crashed: Vec<String>) {
        let Some(t) = self.traffic.as_ref() else {
            return;
        };
        let mut stop = self.shutdown.clone();
        let mut recovering = true;
        loop {
            let abandoned = t.drainer.abandoned();
            for group in t.drainer.store.pending() {
                let why = match t.drainer.journal_of(&group) {
                    Some(d) if recovering && crashed.contains(&d) => Why::Recovery,
                    _ if abandoned.contains(&group) => Why::Abandoned,
                    _ => continue,
                };
                // A command of the same group must not run meanwhile.
                let me = self.clone();
                let g = group.clone();
                let lock = tokio::task::spawn_blocking(move || {
                    crate::layout::Layout::new(&me.config.root_dir, &me.config.program_name)
                        .lock_group(&g)
                })
                .await;
                let Ok(Ok(_lock)) = lock else { continue };
                t.finish(&group, why).await;
            }
            recovering = false;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}
