//! The testbed: what end-to-end tests need to drive the real
//! `codedeploy-agent` binary on this machine (a throwaway host layout,
//! bundle builders, hostile archives, waiting on conditions with deadlines).
//! It depends on nothing of the agent: it talks to it only through its
//! command line, files and processes, as an operator would.

pub mod bundle;
pub mod evil;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The agent binary: `$CODEDEPLOY_AGENT_BIN`, else the workspace's own,
/// built (once per test process) with the profile of this test, so a test
/// never runs a stale binary whichever package `cargo test` was asked for.
pub fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("CODEDEPLOY_AGENT_BIN") {
            return PathBuf::from(p);
        }
        // Tests live in target/<profile>/deps, examples in .../examples,
        // the testbed binary in target/<profile> itself.
        let exe = std::env::current_exe().expect("current exe");
        let mut profile_dir = exe.parent().expect("target/<profile>");
        if profile_dir
            .file_name()
            .is_some_and(|n| n == "deps" || n == "examples")
        {
            profile_dir = profile_dir.parent().expect("target/<profile>");
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--offline",
            "-p",
            "codedeploy-agent",
            "--bin",
            "codedeploy-agent",
        ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let out = build.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build of the agent failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("codedeploy-agent");
        assert!(
            bin.exists(),
            "{} is missing after cargo build",
            bin.display()
        );
        bin
    })
    .clone()
}

/// Tests that switch users or set owners need root; say so instead of
/// passing vacuously.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root (CI runs as root; locally use sudo)"
    );
}

/// The unprivileged user `.ci/run` creates for `runas` tests.
pub const TEST_USER: &str = "cdtest";
pub const TEST_EXTRA_GROUP: &str = "cdtest-extra";

pub fn require_test_user() -> nix::unistd::User {
    nix::unistd::User::from_name(TEST_USER).ok().flatten().unwrap_or_else(|| {
        panic!("user {TEST_USER} is missing; create it as .ci/run does: groupadd {TEST_EXTRA_GROUP}; useradd -m -s /bin/bash -G {TEST_EXTRA_GROUP} {TEST_USER}")
    })
}

/// Poll `cond` until it holds or `limit` passes (then fail with `what`).
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    #[track_caller]
    pub fn assert_ok(&self) -> &Run {
        assert!(
            self.status.success(),
            "expected success, got {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_failed(&self) -> &Run {
        assert!(
            !self.status.success(),
            "expected failure\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The line the agent printed for `event`.
    pub fn event_line(&self, event: &str) -> String {
        self.stdout
            .lines()
            .rev()
            .find(|l| l.starts_with(&format!("{event} ")) && !l.contains(" running "))
            .unwrap_or_else(|| panic!("no line for {event} in:\n{}", self.stdout))
            .to_string()
    }
}

/// Run a command to completion within `limit`, killing it if it overruns.
pub fn run_with_deadline(cmd: &mut Command, limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let s = child.wait().expect("wait");
            panic!("command did not finish within {limit:?}: {cmd:?} ({s})");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    Run {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
        elapsed,
    }
}

/// A throwaway host: a deployment root, a log directory and an agent
/// configuration file, all under one temporary directory.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
}

impl Host {
    pub fn new() -> Host {
        Host::with_config("")
    }

    /// Extra `:key: value` lines for codedeployagent.yml.
    pub fn with_config(extra: &str) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("cd-host-")
            .tempdir()
            .expect("tempdir");
        // Readable by the runas test user, as /opt and /var are on a host.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let conf = dir.path().join("codedeployagent.yml");
        let text = format!(
            ":root_dir: {root}\n:log_dir: {logs}\n:hook_kill_grace_seconds: 1\n:hook_output_grace_seconds: 1\n{extra}",
            root = dir.path().join("deployment-root").display(),
            logs = dir.path().join("logs").display(),
        );
        fs::write(&conf, text).expect("write config");
        Host { dir, conf }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn root(&self) -> PathBuf {
        self.path("deployment-root")
    }

    /// `codedeploy-agent local -c <conf> <args>`, bounded to two minutes.
    pub fn local(&self, args: &[&str]) -> Run {
        self.local_with_env(args, &[])
    }

    /// `local` with extra environment variables (AWS credentials, region).
    pub fn local_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("local")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(self.dir.path());
        run_with_deadline(&mut cmd, Duration::from_secs(120))
    }

    /// Deploy a bundle directory with the default group.
    pub fn deploy_dir(&self, bundle: &Path, extra: &[&str]) -> Run {
        let loc = bundle.display().to_string();
        let mut args = vec!["-l", loc.as_str(), "-t", "directory"];
        args.extend_from_slice(extra);
        self.local(&args)
    }

    pub fn instructions(&self, file: &str) -> PathBuf {
        self.root().join("deployment-instructions").join(file)
    }

    /// Deployment directories of a group, oldest first.
    pub fn deployments(&self, group: &str) -> Vec<PathBuf> {
        let mut v: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(self.root().join(group))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| {
                        (
                            e.metadata()
                                .and_then(|m| m.modified())
                                .unwrap_or(std::time::UNIX_EPOCH),
                            e.path(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.into_iter().map(|(_, p)| p).collect()
    }
}

impl Default for Host {
    fn default() -> Self {
        Host::new()
    }
}

/// Every path under `dir` with a fingerprint (kind, size, mode, content
/// hash), to prove that nothing else changed.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            let fp = if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode() & 0o7777)
            } else if m.file_type().is_symlink() {
                format!(
                    "link -> {}",
                    fs::read_link(&p)
                        .map(|t| t.display().to_string())
                        .unwrap_or_default()
                )
            } else {
                let content = fs::read(&p).unwrap_or_default();
                let sum: u64 = content.iter().enumerate().fold(0u64, |a, (i, b)| {
                    a.wrapping_mul(31).wrapping_add(u64::from(*b) ^ i as u64)
                });
                format!("file {} {:o} {sum:x}", m.len(), m.mode() & 0o7777)
            };
            out.insert(p.strip_prefix(dir).unwrap_or(&p).to_path_buf(), fp);
        }
    }
    out
}

/// Is a process alive?
pub fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(false)
}

pub mod bed;
pub mod control;
pub mod differential;
pub mod faults;
pub mod faulty;
pub mod github;
pub mod imds;
pub mod lb;
pub mod lbfleet;
pub mod oracle;
pub mod proxy;
pub mod rollout;
pub mod scenario;
pub mod server;
pub mod signer;
pub mod sigv4;
pub mod up;
