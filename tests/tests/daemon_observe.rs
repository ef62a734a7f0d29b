//! What an operator sees of a running agent: Prometheus metrics (served on
//! loopback and written for node_exporter's textfile collector) read with
//! the Prometheus project's own Python parser, the agent log as one JSON
//! object per line, and `status --json`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use serde_json::Value;
use testbed::bed::Testbed;
use testbed::imds::ImdsMode;
use testbed::scenario::*;

/// Parse exposition text with prometheus_client.parser: every sample as
/// (name, labels) -> value.
fn parse(text: &str) -> BTreeMap<(String, String), f64> {
    let script = "import sys, json\nfrom prometheus_client.parser import text_string_to_metric_families as f\nout = []\nfor fam in f(sys.stdin.read()):\n    for s in fam.samples:\n        out.append([s.name, json.dumps(s.labels, sort_keys=True), s.value])\nprint(json.dumps(out))\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<(String, String, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    v.into_iter().map(|(n, l, x)| ((n, l), x)).collect()
}

fn get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let (head, body) = r.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

fn value(m: &BTreeMap<(String, String), f64>, name: &str, labels: &str) -> f64 {
    *m.get(&(name.to_string(), labels.to_string()))
        .unwrap_or_else(|| panic!("no {name} {labels} in {m:#?}"))
}

#[test]
fn metrics_json_logs_and_status_json_after_a_deployment() {
    testbed::require_root();
    let bed = Testbed::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let textfile = bed.path("codedeploy-agent.prom");
    let extra = format!(
        ":metrics_listen: 127.0.0.1:{port}\n:metrics_textfile: {}\n:log_format: json\n",
        textfile.display()
    );
    let mut a = bed.instance_with(
        "i-0observe0",
        &[("role", "web")],
        ImdsMode::V2Required,
        &extra,
    );
    a.start();
    setup_group(&bed, "CodeDeployDefault.OneAtATime");
    let d = deploy_version(&bed, "observe", "v1", "zip", 0);
    assert_eq!(bed.wait_deployment(&d, LIMIT), "Succeeded", "{}", a.log());
    let zip = std::fs::metadata(bed.path("v1.zip")).unwrap().len() as f64;

    // Scraped: every lifecycle event counted once, with its duration.
    let mut m = BTreeMap::new();
    testbed::wait_until(LIMIT, "all seven events counted", || {
        m = parse(&get(port, "/metrics").1);
        let done: f64 = m
            .iter()
            .filter(|((n, _), _)| n == "codedeploy_agent_commands_total")
            .map(|(_, v)| v)
            .sum();
        done == 7.0
    });
    assert_eq!(
        value(
            &m,
            "codedeploy_agent_commands_total",
            r#"{"command": "Install", "result": "succeeded"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "codedeploy_agent_command_duration_seconds_count",
            r#"{"command": "Install"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "codedeploy_agent_command_duration_seconds_bucket",
            r#"{"command": "Install", "le": "+Inf"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&m, "codedeploy_agent_downloaded_bytes_total", "{}"),
        zip,
        "the zip's size"
    );
    assert!(value(&m, "codedeploy_agent_installed_files_total", "{}") >= 1.0);
    assert!(value(&m, "codedeploy_agent_polls_total", "{}") >= 7.0);
    assert_eq!(value(&m, "codedeploy_agent_poll_errors_total", "{}"), 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = value(
        &m,
        "codedeploy_agent_last_successful_poll_timestamp_seconds",
        "{}",
    );
    assert!(now - last < 60.0, "last poll {last}, now {now}");
    let build = m
        .keys()
        .find(|(n, _)| n == "codedeploy_agent_build_info")
        .expect("build info");
    assert!(build.1.contains("codedeploy-agent-rs-"), "{build:?}");
    assert_eq!(
        value(&m, "codedeploy_agent_load_balancer_drained", "{}"),
        0.0
    );
    assert!(get(port, "/").0.contains("404"));

    // The textfile says the same, whole.
    let file = parse(&std::fs::read_to_string(&textfile).unwrap());
    assert_eq!(
        value(
            &file,
            "codedeploy_agent_commands_total",
            r#"{"command": "Install", "result": "succeeded"}"#
        ),
        1.0
    );

    // The log: one JSON object a line, fields at the top level.
    let log = a.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ack = lines
        .iter()
        .find(|v| v["message"] == "command acknowledged" && v["command"] == "Install")
        .unwrap_or_else(|| panic!("no acknowledgement line: {log}"));
    assert_eq!(ack["level"], "INFO");
    assert!(
        ack["timestamp"].is_string() && ack["host_command"].is_string(),
        "{ack}"
    );

    // status --json.
    let status = || {
        let out = Command::new(testbed::agent_bin())
            .args(["--config_file"])
            .arg(&a.config)
            .args(["status", "--json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), v)
    };
    let (code, v) = status();
    assert_eq!(code, Some(0));
    assert_eq!(v["running"], true, "{v}");
    assert_eq!(v["pid"].as_i64(), a.pid().map(i64::from), "{v}");
    let st = &v["status"];
    assert!(st["last_poll_ok"].is_u64(), "{v}");
    assert_eq!(st["running"], serde_json::json!([]), "{v}");
    // Every command taken, the last poll offered nothing more.
    testbed::wait_until(LIMIT, "nothing pending", || {
        status().1["status"]["pending"].is_null()
    });
}
