//! The actions of the three query APIs the agent uses, with AWS's error
//! codes and messages (docs/loadbalancer.md 2).

use std::time::Instant;

use super::model::{Kind, Member, State, World};
use super::query::{el, list, member_structs, members, page, page_list, Form};

pub struct Fail {
    pub status: u16,
    pub code: String,
    pub message: String,
}

fn fail(status: u16, code: &str, message: impl Into<String>) -> Fail {
    Fail {
        status,
        code: code.into(),
        message: message.into(),
    }
}

fn need<'a>(f: &'a Form, k: &str) -> Result<&'a String, Fail> {
    f.get(k)
        .ok_or_else(|| fail(400, "ValidationError", format!("{k} is required")))
}

pub type Answer = Result<String, Fail>;

/// The scaling activities EnterStandby/ExitStandby answer with.
fn activities(ids: &[String], group: &str, moving: &str, status: &str, progress: u32) -> String {
    list(
        "Activities",
        ids.iter().map(|id| {
            format!(
                "{}{}{}{}{}",
                el("ActivityId", format!("act-{status}-{id}")),
                el("AutoScalingGroupName", group),
                el("Cause", format!("Moving EC2 instance {moving}: {id}")),
                el("StatusCode", status),
                el("Progress", progress)
            )
        }),
    )
}

/// Page sizes are small on purpose: discovery that ignores pages fails.
pub const PAGE: usize = 2;

