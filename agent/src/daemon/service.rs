//! `start`, `stop`, `restart`, `status` as the official agent's commands of
//! the same names behave, around a pid file `<pid_dir>/<program_name>.pid`.
//! Under systemd the unit runs `run` directly; these are for operators'
//! habits and scripts.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::config::Config;
use crate::fsutil::{self, Durability};

pub fn pid_file(config: &Config) -> PathBuf {
    crate::layout::pid_file(&config.pid_dir, &config.program_name)
}

/// The running agent's pid, if the pid file names a live agent process.
pub fn running(config: &Config) -> Option<i32> {
    let text = fs::read_to_string(pid_file(config)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    alive_agent(pid).then_some(pid)
}

fn alive_agent(pid: i32) -> bool {
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    // A recycled pid belongs to some other program: check what it runs.
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("codedeploy"))
        .unwrap_or(false)
}

/// Held by `run`: the pid file, removed when the daemon ends.
pub struct PidFile(PathBuf);

impl PidFile {
    pub fn claim(config: &Config) -> Result<PidFile, String> {
        if let Some(pid) = running(config) {
            if pid != std::process::id() as i32 {
                return Err(format!(
                    "The AWS CodeDeploy agent is already running as PID {pid}"
                ));
            }
        }
        let path = pid_file(config);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        fsutil::write_atomic(
            &path,
            std::process::id().to_string().as_bytes(),
            0o644,
            Durability::Atomic,
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(PidFile(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if fs::read_to_string(&self.0)
            .map(|t| t.trim() == std::process::id().to_string())
            .unwrap_or(false)
        {
            let _ = fs::remove_file(&self.0);
        }
    }
}

pub fn status(config: &Config, json: bool) -> i32 {
    if json {
        return status_json(config);
    }
    match running(config) {
        Some(pid) => {
            println!("The AWS CodeDeploy agent is running as PID {pid}");
            // What the daemon keeps on disk; a daemon of another version
            // (or one just starting) may have none yet.
            match super::status::read(&super::status::path(config)).filter(|s| s.pid == pid as u32)
            {
                Some(s) => {
                    for line in super::status::describe(&s, super::status::now()) {
                        println!("{line}");
                    }
                }
                None => println!("no status recorded yet"),
            }
            0
        }
        None => {
            println!("No AWS CodeDeploy agent running");
            1
        }
    }
}

/// `status --json`: `{"running": bool, "pid": n, "status": {...}|null}`,
/// the status being what the daemon keeps on disk (super::status::Status).
fn status_json(config: &Config) -> i32 {
    let pid = running(config);
    let status = pid.and_then(|pid| {
        super::status::read(&super::status::path(config)).filter(|s| s.pid == pid as u32)
    });
    let v = serde_json::json!({
        "running": pid.is_some(),
        "pid": pid,
        "status": status,
    });
    println!("{v}");
    if pid.is_some() {
        0
    } else {
        1
    }
}

/// Start the daemon in the background and wait until it holds its pid file.
pub fn start(config: &Config, config_path: &Path) -> Result<(), String> {
    if let Some(pid) = running(config) {
        println!("The AWS CodeDeploy agent is already running as PID {pid}");
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--config_file")
        .arg(config_path)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Detached from the caller's session, so its terminal closing or its
    // process group being signalled leaves the agent alone.
    crate::sys::new_session(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the agent: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if running(config) == Some(child.id() as i32) {
            println!("The AWS CodeDeploy agent is running as PID {}", child.id());
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!(
                "the agent exited at start ({st}); see {}",
                config
                    .log_dir
                    .join(format!("{}.log", config.program_name))
                    .display()
            ));
        }
        if Instant::now() > deadline {
            return Err("the agent did not write its pid file within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM, then wait for running commands (bounded by
/// `:kill_agent_max_wait_time_seconds:`), then SIGKILL.
pub fn stop(config: &Config) -> Result<(), String> {
    let Some(pid) = running(config) else {
        println!("No AWS CodeDeploy agent running");
        return Ok(());
    };
    let p = Pid::from_raw(pid);
    kill(p, Signal::SIGTERM).map_err(|e| format!("cannot signal PID {pid}: {e}"))?;
    let deadline = Instant::now() + config.kill_agent_max_wait_time + Duration::from_secs(10);
    while alive_agent(pid) {
        if Instant::now() > deadline {
            let _ = kill(p, Signal::SIGKILL);
            println!("The AWS CodeDeploy agent (PID {pid}) did not stop in time and was killed");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("The AWS CodeDeploy agent (PID {pid}) stopped");
    Ok(())
}
