//! The Auto Scaling, Classic ELB and ELBv2 calls the drain makes, through
//! the official SDK clients, returning plain values. Every list call follows
//! its pagination; every error keeps its code, message and request id.

use std::fmt;

use aws_sdk_autoscaling as asg;
use aws_sdk_elasticloadbalancing as elb;
use aws_sdk_elasticloadbalancingv2 as elbv2;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use aws_types::request_id::RequestId;
use aws_types::SdkConfig;

use crate::journal::HealthCheck;

/// A failed AWS call, for diagnostics: `Op: Code: message (request id R)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsError {
    /// The call, as the API names it.
    pub op: &'static str,
    /// The error code (`NoResponse` when none came).
    pub code: String,
    /// The service's message.
    pub message: String,
    /// The request id, for AWS support.
    pub request_id: Option<String>,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.op, self.code, self.message)?;
        if let Some(r) = &self.request_id {
            write!(f, " (request id {r})")?;
        }
        Ok(())
    }
}

impl std::error::Error for AwsError {}

fn fail<E>(op: &'static str, e: E) -> AwsError
where
    E: ProvideErrorMetadata + RequestId + std::error::Error,
{
    let code = e.code().unwrap_or("").to_string();
    let message = match e.message() {
        Some(m) => m.to_string(),
        None => chain(&e),
    };
    AwsError {
        op,
        code: if code.is_empty() {
            "NoResponse".into()
        } else {
            code
        },
        message,
        request_id: e.request_id().map(str::to_string),
    }
}

/// Refused for want of permission: for optional calls, a warning.
pub fn denied(e: &AwsError) -> bool {
    matches!(
        e.code.as_str(),
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation"
    )
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Endpoint overrides (VPC endpoints, the testbed).
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    /// `:autoscaling_endpoint:`.
    pub autoscaling: Option<String>,
    /// `:elb_endpoint:`, for both load-balancer APIs.
    pub elb: Option<String>,
}

/// The Auto Scaling, Classic ELB and ELBv2 clients.
#[derive(Clone, Debug)]
pub struct Clients {
    asg: asg::Client,
    elb: elb::Client,
    elbv2: elbv2::Client,
}

/// The SDK retries throttling and 5xx with jittered exponential backoff;
/// a fleet shares one API budget, so give it room (docs/loadbalancer.md 2.5).
const ATTEMPTS: u32 = 8;

impl Clients {
    /// The clients of `base` (region, credentials, HTTP), with the fleet's retry budget.
    pub fn new(base: &SdkConfig, endpoints: &Endpoints) -> Clients {
        let retry = RetryConfig::standard().with_max_attempts(ATTEMPTS);
        let mut a = asg::config::Builder::from(base).retry_config(retry.clone());
        if let Some(ep) = &endpoints.autoscaling {
            a = a.endpoint_url(ep);
        }
        let mut c = elb::config::Builder::from(base).retry_config(retry.clone());
        let mut v = elbv2::config::Builder::from(base).retry_config(retry);
        if let Some(ep) = &endpoints.elb {
            c = c.endpoint_url(ep);
            v = v.endpoint_url(ep);
        }
        Clients {
            asg: asg::Client::from_conf(a.build()),
            elb: elb::Client::from_conf(c.build()),
            elbv2: elbv2::Client::from_conf(v.build()),
        }
    }
}

/// An Auto Scaling group as DescribeAutoScalingGroups gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AsgGroup {
    /// Its name.
    pub name: String,
    /// MinSize.
    pub min: i32,
    /// MaxSize.
    pub max: i32,
    /// DesiredCapacity.
    pub desired: i32,
    /// Classic load balancers attached to it.
    pub load_balancers: Vec<String>,
    /// Target group ARNs attached to it.
    pub target_groups: Vec<String>,
    /// Processes suspended now.
    pub suspended: Vec<String>,
    /// (instance id, lifecycle state) of every member.
    pub members: Vec<(String, String)>,
    /// (key, value) of the group's tags.
    pub tags: Vec<(String, String)>,
}