pub fn autoscaling(w: &mut World, action: &str, f: &Form) -> Answer {
    let group_of = |w: &World, name: &str| -> Result<usize, Fail> {
        w.groups.iter().position(|g| g.name == name).ok_or_else(|| {
            fail(
                400,
                "ValidationError",
                format!("AutoScalingGroup name not found - AutoScalingGroup {name} not found"),
            )
        })
    };
    match action {
        "DescribeAutoScalingInstances" => {
            let ids = members(f, "InstanceIds");
            let mut out = Vec::new();
            for g in &w.groups {
                for m in &g.members {
                    if ids.is_empty() || ids.contains(&m.id) {
                        out.push(format!(
                            "{}{}{}{}{}{}",
                            el("InstanceId", &m.id),
                            el("AutoScalingGroupName", &g.name),
                            el("AvailabilityZone", "us-east-1a"),
                            el("LifecycleState", &m.state),
                            el("HealthStatus", "HEALTHY"),
                            el("ProtectedFromScaleIn", false)
                        ));
                    }
                }
            }
            Ok(list("AutoScalingInstances", out))
        }
        // The group's history, newest first: the moves in and out of
        // Standby and the size changes, each done when recorded.
        "DescribeScalingActivities" => {
            let name = f.get("AutoScalingGroupName");
            let (now, wall) = (Instant::now(), std::time::SystemTime::now());
            let iso = |at: Instant| {
                let t = wall - now.saturating_duration_since(at);
                chrono::DateTime::<chrono::Utc>::from(t)
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string()
            };
            let mut acts: Vec<String> = w
                .changes
                .iter()
                .enumerate()
                .filter(|(_, c)| name.is_none_or(|n| &c.resource == n))
                .filter(|(_, c)| w.groups.iter().any(|g| g.name == c.resource))
                .filter_map(|(i, c)| {
                    let (desc, cause) = match c.action.as_str() {
                        "EnterStandby" => (
                            format!("Moving EC2 instance to Standby: {}", c.instance),
                            format!(
                                "At {} user request moved instance {} to Standby",
                                iso(c.at),
                                c.instance
                            ),
                        ),
                        "ExitStandby" => (
                            format!("Moving EC2 instance out of Standby: {}", c.instance),
                            format!(
                                "At {} user request moved instance {} out of Standby",
                                iso(c.at),
                                c.instance
                            ),
                        ),
                        "UpdateAutoScalingGroup" => (
                            format!("Updating the group: {}", c.instance),
                            format!(
                                "At {} a user request update of AutoScalingGroup constraints ({})",
                                iso(c.at),
                                c.instance
                            ),
                        ),
                        _ => return None,
                    };
                    Some(format!(
                        "{}{}{}{}{}{}{}{}",
                        el("ActivityId", format!("0000{i:04}-act0-4000-8000-{:012}", i)),
                        el("AutoScalingGroupName", &c.resource),
                        el("Description", desc),
                        el("Cause", cause),
                        el("StartTime", iso(c.at)),
                        el("EndTime", iso(c.at)),
                        el("StatusCode", "Successful"),
                        el("Progress", 100)
                    ))
                })
                .collect();
            acts.reverse();
            let size = f
                .get("MaxRecords")
                .and_then(|m| m.parse().ok())
                .unwrap_or(100usize)
                .min(100);
            let (items, next) = page(&acts, f.get("NextToken"), size);
            Ok(page_list("Activities", items, next, "NextToken"))
        }
        "DescribeAutoScalingGroups" => {
            let names = members(f, "AutoScalingGroupNames");
            let all: Vec<_> = w
                .groups
                .iter()
                .filter(|g| names.is_empty() || names.contains(&g.name))
                .collect();
            let (items, next) = requested_page(&all, f, "MaxRecords", "NextToken");
            let groups = items.iter().map(|g| {
                format!(
                    "{}{}{}{}{}{}{}{}{}{}{}",
                    el("AutoScalingGroupName", &g.name),
                    el("AutoScalingGroupARN", format!("arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:0000:autoScalingGroupName/{}", g.name)),
                    el("MinSize", g.min),
                    el("MaxSize", g.max),
                    el("DesiredCapacity", g.desired),
                    el("HealthCheckType", "EC2"),
                    list("LoadBalancerNames", g.load_balancers.iter().map(|n| super::query::esc(n))),
                    list("TargetGroupARNs", g.target_groups.iter().map(|n| super::query::esc(n))),
                    list(
                        "SuspendedProcesses",
                        g.suspended.iter().map(|p| format!("{}{}", el("ProcessName", p), el("SuspensionReason", "User suspended")))
                    ),
                    list(
                        "Instances",
                        g.members.iter().map(|m| format!("{}{}{}", el("InstanceId", &m.id), el("LifecycleState", &m.state), el("HealthStatus", "Healthy")))
                    ),
                    el("CreatedTime", "2026-01-01T00:00:00Z"),
                ) + &list(
                    "Tags",
                    g.tags.iter().map(|(k, v)| {
                        format!(
                            "{}{}{}{}{}",
                            el("ResourceId", &g.name),
                            el("ResourceType", "auto-scaling-group"),
                            el("Key", k),
                            el("Value", v),
                            el("PropagateAtLaunch", "false")
                        )
                    }),
                )
            });
            Ok(page_list("AutoScalingGroups", groups, next, "NextToken"))
        }
        "EnterStandby" => {
            let gi = group_of(w, need(f, "AutoScalingGroupName")?)?;
            let decrement = need(f, "ShouldDecrementDesiredCapacity")? == "true";
            let ids = members(f, "InstanceIds");
            let g = &w.groups[gi];
            for id in &ids {
                match g.members.iter().find(|m| &m.id == id) {
                    Some(m) if m.state == "InService" => {}
                    Some(_) => {
                        return Err(fail(
                            400,
                            "ValidationError",
                            format!("The instance {id} is not in InService."),
                        ))
                    }
                    None => {
                        return Err(fail(
                            400,
                            "ValidationError",
                            format!(
                                "The instance {id} is not part of Auto Scaling group {}.",
                                g.name
                            ),
                        ))
                    }
                }
            }
            let n = ids.len() as i32;
            if decrement && g.desired - n < g.min {
                return Err(fail(400, "ValidationError", format!(
                    "AutoScalingGroup {} has min-size={}, max-size={}, and desired-size={}. To place into standby {n} instances, please update the AutoScalingGroup sizes appropriately.",
                    g.name, g.min, g.max, g.desired
                )));
            }
            let (tgs, lbs, name) = (
                g.target_groups.clone(),
                g.load_balancers.clone(),
                g.name.clone(),
            );
            if decrement {
                w.groups[gi].desired -= n;
            }
            for id in &ids {
                if let Some(m) = w.groups[gi].members.iter_mut().find(|m| &m.id == id) {
                    m.state = "EnteringStandby".into();
                }
                for r in tgs.iter().chain(lbs.iter()) {
                    if let Some(b) = w.backend(r) {
                        w.deregister_instance(b, id);
                    }
                }
                w.record("EnterStandby", id, &name);
            }
            Ok(activities(&ids, &name, "to Standby", "InProgress", 50))
        }
        "ExitStandby" => {
            let gi = group_of(w, need(f, "AutoScalingGroupName")?)?;
            let ids = members(f, "InstanceIds");
            for id in &ids {
                if !w.groups[gi]
                    .members
                    .iter()
                    .any(|m| &m.id == id && m.state == "Standby")
                {
                    return Err(fail(
                        400,
                        "ValidationError",
                        format!("The instance {id} is not in Standby."),
                    ));
                }
            }
            let pending = w.pending_for;
            let name = w.groups[gi].name.clone();
            for id in &ids {
                w.groups[gi].desired += 1;
                if let Some(m) = w.groups[gi].members.iter_mut().find(|m| &m.id == id) {
                    *m = Member {
                        id: id.clone(),
                        state: "Pending".into(),
                        until: Some(Instant::now() + pending),
                    };
                }
                w.record("ExitStandby", id, &name);
            }
            Ok(activities(
                &ids,
                &name,
                "out of Standby",
                "PreInService",
                30,
            ))
        }
        "UpdateAutoScalingGroup" => {
            let gi = group_of(w, need(f, "AutoScalingGroupName")?)?;
            let g = &w.groups[gi];
            let num = |k: &str| f.get(k).and_then(|v| v.parse::<i32>().ok());
            let min = num("MinSize").unwrap_or(g.min);
            let max = num("MaxSize").unwrap_or(g.max);
            let mut desired = num("DesiredCapacity").unwrap_or(g.desired);
            if num("DesiredCapacity").is_none() {
                desired = desired.clamp(min, max.max(min));
            }
            if !(min <= desired && desired <= max) {
                return Err(fail(400, "ValidationError", format!("Desired capacity:{desired} must be between the specified min size:{min} and max size:{max}")));
            }
            let name = g.name.clone();
            let g = &mut w.groups[gi];
            g.min = min;
            g.max = max;
            g.desired = desired;
            w.record("UpdateAutoScalingGroup", &format!("MinSize={min}"), &name);
            Ok(String::new())
        }
        "CreateOrUpdateTags" | "DeleteTags" => {
            for t in member_structs(f, "Tags") {
                let (Some(id), Some(key)) = (t.get("ResourceId"), t.get("Key")) else {
                    return Err(fail(
                        400,
                        "ValidationError",
                        "ResourceId and Key are required",
                    ));
                };
                if t.get("ResourceType").map(String::as_str) != Some("auto-scaling-group") {
                    return Err(fail(
                        400,
                        "ValidationError",
                        "ResourceType must be auto-scaling-group",
                    ));
                }
                let gi = group_of(w, id)?;
                if action == "CreateOrUpdateTags" {
                    let v = t.get("Value").cloned().unwrap_or_default();
                    w.groups[gi].tags.insert(key.clone(), v);
                } else {
                    w.groups[gi].tags.remove(key);
                }
                let name = w.groups[gi].name.clone();
                w.record(action, key, &name);
            }
            Ok(String::new())
        }
        "SuspendProcesses" | "ResumeProcesses" => {
            let gi = group_of(w, need(f, "AutoScalingGroupName")?)?;
            let procs = members(f, "ScalingProcesses");
            let name = w.groups[gi].name.clone();
            for p in &procs {
                if action == "SuspendProcesses" {
                    w.groups[gi].suspended.insert(p.clone());
                } else {
                    w.groups[gi].suspended.remove(p);
                }
            }
            w.record(action, &procs.join(","), &name);
            Ok(String::new())
        }
        _ => Err(fail(
            400,
            "InvalidAction",
            format!("Could not find operation {action} for version 2011-01-01"),
        )),
    }
}

