//! Drain benchmark (not a test): the same three-instance OneAtATime rolling
//! deployment under load, behind the same target group (deregistration
//! delay 3 s unless `--delay` says otherwise, health checks every 1 s, 2 to
//! be healthy; the load balancer keeps connections to the targets open, as
//! an Application LB does), done three times in one run:
//! - native: the `loadBalancer` section, `drainUntil: deregistered`;
//! - native idle: the same with `drainUntil: idle`;
//! - scripts: users' copied scripts (docs/loadbalancer.md 1) through the AWS CLI:
//!   deregister, `sleep` the drain, stop; start, `sleep` a warm-up, register.
//!
//! `--modes deregistered,idle,scripts` picks which run (all by default; with
//! a delay of 300 s each of the first and the last takes a quarter of an
//! hour, which is the point they make).
//!
//! It prints the total deployment time (the service's view), the time
//! until every instance serves again, and each instance's out-of-service
//! window (from the data plane) for both, and native / scripts ratios.
//!
//!   cargo run --release -p testbed --example lb_bench -- [--delay S] [--modes deregistered,idle,scripts] [drain_sleep] [warm_up_sleep]
//!
//! Defaults: the scripts sleep the deregistration delay (3 s) and 5 s of
//! warm-up (the app answers health checks 1.5 s after it starts; a script
//! cannot know that, so it guesses with a margin).

use std::time::Duration;

use testbed::lbfleet::{Front, DRAIN_SECONDS};
use testbed::rollout::{run, table, Mode, Report, Setup};

fn mean_out(r: &Report) -> f64 {
    let v: Vec<f64> = r
        .hosts
        .iter()
        .filter_map(|(_, w)| w.out_of_service.map(|d| d.as_secs_f64()))
        .collect();
    if v.len() < r.hosts.len() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

fn one(name: &str, mode: Mode, delay: u32, idle: bool) -> Report {
    eprintln!("== {name}: {mode:?}");
    let setup = Setup {
        delay,
        idle,
        keep_alive: true,
        ..Setup::new(Front::TargetGroup)
    };
    let r = run(&setup, mode, &mut |line| eprintln!("{line}"));
    println!("\n{name} (deregistration delay {delay} s)\n{}", table(&r));
    println!("requests: {}, failed: {}", r.requests, r.failed);
    r
}

fn main() {
    // `--delay S` sets the target group's deregistration delay (and the
    // scripts' default drain sleep); then [drain_sleep] [warm_up_sleep].
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut delay = DRAIN_SECONDS;
    if let Some(i) = args.iter().position(|a| a == "--delay") {
        delay = args
            .get(i + 1)
            .and_then(|d| d.parse().ok())
            .expect("--delay seconds");
        args.drain(i..i + 2);
    }
    let mut modes = "deregistered,idle,scripts".to_string();
    if let Some(i) = args.iter().position(|a| a == "--modes") {
        modes = args.get(i + 1).cloned().expect("--modes list");
        args.drain(i..i + 2);
    }
    let want = |m: &str| modes.split(',').any(|x| x == m);
    let arg = |i: usize, d: f64| {
        args.get(i)
            .map(|a| a.parse().expect("seconds"))
            .unwrap_or(d)
    };
    let drain = arg(0, f64::from(delay));
    let warm_up = arg(1, 5.0);
    let native = want("deregistered")
        .then(|| one("native loadBalancer section", Mode::Native, delay, false));
    let idle = want("idle").then(|| one("native, drainUntil: idle", Mode::Native, delay, true));
    let scripts = want("scripts").then(|| {
        one(
            "scripts (deregister, sleep, stop, start, sleep, register)",
            Mode::Scripts { drain, warm_up },
            delay,
            false,
        )
    });
    if let Some(scripts) = &scripts {
        for (name, r) in [("native", &native), ("native idle", &idle)] {
            if let Some(r) = r {
                ratios(name, r, scripts);
            }
        }
    }
}

fn ratios(name: &str, r: &Report, scripts: &Report) {
    let secs = |d: Duration| d.as_secs_f64();
    println!("\n{name} / scripts");
    println!(
        "total deployment time: {:.1} s / {:.1} s = {:.2}",
        secs(r.total),
        secs(scripts.total),
        secs(r.total) / secs(scripts.total)
    );
    let all = |r: &Report| r.all_serving.map_or(f64::NAN, secs);
    println!(
        "until every instance serves again: {:.1} s / {:.1} s = {:.2}",
        all(r),
        all(scripts),
        all(r) / all(scripts)
    );
    println!(
        "mean out-of-service window per instance: {:.1} s / {:.1} s = {:.2}",
        mean_out(r),
        mean_out(scripts),
        mean_out(r) / mean_out(scripts)
    );
    println!(
        "failed requests: {} of {} / {} of {}",
        r.failed, r.requests, scripts.failed, scripts.requests
    );
}
