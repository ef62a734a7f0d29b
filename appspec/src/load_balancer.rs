//! The `loadBalancer` section: native drain before the application stops and
//! restore after it validates (field reference: README, "The loadBalancer section"). Parsed and
//! validated here; the behaviour lives in `hooks-builtin`.

use crate::diag::Sink;
use crate::fields::{check_keys, choice, join, list, seconds, text};
use crate::yaml::{Node, Pos, Value};

/// Every command the service sends must finish within an hour; a drain or a
/// restore that could not is refused at validation.
pub const COMMAND_BUDGET_SECONDS: u32 = 3600;

/// `mode`: whether the section acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbMode {
    /// Drain before the stop scripts, restore after ValidateService.
    Drain,
    /// Parsed and checked, not acted on.
    Off,
}

/// `autoScaling.action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsgAction {
    /// EnterStandby through the instance's Auto Scaling group.
    Standby,
    /// Deregister from the load balancers directly.
    Deregister,
    /// Leave the Auto Scaling group out of it.
    Ignore,
}

/// `autoScaling.minSize`: when Standby would go below the minimum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinSizePolicy {
    /// Lower it for the deployment, and give it back.
    Lower,
    /// Refuse to drain.
    Fail,
}

/// `autoScaling.breadcrumbs`: tag the group while its minimum is lowered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Breadcrumbs {
    /// Tag, and go on without the tag when tagging is not permitted.
    Auto,
    /// Tag, or fail.
    On,
    /// Never tag.
    Off,
}

/// `autoScaling`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoScaling {
    /// `action`.
    pub action: AsgAction,
    /// `minSize`.
    pub min_size: MinSizePolicy,
    /// `suspendProcesses`: suspended while drained, resumed at restore.
    pub suspend_processes: Vec<String>,
    /// `breadcrumbs`.
    pub breadcrumbs: Breadcrumbs,
}

impl Default for AutoScaling {
    fn default() -> Self {
        AutoScaling {
            action: AsgAction::Standby,
            min_size: MinSizePolicy::Lower,
            suspend_processes: Vec::new(),
            breadcrumbs: Breadcrumbs::Auto,
        }
    }
}

/// `auto` discovery or an explicit (possibly empty) list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection<T> {
    /// Everything this instance is registered with.
    Auto,
    /// Exactly these.
    List(Vec<T>),
}

impl<T> Selection<T> {
    /// Does the section name the members?
    pub fn is_explicit(&self) -> bool {
        matches!(self, Selection::List(_))
    }
}

/// How a target group is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetGroupId {
    /// By name.
    Name(String),
    /// By ARN.
    Arn(String),
}

/// One target group of `targetGroups`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetGroupRef {
    /// Which.
    pub id: TargetGroupId,
    /// `None`: every port the instance is registered on.
    pub ports: Option<Vec<u16>>,
    /// Where the section names it.
    pub pos: Pos,
}

/// `restoreTo`: what the restore registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreTo {
    /// What was registered when the drain found it.
    Previous,
    /// What the section lists, registered before or not.
    Declared,
}

/// `ifNotRegistered`: the instance is in nothing the section selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfNotRegistered {
    /// Go on without draining.
    Skip,
    /// Fail the deployment's first command.
    Fail,
}

/// A timeout that may follow AWS's own settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// The load balancers' own (deregistration delay, health check).
    Auto,
    /// This many seconds.
    Seconds(u32),
}

/// `drainUntil`: when a drain is over and the stop scripts may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainUntil {
    /// The load balancer reports the instance deregistered (a target group:
    /// `unused`, which it reports only when its delay has passed).
    Deregistered,
    /// The host's own connections on the registered ports say the load
    /// balancer has nothing in flight (layer 7) or nothing open (layer 4)
    /// for `idleFor` seconds; the load balancer's report ends it too.
    Idle,
}

/// `healthGate.url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateUrl {
    /// From the load balancers' health check, on this instance's address.
    Auto,
    /// No gate.
    None,
    /// This URL (`http`, `https` or `tcp`).
    Url(String),
}

/// An inclusive range of HTTP status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusRange {
    /// The lowest code.
    pub low: u16,
    /// The highest code.
    pub high: u16,
}

/// `healthGate`: the probe before the instance goes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthGate {
    /// `url`.
    pub url: GateUrl,
    /// `None`: from the target group's matcher, else 200-399.
    pub expect_status: Option<Vec<StatusRange>>,
    /// `None`: min(HealthyThreshold, 3), else 2.
    pub successes: Option<u32>,
    /// `interval`, seconds between probes.
    pub interval: u32,
    /// `requestTimeout`, seconds per probe.
    pub request_timeout: u32,
    /// `timeout`, seconds in all.
    pub timeout: u32,
}