/// The page a list call asked for: its size field (never above PAGE, so
/// every client must follow the continuation) and its token field.
fn requested_page<T: Clone>(
    all: &[T],
    f: &Form,
    size: &str,
    token: &str,
) -> (Vec<T>, Option<String>) {
    let size = f
        .get(size)
        .and_then(|m| m.parse().ok())
        .unwrap_or(PAGE)
        .min(PAGE);
    page(all, f.get(token), size)
}

fn health_check_xml_tg(b: &super::model::Backend) -> String {
    let matcher = format!("<Matcher>{}</Matcher>", el("HttpCode", &b.hc.matcher));
    format!(
        "{}{}{}{}{}{}{}{}{}",
        el("HealthCheckProtocol", &b.hc.protocol),
        el(
            "HealthCheckPort",
            b.hc.port
                .map_or("traffic-port".to_string(), |p| p.to_string())
        ),
        el("HealthCheckEnabled", true),
        el("HealthCheckIntervalSeconds", b.hc.interval.as_secs().max(1)),
        el("HealthCheckTimeoutSeconds", b.hc.timeout.as_secs().max(1)),
        el("HealthyThresholdCount", b.hc.healthy),
        el("UnhealthyThresholdCount", b.hc.unhealthy),
        el("HealthCheckPath", &b.hc.path),
        matcher,
    )
}