/// A classic load balancer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classic {
    /// Its name.
    pub name: String,
    /// The instances registered with it.
    pub instances: Vec<String>,
    /// The port its listeners send to, if one.
    pub instance_port: Option<u16>,
    /// That listener speaks TCP or SSL to the instance (layer 4).
    pub layer4: bool,
    /// Its health check.
    pub health: HealthCheck,
}

/// An ELBv2 target group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tg {
    /// Its ARN.
    pub arn: String,
    /// Its name.
    pub name: String,
    /// Its default port.
    pub port: Option<u16>,
    /// Its targets are instances (not IPs or Lambdas).
    pub instance_type: bool,
    /// Its protocol is TCP, TLS, UDP or TCP_UDP: a Network LB's (layer 4).
    pub layer4: bool,
    /// Its health check.
    pub health: HealthCheck,
    /// Some load balancer uses it.
    pub has_load_balancer: bool,
}

/// One (instance, port) registration and its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The instance.
    pub id: String,
    /// The port.
    pub port: u16,
    /// `healthy`, `draining`, `unused` ...
    pub state: String,
    /// The reason code, when AWS gives one.
    pub reason: String,
}

fn port(p: Option<i32>) -> Option<u16> {
    p.and_then(|p| u16::try_from(p).ok())
}

fn secs(v: Option<i32>, default: u32) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(default)
}

