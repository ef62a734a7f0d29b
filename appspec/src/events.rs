//! Lifecycle rules: which events exist, which revision an event's scripts
//! come from, and the event order of local deployments.

/// The standard events, in the order codedeploy-local runs them.
pub const LOCAL_DEFAULT_ORDER: [&str; 11] = [
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

/// The service's own event that takes an instance out of its load balancer
/// (with AllowTraffic, CodeDeploy's traffic control); never a host command.
pub const BLOCK_TRAFFIC: &str = "BlockTraffic";

/// Events the agent performs itself rather than through scripts.
pub const AGENT_COMMANDS: [&str; 2] = ["DownloadBundle", "Install"];

/// Events whose scripts come from the new revision (except BeforeInstall,
/// which the official ordering rules treat separately).
const NEW_REVISION_EVENTS: [&str; 5] = [
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
];

/// What kind of event a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A standard event whose scripts the agent runs.
    Hook,
    /// DownloadBundle and Install.
    AgentCommand,
    /// BlockTraffic and AllowTraffic, done by the service.
    ServiceTraffic,
    /// Anything else: runs only when a deployment names it.
    Custom,
}

/// The kind of the event `event` names.
pub fn classify(event: &str) -> EventKind {
    match event {
        "DownloadBundle" | "Install" => EventKind::AgentCommand,
        "BlockTraffic" | "AllowTraffic" => EventKind::ServiceTraffic,
        e if LOCAL_DEFAULT_ORDER.contains(&e) => EventKind::Hook,
        _ => EventKind::Custom,
    }
}

/// A lifecycle event whose scripts the agent runs: the standard hooks, or
/// a custom event a local deployment names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LifecycleEvent {
    /// The first command of a deployment with service traffic control.
    BeforeBlockTraffic,
    /// After the service blocked traffic.
    AfterBlockTraffic,
    /// The previous revision's stop scripts.
    ApplicationStop,
    /// Before the new revision's files are installed.
    BeforeInstall,
    /// After they are installed.
    AfterInstall,
    /// Start the new revision.
    ApplicationStart,
    /// Check it; where the `loadBalancer` restore follows.
    ValidateService,
    /// Before the service allows traffic again.
    BeforeAllowTraffic,
    /// After it did.
    AfterAllowTraffic,
    /// Any other name: runs only when a deployment names it.
    Custom(String),
}

impl LifecycleEvent {
    /// The standard events, in the order a deployment runs them.
    pub const STANDARD: [LifecycleEvent; 9] = [
        LifecycleEvent::BeforeBlockTraffic,
        LifecycleEvent::AfterBlockTraffic,
        LifecycleEvent::ApplicationStop,
        LifecycleEvent::BeforeInstall,
        LifecycleEvent::AfterInstall,
        LifecycleEvent::ApplicationStart,
        LifecycleEvent::ValidateService,
        LifecycleEvent::BeforeAllowTraffic,
        LifecycleEvent::AfterAllowTraffic,
    ];

    /// The event as appspec `hooks` and the commands API name it.
    pub fn as_str(&self) -> &str {
        match self {
            LifecycleEvent::BeforeBlockTraffic => "BeforeBlockTraffic",
            LifecycleEvent::AfterBlockTraffic => "AfterBlockTraffic",
            LifecycleEvent::ApplicationStop => "ApplicationStop",
            LifecycleEvent::BeforeInstall => "BeforeInstall",
            LifecycleEvent::AfterInstall => "AfterInstall",
            LifecycleEvent::ApplicationStart => "ApplicationStart",
            LifecycleEvent::ValidateService => "ValidateService",
            LifecycleEvent::BeforeAllowTraffic => "BeforeAllowTraffic",
            LifecycleEvent::AfterAllowTraffic => "AfterAllowTraffic",
            LifecycleEvent::Custom(name) => name,
        }
    }

    /// A standard event by name, else a custom one.
    pub fn parse(name: &str) -> LifecycleEvent {
        Self::STANDARD
            .into_iter()
            .find(|e| e.as_str() == name)
            .unwrap_or_else(|| LifecycleEvent::Custom(name.to_string()))
    }
}

impl std::fmt::Display for LifecycleEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One host command of a deployment, parsed once where it arrives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostCommand {
    /// Fetch and unpack the revision.
    DownloadBundle,
    /// Install its files.
    Install,
    /// Run a lifecycle event's scripts.
    Event(LifecycleEvent),
}

