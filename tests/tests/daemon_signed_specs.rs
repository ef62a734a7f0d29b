//! Deployment specifications are signed. By default the agent accepts what
//! the official 2.x accepts (the signature over the content, with the
//! certificate the message carries) and runs nothing from a tampered or
//! unsigned one; strict mode also refuses a signer that does not chain to
//! the trusted certificates or is not the region's, and in the default mode
//! its verdict is logged and shown by `status`.

use std::fs;

use serde_json::Value;
use testbed::bed::{Agent, Testbed};
use testbed::control::Tamper;
use testbed::scenario::*;

/// What strict mode refuses, and the reason it gives: the shapes a real
/// specification may have that only the chain and subject checks see.
const STRICT_REFUSALS: [(Tamper, &str); 3] = [
    // How a real specification most likely looks against the shipped chain.
    (Tamper::ExpiredChain, "certificate has expired"),
    (
        Tamper::UntrustedSigner,
        "does not chain to the trusted certificates",
    ),
    (
        Tamper::WrongSubject,
        "CN=codedeploy-signer-eu-west-1.amazonaws.com",
    ),
];

fn group_id(bed: &Testbed) -> String {
    bed.control
        .with_state(|s| s.groups.values().next().unwrap().id.clone())
}

fn strict_check(a: &Agent) -> Value {
    let p = a.dir.join("pid/codedeploy-agent.status.json");
    let s: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    s["spec_check"].clone()
}

fn status_lines(a: &Agent) -> String {
    let out = std::process::Command::new(testbed::agent_bin())
        .arg("--config_file")
        .arg(&a.config)
        .arg("status")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deploy with `mode`; it must fail before any script, and the previous
/// revision stays.
fn refused(bed: &Testbed, agents: &[Agent], mode: Tamper, expect: &str) {
    let a = &agents[0];
    let ran_before = hook_lines(a);
    bed.control.set_tamper(Some(mode));
    let d = deploy_version(bed, "e2e-signed", &format!("{mode:?}"), "zip", 0);
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Failed",
        "{mode:?}\n{}",
        logs(agents)
    );
    let s = instance_summary(bed, &d, &a.imds.instance_id);
    let stop = event(&s, "ApplicationStop");
    assert_eq!(stop["status"], "Failed", "{mode:?}: {s:#}");
    let msg = message(stop);
    assert!(msg.contains(expect), "{mode:?}: {msg}");
    assert_eq!(event(&s, "DownloadBundle")["status"], "Skipped", "{mode:?}");
    assert_eq!(hook_lines(a), ran_before, "{mode:?}: a script ran");
    assert!(!a
        .root()
        .join(format!("{}/{d}", group_id(bed)))
        .join("deployment-archive")
        .exists());
    assert_eq!(
        fs::read_to_string(a.dir.join("www/index.html")).unwrap(),
        "<h1>v1</h1>\n"
    );
    bed.control.set_tamper(None);
}

fn first_deployment(bed: &Testbed, agents: &[Agent]) {
    setup_group(bed, "CodeDeployDefault.OneAtATime");
    let good = deploy_version(bed, "e2e-signed", "v1", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&good, LIMIT),
        "Succeeded",
        "{}",
        logs(agents)
    );
}

#[test]
fn by_default_tampered_or_unsigned_specifications_run_nothing() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 1);
    first_deployment(&bed, &agents);
    refused(
        &bed,
        &agents,
        Tamper::Content,
        "signature verification of the deployment specification failed",
    );
    refused(
        &bed,
        &agents,
        Tamper::Unsigned,
        "unsupported deployment specification format \"TEXT/JSON\"",
    );
}

#[test]
fn by_default_what_the_official_agent_accepts_deploys_and_the_strict_verdict_is_shown() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 1);
    first_deployment(&bed, &agents);
    let a = &agents[0];
    assert_eq!(
        strict_check(a)["refusal"],
        Value::Null,
        "{}",
        strict_check(a)
    );
    for (mode, why) in STRICT_REFUSALS {
        bed.control.set_tamper(Some(mode));
        let d = deploy_version(&bed, "e2e-signed", &format!("{mode:?}"), "zip", 0);
        assert_eq!(
            bed.wait_deployment(&d, LIMIT),
            "Succeeded",
            "{mode:?}\n{}",
            logs(&agents)
        );
        let check = strict_check(a);
        assert_eq!(check["deployment"], d.as_str(), "{check}");
        assert_eq!(check["strict"], false, "{check}");
        let refusal = check["refusal"].as_str().unwrap_or_default();
        assert!(refusal.contains(why), "{mode:?}: {check}");
        let status = status_lines(a);
        assert!(
            status.contains(&format!(
                "deployment {d}: strict verification (off) would refuse"
            )),
            "{status}"
        );
        assert!(
            a.log()
                .contains("strict verification (off) would refuse this specification"),
            "{mode:?}"
        );
    }
}

#[test]
fn strict_mode_refuses_what_it_cannot_trust_with_the_reason() {
    testbed::require_root();
    let bed = Testbed::new();
    let mut a = bed.instance_with(
        "i-0e2e0000",
        &[("role", "web")],
        testbed::imds::ImdsMode::V2Required,
        ":strict_deployment_spec_verification: true\n",
    );
    a.start();
    let agents = vec![a];
    first_deployment(&bed, &agents);
    let all = STRICT_REFUSALS.into_iter().chain([(
        Tamper::Content,
        "signature verification of the deployment specification failed",
    )]);
    for (mode, why) in all {
        refused(&bed, &agents, mode, why);
    }
    let check = strict_check(&agents[0]);
    assert_eq!(check["strict"], true, "{check}");
    bed.control.set_tamper(None);
    let after = deploy_version(&bed, "e2e-signed", "v2", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&after, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    assert_eq!(
        fs::read_to_string(agents[0].dir.join("www/index.html")).unwrap(),
        "<h1>v2</h1>\n"
    );
}
