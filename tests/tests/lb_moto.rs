//! The loadBalancer calls against moto (docs/testbed.md, LB plane): an implementation
//! of the Auto Scaling, Classic ELB and ELBv2 query APIs that is not ours
//! checks that the requests the SDK clients make for the drain and the
//! restore are well formed, and that a whole drain and restore goes through.
//! The testbed's own plane proves the behaviour under load; this proves we
//! do not only speak a dialect our own plane understands.

use serde_json::Value;
use testbed::bed::Testbed;
use testbed::bundle::Bundle;
use testbed::require_root;
use testbed::scenario::{create_s3_deployment, setup_group, LIMIT};

const SECTION: &str = "loadBalancer:
  autoScaling:
    action: standby
    minSize: lower
    suspendProcesses: [AZRebalance]
  classicLoadBalancers: auto
  targetGroups: auto
  healthGate:
    url: none
";

fn text(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        cur = match p.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[*p],
        };
    }
    cur.as_str().unwrap_or_default().to_string()
}

/// The log record (its timeline spans several lines) holding `what` and
/// `deployment`.
fn record(log: &str, what: &str, deployment: &str) -> Option<String> {
    let starts = |l: &str| l.starts_with("20") && l.get(4..5) == Some("-");
    let mut lines = log
        .lines()
        .skip_while(|l| !(l.contains(what) && l.contains(deployment)));
    let first = lines.next()?;
    let rest: Vec<&str> = lines.take_while(|l| !starts(l)).collect();
    Some(format!("{first}\n{}", rest.join("\n")))
}