pub fn elbv2(w: &mut World, action: &str, f: &Form) -> Answer {
    let tg_of = |w: &World, arn: &str| -> Result<usize, Fail> {
        w.backend(arn)
            .filter(|b| w.backends[*b].kind == Kind::TargetGroup && w.backends[*b].arn == arn)
            .ok_or_else(|| {
                fail(
                    400,
                    "TargetGroupNotFound",
                    format!("Target groups '{arn}' not found"),
                )
            })
    };
    let targets = |f: &Form, w: &World, b: usize| -> Vec<(String, u16)> {
        member_structs(f, "Targets")
            .into_iter()
            .map(|m| {
                let port = m
                    .get("Port")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(w.backends[b].port);
                (m.get("Id").cloned().unwrap_or_default(), port)
            })
            .collect()
    };
    match action {
        "DescribeTargetGroups" => {
            let names = members(f, "Names");
            let arns = members(f, "TargetGroupArns");
            let all: Vec<usize> = (0..w.backends.len())
                .filter(|i| w.backends[*i].kind == Kind::TargetGroup)
                .filter(|i| names.is_empty() || names.contains(&w.backends[*i].name))
                .filter(|i| arns.is_empty() || arns.contains(&w.backends[*i].arn))
                .collect();
            for n in &names {
                if !all.iter().any(|i| &w.backends[*i].name == n) {
                    return Err(fail(
                        400,
                        "TargetGroupNotFound",
                        format!("One or more target groups not found ({n})"),
                    ));
                }
            }
            let (items, next) = requested_page(&all, f, "PageSize", "Marker");
            let groups = items.iter().map(|i| {
                let b = &w.backends[*i];
                format!(
                    "{}{}{}{}{}{}{}{}",
                    el("TargetGroupArn", &b.arn),
                    el("TargetGroupName", &b.name),
                    el("Protocol", if b.layer4 { "TCP" } else { "HTTP" }),
                    el("Port", b.port),
                    el("VpcId", "vpc-0testbed"),
                    health_check_xml_tg(b),
                    list("LoadBalancerArns", b.has_load_balancer.then(|| format!("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/{}/{}/0000", if b.layer4 { "net" } else { "app" }, b.name))),
                    el("TargetType", "instance"),
                )
            });
            Ok(page_list("TargetGroups", groups, next, "NextMarker"))
        }
        "DescribeTargetGroupAttributes" => {
            let b = tg_of(w, need(f, "TargetGroupArn")?)?;
            Ok(list(
                "Attributes",
                [
                    format!(
                        "{}{}",
                        el("Key", "deregistration_delay.timeout_seconds"),
                        el("Value", w.backends[b].delay)
                    ),
                    format!(
                        "{}{}",
                        el("Key", "stickiness.enabled"),
                        el("Value", "false")
                    ),
                ],
            ))
        }
        "DescribeTargetHealth" => {
            let b = tg_of(w, need(f, "TargetGroupArn")?)?;
            let asked = targets(f, w, b);
            let be = &w.backends[b];
            let describe = |id: &str, port: u16| -> String {
                let (state, reason) = match be.regs.iter().find(|r| r.id == id && r.port == port) {
                    None => ("unused", "Target.NotRegistered".to_string()),
                    Some(_) if !be.has_load_balancer => ("unused", "Target.NotInUse".to_string()),
                    Some(r) => match r.state {
                        State::Initial => ("initial", r.reason.clone()),
                        State::Healthy => ("healthy", String::new()),
                        State::Unhealthy => ("unhealthy", "Target.FailedHealthChecks".into()),
                        State::Draining => ("draining", "Target.DeregistrationInProgress".into()),
                    },
                };
                let reason = if reason.starts_with("Elb.")
                    || reason.starts_with("Target.")
                    || reason.is_empty()
                {
                    reason
                } else {
                    "Target.FailedHealthChecks".into()
                };
                format!(
                    "<Target>{}{}</Target>{}<TargetHealth>{}{}</TargetHealth>",
                    el("Id", id),
                    el("Port", port),
                    el("HealthCheckPort", be.hc.port.unwrap_or(port)),
                    el("State", state),
                    if reason.is_empty() {
                        String::new()
                    } else {
                        el("Reason", reason)
                    }
                )
            };
            let items: Vec<String> = if asked.is_empty() {
                be.regs.iter().map(|r| describe(&r.id, r.port)).collect()
            } else {
                asked.iter().map(|(id, p)| describe(id, *p)).collect()
            };
            Ok(list("TargetHealthDescriptions", items))
        }
        "RegisterTargets" | "DeregisterTargets" => {
            let b = tg_of(w, need(f, "TargetGroupArn")?)?;
            let ts = targets(f, w, b);
            let name = w.backends[b].name.clone();
            for (id, port) in &ts {
                if action == "RegisterTargets" {
                    w.register(b, id, *port)
                        .map_err(|m| fail(400, "InvalidTarget", m))?;
                } else {
                    w.deregister(b, id, *port);
                }
                w.record(action, id, &format!("{name}:{port}"));
            }
            Ok(String::new())
        }
        _ => Err(fail(
            400,
            "InvalidAction",
            format!("Could not find operation {action} for version 2015-12-01"),
        )),
    }
}

