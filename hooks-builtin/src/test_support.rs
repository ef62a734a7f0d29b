//! What the crate's unit tests share.

use appspec::load_balancer::LoadBalancer;
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
