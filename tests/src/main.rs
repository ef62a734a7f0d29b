//! `testbed demo`: a rolling deployment under load with the native
//! `loadBalancer` section, on this machine, watched as it happens.
//! `testbed up`: the same world left running for the AWS CLI (src/up.rs).

use std::process::ExitCode;

use testbed::lbfleet::Front;
use testbed::rollout::{self, Mode};

const UP_USAGE: &str = "\
usage: testbed up [--instances N] [--front target-group|classic|auto-scaling|network|none]
                  [--delay S] [--load]

Starts, on this machine, a CodeDeploy world: the CodeDeploy API, S3 (moto),
Auto Scaling and Elastic Load Balancing with HAProxy in front, and N agents
(3; tagged role=web; an Auto Scaling group web-asg with --front auto-scaling),
prints the environment the AWS CLI needs (eval it, or copy it), and runs
until Ctrl-C, which takes everything down. --load sends the demo's requests
through the load balancer meanwhile and counts the failed ones at the end.";

const USAGE: &str = "\
usage: testbed demo [options]
       testbed up [options]    (testbed up --help)

A rolling deployment under load with the native loadBalancer section, on this
machine: agents, applications, HAProxy and the load balancer API on loopback.
Exits 0 only when no request failed, the deployment succeeded and, with Auto
Scaling, the group ends as it began.

options:
  --front target-group|classic|auto-scaling|network
                                              what the instances are behind (target-group;
                                              network: a TCP target group, layer 4)
  --instances N                               2 to 6 (3)
  --config OneAtATime|HalfAtATime|AllAtOnce   the deployment configuration (OneAtATime),
           or HOST_COUNT=N | FLEET_PERCENT=N  a minimum-healthy-hosts one
  --delay S                                   deregistration delay, 0 to 3600 seconds (3)
  --clients K,F,S                             keep-alive, new-connection and slow (2 s)
                                              clients of the load (4,2,9)
  --request-ms N                              how long the slow clients' requests last (2000)
  --stop graceful|kill                        the stop script's signal: TERM (the app ends
                                              what is in flight) or KILL (no graceful end)
  --bind-after S                              the app binds its port S seconds after it
                                              starts (0)
  --drain-until deregistered|idle             the section's drainUntil (deregistered)
  --target-keep-alive                         the load balancer keeps connections to the
                                              targets open, as an Application LB does
  --no-section                                the control: v2 without the section (fails
                                              requests; the demo then exits non-zero)
  --help                                      this text

needs: root, haproxy, python3 with awscli and moto[server]:
  apt-get install haproxy          (Debian, Ubuntu)
  dnf install haproxy              (Amazon Linux 2023, RHEL)
  python3 -m pip install awscli 'moto[server]'";

struct Options {
    front: Front,
    instances: usize,
    config: String,
    delay: u32,
    clients: (usize, usize, usize),
    control: bool,
    idle: bool,
    keep_alive: bool,
    slow_ms: u64,
    kill: bool,
    bind_after: f64,
}

fn clients(v: &str) -> Option<(usize, usize, usize)> {
    let n: Vec<usize> = v
        .split(',')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    match n[..] {
        [k, f, s] if k + f + s > 0 && k + f + s <= 64 => Some((k, f, s)),
        _ => None,
    }
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("demo") => {}
        Some("--help" | "-h") | None => return Ok(None),
        Some(_) => return Err("the commands are `demo` and `up`".into()),
    }
    let mut o = Options {
        front: Front::TargetGroup,
        instances: 3,
        config: "CodeDeployDefault.OneAtATime".into(),
        delay: testbed::lbfleet::DRAIN_SECONDS,
        clients: (4, 2, 9),
        control: false,
        idle: false,
        keep_alive: false,
        slow_ms: testbed::lbfleet::SLOW_MS,
        kill: false,
        bind_after: 0.0,
    };
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--help" | "-h" => return Ok(None),
            "--front" => o.front = front(value()?)?,
            "--instances" => o.instances = number(value()?, "--instances", 2, 6)?,
            "--config" => {
                o.config = match value()?.as_str() {
                    c @ ("OneAtATime" | "HalfAtATime" | "AllAtOnce") => {
                        format!("CodeDeployDefault.{c}")
                    }
                    c if c.starts_with("HOST_COUNT=") || c.starts_with("FLEET_PERCENT=") => {
                        c.to_string()
                    }
                    c => return Err(format!("--config {c}: not a configuration this demo knows")),
                }
            }
            "--delay" => o.delay = number(value()?, "--delay", 0, 3600)? as u32,
            "--clients" => {
                o.clients = clients(value()?)
                    .ok_or("--clients takes three counts, K,F,S, 64 in all at most")?
            }
            "--drain-until" => {
                o.idle = match value()?.as_str() {
                    "idle" => true,
                    "deregistered" => false,
                    v => return Err(format!("--drain-until {v}: deregistered or idle")),
                }
            }
            "--target-keep-alive" => o.keep_alive = true,
            "--request-ms" => {
                o.slow_ms = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=600_000).contains(n))
                    .ok_or("--request-ms takes 1 to 600000")?
            }
            "--stop" => {
                o.kill = match value()?.as_str() {
                    "graceful" => false,
                    "kill" => true,
                    v => return Err(format!("--stop {v}: graceful or kill")),
                }
            }
            "--bind-after" => {
                o.bind_after = value()?
                    .parse()
                    .ok()
                    .filter(|s: &f64| (0.0..=60.0).contains(s))
                    .ok_or("--bind-after takes 0 to 60 seconds")?
            }
            "--no-section" => o.control = true,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Some(o))
}

