//! The `loadBalancer` lifecycle of one deployment as pure rules
//! (docs/loadbalancer.md 3.1): which built-in step runs around which host
//! command, given the deployment's events, what an earlier command left on
//! disk and the group's journal. No I/O: the agent's executor reads the
//! facts, asks these functions, and carries out the answer.

use appspec::events::{HostCommand, LifecycleEvent, BLOCK_TRAFFIC};
use appspec::load_balancer::{LoadBalancer, TrafficControl};

use crate::journal::Phase;

/// Why a restore runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// ValidateService passed.
    Validated,
    /// A later command of the deployment failed: `onFailure` decides.
    Failed,
    /// The deployment sent no command for `abandonAfter`.
    Abandoned,
    /// Found at agent start.
    Recovery,
}

/// The diagnostics `script_name` of each built-in action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Take the instance out of service.
    Drain,
    /// Put it back.
    Restore,
}

impl Action {
    /// The name diagnostics give the action, where a script's path would be.
    pub fn script_name(self) -> &'static str {
        match self {
            Action::Drain => "loadBalancer:drain",
            Action::Restore => "loadBalancer:restore",
        }
    }
}

/// What runs around an event's scripts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Runs before the event's scripts.
    pub before_scripts: Option<Action>,
    /// Runs after them, when they succeeded.
    pub after_scripts: Option<Action>,
    /// Why a configured action does not run here, for the log.
    pub notice: Option<String>,
}

/// A `loadBalancer` section this deployment cannot honour, with the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Does the deployment use the service's own BlockTraffic/AllowTraffic?
pub fn has_service_traffic_control(all_possible_events: &[String]) -> bool {
    all_possible_events.iter().any(|e| e == BLOCK_TRAFFIC)
}

/// The first host command of a deployment, where the drain happens.
pub fn drain_event(all_possible_events: &[String]) -> LifecycleEvent {
    if has_service_traffic_control(all_possible_events) {
        LifecycleEvent::BeforeBlockTraffic
    } else {
        LifecycleEvent::ApplicationStop
    }
}

/// The deployment's lifecycle events as the rules need them. The service
/// runs BlockTraffic itself; whether the specification's
/// `AllPossibleLifecycleEvents` names it is unconfirmed (docs/loadbalancer.md
/// 2.6), but the Before/AfterBlockTraffic commands only exist when the
/// deployment group has a load balancer: seeing one (now, or `seen` earlier
/// in this deployment) means service traffic control.
pub fn lifecycle_events(
    all_possible: Option<&[String]>,
    command: &HostCommand,
    seen: bool,
) -> Vec<String> {
    let mut events = all_possible.map(<[String]>::to_vec).unwrap_or_default();
    let here = command.is(&LifecycleEvent::BeforeBlockTraffic)
        || command.is(&LifecycleEvent::AfterBlockTraffic);
    if (here || seen) && !has_service_traffic_control(&events) {
        events.push(BLOCK_TRAFFIC.into());
    }
    events
}

/// Where the built-in actions of `lb` run for `event`. `lb` comes from the
/// revision being deployed.
pub fn placement(
    event: &LifecycleEvent,
    lb: Option<&LoadBalancer>,
    all_possible_events: &[String],
) -> Result<Placement, Refusal> {
    let Some(lb) = lb.filter(|lb| lb.is_active()) else {
        return Ok(Placement::default());
    };
    let mut p = Placement::default();
    if has_service_traffic_control(all_possible_events) {
        match lb.with_service_traffic_control {
            TrafficControl::Skip => {
                p.notice = Some(
                    "the deployment uses CodeDeploy's own traffic control; loadBalancer is skipped (withServiceTrafficControl: skip)"
                        .into(),
                );
                return Ok(p);
            }
            TrafficControl::Fail => {
                return Err(Refusal(
                    "the deployment uses CodeDeploy's own traffic control (BlockTraffic/AllowTraffic) and loadBalancer.withServiceTrafficControl is fail; remove one of the two".into(),
                ))
            }
            TrafficControl::Both => {}
        }
    }
    if *event == drain_event(all_possible_events) {
        p.before_scripts = Some(Action::Drain);
    }
    if *event == LifecycleEvent::ValidateService {
        p.after_scripts = Some(Action::Restore);
    }
    Ok(p)
}

/// An event that carries a built-in action is never a no-op, even without
/// scripts (a first deployment has no ApplicationStop scripts but must drain).
pub fn forces_command(
    event: &LifecycleEvent,
    lb: Option<&LoadBalancer>,
    all_possible_events: &[String],
) -> bool {
    placement(event, lb, all_possible_events)
        .is_ok_and(|p| p.before_scripts.is_some() || p.after_scripts.is_some())
}

