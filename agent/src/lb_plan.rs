//! `codedeploy-agent lb plan [PATH]`: on a host, with the host's own
//! identity and credentials, what the `loadBalancer` section of an appspec
//! would do here, changing nothing: where the host takes traffic, what
//! `auto` resolves to, the drain and restore steps, the IAM actions they
//! call, the host's connections now. Exit 0: a drain would go ahead; 1: it
//! would fail (and why); 2: the plan could not be made.

use std::path::Path;
use std::time::Duration;

use appspec::load_balancer::{DrainUntil, LoadBalancer};
use hooks_builtin::idle;
use hooks_builtin::preview::DESCRIBE_ACTIONS;
use hooks_builtin::{Drainer, HostId};

use crate::aws::{self, identity};
use crate::config::Config;

/// Plan for the appspec at `path` (a file, or a bundle directory holding
/// `appspec.yml`/`appspec.yaml`).
pub fn run(config: &Config, path: &Path) -> i32 {
    let (dir, name) = match (path.is_file(), path.file_name()) {
        (true, Some(n)) => (
            path.parent().unwrap_or(Path::new(".")),
            n.to_string_lossy().into_owned(),
        ),
        _ => (path, "appspec.yml".to_string()),
    };
    let loaded = match crate::appspec_file::load(dir, &name) {
        Ok(l) => l,
        Err(d) => {
            eprintln!("{}", d.message);
            return 2;
        }
    };
    let Some(lb) = loaded.spec.load_balancer.filter(|l| l.is_active()) else {
        println!(
            "{}: no active loadBalancer section; a deployment changes no load balancer",
            loaded.path.display()
        );
        return 0;
    };
    println!("appspec: {}", loaded.path.display());
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return 2;
        }
    };
    rt.block_on(plan(config, &lb))
}

async fn plan(config: &Config, lb: &LoadBalancer) -> i32 {
    let drainer = match host_drainer(config).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let host = &drainer.host;
    println!("host: {} ({})", host.instance_id, host.address);
    for g in drainer.store.pending() {
        if let Ok(Some(j)) = drainer.store.load(&g) {
            println!(
                "already out of service: deployment group {g}, deployment {} ({:?}); the next deployment adopts it",
                j.deployment_id, j.phase
            );
        }
    }
    let (timeline, result) = drainer.plan(lb).await;
    println!("discovery (read only):");
    for line in timeline.lines() {
        println!("  {line}");
    }
    let (j, preview) = match result {
        Err(f) => {
            println!("would fail: {}", f.message);
            return 1;
        }
        Ok(Err(why)) => {
            println!("nothing to drain: {why}");
            return 0;
        }
        Ok(Ok(found)) => found,
    };
    println!("drain, then restore:");
    for (i, s) in preview.steps.iter().enumerate() {
        println!("  {}. {s}", i + 1);
    }
    println!("IAM actions those steps call (whether allowed cannot be known without calling them: these APIs have no dry run):");
    for a in &preview.actions {
        println!("  {a}");
    }
    println!(
        "read-only actions discovery needs (each call it made was allowed): {}",
        DESCRIBE_ACTIONS.join(", ")
    );
    if lb.drain_until == DrainUntil::Idle {
        connections(&drainer, &j, Duration::from_secs(u64::from(lb.idle_for)));
    }
    for p in &preview.problems {
        println!("would fail: {p}");
    }
    i32::from(!preview.problems.is_empty())
}

/// The host's identity and the drainer built on it, as the daemon builds it.
async fn host_drainer(config: &Config) -> Result<Drainer, String> {
    let sdk_http = aws::sdk_http_client(config.proxy_uri.as_deref())?;
    let direct_http = aws::sdk_http_client(None)?;
    let ident = identity::resolve(config, sdk_http.clone(), direct_http)
        .await
        .map_err(|e| format!("cannot establish the host's identity: {e}"))?;
    let Some((instance_id, address)) = ident.instance else {
        return Err(
            "an on-premises host: the loadBalancer section acts on EC2 instances only".into(),
        );
    };
    let ctx = aws::Context::new(config, &ident.region, ident.credentials, sdk_http);
    println!("region: {}", ident.region);
    Ok(crate::daemon::traffic::drainer(
        config,
        &ctx,
        HostId {
            instance_id,
            address,
        },
    ))
}

/// What `drainUntil: idle` would see on the registered ports now.
fn connections(drainer: &Drainer, j: &hooks_builtin::journal::Journal, quiet: Duration) {
    let groups = j
        .target_groups
        .iter()
        .map(|t| (t.name.as_str(), t.registered.clone(), t.layer4))
        .chain(j.classic.iter().map(|c| {
            (
                c.name.as_str(),
                c.instance_port.into_iter().collect(),
                c.layer4,
            )
        }));
    for (name, ports, layer4) in groups {
        match drainer.sockets.connections(&drainer.host.address, &ports) {
            Ok(c) => {
                let v = idle::judge(&c, &ports, layer4, quiet);
                println!(
                    "connections now to {name} port(s) {ports:?} ({}): {} open, {} busy",
                    if layer4 { "layer 4" } else { "layer 7" },
                    v.open,
                    v.busy
                );
            }
            Err(e) => println!("connections to {name}: cannot read the socket tables ({e}); drainUntil: idle would wait for the load balancer"),
        }
    }
}
