//! The drain journal (docs/loadbalancer.md 3.4): what this host changed in its Auto
//! Scaling group and load balancers, written before every call that changes
//! anything, so a restart can always put it back. One file per deployment
//! group in the folder the agent's layout names (`<root_dir>/load-balancer/`),
//! beside an append-only event log.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The journal's format version.
pub const SCHEMA: u32 = 1;

/// Writes a file durably (temp file, fsync, rename, directory fsync). The
/// agent passes its own so there is one implementation of that dance.
pub type Persist = fn(&Path, &[u8]) -> io::Result<()>;

/// How far a drain has gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Discovery done, nothing changed yet.
    Planned,
    /// Taking out: Standby or deregistrations under way.
    Draining,
    /// Out of service; the old application still runs.
    Drained,
    /// Stop scripts started: the application may be down.
    Stopping,
    /// Putting back.
    Restoring,
}

/// `onFailure`, as the journal keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// Put back.
    Restore,
    /// Put back if the health gate passes.
    RestoreIfHealthy,
    /// Stay out until `abandonAfter`.
    KeepDrained,
}

impl From<appspec::load_balancer::OnFailure> for OnFailure {
    fn from(v: appspec::load_balancer::OnFailure) -> Self {
        use appspec::load_balancer::OnFailure as A;
        match v {
            A::Restore => OnFailure::Restore,
            A::RestoreIfHealthy => OnFailure::RestoreIfHealthy,
            A::KeepDrained => OnFailure::KeepDrained,
        }
    }
}

/// The Auto Scaling group, when it drains the instance in Standby.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// Its name.
    pub name: String,
    /// The instance's state when found.
    pub state_found: String,
    /// MinSize when found.
    pub min_found: i32,
    /// DesiredCapacity when found.
    pub desired_found: i32,
    /// We asked for Standby (intent written before the call).
    pub entered_standby: bool,
    /// How much we lowered MinSize; restored by this delta.
    pub min_delta: i32,
    /// Processes this agent suspended (and resumes).
    pub suspended_by_us: Vec<String>,
    /// Processes suspended before (left as they are).
    pub suspended_before: Vec<String>,
    /// The longest drain among the group's load balancers, seconds.
    pub drain_seconds: u32,
    /// The group tag saying the minimum is lowered (breadcrumbs).
    #[serde(default)]
    pub breadcrumb: Option<String>,
    /// The minimum the operator had, when this host lowered it: as the
    /// group's record (`breadcrumb::MIN_KEY`) says, else as found. The
    /// restore gives the minimum back to it (capped at desired), not by a
    /// delta, so hosts restoring in any order never lose or add to it.
    #[serde(default)]
    pub min_original: Option<i32>,
}

/// A load balancer's health check, as the gate and the waits use it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `HTTP`, `HTTPS` or `TCP`.
    pub protocol: String,
    /// `None`: the traffic port.
    pub port: Option<u16>,
    /// The HTTP path.
    pub path: String,
    /// The ELBv2 matcher (`200`, `200-299`, `200,302`).
    pub matcher: String,
    /// Seconds between checks.
    pub interval: u32,
    /// Seconds per check.
    pub timeout: u32,
    /// Passes in a row that make a target healthy.
    pub healthy_threshold: u32,
}

/// A classic load balancer in the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassicLb {
    /// Its name.
    pub name: String,
    /// Registered when found; otherwise only restored for `restoreTo: declared`.
    pub registered: bool,
    /// Attached to the Auto Scaling group: the group drains it in Standby.
    pub via_group: bool,
    /// This agent deregistered the instance (intent written before the call).
    pub deregistered: bool,
    /// Draining timeout, seconds; `None` when connection draining is off.
    pub draining: Option<u32>,
    /// The port its listeners send to.
    pub instance_port: Option<u16>,
    /// Its listener speaks TCP or SSL to the instance (layer 4).
    #[serde(default)]
    pub layer4: bool,
    /// Its health check.
    pub health: HealthCheck,
}

/// A target group in the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroup {
    /// Its ARN.
    pub arn: String,
    /// Its name.
    pub name: String,
    /// The exact ports this instance is registered on (or will be).
    pub ports: Vec<u16>,
    /// Ports that were registered and serving when found.
    pub registered: Vec<u16>,
    /// Attached to the Auto Scaling group: Standby drains it.
    pub via_group: bool,
    /// This agent deregistered the ports (intent written before the call).
    pub deregistered: bool,
    /// Its deregistration delay, seconds.
    pub delay: u32,
    /// A Network LB's (TCP, TLS, UDP): layer 4.
    #[serde(default)]
    pub layer4: bool,
    /// Its health check.
    pub health: HealthCheck,
    /// Some load balancer uses it (else health is never reported).
    pub has_load_balancer: bool,
}