impl Default for HealthGate {
    fn default() -> Self {
        HealthGate {
            url: GateUrl::Auto,
            expect_status: None,
            successes: None,
            interval: 2,
            request_timeout: 2,
            timeout: 180,
        }
    }
}

/// `onFailure`: a failed deployment once the application may be down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// Put back; a failed health gate is still reported.
    Restore,
    /// Put back only if the health gate passes.
    RestoreIfHealthy,
    /// Stay out until `abandonAfter`, for investigation.
    KeepDrained,
}

/// `withServiceTrafficControl`: the deployment group has CodeDeploy's own load balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficControl {
    /// Leave traffic to CodeDeploy.
    Skip,
    /// Refuse the deployment.
    Fail,
    /// Drain as well, at BeforeBlockTraffic.
    Both,
}

/// The `loadBalancer` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadBalancer {
    /// Where the section is.
    pub pos: Pos,
    /// `mode`.
    pub mode: LbMode,
    /// `autoScaling`.
    pub auto_scaling: AutoScaling,
    /// `classicLoadBalancers`.
    pub classic_load_balancers: Selection<String>,
    /// `targetGroups`.
    pub target_groups: Selection<TargetGroupRef>,
    /// `None`: `previous` for auto discovery, `declared` for explicit lists.
    pub restore_to: Option<RestoreTo>,
    /// `ifNotRegistered`.
    pub if_not_registered: IfNotRegistered,
    /// `drainTimeout`.
    pub drain_timeout: Timeout,
    /// `drainUntil`.
    pub drain_until: DrainUntil,
    /// `idleFor`, seconds of quiet that make a drain idle.
    pub idle_for: u32,
    /// `healthTimeout`.
    pub health_timeout: Timeout,
    /// `healthGate`.
    pub health_gate: HealthGate,
    /// `onFailure`.
    pub on_failure: OnFailure,
    /// `abandonAfter`, seconds without a command before a drained deployment is put back.
    pub abandon_after: u32,
    /// `withServiceTrafficControl`.
    pub with_service_traffic_control: TrafficControl,
}

impl LoadBalancer {
    /// `restoreTo`, or its default: `declared` for an explicit list, else `previous`.
    pub fn restore_to_for(&self, explicit_list: bool) -> RestoreTo {
        self.restore_to.unwrap_or(if explicit_list {
            RestoreTo::Declared
        } else {
            RestoreTo::Previous
        })
    }

    /// Does the section act (`mode: drain`)?
    pub fn is_active(&self) -> bool {
        self.mode == LbMode::Drain
    }
}

/// Auto Scaling process names (API `ProcessType`).
const PROCESSES: &[&str] = &[
    "Launch",
    "Terminate",
    "AddToLoadBalancer",
    "AlarmNotification",
    "AZRebalance",
    "HealthCheck",
    "InstanceRefresh",
    "ReplaceUnhealthy",
    "ScheduledActions",
];

const KEYS: &[&str] = &[
    "mode",
    "autoScaling",
    "classicLoadBalancers",
    "targetGroups",
    "restoreTo",
    "ifNotRegistered",
    "drainTimeout",
    "drainUntil",
    "idleFor",
    "healthTimeout",
    "healthGate",
    "onFailure",
    "abandonAfter",
    "withServiceTrafficControl",
];

