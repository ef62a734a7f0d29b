//! The load balancer world: target groups and Classic LBs (both are HAProxy
//! backends), their registrations with health and drain state, and Auto
//! Scaling groups whose Standby moves go through those registrations.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::haproxy::{HaProxy, Slot, SLOTS};

#[derive(Clone, Debug)]
pub struct HealthCheck {
    /// `HTTP` or `TCP`.
    pub protocol: String,
    /// `None`: the registration's port.
    pub port: Option<u16>,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy: u32,
    pub unhealthy: u32,
    pub matcher: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Initial,
    Healthy,
    Unhealthy,
    Draining,
}

#[derive(Clone, Debug)]
pub struct Reg {
    pub id: String,
    pub ip: String,
    pub port: u16,
    pub slot: usize,
    pub state: State,
    pub reason: String,
    pub ok: u32,
    pub bad: u32,
    pub next_probe: Instant,
    pub probing: bool,
    /// End of the deregistration delay / draining timeout.
    pub until: Option<Instant>,
    /// The drain's traffic is over: nothing in flight and no connection
    /// open, or the delay ended. A target group still reports `draining`
    /// until the delay ends.
    pub drained: bool,
    pub applied: Option<Slot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    TargetGroup,
    Classic,
}

#[derive(Clone, Debug)]
pub struct Backend {
    pub kind: Kind,
    pub name: String,
    pub arn: String,
    /// Target group port / Classic LB instance port.
    pub port: u16,
    pub frontend: u16,
    pub hc: HealthCheck,
    /// Deregistration delay / draining timeout, seconds.
    pub delay: u32,
    /// Classic: connection draining enabled.
    pub draining_enabled: bool,
    /// A Network LB's target group (TCP): layer 4.
    pub layer4: bool,
    pub has_load_balancer: bool,
    pub regs: Vec<Reg>,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: String,
    pub state: String,
    pub until: Option<Instant>,
}

#[derive(Clone, Debug)]
pub struct Group {
    pub name: String,
    pub min: i32,
    pub max: i32,
    pub desired: i32,
    pub members: Vec<Member>,
    pub load_balancers: Vec<String>,
    pub target_groups: Vec<String>,
    pub suspended: BTreeSet<String>,
    pub tags: BTreeMap<String, String>,
}

/// A call that changed something, for tests and the demo.
#[derive(Clone, Debug)]
pub struct Change {
    pub at: Instant,
    pub action: String,
    pub instance: String,
    pub resource: String,
}

/// What the data plane did with one registration, for the demo and the
/// benchmark's out-of-service windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A registration began (health checks start).
    Registered,
    /// HAProxy state applied.
    Slot(Slot),
    /// The drain ended and the registration is gone.
    Gone,
}

#[derive(Clone, Debug)]
pub struct Transition {
    pub at: Instant,
    pub backend: String,
    pub instance: String,
    pub seen: Seen,
}

pub struct World {
    pub instances: BTreeMap<String, String>,
    pub backends: Vec<Backend>,
    pub groups: Vec<Group>,
    pub changes: Vec<Change>,
    pub transitions: Vec<Transition>,
    /// How long ExitStandby keeps an instance `Pending`.
    pub pending_for: Duration,
}

impl World {
    pub fn backend(&self, name_or_arn: &str) -> Option<usize> {
        self.backends
            .iter()
            .position(|b| b.name == name_or_arn || b.arn == name_or_arn)
    }

    pub fn record(&mut self, action: &str, instance: &str, resource: &str) {
        self.changes.push(Change {
            at: Instant::now(),
            action: action.into(),
            instance: instance.into(),
            resource: resource.into(),
        });
    }

    fn saw(&mut self, b: usize, id: &str, seen: Seen) {
        self.transitions.push(Transition {
            at: Instant::now(),
            backend: self.backends[b].name.clone(),
            instance: id.into(),
            seen,
        });
    }

