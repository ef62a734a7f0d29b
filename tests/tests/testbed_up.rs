//! `testbed up` driven as a user drives CodeDeploy: the AWS CLI, unchanged,
//! with only the environment `up` prints; the seed posts' flow of an Auto
//! Scaling group behind a target group: an application, a deployment group
//! by Auto Scaling group, `deploy push` of the user's own bundle, a
//! deployment, and the fleet seen through CodeDeploy, Auto Scaling and ELB.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::bundle::Bundle;
use testbed::require_root;

struct Up {
    child: Child,
    env: Vec<(String, String)>,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn up(args: &[&str]) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_testbed"))
        .arg("up")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("testbed up");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut env = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("testbed up said ready");
        if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
            env.push((k.to_string(), v.to_string()));
        }
        if line.starts_with("ready") {
            break;
        }
    }
    Up { child, env }
}

impl Up {
    /// `aws <args>` with nothing but what `up` printed (and a HOME).
    fn aws(&self, home: &Path, args: &[&str]) -> Value {
        let out = Command::new("python3")
            .args(["-m", "awscli", "--output", "json"])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aws {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text).unwrap_or(Value::String(text.into_owned()))
    }
}

/// The user's bundle: the fixture app, started and stopped by its hooks,
/// on the address and port the host gives it.
fn bundle(dir: &Path) {
    let b = Bundle::new(dir);
    b.file("app.py", include_str!("../fixtures/lbapp.py"));
    b.script(
        "scripts/start.sh",
        "#!/bin/sh\nset -e\ncd \"$(dirname \"$0\")/..\"\nsetsid python3 app.py --ip \"$APP_IP\" --port \"$APP_PORT\" --instance \"$APP_INSTANCE\" --revision seed --ready-after 1 >>\"$APP_DIR/app.log\" 2>&1 </dev/null &\necho $! > \"$APP_DIR/app.pid\"\n",
    );
    b.script(
        "scripts/stop.sh",
        "#!/bin/sh\n[ -f \"$APP_DIR/app.pid\" ] || exit 0\nkill \"$(cat \"$APP_DIR/app.pid\")\" 2>/dev/null || true\nrm -f \"$APP_DIR/app.pid\"\n",
    );
    b.appspec("version: 0.0\nos: linux\nhooks:\n  ApplicationStop:\n    - location: scripts/stop.sh\n  ApplicationStart:\n    - location: scripts/start.sh\nloadBalancer:\n  autoScaling:\n    action: standby\n  healthGate:\n    interval: 1\n    timeout: 30\n");
}

#[test]
fn the_seed_posts_cli_flow_against_testbed_up() {
    require_root();
    let home = tempfile::tempdir().unwrap();
    let u = up(&["--instances", "2", "--front", "auto-scaling"]);
    let aws = |args: &[&str]| u.aws(home.path(), args);
    aws(&["s3", "mb", "s3://seed-bucket"]);
    aws(&["deploy", "create-application", "--application-name", "seed"]);
    aws(&[
        "deploy",
        "create-deployment-group",
        "--application-name",
        "seed",
        "--deployment-group-name",
        "seed-asg",
        "--auto-scaling-groups",
        "web-asg",
        "--deployment-config-name",
        "CodeDeployDefault.OneAtATime",
        "--service-role-arn",
        "arn:aws:iam::123456789012:role/CodeDeployServiceRole",
    ]);
    let src = home.path().join("src");
    bundle(&src);
    let pushed = aws(&[
        "deploy",
        "push",
        "--application-name",
        "seed",
        "--s3-location",
        "s3://seed-bucket/seed.zip",
        "--source",
        src.to_str().unwrap(),
    ]);
    assert!(
        format!("{pushed}").contains("create-deployment"),
        "{pushed}"
    );
    let d = aws(&[
        "deploy",
        "create-deployment",
        "--application-name",
        "seed",
        "--deployment-group-name",
        "seed-asg",
        "--s3-location",
        "bucket=seed-bucket,key=seed.zip,bundleType=zip",
    ]);
    let id = d["deploymentId"].as_str().unwrap().to_string();
    let mut status = String::new();
    testbed::wait_until(Duration::from_secs(180), "the deployment to end", || {
        let info = aws(&["deploy", "get-deployment", "--deployment-id", &id]);
        status = info["deploymentInfo"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        matches!(status.as_str(), "Succeeded" | "Failed" | "Stopped")
    });
    assert_eq!(status, "Succeeded");
    let listed = aws(&[
        "deploy",
        "list-deployment-instances",
        "--deployment-id",
        &id,
    ]);
    assert_eq!(
        listed["instancesList"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );

    // The fleet, as Auto Scaling and ELB see it afterwards.
    let acts = aws(&[
        "autoscaling",
        "describe-scaling-activities",
        "--auto-scaling-group-name",
        "web-asg",
    ]);
    let causes: Vec<&str> = acts["Activities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["Description"].as_str())
        .collect();
    assert_eq!(
        causes.iter().filter(|c| c.contains("to Standby")).count(),
        2,
        "{causes:?}"
    );
    assert_eq!(
        causes
            .iter()
            .filter(|c| c.contains("out of Standby"))
            .count(),
        2,
        "{causes:?}"
    );
    let members = aws(&["autoscaling", "describe-auto-scaling-instances"]);
    let states: Vec<&str> = members["AutoScalingInstances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["LifecycleState"].as_str())
        .collect();
    assert_eq!(states, ["InService", "InService"], "{members}");
    let arn = u
        .env
        .iter()
        .find(|(k, _)| k == "AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2")
        .map(|_| testbed::lb::tg_arn("web"))
        .unwrap();
    let health = aws(&[
        "elbv2",
        "describe-target-health",
        "--target-group-arn",
        &arn,
    ]);
    let healthy = health["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["TargetHealth"]["State"] == "healthy")
        .count();
    assert_eq!(healthy, 2, "{health}");
    let groups = aws(&[
        "autoscaling",
        "describe-auto-scaling-groups",
        "--auto-scaling-group-names",
        "web-asg",
    ]);
    let g = &groups["AutoScalingGroups"][0];
    assert_eq!(
        (g["MinSize"].as_i64(), g["DesiredCapacity"].as_i64()),
        (Some(2), Some(2)),
        "{g}"
    );
}
