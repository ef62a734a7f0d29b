//! The drain and restore rules over what AWS reported, as pure functions
//! (docs/loadbalancer.md 3.2 and 3.3): `drain.rs` and `restore.rs` observe
//! (the calls of `aws.rs`) and act; what to select, which ports, how far to
//! lower or raise a minimum is decided here, over plain values.

use appspec::load_balancer::{GateUrl, HealthGate, IfNotRegistered, LoadBalancer, Timeout};

use std::time::Duration;

use crate::aws::{Classic, Target, Tg};
use crate::gate::{self, Probe};
use crate::journal::{self, ClassicLb, Gate, GateTarget, Group, Journal, Phase, TargetGroup};

/// Where the instance stands in its Auto Scaling group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Nothing to drain, for this reason (launching, or leaving for good).
    Nothing(String),
    /// InService, and the section asks for Standby: the group drains it,
    /// and the load balancers attached to the group are left to it.
    Standby,
    /// InService, deregistered directly: the group's load balancers are
    /// selected as well as those the instance is registered with.
    InService,
    /// Standby without a journal of ours: an operator did it, so it is
    /// theirs to undo; the group and what is attached to it are left alone.
    NotOurs(String),
}

/// The instance `id` is `state` in group `name`; `standby`: the section's
/// `autoScaling.action` is standby.
pub fn membership(id: &str, name: &str, state: &str, standby: bool) -> Membership {
    if state.starts_with("Pending") || state.starts_with("Warmed") {
        return Membership::Nothing(format!(
            "instance {id} is {state} in Auto Scaling group {name}: it is not in service yet, nothing to drain"
        ));
    }
    if state.starts_with("Terminat") || state.starts_with("Detach") {
        return Membership::Nothing(format!(
            "instance {id} is {state} in Auto Scaling group {name}: nothing to drain, and it is never put back"
        ));
    }
    match (state, standby) {
        ("InService", true) => Membership::Standby,
        ("InService", false) => Membership::InService,
        _ => Membership::NotOurs(format!(
            "{state} was not entered by this agent; the group is left alone"
        )),
    }
}

/// A registration that takes traffic now (and so is drained and restored).
pub fn serving(state: &str) -> bool {
    matches!(state, "healthy" | "initial" | "unhealthy" | "unavailable")
}

/// How a list of the section selects: `explicit` when it names its
/// members; `declared` when `restoreTo: declared` applies to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The section names the load balancers or target groups.
    pub explicit: bool,
    /// What the list names is joined at restore, registered or not.
    pub declared: bool,
}

/// A classic load balancer the drain keeps in its plan, or `None`.
/// `attached`: attached to the instance's Auto Scaling group.
pub fn pick_classic(c: &Classic, id: &str, attached: bool, l: Listing) -> Option<ClassicPick> {
    let registered = c.instances.iter().any(|i| i == id);
    (registered || attached || l.explicit && l.declared).then_some(ClassicPick {
        registered,
        attached,
    })
}

/// Why a classic load balancer is in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassicPick {
    /// The instance is registered with it now.
    pub registered: bool,
    /// It is attached to the instance's Auto Scaling group.
    pub attached: bool,
}

/// The ports of one target group in the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    /// Registered and serving now: these are deregistered.
    pub registered: Vec<u16>,
    /// Registered again at restore.
    pub wanted: Vec<u16>,
}

/// The ports of target group `t` the drain takes out and the restore puts
/// back, or `None` when the group is not in the plan. `now`: this
/// instance's registrations; `only`: the ports the section names.
pub fn pick_ports(
    t: &Tg,
    now: &[Target],
    only: Option<&[u16]>,
    attached: bool,
    l: Listing,
) -> Option<Ports> {
    let registered: Vec<u16> = now
        .iter()
        .filter(|x| serving(&x.state))
        .map(|x| x.port)
        .filter(|p| only.is_none_or(|ps| ps.contains(p)))
        .collect();
    let mut wanted = registered.clone();
    if l.declared && l.explicit {
        let declared = only.map_or_else(|| t.port.into_iter().collect(), <[u16]>::to_vec);
        for p in declared {
            if !wanted.contains(&p) {
                wanted.push(p);
            }
        }
    }
    if attached && wanted.is_empty() {
        wanted.extend(t.port);
    }
    (!wanted.is_empty()).then_some(Ports { registered, wanted })
}