/// Which drain attempt a command makes before its own work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The deployment's first command: the new revision's appspec decides,
    /// and a revision that cannot be fetched early means no drain here.
    First,
    /// The first command's drain failed and the deployment went on (its
    /// failure ignored): drain now, and fail this command if that fails.
    Retry,
}

/// Does `command` drain before it runs? `drain_failed` is the mark the first
/// command leaves when its drain failed.
pub fn drain_attempt(
    command: &HostCommand,
    events: &[String],
    drain_failed: bool,
) -> Option<Attempt> {
    if command.is(&drain_event(events)) {
        Some(Attempt::First)
    } else if drain_failed {
        Some(Attempt::Retry)
    } else {
        None
    }
}

/// What becomes of the drain-failed mark after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Leave it as it is.
    Keep,
    /// Write it: the next command tries again.
    Set,
    /// Remove it: the drain is done.
    Clear,
}

/// The mark after `attempt` ended (`drained`: without error).
pub fn mark_after(attempt: Attempt, drained: bool) -> Mark {
    match (attempt, drained) {
        (Attempt::First, false) => Mark::Set,
        (Attempt::Retry, true) => Mark::Clear,
        _ => Mark::Keep,
    }
}

/// The steps of a drain the placement asks for: take the instance out, then
/// record that the stop scripts start (from there a crash may leave the
/// application down, and `onFailure` decides).
pub fn drain_steps<'a>(p: &Placement, lb: &'a LoadBalancer) -> Vec<Step<'a>> {
    match p.before_scripts {
        Some(Action::Drain) => vec![Step::Drain(lb), Step::MarkStopping],
        _ => Vec::new(),
    }
}

/// One built-in step around a host command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Take the instance out of its load balancers, as the new revision's
    /// section says.
    Drain(&'a LoadBalancer),
    /// The journal's phase becomes Stopping.
    MarkStopping,
    /// Re-arm `abandonAfter`: the deployment is alive.
    Touch,
    /// Put the instance back, for this reason.
    Restore(Why),
}

/// The steps after `command` ended. `ours` is the phase of the group's
/// journal when it belongs to this deployment, read after the command.
pub fn after_command(
    command: &HostCommand,
    succeeded: bool,
    ours: Option<Phase>,
) -> Vec<Step<'static>> {
    let Some(_) = ours else {
        return Vec::new();
    };
    let mut steps = vec![Step::Touch];
    if !succeeded {
        // onFailure decides, inside this command, before it is reported.
        steps.push(Step::Restore(Why::Failed));
    } else if command.is(&LifecycleEvent::ValidateService) {
        steps.push(Step::Restore(Why::Validated));
    }
    steps
}

/// For the acknowledgement: must `command` run even with no scripts? The
/// first command may drain (the new revision decides, and it is not here
/// yet); ValidateService restores what this deployment took out.
pub fn must_run(command: &HostCommand, events: &[String], ours: Option<Phase>) -> bool {
    command.is(&drain_event(events))
        || (command.is(&LifecycleEvent::ValidateService) && ours.is_some())
}

/// How a restore puts the instance back, decided from the journal alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestorePlan {
    /// `onFailure: keepDrained`: stay out until `abandonAfter`
    /// (`rearm`: the deadline starts again, after a restart).
    KeepDrained {
        /// Start `abandonAfter` again from now.
        rearm: bool,
    },
    /// Back in service; the health gate first when `gate`.
    PutBack {
        /// Probe the application before registering it again.
        gate: bool,
        /// What a failed gate does.
        if_unhealthy: Unhealthy,
    },
}

/// What a failed health gate does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unhealthy {
    /// Stay out of service and report the failure (`restoreIfHealthy`).
    StayOut,
    /// Put back anyway (the load balancers' own checks keep traffic off a
    /// broken application) and report the failure (`restore`).
    PutBackAndFail,
}

/// The restore for a journal in `phase` with `on_failure`, run for `why`.
/// Before the stop scripts ran, the old application is intact: it goes back
/// at once whatever `onFailure` says.
pub fn restore_plan(phase: Phase, on_failure: crate::journal::OnFailure, why: Why) -> RestorePlan {
    use crate::journal::OnFailure;
    let app_intact = phase <= Phase::Drained;
    let policy = match why {
        Why::Validated | Why::Abandoned => OnFailure::Restore,
        Why::Failed | Why::Recovery if app_intact => OnFailure::Restore,
        Why::Failed | Why::Recovery => on_failure,
    };
    if policy == OnFailure::KeepDrained {
        return RestorePlan::KeepDrained {
            rearm: why == Why::Recovery,
        };
    }
    let gate = why == Why::Validated
        || policy == OnFailure::RestoreIfHealthy
        || (why != Why::Abandoned && !app_intact);
    RestorePlan::PutBack {
        gate,
        if_unhealthy: if policy == OnFailure::RestoreIfHealthy {
            Unhealthy::StayOut
        } else {
            Unhealthy::PutBackAndFail
        },
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
