//! One rolling deployment under load on an [`LbFleet`], watched and
//! measured: what `testbed demo` prints and what the drain benchmark
//! compares (the native section against users' copied scripts).
//!
//! The windows come from the data plane, not from the agent: when HAProxy
//! stopped giving an instance new requests, when its drain ended, when it
//! was registered again and when HAProxy marked it ready.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::lb::haproxy::Slot;
use crate::lb::{Seen, Transition};
use crate::lbfleet::{failures, FleetSpec, Front, GroupState, LbFleet, Load};
use crate::scenario::LIMIT;
use crate::wait_until;

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// The `loadBalancer` section.
    Native,
    /// Deregister, sleep `drain` s, stop; start, sleep `warm_up` s, register.
    Scripts { drain: f64, warm_up: f64 },
}

/// One instance's time out of service during the deployment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    /// HAProxy stopped sending it new requests → ready again.
    pub out_of_service: Option<Duration>,
    /// Out of service → its registration gone (the drain finished).
    pub drain: Option<Duration>,
    /// Registered again → ready.
    pub health: Option<Duration>,
}

pub struct Report {
    /// The Auto Scaling group before the rollout and after it, if any.
    pub group_before: Option<GroupState>,
    pub group_after: Option<GroupState>,
    pub status: String,
    /// Deployment created → its final status.
    pub total: Duration,
    /// Deployment created → every instance serving again (scripts that
    /// register without waiting finish before their last host is healthy).
    pub all_serving: Option<Duration>,
    pub hosts: Vec<(String, Window)>,
    pub requests: usize,
    pub failed: usize,
    /// A few failed requests, for the reader.
    pub examples: Vec<String>,
}

/// `instance`'s first out-of-service window after `since` in `t`.
pub fn window(t: &[Transition], instance: &str, since: Instant) -> Window {
    let mine: Vec<&Transition> = t
        .iter()
        .filter(|x| x.instance == instance && x.at >= since)
        .collect();
    let is_out = |s: &Seen| matches!(s, Seen::Slot(Slot::Drain | Slot::Maint) | Seen::Gone);
    let Some(out) = mine.iter().find(|x| is_out(&x.seen)) else {
        return Window::default();
    };
    let after = |pred: &dyn Fn(&Seen) -> bool| {
        mine.iter()
            .find(|x| x.at >= out.at && pred(&x.seen))
            .map(|x| x.at)
    };
    let ready = after(&|s| *s == Seen::Slot(Slot::Ready));
    let gone = after(&|s| *s == Seen::Gone);
    let registered = mine
        .iter()
        .filter(|x| x.seen == Seen::Registered && x.at >= out.at)
        .filter(|x| ready.is_none_or(|r| x.at <= r))
        .map(|x| x.at)
        .next_back();
    Window {
        out_of_service: ready.map(|r| r - out.at),
        drain: gone.map(|g| g - out.at),
        health: registered.zip(ready).map(|(g, r)| r - g),
    }
}

/// Deploy v1 (which registers the fleet), then v2 under load in `mode`,
/// telling `live` what happens as it happens.
/// The fleet a rollout runs on.
#[derive(Clone, Debug)]
pub struct Setup {
    /// What the instances are behind.
    pub front: Front,
    /// How many.
    pub instances: usize,
    /// The deployment configuration (`CodeDeployDefault.OneAtATime` ...).
    pub config: String,
    /// The load balancer's deregistration delay, seconds.
    pub delay: u32,
    /// Keep-alive, new-connection and slow (2 s) clients of the load.
    pub clients: (usize, usize, usize),
    /// Deploy v2 without the section: the control, which fails requests.
    pub control: bool,
    /// The section's `drainUntil: idle`.
    pub idle: bool,
    /// The load balancer keeps connections to the targets open between
    /// requests, as an Application LB does.
    pub keep_alive: bool,
    /// How long the slow clients' requests last, ms.
    pub slow_ms: u64,
    /// The stop script SIGKILLs the application.
    pub kill_on_stop: bool,
    /// The application binds its port this long after it starts, seconds.
    pub bind_after: f64,
}

impl Setup {
    /// Three instances in a target group, OneAtATime, the tests' delay and load.
    pub fn new(front: Front) -> Setup {
        Setup {
            front,
            instances: 3,
            config: "CodeDeployDefault.OneAtATime".into(),
            delay: crate::lbfleet::DRAIN_SECONDS,
            clients: (4, 2, 9),
            control: false,
            idle: false,
            keep_alive: false,
            slow_ms: crate::lbfleet::SLOW_MS,
            kill_on_stop: false,
            bind_after: 0.0,
        }
    }
}

