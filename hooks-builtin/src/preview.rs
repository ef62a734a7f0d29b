//! `codedeploy-agent lb plan`: what a drain of this host would change and
//! which IAM actions it needs, read-only. [`preview`] is pure, over the plan
//! discovery made; [`Drainer::plan`] runs discovery without writing anything.

use appspec::load_balancer::{Breadcrumbs, LoadBalancer, MinSizePolicy};

use crate::discover::Found;
use crate::journal::Journal;
use crate::select;
use crate::timeline::{Failure, Timeline};
use crate::Drainer;

/// Every read-only call discovery makes; each one it made answered.
pub const DESCRIBE_ACTIONS: &[&str] = &[
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeAutoScalingGroups",
    "elasticloadbalancing:DescribeLoadBalancers",
    "elasticloadbalancing:DescribeLoadBalancerAttributes",
    "elasticloadbalancing:DescribeInstanceHealth",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetGroupAttributes",
    "elasticloadbalancing:DescribeTargetHealth",
];

/// What a drain and its restore would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preview {
    /// The changes, in order, drain then restore.
    pub steps: Vec<String>,
    /// The IAM actions those changes call (sorted, once each). Whether they
    /// are allowed cannot be known without calling them: none of these APIs
    /// has a dry run.
    pub actions: Vec<&'static str>,
    /// What would fail the deployment.
    pub problems: Vec<String>,
}

/// The preview of `j`, the plan discovery made for `lb`.
pub fn preview(j: &Journal, lb: &LoadBalancer) -> Preview {
    let mut p = Preview::default();
    let act = |p: &mut Preview, a: &'static str, step: String| {
        p.actions.push(a);
        p.steps.push(step);
    };
    // The restore, in its order: back into service first (ExitStandby,
    // registrations), then the group's settings given back.
    let mut back = Vec::new();
    let mut undo = Vec::new();
    if let Some(g) = &j.group {
        match select::to_suspend(
            &g.name,
            &g.suspended_before,
            &lb.auto_scaling.suspend_processes,
        ) {
            Err(e) => p.problems.push(e),
            Ok(todo) if !todo.is_empty() => {
                act(
                    &mut p,
                    "autoscaling:SuspendProcesses",
                    format!("SuspendProcesses {} {todo:?}", g.name),
                );
                undo.push((
                    "autoscaling:ResumeProcesses",
                    format!("ResumeProcesses {} {todo:?}", g.name),
                ));
            }
            Ok(_) => {}
        }
        if let Some(new_min) = select::lowered_min(g.min_found, g.desired_found) {
            if lb.auto_scaling.min_size == MinSizePolicy::Fail {
                p.problems.push(format!(
                    "EnterStandby would take Auto Scaling group {} below its MinSize {} (desired {}); minSize: fail refuses the drain",
                    g.name, g.min_found, g.desired_found
                ));
            } else {
                if lb.auto_scaling.breadcrumbs != Breadcrumbs::Off {
                    act(
                        &mut p,
                        "autoscaling:CreateOrUpdateTags",
                        format!(
                            "CreateOrUpdateTags {} (the breadcrumb and the operator's minimum)",
                            g.name
                        ),
                    );
                    undo.push((
                        "autoscaling:DeleteTags",
                        format!("DeleteTags {} (the breadcrumbs)", g.name),
                    ));
                }
                act(
                    &mut p,
                    "autoscaling:UpdateAutoScalingGroup",
                    format!(
                        "UpdateAutoScalingGroup {} MinSize {} -> {new_min}",
                        g.name, g.min_found
                    ),
                );
                undo.push((
                    "autoscaling:UpdateAutoScalingGroup",
                    format!(
                        "UpdateAutoScalingGroup {} MinSize back to {}",
                        g.name, g.min_found
                    ),
                ));
            }
        }
        act(
            &mut p,
            "autoscaling:EnterStandby",
            format!(
                "EnterStandby {} {} (decrementing desired {})",
                g.name, j.instance_id, g.desired_found
            ),
        );
        back.push((
            "autoscaling:ExitStandby",
            format!("ExitStandby {} {}", g.name, j.instance_id),
        ));
    }
    let todo = select::deregistrations(j);
    for i in todo.classic {
        let c = &j.classic[i];
        act(
            &mut p,
            "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
            format!(
                "DeregisterInstancesFromLoadBalancer {} {}",
                c.name, j.instance_id
            ),
        );
        back.push((
            "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
            format!(
                "RegisterInstancesWithLoadBalancer {} {}",
                c.name, j.instance_id
            ),
        ));
    }
    for (i, ports) in todo.target_groups {
        let t = &j.target_groups[i];
        act(
            &mut p,
            "elasticloadbalancing:DeregisterTargets",
            format!(
                "DeregisterTargets {} {} ports {ports:?} (deregistration delay {} s)",
                t.name, j.instance_id, t.delay
            ),
        );
        back.push((
            "elasticloadbalancing:RegisterTargets",
            format!(
                "RegisterTargets {} {} ports {ports:?}",
                t.name, j.instance_id
            ),
        ));
    }
    for (a, step) in back.into_iter().chain(undo.into_iter().rev()) {
        act(&mut p, a, format!("restore: {step}"));
    }
    p.actions.sort_unstable();
    p.actions.dedup();
    p
}