pub(crate) fn parse(node: &Node, sink: &mut Sink) -> Option<LoadBalancer> {
    const P: &str = "loadBalancer";
    if node.as_map().is_none() {
        sink.error(
            node.pos,
            P,
            format!("expected a mapping, found {}", node.describe()),
        );
        return None;
    }
    check_keys(node, P, KEYS, sink, true);
    let f = |k: &str| join(P, k);
    let mut lb = LoadBalancer {
        pos: node.pos,
        mode: LbMode::Drain,
        auto_scaling: AutoScaling::default(),
        classic_load_balancers: Selection::Auto,
        target_groups: Selection::Auto,
        restore_to: None,
        if_not_registered: IfNotRegistered::Skip,
        drain_timeout: Timeout::Auto,
        drain_until: DrainUntil::Deregistered,
        idle_for: 5,
        health_timeout: Timeout::Auto,
        health_gate: HealthGate::default(),
        on_failure: OnFailure::Restore,
        abandon_after: 1800,
        with_service_traffic_control: TrafficControl::Skip,
    };
    if let Some(n) = node.get("mode") {
        lb.mode = choice(
            n,
            &f("mode"),
            &[("drain", LbMode::Drain), ("off", LbMode::Off)],
            sink,
        )
        .unwrap_or(lb.mode);
    }
    if let Some(n) = node.get("autoScaling") {
        lb.auto_scaling = auto_scaling(n, &f("autoScaling"), sink);
    }
    if let Some(n) = node.get("classicLoadBalancers") {
        lb.classic_load_balancers = classic(n, &f("classicLoadBalancers"), sink);
    }
    if let Some(n) = node.get("targetGroups") {
        lb.target_groups = target_groups(n, &f("targetGroups"), sink);
    }
    if let Some(n) = node.get("restoreTo") {
        lb.restore_to = choice(
            n,
            &f("restoreTo"),
            &[
                ("previous", RestoreTo::Previous),
                ("declared", RestoreTo::Declared),
            ],
            sink,
        );
    }
    if let Some(n) = node.get("ifNotRegistered") {
        lb.if_not_registered = choice(
            n,
            &f("ifNotRegistered"),
            &[
                ("skip", IfNotRegistered::Skip),
                ("fail", IfNotRegistered::Fail),
            ],
            sink,
        )
        .unwrap_or(lb.if_not_registered);
    }
    if let Some(n) = node.get("drainTimeout") {
        lb.drain_timeout = timeout(n, &f("drainTimeout"), 0, sink);
    }
    drain_until(node, &mut lb, sink);
    if let Some(n) = node.get("healthTimeout") {
        lb.health_timeout = timeout(n, &f("healthTimeout"), 1, sink);
    }
    if let Some(n) = node.get("healthGate") {
        lb.health_gate = health_gate(n, &f("healthGate"), sink);
    }
    if let Some(n) = node.get("onFailure") {
        lb.on_failure = choice(
            n,
            &f("onFailure"),
            &[
                ("restore", OnFailure::Restore),
                ("restoreIfHealthy", OnFailure::RestoreIfHealthy),
                ("keepDrained", OnFailure::KeepDrained),
            ],
            sink,
        )
        .unwrap_or(lb.on_failure);
    }
    if let Some(n) = node.get("abandonAfter") {
        lb.abandon_after =
            seconds(n, &f("abandonAfter"), 60, 7 * 24 * 3600, sink).unwrap_or(lb.abandon_after);
    }
    if let Some(n) = node.get("withServiceTrafficControl") {
        lb.with_service_traffic_control = choice(
            n,
            &f("withServiceTrafficControl"),
            &[
                ("skip", TrafficControl::Skip),
                ("fail", TrafficControl::Fail),
                ("both", TrafficControl::Both),
            ],
            sink,
        )
        .unwrap_or(lb.with_service_traffic_control);
    }
    Some(lb)
}

fn drain_until(node: &Node, lb: &mut LoadBalancer, sink: &mut Sink) {
    const P: &str = "loadBalancer";
    if let Some(n) = node.get("drainUntil") {
        lb.drain_until = choice(
            n,
            &join(P, "drainUntil"),
            &[
                ("deregistered", DrainUntil::Deregistered),
                ("idle", DrainUntil::Idle),
            ],
            sink,
        )
        .unwrap_or(lb.drain_until);
    }
    if let Some(n) = node.get("idleFor") {
        let field = join(P, "idleFor");
        lb.idle_for = seconds(n, &field, 1, 300, sink).unwrap_or(lb.idle_for);
        if lb.drain_until != DrainUntil::Idle {
            sink.warn(n.pos, field, "has no effect unless drainUntil is idle");
        }
    }
}

fn is_word(n: &Node, w: &str) -> bool {
    matches!(n.as_scalar(), Some(s) if s.value == Value::Str && s.text == w)
}

fn timeout(n: &Node, field: &str, min: u32, sink: &mut Sink) -> Timeout {
    if is_word(n, "auto") {
        return Timeout::Auto;
    }
    seconds(n, field, min, COMMAND_BUDGET_SECONDS, sink)
        .map(Timeout::Seconds)
        .unwrap_or(Timeout::Auto)
}