/// HAProxy is the data plane; without it, say how to get it.
fn haproxy_installed() -> bool {
    std::process::Command::new("sh")
        .args(["-c", "command -v haproxy"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn parse_up(args: &[String]) -> Result<Option<testbed::up::Options>, String> {
    let mut o = testbed::up::Options {
        front: Front::TargetGroup,
        instances: 3,
        delay: testbed::lbfleet::DRAIN_SECONDS,
        load: false,
    };
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--help" | "-h" => return Ok(None),
            // none: the target group is there, nothing is registered with
            // it unless a deployment does it.
            "--front" => {
                let v = value()?;
                o.front = if v == "none" {
                    Front::TargetGroup
                } else {
                    front(v)?
                }
            }
            "--instances" => o.instances = number(value()?, "--instances", 1, 6)?,
            "--delay" => o.delay = number(value()?, "--delay", 0, 3600)? as u32,
            "--load" => o.load = true,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Some(o))
}

/// `v` as a whole number from `lo` to `hi`, or a message naming `flag`.
fn number(v: &str, flag: &str, lo: usize, hi: usize) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or(format!("{flag} takes a number from {lo} to {hi}"))
}

fn front(v: &str) -> Result<Front, String> {
    Ok(match v {
        "target-group" => Front::TargetGroup,
        "classic" => Front::Classic,
        "auto-scaling" => Front::AutoScaling,
        "network" => Front::Network,
        v => return Err(format!("--front {v}: not a front the testbed knows")),
    })
}

/// Root and HAProxy, or a message saying how to get them.
fn preflight() -> Result<(), ExitCode> {
    if !haproxy_installed() {
        eprintln!("the testbed's load balancer is HAProxy, which is not installed here:\n  apt-get install haproxy    (Debian, Ubuntu)\n  dnf install haproxy        (Amazon Linux 2023, RHEL)");
        return Err(ExitCode::from(2));
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("the testbed runs agents as a host would: run it as root (sudo), as the test suite does");
        return Err(ExitCode::from(2));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("up") {
        return match parse_up(&args) {
            Ok(Some(o)) => match preflight() {
                Ok(()) => testbed::up::run(&o),
                Err(code) => code,
            },
            Ok(None) => {
                println!("{UP_USAGE}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}\n\n{UP_USAGE}");
                ExitCode::from(2)
            }
        };
    }
    let o = match parse(&args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Err(code) = preflight() {
        return code;
    }
    println!(
        "rolling deployment, {}, {} instances, deregistration delay {} s, {}",
        o.config,
        o.instances,
        o.delay,
        if o.control {
            "v2 without the section (the control)"
        } else if o.idle {
            "native loadBalancer section, drainUntil: idle"
        } else {
            "native loadBalancer section"
        }
    );
    let setup = rollout::Setup {
        instances: o.instances,
        config: o.config.clone(),
        delay: o.delay,
        clients: o.clients,
        control: o.control,
        idle: o.idle,
        keep_alive: o.keep_alive,
        slow_ms: o.slow_ms,
        kill_on_stop: o.kill,
        bind_after: o.bind_after,
        ..rollout::Setup::new(o.front)
    };
    let r = rollout::run(&setup, Mode::Native, &mut |line| println!("{line}"));
    println!("\n{}", rollout::table(&r));
    for e in &r.examples {
        println!("failed request: {e}");
    }
    println!("requests: {}, failed: {}", r.requests, r.failed);
    let group_kept = r.group_before == r.group_after;
    if let (Some(b), Some(a)) = (&r.group_before, &r.group_after) {
        println!("Auto Scaling group (MinSize, desired, suspended, tags) before: {b:?}");
        println!("Auto Scaling group (MinSize, desired, suspended, tags) after:  {a:?}");
        if !group_kept {
            println!("the group does not end as it began");
        }
    }
    if r.failed == 0 && r.status == "Succeeded" && group_kept {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
