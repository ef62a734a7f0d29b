//! The loadBalancer section when things go wrong (docs/loadbalancer.md 3.3, 3.4): an
//! agent SIGKILLed during the drain, the stop scripts or the restore comes
//! back and puts its instance in service with the group as it found it; a
//! failing ValidateService ends as `onFailure` says.
//!
//! One instance in an Auto Scaling group whose min equals desired, so every
//! drain lowers the minimum, with processes to suspend and one the operator
//! suspended before (which must stay suspended).

use std::time::{Duration, Instant};

use testbed::lb::LbFault;
use testbed::lbfleet::{Front, LbFleet};
use testbed::scenario::{event, instance_summary, message, LIMIT};
use testbed::{require_root, wait_until};

const GROUP: &str = "web-asg";

fn section(on_failure: &str) -> String {
    format!(
        "loadBalancer:\n  autoScaling:\n    action: standby\n    minSize: lower\n    suspendProcesses: [AZRebalance, ScheduledActions]\n  healthGate:\n    interval: 1\n    timeout: 5\n  onFailure: {on_failure}\n  abandonAfter: 60\n"
    )
}

/// A one-instance group serving v1, ScheduledActions suspended by an operator.
fn serving_v1() -> LbFleet {
    require_root();
    let f = LbFleet::start(Front::AutoScaling, 1);
    f.plane.suspend(GROUP, "ScheduledActions");
    let d1 = f.deploy("v1", &section("restore"), 0);
    assert_eq!(
        f.bed.wait_deployment(&d1, LIMIT),
        "Succeeded",
        "{}",
        f.logs()
    );
    wait_until(Duration::from_secs(30), "v1 serving", || {
        f.served_revision().as_deref() == Some("v1")
    });
    f
}

/// The group and load balancer as they were before the deployment, and no
/// journal left.
fn wait_restored(f: &LbFleet) {
    wait_until(
        Duration::from_secs(90),
        "instance back in service, journal gone",
        || f.journals() == 0 && f.plane.group(GROUP).3.iter().all(|(_, s)| s == "InService"),
    );
    let (min, desired, suspended, _) = f.plane.group(GROUP);
    assert_eq!((min, desired), (1, 1), "min and desired as before");
    assert_eq!(
        suspended,
        vec!["ScheduledActions".to_string()],
        "ours resumed, the operator's left alone"
    );
}

/// Wait until instance 0's journal is in `phase`, then SIGKILL its agent.
fn crash_in(f: &mut LbFleet, phase: &str) {
    wait_until(Duration::from_secs(60), phase, || {
        f.journal_phase(0).as_deref() == Some(phase)
    });
    f.crash_and_restart(0);
}

#[test]
fn sigkill_during_drain_puts_the_instance_back() {
    let mut f = serving_v1();
    // In flight when the drain begins: it lasts its delay.
    let held = f.hold_request(20_000);
    wait_until(Duration::from_secs(10), "the request in flight", || {
        f.plane.sessions("web") > 0
    });
    let d2 = f.deploy("v2", &section("restore"), 0);
    crash_in(&mut f, "draining");
    assert_eq!(f.bed.wait_deployment(&d2, LIMIT), "Failed", "{}", f.logs());
    wait_restored(&f);
    // The old application was never stopped: it serves again at once.
    wait_until(Duration::from_secs(30), "v1 serving again", || {
        f.served_revision().as_deref() == Some("v1")
    });
    assert!(f.agents[0].log().contains("why=Recovery"), "{}", f.logs());
    let _ = held.join();
}

