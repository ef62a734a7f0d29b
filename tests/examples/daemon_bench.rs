//! Daemon benchmark (not a test): idle RSS, time from a command being
//! available to its acknowledgement, and the agent's own time per
//! lifecycle event with no scripts, against the testbed, with floors
//! measured in the same run.
//!
//!   cargo run --release -p testbed --example daemon_bench -- [idle_seconds] [deployments]
//!
//! Defaults: 600 s idle, 10 deployments (70 commands).

use std::time::{Duration, Instant};

use bytes::Bytes;
use testbed::bed::Testbed;
use testbed::bundle::Bundle;
use testbed::scenario::{create_s3_deployment, setup_group};

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Floor for one command's exchanges: the same number of sequential HTTP
/// POSTs to the same control plane (answered without signature), made by
/// a plain client in this process.
fn http_floor(endpoint: &str, exchanges: usize, rounds: usize) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr: std::net::SocketAddr = endpoint.trim_start_matches("http://").parse().unwrap();
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake::<
            _,
            http_body_util::Full<Bytes>,
        >(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut samples = Vec::new();
        for _ in 0..rounds {
            let t0 = Instant::now();
            for _ in 0..exchanges {
                let req = http::Request::post("/")
                    .header(
                        "x-amz-target",
                        "CodeDeployCommandService_v20141006.PollHostCommand",
                    )
                    .header("content-type", "application/x-amz-json-1.1")
                    .body(http_body_util::Full::new(Bytes::from_static(b"{}")))
                    .unwrap();
                let resp = send.send_request(req).await.unwrap();
                let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            }
            samples.push(t0.elapsed().as_secs_f64());
        }
        pct(&mut samples, 0.5)
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
        "idle: {idle} s, {polls} polls, RSS now {:.1} MB, peak {:.1} MB (target <= 10 MB)",
        idle_rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );

    // 2. Commands: a revision with no scripts and no files.
    let b = Bundle::new(bed.path("empty"));
    b.appspec("version: 0.0\nos: linux\n");
    let zip = b.zip(&bed.path("empty.zip"));
    bed.upload("bench", "empty.zip", &zip);
    let mut ack = Vec::new();
    let mut per_event = Vec::new();
    for _ in 0..deployments {
        let d = create_s3_deployment(&bed, "bucket=bench,key=empty.zip,bundleType=zip");
        assert_eq!(
            bed.wait_deployment(&d, Duration::from_secs(120)),
            "Succeeded",
            "{}",
            agent.log_tail()
        );
        for c in bed.control.commands_of(&d) {
            let (Some(a), Some(done)) = (c.acked, c.completed) else {
                continue;
            };
            ack.push(a - c.issued);
            if c.event != "DownloadBundle" && c.event != "Install" {
                per_event.push(done - c.issued);
            }
        }
    }
    let floor = http_floor(&bed.control.endpoint(), 4, 50);
    let (a50, a90, amax) = (pct(&mut ack, 0.5), pct(&mut ack, 0.9), pct(&mut ack, 1.0));
    let (e50, e90) = (pct(&mut per_event, 0.5), pct(&mut per_event, 0.9));
    println!("command available -> acknowledged ({} commands): median {:.1} ms, p90 {:.1} ms, max {:.1} ms", ack.len(), a50 * 1e3, a90 * 1e3, amax * 1e3);
    println!("lifecycle event with no scripts, available -> completed ({} events): median {:.1} ms, p90 {:.1} ms", per_event.len(), e50 * 1e3, e90 * 1e3);
    println!("floor: 4 sequential HTTP exchanges with the same control plane: {:.2} ms; event / floor = {:.1}x", floor * 1e3, e50 / floor);
    println!(
        "RSS after the commands: {:.1} MB",
        rss_kb(pid) as f64 / 1024.0
    );
}