/// An Auto Scaling group (min = desired = 1) whose instance is also
/// registered directly with a target group and a Classic LB; names carry
/// `tag` because moto is shared by every test of the process.
fn moto_world(bed: &Testbed, tag: &str) -> (String, String, String, String) {
    let (lt, asg, tg, clb) = (
        format!("lt-{tag}"),
        format!("asg-{tag}"),
        format!("tg-{tag}"),
        format!("clb-{tag}"),
    );
    let ami = text(
        &bed.aws_ok(&["ec2", "describe-images", "--owners", "amazon"]),
        &["Images", "0", "ImageId"],
    );
    bed.aws_ok(&[
        "ec2",
        "create-launch-template",
        "--launch-template-name",
        &lt,
        "--launch-template-data",
        &format!(r#"{{"ImageId":"{ami}","InstanceType":"t3.micro"}}"#),
    ]);
    bed.aws_ok(&[
        "autoscaling",
        "create-auto-scaling-group",
        "--auto-scaling-group-name",
        &asg,
        "--launch-template",
        &format!("LaunchTemplateName={lt}"),
        "--min-size",
        "1",
        "--max-size",
        "3",
        "--desired-capacity",
        "1",
        "--availability-zones",
        "us-east-1a",
    ]);
    let groups = bed.aws_ok(&[
        "autoscaling",
        "describe-auto-scaling-groups",
        "--auto-scaling-group-names",
        &asg,
    ]);
    let id = text(
        &groups,
        &["AutoScalingGroups", "0", "Instances", "0", "InstanceId"],
    );
    assert!(id.starts_with("i-"), "{groups:#}");
    let vpc = text(
        &bed.aws_ok(&["ec2", "describe-vpcs"]),
        &["Vpcs", "0", "VpcId"],
    );
    let created = bed.aws_ok(&[
        "elbv2",
        "create-target-group",
        "--name",
        &tg,
        "--protocol",
        "HTTP",
        "--port",
        "8080",
        "--vpc-id",
        &vpc,
        "--target-type",
        "instance",
    ]);
    let tg_arn = text(&created, &["TargetGroups", "0", "TargetGroupArn"]);
    bed.aws_ok(&[
        "elbv2",
        "modify-target-group-attributes",
        "--target-group-arn",
        &tg_arn,
        "--attributes",
        "Key=deregistration_delay.timeout_seconds,Value=1",
    ]);
    bed.aws_ok(&[
        "elbv2",
        "register-targets",
        "--target-group-arn",
        &tg_arn,
        "--targets",
        &format!("Id={id},Port=8080"),
    ]);
    bed.aws_ok(&[
        "elb",
        "create-load-balancer",
        "--load-balancer-name",
        &clb,
        "--listeners",
        "Protocol=HTTP,LoadBalancerPort=80,InstanceProtocol=HTTP,InstancePort=8080",
        "--availability-zones",
        "us-east-1a",
    ]);
    bed.aws_ok(&[
        "elb",
        "register-instances-with-load-balancer",
        "--load-balancer-name",
        &clb,
        "--instances",
        &id,
    ]);
    (id, asg, tg_arn, clb)
}

#[test]
fn drain_and_restore_go_through_moto() {
    require_root();
    let bed = Testbed::new();
    let tag = format!("{}", std::process::id());
    let (id, asg, tg_arn, clb) = moto_world(&bed, &tag);
    let extra = format!(
        ":autoscaling_endpoint: http://{m}\n:elb_endpoint: http://{m}\n:load_balancer_poll_interval_ms: 200\n",
        m = bed.moto
    );
    let mut agent = bed.instance_at(&id, &[("role", "web")], "127.0.0.1", &extra);
    agent.start();
    setup_group(&bed, "CodeDeployDefault.OneAtATime");

    let dir = bed.path("bundle");
    let b = Bundle::new(&dir);
    b.file("index.html", "moto\n");
    b.appspec(&format!("version: 0.0\nos: linux\n{SECTION}"));
    let file = b.tgz(&bed.path("moto.tgz"));
    let bucket = format!("moto-lb-{tag}");
    bed.upload(&bucket, "rev.tgz", &file);
    let d = create_s3_deployment(&bed, &format!("bucket={bucket},key=rev.tgz,bundleType=tgz"));
    assert_eq!(
        bed.wait_deployment(&d, LIMIT),
        "Succeeded",
        "{}",
        agent.log_tail()
    );

    // Every step was taken: the drain named all three, the restore ended.
    let log = agent.log();
    let drain = record(&log, "loadBalancer drain", &d)
        .unwrap_or_else(|| panic!("no drain logged:\n{}", agent.log_tail()));
    for step in [
        "suspend: ",
        "min-size: ",
        "EnterStandby ",
        "is Standby",
        "deregister: target group",
        "deregister: classic load balancer",
    ] {
        assert!(
            drain.contains(step),
            "{step} missing from the drain: {drain}"
        );
    }
    let restore = record(&log, "loadBalancer restore", &d)
        .unwrap_or_else(|| panic!("no restore logged:\n{}", agent.log_tail()));
    for step in [
        "ExitStandby ",
        "is InService",
        "register: target group",
        "register: classic load balancer",
        "min-size: ",
        "resume: ",
    ] {
        assert!(
            restore.contains(step),
            "{step} missing from the restore: {restore}"
        );
    }

    // And moto agrees the host is back as it was.
    let g = bed.aws_ok(&[
        "autoscaling",
        "describe-auto-scaling-groups",
        "--auto-scaling-group-names",
        &asg,
    ]);
    let g = &g["AutoScalingGroups"][0];
    assert_eq!(
        (g["MinSize"].as_i64(), g["DesiredCapacity"].as_i64()),
        (Some(1), Some(1)),
        "{g:#}"
    );
    assert_eq!(g["Instances"][0]["LifecycleState"], "InService", "{g:#}");
    assert_eq!(
        g["SuspendedProcesses"].as_array().map(Vec::len),
        Some(0),
        "{g:#}"
    );
    let th = bed.aws_ok(&[
        "elbv2",
        "describe-target-health",
        "--target-group-arn",
        &tg_arn,
    ]);
    let targets: Vec<(String, i64)> = th["TargetHealthDescriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                text(t, &["Target", "Id"]),
                t["Target"]["Port"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(targets, vec![(id.clone(), 8080)], "{th:#}");
    let ih = bed.aws_ok(&[
        "elb",
        "describe-instance-health",
        "--load-balancer-name",
        &clb,
    ]);
    assert_eq!(
        text(&ih, &["InstanceStates", "0", "InstanceId"]),
        id,
        "{ih:#}"
    );
    let journals = std::fs::read_dir(agent.root().join("load-balancer"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(journals, 0, "no journal left");
}

#[test]
fn lb_plan_against_moto_lists_every_step_and_changes_nothing() {
    require_root();
    let bed = Testbed::new();
    let tag = format!("plan{}", std::process::id());
    let (id, asg, _tg_arn, clb) = moto_world(&bed, &tag);
    let extra = format!(
        ":autoscaling_endpoint: http://{m}\n:elb_endpoint: http://{m}\n",
        m = bed.moto
    );
    let agent = bed.instance_at(&id, &[("role", "web")], "127.0.0.1", &extra);
    let dir = bed.path("plan");
    Bundle::new(&dir).appspec(&format!("version: 0.0\nos: linux\n{SECTION}"));
    let out = std::process::Command::new(testbed::agent_bin())
        .arg("--config_file")
        .arg(&agent.config)
        .args(["lb", "plan"])
        .arg(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &agent.dir)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    for step in [
        format!("SuspendProcesses {asg} [\"AZRebalance\"]"),
        format!("UpdateAutoScalingGroup {asg} MinSize 1 -> 0"),
        format!("EnterStandby {asg} {id}"),
        format!("DeregisterInstancesFromLoadBalancer {clb} {id}"),
        format!("DeregisterTargets tg-{tag} {id} ports [8080]"),
        format!("restore: ExitStandby {asg} {id}"),
        format!("restore: UpdateAutoScalingGroup {asg} MinSize back to 1"),
    ] {
        assert!(said.contains(&step), "missing {step:?}:\n{said}");
    }
    let groups = bed.aws_ok(&[
        "autoscaling",
        "describe-auto-scaling-groups",
        "--auto-scaling-group-names",
        &asg,
    ]);
    assert_eq!(groups["AutoScalingGroups"][0]["MinSize"], 1, "{groups:#}");
    assert_eq!(
        text(
            &groups,
            &["AutoScalingGroups", "0", "Instances", "0", "LifecycleState"]
        ),
        "InService"
    );
    assert!(
        groups["AutoScalingGroups"][0]["SuspendedProcesses"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{groups:#}"
    );
}