#[test]
fn sigkill_during_stop_scripts_puts_the_instance_back() {
    let mut f = serving_v1();
    std::fs::write(f.hold_stop(0), "").unwrap();
    let d2 = f.deploy("v2", &section("restore"), 0);
    let started = f.agents[0].dir.join("stop-started");
    wait_until(Duration::from_secs(60), "stop script running", || {
        started.exists()
    });
    assert_eq!(f.journal_phase(0).as_deref(), Some("stopping"));
    // The crash: the agent dies, its stop script carries on and stops the
    // application, then the agent comes back.
    f.agents[0].kill();
    std::fs::remove_file(f.hold_stop(0)).unwrap();
    wait_until(Duration::from_secs(30), "application stopped", || {
        !f.app_running(0)
    });
    f.crash_and_restart(0);
    assert_eq!(f.bed.wait_deployment(&d2, LIMIT), "Failed", "{}", f.logs());
    // onFailure: restore puts it back although the gate fails: the load
    // balancer's own health checks keep traffic off the stopped application.
    wait_restored(&f);
    // The host is whole again: the next deployment goes through.
    let d3 = f.deploy("v3", &section("restore"), 0);
    assert_eq!(
        f.bed.wait_deployment(&d3, LIMIT),
        "Succeeded",
        "{}",
        f.logs()
    );
    wait_restored(&f);
    wait_until(Duration::from_secs(30), "v3 serving", || {
        f.served_revision().as_deref() == Some("v3")
    });
}

#[test]
fn sigkill_during_restore_finishes_the_restore() {
    let mut f = serving_v1();
    let d2 = f.deploy("v2", &section("restore"), 0);
    crash_in(&mut f, "restoring");
    // The interrupted ValidateService is reported failed, as the official
    // agent reports any command a restart interrupted.
    assert_eq!(f.bed.wait_deployment(&d2, LIMIT), "Failed", "{}", f.logs());
    wait_restored(&f);
    wait_until(Duration::from_secs(30), "v2 serving", || {
        f.served_revision().as_deref() == Some("v2")
    });
}

#[test]
fn failing_validate_service_restores_by_default() {
    let f = serving_v1();
    let d2 = f.deploy("v2", &section("restore"), 3);
    assert_eq!(f.bed.wait_deployment(&d2, LIMIT), "Failed", "{}", f.logs());
    // Put back inside the failed command: nothing is pending once it is reported.
    assert_eq!(f.journals(), 0, "{}", f.logs());
    wait_restored(&f);
    let s = instance_summary(&f.bed, &d2, &f.ids[0]);
    let validate = event(&s, "ValidateService");
    assert_eq!(validate["status"], "Failed");
    assert!(
        message(validate).contains("validate.sh"),
        "the script stays the cause: {validate:#}"
    );
}

#[test]
fn failing_validate_service_keeps_drained_until_abandon_after() {
    let f = serving_v1();
    let d2 = f.deploy("v2", &section("keepDrained"), 3);
    assert_eq!(f.bed.wait_deployment(&d2, LIMIT), "Failed", "{}", f.logs());
    let failed_at = Instant::now();
    // Kept out of service for investigation, the minimum still lowered.
    assert_eq!(f.journals(), 1, "{}", f.logs());
    let (min, _, _, members) = f.plane.group(GROUP);
    assert_eq!(min, 0);
    assert_eq!(members[0].1, "Standby");
    wait_restored(&f);
    let exit = f
        .plane
        .changes()
        .into_iter()
        .find(|c| c.action == "ExitStandby" && c.at > failed_at)
        .expect("ExitStandby after the failure");
    assert!(
        exit.at >= failed_at + Duration::from_secs(50),
        "restored after abandonAfter (60 s), not before: {:?}",
        exit.at - failed_at
    );
}

