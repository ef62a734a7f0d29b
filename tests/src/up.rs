//! `testbed up`: the world the tests drive, left running for a user: the
//! control plane (public CodeDeploy API and the commands API), S3 (moto),
//! an IMDS per instance, the Auto Scaling and ELB APIs with HAProxy as the
//! data plane, and N agents; it prints the environment the AWS CLI needs,
//! then waits for Ctrl-C and takes everything down.

use std::process::ExitCode;

use nix::sys::signal::{SigSet, Signal};

use crate::control::{OPERATOR_KEY, OPERATOR_SECRET, REGION};
use crate::lbfleet::{FleetSpec, Front, Load};

/// What `up` starts.
pub struct Options {
    pub front: Front,
    pub instances: usize,
    pub delay: u32,
    /// Run the demo's load against the load balancer while up.
    pub load: bool,
}

/// The environment lines a shell `eval`s (or a test reads).
pub fn environment(codedeploy: &str, s3: &str, lb: &str) -> Vec<String> {
    [
        ("AWS_ENDPOINT_URL_CODEDEPLOY", codedeploy),
        ("AWS_ENDPOINT_URL_S3", s3),
        ("AWS_ENDPOINT_URL_AUTO_SCALING", lb),
        ("AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING", lb),
        ("AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2", lb),
        ("AWS_ACCESS_KEY_ID", OPERATOR_KEY),
        ("AWS_SECRET_ACCESS_KEY", OPERATOR_SECRET),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .iter()
    .map(|(k, v)| format!("export {k}={v}"))
    .collect()
}

pub fn run(o: &Options) -> ExitCode {
    // Blocked before any thread starts, so every thread inherits the mask
    // and the signal waits for sigwait below instead of killing the world
    // without its cleanup.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if set.thread_block().is_err() {
        eprintln!("cannot block SIGINT/SIGTERM");
        return ExitCode::from(2);
    }
    let f = FleetSpec {
        delay: o.delay,
        keep_alive: true,
        setup_group: false,
        ..FleetSpec::new(o.front, o.instances)
    }
    .start();
    let lb = f.plane.endpoint();
    let front = match o.front {
        Front::AutoScaling => "Auto Scaling group web-asg, its target group web",
        Front::Classic => "Classic load balancer web",
        Front::Network => "TCP target group web (a Network LB)",
        Front::TargetGroup => "target group web",
    };
    println!(
        "testbed up: {} instances, {front}, deregistration delay {} s; load balancer at http://{}",
        o.instances,
        o.delay,
        f.frontend()
    );
    for line in environment(
        &f.bed.control.endpoint(),
        &format!("http://{}", f.bed.moto),
        &lb,
    ) {
        println!("{line}");
    }
    println!("# target group ARN: {}", crate::lb::tg_arn("web"));
    for ((id, ip), a) in f.ids.iter().zip(&f.ips).zip(&f.agents) {
        let log = a.dir.join("log");
        println!(
            "# instance {id} at {ip}, tagged role=web, agent log in {}",
            log.display()
        );
    }
    println!("# a revision's hooks see APP_IP and APP_PORT: where its application must listen for the load balancer to reach it");
    let load = o.load.then(|| Load::start(f.frontend(), 4, 2, 2));
    println!("ready; Ctrl-C stops everything and cleans up");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let got = set.wait();
    if let Some(l) = load {
        let s = l.finish();
        let failed = crate::lbfleet::failures(&s).len();
        println!("load: {} requests, {failed} failed", s.len());
    }
    println!("stopping ({:?})", got.ok());
    drop(f);
    ExitCode::SUCCESS
}