fn auto_scaling(n: &Node, path: &str, sink: &mut Sink) -> AutoScaling {
    let mut a = AutoScaling::default();
    if n.as_map().is_none() {
        sink.error(
            n.pos,
            path,
            format!("expected a mapping, found {}", n.describe()),
        );
        return a;
    }
    check_keys(
        n,
        path,
        &["action", "minSize", "suspendProcesses", "breadcrumbs"],
        sink,
        true,
    );
    if let Some(v) = n.get("action") {
        a.action = choice(
            v,
            &join(path, "action"),
            &[
                ("standby", AsgAction::Standby),
                ("deregister", AsgAction::Deregister),
                ("ignore", AsgAction::Ignore),
            ],
            sink,
        )
        .unwrap_or(a.action);
    }
    if let Some(v) = n.get("minSize") {
        a.min_size = choice(
            v,
            &join(path, "minSize"),
            &[
                ("lower", MinSizePolicy::Lower),
                ("fail", MinSizePolicy::Fail),
            ],
            sink,
        )
        .unwrap_or(a.min_size);
    }
    if let Some(v) = n.get("suspendProcesses") {
        let field = join(path, "suspendProcesses");
        for (i, item) in list(v, &field, sink).unwrap_or(&[]).iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(name) = text(item, &f, sink) else {
                continue;
            };
            if name == "Launch" || name == "Terminate" {
                sink.error(
                    item.pos,
                    f,
                    format!("{name} cannot be suspended: the instance could never leave Standby or be replaced"),
                );
            } else if !PROCESSES.contains(&name.as_str()) {
                sink.error(
                    item.pos,
                    f,
                    format!(
                        "unknown Auto Scaling process {name:?}; valid: {}",
                        PROCESSES[2..].join(", ")
                    ),
                );
            } else if a.suspend_processes.contains(&name) {
                sink.warn(item.pos, f, format!("{name} is listed twice"));
            } else {
                a.suspend_processes.push(name);
            }
        }
    }
    if let Some(v) = n.get("breadcrumbs") {
        a.breadcrumbs = match v.as_scalar().map(|s| &s.value) {
            Some(Value::Bool(true)) => Breadcrumbs::On,
            Some(Value::Bool(false)) => Breadcrumbs::Off,
            _ if is_word(v, "auto") => Breadcrumbs::Auto,
            _ => {
                sink.error(
                    v.pos,
                    join(path, "breadcrumbs"),
                    "expected auto, true or false",
                );
                Breadcrumbs::Auto
            }
        };
    }
    a
}

/// `auto` (`None`), or the items of a list; anything else is reported and
/// treated as `auto`.
fn auto_or_items<'n>(n: &'n Node, path: &str, what: &str, sink: &mut Sink) -> Option<&'n [Node]> {
    if is_word(n, "auto") {
        return None;
    }
    let items = n.as_seq();
    if items.is_none() {
        sink.error(
            n.pos,
            path,
            format!("expected auto or a list of {what}, found {}", n.describe()),
        );
    }
    items
}

/// Classic load balancer and target group names: 1-32 letters, digits, hyphens.
fn is_lb_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn classic(n: &Node, path: &str, sink: &mut Sink) -> Selection<String> {
    let Some(items) = auto_or_items(n, path, "load balancer names", sink) else {
        return Selection::Auto;
    };
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let f = format!("{path}[{i}]");
        let Some(name) = text(item, &f, sink) else {
            continue;
        };
        if !is_lb_name(&name) {
            sink.error(
                item.pos,
                f,
                format!(
                    "{name:?} is not a Classic Load Balancer name (1-32 letters, digits, hyphens)"
                ),
            );
        } else {
            names.push(name);
        }
    }
    Selection::List(names)
}

fn target_groups(n: &Node, path: &str, sink: &mut Sink) -> Selection<TargetGroupRef> {
    let Some(items) = auto_or_items(n, path, "target groups", sink) else {
        return Selection::Auto;
    };
    let mut refs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        if item.as_map().is_none() {
            sink.error(
                item.pos,
                &p,
                "expected a mapping with name or arn (and optional ports)",
            );
            continue;
        }
        check_keys(item, &p, &["name", "arn", "ports"], sink, true);
        let name = item
            .get("name")
            .and_then(|v| text(v, &join(&p, "name"), sink));
        let arn = item
            .get("arn")
            .and_then(|v| text(v, &join(&p, "arn"), sink));
        let id = match (name, arn) {
            (Some(_), Some(_)) => {
                sink.error(item.pos, &p, "give either name or arn, not both");
                continue;
            }
            (None, None) => {
                sink.error(item.pos, &p, "a target group needs a name or an arn");
                continue;
            }
            (Some(name), None) => {
                if !is_lb_name(&name) {
                    sink.error(
                        item.pos,
                        join(&p, "name"),
                        format!(
                            "{name:?} is not a target group name (1-32 letters, digits, hyphens)"
                        ),
                    );
                    continue;
                }
                TargetGroupId::Name(name)
            }
            (None, Some(arn)) => {
                if !is_target_group_arn(&arn) {
                    sink.error(
                        item.get("arn").map(|v| v.pos).unwrap_or(item.pos),
                        join(&p, "arn"),
                        format!("{arn:?} is not a target group ARN (arn:<partition>:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>)"),
                    );
                    continue;
                }
                TargetGroupId::Arn(arn)
            }
        };
        let ports = item
            .get("ports")
            .and_then(|v| ports(v, &join(&p, "ports"), sink));
        refs.push(TargetGroupRef {
            id,
            ports,
            pos: item.pos,
        });
    }
    Selection::List(refs)
}

