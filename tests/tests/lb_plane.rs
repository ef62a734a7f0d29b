//! The testbed's load balancer plane follows AWS's documented drain rules
//! (docs/testbed.md, the drain rules): a deregistered target stops taking
//! requests at once, its traffic ends as soon as nothing is in flight and
//! no connection is open, and the target group still reports it `draining`
//! until the deregistration delay ends.

use std::time::{Duration, Instant};

use testbed::lb::{Seen, State};
use testbed::lbfleet::{FleetSpec, Front, LbFleet};
use testbed::{require_root, wait_until};

fn serving(spec: FleetSpec) -> LbFleet {
    require_root();
    let f = spec.start();
    f.serve_v1(&f.section());
    f
}

fn traffic_ended(f: &LbFleet, since: Instant) -> bool {
    f.plane
        .transitions()
        .iter()
        .any(|t| t.at >= since && t.instance == f.ids[0] && t.seen == Seen::Gone)
}

fn states(f: &LbFleet) -> Vec<State> {
    f.plane
        .registrations("web", &f.ids[0])
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

#[test]
fn an_idle_target_s_traffic_ends_at_once_but_it_reports_draining_until_the_delay() {
    let f = serving(FleetSpec {
        delay: 4,
        ..FleetSpec::new(Front::TargetGroup, 1)
    });
    let t0 = Instant::now();
    f.plane.deregister("web", &f.ids[0]);
    wait_until(Duration::from_secs(3), "traffic ended", || {
        traffic_ended(&f, t0)
    });
    // "the status of the target is displayed as draining until the
    // deregistration delay timeout expires" (ALB User Guide).
    assert_eq!(states(&f), vec![State::Draining]);
    wait_until(Duration::from_secs(15), "unused", || states(&f).is_empty());
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "gone only at the delay"
    );
}

#[test]
fn a_request_in_flight_keeps_the_drain_going_until_it_completes() {
    let f = serving(FleetSpec {
        delay: 60,
        ..FleetSpec::new(Front::TargetGroup, 1)
    });
    let held = f.hold_request(3000);
    wait_until(Duration::from_secs(10), "the request in flight", || {
        f.plane.sessions("web") > 0
    });
    let t0 = Instant::now();
    f.plane.deregister("web", &f.ids[0]);
    assert!(!traffic_ended(&f, t0), "a request is in flight");
    held.join().unwrap();
    wait_until(Duration::from_secs(5), "traffic ended after it", || {
        traffic_ended(&f, t0)
    });
    assert_eq!(
        states(&f),
        vec![State::Draining],
        "still draining: delay 60 s"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_an_active_connection() {
    let f = serving(FleetSpec {
        delay: 60,
        keep_alive: true,
        ..FleetSpec::new(Front::TargetGroup, 1)
    });
    assert_eq!(f.served_revision().as_deref(), Some("v1"));
    wait_until(Duration::from_secs(5), "a pooled connection", || {
        f.plane.connections("web") > 0
    });
    let t0 = Instant::now();
    f.plane.deregister("web", &f.ids[0]);
    // "no in-flight requests and no active connections": the pooled one is
    // open, so the drain goes on (HAProxy keeps it for 60 s).
    assert_eq!(f.plane.sessions("web"), 0, "nothing in flight");
    assert!(f.plane.connections("web") > 0);
    assert!(!traffic_ended(&f, t0), "an open connection holds the drain");
}
