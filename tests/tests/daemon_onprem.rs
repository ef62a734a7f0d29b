//! Daemon behaviour an on-premises host shows, asserted only through what
//! the service sees and what lands on disk, so that the same tests run with
//! the official client as the binary (`.ci/run` runs them once with
//! `CODEDEPLOY_AGENT_BIN=<oracle>/agent-bin`): proof that the testbed answers
//! as the official client expects, and that this agent matches it.

use std::fs;

use testbed::bed::Testbed;
use testbed::control::FaultKind;
use testbed::scenario::*;

#[test]
fn a_redeploy_runs_the_previous_revisions_application_stop_and_installs_the_new_one() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = on_premises_fleet(&bed, 1);
    setup_on_premises_group(&bed, "CodeDeployDefault.OneAtATime");
    let d1 = deploy_version(&bed, "e2e-onprem", "v1", "tgz", 0);
    assert_eq!(
        bed.wait_deployment(&d1, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    let d2 = deploy_version(&bed, "e2e-onprem", "v2", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&d2, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    let a = &agents[0];
    assert_eq!(
        fs::read_to_string(a.dir.join("www/index.html")).unwrap(),
        "<h1>v2</h1>\n"
    );
    let ran = hook_lines(a);
    // ApplicationStop of the second deployment ran v1's script, which
    // records the deployment it runs in.
    assert!(
        ran.iter()
            .any(|l| l.starts_with(&format!("ApplicationStop {d2} "))),
        "{ran:?}"
    );
    let events: Vec<&str> = ran
        .iter()
        .filter(|l| l.contains(&d2))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "ApplicationStop",
            "BeforeInstall",
            "AfterInstall",
            "ApplicationStart",
            "ValidateService"
        ]
    );
}

#[test]
fn a_failing_script_is_reported_with_the_official_message_and_its_output() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = on_premises_fleet(&bed, 1);
    setup_on_premises_group(&bed, "CodeDeployDefault.OneAtATime");
    let d = deploy_version(&bed, "e2e-onprem", "v1", "zip", 3);
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Failed",
        "{}",
        logs(&agents)
    );
    let s = instance_summary(&bed, &d, "onprem-0");
    let e = event(&s, "ValidateService");
    assert_eq!(e["status"], "Failed", "{s:#}");
    assert_eq!(e["diagnostics"]["errorCode"], "ScriptFailed", "{s:#}");
    assert_eq!(e["diagnostics"]["scriptName"], "hooks/validate.sh", "{s:#}");
    assert_eq!(
        message(e),
        "Script at specified location: hooks/validate.sh failed with exit code 3"
    );
    let tail = e["diagnostics"]["logTail"].as_str().unwrap_or_default();
    assert!(
        tail.contains("[stderr]health check failed: 503 from localhost:8080"),
        "{tail}"
    );
}

#[test]
fn acknowledgements_without_a_status_and_throttling_do_not_stop_a_deployment() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = on_premises_fleet(&bed, 1);
    setup_on_premises_group(&bed, "CodeDeployDefault.OneAtATime");
    bed.control.inject(
        Some("PutHostCommandAcknowledgement"),
        FaultKind::AckWithoutStatus,
        3,
    );
    bed.control
        .inject(Some("PollHostCommand"), FaultKind::Throttle, 2);
    let d = deploy_version(&bed, "e2e-onprem", "v1", "tgz", 0);
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    assert_eq!(bed.control.faults_pending(), 0);
    let s = instance_summary(&bed, &d, "onprem-0");
    assert_eq!(event(&s, "ValidateService")["status"], "Succeeded", "{s:#}");
}
