//! The control plane's model and orchestration: applications, groups,
//! instances, deployments, and the host commands that walk each instance
//! through its lifecycle events under the deployment configuration's rules
//! (as the CodeDeploy documentation describes them).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Events an in-place deployment runs on each instance, in order. The
/// traffic events appear only with a load balancer; BlockTraffic and
/// AllowTraffic are the service's own (no host command).
pub fn in_place_events(with_lb: bool) -> Vec<&'static str> {
    let mut v = Vec::new();
    if with_lb {
        v.extend(["BeforeBlockTraffic", "BlockTraffic", "AfterBlockTraffic"]);
    }
    v.extend([
        "ApplicationStop",
        "DownloadBundle",
        "BeforeInstall",
        "Install",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
    ]);
    if with_lb {
        v.extend(["BeforeAllowTraffic", "AllowTraffic", "AfterAllowTraffic"]);
    }
    v
}

pub const ALL_AGENT_EVENTS: [&str; 11] = [
    "BeforeBlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
];

pub fn service_side(event: &str) -> bool {
    matches!(event, "BlockTraffic" | "AllowTraffic")
}

#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    OneAtATime,
    HalfAtATime,
    AllAtOnce,
    HostCount(u32),
    FleetPercent(u32),
}

impl Rule {
    pub fn builtin(name: &str) -> Option<Rule> {
        Some(match name {
            "CodeDeployDefault.OneAtATime" => Rule::OneAtATime,
            "CodeDeployDefault.HalfAtATime" => Rule::HalfAtATime,
            "CodeDeployDefault.AllAtOnce" => Rule::AllAtOnce,
            _ => return None,
        })
    }

    /// Minimum healthy hosts for a fleet of `n`.
    pub fn min_healthy(&self, n: usize) -> usize {
        match self {
            Rule::OneAtATime => n.saturating_sub(1),
            // At least half (rounded up) stay healthy: batches of half, rounded down.
            Rule::HalfAtATime => n.div_ceil(2),
            Rule::AllAtOnce => 0,
            Rule::HostCount(c) => (*c as usize).min(n),
            Rule::FleetPercent(p) => (n * (*p as usize)).div_ceil(100),
        }
    }

    /// How many instances may be deployed at once.
    pub fn batch(&self, n: usize) -> usize {
        match self {
            Rule::OneAtATime => 1,
            _ => n.saturating_sub(self.min_healthy(n)).max(1),
        }
    }