pub fn run(setup: &Setup, mode: Mode, live: &mut dyn FnMut(String)) -> Report {
    let (front, n) = (setup.front, setup.instances);
    let f = FleetSpec {
        config: setup.config.clone(),
        delay: setup.delay,
        keep_alive: setup.keep_alive,
        kill_on_stop: setup.kill_on_stop,
        bind_after: setup.bind_after,
        ..FleetSpec::new(front, n)
    }
    .start();
    live(format!(
        "fleet: {n} instances behind HAProxy ({front:?}{}), {}, LB API at {}",
        if setup.keep_alive {
            ", connections to the targets kept alive"
        } else {
            ""
        },
        setup.config,
        f.plane.endpoint()
    ));
    let section = if setup.idle {
        format!("{}  drainUntil: idle\n", f.section())
    } else {
        f.section()
    };
    let group_before = f.group_state();
    let deploy = |rev: &str| match mode {
        Mode::Native if setup.control && rev != "v1" => f.deploy(rev, "", 0),
        Mode::Native => f.deploy(rev, &section, 0),
        Mode::Scripts { drain, warm_up } => f.deploy_scripts(rev, drain, warm_up),
    };
    let d1 = deploy("v1");
    let s1 = f.bed.wait_deployment(&d1, LIMIT);
    assert_eq!(s1, "Succeeded", "v1 {d1}: {}", f.logs());
    wait_until(Duration::from_secs(30), "every instance serving", || {
        f.plane.serving("web") == n
    });
    live(format!("v1 deployed ({d1}); {n} instances serving"));
    let (keep, fresh, slow) = setup.clients;
    let load = Load::with_slow(f.frontend(), setup.clients, setup.slow_ms);
    wait_until(Duration::from_secs(20), "load flowing", || {
        load.count() >= 100
    });
    live(format!(
        "load: {keep} keep-alive, {fresh} new-connection and {slow} slow ({} ms) clients",
        setup.slow_ms
    ));
    let t0 = Instant::now();
    let d2 = deploy("v2");
    live(format!("v2 deployment {d2} created ({mode:?})"));
    // Each host may wait out the whole delay (drainUntil: deregistered).
    let limit = LIMIT * 4 + Duration::from_secs(u64::from(setup.delay + 60) * n as u64);
    let status = watch(&f, &d2, (t0, limit), live);
    let total = t0.elapsed();
    let all_serving = serving_again(&f, n, t0);
    let n_before = load.count();
    wait_until(Duration::from_secs(20), "load after the deployment", || {
        load.count() >= n_before + 100
    });
    let samples = load.finish();
    let bad = failures(&samples);
    let t = f.plane.transitions();
    Report {
        group_before,
        group_after: f.group_state(),
        status,
        total,
        all_serving,
        hosts: f
            .ids
            .iter()
            .map(|id| (id.clone(), window(&t, id, t0)))
            .collect(),
        requests: samples.len(),
        failed: bad.len(),
        examples: bad
            .iter()
            .take(3)
            .map(|s| format!("status {} {}", s.status, s.error))
            .collect(),
    }
}

/// When every instance is ready in HAProxy again (a minute at most after
/// the deployment ended: one that never comes back has no time).
fn serving_again(f: &LbFleet, n: usize, t0: Instant) -> Option<Duration> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.plane.serving("web") < n {
        if Instant::now() > deadline {
            return None;
        }
        // A display wait on the data plane, not a test's synchronisation.
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = f.plane.transitions();
    f.ids
        .iter()
        .filter_map(|id| {
            t.iter()
                .filter(|x| &x.instance == id && x.seen == Seen::Slot(Slot::Ready))
                .map(|x| x.at)
                .next_back()
        })
        .max()
        .map(|at| at.saturating_duration_since(t0))
}

