//! Many hosts of one Auto Scaling group drained and restored at once
//! (docs/loadbalancer.md 3.4, the group's minimum): whatever the deployment
//! configuration, the group's MinSize, desired capacity, suspended processes
//! and tags end exactly as the operator had them, with a host crashing in
//! the middle too.

use std::time::Duration;

use testbed::lbfleet::{GroupState, LbFleet};
use testbed::scenario::LIMIT;
use testbed::{require_root, wait_until};

const GROUP: &str = "web-asg";

const SECTION: &str = "loadBalancer:\n  autoScaling:\n    action: standby\n    minSize: lower\n    suspendProcesses: [AZRebalance, ScheduledActions]\n  healthGate:\n    interval: 1\n    timeout: 30\n  abandonAfter: 120\n";

/// What the operator set: MinSize, desired capacity, suspended processes,
/// tags.
fn state(f: &LbFleet) -> GroupState {
    f.group_state().expect("an Auto Scaling fleet")
}

/// Every member InService and every journal gone.
fn wait_settled(f: &LbFleet) {
    wait_until(
        Duration::from_secs(120),
        "every instance back in service, every journal gone",
        || f.journals() == 0 && f.plane.group(GROUP).3.iter().all(|(_, s)| s == "InService"),
    );
}

/// The most hosts of the group out of service at one time, from the
/// plane's record of EnterStandby and ExitStandby.
fn most_in_standby(f: &LbFleet) -> usize {
    let (mut now, mut most) = (0usize, 0usize);
    for c in f.plane.changes() {
        match c.action.as_str() {
            "EnterStandby" => now += 1,
            "ExitStandby" => now = now.saturating_sub(1),
            _ => continue,
        }
        most = most.max(now);
    }
    most
}

/// Two deployments of a group of `n` (desired `n`, MinSize `min`) with
/// `config`; the group as the operator had it after each.
fn deploy_twice(n: usize, min: i32, config: &str) -> LbFleet {
    require_root();
    let f = LbFleet::start_asg(n, min, config);
    f.plane.suspend(GROUP, "ScheduledActions");
    f.plane.set_group(GROUP, min, Some(("team", "web")));
    let before = state(&f);
    for rev in ["v1", "v2"] {
        let d = f.deploy(rev, SECTION, 0);
        assert_eq!(
            f.bed.wait_deployment(&d, LIMIT),
            "Succeeded",
            "{}",
            f.logs()
        );
        wait_settled(&f);
        assert_eq!(state(&f), before, "after {rev}\n{}", f.logs());
    }
    f
}

#[test]
fn half_at_a_time_two_hosts_at_once_with_min_equal_to_desired() {
    let f = deploy_twice(4, 4, "CodeDeployDefault.HalfAtATime");
    assert_eq!(most_in_standby(&f), 2, "{:?}", f.plane.changes());
}

#[test]
fn all_at_once_four_hosts_with_min_equal_to_desired() {
    let f = deploy_twice(4, 4, "CodeDeployDefault.AllAtOnce");
    assert!(most_in_standby(&f) >= 3, "{:?}", f.plane.changes());
}

#[test]
fn all_at_once_six_hosts_with_min_equal_to_desired() {
    let f = deploy_twice(6, 6, "CodeDeployDefault.AllAtOnce");
    assert!(most_in_standby(&f) >= 4, "{:?}", f.plane.changes());
}

#[test]
fn half_at_a_time_six_hosts_with_min_below_desired() {
    let f = deploy_twice(6, 2, "CodeDeployDefault.HalfAtATime");
    assert_eq!(most_in_standby(&f), 3, "{:?}", f.plane.changes());
}

#[test]
fn all_at_once_four_hosts_with_min_below_desired() {
    deploy_twice(4, 2, "CodeDeployDefault.AllAtOnce");
}

#[test]
fn a_minimum_healthy_hosts_setting_of_one() {
    let f = deploy_twice(4, 4, "HOST_COUNT=1");
    assert_eq!(most_in_standby(&f), 3, "{:?}", f.plane.changes());
}

#[test]
fn a_host_that_crashes_in_the_middle_leaves_the_group_as_it_was() {
    require_root();
    let mut f = LbFleet::start_asg(4, 4, "CodeDeployDefault.HalfAtATime");
    f.plane.suspend(GROUP, "ScheduledActions");
    let before = state(&f);
    let d1 = f.deploy("v1", SECTION, 0);
    assert_eq!(
        f.bed.wait_deployment(&d1, LIMIT),
        "Succeeded",
        "{}",
        f.logs()
    );
    wait_settled(&f);
    assert_eq!(state(&f), before, "after v1\n{}", f.logs());
    // Every host holds its stop script; the first to reach it is killed
    // there (drained, its minimum lowered), the others go on.
    for i in 0..4 {
        std::fs::write(f.hold_stop(i), "").unwrap();
    }
    let d2 = f.deploy("v2", SECTION, 0);
    let started = |i: usize| f.agents[i].dir.join("stop-started").exists();
    wait_until(Duration::from_secs(60), "a stop script running", || {
        (0..4).any(started)
    });
    let victim = (0..4).find(|&i| started(i)).unwrap();
    assert_eq!(f.journal_phase(victim).as_deref(), Some("stopping"));
    f.agents[victim].kill();
    for i in 0..4 {
        let _ = std::fs::remove_file(f.hold_stop(i));
    }
    f.crash_and_restart(victim);
    // The victim's interrupted command is reported failed; with half the
    // fleet healthy the service may still call the deployment a success.
    let status = f.bed.wait_deployment(&d2, LIMIT);
    assert!(
        status == "Succeeded" || status == "Failed",
        "{status}\n{}",
        f.logs()
    );
    wait_settled(&f);
    assert_eq!(state(&f), before, "after the crash\n{}", f.logs());
    // The group is whole: the next deployment goes through and leaves it so.
    let d3 = f.deploy("v3", SECTION, 0);
    assert_eq!(
        f.bed.wait_deployment(&d3, LIMIT),
        "Succeeded",
        "{}",
        f.logs()
    );
    wait_settled(&f);
    assert_eq!(state(&f), before, "after v3\n{}", f.logs());
}
