//! What the crate's unit tests share.

use appspec::load_balancer::LoadBalancer;

use crate::journal::{self, ClassicLb, Gate, Journal, OnFailure, Phase, TargetGroup};
use appspec::Os;

/// The `loadBalancer` section `mode: drain` with `extra` lines after it.
pub(crate) fn section(extra: &str) -> LoadBalancer {
    let src = format!("version: 0.0\nos: linux\nloadBalancer:\n  mode: drain\n{extra}");
    appspec::parse(&src, "appspec.yml", Os::Linux)
        .unwrap()
        .spec
        .load_balancer
        .unwrap()
}

/// A drained journal of instance i-1 with these load balancers and no group.
pub(crate) fn journal_with(classic: Vec<ClassicLb>, tgs: Vec<TargetGroup>) -> Journal {
    Journal {
        schema: journal::SCHEMA,
        deployment_id: "d-1".into(),
        group_id: "g-1".into(),
        instance_id: "i-1".into(),
        phase: Phase::Drained,
        intent: None,
        group: None,
        classic,
        target_groups: tgs,
        on_failure: OnFailure::Restore,
        gate: Gate::default(),
        health_timeout: None,
        drain_started: 0,
        abandon_at: 0,
        abandon_after: 0,
    }
}
