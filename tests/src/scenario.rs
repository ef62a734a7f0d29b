//! Steps the daemon end-to-end tests share: a fleet of simulated EC2
//! instances, an application and group made with the AWS CLI, revisions
//! whose hooks record what ran.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::bed::{Agent, Testbed};
use crate::bundle::Bundle;

pub const LIMIT: Duration = Duration::from_secs(90);
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/CodeDeployServiceRole";

/// A revision whose hooks append `<event> <deployment> <bucket|commit>` to
/// `hooks.log` in the agent's working directory (its instance directory),
/// and whose ValidateService prints a diagnosis and exits `validate_exit`.
pub fn recording_bundle(dir: &Path, version: &str, validate_exit: i32) -> Bundle {
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
    b.appspec(&appspec_with(""));
    b
}

/// The recording appspec, with extra hook entries appended under `hooks:`.
pub fn appspec_with(extra_hooks: &str) -> String {
    format!("version: 0.0\nos: linux\nfiles:\n  - source: site\n    destination: www\nhooks:\n  ApplicationStop:\n    - location: hooks/record.sh\n  BeforeInstall:\n    - location: hooks/record.sh\n  AfterInstall:\n    - location: hooks/record.sh\n  ApplicationStart:\n    - location: hooks/record.sh\n  ValidateService:\n    - location: hooks/validate.sh\n      timeout: 60\n{extra_hooks}")
}

/// `n` instances tagged role=web, agents started.
pub fn fleet(bed: &Testbed, n: usize) -> Vec<Agent> {
    (0..n)
        .map(|i| {
            let mut a = bed.instance(&format!("i-0e2e{i:04}"), &[("role", "web")]);
            a.start();
            a
        })
        .collect()
}

/// Application `shop`, group `web` over the role=web instances.
pub fn setup_group(bed: &Testbed, config: &str) {
    setup_group_over(
        bed,
        config,
        &["--ec2-tag-filters", "Key=role,Value=web,Type=KEY_AND_VALUE"],
    );
}

/// Application `shop`, group `web` over the instances `targets` selects
/// (`--ec2-tag-filters ...` or `--on-premises-instance-tag-filters ...`).
pub fn setup_group_over(bed: &Testbed, config: &str, targets: &[&str]) {
    bed.aws_ok(&["deploy", "create-application", "--application-name", "shop"]);
    let mut args = vec![
        "deploy",
        "create-deployment-group",
        "--application-name",
        "shop",
        "--deployment-group-name",
        "web",
        "--deployment-config-name",
        config,
        "--service-role-arn",
        ROLE_ARN,
    ];
    args.extend_from_slice(targets);
    bed.aws_ok(&args);
}

/// `aws deploy get-deployment`'s deploymentInfo.
pub fn deployment_info(bed: &Testbed, deployment: &str) -> Value {
    bed.aws_ok(&["deploy", "get-deployment", "--deployment-id", deployment])["deploymentInfo"]
        .clone()
}

/// `aws deploy create-deployment --s3-location <location>`; returns the id.
pub fn create_s3_deployment(bed: &Testbed, location: &str) -> String {
    create_s3_deployment_with(bed, location, &[])
}

/// With more `create-deployment` options (`--ignore-application-stop-failures` ...).
pub fn create_s3_deployment_with(bed: &Testbed, location: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "deploy",
        "create-deployment",
        "--application-name",
        "shop",
        "--deployment-group-name",
        "web",
        "--s3-location",
        location,
    ];
    args.extend_from_slice(extra);
    deployment_id(bed.aws_ok(&args))
}

pub fn deployment_id(out: Value) -> String {
    out["deploymentId"]
        .as_str()
        .expect("deploymentId")
        .to_string()
}

/// Upload a recording bundle of `version` as `key` (zip or tgz by its
/// extension) and deploy it; returns the deployment id.
pub fn deploy_version(
    bed: &Testbed,
    bucket: &str,
    version: &str,
    kind: &str,
    validate_exit: i32,
) -> String {
    let b = recording_bundle(&bed.path(version), version, validate_exit);
    let key = format!("shop/{version}.{kind}");
    let file = bed.path(&format!("{version}.{kind}"));
    let file = if kind == "zip" {
        b.zip(&file)
    } else {
        b.tgz(&file)
    };
    bed.upload(bucket, &key, &file);
    create_s3_deployment(bed, &format!("bucket={bucket},key={key},bundleType={kind}"))
}

pub fn instance_summary(bed: &Testbed, deployment: &str, instance: &str) -> Value {
    bed.aws_ok(&[
        "deploy",
        "get-deployment-instance",
        "--deployment-id",
        deployment,
        "--instance-id",
        instance,
    ])["instanceSummary"]
        .clone()
}

pub fn event<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["lifecycleEvents"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["lifecycleEventName"] == name))
        .unwrap_or_else(|| panic!("no {name} in {summary:#}"))
}

/// The diagnostics message of a lifecycle event ("" when it has none).
pub fn message(event: &Value) -> String {
    event["diagnostics"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn hook_lines(a: &Agent) -> Vec<String> {
    fs::read_to_string(a.dir.join("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn logs(agents: &[Agent]) -> String {
    agents
        .iter()
        .map(|a| a.log_tail())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `n` on-premises instances registered with the CLI (IAM user
/// credentials), tagged fleet=dc1, agents started. Whichever binary runs
/// them (ours, or the official client through `CODEDEPLOY_AGENT_BIN`).
pub fn on_premises_fleet(bed: &Testbed, n: usize) -> Vec<Agent> {
    let mut agents = Vec::new();
    for i in 0..n {
        let name = format!("onprem-{i}");
        let arn = format!("arn:aws:iam::123456789012:user/{name}");
        let key = format!("AKIDONPREM{i:010}");
        bed.keys.add(
            &key,
            crate::sigv4::Secret {
                secret: format!("secret-{i}"),
                token: None,
                principal: arn.clone(),
            },
        );
        bed.aws_ok(&[
            "deploy",
            "register-on-premises-instance",
            "--instance-name",
            &name,
            "--iam-user-arn",
            &arn,
        ]);
        bed.aws_ok(&[
            "deploy",
            "add-tags-to-on-premises-instances",
            "--instance-names",
            &name,
            "--tags",
            "Key=fleet,Value=dc1",
        ]);
        agents.push(bed.on_premises(&name, &format!(
            "---\nregion: us-east-1\niam_user_arn: {arn}\naws_access_key_id: {key}\naws_secret_access_key: secret-{i}\n"
        )));
    }
    for a in &mut agents {
        a.start();
    }
    agents
}

/// Application `shop`, group `web` over the fleet=dc1 on-premises instances.
pub fn setup_on_premises_group(bed: &Testbed, config: &str) {
    setup_group_over(
        bed,
        config,
        &[
            "--on-premises-instance-tag-filters",
            "Key=fleet,Value=dc1,Type=KEY_AND_VALUE",
        ],
    );
}
