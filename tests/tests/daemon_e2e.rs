//! The daemon end to end: real agent processes (simulated EC2 instances)
//! against the testbed control plane, driven by the AWS CLI, with
//! revisions in moto S3 and the loopback GitHub.

use std::fs;

use testbed::bed::{Agent, Testbed};
use testbed::scenario::*;

/// Every host ran every event, and no two hosts were deployed at once.
fn assert_one_at_a_time(bed: &Testbed, deployment: &str, agents: &[Agent]) {
    let mut windows = Vec::new();
    for a in agents {
        let s = instance_summary(bed, deployment, &a.imds.instance_id);
        assert_eq!(s["status"], "Succeeded", "{s:#}");
        let events = s["lifecycleEvents"].as_array().unwrap();
        assert_eq!(events.len(), 7, "{s:#}");
        for e in events {
            assert_eq!(e["status"], "Succeeded", "{e:#}");
        }
        let start = events
            .iter()
            .filter_map(|e| e["startTime"].as_f64())
            .fold(f64::MAX, f64::min);
        let end = events
            .iter()
            .filter_map(|e| e["endTime"].as_f64())
            .fold(0.0, f64::max);
        windows.push((start, end, a.imds.instance_id.clone()));
    }
    windows.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    for w in windows.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "hosts overlapped: {} ended at {} after {} started at {}",
            w[0].2,
            w[0].1,
            w[1].2,
            w[1].0
        );
    }
}

#[test]
fn three_hosts_one_at_a_time_from_s3_zip_then_tgz() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 3);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");

    let d1 = deploy_version(&bed, "e2e-one", "v1", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&d1, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    let info = deployment_info(&bed, &d1);
    assert_eq!(info["status"], "Succeeded");
    assert_eq!(info["deploymentOverview"]["Succeeded"], 3, "{info:#}");
    assert_one_at_a_time(&bed, &d1, &agents);
    for a in &agents {
        assert_eq!(
            fs::read_to_string(a.dir.join("www/index.html")).unwrap(),
            "<h1>v1</h1>\n"
        );
        let expected: Vec<String> = ["BeforeInstall", "AfterInstall", "ApplicationStart"]
            .iter()
            .map(|e| format!("{e} {d1} e2e-one"))
            .chain([format!("ValidateService {d1}")])
            .collect();
        assert_eq!(
            hook_lines(a),
            expected,
            "first deployment: no ApplicationStop (nothing deployed before)"
        );
    }

    // A tgz revision: ApplicationStop now runs the previous revision's
    // script, and the new files replace the old.
    let d2 = deploy_version(&bed, "e2e-one", "v2", "tgz", 0);
    assert_eq!(
        bed.wait_deployment(&d2, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    assert_one_at_a_time(&bed, &d2, &agents);
    for a in &agents {
        assert_eq!(
            fs::read_to_string(a.dir.join("www/index.html")).unwrap(),
            "<h1>v2</h1>\n"
        );
        let lines = hook_lines(a);
        assert_eq!(lines.len(), 9, "{lines:#?}");
        assert_eq!(
            lines[4],
            format!("ApplicationStop {d2} e2e-one"),
            "{lines:#?}"
        );
    }
}

#[test]
fn github_revision_from_a_private_repository() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 3);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let sha = "3f786850e387550fdab836ed7e6dc881de23001b";
    // GitHub tarballs hold one top-level directory <owner>-<repo>-<sha>/.
    let b = recording_bundle(&bed.path("gh"), "from-github", 0);
    let tgz = b.tgz_with_prefix(&bed.path("gh.tgz"), &format!("acme-shop-{}", &sha[..7]));
    bed.github
        .publish("acme/shop", sha, "tarball", fs::read(&tgz).unwrap());
    bed.github.make_private("acme/shop", "gho_testbedtoken");
    bed.control.set_github_token(Some("gho_testbedtoken"));

    let d = deployment_id(bed.aws_ok(&[
        "deploy",
        "create-deployment",
        "--application-name",
        "shop",
        "--deployment-group-name",
        "web",
        "--github-location",
        &format!("repository=acme/shop,commitId={sha}"),
    ]));
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    for a in &agents {
        assert_eq!(
            fs::read_to_string(a.dir.join("www/index.html")).unwrap(),
            "<h1>from-github</h1>\n"
        );
        assert!(
            hook_lines(a).contains(&format!("BeforeInstall {d} {sha}")),
            "{:?}",
            hook_lines(a)
        );
        assert!(
            !a.log().contains("gho_testbedtoken"),
            "the token reached the log"
        );
    }
    assert_eq!(bed.github.api_requests(), 3);
    assert!(
        bed.github.leaked_authorization().is_empty(),
        "the token followed the redirect to the archive host"
    );
}

