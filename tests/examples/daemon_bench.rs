//! Daemon benchmark (not a test): idle RSS, time from a command being
//! available to its acknowledgement, and the agent's own time per
//! lifecycle event with no scripts, against the testbed, with its floor
//! measured in the same run: the same events answered by the agent's
//! commands client alone.
//!
//!   cargo run --release -p testbed --example daemon_bench -- [idle_seconds] [deployments]
//!
//! Defaults: 600 s idle, 10 deployments (70 commands).

use std::time::{Duration, Instant};

use testbed::bed::Testbed;
use testbed::bundle::Bundle;
use testbed::scenario::{create_s3_deployment, setup_group};

fn rss_kb(pid: i32) -> u64 {
    status_kb(pid, "VmRSS:")
}

fn status_kb(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Per-event times (available -> completed) of one deployment's
/// lifecycle events other than DownloadBundle and Install, and the times
/// from available to acknowledged of all its commands.
fn event_times(bed: &Testbed, d: &str, ack: &mut Vec<f64>, per_event: &mut Vec<f64>) {
    for c in bed.control.commands_of(d) {
        let (Some(a), Some(done)) = (c.acked, c.completed) else {
            continue;
        };
        ack.push(a - c.issued);
        if c.event != "DownloadBundle" && c.event != "Install" {
            per_event.push(done - c.issued);
        }
    }
}

/// The floor of a lifecycle event: the agent's own commands client, alone,
/// as the host: poll, get the specification, acknowledge, report success.
/// Those four exchanges, with the same signing, HTTP stack and control
/// plane (whose own work, signing the specification included, is in both
/// figures), and nothing else: no verification, no disk, no threads.
fn bare_host(
    bed: &Testbed,
    agent: &testbed::bed::Agent,
    deployments: usize,
) -> (Vec<f64>, Vec<f64>) {
    use codedeploy_agent::{aws, config::Config, net};
    let (config, _) = Config::load(&agent.config).expect("agent config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sdk = aws::sdk_http_client(None).unwrap();
        let ident = aws::identity::resolve(&config, sdk.clone(), sdk)
            .await
            .expect("identity");
        let http = net::http::HttpClient::new(None, config.http_read_timeout).unwrap();
        let ep = config.deploy_control_endpoint.clone().unwrap();
        let client = net::control::CommandsClient::new(
            http,
            net::control::Stack::for_auth_policy(false),
            &ep,
            &ident.region,
            ident.credentials.clone(),
            "bare",
        )
        .unwrap();
        let ok = r#"{"error_code":0,"script_name":"","message":"Succeeded","log":""}"#;
        let (mut ack, mut per_event) = (Vec::new(), Vec::new());
        for _ in 0..deployments {
            let d = create_s3_deployment(bed, "bucket=bench,key=empty.zip,bundleType=zip");
            while !matches!(
                bed.control.deployment_status(&d).as_deref(),
                Some("Succeeded" | "Failed" | "Stopped")
            ) {
                let Some(cmd) = client.poll(&ident.host_identifier).await.unwrap() else {
                    continue;
                };
                client
                    .specification(&cmd.deployment_execution_id, &ident.host_identifier)
                    .await
                    .unwrap();
                client
                    .acknowledge(&cmd.host_command_identifier, false)
                    .await
                    .unwrap();
                client
                    .complete(&cmd.host_command_identifier, true, ok)
                    .await
                    .unwrap();
            }
            event_times(bed, &d, &mut ack, &mut per_event);
        }
        (ack, per_event)
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let idle: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(600);
    let deployments: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let bed = Testbed::new();
    let mut agent = bed.instance("i-0bench0001", &[("role", "web")]);
    agent.start();
    let pid = agent.pid().unwrap();
    setup_group(&bed, "CodeDeployDefault.OneAtATime");

    // 1. Idle polling.
    let t0 = Instant::now();
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(idle) {
        std::thread::sleep(Duration::from_secs(1)); // sampling interval, not synchronisation
        peak = peak.max(rss_kb(pid));
    }
    let idle_rss = rss_kb(pid);
    let polls = bed
        .control
        .calls()
        .iter()
        .filter(|c| c.operation == "PollHostCommand")
        .count();
    println!(
        "idle: {idle} s, {polls} polls, RSS now {:.1} MB, peak {:.1} MB (target <= 8 MB)",
        idle_rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "      of it anonymous {:.1} MB, file-backed {:.1} MB",
        status_kb(pid, "RssAnon:") as f64 / 1024.0,
        status_kb(pid, "RssFile:") as f64 / 1024.0
    );

    // 2. Commands: a revision with no scripts and no files.
    let b = Bundle::new(bed.path("empty"));
    b.appspec("version: 0.0\nos: linux\n");
    let zip = b.zip(&bed.path("empty.zip"));
    bed.upload("bench", "empty.zip", &zip);
    let (mut ack, mut per_event) = (Vec::new(), Vec::new());
    for _ in 0..deployments {
        let d = create_s3_deployment(&bed, "bucket=bench,key=empty.zip,bundleType=zip");
        assert_eq!(
            bed.wait_deployment(&d, Duration::from_secs(120)),
            "Succeeded",
            "{}",
            agent.log_tail()
        );
        event_times(&bed, &d, &mut ack, &mut per_event);
    }
    let rss_after = rss_kb(pid);
    agent.kill();
    let (mut floor_ack, mut floor) = bare_host(&bed, &agent, deployments);
    let (a50, a90, amax) = (pct(&mut ack, 0.5), pct(&mut ack, 0.9), pct(&mut ack, 1.0));
    let (e50, e90) = (pct(&mut per_event, 0.5), pct(&mut per_event, 0.9));
    let (f50, f90) = (pct(&mut floor, 0.5), pct(&mut floor, 0.9));
    let fa50 = pct(&mut floor_ack, 0.5);
    println!("command available -> acknowledged ({} commands): median {:.2} ms, p90 {:.2} ms, max {:.2} ms; floor median {:.2} ms", ack.len(), a50 * 1e3, a90 * 1e3, amax * 1e3, fa50 * 1e3);
    println!("lifecycle event with no scripts, available -> completed ({} events): median {:.2} ms, p90 {:.2} ms", per_event.len(), e50 * 1e3, e90 * 1e3);
    println!("floor: the same events answered by the agent's commands client alone (4 exchanges each): median {:.2} ms, p90 {:.2} ms", f50 * 1e3, f90 * 1e3);
    println!(
        "per-event overhead above the floor: {:.2} ms (target <= 1 ms); event / floor = {:.2}x",
        (e50 - f50) * 1e3,
        e50 / f50
    );
    println!(
        "RSS after the commands: {:.1} MB",
        rss_after as f64 / 1024.0
    );
}
