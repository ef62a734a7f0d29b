//! The native `loadBalancer` section under load (docs/testbed.md, zero failures): a rolling
//! OneAtATime deployment of three instances behind a real HAProxy fails no
//! request, and the same deployment without the section does.

use std::time::{Duration, Instant};

use testbed::lb::LbFault;
use testbed::lbfleet::{failures, slow_in_flight, FleetSpec, Front, LbFleet, Load, Sample};
use testbed::scenario::LIMIT;
use testbed::{require_root, wait_until};

/// Deploy v1 (which registers the fleet), then v2 under load with `section`.
fn rolling(
    front: Front,
    v2_section: Option<&str>,
    before_v2: impl FnOnce(&LbFleet),
) -> (LbFleet, Vec<Sample>, Instant, String) {
    rolling_spec(FleetSpec::new(front, 3), v2_section, before_v2)
}

fn rolling_spec(
    spec: FleetSpec,
    v2_section: Option<&str>,
    before_v2: impl FnOnce(&LbFleet),
) -> (LbFleet, Vec<Sample>, Instant, String) {
    require_root();
    let f = spec.start();
    let d1 = f.deploy("v1", &f.section(), 0);
    assert_eq!(
        f.bed.wait_deployment(&d1, LIMIT),
        "Succeeded",
        "{}",
        f.logs()
    );
    wait_until(Duration::from_secs(30), "three instances serving", || {
        f.plane.serving("web") == 3
    });
    let load = Load::start(f.frontend(), 4, 2, 9);
    wait_until(Duration::from_secs(20), "load flowing", || {
        load.count() >= 100
    });
    before_v2(&f);
    let t_v2 = Instant::now();
    let section = v2_section.map_or_else(|| f.section(), str::to_string);
    let d2 = f.deploy("v2", &section, 0);
    let status = f.bed.wait_deployment(&d2, LIMIT);
    let n = load.count();
    wait_until(Duration::from_secs(20), "load after the deployment", || {
        load.count() >= n + 100
    });
    let samples = load.finish();
    (f, samples, t_v2, status)
}

fn summary(samples: &[Sample]) -> String {
    let bad = failures(samples);
    format!(
        "requests: {}, failed: {} (first: {:?})",
        samples.len(),
        bad.len(),
        bad.iter()
            .take(3)
            .map(|s| (s.status, &s.error))
            .collect::<Vec<_>>()
    )
}

fn assert_zero_downtime(f: &LbFleet, samples: &[Sample], t_v2: Instant, status: &str) {
    assert_eq!(status, "Succeeded", "{}", f.logs());
    assert!(
        failures(samples).is_empty(),
        "{}\n{}",
        summary(samples),
        f.logs()
    );
    let drains: Vec<_> = f
        .plane
        .changes()
        .into_iter()
        .filter(|c| c.at >= t_v2)
        .filter(|c| {
            matches!(
                c.action.as_str(),
                "DeregisterTargets"
                    | "EnterStandby"
                    | "DeregisterInstancesFromLoadBalancer"
                    | "BlockTraffic"
            )
        })
        .collect();
    for id in &f.ids {
        let served = |rev: &str| {
            samples
                .iter()
                .any(|s| &s.instance == id && s.revision == rev)
        };
        assert!(served("v1") && served("v2"), "{id} must serve v1 then v2");
        let last = samples
            .iter()
            .filter(|s| &s.instance == id)
            .max_by_key(|s| s.end)
            .unwrap();
        assert_eq!(last.revision, "v2", "{id} serves v2 at the end");
        let drain = drains
            .iter()
            .find(|c| &c.instance == id)
            .unwrap_or_else(|| panic!("{id} was never drained: {drains:?}"));
        assert!(
            slow_in_flight(samples, id, drain.at),
            "a slow request to {id} was in flight when its drain began and completed"
        );
    }
    assert_eq!(f.journals(), 0, "every drain journal is gone");
    eprintln!("{}", summary(samples));
}

#[test]
fn target_group_rolling_deployment_fails_no_request() {
    let (f, samples, t, status) = rolling(Front::TargetGroup, None, |_| {});
    assert_zero_downtime(&f, &samples, t, &status);
}