    /// Register (id, port) in backend `b`: a fresh registration starts
    /// `initial`; one already serving is left as it is.
    pub fn register(&mut self, b: usize, id: &str, port: u16) -> Result<(), String> {
        let ip = self.instances.get(id).cloned().ok_or_else(|| {
            format!(
                "The following targets are not in a running state and cannot be registered: '{id}'"
            )
        })?;
        let be = &mut self.backends[b];
        if let Some(r) = be.regs.iter_mut().find(|r| r.id == id && r.port == port) {
            if r.state != State::Draining {
                return Ok(());
            }
            // Re-registering a draining target starts it afresh.
            r.state = State::Initial;
            r.reason = "Elb.RegistrationInProgress".into();
            r.ok = 0;
            r.bad = 0;
            r.until = None;
            r.drained = false;
            r.next_probe = Instant::now() + Duration::from_millis(200);
            self.saw(b, id, Seen::Registered);
            return Ok(());
        }
        let used: BTreeSet<usize> = be.regs.iter().map(|r| r.slot).collect();
        let slot = (0..SLOTS)
            .find(|s| !used.contains(s))
            .ok_or("TooManyRegistrationsForTargetId")?;
        be.regs.push(Reg {
            id: id.into(),
            ip,
            port,
            slot,
            state: State::Initial,
            reason: "Elb.RegistrationInProgress".into(),
            ok: 0,
            bad: 0,
            next_probe: Instant::now() + Duration::from_millis(200),
            probing: false,
            until: None,
            drained: false,
            applied: None,
        });
        self.saw(b, id, Seen::Registered);
        Ok(())
    }

    /// Deregister (id, port): unknown pairs are a no-op, as in AWS.
    pub fn deregister(&mut self, b: usize, id: &str, port: u16) {
        let be = &mut self.backends[b];
        let delay = if be.kind == Kind::Classic && !be.draining_enabled {
            0
        } else {
            be.delay
        };
        if let Some(r) = be
            .regs
            .iter_mut()
            .find(|r| r.id == id && r.port == port && r.state != State::Draining)
        {
            r.state = State::Draining;
            r.reason = "Target.DeregistrationInProgress".into();
            r.until = Some(Instant::now() + Duration::from_secs(u64::from(delay)));
        }
    }

    /// Deregister every (id, port) registration of `id` in backend `b`.
    pub fn deregister_instance(&mut self, b: usize, id: &str) {
        let ports: Vec<u16> = self.backends[b]
            .regs
            .iter()
            .filter(|r| r.id == id)
            .map(|r| r.port)
            .collect();
        for p in ports {
            self.deregister(b, id, p);
        }
    }

    /// The HAProxy state a registration should have. Target groups fail
    /// open: when every registered target is unhealthy, all get traffic.
    fn wanted(be: &Backend, r: &Reg) -> Slot {
        match r.state {
            State::Healthy => Slot::Ready,
            State::Draining if r.drained => Slot::Maint,
            State::Draining => Slot::Drain,
            State::Unhealthy
                if be.kind == Kind::TargetGroup
                    && be
                        .regs
                        .iter()
                        .filter(|x| x.state != State::Draining)
                        .all(|x| x.state == State::Unhealthy) =>
            {
                Slot::Ready
            }
            _ => Slot::Maint,
        }
    }

