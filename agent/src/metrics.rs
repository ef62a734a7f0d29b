//! What the daemon has done, counted for Prometheus (text exposition format
//! 0.0.4): written to a file for node_exporter's textfile collector
//! (`:metrics_textfile:`) and/or served on a loopback address
//! (`:metrics_listen:`); both off by default. One process-wide registry, so
//! the places that count (poll, command, download, install, drain) need no
//! handle passed down to them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Seconds: a health check's, a download's, a drain's, an hour-long script's.
const BUCKETS: &[f64] = &[
    0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    /// Per bucket of BUCKETS, not cumulative.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        if let Some(i) = BUCKETS.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    polls: AtomicU64,
    poll_errors: AtomicU64,
    last_poll_ok: AtomicU64,
    bytes_downloaded: AtomicU64,
    files_installed: AtomicU64,
    /// (command, result) -> count.
    commands: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// command -> its durations.
    durations: Mutex<BTreeMap<String, Histogram>>,
    /// (phase, result) -> durations of loadBalancer drains and restores.
    lb: Mutex<BTreeMap<(&'static str, &'static str), Histogram>>,
}

static METRICS: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();

/// The process's registry.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(Metrics::default)
}

/// How a host command ended, as `result` says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Acknowledged as a no-op: reported done without running.
    Noop,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Noop => "noop",
        }
    }
}

