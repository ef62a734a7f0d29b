//! One polled command, start to end: get and open its deployment
//! specification, acknowledge it (saying whether it is a no-op here), run it
//! on a worker thread, report the completion. Reported results are kept so
//! a command the service offers again is answered again, never run again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::{seed, status, Agent};
use crate::command::{Deployment, HostCommand, Report};
use crate::diagnostics::{Diagnostics, ErrorCode};
use crate::envelope::{EnvelopeError, Opened};
use crate::metrics;
use crate::net::control::{AckStatus, ControlError, PolledCommand, MAX_PAYLOAD};
use crate::spec::DeploymentSpec;

/// What the acknowledgement's answer leaves to do.
enum Ack {
    /// The command is ours: run it.
    Run,
    /// The service took our no-op: report it done without running it.
    Noop,
    /// Finished or cancelled by the service: nothing to run, nothing to report.
    Gone,
}

impl Ack {
    fn of(status: &AckStatus, noop: bool) -> Ack {
        match status {
            s if s.proceed() => Ack::Run,
            AckStatus::Failed if noop => Ack::Noop,
            _ => Ack::Gone,
        }
    }
}

/// A run command's report, with how it ended for the metrics.
fn reported((ok, payload): (bool, String)) -> (metrics::Outcome, String) {
    let outcome = if ok {
        metrics::Outcome::Succeeded
    } else {
        metrics::Outcome::Failed
    };
    (outcome, payload)
}

impl Agent {
    pub(super) async fn handle(self: Arc<Self>, cmd: PolledCommand) {
        let id = cmd.host_command_identifier.clone();
        let t0 = Instant::now();
        let outcome = self.process(&cmd).await;
        if let Ok(mut r) = self.running.lock() {
            r.remove(&id);
        }
        self.trim_due
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some((result, payload)) = outcome {
            metrics::get().command(&cmd.command_name, result, t0.elapsed());
            self.publish_metrics();
            if let Ok(mut f) = self.finished.lock() {
                f.insert(id, (result != metrics::Outcome::Failed, payload));
            }
        }
        tracing::debug!(command = %cmd.command_name, elapsed_ms = t0.elapsed().as_millis() as u64, "command handled");
    }

    /// Returns how the command ended and what was reported, or `None` when
    /// nothing was (the command was not taken, or the service had already
    /// finished it); a command offered again is then handled afresh, and
    /// its acknowledgement decides.
    async fn process(self: &Arc<Self>, cmd: &PolledCommand) -> Option<(metrics::Outcome, String)> {
        let id = &cmd.host_command_identifier;
        let command = HostCommand::parse(&cmd.command_name);
        let opened = self.open_specification(cmd).await?;
        let deployment = match &opened {
            Ok(spec) if command.is_standard() => {
                Some(Arc::new(self.executor().deployment(spec.clone())))
            }
            _ => None,
        };
        let noop = match &deployment {
            Some(d) => self.is_noop(&command, d).await,
            None => false,
        };
        let status = self.acknowledge(cmd, noop).await?;
        match Ack::of(&status, noop) {
            Ack::Run => {}
            Ack::Noop => {
                let d =
                    Diagnostics::error(ErrorCode::Succeeded, "", "Succeeded: CompletedNoopCommand");
                let p = d.to_json();
                self.send_complete(id, true, &p).await;
                return Some((metrics::Outcome::Noop, p));
            }
            Ack::Gone => return None,
        }
        if let Err(e) = opened {
            tracing::error!(command = %command, host_command = %id, error = %e, "deployment specification refused; nothing runs");
            return Some(reported(
                self.fail(id, Diagnostics::unknown(e.to_string())).await,
            ));
        }
        let Some(deployment) = deployment else {
            // As both official agents: a command this agent has no handler
            // for (UpdateDeploymentAgent, a custom event name) fails.
            tracing::error!(command = %command, host_command = %id, "unsupported command type");
            let d = Diagnostics::unknown(format!("Unsupported command type: {command}."));
            return Some(reported(self.fail(id, d).await));
        };
        Some(reported(self.run(id, command, deployment).await))
    }