fn ports(n: &Node, field: &str, sink: &mut Sink) -> Option<Vec<u16>> {
    let items = list(n, field, sink)?;
    if items.is_empty() {
        sink.error(
            n.pos,
            field,
            "ports is empty; omit it to use every registered port",
        );
        return None;
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_scalar().map(|s| &s.value) {
            Some(Value::Int(p)) if (1..=65535).contains(p) => out.push(*p as u16),
            _ => sink.error(
                item.pos,
                format!("{field}[{i}]"),
                format!(
                    "port must be a number from 1 to 65535, found {}",
                    item.ruby_to_s().unwrap_or_default()
                ),
            ),
        }
    }
    Some(out)
}

fn is_target_group_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if parts.len() != 6
        || parts[0] != "arn"
        || !parts[1].starts_with("aws")
        || parts[2] != "elasticloadbalancing"
    {
        return false;
    }
    if parts[3].is_empty() || parts[4].len() != 12 || !parts[4].chars().all(|c| c.is_ascii_digit())
    {
        return false;
    }
    let res: Vec<&str> = parts[5].split('/').collect();
    res.len() == 3 && res[0] == "targetgroup" && !res[1].is_empty() && !res[2].is_empty()
}

fn health_gate(n: &Node, path: &str, sink: &mut Sink) -> HealthGate {
    let mut g = HealthGate::default();
    if n.as_map().is_none() {
        sink.error(
            n.pos,
            path,
            format!("expected a mapping, found {}", n.describe()),
        );
        return g;
    }
    check_keys(
        n,
        path,
        &[
            "url",
            "expectStatus",
            "successes",
            "interval",
            "requestTimeout",
            "timeout",
        ],
        sink,
        true,
    );
    if let Some(v) = n.get("url") {
        let field = join(path, "url");
        g.url = match text(v, &field, sink).as_deref() {
            Some("auto") => GateUrl::Auto,
            Some("none") => GateUrl::None,
            Some(u)
                if u.starts_with("http://")
                    || u.starts_with("https://")
                    || u.starts_with("tcp://") =>
            {
                GateUrl::Url(u.to_string())
            }
            Some(u) => {
                sink.error(
                    v.pos,
                    field,
                    format!("{u:?} is not auto, none, or an http://, https:// or tcp:// URL"),
                );
                GateUrl::Auto
            }
            None => GateUrl::Auto,
        };
    }
    if let Some(v) = n.get("expectStatus") {
        g.expect_status = status_ranges(v, &join(path, "expectStatus"), sink);
    }
    if let Some(v) = n.get("successes") {
        g.successes = seconds(v, &join(path, "successes"), 1, 100, sink);
    }
    if let Some(v) = n.get("interval") {
        g.interval = seconds(v, &join(path, "interval"), 1, 300, sink).unwrap_or(g.interval);
    }
    if let Some(v) = n.get("requestTimeout") {
        g.request_timeout =
            seconds(v, &join(path, "requestTimeout"), 1, 120, sink).unwrap_or(g.request_timeout);
    }
    if let Some(v) = n.get("timeout") {
        g.timeout = seconds(v, &join(path, "timeout"), 1, COMMAND_BUDGET_SECONDS, sink)
            .unwrap_or(g.timeout);
    }
    g
}

/// `200`, `"200-399"` or `"200,302"`, as the ELB matcher accepts them.
pub fn parse_status_ranges(s: &str) -> Result<Vec<StatusRange>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let code = |t: &str| match t.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(c),
            _ => Err(format!("{t:?} is not an HTTP status code (100-599)")),
        };
        let (low, high) = (code(lo)?, code(hi)?);
        if high < low {
            return Err(format!("{part:?} is an empty range"));
        }
        out.push(StatusRange { low, high });
    }
    Ok(out)
}

fn status_ranges(n: &Node, field: &str, sink: &mut Sink) -> Option<Vec<StatusRange>> {
    let s = text(n, field, sink)?;
    match parse_status_ranges(&s) {
        Ok(r) => Some(r),
        Err(e) => {
            sink.error(n.pos, field, e);
            None
        }
    }
}