impl HostCommand {
    /// The command the commands API or `local -e` names `name`.
    pub fn parse(name: &str) -> HostCommand {
        match name {
            "DownloadBundle" => HostCommand::DownloadBundle,
            "Install" => HostCommand::Install,
            other => HostCommand::Event(LifecycleEvent::parse(other)),
        }
    }

    /// The command's name.
    pub fn as_str(&self) -> &str {
        match self {
            HostCommand::DownloadBundle => "DownloadBundle",
            HostCommand::Install => "Install",
            HostCommand::Event(e) => e.as_str(),
        }
    }

    /// Is this `event`?
    pub fn is(&self, event: &LifecycleEvent) -> bool {
        matches!(self, HostCommand::Event(e) if e == event)
    }

    /// One the daemon runs: the agent's two and the standard hooks. Custom
    /// events run only in `local`, where `-e` names them.
    pub fn is_standard(&self) -> bool {
        !matches!(self, HostCommand::Event(LifecycleEvent::Custom(_)))
    }
}

impl std::fmt::Display for HostCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which deployment's revision an event's scripts run from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revision {
    /// The deployment being executed.
    Current,
    /// The group's last successful deployment (nothing runs if there is none).
    LastSuccessful,
    /// The group's most recent deployment, successful or not.
    MostRecent,
}

/// The official mapping. Callers must still use the current revision when
/// its archive is already unpacked (the official agents do).
pub fn revision_for(event: &str, deployment_creator: &str, blue_green: bool) -> Revision {
    if deployment_creator == "codeDeployRollback" && blue_green {
        return match event {
            "BeforeBlockTraffic" | "AfterBlockTraffic" => Revision::MostRecent,
            "ApplicationStop" | "BeforeAllowTraffic" | "AfterAllowTraffic" => {
                Revision::LastSuccessful
            }
            _ => Revision::Current,
        };
    }
    match event {
        "BeforeBlockTraffic" | "AfterBlockTraffic" | "ApplicationStop" => Revision::LastSuccessful,
        _ => Revision::Current,
    }
}

/// The events a local deployment runs, in order: the standard order when
/// none are given, otherwise the given ones with DownloadBundle and Install
/// put first when missing, after checking the official ordering rules.
pub fn local_sequence(requested: Option<&[String]>) -> Result<Vec<String>, String> {
    let Some(events) = requested.filter(|e| !e.is_empty()) else {
        return Ok(LOCAL_DEFAULT_ORDER.iter().map(|s| s.to_string()).collect());
    };
    let shown = events.join(",");
    let before = |stop: &str| -> Vec<&str> {
        events
            .iter()
            .take_while(|e| e.as_str() != stop)
            .map(String::as_str)
            .collect()
    };
    if events.iter().any(|e| e == "DownloadBundle") {
        let early = before("DownloadBundle");
        if early
            .iter()
            .any(|e| NEW_REVISION_EVENTS.contains(e) || *e == "Install")
        {
            return Err(format!(
                "The only events that can be specified before DownloadBundle are BeforeBlockTraffic,AfterBlockTraffic,ApplicationStop. Please fix the order of your specified events: {shown}"
            ));
        }
    }
    if events.iter().any(|e| e == "Install") {
        let early = before("Install");
        if early.iter().any(|e| NEW_REVISION_EVENTS.contains(e)) {
            return Err(format!(
                "The only events that can be specified before Install are BeforeBlockTraffic,AfterBlockTraffic,ApplicationStop,DownloadBundle,BeforeInstall. Please fix the order of your specified events: {shown}"
            ));
        }
    }
    let mut out: Vec<String> = AGENT_COMMANDS
        .iter()
        .filter(|c| !events.iter().any(|e| e == *c))
        .map(|c| c.to_string())
        .collect();
    out.extend(events.iter().cloned());
    Ok(out)
}

/// Every event a local deployment may see: the standard ones plus those asked for.
pub fn local_all_possible(requested: Option<&[String]>) -> Vec<String> {
    let mut all: Vec<String> = LOCAL_DEFAULT_ORDER.iter().map(|s| s.to_string()).collect();
    for e in requested.unwrap_or(&[]) {
        if !all.contains(e) {
            all.push(e.clone());
        }
    }
    all
}