    pub fn describe(&self) -> Value {
        match self {
            Rule::OneAtATime => json!({"type": "FLEET_PERCENT", "value": 99}),
            Rule::HalfAtATime => json!({"type": "FLEET_PERCENT", "value": 50}),
            Rule::AllAtOnce => json!({"type": "HOST_COUNT", "value": 0}),
            Rule::HostCount(c) => json!({"type": "HOST_COUNT", "value": c}),
            Rule::FleetPercent(p) => json!({"type": "FLEET_PERCENT", "value": p}),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum St {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    Skipped,
}

impl St {
    pub fn name(self) -> &'static str {
        match self {
            St::Pending => "Pending",
            St::InProgress => "InProgress",
            St::Succeeded => "Succeeded",
            St::Failed => "Failed",
            St::Skipped => "Skipped",
        }
    }
}

#[derive(Clone, Debug)]
pub struct EventState {
    pub name: String,
    pub status: St,
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub diagnostics: Option<Value>,
}

#[derive(Clone, Debug)]
pub struct Instance {
    /// Instance id (EC2) or on-premises instance name.
    pub name: String,
    /// The host identifier the agent polls with.
    pub host: String,
    pub status: St,
    pub events: Vec<EventState>,
    pub current: usize,
    pub command: Option<String>,
    pub updated: f64,
}

#[derive(Clone, Debug)]
pub struct Deployment {
    pub id: String,
    pub application: String,
    pub group_name: String,
    pub group_id: String,
    pub config_name: String,
    pub rule: Rule,
    pub revision: Value,
    pub status: &'static str,
    pub error: Option<(String, String)>,
    pub created: f64,
    pub completed: Option<f64>,
    pub instances: Vec<Instance>,
    pub file_exists_behavior: Option<String>,
    /// A failed ApplicationStop does not fail the instance.
    pub ignore_application_stop_failures: bool,
    pub github_token: Option<String>,
    pub with_lb: bool,
    /// The deployment group's target groups, for BlockTraffic/AllowTraffic.
    pub target_groups: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Command {
    pub id: String,
    pub deployment: String,
    pub instance: usize,
    pub event: String,
    pub host: String,
    pub execution_id: String,
    pub status: St,
    pub issued: f64,
    pub offered: u32,
    pub last_offered: Option<f64>,
    pub acked: Option<f64>,
    pub completed: Option<f64>,
    /// How many completions arrived (retries after a lost answer count).
    pub completions: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Group {
    pub id: String,
    pub application: String,
    pub name: String,
    pub config_name: String,
    pub ec2_tags: Vec<(String, String)>,
    pub onprem_tags: Vec<(String, String)>,
    /// `--auto-scaling-groups`: their InService members are targets.
    pub auto_scaling_groups: Vec<String>,
    pub with_lb: bool,
    /// `loadBalancerInfo.targetGroupInfoList[].name`.
    pub target_groups: Vec<String>,
}

/// Who is InService in an Auto Scaling group (the LB plane knows).
pub type AsgMembers = std::sync::Arc<dyn Fn(&str) -> Vec<String> + Send + Sync>;

/// The service's own traffic control: `(event, instance, target groups)`
/// blocks or allows traffic and says whether it worked (the LB plane
/// deregisters and waits for the drain, or registers and waits for health).
pub type TrafficControl = std::sync::Arc<dyn Fn(&str, &str, &[String]) -> bool + Send + Sync>;

/// A BlockTraffic or AllowTraffic to carry out outside the state's lock.
#[derive(Clone, Debug)]
pub struct ServiceJob {
    pub deployment: String,
    pub instance: usize,
    pub name: String,
    pub event: String,
    pub target_groups: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Registered {
    pub host: String,
    pub tags: Vec<(String, String)>,
}

#[derive(Default)]
pub struct State {
    pub region: String,
    pub account: String,
    pub applications: BTreeMap<String, String>,
    pub groups: BTreeMap<(String, String), Group>,
    pub configs: BTreeMap<String, Rule>,
    pub onprem: BTreeMap<String, Registered>,
    pub ec2: BTreeMap<String, Registered>,
    pub deployments: BTreeMap<String, Deployment>,
    pub commands: BTreeMap<String, Command>,
    pub counter: u64,
    /// A GitHub token the "account connection" gives deployments.
    pub github_token: Option<String>,
    /// `ReuseArchiveFromDeploymentId` put in every specification (the
    /// service sets it on RESTART deployments; the CLI cannot ask for it).
    pub reuse_archive_from: Option<String>,
    /// A command the service sends first in new deployments (e.g.
    /// `UpdateDeploymentAgent`, which the service may send to any host).
    pub first_command: Option<String>,
    /// Where Auto Scaling membership comes from, when a plane is attached.
    pub asg_members: Option<AsgMembers>,
    /// Registered revisions, by application: (revision JSON, description).
    pub revisions: BTreeMap<String, Vec<(serde_json::Value, String)>>,
    /// When attached, BlockTraffic and AllowTraffic move traffic for real.
    pub traffic: Option<TrafficControl>,
    /// Service-side events waiting to be carried out.
    pub service_jobs: Vec<ServiceJob>,
}

fn matches(tags: &[(String, String)], filters: &[(String, String)]) -> bool {
    !filters.is_empty()
        && filters.iter().any(|(k, v)| {
            tags.iter()
                .any(|(tk, tv)| tk == k && (v.is_empty() || tv == v))
        })
}

impl State {
    /// Host command identifiers as the service hands them out: a few
    /// hundred characters of base64 (an opaque token), '/', '+' and '='
    /// included, so no agent can take one for a file name.
    fn host_command_id(&mut self) -> String {
        use base64::Engine as _;
        let seed = self.next_id(36);
        let bytes: Vec<u8> = seed
            .bytes()
            .cycle()
            .take(240)
            .enumerate()
            .map(|(i, b)| b.wrapping_mul(31).wrapping_add(i as u8))
            .collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    pub fn next_id(&mut self, width: usize) -> String {
        self.counter += 1;
        let mut x = self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (now() as u64);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..width)
            .map(|_| {
                let c = alphabet[(x % 36) as usize] as char;
                x /= 36;
                x ^= self.counter.rotate_left(17);
                c
            })
            .collect()
    }

    pub fn uuid(&mut self) -> String {
        let a = self.next_id(8).to_lowercase();
        let b = self.next_id(12).to_lowercase();
        format!("{a}-0000-4000-8000-{b}")
    }

    pub fn rule(&self, name: &str) -> Option<Rule> {
        Rule::builtin(name).or_else(|| self.configs.get(name).cloned())
    }

    pub fn targets(&self, g: &Group) -> Vec<(String, String)> {
        let members: Vec<String> = match &self.asg_members {
            Some(f) => g.auto_scaling_groups.iter().flat_map(|n| f(n)).collect(),
            None => Vec::new(),
        };
        let mut v: Vec<(String, String)> = self
            .ec2
            .iter()
            .filter(|(id, r)| matches(&r.tags, &g.ec2_tags) || members.contains(id))
            .map(|(n, r)| (n.clone(), r.host.clone()))
            .collect();
        v.extend(
            self.onprem
                .iter()
                .filter(|(_, r)| matches(&r.tags, &g.onprem_tags))
                .map(|(n, r)| (n.clone(), r.host.clone())),
        );
        v
    }

    /// Move a deployment forward: issue the next command of every busy
    /// instance, start instances as the rule allows, decide the outcome.
    pub fn advance(&mut self, id: &str) {
        loop {
            let mut issue: Vec<usize> = Vec::new();
            {
                let Some(d) = self.deployments.get_mut(id) else {
                    return;
                };
                if matches!(d.status, "Succeeded" | "Failed" | "Stopped") {
                    return;
                }
                d.status = "InProgress";
                let n = d.instances.len();
                let failed = d.count(St::Failed);
                let busy = d.count(St::InProgress);
                let pending = d.count(St::Pending);
                let succeeded = d.count(St::Succeeded);
                let min = d.rule.min_healthy(n);
                let doomed = match d.rule {
                    // OneAtATime: any failure stops the deployment, except
                    // on the last instance (documented exception).
                    Rule::OneAtATime => failed > 0 && (pending > 0 || succeeded + 1 < n),
                    Rule::AllAtOnce => busy == 0 && pending == 0 && succeeded == 0,
                    _ => n - failed < min,
                };
                if doomed {
                    d.finish("Failed", "HEALTH_CONSTRAINTS", "The overall deployment failed because too many individual instances failed deployment, too few healthy instances are available for deployment, or some instances in your deployment group are experiencing problems.");
                    return;
                }
                if busy == 0 && pending == 0 {
                    let ok = match d.rule {
                        Rule::AllAtOnce => succeeded > 0,
                        _ => succeeded >= min.max(1).min(n),
                    };
                    if ok {
                        d.status = "Succeeded";
                        d.completed = Some(now());
                    } else {
                        d.finish(
                            "Failed",
                            "HEALTH_CONSTRAINTS",
                            "Too few instances succeeded.",
                        );
                    }
                    return;
                }
                let mut room = d.rule.batch(n).saturating_sub(busy);
                for (i, inst) in d.instances.iter_mut().enumerate() {
                    if inst.status == St::InProgress && inst.command.is_none() {
                        issue.push(i);
                    } else if inst.status == St::Pending && room > 0 {
                        room -= 1;
                        inst.status = St::InProgress;
                        inst.updated = now();
                        issue.push(i);
                    }
                }
            }
            let mut progressed = false;
            for i in issue {
                progressed |= self.issue(id, i);
            }
            if !progressed {
                return;
            }
        }
    }

    /// Issue the command for instance `i`'s current event. Returns true
    /// when the instance moved without a command (service-side event, end).
    fn issue(&mut self, id: &str, i: usize) -> bool {
        let cmd_id = self.host_command_id();
        let d = self.deployments.get_mut(id).expect("deployment");
        let inst = &mut d.instances[i];
        let Some(ev) = inst.events.get_mut(inst.current) else {
            inst.status = St::Succeeded;
            inst.updated = now();
            return true;
        };
        ev.status = St::InProgress;
        ev.start = Some(now());
        if service_side(&ev.name) {
            if self.traffic.is_some() && !d.target_groups.is_empty() {
                // Carried out outside the lock; `service_done` goes on.
                self.service_jobs.push(ServiceJob {
                    deployment: id.to_string(),
                    instance: i,
                    name: inst.name.clone(),
                    event: ev.name.clone(),
                    target_groups: d.target_groups.clone(),
                });
                inst.command = Some(format!("service:{}", ev.name));
                return false;
            }
            ev.status = St::Succeeded;
            ev.end = ev.start;
            inst.current += 1;
            return true;
        }
        let c = Command {
            id: cmd_id.clone(),
            deployment: id.to_string(),
            instance: i,
            event: ev.name.clone(),
            host: inst.host.clone(),
            execution_id: execution_id(&self.region, &self.account, id),
            status: St::Pending,
            issued: now(),
            offered: 0,
            last_offered: None,
            acked: None,
            completed: None,
            completions: 0,
        };
        inst.command = Some(cmd_id.clone());
        self.commands.insert(cmd_id, c);
        false
    }

    /// A host reported a command's outcome.
    pub fn complete(
        &mut self,
        cmd_id: &str,
        ok: bool,
        diagnostics: Option<Value>,
    ) -> Result<(), String> {
        let c = self
            .commands
            .get_mut(cmd_id)
            .ok_or("no such host command")?;
        c.completions += 1;
        if matches!(c.status, St::Succeeded | St::Failed) {
            // A retried completion whose first answer was lost.
            return Ok(());
        }
        c.status = if ok { St::Succeeded } else { St::Failed };
        c.completed = Some(now());
        let (dep, i) = (c.deployment.clone(), c.instance);
        if !self.deployments.contains_key(&dep) {
            return Err("no such deployment".into());
        }
        self.event_ended(&dep, i, ok, diagnostics);
        Ok(())
    }

    /// A service-side event ended (`ok`): as a host command's completion.
    pub fn service_done(&mut self, job: &ServiceJob, ok: bool) {
        if self.deployments.contains_key(&job.deployment) {
            self.event_ended(&job.deployment, job.instance, ok, None);
        }
    }

    /// Instance `i`'s current event of deployment `dep` ended: record it,
    /// move the instance on (or fail it), and the deployment with it.
    fn event_ended(&mut self, dep: &str, i: usize, ok: bool, diagnostics: Option<Value>) {
        let d = self.deployments.get_mut(dep).expect("deployment");
        let inst = &mut d.instances[i];
        inst.command = None;
        inst.updated = now();
        if let Some(ev) = inst.events.get_mut(inst.current) {
            ev.end = Some(now());
            ev.status = if ok { St::Succeeded } else { St::Failed };
            ev.diagnostics = diagnostics.map(to_lifecycle_diagnostics);
        }
        let ignored = !ok
            && d.ignore_application_stop_failures
            && inst
                .events
                .get(inst.current)
                .is_some_and(|e| e.name == "ApplicationStop");
        if ok || ignored {
            inst.current += 1;
            if inst.current >= inst.events.len() {
                inst.status = St::Succeeded;
            }
        } else {
            inst.fail_skipping_from(inst.current + 1);
        }
        if d.status == "Stopped" {
            if inst.status == St::InProgress {
                inst.fail_skipping_from(inst.current);
            }
            return;
        }
        self.advance(dep);
    }

    pub fn stop(&mut self, id: &str) -> Result<(), String> {
        let d = self.deployments.get_mut(id).ok_or("no such deployment")?;
        if matches!(d.status, "Succeeded" | "Failed" | "Stopped") {
            return Err(format!("deployment {id} has already completed"));
        }
        d.finish(
            "Stopped",
            "DEPLOYMENT_STOPPED",
            "The deployment was stopped by the user.",
        );
        // Commands not yet acknowledged are withdrawn.
        for c in self.commands.values_mut() {
            if c.deployment == id && c.status == St::Pending && c.acked.is_none() {
                c.status = St::Failed;
                let inst = &mut d.instances[c.instance];
                inst.command = None;
                inst.fail_skipping_from(inst.current);
            }
        }
        Ok(())
    }
}

impl Deployment {
    /// How many instances are in `st`.
    pub fn count(&self, st: St) -> usize {
        self.instances.iter().filter(|i| i.status == st).count()
    }

    /// End the deployment (Failed or Stopped): instances not started are
    /// skipped.
    fn finish(&mut self, status: &'static str, code: &str, message: &str) {
        self.status = status;
        self.completed = Some(now());
        self.error = Some((code.into(), message.into()));
        for inst in self
            .instances
            .iter_mut()
            .filter(|i| i.status == St::Pending)
        {
            inst.status = St::Skipped;
            for ev in inst.events.iter_mut() {
                ev.status = St::Skipped;
            }
        }
    }
}

impl Instance {
    /// The instance failed; its events from `from` on will not run.
    fn fail_skipping_from(&mut self, from: usize) {
        self.status = St::Failed;
        for ev in self.events.iter_mut().skip(from) {
            ev.status = St::Skipped;
        }
    }
}

/// The agent's diagnostics JSON as the public API shows it.
fn to_lifecycle_diagnostics(v: Value) -> Value {
    let code = match v.get("error_code").and_then(|c| c.as_i64()) {
        Some(0) => "Success",
        Some(1) => "ScriptMissing",
        Some(2) => "ScriptNotExecutable",
        Some(3) => "ScriptTimedOut",
        Some(4) | Some(6) => "ScriptFailed",
        _ => "UnknownError",
    };
    json!({
        "errorCode": code,
        "scriptName": v.get("script_name").and_then(|s| s.as_str()).unwrap_or(""),
        "message": v.get("message").and_then(|s| s.as_str()).unwrap_or(""),
        "logTail": v.get("log").and_then(|s| s.as_str()).unwrap_or(""),
    })
}

/// A deployment execution id in the service's form (it must match the
/// model's `^[^/]+/[^/]+/[^/]+/.+$`, at most 129 characters).
pub fn execution_id(region: &str, account: &str, deployment: &str) -> String {
    format!("CodeDeploy/{region}/Prod/arn:aws:sds:{region}:{account}:deployment/{deployment}")
}

/// The deployment an execution id names.
pub fn deployment_of_execution(execution: &str) -> &str {
    execution.rsplit("deployment/").next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_rules() {
        assert_eq!(Rule::OneAtATime.batch(3), 1);
        assert_eq!(Rule::HalfAtATime.batch(5), 2);
        assert_eq!(Rule::HalfAtATime.min_healthy(5), 3);
        assert_eq!(Rule::AllAtOnce.batch(4), 4);
        assert_eq!(Rule::FleetPercent(75).min_healthy(4), 3);
        assert_eq!(Rule::HostCount(2).batch(5), 3);
    }
}