#[test]
fn drain_until_idle_ends_a_300_s_drain_in_seconds_and_fails_no_request() {
    // AWS's default delay, an Application LB keeping connections to the
    // targets: the target group reports `draining` for 300 s after every
    // deregistration. The host's own connections say when it is done. The
    // stop script SIGKILLs the application: a request still in flight when
    // the drain ended would fail.
    let spec = FleetSpec {
        delay: 300,
        keep_alive: true,
        kill_on_stop: true,
        ..FleetSpec::new(Front::TargetGroup, 3)
    };
    let section = "loadBalancer:\n  targetGroups:\n    - name: web\n  drainUntil: idle\n  idleFor: 2\n  healthGate:\n    interval: 1\n    timeout: 30\n";
    let (f, samples, t, status) = rolling_spec(spec, Some(section), |_| {});
    // Within the deployment's limit (90 s) at all: three drains that waited
    // for the delay would take 15 minutes.
    assert_zero_downtime(&f, &samples, t, &status);
    for a in &f.agents {
        assert!(
            a.log().contains("idle after") && a.log().contains("still counts its delay"),
            "each drain ended on the host's connections: {}",
            f.logs()
        );
    }
}

#[test]
fn codedeploy_s_own_traffic_control_moves_traffic_and_fails_no_request() {
    // The same fleet and load with the service's BlockTraffic/AllowTraffic
    // and no section: the comparison a user can make on `testbed up`.
    let spec = FleetSpec {
        traffic_control: true,
        ..FleetSpec::new(Front::TargetGroup, 3)
    };
    let (f, samples, t, status) = rolling_spec(spec, Some(""), |_| {});
    assert_zero_downtime(&f, &samples, t, &status);
    let by_service = |action: &str| {
        f.plane
            .changes()
            .iter()
            .filter(|c| c.at >= t && c.action == action)
            .count()
    };
    assert_eq!(
        (by_service("BlockTraffic"), by_service("AllowTraffic")),
        (3, 3)
    );
    assert_eq!(
        by_service("DeregisterTargets"),
        0,
        "the agent moved no traffic"
    );
}

#[test]
fn without_the_section_requests_fail() {
    // The negative control: same fleet, same load, v2 without loadBalancer.
    let (f, samples, _, status) = rolling(Front::TargetGroup, Some(""), |_| {});
    assert_eq!(status, "Succeeded", "{}", f.logs());
    assert!(
        !failures(&samples).is_empty(),
        "stopping the application in service must fail requests: {}",
        summary(&samples)
    );
}

#[test]
fn classic_load_balancer_rolling_deployment_fails_no_request() {
    let (f, samples, t, status) = rolling(Front::Classic, None, |_| {});
    assert_zero_downtime(&f, &samples, t, &status);
}

#[test]
fn auto_scaling_standby_rolling_deployment_restores_min_size() {
    let (f, samples, t, status) = rolling(Front::AutoScaling, None, |_| {});
    assert_zero_downtime(&f, &samples, t, &status);
    let (min, desired, suspended, members) = f.plane.group("web-asg");
    assert_eq!((min, desired), (3, 3), "min and desired as before");
    assert!(suspended.is_empty());
    assert!(members.iter().all(|(_, s)| s == "InService"), "{members:?}");
    let changes = f.plane.changes();
    assert!(
        changes
            .iter()
            .any(|c| c.action == "UpdateAutoScalingGroup" && c.instance == "MinSize=2"),
        "min == desired forced the minimum down during each drain"
    );
    // Each lowered minimum had its breadcrumb (the group tag another host
    // repairs from), written before the minimum went down and removed after.
    for id in &f.ids {
        let key = format!("codedeploy-agent:min-lowered:{id}");
        let at = |action: &str| {
            changes
                .iter()
                .position(|c| c.action == action && c.instance == key)
        };
        let (put, del) = (at("CreateOrUpdateTags"), at("DeleteTags"));
        assert!(
            put.is_some() && del > put,
            "breadcrumb of {id}: {changes:?}"
        );
    }
    assert!(
        f.plane.tags("web-asg").is_empty(),
        "{:?}",
        f.plane.tags("web-asg")
    );
}