impl Drainer {
    /// Discover as a drain would, change nothing: the discovery timeline,
    /// and the plan (or why nothing would be drained).
    pub async fn plan(
        &self,
        lb: &LoadBalancer,
    ) -> (String, Result<Result<(Journal, Preview), String>, Failure>) {
        let mut tl = Timeline::default();
        let found = self.discover("plan", "plan", lb, &mut tl).await;
        let out = found.map(|f| match f {
            Found::Plan(j) => {
                let p = preview(&j, lb);
                Ok((*j, p))
            }
            Found::Nothing(why) => Err(why),
        });
        (tl.text(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Group;
    use crate::test_support::{journal_with, section};

    fn journal(min: i32, desired: i32) -> Journal {
        let mut j = journal_with(Vec::new(), Vec::new());
        j.group = Some(Group {
            name: "web-asg".into(),
            min_found: min,
            desired_found: desired,
            ..Group::default()
        });
        j
    }

    #[test]
    fn standby_at_the_minimum_lowers_it_and_gives_it_back() {
        let lb = section("  autoScaling:\n    suspendProcesses: [AZRebalance]\n");
        let p = preview(&journal(2, 2), &lb);
        assert!(p.problems.is_empty(), "{p:?}");
        assert_eq!(p.steps[0], "SuspendProcesses web-asg [\"AZRebalance\"]");
        assert!(
            p.steps
                .contains(&"UpdateAutoScalingGroup web-asg MinSize 2 -> 1".to_string()),
            "{p:?}"
        );
        assert_eq!(
            p.steps.last().unwrap(),
            "restore: ResumeProcesses web-asg [\"AZRebalance\"]"
        );
        assert!(p
            .steps
            .iter()
            .any(|s| s.starts_with("restore: ExitStandby")));
        for a in [
            "autoscaling:EnterStandby",
            "autoscaling:ExitStandby",
            "autoscaling:UpdateAutoScalingGroup",
            "autoscaling:CreateOrUpdateTags",
        ] {
            assert!(p.actions.contains(&a), "{a}: {:?}", p.actions);
        }
    }

    #[test]
    fn min_size_fail_at_the_minimum_is_a_problem() {
        let lb = section("  autoScaling:\n    minSize: fail\n");
        let p = preview(&journal(2, 2), &lb);
        assert_eq!(p.problems.len(), 1, "{p:?}");
        assert!(p.problems[0].contains("minSize: fail refuses"));
        // Below the minimum by one host: nothing to lower, nothing refused.
        assert!(preview(&journal(1, 3), &lb).problems.is_empty());
    }
}