    /// Finish drains, move Standby/Pending instances on, push state to HAProxy.
    pub fn advance(&mut self, hap: &HaProxy) {
        let now = Instant::now();
        let busy = self.busy_slots(hap);
        let mut seen = Vec::new();
        for be in &mut self.backends {
            let mut gone = Vec::new();
            for (i, r) in be.regs.iter_mut().enumerate() {
                if r.state != State::Draining {
                    continue;
                }
                let expired = r.until.is_some_and(|u| now >= u);
                // Traffic ends as soon as nothing is in flight and no
                // connection is open, before the delay ends (docs/testbed.md,
                // the drain rules).
                // A Network LB's traffic is the clients' own connections:
                // they flow until the delay ends (no early end is documented).
                let idle = !be.layer4 && !busy.contains(&(be.name.clone(), r.slot));
                if !r.drained && (expired || idle) {
                    r.drained = true;
                    hap.cut(&be.name, r.slot);
                    hap.set(&be.name, r.slot, Slot::Maint);
                    r.applied = Some(Slot::Maint);
                    seen.push((be.name.clone(), r.id.clone(), Seen::Gone));
                }
                // A target group reports `draining` until the delay ends
                // even when its traffic ended earlier; a Classic LB reports
                // the instance deregistered once its drain is over.
                if r.drained && (expired || be.kind == Kind::Classic) {
                    gone.push(i);
                }
            }
            for i in gone.into_iter().rev() {
                be.regs.remove(i);
            }
        }
        // Auto Scaling transitions.
        let mut to_register = Vec::new();
        for g in &mut self.groups {
            for m in &mut g.members {
                if m.state == "EnteringStandby" {
                    let draining = self.backends.iter().any(|b| {
                        (g.target_groups.contains(&b.arn) || g.load_balancers.contains(&b.name))
                            && b.regs.iter().any(|r| r.id == m.id)
                    });
                    if !draining {
                        m.state = "Standby".into();
                    }
                } else if m.state == "Pending" && m.until.is_some_and(|u| now >= u) {
                    m.state = "InService".into();
                    m.until = None;
                    to_register.push((
                        m.id.clone(),
                        g.target_groups.clone(),
                        g.load_balancers.clone(),
                    ));
                }
            }
        }
        for (id, tgs, lbs) in to_register {
            for name in tgs.iter().chain(lbs.iter()) {
                if let Some(b) = self.backend(name) {
                    let port = self.backends[b].port;
                    let _ = self.register(b, &id, port);
                }
            }
        }
        for be in &mut self.backends {
            for i in 0..be.regs.len() {
                let want = Self::wanted(be, &be.regs[i]);
                let r = &be.regs[i];
                if r.applied != Some(want) {
                    if r.applied.is_none() {
                        hap.point(&be.name, r.slot, &r.ip, r.port);
                    }
                    hap.set(&be.name, r.slot, want);
                    seen.push((be.name.clone(), r.id.clone(), Seen::Slot(want)));
                    be.regs[i].applied = Some(want);
                }
            }
        }
        self.transitions.extend(
            seen.into_iter()
                .map(|(backend, instance, seen)| Transition {
                    at: now,
                    backend,
                    instance,
                    seen,
                }),
        );
    }

    /// (backend, slot) pairs with a session in flight or a connection open,
    /// asked of HAProxy only while something drains.
    fn busy_slots(&self, hap: &HaProxy) -> BTreeSet<(String, usize)> {
        let draining = self.backends.iter().any(|b| {
            b.regs
                .iter()
                .any(|r| r.state == State::Draining && !r.drained)
        });
        if !draining {
            return BTreeSet::new();
        }
        hap.sessions()
            .into_iter()
            .chain(hap.server_connections())
            .filter(|(_, _, n)| *n > 0)
            .map(|(b, s, _)| (b, s))
            .collect()
    }

    /// Apply one probe result to (backend, id, port).
    pub fn probed(&mut self, b: usize, id: &str, port: u16, result: Result<(), String>) {
        let be = &mut self.backends[b];
        let (healthy, unhealthy) = (be.hc.healthy, be.hc.unhealthy);
        let Some(r) = be.regs.iter_mut().find(|r| r.id == id && r.port == port) else {
            return;
        };
        r.probing = false;
        if r.state == State::Draining {
            return;
        }
        match result {
            Ok(()) => {
                r.ok += 1;
                r.bad = 0;
                if r.ok >= healthy {
                    r.state = State::Healthy;
                    r.reason.clear();
                } else if r.state == State::Initial {
                    r.reason = "Elb.InitialHealthChecking".into();
                }
            }
            Err(why) => {
                r.bad += 1;
                r.ok = 0;
                if matches!(r.state, State::Healthy | State::Initial) && r.bad >= unhealthy {
                    r.state = State::Unhealthy;
                }
                if r.state != State::Healthy {
                    r.reason = why;
                }
            }
        }
    }
}
