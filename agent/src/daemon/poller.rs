//! The poll loop: ask the commands service for work, take each command
//! once (a command offered again while running is ignored, one offered
//! after it finished is answered again, never run again), tell systemd
//! the agent is ready and alive.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::backoff::Backoff;
use super::{notify, seed, status, Agent};
use crate::net::control::PolledCommand;

/// Recently finished commands and what was reported.
#[derive(Default)]
pub(super) struct Finished {
    order: VecDeque<String>,
    result: HashMap<String, (bool, String)>,
}

impl Finished {
    const KEEP: usize = 256;

    pub(super) fn insert(&mut self, id: String, outcome: (bool, String)) {
        if self.result.insert(id.clone(), outcome).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > Self::KEEP {
            if let Some(old) = self.order.pop_front() {
                self.result.remove(&old);
            }
        }
    }
}

impl Agent {
    pub(super) async fn poll_loop(self: &Arc<Self>, tasks: &mut JoinSet<()>) {
        let mut backoff = Backoff::new(
            Duration::from_secs(1),
            self.config.wait_after_error.max(Duration::from_secs(1)),
            seed(),
        );
        while !self.stopping() {
            while tasks.try_join_next().is_some() {}
            let mut rx = self.shutdown.clone();
            self.beat();
            let polled = tokio::select! {
                r = self.client.poll(&self.host) => r,
                _ = rx.wait_for(|s| *s) => break,
            };
            self.beat();
            self.polled(
                polled
                    .as_ref()
                    .map(|c| {
                        c.as_ref()
                            .map(|c| (c.host_command_identifier.as_str(), c.command_name.as_str()))
                    })
                    .map_err(|e| e.to_string()),
            );
            let wait = match polled {
                Ok(Some(cmd)) => {
                    backoff.reset();
                    if self.accept(&cmd) {
                        let me = self.clone();
                        tasks.spawn(async move { me.handle(cmd).await });
                        continue;
                    }
                    self.config.wait_between_runs
                }
                Ok(None) => {
                    backoff.reset();
                    self.trim_if_idle();
                    self.config.wait_between_runs
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, attempt = backoff.attempts(), throttled = e.throttled(), "polling failed");
                    d
                }
            };
            if !self.pause(wait).await {
                break;
            }
        }
    }

    /// Give memory back once the agent is idle again: nothing running, and
    /// the service offered nothing. (Trimming again every few minutes while
    /// idle was measured to change nothing: polling keeps touching the same
    /// pages.)
    fn trim_if_idle(&self) {
        let idle = self.running.lock().map(|r| r.is_empty()).unwrap_or(false);
        if idle && self.trim_due.swap(false, Ordering::Relaxed) {
            tokio::task::spawn_blocking(crate::idle::trim);
        }
    }

    fn beat(&self) {
        self.heartbeat.store(status::now(), Ordering::Relaxed);
    }

    /// READY=1 goes to systemd once the service has answered a poll: an
    /// agent that cannot reach it is not ready, and says why in the log.
    fn polled(&self, result: Result<Option<(&str, &str)>, String>) {
        match &result {
            Ok(_) if !self.ready.swap(true, Ordering::Relaxed) => {
                tracing::info!("first poll answered; ready");
                notify::notify("READY=1");
            }
            Err(e) if !self.ready.load(Ordering::Relaxed) => {
                tracing::error!(error = %e, "cannot poll the commands service; not ready until a poll is answered");
            }
            _ => {}
        }
        crate::metrics::get().poll(result.is_ok(), status::now());
        self.status.polled(result);
        self.publish_metrics();
    }

    /// Ping systemd's watchdog while the poll loop turns. A loop stuck
    /// longer than its longest honest wait (a pause plus a long poll)
    /// stops the pings, and systemd restarts the agent.
    pub(super) async fn watchdog(self: Arc<Self>, every: Duration) {
        let c = &self.config;
        let bound = c.wait_between_runs.max(c.wait_after_error) + c.http_read_timeout;
        let bound = bound.as_secs() + 60;
        let mut stop = self.shutdown.clone();
        loop {
            let age = status::now().saturating_sub(self.heartbeat.load(Ordering::Relaxed));
            if age <= bound {
                notify::notify("WATCHDOG=1");
            } else {
                tracing::error!(
                    stalled_secs = age,
                    "the poll loop is stalled; no watchdog ping"
                );
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Take a polled command unless it is running or was already done.
    fn accept(self: &Arc<Self>, cmd: &PolledCommand) -> bool {
        if !self.host.contains(&cmd.host_identifier) {
            tracing::error!(expected = %self.host, got = %cmd.host_identifier, "host identifier mismatch; ignoring the command");
            return false;
        }
        let id = &cmd.host_command_identifier;
        if self.running.lock().map(|r| r.contains(id)).unwrap_or(true) {
            tracing::debug!(command = %id, "command offered again while running");
            return false;
        }
        let done = self
            .finished
            .lock()
            .ok()
            .and_then(|f| f.result.get(id).cloned());
        if let Some((ok, payload)) = done {
            tracing::warn!(command = %id, "command offered again after it finished; reporting its result again, not running it");
            let me = self.clone();
            let id = id.clone();
            tokio::spawn(async move {
                me.send_complete(&id, ok, &payload).await;
            });
            return false;
        }
        if let Ok(mut r) = self.running.lock() {
            r.insert(id.clone());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_is_bounded() {
        let mut f = Finished::default();
        for i in 0..300 {
            f.insert(format!("c{i}"), (true, String::new()));
        }
        assert_eq!(f.result.len(), Finished::KEEP);
        assert!(f.result.contains_key("c299") && !f.result.contains_key("c0"));
    }
}