pub fn classic(w: &mut World, action: &str, f: &Form) -> Answer {
    let lb_of = |w: &World, name: &str| -> Result<usize, Fail> {
        w.backend(name)
            .filter(|b| w.backends[*b].kind == Kind::Classic)
            .ok_or_else(|| {
                fail(
                    400,
                    "LoadBalancerNotFound",
                    format!("There is no ACTIVE Load Balancer named '{name}'"),
                )
            })
    };
    let instances = |f: &Form| -> Vec<String> {
        member_structs(f, "Instances")
            .into_iter()
            .filter_map(|m| m.get("InstanceId").cloned())
            .collect()
    };
    match action {
        "DescribeLoadBalancers" => {
            let names = members(f, "LoadBalancerNames");
            let mut all = Vec::new();
            for n in &names {
                all.push(lb_of(w, n)?);
            }
            if names.is_empty() {
                all = (0..w.backends.len())
                    .filter(|i| w.backends[*i].kind == Kind::Classic)
                    .collect();
            }
            let (items, next) = requested_page(&all, f, "PageSize", "Marker");
            let lbs = items.iter().map(|i| {
                let b = &w.backends[*i];
                let target = if b.hc.protocol == "HTTP" {
                    format!("HTTP:{}{}", b.hc.port.unwrap_or(b.port), b.hc.path)
                } else {
                    format!("TCP:{}", b.hc.port.unwrap_or(b.port))
                };
                let health = format!(
                    "<HealthCheck>{}{}{}{}{}</HealthCheck>",
                    el("Target", target),
                    el("Interval", b.hc.interval.as_secs().max(1)),
                    el("Timeout", b.hc.timeout.as_secs().max(1)),
                    el("UnhealthyThreshold", b.hc.unhealthy),
                    el("HealthyThreshold", b.hc.healthy)
                );
                format!(
                    "{}{}{}{}{}{}{}",
                    el("LoadBalancerName", &b.name),
                    el("DNSName", format!("{}.elb.testbed", b.name)),
                    list(
                        "ListenerDescriptions",
                        [format!(
                            "<Listener>{}{}{}{}</Listener>{}",
                            el("Protocol", "HTTP"),
                            el("LoadBalancerPort", b.frontend),
                            el("InstanceProtocol", "HTTP"),
                            el("InstancePort", b.port),
                            list("PolicyNames", Vec::new())
                        )]
                    ),
                    health,
                    list(
                        "Instances",
                        b.regs
                            .iter()
                            .filter(|r| r.state != State::Draining)
                            .map(|r| el("InstanceId", &r.id))
                    ),
                    el("VPCId", "vpc-0testbed"),
                    el("CreatedTime", "2026-01-01T00:00:00Z"),
                )
            });
            Ok(page_list(
                "LoadBalancerDescriptions",
                lbs,
                next,
                "NextMarker",
            ))
        }
        "DescribeLoadBalancerAttributes" => {
            let b = &w.backends[lb_of(w, need(f, "LoadBalancerName")?)?];
            Ok(format!(
                "<LoadBalancerAttributes><ConnectionDraining>{}{}</ConnectionDraining><CrossZoneLoadBalancing>{}</CrossZoneLoadBalancing></LoadBalancerAttributes>",
                el("Enabled", b.draining_enabled),
                el("Timeout", b.delay),
                el("Enabled", true)
            ))
        }
        "DescribeInstanceHealth" => {
            let b = lb_of(w, need(f, "LoadBalancerName")?)?;
            let be = &w.backends[b];
            let mut ids = instances(f);
            if ids.is_empty() {
                ids = be.regs.iter().map(|r| r.id.clone()).collect();
            }
            let states = ids.iter().map(|id| {
                let (state, desc, code) = match be.regs.iter().find(|r| &r.id == id) {
                    None => ("OutOfService", "Instance is not currently registered with the LoadBalancer.", "N/A"),
                    Some(r) => match r.state {
                        State::Healthy => ("InService", "N/A", "N/A"),
                        State::Draining => ("InService", "Instance deregistration currently in progress.", "ELB"),
                        State::Initial if r.ok == 0 && r.bad == 0 => ("OutOfService", "Instance registration is still in progress.", "ELB"),
                        State::Initial => ("OutOfService", "Instance has not passed the configured HealthyThreshold number of health checks consecutively.", "ELB"),
                        State::Unhealthy => ("OutOfService", "Instance has failed at least the UnhealthyThreshold number of health checks consecutively.", "Instance"),
                    },
                };
                format!("{}{}{}{}", el("InstanceId", id), el("State", state), el("ReasonCode", code), el("Description", desc))
            });
            Ok(list("InstanceStates", states))
        }
        "RegisterInstancesWithLoadBalancer" | "DeregisterInstancesFromLoadBalancer" => {
            let b = lb_of(w, need(f, "LoadBalancerName")?)?;
            let port = w.backends[b].port;
            let name = w.backends[b].name.clone();
            for id in instances(f) {
                if action.starts_with("Register") {
                    w.register(b, &id, port)
                        .map_err(|m| fail(400, "InvalidInstance", m))?;
                } else {
                    if !w.instances.contains_key(&id) {
                        return Err(fail(
                            400,
                            "InvalidInstance",
                            format!("The requested instance {id} is not registered"),
                        ));
                    }
                    w.deregister(b, &id, port);
                }
                w.record(action, &id, &name);
            }
            let left = w.backends[b]
                .regs
                .iter()
                .filter(|r| r.state != State::Draining)
                .map(|r| el("InstanceId", &r.id))
                .collect::<Vec<_>>();
            Ok(list("Instances", left))
        }
        _ => Err(fail(
            400,
            "InvalidAction",
            format!("Could not find operation {action} for version 2012-06-01"),
        )),
    }
}