/// The longest drain among what the group drains in Standby, seconds.
pub fn group_drain_seconds(classic: &[ClassicLb], tgs: &[TargetGroup]) -> u32 {
    let c = classic
        .iter()
        .filter(|c| c.via_group)
        .map(|c| c.draining.unwrap_or(0));
    let t = tgs.iter().filter(|t| t.via_group).map(|t| t.delay);
    c.chain(t).max().unwrap_or(0)
}

/// Nothing selected: `Ok` with the reason to skip, or `Err` for
/// `ifNotRegistered: fail`.
pub fn nothing_selected(lb: &LoadBalancer, id: &str) -> Result<String, String> {
    let what = format!(
        "instance {id} is in service in no Auto Scaling group, classic load balancer or target group that loadBalancer selects"
    );
    match lb.if_not_registered {
        IfNotRegistered::Skip => Ok(format!("{what}; nothing to drain (ifNotRegistered: skip)")),
        IfNotRegistered::Fail => Err(format!("{what} (ifNotRegistered: fail)")),
    }
}

/// Whose drain a plan is.
#[derive(Clone, Copy, Debug)]
pub struct Ids<'a> {
    /// The deployment that drains.
    pub deployment: &'a str,
    /// Its deployment group (one journal per group).
    pub group: &'a str,
    /// This instance.
    pub instance: &'a str,
}

/// The drain's plan, as the journal records it before anything changes:
/// what was found, and the settings the restore needs after a restart.
pub fn plan(
    ids: Ids<'_>,
    lb: &LoadBalancer,
    group: Option<Group>,
    classic: Vec<ClassicLb>,
    target_groups: Vec<TargetGroup>,
    now: u64,
) -> Journal {
    Journal {
        schema: journal::SCHEMA,
        deployment_id: ids.deployment.to_string(),
        group_id: ids.group.to_string(),
        instance_id: ids.instance.to_string(),
        phase: Phase::Planned,
        intent: None,
        group,
        classic,
        target_groups,
        on_failure: lb.on_failure.into(),
        gate: gate(&lb.health_gate),
        health_timeout: match lb.health_timeout {
            Timeout::Auto => None,
            Timeout::Seconds(s) => Some(s),
        },
        drain_started: now,
        abandon_at: now + u64::from(lb.abandon_after),
        abandon_after: lb.abandon_after,
    }
}

/// The health gate's settings as the journal keeps them for the restore.
pub fn gate(g: &HealthGate) -> Gate {
    Gate {
        url: match &g.url {
            GateUrl::Auto => GateTarget::Auto,
            GateUrl::None => GateTarget::None,
            GateUrl::Url(u) => GateTarget::Url(u.clone()),
        },
        expect: g
            .expect_status
            .as_ref()
            .map(|v| v.iter().map(|r| (r.low, r.high)).collect())
            .unwrap_or_default(),
        successes: g.successes,
        interval: g.interval,
        request_timeout: g.request_timeout,
        timeout: g.timeout,
    }
}

/// The minimum EnterStandby needs: `Some(lower)` when standing by would
/// take desired below `min`.
pub fn lowered_min(min: i32, desired: i32) -> Option<i32> {
    (desired - 1 < min).then(|| (desired - 1).max(0))
}

/// The processes to suspend: those asked for that are not suspended
/// already. `Err` when Launch is suspended: ExitStandby could not complete.
pub fn to_suspend(
    group: &str,
    before: &[String],
    wanted: &[String],
) -> Result<Vec<String>, String> {
    if before.iter().any(|p| p == "Launch") {
        return Err(format!(
            "Auto Scaling group {group}: the Launch process is suspended, so ExitStandby could not complete; drain not attempted"
        ));
    }
    Ok(wanted
        .iter()
        .filter(|p| !before.contains(p))
        .cloned()
        .collect())
}

/// The minimum to set when giving back `delta` now that the group has
/// `min` and `desired`: never above desired (that would launch an
/// instance). Returns the target and what could not be given back.
pub fn give_back(delta: i32, min: i32, desired: i32) -> (i32, i32) {
    let target = (min + delta).min(desired).max(min);
    (target, delta - (target - min))
}

/// How a restore gives an Auto Scaling group's minimum back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinPlan {
    /// The MinSize to set, when it goes up.
    pub set: Option<i32>,
    /// The group's record of the operator's minimum has served: remove it.
    pub clear_record: bool,
    /// How far below the operator's minimum it stays for now (desired is
    /// lower while other hosts are in Standby; the last of them gives it
    /// back).
    pub short: i32,
}