#[test]
fn throttling_during_drain_still_fails_no_request() {
    // The API answers Throttling (and a 500) to the calls a drain and a
    // restore depend on; the SDK's jittered retries carry them through.
    let faults = [
        ("DescribeTargetHealth", LbFault::Throttle, 3),
        ("DeregisterTargets", LbFault::Throttle, 2),
        ("RegisterTargets", LbFault::ServerError, 1),
        ("DescribeTargetGroups", LbFault::Throttle, 2),
    ];
    let (f, samples, t, status) = rolling(Front::TargetGroup, None, |f| {
        for (action, kind, n) in faults {
            f.plane.inject(Some(action), kind, n);
        }
    });
    assert_zero_downtime(&f, &samples, t, &status);
    assert_eq!(f.plane.faults_pending(), 0, "every injected fault was met");
    let refused = f
        .plane
        .calls()
        .iter()
        .filter(|(_, at, code)| *at >= t && *code >= 400)
        .count();
    assert_eq!(refused, 8, "each fault answered once");
}

#[test]
fn with_service_traffic_control_skip_or_both() {
    // The deployment group has CodeDeploy's own traffic control: the default
    // `skip` leaves the load balancer to the service (with a warning);
    // `both` drains at BeforeBlockTraffic and restores after ValidateService.
    require_root();
    let f = LbFleet::start_traffic_controlled(Front::AutoScaling, 1);
    let skip = "loadBalancer:\n  autoScaling:\n    action: standby\n    minSize: lower\n  healthGate:\n    interval: 1\n    timeout: 30\n";
    let d1 = f.deploy("v1", skip, 0);
    assert_eq!(
        f.bed.wait_deployment(&d1, LIMIT),
        "Succeeded",
        "{}",
        f.logs()
    );
    assert!(
        !f.plane.changes().iter().any(|c| c.action == "EnterStandby"),
        "skip drains nothing"
    );
    assert!(
        f.agents[0]
            .log()
            .contains("withServiceTrafficControl: skip"),
        "{}",
        f.logs()
    );
    let both = format!("{skip}  withServiceTrafficControl: both\n");
    let d2 = f.deploy("v2", &both, 0);
    assert_eq!(
        f.bed.wait_deployment(&d2, LIMIT),
        "Succeeded",
        "{}",
        f.logs()
    );
    let log = f.agents[0].log();
    let drained_at = |event: &str| {
        log.lines().any(|l| {
            l.contains(&d2)
                && l.contains(&format!("command={event} "))
                && l.contains("command succeeded")
                && l.contains("loadBalancer: out of service")
        })
    };
    assert!(drained_at("BeforeBlockTraffic"), "{}", f.logs());
    assert!(
        !drained_at("ApplicationStop"),
        "drained once, at the first command"
    );
    let (min, desired, _, members) = f.plane.group("web-asg");
    assert_eq!((min, desired), (1, 1));
    assert!(members.iter().all(|(_, s)| s == "InService"), "{members:?}");
    assert_eq!(f.journals(), 0);
}

#[test]
fn an_appspec_whose_validate_service_has_the_default_timeout_deploys_with_the_section() {
    // The seeds' appspecs give ValidateService no timeout (the default
    // 3600 s): with a section added, the declared worst case passes the
    // command's hour. That is a warning naming the fix, not a failure, and
    // the restore runs within what is left of the hour.
    require_root();
    let f = LbFleet::start(Front::TargetGroup, 1);
    let hooks = "  ApplicationStop:\n    - location: scripts/stop.sh\n  ApplicationStart:\n    - location: scripts/start.sh\n  ValidateService:\n    - location: scripts/validate.sh\n";
    for rev in ["v1", "v2"] {
        let d = f.deploy_hooks(rev, hooks, &f.section());
        assert_eq!(
            f.bed.wait_deployment(&d, LIMIT),
            "Succeeded",
            "{}",
            f.logs()
        );
    }
    wait_until(Duration::from_secs(30), "v2 serving", || {
        f.served_revision().as_deref() == Some("v2")
    });
    let log = f.agents[0].log();
    assert!(
        log.contains("the restore gets what is left of the hour"),
        "{}",
        f.logs()
    );
    assert_eq!(f.journals(), 0);
}
