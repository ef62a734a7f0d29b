//! `codedeploy-agent lb plan` on a host of the testbed, with the host's own
//! identity and credentials: what a drain would change, read-only, and a
//! non-zero exit for what would fail a deployment.

use std::process::{Command, Output};

use testbed::bundle::Bundle;
use testbed::lb::LbFault;
use testbed::lbfleet::{Front, LbFleet};
use testbed::require_root;

/// `lb plan` on instance 0 for an appspec holding `section`.
fn plan(f: &LbFleet, section: &str) -> (i32, String) {
    let dir = f.bed.path("plan-bundle");
    Bundle::new(&dir).appspec(&format!("version: 0.0\nos: linux\n{section}"));
    let a = &f.agents[0];
    let out: Output = Command::new(testbed::agent_bin())
        .arg("--config_file")
        .arg(&a.config)
        .args(["lb", "plan"])
        .arg(&dir)
        .current_dir(&a.dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &a.dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_target_group_plan_lists_the_steps_and_actions_and_changes_nothing() {
    require_root();
    let f = LbFleet::start(Front::TargetGroup, 1);
    f.serve_v1(&f.section());
    let before = f.plane.changes().len();
    let section = format!("{}  drainUntil: idle\n", f.section());
    let (code, out) = plan(&f, &section);
    assert_eq!(code, 0, "{out}");
    eprintln!("{out}");
    let port = f.port;
    for want in [
        format!("host: {} ({})", f.ids[0], f.ips[0]),
        format!(
            "1. DeregisterTargets web {} ports [{port}] (deregistration delay 3 s)",
            f.ids[0]
        ),
        format!(
            "2. restore: RegisterTargets web {} ports [{port}]",
            f.ids[0]
        ),
        "  elasticloadbalancing:DeregisterTargets".into(),
        "  elasticloadbalancing:RegisterTargets".into(),
        format!("connections now to web port(s) [{port}] (layer 7): "),
    ] {
        assert!(out.contains(&want), "missing {want:?} in\n{out}");
    }
    assert_eq!(f.plane.changes().len(), before, "a plan changes nothing");
    assert_eq!(f.plane.serving("web"), 1);
    assert_eq!(f.journals(), 0, "and writes no journal");
}

#[test]
fn a_standby_the_minimum_forbids_fails_the_plan() {
    require_root();
    let f = LbFleet::start_asg(2, 2, "CodeDeployDefault.OneAtATime");
    f.serve_v1(&f.section());
    let section = "loadBalancer:\n  autoScaling:\n    action: standby\n    minSize: fail\n";
    let (code, out) = plan(&f, section);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("would fail: EnterStandby would take Auto Scaling group web-asg below its MinSize 2 (desired 2); minSize: fail refuses the drain"),
        "{out}"
    );
    // minSize: lower plans the lowering and its return instead.
    let (code, out) = plan(&f, "loadBalancer:\n  autoScaling:\n    action: standby\n");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("UpdateAutoScalingGroup web-asg MinSize 2 -> 1"),
        "{out}"
    );
    assert!(
        out.contains("restore: UpdateAutoScalingGroup web-asg MinSize back to 2"),
        "{out}"
    );
    assert_eq!(f.group_state().unwrap().0, 2, "the minimum is untouched");
}

#[test]
fn a_describe_call_the_host_may_not_make_fails_the_plan() {
    require_root();
    let f = LbFleet::start(Front::TargetGroup, 1);
    f.serve_v1(&f.section());
    f.plane
        .inject(Some("DescribeTargetHealth"), LbFault::AccessDenied, 100);
    let (code, out) = plan(&f, &f.section());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("would fail:") && out.contains("DescribeTargetHealth"),
        "{out}"
    );
}