    async fn open_specification(
        &self,
        cmd: &PolledCommand,
    ) -> Option<Result<DeploymentSpec, EnvelopeError>> {
        let execution = &cmd.deployment_execution_id;
        let envelope = self
            .retry("GetDeploymentSpecification", || {
                self.client.specification(execution, &self.host)
            })
            .await;
        let envelope = match envelope {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(command = %cmd.command_name, host_command = %cmd.host_command_identifier, error = %e, "cannot get the deployment specification");
                return None;
            }
        };
        let opened = self.verifier.open(&envelope.format, &envelope.payload);
        self.note_strict_verdict(execution, &opened);
        Some(opened.map(|o| o.spec))
    }

    async fn is_noop(self: &Arc<Self>, command: &HostCommand, d: &Arc<Deployment>) -> bool {
        let (me, d, c) = (self.clone(), d.clone(), command.clone());
        tokio::task::spawn_blocking(move || me.executor().is_noop(&c, &d))
            .await
            .unwrap_or(false)
    }

    async fn acknowledge(&self, cmd: &PolledCommand, noop: bool) -> Option<AckStatus> {
        let id = &cmd.host_command_identifier;
        match self
            .retry("PutHostCommandAcknowledgement", || {
                self.client.acknowledge(id, noop)
            })
            .await
        {
            Ok(s) => {
                tracing::info!(command = %cmd.command_name, host_command = %id, status = %s, noop, "command acknowledged");
                Some(s)
            }
            Err(e) => {
                tracing::error!(command = %cmd.command_name, host_command = %id, error = %e, "cannot acknowledge the command");
                None
            }
        }
    }

    async fn fail(&self, id: &str, d: Diagnostics) -> (bool, String) {
        self.report(id, false, &d).await;
        (false, d.to_json())
    }

    /// Run the command on a worker thread and report how it ended.
    async fn run(
        self: &Arc<Self>,
        id: &str,
        command: HostCommand,
        d: Arc<Deployment>,
    ) -> (bool, String) {
        let deployment_id = d.spec.deployment_id.clone();
        if let Err(e) = self.tracker.begin(&deployment_id, id) {
            tracing::warn!(error = %e, "cannot record the running command");
        }
        self.status.begin(id, &deployment_id, command.as_str());
        let t0 = Instant::now();
        let result = {
            let (me, c) = (self.clone(), command.clone());
            tokio::task::spawn_blocking(move || me.execute(&c, &d))
                .await
                .unwrap_or_else(|e| Err(Diagnostics::unknown(format!("the command panicked: {e}"))))
        };
        let ms = t0.elapsed().as_millis() as u64;
        let (ok, diag) = match result {
            Ok(report) => {
                tracing::info!(deployment = %deployment_id, command = %command, elapsed_ms = ms, summary = %report.summary, "command succeeded");
                let message = report.completion.as_deref().unwrap_or("Succeeded");
                (true, Diagnostics::error(ErrorCode::Succeeded, "", message))
            }
            Err(e) => {
                tracing::error!(deployment = %deployment_id, command = %command, elapsed_ms = ms, error_code = e.code as u8, script = %e.script_name, message = %e.message, "command failed");
                (false, e)
            }
        };
        let reported = self.report(id, ok, &diag).await;
        self.status.end(id);
        if reported {
            self.tracker.end(&deployment_id);
        }
        (ok, fit_payload(&diag))
    }

    /// The command under its group's lock, on the calling (worker) thread.
    fn execute(&self, command: &HostCommand, d: &Deployment) -> Result<Report, Diagnostics> {
        let exec = self.executor();
        let group = &d.spec.deployment_group_id;
        let _lock = exec.layout.lock_group(group).map_err(|e| {
            Diagnostics::unknown(format!("cannot lock deployment group {group}: {e}"))
        })?;
        exec.execute(command, d, &mut |script| {
            tracing::info!(deployment = %d.spec.deployment_id, event = %command, script, "running script")
        })
    }

    /// Log, and show in `status`, what strict verification decides of a
    /// deployment's specification: once per deployment, unless it changes.
    fn note_strict_verdict(&self, execution: &str, opened: &Result<Opened, EnvelopeError>) {
        let (deployment, refusal) = match opened {
            Ok(o) => (o.spec.deployment_id.clone(), o.strict.clone()),
            Err(EnvelopeError::Strict(why)) => (execution.to_string(), Some(why.clone())),
            Err(_) => return,
        };
        let strict = self.config.strict_deployment_spec_verification;
        let check = status::SpecCheck {
            deployment,
            strict,
            refusal,
        };
        let Ok(mut seen) = self.spec_checks.lock() else {
            return;
        };
        if seen.contains(&check) {
            return;
        }
        if seen.len() >= 64 {
            seen.pop_front();
        }
        seen.push_back(check.clone());
        drop(seen);
        match &check.refusal {
            None => {
                tracing::info!(deployment = %check.deployment, strict, "the specification passes strict verification")
            }
            Some(why) if strict => {
                tracing::error!(deployment = %check.deployment, reason = %why, "strict verification refused the specification")
            }
            Some(why) => {
                tracing::warn!(deployment = %check.deployment, reason = %why, "strict verification (off) would refuse this specification; accepted as the official agents accept it")
            }
        }
        self.status.spec_checked(check);
    }

    pub(super) async fn report(&self, id: &str, ok: bool, d: &Diagnostics) -> bool {
        self.send_complete(id, ok, &fit_payload(d)).await
    }

    /// Deliver a completion. Retried with backoff until it lands, a
    /// permanent error, or (when stopping) the stop bound.
    pub(super) async fn send_complete(&self, id: &str, ok: bool, payload: &str) -> bool {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30), seed());
        let started = Instant::now();
        loop {
            match self.client.complete(id, ok, payload).await {
                Ok(()) => {
                    tracing::info!(host_command = %id, succeeded = ok, "command completion reported");
                    return true;
                }
                Err(e)
                    if e.retryable()
                        && started.elapsed() < self.config.kill_agent_max_wait_time =>
                {
                    let d = b.next_delay();
                    tracing::warn!(host_command = %id, error = %e, retry_in_ms = d.as_millis() as u64, "reporting the completion failed");
                    tokio::time::sleep(d).await;
                }
                Err(e) => {
                    tracing::error!(host_command = %id, error = %e, "cannot report the completion");
                    return false;
                }
            }
        }
    }

    /// A call retried a few times on retryable errors (the command is not
    /// yet ours, so giving up only means the service offers it again).
    async fn retry<T, F, Fut>(&self, what: &str, f: F) -> Result<T, ControlError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, ControlError>>,
    {
        let mut b = Backoff::new(Duration::from_millis(300), Duration::from_secs(10), seed());
        loop {
            match f().await {
                Err(e) if e.retryable() && b.attempts() < 5 && !self.stopping() => {
                    let d = b.next_delay();
                    tracing::warn!(call = what, error = %e, retry_in_ms = d.as_millis() as u64, "retrying");
                    tokio::time::sleep(d).await;
                }
                r => return r,
            }
        }
    }
}