impl Metrics {
    /// One poll of the commands service.
    pub fn poll(&self, ok: bool, now_unix: u64) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        if ok {
            self.last_poll_ok.store(now_unix, Ordering::Relaxed);
        } else {
            self.poll_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One host command reported, and how long it took from its poll.
    pub fn command(&self, name: &str, result: Outcome, took: Duration) {
        if let Ok(mut c) = self.commands.lock() {
            *c.entry((name.to_string(), result.label())).or_default() += 1;
        }
        if let Ok(mut d) = self.durations.lock() {
            d.entry(name.to_string())
                .or_default()
                .observe(took.as_secs_f64());
        }
    }

    /// Bytes of a revision fetched from S3 or GitHub.
    pub fn downloaded(&self, bytes: u64) {
        self.bytes_downloaded.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Files and links an Install put in place.
    pub fn installed(&self, files: u64) {
        self.files_installed.fetch_add(files, Ordering::Relaxed);
    }

    /// A loadBalancer drain or restore (`phase`) that ended `ok` or not.
    pub fn load_balancer(&self, phase: &'static str, ok: bool, took: Duration) {
        let result = if ok { "succeeded" } else { "failed" };
        if let Ok(mut l) = self.lb.lock() {
            l.entry((phase, result))
                .or_default()
                .observe(took.as_secs_f64());
        }
    }

    /// The exposition text. `drained`: hosts' journals pending now (this
    /// host out of service for that many deployment groups).
    pub fn render(&self, version: &str, drained: usize) -> String {
        let mut o = String::new();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        family(
            &mut o,
            "codedeploy_agent_build_info",
            "gauge",
            "The agent's version.",
        );
        let _ = writeln!(
            o,
            "codedeploy_agent_build_info{{version=\"{}\"}} 1",
            escape(version)
        );
        counter(
            &mut o,
            "codedeploy_agent_polls_total",
            "Polls of the commands service.",
            n(&self.polls),
        );
        counter(
            &mut o,
            "codedeploy_agent_poll_errors_total",
            "Polls that failed.",
            n(&self.poll_errors),
        );
        family(
            &mut o,
            "codedeploy_agent_last_successful_poll_timestamp_seconds",
            "gauge",
            "When a poll was last answered (Unix time); 0 before the first.",
        );
        let _ = writeln!(
            o,
            "codedeploy_agent_last_successful_poll_timestamp_seconds {}",
            n(&self.last_poll_ok)
        );
        family(
            &mut o,
            "codedeploy_agent_commands_total",
            "counter",
            "Host commands reported, by command and result.",
        );
        if let Ok(c) = self.commands.lock() {
            for ((name, result), v) in c.iter() {
                let _ = writeln!(
                    o,
                    "codedeploy_agent_commands_total{{command=\"{}\",result=\"{result}\"}} {v}",
                    escape(name)
                );
            }
        }
        family(
            &mut o,
            "codedeploy_agent_command_duration_seconds",
            "histogram",
            "Host command durations (each lifecycle event), from poll to report.",
        );
        if let Ok(d) = self.durations.lock() {
            for (name, h) in d.iter() {
                histogram(
                    &mut o,
                    "codedeploy_agent_command_duration_seconds",
                    &format!("command=\"{}\"", escape(name)),
                    h,
                );
            }
        }
        counter(
            &mut o,
            "codedeploy_agent_downloaded_bytes_total",
            "Revision bytes fetched from S3 or GitHub.",
            n(&self.bytes_downloaded),
        );
        counter(
            &mut o,
            "codedeploy_agent_installed_files_total",
            "Files and links put in place by Install.",
            n(&self.files_installed),
        );
        family(
            &mut o,
            "codedeploy_agent_load_balancer_duration_seconds",
            "histogram",
            "loadBalancer drains and restores, by phase and result.",
        );
        if let Ok(l) = self.lb.lock() {
            for ((phase, result), h) in l.iter() {
                histogram(
                    &mut o,
                    "codedeploy_agent_load_balancer_duration_seconds",
                    &format!("phase=\"{phase}\",result=\"{result}\""),
                    h,
                );
            }
        }
        family(
            &mut o,
            "codedeploy_agent_load_balancer_drained",
            "gauge",
            "Deployment groups for which this host is out of service now.",
        );
        let _ = writeln!(o, "codedeploy_agent_load_balancer_drained {drained}");
        o
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(o: &mut String, name: &str, help: &str, v: u64) {
    family(o, name, "counter", help);
    let _ = writeln!(o, "{name} {v}");
}

fn histogram(o: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (b, c) in BUCKETS.iter().zip(&h.counts) {
        cumulative += c;
        let _ = writeln!(o, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
    }
    let _ = writeln!(o, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(o, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(o, "{name}_count{{{labels}}} {}", h.count);
}

/// A label value as the exposition format quotes it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Write `text` to `path` whole: a temp file beside it, then rename, so the
/// collector never reads half a file. No fsync: it is rewritten every poll.
pub fn write_textfile(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_families_with_labels_escaped() {
        let m = Metrics::default();
        m.poll(true, 1_700_000_000);
        m.poll(false, 1_700_000_001);
        m.command("Install", Outcome::Succeeded, Duration::from_millis(300));
        m.command("Install", Outcome::Succeeded, Duration::from_secs(20));
        m.command("Odd\"name", Outcome::Failed, Duration::from_secs(1));
        m.load_balancer("drain", true, Duration::from_secs(4));
        let t = m.render("v1", 1);
        assert!(t.contains("codedeploy_agent_polls_total 2\n"), "{t}");
        assert!(t.contains("codedeploy_agent_poll_errors_total 1\n"));
        assert!(t.contains("codedeploy_agent_last_successful_poll_timestamp_seconds 1700000000\n"));
        assert!(t.contains(
            "codedeploy_agent_commands_total{command=\"Install\",result=\"succeeded\"} 2\n"
        ));
        assert!(
            t.contains("command=\"Odd\\\"name\",result=\"failed\"} 1\n"),
            "{t}"
        );
        // Cumulative buckets: 0.3 s in le=1 and above, 20 s from le=60.
        assert!(t.contains(
            "codedeploy_agent_command_duration_seconds_bucket{command=\"Install\",le=\"0.25\"} 0\n"
        ));
        assert!(t.contains(
            "codedeploy_agent_command_duration_seconds_bucket{command=\"Install\",le=\"1\"} 1\n"
        ));
        assert!(t.contains(
            "codedeploy_agent_command_duration_seconds_bucket{command=\"Install\",le=\"60\"} 2\n"
        ));
        assert!(t.contains(
            "codedeploy_agent_command_duration_seconds_bucket{command=\"Install\",le=\"+Inf\"} 2\n"
        ));
        assert!(
            t.contains("codedeploy_agent_command_duration_seconds_count{command=\"Install\"} 2\n")
        );
        assert!(t.contains("codedeploy_agent_load_balancer_duration_seconds_count{phase=\"drain\",result=\"succeeded\"} 1\n"));
        assert!(t.contains("codedeploy_agent_load_balancer_drained 1\n"));
    }
}