/// Print lifecycle events, LB API calls and data-plane changes until the
/// deployment ends, in time order; returns its status.
fn watch(
    f: &LbFleet,
    deployment: &str,
    (t0, limit): (Instant, Duration),
    live: &mut dyn FnMut(String),
) -> String {
    // The control plane keeps epoch seconds; lines are stamped from t0.
    let epoch0 = crate::control::state::now() - t0.elapsed().as_secs_f64();
    let since = |epoch: f64| Duration::from_secs_f64((epoch - epoch0).max(0.0));
    let mut reported: BTreeMap<(String, String), String> = BTreeMap::new();
    let (mut n_changes, mut n_trans) = (0, 0);
    loop {
        let mut batch: Vec<(Duration, String)> = Vec::new();
        let (status, events) = f.bed.control.with_state(|s| {
            let d = &s.deployments[deployment];
            let ev: Vec<_> = d
                .instances
                .iter()
                .flat_map(|i| i.events.iter().map(move |e| (i.name.clone(), e.clone())))
                .collect();
            (d.status.to_string(), ev)
        });
        for (inst, e) in events {
            let st = e.status.name();
            let key = (inst.clone(), e.name.clone());
            if st == "Pending" || reported.get(&key).map(String::as_str) == Some(st) {
                continue;
            }
            let (at, took) = match (e.start, e.end) {
                (Some(a), Some(b)) => (since(b), format!(" ({:.1} s)", b - a)),
                (Some(a), None) => (since(a), String::new()),
                _ => (t0.elapsed(), String::new()),
            };
            batch.push((at, format!("{inst}  {:<22}{st}{took}", e.name)));
            reported.insert(key, st.to_string());
        }
        let changes = f.plane.changes();
        for c in changes.iter().skip(n_changes).filter(|c| c.at >= t0) {
            let line = format!("{}  api: {} {}", c.instance, c.action, c.resource);
            batch.push((c.at - t0, line));
        }
        n_changes = changes.len();
        let trans = f.plane.transitions();
        for t in trans.iter().skip(n_trans).filter(|t| t.at >= t0) {
            let what = match t.seen {
                Seen::Registered => "registered, health checks start",
                Seen::Slot(Slot::Ready) => "ready: gets new requests",
                Seen::Slot(Slot::Drain) => "draining: no new requests",
                Seen::Slot(Slot::Maint) => "out of rotation",
                Seen::Gone => "traffic ended (a target group says draining until its delay)",
            };
            let line = format!("{}  haproxy {}: {what}", t.instance, t.backend);
            batch.push((t.at - t0, line));
        }
        n_trans = trans.len();
        batch.sort_by_key(|(at, _)| *at);
        for (at, line) in batch {
            live(format!("{:>6.1}s {line}", at.as_secs_f64()));
        }
        if matches!(status.as_str(), "Succeeded" | "Failed" | "Stopped") {
            return status;
        }
        assert!(t0.elapsed() < limit, "deployment {deployment} did not end");
        // Polling a display, not synchronising: a tenth of a second keeps
        // the lines live without loading the control plane.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The final table: per instance, out-of-service window, drain wait and
/// health wait.
pub fn table(r: &Report) -> String {
    let secs = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()));
    let mut out = format!(
        "{:<16} {:>15} {:>11} {:>12}\n",
        "instance", "out of service", "drain wait", "health wait"
    );
    for (id, w) in &r.hosts {
        out.push_str(&format!(
            "{id:<16} {:>15} {:>11} {:>12}\n",
            secs(w.out_of_service),
            secs(w.drain),
            secs(w.health)
        ));
    }
    out.push_str(&format!(
        "deployment {} in {:.1} s; every instance serving again at {}",
        r.status,
        r.total.as_secs_f64(),
        secs(r.all_serving)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64, seen: Seen) -> Transition {
        Transition {
            at: t0 + Duration::from_millis(ms),
            backend: "web".into(),
            instance: "i-1".into(),
            seen,
        }
    }

    #[test]
    fn window_runs_from_leaving_rotation_to_ready_again() {
        let t0 = Instant::now();
        let t = vec![
            at(t0, 0, Seen::Slot(Slot::Ready)),
            at(t0, 1000, Seen::Slot(Slot::Drain)),
            at(t0, 4000, Seen::Gone),
            at(t0, 6000, Seen::Registered),
            at(t0, 6000, Seen::Slot(Slot::Maint)),
            at(t0, 8500, Seen::Slot(Slot::Ready)),
        ];
        let w = window(&t, "i-1", t0 + Duration::from_millis(500));
        assert_eq!(w.out_of_service, Some(Duration::from_millis(7500)));
        assert_eq!(w.drain, Some(Duration::from_millis(3000)));
        assert_eq!(w.health, Some(Duration::from_millis(2500)));
        assert_eq!(window(&t, "i-2", t0), Window::default());
    }

    #[test]
    fn an_instance_never_back_has_no_end() {
        let t0 = Instant::now();
        let t = vec![at(t0, 10, Seen::Slot(Slot::Drain)), at(t0, 20, Seen::Gone)];
        let w = window(&t, "i-1", t0);
        assert_eq!(w.out_of_service, None);
        assert_eq!(w.drain, Some(Duration::from_millis(10)));
        assert_eq!(w.health, None);
    }
}
