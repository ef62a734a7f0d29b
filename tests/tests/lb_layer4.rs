//! `drainUntil: idle` behind a Network Load Balancer (layer 4): the clients'
//! connections go straight to the instance and keep flowing until the
//! deregistration delay, so the drain waits for them to close. Clients that
//! close theirs let it end in seconds with nothing failed; clients that keep
//! theirs alive hold it until `drainTimeout`, and what fails then is printed:
//! the agent cannot close a client's connection gracefully (README, when zero
//! failed requests holds).

use std::time::Duration;

use testbed::lbfleet::{failures, FleetSpec, Front, LbFleet, Load, Sample};
use testbed::scenario::LIMIT;
use testbed::{require_root, wait_until};

const SECTION: &str = "loadBalancer:\n  targetGroups:\n    - name: web\n  drainUntil: idle\n  idleFor: 2\n  drainTimeout: 8\n  healthGate:\n    interval: 1\n    timeout: 30\n";

/// Two instances behind a TCP target group with AWS's default delay, v1
/// deployed, then v2 under `clients` (keep-alive, new-connection, slow).
fn roll(clients: (usize, usize, usize)) -> (LbFleet, Vec<Sample>, String) {
    require_root();
    let f = FleetSpec {
        delay: 300,
        keep_alive: true,
        ..FleetSpec::new(Front::Network, 2)
    }
    .start();
    f.serve_v1(SECTION);
    let load = Load::with_slow(f.frontend(), clients, 1000);
    wait_until(Duration::from_secs(20), "load flowing", || {
        load.count() >= 50
    });
    let d2 = f.deploy("v2", SECTION, 0);
    let status = f.bed.wait_deployment(&d2, LIMIT);
    let n = load.count();
    wait_until(Duration::from_secs(20), "load after", || {
        load.count() >= n + 50
    });
    (f, load.finish(), status)
}

#[test]
fn clients_that_close_their_connections_let_a_layer_4_drain_end_in_seconds() {
    let (f, samples, status) = roll((0, 3, 2));
    assert_eq!(status, "Succeeded", "{}", f.logs());
    let bad = failures(&samples);
    assert!(
        bad.is_empty(),
        "{} of {} failed: {:?}",
        bad.len(),
        samples.len(),
        bad.first()
    );
    for a in &f.agents {
        assert!(a.log().contains("idle after"), "{}", f.logs());
    }
    eprintln!(
        "layer 4, new connection per request: {} requests, 0 failed",
        samples.len()
    );
}

#[test]
fn keep_alive_clients_hold_a_layer_4_drain_until_drain_timeout() {
    let (f, samples, status) = roll((4, 0, 0));
    assert_eq!(status, "Succeeded", "{}", f.logs());
    for a in &f.agents {
        let log = a.log();
        assert!(
            log.contains("still draining after drainTimeout 8 s; continuing"),
            "the clients' connections stayed open: {}",
            f.logs()
        );
        assert!(!log.contains("idle after"), "{}", f.logs());
    }
    // The figure, either way: these clients do not retry a request whose
    // kept-alive connection the stopping application closed.
    eprintln!(
        "layer 4, keep-alive clients: {} requests, {} failed",
        samples.len(),
        failures(&samples).len()
    );
}