/// The minimum after a host left Standby: back to the operator's minimum
/// (`own`, from this host's journal, else `recorded`, the group's record),
/// never above desired (that would launch an instance), never down. An
/// absolute target, not a delta: hosts that restore in any order, or twice
/// after a crash, end at the same minimum. A journal from before the
/// record (`own` and `recorded` both unknown) gives back its `delta`.
pub fn restore_min(
    own: Option<i32>,
    recorded: Option<i32>,
    delta: i32,
    min: i32,
    desired: i32,
) -> MinPlan {
    let Some(original) = own.or(recorded) else {
        let (target, short) = give_back(delta, min, desired);
        return MinPlan {
            set: (target > min).then_some(target),
            clear_record: false,
            short,
        };
    };
    let target = original.min(desired).max(min);
    MinPlan {
        set: (target > min).then_some(target),
        clear_record: recorded.is_some_and(|r| target >= r),
        short: (original - target).max(0),
    }
}

/// What a put-back registers again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registrations {
    /// Classic load balancers, by index in the journal.
    pub classic: Vec<usize>,
    /// Target groups by index in the journal, with the ports.
    pub target_groups: Vec<(usize, Vec<u16>)>,
}

/// What the journal says to register again: what was deregistered, and on
/// a restore (`declared`, not the undo of a failed drain) what
/// `restoreTo: declared` joins, except what the group brings back itself.
pub fn registrations(j: &Journal, declared: bool) -> Registrations {
    let classic = j
        .classic
        .iter()
        .enumerate()
        .filter(|(_, c)| c.deregistered || declared && !c.registered && !c.via_group)
        .map(|(i, _)| i)
        .collect();
    let target_groups = j
        .target_groups
        .iter()
        .enumerate()
        .filter(|(_, t)| t.deregistered || declared && !t.via_group && t.registered.is_empty())
        .filter(|(_, t)| !t.ports.is_empty())
        .map(|(i, t)| (i, t.ports.clone()))
        .collect();
    Registrations {
        classic,
        target_groups,
    }
}

/// What the drain deregisters directly: what is registered and not left
/// to the group's Standby.
pub fn deregistrations(j: &Journal) -> Registrations {
    Registrations {
        classic: j
            .classic
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.via_group && c.registered)
            .map(|(i, _)| i)
            .collect(),
        target_groups: j
            .target_groups
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.via_group && !t.registered.is_empty())
            .map(|(i, t)| (i, t.registered.clone()))
            .collect(),
    }
}

/// What the health gate probes for this journal, `None` for no gate.
/// `auto`: the first target group's health check on its first port, else a
/// classic load balancer's, on this host's `address`.
pub fn probe(j: &Journal, address: &str) -> Option<Probe> {
    match &j.gate.url {
        GateTarget::None => None,
        GateTarget::Url(u) => gate::parse_url(u),
        GateTarget::Auto => {
            if let Some(t) = j.target_groups.iter().find(|t| !t.ports.is_empty()) {
                return Some(gate::from_health_check(&t.health, t.ports[0], address));
            }
            j.classic.iter().find_map(|c| {
                c.instance_port
                    .or(c.health.port)
                    .map(|p| gate::from_health_check(&c.health, p, address))
            })
        }
    }
}

/// The gate's settings: the section's, else the load balancers' health
/// check (its matcher; its healthy threshold, at most 3), else 200-399
/// twice.
pub fn gate_settings(j: &Journal) -> gate::Settings {
    let hc = j
        .target_groups
        .first()
        .map(|t| &t.health)
        .or(j.classic.first().map(|c| &c.health));
    let expect = if !j.gate.expect.is_empty() {
        j.gate.expect.clone()
    } else if let Some(h) = j.target_groups.first().map(|t| &t.health) {
        gate::parse_matcher(&h.matcher)
    } else {
        vec![(200, 399)]
    };
    let successes = j
        .gate
        .successes
        .or(hc.map(|h| h.healthy_threshold.clamp(1, 3)))
        .unwrap_or(2);
    gate::Settings {
        expect,
        successes,
        interval: Duration::from_secs(u64::from(j.gate.interval.max(1))),
        request_timeout: Duration::from_secs(u64::from(j.gate.request_timeout.max(1))),
        timeout: Duration::from_secs(u64::from(j.gate.timeout)),
    }
}

#[cfg(test)]
#[path = "select_tests.rs"]
mod tests;