/// The service takes at most 8192 characters of diagnostics: shorten the
/// message first, then the log, never the JSON structure.
fn fit_payload(d: &Diagnostics) -> String {
    let mut d = d.clone();
    let mut p = d.to_json();
    while p.len() > MAX_PAYLOAD {
        if d.message.len() > 512 {
            d.message = d
                .message
                .chars()
                .take(d.message.chars().count() / 2)
                .collect();
        } else if !d.log.is_empty() {
            let n = d.log.chars().count();
            d.log = d.log.chars().skip(n / 2).collect();
        } else {
            d.message.truncate(100);
        }
        p = d.to_json();
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_fits_the_service_limit() {
        let mut d = Diagnostics::unknown("x".repeat(20_000));
        d.log = "y\n".repeat(1000);
        let p = fit_payload(&d);
        assert!(p.len() <= MAX_PAYLOAD);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["error_code"], 5);
        assert!(v["log"].as_str().unwrap().ends_with("y\n"));
    }

    #[test]
    fn the_acknowledgement_decides() {
        assert!(matches!(Ack::of(&AckStatus::InProgress, false), Ack::Run));
        assert!(matches!(Ack::of(&AckStatus::Unstated, true), Ack::Run));
        assert!(matches!(Ack::of(&AckStatus::Failed, true), Ack::Noop));
        assert!(matches!(Ack::of(&AckStatus::Failed, false), Ack::Gone));
        assert!(matches!(Ack::of(&AckStatus::Succeeded, true), Ack::Gone));
    }
}
