//! `testbed demo`: a rolling deployment under load with the native
//! `loadBalancer` section, on this machine, watched as it happens.

use std::process::ExitCode;

use testbed::lbfleet::Front;
use testbed::rollout::{self, Mode};

const USAGE: &str =
    "usage: testbed demo [--front target-group|classic|auto-scaling] [--instances N]";

struct Options {
    front: Front,
    instances: usize,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut it = args.iter();
    if it.next().map(String::as_str) != Some("demo") {
        return Err("the one command is `demo`".into());
    }
    let mut o = Options {
        front: Front::TargetGroup,
        instances: 3,
    };
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--front" => {
                o.front = match value()?.as_str() {
                    "target-group" => Front::TargetGroup,
                    "classic" => Front::Classic,
                    "auto-scaling" => Front::AutoScaling,
                    v => return Err(format!("--front {v}: not a front this demo knows")),
                }
            }
            "--instances" => {
                o.instances = value()?
                    .parse()
                    .ok()
                    .filter(|n| (2..=6).contains(n))
                    .ok_or("--instances takes a number from 2 to 6")?
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "the demo runs agents as a host would: run it as root (sudo), as the test suite does"
        );
        return ExitCode::from(2);
    }
    println!(
        "rolling deployment, OneAtATime, {} instances, native loadBalancer section",
        o.instances
    );
    let r = rollout::run(o.front, o.instances, Mode::Native, &mut |line| {
        println!("{line}")
    });
    println!("\n{}", rollout::table(&r));
    for e in &r.examples {
        println!("failed request: {e}");
    }
    println!("requests: {}, failed: {}", r.requests, r.failed);
    if r.failed == 0 && r.status == "Succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
