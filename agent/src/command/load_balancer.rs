//! The `loadBalancer` steps around a host command. When each runs is
//! decided by `hooks_builtin::lifecycle` (docs/loadbalancer.md 3.1); this
//! file reads the facts it needs (the group's journal, the marks in the
//! deployment directory, the new revision's section) and carries the
//! steps out through `Traffic`.

use std::fs;
use std::path::Path;

use hooks_builtin::lifecycle::{self, Action, Attempt, Mark, Step, Why};

use crate::diagnostics::{Diagnostics, ErrorCode};
use crate::layout;

use super::{download, Deployment, Executor, HostCommand, LifecycleEvent, Report, Traffic};

/// The deployment's lifecycle events as the rules need them.
fn events(command: &HostCommand, d: &Deployment) -> Vec<String> {
    let seen = layout::traffic_control_seen(&d.dir).exists();
    lifecycle::lifecycle_events(d.spec.all_possible_events.as_deref(), command, seen)
}

/// For the acknowledgement: must `command` run, scripts or not?
pub(super) fn must_run(t: &dyn Traffic, command: &HostCommand, d: &Deployment) -> bool {
    lifecycle::must_run(command, &events(command, d), t.journal(&d.spec))
}

/// The drain, before `command` does anything: at the deployment's first
/// command when the new revision asks for it (fetched and unpacked now,
/// while the host still serves, for its appspec), or at the next command
/// when that drain failed and the deployment went on.
pub(super) fn before(
    x: &Executor,
    command: &HostCommand,
    d: &Deployment,
) -> Result<Option<String>, Diagnostics> {
    let Some(t) = x.traffic else {
        return Ok(None);
    };
    let events = events(command, d);
    let marker = layout::drain_pending(&d.dir);
    let Some(attempt) = lifecycle::drain_attempt(command, &events, marker.exists()) else {
        return Ok(None);
    };
    let first = lifecycle::drain_event(&events);
    if attempt == Attempt::Retry {
        tracing::warn!(deployment = %d.spec.deployment_id, command = %command, failed_at = %first, "the deployment went on after the loadBalancer drain failed: draining before this command");
    }
    let archive = match download::prefetch(x, d) {
        Ok(a) => a,
        // A revision that cannot be fetched or read here has no section to
        // act on: DownloadBundle fetches it again and fails there with the
        // precise error, where the official agent reports it.
        Err(e) if attempt == Attempt::First => {
            tracing::warn!(deployment = %d.spec.deployment_id, error = %e.message, "cannot fetch the new revision early; loadBalancer not read");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let result = drain(t, &first, &events, d, &archive);
    match lifecycle::mark_after(attempt, result.is_ok()) {
        Mark::Set => {
            let _ = fs::write(&marker, first.as_str());
        }
        Mark::Clear => {
            let _ = fs::remove_file(&marker);
        }
        Mark::Keep => {}
    }
    result
}

fn drain(
    t: &dyn Traffic,
    event: &LifecycleEvent,
    events: &[String],
    d: &Deployment,
    archive: &Path,
) -> Result<Option<String>, Diagnostics> {
    let Ok(loaded) = d.appspecs.get(archive, &d.spec.appspec_filename) else {
        return Ok(None);
    };
    let lb = loaded.spec.load_balancer.as_ref();
    let placement = lifecycle::placement(event, lb, events).map_err(|r| {
        Diagnostics::error(ErrorCode::ScriptFailed, Action::Drain.script_name(), r.0)
    })?;
    if let Some(n) = &placement.notice {
        tracing::warn!(deployment = %d.spec.deployment_id, notice = %n, "loadBalancer");
    }
    let Some(lb) = lb else {
        return Ok(None);
    };
    let mut summary = None;
    for step in lifecycle::drain_steps(&placement, lb) {
        summary = summary.or(t.step(d, step)?);
    }
    Ok(summary)
}

/// The steps after `command` ended with `result`: `abandonAfter` re-armed,
/// and the restore after ValidateService or, as `onFailure` says, inside a
/// failed command before it is reported.
pub(super) fn after(
    x: &Executor,
    command: &HostCommand,
    d: &Deployment,
    mut result: Result<Report, Diagnostics>,
) -> Result<Report, Diagnostics> {
    let Some(t) = x.traffic else {
        return result;
    };
    for step in lifecycle::after_command(command, result.is_ok(), t.journal(&d.spec)) {
        result = apply(t, d, step, result);
    }
    result
}

fn apply(
    t: &dyn Traffic,
    d: &Deployment,
    step: Step<'_>,
    result: Result<Report, Diagnostics>,
) -> Result<Report, Diagnostics> {
    match (step, result) {
        (Step::Restore(Why::Failed), Err(mut e)) => {
            match t.step(d, step) {
                Ok(Some(s)) => e.log.push_str(&format!("\nloadBalancer: {s}")),
                Ok(None) => {}
                Err(r) => e.log.push_str(&format!(
                    "\nloadBalancer:restore after the failure also failed: {}\n{}",
                    r.message, r.log
                )),
            }
            Err(e)
        }
        (Step::Restore(_), Ok(mut report)) => {
            if let Some(s) = t.step(d, step)? {
                report.summary.push_str(&format!("; loadBalancer: {s}"));
                report.skipped = false;
            }
            Ok(report)
        }
        (Step::Touch, r) => {
            // Touch reports nothing; it logs its own failure.
            let _ = t.step(d, step);
            r
        }
        (_, r) => r,
    }
}