/// What one host changed for one deployment group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    /// `SCHEMA`.
    pub schema: u32,
    /// The deployment that drained (or adopted the drain).
    pub deployment_id: String,
    /// The deployment group.
    pub group_id: String,
    /// This instance.
    pub instance_id: String,
    /// How far it has gone.
    pub phase: Phase,
    /// The call about to be made, until it is known to be done.
    pub intent: Option<String>,
    /// The Auto Scaling group, when Standby drains the instance.
    pub group: Option<Group>,
    /// Classic load balancers in the plan.
    pub classic: Vec<ClassicLb>,
    /// Target groups in the plan.
    pub target_groups: Vec<TargetGroup>,
    /// `onFailure`.
    pub on_failure: OnFailure,
    /// Settings the restore needs after a restart (from the appspec).
    pub gate: Gate,
    /// `healthTimeout`, seconds; `None`: from the health checks.
    pub health_timeout: Option<u32>,
    /// Unix seconds when the drain began.
    pub drain_started: u64,
    /// Unix seconds after which an idle drained deployment is restored.
    pub abandon_at: u64,
    /// `abandonAfter`, seconds.
    pub abandon_after: u32,
}

/// The health gate's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gate {
    /// `auto`, `none` or a URL (written as that string).
    pub url: GateTarget,
    /// Inclusive status ranges; empty: from the matcher, else 200-399.
    pub expect: Vec<(u16, u16)>,
    /// Passes in a row; `None`: from the health check.
    pub successes: Option<u32>,
    /// Seconds between probes.
    pub interval: u32,
    /// Seconds per probe.
    pub request_timeout: u32,
    /// Seconds in all.
    pub timeout: u32,
}

/// What the health gate probes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum GateTarget {
    /// Derived from the load balancers' health checks.
    #[default]
    Auto,
    /// No gate.
    None,
    /// This URL.
    Url(String),
}

impl From<String> for GateTarget {
    fn from(s: String) -> Self {
        match s.as_str() {
            "auto" => GateTarget::Auto,
            "none" => GateTarget::None,
            _ => GateTarget::Url(s),
        }
    }
}

impl From<GateTarget> for String {
    fn from(g: GateTarget) -> Self {
        match g {
            GateTarget::Auto => "auto".into(),
            GateTarget::None => "none".into(),
            GateTarget::Url(u) => u,
        }
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where the journals of one host live.
#[derive(Clone, Debug)]
pub struct Store {
    /// The folder.
    pub dir: PathBuf,
    /// How files are written.
    pub persist: Persist,
}

impl Store {
    /// The journals in `dir` (the agent's layout names it), written with
    /// `persist`.
    pub fn new(dir: &Path, persist: Persist) -> Store {
        Store {
            dir: dir.to_path_buf(),
            persist,
        }
    }

    fn path(&self, group_id: &str) -> PathBuf {
        self.dir.join(format!("{group_id}.json"))
    }

    /// The group's journal, if there is one.
    pub fn load(&self, group_id: &str) -> io::Result<Option<Journal>> {
        match fs::read(self.path(group_id)) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.path(group_id).display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write the journal durably.
    pub fn save(&self, j: &Journal) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(j).map_err(io::Error::other)?;
        (self.persist)(&self.path(&j.group_id), &bytes)
    }

    /// Remove the journal: everything is back.
    pub fn clear(&self, group_id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(group_id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // The removal must survive a crash as much as the writes do.
        fs::File::open(&self.dir).and_then(|d| d.sync_all())
    }

    /// Every group with a pending journal.
    pub fn pending(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".json")
                    .filter(|s| !s.starts_with('.'))
                    .map(str::to_string)
            })
            .collect();
        v.sort();
        v
    }

    /// Append one line to the group's audit log (best effort).
    pub fn audit(&self, group_id: &str, line: &str) {
        let _ = fs::create_dir_all(&self.dir);
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{group_id}.log")))
        {
            let _ = writeln!(f, "{} {line}", now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn persist(p: &Path, b: &[u8]) -> io::Result<()> {
        fs::write(p, b)
    }

    #[test]
    fn round_trips_and_lists_pending_groups() {
        let d = std::env::temp_dir().join(format!("journal-test-{}", std::process::id()));
        let s = Store::new(&d, persist);
        let j = Journal {
            schema: SCHEMA,
            deployment_id: "d-1".into(),
            group_id: "g-1".into(),
            instance_id: "i-1".into(),
            phase: Phase::Drained,
            intent: Some("EnterStandby".into()),
            group: Some(Group {
                name: "web".into(),
                min_delta: 1,
                ..Group::default()
            }),
            classic: vec![],
            target_groups: vec![],
            on_failure: OnFailure::Restore,
            gate: Gate::default(),
            health_timeout: None,
            drain_started: 1,
            abandon_at: 2,
            abandon_after: 1,
        };
        s.save(&j).unwrap();
        assert_eq!(s.load("g-1").unwrap(), Some(j));
        assert_eq!(s.pending(), vec!["g-1".to_string()]);
        s.clear("g-1").unwrap();
        assert_eq!(s.load("g-1").unwrap(), None);
        assert!(s.pending().is_empty());
        let _ = fs::remove_dir_all(&d);
    }
}
