//! The `loadBalancer` lifecycle over plain values: each case gives a
//! command, the deployment's events, the journal's phase and an outcome,
//! and asserts the steps.

use super::*;
use crate::journal::{OnFailure, Phase};
use crate::test_support::section as lb;

fn c(name: &str) -> HostCommand {
    HostCommand::parse(name)
}

fn e(name: &str) -> LifecycleEvent {
    LifecycleEvent::parse(name)
}

fn events(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn plain() -> Vec<String> {
    events(&[
        "ApplicationStop",
        "DownloadBundle",
        "Install",
        "ValidateService",
    ])
}

fn traffic() -> Vec<String> {
    events(&[
        "BeforeBlockTraffic",
        "BlockTraffic",
        "ApplicationStop",
        "ValidateService",
        "AllowTraffic",
    ])
}

#[test]
fn drains_before_the_first_command_and_restores_after_validation() {
    let lb = lb("");
    let p = placement(&e("ApplicationStop"), Some(&lb), &plain()).unwrap();
    assert_eq!(p.before_scripts, Some(Action::Drain));
    assert_eq!(
        drain_steps(&p, &lb),
        vec![Step::Drain(&lb), Step::MarkStopping]
    );
    let v = placement(&e("ValidateService"), Some(&lb), &plain()).unwrap();
    assert_eq!(v.after_scripts, Some(Action::Restore));
    assert!(drain_steps(&v, &lb).is_empty());
    assert_eq!(
        placement(&e("ApplicationStart"), Some(&lb), &plain()).unwrap(),
        Placement::default()
    );
}

#[test]
fn commands_with_a_built_in_action_are_forced() {
    let lb = lb("");
    assert!(forces_command(&e("ApplicationStop"), Some(&lb), &plain()));
    assert!(!forces_command(&e("BeforeInstall"), Some(&lb), &plain()));
    assert!(!forces_command(&e("ApplicationStop"), None, &plain()));
    assert!(forces_command(&e("ValidateService"), Some(&lb), &plain()));
}

#[test]
fn skip_leaves_service_traffic_control_alone_with_a_notice() {
    let p = placement(&e("BeforeBlockTraffic"), Some(&lb("")), &traffic()).unwrap();
    assert_eq!(p.before_scripts, None);
    assert_eq!(p.after_scripts, None);
    assert!(p
        .notice
        .unwrap()
        .contains("withServiceTrafficControl: skip"));
}

#[test]
fn fail_refuses_service_traffic_control() {
    let lb = lb("  withServiceTrafficControl: fail\n");
    let r = placement(&e("ValidateService"), Some(&lb), &traffic()).unwrap_err();
    assert!(r.0.contains("remove one of the two"), "{}", r.0);
    assert!(!forces_command(
        &e("ValidateService"),
        Some(&lb),
        &traffic()
    ));
}

#[test]
fn both_drains_at_before_block_traffic_only() {
    let both = lb("  withServiceTrafficControl: both\n");
    let at = |n| {
        placement(&e(n), Some(&both), &traffic())
            .unwrap()
            .before_scripts
    };
    assert_eq!(at("BeforeBlockTraffic"), Some(Action::Drain));
    assert_eq!(at("ApplicationStop"), None);
}

#[test]
fn mode_off_does_nothing() {
    let off = lb("  mode: off\n");
    assert_eq!(
        placement(&e("ApplicationStop"), Some(&off), &plain()).unwrap(),
        Placement::default()
    );
    assert_eq!(Action::Drain.script_name(), "loadBalancer:drain");
    assert_eq!(Action::Restore.script_name(), "loadBalancer:restore");
}

#[test]
fn block_traffic_commands_imply_service_traffic_control() {
    let all = plain();
    assert!(!has_service_traffic_control(&lifecycle_events(
        Some(&all),
        &c("ApplicationStop"),
        false
    )));
    let here = lifecycle_events(Some(&all), &c("BeforeBlockTraffic"), false);
    assert_eq!(drain_event(&here), LifecycleEvent::BeforeBlockTraffic);
    let seen = lifecycle_events(Some(&all), &c("ValidateService"), true);
    assert_eq!(seen.iter().filter(|e| *e == "BlockTraffic").count(), 1);
    let t = traffic();
    let again = lifecycle_events(Some(&t), &c("AfterBlockTraffic"), true);
    assert_eq!(again, t, "BlockTraffic is not added twice");
    assert_eq!(
        lifecycle_events(None, &c("AfterBlockTraffic"), false),
        events(&["BlockTraffic"])
    );
}

#[test]
fn the_first_command_drains_and_a_failed_drain_is_retried_once() {
    let e = plain();
    assert_eq!(
        drain_attempt(&c("ApplicationStop"), &e, false),
        Some(Attempt::First)
    );
    assert_eq!(drain_attempt(&c("DownloadBundle"), &e, false), None);
    assert_eq!(
        drain_attempt(&c("DownloadBundle"), &e, true),
        Some(Attempt::Retry)
    );
    assert_eq!(
        drain_attempt(&c("ApplicationStop"), &e, true),
        Some(Attempt::First),
        "a retried first command is a first attempt again"
    );
    assert_eq!(mark_after(Attempt::First, false), Mark::Set);
    assert_eq!(mark_after(Attempt::First, true), Mark::Keep);
    assert_eq!(mark_after(Attempt::Retry, true), Mark::Clear);
    assert_eq!(mark_after(Attempt::Retry, false), Mark::Keep);
}

#[test]
fn after_a_command_only_our_journal_is_touched_or_restored() {
    assert!(after_command(&c("Install"), true, None).is_empty());
    assert!(after_command(&c("ValidateService"), true, None).is_empty());
    assert_eq!(
        after_command(&c("Install"), true, Some(Phase::Stopping)),
        vec![Step::Touch]
    );
    assert_eq!(
        after_command(&c("Install"), false, Some(Phase::Stopping)),
        vec![Step::Touch, Step::Restore(Why::Failed)]
    );
    assert_eq!(
        after_command(&c("ValidateService"), true, Some(Phase::Stopping)),
        vec![Step::Touch, Step::Restore(Why::Validated)]
    );
    assert_eq!(
        after_command(&c("ValidateService"), false, Some(Phase::Stopping)),
        vec![Step::Touch, Step::Restore(Why::Failed)]
    );
}

#[test]
fn acknowledgement_no_op_flag() {
    let e = plain();
    assert!(must_run(&c("ApplicationStop"), &e, None));
    assert!(!must_run(&c("ApplicationStop"), &traffic(), None));
    assert!(must_run(&c("BeforeBlockTraffic"), &traffic(), None));
    assert!(must_run(&c("ValidateService"), &e, Some(Phase::Stopping)));
    assert!(!must_run(&c("ValidateService"), &e, None));
    assert!(!must_run(&c("AfterInstall"), &e, Some(Phase::Stopping)));
}

#[test]
fn validation_always_puts_back_through_the_gate() {
    for f in [
        OnFailure::Restore,
        OnFailure::RestoreIfHealthy,
        OnFailure::KeepDrained,
    ] {
        let p = restore_plan(Phase::Stopping, f, Why::Validated);
        assert!(
            matches!(p, RestorePlan::PutBack { gate: true, .. }),
            "{f:?}: {p:?}"
        );
    }
}

#[test]
fn a_failure_before_the_stop_scripts_puts_back_at_once() {
    for phase in [Phase::Planned, Phase::Draining, Phase::Drained] {
        for why in [Why::Failed, Why::Recovery] {
            assert_eq!(
                restore_plan(phase, OnFailure::KeepDrained, why),
                RestorePlan::PutBack {
                    gate: false,
                    if_unhealthy: Unhealthy::PutBackAndFail
                },
                "{phase:?} {why:?}"
            );
        }
    }
}

#[test]
fn on_failure_decides_once_the_application_may_be_down() {
    assert_eq!(
        restore_plan(Phase::Stopping, OnFailure::Restore, Why::Failed),
        RestorePlan::PutBack {
            gate: true,
            if_unhealthy: Unhealthy::PutBackAndFail
        }
    );
    assert_eq!(
        restore_plan(Phase::Stopping, OnFailure::RestoreIfHealthy, Why::Failed),
        RestorePlan::PutBack {
            gate: true,
            if_unhealthy: Unhealthy::StayOut
        }
    );
    assert_eq!(
        restore_plan(Phase::Stopping, OnFailure::KeepDrained, Why::Failed),
        RestorePlan::KeepDrained { rearm: false }
    );
    assert_eq!(
        restore_plan(Phase::Restoring, OnFailure::KeepDrained, Why::Recovery),
        RestorePlan::KeepDrained { rearm: true },
        "after a restart, keepDrained starts abandonAfter again"
    );
}

#[test]
fn an_abandoned_deployment_is_put_back_without_a_gate() {
    for f in [
        OnFailure::Restore,
        OnFailure::RestoreIfHealthy,
        OnFailure::KeepDrained,
    ] {
        assert_eq!(
            restore_plan(Phase::Stopping, f, Why::Abandoned),
            RestorePlan::PutBack {
                gate: false,
                if_unhealthy: Unhealthy::PutBackAndFail
            },
            "{f:?}"
        );
    }
}