/// The drain fails at ApplicationStop (AccessDenied on EnterStandby, not
/// retried by the SDK) in a deployment that ignores ApplicationStop
/// failures: the service goes on, and the next command must drain before it
/// installs anything, or fail.
fn stop_failure_ignored(denials: u32) -> (LbFleet, String, i32) {
    let f = serving_v1();
    let v1_pid: i32 = std::fs::read_to_string(f.agents[0].dir.join("app.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    f.plane
        .inject(Some("EnterStandby"), LbFault::AccessDenied, denials);
    let d2 = f.deploy_ignoring_stop_failures("v2", &section("restore"));
    (f, d2, v1_pid)
}

fn diagnostics(f: &LbFleet, d: &str, event_name: &str) -> (String, String) {
    let s = instance_summary(&f.bed, d, &f.ids[0]);
    let e = event(&s, event_name);
    (
        e["status"].as_str().unwrap_or_default().to_string(),
        format!("{} {}", e["diagnostics"]["scriptName"], message(e)),
    )
}

#[test]
fn a_drain_that_failed_at_an_ignored_application_stop_is_retried_at_the_next_command() {
    let (f, d2, v1_pid) = stop_failure_ignored(1);
    let status = f.bed.wait_deployment(&d2, LIMIT);
    // The old application was never stopped (ApplicationStop failed before
    // its scripts), so it is still the one answering: the point here is the
    // load balancer, not the application.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(v1_pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(status, "Succeeded", "{}", f.logs());
    let (st, why) = diagnostics(&f, &d2, "ApplicationStop");
    assert_eq!(st, "Failed");
    assert!(
        why.contains("loadBalancer:drain") && why.contains("AccessDenied"),
        "{why}"
    );
    let log = f.agents[0].log();
    assert!(
        log.lines().any(|l| l.contains("command=DownloadBundle")
            && l.contains("command succeeded")
            && l.contains("loadBalancer: out of service")),
        "DownloadBundle drained first:\n{}",
        f.logs()
    );
    wait_restored(&f);
}

#[test]
fn a_drain_that_fails_again_fails_the_next_command_and_installs_nothing() {
    let (f, d2, v1_pid) = stop_failure_ignored(2);
    let status = f.bed.wait_deployment(&d2, LIMIT);
    assert_eq!(status, "Failed", "{}", f.logs());
    let (st, why) = diagnostics(&f, &d2, "DownloadBundle");
    assert_eq!(st, "Failed");
    assert!(
        why.contains("loadBalancer:drain") && why.contains("AccessDenied"),
        "{why}"
    );
    let (install, _) = diagnostics(&f, &d2, "Install");
    assert_ne!(install, "Succeeded", "nothing installed in service");
    // Never out of service: each failed drain was undone.
    wait_restored(&f);
    assert!(testbed::alive(v1_pid), "v1 still runs");
    assert_eq!(f.served_revision().as_deref(), Some("v1"));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(v1_pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn a_minimum_a_lost_host_left_lowered_is_repaired_by_the_next_drain() {
    // i-0lost drained (min 1 -> 0), left its breadcrumb, and was terminated
    // with its journal. The next drain of the group gives the 1 back.
    let f = serving_v1();
    f.plane.set_group(
        GROUP,
        0,
        Some((
            "codedeploy-agent:min-lowered:i-0lost",
            "delta=1;until=0;deployment=d-OLD",
        )),
    );
    // Tagging denied for this host: breadcrumbs auto goes on without one.
    f.plane
        .inject(Some("CreateOrUpdateTags"), LbFault::AccessDenied, 1);
    let earlier = f.plane.changes().len();
    let d2 = f.deploy("v2", &section("restore"), 0);
    assert_eq!(
        f.bed.wait_deployment(&d2, LIMIT),
        "Succeeded",
        "{}",
        f.logs()
    );
    wait_restored(&f);
    assert!(f.plane.tags(GROUP).is_empty(), "{:?}", f.plane.tags(GROUP));
    let changes = f.plane.changes().split_off(earlier);
    let at = |action: &str, what: &str| {
        changes
            .iter()
            .position(|c| c.action == action && c.instance == what)
            .unwrap_or_else(|| panic!("no {action} {what}: {changes:?}"))
    };
    let repaired = at("UpdateAutoScalingGroup", "MinSize=1");
    let untagged = at("DeleteTags", "codedeploy-agent:min-lowered:i-0lost");
    let standby = changes
        .iter()
        .position(|c| c.action == "EnterStandby")
        .expect("EnterStandby");
    assert!(repaired < untagged && untagged < standby, "{changes:?}");
    assert!(
        f.agents[0]
            .log()
            .contains("cannot tag the Auto Scaling group"),
        "{}",
        f.logs()
    );
}
