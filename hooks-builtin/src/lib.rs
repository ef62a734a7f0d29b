//! Built-in actions the agent runs in place of user scripts: the native
//! `loadBalancer` drain and restore. `placement` decides *when* they run
//! inside a deployment (docs/loadbalancer.md 3.1, pure); `Drainer` carries them out
//! against Auto Scaling, Classic ELB and ELBv2, with a journal written
//! before every change so a restart can always finish the job.

use std::future::Future;
use std::time::Duration;

use appspec::load_balancer::{LoadBalancer, TrafficControl};

pub mod aws;
pub mod breadcrumb;
mod drain;
pub mod gate;
pub mod journal;
mod restore;
mod timeline;

pub use restore::Why;
pub use timeline::Failure;

/// This host as the load balancers know it.
#[derive(Clone, Debug)]
pub struct HostId {
    pub instance_id: String,
    /// Where the load balancer reaches it (the private IPv4 address); the
    /// health gate probes here.
    pub address: String,
}

/// A finished drain or restore: a summary line and the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub summary: String,
    pub log: String,
}

pub struct Drainer {
    pub clients: aws::Clients,
    pub store: journal::Store,
    pub host: HostId,
    /// Describe-call cadence while waiting (5 s in production).
    pub poll_interval: Duration,
}

impl Drainer {
    fn save(&self, j: &journal::Journal) -> std::io::Result<()> {
        self.store.save(j)
    }

    /// +-20 % so a fleet's hosts do not poll in step.
    fn jittered(&self, d: Duration) -> Duration {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let f = 0.8 + f64::from(nanos % 1000) / 2500.0;
        d.mul_f64(f)
    }

