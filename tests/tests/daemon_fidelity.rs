//! Where only the real service can tell, the agent does what the official
//! agents do: the commands API stack `:enable_auth_policy:` selects, the
//! acknowledgement's optional status, only the models' members, commands
//! it does not know, and the messages the service shows users. The control
//! plane holds every request to the official service models.

use testbed::bed::Testbed;
use testbed::control::model::Stack;
use testbed::control::FaultKind;
use testbed::scenario::*;

fn succeeds(bed: &Testbed, agents: &[testbed::bed::Agent], version: &str) -> String {
    let d = deploy_version(bed, "e2e-fidelity", version, "zip", 0);
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Succeeded",
        "{}",
        logs(agents)
    );
    d
}

/// No call the models refuse, none on another stack than `stack`.
fn all_calls_fit_the_model(bed: &Testbed, stack: Stack) {
    let calls = bed.control.calls();
    let commands: Vec<_> = calls.iter().filter(|c| c.stack.is_some()).collect();
    assert!(!commands.is_empty());
    for c in commands {
        assert_eq!(c.stack, Some(stack), "{c:?}");
        // Name and version once (it read "codedeploy-agent-rs/codedeploy-agent-rs-…").
        assert!(
            c.user_agent.starts_with("codedeploy-agent-rs/")
                && c.user_agent.matches("codedeploy-agent").count() == 1,
            "{c:?}"
        );
        assert!(c.status == 200 || c.fault.is_some(), "refused: {c:?}");
    }
}

#[test]
fn enable_auth_policy_talks_to_the_secure_stack() {
    testbed::require_root();
    let bed = Testbed::new();
    // As the real codedeploy-commands-secure endpoint: the plain stack's
    // target prefix and signing name are not served there.
    bed.control.require_stack(Some(Stack::Secure));
    let mut a = bed.instance_with(
        "i-0fide0001",
        &[("role", "web")],
        testbed::imds::ImdsMode::V2Required,
        ":enable_auth_policy: true\n",
    );
    a.start();
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    succeeds(&bed, std::slice::from_ref(&a), "v1");
    all_calls_fit_the_model(&bed, Stack::Secure);
}

#[test]
fn the_plain_stack_with_model_members_only_and_official_messages() {
    testbed::require_root();
    let bed = Testbed::new();
    bed.control.require_stack(Some(Stack::Plain));
    let agents = fleet(&bed, 1);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let d = succeeds(&bed, &agents, "v1");
    // HostCommandMaxDurationInSeconds is in neither model: a request with
    // it is refused by the model check, so every call landing shows it is gone.
    all_calls_fit_the_model(&bed, Stack::Plain);
    let s = instance_summary(&bed, &d, &agents[0].imds.instance_id);
    assert_eq!(
        message(event(&s, "DownloadBundle")),
        "Succeeded: BundleSource=downloaded"
    );

    // A failing script: the official agents' message, exactly.
    let f = deploy_version(&bed, "e2e-fidelity", "v2", "zip", 3);
    assert_eq!(
        bed.wait_deployment(&f, LIMIT),
        "Failed",
        "{}",
        logs(&agents)
    );
    let s = instance_summary(&bed, &f, &agents[0].imds.instance_id);
    assert_eq!(
        message(event(&s, "ValidateService")),
        "Script at specified location: hooks/validate.sh failed with exit code 3"
    );
}

#[test]
fn an_acknowledgement_without_a_status_means_go_on() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 1);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    bed.control.inject(
        Some("PutHostCommandAcknowledgement"),
        FaultKind::AckWithoutStatus,
        20,
    );
    let d = succeeds(&bed, &agents, "v1");
    let acks: Vec<_> = bed
        .control
        .calls()
        .into_iter()
        .filter(|c| c.operation == "PutHostCommandAcknowledgement")
        .collect();
    assert!(acks.len() >= 7, "{acks:?}");
    assert!(
        acks.iter()
            .all(|c| c.fault == Some(FaultKind::AckWithoutStatus)),
        "every acknowledgement was answered without a status: {acks:?}"
    );
    let s = instance_summary(&bed, &d, &agents[0].imds.instance_id);
    for e in [
        "BeforeInstall",
        "AfterInstall",
        "ApplicationStart",
        "ValidateService",
    ] {
        assert_eq!(event(&s, e)["status"], "Succeeded", "{e}: {s:#}");
    }
    let ran = hook_lines(&agents[0]);
    assert!(
        ran.iter().any(|l| l.starts_with("ValidateService ")),
        "{ran:?}"
    );
}

#[test]
fn a_command_the_agent_does_not_know_fails_as_unsupported() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 1);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    bed.control.set_first_command(Some("UpdateDeploymentAgent"));
    let d = deploy_version(&bed, "e2e-fidelity", "v1", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Failed",
        "{}",
        logs(&agents)
    );
    let s = instance_summary(&bed, &d, &agents[0].imds.instance_id);
    let e = event(&s, "UpdateDeploymentAgent");
    assert_eq!(e["status"], "Failed", "{s:#}");
    assert_eq!(e["diagnostics"]["errorCode"], "UnknownError", "{s:#}");
    assert_eq!(
        message(e),
        "Unsupported command type: UpdateDeploymentAgent."
    );
    assert!(hook_lines(&agents[0]).is_empty(), "nothing ran");
}