/// The Install-time check of the official agent: the appspec may only have
/// hooks for events the deployment knows, and every custom event the
/// deployment names must have hooks in the appspec.
pub fn check_hooks_against_deployment<'a>(
    hook_events: impl Iterator<Item = &'a str>,
    all_possible: &[String],
    appspec_name: &str,
) -> Result<(), String> {
    let hooks: Vec<&str> = hook_events.collect();
    let unknown: Vec<&str> = hooks
        .iter()
        .copied()
        .filter(|h| !all_possible.iter().any(|e| e == h))
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "{appspec_name} file contains unknown lifecycle events: {}",
            unknown.join(", ")
        ));
    }
    let missing: Vec<&str> = all_possible
        .iter()
        .map(String::as_str)
        .filter(|e| classify(e) == EventKind::Custom && !hooks.contains(e))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "You specified a lifecycle event which is not a default one and doesn't exist in your {appspec_name} file: {}",
            missing.join(",")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn host_commands_parse_once_and_name_themselves() {
        for name in LOCAL_DEFAULT_ORDER {
            let c = HostCommand::parse(name);
            assert_eq!(c.as_str(), name);
            assert!(c.is_standard(), "{name}");
        }
        assert_eq!(HostCommand::parse("Install"), HostCommand::Install);
        assert!(HostCommand::parse("ValidateService").is(&LifecycleEvent::ValidateService));
        for custom in ["HealthCheck", "BlockTraffic", "UpdateDeploymentAgent"] {
            let c = HostCommand::parse(custom);
            assert_eq!(c, HostCommand::Event(LifecycleEvent::Custom(custom.into())));
            assert!(!c.is_standard());
            assert_eq!(c.to_string(), custom);
        }
    }

    #[test]
    fn scripts_come_from_the_official_revision() {
        assert_eq!(
            revision_for("ApplicationStop", "user", false),
            Revision::LastSuccessful
        );
        assert_eq!(
            revision_for("BeforeBlockTraffic", "user", false),
            Revision::LastSuccessful
        );
        assert_eq!(
            revision_for("BeforeInstall", "user", false),
            Revision::Current
        );
        assert_eq!(
            revision_for("ValidateService", "user", true),
            Revision::Current
        );
        assert_eq!(revision_for("MyCustom", "user", false), Revision::Current);
        assert_eq!(
            revision_for("BeforeBlockTraffic", "codeDeployRollback", true),
            Revision::MostRecent
        );
        assert_eq!(
            revision_for("AfterAllowTraffic", "codeDeployRollback", true),
            Revision::LastSuccessful
        );
        assert_eq!(
            revision_for("BeforeBlockTraffic", "codeDeployRollback", false),
            Revision::LastSuccessful
        );
    }

    #[test]
    fn local_default_and_requested_orders() {
        assert_eq!(local_sequence(None).unwrap().len(), 11);
        assert_eq!(
            local_sequence(Some(&s(&["ApplicationStart", "HealthCheck"]))).unwrap(),
            s(&[
                "DownloadBundle",
                "Install",
                "ApplicationStart",
                "HealthCheck"
            ])
        );
        assert_eq!(
            local_sequence(Some(&s(&[
                "ApplicationStop",
                "DownloadBundle",
                "Install",
                "ApplicationStart"
            ])))
            .unwrap(),
            s(&[
                "ApplicationStop",
                "DownloadBundle",
                "Install",
                "ApplicationStart"
            ])
        );
        let err = local_sequence(Some(&s(&["ApplicationStart", "DownloadBundle"]))).unwrap_err();
        assert!(err.contains("before DownloadBundle"), "{err}");
        let err = local_sequence(Some(&s(&["Install", "DownloadBundle"]))).unwrap_err();
        assert!(err.contains("before DownloadBundle"), "{err}");
        let err =
            local_sequence(Some(&s(&["DownloadBundle", "AfterInstall", "Install"]))).unwrap_err();
        assert!(err.contains("before Install"), "{err}");
        assert!(local_sequence(Some(&s(&["DownloadBundle", "BeforeInstall", "Install"]))).is_ok());
    }

    #[test]
    fn install_checks_hooks_against_the_deployment() {
        let all = local_all_possible(Some(&s(&["HealthCheck"])));
        assert!(check_hooks_against_deployment(
            ["ApplicationStart", "HealthCheck"].into_iter(),
            &all,
            "appspec.yml"
        )
        .is_ok());
        let err =
            check_hooks_against_deployment(["ApplicationStart"].into_iter(), &all, "appspec.yml")
                .unwrap_err();
        assert!(
            err.contains("doesn't exist in your appspec.yml file: HealthCheck"),
            "{err}"
        );
        let std = local_all_possible(None);
        let err =
            check_hooks_against_deployment(["Smoke"].into_iter(), &std, "appspec.yml").unwrap_err();
        assert!(err.contains("unknown lifecycle events: Smoke"), "{err}");
    }
}