    /// Call `check` until it returns `Some`, or `budget` has passed (`None`).
    async fn poll<T, F, Fut>(&self, budget: Duration, mut check: F) -> Result<Option<T>, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, aws::AwsError>>,
    {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(v) = check().await? {
                return Ok(Some(v));
            }
            if t0.elapsed() >= budget {
                return Ok(None);
            }
            let left = budget.saturating_sub(t0.elapsed());
            tokio::time::sleep(self.jittered(self.poll_interval).min(left)).await;
        }
    }

    /// The stop scripts are about to run: from here a crash leaves the
    /// application possibly down, and `onFailure` decides.
    pub fn stopping(&self, group_id: &str) -> std::io::Result<bool> {
        self.set(group_id, |j| {
            if j.phase == journal::Phase::Drained {
                j.phase = journal::Phase::Stopping;
            }
        })
    }

    /// A command of `deployment_id` arrived: re-arm `abandonAfter`.
    pub fn touch(&self, group_id: &str, deployment_id: &str) -> std::io::Result<bool> {
        match self.store.load(group_id)? {
            Some(mut j) if j.deployment_id == deployment_id => {
                j.abandon_at = journal::now() + u64::from(j.abandon_after);
                self.save(&j)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn set(&self, group_id: &str, f: impl FnOnce(&mut journal::Journal)) -> std::io::Result<bool> {
        match self.store.load(group_id)? {
            Some(mut j) => {
                f(&mut j);
                self.save(&j)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Groups whose drained deployment went quiet past `abandonAfter`.
    pub fn abandoned(&self) -> Vec<String> {
        let now = journal::now();
        self.store
            .pending()
            .into_iter()
            .filter(|g| matches!(self.store.load(g), Ok(Some(j)) if j.abandon_at <= now))
            .collect()
    }

    /// The deployment a group's journal belongs to, if any.
    pub fn journal_of(&self, group_id: &str) -> Option<String> {
        self.store
            .load(group_id)
            .ok()
            .flatten()
            .map(|j| j.deployment_id)
    }
}

/// The diagnostics `script_name` of each built-in action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drain,
    Restore,
}

impl Action {
    pub fn script_name(self) -> &'static str {
        match self {
            Action::Drain => "loadBalancer:drain",
            Action::Restore => "loadBalancer:restore",
        }
    }
}

/// What runs around an event's scripts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub before_scripts: Option<Action>,
    pub after_scripts: Option<Action>,
    /// Why a configured action does not run here, for the log.
    pub notice: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

/// Does the deployment use the service's own BlockTraffic/AllowTraffic?
pub fn has_service_traffic_control(all_possible_events: &[String]) -> bool {
    all_possible_events.iter().any(|e| e == "BlockTraffic")
}

/// The first host command of a deployment, where the drain happens.
pub fn drain_event(all_possible_events: &[String]) -> &'static str {
    if has_service_traffic_control(all_possible_events) {
        "BeforeBlockTraffic"
    } else {
        "ApplicationStop"
    }
}

/// Where the built-in actions of `lb` run for `event`. `lb` comes from the
/// revision being deployed.
pub fn placement(
    event: &str,
    lb: Option<&LoadBalancer>,
    all_possible_events: &[String],
) -> Result<Placement, Refusal> {
    let Some(lb) = lb.filter(|lb| lb.is_active()) else {
        return Ok(Placement::default());
    };
    let traffic = has_service_traffic_control(all_possible_events);
    let mut p = Placement::default();
    if traffic {
        match lb.with_service_traffic_control {
            TrafficControl::Skip => {
                p.notice = Some(
                    "the deployment uses CodeDeploy's own traffic control; loadBalancer is skipped (withServiceTrafficControl: skip)"
                        .into(),
                );
                return Ok(p);
            }
            TrafficControl::Fail => {
                return Err(Refusal(
                    "the deployment uses CodeDeploy's own traffic control (BlockTraffic/AllowTraffic) and loadBalancer.withServiceTrafficControl is fail; remove one of the two".into(),
                ))
            }
            TrafficControl::Both => {}
        }
    }
    if event == drain_event(all_possible_events) {
        p.before_scripts = Some(Action::Drain);
    }
    if event == "ValidateService" {
        p.after_scripts = Some(Action::Restore);
    }
    Ok(p)
}

/// An event that carries a built-in action is never a no-op, even without
/// scripts (a first deployment has no ApplicationStop scripts but must drain).
pub fn forces_command(
    event: &str,
    lb: Option<&LoadBalancer>,
    all_possible_events: &[String],
) -> bool {
    matches!(
        placement(event, lb, all_possible_events),
        Ok(Placement {
            before_scripts: Some(_),
            ..
        }) | Ok(Placement {
            after_scripts: Some(_),
            ..
        })
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use appspec::Os;

    fn lb(extra: &str) -> LoadBalancer {
        let src = format!("version: 0.0\nos: linux\nloadBalancer:\n  mode: drain\n{extra}");
        appspec::parse(&src, "appspec.yml", Os::Linux)
            .unwrap()
            .spec
            .load_balancer
            .unwrap()
    }

    fn events(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn drains_before_the_first_command_and_restores_after_validation() {
        let lb = lb("");
        let plain = events(&[
            "ApplicationStop",
            "DownloadBundle",
            "Install",
            "ValidateService",
        ]);
        assert_eq!(
            placement("ApplicationStop", Some(&lb), &plain)
                .unwrap()
                .before_scripts,
            Some(Action::Drain)
        );
        assert_eq!(
            placement("ValidateService", Some(&lb), &plain)
                .unwrap()
                .after_scripts,
            Some(Action::Restore)
        );
        assert_eq!(
            placement("ApplicationStart", Some(&lb), &plain).unwrap(),
            Placement::default()
        );
        assert!(forces_command("ApplicationStop", Some(&lb), &plain));
        assert!(!forces_command("BeforeInstall", Some(&lb), &plain));
        assert!(!forces_command("ApplicationStop", None, &plain));
    }

    #[test]
    fn service_traffic_control_follows_the_setting() {
        let traffic = events(&[
            "BeforeBlockTraffic",
            "BlockTraffic",
            "ApplicationStop",
            "ValidateService",
            "AllowTraffic",
        ]);
        let skip = placement("BeforeBlockTraffic", Some(&lb("")), &traffic).unwrap();
        assert_eq!(skip.before_scripts, None);
        assert!(skip.notice.unwrap().contains("skipped"));
        assert!(placement(
            "ValidateService",
            Some(&lb("  withServiceTrafficControl: fail\n")),
            &traffic
        )
        .is_err());
        let both = lb("  withServiceTrafficControl: both\n");
        assert_eq!(
            placement("BeforeBlockTraffic", Some(&both), &traffic)
                .unwrap()
                .before_scripts,
            Some(Action::Drain)
        );
        assert_eq!(
            placement("ApplicationStop", Some(&both), &traffic)
                .unwrap()
                .before_scripts,
            None
        );
    }

    #[test]
    fn mode_off_does_nothing() {
        let off = lb("  mode: off\n");
        assert_eq!(
            placement("ApplicationStop", Some(&off), &events(&["ApplicationStop"])).unwrap(),
            Placement::default()
        );
        assert_eq!(Action::Drain.script_name(), "loadBalancer:drain");
    }
}