#[test]
fn failing_validate_service_fails_the_deployment_with_the_script_and_its_output() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 3);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let d = deploy_version(&bed, "e2e-fail", "broken", "zip", 3);
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Failed",
        "{}",
        logs(&agents)
    );

    let info = deployment_info(&bed, &d);
    assert_eq!(info["status"], "Failed");
    assert_eq!(
        info["errorInformation"]["code"], "HEALTH_CONSTRAINTS",
        "{info:#}"
    );
    assert_eq!(info["deploymentOverview"]["Failed"], 1, "{info:#}");
    assert_eq!(
        info["deploymentOverview"]["Skipped"], 2,
        "OneAtATime stops at the first failure: {info:#}"
    );

    let ids = bed.aws_ok(&["deploy", "list-deployment-instances", "--deployment-id", &d])
        ["instancesList"]
        .clone();
    let failed: Vec<serde_json::Value> = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|i| instance_summary(&bed, &d, i.as_str().unwrap()))
        .filter(|s| s["status"] == "Failed")
        .collect();
    assert_eq!(failed.len(), 1);
    let v = event(&failed[0], "ValidateService");
    assert_eq!(v["status"], "Failed");
    let diag = &v["diagnostics"];
    assert_eq!(diag["errorCode"], "ScriptFailed", "{diag:#}");
    assert_eq!(diag["scriptName"], "hooks/validate.sh", "{diag:#}");
    let tail = diag["logTail"].as_str().unwrap();
    assert!(tail.contains("[stdout]checking the service"), "{tail}");
    assert!(
        tail.contains("[stderr]health check failed: 503 from localhost:8080"),
        "{tail}"
    );
    assert!(
        diag["message"].as_str().unwrap().contains("exit code 3"),
        "{diag:#}"
    );

    // The deployments-targets view says the same.
    let target_id = failed[0]["instanceId"].as_str().unwrap();
    let t = bed.aws_ok(&[
        "deploy",
        "get-deployment-target",
        "--deployment-id",
        &d,
        "--target-id",
        target_id,
    ]);
    assert_eq!(
        t["deploymentTarget"]["instanceTarget"]["status"], "Failed",
        "{t:#}"
    );
}

#[test]
fn on_premises_instances_by_tag_with_iam_user_credentials() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = on_premises_fleet(&bed, 2);
    setup_on_premises_group(&bed, "CodeDeployDefault.AllAtOnce");
    let d = deploy_version(&bed, "e2e-onprem", "v1", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Succeeded",
        "{}",
        logs(&agents)
    );
    for a in &agents {
        assert_eq!(
            fs::read_to_string(a.dir.join("www/index.html")).unwrap(),
            "<h1>v1</h1>\n"
        );
        assert_eq!(
            a.imds.requests(),
            0,
            "an on-premises agent must not ask instance metadata"
        );
    }
}

#[test]
fn imdsv1_fallback_unless_disabled() {
    use testbed::imds::ImdsMode;
    testbed::require_root();
    let bed = Testbed::new();
    let mut old = bed.instance_with("i-0v1only01", &[("role", "web")], ImdsMode::V1Only, "");
    old.start();
    setup_group(&bed, "CodeDeployDefault.AllAtOnce");
    let d = deploy_version(&bed, "e2e-imds", "v1", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Succeeded",
        "{}",
        old.log_tail()
    );
    assert!(
        old.imds.v1_requests() > 0,
        "identity and credentials came through IMDSv1"
    );

    let mut strict = bed.instance_with(
        "i-0v1only02",
        &[("role", "other")],
        ImdsMode::V1Only,
        ":disable_imds_v1: true\n",
    );
    strict.start();
    let st = strict.wait_exit(LIMIT);
    assert!(!st.success());
    assert!(
        strict
            .log()
            .contains("IMDSv1 is disabled by :disable_imds_v1:"),
        "{}",
        strict.log_tail()
    );
    assert_eq!(strict.imds.v1_requests(), 0);
}

#[test]
fn everything_but_instance_metadata_goes_through_proxy_uri() {
    testbed::require_root();
    let bed = Testbed::new();
    let proxy = testbed::proxy::Proxy::start();
    let mut a = bed.instance_with(
        "i-0proxied1",
        &[("role", "web")],
        testbed::imds::ImdsMode::V2Required,
        &format!(":proxy_uri: {}\n", proxy.uri()),
    );
    a.start();
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let d = deploy_version(&bed, "e2e-proxy", "v1", "zip", 0);
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Succeeded",
        "{}",
        a.log_tail()
    );
    let seen = proxy.seen();
    let control = bed.control.addr.to_string();
    let s3 = bed.s3.addr.to_string();
    let imds = a.imds.addr.to_string();
    assert!(
        seen.iter().any(|s| s.ends_with(&control)),
        "commands API not proxied: {seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.ends_with(&s3)),
        "S3 not proxied: {seen:?}"
    );
    assert!(
        !seen.iter().any(|s| s.ends_with(&imds)),
        "instance metadata must not be proxied: {seen:?}"
    );
}
