//! The daemon end to end: real agent processes (simulated EC2 instances)
//! against the testbed control plane, driven by the AWS CLI, with
//! revisions in moto S3 and the loopback GitHub.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use testbed::bed::{Agent, Testbed};
use testbed::bundle::Bundle;

const LIMIT: Duration = Duration::from_secs(60);

/// A revision whose hooks record what ran, where (relative paths resolve
/// in the agent's working directory: its own instance directory).
fn recording_bundle(dir: &Path, version: &str, validate_exit: i32) -> Bundle {
    let b = Bundle::new(dir);
    b.file("site/index.html", &format!("<h1>{version}</h1>\n"));
    b.script(
        "hooks/record.sh",
        "#!/bin/sh\necho \"$LIFECYCLE_EVENT $DEPLOYMENT_ID ${BUNDLE_BUCKET:-}${BUNDLE_COMMIT:-}\" >> hooks.log\n",
    );
    b.script(
        "hooks/validate.sh",
        &format!("#!/bin/sh\necho \"$LIFECYCLE_EVENT $DEPLOYMENT_ID\" >> hooks.log\necho checking the service\necho 'health check failed: 503 from localhost:8080' >&2\nexit {validate_exit}\n"),
    );
    b.appspec(
        "version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: www\nhooks:\n  ApplicationStop:\n    - location: hooks/record.sh\n  BeforeInstall:\n    - location: hooks/record.sh\n  AfterInstall:\n    - location: hooks/record.sh\n  ApplicationStart:\n    - location: hooks/record.sh\n  ValidateService:\n    - location: hooks/validate.sh\n      timeout: 60\n",
    );
    b
}

fn fleet(bed: &Testbed, n: usize) -> Vec<Agent> {
    (0..n)
        .map(|i| {
            let mut a = bed.instance(&format!("i-0e2e{i:04}"), &[("role", "web")]);
            a.start();
            a
        })
        .collect()
}

fn setup_group(bed: &Testbed, config: &str) {
    bed.aws_ok(&["deploy", "create-application", "--application-name", "shop"]);
    bed.aws_ok(&[
        "deploy",
        "create-deployment-group",
        "--application-name",
        "shop",
        "--deployment-group-name",
        "web",
        "--deployment-config-name",
        config,
        "--ec2-tag-filters",
        "Key=role,Value=web,Type=KEY_AND_VALUE",
        "--service-role-arn",
        "arn:aws:iam::123456789012:role/CodeDeployServiceRole",
    ]);
}

fn create_s3_deployment(bed: &Testbed, bucket: &str, key: &str, bundle_type: &str) -> String {
    let out = bed.aws_ok(&[
        "deploy",
        "create-deployment",
        "--application-name",
        "shop",
        "--deployment-group-name",
        "web",
        "--s3-location",
        &format!("bucket={bucket},key={key},bundleType={bundle_type}"),
    ]);
    out["deploymentId"].as_str().expect("deploymentId").to_string()
}

fn instance_summary(bed: &Testbed, deployment: &str, instance: &str) -> Value {
    bed.aws_ok(&["deploy", "get-deployment-instance", "--deployment-id", deployment, "--instance-id", instance])["instanceSummary"].clone()
}

/// Every host ran every event, and (OneAtATime) no two hosts overlapped.
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
        let start = events.iter().filter_map(|e| e["startTime"].as_f64()).fold(f64::MAX, f64::min);
        let end = events.iter().filter_map(|e| e["endTime"].as_f64()).fold(0.0, f64::max);
        windows.push((start, end, a.imds.instance_id.clone()));
    }
    windows.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    for w in windows.windows(2) {
        assert!(w[0].1 <= w[1].0, "hosts overlapped: {} ended at {} after {} started at {}", w[0].2, w[0].1, w[1].2, w[1].0);
    }
}

fn hook_lines(a: &Agent) -> Vec<String> {
    fs::read_to_string(a.dir.join("hooks.log")).unwrap_or_default().lines().map(str::to_string).collect()
}

#[test]
fn three_hosts_one_at_a_time_from_s3_zip_then_tgz() {
    testbed::require_root();
    let bed = Testbed::new();
    let agents = fleet(&bed, 3);
    setup_group(&bed, "CodeDeployDefault.OneAtATime");

    let zip = recording_bundle(&bed.path("v1"), "v1", 0).zip(&bed.path("v1.zip"));
    bed.upload("e2e-zip", "shop/v1.zip", &zip);
    let d1 = create_s3_deployment(&bed, "e2e-zip", "shop/v1.zip", "zip");
    assert_eq!(bed.wait_deployment(&d1, LIMIT), "Succeeded", "{}", agents[0].log_tail());
    let info = bed.aws_ok(&["deploy", "get-deployment", "--deployment-id", &d1])["deploymentInfo"].clone();
    assert_eq!(info["status"], "Succeeded");
    assert_eq!(info["deploymentOverview"]["Succeeded"], 3, "{info:#}");
    assert_one_at_a_time(&bed, &d1, &agents);
    for a in &agents {
        assert_eq!(fs::read_to_string(a.dir.join("www/index.html")).unwrap(), "<h1>v1</h1>\n");
        let lines = hook_lines(a);
        let expected: Vec<String> = ["BeforeInstall", "AfterInstall", "ApplicationStart"]
            .iter()
            .map(|e| format!("{e} {d1} e2e-zip"))
            .chain([format!("ValidateService {d1}")])
            .collect();
        assert_eq!(lines, expected, "first deployment: no ApplicationStop (nothing deployed before)");
    }

    // The same group, a tgz revision: ApplicationStop now runs the previous
    // revision's script, and the new files replace the old.
    let tgz = recording_bundle(&bed.path("v2"), "v2", 0).tgz(&bed.path("v2.tgz"));
    bed.upload("e2e-zip", "shop/v2.tgz", &tgz);
    let d2 = create_s3_deployment(&bed, "e2e-zip", "shop/v2.tgz", "tgz");
    assert_eq!(bed.wait_deployment(&d2, LIMIT), "Succeeded", "{}", agents[1].log_tail());
    assert_one_at_a_time(&bed, &d2, &agents);
    for a in &agents {
        assert_eq!(fs::read_to_string(a.dir.join("www/index.html")).unwrap(), "<h1>v2</h1>\n");
        let lines = hook_lines(a);
        assert_eq!(lines[4], format!("ApplicationStop {d2} e2e-zip"), "{lines:#?}");
        assert_eq!(lines.len(), 9, "{lines:#?}");
    }
}

#[allow(dead_code)]
fn unused(_: PathBuf) {}