/// `HTTP:80/path`, `TCP:80`, `HTTPS:443/`, `SSL:443`.
pub fn parse_classic_target(t: &str) -> (String, Option<u16>, String) {
    let (proto, rest) = t.split_once(':').unwrap_or(("TCP", t));
    let (p, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let proto = match proto.to_ascii_uppercase().as_str() {
        "SSL" => "TCP".to_string(),
        other => other.to_string(),
    };
    (proto, p.parse().ok(), path.to_string())
}

impl Clients {
    /// The instance's Auto Scaling group and lifecycle state, if it is in one.
    pub async fn asg_membership(&self, id: &str) -> Result<Option<(String, String)>, AwsError> {
        let out = self
            .asg
            .describe_auto_scaling_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| fail("DescribeAutoScalingInstances", e))?;
        Ok(out
            .auto_scaling_instances()
            .iter()
            .find(|i| i.instance_id() == Some(id))
            .map(|i| {
                (
                    i.auto_scaling_group_name().unwrap_or("").to_string(),
                    i.lifecycle_state().unwrap_or("").to_string(),
                )
            }))
    }

    /// One group, with its members and tags.
    pub async fn asg_group(&self, name: &str) -> Result<AsgGroup, AwsError> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| fail("DescribeAutoScalingGroups", e))?;
        let g = out
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
            .ok_or_else(|| AwsError {
                op: "DescribeAutoScalingGroups",
                code: "ValidationError".into(),
                message: format!("group {name} not found"),
                request_id: None,
            })?;
        Ok(AsgGroup {
            name: name.to_string(),
            min: g.min_size().unwrap_or(0),
            max: g.max_size().unwrap_or(0),
            desired: g.desired_capacity().unwrap_or(0),
            load_balancers: g.load_balancer_names().to_vec(),
            target_groups: g.target_group_arns().to_vec(),
            suspended: g
                .suspended_processes()
                .iter()
                .filter_map(|p| p.process_name().map(str::to_string))
                .collect(),
            members: g
                .instances()
                .iter()
                .filter_map(|i| {
                    Some((
                        i.instance_id()?.to_string(),
                        i.lifecycle_state()?.as_str().to_string(),
                    ))
                })
                .collect(),
            tags: g
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
                .collect(),
        })
    }

    /// A tag on the group itself, not propagated to instances.
    pub async fn put_group_tag(&self, group: &str, key: &str, value: &str) -> Result<(), AwsError> {
        let tag = asg::types::Tag::builder()
            .resource_id(group)
            .resource_type("auto-scaling-group")
            .key(key)
            .value(value)
            .propagate_at_launch(false)
            .build();
        self.asg
            .create_or_update_tags()
            .tags(tag)
            .send()
            .await
            .map_err(|e| fail("CreateOrUpdateTags", e))?;
        Ok(())
    }

    /// DeleteTags of one group tag.
    pub async fn delete_group_tag(&self, group: &str, key: &str) -> Result<(), AwsError> {
        let tag = asg::types::Tag::builder()
            .resource_id(group)
            .resource_type("auto-scaling-group")
            .key(key)
            .build();
        self.asg
            .delete_tags()
            .tags(tag)
            .send()
            .await
            .map_err(|e| fail("DeleteTags", e))?;
        Ok(())
    }

    /// UpdateAutoScalingGroup MinSize.
    pub async fn set_min(&self, group: &str, min: i32) -> Result<(), AwsError> {
        self.asg
            .update_auto_scaling_group()
            .auto_scaling_group_name(group)
            .min_size(min)
            .send()
            .await
            .map_err(|e| fail("UpdateAutoScalingGroup", e))?;
        Ok(())
    }

    /// SuspendProcesses.
    pub async fn suspend(&self, group: &str, processes: &[String]) -> Result<(), AwsError> {
        self.asg
            .suspend_processes()
            .auto_scaling_group_name(group)
            .set_scaling_processes(Some(processes.to_vec()))
            .send()
            .await
            .map_err(|e| fail("SuspendProcesses", e))?;
        Ok(())
    }

    /// ResumeProcesses.
    pub async fn resume(&self, group: &str, processes: &[String]) -> Result<(), AwsError> {
        self.asg
            .resume_processes()
            .auto_scaling_group_name(group)
            .set_scaling_processes(Some(processes.to_vec()))
            .send()
            .await
            .map_err(|e| fail("ResumeProcesses", e))?;
        Ok(())
    }

    /// EnterStandby, decrementing the desired capacity.
    pub async fn enter_standby(&self, group: &str, id: &str) -> Result<(), AwsError> {
        self.asg
            .enter_standby()
            .auto_scaling_group_name(group)
            .instance_ids(id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(|e| fail("EnterStandby", e))?;
        Ok(())
    }

    /// ExitStandby.
    pub async fn exit_standby(&self, group: &str, id: &str) -> Result<(), AwsError> {
        self.asg
            .exit_standby()
            .auto_scaling_group_name(group)
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| fail("ExitStandby", e))?;
        Ok(())
    }

    /// Classic load balancers, all of them (`None`) or by name.
    pub async fn classic(&self, names: Option<&[String]>) -> Result<Vec<Classic>, AwsError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .elb
                .describe_load_balancers()
                .set_load_balancer_names(names.map(|n| n.to_vec()))
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| fail("DescribeLoadBalancers", e))?;
            for d in page.load_balancer_descriptions() {
                let hc = d.health_check();
                let (protocol, hport, path) = hc
                    .map(|h| parse_classic_target(h.target()))
                    .unwrap_or(("TCP".into(), None, String::new()));
                let listener = d
                    .listener_descriptions()
                    .iter()
                    .filter_map(|l| l.listener())
                    .next();
                let instance_port = listener.and_then(|l| u16::try_from(l.instance_port()).ok());
                // InstanceProtocol defaults to the front protocol's layer.
                let layer4 = listener.is_some_and(|l| {
                    let p = l.instance_protocol().unwrap_or(l.protocol());
                    matches!(p.to_ascii_uppercase().as_str(), "TCP" | "SSL")
                });
                out.push(Classic {
                    name: d.load_balancer_name().unwrap_or("").to_string(),
                    instances: d
                        .instances()
                        .iter()
                        .filter_map(|i| i.instance_id().map(str::to_string))
                        .collect(),
                    instance_port,
                    layer4,
                    health: HealthCheck {
                        protocol,
                        port: hport,
                        path,
                        matcher: "200".into(),
                        interval: hc.map(|h| secs(Some(h.interval()), 30)).unwrap_or(30),
                        timeout: hc.map(|h| secs(Some(h.timeout()), 5)).unwrap_or(5),
                        healthy_threshold: hc
                            .map(|h| secs(Some(h.healthy_threshold()), 10))
                            .unwrap_or(10),
                    },
                });
            }
            match page.next_marker() {
                Some(m) if !m.is_empty() => marker = Some(m.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Connection draining timeout, `None` when draining is off.
    pub async fn classic_draining(&self, name: &str) -> Result<Option<u32>, AwsError> {
        let out = self
            .elb
            .describe_load_balancer_attributes()
            .load_balancer_name(name)
            .send()
            .await
            .map_err(|e| fail("DescribeLoadBalancerAttributes", e))?;
        Ok(out
            .load_balancer_attributes()
            .and_then(|a| a.connection_draining())
            .filter(|d| d.enabled())
            .map(|d| secs(d.timeout(), 300)))
    }

    /// (State, Description) of `id` in `lb`. AWS answers OutOfService for
    /// an instance no longer registered; `Unknown` (transient errors, and
    /// what moto answers for a deregistered instance) is settled by the
    /// LB's own instance list.
    pub async fn classic_health(&self, lb: &str, id: &str) -> Result<(String, String), AwsError> {
        let (state, description) = self.classic_state(lb, id).await?;
        if state != "Unknown" {
            return Ok((state, description));
        }
        let names = [lb.to_string()];
        let registered = self
            .classic(Some(&names))
            .await?
            .iter()
            .any(|c| c.instances.iter().any(|i| i == id));
        Ok(if registered {
            (state, description)
        } else {
            (
                "OutOfService".into(),
                "Instance is not currently registered with the LoadBalancer.".into(),
            )
        })
    }

    async fn classic_state(&self, lb: &str, id: &str) -> Result<(String, String), AwsError> {
        let out = self
            .elb
            .describe_instance_health()
            .load_balancer_name(lb)
            .instances(elb::types::Instance::builder().instance_id(id).build())
            .send()
            .await
            .map_err(|e| fail("DescribeInstanceHealth", e))?;
        Ok(out
            .instance_states()
            .iter()
            .find(|s| s.instance_id() == Some(id))
            .map(|s| {
                (
                    s.state().unwrap_or("").to_string(),
                    s.description().unwrap_or("").to_string(),
                )
            })
            .unwrap_or_else(|| ("OutOfService".into(), String::new())))
    }

    /// DeregisterInstancesFromLoadBalancer.
    pub async fn classic_deregister(&self, lb: &str, id: &str) -> Result<(), AwsError> {
        self.elb
            .deregister_instances_from_load_balancer()
            .load_balancer_name(lb)
            .instances(elb::types::Instance::builder().instance_id(id).build())
            .send()
            .await
            .map_err(|e| fail("DeregisterInstancesFromLoadBalancer", e))?;
        Ok(())
    }

    /// RegisterInstancesWithLoadBalancer.
    pub async fn classic_register(&self, lb: &str, id: &str) -> Result<(), AwsError> {
        self.elb
            .register_instances_with_load_balancer()
            .load_balancer_name(lb)
            .instances(elb::types::Instance::builder().instance_id(id).build())
            .send()
            .await
            .map_err(|e| fail("RegisterInstancesWithLoadBalancer", e))?;
        Ok(())
    }

    /// Target groups: all (`None`), by names, or by ARNs.
    pub async fn target_groups(
        &self,
        names: Option<Vec<String>>,
        arns: Option<Vec<String>>,
    ) -> Result<Vec<Tg>, AwsError> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .elbv2
                .describe_target_groups()
                .set_names(names.clone())
                .set_target_group_arns(arns.clone())
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| fail("DescribeTargetGroups", e))?;
            for g in page.target_groups() {
                let protocol = match g.health_check_protocol().map(|p| p.as_str()) {
                    Some("HTTP") => "HTTP",
                    Some("HTTPS") => "HTTPS",
                    _ => "TCP",
                };
                let hport = g
                    .health_check_port()
                    .filter(|p| *p != "traffic-port")
                    .and_then(|p| p.parse().ok());
                out.push(Tg {
                    arn: g.target_group_arn().unwrap_or("").to_string(),
                    name: g.target_group_name().unwrap_or("").to_string(),
                    port: port(g.port()),
                    instance_type: g.target_type().map(|t| t.as_str()) != Some("ip")
                        && g.target_type().map(|t| t.as_str()) != Some("lambda")
                        && g.target_type().map(|t| t.as_str()) != Some("alb"),
                    layer4: matches!(
                        g.protocol().map(|p| p.as_str()),
                        Some("TCP" | "TLS" | "UDP" | "TCP_UDP")
                    ),
                    health: HealthCheck {
                        protocol: protocol.into(),
                        port: hport,
                        path: g.health_check_path().unwrap_or("/").to_string(),
                        matcher: g
                            .matcher()
                            .and_then(|m| m.http_code())
                            .unwrap_or("200")
                            .to_string(),
                        interval: secs(g.health_check_interval_seconds(), 30),
                        timeout: secs(g.health_check_timeout_seconds(), 5),
                        healthy_threshold: secs(g.healthy_threshold_count(), 5),
                    },
                    has_load_balancer: !g.load_balancer_arns().is_empty(),
                });
            }
            match page.next_marker() {
                Some(m) if !m.is_empty() => marker = Some(m.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// The target group's `deregistration_delay.timeout_seconds`.
    pub async fn deregistration_delay(&self, arn: &str) -> Result<u32, AwsError> {
        let out = self
            .elbv2
            .describe_target_group_attributes()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| fail("DescribeTargetGroupAttributes", e))?;
        Ok(out
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .and_then(|v| v.parse().ok())
            .unwrap_or(300))
    }

    /// Registrations of the group; only `id`'s, on `ports` when given (a
    /// named pair that is not registered reads `unused`).
    pub async fn target_health(
        &self,
        arn: &str,
        id: &str,
        ports: Option<&[u16]>,
    ) -> Result<Vec<Target>, AwsError> {
        let targets = ports.map(|ps| {
            ps.iter()
                .map(|p| {
                    elbv2::types::TargetDescription::builder()
                        .id(id)
                        .port(i32::from(*p))
                        .build()
                })
                .collect::<Vec<_>>()
        });
        let out = self
            .elbv2
            .describe_target_health()
            .target_group_arn(arn)
            .set_targets(targets)
            .send()
            .await
            .map_err(|e| fail("DescribeTargetHealth", e))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let t = d.target()?;
                if t.id() != Some(id) {
                    return None;
                }
                let h = d.target_health();
                Some(Target {
                    id: id.to_string(),
                    port: port(t.port())?,
                    state: h
                        .and_then(|h| h.state())
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    reason: h
                        .and_then(|h| h.reason())
                        .map(|r| r.as_str().to_string())
                        .unwrap_or_default(),
                })
            })
            .collect())
    }

    fn pairs(id: &str, ports: &[u16]) -> Vec<elbv2::types::TargetDescription> {
        ports
            .iter()
            .map(|p| {
                elbv2::types::TargetDescription::builder()
                    .id(id)
                    .port(i32::from(*p))
                    .build()
            })
            .collect()
    }

    /// DeregisterTargets of the exact (instance, port) pairs.
    pub async fn deregister_targets(
        &self,
        arn: &str,
        id: &str,
        ports: &[u16],
    ) -> Result<(), AwsError> {
        self.elbv2
            .deregister_targets()
            .target_group_arn(arn)
            .set_targets(Some(Self::pairs(id, ports)))
            .send()
            .await
            .map_err(|e| fail("DeregisterTargets", e))?;
        Ok(())
    }

    /// RegisterTargets of the exact (instance, port) pairs.
    pub async fn register_targets(
        &self,
        arn: &str,
        id: &str,
        ports: &[u16],
    ) -> Result<(), AwsError> {
        self.elbv2
            .register_targets()
            .target_group_arn(arn)
            .set_targets(Some(Self::pairs(id, ports)))
            .send()
            .await
            .map_err(|e| fail("RegisterTargets", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_health_targets() {
        assert_eq!(
            parse_classic_target("HTTP:8080/health"),
            ("HTTP".into(), Some(8080), "/health".into())
        );
        assert_eq!(
            parse_classic_target("TCP:80"),
            ("TCP".into(), Some(80), String::new())
        );
        assert_eq!(
            parse_classic_target("SSL:443"),
            ("TCP".into(), Some(443), String::new())
        );
    }
}
