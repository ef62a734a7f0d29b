//! What the daemon is doing, kept on disk for `codedeploy-agent status`
//! (and an operator's `cat`): the last poll and its error, the commands
//! running. One JSON file beside the pid file, rewritten on each change with
//! temp file + rename and no fsync: it is advisory, and a host rewrites it
//! every poll for years. A thread of its own writes it, so a command never
//! waits for a rename: changes made while a write is under way are written
//! together by the next one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::fsutil::{self, Durability};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    /// Unix seconds.
    pub started: u64,
    pub last_poll_ok: Option<u64>,
    /// (when, what) of the last failed poll, cleared by a good one.
    pub last_poll_error: Option<(u64, String)>,
    pub running: Vec<Running>,
    /// What strict specification verification made of the last deployment.
    #[serde(default)]
    pub spec_check: Option<SpecCheck>,
    /// The command the last answered poll offered: a deployment is pending
    /// for this host. `None` when that poll offered none.
    #[serde(default)]
    pub pending: Option<Offered>,
}

/// A host command the service offered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offered {
    pub host_command: String,
    /// The lifecycle event (host command name).
    pub event: String,
    /// When it was first offered, Unix seconds.
    pub since: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpecCheck {
    pub deployment: String,
    /// Strict mode is on (then a refusal failed the command).
    pub strict: bool,
    /// Why strict mode refuses (refused) the specification; `None`: accepts.
    pub refusal: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Running {
    pub host_command: String,
    pub deployment: String,
    pub event: String,
    pub since: u64,
}

/// How stale `last_poll_ok` may be on disk while polls keep succeeding.
const REFRESH_SECS: u64 = 10;

pub fn path(config: &Config) -> PathBuf {
    crate::layout::status_file(&config.pid_dir, &config.program_name)
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct StatusFile {
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

struct Shared {
    path: PathBuf,
    state: Mutex<Versioned>,
    /// Wakes the writer on a change and `flush` on a write.
    changed: Condvar,
}

struct Versioned {
    status: Status,
    /// Bumped by each change worth writing.
    version: u64,
    /// The version on disk.
    written: u64,
    stop: bool,
}

impl StatusFile {
    pub fn new(path: PathBuf, version: &str) -> StatusFile {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let shared = Arc::new(Shared {
            path,
            state: Mutex::new(Versioned {
                status: Status {
                    pid: std::process::id(),
                    version: version.into(),
                    started: now(),
                    ..Status::default()
                },
                version: 1,
                written: 0,
                stop: false,
            }),
            changed: Condvar::new(),
        });
        let me = shared.clone();
        // Without a writer thread the file is written in place, on the caller.
        let writer = std::thread::Builder::new()
            .name("status".into())
            .stack_size(64 << 10)
            .spawn(move || me.write_loop())
            .ok();
        let s = StatusFile { shared, writer };
        if s.writer.is_none() {
            s.shared.write_pending();
        }
        s
    }

    /// Wait until every change made so far is on disk.
    pub fn flush(&self) {
        let Ok(mut st) = self.shared.state.lock() else {
            return;
        };
        while st.written < st.version && self.writer.is_some() {
            st = match self.shared.changed.wait(st) {
                Ok(g) => g,
                Err(_) => return,
            };
        }
    }

    /// Polls come every second with the shipped `:wait_between_runs: 1`:
    /// a run of good ones rewrites the file every REFRESH_SECS only, so
    /// `status` shows the last poll to within that.
    /// `Ok(offered)`: the poll was answered, with (host command, event) or
    /// nothing to do.
    pub fn polled(&self, result: Result<Option<(&str, &str)>, String>) {
        self.update(|s| {
            let t = now();
            match result {
                Ok(offered) => {
                    let same = match (&s.pending, offered) {
                        (Some(p), Some((id, _))) => p.host_command == id,
                        (None, None) => true,
                        _ => false,
                    };
                    if !same {
                        s.pending = offered.map(|(id, event)| Offered {
                            host_command: id.into(),
                            event: event.into(),
                            since: t,
                        });
                    }
                    let news = !same
                        || s.last_poll_error.is_some()
                        || s.last_poll_ok
                            .is_none_or(|p| t.saturating_sub(p) >= REFRESH_SECS);
                    s.last_poll_error = None;
                    if news {
                        s.last_poll_ok = Some(t);
                    }
                    news
                }
                Err(e) => {
                    s.last_poll_error = Some((t, e));
                    true
                }
            }
        });
    }

    pub fn begin(&self, host_command: &str, deployment: &str, event: &str) {
        self.update(|s| {
            s.running.push(Running {
                host_command: host_command.into(),
                deployment: deployment.into(),
                event: event.into(),
                since: now(),
            });
            true
        });
    }

    /// The strict verdict on a deployment's specification; written when it
    /// is news (the first command of a deployment, or a changed verdict).
    pub fn spec_checked(&self, check: SpecCheck) {
        self.update(|s| {
            let news = s.spec_check.as_ref() != Some(&check);
            s.spec_check = Some(check);
            news
        });
    }

    pub fn end(&self, host_command: &str) {
        self.update(|s| {
            s.running.retain(|r| r.host_command != host_command);
            true
        });
    }

    /// Apply `f`; have the file written when it says the change is worth it.
    fn update(&self, f: impl FnOnce(&mut Status) -> bool) {
        let Ok(mut st) = self.shared.state.lock() else {
            return;
        };
        if !f(&mut st.status) {
            return;
        }
        st.version += 1;
        drop(st);
        if self.writer.is_some() {
            self.shared.changed.notify_all();
        } else {
            self.shared.write_pending();
        }
    }
}

impl Shared {
    fn write_loop(&self) {
        loop {
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            while st.written == st.version && !st.stop {
                st = match self.changed.wait(st) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
            if st.written == st.version {
                return;
            }
            drop(st);
            self.write_pending();
        }
    }

    /// Write the newest status, and record which version that was.
    fn write_pending(&self) {
        let (version, json) = match self.state.lock() {
            Ok(st) => (st.version, serde_json::to_vec_pretty(&st.status)),
            Err(_) => return,
        };
        if let Ok(json) = json {
            if let Err(e) = fsutil::write_atomic(&self.path, &json, 0o644, Durability::Atomic) {
                tracing::debug!(path = %self.path.display(), error = %e, "cannot write the status file");
            }
        }
        if let Ok(mut st) = self.state.lock() {
            st.written = st.written.max(version);
        }
        self.changed.notify_all();
    }
}

impl Drop for StatusFile {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.stop = true;
        }
        self.shared.changed.notify_all();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let _ = std::fs::remove_file(&self.shared.path);
    }
}

pub fn read(path: &Path) -> Option<Status> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn ago(now: u64, t: u64) -> String {
    let s = now.saturating_sub(t);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// The lines `status` prints after "running as PID n".
pub fn describe(s: &Status, now: u64) -> Vec<String> {
    let mut out = vec![format!(
        "version {}, started {}",
        s.version,
        ago(now, s.started)
    )];
    out.push(match s.last_poll_ok {
        Some(t) => format!("last successful poll: {}", ago(now, t)),
        None => "last successful poll: none yet".into(),
    });
    if let Some((t, e)) = &s.last_poll_error {
        out.push(format!("last poll failed {}: {e}", ago(now, *t)));
    }
    match (&s.pending, s.last_poll_ok) {
        (Some(p), _) => out.push(format!(
            "deployment pending for this host: the last poll offered {} (host command {}), first {}",
            p.event,
            p.host_command,
            ago(now, p.since)
        )),
        (None, Some(_)) => out.push("no deployment pending at the last poll".into()),
        (None, None) => {}
    }
    if s.running.is_empty() {
        out.push("no command in progress".into());
    }
    for r in &s.running {
        out.push(format!(
            "in progress: deployment {} event {} (host command {}) since {}",
            r.deployment,
            r.event,
            r.host_command,
            ago(now, r.since)
        ));
    }
    if let Some(c) = &s.spec_check {
        out.push(match (&c.refusal, c.strict) {
            (None, _) => format!(
                "deployment {}: its specification passes strict verification",
                c.deployment
            ),
            (Some(why), true) => format!(
                "deployment {}: strict verification refused its specification: {why}",
                c.deployment
            ),
            (Some(why), false) => format!(
                "deployment {}: strict verification (off) would refuse its specification: {why}",
                c.deployment
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_polls_and_commands() {
        let mut s = Status {
            pid: 7,
            version: "1.2.3".into(),
            started: 1000,
            ..Status::default()
        };
        assert_eq!(
            describe(&s, 1030),
            vec![
                "version 1.2.3, started 30 s ago",
                "last successful poll: none yet",
                "no command in progress"
            ]
        );
        s.last_poll_ok = Some(1500);
        s.last_poll_error = Some((1600, "connection refused".into()));
        s.running.push(Running {
            host_command: "hc-1".into(),
            deployment: "d-1".into(),
            event: "AfterInstall".into(),
            since: 1000,
        });
        let lines = describe(&s, 1620);
        assert_eq!(lines[1], "last successful poll: 2 min ago");
        assert_eq!(lines[2], "last poll failed 20 s ago: connection refused");
        assert_eq!(lines[3], "no deployment pending at the last poll");
        assert_eq!(
            lines[4],
            "in progress: deployment d-1 event AfterInstall (host command hc-1) since 10 min ago"
        );
    }

    fn flushed(f: &StatusFile, p: &Path) -> Option<Status> {
        f.flush();
        read(p)
    }

    #[test]
    fn a_poll_that_offers_a_command_says_a_deployment_is_pending() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.json");
        let f = StatusFile::new(p.clone(), "9.9");
        f.polled(Ok(None));
        assert_eq!(flushed(&f, &p).unwrap().pending, None);
        f.polled(Ok(Some(("hc-1", "ApplicationStop"))));
        let s = flushed(&f, &p).unwrap();
        let offered = s.pending.clone().expect("pending");
        assert_eq!(
            (offered.host_command.as_str(), offered.event.as_str()),
            ("hc-1", "ApplicationStop")
        );
        let lines = describe(&s, offered.since);
        assert!(
            lines.iter().any(|l| l.starts_with(
                "deployment pending for this host: the last poll offered ApplicationStop"
            )),
            "{lines:?}"
        );
        // Offered again: still pending since the first time.
        f.polled(Ok(Some(("hc-1", "ApplicationStop"))));
        assert_eq!(flushed(&f, &p).unwrap().pending, Some(offered));
        f.polled(Ok(None));
        assert_eq!(
            flushed(&f, &p).unwrap().pending,
            None,
            "a poll with nothing clears it"
        );
    }

    #[test]
    fn a_run_of_good_polls_is_not_rewritten_every_time() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.json");
        let f = StatusFile::new(p.clone(), "9.9");
        f.polled(Ok(None));
        f.flush();
        std::fs::remove_file(&p).unwrap();
        f.polled(Ok(None));
        f.flush();
        assert!(
            !p.exists(),
            "a second good poll within {REFRESH_SECS} s writes nothing"
        );
        f.polled(Err("503".into()));
        f.flush();
        assert!(p.exists(), "a failed poll is written at once");
        std::fs::remove_file(&p).unwrap();
        f.polled(Ok(None));
        f.flush();
        assert!(p.exists(), "and so is the good poll that clears it");
    }

    #[test]
    fn the_file_follows_the_daemon() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.json");
        let f = StatusFile::new(p.clone(), "9.9");
        f.polled(Ok(None));
        f.begin("hc-1", "d-1", "Install");
        let s = flushed(&f, &p).unwrap();
        assert_eq!(s.version, "9.9");
        assert!(s.last_poll_ok.is_some());
        assert_eq!(s.running.len(), 1);
        f.end("hc-1");
        f.polled(Err("503".into()));
        let s = flushed(&f, &p).unwrap();
        assert!(s.running.is_empty());
        assert_eq!(s.last_poll_error.map(|e| e.1).as_deref(), Some("503"));
        drop(f);
        assert!(!p.exists(), "a stopped daemon leaves no status behind");
    }
}
