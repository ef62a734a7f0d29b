//! Built-in actions the agent runs in place of user scripts.
//!
//! This crate decides *when* the native `loadBalancer` drain and restore run
//! inside a deployment (lb-drain.md 4.4); the AWS calls that carry them out
//! come with the load balancer work.

use appspec::load_balancer::{LoadBalancer, TrafficControl};

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
